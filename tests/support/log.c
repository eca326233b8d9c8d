/*
 * log.c - the in-memory Raft log of a test node.
 */
#include "tests/support/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/hash.h"

static void *checked_realloc(void *pointer, size_t bytes) {
  void *result = realloc(pointer, bytes);
  if (result == NULL && bytes > 0) {
    fprintf(stderr, "tests: out of memory (%zu bytes)\n", bytes);
    abort();
  }
  return result;
}

tblob *tblob_create(const uint8_t *data, uint32_t length) {
  if (length == 0) {
    return NULL;
  }
  tblob *blob = checked_realloc(NULL, sizeof(*blob) + length);
  blob->references = 1;
  blob->length = length;
  memcpy(blob->data, data, length);
  return blob;
}

tblob *tblob_retain(tblob *blob) {
  if (blob != NULL) {
    blob->references++;
  }
  return blob;
}

void tblob_release(tblob *blob) {
  if (blob != NULL && --blob->references == 0) {
    free(blob);
  }
}

void tblob_list_push(tblob_list *list, tblob *blob) {
  if (blob == NULL) {
    return;
  }
  if (list->count == list->capacity) {
    list->capacity = list->capacity == 0 ? 64 : 2 * list->capacity;
    list->items = checked_realloc(list->items, list->capacity * sizeof(*list->items));
  }
  list->items[list->count++] = blob;
}

void tblob_list_release_all(tblob_list *list) {
  for (size_t i = 0; i < list->count; i++) {
    tblob_release(list->items[i]);
  }
  list->count = 0;
}

void tblob_list_destroy(tblob_list *list) {
  tblob_list_release_all(list);
  free(list->items);
  memset(list, 0, sizeof(*list));
}

static void drop_blob(tblob *blob, tblob_list *retired) {
  if (retired != NULL) {
    tblob_list_push(retired, blob);
  } else {
    tblob_release(blob);
  }
}

void tlog_init(tlog *log, const fl_raft_snapshot_meta *snapshot, uint64_t snapshot_hash) {
  memset(log, 0, sizeof(*log));
  log->snapshot = *snapshot;
  log->snapshot_hash = snapshot_hash;
}

void tlog_destroy(tlog *log, tblob_list *retired) {
  for (size_t i = 0; i < log->count; i++) {
    drop_blob(log->entries[i].blob, retired);
  }
  free(log->entries);
  log->entries = NULL;
  log->count = 0;
  log->capacity = 0;
}

void tlog_copy(tlog *copy, const tlog *log) {
  tlog_init(copy, &log->snapshot, log->snapshot_hash);
  copy->capacity = log->count;
  copy->count = log->count;
  copy->entries = checked_realloc(NULL, log->count * sizeof(*log->entries));
  for (size_t i = 0; i < log->count; i++) {
    copy->entries[i] = log->entries[i];
    tblob_retain(copy->entries[i].blob);
  }
}

const tlog_entry *tlog_entry_at(const tlog *log, uint64_t index) {
  if (index <= log->snapshot.index || index > tlog_last_index(log)) {
    return NULL;
  }
  return &log->entries[index - log->snapshot.index - 1];
}

uint64_t tlog_term_at(const tlog *log, uint64_t index) {
  if (index == log->snapshot.index) {
    return log->snapshot.term;
  }
  const tlog_entry *entry = tlog_entry_at(log, index);
  return entry == NULL ? 0 : entry->term;
}

bool tlog_prefix_hash_at(const tlog *log, uint64_t index, uint64_t *hash) {
  if (index == log->snapshot.index) {
    *hash = log->snapshot_hash;
    return true;
  }
  const tlog_entry *entry = tlog_entry_at(log, index);
  if (entry == NULL) {
    return false;
  }
  *hash = entry->prefix_hash;
  return true;
}

void tlog_truncate(tlog *log, uint64_t index, tblob_list *retired) {
  while (tlog_last_index(log) >= index && log->count > 0) {
    log->count--;
    drop_blob(log->entries[log->count].blob, retired);
  }
}

const tlog_entry *tlog_append(tlog *log, uint64_t term, uint32_t type, tblob *blob) {
  if (log->count == log->capacity) {
    log->capacity = log->capacity == 0 ? 256 : 2 * log->capacity;
    log->entries = checked_realloc(log->entries, log->capacity * sizeof(*log->entries));
  }
  uint64_t previous = log->snapshot_hash;
  if (log->count > 0) {
    previous = log->entries[log->count - 1].prefix_hash;
  }
  uint64_t payload_hash =
      thash_bytes(blob == NULL ? NULL : blob->data, blob == NULL ? 0 : blob->length);
  tlog_entry *entry = &log->entries[log->count++];
  entry->term = term;
  entry->type = type;
  entry->blob = blob;
  entry->prefix_hash = thash_chain(previous, term, type, payload_hash);
  return entry;
}

void tlog_reset(tlog *log, const fl_raft_snapshot_meta *snapshot, uint64_t snapshot_hash,
                tblob_list *retired) {
  tlog_truncate(log, log->snapshot.index + 1, retired);
  log->snapshot = *snapshot;
  log->snapshot_hash = snapshot_hash;
}

void tlog_compact(tlog *log, const fl_raft_snapshot_meta *snapshot, uint64_t snapshot_hash,
                  tblob_list *retired) {
  if (snapshot->index <= log->snapshot.index) {
    return; /* an older point: the log is already compacted further */
  }
  uint64_t hash = 0;
  if (!tlog_prefix_hash_at(log, snapshot->index, &hash) || hash != snapshot_hash) {
    tlog_reset(log, snapshot, snapshot_hash, retired);
    return;
  }
  size_t dropped = (size_t)(snapshot->index - log->snapshot.index);
  for (size_t i = 0; i < dropped; i++) {
    drop_blob(log->entries[i].blob, retired);
  }
  memmove(log->entries, log->entries + dropped, (log->count - dropped) * sizeof(*log->entries));
  log->count -= dropped;
  log->snapshot = *snapshot;
  log->snapshot_hash = snapshot_hash;
}
