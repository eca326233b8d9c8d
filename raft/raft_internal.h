/*
 * raft_internal.h - the layout of one group and the functions the core's
 * files share. Nothing here is seen outside raft/.
 *
 * Memory: an idle follower holds the fl_raft struct and its members (the
 * configuration, sized to the members it has). Everything sized by traffic
 * (unstable entries, outbox, progress, votes, reads) is allocated when first
 * needed and released by fl_raft_shrink() or on losing leadership.
 */
#ifndef FLOTILLA_RAFT_INTERNAL_H
#define FLOTILLA_RAFT_INTERNAL_H

#include "raft/raft.h"

#include <assert.h>

enum fl_raft_progress_state {
  FL_PROGRESS_PROBE = 0,     /* one message at a time until the match is found */
  FL_PROGRESS_REPLICATE = 1, /* pipelined, bounded by the inflight window */
  FL_PROGRESS_SNAPSHOT = 2,  /* waiting for a snapshot to be installed */
};

/* Messages sent to one follower and not yet acknowledged, oldest first. */
typedef struct fl_raft_inflight {
  uint64_t last_index;
  uint64_t bytes;
} fl_raft_inflight;

typedef struct fl_raft_inflights {
  fl_raft_inflight *ring; /* capacity = options->max_inflight_messages */
  uint32_t start;
  uint32_t count;
  uint64_t bytes;
} fl_raft_inflights;

/* The leader's view of one member (voter, outgoing voter or learner). */
typedef struct fl_raft_progress {
  uint64_t node;
  uint64_t match;
  uint64_t next;
  uint64_t pending_snapshot;
  uint64_t read_round; /* highest read-index round this member confirmed */
  uint64_t lease_tick; /* leader tick of the newest heartbeat it echoed */
  uint8_t state;
  bool probe_sent;
  bool recent_active;
  fl_raft_inflights inflights;
} fl_raft_progress;

typedef struct fl_raft_vote {
  uint64_t node;
  bool granted;
} fl_raft_vote;

/* A linearizable read waiting for its round (and the leader's first commit). */
typedef struct fl_raft_pending_read {
  uint64_t context;
  uint64_t from;  /* member that asked (self for local reads) */
  uint64_t index; /* commit index when registered; 0 = not yet assigned */
  uint64_t round;
} fl_raft_pending_read;

/* A write handed to the driver and not yet reported durable. */
typedef struct fl_raft_write {
  uint64_t id;
  uint64_t end_index; /* log durable up to here once it completes; 0 = none */
  uint64_t term;      /* hard state it carries */
  uint64_t vote;
} fl_raft_write;

/* A growable array with a hard bound, for the per-update buffers. */
typedef struct fl_raft_vector {
  void *items;
  uint32_t count;
  uint32_t capacity;
} fl_raft_vector;

/*
 * What only a busy group needs: the buffers of the update being built, the
 * writes in flight and the pending reads. Allocated by the first input
 * (fl_raft_outbox_ensure); fl_raft_shrink() frees it once all of it is empty,
 * so an idle group does not carry these vectors in its struct.
 */
typedef struct fl_raft_outbox {
  fl_raft_vector messages;       /* fl_raft_message */
  fl_raft_vector message_firsts; /* uint32_t: first pool entry of each message */
  fl_raft_vector after_write;    /* fl_raft_message */
  fl_raft_vector after_write_firsts;
  fl_raft_vector entry_pool; /* fl_raft_entry referenced by messages */
  fl_raft_vector committed;  /* fl_raft_entry */
  fl_raft_vector read_states;
  fl_raft_vector writes; /* fl_raft_write, oldest first */
  fl_raft_vector reads;  /* fl_raft_pending_read */
} fl_raft_outbox;

/*
 * The configuration as a group keeps it: only the ids it has, voters then
 * outgoing voters then learners. An fl_raft_conf holds room for every bound
 * (160 bytes); a 3-voter group needs 24. While the group is busy (its outbox
 * exists) the allocation has room for FL_RAFT_MAX_MEMBERS ids, so applying a
 * configuration never allocates and cannot fail; fl_raft_shrink() trims it.
 */
typedef struct fl_raft_members {
  uint8_t voter_count;
  uint8_t outgoing_count;
  uint8_t learner_count;
  uint8_t auto_leave;
  uint8_t capacity; /* ids the allocation has room for */
  uint64_t ids[];
} fl_raft_members;

struct fl_raft {
  uint64_t id;
  const fl_raft_options *options;
  const fl_raft_storage *storage;
  uint64_t random_state;

  /* hard state and role */
  uint64_t term;
  uint64_t vote;
  uint64_t commit;
  uint64_t leader;
  uint8_t role;
  bool soft_state_dirty;   /* role or leader changed since the last update */
  bool update_outstanding; /* between get_update and advance */
  bool committed_in_term;  /* leader committed an entry of its term */
  bool lease_revoked;      /* a TIMEOUT_NOW left: another leader may appear */
  bool fresh_start;        /* restarted: honour any lease we may have granted */
  uint8_t vote_count;      /* bounded by FL_RAFT_MAX_MEMBERS */
  uint32_t election_elapsed;
  uint32_t heartbeat_elapsed;
  uint32_t randomized_election_timeout;
  uint32_t progress_count;
  uint64_t tick_count; /* ticks since creation: the leader lease clock */

