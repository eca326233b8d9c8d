/*
 * table.c - a shard's replicas by group id: open addressing with linear
 * probing, grown at half load, backward-shift deletion (no tombstones), so
 * a lookup on the message path is one hash and a short probe.
 */
#include "engine/engine_internal.h"

#include <errno.h>
#include <stdlib.h>

static uint32_t slot_of(uint64_t group, uint32_t mask) {
  group ^= group >> 33;
  group *= 0xff51afd7ed558ccdULL;
  group ^= group >> 33;
  return (uint32_t)group & mask;
}

replica *replica_table_find(const replica_table *table, uint64_t group) {
  if (table->capacity == 0) {
    return NULL;
  }
  uint32_t mask = table->capacity - 1;
  for (uint32_t i = slot_of(group, mask);; i = (i + 1) & mask) {
    replica *r = table->slots[i];
    if (r == NULL || r->group == group) {
      return r;
    }
  }
}

static void place(replica **slots, uint32_t capacity, replica *r) {
  uint32_t mask = capacity - 1;
  uint32_t i = slot_of(r->group, mask);
  while (slots[i] != NULL) {
    i = (i + 1) & mask;
  }
  slots[i] = r;
}

static int grow(replica_table *table) {
  uint32_t capacity = table->capacity ? table->capacity * 2 : 64;
  replica **slots = calloc(capacity, sizeof(*slots));
  if (slots == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < table->capacity; i++) {
    if (table->slots[i] != NULL) {
      place(slots, capacity, table->slots[i]);
    }
  }
  free(table->slots);
  table->slots = slots;
  table->capacity = capacity;
  return 0;
}

int replica_table_insert(replica_table *table, replica *r) {
  if (2 * (table->count + 1) > table->capacity && grow(table) != 0) {
    return -ENOMEM;
  }
  place(table->slots, table->capacity, r);
  table->count++;
  return 0;
}

void replica_table_remove(replica_table *table, uint64_t group) {
  if (replica_table_find(table, group) == NULL) {
    return;
  }
  uint32_t mask = table->capacity - 1;
  uint32_t hole = slot_of(group, mask);
  while (table->slots[hole]->group != group) {
    hole = (hole + 1) & mask;
  }
  for (uint32_t i = (hole + 1) & mask; table->slots[i] != NULL; i = (i + 1) & mask) {
    uint32_t home = slot_of(table->slots[i]->group, mask);
    if (((i - home) & mask) >= ((i - hole) & mask)) {
      table->slots[hole] = table->slots[i];
      hole = i;
    }
  }
  table->slots[hole] = NULL;
  table->count--;
}

void replica_table_release(replica_table *table) {
  free(table->slots);
  table->slots = NULL;
  table->capacity = table->count = 0;
}
