/*
 * flotilla.h - the embedding API of Flotilla, a multi-raft storage engine.
 *
 * An fl_engine is one node of a cluster. It runs S shards, one thread each;
 * every shard owns an io_uring, a write-ahead log, its connections to the
 * other nodes and the Raft groups that hash to it. A group is replicated on
 * several nodes; each replica applies committed commands to its state
 * machine: the built-in ordered key-value store, or one the embedder gives.
 *
 * Conventions
 *   - Every function returns int: 0 or a negative FL_E* code (fl_strerror).
 *     Predicates return bool. Handles are opaque.
 *   - Thread rules: every fl_ function may be called from any thread that is
 *     not a shard thread, unless its comment says otherwise. Callbacks run ON
 *     a shard thread: they must be short and must not call blocking fl_
 *     functions (the ones marked "blocks"); the asynchronous ones are fine.
 *   - Ownership: bytes passed in are copied before the call returns, unless
 *     a comment says otherwise; bytes passed to a callback are valid only
 *     during the callback.
 *   - Asynchronous calls either return an error (and never call back) or
 *     return 0 and call back exactly once.
 */
#ifndef FLOTILLA_H
#define FLOTILLA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FL_API __attribute__((visibility("default")))

enum fl_error {
  FL_OK = 0,
  FL_E_INVALID = -1,      /* a bad argument or option (the log names it) */
  FL_E_NOMEM = -2,        /* out of memory */
  FL_E_IO = -3,           /* a disk or network error; the shard stopped */
  FL_E_NOT_LEADER = -4,   /* this replica is not the leader (see status.leader) */
  FL_E_NO_GROUP = -5,     /* no such group on this node */
  FL_E_EXISTS = -6,       /* the group already exists */
  FL_E_BUSY = -7,         /* a bounded queue is full: retry later */
  FL_E_TIMEOUT = -8,      /* no answer in time (no leader, partition) */
  FL_E_CLOSED = -9,       /* the engine is closing */
  FL_E_CORRUPT = -10,     /* on-disk state failed verification */
  FL_E_TOO_LARGE = -11,   /* a command or value above the configured limit */
  FL_E_DROPPED = -12,     /* the command was lost: leadership changed before commit */
  FL_E_NOT_FOUND = -13,   /* no such key */
  FL_E_UNAVAILABLE = -14, /* the group has no leader right now */
  FL_E_CONFLICT = -15,    /* a membership change is already in progress */
  FL_E_STATE = -16,       /* the state machine refused the command (see the result) */
  FL_E_IN_USE = -17,      /* fl_engine_open: another engine holds data_dir */
};

FL_API const char *fl_strerror(int error);

typedef struct fl_engine fl_engine;

/* ---- state machines ----------------------------------------------------- */

/* One committed command handed to a state machine. */
typedef struct fl_command {
  uint64_t index;
  uint64_t term;
  const uint8_t *data;
  uint32_t length;
} fl_command;

/* What applying one command produced; bytes are the state machine's and
 * valid until its next apply. */
typedef struct fl_result {
  int status;     /* 0, or FL_E_STATE (then `bytes` holds the reason) */
  bool applied;   /* false: refused by a condition (KV: SET NX/XX), nothing changed */
  bool has_bytes; /* `bytes` holds a value (KV: the old value of SET GET) */
  int64_t integer;
  const uint8_t *bytes;
  uint32_t length;
} fl_result;

