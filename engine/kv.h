/*
 * kv.h - the built-in state machine of a Raft group: an ordered map from byte
 * strings to byte strings, changed only by applying committed commands, with
 * snapshots streamed out while the shard keeps applying writes.
 *
 * STRUCTURE
 *
 * A copy-on-write B-tree (items in every node, 15..31 items per non-root
 * node, all leaves at one depth). Nodes and items carry reference counts:
 * kv_snapshot_begin() pins the current root (O(1)); a later write copies
 * only the nodes on its path that are still shared (reference count > 1),
 * so a pinned version never changes and is freed piece by piece as the live
 * version stops sharing it. Without open snapshots writes change nodes in
 * place and allocate only for new items and splits.
 *
 * Each node keeps the prefix its keys share (up to 24 bytes) and, for each
 * key, the next 8 bytes as a big-endian integer: a lookup compares integers
 * inside one node and reads a key itself only on a tie, which keeps point
 * operations to a few cache misses even when keys share long prefixes
 * ("user:000000123").
 *
 * A second tree of the same kind indexes the keys that have an expiry, by
 * (expire_at_ms big-endian, key); it finds the next keys to expire without a
 * scan and is rebuilt, not stored, by a restore.
 *
 * Memory: kv_memory_bytes() is what items and nodes asked of the allocator
 * (header + key + value capacity per item; one fixed size per node kind),
 * including what only open snapshots still hold and the small node reserve;
 * it leaves out allocator rounding, the store's struct, the scratch buffer
 * for expiry-index keys (as long as the longest key with an expiry) and a
 * running restore's records (counted once it finishes). An empty store
 * costs its struct alone; kv_shrink() returns an idle store to about that.
 *
 * EXPIRY
 *
 * An entry with expire_at_ms != 0 exists while now_ms < expire_at_ms. Nothing
 * here reads a clock: commands carry the proposer's wall time (now_ms) so
 * every replica decides alike, and reads take the caller's now_ms. Expired
 * entries read as absent (lazily); they stay stored, counted and in
 * snapshots until a command removes them: EXPIRE_SWEEP(now_ms, max_keys),
 * proposed by the leader when kv_next_expiry_ms() has passed, removes the
 * expired entries with the smallest (expire_at_ms, key) - the same ones on
 * every replica, since all hold the same state.
 *
 * COMMANDS (the bytes one Raft entry carries)
 *
 * Byte 0 is the kind; the rest are fields in order. `varint` is unsigned
 * LEB128 in its shortest form (at most 10 bytes), `zigzag` a signed varint;
 * `bytes` is a varint length then that many bytes. A command must end
 * exactly after its last field. New kinds get new kind bytes; unknown kinds
 * are refused.
 *
 *   1 SET           flags:u8 now_ms:varint expire_at_ms:varint key:bytes
 *                   value:bytes
 *                   flags: 1 NX, 2 XX, 4 GET (return the old value),
 *                   8 KEEPTTL; NX with XX, and KEEPTTL with an expiry, are
 *                   malformed. expire_at_ms 0: no expiry.
 *   2 DEL           now_ms:varint count:varint (1..KV_MAX_COMMAND_KEYS)
 *                   then count keys as bytes
 *   3 INCRBY        now_ms:varint delta:zigzag key:bytes
 *   4 APPEND        now_ms:varint key:bytes value:bytes
 *   5 EXPIRE_SWEEP  now_ms:varint max_keys:varint (1..KV_MAX_SWEEP_KEYS)
 *   6 MSET          now_ms:varint count:varint (1..KV_MAX_COMMAND_KEYS)
 *                   then count pairs (key:bytes value:bytes)
 *
 * Keys are 0..KV_MAX_KEY_BYTES bytes, values 0..KV_MAX_VALUE_BYTES.
 * Reads (GET, EXISTS, MGET, scans) never go through commands: they call
 * kv_get()/kv_scan() on the replica that serves them.
 *
 * Semantics are Redis's, judged at the command's now_ms: NX/XX see an
 * expired key as absent; SET without KEEPTTL drops the old expiry; a SET
 * whose expiry is already due removes the key (and still returns the old
 * value for GET); INCRBY and APPEND keep a present key's expiry and create
 * an absent (or expired) one without; INCRBY accepts only the canonical
 * base-10 text of an int64 (no '+', spaces or leading zeros); DEL removes
 * expired keys too but counts only live ones; MSET sets every pair as a
 * SET without options would (old expiries dropped; a key given twice ends
 * with its last value) and changes all of them or none. One deliberate
 * difference:
 * a key is expired from expire_at_ms on (Redis keeps it through that very
 * millisecond on reads but not on SET); here every path uses one rule.
 *
 * FAILURES
 *
 * A change first allocates everything it may need - the new item, its
 * expiry-index entry, and from a small reserve enough nodes for the worst
 * case of each tree operation it makes (path copies, splits, siblings) -
 * and only then touches the trees. So a single-key change either happens
 * whole or returns KV_E_NOMEM having changed nothing, and the trees are
 * never left half-split. An MSET of several keys cannot reserve for all of
 * them at once (the reserve is sized for one change), so it keeps the
 * version it started from pinned, as a snapshot would, and on KV_E_NOMEM
 * puts that version back: all or nothing too.
 *
 * Costs on the shard thread: point operations O(log n); kv_snapshot_begin
 * O(1); a write under a snapshot copies its path once; kv_snapshot_end
 * frees what only that version held (O(writes since it began));
 * kv_restore_finish and kv_destroy free a whole version (O(n)).
 *
 * SNAPSHOT STREAM (little-endian)
 *
 *   header, 32 bytes:
 *     0  u32 magic 0x534b4c46 ("FLKS")
 *     4  u16 version (1)
 *     6  u16 flags (0)
 *     8  u64 count           number of records
 *     16 u64 records_bytes   total bytes of all records
 *     24 u64 header checksum XXH3-64 (seed 0) of bytes 0..23
 *   count records, keys strictly increasing (memcmp order, shorter first):
 *     u32 key_length, u32 value_length, u64 expire_at_ms (0: none),
 *     key bytes, value bytes
 *   trailer, 8 bytes: u64 XXH3-64 (seed 0) of the header and all records
 *
 * The header checksum lets a receiver refuse a damaged count or length
 * before it allocates anything; the trailer covers everything. A restore
 * checks every length against its bound and against records_bytes as bytes
 * arrive, and installs nothing until the trailer verified.
 *
 * ERRORS
 *
 * int results are 0 or a negative kv_error (below -2000, so they never
 * collide with a negative errno or another module's codes); predicates
 * return bool. kv_strerror() gives the text a Redis client expects.
 *
 * THREADS AND OWNERSHIP
 *
 * A kv_store belongs to one thread, its shard's: every call on it, on its
 * snapshots and on its restore runs on that thread. Nothing is locked. A
 * snapshot may be read in any interleaving with writes on the same thread.
 * Pointers the store hands out (kv_get, kv_scan, a kv_result's value) are
 * borrowed: valid until the next mutating call on the store (kv_put,
 * kv_delete, kv_apply, kv_expire_step, kv_restore_finish, kv_destroy).
 */
