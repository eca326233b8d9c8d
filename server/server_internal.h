/*
 * server_internal.h - the private structures of flotillad's client side:
 * the server, its io threads, clients and requests, shared by server.c,
 * client.c, commands.c, keyspace.c and admin.c.
 *
 * LIFETIMES
 *
 *   server     main() to exit; read-only once the io threads run, except
 *              for the atomics.
 *   io_thread  started and joined by main(); owns its ring, listener,
 *              forwarder, completion queue and clients.
 *   client     accepted -> closing (socket shut down, no more input) ->
 *              freed once no receive or send is in flight and its last
 *              request is done (requests point at their client).
 *   request    one command; created on the io thread, may travel to shard
 *              threads (engine callbacks) and back through the io thread's
 *              completion queue; freed on the io thread after its reply was
 *              copied to the client's output, or dropped if the client left.
 */
#ifndef FLOTILLA_SERVER_SERVER_INTERNAL_H
#define FLOTILLA_SERVER_SERVER_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/completion.h"
#include "engine/queue.h"
#include "server/resp.h"
#include "server/server.h"

#define SERVER_VERSION "0.1.0"
/* Requests of one client in flight at once; beyond it the client's input
 * waits until its replies drain (pipelines deeper than this gain nothing). */
#define CLIENT_MAX_PIPELINE 1024u
/* Receive buffer of an idle client; it grows only for a request that needs
 * more (the parser says how much) and shrinks back once it is done. */
#define CLIENT_RECEIVE_BYTES (16u * 1024u)
/* A graceful shutdown waits at most this long for requests in flight. */
#define SERVER_DRAIN_TIMEOUT_MS 10000u
/* Ring entries per io thread. */
#define SERVER_RING_ENTRIES 4096u
/* Bytes of key+value one multi-key engine command may carry (MSET is split
 * into batches of at most this many bytes and FL_KV_MAX_BATCH_KEYS keys). */
#define SERVER_BATCH_BYTES (512u * 1024u)
/* Room around a key and a value in one engine command (kind, flags, clock,
 * expiry, lengths): the engine's max_command_bytes is max-value-bytes plus
 * the longest key plus this, so every SET a client may send fits. */
#define SERVER_COMMAND_OVERHEAD_BYTES 1024u
/* Longest key the built-in store takes (engine/kv.h KV_MAX_KEY_BYTES). */
#define SERVER_MAX_KEY_BYTES (64u * 1024u)
/* Finished requests an io thread keeps for reuse, with their reply and
 * argument buffers when those are at most SERVER_SPARE_BUFFER_BYTES: a
 * command then allocates nothing, and the shard that writes its reply
 * does not call the allocator either. */
#define SERVER_SPARE_REQUESTS 1024u
#define SERVER_SPARE_BUFFER_BYTES 512u

typedef struct server server;
typedef struct io_thread io_thread;
typedef struct client client;
typedef struct request request;

struct server {
  const server_config *config;
  fl_engine *engine;
  cluster_map *map;
  const server_node *self;
  io_thread *threads;
  uint32_t thread_count;
  uint64_t started_ms; /* wall clock at start, for INFO uptime */
  _Atomic bool stopping;
  _Atomic uint32_t clients;
  _Atomic uint64_t next_client_id;
  _Atomic uint64_t connections_received;
  _Atomic uint64_t connections_rejected;
  _Atomic uint64_t commands_processed;
  _Atomic uint64_t commands_forwarded;
  struct meta *meta; /* the cluster map's keeper (meta.c); NULL before meta_start */
};

struct io_thread {
  server *server;
  uint32_t index;
  pthread_t thread;
  struct io_uring ring;
  int listen_fd;
  fl_completion accept_completion;
  bool accept_armed;
  fl_queue completions; /* requests finished on shard threads */
  uint64_t wake_value;
  fl_completion wake_completion;
  forwarder *forwarder;
  uint32_t inflight;       /* requests admitted and not yet finished */
  client *clients;         /* every live client of this thread (doubly linked) */
  client *dirty;           /* clients with replies to move or input to resume */
  bool draining;           /* shutting down: no new input */
  bool input_paused;       /* some client stopped parsing at the in-flight bound */
  bool clean;              /* stopped with nothing in flight: its memory may go */
  request *spare_requests; /* freed requests kept for reuse (linked by next) */
  uint32_t spare_count;
};

