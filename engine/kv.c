/*
 * kv.c - the KV store: items, the direct reads and writes, and expiry.
 *
 * Every change of an entry goes through kv_store_put_item,
 * kv_store_remove or kv_store_rewrite_value, which keep the three things
 * that describe an entry in step: the main tree, the expiry index and the
 * payload byte count the snapshot header needs. Each first allocates what
 * it may need (the new item, its index entry, the node reserve) and only
 * then changes anything, so it either happens whole or not at all.
 */
#include <stdlib.h>

#include "engine/kv_internal.h"

static const uint8_t empty_bytes[1];

/* Callers may pass NULL for an empty string; pointer arithmetic on NULL
 * is undefined, so it becomes a real (empty) array. */
static const uint8_t *non_null(const uint8_t *bytes) {
  return bytes != NULL ? bytes : empty_bytes;
}

const char *kv_strerror(int error) {
  switch (error) {
  case KV_OK:
    return "OK";
  case KV_E_MALFORMED:
    return "ERR malformed command";
  case KV_E_NOT_INTEGER:
    return "ERR value is not an integer or out of range";
  case KV_E_OVERFLOW:
    return "ERR increment or decrement would overflow";
  case KV_E_TOO_LARGE:
    return "ERR string exceeds maximum allowed size";
  case KV_E_NOMEM:
    return "ERR out of memory";
  case KV_E_NO_SPACE:
    return "ERR buffer too small";
  case KV_E_INVALID:
    return "ERR invalid argument";
  case KV_E_CORRUPT:
    return "ERR snapshot stream corrupt";
  case KV_E_TRUNCATED:
    return "ERR snapshot stream truncated";
  case KV_E_VERSION:
    return "ERR snapshot stream of an unknown version";
  case KV_E_BUSY:
    return "ERR busy";
  default:
    return "ERR unknown error";
  }
}

/* ---- Items ---------------------------------------------------------------- */

kv_item *kv_item_allocate(kv_heap *heap, size_t key_length, size_t value_length,
                          size_t value_capacity, uint64_t expire_at_ms) {
  assert(key_length <= 8 + KV_MAX_KEY_BYTES && value_length <= value_capacity &&
         value_capacity <= KV_MAX_VALUE_BYTES);
  size_t bytes = sizeof(kv_item) + key_length + value_capacity;
  kv_item *item = malloc(bytes);
  if (item == NULL) {
    return NULL;
  }
  item->reference_count = 1;
  item->key_length = (uint32_t)key_length;
  item->value_length = (uint32_t)value_length;
  item->value_capacity = (uint32_t)value_capacity;
  item->expire_at_ms = expire_at_ms;
  heap->memory_bytes += bytes;
  return item;
}

kv_item *kv_item_create(kv_heap *heap, const uint8_t *key, size_t key_length, const uint8_t *value,
                        size_t value_length, size_t value_capacity, uint64_t expire_at_ms) {
  kv_item *item = kv_item_allocate(heap, key_length, value_length, value_capacity, expire_at_ms);
  if (item == NULL) {
    return NULL;
  }
  if (key_length > 0) {
    memcpy(item->bytes, key, key_length);
  }
  if (value_length > 0) {
    memcpy(item->bytes + key_length, value, value_length);
  }
  return item;
}

void kv_item_release(kv_heap *heap, kv_item *item) {
  assert(item->reference_count > 0);
  if (--item->reference_count > 0) {
    return;
  }
  size_t bytes = kv_item_bytes(item);
  assert(heap->memory_bytes >= bytes);
  heap->memory_bytes -= bytes;
  free(item);
}

/* ---- Store ---------------------------------------------------------------- */

int kv_create(kv_store **kv) {
  kv_store *store = calloc(1, sizeof(*store));
  if (store == NULL) {
    return KV_E_NOMEM;
  }
  *kv = store;
  return 0;
}

void kv_destroy(kv_store *kv) {
  if (kv == NULL) {
    return;
  }
  assert(kv->snapshots == NULL && kv->snapshot_count == 0);
  assert(kv->restore == NULL);
  kv_store_begin_change(kv);
  kv_tree_release(&kv->heap, &kv->main);
  kv_tree_release(&kv->heap, &kv->expiry);
  kv_heap_drain(&kv->heap);
  assert(kv->heap.memory_bytes == 0);
  free(kv->scratch);
  free(kv);
}

void kv_store_begin_change(kv_store *kv) {
  if (kv->retained != NULL) {
    kv_item_release(&kv->heap, kv->retained);
    kv->retained = NULL;
  }
}

