/*
 * cluster.h - in-process clusters of engines on loopback TCP for the engine
 * tests: each node a real fl_engine with its own data directory, shards and
 * sockets; helpers that wait for a condition with a deadline (polling the
 * engines' status, never sleeping in place of a condition), and blocking
 * wrappers of the asynchronous calls.
 */
#ifndef FLOTILLA_TESTS_ENGINE_CLUSTER_H
#define FLOTILLA_TESTS_ENGINE_CLUSTER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "flotilla.h"

#define CLUSTER_MAX_NODES 5

typedef struct cluster {
  uint32_t node_count;
  uint32_t shard_count;
  char directory[128];
  fl_node_address nodes[CLUSTER_MAX_NODES];
  fl_engine *engines[CLUSTER_MAX_NODES]; /* NULL while a node is down */
  /* Options of nodes started from now on: 0 keeps the engine's default. */
  uint32_t snapshot_entries;
  uint32_t request_timeout_ms;
  uint32_t max_command_bytes;
  uint64_t wal_segment_bytes; /* 0: 4 MiB, small so tests roll segments over */
  uint32_t heartbeat_ticks;   /* 0: 2 ticks of 10 ms */
  uint32_t election_ticks;    /* 0: 20 ticks */
  /* fl_options.machine of node id at machines[id - 1] (NULL: the KV store),
   * and fl_options.log of every node started from now on (NULL: stderr). */
  const fl_state_machine *machines[CLUSTER_MAX_NODES];
  void (*log)(void *context, int level, const char *message);
  void *log_context;
  /* fl_options.on_leader of nodes started from now on (NULL: none), with
   * node id's context at on_leader_contexts[id - 1]. */
  void (*on_leader)(void *context, uint64_t group, uint64_t leader, uint64_t term);
  void *on_leader_contexts[CLUSTER_MAX_NODES];
  /* Held for reading by the *_shared calls of client threads, for writing
   * by cluster_stop_node_shared / cluster_start_node_shared: a client never
   * touches an engine that is being closed. */
  pthread_rwlock_t lock;
  /* Calls of the *_shared helpers whose callback did not come within
   * CLUSTER_CALLBACK_BOUND_MS: the API promises exactly one, so a test
   * fails when this is not 0. */
  atomic_uint lost_callbacks;
} cluster;

/* How long a helper waits for a callback the engine owes it: far above any
 * commit, election or close on loopback. */
#define CLUSTER_CALLBACK_BOUND_MS 10000u

/* Starts node_count nodes (ids 1..n) with shard_count shards each on free
 * loopback ports, in a fresh directory. Returns 0 or an FL_E code. */
int cluster_start(cluster *c, uint32_t node_count, uint32_t shard_count);
/* cluster_start in two steps, for options set between them: prepare fills
 * the struct (directory, ports) and starts nothing; start_all starts every
 * node. */
int cluster_prepare(cluster *c, uint32_t node_count, uint32_t shard_count);
int cluster_start_all(cluster *c);
/* Closes every node and removes the directory. */
void cluster_destroy(cluster *c);
/* Closes / reopens one node (1-based id) from its data directory. */
void cluster_stop_node(cluster *c, uint64_t node);
int cluster_start_node(cluster *c, uint64_t node);

/* Creates `group` on every running node with all nodes as voters. */
int cluster_create_group(cluster *c, uint64_t group);
/* Waits until the running nodes agree on one leader of `group`; returns it
 * (0 on timeout). */
uint64_t cluster_wait_leader(cluster *c, uint64_t group, uint32_t timeout_ms);
/* Waits until every running node has applied at least `index`. */
bool cluster_wait_applied(cluster *c, uint64_t group, uint64_t index, uint32_t timeout_ms);

/* Blocking KV calls on one node; statuses as the callbacks report them. */
int cluster_put(cluster *c, uint64_t node, uint64_t group, const char *key, const char *value,
                uint64_t *index);
int cluster_get(cluster *c, uint64_t node, uint64_t group, const char *key, fl_read_mode mode,
                char *value, uint32_t capacity);
/* Put on the current leader, retrying across leader changes until the
 * deadline: how a client writes. */
int cluster_put_retry(cluster *c, uint64_t group, const char *key, const char *value,
                      uint32_t timeout_ms);

/* ---- faults, and clients running beside them ------------------------------- */

/* Cuts (cut = true) or restores every link between `node` and the other
 * running nodes, on both sides: a symmetric partition of one node. */
int cluster_isolate(cluster *c, uint64_t node, bool cut);
/* cluster_wait_leader restricted to the running nodes whose bit (1 << (id
 * - 1)) is in `among`: the leader must be one of them, and they agree. */
uint64_t cluster_wait_leader_among(cluster *c, uint64_t group, uint32_t among, uint32_t timeout_ms);
/* Waits until the running nodes agree on a leader, the leader has committed
 * its whole log, and each node has applied it; returns the leader, 0 on
 * timeout. With no writes in flight, every acknowledged write is then
 * applied everywhere: a new leader's commit index lags behind what earlier
 * terms committed until its own first entry commits. */
uint64_t cluster_wait_caught_up(cluster *c, uint64_t group, uint32_t timeout_ms);
/* Waits until every running node of `among` (bits as above) holds a
 * replica of `group` whose voters are exactly `voters` (any order) and
 * that has no learners. */
bool cluster_wait_voters(cluster *c, uint64_t group, uint32_t among, const uint64_t *voters,
                         uint32_t count, uint32_t timeout_ms);
/* cluster_put with a bound on the wait: FL_E_TIMEOUT when the callback
 * has not come within timeout_ms (a leader that cannot reach a quorum
 * keeps a proposal pending); the call then stays allocated, since the
 * callback may still come. */
int cluster_put_within(cluster *c, uint64_t node, uint64_t group, const char *key,
                       const char *value, uint32_t timeout_ms);
/* A membership change proposed on `node`, waiting for its callback. */
int cluster_change(cluster *c, uint64_t node, uint64_t group, fl_change_type type, uint64_t target);

/* An asynchronous call whose answer the test looks at later: its callback
 * may run after the caller stopped waiting (a partitioned leader), so it
 * must live until the cluster is destroyed (closing answers every call). */
typedef struct cluster_pending {
  atomic_bool done;
  atomic_int status;
  char value[256];
} cluster_pending;

int cluster_put_async(cluster *c, uint64_t node, uint64_t group, const char *key, const char *value,
                      cluster_pending *pending);
int cluster_get_async(cluster *c, uint64_t node, uint64_t group, const char *key, fl_read_mode mode,
                      cluster_pending *pending);
/* True once the callback ran (then pending->status holds its status). */
bool cluster_wait_pending(cluster_pending *pending, uint32_t timeout_ms);

/* Stops / starts a node while client threads use the *_shared calls. */
void cluster_stop_node_shared(cluster *c, uint64_t node);
int cluster_start_node_shared(cluster *c, uint64_t node);
/* The running node that says it leads `group` in the highest term; 0 when
 * none does. Safe beside cluster_stop_node_shared. */
uint64_t cluster_find_leader_shared(cluster *c, uint64_t group);
/* Puts on whichever node leads, retrying across leader changes, nodes
 * stopping and starting, and replicas leaving, until the deadline. Safe
 * beside cluster_stop_node_shared. 0 only once the put is acknowledged. */
int cluster_put_shared(cluster *c, uint64_t group, const char *key, const char *value,
                       uint32_t timeout_ms);

uint64_t cluster_now_ms(void);
/* Pauses a polling loop between two looks at the state. */
void cluster_pause_ms(uint32_t ms);

#endif