/* The reply of a forwarded command, or of a part of a multi-key command. */
typedef struct request_part request_part;

typedef void (*request_done_fn)(request *r);

struct request {
  client *owner;
  request *next; /* the client's FIFO */
  resp_writer reply;
  bool done;       /* reply complete; may leave once it reaches the head */
  bool retried;    /* routed again once after a leadership error */
  uint8_t command; /* keyspace command id (keyspace.c) */
  int status;      /* engine status of a failed call, for the io thread */
  uint32_t slot;
  uint64_t group;
  /* Runs on the io thread when the request comes back from a shard or a
   * forward: it may re-route (retry) or assemble the reply. NULL: the
   * reply is complete. */
  request_done_fn on_io;
  /* A command waiting for the client's commands of the other kind before
   * it: started by request_finish of the last of them. */
  request_done_fn launch;
  bool is_key_command;
  bool is_write;
  /* A copy of the arguments (keyspace commands), valid for the request's
   * life: used to retry, to forward and to build the reply. */
  resp_argument *arguments;
  uint32_t argument_count;
  size_t arguments_bytes; /* allocated for `arguments` (kept when reused) */
  /* Multi-key commands: parts still running (any thread), their results. */
  _Atomic uint32_t parts_pending;
  uint32_t part_count;
  request_part *parts;
  void *results;         /* per key (MGET: values) */
  _Atomic int64_t total; /* DEL/EXISTS counts */
  /* Engine command settings kept for a retry. */
  uint32_t set_flags;
  uint64_t expire_at_ms;
  int64_t delta;
};

struct client {
  io_thread *thread;
  client *previous, *next;
  client *dirty_next;
  bool is_dirty;
  int fd;
  uint64_t id;
  char address[64];
  char name[128];
  /* input */
  char *input;
  size_t input_length;
  size_t input_capacity;
  resp_parser parser;
  bool receiving;
  fl_completion receive_completion;
  /* output: replies accumulate in `output` while `sending` is on the wire */
  resp_writer output;
  resp_writer sending;
  bool send_in_flight;
  fl_completion send_completion;
  /* requests in order */
  request *head, *tail;
  uint32_t pipeline; /* requests in the FIFO */
  /* Key commands started and not done, reads [0] and writes [1]: a
   * command waits for those of the other kind before it (see
   * request_launch), input stopping meanwhile. */
  uint32_t kind_pending[2];
  request *deferred;
  uint32_t protocol;
  bool closing;       /* no more input; close once the output is sent */
  bool close_now;     /* drop the output too (limit exceeded, error) */
  bool cluster_aware; /* asked for the map or sent READONLY/READWRITE */
  bool forwarder;     /* FLOTILLA FORWARDED: never forward its commands */
  bool read_only;     /* READONLY: reads may be served by a local replica */
  bool fd_closed;
  uint64_t created_ms;
  uint64_t commands;
};

/* ---- server.c ------------------------------------------------------- */

int server_start(server *s);
/* An SQE of the ring, submitting what is queued first if it is full. */
struct io_uring_sqe *server_get_sqe(struct io_uring *ring);
/* Graceful: stop accepting and reading, wait (bounded) for requests in
 * flight, close clients; joins the io threads. */
void server_stop(server *s);
uint64_t server_now_ms(void);
/* Marks the client for the end-of-iteration pass (flush, resume input). */
void client_mark_dirty(client *c);

/* ---- client.c --------------------------------------------------------- */

client *client_create(io_thread *t, int fd);
/* Submits a receive if the client may read. */
void client_arm_receive(client *c);
void client_on_receive(fl_completion *completion, int result, uint32_t flags);
void client_on_send(fl_completion *completion, int result, uint32_t flags);
/* Moves finished replies to the output, resumes input, submits a send,
 * frees the client once it is closed and idle. */
void client_service(client *c);
/* Stops input; the output already written is still sent. */
void client_close_after_reply(client *c);
/* Stops everything; pending output is dropped. */
void client_close_now(client *c);
bool client_idle(const client *c);

/* The writer for a reply given now: the output itself when no request is
 * waiting before it, else a new finished request's writer. NULL: out of
 * memory (the client is being closed). */