void kv_shrink(kv_store *kv) {
  kv_heap_drain(&kv->heap);
  if (kv->expiry.count == 0) {
    free(kv->scratch);
    kv->scratch = NULL;
    kv->scratch_capacity = 0;
  }
}

int kv_store_grow_scratch(kv_store *kv, size_t key_length) {
  assert(key_length <= KV_MAX_KEY_BYTES);
  size_t needed = 8 + key_length;
  if (needed <= kv->scratch_capacity) {
    return 0;
  }
  /* At least 64 bytes, then doubling: few regrowths for growing keys. */
  size_t capacity = kv->scratch_capacity < 32 ? 64 : 2 * kv->scratch_capacity;
  capacity = capacity < needed ? needed : capacity;
  capacity = capacity < 8 + KV_MAX_KEY_BYTES ? capacity : 8 + KV_MAX_KEY_BYTES;
  uint8_t *scratch = realloc(kv->scratch, capacity);
  if (scratch == NULL) {
    return KV_E_NOMEM;
  }
  kv->scratch = scratch;
  kv->scratch_capacity = capacity;
  return 0;
}

size_t kv_store_expiry_key(kv_store *kv, uint64_t expire_at_ms, const uint8_t *key,
                           size_t key_length) {
  assert(key_length <= KV_MAX_KEY_BYTES && 8 + key_length <= kv->scratch_capacity);
  kv_store_u64_big_endian(kv->scratch, expire_at_ms);
  if (key_length > 0) {
    memcpy(kv->scratch + 8, key, key_length);
  }
  return 8 + key_length;
}

static uint64_t payload_of(const kv_item *item) {
  return item == NULL ? 0 : (uint64_t)item->key_length + item->value_length;
}

/* Takes (expire_at_ms, key) out of the expiry index. */
static void unindex(kv_store *kv, const kv_item *item) {
  size_t length = kv_store_expiry_key(kv, item->expire_at_ms, kv_item_key(item), item->key_length);
  kv_item_release(&kv->heap, kv_tree_remove(&kv->heap, &kv->expiry, kv->scratch, length));
}

int kv_store_put_item(kv_store *kv, kv_item *item, kv_item **old) {
  *old = NULL;
  /* Everything that may be needed is allocated first: the index entry if
   * the item expires, and nodes for one main-tree insert plus an index
   * removal (the replaced entry may have had another expiry) and insert. */
  kv_item *index_item = NULL;
  if (item->expire_at_ms != 0) {
    if (kv_store_grow_scratch(kv, item->key_length) != 0) {
      kv_item_release(&kv->heap, item);
      return KV_E_NOMEM;
    }
    size_t length =
        kv_store_expiry_key(kv, item->expire_at_ms, kv_item_key(item), item->key_length);
    index_item = kv_item_create(&kv->heap, kv->scratch, length, NULL, 0, 0, 0);
    if (index_item == NULL) {
      kv_item_release(&kv->heap, item);
      return KV_E_NOMEM;
    }
  }
  kv_reservation reservation = {{0, 0}};
  kv_reservation_add(&reservation, &kv->main, 1);
  kv_reservation_add(&reservation, &kv->expiry, index_item != NULL ? 2 : 1);
  if (kv_heap_reserve(&kv->heap, &reservation) != 0) {
    if (index_item != NULL) {
      kv_item_release(&kv->heap, index_item);
    }
    kv_item_release(&kv->heap, item);
    return KV_E_NOMEM;
  }
  /* One descent: the replaced item tells what the index must lose. */
  kv_item *previous = kv_tree_put(&kv->heap, &kv->main, item);
  kv->payload_bytes += payload_of(item);
  kv->payload_bytes -= payload_of(previous);
  bool same_expiry = previous != NULL && previous->expire_at_ms == item->expire_at_ms;
  if (previous != NULL && previous->expire_at_ms != 0 && !same_expiry) {
    unindex(kv, previous);
  }
  if (index_item != NULL && same_expiry) {
    kv_item_release(&kv->heap, index_item); /* already indexed */
  } else if (index_item != NULL) {
    kv_item *duplicate = kv_tree_put(&kv->heap, &kv->expiry, index_item);
    assert(duplicate == NULL);
    (void)duplicate;
  }
  *old = previous;
  return 0;
}

