/*
 * kv_tree.c - the copy-on-write B-tree under the KV store: node search,
 * insert, remove, and the node reserve that keeps a started change from
 * failing halfway.
 *
 * Copy on write: a change walks from the root and makes each node on its
 * path exclusive before touching it - a node still shared (reference count
 * > 1) is copied, the copy takes a reference to each of its items and
 * children, and the parent (already exclusive) is pointed at the copy.
 * Because the walk is top-down, a node is only ever changed while every
 * node above it is exclusive, i.e. while no pinned version can reach it.
 *
 * Shape: the classic B-tree with items in internal nodes. Insert descends,
 * inserts in a leaf, and splits overflowing nodes (MAX + 1 items) on the
 * way back up; remove takes the item out of a leaf (an item found higher
 * up is replaced by its predecessor) and on the way back up mends a child
 * below MIN by rotating an item through the parent or merging two siblings.
 *
 * Invariants (kv_check.c verifies them): keys strictly increase in order;
 * every leaf is at depth height; non-root nodes hold MIN..MAX items, the
 * root 1..MAX; every key of a node begins with the node's prefix and its
 * window matches; reference counts equal the references that exist.
 */
#include <stdlib.h>

#include "engine/kv_internal.h"

/* ---- Node reserve --------------------------------------------------------- */

static void node_init(kv_node *node, bool is_leaf) {
  node->reference_count = 1;
  node->count = 0;
  node->is_leaf = is_leaf;
  node->prefix_length = 0;
}

kv_node *kv_node_allocate(kv_heap *heap, bool is_leaf) {
  size_t bytes = is_leaf ? KV_LEAF_BYTES : KV_INTERNAL_BYTES;
  kv_node *node = malloc(bytes);
  if (node == NULL) {
    return NULL;
  }
  heap->memory_bytes += bytes;
  node_init(node, is_leaf);
  return node;
}

static void node_free(kv_heap *heap, kv_node *node) {
  size_t bytes = node->is_leaf ? KV_LEAF_BYTES : KV_INTERNAL_BYTES;
  assert(heap->memory_bytes >= bytes);
  heap->memory_bytes -= bytes;
  free(node);
}

void kv_node_recycle(kv_heap *heap, kv_node *node) {
  unsigned kind = node->is_leaf ? 0 : 1;
  if (heap->free_count[kind] >= KV_RESERVE_MAX_NODES) {
    node_free(heap, node);
    return;
  }
  node->reference_count = 0;
  node->next_free = heap->free_nodes[kind];
  heap->free_nodes[kind] = node;
  heap->free_count[kind]++;
}

/* A node from the reserve: the caller reserved it, so it is there. */
static kv_node *node_take(kv_heap *heap, bool is_leaf) {
  unsigned kind = is_leaf ? 0 : 1;
  kv_node *node = heap->free_nodes[kind];
  assert(node != NULL && heap->free_count[kind] > 0);
  heap->free_nodes[kind] = node->next_free;
  heap->free_count[kind]--;
  node_init(node, is_leaf);
  return node;
}

/*
 * An insert at height h takes at most 2 leaves (a path copy and a split)
 * and 2h - 1 internal nodes (path copies, splits, a new root); a removal 2
 * leaves and 2h - 3 internal nodes (path copies and siblings it changes).
 */
void kv_reservation_add(kv_reservation *reservation, const kv_tree *tree, uint32_t operations) {
  reservation->nodes[0] += 2 * operations;
  reservation->nodes[1] += (2 * tree->height + 1) * operations;
}

int kv_heap_reserve(kv_heap *heap, const kv_reservation *reservation) {
  for (unsigned kind = 0; kind < 2; kind++) {
    assert(reservation->nodes[kind] <= KV_RESERVE_MAX_NODES);
    while (heap->free_count[kind] < reservation->nodes[kind]) {
      kv_node *node = kv_node_allocate(heap, kind == 0);
      if (node == NULL) {
        return KV_E_NOMEM;
      }
      kv_node_recycle(heap, node);
    }
  }
  return 0;
}

void kv_heap_drain(kv_heap *heap) {
  for (unsigned kind = 0; kind < 2; kind++) {
    while (heap->free_nodes[kind] != NULL) {
      kv_node *node = heap->free_nodes[kind];
      heap->free_nodes[kind] = node->next_free;
      node->is_leaf = kind == 0;
      node_free(heap, node);
    }
    heap->free_count[kind] = 0;
  }
}

