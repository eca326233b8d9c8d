/*
 * kv_snapshot.c - a pinned version streamed out in chunks (format in kv.h;
 * kv_restore.c reads it back in).
 *
 * The snapshot holds a reference to the root of the version it began
 * on, so that version's nodes stay as they were while the live tree copies
 * around them; a cursor walks it. The stream is produced piece by piece
 * (header, then per record its 16-byte header, key and value, then the
 * trailer), each piece copied straight from the item into the caller's
 * buffer: no record is ever staged whole. The checksum is computed over the
 * bytes as they are handed out, so the trailer costs no second pass.
 *
 * Stream states: START -> HEADER -> (RECORD_HEADER -> KEY -> VALUE)* -> TRAILER -> DONE
 */
#include <stdlib.h>

#include <xxhash.h>

#include "engine/kv_internal.h"

typedef enum stream_phase {
  PHASE_START,
  PHASE_HEADER,
  PHASE_RECORD_HEADER,
  PHASE_KEY,
  PHASE_VALUE,
  PHASE_TRAILER,
  PHASE_DONE,
} stream_phase;

struct kv_snapshot {
  kv_store *store;
  kv_snapshot *next;
  kv_node *root; /* one reference, NULL for an empty store */
  uint32_t height;
  uint64_t count;
  uint64_t payload_bytes;
  uint64_t records_out;
  stream_phase phase;
  const kv_item *item;
  kv_cursor cursor;
  const uint8_t *piece;
  size_t piece_length;
  size_t piece_offset;
  uint8_t staging[KV_SNAPSHOT_HEADER_BYTES];
  XXH3_state_t *hash;
};

static uint64_t records_bytes(uint64_t count, uint64_t payload_bytes) {
  return count * KV_SNAPSHOT_RECORD_HEADER_BYTES + payload_bytes;
}

/* ---- Out ------------------------------------------------------------------ */

int kv_snapshot_begin(kv_store *kv, kv_snapshot **snapshot) {
  if (kv->snapshot_count >= KV_MAX_SNAPSHOTS) {
    return KV_E_BUSY;
  }
  kv_snapshot *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    return KV_E_NOMEM;
  }
  s->hash = XXH3_createState();
  if (s->hash == NULL || XXH3_64bits_reset(s->hash) != XXH_OK) {
    XXH3_freeState(s->hash);
    free(s);
    return KV_E_NOMEM;
  }
  s->store = kv;
  s->root = kv->main.root;
  if (s->root != NULL) {
    kv_node_retain(s->root);
  }
  s->height = kv->main.height;
  s->count = kv->main.count;
  s->payload_bytes = kv->payload_bytes;
  s->phase = PHASE_START;
  s->next = kv->snapshots;
  kv->snapshots = s;
  kv->snapshot_count++;
  *snapshot = s;
  return 0;
}

uint64_t kv_snapshot_count(const kv_snapshot *snapshot) {
  return snapshot->count;
}

uint64_t kv_snapshot_stream_bytes(const kv_snapshot *snapshot) {
  return KV_SNAPSHOT_HEADER_BYTES + records_bytes(snapshot->count, snapshot->payload_bytes) +
         KV_SNAPSHOT_TRAILER_BYTES;
}

static void write_header(uint8_t header[KV_SNAPSHOT_HEADER_BYTES], uint64_t count,
                         uint64_t records) {
  kv_store_u32(header, KV_SNAPSHOT_MAGIC);
  kv_store_u16(header + 4, KV_SNAPSHOT_VERSION);
  kv_store_u16(header + 6, 0);
  kv_store_u64(header + 8, count);
  kv_store_u64(header + 16, records);
  kv_store_u64(header + 24, XXH3_64bits(header, 24));
}

static void set_piece(kv_snapshot *s, stream_phase phase, const uint8_t *piece, size_t length) {
  s->phase = phase;
  s->piece = piece;
  s->piece_length = length;
  s->piece_offset = 0;
}

