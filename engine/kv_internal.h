/*
 * kv_internal.h - what the files of the KV state machine share: items,
 * B-tree nodes, the node reserve, the tree operations and the store itself.
 *
 * Files: kv_tree.c (search, insert, remove, copy-on-write), kv_cursor.c
 * (in-order walks and the bulk build of a restore), kv.c (the store: direct
 * reads and writes, expiry), kv_command.c (command encoding and apply),
 * kv_snapshot.c (stream out), kv_restore.c (stream in), kv_check.c
 * (invariants).
 *
 * Reference counts: a node is referenced by its parent in every version
 * that holds it, or by a tree or snapshot as a root; an item by every node
 * that holds it, plus the store while it is the borrowed value of the last
 * result. Counts are plain integers: everything belongs to one thread.
 */
#ifndef FLOTILLA_ENGINE_KV_INTERNAL_H
#define FLOTILLA_ENGINE_KV_INTERNAL_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/limits.h"
#include "engine/kv.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the key windows and the snapshot format assume a little-endian host"
#endif

/* Node fill: non-root nodes hold KV_NODE_MIN_ITEMS..KV_NODE_MAX_ITEMS items
 * (the root 1..MAX). One slot more than MAX lets an insert overflow a node
 * before its parent splits it. 31 items keep one node's search to five
 * comparisons over four cache lines of key windows. */
#define KV_NODE_MAX_ITEMS 31u
#define KV_NODE_MIN_ITEMS 15u
/* Bytes of the shared key prefix a node remembers. */
#define KV_NODE_PREFIX_BYTES 24u
/* Deepest tree: a tree of height h holds at least 2 * 16^(h-1) - 1 items,
 * so 12 levels are more than any memory can fill. Sizes cursor stacks. */
#define KV_MAX_HEIGHT 12u
/* Free nodes kept per kind: enough for the largest reservation (three tree
 * operations at KV_MAX_HEIGHT), so a reserved operation never allocates. */
#define KV_RESERVE_MAX_NODES (3u * (2u * KV_MAX_HEIGHT + 2u))

FL_STATIC_ASSERT(KV_NODE_MAX_ITEMS == 2 * KV_NODE_MIN_ITEMS + 1,
                 "a split of MAX + 1 items leaves MIN and MIN + 1, a merge makes at most MAX");
FL_STATIC_ASSERT(KV_NODE_MAX_ITEMS < UINT16_MAX, "node counts are 16-bit");
FL_STATIC_ASSERT(KV_NODE_PREFIX_BYTES < 256, "prefix lengths are 8-bit");
FL_STATIC_ASSERT(KV_MAX_KEY_BYTES <= UINT32_MAX && KV_MAX_VALUE_BYTES <= UINT32_MAX,
                 "item lengths are 32-bit");

/* One entry. Immutable while shared (reference_count > 1); the value may
 * change in place only while a single exclusive node holds it. */
typedef struct kv_item {
  uint32_t reference_count;
  uint32_t key_length;
  uint32_t value_length;
  uint32_t value_capacity;
  uint64_t expire_at_ms;
  uint8_t bytes[]; /* key, then value_capacity bytes of value */
} kv_item;

typedef struct kv_node kv_node;

/*
 * A B-tree node. All its keys begin with prefix[0..prefix_length); windows[i]
 * holds the 8 key bytes after that prefix, big-endian and zero-padded, so
 * that windows[i] < w implies key i < any key whose window is w. Internal
 * nodes have count + 1 children; leaves are allocated without the array.
 */
struct kv_node {
  uint32_t reference_count;
  uint16_t count;
  uint8_t is_leaf;
  uint8_t prefix_length;
  union {
    uint8_t prefix[KV_NODE_PREFIX_BYTES];
    kv_node *next_free; /* while in the reserve */
  };
  uint64_t windows[KV_NODE_MAX_ITEMS + 1];
  kv_item *items[KV_NODE_MAX_ITEMS + 1];
  kv_node *children[]; /* internal nodes: KV_NODE_MAX_ITEMS + 2 */
};

#define KV_LEAF_BYTES (offsetof(kv_node, children))
#define KV_INTERNAL_BYTES (KV_LEAF_BYTES + (KV_NODE_MAX_ITEMS + 2) * sizeof(kv_node *))

/* Memory accounting and the reserve of free nodes ([0] leaves, [1] internal). */
typedef struct kv_heap {
  uint64_t memory_bytes;
  kv_node *free_nodes[2];
  uint32_t free_count[2];
} kv_heap;

typedef struct kv_tree {
  kv_node *root; /* NULL when empty */
  uint64_t count;
  uint32_t height; /* 0 when empty; leaves are at level 1 */
} kv_tree;

/* An in-order position: frames[i] is the node at depth i and the index of
 * the item it yields next (its child at that index is being walked below). */
typedef struct kv_cursor {
  uint32_t depth;
  struct {
    const kv_node *node;
    uint32_t index;
  } frames[KV_MAX_HEIGHT];
} kv_cursor;

