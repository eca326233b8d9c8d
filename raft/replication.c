/*
 * replication.c - AppendEntries, heartbeats, snapshots and the commit rule.
 *
 * The leader appends its own entries and sends them to followers in the same
 * step: its disk write runs in parallel with replication, and it counts
 * itself in a quorum only up to stable_index (what its disk holds). It
 * commits by counting only entries of its current term (Raft Figure 8);
 * earlier entries commit with them.
 *
 * Followers answer APPEND with APPEND_RESP sent after their write is durable.
 * A rejection carries a hint (index, term) so the leader skips a whole
 * conflicting term per round trip.
 */
#include "raft/raft_internal.h"

#include <stdlib.h>
#include <string.h>

int fl_raft_append_own(fl_raft *r, const uint8_t *const *data, const uint32_t *lengths,
                       const uint32_t *types, uint32_t count) {
  if (count > fl_raft_unstable_room(r)) {
    return FL_RAFT_E_BUSY;
  }
  for (uint32_t i = 0; i < count; i++) {
    fl_raft_entry e = {
        .term = r->term,
        .index = r->last_index + 1,
        .type = types[i],
        .length = lengths[i],
        .data = data[i],
    };
    int rc = fl_raft_log_append(r, &e, 1);
    if (rc != 0) {
      return rc;
    }
    r->uncommitted_bytes += lengths[i];
  }
  /* The leader's own durability is tracked by stable_index, not progress. */
  return 0;
}

static bool send_snapshot(fl_raft *r, fl_raft_progress *p) {
  fl_raft_snapshot_meta meta;
  if (r->storage->snapshot(r->storage->context, &meta) != 0 || meta.index < p->next - 1) {
    return false; /* nothing that covers the gap yet: retry later */
  }
  fl_raft_message *m = fl_raft_new_message(r, FL_RAFT_MSG_SNAPSHOT, p->node);
  if (m == NULL) {
    return false;
  }
  m->snapshot = meta;
  fl_raft_progress_become_snapshot(p, meta.index);
  return true;
}

/*
 * Sends the next batch to one follower if its flow control allows. Entries
 * come from the unstable array or storage; a follower behind the first index
 * gets a snapshot instead.
 */
bool fl_raft_send_append(fl_raft *r, fl_raft_progress *p, bool send_if_empty) {
  if (p->node == r->id || fl_raft_progress_is_paused(r, p)) {
    return false;
  }
  uint64_t previous = p->next - 1;
  uint64_t previous_term = fl_raft_term_at(r, previous);
  if (previous_term == 0 && previous != 0) {
    return send_snapshot(r, p);
  }
  uint32_t capacity = r->options->max_entries_per_message;
  uint32_t first = r->outbox->entry_pool.count;
  fl_raft_entry *slots = fl_raft_message_entries(r, capacity);
  uint32_t count = 0;
  if (slots == NULL) {
    return false;
  }
  int rc = fl_raft_log_entries(r, p->next, p->next + capacity, r->options->max_bytes_per_message,
                               slots, capacity, &count);
  r->outbox->entry_pool.count = first + count;
  if (rc == FL_RAFT_E_COMPACTED) {
    return send_snapshot(r, p);
  }
  if (rc != 0 || (count == 0 && !send_if_empty)) {
    return false;
  }
  fl_raft_message *m = fl_raft_new_message(r, FL_RAFT_MSG_APPEND, p->node);
  if (m == NULL) {
    r->outbox->entry_pool.count = first;
    return false;
  }
  m->index = previous;
  m->log_term = previous_term;
  m->commit = r->commit;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < count; i++) {
    bytes += slots[i].length;
  }
  fl_raft_attach_entries(r, first, count);
  fl_raft_progress_sent(r, p, previous + count, bytes);
  return true;
}

void fl_raft_broadcast_append(fl_raft *r) {
  for (uint32_t i = 0; i < r->progress_count; i++) {
    fl_raft_send_append(r, &r->progress[i], true);
  }
}