int kv_store_remove(kv_store *kv, const uint8_t *key, size_t key_length, kv_item **removed) {
  *removed = NULL;
  const kv_item *item = kv_tree_find(&kv->main, key, key_length);
  if (item == NULL) {
    return 0;
  }
  kv_reservation reservation = {{0, 0}};
  kv_reservation_add(&reservation, &kv->main, 1);
  kv_reservation_add(&reservation, &kv->expiry, item->expire_at_ms != 0 ? 1 : 0);
  if (kv_heap_reserve(&kv->heap, &reservation) != 0) {
    return KV_E_NOMEM;
  }
  if (item->expire_at_ms != 0) {
    unindex(kv, item);
  }
  kv->payload_bytes -= payload_of(item);
  /* key may point into the item itself: it stays alive until the caller
   * releases the reference it gets here. */
  *removed = kv_tree_remove(&kv->heap, &kv->main, key, key_length);
  assert(*removed == item);
  return 0;
}

/* Room for a value growing to `length`: an append doubles it, so a run of
 * appends copies each byte a bounded number of times. */
static size_t grown_capacity(size_t length, bool appending) {
  if (!appending || length >= KV_MAX_VALUE_BYTES / 2) {
    return appending ? KV_MAX_VALUE_BYTES : length;
  }
  return length * 2 < 16 ? 16 : length * 2;
}

/* The item is held by this one slot only: change it in place, growing it
 * with realloc when needed. */
static int rewrite_in_place(kv_store *kv, kv_item **slot, size_t keep_length, const uint8_t *tail,
                            size_t tail_length) {
  kv_item *item = *slot;
  size_t length = keep_length + tail_length;
  if (length > item->value_capacity) {
    size_t capacity = grown_capacity(length, keep_length > 0);
    kv_item *grown = realloc(item, sizeof(kv_item) + item->key_length + capacity);
    if (grown == NULL) {
      return KV_E_NOMEM;
    }
    kv->heap.memory_bytes += capacity - grown->value_capacity;
    grown->value_capacity = (uint32_t)capacity;
    item = grown;
    *slot = grown;
  }
  if (tail_length > 0) {
    memcpy(kv_item_value(item) + keep_length, tail, tail_length);
  }
  kv->payload_bytes += length;
  kv->payload_bytes -= item->value_length;
  item->value_length = (uint32_t)length;
  return 0;
}

int kv_store_rewrite_value(kv_store *kv, const uint8_t *key, size_t key_length, size_t keep_length,
                           const uint8_t *tail, size_t tail_length) {
  kv_reservation reservation = {{0, 0}};
  kv_reservation_add(&reservation, &kv->main, 1);
  if (kv_heap_reserve(&kv->heap, &reservation) != 0) {
    return KV_E_NOMEM;
  }
  kv_item **slot = kv_tree_writable_slot(&kv->heap, &kv->main, key, key_length);
  kv_item *item = *slot;
  size_t length = keep_length + tail_length;
  assert(keep_length <= item->value_length && length <= KV_MAX_VALUE_BYTES);
  if (item->reference_count == 1) {
    return rewrite_in_place(kv, slot, keep_length, tail, tail_length);
  }
  /* A pinned version (or the last result) shares the item: copy it. */
  kv_item *copy =
      kv_item_create(&kv->heap, kv_item_key(item), item->key_length, kv_item_value(item),
                     keep_length, grown_capacity(length, keep_length > 0), item->expire_at_ms);
  if (copy == NULL) {
    return KV_E_NOMEM;
  }
  if (tail_length > 0) {
    memcpy(kv_item_value(copy) + keep_length, tail, tail_length);
  }
  copy->value_length = (uint32_t)length;
  kv->payload_bytes += length;
  kv->payload_bytes -= item->value_length;
  *slot = copy;
  kv_item_release(&kv->heap, item);
  return 0;
}

/* ---- Direct reads and writes ---------------------------------------------- */

static void fill_entry(const kv_item *item, kv_entry *entry) {
  entry->key = kv_item_key(item);
  entry->key_length = item->key_length;
  entry->value = kv_item_value_const(item);
  entry->value_length = item->value_length;
  entry->expire_at_ms = item->expire_at_ms;
}

bool kv_get(const kv_store *kv, const uint8_t *key, size_t key_length, uint64_t now_ms,
            kv_entry *entry) {
  if (key_length > KV_MAX_KEY_BYTES) {
    return false;
  }
  const kv_item *item = kv_tree_find(&kv->main, non_null(key), key_length);
  if (item == NULL || kv_item_expired(item, now_ms)) {
    return false;
  }
  fill_entry(item, entry);
  return true;
}

size_t kv_scan(const kv_store *kv, const uint8_t *start, size_t start_length, uint64_t now_ms,
               kv_entry *entries, size_t capacity) {
  kv_cursor cursor;
  kv_cursor_seek(&cursor, kv->main.root, non_null(start), start_length);
  size_t filled = 0;
  while (filled < capacity) {
    const kv_item *item = kv_cursor_next(&cursor);
    if (item == NULL) {
      break;
    }
    if (!kv_item_expired(item, now_ms)) {
      fill_entry(item, &entries[filled++]);
    }
  }
  return filled;
}

