/*
 * wal.c - the writer (queue, group commit, ordered completions), segments
 * and reads.
 *
 * Batches (see wal_internal.h for their states) form a ring of
 * pipeline_depth + 1: one fills while up to pipeline_depth are in flight.
 * Completions may arrive in any order but are acted on in batch order, so a
 * request is reported durable only when its batch and every batch before it
 * are. Before the head segment changes, every batch in flight completes:
 * an older segment never has a write outstanding behind a newer one, which
 * is what lets recovery treat a bad record in an older segment as
 * corruption.
 */
#include "wal/wal_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wal_options_default(wal_options *options) {
  *options = (wal_options){
      .segment_bytes = 64u << 20,
      .batch_bytes = 4u << 20,
      .pipeline_depth = 2,
      .spare_segments = 2,
      .cache_batches = 2,
  };
}

uint64_t wal_torn_window(const wal_options *options) {
  return (uint64_t)options->pipeline_depth * options->batch_bytes;
}

static int check_options(const wal_options *o) {
  bool ok = o->segment_bytes >= (1u << 16) && o->segment_bytes <= FL_WAL_MAX_SEGMENT_BYTES &&
            o->batch_bytes >= 2 * WAL_DIRECT_ALIGN &&
            o->batch_bytes <= o->segment_bytes - WAL_SEGMENT_HEADER_AREA &&
            o->pipeline_depth >= 1 && o->pipeline_depth <= 16 && o->spare_segments <= 64 &&
            o->cache_batches <= 64 && (o->io != NULL || o->directory != NULL);
  bool aligned = o->batch_bytes % WAL_DIRECT_ALIGN == 0 && o->segment_bytes % WAL_DIRECT_ALIGN == 0;
  return ok && (aligned || !o->direct) ? 0 : -EINVAL;
}

/* Room kept free in every batch for the padding record O_DIRECT needs. */
static uint64_t padding_reserve(const wal *w) {
  return w->options.direct ? WAL_DIRECT_ALIGN + sizeof(wal_record_header) : 0;
}

/* ---- segments ------------------------------------------------------------ */

static int push_segment(wal *w, uint64_t sequence, int file) {
  if (w->segment_count == w->segment_capacity) {
    uint32_t capacity = w->segment_capacity ? w->segment_capacity * 2 : 8;
    wal_segment *grown = realloc(w->segments, capacity * sizeof(*grown));
    if (grown == NULL) {
      return -ENOMEM;
    }
    w->segments = grown;
    w->segment_capacity = capacity;
  }
  w->segments[w->segment_count++] = (wal_segment){.sequence = sequence, .file = file};
  return 0;
}

/*
 * A new segment appears whole or not at all: created under a temporary
 * name, preallocated, its header written and synced, then renamed and the
 * directory synced.
 */
static void temporary_name(uint64_t sequence, char *buffer, size_t capacity) {
  char name[64];
  wal_segment_name(sequence, name, sizeof(name));
  snprintf(buffer, capacity, "%s.tmp", name);
}

/* Creates, preallocates and writes the header of a segment under its
 * temporary name, so that it appears whole or not at all. */
static int prepare_segment(wal *w, uint64_t sequence) {
  char temporary[80];
  temporary_name(sequence, temporary, sizeof(temporary));
  wal_segment_header header;
  uint64_t previous_end = w->segment_count > 0 ? w->head_end : 0;
  wal_segment_header_encode(&header, w->options.shard_id, sequence, w->options.segment_bytes,
                            wal_torn_window(&w->options), previous_end);
  const wal_io_ops *io = w->io->ops;
  int file = io->create(w->io, temporary, w->options.segment_bytes);
  if (file < 0) {
    return file;
  }
  int rc = io->write_sync(w->io, file, 0, &header, sizeof(header));
  io->close(w->io, file);
  return rc;
}

