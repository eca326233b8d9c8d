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
 * Invariants: a replica is in the heap iff deadline_slot != UINT32_MAX,
 * and then deadlines[deadline_slot] is it; each key is >= its parent's; a
 * replica's key is <= every deadline of its waiting calls.
 */
#include "engine/engine_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

/* Replicas whose calls one tick expires at most: bounds a tick's cost when
 * many groups time out together; the rest wait for the next tick. */
#define DEADLINE_GROUPS_PER_TICK 256u

#define NOT_IN_HEAP UINT32_MAX

static void place(shard *s, uint32_t slot, replica *r) {
  s->deadlines[slot] = r;
  r->deadline_slot = slot;
}

static void sift_up(shard *s, uint32_t slot) {
  replica *r = s->deadlines[slot];
  while (slot > 0) {
    uint32_t parent = (slot - 1) / 2;
    if (s->deadlines[parent]->deadline_due_ms <= r->deadline_due_ms) {
      break;
    }
    place(s, slot, s->deadlines[parent]);
    slot = parent;
  }
  place(s, slot, r);
}

static void sift_down(shard *s, uint32_t slot) {
  replica *r = s->deadlines[slot];
  for (;;) {
    uint32_t child = 2 * slot + 1;
    if (child >= s->deadline_count) {
      break;
    }
    if (child + 1 < s->deadline_count &&
        s->deadlines[child + 1]->deadline_due_ms < s->deadlines[child]->deadline_due_ms) {
      child++;
    }
    if (r->deadline_due_ms <= s->deadlines[child]->deadline_due_ms) {
      break;
    }
    place(s, slot, s->deadlines[child]);
    slot = child;
  }
  place(s, slot, r);
}

static void heap_remove(shard *s, replica *r) {
  uint32_t slot = r->deadline_slot;
  assert(slot < s->deadline_count && s->deadlines[slot] == r);
  r->deadline_slot = NOT_IN_HEAP;
  replica *last = s->deadlines[--s->deadline_count];
  if (last == r) {
    return;
  }
  place(s, slot, last);
  sift_up(s, slot);
  sift_down(s, last->deadline_slot);
}

static int heap_insert(shard *s, replica *r) {
  if (s->deadline_count == s->deadline_capacity) {
    uint32_t capacity = s->deadline_capacity ? s->deadline_capacity * 2 : 64;
    replica **grown = realloc(s->deadlines, capacity * sizeof(*grown));
    if (grown == NULL) {
      return -ENOMEM;
    }
    s->deadlines = grown;
    s->deadline_capacity = capacity;
  }
  place(s, s->deadline_count++, r);
  sift_up(s, r->deadline_slot);
  return 0;
}

void deadline_note(shard *s, replica *r, uint64_t deadline_ms) {
  if (deadline_ms == 0 || r->removed) {
    return;
  }
  if (r->deadline_slot != NOT_IN_HEAP) {
    if (deadline_ms < r->deadline_due_ms) {
      r->deadline_due_ms = deadline_ms;
      sift_up(s, r->deadline_slot);
    }
    return;
  }
  r->deadline_due_ms = deadline_ms;
  if (heap_insert(s, r) != 0) {
    /* without the heap the call only loses its deadline, not its answer */
    shard_log(s, 2, "group %llu: no memory to track a deadline", (unsigned long long)r->group);
  }
}

void deadline_tick(shard *s) {
  for (uint32_t n = 0; n < DEADLINE_GROUPS_PER_TICK && s->deadline_count > 0; n++) {
    replica *r = s->deadlines[0];
    if (r->deadline_due_ms > s->now_ms) {
      return;
    }
    heap_remove(s, r);
    uint64_t next = replica_expire(r, s->now_ms);
    assert(next == 0 || next > s->now_ms);
    deadline_note(s, r, next);
  }
}

void deadline_forget(shard *s, replica *r) {
  if (r->deadline_slot != NOT_IN_HEAP) {
    heap_remove(s, r);
  }
}

void deadline_release(shard *s) {
  free(s->deadlines);
  s->deadlines = NULL;
  s->deadline_count = s->deadline_capacity = 0;
}