/*
 * A user state machine (the default is the built-in KV store). Every
 * function runs on the group's shard thread. apply() must be deterministic:
 * every replica applies the same commands in the same order and must end in
 * the same state.
 *
 * Snapshots (when both save and restore are given; otherwise the group's
 * log is never compacted): every fl_options.snapshot_entries applied
 * commands, save() writes the whole state through `write` (called any
 * number of times; it returns 0, or <0 once the file cannot be written:
 * save() should then return that) and returns 0 or <0. It runs whole, at
 * one applied index, and the group's shard (every group on it) waits for
 * it: keep the state small or the interval long. The engine appends a
 * checksum and compacts the log once the file is durable. restore() is
 * given a FRESH state from create() and reads one saved stream through
 * `read` (returns bytes read, 0 at the end, <0 on error); it returns 0,
 * or <0 to refuse the stream, and the state is then destroyed and the old
 * one kept. It runs when a node restarts from a snapshot and when a
 * lagging follower is sent one (first into a scratch state, to check it,
 * then for real). A stream whose checksum fails never reaches restore().
 *
 * query() (may be NULL: fl_query gives FL_E_INVALID) answers fl_query: it
 * must only read the state (deterministic, no change) and fill `result`
 * (status 0 or FL_E_STATE with the reason in bytes); its bytes are valid
 * until the state's next apply.
 */
typedef struct fl_state_machine {
  void *(*create)(void *context, uint64_t group);
  void (*destroy)(void *state);
  void (*apply)(void *state, const fl_command *commands, uint32_t count, fl_result *results);
  int (*save)(void *state, int (*write)(void *sink, const void *bytes, size_t length), void *sink);
  int (*restore)(void *state, long (*read)(void *source, void *bytes, size_t capacity),
                 void *source);
  void *context;
  void (*query)(void *state, const uint8_t *query, uint32_t length, fl_result *result);
} fl_state_machine;

/* ---- options ------------------------------------------------------------ */

typedef struct fl_node_address {
  uint64_t node_id; /* never 0 */
  char host[64];    /* IPv4 address or name */
  uint16_t port;    /* the node's base peer port: shard s listens on port + s */
} fl_node_address;

typedef enum fl_fsync_mode {
  FL_FSYNC_DATA = 0,   /* buffered writes + fdatasync after each WAL batch (default) */
  FL_FSYNC_DIRECT = 1, /* O_DIRECT writes + fdatasync */
} fl_fsync_mode;

/* The largest fl_options.request_timeout_ms: a day. */
#define FL_MAX_REQUEST_TIMEOUT_MS (24u * 3600u * 1000u)

typedef struct fl_options {
  uint64_t cluster_id;          /* every node of a cluster uses the same one */
  uint64_t node_id;             /* this node; never 0 */
  const char *data_dir;         /* WALs and snapshots, one subdirectory per shard */
  const char *listen_host;      /* address to listen on (default 127.0.0.1); the ports are
                                 * this node's entry in `nodes`: base port + shard index */
  const fl_node_address *nodes; /* every node of the cluster, this one included */
  uint32_t node_count;
  uint32_t shard_count;     /* 0: one per core; must match on every node */
  uint32_t tick_ms;         /* Raft's clock (default 10) */
  uint32_t election_ticks;  /* default 100 (1 s) */
  uint32_t heartbeat_ticks; /* default 10 */
  bool lease_read;          /* linearizable reads from a lease, no round trip */
  fl_fsync_mode fsync_mode;
  uint32_t max_command_bytes; /* per proposal (default 1 MiB) */
  uint32_t queue_capacity;    /* requests waiting per shard (default 65536) */
  uint64_t wal_segment_bytes; /* default 64 MiB */
  uint32_t snapshot_entries;  /* compact a group's log after this many applied (default 100000) */
  /* A proposal (fl_propose, fl_propose_batch, fl_kv_* writes, membership
   * changes), linearizable read or query not answered this long after the
   * call is answered with FL_E_TIMEOUT (checked on ticks: up to one tick
   * late). A timed-out command may still commit and apply later: the
   * caller does not learn its fate (retry only what is idempotent).
   * 0 (the default): no deadline, a call waits while its group cannot
   * make progress. At most FL_MAX_REQUEST_TIMEOUT_MS. */
  uint32_t request_timeout_ms;
  /* The state machine of every group on this node (borrowed for the
   * engine's life); NULL: the built-in KV store. Every node of a cluster
   * must use the same one. */
  const fl_state_machine *machine;
  /* Messages at or above log_level (0 debug, 1 info, 2 warning, 3 error;
   * default 2) go to log, or to stderr when it is NULL. */
  int log_level;
  void (*log)(void *context, int level, const char *message);
  void *log_context;
  /* Called on a shard thread whenever the leader a replica of this node
   * knows changes (leader 0: none known) or a new term's leader is known,
   * once for every group when it is recovered, created or joined, and once
   * with leader 0 when it is removed. Changes within one loop iteration
   * are reported once, with the latest; calls come between iterations,
   * never from inside a group's processing. For routing; must be short and
   * must not block (the async fl_ calls are fine). NULL: not called. */
  void (*on_leader)(void *context, uint64_t group, uint64_t leader, uint64_t term);
  void *on_leader_context;
} fl_options;