#ifndef FLOTILLA_ENGINE_KV_H
#define FLOTILLA_ENGINE_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest key: Redis's own key limit is far larger, but a key travels in
 * every command, snapshot record and expiry-index entry that names it, and
 * the store may keep a scratch buffer of up to this size for index keys. */
#define KV_MAX_KEY_BYTES (64u * 1024u)

/* Largest value. A SET carries its whole value in one Raft entry, and an
 * entry must fit one WAL batch (4 MiB by default) with room for the records
 * of other groups; an APPEND to a value a snapshot still shares copies the
 * whole value on the shard thread, so the bound also caps that stall (well
 * under a millisecond); and a restore allocates at most this much for one
 * record before its bytes arrive. */
#define KV_MAX_VALUE_BYTES (2u * 1024u * 1024u)

/* Keys in one DEL or MSET command: bounds the work of applying one entry,
 * so one entry cannot stall the shard. The front end splits larger ones. */
#define KV_MAX_COMMAND_KEYS 1024u

/* Entries one EXPIRE_SWEEP removes at most, for the same reason. */
#define KV_MAX_SWEEP_KEYS 4096u

/* Snapshots open at once on one store: each pins a whole version, which may
 * cost up to a copy of the store once writes have moved on. */
#define KV_MAX_SNAPSHOTS 4u