struct kv_store {
  kv_heap heap;
  kv_tree main;           /* key -> value */
  kv_tree expiry;         /* big-endian expire_at_ms || key -> empty */
  uint64_t payload_bytes; /* sum of key and value lengths in main */
  kv_item *retained;      /* keeps the last result's value alive */
  kv_snapshot *snapshots; /* open snapshots, newest first */
  uint32_t snapshot_count;
  kv_restore *restore;
  /* Expiry-index keys are composed here. Grown before a change to hold
   * the longest key that has an expiry (so removing its index entry later
   * never allocates); empty until one has. */
  uint8_t *scratch;
  size_t scratch_capacity;
};

/* ---- Items (kv.c) --------------------------------------------------------- */

static inline const uint8_t *kv_item_key(const kv_item *item) {
  return item->bytes;
}
static inline uint8_t *kv_item_value(kv_item *item) {
  return item->bytes + item->key_length;
}
static inline const uint8_t *kv_item_value_const(const kv_item *item) {
  return item->bytes + item->key_length;
}
static inline size_t kv_item_bytes(const kv_item *item) {
  return sizeof(kv_item) + item->key_length + item->value_capacity;
}
static inline bool kv_item_expired(const kv_item *item, uint64_t now_ms) {
  return item->expire_at_ms != 0 && item->expire_at_ms <= now_ms;
}
static inline void kv_item_retain(kv_item *item) {
  assert(item->reference_count > 0);
  item->reference_count++;
}

/* New item with one reference and its bytes left for the caller to fill,
 * or NULL. value_capacity >= value_length. */
kv_item *kv_item_allocate(kv_heap *heap, size_t key_length, size_t value_length,
                          size_t value_capacity, uint64_t expire_at_ms);
/* New item with one reference holding copies of key and value, or NULL. */
kv_item *kv_item_create(kv_heap *heap, const uint8_t *key, size_t key_length, const uint8_t *value,
                        size_t value_length, size_t value_capacity, uint64_t expire_at_ms);
void kv_item_release(kv_heap *heap, kv_item *item);

/* memcmp order, a proper prefix first. */
static inline int kv_compare_keys(const uint8_t *a, size_t a_length, const uint8_t *b,
                                  size_t b_length) {
  size_t shared = a_length < b_length ? a_length : b_length;
  int order = shared == 0 ? 0 : memcmp(a, b, shared);
  if (order != 0) {
    return order;
  }
  return (a_length > b_length) - (a_length < b_length);
}

/* Little-endian fields of the snapshot stream (the host is little-endian). */
static inline void kv_store_u16(uint8_t *out, uint16_t value) {
  memcpy(out, &value, sizeof(value));
}
static inline void kv_store_u32(uint8_t *out, uint32_t value) {
  memcpy(out, &value, sizeof(value));
}
static inline void kv_store_u64(uint8_t *out, uint64_t value) {
  memcpy(out, &value, sizeof(value));
}
static inline uint16_t kv_load_u16(const uint8_t *in) {
  uint16_t value;
  memcpy(&value, in, sizeof(value));
  return value;
}
static inline uint32_t kv_load_u32(const uint8_t *in) {
  uint32_t value;
  memcpy(&value, in, sizeof(value));
  return value;
}
static inline uint64_t kv_load_u64(const uint8_t *in) {
  uint64_t value;
  memcpy(&value, in, sizeof(value));
  return value;
}

/* Big-endian keys order like their numbers under memcmp. */
static inline void kv_store_u64_big_endian(uint8_t *out, uint64_t value) {
  value = __builtin_bswap64(value);
  memcpy(out, &value, sizeof(value));
}
static inline uint64_t kv_load_u64_big_endian(const uint8_t *in) {
  uint64_t value;
  memcpy(&value, in, sizeof(value));
  return __builtin_bswap64(value);
}

/* ---- Nodes and trees (kv_tree.c) ------------------------------------------ */

/* Nodes a change may need at most, [0] leaves and [1] internal: the sum
 * over the tree operations it will make. */
typedef struct kv_reservation {
  uint32_t nodes[2];
} kv_reservation;
/* Adds `operations` inserts or removals on a tree of this height. */
void kv_reservation_add(kv_reservation *reservation, const kv_tree *tree, uint32_t operations);
/* Fills the reserve up to the reservation, so the tree operations that
 * follow cannot fail halfway. 0 or KV_E_NOMEM. */
int kv_heap_reserve(kv_heap *heap, const kv_reservation *reservation);
/* Node from the allocator (not the reserve), one reference, empty. */
kv_node *kv_node_allocate(kv_heap *heap, bool is_leaf);
/* Returns an exclusively held node's shell (contents already moved). */
void kv_node_recycle(kv_heap *heap, kv_node *node);
void kv_node_release(kv_heap *heap, kv_node *node);
static inline void kv_node_retain(kv_node *node) {
  assert(node->reference_count > 0);
  node->reference_count++;
}
/* Frees the reserve (store destruction). */
void kv_heap_drain(kv_heap *heap);
/* Sets prefix to the exact shared prefix of the node's keys and rewrites
 * every window. */