int wal_segment_open_new(wal *w, uint64_t sequence) {
  char name[64];
  char temporary[80];
  wal_segment_name(sequence, name, sizeof(name));
  temporary_name(sequence, temporary, sizeof(temporary));
  const wal_io_ops *io = w->io->ops;
  int rc = wal_spare_prepare(w, sequence, temporary);
  if (rc == 1) {
    rc = prepare_segment(w, sequence); /* no spare: a fresh preallocated file */
  }
  if (rc == 0) {
    rc = io->rename(w->io, temporary, name);
  }
  if (rc == 0) {
    rc = io->sync_directory(w->io);
  }
  int file = rc < 0 ? rc : io->open(w->io, name, true);
  if (file < 0) {
    return file;
  }
  rc = push_segment(w, sequence, file);
  w->head_end = WAL_SEGMENT_HEADER_AREA;
  return rc;
}

int wal_segment_register(wal *w, uint64_t sequence, int file, uint64_t end) {
  int rc = push_segment(w, sequence, file);
  w->head_end = end;
  return rc;
}

static const wal_segment *head_segment(const wal *w) {
  return &w->segments[w->segment_count - 1];
}

static const wal_segment *find_segment(const wal *w, uint64_t sequence) {
  for (uint32_t i = w->segment_count; i > 0; i--) {
    if (w->segments[i - 1].sequence == sequence) {
      return &w->segments[i - 1];
    }
  }
  return NULL;
}

/* ---- open and close --------------------------------------------------------- */

/* The ring: one filling, pipeline_depth in flight, and cache_batches that
 * keep their bytes after completion so reads of recent entries (a follower
 * just behind) are served from memory. */
static int allocate_batches(wal *w) {
  w->batch_count = w->options.pipeline_depth + 1 + w->options.cache_batches;
  w->batches = calloc(w->batch_count, sizeof(*w->batches));
  if (w->batches == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < w->batch_count; i++) {
    w->batches[i].buffer = aligned_alloc(4096, w->options.batch_bytes);
    if (w->batches[i].buffer == NULL) {
      return -ENOMEM;
    }
  }
  return 0;
}

static int attach_io(wal *w) {
  if (w->options.io != NULL) {
    w->io = w->options.io;
    return 0;
  }
  int error = 0;
  w->io = wal_io_uring_create(w->options.directory, 2 * w->options.pipeline_depth + 2,
                              w->options.direct, &error);
  w->owns_io = w->io != NULL;
  return w->io != NULL ? 0 : error;
}

static void release(wal *w) {
  for (uint32_t i = 0; i < w->segment_count && w->io != NULL; i++) {
    w->io->ops->close(w->io, w->segments[i].file);
  }
  if (w->owns_io) {
    w->io->ops->destroy(w->io);
  }
  for (uint32_t i = 0; i < w->batch_count; i++) {
    free(w->batches[i].buffer);
  }
  free(w->batches);
  free(w->segments);
  free(w->scratch);
  wal_spares_release(w);
  wal_index_release(&w->groups);
  free(w);
}

int wal_open(const wal_options *options, wal **out, wal_recovery_report *report) {
  wal_recovery_report ignored;
  report = report != NULL ? report : &ignored;
  memset(report, 0, sizeof(*report));
  *out = NULL;
  int rc = check_options(options);
  if (rc != 0) {
    return rc;
  }
  wal *w = calloc(1, sizeof(*w));
  if (w == NULL) {
    return -ENOMEM;
  }
  w->options = *options;
  rc = attach_io(w);
  if (rc == 0) {
    rc = allocate_batches(w);
  }
  if (rc == 0) {
    rc = wal_recover(w, report);
    free(w->scratch); /* it held a whole segment: give it back */
    w->scratch = NULL;
    w->scratch_bytes = 0;
  }
  if (rc == 0 && w->segment_count == 0) {
    rc = wal_segment_open_new(w, 1);
  }
  if (rc != 0) {
    release(w);
    return rc;
  }
  w->batches[0].state = WAL_BATCH_FILLING;
  w->stats.segments = w->segment_count;
  *out = w;
  return 0;
}

