/*
 * kv_check.c - kv_check_invariants(): everything the store promises about
 * itself, checked from scratch, for the tests.
 *
 * Two passes. The first walks each tree (live, expiry index, every open
 * snapshot) in key order and checks its shape: order, fill, depth,
 * prefixes and windows, counts and payload bytes. The second counts the
 * references that really exist to every distinct node and item - from
 * parents, from tree and snapshot roots, from the retained result - in a
 * pointer table, and compares them with the stored reference counts, then
 * adds up what those objects and the reserve occupy and compares that with
 * the memory account. A leaked or doubly released reference, a node a
 * write changed while a snapshot shared it, or a lost byte all show here.
 */
#include <stdlib.h>

#include "engine/kv_internal.h"

#define CHECK(condition)                                                                           \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      *broken = #condition;                                                                        \
      return false;                                                                                \
    }                                                                                              \
  } while (0)

/* ---- Shape ---------------------------------------------------------------- */

typedef struct tree_walk {
  uint32_t height;
  const kv_item *previous;
  uint64_t items;
  uint64_t payload_bytes;
  uint64_t expiring;
} tree_walk;

static bool check_item_in_node(const kv_node *node, uint32_t index, tree_walk *walk,
                               const char **broken) {
  const kv_item *item = node->items[index];
  const uint8_t *key = kv_item_key(item);
  CHECK(item->reference_count > 0);
  CHECK(item->key_length <= 8 + KV_MAX_KEY_BYTES);
  CHECK(item->value_length <= item->value_capacity);
  CHECK(item->value_capacity <= KV_MAX_VALUE_BYTES);
  CHECK(item->key_length >= node->prefix_length);
  CHECK(node->prefix_length == 0 || memcmp(key, node->prefix, node->prefix_length) == 0);
  CHECK(node->windows[index] == kv_node_window(node, key, item->key_length));
  CHECK(walk->previous == NULL ||
        kv_compare_keys(kv_item_key(walk->previous), walk->previous->key_length, key,
                        item->key_length) < 0);
  walk->previous = item;
  walk->items++;
  walk->payload_bytes += (uint64_t)item->key_length + item->value_length;
  walk->expiring += item->expire_at_ms != 0 ? 1 : 0;
  return true;
}

static bool check_node(const kv_node *node, uint32_t depth, tree_walk *walk, const char **broken) {
  CHECK(node->reference_count > 0);
  CHECK(depth <= walk->height && depth <= KV_MAX_HEIGHT);
  CHECK((node->is_leaf != 0) == (depth == walk->height));
  CHECK(node->count <= KV_NODE_MAX_ITEMS);
  CHECK(node->count >= (depth == 1 ? 1u : KV_NODE_MIN_ITEMS));
  CHECK(node->prefix_length <= KV_NODE_PREFIX_BYTES);
  for (uint32_t i = 0; i <= node->count; i++) {
    if (!node->is_leaf && !check_node(node->children[i], depth + 1, walk, broken)) {
      return false;
    }
    if (i < node->count && !check_item_in_node(node, i, walk, broken)) {
      return false;
    }
  }
  return true;
}

static bool check_tree(const kv_node *root, uint32_t height, tree_walk *walk, const char **broken) {
  *walk = (tree_walk){.height = height};
  if (root == NULL) {
    CHECK(height == 0);
    return true;
  }
  CHECK(height >= 1 && height <= KV_MAX_HEIGHT);
  return check_node(root, 1, walk, broken);
}

/* Every entry with an expiry is indexed, and the index holds nothing else. */
static bool check_expiry_index(const kv_store *kv, uint64_t expiring, const char **broken) {
  tree_walk walk;
  if (!check_tree(kv->expiry.root, kv->expiry.height, &walk, broken)) {
    return false;
  }
  CHECK(walk.items == kv->expiry.count);
  CHECK(walk.items == expiring);
  uint8_t *key = malloc(8 + KV_MAX_KEY_BYTES);
  CHECK(key != NULL);
  kv_cursor cursor;
  kv_cursor_first(&cursor, kv->main.root);
  bool indexed = true;
  for (const kv_item *item = kv_cursor_next(&cursor); item != NULL && indexed;
       item = kv_cursor_next(&cursor)) {
    if (item->expire_at_ms == 0) {
      continue;
    }
    kv_store_u64_big_endian(key, item->expire_at_ms);
    memcpy(key + 8, kv_item_key(item), item->key_length);
    const kv_item *entry = kv_tree_find(&kv->expiry, key, 8 + item->key_length);
    indexed = entry != NULL && entry->value_length == 0 && entry->expire_at_ms == 0;
  }
  free(key);
  CHECK(indexed);
  return true;
}

static bool check_shapes(const kv_store *kv, const char **broken) {
  tree_walk walk;
  if (!check_tree(kv->main.root, kv->main.height, &walk, broken)) {
    return false;
  }
  CHECK(walk.items == kv->main.count);
  CHECK(walk.payload_bytes == kv->payload_bytes);
  if (!check_expiry_index(kv, walk.expiring, broken)) {
    return false;
  }
  uint32_t snapshots = 0;
  for (const kv_snapshot *s = kv->snapshots; s != NULL; s = kv_snapshot_next(s)) {
    if (!check_tree(kv_snapshot_root(s), kv_snapshot_height(s), &walk, broken)) {
      return false;
    }
    CHECK(walk.items == kv_snapshot_count(s));
    CHECK(walk.payload_bytes == kv_snapshot_payload_bytes(s));
    snapshots++;
  }
  CHECK(snapshots == kv->snapshot_count && snapshots <= KV_MAX_SNAPSHOTS);
  return true;
}

/* ---- References and memory ------------------------------------------------ */