void kv_node_release(kv_heap *heap, kv_node *node) {
  assert(node->reference_count > 0);
  if (--node->reference_count > 0) {
    return;
  }
  for (uint32_t i = 0; i < node->count; i++) {
    kv_item_release(heap, node->items[i]);
  }
  if (!node->is_leaf) {
    for (uint32_t i = 0; i <= node->count; i++) {
      kv_node_release(heap, node->children[i]);
    }
  }
  kv_node_recycle(heap, node);
}

void kv_tree_release(kv_heap *heap, kv_tree *tree) {
  if (tree->root != NULL) {
    kv_node_release(heap, tree->root);
  }
  tree->root = NULL;
  tree->count = 0;
  tree->height = 0;
}

/* ---- Prefixes and windows ------------------------------------------------- */

static uint64_t window_of(const uint8_t *bytes, size_t length) {
  if (length >= 8) {
    return kv_load_u64_big_endian(bytes);
  }
  uint8_t padded[8] = {0};
  if (length > 0) {
    memcpy(padded, bytes, length);
  }
  return kv_load_u64_big_endian(padded);
}

uint64_t kv_node_window(const kv_node *node, const uint8_t *key, size_t key_length) {
  assert(key_length >= node->prefix_length);
  return window_of(key + node->prefix_length, key_length - node->prefix_length);
}

static bool node_shares_prefix(const kv_node *node, const uint8_t *key, size_t key_length) {
  return key_length >= node->prefix_length &&
         (node->prefix_length == 0 || memcmp(key, node->prefix, node->prefix_length) == 0);
}

static size_t common_length(const uint8_t *a, size_t a_length, const uint8_t *b, size_t b_length) {
  size_t limit = a_length < b_length ? a_length : b_length;
  size_t i = 0;
  while (i < limit && a[i] == b[i]) {
    i++;
  }
  return i;
}

static void node_rewrite_windows(kv_node *node) {
  for (uint32_t i = 0; i < node->count; i++) {
    const kv_item *item = node->items[i];
    node->windows[i] = kv_node_window(node, kv_item_key(item), item->key_length);
  }
}

/* The exact shared prefix: that of the first and last keys, as keys are
 * sorted. */
static size_t node_exact_prefix(const kv_node *node) {
  const kv_item *first = node->items[0];
  const kv_item *last = node->items[node->count - 1];
  size_t length =
      common_length(kv_item_key(first), first->key_length, kv_item_key(last), last->key_length);
  return length < KV_NODE_PREFIX_BYTES ? length : KV_NODE_PREFIX_BYTES;
}

void kv_node_rebuild_prefix(kv_node *node) {
  if (node->count == 0) {
    node->prefix_length = 0;
    return;
  }
  node->prefix_length = (uint8_t)node_exact_prefix(node);
  memcpy(node->prefix, kv_item_key(node->items[0]), node->prefix_length);
  node_rewrite_windows(node);
}

/* Lengthens (or shortens) the prefix to the exact one when it changed; the
 * windows of a node whose items all came from one node stay valid
 * otherwise. */
static void node_fit_prefix(kv_node *node) {
  if (node->count > 0 && node_exact_prefix(node) != node->prefix_length) {
    kv_node_rebuild_prefix(node);
  }
}

/* Puts item in slot index; shortens the prefix if the key leaves it. */
static void node_place(kv_node *node, uint32_t index, kv_item *item) {
  const uint8_t *key = kv_item_key(item);
  node->items[index] = item;
  if (node_shares_prefix(node, key, item->key_length)) {
    node->windows[index] = kv_node_window(node, key, item->key_length);
    return;
  }
  node->prefix_length =
      (uint8_t)common_length(node->prefix, node->prefix_length, key, item->key_length);
  node_rewrite_windows(node);
}

/* ---- Search --------------------------------------------------------------- */