/* Fills every field with its default (node_id, data_dir and nodes excepted). */
FL_API void fl_options_default(fl_options *options);

/*
 * Opens a node: creates data_dir when missing, recovers every shard from its
 * WAL (every group with the state it had), starts the shard threads and
 * connects to the other nodes. Blocks until recovery is done.
 * `options` and what it points to are copied. An engine holds data_dir
 * (an exclusive lock on data_dir/LOCK) until closed: a second open of it,
 * from this process or another, fails with FL_E_IN_USE.
 */
FL_API int fl_engine_open(const fl_options *options, fl_engine **out);
/* Stops accepting requests, fails what is queued with FL_E_CLOSED, flushes
 * the WALs, closes connections and joins the threads. Blocks. NULL is fine. */
FL_API int fl_engine_close(fl_engine *engine);
FL_API uint32_t fl_engine_shard_count(const fl_engine *engine);

/* ---- groups ----------------------------------------------------------- */

/*
 * Creates this node's replica of `group` with the initial voters `members`
 * (node ids, this node among them). Every initial member must be created
 * with the same list. Blocks until the replica exists durably.
 * FL_E_EXISTS when it does.
 */
FL_API int fl_group_create(fl_engine *engine, uint64_t group, const uint64_t *members,
                           uint32_t member_count);
/* Removes this node's replica and its data. Blocks. */
FL_API int fl_group_remove(fl_engine *engine, uint64_t group);
/* Fills up to `capacity` group ids; *count is the number of groups. Blocks. */
FL_API int fl_group_list(fl_engine *engine, uint64_t *groups, uint32_t capacity, uint32_t *count);

typedef enum fl_role {
  FL_FOLLOWER = 0,
  FL_PRE_CANDIDATE = 1,
  FL_CANDIDATE = 2,
  FL_LEADER = 3,
} fl_role;

typedef struct fl_group_status {
  uint64_t group;
  fl_role role;
  uint64_t term;
  uint64_t leader; /* node id, 0 when unknown */
  uint64_t commit;
  uint64_t applied;
  uint64_t first_index;
  uint64_t last_index;
  uint32_t voter_count;
  uint64_t voters[7];
  uint32_t learner_count;
  uint64_t learners[5];
  uint64_t keys;     /* entries in the built-in KV store, expired ones not yet swept
                       included (0 for a user state machine) */
  uint64_t kv_bytes; /* memory the store holds (0 for a user state machine) */
} fl_group_status;

/* Blocks (one round trip to the shard). */
FL_API int fl_group_status_get(fl_engine *engine, uint64_t group, fl_group_status *status);

/* ---- writes ------------------------------------------------------------- */

/* Runs on the shard thread once the command is committed and applied, or
 * failed (result NULL: FL_E_NOT_LEADER, FL_E_DROPPED, FL_E_CLOSED, ...). */
typedef void (*fl_propose_callback)(void *context, int status, const fl_result *result);

/*
 * Proposes a command to `group` on this node's replica, which must be the
 * leader (FL_E_NOT_LEADER through the callback otherwise: forward to
 * fl_group_status.leader). `data` is copied. Asynchronous.
 */