int wal_close(wal *w) {
  if (w == NULL) {
    return 0;
  }
  int rc = wal_flush(w);
  uint32_t before = w->in_flight + 1;
  while (w->in_flight > 0 && w->in_flight < before) {
    before = w->in_flight;
    wal_poll(w, true); /* stops if the io cannot reap any more */
  }
  rc = w->failure != 0 ? w->failure : rc;
  release(w);
  return rc;
}

/* ---- queueing --------------------------------------------------------------- */

static wal_batch *filling(wal *w) {
  return &w->batches[w->filling];
}

int wal_drain(wal *w) {
  while (w->in_flight > 0 && w->failure == 0) {
    int rc = wal_poll(w, true);
    if (rc < 0) {
      return rc;
    }
  }
  return w->failure;
}

/*
 * Finds room for a record of `bytes` (aligned, header included) and returns
 * where it goes. Rolls the head segment over only with an empty batch, after
 * draining, so no older segment has a write outstanding.
 */
static int reserve_record(wal *w, uint64_t bytes, uint8_t **slot, uint64_t *offset) {
  if (w->failure != 0) {
    return w->failure;
  }
  wal_batch *b = filling(w);
  bytes += padding_reserve(w);
  if (bytes > w->options.batch_bytes) {
    return -EMSGSIZE;
  }
  if (b->used + bytes > w->options.batch_bytes) {
    return -ENOBUFS;
  }
  if (w->head_end + b->used + bytes > w->options.segment_bytes) {
    if (b->used > 0) {
      return -ENOBUFS;
    }
    int rc = wal_drain(w);
    if (rc == 0) {
      rc = wal_segment_open_new(w, head_segment(w)->sequence + 1);
      w->stats.segments = w->segment_count;
    }
    if (rc != 0) {
      w->failure = rc;
      return rc;
    }
  }
  if (b->used == 0) {
    b->segment = head_segment(w)->sequence;
    b->offset = w->head_end;
  }
  *slot = b->buffer + b->used;
  *offset = b->offset + b->used;
  return 0;
}

static void attach_request(wal *w, wal_request *request) {
  if (request == NULL) {
    return;
  }
  wal_batch *b = filling(w);
  request->next = NULL;
  if (b->tail != NULL) {
    b->tail->next = request;
  } else {
    b->head = request;
  }
  b->tail = request;
}

/* Seals the record whose payload was written after its header at slot. */
static void commit_record(wal *w, uint8_t *slot, uint8_t type, uint64_t group,
                          uint32_t payload_bytes) {
  wal_record_header *header = (wal_record_header *)slot;
  memset(header, 0, sizeof(*header));
  header->payload_length = payload_bytes;
  header->type = type;
  header->group_id = group;
  wal_record_seal(header, filling(w)->segment, slot + sizeof(*header));
  uint64_t total = wal_align(sizeof(*header) + payload_bytes);
  memset(slot + sizeof(*header) + payload_bytes, 0, total - sizeof(*header) - payload_bytes);
  filling(w)->used += (uint32_t)total;
  w->stats.records++;
}

static uint64_t entries_payload_bytes(const wal_entry *entries, uint32_t count) {
  uint64_t bytes = sizeof(wal_entries_header);
  for (uint32_t i = 0; i < count; i++) {
    bytes += sizeof(wal_entry_header) + wal_align(entries[i].length);
  }
  return bytes;
}

static void encode_entries(uint8_t *payload, const wal_entry *entries, uint32_t count) {
  wal_entries_header head = {.first_index = entries[0].index, .count = count};
  memcpy(payload, &head, sizeof(head));
  uint8_t *p = payload + sizeof(head);
  for (uint32_t i = 0; i < count; i++) {
    wal_entry_header entry = {
        .term = entries[i].term, .length = entries[i].length, .type = entries[i].type};
    memcpy(p, &entry, sizeof(entry));
    p += sizeof(entry);
    if (entries[i].length > 0) {
      memcpy(p, entries[i].data, entries[i].length);
    }
    memset(p + entries[i].length, 0, wal_align(entries[i].length) - entries[i].length);
    p += wal_align(entries[i].length);
  }
}

