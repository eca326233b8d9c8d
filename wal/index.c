/*
 * index.c - each group's in-memory index: where its live entries sit, their
 * terms, its hard state and newest snapshot marker.
 *
 * Entries are indexed per record (a run of consecutive indexes), and terms as
 * runs of equal terms, so a group costs a few dozen bytes per record it has
 * live, never a pointer per entry.
 *
 * Invariants: runs ascend, are contiguous and cover exactly
 * [first_index, last_index]; term runs cover the same range with strictly
 * increasing first indexes.
 */
#include "wal/wal_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_group(uint64_t group) {
  group ^= group >> 33;
  group *= 0xff51afd7ed558ccdULL;
  group ^= group >> 33;
  return group;
}

wal_group_index *wal_index_find(const wal_group_table *table, uint64_t group) {
  if (table->capacity == 0 || group == 0) {
    return NULL;
  }
  uint32_t mask = table->capacity - 1;
  for (uint32_t i = (uint32_t)hash_group(group) & mask;; i = (i + 1) & mask) {
    wal_group_index *slot = &table->slots[i];
    if (slot->id == group) {
      return slot;
    }
    if (slot->id == 0) {
      return NULL;
    }
  }
}

static wal_group_index *insert_slot(wal_group_table *table, uint64_t group) {
  uint32_t mask = table->capacity - 1;
  uint32_t i = (uint32_t)hash_group(group) & mask;
  while (table->slots[i].id != 0) {
    i = (i + 1) & mask;
  }
  return &table->slots[i];
}

static int grow(wal_group_table *table) {
  uint32_t capacity = table->capacity ? table->capacity * 2 : 64;
  wal_group_table bigger = {.slots = calloc(capacity, sizeof(wal_group_index)),
                            .capacity = capacity,
                            .count = table->count};
  if (bigger.slots == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < table->capacity; i++) {
    if (table->slots[i].id != 0) {
      *insert_slot(&bigger, table->slots[i].id) = table->slots[i];
    }
  }
  free(table->slots);
  *table = bigger;
  return 0;
}

wal_group_index *wal_index_get(wal_group_table *table, uint64_t group) {
  wal_group_index *found = wal_index_find(table, group);
  if (found != NULL || group == 0) {
    return found;
  }
  if (2 * (table->count + 1) > table->capacity && grow(table) != 0) {
    return NULL;
  }
  wal_group_index *slot = insert_slot(table, group);
  memset(slot, 0, sizeof(*slot));
  slot->id = group;
  slot->first_index = 1;
  slot->last_index = 0;
  table->count++;
  return slot;
}

static void release_group(wal_group_index *g) {
  free(g->runs);
  free(g->terms);
}

/* Backward-shift deletion keeps probe chains unbroken without tombstones. */
void wal_index_remove(wal_group_table *table, uint64_t group) {
  wal_group_index *slot = wal_index_find(table, group);
  if (slot == NULL) {
    return;
  }
  release_group(slot);
  uint32_t mask = table->capacity - 1;
  uint32_t hole = (uint32_t)(slot - table->slots);
  for (uint32_t i = (hole + 1) & mask; table->slots[i].id != 0; i = (i + 1) & mask) {
    uint32_t home = (uint32_t)hash_group(table->slots[i].id) & mask;
    bool movable = ((i - home) & mask) >= ((i - hole) & mask);
    if (movable) {
      table->slots[hole] = table->slots[i];
      hole = i;
    }
  }
  memset(&table->slots[hole], 0, sizeof(table->slots[hole]));
  table->count--;
}

void wal_index_release(wal_group_table *table) {
  for (uint32_t i = 0; i < table->capacity; i++) {
    if (table->slots[i].id != 0) {
      release_group(&table->slots[i]);
    }
  }
  free(table->slots);
  memset(table, 0, sizeof(*table));
}

static int reserve(void **items, uint32_t *capacity, uint32_t need, size_t item_bytes) {
  if (need <= *capacity) {
    return 0;
  }
  uint32_t bigger = *capacity ? *capacity * 2 : 4;
  while (bigger < need) {
    bigger *= 2;
  }
  void *grown = realloc(*items, (size_t)bigger * item_bytes);
  if (grown == NULL) {
    return -ENOMEM;
  }
  *items = grown;
  *capacity = bigger;
  return 0;
}

/* Drops everything after keep_through (runs and term runs). */
static void truncate_after(wal_group_index *g, uint64_t keep_through) {
  while (g->run_count > 0 && g->runs[g->run_count - 1].first_index > keep_through) {
    g->run_count--;
  }
  if (g->run_count > 0 && g->runs[g->run_count - 1].last_index > keep_through) {
    g->runs[g->run_count - 1].last_index = keep_through;
  }
  while (g->term_count > 0 && g->terms[g->term_count - 1].first_index > keep_through) {
    g->term_count--;
  }
  if (g->last_index > keep_through) {
    g->last_index = keep_through;
  }
}

