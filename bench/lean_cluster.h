/*
 * lean_cluster.h - a zero-copy, in-memory driver of Raft groups for the
 * benchmarks (raft-bench and raft-sim-bench).
 *
 * It measures the consensus core, not a test harness: no disk, no network,
 * no clock and no per-message deep copy. Each replica's log is a ring of
 * fl_raft_entry whose payload pointers point into one read-only arena, a
 * write is durable as soon as it is stored, and a message is stepped into
 * its destination straight out of the sender's update (the sender's update
 * is still outstanding, so its buffers are alive, as raft.h requires).
 *
 * Two shapes of group:
 *   LEAN_THREE_REPLICAS    three fl_raft instances (the whole loop: leader
 *                          and both followers, all on the calling thread);
 *   LEAN_SYNTHETIC_PEERS   one leader whose two peers are simulated: every
 *                          request is answered at once with the reply a
 *                          healthy, caught-up follower would send. This
 *                          isolates the leader-side cost.
 *
 * Ownership: a lean_group owns its replicas, logs and queue. Not
 * thread-safe; one group is driven by one thread.
 */
#ifndef FLOTILLA_BENCH_LEAN_CLUSTER_H
#define FLOTILLA_BENCH_LEAN_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "raft/raft.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Replicas of every benchmark group: the common production shape. */
#define LEAN_REPLICAS 3
/* Payload of one proposed entry: the 16-byte values of the brief's targets. */
#define LEAN_PAYLOAD_BYTES 16
/* Largest batch one lean_group_propose() call may carry. */
#define LEAN_MAX_BATCH 1024
/* Entries each replica's ring holds; compaction keeps it at most half full,
 * so two full batches always fit. A power of two: the ring uses a mask. */
#define LEAN_LOG_WINDOW 4096

typedef enum lean_shape {
  LEAN_THREE_REPLICAS = 0,
  LEAN_SYNTHETIC_PEERS = 1,
} lean_shape;

typedef struct lean_stats {
  uint64_t proposed;  /* entries accepted by the leader */
  uint64_t committed; /* entries the leader applied */
  uint64_t messages;  /* messages delivered between replicas */
  uint64_t updates;   /* fl_raft_update cycles, all replicas */
} lean_stats;

typedef struct lean_group lean_group;

/* Options the benchmarks run with: the core's defaults, with a message able
 * to carry the largest batch. */
void lean_options_default(fl_raft_options *options);

/*
 * Creates a group of `shape` and elects replica 1 (id 1) leader. `options`
 * is borrowed for the group's lifetime. Returns NULL when out of memory or
 * when no leader emerges (a bug in the core or the driver).
 */
lean_group *lean_group_create(lean_shape shape, uint64_t group_id, const fl_raft_options *options);
void lean_group_destroy(lean_group *group);

/*
 * Proposes `batch` (1..LEAN_MAX_BATCH) entries of LEAN_PAYLOAD_BYTES on the
 * leader and drives every replica until none has an update left. Returns
 * the number of entries the leader committed and applied during the call
 * (normally `batch`), or -1 when the leader refused the proposal.
 */
int64_t lean_group_propose(lean_group *group, uint32_t batch);

const lean_stats *lean_group_stats(const lean_group *group);
/* The first driver-contract breach seen, or NULL. */
const char *lean_group_error(const lean_group *group);

#ifdef __cplusplus
}
#endif

#endif