FL_API int fl_propose(fl_engine *engine, uint64_t group, const void *data, uint32_t length,
                      fl_propose_callback callback, void *context);

/* One command of a batch (fl_propose_batch), or a key or value. */
typedef struct fl_bytes {
  const void *data;
  uint32_t length;
} fl_bytes;

/*
 * Proposes `count` commands (1..FL_MAX_BATCH_COMMANDS) to `group` as one
 * request: they reach the shard together and become `count` consecutive
 * entries, in order, in one proposal to the core. commands[i] is answered
 * by callback(contexts[i], ...), exactly once each, in order of their
 * entries (a refusal at the shard, such as FL_E_NOT_LEADER, answers every
 * one). Each command is at most max_command_bytes and all of them at most
 * FL_MAX_BATCH_BYTES (FL_E_TOO_LARGE). Bytes and the contexts array are
 * copied. Asynchronous; an error return calls nothing back.
 */
#define FL_MAX_BATCH_COMMANDS 1024u
#define FL_MAX_BATCH_BYTES (64u << 20)
FL_API int fl_propose_batch(fl_engine *engine, uint64_t group, const fl_bytes *commands,
                            uint32_t count, fl_propose_callback callback, void *const *contexts);

/* ---- the built-in KV store ------------------------------------------- */

/* Commands for groups using the built-in store (encoded for fl_propose).
 * Keys are at most FL_KV_MAX_KEY_BYTES, values FL_KV_MAX_VALUE_BYTES, a
 * whole command max_command_bytes: FL_E_TOO_LARGE beyond, at call time.
 * A NULL pointer with a non-zero length, or a NULL callback: FL_E_INVALID.
 * A command that fails in the store (INCR of a non-integer, APPEND past
 * the value limit) calls back with FL_E_STATE and the reason in the
 * result's bytes. */
#define FL_KV_MAX_KEY_BYTES (64u * 1024u)
#define FL_KV_MAX_VALUE_BYTES (2u * 1024u * 1024u)
FL_API int fl_kv_put(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
                     const void *value, uint32_t value_length, fl_propose_callback callback,
                     void *context);
FL_API int fl_kv_delete(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
                        fl_propose_callback callback, void *context);
/* result->integer is the new value. */
FL_API int fl_kv_incr(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
                      int64_t delta, fl_propose_callback callback, void *context);

/* SET with Redis's options. */
typedef enum fl_kv_set_flags {
  FL_KV_SET_NX = 1,      /* only when the key is absent (result->applied false otherwise) */
  FL_KV_SET_XX = 2,      /* only when the key is present */
  FL_KV_SET_GET = 4,     /* result->has_bytes/bytes: the old value */
  FL_KV_SET_KEEPTTL = 8, /* keep the key's expiry (expire_at_ms must be 0) */
} fl_kv_set_flags;

/* expire_at_ms: wall-clock milliseconds since the epoch at which the key
 * expires, 0 for none (one already past deletes the key, as Redis does).
 * The proposer's clock, carried in the command, judges NX/XX and expiry,
 * so all replicas decide alike. Flags outside fl_kv_set_flags, NX with XX,
 * or KEEPTTL with an expiry: FL_E_INVALID at call time. result->applied is
 * false when NX/XX refused; with GET, result->has_bytes says whether there
 * was an old value and bytes/length hold it (also when refused). */
FL_API int fl_kv_set(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
                     const void *value, uint32_t value_length, uint32_t flags,
                     uint64_t expire_at_ms, fl_propose_callback callback, void *context);
/* Appends to the value (an absent key starts empty; a present key keeps
 * its expiry). result->integer is the value's new length. */
FL_API int fl_kv_append(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
                        const void *value, uint32_t value_length, fl_propose_callback callback,
                        void *context);

/* Deletes 1..FL_KV_MAX_BATCH_KEYS keys in one command (atomically);
 * result->integer is how many existed (expired ones are removed but not
 * counted). Keys are copied. */
