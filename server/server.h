/*
 * server.h - the parts of flotillad and how they meet.
 *
 *   main.c       reads the configuration, opens the engine, makes sure this
 *                node's replicas exist, runs the server until SIGTERM.
 *   config.c     INI file (libinih) + command-line flags -> server_config.
 *   log.c        levelled log lines to stderr or a file (also the engine's).
 *   server.c     the client side: io threads, each with its own io_uring,
 *   client.c     listening socket (SO_REUSEPORT), clients, RESP parsing,
 *                requests answered in order, limits, graceful shutdown.
 *   commands.c   the command table and the commands that need no group
 *                (PING, ECHO, HELLO, SELECT, CLIENT, COMMAND, CONFIG, INFO...).
 *   keyspace.c   the commands on keys: slot -> group -> engine call, MOVED,
 *                TRYAGAIN, forwarding, multi-key commands.
 *   cluster.c    the cluster map: placement of groups on nodes, leaders,
 *                CLUSTER SLOTS/SHARDS/NODES, FLOTILLA admin commands.
 *   forward.c    connections from an io thread to other nodes' client ports
 *                carrying forwarded requests.
 *   meta.c       the cluster map kept in the meta group (refreshed on every
 *                node) and the membership admin operations, on a thread of
 *                its own.
 *
 * THREADS
 *
 * The engine's shard threads run Raft; flotillad adds io threads (config
 * io-threads) that own clients. A client belongs to one io thread for its
 * life. A command runs on its client's io thread; when it needs the engine
 * it calls an asynchronous fl_ function whose callback runs on a SHARD
 * thread. The callback writes the reply bytes into the request's own
 * writer and calls request_finish_from_shard(), which hands the request
 * back to the io thread through that thread's bounded MPSC queue (woken by
 * an eventfd read on the io thread's ring). Nothing else crosses threads.
 *
 * ORDER AND BOUNDS
 *
 * Every command a client sends becomes a request appended to the client's
 * FIFO; replies leave in that order whatever order requests finish in. An
 * io thread admits at most SERVER_MAX_INFLIGHT requests at once (it stops
 * parsing input while at the bound), so the completion queue, sized to
 * that bound, can never be full.
 */
#ifndef FLOTILLA_SERVER_SERVER_H
#define FLOTILLA_SERVER_SERVER_H

#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "flotilla.h"
#include "server/resp.h"

#define SERVER_MAX_NODES 64
/* Requests admitted at once per io thread (and the completion queue size). */
#define SERVER_MAX_INFLIGHT 65536u
/* Data groups are numbered 1..groups; the meta group has this id. */
#define SERVER_META_GROUP 0x4d455441ull /* "META" */

/* ---- configuration (config.c) ------------------------------------------ */

typedef struct server_node {
  uint64_t id;
  char host[64];
  uint16_t client_port; /* RESP */
  uint16_t peer_port;   /* the transport's base port: shard s on peer_port + s */
} server_node;

typedef enum server_redirect {
  SERVER_REDIRECT_AUTO = 0, /* MOVED once a client asked for the map (CLUSTER ...), else forward */
  SERVER_REDIRECT_FORWARD = 1,
  SERVER_REDIRECT_MOVED = 2,
} server_redirect;

typedef struct server_config {
  /* [server] */
  uint64_t node_id;
  uint64_t cluster_id;
  char data_dir[PATH_MAX];
  char bind[64]; /* default: this node's host in `nodes` */
  uint32_t io_threads;
  server_redirect redirect;
  /* [cluster] */
  server_node nodes[SERVER_MAX_NODES];
  uint32_t node_count;
  uint32_t groups;   /* data groups, default 64 */
  uint32_t replicas; /* replicas per group, default 3 (at most node_count) */
  /* [engine] */
  uint32_t shards; /* 0: one per core */
  uint32_t tick_ms;
  uint32_t election_ticks;
  uint32_t heartbeat_ticks;
  bool lease_read;
  fl_fsync_mode fsync_mode;
  uint32_t snapshot_entries;
  /* [limits] */
  uint32_t max_clients;
  uint64_t max_value_bytes;
  uint32_t max_arguments;
  uint32_t max_inline_bytes;
  uint64_t max_bulk_bytes;
  uint64_t client_output_limit;
  /* [log] */
  int log_level; /* 0 debug, 1 info, 2 warning, 3 error */
  char log_file[PATH_MAX];
} server_config;

