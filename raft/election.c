/*
 * election.c - roles, timeouts and votes.
 *
 *                 timeout (pre_vote)          pre-vote majority
 *   +----------+ -----------------> +---------------+ ----------> +-----------+
 *   | FOLLOWER |                    | PRE_CANDIDATE |             | CANDIDATE |
 *   +----------+ <----------------- +---------------+             +-----------+
 *     ^  ^   |     lost / leader seen                                |   |
 *     |  |   +---------------------------------------------------->--+   |
 *     |  |      timeout (no pre_vote), TIMEOUT_NOW                       |
 *     |  +-------------------------------------------------------------+ |
 *     |            lost, higher term, or a leader of this term           | won
 *     |                                                                  v
 *     |   higher term, check-quorum failure, removed from conf     +--------+
 *     +----------------------------------------------------------- | LEADER |
 *                                                                  +--------+
 *
 * Invariants: at most one vote per term (vote is persisted before any
 * VOTE_RESP leaves: those wait for the write); a candidate counts its own
 * vote only once (term, vote=self) is durable; a pre-candidate never changes
 * its term, so a partitioned node rejoining cannot disrupt a healthy leader.
 */
#include "raft/raft_internal.h"

#include <stdlib.h>
#include <string.h>

void fl_raft_reset_election_timeout(fl_raft *r) {
  uint32_t base = r->options->election_ticks;
  r->randomized_election_timeout = base + (uint32_t)(fl_raft_random(r) % base);
}

static void release_votes(fl_raft *r) {
  free(r->votes);
  r->votes = NULL;
  r->vote_count = 0;
}

static void reset_role_state(fl_raft *r, uint64_t term) {
  if (r->term != term) {
    r->term = term;
    r->vote = 0;
  }
  r->leader = 0;
  r->soft_state_dirty = true;
  r->election_elapsed = 0;
  r->heartbeat_elapsed = 0;
  fl_raft_reset_election_timeout(r);
  fl_raft_abort_transfer(r);
  release_votes(r);
  fl_raft_progress_release(r);
  fl_raft_drop_reads(r);
  r->uncommitted_bytes = 0;
  r->committed_in_term = false;
  r->lease_revoked = false;
  r->fresh_start = false;
}

void fl_raft_become_follower(fl_raft *r, uint64_t term, uint64_t leader) {
  reset_role_state(r, term);
  r->role = FL_RAFT_FOLLOWER;
  r->leader = leader;
}

static void record_vote(fl_raft *r, uint64_t node, bool granted) {
  if (!fl_raft_has_voter(r, node)) {
    return; /* strangers must not take the slots of real voters */
  }
  for (uint32_t i = 0; i < r->vote_count; i++) {
    if (r->votes[i].node == node) {
      return; /* the first answer counts */
    }
  }
  if (r->vote_count < FL_RAFT_MAX_MEMBERS) {
    r->votes[r->vote_count++] = (fl_raft_vote){.node = node, .granted = granted};
  }
}

/* Every voter of either half, once. */
static uint32_t voting_members(const fl_raft_conf *c, uint64_t *out) {
  uint32_t count = 0;
  for (uint32_t i = 0; i < c->voter_count; i++) {
    out[count++] = c->voters[i];
  }
  for (uint32_t i = 0; i < c->outgoing_count; i++) {
    bool seen = false;
    for (uint32_t j = 0; j < c->voter_count; j++) {
      seen = seen || c->voters[j] == c->outgoing[i];
    }
    if (!seen) {
      out[count++] = c->outgoing[i];
    }
  }
  return count;
}

static void send_vote_requests(fl_raft *r, uint32_t type, uint64_t term, bool forced) {
  uint64_t voters[2 * FL_RAFT_MAX_VOTERS];
  fl_raft_conf conf;
  fl_raft_get_conf(r, &conf);
  uint32_t count = voting_members(&conf, voters);
  for (uint32_t i = 0; i < count; i++) {
    if (voters[i] == r->id) {
      continue;
    }
    fl_raft_message *m = fl_raft_new_message(r, type, voters[i]);
    if (m == NULL) {
      continue;
    }
    m->term = term;
    m->index = r->last_index;
    m->log_term = fl_raft_last_term(r);
    m->context = forced ? 1 : 0;
  }
}

static void poll_election(fl_raft *r) {
  switch (fl_raft_vote_result(r)) {
  case FL_VOTE_WON:
    if (!fl_raft_is_promotable(r)) {
      /* Removed, or a snapshot pending, since the campaign began: the
       * votes were given to a node that may no longer lead. */
      fl_raft_become_follower(r, r->term, 0);
    } else if (r->role == FL_RAFT_PRE_CANDIDATE) {
      fl_raft_start_campaign(r, false, false);
    } else {
      fl_raft_become_leader(r);
    }
    break;
  case FL_VOTE_LOST:
    fl_raft_become_follower(r, r->term, 0);
    break;
  default:
    break;
  }
}

/*
 * A pre-candidate asks at term+1 without adopting it. A candidate adopts
 * term+1 and votes for itself, but its own vote only counts once that hard
 * state is durable (fl_raft_count_self_vote).
 */
