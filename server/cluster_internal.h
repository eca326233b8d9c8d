/*
 * cluster_internal.h - what cluster.c (placement, members, leaders) and
 * cluster_replies.c (the CLUSTER replies) share. Not for users of
 * server/server.h.
 */
#ifndef FLOTILLA_SERVER_CLUSTER_INTERNAL_H
#define FLOTILLA_SERVER_CLUSTER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "server/server.h"

/* Index of the meta group in the per-group arrays; data group g is at g. */
#define CLUSTER_META_INDEX 0u
/* A group index or node index that names nothing. */
#define CLUSTER_NONE UINT32_MAX

/*
 * The members of one group behind a sequence lock: readers (io threads,
 * any number) never block and never write shared memory; the writer (rare
 * admin commands, serialized by the map's mutex) makes the sequence odd
 * while it changes the fields. Every field is atomic so a reader racing a
 * writer reads torn values it then throws away, never undefined ones.
 */
typedef struct cluster_group_members {
  _Atomic uint32_t sequence; /* odd while being written */
  _Atomic uint32_t count;    /* 1 .. SERVER_MAX_REPLICAS */
  _Atomic uint64_t ids[SERVER_MAX_REPLICAS];
} cluster_group_members;

struct cluster_map {
  uint64_t local_node;
  uint32_t group_count;   /* data groups, 1 .. SLOT_COUNT */
  uint32_t replica_count; /* replicas per group in the default placement */
  uint32_t node_count;
  server_node nodes[SERVER_MAX_NODES]; /* sorted by id, ids unique and not 0 */
  pthread_mutex_t writer_lock;         /* serializes member changes */
  cluster_group_members *members;      /* [group_count + 1], meta group at 0 */
  _Atomic uint64_t *leaders;           /* [group_count + 1], meta group at 0; 0: unknown */
};

/* The index of `group` in the per-group arrays, or CLUSTER_NONE. */
uint32_t cluster_group_index(const cluster_map *map, uint64_t group);
/* The index of `node` in map->nodes, or CLUSTER_NONE. */
uint32_t cluster_node_index(const cluster_map *map, uint64_t node);

#endif