uint32_t kv_node_search(const kv_node *node, const uint8_t *key, size_t key_length, bool *found) {
  *found = false;
  const size_t prefix = node->prefix_length;
  if (prefix > 0) {
    size_t shared = key_length < prefix ? key_length : prefix;
    int order = shared == 0 ? 0 : memcmp(key, node->prefix, shared);
    if (order < 0 || (order == 0 && key_length < prefix)) {
      return 0; /* below every key of the node */
    }
    if (order > 0) {
      return node->count; /* above every key */
    }
  }
  const uint64_t window = window_of(key + prefix, key_length - prefix);
  uint32_t low = 0;
  uint32_t high = node->count;
  while (low < high) {
    uint32_t middle = (low + high) / 2;
    uint64_t other = node->windows[middle];
    int order;
    if (other != window) {
      order = other < window ? -1 : 1;
    } else {
      const kv_item *item = node->items[middle];
      order = kv_compare_keys(kv_item_key(item) + prefix, item->key_length - prefix, key + prefix,
                              key_length - prefix);
    }
    if (order < 0) {
      low = middle + 1;
    } else if (order > 0) {
      high = middle;
    } else {
      *found = true;
      return middle;
    }
  }
  return low;
}

kv_item *kv_tree_find(const kv_tree *tree, const uint8_t *key, size_t key_length) {
  const kv_node *node = tree->root;
  while (node != NULL) {
    bool found;
    uint32_t index = kv_node_search(node, key, key_length, &found);
    if (found) {
      return node->items[index];
    }
    if (node->is_leaf) {
      return NULL;
    }
    node = node->children[index];
    __builtin_prefetch(node);
  }
  return NULL;
}

kv_item *kv_tree_first(const kv_tree *tree) {
  const kv_node *node = tree->root;
  if (node == NULL) {
    return NULL;
  }
  while (!node->is_leaf) {
    node = node->children[0];
  }
  return node->items[0];
}

/* ---- Copy on write -------------------------------------------------------- */

static kv_node *node_copy(kv_heap *heap, const kv_node *node) {
  kv_node *copy = node_take(heap, node->is_leaf);
  copy->count = node->count;
  copy->prefix_length = node->prefix_length;
  memcpy(copy->prefix, node->prefix, node->prefix_length);
  memcpy(copy->windows, node->windows, node->count * sizeof(node->windows[0]));
  memcpy(copy->items, node->items, node->count * sizeof(node->items[0]));
  for (uint32_t i = 0; i < node->count; i++) {
    kv_item_retain(copy->items[i]);
  }
  if (!node->is_leaf) {
    memcpy(copy->children, node->children, (node->count + 1u) * sizeof(node->children[0]));
    for (uint32_t i = 0; i <= node->count; i++) {
      kv_node_retain(copy->children[i]);
    }
  }
  return copy;
}

/* Makes *slot exclusive: the holder of slot is itself exclusive. */
static kv_node *exclusive(kv_heap *heap, kv_node **slot) {
  kv_node *node = *slot;
  if (node->reference_count == 1) {
    return node;
  }
  kv_node *copy = node_copy(heap, node);
  node->reference_count--; /* still > 0: a pinned version holds it */
  *slot = copy;
  return copy;
}

static kv_node *exclusive_child(kv_heap *heap, kv_node *parent, uint32_t index) {
  assert(parent->reference_count == 1 && !parent->is_leaf && index <= parent->count);
  return exclusive(heap, &parent->children[index]);
}

kv_item **kv_tree_writable_slot(kv_heap *heap, kv_tree *tree, const uint8_t *key,
                                size_t key_length) {
  kv_node *node = exclusive(heap, &tree->root);
  for (;;) {
    bool found;
    uint32_t index = kv_node_search(node, key, key_length, &found);
    if (found) {
      return &node->items[index];
    }
    assert(!node->is_leaf); /* the caller checked the key is present */
    node = exclusive_child(heap, node, index);
  }
}

/* ---- Insert --------------------------------------------------------------- */

/* Inserts item at index; in an internal node right_child goes after it. */
static void node_insert_at(kv_node *node, uint32_t index, kv_item *item, kv_node *right_child) {
  const uint32_t count = node->count;
  assert(count <= KV_NODE_MAX_ITEMS && index <= count);
  memmove(&node->items[index + 1], &node->items[index], (count - index) * sizeof(kv_item *));
  memmove(&node->windows[index + 1], &node->windows[index], (count - index) * sizeof(uint64_t));
  if (!node->is_leaf) {
    memmove(&node->children[index + 2], &node->children[index + 1],
            (count - index) * sizeof(kv_node *));
    node->children[index + 1] = right_child;
  }
  node->count = (uint16_t)(count + 1);
  node_place(node, index, item);
}

