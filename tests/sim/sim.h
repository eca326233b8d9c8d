/*
 * sim.h - the deterministic cluster simulator of the Raft core.
 *
 * One run: N nodes (tnode, tests/support/node.h) on virtual time, every
 * choice drawn from one 64-bit seed, so a run replays exactly. A run has a
 * chaos phase (faults, membership changes, leader transfers, snapshots,
 * client proposals and reads) and a calm phase in which faults stop and the
 * cluster must elect a leader and commit a new proposal on every member
 * within a bound of ticks. Safety is checked after every step (checker.h).
 *
 * Nothing here reads a clock or sleeps; output goes only to the trace file.
 */
#ifndef FLOTILLA_SIM_H
#define FLOTILLA_SIM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Nodes a cluster starts with: 1 to SIM_MAX_INITIAL_NODES. */
#define SIM_MAX_INITIAL_NODES 7
/* Chaos ticks of a run when the caller does not choose. */
#define SIM_DEFAULT_STEPS 1000

/* Deliberate violations for the self-test: proof that the checker fails. */
typedef enum sim_injection {
  SIM_INJECT_NONE = 0,
  SIM_INJECT_DIVERGENT_APPLY = 1, /* one node "applies" another command */
  SIM_INJECT_SECOND_LEADER = 2,   /* a second leader is reported in a term */
} sim_injection;

typedef struct sim_config {
  uint64_t seed;
  uint32_t node_count;  /* 1..SIM_MAX_INITIAL_NODES */
  uint32_t chaos_ticks; /* length of the chaos phase */
  const char *profile;  /* sim_profile_exists(); NULL = "mixed" */
  FILE *trace;          /* step-by-step trace, NULL = none */
  sim_injection injection;
} sim_config;

typedef struct sim_stats {
  uint64_t ticks;
  uint64_t delivered;
  uint64_t dropped;
  uint64_t duplicated;
  uint64_t crashes;
  uint64_t partitions;
  uint64_t leaders;
  uint64_t committed;
  uint64_t acknowledged;
  uint64_t reads;
  uint64_t snapshots_taken;
  uint64_t snapshots_sent;
  uint64_t conf_changes;
  uint64_t transfers;
} sim_stats;

typedef struct sim_result {
  bool passed;
  char violation[1100];
  char settings[256]; /* options and fault rates the seed chose */
  sim_stats stats;
} sim_result;

/* Profiles: which Raft options the seeds run with. */
bool sim_profile_exists(const char *name);
/* The profile names, space separated, for --help. */
const char *sim_profile_names(void);

/* Runs one seed. Returns 0 when every check passed, 1 on a violation
 * (result->violation says which), -1 on a bad configuration. */
int sim_run(const sim_config *config, sim_result *result);

#endif