void kv_node_rebuild_prefix(kv_node *node);
/* Window of a key that shares the node's prefix. */
uint64_t kv_node_window(const kv_node *node, const uint8_t *key, size_t key_length);
/* Index of the first item >= key; *found when it equals key. */
uint32_t kv_node_search(const kv_node *node, const uint8_t *key, size_t key_length, bool *found);

kv_item *kv_tree_find(const kv_tree *tree, const uint8_t *key, size_t key_length);
kv_item *kv_tree_first(const kv_tree *tree);
/* Stores item (taking its reference); returns the item it replaced (the
 * caller gets that reference) or NULL. Needs one operation reserved. */
kv_item *kv_tree_put(kv_heap *heap, kv_tree *tree, kv_item *item);
/* Removes a key that is present; returns its item with the tree's
 * reference. Needs one operation reserved. */
kv_item *kv_tree_remove(kv_heap *heap, kv_tree *tree, const uint8_t *key, size_t key_length);
/* Makes the path to a present key exclusive and returns the slot holding
 * its item, which the caller may rewrite. Needs one operation reserved. */
kv_item **kv_tree_writable_slot(kv_heap *heap, kv_tree *tree, const uint8_t *key,
                                size_t key_length);
void kv_tree_release(kv_heap *heap, kv_tree *tree);

/* ---- Walks and bulk build (kv_cursor.c) ---------------------------------- */

void kv_cursor_first(kv_cursor *cursor, const kv_node *root);
void kv_cursor_seek(kv_cursor *cursor, const kv_node *root, const uint8_t *key, size_t key_length);
/* Next item in key order, or NULL at the end. */
const kv_item *kv_cursor_next(kv_cursor *cursor);

/* Builds a tree holding items[0..count) (strictly increasing keys), each
 * retained once more; nodes come from the allocator, filled near full.
 * 0 or KV_E_NOMEM (nothing built). */
int kv_tree_build(kv_heap *heap, kv_tree *tree, kv_item *const *items, uint64_t count);

/* ---- Store internals (kv.c) ----------------------------------------------- */

/* Drops the borrowed value of the previous result: the start of every
 * mutating call. */
void kv_store_begin_change(kv_store *kv);
/* Makes kv->scratch hold at least 8 + key_length bytes. 0 or KV_E_NOMEM. */
int kv_store_grow_scratch(kv_store *kv, size_t key_length);
/* Composes the expiry-index key of (expire_at_ms, key) in kv->scratch,
 * which kv_store_grow_scratch() made large enough. */
size_t kv_store_expiry_key(kv_store *kv, uint64_t expire_at_ms, const uint8_t *key,
                           size_t key_length);
/* Stores item (taking its reference), keeping the expiry index and payload
 * count right; *old gets the replaced item's reference or NULL. All or
 * nothing: 0 or KV_E_NOMEM (item released). */
int kv_store_put_item(kv_store *kv, kv_item *item, kv_item **old);
/* Removes a key if stored; *removed gets its item's reference or NULL.
 * 0 or KV_E_NOMEM (nothing removed). */
int kv_store_remove(kv_store *kv, const uint8_t *key, size_t key_length, kv_item **removed);
/* Replaces the value of a present key by its first keep_length bytes
 * followed by tail, keeping the expiry; in place when nothing shares the
 * item. 0 or KV_E_NOMEM (value unchanged). */
int kv_store_rewrite_value(kv_store *kv, const uint8_t *key, size_t key_length, size_t keep_length,
                           const uint8_t *tail, size_t tail_length);

/* Removes up to max_keys entries expired at now_ms, smallest (expiry, key)
 * first. 0 or KV_E_NOMEM. */
int kv_store_expire(kv_store *kv, uint64_t now_ms, uint32_t max_keys, uint32_t *removed);

/* The store's trees as they were when a change of several keys began,
 * pinned (each root holds one more reference) so that the change copies
 * around them and a failure halfway can put them back: the way MSET is all
 * or nothing without reserving for every key at once. */
typedef struct kv_version {
  kv_tree main;
  kv_tree expiry;
  uint64_t payload_bytes;
} kv_version;
/* Pins the current version. O(1). */
void kv_store_pin(kv_store *kv, kv_version *version);
/* The change succeeded: unpins, freeing what only the old version held
 * (O(nodes the change copied)). */
void kv_store_unpin(kv_store *kv, kv_version *version);
/* The change failed: drops the trees as the change left them and makes the
 * pinned version live again, exactly as it was. */
void kv_store_roll_back(kv_store *kv, kv_version *version);

/* ---- Snapshots (kv_snapshot.c) -------------------------------------------- */

/* What the invariant check needs to see of an open snapshot. */
const kv_node *kv_snapshot_root(const kv_snapshot *snapshot);
uint32_t kv_snapshot_height(const kv_snapshot *snapshot);
uint64_t kv_snapshot_payload_bytes(const kv_snapshot *snapshot);
const kv_snapshot *kv_snapshot_next(const kv_snapshot *snapshot);

#endif