resp_writer *client_reply_writer(client *c);
/* A request that will finish later, appended to the client's FIFO and
 * counted against the io thread's bound. NULL: out of memory. */
request *request_create(client *c);
/* The request finished on its own io thread. */
void request_finish(request *r);
/* The request finished on a shard thread: hand it to its io thread. */
void request_finish_from_shard(request *r);
/* Copies the arguments into the request (keyspace commands). */
int request_copy_arguments(request *r, const resp_argument *arguments, uint32_t count);
/* Frees r, or keeps it (and its buffers) for the io thread's next one. */
void request_free(request *r);
/* Frees the io thread's spare requests (when it stops). */
void request_free_spares(io_thread *t);
/*
 * Starts the key command `r` with `launch(r)` now, or once the client's
 * earlier commands of the other kind (reads for a write, writes for a read)
 * are done, so every command of a pipeline sees the state its predecessors
 * left, as in Redis: a read never misses an earlier write nor sees a later
 * one. Reads overlap reads and writes overlap writes (the log keeps their
 * order within a group).
 */
void request_launch(request *r, bool is_write, request_done_fn launch);
/* Whether the io thread takes more commands now. */
bool io_thread_admits(const io_thread *t);

/* ---- commands.c ------------------------------------------------------- */

/* Runs one parsed command of `c`. The arguments are valid during the call. */
void command_dispatch(client *c, const resp_argument *arguments, uint32_t count);
bool argument_is(const resp_argument *argument, const char *text);
/* Redis's string2ll: strict base-10 int64. */
bool argument_to_int64(const resp_argument *argument, int64_t *value);
void info_write(client *c, resp_writer *w, const resp_argument *section);

/* ---- keyspace.c ------------------------------------------------------- */

void keyspace_get(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_set(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_del(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_exists(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_incr(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_incrby(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_decr(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_decrby(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_append(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_strlen(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_mget(client *c, const resp_argument *arguments, uint32_t count);
void keyspace_mset(client *c, const resp_argument *arguments, uint32_t count);
/* Whether replies to this client redirect (MOVED) rather than forward. */
bool client_redirected(const client *c);
/* Writes a forwarded RESP2 reply for a client speaking `protocol`. */
void write_forwarded_reply(resp_writer *w, const char *reply, size_t length);

/* ---- admin.c ---------------------------------------------------------- */

void admin_flotilla(client *c, const resp_argument *arguments, uint32_t count);
void admin_dbsize(client *c, const resp_argument *arguments, uint32_t count);

/* ---- meta.c: the cluster map in the meta group, membership changes ----- */

/*
 * One thread per node keeps the cluster map in step with the meta group
 * (every META_REFRESH_MS) and runs admin membership operations, one at a
 * time, with blocking calls: to this node's engine, and to every node
 * (itself included) through the internal FLOTILLA subcommands on their
 * client ports. An operation's request is answered from that thread with
 * request_finish_from_shard().
 */
#define META_REFRESH_MS 250u

typedef struct meta meta;

typedef enum meta_operation_kind {
  META_ADD_REPLICA,
  META_REMOVE_REPLICA,
  META_MOVE_REPLICA,
  META_ADD_NODE,
  META_REMOVE_NODE,
} meta_operation_kind;

typedef struct meta_operation {
  meta_operation_kind kind;
  uint64_t group; /* replica operations */
  uint64_t node;  /* the node added, removed or moved to */
  uint64_t from;  /* MOVE-REPLICA: the node the replica leaves */
  request *request;
} meta_operation;

/* Starts the thread once the io threads serve (it calls its own node too). */
int meta_start(server *s);
/* Ends a running operation with an error, joins the thread. NULL is fine. */
void meta_stop(server *s);
/* Queues the operation: 0, or -EBUSY while another one runs on this node. */
int meta_submit(meta *m, const meta_operation *operation);
/* Internal FLOTILLA MAP: the map as this node's meta replica last read it. */
void meta_write_map(meta *m, resp_writer *w);
/* FLOTILLA NODES: [node id, "active" | "removed", replicas] per node. */
void meta_write_nodes(meta *m, resp_writer *w);
/* The meta group's key for `group`'s members ("members/<g>", "members/meta"). */
void meta_members_key(uint64_t group, char *key, size_t key_bytes);

#endif
