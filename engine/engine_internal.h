/*
 * engine_internal.h - the engine's state, shared by its files:
 *
 *   engine.c    the public API: options, open/close, requests to shards
 *   shard.c     one shard thread: its io_uring loop, requests, ticks
 *   replica.c   one group's replica on a shard: the Raft driver
 *   machine.c   the state machine behind a replica (built-in KV or user)
 *   expiry.c    the leader's EXPIRE_SWEEP proposals, timed by a heap
 *   deadline.c  request_timeout_ms: calls past their deadline, by a heap
 *   network.c   Raft messages to and from the transport, batched per peer
 *   arena.c     per-iteration memory for entry bytes handed to Raft
 *
 * Threads: an fl_engine is shared; everything under a shard belongs to that
 * shard's thread, reached from outside only through its request queue.
 */
#ifndef FLOTILLA_ENGINE_INTERNAL_H
#define FLOTILLA_ENGINE_INTERNAL_H

#include <liburing.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/completion.h"
#include "engine/kv.h"
#include "engine/queue.h"
#include "flotilla.h"
#include "raft/raft.h"
#include "wal/wal.h"

/* ---- arena: bytes that must live until the replicas touched are advanced */

typedef struct arena_chunk arena_chunk;

typedef struct arena {
  arena_chunk *chunks; /* newest first; the first is kept across resets */
  size_t used;         /* in the newest chunk */
} arena;

void *arena_allocate(arena *a, size_t bytes);
/* Gives back the end of the newest allocation, `last`, keeping `keep` bytes
 * of it: a buffer sized for the worst case costs only what was used. */
void arena_shrink_last(arena *a, void *last, size_t keep);
/* Frees every chunk but one; everything handed out is gone. */
void arena_reset(arena *a);
void arena_release(arena *a);

/* ---- requests from other threads ------------------------------------- */

typedef enum request_type {
  REQUEST_PROPOSE,
  REQUEST_PROPOSE_BATCH,
  REQUEST_READ,
  REQUEST_QUERY,
  REQUEST_CREATE_GROUP,
  REQUEST_JOIN_GROUP,
  REQUEST_REMOVE_GROUP,
  REQUEST_LIST_GROUPS,
  REQUEST_STATUS,
  REQUEST_CHANGE,
  REQUEST_TRANSFER,
  REQUEST_STATS,
  REQUEST_FAULT,
  REQUEST_STOP,
} request_type;

/* One call into a shard. Asynchronous ones carry a callback; blocking ones
 * a semaphore the caller waits on and `result` to read after. The request
 * (and `data`, allocated with it) is freed by the shard for asynchronous
 * calls, by the caller for blocking ones. A batch of proposals is one
 * request of command_count commands: their lengths and contexts are
 * arrays in the same allocation, the commands' bytes follow one another
 * in `data`. */
typedef struct request {
  request_type type;
  uint64_t group;
  int result;
  sem_t *done; /* blocking calls only */
  fl_propose_callback propose_callback;
  fl_read_callback read_callback;
  void *context;
  uint64_t deadline_ms;    /* monotonic; 0: none (fl_options.request_timeout_ms) */
  uint32_t length;         /* of data */
  uint32_t command_count;  /* a batch */
  const uint32_t *lengths; /* a batch: command_count lengths */
  void *const *contexts;   /* a batch: command_count contexts */
  fl_read_mode read_mode;
  uint64_t node;           /* change, transfer */
  fl_change_type change;   /* change */
  const uint64_t *members; /* create */
  uint32_t member_count;
  void *out; /* status, list, stats */
  uint32_t out_capacity;
  uint32_t out_count;
  struct request *next; /* on a replica's proposal or read list */
  uint64_t read_index;  /* reads: the index to wait for */
  uint8_t data[];       /* command, key or query; a batch's commands */
} request;

/* Answers an asynchronous request that failed with status and frees it
 * (every command of a batch is answered); posts a blocking one. */
void request_fail(request *q, int status);

/* ---- a replica --------------------------------------------------------- */

typedef struct shard shard;
typedef struct replica replica;
typedef struct snapshot_save snapshot_save;
typedef struct snapshot_send snapshot_send;
typedef struct snapshot_receive snapshot_receive;

/* A min-heap of replicas by a time kept in each replica (replica_heap.c). */
typedef struct replica_heap {
  replica **items;
  uint32_t count;
  uint32_t capacity;
} replica_heap;

/* Which fields of struct replica one heap uses: a uint64_t key and a
 * uint32_t slot, REPLICA_HEAP_ABSENT while the replica is not in it. */
