/*
 * log.h - an in-memory Raft log: a snapshot point followed by entries.
 *
 * A test node keeps two of these: the volatile log the core reads through
 * fl_raft_storage, and the durable log that survives a crash. Payloads live
 * in reference-counted blobs so both logs and the pending writes can share
 * them; a blob's bytes never move, so a payload pointer handed to the core
 * stays valid while any holder keeps the blob.
 *
 * Every entry carries the prefix hash of the log up to it (hash.h): the
 * simulator compares logs with it in O(1).
 */
#ifndef FLOTILLA_TESTS_LOG_H
#define FLOTILLA_TESTS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"

/* Immutable payload bytes shared by reference counting. */
typedef struct tblob {
  uint32_t references;
  uint32_t length;
  uint8_t data[];
} tblob;

/* Returns a blob holding a copy of `data` with one reference, or NULL on an
 * empty payload (NULL means "no bytes" everywhere). Aborts when out of
 * memory: tests have no useful way to go on. */
tblob *tblob_create(const uint8_t *data, uint32_t length);
tblob *tblob_retain(tblob *blob);
void tblob_release(tblob *blob);

/* Blobs whose release must wait (until the core's next advance). */
typedef struct tblob_list {
  tblob **items;
  size_t count;
  size_t capacity;
} tblob_list;

/* Takes over the caller's reference to `blob` (NULL is ignored). */
void tblob_list_push(tblob_list *list, tblob *blob);
void tblob_list_release_all(tblob_list *list);
void tblob_list_destroy(tblob_list *list);

typedef struct tlog_entry {
  uint64_t term;
  uint32_t type;
  tblob *blob; /* NULL for an empty payload */
  uint64_t prefix_hash;
} tlog_entry;

typedef struct tlog {
  fl_raft_snapshot_meta snapshot; /* entries up to snapshot.index are compacted */
  uint64_t snapshot_hash;         /* prefix hash at snapshot.index */
  tlog_entry *entries;            /* entries[i] has index snapshot.index + 1 + i */
  size_t count;
  size_t capacity;
} tlog;

void tlog_init(tlog *log, const fl_raft_snapshot_meta *snapshot, uint64_t snapshot_hash);
/* Releases (or, when `retired` is not NULL, hands over to it) every blob. */
void tlog_destroy(tlog *log, tblob_list *retired);
/* Makes `copy` an independent log sharing blobs with `log`. */
void tlog_copy(tlog *copy, const tlog *log);

static inline uint64_t tlog_first_index(const tlog *log) {
  return log->snapshot.index + 1;
}
static inline uint64_t tlog_last_index(const tlog *log) {
  return log->snapshot.index + log->count;
}
/* The entry at `index`, or NULL when compacted or beyond the end. */
const tlog_entry *tlog_entry_at(const tlog *log, uint64_t index);
/* Term at `index` in [snapshot.index, last]; 0 outside. */
uint64_t tlog_term_at(const tlog *log, uint64_t index);
/* Prefix hash at `index` in [snapshot.index, last]; false outside. */
bool tlog_prefix_hash_at(const tlog *log, uint64_t index, uint64_t *hash);

/* Drops entries from `index` on (index > snapshot.index). */
void tlog_truncate(tlog *log, uint64_t index, tblob_list *retired);
/* Appends one entry after the last, taking over the caller's blob reference. */
const tlog_entry *tlog_append(tlog *log, uint64_t term, uint32_t type, tblob *blob);
/* Replaces the whole log by a snapshot point. */
void tlog_reset(tlog *log, const fl_raft_snapshot_meta *snapshot, uint64_t snapshot_hash,
                tblob_list *retired);
/*
 * Moves the snapshot point forward to `snapshot` (index <= last). When the
 * log holds snapshot.index with another term, the entries after it belong to
 * another history and are dropped as well.
 */
void tlog_compact(tlog *log, const fl_raft_snapshot_meta *snapshot, uint64_t snapshot_hash,
                  tblob_list *retired);

/* The payload of an entry as the core sees it. */
static inline const uint8_t *tlog_entry_data(const tlog_entry *entry) {
  return entry->blob == NULL ? NULL : entry->blob->data;
}
static inline uint32_t tlog_entry_length(const tlog_entry *entry) {
  return entry->blob == NULL ? 0 : entry->blob->length;
}

#endif