static int check_entries(const wal *w, uint64_t group, const wal_entry *entries, uint32_t count) {
  if (count == 0 || entries[0].index == 0) {
    return -EINVAL;
  }
  for (uint32_t i = 1; i < count; i++) {
    if (entries[i].index != entries[0].index + i || entries[i].term < entries[i - 1].term) {
      return -EINVAL;
    }
  }
  const wal_group_index *g = wal_index_find(&w->groups, group);
  if (g != NULL && g->last_index >= g->first_index && entries[0].index > g->last_index + 1) {
    return -EINVAL; /* a gap */
  }
  uint64_t previous_term = 0;
  if (g != NULL && wal_index_term(g, entries[0].index - 1, &previous_term) == 0 &&
      entries[0].term < previous_term) {
    return -EINVAL; /* terms never decrease along a log */
  }
  if (g != NULL && (entries[0].index <= g->snapshot_index || entries[0].index < g->first_index)) {
    return -EINVAL; /* below the snapshot or a compaction: those entries are gone */
  }
  return 0;
}

/* Queues an ENTRIES record, or a REWRITE record that first empties the
 * group's log (the entries are then its whole live log). */
static int queue_entries_record(wal *w, uint8_t type, uint64_t group, const wal_entry *entries,
                                uint32_t count, wal_request *request) {
  uint64_t payload = entries_payload_bytes(entries, count);
  uint8_t *slot = NULL;
  uint64_t offset = 0;
  int rc = reserve_record(w, wal_align(sizeof(wal_record_header) + payload), &slot, &offset);
  if (rc != 0) {
    return rc;
  }
  wal_group_index *g = wal_index_get(&w->groups, group);
  if (g == NULL) {
    return -ENOMEM;
  }
  if (type == WAL_RECORD_REWRITE) {
    rc = wal_index_reset_log(g, entries[0].index);
  }
  if (rc == 0) {
    rc = wal_index_apply_entries(g, entries[0].index, count, filling(w)->segment, offset);
  }
  for (uint32_t i = 0; i < count && rc == 0; i++) {
    rc = wal_index_note_term(g, entries[i].index, entries[i].term);
  }
  if (rc != 0) {
    return rc; /* only out of memory or a term going back: checked before */
  }
  encode_entries(slot + sizeof(wal_record_header), entries, count);
  commit_record(w, slot, type, group, (uint32_t)payload);
  attach_request(w, request);
  return 0;
}

int wal_append(wal *w, uint64_t group, const wal_entry *entries, uint32_t count,
               wal_request *request) {
  int rc = group == 0 ? -EINVAL : check_entries(w, group, entries, count);
  if (rc != 0) {
    return rc;
  }
  return queue_entries_record(w, WAL_RECORD_ENTRIES, group, entries, count, request);
}

int wal_queue_rewrite(wal *w, uint64_t group, const wal_entry *entries, uint32_t count) {
  const wal_group_index *g = wal_index_find(&w->groups, group);
  if (g == NULL || count == 0 || entries[0].index != g->first_index ||
      entries[count - 1].index != g->last_index) {
    return -EINVAL; /* a rewrite carries exactly the whole live log */
  }
  return queue_entries_record(w, WAL_RECORD_REWRITE, group, entries, count, NULL);
}

uint64_t wal_record_payload_limit(const wal *w) {
  return w->options.batch_bytes - padding_reserve(w) - sizeof(wal_record_header);
}

uint64_t wal_entries_payload_bytes(const wal_entry *entries, uint32_t count) {
  return entries_payload_bytes(entries, count);
}

static int queue_small_record(wal *w, uint8_t type, uint64_t group, const void *payload,
                              uint32_t payload_bytes, const void *tail, uint32_t tail_bytes,
                              wal_request *request, uint64_t *offset) {
  uint8_t *slot = NULL;
  uint64_t bytes = wal_align(sizeof(wal_record_header) + payload_bytes + tail_bytes);
  int rc = group == 0 ? -EINVAL : reserve_record(w, bytes, &slot, offset);
  if (rc != 0) {
    return rc;
  }
  memcpy(slot + sizeof(wal_record_header), payload, payload_bytes);
  if (tail_bytes > 0) {
    memcpy(slot + sizeof(wal_record_header) + payload_bytes, tail, tail_bytes);
  }
  commit_record(w, slot, type, group, payload_bytes + tail_bytes);
  attach_request(w, request);
  return 0;
}

