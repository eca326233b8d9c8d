/*
 * limits.h - every bound of the project in one place, with the reason for it.
 * Queues, batches and buffers are sized from here so a reader can see what a
 * node can hold at most.
 */
#ifndef FLOTILLA_LIMITS_H
#define FLOTILLA_LIMITS_H

#include <stdint.h>

/* Voters per configuration (incoming and outgoing each). Groups replicate on
 * 3-7 nodes. The configuration is stored in every group, so these bounds are
 * part of the per-group memory budget. */
#define FL_RAFT_MAX_VOTERS 7
/* Learners per configuration: catching-up replicas and read replicas. */
#define FL_RAFT_MAX_LEARNERS 5
/* Distinct members a leader tracks: incoming, outgoing and learners. */
#define FL_RAFT_MAX_MEMBERS (2 * FL_RAFT_MAX_VOTERS + FL_RAFT_MAX_LEARNERS)

/* Entries appended to a group between two advances (proposals plus a
 * received batch). Bounds the unstable array of one group. */
#define FL_RAFT_MAX_UNSTABLE_ENTRIES 65536
/* Messages one group may emit between two advances; beyond it messages are
 * dropped and Raft retries them. */
#define FL_RAFT_MAX_OUTBOX_MESSAGES 1024
/* Entries one update may hand over for applying. */
#define FL_RAFT_MAX_APPLY_ENTRIES 4096
/* Pending linearizable reads per group. */
#define FL_RAFT_MAX_PENDING_READS 4096
/* Writes in flight (persist requested, not yet completed) per group. */
#define FL_RAFT_MAX_WRITES_IN_FLIGHT 64
/* Inflight window of one follower, in messages. */
#define FL_RAFT_MAX_INFLIGHT_MESSAGES 4096

/* Terms and indexes from the wire or the disk above this are refused, so
 * that term + 1 and index + count never wrap. No real log gets near it. */
#define FL_RAFT_MAX_TERM_OR_INDEX (UINT64_MAX >> 1)

/* Largest WAL segment: recovery holds one whole segment in memory, so a
 * damaged or foreign file of any size must not make it allocate more. */
#define FL_WAL_MAX_SEGMENT_BYTES (1ull << 30)

/* C11 and C++ spell the compile-time assertion differently. */
#ifdef __cplusplus
#define FL_STATIC_ASSERT static_assert
#else
#define FL_STATIC_ASSERT _Static_assert
#endif

FL_STATIC_ASSERT(FL_RAFT_MAX_VOTERS <= 255, "voter counts are stored in a byte");
FL_STATIC_ASSERT(FL_RAFT_MAX_LEARNERS <= 255, "learner counts are stored in a byte");
FL_STATIC_ASSERT(FL_RAFT_MAX_APPLY_ENTRIES <= FL_RAFT_MAX_UNSTABLE_ENTRIES,
                 "apply batches never exceed what one update can carry");
FL_STATIC_ASSERT((FL_RAFT_MAX_INFLIGHT_MESSAGES & (FL_RAFT_MAX_INFLIGHT_MESSAGES - 1)) == 0,
                 "the inflight ring is indexed with a mask");

#endif
