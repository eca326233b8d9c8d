/*
 * kv_restore.c - replacing the store by a snapshot stream (format in kv.h),
 * fed in chunks of any size.
 *
 * The parser is a small state machine; fixed-size parts (header, record
 * header, trailer) are staged, record bodies go straight into the item
 * allocated for them once their header passed every check:
 *
 *   HEADER -> (RECORD_HEADER -> BODY)* -> TRAILER -> DONE
 *
 * Checks, in the order bytes arrive: magic, header checksum, version,
 * flags, count against records_bytes; per record, both lengths against
 * their bounds and the record against the bytes the header says are left
 * (leaving at least a record header for every record still to come); keys
 * strictly increasing; records_bytes used up exactly by the last record;
 * the trailer checksum. Any byte after the trailer is an error.
 *
 * Nothing reaches the store before kv_restore_finish(), and finish builds
 * the new trees completely before it swaps them in: every failure leaves
 * the live store as it was.
 */
#include <stdlib.h>

#include <xxhash.h>

#include "engine/kv_internal.h"

typedef enum restore_phase {
  RESTORE_HEADER,
  RESTORE_RECORD_HEADER,
  RESTORE_BODY,
  RESTORE_TRAILER,
  RESTORE_DONE,
} restore_phase;

struct kv_restore {
  kv_store *store;
  kv_heap heap;       /* accounts the items parsed so far */
  kv_heap *item_heap; /* &heap until finish hands the items to the store */
  int failure;
  restore_phase phase;
  uint8_t staging[KV_SNAPSHOT_HEADER_BYTES];
  size_t staged;
  uint64_t count;         /* from the header */
  uint64_t records_bytes; /* from the header */
  uint64_t record_bytes_in;
  kv_item *current; /* the record being filled */
  size_t body_length;
  size_t body_filled;
  kv_item **items; /* complete records, in key order */
  uint64_t item_count;
  uint64_t item_capacity;
  uint64_t payload_bytes;
  XXH3_state_t *hash;
};

int kv_restore_begin(kv_store *kv, kv_restore **restore) {
  if (kv->restore != NULL) {
    return KV_E_BUSY;
  }
  kv_restore *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return KV_E_NOMEM;
  }
  r->hash = XXH3_createState();
  if (r->hash == NULL || XXH3_64bits_reset(r->hash) != XXH_OK) {
    XXH3_freeState(r->hash);
    free(r);
    return KV_E_NOMEM;
  }
  r->store = kv;
  r->item_heap = &r->heap;
  r->phase = RESTORE_HEADER;
  kv->restore = r;
  *restore = r;
  return 0;
}

static void restore_free(kv_restore *r) {
  if (r->current != NULL) {
    kv_item_release(r->item_heap, r->current);
  }
  for (uint64_t i = 0; i < r->item_count; i++) {
    kv_item_release(r->item_heap, r->items[i]);
  }
  assert(r->heap.memory_bytes == 0);
  free(r->items);
  XXH3_freeState(r->hash);
  r->store->restore = NULL;
  free(r);
}

void kv_restore_abort(kv_restore *restore) {
  if (restore != NULL) {
    restore_free(restore);
  }
}

/* ---- Parsing -------------------------------------------------------------- */

static size_t stage(kv_restore *r, const uint8_t *data, size_t length, size_t wanted) {
  size_t n = wanted - r->staged;
  n = n < length ? n : length;
  memcpy(r->staging + r->staged, data, n);
  r->staged += n;
  return n;
}

static int parse_header(kv_restore *r) {
  const uint8_t *header = r->staging;
  if (kv_load_u32(header) != KV_SNAPSHOT_MAGIC ||
      kv_load_u64(header + 24) != XXH3_64bits(header, 24)) {
    return KV_E_CORRUPT;
  }
  if (kv_load_u16(header + 4) != KV_SNAPSHOT_VERSION) {
    return KV_E_VERSION;
  }
  r->count = kv_load_u64(header + 8);
  r->records_bytes = kv_load_u64(header + 16);
  const uint64_t record_most =
      KV_SNAPSHOT_RECORD_HEADER_BYTES + KV_MAX_KEY_BYTES + KV_MAX_VALUE_BYTES;
  if (kv_load_u16(header + 6) != 0 ||
      r->count > r->records_bytes / KV_SNAPSHOT_RECORD_HEADER_BYTES ||
      (r->count == 0 && r->records_bytes != 0) ||
      (r->count > 0 && (r->records_bytes - 1) / r->count >= record_most)) {
    return KV_E_CORRUPT;
  }
  XXH3_64bits_update(r->hash, header, KV_SNAPSHOT_HEADER_BYTES);
  r->staged = 0;
  r->phase = r->count > 0 ? RESTORE_RECORD_HEADER : RESTORE_TRAILER;
  return 0;
}