void fl_raft_broadcast_heartbeat(fl_raft *r) {
  for (uint32_t i = 0; i < r->progress_count; i++) {
    fl_raft_progress *p = &r->progress[i];
    if (p->node == r->id) {
      continue;
    }
    fl_raft_message *m = fl_raft_new_message(r, FL_RAFT_MSG_HEARTBEAT, p->node);
    if (m == NULL) {
      return;
    }
    /* Never tell a follower to commit past what it is known to hold. */
    m->commit = fl_min_u64(p->match, r->commit);
    m->context = r->read_round_sent;
    m->index = r->tick_count; /* echoed back: extends the lease */
  }
}

bool fl_raft_maybe_commit(fl_raft *r) {
  uint64_t index = fl_raft_quorum_index(r, fl_raft_match_of);
  if (index == UINT64_MAX || index <= r->commit || index > r->last_index) {
    return false;
  }
  if (fl_raft_term_at(r, index) != r->term) {
    return false; /* Figure 8: earlier terms commit only under a new one */
  }
  r->commit = index;
  if (!r->committed_in_term) {
    r->committed_in_term = true;
    fl_raft_assign_waiting_reads(r);
  }
  return true;
}

static void respond_append(fl_raft *r, uint64_t to, uint64_t index) {
  fl_raft_message *resp = fl_raft_new_response(r, FL_RAFT_MSG_APPEND_RESP, to);
  if (resp != NULL) {
    resp->index = index;
  }
}

static void reject_append(fl_raft *r, const fl_raft_message *m) {
  uint64_t hint =
      fl_raft_find_conflict_by_term(r, fl_min_u64(m->index, r->last_index), m->log_term);
  fl_raft_message *resp = fl_raft_new_response(r, FL_RAFT_MSG_APPEND_RESP, m->from);
  if (resp != NULL) {
    resp->index = m->index;
    resp->reject = true;
    resp->reject_hint = hint;
    resp->log_term = fl_raft_term_at(r, hint);
  }
}

/* Index of the first entry that is new or conflicts; 0 when none. */
static uint32_t first_new_entry(const fl_raft *r, const fl_raft_message *m) {
  for (uint32_t i = 0; i < m->entry_count; i++) {
    const fl_raft_entry *e = &m->entries[i];
    if (e->index > r->last_index || fl_raft_term_at(r, e->index) != e->term) {
      return i;
    }
  }
  return m->entry_count;
}

static bool entries_well_formed(const fl_raft_message *m) {
  for (uint32_t i = 0; i < m->entry_count; i++) {
    const fl_raft_entry *e = &m->entries[i];
    if (e->index != m->index + 1 + i || e->term == 0 || e->term > m->term ||
        e->term < (i == 0 ? m->log_term : m->entries[i - 1].term) ||
        (e->length > 0 && e->data == NULL)) {
      return false;
    }
  }
  return true;
}

void fl_raft_handle_append(fl_raft *r, const fl_raft_message *m) {
  if (m->index < r->commit) {
    respond_append(r, m->from, r->commit);
    return;
  }
  if (!entries_well_formed(m)) {
    return;
  }
  if (!fl_raft_log_matches(r, m->index, m->log_term)) {
    reject_append(r, m);
    return;
  }
  uint32_t start = first_new_entry(r, m);
  uint32_t count = m->entry_count - start;
  count = (uint32_t)fl_min_u64(count, fl_raft_unstable_room(r));
  if (count > 0) {
    uint64_t conflict = m->entries[start].index;
    if (conflict <= r->commit) {
      return; /* would rewrite committed history: not from a valid leader */
    }
    fl_raft_log_truncate(r, conflict - 1);
    if (fl_raft_log_append(r, &m->entries[start], count) != 0) {
      return;
    }
  }
  uint64_t last_new = m->index + start + count;
  fl_raft_commit_to(r, fl_min_u64(m->commit, last_new));
  respond_append(r, m->from, last_new);
}

void fl_raft_handle_heartbeat(fl_raft *r, const fl_raft_message *m) {
  fl_raft_commit_to(r, m->commit);
  fl_raft_message *resp = fl_raft_new_message(r, FL_RAFT_MSG_HEARTBEAT_RESP, m->from);
  if (resp != NULL) {
    resp->context = m->context;
    resp->index = m->index;
  }
}

