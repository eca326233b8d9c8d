/*
 * read_index.c - linearizable reads without writing to the log.
 *
 *   registered --(leader has committed in its term)--> assigned (index, round)
 *   assigned --(a quorum echoed a heartbeat of that round)--> released
 *
 * A read is safe at index i once the leader knows (a) i is its commit index
 * at the time the read arrived and (b) it was still the leader after that,
 * which a heartbeat round acknowledged by a quorum proves. Reads are batched
 * into rounds: a round in flight collects every read that arrives meanwhile,
 * so a burst of reads costs one heartbeat broadcast, not one each.
 * With lease_read (and check_quorum) the leader answers at once while its
 * lease holds: a quorum echoed a heartbeat sent less than an election timeout
 * ago (see fl_raft_lease_valid), so no other leader can exist yet. After a
 * TIMEOUT_NOW the lease is void and reads take the round again.
 * Reads asked on a follower travel to the leader as READ_INDEX and come back
 * as READ_INDEX_RESP; all pending reads are dropped when leadership changes
 * (callers retry).
 */
#include "raft/raft_internal.h"

#include <string.h>

int fl_raft_emit_read_state(fl_raft *r, uint64_t context, uint64_t index) {
  fl_raft_read_state *state =
      fl_raft_vector_push(&r->outbox->read_states, sizeof(*state), FL_RAFT_MAX_PENDING_READS);
  if (state == NULL) {
    return FL_RAFT_E_BUSY;
  }
  state->context = context;
  state->index = index;
  return 0;
}

/* Fails (BUSY) when this update has no room left: the read stays pending. */
static int answer_read(fl_raft *r, const fl_raft_pending_read *read) {
  if (read->from == r->id) {
    return fl_raft_emit_read_state(r, read->context, read->index);
  }
  fl_raft_message *m = fl_raft_new_message(r, FL_RAFT_MSG_READ_INDEX_RESP, read->from);
  if (m == NULL) {
    return FL_RAFT_E_BUSY;
  }
  m->context = read->context;
  m->index = read->index;
  return 0;
}

static void start_round(fl_raft *r) {
  r->read_round_sent++;
  fl_raft_broadcast_heartbeat(r);
}

static bool round_in_flight(const fl_raft *r) {
  return fl_raft_quorum_index(r, fl_raft_read_round_of) < r->read_round_sent;
}

/* Releases every read whose round a quorum confirmed; starts the next round. */
void fl_raft_release_reads(fl_raft *r) {
  uint64_t confirmed = fl_raft_quorum_index(r, fl_raft_read_round_of);
  fl_raft_vector *pending = &r->outbox->reads;
  fl_raft_pending_read *reads = pending->items;
  uint32_t kept = 0;
  bool next_round_waiting = false;
  for (uint32_t i = 0; i < pending->count; i++) {
    bool released = reads[i].index != 0 && reads[i].round <= confirmed;
    if (!released || answer_read(r, &reads[i]) != 0) {
      next_round_waiting = next_round_waiting || reads[i].round > r->read_round_sent;
      reads[kept++] = reads[i];
    }
  }
  pending->count = kept;
  if (next_round_waiting && !round_in_flight(r)) {
    start_round(r);
    fl_raft_release_reads(r); /* a single-voter group confirms at once */
  }
}

static void assign_read(fl_raft *r, fl_raft_pending_read *read) {
  read->index = r->commit;
  read->round = r->read_round_sent + 1;
}

/* The leader's first commit of its term makes its commit index current. */
void fl_raft_assign_waiting_reads(fl_raft *r) {
  fl_raft_vector *pending = &r->outbox->reads;
  fl_raft_pending_read *reads = pending->items;
  for (uint32_t i = 0; i < pending->count; i++) {
    if (reads[i].index == 0) {
      assign_read(r, &reads[i]);
    }
  }
  if (pending->count > 0) {
    fl_raft_release_reads(r);
  }
}

int fl_raft_register_read(fl_raft *r, uint64_t context, uint64_t from) {
  if (r->committed_in_term && r->options->lease_read && fl_raft_lease_valid(r)) {
    fl_raft_pending_read read = {.context = context, .from = from, .index = r->commit};
    return answer_read(r, &read);
  }
  fl_raft_pending_read *read =
      fl_raft_vector_push(&r->outbox->reads, sizeof(*read), FL_RAFT_MAX_PENDING_READS);
  if (read == NULL) {
    return FL_RAFT_E_BUSY;
  }
  *read = (fl_raft_pending_read){.context = context, .from = from};
  if (r->committed_in_term) {
    assign_read(r, read);
    fl_raft_release_reads(r);
  }
  return 0;
}

int fl_raft_read_index(fl_raft *r, uint64_t context) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return FL_RAFT_E_NOMEM;
  }
  if (r->role == FL_RAFT_LEADER) {
    return fl_raft_register_read(r, context, r->id);
  }
  if (r->leader == 0) {
    return FL_RAFT_E_NOT_LEADER;
  }
  fl_raft_message *m = fl_raft_new_message(r, FL_RAFT_MSG_READ_INDEX, r->leader);
  if (m == NULL) {
    return FL_RAFT_E_BUSY;
  }
  m->context = context;
  return 0;
}

void fl_raft_handle_read_index(fl_raft *r, const fl_raft_message *m) {
  if (fl_raft_progress_find(r, m->from) == NULL) {
    return;
  }
  if (fl_raft_register_read(r, m->context, m->from) != 0) {
    fl_raft_message *resp = fl_raft_new_message(r, FL_RAFT_MSG_READ_INDEX_RESP, m->from);
    if (resp != NULL) {
      resp->context = m->context;
      resp->reject = true;
    }
  }
}

void fl_raft_handle_read_index_response(fl_raft *r, const fl_raft_message *m) {
  if (!m->reject) {
    fl_raft_emit_read_state(r, m->context, m->index);
  }
}

void fl_raft_drop_reads(fl_raft *r) {
  if (r->outbox != NULL) {
    r->outbox->reads.count = 0;
  }
}
