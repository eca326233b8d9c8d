/*
 * raft.c - the group object: creation, the step dispatcher, the update
 * handed to the driver and the bookkeeping of writes in flight.
 *
 * Message handling order in fl_raft_step():
 *   1. validate (sender, type, term present);
 *   2. term rules: a higher term makes us a follower (except for pre-votes,
 *      granted pre-vote answers, and votes inside a leader lease); a lower
 *      term is ignored, or answered so a stale leader or pre-candidate learns
 *      the current term;
 *   3. dispatch by type and role (election.c, replication.c, read_index.c,
 *      membership.c).
 *
 * Persistence: every update that carries something to persist is a write
 * with an increasing id. fl_raft_persisted(id) completes that write and all
 * earlier ones (the driver's log is ordered). Each write remembers the last
 * index it made durable, capped whenever a later truncation removed part of
 * it, so a late completion never vouches for entries that were overwritten
 * since, even by the same (index, term) appended again.
 */
#include "raft/raft_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- small helpers ---------------------------------------------------- */

void *fl_raft_vector_push(fl_raft_vector *vector, size_t item_size, uint32_t bound) {
  if (vector->count >= bound) {
    return NULL;
  }
  if (vector->count == vector->capacity) {
    uint32_t capacity = vector->capacity ? vector->capacity * 2 : 8;
    if (capacity > bound) {
      capacity = bound;
    }
    void *items = realloc(vector->items, (size_t)capacity * item_size);
    if (items == NULL) {
      return NULL;
    }
    vector->items = items;
    vector->capacity = capacity;
  }
  return (char *)vector->items + (size_t)vector->count++ * item_size;
}

int fl_raft_vector_reserve(fl_raft_vector *vector, size_t item_size, uint32_t need) {
  if (need <= vector->capacity) {
    return 0;
  }
  uint32_t capacity = vector->capacity ? vector->capacity : 8;
  while (capacity < need) {
    capacity *= 2;
  }
  void *items = realloc(vector->items, (size_t)capacity * item_size);
  if (items == NULL) {
    return FL_RAFT_E_NOMEM;
  }
  vector->items = items;
  vector->capacity = capacity;
  return 0;
}

void fl_raft_vector_release(fl_raft_vector *vector) {
  free(vector->items);
  memset(vector, 0, sizeof(*vector));
}