uint64_t kv_count(const kv_store *kv) {
  return kv->main.count;
}

uint64_t kv_memory_bytes(const kv_store *kv) {
  return kv->heap.memory_bytes;
}

int kv_put(kv_store *kv, const uint8_t *key, size_t key_length, const uint8_t *value,
           size_t value_length, uint64_t expire_at_ms) {
  if (key_length > KV_MAX_KEY_BYTES || value_length > KV_MAX_VALUE_BYTES) {
    return KV_E_INVALID;
  }
  kv_store_begin_change(kv);
  kv_item *item = kv_item_create(&kv->heap, non_null(key), key_length, value, value_length,
                                 value_length, expire_at_ms);
  if (item == NULL) {
    return KV_E_NOMEM;
  }
  kv_item *old = NULL;
  int rc = kv_store_put_item(kv, item, &old);
  if (old != NULL) {
    kv_item_release(&kv->heap, old);
  }
  return rc;
}

int kv_delete(kv_store *kv, const uint8_t *key, size_t key_length, bool *existed) {
  if (existed != NULL) {
    *existed = false;
  }
  if (key_length > KV_MAX_KEY_BYTES) {
    return 0;
  }
  kv_store_begin_change(kv);
  kv_item *removed = NULL;
  int rc = kv_store_remove(kv, non_null(key), key_length, &removed);
  if (removed != NULL) {
    if (existed != NULL) {
      *existed = true;
    }
    kv_item_release(&kv->heap, removed);
  }
  return rc;
}

/* ---- Expiry --------------------------------------------------------------- */

uint64_t kv_next_expiry_ms(const kv_store *kv) {
  const kv_item *first = kv_tree_first(&kv->expiry);
  return first == NULL ? 0 : kv_load_u64_big_endian(kv_item_key(first));
}

/* Removes the entry the expiry index lists first; its index item keeps the
 * key alive while the main tree lets go of it. */
static int remove_first_expired(kv_store *kv) {
  kv_item *first = kv_tree_first(&kv->expiry);
  const uint8_t *key = kv_item_key(first) + 8;
  size_t key_length = first->key_length - 8u;
  kv_item_retain(first);
  kv_item *removed = NULL;
  int rc = kv_store_remove(kv, key, key_length, &removed);
  if (removed != NULL) {
    assert(removed->expire_at_ms == kv_load_u64_big_endian(kv_item_key(first)));
    kv_item_release(&kv->heap, removed);
  }
  kv_item_release(&kv->heap, first);
  return rc;
}

int kv_store_expire(kv_store *kv, uint64_t now_ms, uint32_t max_keys, uint32_t *removed) {
  *removed = 0;
  while (*removed < max_keys) {
    uint64_t next = kv_next_expiry_ms(kv);
    if (next == 0 || next > now_ms) {
      break;
    }
    int rc = remove_first_expired(kv);
    if (rc != 0) {
      return rc;
    }
    (*removed)++;
  }
  return 0;
}

int kv_expire_step(kv_store *kv, uint64_t now_ms, uint32_t max_keys, uint32_t *removed) {
  kv_store_begin_change(kv);
  return kv_store_expire(kv, now_ms, max_keys, removed);
}

/* ---- Changes of several keys ---------------------------------------------- */

static void pin_tree(const kv_tree *tree, kv_tree *pinned) {
  *pinned = *tree;
  if (pinned->root != NULL) {
    kv_node_retain(pinned->root);
  }
}

void kv_store_pin(kv_store *kv, kv_version *version) {
  pin_tree(&kv->main, &version->main);
  pin_tree(&kv->expiry, &version->expiry);
  version->payload_bytes = kv->payload_bytes;
}

void kv_store_unpin(kv_store *kv, kv_version *version) {
  kv_tree_release(&kv->heap, &version->main);
  kv_tree_release(&kv->heap, &version->expiry);
}

void kv_store_roll_back(kv_store *kv, kv_version *version) {
  /* Releasing the changed trees frees only the nodes and items the change
   * made: everything else is still held by the pinned roots, whose extra
   * reference becomes the live trees' own. */
  kv_tree_release(&kv->heap, &kv->main);
  kv_tree_release(&kv->heap, &kv->expiry);
  kv->main = version->main;
  kv->expiry = version->expiry;
  kv->payload_bytes = version->payload_bytes;
}