enum object_kind { OBJECT_ITEM, OBJECT_LEAF, OBJECT_INTERNAL };

/* Open addressing from an object's address to the references found to it. */
typedef struct reference_table {
  const void **objects;
  uint64_t *references;
  uint8_t *kinds;
  size_t capacity; /* a power of two */
  size_t used;
  bool failed; /* out of memory: the check cannot conclude */
} reference_table;

static size_t slot_of(const reference_table *table, const void *object) {
  uint64_t hash = (uint64_t)(uintptr_t)object * 0x9e3779b97f4a7c15ull;
  size_t slot = (size_t)(hash >> 20) & (table->capacity - 1);
  while (table->objects[slot] != NULL && table->objects[slot] != object) {
    slot = (slot + 1) & (table->capacity - 1);
  }
  return slot;
}

static bool table_grow(reference_table *table) {
  reference_table bigger = {.capacity = table->capacity == 0 ? 1024 : table->capacity * 2};
  bigger.objects = calloc(bigger.capacity, sizeof(*bigger.objects));
  bigger.references = calloc(bigger.capacity, sizeof(*bigger.references));
  bigger.kinds = calloc(bigger.capacity, sizeof(*bigger.kinds));
  if (bigger.objects == NULL || bigger.references == NULL || bigger.kinds == NULL) {
    free(bigger.objects);
    free(bigger.references);
    free(bigger.kinds);
    return false;
  }
  for (size_t i = 0; i < table->capacity; i++) {
    if (table->objects[i] != NULL) {
      size_t slot = slot_of(&bigger, table->objects[i]);
      bigger.objects[slot] = table->objects[i];
      bigger.references[slot] = table->references[i];
      bigger.kinds[slot] = table->kinds[i];
      bigger.used++;
    }
  }
  free(table->objects);
  free(table->references);
  free(table->kinds);
  *table = bigger;
  return true;
}

/* Counts one reference to object; true when it is the first one seen. */
static bool table_count(reference_table *table, const void *object, enum object_kind kind) {
  if (table->failed) {
    return false;
  }
  if (2 * (table->used + 1) > table->capacity && !table_grow(table)) {
    table->failed = true;
    return false;
  }
  size_t slot = slot_of(table, object);
  table->references[slot]++;
  if (table->objects[slot] != NULL) {
    return false;
  }
  table->objects[slot] = object;
  table->kinds[slot] = (uint8_t)kind;
  table->used++;
  return true;
}

static void count_node(reference_table *table, const kv_node *node) {
  if (!table_count(table, node, node->is_leaf ? OBJECT_LEAF : OBJECT_INTERNAL)) {
    return; /* its contents were counted with its first reference */
  }
  for (uint32_t i = 0; i < node->count; i++) {
    (void)table_count(table, node->items[i], OBJECT_ITEM);
  }
  if (!node->is_leaf) {
    for (uint32_t i = 0; i <= node->count; i++) {
      count_node(table, node->children[i]);
    }
  }
}

static uint64_t object_reference_count(const void *object, uint8_t kind) {
  return kind == OBJECT_ITEM ? ((const kv_item *)object)->reference_count
                             : ((const kv_node *)object)->reference_count;
}

static uint64_t object_bytes(const void *object, uint8_t kind) {
  switch (kind) {
  case OBJECT_ITEM:
    return kv_item_bytes(object);
  case OBJECT_LEAF:
    return KV_LEAF_BYTES;
  default:
    return KV_INTERNAL_BYTES;
  }
}

static bool check_reserve(const kv_heap *heap, uint64_t *bytes, const char **broken) {
  for (unsigned kind = 0; kind < 2; kind++) {
    uint32_t found = 0;
    for (const kv_node *node = heap->free_nodes[kind]; node != NULL; node = node->next_free) {
      CHECK(found < KV_RESERVE_MAX_NODES);
      found++;
    }
    CHECK(found == heap->free_count[kind]);
    *bytes += (uint64_t)found * (kind == 0 ? KV_LEAF_BYTES : KV_INTERNAL_BYTES);
  }
  return true;
}

static bool compare_references(const reference_table *table, uint64_t *bytes, const char **broken) {
  for (size_t i = 0; i < table->capacity; i++) {
    if (table->objects[i] == NULL) {
      continue;
    }
    CHECK(object_reference_count(table->objects[i], table->kinds[i]) == table->references[i]);
    *bytes += object_bytes(table->objects[i], table->kinds[i]);
  }
  return true;
}

static bool check_references(const kv_store *kv, const char **broken) {
  reference_table table = {0};
  const kv_node *roots[2 + KV_MAX_SNAPSHOTS];
  size_t root_count = 0;
  roots[root_count++] = kv->main.root;
  roots[root_count++] = kv->expiry.root;
  for (const kv_snapshot *s = kv->snapshots; s != NULL && root_count < 2 + KV_MAX_SNAPSHOTS;
       s = kv_snapshot_next(s)) {
    roots[root_count++] = kv_snapshot_root(s);
  }
  for (size_t i = 0; i < root_count; i++) {
    if (roots[i] != NULL) {
      count_node(&table, roots[i]);
    }
  }
  if (kv->retained != NULL) {
    (void)table_count(&table, kv->retained, OBJECT_ITEM);
  }
  uint64_t bytes = 0;
  bool good = !table.failed && compare_references(&table, &bytes, broken) &&
              check_reserve(&kv->heap, &bytes, broken);
  free(table.objects);
  free(table.references);
  free(table.kinds);
  CHECK(!table.failed);
  if (!good) {
    return false;
  }
  CHECK(bytes == kv->heap.memory_bytes);
  return true;
}

bool kv_check_invariants(const kv_store *kv, const char **broken) {
  return check_shapes(kv, broken) && check_references(kv, broken);
}
