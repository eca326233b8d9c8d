/*
 * raft.h - the consensus core of ONE Raft group, as a pure state machine.
 *
 * The core does no I/O, reads no clock, starts no thread and keeps no global
 * state. Time enters as ticks; everything the driver must do (persist, send,
 * apply) leaves as an fl_raft_update. The same inputs in the same order give
 * the same outputs, which is what the deterministic simulation relies on.
 *
 * Driving loop (one group):
 *
 *     fl_raft_step / fl_raft_tick / fl_raft_propose / fl_raft_persisted ...
 *     while (fl_raft_has_update(r)) {
 *         fl_raft_get_update(r, &u);
 *         store u.entries (and u.snapshot, u.hard_state) in the log storage
 *             so fl_raft_storage reads see them now; queue them for disk;
 *         send u.messages now;
 *         send u.messages_after_write once write u.write_id is durable,
 *             then call fl_raft_persisted(r, u.write_id);
 *         apply u.committed, deliver u.read_states;
 *         fl_raft_advance(r, &u);
 *     }
 *
 * Ownership: every pointer inside an update stays valid until
 * fl_raft_advance(). Entry payloads given to fl_raft_propose() and the
 * entries of a message given to fl_raft_step() are referenced, not copied:
 * the caller keeps them alive until the next fl_raft_advance().
 * Payloads returned by the storage callbacks must stay valid until the next
 * fl_raft_advance() as well.
 *
 * Errors follow the project convention: int, 0 or a negative FL_RAFT_E*.
 */
#ifndef FLOTILLA_RAFT_H
#define FLOTILLA_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

enum fl_raft_error {
  FL_RAFT_OK = 0,
  FL_RAFT_E_NOT_LEADER = -1,   /* proposal or admin call on a non-leader */
  FL_RAFT_E_BUSY = -2,         /* a bound is full: retry later */
  FL_RAFT_E_TRANSFERRING = -3, /* leader transfer in progress */
  FL_RAFT_E_CONF_PENDING = -4, /* a configuration change is not applied yet */
  FL_RAFT_E_INVALID = -5,      /* malformed argument or message */
  FL_RAFT_E_COMPACTED = -6,    /* storage: index below the first index */
  FL_RAFT_E_UNAVAILABLE = -7,  /* storage: index above the last index */
  FL_RAFT_E_NOMEM = -8,        /* allocation failed */
  FL_RAFT_E_TOO_LARGE = -9,    /* uncommitted-bytes limit reached */
  FL_RAFT_E_NOT_MEMBER = -10,  /* node not in the configuration */
};

const char *fl_raft_strerror(int error);

typedef enum fl_raft_role {
  FL_RAFT_FOLLOWER = 0,
  FL_RAFT_PRE_CANDIDATE = 1,
  FL_RAFT_CANDIDATE = 2,
  FL_RAFT_LEADER = 3,
} fl_raft_role;

const char *fl_raft_role_name(fl_raft_role role);

typedef enum fl_raft_entry_type {
  FL_RAFT_ENTRY_NORMAL = 0,      /* a command for the state machine (or empty) */
  FL_RAFT_ENTRY_CONF_CHANGE = 1, /* data is an encoded fl_raft_conf */
} fl_raft_entry_type;

/* A log entry. data is borrowed: see the ownership rules above. */
typedef struct fl_raft_entry {
  uint64_t term;
  uint64_t index;
  uint32_t type; /* fl_raft_entry_type */
  uint32_t length;
  const uint8_t *data;
} fl_raft_entry;

/*
 * A group configuration. During joint consensus outgoing_count > 0 and a
 * decision needs a majority of voters AND a majority of outgoing.
 * Learners receive the log but never vote. auto_leave makes the leader
 * propose the leave-joint entry itself once the joint entry is applied.
 */
