/*
 * space.c - keeping disk use bounded: copying forward what pins the oldest
 * segments, then retiring the segments nothing live refers to.
 *
 * What pins a segment: a group's first live entry run, its newest hard state
 * record, its newest snapshot marker. Markers are re-saved at the head. A
 * group whose live entries sit in the oldest half of the segments (a lagging
 * or idle group that never compacts) gets its whole live log rewritten at the
 * head as ONE record of type REWRITE, which on replay empties the group's log
 * and sets it to exactly those entries. One record, not a chain: a crash
 * leaves either the old copy (the rewrite never became durable) or both, and
 * either replays to the same log; a chain of records cut by a crash would
 * replay a shortened log. A live log too large for one batch stays where it
 * is (it is not "a few lagging entries"; such a group should be compacted).
 *
 * Retired segments become spares (renamed wal-<seq>.spare, up to
 * spare_segments) that the next rollover reuses instead of creating and
 * preallocating a file; their stale records never verify under the new
 * sequence salt, and recovery bounds a sealed segment's scan by where its
 * successor says it ended, so stale bytes after that are never read.
 */
#include "wal/wal_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t oldest_reference(const wal_group_index *g, bool count_markers) {
  uint64_t oldest = UINT64_MAX;
  if (g->run_count > 0) {
    oldest = g->runs[0].segment;
  }
  if (count_markers && g->hard_state_segment != 0 && g->hard_state_segment < oldest) {
    oldest = g->hard_state_segment;
  }
  if (count_markers && g->snapshot_segment != 0 && g->snapshot_segment < oldest) {
    oldest = g->snapshot_segment;
  }
  return oldest;
}

/* The oldest segment anything live refers to (the head when nothing does). */
static uint64_t oldest_live_segment(const wal *w, bool count_markers) {
  uint64_t oldest = w->segments[w->segment_count - 1].sequence;
  for (uint32_t i = 0; i < w->groups.capacity; i++) {
    const wal_group_index *g = w->groups.slots[i];
    if (g != NULL) {
      uint64_t reference = oldest_reference(g, count_markers);
      oldest = reference < oldest ? reference : oldest;
    }
  }
  return oldest;
}

/* Calls `copy` for each group, retrying once after a flush when the batch
 * is full. Group ids are collected first: a flush may run callbacks that
 * add groups and move the table's slots. */
typedef int (*copy_fn)(wal *w, uint64_t group, uint64_t watermark);

static int for_each_pinning_group(wal *w, uint64_t watermark, bool count_markers, copy_fn copy) {
  uint64_t *ids = malloc(((size_t)w->groups.count + 1) * sizeof(uint64_t));
  if (ids == NULL) {
    return -ENOMEM;
  }
  uint32_t count = 0;
  for (uint32_t i = 0; i < w->groups.capacity; i++) {
    const wal_group_index *g = w->groups.slots[i];
    if (g != NULL && oldest_reference(g, count_markers) < watermark) {
      ids[count++] = g->id;
    }
  }
  int rc = 0;
  for (uint32_t i = 0; i < count && rc == 0; i++) {
    rc = copy(w, ids[i], watermark);
    if (rc == -ENOBUFS) {
      rc = wal_flush(w);
      rc = rc == 0 ? copy(w, ids[i], watermark) : rc;
    }
  }
  free(ids);
  return rc;
}

static int resave_markers(wal *w, uint64_t group, uint64_t watermark) {
  (void)watermark;
  wal_group_index *g = wal_index_find(&w->groups, group);
  int rc = 0;
  if (g != NULL && g->hard_state_segment != 0) {
    wal_hard_state state = g->hard_state;
    rc = wal_save_hard_state(w, group, &state, NULL);
  }
  g = wal_index_find(&w->groups, group);
  if (rc == 0 && g != NULL && g->snapshot_segment != 0) {
    uint8_t *data = malloc(g->snapshot_length ? g->snapshot_length : 1);
    uint32_t length = 0;
    uint64_t index = g->snapshot_index;
    uint64_t term = g->snapshot_term;
    rc = data == NULL ? -ENOMEM : wal_snapshot_data(w, group, data, g->snapshot_length, &length);
    if (rc == 0) {
      rc = wal_save_snapshot(w, group, index, term, data, length, NULL);
    }
    free(data);
  }
  return rc;
}

/* Reads the group's whole live log; -E2BIG when it cannot fit one record. */
static int read_live_log(wal *w, const wal_group_index *g, wal_entry **entries, uint8_t **buffer,
                         uint32_t *count) {
  uint64_t limit = wal_record_payload_limit(w);
  uint64_t wanted = g->last_index - g->first_index + 1;
  if (wanted > limit / (sizeof(wal_entry_header) + 1)) {
    return -E2BIG;
  }
  *entries = malloc(wanted * sizeof(wal_entry));
  *buffer = malloc(limit);
  if (*entries == NULL || *buffer == NULL) {
    return -ENOMEM;
  }
  int rc = wal_read(w, g->id, g->first_index, g->last_index + 1, limit, *entries, (uint32_t)wanted,
                    count, *buffer, limit);
  if (rc == -ERANGE || (rc == 0 && *count != wanted)) {
    return -E2BIG;
  }
  if (rc == 0 && wal_entries_payload_bytes(*entries, *count) > limit) {
    return -E2BIG;
  }
  return rc;
}

