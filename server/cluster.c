/*
 * cluster.c - the cluster map: which slots each group owns, which nodes hold
 * its replicas and which node leads it.
 *
 * Slots: group g (1-based, of G) owns [(g-1)*16384/G, g*16384/G), so the
 * ranges are contiguous, cover every slot once and differ in size by at
 * most one slot.
 *
 * Placement: with the N configured nodes sorted by id, group g starts on
 * the R nodes at indexes (g-1) mod N, (g) mod N, ... (g+R-2) mod N. Every
 * node computes the same from the same configuration, no agreement needed;
 * each node holds R*G/N groups (give or take one). The meta group is placed
 * like group 1. cluster_set_members() overrides a group's members.
 *
 * Concurrency: leaders are one atomic word per group (set from shard
 * threads, read from io threads, no ordering with anything else needed: a
 * stale leader only costs a MOVED or a forward that gets redirected).
 * Members are behind a per-group sequence lock (cluster_internal.h), so
 * the io threads' reads are a few loads and never wait for a writer.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/cluster_internal.h"
#include "server/slot.h"

/* ---- validation and lookup ---- */

static int compare_nodes_by_id(const void *left, const void *right) {
  uint64_t a = ((const server_node *)left)->id;
  uint64_t b = ((const server_node *)right)->id;
  return (a > b) - (a < b);
}

static bool config_is_valid(const server_config *config) {
  if (config->node_count == 0 || config->node_count > SERVER_MAX_NODES) {
    return false;
  }
  if (config->groups == 0 || config->groups > SLOT_COUNT) {
    return false;
  }
  if (config->replicas == 0 || config->replicas > config->node_count ||
      config->replicas > SERVER_MAX_REPLICAS) {
    return false;
  }
  return true;
}

/* Ids must be unique and not 0 (0 means "no leader known"). */
static bool sorted_ids_are_valid(const server_node *nodes, uint32_t count) {
  for (uint32_t i = 0; i < count; i++) {
    if (nodes[i].id == 0 || (i > 0 && nodes[i].id == nodes[i - 1].id)) {
      return false;
    }
  }
  return true;
}

uint32_t cluster_group_index(const cluster_map *map, uint64_t group) {
  if (group == SERVER_META_GROUP) {
    return CLUSTER_META_INDEX;
  }
  if (group == 0 || group > map->group_count) {
    return CLUSTER_NONE;
  }
  return (uint32_t)group;
}

uint32_t cluster_node_index(const cluster_map *map, uint64_t node) {
  uint32_t low = 0;
  uint32_t high = map->node_count;
  while (low < high) {
    uint32_t middle = low + (high - low) / 2;
    if (map->nodes[middle].id < node) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low < map->node_count && map->nodes[low].id == node ? low : CLUSTER_NONE;
}

/* ---- members (sequence lock) ---- */

static void store_members(cluster_group_members *slot, const uint64_t *members, uint32_t count) {
  uint32_t sequence = atomic_load_explicit(&slot->sequence, memory_order_relaxed);
  assert((sequence & 1u) == 0);
  atomic_store_explicit(&slot->sequence, sequence + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&slot->count, count, memory_order_relaxed);
  for (uint32_t i = 0; i < SERVER_MAX_REPLICAS; i++) {
    atomic_store_explicit(&slot->ids[i], i < count ? members[i] : 0, memory_order_relaxed);
  }
  atomic_store_explicit(&slot->sequence, sequence + 2, memory_order_release);
}

static uint32_t load_members(const cluster_group_members *slot, uint64_t *members) {
  for (;;) {
    uint32_t before = atomic_load_explicit(&slot->sequence, memory_order_acquire);
    if ((before & 1u) != 0) {
      continue; /* a writer is inside: it holds the lock for a few stores */
    }
    uint32_t count = atomic_load_explicit(&slot->count, memory_order_relaxed);
    for (uint32_t i = 0; i < SERVER_MAX_REPLICAS; i++) {
      members[i] = atomic_load_explicit(&slot->ids[i], memory_order_relaxed);
    }
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&slot->sequence, memory_order_relaxed) == before) {
      assert(count >= 1 && count <= SERVER_MAX_REPLICAS);
      return count;
    }
  }
}

/* The default placement: R nodes round-robin from (g-1) mod N. */
static void place_group(cluster_map *map, uint32_t index) {
  uint32_t start = index == CLUSTER_META_INDEX ? 0 : (index - 1) % map->node_count;
  uint64_t members[SERVER_MAX_REPLICAS];
  for (uint32_t r = 0; r < map->replica_count; r++) {
    members[r] = map->nodes[(start + r) % map->node_count].id;
  }
  store_members(&map->members[index], members, map->replica_count);
}

