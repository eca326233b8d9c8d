/*
 * sim_internal.h - the state of one simulation run, shared by the files of
 * the simulator (one concern each):
 *
 *   sim.c      set-up from the seed, the main loop, the calm phase, trace
 *   network.c  the event queue: messages, write completions, notifications
 *   faults.c   crashes, restarts, partitions, snapshots, membership, transfers
 *   clients.c  proposals and linearizable reads
 *   observe.c  what each node's updates mean to the checker
 *
 * Time: the run advances in moments; SIM_MOMENTS_PER_TICK moments make one
 * Raft tick. Every event has a time in moments and a random tie-break, so
 * events due at the same moment happen in a seeded order.
 */
#ifndef FLOTILLA_SIM_INTERNAL_H
#define FLOTILLA_SIM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "raft/raft.h"
#include "tests/sim/checker.h"
#include "tests/sim/sim.h"
#include "tests/support/node.h"
#include "tests/support/random.h"

#define SIM_MOMENTS_PER_TICK 8
/* Node ids 1..SIM_MAX_NODES: the initial ones plus joiners. */
#define SIM_MAX_NODES 14
/* Messages in flight at once; beyond it the network drops (bounded memory). */
#define SIM_MAX_IN_FLIGHT 20000
/* Ticks the calm phase may take to elect a leader and commit everywhere. */
#define SIM_LIVENESS_TICKS 600
/* Smallest max_inflight_messages * max_entries_per_message a seed may draw:
 * replication must outpace the clients' proposals. */
#define SIM_MIN_ENTRIES_PER_ROUND_TRIP 16
/* Entries a run may commit: proposals stop beyond it (bounded memory). */
#define SIM_MAX_COMMITTED 200000

/* Probabilities in parts per million, drawn per seed. */
typedef struct sim_faults {
  uint32_t drop;
  uint32_t duplicate;
  uint32_t delay;           /* a message takes the slow path */
  uint32_t latency_moments; /* normal latency: 1..this */
  uint32_t delay_moments;   /* extra latency on the slow path: 0..this */
  uint32_t write_moments;   /* write latency: 1..this */
  uint32_t write_delay;     /* a write is slow */
  uint32_t notify_delay;    /* a persisted notification is slow */
  uint32_t slow_moments;    /* extra latency of slow writes/notifications */
  uint32_t crash;           /* per tick */
  uint32_t restart;         /* per tick per crashed node */
  uint32_t max_crashed;
  uint32_t partition;   /* per tick, when healed */
  uint32_t heal;        /* per tick, when partitioned */
  uint32_t snapshot;    /* per tick per node */
  uint32_t membership;  /* per tick */
  uint32_t transfer;    /* per tick */
  uint32_t propose;     /* per tick */
  uint32_t read;        /* per tick */
  uint32_t unreachable; /* report a partitioned send as unreachable */
} sim_faults;

typedef struct sim_slot {
  tnode *node;                /* NULL: id not used yet */
  bool retired;               /* removed from the configuration: gets no more input */
  bool member;                /* was in an applied configuration */
  uint64_t commit;            /* last commit index this run of the node reported */
  uint64_t last_write_moment; /* writes complete in order: not before this */
  fl_raft_role role;
  uint64_t term;
  fl_raft_conf conf_before; /* the node's configuration before its last update */
} sim_slot;

typedef enum sim_event_kind {
  SIM_EVENT_MESSAGE = 1,
  SIM_EVENT_WRITE = 2,
  SIM_EVENT_PERSISTED = 3,
  SIM_EVENT_SNAPSHOT_REPORT = 4,
  SIM_EVENT_UNREACHABLE = 5,
} sim_event_kind;

typedef struct sim_event {
  uint64_t moment;
  uint64_t order; /* random tie-break */
  uint32_t kind;
  uint32_t node; /* the node the event happens at */
  uint64_t incarnation;
  uint64_t value; /* write id, peer id or success flag */
  uint64_t peer;
  tenvelope *envelope;
} sim_event;

typedef struct sim {
  sim_config config;
  sim_result *result;
  trandom random;
  sim_faults faults;
  fl_raft_options options;
  tnode_observer observer;
  checker *checker;
  uint64_t moment;
  bool chaos; /* faults on */

  sim_slot slots[SIM_MAX_NODES + 1];                  /* by node id */
  uint32_t slot_count;                                /* highest id in use */
  bool blocked[SIM_MAX_NODES + 1][SIM_MAX_NODES + 1]; /* [from][to] */
  bool partitioned;

  sim_event *events; /* binary heap on (moment, order) */
  size_t event_count;
  size_t event_capacity;
  size_t in_flight;

  uint64_t next_proposal_id;
  uint64_t next_read_id;
  uint64_t conf_index; /* index of the newest configuration entry applied */
  fl_raft_conf conf;   /* that configuration */
  uint64_t marker_id;  /* calm phase: the proposal that must commit */
  uint64_t marker_index;
  uint64_t marker_tick;
  bool failed;
} sim;

/* sim.c */
void sim_trace(sim *s, const char *format, ...) __attribute__((format(printf, 2, 3)));
void sim_violation(sim *s, const char *format, ...) __attribute__((format(printf, 2, 3)));
uint64_t sim_tick(const sim *s);

/* network.c */
void sim_events_init(sim *s);
void sim_events_destroy(sim *s);
void sim_event_push(sim *s, sim_event event);
/* Runs every event due up to the current moment. */
void sim_run_due_events(sim *s);
/* Moves a node's outbox to the network. */
void sim_send_outbox(sim *s, uint32_t id);
/* When a new write of `id` completes (in order with its earlier writes). */
void sim_schedule_write(sim *s, tnode *node, uint64_t write_id);
void sim_heal(sim *s);
bool sim_is_blocked(const sim *s, uint32_t from, uint32_t to);

/* faults.c */
void sim_faults_draw(sim *s);
void sim_chaos_tick(sim *s);
void sim_restart(sim *s, uint32_t id);
/* A new node (a joiner) with the next free id, or 0 when none is left. */
uint32_t sim_add_joiner(sim *s);
/* Proposes leaving a joint configuration entered without auto_leave. */
void sim_leave_joint(sim *s, uint32_t leader);

/* clients.c */
/* The live node that is leader in the highest term, or 0. */
uint32_t sim_find_leader(const sim *s);
bool sim_is_live(const sim *s, uint32_t id);
void sim_client_tick(sim *s);
/* Proposes the calm-phase marker on the leader; true when it was accepted. */
bool sim_propose_marker(sim *s, uint32_t leader);

/* observe.c */
void sim_observer_init(sim *s);
/* After any input to node `id`: contract and invariant checks, then send. */
void sim_after_input(sim *s, uint32_t id, int result);

#endif