int wal_save_hard_state(wal *w, uint64_t group, const wal_hard_state *state, wal_request *request) {
  wal_group_index *g = wal_index_get(&w->groups, group);
  if (g == NULL) {
    return group == 0 ? -EINVAL : -ENOMEM;
  }
  wal_hard_state_payload payload = {
      .term = state->term, .vote = state->vote, .commit = state->commit};
  uint64_t offset = 0;
  int rc = queue_small_record(w, WAL_RECORD_HARD_STATE, group, &payload, sizeof(payload), NULL, 0,
                              request, &offset);
  if (rc == 0) {
    g->hard_state = *state;
    g->hard_state_segment = filling(w)->segment;
  }
  return rc;
}

int wal_save_snapshot(wal *w, uint64_t group, uint64_t index, uint64_t term, const void *data,
                      uint32_t length, wal_request *request) {
  wal_group_index *g = wal_index_get(&w->groups, group);
  if (g == NULL || index < g->snapshot_index || (length > 0 && data == NULL)) {
    return g == NULL && group != 0 ? -ENOMEM : -EINVAL;
  }
  wal_snapshot_payload payload = {.index = index, .term = term, .length = length};
  uint64_t offset = 0;
  int rc = queue_small_record(w, WAL_RECORD_SNAPSHOT, group, &payload, sizeof(payload), data,
                              length, request, &offset);
  if (rc == 0) {
    rc = wal_index_apply_snapshot(g, index, term, filling(w)->segment, offset, length);
  }
  return rc;
}

int wal_compact(wal *w, uint64_t group, uint64_t index) {
  wal_group_index *g = wal_index_find(&w->groups, group);
  if (g == NULL) {
    return -ENOENT;
  }
  if (index > g->last_index) {
    return -EINVAL;
  }
  wal_snapshot_payload payload = {.index = index};
  uint64_t offset = 0;
  int rc = queue_small_record(w, WAL_RECORD_COMPACT, group, &payload, sizeof(payload), NULL, 0,
                              NULL, &offset);
  if (rc == 0) {
    wal_index_apply_compact(g, index);
  }
  return rc;
}

int wal_remove_group(wal *w, uint64_t group, wal_request *request) {
  uint64_t none = 0;
  uint64_t offset = 0;
  int rc = queue_small_record(w, WAL_RECORD_REMOVE, group, &none, sizeof(none), NULL, 0, request,
                              &offset);
  if (rc == 0) {
    wal_index_remove(&w->groups, group);
  }
  return rc;
}

int wal_barrier(wal *w, wal_request *request) {
  if (w->failure != 0) {
    return w->failure;
  }
  if (filling(w)->used > 0) {
    attach_request(w, request);
    return 0;
  }
  if (w->in_flight == 0) {
    return 1;
  }
  /* The newest batch in flight: its completion follows every earlier one. */
  wal_batch *newest = &w->batches[(w->filling + w->batch_count - 1) % w->batch_count];
  assert(newest->state == WAL_BATCH_IN_FLIGHT || newest->state == WAL_BATCH_DONE);
  request->next = NULL;
  if (newest->tail != NULL) {
    newest->tail->next = request;
  } else {
    newest->head = request;
  }
  newest->tail = request;
  return 0;
}

/* ---- flush and completions ---------------------------------------------- */

/* With O_DIRECT a batch must end on a block: a padding record fills it, so
 * the next batch starts aligned and recovery reads straight through. */