typedef struct replica_heap_kind {
  size_t key_offset;
  size_t slot_offset;
} replica_heap_kind;

#define REPLICA_HEAP_ABSENT UINT32_MAX

/* A proposal waiting for its entry to apply. */
typedef struct pending_proposal {
  uint64_t index;
  uint64_t term;
  fl_propose_callback callback;
  void *context;
  uint64_t deadline_ms; /* 0: none */
} pending_proposal;

/* A message the core wants sent only once a write is durable. */
typedef struct after_write {
  uint64_t write_id;
  fl_raft_message message; /* entries deep-copied after the struct */
  struct after_write *next;
} after_write;

/* A WAL completion of one Raft write. */
typedef struct write_ticket {
  wal_request request;
  struct shard *owner;
  uint64_t group;
  uint64_t generation; /* of the replica when written: stale after removal */
  uint64_t write_id;
  int result;
  struct write_ticket *next; /* on the shard's durable list */
} write_ticket;

/* What only a group with work in flight needs: allocated by the first
 * proposal, read or held message, freed when the group goes quiet (it is
 * empty then), so an idle group costs none of it. */
typedef struct replica_pending {
  pending_proposal *proposals; /* from this node, in index order (a ring) */
  uint32_t proposal_head;
  uint32_t proposal_count;
  uint32_t proposal_capacity;
  uint32_t batch_count; /* commands gathered this iteration */
  request *batch_head;  /* their requests */
  request *batch_tail;
  request *reads_waiting; /* ReadIndex asked, index not known yet */
  request *reads_ready;   /* index known, waiting for apply */
  after_write *after_write_head;
  after_write *after_write_tail;
} replica_pending;

/* One per group per node: what an idle group costs, so ordered to leave no
 * padding and holding only what every group needs (224 bytes: jemalloc's
 * 224-byte class; checked below). */
struct replica {
  uint64_t group;
  fl_raft *raft;
  shard *owner;
  fl_raft_storage storage;
  uint64_t snapshot_index; /* the newest snapshot (its conf: the WAL marker's) */
  uint64_t snapshot_term;
  uint64_t snapshot_retry_index; /* a failed save: none before this + snapshot_entries */
  void *machine;                 /* kv_store * or the user's state */
  uint64_t applied;
  uint64_t applied_term;
  uint64_t generation;
  replica_pending *pending;    /* NULL while nothing is in flight */
  snapshot_save *saving;       /* a snapshot being written */
  snapshot_send *sending;      /* streams to followers */
  snapshot_receive *receiving; /* a stream from the leader */
  replica *next_ready;
  replica *next_leader_report;
  uint64_t leader;
  uint64_t term;
  uint64_t reported_leader; /* what on_leader was last told */
  uint64_t reported_term;
  uint64_t expiry_due_ms;   /* the expiry heap's key: the store's next expiry (wall clock) */
  uint64_t deadline_due_ms; /* the deadline heap's key: <= every waiting call's deadline */
  /* Quiescence (shard.c): a quiet replica is not ticked. */
  uint32_t active_slot;   /* index in the shard's active array, or UINT32_MAX */
  uint32_t idle_ticks;    /* ticks without activity */
  uint32_t expiry_slot;   /* in the shard's expiry heap, or REPLICA_HEAP_ABSENT */
  uint32_t deadline_slot; /* in the shard's deadline heap, or REPLICA_HEAP_ABSENT */
  uint8_t role;           /* fl_raft_role */
  bool activity;          /* something happened since the last tick */
  bool snapshot_listed;
  bool ready;
  bool removed;              /* closing: what it triggers must not list it anywhere */
  bool leader_reported;      /* on_leader was told of it at least once (shard.c) */
  bool leader_report_listed; /* on the shard's leader report list */
  bool sweep_in_flight;      /* an EXPIRE_SWEEP of it is proposed (expiry.c) */
};
FL_STATIC_ASSERT(sizeof(struct replica) <= 224, "an idle group's replica fits 224 bytes");

/* ---- the group table: open addressing by group id -------------------- */

typedef struct replica_table {
  replica **slots;
  uint32_t capacity;
  uint32_t count;
} replica_table;

replica *replica_table_find(const replica_table *table, uint64_t group);
int replica_table_insert(replica_table *table, replica *r);
void replica_table_remove(replica_table *table, uint64_t group);
void replica_table_release(replica_table *table);

/* ---- network (network.c) ------------------------------------------------ */

typedef struct network network;