typedef struct fl_raft_conf {
  uint8_t voter_count;
  uint8_t outgoing_count;
  uint8_t learner_count;
  uint8_t auto_leave;
  uint64_t voters[FL_RAFT_MAX_VOTERS];
  uint64_t outgoing[FL_RAFT_MAX_VOTERS];
  uint64_t learners[FL_RAFT_MAX_LEARNERS];
} fl_raft_conf;

/* Counts within bounds, no zero or duplicate ids, learners not voters. */
bool fl_raft_conf_is_valid(const fl_raft_conf *conf);
bool fl_raft_conf_is_joint(const fl_raft_conf *conf);
bool fl_raft_conf_has_voter(const fl_raft_conf *conf, uint64_t node);
bool fl_raft_conf_has_learner(const fl_raft_conf *conf, uint64_t node);
bool fl_raft_conf_equal(const fl_raft_conf *a, const fl_raft_conf *b);
/* Encoded size and codec of a configuration carried in a conf-change entry. */
size_t fl_raft_conf_encoded_size(const fl_raft_conf *conf);
size_t fl_raft_conf_encode(const fl_raft_conf *conf, uint8_t *buffer, size_t capacity);
int fl_raft_conf_decode(const uint8_t *data, size_t length, fl_raft_conf *out);

/* One membership operation of a change request. */
typedef enum fl_raft_change_op {
  FL_RAFT_ADD_VOTER = 0,   /* add a voter, or promote a learner */
  FL_RAFT_ADD_LEARNER = 1, /* add a learner (not a current voter) */
  FL_RAFT_REMOVE = 2,      /* remove a voter or a learner */
} fl_raft_change_op;

typedef struct fl_raft_change {
  uint32_t op; /* fl_raft_change_op */
  uint64_t node;
} fl_raft_change;

typedef struct fl_raft_snapshot_meta {
  uint64_t index; /* last index the snapshot covers */
  uint64_t term;  /* term of that entry */
  fl_raft_conf conf;
} fl_raft_snapshot_meta;

typedef struct fl_raft_hard_state {
  uint64_t term;
  uint64_t vote;
  uint64_t commit;
} fl_raft_hard_state;

typedef enum fl_raft_message_type {
  FL_RAFT_MSG_APPEND = 1,
  FL_RAFT_MSG_APPEND_RESP = 2,
  FL_RAFT_MSG_VOTE = 3,
  FL_RAFT_MSG_VOTE_RESP = 4,
  FL_RAFT_MSG_PRE_VOTE = 5,
  FL_RAFT_MSG_PRE_VOTE_RESP = 6,
  FL_RAFT_MSG_HEARTBEAT = 7,
  FL_RAFT_MSG_HEARTBEAT_RESP = 8,
  FL_RAFT_MSG_SNAPSHOT = 9,
  FL_RAFT_MSG_TIMEOUT_NOW = 10,
  FL_RAFT_MSG_READ_INDEX = 11,
  FL_RAFT_MSG_READ_INDEX_RESP = 12,
  FL_RAFT_MSG_TYPE_COUNT = 13,
} fl_raft_message_type;

const char *fl_raft_message_type_name(uint32_t type);

/*
 * A message between two members of one group. Field use by type:
 *   APPEND:          index/log_term = entry before entries, commit, entries
 *   APPEND_RESP:     index = last matched (or rejected probe index),
 *                    reject + reject_hint/log_term = conflict hint
 *   VOTE, PRE_VOTE:  index/log_term = candidate's last entry;
 *                    context = 1 when forced by leader transfer
 *   *_VOTE_RESP:     reject
 *   HEARTBEAT:       commit, context = read-index round
 *   HEARTBEAT_RESP:  context echoed
 *   SNAPSHOT:        snapshot (metadata; the driver ships the data)
 *   READ_INDEX:      context = caller's request id (follower -> leader)
 *   READ_INDEX_RESP: context, index = read index (reject: no read possible)
 */