/* Bytes of the snapshot stream's header and trailer (see above). */
#define KV_SNAPSHOT_HEADER_BYTES 32u
#define KV_SNAPSHOT_RECORD_HEADER_BYTES 16u
#define KV_SNAPSHOT_TRAILER_BYTES 8u
#define KV_SNAPSHOT_MAGIC 0x534b4c46u
#define KV_SNAPSHOT_VERSION 1u

/* Encoded command sizes: a kind byte, fixed fields at most 10 bytes each. */
#define KV_VARINT_MAX_BYTES 10u

typedef enum kv_error {
  KV_OK = 0,
  KV_E_MALFORMED = -2000,   /* command bytes invalid: nothing was changed */
  KV_E_NOT_INTEGER = -2001, /* INCRBY on a value that is not a base-10 int64 */
  KV_E_OVERFLOW = -2002,    /* INCRBY result outside int64 */
  KV_E_TOO_LARGE = -2003,   /* APPEND would exceed KV_MAX_VALUE_BYTES */
  KV_E_NOMEM = -2004,       /* allocation failed (see kv_apply) */
  KV_E_NO_SPACE = -2005,    /* encoder: buffer too small (length says how much) */
  KV_E_INVALID = -2006,     /* bad argument: length above a bound, flags, ... */
  KV_E_CORRUPT = -2007,     /* snapshot stream damaged or inconsistent */
  KV_E_TRUNCATED = -2008,   /* snapshot stream ended early */
  KV_E_VERSION = -2009,     /* snapshot stream of an unknown version */
  KV_E_BUSY = -2010,        /* KV_MAX_SNAPSHOTS open, or a restore running */
} kv_error;

/* Text for a kv_error; command errors read as Redis replies ("ERR ..."). */
const char *kv_strerror(int error);

typedef struct kv_store kv_store;
typedef struct kv_snapshot kv_snapshot;
typedef struct kv_restore kv_restore;

/* A borrowed byte string (commands with several keys). */
typedef struct kv_bytes {
  const uint8_t *data;
  size_t length;
} kv_bytes;

/* One entry as read: every pointer is borrowed (see THREADS AND OWNERSHIP). */
typedef struct kv_entry {
  const uint8_t *key;
  size_t key_length;
  const uint8_t *value;
  size_t value_length;
  uint64_t expire_at_ms; /* 0: no expiry */
} kv_entry;

/* ---- Store ---------------------------------------------------------------- */

/* Creates an empty store owned by the calling thread. 0 or KV_E_NOMEM. */
int kv_create(kv_store **kv);

/* Frees the store and everything in it. Every snapshot must have ended and
 * no restore may be running (asserted). NULL is ignored. */
void kv_destroy(kv_store *kv);

/* Looks key up at now_ms. true with *entry filled (borrowed pointers) when
 * present and not expired; false otherwise (entry untouched). */
bool kv_get(const kv_store *kv, const uint8_t *key, size_t key_length, uint64_t now_ms,
            kv_entry *entry);

/*
 * Fills entries[0..capacity) with the entries whose key is >= start, in key
 * order, skipping those expired at now_ms; returns how many it filled. To
 * read the next page, scan from the last key with a 0 byte appended (its
 * immediate successor). Work is O(log n + returned + expired skipped).
 */
size_t kv_scan(const kv_store *kv, const uint8_t *start, size_t start_length, uint64_t now_ms,
               kv_entry *entries, size_t capacity);

/* Entries stored, including expired ones no sweep has removed yet. */
uint64_t kv_count(const kv_store *kv);

/* Bytes of items and nodes (see STRUCTURE). */
uint64_t kv_memory_bytes(const kv_store *kv);

/* Frees the node reserve (and the scratch buffer when no key expires), for
 * a group gone idle: the next change allocates them again. O(reserve). */