static void pad_batch(wal *w) {
  wal_batch *b = filling(w);
  uint32_t pad = (WAL_DIRECT_ALIGN - b->used % WAL_DIRECT_ALIGN) % WAL_DIRECT_ALIGN;
  if (pad == 0) {
    return;
  }
  if (pad < sizeof(wal_record_header)) {
    pad += WAL_DIRECT_ALIGN; /* padding_reserve kept room for this */
  }
  uint8_t *slot = b->buffer + b->used;
  uint32_t payload = pad - (uint32_t)sizeof(wal_record_header);
  memset(slot + sizeof(wal_record_header), 0, payload);
  commit_record(w, slot, WAL_RECORD_PADDING, 0, payload);
  w->stats.records--; /* not a record anybody wrote */
}

int wal_flush(wal *w) {
  if (w->failure != 0) {
    return w->failure;
  }
  wal_batch *b = filling(w);
  if (b->used == 0) {
    return 0;
  }
  if (w->options.direct) {
    pad_batch(w);
  }
  while (w->in_flight >= w->options.pipeline_depth) {
    int rc = wal_poll(w, true); /* the pipeline is full: wait for the disk */
    if (rc < 0) {
      return rc;
    }
  }
  const wal_segment *segment = find_segment(w, b->segment);
  struct iovec iov = {.iov_base = b->buffer, .iov_len = b->used};
  b->id = ++w->next_batch_id;
  int rc = w->io->ops->queue_write(w->io, segment->file, b->offset, &iov, 1, true, b->id);
  if (rc == 0) {
    rc = w->io->ops->submit(w->io);
  }
  if (rc < 0) {
    w->failure = rc;
    return rc;
  }
  b->state = WAL_BATCH_IN_FLIGHT;
  w->head_end = b->offset + b->used;
  w->in_flight++;
  w->stats.batches++;
  w->stats.bytes_written += b->used;
  w->stats.syncs++;
  w->filling = (w->filling + 1) % w->batch_count;
  wal_batch *next = filling(w);
  *next = (wal_batch){.buffer = next->buffer, .state = WAL_BATCH_FILLING};
  return 0;
}

static void finish_requests(wal_request *request, int result) {
  while (request != NULL) {
    wal_request *next = request->next; /* the callback may reuse the request */
    request->callback(request->context, result);
    request = next;
  }
}

/* Acts on completed batches in order; a failure fails every later one. */
static int complete_in_order(wal *w) {
  int completed = 0;
  while (w->in_flight > 0) {
    wal_batch *b = &w->batches[w->oldest];
    if (b->state != WAL_BATCH_DONE) {
      break; /* the kernel may still read its buffer, even after a failure */
    }
    int result = w->failure != 0 ? w->failure : b->result;
    if (result < 0 && w->failure == 0) {
      w->failure = result; /* fatal: never retry a failed fsync */
    }
    finish_requests(b->head, result);
    b->head = b->tail = NULL;
    b->state = WAL_BATCH_FREE;
    w->oldest = (w->oldest + 1) % w->batch_count;
    w->in_flight--;
    w->completed++;
    completed++;
  }
  return completed;
}

static void mark_done(wal *w, const wal_io_completion *completion) {
  for (uint32_t i = 0; i < w->batch_count; i++) {
    wal_batch *b = &w->batches[i];
    if (b->state == WAL_BATCH_IN_FLIGHT && b->id == completion->token) {
      b->state = WAL_BATCH_DONE;
      b->result = completion->result;
    }
  }
}

int wal_poll(wal *w, bool wait) {
  wal_io_completion completions[16];
  int reaped = 0;
  if (w->in_flight > 0) {
    reaped = w->io->ops->reap(w->io, completions, 16, wait);
    if (reaped < 0 && w->failure == 0) {
      w->failure = reaped;
    }
  }
  for (int i = 0; i < reaped; i++) {
    mark_done(w, &completions[i]);
  }
  int completed = complete_in_order(w);
  if (w->failure != 0) {
    /* Nothing will complete any more: fail what is still queued too. */
    wal_batch *b = filling(w);
    finish_requests(b->head, w->failure);
    b->head = b->tail = NULL;
    return w->failure;
  }
  return completed;
}

uint32_t wal_in_flight(const wal *w) {
  return w->in_flight;
}

