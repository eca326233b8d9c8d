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

#include <assert.h>
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
    wal_group_index *slot = table->slots[i];
    if (slot == NULL || slot->id == group) {
      return slot;
    }
  }
}

static wal_group_index **free_slot(wal_group_table *table, uint64_t group) {
  uint32_t mask = table->capacity - 1;
  uint32_t i = (uint32_t)hash_group(group) & mask;
  while (table->slots[i] != NULL) {
    i = (i + 1) & mask;
  }
  return &table->slots[i];
}

static int grow(wal_group_table *table) {
  uint32_t capacity = table->capacity ? table->capacity * 2 : 64;
  wal_group_table bigger = {.slots = calloc(capacity, sizeof(*table->slots)),
                            .capacity = capacity,
                            .count = table->count};
  if (bigger.slots == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < table->capacity; i++) {
    if (table->slots[i] != NULL) {
      *free_slot(&bigger, table->slots[i]->id) = table->slots[i];
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
  wal_group_index *g = calloc(1, sizeof(*g));
  if (g == NULL) {
    return NULL;
  }
  g->id = group;
  g->first_index = 1;
  g->last_index = 0;
  *free_slot(table, group) = g;
  table->count++;
  return g;
}

static void release_group(wal_group_index *g) {
  free(g->runs);
  if (g->term_capacity > 1) {
    free(g->term_storage.many);
  }
  free(g);
}

/* Backward-shift deletion keeps probe chains unbroken without tombstones. */
void wal_index_remove(wal_group_table *table, uint64_t group) {
  if (wal_index_find(table, group) == NULL) {
    return;
  }
  uint32_t mask = table->capacity - 1;
  uint32_t hole = (uint32_t)hash_group(group) & mask;
  while (table->slots[hole]->id != group) {
    hole = (hole + 1) & mask;
  }
  release_group(table->slots[hole]);
  for (uint32_t i = (hole + 1) & mask; table->slots[i] != NULL; i = (i + 1) & mask) {
    uint32_t home = (uint32_t)hash_group(table->slots[i]->id) & mask;
    bool movable = ((i - home) & mask) >= ((i - hole) & mask);
    if (movable) {
      table->slots[hole] = table->slots[i];
      hole = i;
    }
  }
  table->slots[hole] = NULL;
  table->count--;
}

void wal_index_release(wal_group_table *table) {
  for (uint32_t i = 0; i < table->capacity; i++) {
    if (table->slots[i] != NULL) {
      release_group(table->slots[i]);
    }
  }
  free(table->slots);
  memset(table, 0, sizeof(*table));
}

/*
 * Run arrays start at one slot and double: most groups are idle with one run
 * and one term, and a group's array is trimmed again once compaction leaves
 * it mostly empty (fit_runs, fit_terms), so an idle group never pays for the
 * traffic it once had.
 */
static int reserve_runs(wal_group_index *g, uint32_t need) {
  if (need <= g->run_capacity) {
    return 0;
  }
  uint32_t bigger = g->run_capacity ? g->run_capacity * 2 : 1;
  while (bigger < need) {
    bigger *= 2;
  }
  wal_run *grown = realloc(g->runs, (size_t)bigger * sizeof(wal_run));
  if (grown == NULL) {
    return -ENOMEM;
  }
  g->runs = grown;
  g->run_capacity = bigger;
  return 0;
}

/* A second term moves the term runs from the inline slot to the heap. */
static int reserve_terms(wal_group_index *g, uint32_t need) {
  if (need <= 1 || need <= g->term_capacity) {
    return 0;
  }
  bool inline_now = g->term_capacity <= 1;
  uint32_t bigger = inline_now ? 2 : g->term_capacity * 2;
  while (bigger < need) {
    bigger *= 2;
  }
  wal_term_run *grown =
      realloc(inline_now ? NULL : g->term_storage.many, (size_t)bigger * sizeof(wal_term_run));
  if (grown == NULL) {
    return -ENOMEM;
  }
  if (inline_now && g->term_count == 1) {
    grown[0] = g->term_storage.one;
  }
  g->term_storage.many = grown;
  g->term_capacity = bigger;
  return 0;
}

/* Trims the run array once three quarters of it are unused. */
static void fit_runs(wal_group_index *g) {
  if (g->run_count == 0) {
    free(g->runs);
    g->runs = NULL;
    g->run_capacity = 0;
  } else if (g->run_count * 4 <= g->run_capacity) {
    wal_run *fitted = realloc(g->runs, (size_t)g->run_count * sizeof(wal_run));
    if (fitted != NULL) { /* keeping the larger array is harmless */
      g->runs = fitted;
      g->run_capacity = g->run_count;
    }
  }
}

/* Back to the inline slot at one term; trimmed like the runs otherwise. */
static void fit_terms(wal_group_index *g) {
  if (g->term_capacity <= 1) {
    return;
  }
  if (g->term_count <= 1) {
    wal_term_run only = g->term_count == 1 ? g->term_storage.many[0] : (wal_term_run){0, 0};
    free(g->term_storage.many);
    g->term_storage.one = only;
    g->term_capacity = 1;
  } else if (g->term_count * 4 <= g->term_capacity) {
    wal_term_run *fitted =
        realloc(g->term_storage.many, (size_t)g->term_count * sizeof(wal_term_run));
    if (fitted != NULL) {
      g->term_storage.many = fitted;
      g->term_capacity = g->term_count;
    }
  }
}

/* Drops everything after keep_through (runs and term runs). */
static void truncate_after(wal_group_index *g, uint64_t keep_through) {
  while (g->run_count > 0 && g->runs[g->run_count - 1].first_index > keep_through) {
    g->run_count--;
  }
  if (g->run_count > 0 && g->runs[g->run_count - 1].last_index > keep_through) {
    g->runs[g->run_count - 1].last_index = keep_through;
  }
  const wal_term_run *terms = wal_index_terms(g);
  while (g->term_count > 0 && terms[g->term_count - 1].first_index > keep_through) {
    g->term_count--;
  }
  if (g->last_index > keep_through) {
    g->last_index = keep_through;
  }
}

int wal_index_note_term(wal_group_index *g, uint64_t index, uint64_t term) {
  const wal_term_run *last = g->term_count > 0 ? &wal_index_terms(g)[g->term_count - 1] : NULL;
  if (last != NULL && last->term == term) {
    return 0;
  }
  if (last != NULL && last->term > term) {
    return -EINVAL; /* terms never decrease along a log */
  }
  if (reserve_terms(g, g->term_count + 1) != 0) {
    return -ENOMEM;
  }
  wal_index_terms(g)[g->term_count++] = (wal_term_run){.first_index = index, .term = term};
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
  if (reserve_runs(g, g->run_count + 1) != 0) {
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
  fit_runs(g);
  fit_terms(g);
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
  wal_term_run *terms = wal_index_terms(g);
  uint32_t drop_terms = 0;
  while (drop_terms + 1 < g->term_count && terms[drop_terms + 1].first_index <= index + 1) {
    drop_terms++;
  }
  if (drop_terms > 0) {
    memmove(terms, terms + drop_terms, (g->term_count - drop_terms) * sizeof(wal_term_run));
    g->term_count -= drop_terms;
  }
  g->first_index = index + 1;
  if (g->last_index < index) {
    g->last_index = index;
  }
  if (g->run_count == 0) {
    g->term_count = 0;
  } else if (terms[0].first_index < g->first_index) {
    terms[0].first_index = g->first_index;
  }
  fit_runs(g);
  fit_terms(g);
}

int wal_index_apply_snapshot(wal_group_index *g, uint64_t index, uint64_t term, uint64_t segment,
                             uint64_t offset, uint32_t length) {
  assert(offset < FL_WAL_MAX_SEGMENT_BYTES); /* a record lies inside its segment */
  if (index < g->snapshot_index) {
    return -EINVAL;
  }
  if (index + 1 < g->first_index) {
    /* A marker copied forward by garbage collection: the log already
     * starts after it, so it must not disturb the log. */
    g->snapshot_index = index;
    g->snapshot_term = term;
    g->snapshot_segment = segment;
    g->snapshot_offset = (uint32_t)offset;
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
  g->snapshot_offset = (uint32_t)offset;
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
  const wal_term_run *terms = wal_index_terms_const(g);
  uint32_t lo = 0;
  uint32_t hi = g->term_count;
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (terms[mid].first_index <= index) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  *term = terms[lo].term;
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