static int finish_record(kv_restore *r) {
  kv_item *item = r->current;
  if (r->item_count > 0) {
    const kv_item *previous = r->items[r->item_count - 1];
    if (kv_compare_keys(kv_item_key(previous), previous->key_length, kv_item_key(item),
                        item->key_length) >= 0) {
      return KV_E_CORRUPT;
    }
  }
  if (r->item_count == r->item_capacity) {
    /* Grows with the records that arrived, never with the claimed count. */
    uint64_t capacity = r->item_capacity < 64 ? 64 : 2 * r->item_capacity;
    capacity = capacity < r->count ? capacity : r->count;
    kv_item **items = realloc(r->items, capacity * sizeof(*items));
    if (items == NULL) {
      return KV_E_NOMEM;
    }
    r->items = items;
    r->item_capacity = capacity;
  }
  r->items[r->item_count++] = item;
  r->current = NULL;
  r->payload_bytes += (uint64_t)item->key_length + item->value_length;
  r->staged = 0;
  if (r->item_count < r->count) {
    r->phase = RESTORE_RECORD_HEADER;
    return 0;
  }
  r->phase = RESTORE_TRAILER;
  return r->record_bytes_in == r->records_bytes ? 0 : KV_E_CORRUPT;
}

static int parse_record_header(kv_restore *r) {
  const uint32_t key_length = kv_load_u32(r->staging);
  const uint32_t value_length = kv_load_u32(r->staging + 4);
  const uint64_t expire_at_ms = kv_load_u64(r->staging + 8);
  if (key_length > KV_MAX_KEY_BYTES || value_length > KV_MAX_VALUE_BYTES) {
    return KV_E_CORRUPT;
  }
  const uint64_t size = KV_SNAPSHOT_RECORD_HEADER_BYTES + (uint64_t)key_length + value_length;
  const uint64_t left = r->records_bytes - r->record_bytes_in;
  const uint64_t records_after = r->count - r->item_count - 1;
  if (size > left || left - size < records_after * KV_SNAPSHOT_RECORD_HEADER_BYTES) {
    return KV_E_CORRUPT;
  }
  XXH3_64bits_update(r->hash, r->staging, KV_SNAPSHOT_RECORD_HEADER_BYTES);
  r->record_bytes_in += size;
  r->current = kv_item_allocate(&r->heap, key_length, value_length, value_length, expire_at_ms);
  if (r->current == NULL) {
    return KV_E_NOMEM;
  }
  r->body_length = (size_t)key_length + value_length;
  r->body_filled = 0;
  r->phase = RESTORE_BODY;
  return r->body_length == 0 ? finish_record(r) : 0;
}

static size_t fill_body(kv_restore *r, const uint8_t *data, size_t length) {
  size_t n = r->body_length - r->body_filled;
  n = n < length ? n : length;
  memcpy(r->current->bytes + r->body_filled, data, n);
  XXH3_64bits_update(r->hash, data, n);
  r->body_filled += n;
  return n;
}

static int check_trailer(kv_restore *r) {
  if (kv_load_u64(r->staging) != XXH3_64bits_digest(r->hash)) {
    return KV_E_CORRUPT;
  }
  r->phase = RESTORE_DONE;
  return 0;
}

/* Takes what the current phase needs from data; *used says how much. */
static int consume(kv_restore *r, const uint8_t *data, size_t length, size_t *used) {
  switch (r->phase) {
  case RESTORE_HEADER:
    *used = stage(r, data, length, KV_SNAPSHOT_HEADER_BYTES);
    return r->staged == KV_SNAPSHOT_HEADER_BYTES ? parse_header(r) : 0;
  case RESTORE_RECORD_HEADER:
    *used = stage(r, data, length, KV_SNAPSHOT_RECORD_HEADER_BYTES);
    return r->staged == KV_SNAPSHOT_RECORD_HEADER_BYTES ? parse_record_header(r) : 0;
  case RESTORE_BODY:
    *used = fill_body(r, data, length);
    return r->body_filled == r->body_length ? finish_record(r) : 0;
  case RESTORE_TRAILER:
    *used = stage(r, data, length, KV_SNAPSHOT_TRAILER_BYTES);
    return r->staged == KV_SNAPSHOT_TRAILER_BYTES ? check_trailer(r) : 0;
  case RESTORE_DONE:
    break;
  }
  *used = length;
  return KV_E_CORRUPT; /* bytes after the trailer */
}