uint64_t wal_completed_batches(const wal *w) {
  return w->completed;
}

uint32_t wal_pending_bytes(const wal *w) {
  return w->batches[w->filling].used;
}

int wal_notify_fd(wal *w) {
  return w->io->ops->notify_fd != NULL ? w->io->ops->notify_fd(w->io) : -ENOTSUP;
}

void wal_get_stats(const wal *w, wal_stats *out) {
  *out = w->stats;
}

/* ---- reads ------------------------------------------------------------------ */

static int grow_scratch(wal *w, size_t bytes) {
  if (bytes <= w->scratch_bytes) {
    return 0;
  }
  uint8_t *grown = realloc(w->scratch, bytes);
  if (grown == NULL) {
    return -ENOMEM;
  }
  w->scratch = grown;
  w->scratch_bytes = bytes;
  return 0;
}

uint8_t *wal_scratch(wal *w, size_t bytes) {
  return grow_scratch(w, bytes) == 0 ? w->scratch : NULL;
}

/* A batch holding the record in memory: not yet durable, or durable and
 * kept as cache (a free batch keeps its bytes until it fills again). A
 * (segment, offset) names one record for good: sequences are never reused. */
static const uint8_t *record_in_batch(const wal *w, uint64_t segment, uint64_t offset) {
  for (uint32_t i = 0; i < w->batch_count; i++) {
    const wal_batch *b = &w->batches[i];
    if (b->segment == segment && offset >= b->offset && offset < b->offset + b->used) {
      return b->buffer + (offset - b->offset);
    }
  }
  return NULL;
}

int wal_load_record(wal *w, uint64_t segment, uint64_t offset, const uint8_t **record) {
  const uint8_t *in_memory = record_in_batch(w, segment, offset);
  if (in_memory != NULL) {
    *record = in_memory;
    w->stats.records_read_from_memory++;
    return 0;
  }
  w->stats.records_read_from_disk++;
  const wal_segment *s = find_segment(w, segment);
  wal_record_header header;
  int rc = s == NULL ? -ENOENT : w->io->ops->read(w->io, s->file, offset, &header, sizeof(header));
  if (rc != 0) {
    return rc;
  }
  uint64_t total = wal_align(sizeof(header) + (uint64_t)header.payload_length);
  if (offset + total > w->options.segment_bytes || grow_scratch(w, total) != 0) {
    return -EIO;
  }
  rc = w->io->ops->read(w->io, s->file, offset, w->scratch, total);
  uint64_t verified = 0;
  if (rc == 0 && wal_record_verify(w->scratch, total, segment, &verified) != WAL_RECORD_OK) {
    rc = -EIO; /* never hand out bytes that do not verify */
  }
  *record = w->scratch;
  return rc;
}

typedef struct read_cursor {
  wal_entry *out;
  uint32_t capacity;
  uint32_t count;
  uint64_t bytes;
  uint64_t max_bytes;
  uint8_t *buffer;
  size_t buffer_bytes;
  size_t buffer_used;
} read_cursor;

/* Copies entries [lo, hi) out of one ENTRIES record; false when a bound stops. */
static bool copy_from_record(const uint8_t *record, uint64_t lo, uint64_t hi, read_cursor *c) {
  const uint8_t *payload = record + sizeof(wal_record_header);
  wal_entries_header head;
  memcpy(&head, payload, sizeof(head));
  const uint8_t *p = payload + sizeof(head);
  for (uint32_t i = 0; i < head.count; i++) {
    wal_entry_header entry;
    memcpy(&entry, p, sizeof(entry));
    uint64_t index = head.first_index + i;
    const uint8_t *data = p + sizeof(entry);
    p = data + wal_align(entry.length);
    if (index < lo || index >= hi) {
      continue;
    }
    bool bounded = c->count > 0 && c->bytes + entry.length > c->max_bytes;
    if (bounded || c->count == c->capacity || c->buffer_used + entry.length > c->buffer_bytes) {
      return false;
    }
    memcpy(c->buffer + c->buffer_used, data, entry.length);
    c->out[c->count++] = (wal_entry){.index = index,
                                     .term = entry.term,
                                     .type = entry.type,
                                     .length = entry.length,
                                     .data = c->buffer + c->buffer_used};
    c->buffer_used += entry.length;
    c->bytes += entry.length;
  }
  return true;
}