/* 0: loaded; 1: --help or --version was printed (exit 0); -1: refused, with
 * `error` naming the option and what is wrong. */
int server_config_load(int argc, char **argv, server_config *config, char *error,
                       size_t error_bytes);
void server_config_usage(FILE *out);
const server_node *server_config_node(const server_config *config, uint64_t id);

/* ---- logging (log.c) --------------------------------------------------- */

int server_log_open(int level, const char *path); /* path "" or NULL: stderr */
void server_log_close(void);
/* Reopens the log file at `path` (after rotation); stderr stays stderr. */
int server_log_reopen(const char *path);
__attribute__((format(printf, 2, 3))) void server_log(int level, const char *format, ...);
/* fl_options.log */
void server_log_engine(void *context, int level, const char *message);

/* ---- the cluster map (cluster.c) ---------------------------------------- */

/*
 * Which groups exist, where their replicas live and which node leads each.
 * Slots map to groups in equal contiguous ranges (group g, 1-based, owns
 * slots [(g-1)*16384/G, g*16384/G)). Replicas of group g start on R nodes
 * chosen from the configured nodes (sorted by id) round-robin from node
 * (g-1) mod N, so every node computes the same placement; membership
 * changes made by admin commands are recorded in the meta group and
 * override it. Leaders are learned from the engine's on_leader callback
 * (cluster_set_leader, any thread) and from other nodes.
 *
 * Thread rules: the map is read from every io thread; members change only
 * under the map's own lock (rare); leaders are atomics.
 */
#define SERVER_MAX_REPLICAS 7

typedef struct cluster_map cluster_map;

int cluster_map_create(const server_config *config, cluster_map **out);
void cluster_map_destroy(cluster_map *map);
uint32_t cluster_group_count(const cluster_map *map);
uint64_t cluster_group_of_slot(const cluster_map *map, uint32_t slot);
void cluster_group_slots(const cluster_map *map, uint64_t group, uint32_t *first, uint32_t *last);
/* Fills up to SERVER_MAX_REPLICAS node ids; returns how many. */
uint32_t cluster_members(cluster_map *map, uint64_t group, uint64_t *members);
bool cluster_is_member(cluster_map *map, uint64_t group, uint64_t node);
void cluster_set_members(cluster_map *map, uint64_t group, const uint64_t *members, uint32_t count);
void cluster_set_leader(cluster_map *map, uint64_t group, uint64_t leader);
uint64_t cluster_leader(const cluster_map *map, uint64_t group); /* 0: unknown */
/* CLUSTER replies, in Redis Cluster's formats; a node leading a slot range
 * is its master, the other members its replicas. */
int cluster_write_slots(cluster_map *map, resp_writer *writer);
int cluster_write_shards(cluster_map *map, resp_writer *writer);
int cluster_write_nodes(cluster_map *map, resp_writer *writer);
int cluster_write_info(cluster_map *map, resp_writer *writer);
/* This node's 40-hex-digit Redis Cluster id (derived from the node id). */
void cluster_node_name(uint64_t node, char name[41]);

/*
 * Details of the map (cluster.c, cluster_replies.c):
 *   - create: -EINVAL unless 1..SERVER_MAX_NODES nodes with unique ids
 *     other than 0, config->node_id among them, groups 1..16384 and
 *     replicas 1..min(node_count, SERVER_MAX_REPLICAS); -ENOMEM.
 *   - the meta group (SERVER_META_GROUP) is placed like group 1; its
 *     members and leader are kept like any group's. Other group ids are
 *     unknown: cluster_members() gives 0, cluster_leader() 0, and
 *     cluster_set_leader() ignores them.
 *   - cluster_set_members(): group 1..G or the meta group, 1..
 *     SERVER_MAX_REPLICAS ids other than 0 (asserted: validate first).
 *     Readers never block (a sequence lock per group).
 *   - names: 24 zeros then the id in 16 lowercase hex digits
 *     (node 1: "0000000000000000000000000000000000000001").
 *   - replies: a group with no known leader is shown mastered by its first
 *     member; a leader or member the configuration does not name is left
 *     out. NODES and INFO are verbatim strings in RESP3 (bulk in RESP2),
 *     as Redis 7.0 sends them. Config epoch of a node: its position in id
 *     order + 1; current epoch: the node count. Each returns 0 or the
 *     writer's error (-ENOBUFS, -ENOMEM), or -ENOMEM for its own view.
 *   - redis-cli --cluster check also needs "cluster_enabled:1" in the
 *     "# Cluster" section of INFO.
 */

