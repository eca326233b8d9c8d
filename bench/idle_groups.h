/*
 * idle_groups.h - what an idle follower group costs in memory.
 *
 * A node of a multi-raft engine hosts mostly idle groups, so their size
 * bounds how many one node can hold. The measurement creates `count` groups
 * as one node would host them (this node is replica 2 of voters {1, 2, 3}),
 * bootstraps each with one entry from leader 1, lets it persist and apply,
 * calls fl_raft_shrink() and then reads two figures:
 *   - core bytes: fl_raft_memory_bytes(), what the core says it holds;
 *   - heap bytes: the growth of malloc's in-use bytes (mallinfo2), which
 *     adds the allocator's per-chunk overhead and rounding.
 * The driver's per-group slot (storage callbacks and the log index window a
 * WAL would keep) is allocated before the baseline and excluded: the brief
 * counts it separately.
 */
#ifndef FLOTILLA_BENCH_IDLE_GROUPS_H
#define FLOTILLA_BENCH_IDLE_GROUPS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The brief's budget for one idle follower group, without its log window. */
#define IDLE_GROUP_TARGET_BYTES 512

typedef struct idle_groups_result {
  uint64_t groups;
  double core_bytes_per_group;
  double heap_bytes_per_group;
  double groups_per_gib;      /* from heap bytes: what malloc really spends */
  uint64_t driver_slot_bytes; /* per group, excluded from the figures above */
} idle_groups_result;

/* Returns 0, or -1 when a group cannot be created or does not end up an
 * idle follower (then *result is incomplete). Frees every group it made. */
int idle_groups_measure(uint64_t count, idle_groups_result *result);

#ifdef __cplusplus
}
#endif

#endif
