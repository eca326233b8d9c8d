/*
 * clients.c - the load: proposals and linearizable reads.
 *
 * Proposals mostly go to the current leader (as a routing client would
 * send them) and sometimes to a random node, which must refuse them. Each
 * command carries a unique proposal id and the node that accepted it; the
 * checker treats a proposal as acknowledged when that node applies it.
 * Reads record, when issued, the highest acknowledged index (and, at a
 * leader, its commit index): the read state that answers them must not be
 * below it.
 */
#include "tests/sim/sim_internal.h"

bool sim_is_live(const sim *s, uint32_t id) {
  return id >= 1 && id <= s->slot_count && s->slots[id].node != NULL && !s->slots[id].retired &&
         tnode_is_up(s->slots[id].node);
}

uint32_t sim_find_leader(const sim *s) {
  uint32_t leader = 0;
  uint64_t term = 0;
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    if (!sim_is_live(s, id)) {
      continue;
    }
    fl_raft_status status;
    fl_raft_get_status(tnode_raft(s->slots[id].node), &status);
    if (status.role == FL_RAFT_LEADER && status.term >= term) {
      leader = id;
      term = status.term;
    }
  }
  return leader;
}

static uint32_t random_live_node(sim *s) {
  uint32_t live[SIM_MAX_NODES];
  uint32_t count = 0;
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    if (sim_is_live(s, id)) {
      live[count++] = id;
    }
  }
  return count == 0 ? 0 : live[trandom_below(&s->random, count)];
}

/* Proposes `count` fresh commands at node `id`; returns the core's result
 * and the id of the first command. */
static int propose(sim *s, uint32_t id, uint32_t count, uint64_t *first_id) {
  uint8_t buffers[4][TCOMMAND_MAX_BYTES];
  const uint8_t *data[4];
  uint32_t lengths[4];
  *first_id = s->next_proposal_id + 1;
  for (uint32_t i = 0; i < count && i < 4; i++) {
    tcommand command = {.proposal_id = ++s->next_proposal_id,
                        .proposer = id,
                        .key = trandom_below(&s->random, TSTATE_KEYS),
                        .value = trandom_next(&s->random)};
    uint32_t padding =
        (uint32_t)trandom_below(&s->random, TCOMMAND_MAX_BYTES - TCOMMAND_HEADER_BYTES + 1);
    lengths[i] = (uint32_t)tcommand_encode(&command, padding, buffers[i], sizeof(buffers[i]));
    data[i] = buffers[i];
  }
  int result = tnode_propose(s->slots[id].node, data, lengths, count < 4 ? count : 4);
  sim_trace(s, "propose node %u: %u commands from %llu: %s", id, count,
            (unsigned long long)*first_id, result == 0 ? "accepted" : fl_raft_strerror(result));
  sim_after_input(s, id, result);
  return result;
}

static void client_propose(sim *s) {
  uint32_t target = sim_find_leader(s);
  if (target == 0 || trandom_chance(&s->random, 150000)) {
    target = random_live_node(s);
  }
  if (target == 0 || checker_committed_index(s->checker) >= SIM_MAX_COMMITTED) {
    return;
  }
  uint64_t first_id = 0;
  propose(s, target, (uint32_t)trandom_range(&s->random, 1, 4), &first_id);
}

static void client_read(sim *s) {
  uint32_t target = trandom_chance(&s->random, 500000) ? sim_find_leader(s) : 0;
  if (target == 0) {
    target = random_live_node(s);
  }
  if (target == 0) {
    return;
  }
  uint64_t context = ++s->next_read_id;
  uint64_t required = checker_acknowledged_index(s->checker);
  fl_raft_status status;
  fl_raft_get_status(tnode_raft(s->slots[target].node), &status);
  if (status.role == FL_RAFT_LEADER && status.commit > required) {
    required = status.commit; /* a leader reads at least at what it knows committed */
  }
  checker_note_read_request(s->checker, context, required);
  int result = fl_raft_read_index(tnode_raft(s->slots[target].node), context);
  sim_trace(s, "read request %llu at node %u (acknowledged index %llu): %s",
            (unsigned long long)context, target, (unsigned long long)required,
            result == 0 ? "accepted" : fl_raft_strerror(result));
  sim_after_input(s, target, tnode_drain(s->slots[target].node));
}

void sim_client_tick(sim *s) {
  if (trandom_chance(&s->random, s->faults.propose)) {
    client_propose(s);
  }
  if (trandom_chance(&s->random, s->faults.read)) {
    client_read(s);
  }
}

bool sim_propose_marker(sim *s, uint32_t leader) {
  uint64_t first_id = 0;
  if (propose(s, leader, 1, &first_id) != 0) {
    return false;
  }
  s->marker_id = first_id;
  s->marker_index = 0;
  return true;
}