void fl_raft_start_campaign(fl_raft *r, bool pre_vote, bool forced) {
  if (!fl_raft_is_promotable(r)) {
    return;
  }
  uint64_t term = pre_vote ? r->term : r->term + 1;
  reset_role_state(r, term);
  r->votes = calloc(FL_RAFT_MAX_MEMBERS, sizeof(fl_raft_vote));
  if (r->votes == NULL) {
    r->role = FL_RAFT_FOLLOWER;
    return;
  }
  if (pre_vote) {
    r->role = FL_RAFT_PRE_CANDIDATE;
    record_vote(r, r->id, true);
    send_vote_requests(r, FL_RAFT_MSG_PRE_VOTE, r->term + 1, forced);
    poll_election(r);
    return;
  }
  r->role = FL_RAFT_CANDIDATE;
  r->vote = r->id;
  send_vote_requests(r, FL_RAFT_MSG_VOTE, r->term, forced);
  fl_raft_count_self_vote(r);
}

void fl_raft_count_self_vote(fl_raft *r) {
  if (r->role == FL_RAFT_CANDIDATE && r->durable_term == r->term && r->durable_vote == r->id) {
    record_vote(r, r->id, true);
    poll_election(r);
  }
}

void fl_raft_become_leader(fl_raft *r) {
  assert(r->role == FL_RAFT_CANDIDATE);
  release_votes(r);
  r->role = FL_RAFT_LEADER;
  r->leader = r->id;
  r->read_round_sent = 0; /* followers' echoes restart from 0 too */
  r->soft_state_dirty = true;
  if (fl_raft_progress_reset(r) != 0) {
    fl_raft_become_follower(r, r->term, 0);
    return;
  }
  /* No conf change until everything from earlier terms is applied. */
  r->pending_conf_index = r->last_index;
  /* An empty entry of the new term lets earlier entries commit (Figure 8). */
  const uint8_t *empty = NULL;
  uint32_t zero = 0;
  uint32_t type = FL_RAFT_ENTRY_NORMAL;
  if (fl_raft_append_own(r, &empty, &zero, &type, 1) != 0) {
    fl_raft_become_follower(r, r->term, 0);
    return;
  }
  fl_raft_broadcast_append(r);
}

static void tick_leader(fl_raft *r) {
  r->heartbeat_elapsed++;
  r->election_elapsed++;
  if (r->election_elapsed >= r->options->election_ticks) {
    r->election_elapsed = 0;
    if (r->options->check_quorum) {
      if (!fl_raft_quorum_active(r)) {
        fl_raft_become_follower(r, r->term, 0);
        return;
      }
      for (uint32_t i = 0; i < r->progress_count; i++) {
        r->progress[i].recent_active = r->progress[i].node == r->id;
      }
    }
    if (r->lead_transferee != 0) {
      fl_raft_abort_transfer(r);
    }
  }
  if (r->heartbeat_elapsed >= r->options->heartbeat_ticks) {
    r->heartbeat_elapsed = 0;
    fl_raft_broadcast_heartbeat(r);
  }
}

void fl_raft_tick_election(fl_raft *r) {
  if (r->role == FL_RAFT_LEADER) {
    tick_leader(r);
    return;
  }
  r->election_elapsed++;
  if (r->election_elapsed >= r->options->election_ticks) {
    r->fresh_start = false;
  }
  if (r->election_elapsed >= r->randomized_election_timeout && fl_raft_is_promotable(r)) {
    r->election_elapsed = 0;
    fl_raft_start_campaign(r, r->options->pre_vote, false);
  }
}

void fl_raft_handle_vote_request(fl_raft *r, const fl_raft_message *m) {
  bool pre = m->type == FL_RAFT_MSG_PRE_VOTE;
  bool can_vote =
      r->vote == m->from || (r->vote == 0 && r->leader == 0) || (pre && m->term > r->term);
  bool grant = can_vote && fl_raft_is_up_to_date(r, m->index, m->log_term);
  uint32_t type = pre ? FL_RAFT_MSG_PRE_VOTE_RESP : FL_RAFT_MSG_VOTE_RESP;
  fl_raft_message *resp =
      pre ? fl_raft_new_message(r, type, m->from) : fl_raft_new_response(r, type, m->from);
  if (resp == NULL) {
    return;
  }
  /* A granted pre-vote answers in the asked term so the asker counts it. */
  resp->term = grant ? m->term : r->term;
  resp->reject = !grant;
  if (grant && !pre) {
    r->election_elapsed = 0;
    r->vote = m->from;
  }
}

void fl_raft_handle_vote_response(fl_raft *r, const fl_raft_message *m) {
  bool expected = (r->role == FL_RAFT_PRE_CANDIDATE && m->type == FL_RAFT_MSG_PRE_VOTE_RESP) ||
                  (r->role == FL_RAFT_CANDIDATE && m->type == FL_RAFT_MSG_VOTE_RESP);
  /* A granted pre-vote answers in the term asked; an older one is stale. */
  bool stale = m->type == FL_RAFT_MSG_PRE_VOTE_RESP && !m->reject && m->term != r->term + 1;
  if (!expected || stale) {
    return;
  }
  record_vote(r, m->from, !m->reject);
  poll_election(r);
}