typedef struct fl_raft_message {
  uint32_t type;
  uint32_t entry_count;
  uint64_t from;
  uint64_t to;
  uint64_t term;
  uint64_t log_term;
  uint64_t index;
  uint64_t commit;
  uint64_t reject_hint;
  uint64_t context;
  bool reject;
  const fl_raft_entry *entries;
  fl_raft_snapshot_meta snapshot;
} fl_raft_message;

typedef struct fl_raft_read_state {
  uint64_t context; /* the caller's request id */
  uint64_t index;   /* reply once applied >= index */
} fl_raft_read_state;

/*
 * Read access to the log the driver stores. Called synchronously from the
 * core, never re-entrantly. entries() fills out[] with consecutive entries
 * starting at lo, stopping before hi, before out_capacity, or once the sum of
 * lengths would pass max_bytes (at least one entry is always returned).
 * Returns 0, FL_RAFT_E_COMPACTED (lo below the first index) or
 * FL_RAFT_E_UNAVAILABLE. snapshot() gives the latest snapshot's metadata.
 */
typedef struct fl_raft_storage {
  void *context;
  int (*entries)(void *context, uint64_t lo, uint64_t hi, uint64_t max_bytes, fl_raft_entry *out,
                 uint32_t out_capacity, uint32_t *out_count);
  int (*snapshot)(void *context, fl_raft_snapshot_meta *out);
} fl_raft_storage;

/*
 * Tunables shared (read-only) by every group of a shard. Times in ticks.
 * The core keeps a pointer: the options outlive every group using them.
 */
typedef struct fl_raft_options {
  uint32_t election_ticks;        /* randomized in [election, 2*election) */
  uint32_t heartbeat_ticks;       /* < election_ticks */
  bool pre_vote;                  /* ask before bumping the term */
  bool check_quorum;              /* leader steps down without a quorum */
  bool lease_read;                /* read index without a round (needs check_quorum) */
  uint32_t max_inflight_messages; /* per follower in replicate state */
  uint64_t max_inflight_bytes;    /* per follower in replicate state */
  uint32_t max_entries_per_message;
  uint64_t max_bytes_per_message;
  uint64_t max_uncommitted_bytes; /* proposals beyond this are refused */
  uint64_t max_apply_bytes;       /* committed bytes handed out per update */
} fl_raft_options;

/* Sensible defaults for every field. */
void fl_raft_options_default(fl_raft_options *options);
/* 0 when the options are usable, FL_RAFT_E_INVALID otherwise. */
int fl_raft_options_validate(const fl_raft_options *options);

/*
 * What a group restarts from. For a brand-new group: snapshot.index = 0,
 * snapshot.term = 0, snapshot.conf = initial members, last_index = 0.
 * For a node joining an existing group: an empty configuration; it learns
 * its configuration from the leader.
 * term_runs lists (first index, term) of each run of equal terms in the log
 * after the snapshot, ascending; the core copies it.
 * applied is where the state machine stands (>= snapshot.index); the
 * configuration changes in (snapshot.index, applied] are read back through
 * the storage callbacks, which must serve them during fl_raft_create().
 */
typedef struct fl_raft_term_run {
  uint64_t first_index;
  uint64_t term;
} fl_raft_term_run;

typedef struct fl_raft_restore {
  fl_raft_hard_state hard_state;
  fl_raft_snapshot_meta snapshot;
  uint64_t last_index;
  const fl_raft_term_run *term_runs;
  uint32_t term_run_count;
  uint64_t applied;
} fl_raft_restore;

/* The output of the core between two fl_raft_advance() calls. */
typedef struct fl_raft_update {
  /* soft state, for the driver's routing */
  fl_raft_role role;
  uint64_t leader;
  uint64_t term;

  /*
   * The write: persist hard_state (when hard_state_changed), install
   * snapshot (when non-NULL: replaces the whole log and the state machine),
   * then replace the log from entries[0].index on with entries. has_write
   * says whether any of the three is present; write_id names it in
   * fl_raft_persisted().
   */
  bool has_write;
  uint64_t write_id;
  bool hard_state_changed;
  fl_raft_hard_state hard_state;
  const fl_raft_snapshot_meta *snapshot;
  const fl_raft_entry *entries;
  uint32_t entry_count;

  /* send now / send only once write_id is durable */
  const fl_raft_message *messages;
  uint32_t message_count;
  const fl_raft_message *messages_after_write;
  uint32_t message_after_write_count;

  /* apply in order (after the snapshot, when there is one) */
  const fl_raft_entry *committed;
  uint32_t committed_count;
  const fl_raft_read_state *read_states;
  uint32_t read_state_count;
} fl_raft_update;

