/*
 * step.c - what a received message does: term rules, then dispatch by role.
 *
 * Term rules (Raft section 5.1, with etcd's pre-vote and lease refinements):
 *  - higher term: become a follower of that term, except
 *      * PRE_VOTE never changes our term (the asker has not adopted it),
 *      * a granted PRE_VOTE_RESP carries the asked term: no change either,
 *      * VOTE/PRE_VOTE while we heard from a leader within the election
 *        timeout (check_quorum lease) is ignored unless forced by a transfer;
 *  - lower term: ignored, except that APPEND/HEARTBEAT from a stale leader is
 *    answered (so it steps down) and PRE_VOTE is rejected with our term.
 */
#include "raft/raft_internal.h"

static bool in_leader_lease(const fl_raft *r) {
  return r->options->check_quorum && (r->leader != 0 || r->fresh_start) &&
         r->election_elapsed < r->options->election_ticks;
}

static bool is_from_leader(uint32_t type) {
  return type == FL_RAFT_MSG_APPEND || type == FL_RAFT_MSG_HEARTBEAT ||
         type == FL_RAFT_MSG_SNAPSHOT;
}

/* Returns false when the message must not be processed further. */
static bool apply_higher_term(fl_raft *r, const fl_raft_message *m) {
  bool vote_request = m->type == FL_RAFT_MSG_VOTE || m->type == FL_RAFT_MSG_PRE_VOTE;
  if (vote_request && m->context == 0 && in_leader_lease(r)) {
    return false;
  }
  if (m->type == FL_RAFT_MSG_PRE_VOTE || (m->type == FL_RAFT_MSG_PRE_VOTE_RESP && !m->reject)) {
    return true;
  }
  fl_raft_become_follower(r, m->term, is_from_leader(m->type) ? m->from : 0);
  return true;
}

static void answer_lower_term(fl_raft *r, const fl_raft_message *m) {
  bool stale_leader = is_from_leader(m->type) && m->type != FL_RAFT_MSG_SNAPSHOT;
  if ((r->options->check_quorum || r->options->pre_vote) && stale_leader) {
    fl_raft_new_message(r, FL_RAFT_MSG_APPEND_RESP, m->from);
  } else if (m->type == FL_RAFT_MSG_PRE_VOTE) {
    fl_raft_message *resp = fl_raft_new_message(r, FL_RAFT_MSG_PRE_VOTE_RESP, m->from);
    if (resp != NULL) {
      resp->reject = true;
    }
  }
}

static void step_leader(fl_raft *r, const fl_raft_message *m) {
  fl_raft_progress *p = fl_raft_progress_find(r, m->from);
  if (p != NULL) {
    p->recent_active = true;
  }
  switch (m->type) {
  case FL_RAFT_MSG_APPEND_RESP:
    fl_raft_handle_append_response(r, m);
    break;
  case FL_RAFT_MSG_HEARTBEAT_RESP:
    fl_raft_handle_heartbeat_response(r, m);
    break;
  case FL_RAFT_MSG_READ_INDEX:
    fl_raft_handle_read_index(r, m);
    break;
  default:
    break; /* responses to an old candidacy, duplicates */
  }
}

static void step_follower(fl_raft *r, const fl_raft_message *m) {
  if (is_from_leader(m->type)) {
    r->election_elapsed = 0;
    r->soft_state_dirty = r->soft_state_dirty || r->leader != m->from;
    r->leader = m->from;
  }
  switch (m->type) {
  case FL_RAFT_MSG_APPEND:
    fl_raft_handle_append(r, m);
    break;
  case FL_RAFT_MSG_HEARTBEAT:
    fl_raft_handle_heartbeat(r, m);
    break;
  case FL_RAFT_MSG_SNAPSHOT:
    fl_raft_handle_snapshot(r, m);
    break;
  case FL_RAFT_MSG_TIMEOUT_NOW:
    fl_raft_handle_timeout_now(r, m);
    break;
  case FL_RAFT_MSG_READ_INDEX_RESP:
    fl_raft_handle_read_index_response(r, m);
    break;
  default:
    break;
  }
}

static void step_candidate(fl_raft *r, const fl_raft_message *m) {
  if (is_from_leader(m->type)) {
    /* A leader of our term exists: it won this term. */
    fl_raft_become_follower(r, r->term, m->from);
    step_follower(r, m);
    return;
  }
  if (m->type == FL_RAFT_MSG_VOTE_RESP || m->type == FL_RAFT_MSG_PRE_VOTE_RESP) {
    fl_raft_handle_vote_response(r, m);
  }
}

/* Far below 2^64, so that term + 1 and index + count cannot wrap. */
static bool numbers_in_range(const fl_raft_message *m) {
  const uint64_t limit = FL_RAFT_MAX_TERM_OR_INDEX;
  if (m->term > limit || m->log_term > limit || m->index > limit - m->entry_count ||
      m->commit > limit || m->reject_hint > limit || m->snapshot.index > limit ||
      m->snapshot.term > limit) {
    return false;
  }
  return true;
}

static bool message_is_valid(const fl_raft *r, const fl_raft_message *m) {
  if (m == NULL || m->from == 0 || m->from == r->id || (m->to != 0 && m->to != r->id)) {
    return false;
  }
  if (m->type == 0 || m->type >= FL_RAFT_MSG_TYPE_COUNT || m->term == 0) {
    return false;
  }
  if (m->entry_count > 0 && (m->type != FL_RAFT_MSG_APPEND || m->entries == NULL)) {
    return false;
  }
  return numbers_in_range(m);
}

int fl_raft_step(fl_raft *r, const fl_raft_message *m) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return FL_RAFT_E_NOMEM;
  }
  if (!message_is_valid(r, m)) {
    return FL_RAFT_E_INVALID;
  }
  if (m->term > r->term) {
    if (!apply_higher_term(r, m)) {
      return 0;
    }
  } else if (m->term < r->term) {
    answer_lower_term(r, m);
    return 0;
  }
  if (m->type == FL_RAFT_MSG_VOTE || m->type == FL_RAFT_MSG_PRE_VOTE) {
    fl_raft_handle_vote_request(r, m);
    return 0;
  }
  switch (r->role) {
  case FL_RAFT_LEADER:
    step_leader(r, m);
    break;
  case FL_RAFT_FOLLOWER:
    step_follower(r, m);
    break;
  default:
    step_candidate(r, m);
    break;
  }
  return 0;
}