/* splitmix64: small state, good enough spread for election timeouts. */
uint64_t fl_raft_random(fl_raft *r) {
  uint64_t z = (r->random_state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

const char *fl_raft_strerror(int error) {
  switch (error) {
  case FL_RAFT_OK:
    return "ok";
  case FL_RAFT_E_NOT_LEADER:
    return "not the leader";
  case FL_RAFT_E_BUSY:
    return "a bound is full, retry later";
  case FL_RAFT_E_TRANSFERRING:
    return "leader transfer in progress";
  case FL_RAFT_E_CONF_PENDING:
    return "a configuration change is pending";
  case FL_RAFT_E_INVALID:
    return "invalid argument";
  case FL_RAFT_E_COMPACTED:
    return "index compacted";
  case FL_RAFT_E_UNAVAILABLE:
    return "index unavailable";
  case FL_RAFT_E_NOMEM:
    return "out of memory";
  case FL_RAFT_E_TOO_LARGE:
    return "too many uncommitted bytes";
  case FL_RAFT_E_NOT_MEMBER:
    return "not a member";
  default:
    return "unknown error";
  }
}

const char *fl_raft_role_name(fl_raft_role role) {
  static const char *const names[] = {"follower", "pre-candidate", "candidate", "leader"};
  return (unsigned)role < 4 ? names[role] : "unknown";
}

const char *fl_raft_message_type_name(uint32_t type) {
  static const char *const names[FL_RAFT_MSG_TYPE_COUNT] = {
      "none",        "append",        "append-resp",    "vote",           "vote-resp",
      "pre-vote",    "pre-vote-resp", "heartbeat",      "heartbeat-resp", "snapshot",
      "timeout-now", "read-index",    "read-index-resp"};
  return type < FL_RAFT_MSG_TYPE_COUNT ? names[type] : "unknown";
}

/* ---- options ------------------------------------------------------------ */

void fl_raft_options_default(fl_raft_options *options) {
  *options = (fl_raft_options){
      .election_ticks = 10,
      .heartbeat_ticks = 1,
      .pre_vote = true,
      .check_quorum = true,
      .lease_read = false,
      .max_inflight_messages = 256,
      .max_inflight_bytes = 32u << 20,
      .max_entries_per_message = 1024,
      .max_bytes_per_message = 1u << 20,
      .max_uncommitted_bytes = 64u << 20,
      .max_apply_bytes = 4u << 20,
  };
}

int fl_raft_options_validate(const fl_raft_options *o) {
  bool ok =
      o->election_ticks >= 2 && o->heartbeat_ticks >= 1 && o->heartbeat_ticks < o->election_ticks &&
      o->max_inflight_messages >= 1 && o->max_inflight_messages <= FL_RAFT_MAX_INFLIGHT_MESSAGES &&
      o->max_inflight_bytes > 0 && o->max_entries_per_message >= 1 &&
      o->max_entries_per_message <= FL_RAFT_MAX_UNSTABLE_ENTRIES && o->max_bytes_per_message > 0 &&
      o->max_uncommitted_bytes > 0 && o->max_apply_bytes > 0 && (!o->lease_read || o->check_quorum);
  return ok ? 0 : FL_RAFT_E_INVALID;
}

/* ---- lifecycle ------------------------------------------------------------ */

static int restore_state(fl_raft *r, const fl_raft_restore *restore) {
  int rc = fl_raft_log_init(r, restore);
  if (rc != 0) {
    return rc;
  }
  const fl_raft_hard_state *hs = &restore->hard_state;
  if (hs->commit > r->last_index || hs->term < fl_raft_last_term(r) ||
      hs->term > FL_RAFT_MAX_TERM_OR_INDEX || r->last_index > FL_RAFT_MAX_TERM_OR_INDEX ||
      !fl_raft_conf_is_valid(&restore->snapshot.conf)) {
    return FL_RAFT_E_INVALID;
  }
  if (restore->applied < restore->snapshot.index || restore->applied > r->last_index) {
    return FL_RAFT_E_INVALID;
  }
  r->term = hs->term;
  r->vote = hs->vote;
  r->commit = fl_max_u64(hs->commit, restore->snapshot.index);
  r->applied = restore->applied;
  r->commit = fl_max_u64(r->commit, r->applied);
  r->last_written = (fl_raft_hard_state){r->term, r->vote, r->commit};
  r->durable_term = r->term;
  r->durable_vote = r->vote;
  fl_raft_set_conf(r, &restore->snapshot.conf);
  return 0;
}

/*
 * The snapshot's configuration is the one as of snapshot.index; entries in
 * (snapshot.index, applied] were applied before the restart and will not be
 * handed out again, so their configuration changes are replayed here.
 */
static int replay_applied_conf_changes(fl_raft *r, uint64_t from, uint64_t through) {
  fl_raft_entry batch[64];
  fl_raft_conf conf;
  uint64_t next = from;
  while (next <= through) {
    uint32_t count = 0;
    int rc = fl_raft_log_entries(r, next, through + 1, UINT64_MAX, batch, 64, &count);
    if (rc != 0 || count == 0) {
      return rc != 0 ? rc : FL_RAFT_E_UNAVAILABLE;
    }
    for (uint32_t i = 0; i < count; i++) {
      if (batch[i].type != FL_RAFT_ENTRY_CONF_CHANGE) {
        continue;
      }
      if (fl_raft_conf_decode(batch[i].data, batch[i].length, &conf) != 0) {
        return FL_RAFT_E_INVALID;
      }
      fl_raft_set_conf(r, &conf);
    }
    next += count;
  }
  return 0;
}

fl_raft *fl_raft_create(uint64_t self, const fl_raft_options *options,
                        const fl_raft_storage *storage, const fl_raft_restore *restore,
                        uint64_t seed) {
  if (self == 0 || options == NULL || storage == NULL || restore == NULL ||
      storage->entries == NULL || storage->snapshot == NULL ||
      fl_raft_options_validate(options) != 0) {
    return NULL;
  }
  fl_raft *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return NULL;
  }
  r->id = self;
  r->term_runs = &r->inline_run;
  r->term_run_capacity = 1;
  r->options = options;
  r->storage = storage;
  r->random_state = seed ^ (self * 0x9e3779b97f4a7c15ULL);
  /* Room for any configuration while the log is replayed; trimmed below. */
  if (fl_raft_members_reserve(r, FL_RAFT_MAX_MEMBERS) != 0 || restore_state(r, restore) != 0 ||
      replay_applied_conf_changes(r, restore->snapshot.index + 1, restore->applied) != 0) {
    fl_raft_destroy(r);
    return NULL;
  }
  fl_raft_members_fit(r);
  r->role = FL_RAFT_FOLLOWER;
  /* We may have acknowledged a leader just before stopping: keep its lease.
   * A group that never saw a term has granted nothing. */
  r->fresh_start = r->term > 0;
  fl_raft_reset_election_timeout(r);
  return r;
}

/* A busy group also keeps room for the largest configuration (see
 * fl_raft_members): every input calls this first, so applying one never
 * needs memory. */
int fl_raft_outbox_ensure(fl_raft *r) {
  if (r->outbox != NULL) {
    assert(r->members->capacity == FL_RAFT_MAX_MEMBERS);
    return 0;
  }
  if (fl_raft_members_reserve(r, FL_RAFT_MAX_MEMBERS) != 0) {
    return FL_RAFT_E_NOMEM;
  }
  r->outbox = calloc(1, sizeof(*r->outbox));
  return r->outbox != NULL ? 0 : FL_RAFT_E_NOMEM;
}

/* Nothing to hand out, no write in flight and no read waiting. */
static bool outbox_is_empty(const fl_raft_outbox *outbox) {
  return outbox->messages.count == 0 && outbox->after_write.count == 0 &&
         outbox->committed.count == 0 && outbox->read_states.count == 0 &&
         outbox->writes.count == 0 && outbox->reads.count == 0;
}

static void release_outbox(fl_raft *r) {
  fl_raft_outbox *outbox = r->outbox;
  if (outbox == NULL) {
    return;
  }
  fl_raft_vector_release(&outbox->messages);
  fl_raft_vector_release(&outbox->message_firsts);
  fl_raft_vector_release(&outbox->after_write);
  fl_raft_vector_release(&outbox->after_write_firsts);
  fl_raft_vector_release(&outbox->entry_pool);
  fl_raft_vector_release(&outbox->committed);
  fl_raft_vector_release(&outbox->read_states);
  fl_raft_vector_release(&outbox->writes);
  fl_raft_vector_release(&outbox->reads);
  free(outbox);
  r->outbox = NULL;
}

static void release_term_runs(fl_raft *r) {
  if (r->term_runs != &r->inline_run) {
    free(r->term_runs);
  }
}

void fl_raft_destroy(fl_raft *r) {
  if (r == NULL) {
    return;
  }
  fl_raft_progress_release(r);
  free(r->votes);
  release_term_runs(r);
  free(r->pending_snapshot);
  free(r->conf_buffer);
  free(r->members);
  fl_raft_vector_release(&r->unstable);
  release_outbox(r);
  free(r);
}

void fl_raft_shrink(fl_raft *r) {
  if (r->update_outstanding) {
    return;
  }
  if (r->outbox != NULL && outbox_is_empty(r->outbox)) {
    release_outbox(r);
    fl_raft_members_fit(r);
  }
  if (r->outbox != NULL && r->outbox->writes.count == 0) {
    fl_raft_vector_release(&r->outbox->writes);
  }
  if (r->outbox != NULL && r->outbox->reads.count == 0) {
    fl_raft_vector_release(&r->outbox->reads);
  }
  if (r->unstable.count == 0) {
    fl_raft_vector_release(&r->unstable);
  }
  fl_raft_progress_shrink(r);
  if (r->pending_conf_index <= r->applied) {
    free(r->conf_buffer);
    r->conf_buffer = NULL;
  }
  if (r->term_run_count <= 1 && r->term_runs != &r->inline_run) {
    if (r->term_run_count == 1) {
      r->inline_run = r->term_runs[0];
    }
    free(r->term_runs);
    r->term_runs = &r->inline_run;
    r->term_run_capacity = 1;
  }
}

static size_t outbox_bytes(const fl_raft_outbox *outbox) {
  if (outbox == NULL) {
    return 0;
  }
  size_t bytes = sizeof(*outbox);
  bytes += outbox->messages.capacity * sizeof(fl_raft_message);
  bytes += outbox->after_write.capacity * sizeof(fl_raft_message);
  bytes +=
      (outbox->message_firsts.capacity + outbox->after_write_firsts.capacity) * sizeof(uint32_t);
  bytes += outbox->entry_pool.capacity * sizeof(fl_raft_entry);
  bytes += outbox->committed.capacity * sizeof(fl_raft_entry);
  bytes += outbox->read_states.capacity * sizeof(fl_raft_read_state);
  bytes += outbox->writes.capacity * sizeof(fl_raft_write);
  bytes += outbox->reads.capacity * sizeof(fl_raft_pending_read);
  return bytes;
}

size_t fl_raft_memory_bytes(const fl_raft *r) {
  size_t bytes = sizeof(*r) + outbox_bytes(r->outbox);
  bytes += sizeof(fl_raft_members) + r->members->capacity * sizeof(uint64_t);
  if (r->term_runs != &r->inline_run) {
    bytes += r->term_run_capacity * sizeof(fl_raft_term_run);
  }
  bytes += r->unstable.capacity * sizeof(fl_raft_entry);
  bytes += r->progress_count * sizeof(fl_raft_progress);
  for (uint32_t i = 0; i < r->progress_count; i++) {
    if (r->progress[i].inflights.ring != NULL) {
      bytes += r->options->max_inflight_messages * sizeof(fl_raft_inflight);
    }
  }
  bytes += r->votes != NULL ? FL_RAFT_MAX_MEMBERS * sizeof(fl_raft_vote) : 0;
  bytes += r->pending_snapshot != NULL ? sizeof(*r->pending_snapshot) : 0;
  return bytes;
}

/* ---- outbox --------------------------------------------------------------- */

static fl_raft_message *push_message(fl_raft *r, fl_raft_vector *list, fl_raft_vector *firsts,
                                     uint32_t type, uint64_t to) {
  if (list->count >= FL_RAFT_MAX_OUTBOX_MESSAGES ||
      fl_raft_vector_reserve(firsts, sizeof(uint32_t), list->count + 1) != 0) {
    return NULL; /* dropped: Raft retries lost messages */
  }
  fl_raft_message *m = fl_raft_vector_push(list, sizeof(*m), FL_RAFT_MAX_OUTBOX_MESSAGES);
  if (m == NULL) {
    return NULL;
  }
  memset(m, 0, sizeof(*m));
  m->type = type;
  m->from = r->id;
  m->to = to;
  m->term = r->term;
  ((uint32_t *)firsts->items)[list->count - 1] = UINT32_MAX;
  return m;
}

fl_raft_message *fl_raft_new_message(fl_raft *r, uint32_t type, uint64_t to) {
  return push_message(r, &r->outbox->messages, &r->outbox->message_firsts, type, to);
}

/* Responses that promise durable state leave only after the write. */
fl_raft_message *fl_raft_new_response(fl_raft *r, uint32_t type, uint64_t to) {
  return push_message(r, &r->outbox->after_write, &r->outbox->after_write_firsts, type, to);
}

fl_raft_entry *fl_raft_message_entries(fl_raft *r, uint32_t capacity) {
  /* Bounded by messages x entries per message, both bounded. */
  if (fl_raft_vector_reserve(&r->outbox->entry_pool, sizeof(fl_raft_entry),
                             r->outbox->entry_pool.count + capacity) != 0) {
    return NULL;
  }
  return (fl_raft_entry *)r->outbox->entry_pool.items + r->outbox->entry_pool.count;
}

void fl_raft_attach_entries(fl_raft *r, uint32_t first, uint32_t count) {
  assert(r->outbox->messages.count > 0);
  fl_raft_message *m =
      &FL_VECTOR_AT(&r->outbox->messages, fl_raft_message, r->outbox->messages.count - 1);
  m->entry_count = count;
  FL_VECTOR_AT(&r->outbox->message_firsts, uint32_t, r->outbox->messages.count - 1) =
      count ? first : UINT32_MAX;
}

/* ---- inputs ----------------------------------------------------------------- */

void fl_raft_tick(fl_raft *r) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return;
  }
  r->tick_count++;
  fl_raft_tick_election(r);
}