/* Splits the overflowing child at index: MIN items stay, the middle one
 * moves up, MIN + 1 go to a new right sibling. */
static void node_split_child(kv_heap *heap, kv_node *parent, uint32_t index) {
  kv_node *left = parent->children[index];
  assert(left->reference_count == 1 && left->count == KV_NODE_MAX_ITEMS + 1);
  kv_node *right = node_take(heap, left->is_leaf);
  const uint32_t kept = KV_NODE_MIN_ITEMS;
  const uint32_t moved = left->count - kept - 1;
  right->prefix_length = left->prefix_length;
  memcpy(right->prefix, left->prefix, left->prefix_length);
  memcpy(right->items, &left->items[kept + 1], moved * sizeof(kv_item *));
  memcpy(right->windows, &left->windows[kept + 1], moved * sizeof(uint64_t));
  if (!left->is_leaf) {
    memcpy(right->children, &left->children[kept + 1], (moved + 1) * sizeof(kv_node *));
  }
  right->count = (uint16_t)moved;
  kv_item *middle = left->items[kept];
  left->count = (uint16_t)kept;
  node_fit_prefix(left);
  node_fit_prefix(right);
  node_insert_at(parent, index, middle, right);
  node_fit_prefix(parent);
}

static kv_item *subtree_insert(kv_heap *heap, kv_node *node, kv_item *item) {
  bool found;
  uint32_t index = kv_node_search(node, kv_item_key(item), item->key_length, &found);
  if (found) {
    kv_item *old = node->items[index];
    node->items[index] = item; /* same key: same window */
    return old;
  }
  if (node->is_leaf) {
    node_insert_at(node, index, item, NULL);
    return NULL;
  }
  kv_node *child = exclusive_child(heap, node, index);
  kv_item *old = subtree_insert(heap, child, item);
  if (child->count > KV_NODE_MAX_ITEMS) {
    node_split_child(heap, node, index);
  }
  return old;
}

kv_item *kv_tree_put(kv_heap *heap, kv_tree *tree, kv_item *item) {
  if (tree->root == NULL) {
    kv_node *leaf = node_take(heap, true);
    node_insert_at(leaf, 0, item, NULL);
    node_fit_prefix(leaf);
    tree->root = leaf;
    tree->height = 1;
    tree->count = 1;
    return NULL;
  }
  kv_node *root = exclusive(heap, &tree->root);
  kv_item *old = subtree_insert(heap, root, item);
  if (root->count > KV_NODE_MAX_ITEMS) {
    kv_node *new_root = node_take(heap, false);
    new_root->children[0] = root;
    node_split_child(heap, new_root, 0);
    tree->root = new_root;
    tree->height++;
    assert(tree->height <= KV_MAX_HEIGHT);
  }
  if (old == NULL) {
    tree->count++;
  }
  return old;
}

/* ---- Remove --------------------------------------------------------------- */

/* Moves the last item of the left sibling up and the parent's item down
 * into the front of child index. */
static void rotate_from_left(kv_heap *heap, kv_node *parent, uint32_t index) {
  kv_node *left = exclusive_child(heap, parent, index - 1);
  kv_node *child = parent->children[index];
  assert(child->reference_count == 1);
  const uint32_t count = child->count;
  memmove(&child->items[1], &child->items[0], count * sizeof(kv_item *));
  memmove(&child->windows[1], &child->windows[0], count * sizeof(uint64_t));
  if (!child->is_leaf) {
    memmove(&child->children[1], &child->children[0], (count + 1) * sizeof(kv_node *));
    child->children[0] = left->children[left->count];
  }
  child->count = (uint16_t)(count + 1);
  node_place(child, 0, parent->items[index - 1]);
  node_place(parent, index - 1, left->items[left->count - 1]);
  left->count--;
}

/* Moves the parent's item down to the end of child index and the first
 * item of the right sibling up. */
