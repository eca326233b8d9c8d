/*
 * replica_heap.c - a min-heap of replicas keyed by a time, for the shard's
 * timers that must cost nothing while idle groups are many: key expiry
 * (expiry.c) and request deadlines (deadline.c).
 *
 * The key and the heap position live in the replica itself (two fields a
 * replica_heap_kind names), so removal and re-keying take O(log n) without
 * a search and an idle replica costs no memory beyond those fields.
 *
 * Invariants: a replica is in the heap iff its slot field is not
 * REPLICA_HEAP_ABSENT, and then items[slot] is that replica; each key is
 * >= its parent's.
 */
#include "engine/engine_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

/* Slots the heap starts with when the first replica enters. */
#define REPLICA_HEAP_FIRST_CAPACITY 64u

static uint64_t key_of(const replica_heap_kind *kind, const replica *r) {
  return *(const uint64_t *)((const char *)r + kind->key_offset);
}

static uint32_t *slot_of(const replica_heap_kind *kind, replica *r) {
  return (uint32_t *)((char *)r + kind->slot_offset);
}

static void place(replica_heap *h, const replica_heap_kind *kind, uint32_t slot, replica *r) {
  h->items[slot] = r;
  *slot_of(kind, r) = slot;
}

static void sift_up(replica_heap *h, const replica_heap_kind *kind, uint32_t slot) {
  replica *r = h->items[slot];
  uint64_t key = key_of(kind, r);
  while (slot > 0) {
    uint32_t parent = (slot - 1) / 2;
    if (key_of(kind, h->items[parent]) <= key) {
      break;
    }
    place(h, kind, slot, h->items[parent]);
    slot = parent;
  }
  place(h, kind, slot, r);
}

static void sift_down(replica_heap *h, const replica_heap_kind *kind, uint32_t slot) {
  replica *r = h->items[slot];
  uint64_t key = key_of(kind, r);
  for (;;) {
    uint32_t child = 2 * slot + 1;
    if (child >= h->count) {
      break;
    }
    if (child + 1 < h->count && key_of(kind, h->items[child + 1]) < key_of(kind, h->items[child])) {
      child++;
    }
    if (key <= key_of(kind, h->items[child])) {
      break;
    }
    place(h, kind, slot, h->items[child]);
    slot = child;
  }
  place(h, kind, slot, r);
}

bool replica_heap_contains(const replica_heap_kind *kind, replica *r) {
  return *slot_of(kind, r) != REPLICA_HEAP_ABSENT;
}

replica *replica_heap_top(const replica_heap *h) {
  return h->count > 0 ? h->items[0] : NULL;
}

int replica_heap_insert(replica_heap *h, const replica_heap_kind *kind, replica *r) {
  assert(!replica_heap_contains(kind, r));
  if (h->count == h->capacity) {
    uint32_t capacity = h->capacity != 0 ? h->capacity * 2 : REPLICA_HEAP_FIRST_CAPACITY;
    replica **grown = realloc(h->items, capacity * sizeof(*grown));
    if (grown == NULL) {
      return -ENOMEM;
    }
    h->items = grown;
    h->capacity = capacity;
  }
  place(h, kind, h->count++, r);
  sift_up(h, kind, h->count - 1);
  return 0;
}

void replica_heap_remove(replica_heap *h, const replica_heap_kind *kind, replica *r) {
  uint32_t slot = *slot_of(kind, r);
  assert(slot < h->count && h->items[slot] == r);
  *slot_of(kind, r) = REPLICA_HEAP_ABSENT;
  replica *last = h->items[--h->count];
  if (last == r) {
    return;
  }
  place(h, kind, slot, last);
  sift_up(h, kind, slot);
  sift_down(h, kind, *slot_of(kind, last));
}

void replica_heap_rekeyed(replica_heap *h, const replica_heap_kind *kind, replica *r) {
  assert(replica_heap_contains(kind, r));
  sift_up(h, kind, *slot_of(kind, r));
  sift_down(h, kind, *slot_of(kind, r));
}

void replica_heap_release(replica_heap *h) {
  free(h->items);
  *h = (replica_heap){0};
}
