/*
 * kv_cursor.c - walking a tree in key order (scans, snapshot streams) and
 * building a tree from sorted items in one pass (restores).
 *
 * A cursor holds the path from the root to its position, so it needs no
 * parent pointers (which copy on write could not keep) and costs O(1)
 * amortized per item. It reads a version without changing it: a snapshot's
 * cursor stays valid while the live tree moves on, because the nodes of a
 * pinned version never change.
 *
 * The bulk build shapes the tree from the item count alone: the smallest
 * height that can hold the items, then at each node the fewest children
 * that can hold their share, spread evenly. That fills nodes nearly full,
 * which a sequence of inserts in key order would not (every split would
 * leave a half-empty node behind).
 */
#include "engine/kv_internal.h"

/* ---- Cursor --------------------------------------------------------------- */

static void push_leftmost(kv_cursor *cursor, const kv_node *node) {
  while (node != NULL) {
    assert(cursor->depth < KV_MAX_HEIGHT);
    cursor->frames[cursor->depth].node = node;
    cursor->frames[cursor->depth].index = 0;
    cursor->depth++;
    node = node->is_leaf ? NULL : node->children[0];
  }
}

void kv_cursor_first(kv_cursor *cursor, const kv_node *root) {
  cursor->depth = 0;
  push_leftmost(cursor, root);
}

void kv_cursor_seek(kv_cursor *cursor, const kv_node *root, const uint8_t *key, size_t key_length) {
  cursor->depth = 0;
  const kv_node *node = root;
  while (node != NULL) {
    bool found;
    uint32_t index = kv_node_search(node, key, key_length, &found);
    assert(cursor->depth < KV_MAX_HEIGHT);
    cursor->frames[cursor->depth].node = node;
    cursor->frames[cursor->depth].index = index;
    cursor->depth++;
    if (found || node->is_leaf) {
      return;
    }
    node = node->children[index];
  }
}

const kv_item *kv_cursor_next(kv_cursor *cursor) {
  while (cursor->depth > 0) {
    const kv_node *node = cursor->frames[cursor->depth - 1].node;
    uint32_t *index = &cursor->frames[cursor->depth - 1].index;
    if (*index < node->count) {
      const kv_item *item = node->items[*index];
      (*index)++;
      if (!node->is_leaf) {
        push_leftmost(cursor, node->children[*index]);
      }
      return item;
    }
    cursor->depth--;
  }
  return NULL;
}

/* ---- Bulk build ----------------------------------------------------------- */

/* Most items a tree of this height holds: (MAX + 1)^height - 1. */
static uint64_t subtree_capacity(uint32_t height) {
  uint64_t capacity = 1;
  for (uint32_t i = 0; i < height; i++) {
    if (capacity > UINT64_MAX / (KV_NODE_MAX_ITEMS + 1)) {
      return UINT64_MAX;
    }
    capacity *= KV_NODE_MAX_ITEMS + 1;
  }
  return capacity - 1;
}

/* Fewest items a non-root subtree of this height holds: (MIN + 1)^height - 1.
 * Only the assertions use it, which a build with NDEBUG compiles out. */
__attribute__((unused)) static uint64_t subtree_minimum(uint32_t height) {
  uint64_t minimum = 1;
  for (uint32_t i = 0; i < height; i++) {
    minimum *= KV_NODE_MIN_ITEMS + 1;
  }
  return minimum - 1;
}

static int build_leaf(kv_heap *heap, kv_item *const *items, uint64_t count, kv_node **out) {
  assert(count <= KV_NODE_MAX_ITEMS);
  kv_node *leaf = kv_node_allocate(heap, true);
  if (leaf == NULL) {
    return KV_E_NOMEM;
  }
  for (uint64_t i = 0; i < count; i++) {
    leaf->items[i] = items[i];
    kv_item_retain(items[i]);
  }
  leaf->count = (uint16_t)count;
  kv_node_rebuild_prefix(leaf);
  *out = leaf;
  return 0;
}

/* Releases what a failed build of node had placed: `built` children and
 * the items between them. */
static void build_undo(kv_heap *heap, kv_node *node, uint64_t built) {
  for (uint64_t i = 0; i < built; i++) {
    kv_item_release(heap, node->items[i]);
    kv_node_release(heap, node->children[i]);
  }
  node->count = 0;
  kv_node_recycle(heap, node);
}

static int build_subtree(kv_heap *heap, kv_item *const *items, uint64_t count, uint32_t height,
                         bool is_root, kv_node **out) {
  assert(count <= subtree_capacity(height));
  assert(is_root || count >= subtree_minimum(height));
  if (height == 1) {
    return build_leaf(heap, items, count, out);
  }
  kv_node *node = kv_node_allocate(heap, false);
  if (node == NULL) {
    return KV_E_NOMEM;
  }
  const uint64_t child_capacity = subtree_capacity(height - 1);
  uint64_t children = (count + 1 + child_capacity) / (child_capacity + 1);
  const uint64_t least = is_root ? 2 : KV_NODE_MIN_ITEMS + 1;
  children = children < least ? least : children;
  assert(children <= KV_NODE_MAX_ITEMS + 1);
  const uint64_t spread = count - (children - 1); /* items below the children */
  uint64_t position = 0;
  for (uint64_t c = 0; c < children; c++) {
    uint64_t share = spread / children + (c < spread % children ? 1 : 0);
    int rc = build_subtree(heap, items + position, share, height - 1, false, &node->children[c]);
    if (rc != 0) {
      build_undo(heap, node, c);
      return rc;
    }
    position += share;
    if (c + 1 < children) {
      node->items[c] = items[position];
      kv_item_retain(items[position]);
      position++;
    }
  }
  assert(position == count);
  node->count = (uint16_t)(children - 1);
  kv_node_rebuild_prefix(node);
  *out = node;
  return 0;
}

int kv_tree_build(kv_heap *heap, kv_tree *tree, kv_item *const *items, uint64_t count) {
  tree->root = NULL;
  tree->count = 0;
  tree->height = 0;
  if (count == 0) {
    return 0;
  }
  uint32_t height = 1;
  while (subtree_capacity(height) < count) {
    height++;
  }
  assert(height <= KV_MAX_HEIGHT);
  kv_node *root = NULL;
  int rc = build_subtree(heap, items, count, height, true, &root);
  if (rc != 0) {
    return rc;
  }
  tree->root = root;
  tree->count = count;
  tree->height = height;
  return 0;
}