static void rotate_from_right(kv_heap *heap, kv_node *parent, uint32_t index) {
  kv_node *child = parent->children[index];
  kv_node *right = exclusive_child(heap, parent, index + 1);
  assert(child->reference_count == 1);
  const uint32_t count = child->count;
  if (!child->is_leaf) {
    child->children[count + 1] = right->children[0];
  }
  child->count = (uint16_t)(count + 1);
  node_place(child, count, parent->items[index]);
  node_place(parent, index, right->items[0]);
  const uint32_t left_over = right->count - 1u;
  memmove(&right->items[0], &right->items[1], left_over * sizeof(kv_item *));
  memmove(&right->windows[0], &right->windows[1], left_over * sizeof(uint64_t));
  if (!right->is_leaf) {
    memmove(&right->children[0], &right->children[1], (left_over + 1) * sizeof(kv_node *));
  }
  right->count = (uint16_t)left_over;
}

/* Merges child index + 1 and the parent's item index into child index. */
static void merge_children(kv_heap *heap, kv_node *parent, uint32_t index) {
  kv_node *left = exclusive_child(heap, parent, index);
  kv_node *right = exclusive_child(heap, parent, index + 1);
  const uint32_t count = left->count;
  assert(count + 1u + right->count <= KV_NODE_MAX_ITEMS);
  left->items[count] = parent->items[index];
  memcpy(&left->items[count + 1], right->items, right->count * sizeof(kv_item *));
  if (!left->is_leaf) {
    memcpy(&left->children[count + 1], right->children, (right->count + 1u) * sizeof(kv_node *));
  }
  left->count = (uint16_t)(count + 1u + right->count);
  kv_node_rebuild_prefix(left); /* windows came from two nodes */
  kv_node_recycle(heap, right); /* its contents now belong to left */
  const uint32_t after = parent->count - index - 1u;
  memmove(&parent->items[index], &parent->items[index + 1], after * sizeof(kv_item *));
  memmove(&parent->windows[index], &parent->windows[index + 1], after * sizeof(uint64_t));
  memmove(&parent->children[index + 1], &parent->children[index + 2], after * sizeof(kv_node *));
  parent->count--;
}

static void mend_child(kv_heap *heap, kv_node *parent, uint32_t index) {
  if (parent->children[index]->count >= KV_NODE_MIN_ITEMS) {
    return;
  }
  if (index > 0 && parent->children[index - 1]->count > KV_NODE_MIN_ITEMS) {
    rotate_from_left(heap, parent, index);
  } else if (index < parent->count && parent->children[index + 1]->count > KV_NODE_MIN_ITEMS) {
    rotate_from_right(heap, parent, index);
  } else {
    merge_children(heap, parent, index > 0 ? index - 1 : index);
  }
}

static kv_item *subtree_remove_last(kv_heap *heap, kv_node *node) {
  if (node->is_leaf) {
    node->count--;
    return node->items[node->count];
  }
  const uint32_t index = node->count;
  kv_node *child = exclusive_child(heap, node, index);
  kv_item *last = subtree_remove_last(heap, child);
  mend_child(heap, node, index);
  return last;
}

static kv_item *subtree_remove(kv_heap *heap, kv_node *node, const uint8_t *key,
                               size_t key_length) {
  bool found;
  uint32_t index = kv_node_search(node, key, key_length, &found);
  if (node->is_leaf) {
    assert(found); /* the caller checked the key is present */
    kv_item *removed = node->items[index];
    const uint32_t after = node->count - index - 1u;
    memmove(&node->items[index], &node->items[index + 1], after * sizeof(kv_item *));
    memmove(&node->windows[index], &node->windows[index + 1], after * sizeof(uint64_t));
    node->count--;
    return removed;
  }
  kv_node *child = exclusive_child(heap, node, index);
  kv_item *removed;
  if (found) {
    /* The predecessor (the largest key of the left subtree) takes the
     * removed item's place. */
    removed = node->items[index];
    node_place(node, index, subtree_remove_last(heap, child));
  } else {
    removed = subtree_remove(heap, child, key, key_length);
  }
  mend_child(heap, node, index);
  return removed;
}

kv_item *kv_tree_remove(kv_heap *heap, kv_tree *tree, const uint8_t *key, size_t key_length) {
  assert(tree->root != NULL);
  kv_node *root = exclusive(heap, &tree->root);
  kv_item *removed = subtree_remove(heap, root, key, key_length);
  tree->count--;
  if (root->count == 0) {
    /* An empty leaf root empties the tree; an internal root left with one
     * child hands it the root. */
    tree->root = root->is_leaf ? NULL : root->children[0];
    tree->height--;
    kv_node_recycle(heap, root);
  }
  return removed;
}
