/*
 * cluster.h - in-process clusters of engines on loopback TCP for the engine
 * tests: each node a real fl_engine with its own data directory, shards and
 * sockets; helpers that wait for a condition with a deadline (polling the
 * engines' status, never sleeping in place of a condition), and blocking
 * wrappers of the asynchronous calls.
 */
#ifndef FLOTILLA_TESTS_ENGINE_CLUSTER_H
#define FLOTILLA_TESTS_ENGINE_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "flotilla.h"

#define CLUSTER_MAX_NODES 5

typedef struct cluster {
  uint32_t node_count;
  uint32_t shard_count;
  char directory[128];
  fl_node_address nodes[CLUSTER_MAX_NODES];
  fl_engine *engines[CLUSTER_MAX_NODES]; /* NULL while a node is down */
} cluster;

/* Starts node_count nodes (ids 1..n) with shard_count shards each on free
 * loopback ports, in a fresh directory. Returns 0 or an FL_E code. */
int cluster_start(cluster *c, uint32_t node_count, uint32_t shard_count);
/* Closes every node and removes the directory. */
void cluster_destroy(cluster *c);
/* Closes / reopens one node (1-based id) from its data directory. */
void cluster_stop_node(cluster *c, uint64_t node);
int cluster_start_node(cluster *c, uint64_t node);

/* Creates `group` on every running node with all nodes as voters. */
int cluster_create_group(cluster *c, uint64_t group);
/* Waits until the running nodes agree on one leader of `group`; returns it
 * (0 on timeout). */
uint64_t cluster_wait_leader(cluster *c, uint64_t group, uint32_t timeout_ms);
/* Waits until every running node has applied at least `index`. */
bool cluster_wait_applied(cluster *c, uint64_t group, uint64_t index, uint32_t timeout_ms);

/* Blocking KV calls on one node; statuses as the callbacks report them. */
int cluster_put(cluster *c, uint64_t node, uint64_t group, const char *key, const char *value,
                uint64_t *index);
int cluster_get(cluster *c, uint64_t node, uint64_t group, const char *key, fl_read_mode mode,
                char *value, uint32_t capacity);
/* Put on the current leader, retrying across leader changes until the
 * deadline: how a client writes. */
int cluster_put_retry(cluster *c, uint64_t group, const char *key, const char *value,
                      uint32_t timeout_ms);

uint64_t cluster_now_ms(void);
/* Pauses a polling loop between two looks at the state. */
void cluster_pause_ms(uint32_t ms);

#endif