/* ---- forwarding (forward.c) -------------------------------------------- */

/*
 * One per io thread: a pipelined RESP connection to each other node's
 * client port, on the io thread's ring (SQEs carry fl_completion pointers,
 * common/completion.h). A forwarded request is sent as a multibulk; its
 * reply comes back whole (one complete RESP2 reply) through the callback,
 * on the io thread. The first command on a new connection is
 * "FLOTILLA FORWARDED", which tells the other node never to forward again
 * (it answers MOVED/TRYAGAIN instead), so a stale map cannot loop.
 * A lost connection fails its pending requests (status -ECONNRESET);
 * reconnects are attempted on the next send.
 */
struct io_uring;
typedef struct forwarder forwarder;
typedef void (*forward_reply_fn)(void *context, int status, const char *reply, size_t length);

int forwarder_create(struct io_uring *ring, const server_config *config, forwarder **out);
void forwarder_destroy(forwarder *f);
/* Queues the command for `node`; arguments are copied before the call
 * returns. -EINVAL for an unknown node, -ENOBUFS over the pending bound. */
int forward_send(forwarder *f, uint64_t node, const resp_argument *arguments, uint32_t count,
                 forward_reply_fn callback, void *context);
/* Submits what was queued; called once per io-thread loop iteration. */
void forwarder_flush(forwarder *f);

/*
 * Details of the forwarder (forward.c):
 *
 * create: resolves every other node's host:client_port once (getaddrinfo,
 *   so call it at start-up, not on a busy loop); connects lazily, on the
 *   first send to a node. -EINVAL for a bad configuration or limits,
 *   -ENOMEM. The forwarder belongs to the ring's thread: every call below
 *   and every callback happen on it.
 *
 * forward_send: 0, and the callback runs later exactly once (never from
 *   inside forward_send); or a negative errno and it never runs:
 *     -EINVAL        unknown node, this node itself, count 0;
 *     -EHOSTUNREACH  the node's host did not resolve at create;
 *     -ECONNREFUSED  the last connection to the node failed before its
 *                    handshake and the backoff (doubling from
 *                    backoff_min_ms to backoff_max_ms) has not passed;
 *     -ENOBUFS       max_pending requests awaiting replies, or the
 *                    encoded request would pass max_output_bytes;
 *     -ENOMEM, -ECANCELED (inside forwarder_destroy).
 *
 * callback(context, status, reply, length): status 0 and the whole raw
 *   reply (RESP2 as the other node sent it; any type, errors included),
 *   which points into the forwarder's buffer and is valid only during
 *   the call: copy what is kept. Otherwise reply is NULL and status is
 *     -ECONNRESET    the connection was lost (EOF, error) with the
 *                    request unanswered: it may or may not have run;
 *     -ECONNREFUSED  the connection could not be made (nothing ran);
 *     -EPROTO        the other node sent a malformed or oversized reply,
 *                    or refused the FLOTILLA FORWARDED handshake;
 *     -ECANCELED     forwarder_destroy() ran first.
 *   Callbacks may call forward_send() (also to the node that just
 *   failed), never forwarder_destroy().
 *
 * forwarder_destroy: call on the ring's thread while the ring still
 *   exists (before io_uring_queue_exit). It closes every connection,
 *   fails every pending request with -ECANCELED (callbacks run inside the
 *   call, so their contexts must still be alive), cancels its operations
 *   on the ring and waits for their completions, reaping the ring itself
 *   with fl_dispatch(): completions of other modules reaped meanwhile go
 *   to their own handlers, as in a loop iteration. On return nothing on
 *   the ring refers to the forwarder. NULL is ignored.
 */
typedef struct forward_limits {
  uint32_t max_pending;    /* requests awaiting a reply, per connection */
  size_t max_output_bytes; /* encoded requests the kernel has not taken, per connection */
  size_t max_reply_bytes;  /* one reply; a longer one closes the connection (-EPROTO) */
  uint32_t backoff_min_ms; /* wait after a connection failed before its handshake */
  uint32_t backoff_max_ms; /* the doubling wait stops growing here */
} forward_limits;

/* 65536 pending, 64 MiB output, 512 MiB replies, backoff 50 ms .. 2 s. */
forward_limits forward_limits_default(void);
/* forwarder_create() with other limits (NULL: the defaults). */
int forwarder_create_with_limits(struct io_uring *ring, const server_config *config,
                                 const forward_limits *limits, forwarder **out);

#endif