  /* log */
  uint64_t first_index;   /* snapshot index + 1 */
  uint64_t snapshot_term; /* term at first_index - 1 */
  uint64_t last_index;
  uint64_t stable_index; /* durable and matching the current log */
  uint64_t applied;
  uint64_t unstable_first;     /* entries from here on are not in storage yet */
  fl_raft_term_run *term_runs; /* inline_run until a second term appears */
  uint32_t term_run_count;
  uint32_t term_run_capacity;
  fl_raft_term_run inline_run;
  fl_raft_vector unstable; /* fl_raft_entry */
  fl_raft_snapshot_meta *pending_snapshot;

  /* persistence */
  uint64_t write_sequence;
  fl_raft_hard_state last_written; /* hard state of the newest write */
  uint64_t durable_term;
  uint64_t durable_vote;

  /* configuration */
  fl_raft_members *members; /* never NULL after creation */
  uint64_t pending_conf_index;
  uint8_t *conf_buffer;

  /* leader and candidate state */
  fl_raft_progress *progress;
  fl_raft_vote *votes;
  uint64_t lead_transferee;
  uint64_t uncommitted_bytes;
  uint64_t read_round_sent;

  /* the update being built, writes and reads; NULL while idle */
  fl_raft_outbox *outbox;
};
/* Every idle group on a node carries one: keep it within its allocation
 * size class (idle-group memory budget, docs/raft.md). */
FL_STATIC_ASSERT(sizeof(struct fl_raft) <= 320, "an idle group's fl_raft fits 320 bytes");

/* vector.c-like helpers (raft.c) */
void *fl_raft_vector_push(fl_raft_vector *vector, size_t item_size, uint32_t bound);
void fl_raft_vector_release(fl_raft_vector *vector);
int fl_raft_vector_reserve(fl_raft_vector *vector, size_t item_size, uint32_t need);
FL_STATIC_ASSERT(FL_RAFT_MAX_MEMBERS <= UINT8_MAX, "vote_count is a byte");
#define FL_VECTOR_AT(vector, type, i) (((type *)(vector)->items)[i])

/* random (raft.c) */
uint64_t fl_raft_random(fl_raft *r);

/* conf.c */
void fl_raft_conf_clear(fl_raft_conf *conf);
int fl_raft_conf_apply_changes(const fl_raft_conf *current, const fl_raft_change *changes,
                               uint32_t count, bool auto_leave, fl_raft_conf *out);
void fl_raft_conf_leave_joint(const fl_raft_conf *current, fl_raft_conf *out);
bool fl_raft_conf_is_member(const fl_raft_conf *conf, uint64_t node);
bool fl_raft_is_promotable(const fl_raft *r);

/* members (conf.c) */
static inline const uint64_t *fl_raft_voters(const fl_raft *r) {
  return r->members->ids;
}
static inline const uint64_t *fl_raft_outgoing(const fl_raft *r) {
  return r->members->ids + r->members->voter_count;
}
static inline bool fl_raft_is_joint(const fl_raft *r) {
  return r->members->outgoing_count > 0;
}
/* A voter of the incoming or the outgoing configuration. */
bool fl_raft_has_voter(const fl_raft *r, uint64_t node);
void fl_raft_get_conf(const fl_raft *r, fl_raft_conf *out);
/* Makes room for `capacity` ids; 0 or FL_RAFT_E_NOMEM. */
int fl_raft_members_reserve(fl_raft *r, uint32_t capacity);
/* Replaces the configuration; the room must be there (busy group). */
void fl_raft_set_conf(fl_raft *r, const fl_raft_conf *conf);
/* Trims the allocation to the ids the group has. */
void fl_raft_members_fit(fl_raft *r);

/* quorum.c */
typedef enum fl_vote_result { FL_VOTE_PENDING, FL_VOTE_LOST, FL_VOTE_WON } fl_vote_result;
uint64_t fl_raft_quorum_index(const fl_raft *r, uint64_t (*value)(const fl_raft *, uint64_t));
fl_vote_result fl_raft_vote_result(const fl_raft *r);
uint64_t fl_raft_match_of(const fl_raft *r, uint64_t node);
uint64_t fl_raft_read_round_of(const fl_raft *r, uint64_t node);
bool fl_raft_lease_valid(const fl_raft *r);
bool fl_raft_quorum_active(const fl_raft *r);

/* log.c */
int fl_raft_log_init(fl_raft *r, const fl_raft_restore *restore);
uint64_t fl_raft_last_term(const fl_raft *r);
bool fl_raft_log_matches(const fl_raft *r, uint64_t index, uint64_t term);
int fl_raft_log_append(fl_raft *r, const fl_raft_entry *entries, uint32_t count);
void fl_raft_log_truncate(fl_raft *r, uint64_t keep_through);
int fl_raft_log_entries(fl_raft *r, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                        fl_raft_entry *out, uint32_t capacity, uint32_t *count);
uint64_t fl_raft_find_conflict_by_term(const fl_raft *r, uint64_t index, uint64_t term);
bool fl_raft_is_up_to_date(const fl_raft *r, uint64_t last_index, uint64_t last_term);
void fl_raft_log_restore(fl_raft *r, const fl_raft_snapshot_meta *meta);
void fl_raft_commit_to(fl_raft *r, uint64_t commit);
uint32_t fl_raft_unstable_room(const fl_raft *r);