int wal_read(wal *w, uint64_t group, uint64_t lo, uint64_t hi, uint64_t max_bytes, wal_entry *out,
             uint32_t capacity, uint32_t *count, uint8_t *buffer, size_t buffer_bytes) {
  *count = 0;
  const wal_group_index *g = wal_index_find(&w->groups, group);
  if (g == NULL || lo < g->first_index || lo > g->last_index || capacity == 0) {
    return g == NULL || capacity > 0 ? -ENOENT : 0;
  }
  hi = hi > g->last_index + 1 ? g->last_index + 1 : hi;
  read_cursor c = {.out = out,
                   .capacity = capacity,
                   .max_bytes = max_bytes,
                   .buffer = buffer,
                   .buffer_bytes = buffer_bytes};
  for (uint64_t next = lo; next < hi;) {
    const wal_run *run = wal_index_run_of(g, next);
    const uint8_t *record = NULL;
    int rc = run == NULL ? -EIO : wal_load_record(w, run->segment, run->offset, &record);
    if (rc != 0) {
      return rc;
    }
    uint64_t run_end = run->last_index + 1 < hi ? run->last_index + 1 : hi;
    bool more = copy_from_record(record, next, run_end, &c);
    *count = c.count;
    if (!more) {
      return c.count == 0 ? -ERANGE : 0;
    }
    next = run_end;
  }
  return 0;
}

int wal_group(const wal *w, uint64_t group, wal_group_state *out) {
  const wal_group_index *g = wal_index_find(&w->groups, group);
  if (g == NULL) {
    return -ENOENT;
  }
  *out = (wal_group_state){.first_index = g->first_index,
                           .last_index = g->last_index,
                           .hard_state = g->hard_state,
                           .snapshot_index = g->snapshot_index,
                           .snapshot_term = g->snapshot_term,
                           .has_snapshot = g->snapshot_segment != 0};
  return 0;
}

int wal_term(const wal *w, uint64_t group, uint64_t index, uint64_t *term) {
  const wal_group_index *g = wal_index_find(&w->groups, group);
  return g == NULL ? -ENOENT : wal_index_term(g, index, term);
}

int wal_term_runs(const wal *w, uint64_t group,
                  void (*callback)(void *context, uint64_t first_index, uint64_t term),
                  void *context) {
  const wal_group_index *g = wal_index_find(&w->groups, group);
  if (g == NULL) {
    return -ENOENT;
  }
  const wal_term_run *terms = wal_index_terms_const(g);
  for (uint32_t i = 0; i < g->term_count && g->last_index >= g->first_index; i++) {
    callback(context, terms[i].first_index, terms[i].term);
  }
  return 0;
}

int wal_snapshot_data(wal *w, uint64_t group, void *buffer, uint32_t capacity, uint32_t *length) {
  const wal_group_index *g = wal_index_find(&w->groups, group);
  if (g == NULL || g->snapshot_segment == 0) {
    return -ENOENT;
  }
  *length = g->snapshot_length;
  if (g->snapshot_length > capacity) {
    return -ERANGE;
  }
  const uint8_t *record = NULL;
  int rc = wal_load_record(w, g->snapshot_segment, g->snapshot_offset, &record);
  if (rc == 0) {
    memcpy(buffer, record + sizeof(wal_record_header) + sizeof(wal_snapshot_payload),
           g->snapshot_length);
  }
  return rc;
}

int wal_groups(const wal *w, void (*callback)(void *context, uint64_t group), void *context) {
  for (uint32_t i = 0; i < w->groups.capacity; i++) {
    if (w->groups.slots[i] != NULL) {
      callback(context, w->groups.slots[i]->id);
    }
  }
  return 0;
}