#define FL_KV_MAX_BATCH_KEYS 1024u
FL_API int fl_kv_delete_many(fl_engine *engine, uint64_t group, const fl_bytes *keys,
                             uint32_t count, fl_propose_callback callback, void *context);
/* Sets 1..FL_KV_MAX_BATCH_KEYS keys, keys[i] to values[i], in one command
 * (atomically, like MSET: no condition, expiries dropped, a key given twice
 * ends with its last value). result->integer is count. Copied. */
FL_API int fl_kv_set_many(fl_engine *engine, uint64_t group, const fl_bytes *keys,
                          const fl_bytes *values, uint32_t count, fl_propose_callback callback,
                          void *context);

typedef enum fl_read_mode {
  FL_READ_LINEARIZABLE = 0, /* ReadIndex (or the lease) on the leader */
  FL_READ_LOCAL = 1,        /* this replica's state now: may be stale */
} fl_read_mode;

/* status 0 with the value, FL_E_NOT_FOUND, or an error. Runs on the shard. */
typedef void (*fl_read_callback)(void *context, int status, const uint8_t *value, uint32_t length);

FL_API int fl_kv_get(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
                     fl_read_mode mode, fl_read_callback callback, void *context);

/* ---- reads of a user state machine ------------------------------------ */

/*
 * Asks the group's user state machine `query` (copied; at most
 * max_command_bytes) through its query(): FL_READ_LINEARIZABLE on the
 * leader once its state includes every write acknowledged before the call
 * (ReadIndex, or the lease), FL_READ_LOCAL on this replica's state now.
 * The callback gets query()'s result (status 0 or FL_E_STATE) or an error
 * with result NULL (FL_E_NOT_LEADER/FL_E_UNAVAILABLE: ask the leader;
 * FL_E_TIMEOUT; FL_E_CLOSED). FL_E_INVALID at call time for the built-in
 * KV store (use fl_kv_get) or a machine without query(). Asynchronous.
 */
FL_API int fl_query(fl_engine *engine, uint64_t group, const void *query, uint32_t length,
                    fl_read_mode mode, fl_propose_callback callback, void *context);

/* ---- membership ------------------------------------------------------- */

typedef enum fl_change_type {
  FL_ADD_VOTER = 0, /* or promote a learner */
  FL_ADD_LEARNER = 1,
  FL_REMOVE_MEMBER = 2,
} fl_change_type;

/* A change proposed on the leader; the callback runs once it is applied.
 * A new member's node must create its replica with fl_group_join first. */
FL_API int fl_group_change(fl_engine *engine, uint64_t group, fl_change_type type, uint64_t node,
                           fl_propose_callback callback, void *context);
/* Creates an empty replica that learns its configuration from the leader. */
FL_API int fl_group_join(fl_engine *engine, uint64_t group);
/* Asks the leader to hand leadership to `node`. Asynchronous, no callback:
 * watch fl_group_status_get. */
FL_API int fl_group_transfer_leader(fl_engine *engine, uint64_t group, uint64_t node);

/* ---- statistics ------------------------------------------------------- */

typedef struct fl_shard_stats {
  uint32_t shard;
  uint32_t groups;
  uint32_t active_groups; /* groups being ticked; the others are quiet */
  uint64_t proposals;
  uint64_t applied;
  uint64_t wal_batches;
  uint64_t wal_bytes;
  uint64_t wal_syncs;
  uint64_t wal_entries; /* Raft entries written to the WAL */
  uint64_t frames_sent;
  uint64_t frames_received;
  uint64_t messages_sent;
  uint64_t messages_received;
  uint64_t entries_sent; /* Raft entries carried by messages sent */
  uint64_t loop_iterations;
  uint64_t snapshots_received; /* whole and verified, from a leader */
  uint64_t snapshots_installed;
} fl_shard_stats;

/* Blocks (one round trip to the shard). */
FL_API int fl_shard_stats_get(fl_engine *engine, uint32_t shard, fl_shard_stats *stats);

#ifdef __cplusplus
}
#endif

#endif