void fl_raft_campaign(fl_raft *r) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return;
  }
  if (r->role != FL_RAFT_LEADER) {
    fl_raft_start_campaign(r, r->options->pre_vote, false);
  }
}

int fl_raft_propose(fl_raft *r, const uint8_t *const *data, const uint32_t *lengths,
                    uint32_t count) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return FL_RAFT_E_NOMEM;
  }
  if (r->role != FL_RAFT_LEADER) {
    return FL_RAFT_E_NOT_LEADER;
  }
  if (r->lead_transferee != 0) {
    return FL_RAFT_E_TRANSFERRING;
  }
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (lengths[i] > 0 && data[i] == NULL) {
      return FL_RAFT_E_INVALID;
    }
    bytes += lengths[i];
  }
  if (bytes > 0 && r->uncommitted_bytes + bytes > r->options->max_uncommitted_bytes) {
    return FL_RAFT_E_TOO_LARGE;
  }
  if (count > fl_raft_unstable_room(r)) {
    return FL_RAFT_E_BUSY;
  }
  static const uint32_t normal[1] = {FL_RAFT_ENTRY_NORMAL};
  for (uint32_t i = 0; i < count; i++) {
    int rc = fl_raft_append_own(r, &data[i], &lengths[i], normal, 1);
    if (rc != 0) {
      return rc;
    }
  }
  fl_raft_broadcast_append(r);
  return 0;
}