void kv_shrink(kv_store *kv);

/*
 * Direct changes, outside the replicated path: for embedders that use the
 * store without Raft, and for tests. Each is all or nothing.
 * kv_put: stores the value (copied) with expire_at_ms (0: none).
 *   0, KV_E_INVALID (a length above its bound) or KV_E_NOMEM.
 * kv_delete: removes the key whether or not it expired; *existed (may be
 *   NULL) says whether it was stored. 0 or KV_E_NOMEM (copying a path a
 *   snapshot shares can allocate).
 */
int kv_put(kv_store *kv, const uint8_t *key, size_t key_length, const uint8_t *value,
           size_t value_length, uint64_t expire_at_ms);
int kv_delete(kv_store *kv, const uint8_t *key, size_t key_length, bool *existed);

/* Earliest expiry among stored entries, 0 when none has one. The leader
 * proposes an EXPIRE_SWEEP once its wall clock has reached it. */
uint64_t kv_next_expiry_ms(const kv_store *kv);

/*
 * Removes up to max_keys entries expired at now_ms (expire_at_ms <= now_ms),
 * smallest (expire_at_ms, key) first; *removed says how many. What
 * EXPIRE_SWEEP applies; call it directly only on an unreplicated store.
 * 0 or KV_E_NOMEM (the entries removed before it stay removed).
 */
int kv_expire_step(kv_store *kv, uint64_t now_ms, uint32_t max_keys, uint32_t *removed);

/* Checks every invariant: key order, node fill and depth, prefixes,
 * counts, reference counts of every node and item reachable from the store
 * and its snapshots, memory accounting, and the expiry index. Returns false
 * and names the broken one in *broken. O(n); for tests. */
bool kv_check_invariants(const kv_store *kv, const char **broken);

/* ---- Commands ------------------------------------------------------------- */

enum kv_command_kind {
  KV_COMMAND_SET = 1,
  KV_COMMAND_DEL = 2,
  KV_COMMAND_INCRBY = 3,
  KV_COMMAND_APPEND = 4,
  KV_COMMAND_EXPIRE_SWEEP = 5,
  KV_COMMAND_MSET = 6,
};

enum kv_set_flags {
  KV_SET_NX = 1u,      /* only if absent */
  KV_SET_XX = 2u,      /* only if present */
  KV_SET_GET = 4u,     /* return the old value */
  KV_SET_KEEPTTL = 8u, /* keep the present entry's expiry */
};

typedef struct kv_set_command {
  const uint8_t *key;
  size_t key_length;
  const uint8_t *value;
  size_t value_length;
  uint32_t flags;        /* kv_set_flags */
  uint64_t expire_at_ms; /* absolute wall time; 0: no expiry */
  uint64_t now_ms;       /* the proposer's wall time */
} kv_set_command;

/*
 * Encoders write one command into buffer[0..capacity) and set *length to
 * its size. 0; KV_E_NO_SPACE when capacity is too small (*length is then
 * the size needed, so capacity 0 asks for it); KV_E_INVALID when an
 * argument breaks a bound or a rule of the format (the buffer is untouched).
 */
int kv_command_encode_set(const kv_set_command *command, uint8_t *buffer, size_t capacity,
                          size_t *length);
int kv_command_encode_del(uint64_t now_ms, const kv_bytes *keys, size_t key_count, uint8_t *buffer,
                          size_t capacity, size_t *length);
int kv_command_encode_incrby(uint64_t now_ms, const uint8_t *key, size_t key_length, int64_t delta,
                             uint8_t *buffer, size_t capacity, size_t *length);
int kv_command_encode_append(uint64_t now_ms, const uint8_t *key, size_t key_length,
                             const uint8_t *value, size_t value_length, uint8_t *buffer,
                             size_t capacity, size_t *length);
int kv_command_encode_expire_sweep(uint64_t now_ms, uint32_t max_keys, uint8_t *buffer,
                                   size_t capacity, size_t *length);
/* keys[i] gets values[i], for i < count (1..KV_MAX_COMMAND_KEYS). */
int kv_command_encode_mset(uint64_t now_ms, const kv_bytes *keys, const kv_bytes *values,
                           size_t count, uint8_t *buffer, size_t capacity, size_t *length);