/* progress.c */
int fl_raft_progress_reset(fl_raft *r);
void fl_raft_progress_release(fl_raft *r);
int fl_raft_progress_sync_conf(fl_raft *r);
fl_raft_progress *fl_raft_progress_find(fl_raft *r, uint64_t node);
void fl_raft_progress_become_probe(fl_raft_progress *p);
void fl_raft_progress_shrink(fl_raft *r);
int fl_raft_progress_become_replicate(fl_raft *r, fl_raft_progress *p);
void fl_raft_progress_become_snapshot(fl_raft_progress *p, uint64_t snapshot_index);
bool fl_raft_progress_maybe_update(fl_raft_progress *p, uint64_t index);
bool fl_raft_progress_maybe_decrease(fl_raft_progress *p, uint64_t rejected, uint64_t hint);
bool fl_raft_progress_is_paused(const fl_raft *r, const fl_raft_progress *p);
void fl_raft_progress_sent(fl_raft *r, fl_raft_progress *p, uint64_t last_index, uint64_t bytes);
void fl_raft_inflights_free_to(fl_raft_inflights *in, uint32_t capacity, uint64_t index);
void fl_raft_inflights_free_first(fl_raft_inflights *in, uint32_t capacity);

/* election.c */
void fl_raft_become_follower(fl_raft *r, uint64_t term, uint64_t leader);
void fl_raft_become_leader(fl_raft *r);
void fl_raft_start_campaign(fl_raft *r, bool pre_vote, bool forced);
void fl_raft_tick_election(fl_raft *r);
void fl_raft_handle_vote_request(fl_raft *r, const fl_raft_message *m);
void fl_raft_handle_vote_response(fl_raft *r, const fl_raft_message *m);
void fl_raft_count_self_vote(fl_raft *r);
void fl_raft_reset_election_timeout(fl_raft *r);

/* replication.c */
bool fl_raft_send_append(fl_raft *r, fl_raft_progress *p, bool send_if_empty);
void fl_raft_broadcast_append(fl_raft *r);
void fl_raft_broadcast_heartbeat(fl_raft *r);
bool fl_raft_maybe_commit(fl_raft *r);
void fl_raft_handle_append(fl_raft *r, const fl_raft_message *m);
void fl_raft_handle_append_response(fl_raft *r, const fl_raft_message *m);
void fl_raft_handle_heartbeat(fl_raft *r, const fl_raft_message *m);
void fl_raft_handle_heartbeat_response(fl_raft *r, const fl_raft_message *m);
void fl_raft_handle_snapshot(fl_raft *r, const fl_raft_message *m);
int fl_raft_append_own(fl_raft *r, const uint8_t *const *data, const uint32_t *lengths,
                       const uint32_t *types, uint32_t count);

/* membership.c */
void fl_raft_apply_conf_entry(fl_raft *r, const fl_raft_entry *entry);
void fl_raft_maybe_auto_leave(fl_raft *r);
void fl_raft_abort_transfer(fl_raft *r);
void fl_raft_handle_timeout_now(fl_raft *r, const fl_raft_message *m);
void fl_raft_check_transfer(fl_raft *r, const fl_raft_progress *p);

/* read_index.c */
int fl_raft_register_read(fl_raft *r, uint64_t context, uint64_t from);
void fl_raft_release_reads(fl_raft *r);
void fl_raft_assign_waiting_reads(fl_raft *r);
void fl_raft_handle_read_index(fl_raft *r, const fl_raft_message *m);
void fl_raft_handle_read_index_response(fl_raft *r, const fl_raft_message *m);
void fl_raft_drop_reads(fl_raft *r);
int fl_raft_emit_read_state(fl_raft *r, uint64_t context, uint64_t index);

/* outbox (raft.c) */
/* Makes sure the outbox exists; every input calls it first. */
int fl_raft_outbox_ensure(fl_raft *r);
fl_raft_message *fl_raft_new_message(fl_raft *r, uint32_t type, uint64_t to);
fl_raft_message *fl_raft_new_response(fl_raft *r, uint32_t type, uint64_t to);
/* Reserves room for `capacity` entries at the end of the entry pool. */
fl_raft_entry *fl_raft_message_entries(fl_raft *r, uint32_t capacity);
/* Gives the message created last the pool entries [first, first + count). */
void fl_raft_attach_entries(fl_raft *r, uint32_t first, uint32_t count);

static inline uint64_t fl_min_u64(uint64_t a, uint64_t b) {
  return a < b ? a : b;
}
static inline uint64_t fl_max_u64(uint64_t a, uint64_t b) {
  return a > b ? a : b;
}

#endif