/* ---- lifecycle ---- */

int cluster_map_create(const server_config *config, cluster_map **out) {
  *out = NULL;
  if (!config_is_valid(config)) {
    return -EINVAL;
  }
  cluster_map *map = calloc(1, sizeof(*map));
  if (map == NULL) {
    return -ENOMEM;
  }
  map->local_node = config->node_id;
  map->group_count = config->groups;
  map->replica_count = config->replicas;
  map->node_count = config->node_count;
  memcpy(map->nodes, config->nodes, config->node_count * sizeof(server_node));
  qsort(map->nodes, map->node_count, sizeof(server_node), compare_nodes_by_id);
  if (!sorted_ids_are_valid(map->nodes, map->node_count) ||
      cluster_node_index(map, map->local_node) == CLUSTER_NONE) {
    free(map);
    return -EINVAL;
  }
  map->members = calloc(map->group_count + 1u, sizeof(*map->members));
  map->leaders = calloc(map->group_count + 1u, sizeof(*map->leaders));
  if (map->members == NULL || map->leaders == NULL || pthread_mutex_init(&map->writer_lock, NULL)) {
    free(map->members);
    free(map->leaders);
    free(map);
    return -ENOMEM;
  }
  for (uint32_t index = 0; index <= map->group_count; index++) {
    atomic_init(&map->leaders[index], 0);
    place_group(map, index);
  }
  *out = map;
  return 0;
}

void cluster_map_destroy(cluster_map *map) {
  if (map == NULL) {
    return;
  }
  pthread_mutex_destroy(&map->writer_lock);
  free(map->members);
  free(map->leaders);
  free(map);
}

/* ---- slots ---- */

uint32_t cluster_group_count(const cluster_map *map) {
  return map->group_count;
}

uint64_t cluster_group_of_slot(const cluster_map *map, uint32_t slot) {
  assert(slot < SLOT_COUNT);
  /* The largest k with floor(k*S/G) <= slot is ceil((slot+1)*G/S) - 1. */
  uint64_t groups = map->group_count;
  return ((uint64_t)(slot + 1) * groups - 1) / SLOT_COUNT + 1;
}

void cluster_group_slots(const cluster_map *map, uint64_t group, uint32_t *first, uint32_t *last) {
  assert(group >= 1 && group <= map->group_count);
  uint64_t groups = map->group_count;
  *first = (uint32_t)((group - 1) * SLOT_COUNT / groups);
  *last = (uint32_t)(group * SLOT_COUNT / groups - 1);
}

/* ---- members and leaders ---- */

uint32_t cluster_members(cluster_map *map, uint64_t group, uint64_t *members) {
  uint32_t index = cluster_group_index(map, group);
  if (index == CLUSTER_NONE) {
    return 0;
  }
  return load_members(&map->members[index], members);
}

bool cluster_is_member(cluster_map *map, uint64_t group, uint64_t node) {
  uint64_t members[SERVER_MAX_REPLICAS];
  uint32_t count = cluster_members(map, group, members);
  for (uint32_t i = 0; i < count; i++) {
    if (members[i] == node) {
      return true;
    }
  }
  return false;
}

void cluster_set_members(cluster_map *map, uint64_t group, const uint64_t *members,
                         uint32_t count) {
  uint32_t index = cluster_group_index(map, group);
  assert(index != CLUSTER_NONE);
  assert(count >= 1 && count <= SERVER_MAX_REPLICAS);
  for (uint32_t i = 0; i < count; i++) {
    assert(members[i] != 0);
  }
  pthread_mutex_lock(&map->writer_lock);
  store_members(&map->members[index], members, count);
  pthread_mutex_unlock(&map->writer_lock);
}

void cluster_set_leader(cluster_map *map, uint64_t group, uint64_t leader) {
  uint32_t index = cluster_group_index(map, group);
  if (index == CLUSTER_NONE) {
    return; /* a group this map does not route to: nothing to remember */
  }
  atomic_store_explicit(&map->leaders[index], leader, memory_order_relaxed);
}

uint64_t cluster_leader(const cluster_map *map, uint64_t group) {
  uint32_t index = cluster_group_index(map, group);
  if (index == CLUSTER_NONE) {
    return 0;
  }
  return atomic_load_explicit(&map->leaders[index], memory_order_relaxed);
}

void cluster_node_name(uint64_t node, char name[41]) {
  /* 24 zeros, then the id as 16 hex digits: unique per id, readable, and
   * the same on every node. */
  snprintf(name, 41, "000000000000000000000000%016" PRIx64, node);
}