typedef enum kv_status {
  KV_STATUS_OK = 0,          /* applied */
  KV_STATUS_NOT_APPLIED = 1, /* SET refused by NX or XX: nothing changed */
  KV_STATUS_ERROR = 2,       /* error says which; nothing changed (but see NOMEM) */
} kv_status;

/* What applying one command gave; written by kv_apply. */
typedef struct kv_result {
  kv_status status;
  int error;            /* 0 or a kv_error when status is KV_STATUS_ERROR */
  const char *message;  /* kv_strerror(error) for errors, else NULL */
  int64_t integer;      /* DEL: keys removed; INCRBY: new value; APPEND: new
                           length; EXPIRE_SWEEP: entries removed; MSET: keys
                           written; SET: 0 */
  bool has_value;       /* SET with GET and an old value present */
  const uint8_t *value; /* borrowed until the next mutating call */
  size_t value_length;
} kv_result;

/*
 * Applies one committed command and returns result->error. The outcome
 * depends only on the store and the command bytes, so every replica
 * reaches the same state and the same result - except KV_E_NOMEM: then a
 * single-key command or an MSET changed nothing, a DEL or EXPIRE_SWEEP may have
 * removed some of its keys, and the store is consistent but this replica
 * can no longer follow the log (it must stop, as on a disk error).
 * Malformed bytes (any truncation, a length above a bound, trailing bytes,
 * an unknown kind or flag) give KV_E_MALFORMED and change nothing.
 */
int kv_apply(kv_store *kv, const uint8_t *command, size_t length, kv_result *result);

/* ---- Snapshots ------------------------------------------------------------ */

/*
 * Pins the current version and returns a reader of it: O(1), no copy.
 * Writes continue; the snapshot keeps reading exactly this version.
 * 0, KV_E_BUSY (KV_MAX_SNAPSHOTS open) or KV_E_NOMEM. The snapshot belongs
 * to the store and its thread; end it with kv_snapshot_end().
 */
int kv_snapshot_begin(kv_store *kv, kv_snapshot **snapshot);

/* Records in the snapshot, and the size of its whole stream in bytes. */
uint64_t kv_snapshot_count(const kv_snapshot *snapshot);
uint64_t kv_snapshot_stream_bytes(const kv_snapshot *snapshot);

/*
 * Writes the next bytes of the stream into buffer[0..capacity), capacity
 * >= 1: *length gets how many (capacity unless the stream ends), *done
 * becomes true with the call that writes the last byte. Calls after that
 * write nothing. O(capacity). 0 or KV_E_INVALID (capacity 0).
 */
int kv_snapshot_read(kv_snapshot *snapshot, uint8_t *buffer, size_t capacity, size_t *length,
                     bool *done);

/* Unpins the version: frees the nodes and items only it still held
 * (O(changes since begin)), then the snapshot. NULL is ignored. */
void kv_snapshot_end(kv_snapshot *snapshot);

/*
 * Restore replaces the whole store by a snapshot stream, fed in chunks of
 * any size. begin: 0, KV_E_BUSY (one restore at a time) or KV_E_NOMEM.
 * feed: 0 or the first error found (KV_E_CORRUPT, KV_E_VERSION,
 *   KV_E_NOMEM); after an error every call returns it again.
 * finish: checks the stream ended exactly after its trailer, builds the new
 *   version, swaps it in, frees the old one (O(n)) and the restore. 0, the
 *   feed error, KV_E_TRUNCATED, KV_E_CORRUPT or KV_E_NOMEM; on any error
 *   the live store is untouched. The restore is freed either way.
 * abort: frees the restore; the store is untouched. NULL is ignored.
 * Open snapshots keep reading the versions they pinned.
 */
int kv_restore_begin(kv_store *kv, kv_restore **restore);
int kv_restore_feed(kv_restore *restore, const uint8_t *chunk, size_t length);
int kv_restore_finish(kv_restore *restore);
void kv_restore_abort(kv_restore *restore);

#ifdef __cplusplus
}
#endif

#endif
