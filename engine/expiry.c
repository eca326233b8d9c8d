/*
 * expiry.c - removing expired keys from memory: the leader of a group whose
 * KV store holds an entry past its expiry proposes EXPIRE_SWEEP, which every
 * replica applies alike (engine/kv.h, EXPIRY). Reads already treat expired
 * entries as absent; the sweep is what frees them.
 *
 * A quiet group is not ticked (quiescence, replica.c), yet its keys must
 * still go when their time comes. So the shard keeps a min-heap of the
 * replicas that lead a store with an expiry, ordered by the store's
 * earliest expiry (wall clock). Each tick looks at the top only: O(1) when
 * nothing is due, however many groups are idle.
 *
 *   not in heap --leader, store has an expiry, no sweep in flight--> in heap
 *   in heap --due at a tick--> sweep in flight (out of the heap)
 *   sweep in flight --applied, refused or dropped--> recomputed
 *   in heap --no longer leader / no expiry / removed--> not in heap
 *
 * Invariants (beyond the heap's own, replica_heap.c): a replica with a
 * sweep in flight is not in the heap, so one group has at most one sweep in
 * flight, and a group is swept at most once per tick.
 */
#include "engine/engine_internal.h"

#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/limits.h"

/* Entries one sweep removes at most: about a millisecond of apply work on
 * every replica, so a burst of expiries never stalls a shard; a group with
 * more due is swept again at the next tick. */
#define EXPIRY_SWEEP_MAX_KEYS 1024u
/* Sweeps one shard proposes per tick: bounds a tick's cost when many
 * groups come due at once; the rest wait for the next tick. */
#define EXPIRY_SWEEPS_PER_TICK 64u
/* Bytes of an encoded EXPIRE_SWEEP: the kind and two varints. */
#define EXPIRY_SWEEP_COMMAND_BYTES (1u + 2u * KV_VARINT_MAX_BYTES)

FL_STATIC_ASSERT(EXPIRY_SWEEP_MAX_KEYS <= KV_MAX_SWEEP_KEYS, "a sweep the store accepts");

static const replica_heap_kind expiry_kind = {
    .key_offset = offsetof(replica, expiry_due_ms),
    .slot_offset = offsetof(replica, expiry_slot),
};

/* The wall-clock time the replica's sweep is due, 0 for never. */
static uint64_t due_ms(const shard *s, const replica *r) {
  if (r->removed || r->role != FL_RAFT_LEADER || r->sweep_in_flight || s->engine->custom_machine ||
      r->machine == NULL) {
    return 0;
  }
  return kv_next_expiry_ms(r->machine);
}

void expiry_update(shard *s, replica *r) {
  uint64_t due = due_ms(s, r);
  bool listed = replica_heap_contains(&expiry_kind, r);
  if (due == 0) {
    if (listed) {
      replica_heap_remove(&s->expiring, &expiry_kind, r);
    }
    return;
  }
  if (listed && due == r->expiry_due_ms) {
    return;
  }
  r->expiry_due_ms = due;
  if (listed) {
    replica_heap_rekeyed(&s->expiring, &expiry_kind, r);
  } else if (replica_heap_insert(&s->expiring, &expiry_kind, r) != 0) {
    /* Without memory the group is only swept later (the next apply or
     * role change tries again): no reason to stop the shard's other groups. */
    shard_log(s, 2, "group %llu: no memory to time key expiry; retried later",
              (unsigned long long)r->group);
  }
}

/* Runs on the shard once the sweep applied, or failed to (no longer the
 * leader, dropped by an election, group closing). */
static void sweep_done(void *context, int status, const fl_result *result) {
  (void)status;
  (void)result;
  replica *r = context;
  r->sweep_in_flight = false;
  if (!r->removed) {
    expiry_update(r->owner, r); /* more may be due: next tick */
  }
}

/* false when the request could not be allocated (tried again next tick). */
static bool propose_sweep(shard *s, replica *r, uint64_t now_ms) {
  request *q = malloc(sizeof(request) + EXPIRY_SWEEP_COMMAND_BYTES);
  if (q == NULL) {
    return false;
  }
  size_t length = 0;
  memset(q, 0, sizeof(*q));
  int rc = kv_command_encode_expire_sweep(now_ms, EXPIRY_SWEEP_MAX_KEYS, q->data,
                                          EXPIRY_SWEEP_COMMAND_BYTES, &length);
  assert(rc == 0);
  (void)rc;
  q->type = REQUEST_PROPOSE;
  q->group = r->group;
  q->length = (uint32_t)length;
  q->propose_callback = sweep_done;
  q->context = r;
  /* The same deadline as an API call: the expiry of proposals stops at the
   * first one without a deadline, which would shield every call behind it
   * (a sweep that times out is proposed again on a later tick). */
  uint32_t timeout_ms = s->engine->options.request_timeout_ms;
  q->deadline_ms = timeout_ms != 0 ? shard_monotonic_ms() + timeout_ms : 0;
  replica_heap_remove(&s->expiring, &expiry_kind, r);
  r->sweep_in_flight = true;
  replica_add_proposal(r, q);
  return true;
}

void expiry_tick(shard *s) {
  if (replica_heap_top(&s->expiring) == NULL || s->failure != 0) {
    return;
  }
  const uint64_t now_ms = machine_wall_clock_ms();
  for (uint32_t sweeps = 0; sweeps < EXPIRY_SWEEPS_PER_TICK; sweeps++) {
    replica *r = replica_heap_top(&s->expiring);
    if (r == NULL || r->expiry_due_ms > now_ms || !propose_sweep(s, r, now_ms)) {
      return;
    }
  }
}

void expiry_release(shard *s) {
  replica_heap_release(&s->expiring);
}
