/*
 * log.c - the core's view of the log: terms, bounds, unstable entries.
 *
 *   first_index-1        stable_index   unstable_first           last_index
 *   | snapshot |  in storage (durable)  | in storage, not durable | unstable |
 *
 * The core keeps no payloads of its own. Terms are kept as runs of equal
 * terms (a handful per group), so term_at() of any index is a binary search
 * and an idle group's log costs a few dozen bytes. Entries appended since the
 * last advance are "unstable": only the core's array references them, and the
 * driver stores them when it takes the update.
 *
 * Invariants: first_index <= last_index + 1; commit <= last_index;
 * applied <= commit; term runs ascend in index and strictly in term, and all
 * lie in [first_index, last_index]; unstable covers exactly
 * [unstable_first, last_index].
 */
#include "raft/raft_internal.h"

#include <stdlib.h>
#include <string.h>

static int runs_reserve(fl_raft *r, uint32_t need) {
  if (need <= r->term_run_capacity) {
    return 0;
  }
  uint32_t capacity = r->term_run_capacity ? r->term_run_capacity * 2 : 2;
  while (capacity < need) {
    capacity *= 2;
  }
  bool was_inline = r->term_runs == &r->inline_run;
  fl_raft_term_run *runs = realloc(was_inline ? NULL : r->term_runs, capacity * sizeof(*runs));
  if (runs == NULL) {
    return FL_RAFT_E_NOMEM;
  }
  if (was_inline) {
    runs[0] = r->inline_run;
  }
  r->term_runs = runs;
  r->term_run_capacity = capacity;
  return 0;
}

int fl_raft_log_init(fl_raft *r, const fl_raft_restore *restore) {
  r->first_index = restore->snapshot.index + 1;
  r->snapshot_term = restore->snapshot.term;
  r->last_index = restore->last_index;
  if (r->last_index + 1 < r->first_index) {
    return FL_RAFT_E_INVALID;
  }
  if (runs_reserve(r, restore->term_run_count) != 0) {
    return FL_RAFT_E_NOMEM;
  }
  uint64_t previous_term = r->snapshot_term;
  uint64_t previous_first = r->first_index - 1;
  for (uint32_t i = 0; i < restore->term_run_count; i++) {
    const fl_raft_term_run *run = &restore->term_runs[i];
    bool first_run_starts_log = i > 0 || run->first_index == r->first_index;
    if (run->term <= previous_term && i > 0) {
      return FL_RAFT_E_INVALID;
    }
    if (run->term < previous_term || run->first_index <= previous_first ||
        run->first_index > r->last_index || !first_run_starts_log) {
      return FL_RAFT_E_INVALID;
    }
    r->term_runs[i] = *run;
    previous_term = run->term;
    previous_first = run->first_index;
  }
  r->term_run_count = restore->term_run_count;
  if ((r->last_index >= r->first_index) != (r->term_run_count > 0)) {
    return FL_RAFT_E_INVALID;
  }
  r->stable_index = r->last_index;
  r->unstable_first = r->last_index + 1;
  return 0;
}

uint64_t fl_raft_term_at(const fl_raft *r, uint64_t index) {
  if (index + 1 == r->first_index) {
    return r->snapshot_term;
  }
  if (index < r->first_index || index > r->last_index) {
    return 0;
  }
  uint32_t lo = 0;
  uint32_t hi = r->term_run_count; /* the answer is in [lo, hi) */
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (r->term_runs[mid].first_index <= index) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return r->term_runs[lo].term;
}

uint64_t fl_raft_last_term(const fl_raft *r) {
  return fl_raft_term_at(r, r->last_index);
}

bool fl_raft_log_matches(const fl_raft *r, uint64_t index, uint64_t term) {
  if (index + 1 < r->first_index || index > r->last_index) {
    return false;
  }
  return fl_raft_term_at(r, index) == term;
}

bool fl_raft_is_up_to_date(const fl_raft *r, uint64_t last_index, uint64_t last_term) {
  uint64_t my_term = fl_raft_last_term(r);
  return last_term > my_term || (last_term == my_term && last_index >= r->last_index);
}

uint32_t fl_raft_unstable_room(const fl_raft *r) {
  return FL_RAFT_MAX_UNSTABLE_ENTRIES - r->unstable.count;
}

static void cap_writes(fl_raft *r, uint64_t keep_through) {
  uint32_t count = r->outbox != NULL ? r->outbox->writes.count : 0;
  for (uint32_t i = 0; i < count; i++) {
    fl_raft_write *w = &FL_VECTOR_AT(&r->outbox->writes, fl_raft_write, i);
    w->end_index = fl_min_u64(w->end_index, keep_through);
  }
  r->stable_index = fl_min_u64(r->stable_index, keep_through);
}

/*
 * Drops every entry after keep_through. A write already handed to the driver
 * that covered those indexes no longer proves anything about them, even if
 * the same (index, term) is appended again later (the ABA race): its end is
 * capped here, so its completion only vouches for what survives.
 */