static int rewrite_live_log(wal *w, uint64_t group, uint64_t watermark) {
  wal_group_index *g = wal_index_find(&w->groups, group);
  if (g == NULL || g->run_count == 0 || g->runs[0].segment >= watermark) {
    return 0; /* only markers pin it, or it moved on since */
  }
  wal_entry *entries = NULL;
  uint8_t *buffer = NULL;
  uint32_t count = 0;
  int rc = read_live_log(w, g, &entries, &buffer, &count);
  if (rc == 0) {
    rc = wal_queue_rewrite(w, group, entries, count);
  }
  if (rc == 0) {
    w->stats.groups_rewritten++;
    w->stats.bytes_rewritten += wal_entries_payload_bytes(entries, count);
  }
  free(entries);
  free(buffer);
  return rc == -E2BIG ? 0 : rc; /* too big to move: it keeps its segments */
}

/* Segments older than this are worth freeing: the oldest half. */
static uint64_t rewrite_watermark(const wal *w) {
  if (w->segment_count < 3) {
    return 0;
  }
  return w->segments[w->segment_count / 2].sequence;
}

static int copy_forward(wal *w) {
  uint64_t watermark = rewrite_watermark(w);
  int rc = for_each_pinning_group(w, watermark, false, rewrite_live_log);
  if (rc != 0) {
    return rc;
  }
  /* Markers older than every live entry left are re-saved at the head. */
  uint64_t entries_floor = oldest_live_segment(w, false);
  return for_each_pinning_group(w, entries_floor, true, resave_markers);
}

static int add_spare(wal *w, uint64_t sequence) {
  if (w->spares == NULL) {
    w->spares = calloc(w->options.spare_segments + 1, sizeof(uint64_t));
    if (w->spares == NULL) {
      return -ENOMEM;
    }
  }
  w->spares[w->spare_count++] = sequence;
  w->stats.spares = w->spare_count;
  return 0;
}

/* A dead segment becomes a spare while there is room for one, else goes. */
static int retire_segment(wal *w, const wal_segment *segment) {
  char name[64];
  wal_segment_name(segment->sequence, name, sizeof(name));
  w->io->ops->close(w->io, segment->file);
  if (w->spare_count < w->options.spare_segments) {
    char spare[64];
    wal_spare_name(segment->sequence, spare, sizeof(spare));
    int rc = w->io->ops->rename(w->io, name, spare);
    return rc == 0 ? add_spare(w, segment->sequence) : rc;
  }
  return w->io->ops->unlink(w->io, name);
}

static int retire_segments_before(wal *w, uint64_t sequence) {
  uint32_t retired = 0;
  while (retired + 1 < w->segment_count && w->segments[retired].sequence < sequence) {
    int rc = retire_segment(w, &w->segments[retired]);
    if (rc != 0) {
      return rc;
    }
    retired++;
  }
  memmove(w->segments, w->segments + retired, (w->segment_count - retired) * sizeof(wal_segment));
  w->segment_count -= retired;
  w->stats.segments = w->segment_count;
  if (retired > 0) {
    int rc = w->io->ops->sync_directory(w->io);
    if (rc != 0) {
      return rc;
    }
  }
  return (int)retired;
}

int wal_collect_garbage(wal *w) {
  if (w->failure != 0) {
    return w->failure;
  }
  int rc = copy_forward(w);
  if (rc == 0) {
    rc = wal_flush(w);
  }
  if (rc == 0) {
    rc = wal_drain(w); /* the copies must be durable before the originals go */
  }
  if (rc != 0) {
    return rc;
  }
  return retire_segments_before(w, oldest_live_segment(w, true));
}

int wal_spare_register(wal *w, uint64_t sequence) {
  if (w->spare_count < w->options.spare_segments) {
    return add_spare(w, sequence);
  }
  char spare[64];
  wal_spare_name(sequence, spare, sizeof(spare));
  return w->io->ops->unlink(w->io, spare); /* more than we keep: the limit shrank */
}

/*
 * The spare is renamed to the new segment's temporary name first, so a crash
 * at any point leaves either a spare, an unfinished .tmp (deleted at open)
 * or a whole segment. Its size is checked: the segment size may have changed.
 */
int wal_spare_prepare(wal *w, uint64_t sequence, const char *temporary_name) {
  if (w->spare_count == 0) {
    return 1;
  }
  const wal_io_ops *io = w->io->ops;
  char spare[64];
  wal_spare_name(w->spares[0], spare, sizeof(spare));
  memmove(w->spares, w->spares + 1, (w->spare_count - 1) * sizeof(uint64_t));
  w->spare_count--;
  w->stats.spares = w->spare_count;
  int rc = io->rename(w->io, spare, temporary_name);
  int file = rc == 0 ? io->open(w->io, temporary_name, true) : rc;
  if (file < 0) {
    return file;
  }
  uint64_t size = 0;
  rc = io->size(w->io, file, &size);
  if (rc == 0 && size != w->options.segment_bytes) {
    rc = 1; /* not reusable: the caller creates the file afresh */
  }
  if (rc == 0) {
    wal_segment_header header;
    uint64_t previous_end = w->segment_count > 0 ? w->head_end : 0;
    wal_segment_header_encode(&header, w->options.shard_id, sequence, w->options.segment_bytes,
                              wal_torn_window(&w->options), previous_end);
    uint8_t area[WAL_SEGMENT_HEADER_AREA] = {0};
    memcpy(area, &header, sizeof(header));
    rc = io->write_sync(w->io, file, 0, area, sizeof(area));
  }
  io->close(w->io, file);
  w->stats.segments_recycled += rc == 0;
  return rc;
}

void wal_spares_release(wal *w) {
  free(w->spares);
  w->spares = NULL;
  w->spare_count = 0;
}