int wal_index_note_term(wal_group_index *g, uint64_t index, uint64_t term) {
  if (g->term_count > 0 && g->terms[g->term_count - 1].term == term) {
    return 0;
  }
  if (g->term_count > 0 && g->terms[g->term_count - 1].term > term) {
    return -EINVAL; /* terms never decrease along a log */
  }
  if (reserve((void **)&g->terms, &g->term_capacity, g->term_count + 1, sizeof(wal_term_run))) {
    return -ENOMEM;
  }
  g->terms[g->term_count++] = (wal_term_run){.first_index = index, .term = term};
  return 0;
}

int wal_index_apply_entries(wal_group_index *g, uint64_t first_index, uint32_t count,
                            uint64_t segment, uint64_t offset) {
  if (count == 0 || first_index == 0) {
    return -EINVAL;
  }
  bool empty = g->last_index < g->first_index;
  if (first_index <= g->snapshot_index || first_index < g->first_index ||
      (!empty && first_index > g->last_index + 1) ||
      (empty && first_index != g->last_index + 1 && g->snapshot_index != 0)) {
    return -EINVAL;
  }
  if (empty) {
    g->first_index = first_index;
  }
  truncate_after(g, first_index - 1);
  if (reserve((void **)&g->runs, &g->run_capacity, g->run_count + 1, sizeof(wal_run)) != 0) {
    return -ENOMEM;
  }
  g->runs[g->run_count++] = (wal_run){.first_index = first_index,
                                      .last_index = first_index + count - 1,
                                      .segment = segment,
                                      .offset = offset};
  g->last_index = first_index + count - 1;
  return 0;
}

int wal_index_reset_log(wal_group_index *g, uint64_t first_index) {
  if (first_index == 0 || first_index <= g->snapshot_index) {
    return -EINVAL;
  }
  g->run_count = 0;
  g->term_count = 0;
  g->first_index = first_index;
  g->last_index = first_index - 1;
  return 0;
}

/* Entries up to `index` die; the log restarts after it when it was shorter. */
void wal_index_apply_compact(wal_group_index *g, uint64_t index) {
  if (index < g->first_index) {
    return;
  }
  uint32_t drop = 0;
  while (drop < g->run_count && g->runs[drop].last_index <= index) {
    drop++;
  }
  if (drop > 0) {
    memmove(g->runs, g->runs + drop, (g->run_count - drop) * sizeof(wal_run));
    g->run_count -= drop;
  }
  if (g->run_count > 0 && g->runs[0].first_index <= index) {
    g->runs[0].first_index = index + 1;
  }
  uint32_t drop_terms = 0;
  while (drop_terms + 1 < g->term_count && g->terms[drop_terms + 1].first_index <= index + 1) {
    drop_terms++;
  }
  if (drop_terms > 0) {
    memmove(g->terms, g->terms + drop_terms, (g->term_count - drop_terms) * sizeof(wal_term_run));
    g->term_count -= drop_terms;
  }
  g->first_index = index + 1;
  if (g->last_index < index) {
    g->last_index = index;
  }
  if (g->run_count == 0) {
    g->term_count = 0;
  } else if (g->terms[0].first_index < g->first_index) {
    g->terms[0].first_index = g->first_index;
  }
}

int wal_index_apply_snapshot(wal_group_index *g, uint64_t index, uint64_t term, uint64_t segment,
                             uint64_t offset, uint32_t length) {
  if (index < g->snapshot_index) {
    return -EINVAL;
  }
  if (index + 1 < g->first_index) {
    /* A marker copied forward by garbage collection: the log already
     * starts after it, so it must not disturb the log. */
    g->snapshot_index = index;
    g->snapshot_term = term;
    g->snapshot_segment = segment;
    g->snapshot_offset = offset;
    g->snapshot_length = length;
    return 0;
  }
  uint64_t term_there = 0;
  bool log_matches = wal_index_term(g, index, &term_there) == 0 && term_there == term;
  if (!log_matches) {
    truncate_after(g, g->first_index - 1); /* the log does not extend it */
    g->last_index = index;
  }
  wal_index_apply_compact(g, index);
  g->snapshot_index = index;
  g->snapshot_term = term;
  g->snapshot_segment = segment;
  g->snapshot_offset = offset;
  g->snapshot_length = length;
  return 0;
}

int wal_index_term(const wal_group_index *g, uint64_t index, uint64_t *term) {
  if (index == g->snapshot_index && index != 0 && index + 1 == g->first_index) {
    *term = g->snapshot_term;
    return 0;
  }
  if (index < g->first_index || index > g->last_index || g->term_count == 0) {
    return -ENOENT;
  }
  uint32_t lo = 0;
  uint32_t hi = g->term_count;
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (g->terms[mid].first_index <= index) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  *term = g->terms[lo].term;
  return 0;
}

const wal_run *wal_index_run_of(const wal_group_index *g, uint64_t index) {
  uint32_t lo = 0;
  uint32_t hi = g->run_count;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (g->runs[mid].last_index < index) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == g->run_count || g->runs[lo].first_index > index) {
    return NULL;
  }
  return &g->runs[lo];
}
