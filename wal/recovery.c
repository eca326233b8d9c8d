/*
 * recovery.c - rebuilding every group's index from the segments at open.
 *
 * Segments are scanned in sequence order, records in file order. An
 * all-zero header ends a segment's written part. A record that fails
 * verification is:
 *   - in the NEWEST segment, with no valid record after it beyond the torn
 *     window (the bytes writes in flight could have reached: pipeline depth x
 *     batch bytes, recorded in the segment header): a torn tail. It and the
 *     window after it are zeroed and synced, and appends resume there. What
 *     it held was never acknowledged, since no batch is reported durable
 *     before every earlier one is.
 *   - anywhere else: corruption. The open fails naming file, offset and
 *     group; nothing past it is replayed and no corrupt entry is returned.
 */
#include "wal/wal_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct segment_list {
  uint64_t *sequences;
  uint32_t count;
  uint32_t capacity;
  uint64_t *unfinished; /* segments left under their .tmp name */
  uint32_t unfinished_count;
  uint32_t unfinished_capacity;
  uint64_t *spares; /* retired segments kept for reuse */
  uint32_t spare_count;
  uint32_t spare_capacity;
} segment_list;

static int push_sequence(uint64_t **list, uint32_t *count, uint32_t *capacity, uint64_t value) {
  if (*count == *capacity) {
    uint32_t bigger = *capacity ? *capacity * 2 : 16;
    uint64_t *grown = realloc(*list, bigger * sizeof(*grown));
    if (grown == NULL) {
      return -ENOMEM;
    }
    *list = grown;
    *capacity = bigger;
  }
  (*list)[(*count)++] = value;
  return 0;
}

static int collect_segment(void *context, const char *name) {
  segment_list *list = context;
  uint64_t sequence = 0;
  char base[64];
  size_t length = strlen(name);
  if (length > 4 && length - 4 < sizeof(base) && strcmp(name + length - 4, ".tmp") == 0) {
    memcpy(base, name, length - 4);
    base[length - 4] = '\0';
    if (wal_segment_parse_name(base, &sequence)) {
      return push_sequence(&list->unfinished, &list->unfinished_count, &list->unfinished_capacity,
                           sequence);
    }
    return 0;
  }
  if (wal_spare_parse_name(name, &sequence)) {
    return push_sequence(&list->spares, &list->spare_count, &list->spare_capacity, sequence);
  }
  if (!wal_segment_parse_name(name, &sequence)) {
    return 0;
  }
  return push_sequence(&list->sequences, &list->count, &list->capacity, sequence);
}

/* A segment whose creation never finished holds nothing. */
static int remove_unfinished(wal *w, const segment_list *list) {
  for (uint32_t i = 0; i < list->unfinished_count; i++) {
    char name[64];
    char temporary[80];
    wal_segment_name(list->unfinished[i], name, sizeof(name));
    snprintf(temporary, sizeof(temporary), "%s.tmp", name);
    int rc = w->io->ops->unlink(w->io, temporary);
    if (rc != 0) {
      return rc;
    }
  }
  return list->unfinished_count > 0 ? w->io->ops->sync_directory(w->io) : 0;
}