void fl_raft_handle_snapshot(fl_raft *r, const fl_raft_message *m) {
  const fl_raft_snapshot_meta *meta = &m->snapshot;
  bool sane = fl_raft_conf_is_valid(&meta->conf) && meta->conf.voter_count > 0 &&
              meta->term <= m->term && (meta->term > 0) == (meta->index > 0);
  if (!sane) {
    return;
  }
  if (meta->index <= r->commit) {
    respond_append(r, m->from, r->commit);
    return;
  }
  if (fl_raft_log_matches(r, meta->index, meta->term)) {
    /* We hold the log it covers: just learn that it is committed. */
    fl_raft_commit_to(r, meta->index);
    respond_append(r, m->from, r->commit);
    return;
  }
  if (r->pending_snapshot == NULL) {
    r->pending_snapshot = malloc(sizeof(*r->pending_snapshot));
    if (r->pending_snapshot == NULL) {
      return;
    }
  }
  *r->pending_snapshot = *meta;
  fl_raft_set_conf(r, &meta->conf);
  fl_raft_log_restore(r, meta);
  respond_append(r, m->from, meta->index);
}

static void handle_append_rejection(fl_raft *r, fl_raft_progress *p, const fl_raft_message *m) {
  uint64_t hint = m->reject_hint;
  if (m->log_term > 0) {
    hint = fl_raft_find_conflict_by_term(r, m->reject_hint, m->log_term);
  }
  if (fl_raft_progress_maybe_decrease(p, m->index, hint)) {
    if (p->state == FL_PROGRESS_REPLICATE) {
      fl_raft_progress_become_probe(p);
    }
    fl_raft_send_append(r, p, true);
  }
}

static void advance_state_on_ack(fl_raft *r, fl_raft_progress *p) {
  if (p->state == FL_PROGRESS_PROBE) {
    fl_raft_progress_become_replicate(r, p);
  } else if (p->state == FL_PROGRESS_SNAPSHOT && p->match >= p->pending_snapshot) {
    fl_raft_progress_become_probe(p);
    fl_raft_progress_become_replicate(r, p);
  } else if (p->state == FL_PROGRESS_REPLICATE) {
    fl_raft_inflights_free_to(&p->inflights, r->options->max_inflight_messages, p->match);
  }
}

void fl_raft_handle_append_response(fl_raft *r, const fl_raft_message *m) {
  fl_raft_progress *p = fl_raft_progress_find(r, m->from);
  if (p == NULL) {
    return;
  }
  p->recent_active = true;
  if (m->index > r->last_index) {
    return; /* acknowledges entries we never sent: not from a real follower */
  }
  if (m->reject) {
    handle_append_rejection(r, p, m);
    return;
  }
  bool updated = fl_raft_progress_maybe_update(p, m->index);
  /* A probe acknowledged at the current match also proves the match. */
  bool probe_confirmed = p->state == FL_PROGRESS_PROBE && p->match == m->index;
  if (!updated && !probe_confirmed) {
    return;
  }
  advance_state_on_ack(r, p);
  if (fl_raft_maybe_commit(r)) {
    fl_raft_broadcast_append(r);
  }
  /* Pipeline: keep the window full. */
  while (fl_raft_send_append(r, p, false)) {
  }
  fl_raft_check_transfer(r, p);
}

void fl_raft_handle_heartbeat_response(fl_raft *r, const fl_raft_message *m) {
  fl_raft_progress *p = fl_raft_progress_find(r, m->from);
  if (p == NULL) {
    return;
  }
  p->recent_active = true;
  p->probe_sent = false;
  /*
   * A full window after a heartbeat round trip means appends were lost:
   * free one slot so the next append (with its gap) draws a rejection,
   * which sends the follower back to probing.
   */
  if (p->state == FL_PROGRESS_REPLICATE && fl_raft_progress_is_paused(r, p)) {
    fl_raft_inflights_free_first(&p->inflights, r->options->max_inflight_messages);
  }
  if (p->match < r->last_index) {
    /* Even with nothing new past next: the empty append probes the match. */
    fl_raft_send_append(r, p, true);
  }
  p->lease_tick = fl_max_u64(p->lease_tick, fl_min_u64(m->index, r->tick_count));
  if (m->context > p->read_round) {
    p->read_round = fl_min_u64(m->context, r->read_round_sent);
    fl_raft_release_reads(r);
  }
}