/* Moves to the next piece of the stream; false once there is none. */
static bool next_piece(kv_snapshot *s) {
  switch (s->phase) {
  case PHASE_START:
    write_header(s->staging, s->count, records_bytes(s->count, s->payload_bytes));
    kv_cursor_first(&s->cursor, s->root);
    set_piece(s, PHASE_HEADER, s->staging, KV_SNAPSHOT_HEADER_BYTES);
    return true;
  case PHASE_HEADER:
  case PHASE_VALUE:
    s->item = kv_cursor_next(&s->cursor);
    if (s->item != NULL) {
      kv_store_u32(s->staging, s->item->key_length);
      kv_store_u32(s->staging + 4, s->item->value_length);
      kv_store_u64(s->staging + 8, s->item->expire_at_ms);
      s->records_out++;
      set_piece(s, PHASE_RECORD_HEADER, s->staging, KV_SNAPSHOT_RECORD_HEADER_BYTES);
      return true;
    }
    assert(s->records_out == s->count);
    kv_store_u64(s->staging, XXH3_64bits_digest(s->hash));
    set_piece(s, PHASE_TRAILER, s->staging, KV_SNAPSHOT_TRAILER_BYTES);
    return true;
  case PHASE_RECORD_HEADER:
    set_piece(s, PHASE_KEY, kv_item_key(s->item), s->item->key_length);
    return true;
  case PHASE_KEY:
    set_piece(s, PHASE_VALUE, kv_item_value_const(s->item), s->item->value_length);
    return true;
  case PHASE_TRAILER:
  case PHASE_DONE:
    set_piece(s, PHASE_DONE, NULL, 0);
    return false;
  }
  return false;
}

int kv_snapshot_read(kv_snapshot *snapshot, uint8_t *buffer, size_t capacity, size_t *length,
                     bool *done) {
  kv_snapshot *s = snapshot;
  *length = 0;
  if (capacity == 0) {
    *done = s->phase == PHASE_DONE;
    return KV_E_INVALID;
  }
  size_t written = 0;
  while (written < capacity) {
    if (s->piece_offset == s->piece_length) {
      if (!next_piece(s)) {
        break;
      }
      continue;
    }
    size_t n = s->piece_length - s->piece_offset;
    n = n < capacity - written ? n : capacity - written;
    memcpy(buffer + written, s->piece + s->piece_offset, n);
    if (s->phase != PHASE_TRAILER) {
      XXH3_64bits_update(s->hash, buffer + written, n);
    }
    s->piece_offset += n;
    written += n;
  }
  /* Finish with the call that wrote the last byte, not one call later. */
  if (s->phase == PHASE_TRAILER && s->piece_offset == s->piece_length) {
    (void)next_piece(s);
  }
  *length = written;
  *done = s->phase == PHASE_DONE;
  return 0;
}

void kv_snapshot_end(kv_snapshot *snapshot) {
  if (snapshot == NULL) {
    return;
  }
  kv_store *kv = snapshot->store;
  kv_snapshot **link = &kv->snapshots;
  while (*link != snapshot) {
    assert(*link != NULL);
    link = &(*link)->next;
  }
  *link = snapshot->next;
  kv->snapshot_count--;
  if (snapshot->root != NULL) {
    kv_node_release(&kv->heap, snapshot->root);
  }
  XXH3_freeState(snapshot->hash);
  free(snapshot);
}

const kv_node *kv_snapshot_root(const kv_snapshot *snapshot) {
  return snapshot->root;
}
uint32_t kv_snapshot_height(const kv_snapshot *snapshot) {
  return snapshot->height;
}
uint64_t kv_snapshot_payload_bytes(const kv_snapshot *snapshot) {
  return snapshot->payload_bytes;
}
const kv_snapshot *kv_snapshot_next(const kv_snapshot *snapshot) {
  return snapshot->next;
}
