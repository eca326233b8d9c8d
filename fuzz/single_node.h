/*
 * single_node.h - one bare fl_raft with a tiny in-memory log, for the
 * message fuzzer: a strict driver that checks every update against the
 * contract of raft.h instead of trusting it.
 *
 * The log is durable the moment an update is stored (there is one copy), so
 * any fl_raft_persisted() call is truthful. Restart destroys the core and
 * creates a new one from the stored snapshot, log and hard state.
 *
 * Checks on every update (a failure prints and aborts):
 *   - entries attach to the log, are consecutive, terms never go down and
 *     never pass the current term;
 *   - the hard state's term never goes down, one vote per term (across
 *     restarts too), the commit never goes down nor passes the log;
 *   - committed entries follow the applied index without a gap, lie within
 *     the commit index and equal what the log holds;
 *   - messages come from this node, go to another, carry the current term
 *     (pre-votes: the next one) and entries that are consecutive and match
 *     the log; every payload byte is read, so ASan sees a bad pointer;
 *   - a granted vote or a positive append acknowledgement leaves only after
 *     the write that makes it true (messages_after_write), and that write
 *     holds the vote or the acknowledged index;
 *   - a leader's read states never pass its commit index.
 * After every input: fl_raft_check_invariants().
 */
#ifndef FLOTILLA_FUZZ_SINGLE_NODE_H
#define FLOTILLA_FUZZ_SINGLE_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"

/* The node's id; peers are any other id. */
#define SN_SELF 1

typedef struct sn_entry {
  uint64_t term;
  uint32_t type;
  uint32_t length;
  uint8_t *data; /* owned copy, NULL when empty */
} sn_entry;

typedef struct sn_conf_change {
  uint64_t index;
  fl_raft_conf conf;
} sn_conf_change;

typedef struct sn_node {
  fl_raft *raft;
  fl_raft_options options;
  fl_raft_storage storage;
  uint64_t incarnation;
  /* the log: entries[i] has index snapshot.index + 1 + i */
  fl_raft_snapshot_meta snapshot;
  sn_entry *entries;
  size_t count;
  size_t capacity;
  fl_raft_hard_state hard_state;
  uint64_t applied;
  /* configurations applied, oldest first: the conf of a compaction point */
  sn_conf_change *confs;
  size_t conf_count;
  size_t conf_capacity;
  /* payloads the core may still point at, freed after the next advance */
  uint8_t **retired;
  size_t retired_count;
  size_t retired_capacity;
  /* for the checks */
  uint64_t highest_term;
  uint64_t vote_term; /* the term `vote` was given in */
  uint64_t vote;
  uint64_t highest_commit;
  uint64_t last_write_id;
  uint64_t payload_checksum; /* sink for the bytes read, so reads stay */
} sn_node;

/* Creates the node from `conf` (a new group at index 0). Aborts when the
 * core refuses a valid configuration. */
void sn_init(sn_node *node, const fl_raft_options *options, const fl_raft_conf *conf);
void sn_destroy(sn_node *node);

/* Drives the core until it has no update left, checking each one. */
void sn_drain(sn_node *node);
/* fl_raft_check_invariants() and the driver-side checks; aborts on failure. */
void sn_check(const sn_node *node);
/* Crash and restart from the stored state. */
void sn_restart(sn_node *node);
/* fl_raft_compact(index) and, when the core agrees, the same in the log. */
int sn_compact(sn_node *node, uint64_t index);

uint64_t sn_last_index(const sn_node *node);
/* Term at `index` in [snapshot.index, last]; 0 outside. */
uint64_t sn_term_at(const sn_node *node, uint64_t index);

#endif
