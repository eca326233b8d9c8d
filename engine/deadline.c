/*
 * deadline.c - fl_options.request_timeout_ms: a call (proposal, linearizable
 * read or query) not answered by its deadline is answered FL_E_TIMEOUT.
 *
 * Only groups with calls waiting may have a deadline, and a quiet group has
 * none, so the shard keeps a min-heap of the replicas with waiting calls,
 * keyed by the earliest deadline each had when it was last looked at. A
 * tick looks at the top only: O(1) when nothing is due, however many
 * groups there are. The key may be early (the call was answered since):
 * popping it then costs one look at the replica, which re-enters with its
 * true earliest deadline, or leaves when nothing waits.
 *
 *   not in heap --a call with a deadline waits--> in heap (key: its deadline)
 *   in heap --key passed at a tick--> expired calls fail; back in with the
 *            earliest remaining deadline, or out when none is left
 *   in heap --closed--> not in heap
 *
 * Invariant (beyond the heap's own, replica_heap.c): a replica's key is
 * <= every deadline of its waiting calls.
 */
#include "engine/engine_internal.h"

#include <assert.h>
#include <stddef.h>

/* Replicas whose calls one tick expires at most: bounds a tick's cost when
 * many groups time out together; the rest wait for the next tick. */
#define DEADLINE_GROUPS_PER_TICK 256u

static const replica_heap_kind deadline_kind = {
    .key_offset = offsetof(replica, deadline_due_ms),
    .slot_offset = offsetof(replica, deadline_slot),
};

void deadline_note(shard *s, replica *r, uint64_t deadline_ms) {
  if (deadline_ms == 0 || r->removed) {
    return;
  }
  if (replica_heap_contains(&deadline_kind, r)) {
    if (deadline_ms < r->deadline_due_ms) {
      r->deadline_due_ms = deadline_ms;
      replica_heap_rekeyed(&s->deadlines, &deadline_kind, r);
    }
    return;
  }
  r->deadline_due_ms = deadline_ms;
  if (replica_heap_insert(&s->deadlines, &deadline_kind, r) != 0) {
    /* without the heap the call only loses its deadline, not its answer */
    shard_log(s, 2, "group %llu: no memory to track a deadline", (unsigned long long)r->group);
  }
}

void deadline_tick(shard *s) {
  for (uint32_t n = 0; n < DEADLINE_GROUPS_PER_TICK; n++) {
    replica *r = replica_heap_top(&s->deadlines);
    if (r == NULL || r->deadline_due_ms > s->now_ms) {
      return;
    }
    replica_heap_remove(&s->deadlines, &deadline_kind, r);
    uint64_t next = replica_expire(r, s->now_ms);
    assert(next == 0 || next > s->now_ms);
    deadline_note(s, r, next);
  }
}

void deadline_forget(shard *s, replica *r) {
  if (replica_heap_contains(&deadline_kind, r)) {
    replica_heap_remove(&s->deadlines, &deadline_kind, r);
  }
}

void deadline_release(shard *s) {
  replica_heap_release(&s->deadlines);
}