int network_open(shard *s);
void network_close(shard *s);
/* Queues one message for its peer (batched per peer until the flush). */
void network_send(shard *s, uint64_t group, const fl_raft_message *message);
/* Writes the batches of this iteration; called once per loop iteration. */
void network_flush(shard *s);
/* Time for reconnects and timeouts. */
void network_tick(shard *s, uint64_t now_ms);
/* Drops every frame to and from node (drop) or stops doing so. */
int network_set_fault(shard *s, uint64_t node, bool drop);
/* A small frame of its own type (snapshot acks): closes the peer's open
 * batch first, so the order of the normal class is kept. */
void network_send_frame(shard *s, uint64_t node, int type, const void *bytes, uint32_t length);
struct transport *network_transport(shard *s);
/* True while frames from node arrived within the election timeout. */
bool network_node_alive(const shard *s, uint64_t node);
bool network_is_idle(const shard *s);

/* ---- a shard ----------------------------------------------------------- */

struct fl_engine {
  fl_options options;
  fl_node_address *nodes;
  char *data_dir;
  int lock_fd; /* holds data_dir/LOCK (engine.c), -1 before */
  char *listen_host;
  fl_state_machine machine;
  bool custom_machine;
  fl_raft_options raft_options;
  uint32_t shard_count;
  shard **shards;
  atomic_bool closing;
};

struct shard {
  fl_engine *engine;
  uint32_t index;
  pthread_t thread;
  struct io_uring ring;
  fl_queue queue;
  wal *log;
  uint32_t wal_pipeline_depth; /* WAL batches in flight at once */
  bool holding_requests;       /* hold_requests (shard.c) began a hold */
  uint64_t hold_mark;          /* wal_completed_batches when the hold began */
  network *net;
  replica_table replicas;
  replica *ready_head;
  replica *ready_tail;
  arena scratch;
  wal_entry *read_entries; /* storage reads' index, copied out at once */
  uint64_t now_ms;
  uint64_t next_context; /* read ids */
  uint64_t generation;
  bool stopping;
  int failure; /* a fatal disk error: the shard refuses everything */
  sem_t started;
  int start_result;
  replica **snapshot_list; /* replicas with snapshot work (snapshot_listed) */
  uint32_t snapshot_count;
  uint32_t snapshot_capacity;
  replica **active; /* replicas that are ticked (not quiet) */
  uint32_t active_count;
  uint32_t active_capacity;
  uint64_t next_stream_id;
  uint32_t markers_since_collection;
  uint64_t last_collection_ms;
  write_ticket *durable_head; /* writes completed, for the loop to report */
  write_ticket *durable_tail;
  request *deferred; /* freed after this iteration's drains */
  bool queue_signaled;
  bool wal_signaled;
  bool tick_due;
  /* completions on the ring */
  fl_completion queue_wake;
  uint64_t queue_wake_value;
  fl_completion wal_wake;
  uint64_t wal_wake_value;
  fl_completion tick;
  struct __kernel_timespec tick_interval;
  fl_shard_stats stats;
  replica *leader_reports; /* replicas whose leader changed this iteration */
  /* The state machine restored from the last snapshot received, to verify
   * it, kept for its install (snapshot_transfer.c); NULL when none. */
  void *verified_state;
  uint64_t verified_group;
  uint64_t verified_index;
  replica_heap expiring;  /* by expiry_due_ms (expiry.c) */
  replica_heap deadlines; /* by deadline_due_ms (deadline.c) */
  /* recovery scratch */
  fl_raft_term_run *term_runs;
  uint32_t term_run_count;
  uint32_t term_run_capacity;
};

/* shard.c */
int shard_start(fl_engine *engine, uint32_t index, shard **out);
void shard_stop(shard *s);
/* Hands a request to the shard; false when its queue is full. */
bool shard_submit(shard *s, request *r);
/* The replica needs its updates drained this iteration. */
void shard_mark_ready(shard *s, replica *r);
/* The replica has snapshot work (saving, streaming) for the loop. */
void shard_mark_snapshot_work(shard *s, replica *r);
/* Something happened to the replica: it is ticked again if it was quiet. */
void shard_wake(shard *s, replica *r);
/* Every quiet replica led by node wakes (the node looks dead). */
void shard_wake_led_by(shard *s, uint64_t node);
uint32_t shard_of_group(const fl_engine *engine, uint64_t group);
/* The replica's known leader or term may have changed (or it is new):
 * fl_options.on_leader hears of it at the end of the iteration. */
void shard_note_leader(shard *s, replica *r);
/* The WAL batch size of every shard: holds the largest command (engine.c). */
uint32_t engine_wal_batch_bytes(const fl_options *options);
void shard_log(shard *s, int level, const char *format, ...) __attribute__((format(printf, 3, 4)));