static int compare_sequences(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a;
  uint64_t y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* One segment being scanned: its whole image in memory. */
/*
 * A gap: ENTRIES that start after the end of the group's log as replayed so
 * far. It is legitimate when the missing entries were compacted by a later
 * marker, so their segment could be retired: replay restarts the log at the
 * record and remembers the gap, a later snapshot or compaction marker at or
 * past its end covers it, and once every segment is replayed an uncovered
 * gap fails the open there.
 */
typedef struct replay_gap {
  uint64_t group;
  uint64_t last_missing; /* the gap's last index */
  uint64_t sequence;     /* where the record after it is */
  uint64_t offset;
  bool covered; /* a later marker compacted it */
} replay_gap;

typedef struct gap_list {
  replay_gap *items;
  uint32_t count;
  uint32_t capacity;
} gap_list;

typedef struct scan {
  wal *w;
  gap_list *gaps;
  wal_recovery_report *report;
  uint64_t sequence;
  int file;
  uint8_t *image;
  uint64_t size;
  uint64_t torn_window;
  uint64_t previous_end; /* from the header: where the previous segment ended */
  uint64_t known_end;    /* where the successor says this one ended; 0 = unknown */
  bool newest;
  char name[64];
} scan;

static int corrupt(scan *s, uint64_t offset, uint64_t group, const char *what) {
  snprintf(s->report->error, sizeof(s->report->error), "%s: offset %llu, group %llu: %s", s->name,
           (unsigned long long)offset, (unsigned long long)group, what);
  return -EUCLEAN;
}

static int note_gap(scan *s, uint64_t offset, uint64_t group, wal_group_index *g,
                    const wal_entries_header *head) {
  bool empty = g->last_index < g->first_index;
  bool gap = empty ? g->snapshot_index != 0 && head->first_index > g->last_index + 1
                   : head->first_index > g->last_index + 1;
  if (!gap) {
    return 0;
  }
  gap_list *gaps = s->gaps;
  if (gaps->count == gaps->capacity) {
    uint32_t capacity = gaps->capacity ? gaps->capacity * 2 : 16;
    replay_gap *grown = realloc(gaps->items, capacity * sizeof(*grown));
    if (grown == NULL) {
      return -ENOMEM;
    }
    gaps->items = grown;
    gaps->capacity = capacity;
  }
  gaps->items[gaps->count++] = (replay_gap){.group = group,
                                            .last_missing = head->first_index - 1,
                                            .sequence = s->sequence,
                                            .offset = offset};
  return wal_index_reset_log(g, head->first_index) == 0
             ? 0
             : corrupt(s, offset, group, "entries start inside the snapshot");
}

static void forget_gaps(gap_list *gaps, uint64_t group) {
  uint32_t kept = 0;
  for (uint32_t i = 0; i < gaps->count; i++) {
    if (gaps->items[i].group != group) {
      gaps->items[kept++] = gaps->items[i];
    }
  }
  gaps->count = kept;
}

static void cover_gaps(gap_list *gaps, uint64_t group, uint64_t compacted_through) {
  for (uint32_t i = 0; i < gaps->count; i++) {
    if (gaps->items[i].group == group && gaps->items[i].last_missing <= compacted_through) {
      gaps->items[i].covered = true;
    }
  }
}

/* Every gap must have been compacted away by the end of the replay. */
static int check_gaps(const gap_list *gaps, wal_recovery_report *report) {
  for (uint32_t i = 0; i < gaps->count; i++) {
    const replay_gap *gap = &gaps->items[i];
    if (!gap->covered) {
      char name[64];
      wal_segment_name(gap->sequence, name, sizeof(name));
      snprintf(report->error, sizeof(report->error),
               "%s: offset %llu, group %llu: entries do not follow the group's log (entries up "
               "to %llu are missing and still live)",
               name, (unsigned long long)gap->offset, (unsigned long long)gap->group,
               (unsigned long long)gap->last_missing);
      return -EUCLEAN;
    }
  }
  return 0;
}

static int replay_entries(scan *s, uint64_t offset, const wal_record_header *header,
                          const uint8_t *payload) {
  wal_entries_header head;
  if (header->payload_length < sizeof(head)) {
    return corrupt(s, offset, header->group_id, "entries record too short");
  }
  memcpy(&head, payload, sizeof(head));
  wal_group_index *g = wal_index_get(&s->w->groups, header->group_id);
  if (g == NULL) {
    return -ENOMEM;
  }
  if (header->type == WAL_RECORD_REWRITE && wal_index_reset_log(g, head.first_index) != 0) {
    return corrupt(s, offset, header->group_id, "rewritten log starts inside the snapshot");
  }
  int rc = header->type == WAL_RECORD_ENTRIES ? note_gap(s, offset, header->group_id, g, &head) : 0;
  if (rc != 0) {
    return rc;
  }
  if (head.count == 0 ||
      wal_index_apply_entries(g, head.first_index, head.count, s->sequence, offset) != 0) {
    return corrupt(s, offset, header->group_id, "entries do not follow the group's log");
  }
  const uint8_t *p = payload + sizeof(head);
  const uint8_t *end = payload + header->payload_length;
  for (uint32_t i = 0; i < head.count; i++) {
    wal_entry_header entry;
    if ((size_t)(end - p) < sizeof(entry)) {
      return corrupt(s, offset, header->group_id, "entry header past the record");
    }
    memcpy(&entry, p, sizeof(entry));
    p += sizeof(entry);
    if ((uint64_t)(end - p) < wal_align(entry.length)) {
      return corrupt(s, offset, header->group_id, "entry data past the record");
    }
    p += wal_align(entry.length);
    if (wal_index_note_term(g, head.first_index + i, entry.term) != 0) {
      return corrupt(s, offset, header->group_id, "entry term goes back");
    }
  }
  return 0;
}

static int replay_marker(scan *s, uint64_t offset, const wal_record_header *header,
                         const uint8_t *payload) {
  wal_snapshot_payload marker;
  if (header->payload_length < sizeof(marker)) {
    return corrupt(s, offset, header->group_id, "marker record too short");
  }
  memcpy(&marker, payload, sizeof(marker));
  wal_group_index *g = wal_index_get(&s->w->groups, header->group_id);
  if (g == NULL) {
    return -ENOMEM;
  }
  cover_gaps(s->gaps, header->group_id, marker.index);
  if (header->type == WAL_RECORD_COMPACT) {
    wal_index_apply_compact(g, marker.index);
    return 0;
  }
  if (sizeof(marker) + (uint64_t)marker.length > header->payload_length ||
      wal_index_apply_snapshot(g, marker.index, marker.term, s->sequence, offset, marker.length) !=
          0) {
    return corrupt(s, offset, header->group_id, "bad snapshot marker");
  }
  return 0;
}

static int replay_record(scan *s, uint64_t offset) {
  const uint8_t *record = s->image + offset;
  wal_record_header header;
  memcpy(&header, record, sizeof(header));
  const uint8_t *payload = record + sizeof(header);
  if (header.type == WAL_RECORD_PADDING) {
    return 0; /* fills a batch to the block size */
  }
  if (header.group_id == 0) {
    return corrupt(s, offset, 0, "record without a group");
  }
  switch (header.type) {
  case WAL_RECORD_ENTRIES:
  case WAL_RECORD_REWRITE:
    return replay_entries(s, offset, &header, payload);
  case WAL_RECORD_HARD_STATE: {
    wal_hard_state_payload state;
    wal_group_index *g = wal_index_get(&s->w->groups, header.group_id);
    if (header.payload_length < sizeof(state) || g == NULL) {
      return g == NULL ? -ENOMEM : corrupt(s, offset, header.group_id, "short hard state");
    }
    memcpy(&state, payload, sizeof(state));
    g->hard_state = (wal_hard_state){state.term, state.vote, state.commit};
    g->hard_state_segment = s->sequence;
    return 0;
  }
  case WAL_RECORD_SNAPSHOT:
  case WAL_RECORD_COMPACT:
    return replay_marker(s, offset, &header, payload);
  case WAL_RECORD_REMOVE:
    wal_index_remove(&s->w->groups, header.group_id);
    forget_gaps(s->gaps, header.group_id); /* a later group of that id starts afresh */
    return 0;
  default:
    return corrupt(s, offset, header.group_id, "unknown record type");
  }
}

static uint64_t group_at(const scan *s, uint64_t offset) {
  wal_record_header header;
  if (s->size - offset < sizeof(header)) {
    return 0;
  }
  memcpy(&header, s->image + offset, sizeof(header));
  return header.group_id;
}

/* The first offset after `from` holding a record that verifies, or 0. */
static uint64_t next_valid_record(const scan *s, uint64_t from) {
  for (uint64_t offset = from + WAL_RECORD_ALIGN; offset + sizeof(wal_record_header) <= s->size;
       offset += WAL_RECORD_ALIGN) {
    uint64_t word = 0;
    memcpy(&word, s->image + offset, sizeof(word));
    if (word == 0) {
      continue; /* a record header never starts with eight zero bytes */
    }
    uint64_t total = 0;
    if (wal_record_verify(s->image + offset, s->size - offset, s->sequence, &total) ==
        WAL_RECORD_OK) {
      return offset;
    }
  }
  return 0;
}

static const char *describe(wal_record_check check) {
  switch (check) {
  case WAL_RECORD_BAD_HEADER:
    return "record header checksum mismatch";
  case WAL_RECORD_BAD_PAYLOAD:
    return "record payload checksum mismatch";
  default:
    return "record runs past the segment end";
  }
}

/* Zeroes the torn window after `offset` so appends resuming there can never
 * run into records of writes that were in flight at the crash. */
static int clear_torn_window(scan *s, uint64_t offset) {
  uint64_t end = s->torn_window < s->size - offset ? offset + s->torn_window : s->size;
  memset(s->image + offset, 0, end - offset);
  s->report->torn_tail_bytes = end - offset;
  return s->w->io->ops->write_sync(s->w->io, s->file, offset, s->image + offset, end - offset);
}

/*
 * Any valid record past the torn window after `offset`: writes in flight
 * never reach beyond it, so such a record was durable and the damage at
 * `offset` hides acknowledged data.
 */
static uint64_t valid_record_beyond_window(const scan *s, uint64_t offset) {
  uint64_t window_end = s->torn_window < s->size - offset ? offset + s->torn_window : s->size;
  return window_end <= offset + WAL_RECORD_ALIGN
             ? next_valid_record(s, offset)
             : next_valid_record(s, window_end - WAL_RECORD_ALIGN);
}

/* A bad record at `offset`: a torn tail (zeroed and synced) or corruption. */
static int handle_bad_record(scan *s, uint64_t offset, wal_record_check check) {
  if (!s->newest || valid_record_beyond_window(s, offset) != 0) {
    return corrupt(s, offset, group_at(s, offset), describe(check));
  }
  return clear_torn_window(s, offset);
}

/*
 * A zero header ends the written part only if nothing valid follows: in an
 * older segment nothing at all (the writer drains before a rollover), in the
 * newest nothing beyond the torn window. Otherwise the zeros are damage
 * (a lost write, a sector read back as zeros) hiding acknowledged records.
 */
static int check_end(scan *s, uint64_t offset) {
  uint64_t beyond =
      s->newest ? valid_record_beyond_window(s, offset) : next_valid_record(s, offset);
  if (beyond != 0) {
    return corrupt(s, offset, group_at(s, beyond), "zeroed record before valid ones");
  }
  if (s->newest && next_valid_record(s, offset) != 0) {
    return clear_torn_window(s, offset); /* a later batch landed, an earlier did not */
  }
  return 0;
}

/*
 * A sealed segment (one with a successor) is read up to where the successor
 * says it ended and no further: a recycled file holds stale records of its
 * earlier life after that point. Its records must reach that point exactly;
 * check_previous_end reports it otherwise.
 */
static int scan_records(scan *s, uint64_t *end) {
  uint64_t offset = WAL_SEGMENT_HEADER_AREA;
  uint64_t limit = s->known_end != 0 && s->known_end <= s->size ? s->known_end : s->size;
  while (offset < limit) {
    uint64_t total = 0;
    wal_record_check check =
        wal_record_verify(s->image + offset, limit - offset, s->sequence, &total);
    if (check == WAL_RECORD_END) {
      /* In a sealed segment zeros before its known end hide records. */
      int rc = s->known_end == 0 ? check_end(s, offset)
                                 : corrupt(s, offset, 0, "zeroed record before valid ones");
      if (rc != 0) {
        return rc;
      }
      break;
    }
    if (check != WAL_RECORD_OK) {
      int rc = handle_bad_record(s, offset, check);
      if (rc == 0) {
        break;
      }
      return rc;
    }
    int rc = replay_record(s, offset);
    if (rc != 0) {
      return rc;
    }
    s->report->records++;
    offset += total;
  }
  *end = offset;
  s->report->bytes_scanned += offset;
  return 0;
}

static int load_segment(scan *s) {
  const wal_io_ops *io = s->w->io->ops;
  wal_segment_name(s->sequence, s->name, sizeof(s->name));
  s->file = io->open(s->w->io, s->name, true);
  if (s->file < 0) {
    return s->file;
  }
  int rc = io->size(s->w->io, s->file, &s->size);
  if (rc == 0 && (s->size < WAL_SEGMENT_HEADER_AREA || s->size > FL_WAL_MAX_SEGMENT_BYTES)) {
    return corrupt(s, 0, 0, "segment size out of range");
  }
  /* One buffer serves every segment: faulting in 64 MiB of fresh pages per
   * segment would cost more than reading it. */
  s->image = rc == 0 ? wal_scratch(s->w, s->size) : NULL;
  if (rc == 0 && s->image == NULL) {
    rc = -ENOMEM;
  }
  if (rc == 0) {
    rc = io->read(s->w->io, s->file, 0, s->image, s->size);
  }
  if (rc != 0) {
    return rc;
  }
  wal_segment_header header;
  memcpy(&header, s->image, sizeof(header));
  const char *reason = NULL;
  if (wal_segment_header_verify(&header, s->sequence, &reason) != 0) {
    return corrupt(s, 0, 0, reason != NULL ? reason : "bad segment header");
  }
  if (header.shard_id != s->w->options.shard_id) {
    return corrupt(s, 0, 0, "segment belongs to another shard");
  }
  s->torn_window = header.torn_window;
  s->previous_end = header.previous_end;
  return 0;
}

/* The previous segment must end where this one's header says it did. */
static int check_previous_end(scan *s, uint64_t previous_sequence, uint64_t previous_end) {
  if (previous_sequence == 0 || s->previous_end == previous_end) {
    return 0;
  }
  char previous[64];
  wal_segment_name(previous_sequence, previous, sizeof(previous));
  snprintf(s->report->error, sizeof(s->report->error),
           "%s: records end at offset %llu but %s says they ended at %llu", previous,
           (unsigned long long)previous_end, s->name, (unsigned long long)s->previous_end);
  return -EUCLEAN;
}

typedef struct previous_segment {
  uint64_t sequence;
  uint64_t end;
} previous_segment;

/* Reads where the successor's header says `sequence` ended; 0 if unknown
 * (its header does not verify: its own load will say so). */
static uint64_t successor_previous_end(wal *w, uint64_t successor) {
  char name[64];
  wal_segment_name(successor, name, sizeof(name));
  int file = w->io->ops->open(w->io, name, false);
  if (file < 0) {
    return 0;
  }
  wal_segment_header header;
  const char *reason = NULL;
  int rc = w->io->ops->read(w->io, file, 0, &header, sizeof(header));
  w->io->ops->close(w->io, file);
  if (rc != 0 || wal_segment_header_verify(&header, successor, &reason) != 0) {
    return 0;
  }
  return header.previous_end;
}

static int recover_segment(wal *w, wal_recovery_report *report, gap_list *gaps, uint64_t sequence,
                           bool newest, uint64_t known_end, previous_segment *previous) {
  scan s = {.w = w,
            .gaps = gaps,
            .report = report,
            .sequence = sequence,
            .file = -1,
            .newest = newest,
            .known_end = known_end};
  int rc = load_segment(&s);
  uint64_t end = 0;
  if (rc == 0) {
    rc = check_previous_end(&s, previous->sequence, previous->end);
  }
  if (rc == 0) {
    rc = scan_records(&s, &end);
  }
  *previous = (previous_segment){.sequence = sequence, .end = end};
  if (rc == 0) {
    rc = wal_segment_register(w, sequence, s.file, end);
  } else if (s.file >= 0) {
    w->io->ops->close(w->io, s.file);
  }
  report->segments += rc == 0;
  return rc;
}

/* Garbage collection removes only the oldest segments: a hole in the
 * sequence is a lost segment, and with it acknowledged records. */
static int check_no_gap(const segment_list *list, uint32_t i, wal_recovery_report *report) {
  if (list->sequences[i + 1] == list->sequences[i] + 1) {
    return 0;
  }
  char name[64];
  wal_segment_name(list->sequences[i] + 1, name, sizeof(name));
  snprintf(report->error, sizeof(report->error), "%s: missing between two segments", name);
  return -EUCLEAN;
}

static int recover_all(wal *w, wal_recovery_report *report, const segment_list *list) {
  previous_segment previous = {0};
  gap_list gaps = {0};
  int rc = 0;
  for (uint32_t i = 0; i < list->count && rc == 0; i++) {
    bool newest = i + 1 == list->count;
    rc = newest ? 0 : check_no_gap(list, i, report);
    /* 0 when unknown: an unreadable successor header fails its own load. */
    uint64_t known_end = rc == 0 && !newest ? successor_previous_end(w, list->sequences[i + 1]) : 0;
    if (rc == 0) {
      rc = recover_segment(w, report, &gaps, list->sequences[i], newest, known_end, &previous);
    }
  }
  if (rc == 0) {
    rc = check_gaps(&gaps, report);
  }
  free(gaps.items);
  for (uint32_t i = 0; i < list->spare_count && rc == 0; i++) {
    rc = wal_spare_register(w, list->spares[i]);
  }
  return rc;
}

int wal_recover(wal *w, wal_recovery_report *report) {
  segment_list list = {0};
  int rc = w->io->ops->list(w->io, collect_segment, &list);
  if (rc == 0) {
    rc = remove_unfinished(w, &list); /* after the listing, not during it */
  }
  if (list.count > 1) {
    qsort(list.sequences, list.count, sizeof(uint64_t), compare_sequences);
  }
  if (list.spare_count > 1) {
    qsort(list.spares, list.spare_count, sizeof(uint64_t), compare_sequences);
  }
  if (rc == 0) {
    rc = recover_all(w, report, &list);
  }
  free(list.sequences);
  free(list.unfinished);
  free(list.spares);
  return rc;
}
