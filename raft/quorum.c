/*
 * quorum.c - majorities over a configuration, joint or not.
 *
 * In a joint configuration every decision (commit index, election, read
 * round, check-quorum) needs a majority of the incoming voters AND of the
 * outgoing voters. An empty half agrees with anything, so the same code
 * serves the simple case.
 */
#include "raft/raft_internal.h"

uint64_t fl_raft_match_of(const fl_raft *r, uint64_t node) {
  if (node == r->id) {
    /* The leader counts itself only for what its own disk holds. */
    return r->stable_index;
  }
  for (uint32_t i = 0; i < r->progress_count; i++) {
    if (r->progress[i].node == node) {
      return r->progress[i].match;
    }
  }
  return 0;
}

uint64_t fl_raft_read_round_of(const fl_raft *r, uint64_t node) {
  if (node == r->id) {
    return r->read_round_sent;
  }
  for (uint32_t i = 0; i < r->progress_count; i++) {
    if (r->progress[i].node == node) {
      return r->progress[i].read_round;
    }
  }
  return 0;
}

/* The largest value that a majority of `voters` has reached. */
static uint64_t majority_value(const fl_raft *r, const uint64_t *voters, uint32_t count,
                               uint64_t (*value)(const fl_raft *, uint64_t)) {
  if (count == 0) {
    return UINT64_MAX;
  }
  uint64_t values[FL_RAFT_MAX_VOTERS];
  for (uint32_t i = 0; i < count; i++) {
    uint64_t v = value(r, voters[i]);
    uint32_t j = i;
    /* insertion sort, descending: at most nine values */
    while (j > 0 && values[j - 1] < v) {
      values[j] = values[j - 1];
      j--;
    }
    values[j] = v;
  }
  return values[count / 2];
}

uint64_t fl_raft_quorum_index(const fl_raft *r, uint64_t (*value)(const fl_raft *, uint64_t)) {
  uint64_t incoming = majority_value(r, fl_raft_voters(r), r->members->voter_count, value);
  uint64_t outgoing = majority_value(r, fl_raft_outgoing(r), r->members->outgoing_count, value);
  return fl_min_u64(incoming, outgoing);
}

static fl_vote_result half_result(const fl_raft *r, const uint64_t *voters, uint32_t count) {
  if (count == 0) {
    return FL_VOTE_WON;
  }
  uint32_t granted = 0;
  uint32_t rejected = 0;
  for (uint32_t i = 0; i < count; i++) {
    for (uint32_t v = 0; v < r->vote_count; v++) {
      if (r->votes[v].node == voters[i]) {
        granted += r->votes[v].granted;
        rejected += !r->votes[v].granted;
      }
    }
  }
  uint32_t majority = count / 2 + 1;
  if (granted >= majority) {
    return FL_VOTE_WON;
  }
  if (count - rejected < majority) {
    return FL_VOTE_LOST;
  }
  return FL_VOTE_PENDING;
}

fl_vote_result fl_raft_vote_result(const fl_raft *r) {
  fl_vote_result incoming = half_result(r, fl_raft_voters(r), r->members->voter_count);
  fl_vote_result outgoing = half_result(r, fl_raft_outgoing(r), r->members->outgoing_count);
  if (incoming == FL_VOTE_LOST || outgoing == FL_VOTE_LOST) {
    return FL_VOTE_LOST;
  }
  if (incoming == FL_VOTE_WON && outgoing == FL_VOTE_WON) {
    return FL_VOTE_WON;
  }
  return FL_VOTE_PENDING;
}

static uint64_t lease_tick_of(const fl_raft *r, uint64_t node) {
  if (node == r->id) {
    return r->tick_count;
  }
  for (uint32_t i = 0; i < r->progress_count; i++) {
    if (r->progress[i].node == node) {
      return r->progress[i].lease_tick;
    }
  }
  return 0;
}

/*
 * A follower that received a heartbeat sent at leader tick t refuses votes
 * for election_ticks of its own ticks after it. So once a quorum echoed
 * heartbeats sent at or after t, no other leader can exist before tick
 * t + election_ticks (one tick of margin for tick skew). Void after a
 * TIMEOUT_NOW: the target's forced votes ignore leases.
 */
bool fl_raft_lease_valid(const fl_raft *r) {
  if (r->lease_revoked || !r->options->check_quorum) {
    return false;
  }
  uint64_t confirmed = fl_raft_quorum_index(r, lease_tick_of);
  return confirmed != UINT64_MAX && confirmed + r->options->election_ticks > r->tick_count + 1;
}

static uint64_t active_of(const fl_raft *r, uint64_t node) {
  if (node == r->id) {
    return 1;
  }
  for (uint32_t i = 0; i < r->progress_count; i++) {
    if (r->progress[i].node == node) {
      return r->progress[i].recent_active ? 1 : 0;
    }
  }
  return 0;
}

bool fl_raft_quorum_active(const fl_raft *r) {
  return fl_raft_quorum_index(r, active_of) >= 1;
}