/* The completion of write `id` and of every write before it. */
void fl_raft_persisted(fl_raft *r, uint64_t write_id) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return;
  }
  fl_raft_vector *in_flight = &r->outbox->writes;
  fl_raft_write *writes = in_flight->items;
  uint32_t done = 0;
  while (done < in_flight->count && writes[done].id <= write_id) {
    r->stable_index = fl_max_u64(r->stable_index, writes[done].end_index);
    r->durable_term = writes[done].term;
    r->durable_vote = writes[done].vote;
    done++;
  }
  if (done == 0) {
    return; /* late, duplicate or from before a restart */
  }
  memmove(writes, writes + done, (in_flight->count - done) * sizeof(*writes));
  in_flight->count -= done;
  assert(r->stable_index <= r->last_index);
  if (r->role == FL_RAFT_LEADER) {
    if (fl_raft_maybe_commit(r)) {
      fl_raft_broadcast_append(r);
    }
    fl_raft_release_reads(r);
  }
  fl_raft_count_self_vote(r);
}

int fl_raft_compact(fl_raft *r, uint64_t index) {
  assert(!r->update_outstanding);
  if (index < r->first_index) {
    return 0;
  }
  if (index > r->applied || index > r->stable_index) {
    return FL_RAFT_E_INVALID;
  }
  uint64_t term = fl_raft_term_at(r, index);
  uint32_t drop = 0;
  while (drop + 1 < r->term_run_count && r->term_runs[drop + 1].first_index <= index + 1) {
    drop++;
  }
  memmove(r->term_runs, r->term_runs + drop, (r->term_run_count - drop) * sizeof(*r->term_runs));
  r->term_run_count -= drop;
  r->first_index = index + 1;
  r->snapshot_term = term;
  if (r->term_run_count > 0) {
    if (r->first_index > r->last_index) {
      r->term_run_count = 0;
    } else if (r->term_runs[0].first_index < r->first_index) {
      r->term_runs[0].first_index = r->first_index;
    }
  }
  return 0;
}

void fl_raft_report_unreachable(fl_raft *r, uint64_t node) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return;
  }
  fl_raft_progress *p = r->role == FL_RAFT_LEADER ? fl_raft_progress_find(r, node) : NULL;
  if (p != NULL && p->state == FL_PROGRESS_REPLICATE) {
    fl_raft_progress_become_probe(p);
  }
}

void fl_raft_report_snapshot(fl_raft *r, uint64_t node, bool success) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return;
  }
  fl_raft_progress *p = r->role == FL_RAFT_LEADER ? fl_raft_progress_find(r, node) : NULL;
  if (p == NULL || p->state != FL_PROGRESS_SNAPSHOT) {
    return;
  }
  if (!success) {
    p->pending_snapshot = 0;
  }
  fl_raft_progress_become_probe(p);
  /* Wait for the follower's answer (or a heartbeat) before probing. */
  p->probe_sent = true;
}
