/*
 * wal_internal.h - the WAL's in-memory state, shared by wal.c (writer and
 * reads), index.c (per-group indexes) and recovery.c (the scan at open).
 */
#ifndef FLOTILLA_WAL_INTERNAL_H
#define FLOTILLA_WAL_INTERNAL_H

#include "wal/format.h"
#include "wal/wal.h"

/* The live entries of one ENTRIES record: where to read them back. */
typedef struct wal_run {
  uint64_t first_index;
  uint64_t last_index;
  uint64_t segment; /* sequence number */
  uint64_t offset;  /* of the record header in the segment */
} wal_run;

typedef struct wal_term_run {
  uint64_t first_index;
  uint64_t term;
} wal_term_run;

/*
 * One group's index: compact runs, never one pointer per entry. Each index
 * is its own allocation (the table holds pointers), so an idle group costs
 * this struct, one run and no term array: a log of one term keeps its term
 * run inline. snapshot_offset is a 32-bit record offset: a segment is at most
 * FL_WAL_MAX_SEGMENT_BYTES long.
 */
typedef struct wal_group_index {
  uint64_t id;
  uint64_t first_index;
  uint64_t last_index; /* first_index - 1 when empty */
  wal_hard_state hard_state;
  uint64_t hard_state_segment; /* where the newest hard state record is; 0 = none */
  uint64_t snapshot_index;
  uint64_t snapshot_term;
  uint64_t snapshot_segment;
  uint32_t snapshot_offset; /* record offset of the newest marker */
  uint32_t snapshot_length;
  wal_run *runs;
  uint32_t run_count;
  uint32_t run_capacity;
  uint32_t term_count;
  uint32_t term_capacity; /* <= 1: the term runs are term_storage.one */
  union {
    wal_term_run *many;
    wal_term_run one;
  } term_storage;
} wal_group_index;
FL_STATIC_ASSERT(sizeof(wal_group_index) <= 128, "an idle group's index fits 128 bytes");
FL_STATIC_ASSERT(FL_WAL_MAX_SEGMENT_BYTES <= UINT32_MAX, "record offsets fit 32 bits");

/* The term runs of a group, wherever they are kept. */
static inline wal_term_run *wal_index_terms(wal_group_index *g) {
  return g->term_capacity <= 1 ? &g->term_storage.one : g->term_storage.many;
}
static inline const wal_term_run *wal_index_terms_const(const wal_group_index *g) {
  return g->term_capacity <= 1 ? &g->term_storage.one : g->term_storage.many;
}

/* Open addressing by group id over pointers (8 bytes a slot, so the 50%
 * load costs an idle group 16-32 bytes); grows at 50% load. */
typedef struct wal_group_table {
  wal_group_index **slots; /* NULL = free slot */
  uint32_t capacity;       /* a power of two */
  uint32_t count;
} wal_group_table;

typedef struct wal_segment {
  uint64_t sequence;
  int file;
} wal_segment;

/*
 *   FILLING --flush--> IN_FLIGHT --completion--> DONE --in order--> FILLING
 * A batch's records are laid out exactly as they will sit in the segment,
 * from `offset` on, so a record's place is known when it is queued.
 */
typedef enum wal_batch_state {
  WAL_BATCH_FREE = 0,
  WAL_BATCH_FILLING = 1,
  WAL_BATCH_IN_FLIGHT = 2,
  WAL_BATCH_DONE = 3,
} wal_batch_state;

typedef struct wal_batch {
  uint8_t *buffer;
  uint32_t used;
  uint8_t state;
  int result;
  uint64_t id;
  uint64_t segment;
  uint64_t offset;
  wal_request *head;
  wal_request *tail;
} wal_batch;

struct wal {
  wal_options options;
  wal_io *io;
  bool owns_io;
  int failure; /* first fatal error, then every call fails with it */

  wal_segment *segments; /* ascending sequence; the last is the head */
  uint32_t segment_count;
  uint32_t segment_capacity;
  uint64_t head_end; /* where the filling batch starts in the head segment */

  wal_batch *batches; /* ring of pipeline_depth + 1 */
  uint32_t batch_count;
  uint32_t filling;   /* index of the filling batch */
  uint32_t oldest;    /* index of the oldest batch in flight */
  uint32_t in_flight; /* batches submitted, not yet completed in order */
  uint64_t completed; /* batches completed in order since open */
  uint64_t next_batch_id;

  uint64_t *spares; /* old sequences of spare files, oldest first */
  uint32_t spare_count;

  wal_group_table groups;
  uint8_t *scratch; /* record reads */
  size_t scratch_bytes;
  wal_stats stats;
};

/* index.c */
wal_group_index *wal_index_find(const wal_group_table *table, uint64_t group);
wal_group_index *wal_index_get(wal_group_table *table, uint64_t group);
void wal_index_remove(wal_group_table *table, uint64_t group);
void wal_index_release(wal_group_table *table);
/* Entries [first, first + count) stored at (segment, offset), replacing
 * any overlapped suffix. -EINVAL if they leave a gap after the log. The
 * caller then gives each entry's term, in order, to wal_index_note_term. */
int wal_index_apply_entries(wal_group_index *g, uint64_t first_index, uint32_t count,
                            uint64_t segment, uint64_t offset);
int wal_index_note_term(wal_group_index *g, uint64_t index, uint64_t term);
/* The group's log becomes empty and restarts at first_index (a REWRITE
 * record follows with the whole live log). -EINVAL at or below the
 * snapshot index. */
int wal_index_reset_log(wal_group_index *g, uint64_t first_index);
int wal_index_apply_snapshot(wal_group_index *g, uint64_t index, uint64_t term, uint64_t segment,
                             uint64_t offset, uint32_t length);
void wal_index_apply_compact(wal_group_index *g, uint64_t index);
int wal_index_term(const wal_group_index *g, uint64_t index, uint64_t *term);
const wal_run *wal_index_run_of(const wal_group_index *g, uint64_t index);

/* recovery.c */
int wal_recover(wal *w, wal_recovery_report *report);

/* wal.c */
int wal_segment_open_new(wal *w, uint64_t sequence);
/* Adds a recovered segment; the last one registered becomes the head, with
 * appends resuming at `end`. */
int wal_segment_register(wal *w, uint64_t sequence, int file, uint64_t end);
uint64_t wal_torn_window(const wal_options *options);
/* The WAL's scratch buffer, grown to at least `bytes`; NULL when out of
 * memory. Valid until the next call that uses it. */
uint8_t *wal_scratch(wal *w, size_t bytes);
/* Reads a whole record (header + payload) at (segment, offset) into the
 * scratch buffer, from a batch not yet durable or from the file. */
int wal_load_record(wal *w, uint64_t segment, uint64_t offset, const uint8_t **record);
/* Waits until every batch in flight is durable (or the WAL failed). */
int wal_drain(wal *w);
/* Queues a REWRITE record: entries are exactly the group's live log. */
int wal_queue_rewrite(wal *w, uint64_t group, const wal_entry *entries, uint32_t count);
/* The largest record payload one batch can take. */
uint64_t wal_record_payload_limit(const wal *w);
uint64_t wal_entries_payload_bytes(const wal_entry *entries, uint32_t count);

/* space.c */
/* Turns a spare (a recycled dead segment) into segment `sequence` under its
 * temporary name, header written and synced. 0 when done, 1 when there was
 * no spare to use, or a negative errno. */
int wal_spare_prepare(wal *w, uint64_t sequence, const char *temporary_name);
int wal_spare_register(wal *w, uint64_t sequence);
void wal_spares_release(wal *w);

#endif