/* Frees what the failed stream had built up at once: a restore that will
 * never finish should not hold memory until it is freed. */
static int restore_fail(kv_restore *r, int error) {
  if (r->current != NULL) {
    kv_item_release(r->item_heap, r->current);
    r->current = NULL;
  }
  for (uint64_t i = 0; i < r->item_count; i++) {
    kv_item_release(r->item_heap, r->items[i]);
  }
  r->item_count = 0;
  r->failure = error;
  return error;
}

int kv_restore_feed(kv_restore *restore, const uint8_t *chunk, size_t length) {
  kv_restore *r = restore;
  while (r->failure == 0 && length > 0) {
    size_t used = 0;
    int rc = consume(r, chunk, length, &used);
    if (rc != 0) {
      return restore_fail(r, rc);
    }
    assert(used > 0); /* every phase takes at least one byte */
    chunk += used;
    length -= used;
  }
  return r->failure;
}

/* ---- Install -------------------------------------------------------------- */

static int compare_item_keys(const void *a, const void *b) {
  const kv_item *x = *(const kv_item *const *)a;
  const kv_item *y = *(const kv_item *const *)b;
  return kv_compare_keys(kv_item_key(x), x->key_length, kv_item_key(y), y->key_length);
}

/* Builds the expiry index of the items. 0 or KV_E_NOMEM. */
static int build_expiry(kv_store *kv, kv_item *const *items, uint64_t count, kv_tree *tree) {
  uint64_t expiring = 0;
  size_t longest_key = 0;
  for (uint64_t i = 0; i < count; i++) {
    if (items[i]->expire_at_ms != 0) {
      expiring++;
      longest_key = items[i]->key_length > longest_key ? items[i]->key_length : longest_key;
    }
  }
  *tree = (kv_tree){NULL, 0, 0};
  if (expiring == 0) {
    return 0;
  }
  if (kv_store_grow_scratch(kv, longest_key) != 0) {
    return KV_E_NOMEM;
  }
  kv_item **entries = malloc(expiring * sizeof(*entries));
  if (entries == NULL) {
    return KV_E_NOMEM;
  }
  uint64_t made = 0;
  int rc = 0;
  for (uint64_t i = 0; i < count && rc == 0; i++) {
    if (items[i]->expire_at_ms == 0) {
      continue;
    }
    size_t length = kv_store_expiry_key(kv, items[i]->expire_at_ms, kv_item_key(items[i]),
                                        items[i]->key_length);
    entries[made] = kv_item_create(&kv->heap, kv->scratch, length, NULL, 0, 0, 0);
    rc = entries[made] != NULL ? 0 : KV_E_NOMEM;
    made += entries[made] != NULL ? 1 : 0;
  }
  if (rc == 0) {
    qsort(entries, made, sizeof(*entries), compare_item_keys);
    rc = kv_tree_build(&kv->heap, tree, entries, made);
  }
  for (uint64_t i = 0; i < made; i++) {
    kv_item_release(&kv->heap, entries[i]); /* the tree holds its own */
  }
  free(entries);
  return rc;
}

static int install(kv_restore *r) {
  kv_store *kv = r->store;
  /* From here the items are the store's memory. */
  kv->heap.memory_bytes += r->heap.memory_bytes;
  r->heap.memory_bytes = 0;
  r->item_heap = &kv->heap;
  kv_tree main;
  int rc = kv_tree_build(&kv->heap, &main, r->items, r->item_count);
  if (rc != 0) {
    return rc;
  }
  kv_tree expiry;
  rc = build_expiry(kv, r->items, r->item_count, &expiry);
  if (rc != 0) {
    kv_tree_release(&kv->heap, &main);
    return rc;
  }
  kv_store_begin_change(kv);
  kv_tree_release(&kv->heap, &kv->main);
  kv_tree_release(&kv->heap, &kv->expiry);
  kv->main = main;
  kv->expiry = expiry;
  kv->payload_bytes = r->payload_bytes;
  return 0;
}

int kv_restore_finish(kv_restore *restore) {
  int rc = restore->failure;
  if (rc == 0 && restore->phase != RESTORE_DONE) {
    rc = KV_E_TRUNCATED;
  }
  if (rc == 0) {
    rc = install(restore);
  }
  restore_free(restore);
  return rc;
}