/* Stops the shard for good after a fatal error (disk, memory): every
 * request and every group's callers get FL_E_IO from now on. */
void shard_fail(shard *s, int error, const char *what);
/* A write of the replica is durable (or failed): queued for the loop. */
void shard_write_done(write_ticket *ticket, int result);
/* Requests whose bytes the core may still reference: freed after the
 * iteration's drains. */
void shard_defer_free(shard *s, request *list);
/* Steps every ready replica's updates now (inbound frames: their payload
 * is only valid during the call). */
void shard_drain_ready(shard *s);

/* replica.c */
/* A replica recovered from the WAL (wal holds the group) or new: `conf`
 * non-NULL bootstraps it with those voters; NULL with nothing in the WAL
 * makes an empty joiner. */
int replica_open(shard *s, uint64_t group, const fl_raft_conf *conf, replica **out);
void replica_close(replica *r, int status);
/* Drains the core's updates: persist, send, apply, answer. */
void replica_drain(replica *r);
void replica_step(replica *r, const fl_raft_message *message);
void replica_add_proposal(replica *r, request *q);
/* Answers callback when the entry at (index, term) applies (or is lost). */
void replica_track_proposal(replica *r, uint64_t index, uint64_t term, fl_propose_callback callback,
                            void *context, uint64_t deadline_ms);
/* Proposes the proposals gathered this iteration as one batch. */
void replica_propose_batch(replica *r);
void replica_read(replica *r, request *q);
void replica_persisted(replica *r, uint64_t write_id);
/* Called once per tick of an active replica: true when it may stop being
 * ticked (see quiescence in shard.c). */
bool replica_may_quiesce(replica *r);

/* replica_heap.c: O(log n) but for top and contains, O(1). insert needs
 * the key set and fails only with -ENOMEM; rekeyed follows a key change. */
bool replica_heap_contains(const replica_heap_kind *kind, replica *r);
replica *replica_heap_top(const replica_heap *h);
int replica_heap_insert(replica_heap *h, const replica_heap_kind *kind, replica *r);
void replica_heap_remove(replica_heap *h, const replica_heap_kind *kind, replica *r);
void replica_heap_rekeyed(replica_heap *h, const replica_heap_kind *kind, replica *r);
void replica_heap_release(replica_heap *h);

/* expiry.c */
/* A replica LEADS a KV store whose next expiry (wall clock) is known and
 * no sweep of it is in flight: the shard keeps it in a heap by that time.
 * Call after anything that may change it (apply, role, a sweep's end);
 * O(log groups). A removed replica leaves the heap. */
void expiry_update(shard *s, replica *r);
/* On a tick: proposes EXPIRE_SWEEP for the groups whose time has come, a
 * bounded number per tick; O(1) when none is due. */
void expiry_tick(shard *s);
void expiry_release(shard *s);

/* deadline.c */
/* A call of the replica now waits with this deadline (0: none): the shard
 * keeps the replica in a heap by its earliest one. O(log groups) when it
 * becomes the earliest, O(1) otherwise. */
void deadline_note(shard *s, replica *r, uint64_t deadline_ms);
/* On a tick: fails the calls whose deadline passed with FL_E_TIMEOUT;
 * O(1) when none is due. */
void deadline_tick(shard *s);
/* The replica leaves the heap (closing). */
void deadline_forget(shard *s, replica *r);
void deadline_release(shard *s);
/* replica.c: fails the replica's calls due by now; returns its earliest
 * remaining deadline, 0 when none is left. */
uint64_t replica_expire(replica *r, uint64_t now_ms);
/* shard.c: CLOCK_MONOTONIC in ms, the clock of the shards' now_ms. */
uint64_t shard_monotonic_ms(void);

/* machine.c */
int machine_create(shard *s, uint64_t group, void **machine);
void machine_destroy(shard *s, void *machine);
/* Applies committed commands; results[i] valid until the next apply. The
 * built-in store is created on the first command (hence the pointer). */
void machine_apply(shard *s, void **machine, const fl_command *commands, uint32_t count,
                   fl_result *results);
uint64_t machine_wall_clock_ms(void);
int machine_get(shard *s, void *machine, const uint8_t *key, uint32_t key_length,
                fl_read_callback callback, void *context);
/* Answers a fl_query of a user machine through its query(). */
void machine_query(shard *s, void *machine, const uint8_t *query, uint32_t length,
                   fl_propose_callback callback, void *context);

#endif