void fl_raft_log_truncate(fl_raft *r, uint64_t keep_through) {
  assert(keep_through >= r->commit);
  if (keep_through >= r->last_index) {
    return;
  }
  while (r->term_run_count > 0 && r->term_runs[r->term_run_count - 1].first_index > keep_through) {
    r->term_run_count--;
  }
  if (keep_through + 1 >= r->unstable_first) {
    r->unstable.count = (uint32_t)(keep_through + 1 - r->unstable_first);
  } else {
    r->unstable.count = 0;
    r->unstable_first = keep_through + 1;
  }
  r->last_index = keep_through;
  cap_writes(r, keep_through);
}

static int push_term(fl_raft *r, uint64_t index, uint64_t term) {
  if (r->term_run_count > 0 && r->term_runs[r->term_run_count - 1].term == term) {
    return 0;
  }
  if (runs_reserve(r, r->term_run_count + 1) != 0) {
    return FL_RAFT_E_NOMEM;
  }
  r->term_runs[r->term_run_count++] = (fl_raft_term_run){.first_index = index, .term = term};
  return 0;
}

/* Appends entries that directly follow last_index (the caller truncated). */
int fl_raft_log_append(fl_raft *r, const fl_raft_entry *entries, uint32_t count) {
  if (count > fl_raft_unstable_room(r)) {
    return FL_RAFT_E_BUSY;
  }
  for (uint32_t i = 0; i < count; i++) {
    const fl_raft_entry *e = &entries[i];
    assert(e->index == r->last_index + 1);
    assert(e->term >= fl_raft_last_term(r));
    fl_raft_entry *slot =
        fl_raft_vector_push(&r->unstable, sizeof(fl_raft_entry), FL_RAFT_MAX_UNSTABLE_ENTRIES);
    if (slot == NULL || push_term(r, e->index, e->term) != 0) {
      if (slot != NULL) {
        r->unstable.count--;
      }
      return FL_RAFT_E_NOMEM;
    }
    *slot = *e;
    r->last_index = e->index;
  }
  return 0;
}

/* Entries in [lo, hi): unstable ones from the core, older ones from storage. */
int fl_raft_log_entries(fl_raft *r, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                        fl_raft_entry *out, uint32_t capacity, uint32_t *count) {
  *count = 0;
  if (lo < r->first_index) {
    return FL_RAFT_E_COMPACTED;
  }
  hi = fl_min_u64(hi, r->last_index + 1);
  if (lo >= hi || capacity == 0) {
    return lo > r->last_index + 1 ? FL_RAFT_E_UNAVAILABLE : 0;
  }
  uint64_t stored_end = fl_min_u64(hi, r->unstable_first);
  uint64_t bytes = 0;
  if (lo < stored_end) {
    int rc =
        r->storage->entries(r->storage->context, lo, stored_end, max_bytes, out, capacity, count);
    if (rc != 0) {
      return rc;
    }
    for (uint32_t i = 0; i < *count; i++) {
      bytes += out[i].length;
    }
    if (*count < stored_end - lo) {
      return 0; /* storage stopped at a bound */
    }
  }
  const fl_raft_entry *unstable = r->unstable.items;
  for (uint64_t i = fl_max_u64(lo, r->unstable_first); i < hi && *count < capacity; i++) {
    const fl_raft_entry *e = &unstable[i - r->unstable_first];
    if (*count > 0 && bytes + e->length > max_bytes) {
      break;
    }
    bytes += e->length;
    out[(*count)++] = *e;
  }
  return 0;
}

/*
 * The largest index <= `index` whose term is <= `term`: no entry between it
 * and `index` can match a log whose entry at `index` has term `term`, so
 * the leader skips a whole term per round trip instead of one entry.
 */
uint64_t fl_raft_find_conflict_by_term(const fl_raft *r, uint64_t index, uint64_t term) {
  if (index > r->last_index) {
    index = r->last_index;
  }
  for (uint32_t i = r->term_run_count; i > 0; i--) {
    const fl_raft_term_run *run = &r->term_runs[i - 1];
    if (run->first_index > index) {
      continue;
    }
    if (run->term <= term) {
      return index;
    }
    index = run->first_index - 1;
  }
  return index;
}

/* Replaces the whole log by a snapshot the leader sent. */
void fl_raft_log_restore(fl_raft *r, const fl_raft_snapshot_meta *meta) {
  /* Writes in flight only vouch for the prefix the snapshot surely shares. */
  cap_writes(r, r->commit);
  r->first_index = meta->index + 1;
  r->snapshot_term = meta->term;
  r->last_index = meta->index;
  r->term_run_count = 0;
  r->unstable.count = 0;
  r->unstable_first = meta->index + 1;
  r->commit = meta->index;
}

void fl_raft_commit_to(fl_raft *r, uint64_t commit) {
  commit = fl_min_u64(commit, r->last_index);
  if (commit > r->commit) {
    r->commit = commit;
  }
}