typedef struct fl_raft fl_raft;

/*
 * Creates a group member with id `self` (never 0). `options` and `storage`
 * are borrowed for the group's lifetime; `restore` is copied. `seed` drives
 * the randomized election timeout (mix the group and node ids into it).
 * Returns NULL on bad input or out of memory.
 */
fl_raft *fl_raft_create(uint64_t self, const fl_raft_options *options,
                        const fl_raft_storage *storage, const fl_raft_restore *restore,
                        uint64_t seed);
void fl_raft_destroy(fl_raft *r);

/* Inputs. */
void fl_raft_tick(fl_raft *r);
int fl_raft_step(fl_raft *r, const fl_raft_message *message);
/* Appends a batch of commands (FL_RAFT_ENTRY_NORMAL) on the leader. */
int fl_raft_propose(fl_raft *r, const uint8_t *const *data, const uint32_t *lengths,
                    uint32_t count);
/* Proposes one membership change (several ops: joint consensus). */
int fl_raft_propose_change(fl_raft *r, const fl_raft_change *changes, uint32_t count,
                           bool auto_leave);
/* Leaves a joint configuration entered with auto_leave = false. */
int fl_raft_propose_leave_joint(fl_raft *r);
int fl_raft_transfer_leader(fl_raft *r, uint64_t target);
/* Linearizable read: a read state with `context` is emitted when safe. */
int fl_raft_read_index(fl_raft *r, uint64_t context);
void fl_raft_persisted(fl_raft *r, uint64_t write_id);
/* The log below and including `index` is gone (a snapshot covers it). */
int fl_raft_compact(fl_raft *r, uint64_t index);
void fl_raft_report_unreachable(fl_raft *r, uint64_t node);
void fl_raft_report_snapshot(fl_raft *r, uint64_t node, bool success);
/* Starts an election at once (tests, operators). */
void fl_raft_campaign(fl_raft *r);

/* Outputs. */
bool fl_raft_has_update(const fl_raft *r);
void fl_raft_get_update(fl_raft *r, fl_raft_update *update);
void fl_raft_advance(fl_raft *r, const fl_raft_update *update);

/* Introspection. */
typedef struct fl_raft_status {
  uint64_t id;
  fl_raft_role role;
  uint64_t term;
  uint64_t vote;
  uint64_t leader;
  uint64_t commit;
  uint64_t applied;
  uint64_t first_index;
  uint64_t last_index;
  uint64_t stable_index; /* durable and matching the current log */
  uint64_t lead_transferee;
  fl_raft_conf conf;
} fl_raft_status;

void fl_raft_get_status(const fl_raft *r, fl_raft_status *status);
/* Term of `index`, or 0 when outside [first_index - 1, last_index]. */
uint64_t fl_raft_term_at(const fl_raft *r, uint64_t index);
/* Progress of a follower as the leader sees it; false if unknown. */
bool fl_raft_peer_match(const fl_raft *r, uint64_t node, uint64_t *match, uint64_t *next);
/* Bytes this group holds on the heap plus its struct. */
size_t fl_raft_memory_bytes(const fl_raft *r);
/* Releases buffers an idle group does not need. */
void fl_raft_shrink(fl_raft *r);
/* Asserts every internal invariant; returns false (and names it) if broken. */
bool fl_raft_check_invariants(const fl_raft *r, const char **broken);

#ifdef __cplusplus
}
#endif

#endif
