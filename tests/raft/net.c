/*
 * net.c - the deterministic test network (see net.h).
 *
 * Delivery order is fixed (senders by id, each outbox FIFO) so a scenario
 * replays identically; tests that need another order take messages out with
 * tnet_take_all() and send them one by one.
 */
#include "tests/raft/net.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/support/state_machine.h"

/* Rounds of tnet_deliver() before the network is called livelocked. */
#define TNET_MAX_ROUNDS 100000

static void on_update(void *context, tnode *node, const fl_raft_update *update) {
  tnet *net = context;
  uint64_t id = tnode_id(node);
  for (uint32_t i = 0; i < update->read_state_count; i++) {
    assert_true(net->read_count[id] < TNET_MAX_READS);
    net->reads[id][net->read_count[id]++] = update->read_states[i];
  }
}

fl_raft_options tnet_options(bool pre_vote, bool check_quorum) {
  fl_raft_options options;
  fl_raft_options_default(&options);
  options.election_ticks = 10;
  options.heartbeat_ticks = 1;
  options.pre_vote = pre_vote;
  options.check_quorum = check_quorum;
  return options;
}

tnet *tnet_create(uint32_t voters, const fl_raft_options *options, uint64_t seed) {
  assert_true(voters >= 1 && voters <= TNET_MAX_NODES);
  tnet *net = calloc(1, sizeof(*net));
  assert_non_null(net);
  net->options = *options;
  net->seed = seed;
  net->observer = (tnode_observer){.context = net, .on_update = on_update};
  assert_int_equal(
      tnode_create_cluster(net->nodes + 1, voters, &net->options, seed, &net->observer), 0);
  for (uint64_t id = 1; id <= voters; id++) {
    tnet_check(net, id);
  }
  return net;
}

void tnet_add_joiner(tnet *net, uint64_t id) {
  assert_true(id >= 1 && id <= TNET_MAX_NODES && net->nodes[id] == NULL);
  tnode_config config = {
      .id = id, .options = &net->options, .seed = net->seed, .observer = &net->observer};
  net->nodes[id] = tnode_create(&config);
  assert_non_null(net->nodes[id]);
  tnet_check(net, id);
}

void tnet_destroy(tnet *net) {
  for (uint64_t id = 1; id <= TNET_MAX_NODES; id++) {
    tnode_destroy(net->nodes[id]);
  }
  free(net);
}

tnode *tnet_node(tnet *net, uint64_t id) {
  assert_true(id >= 1 && id <= TNET_MAX_NODES && net->nodes[id] != NULL);
  return net->nodes[id];
}

fl_raft *tnet_raft(tnet *net, uint64_t id) {
  fl_raft *raft = tnode_raft(tnet_node(net, id));
  assert_non_null(raft);
  return raft;
}

fl_raft_status tnet_status(tnet *net, uint64_t id) {
  fl_raft_status status;
  fl_raft_get_status(tnet_raft(net, id), &status);
  return status;
}

/* Election safety across the whole run: one leader per term at most. */
static void check_single_leader(tnet *net, uint64_t id, const fl_raft_status *status) {
  if (status->role != FL_RAFT_LEADER || status->term >= TNET_MAX_TERMS) {
    return;
  }
  uint64_t *known = &net->leader_of_term[status->term];
  if (*known != 0 && *known != id) {
    fail_msg("two leaders in term %llu: %llu and %llu", (unsigned long long)status->term,
             (unsigned long long)*known, (unsigned long long)id);
  }
  *known = id;
}

void tnet_check(tnet *net, uint64_t id) {
  tnode *node = tnet_node(net, id);
  if (tnode_error(node) != NULL) {
    fail_msg("driver contract breach: %s", tnode_error(node));
  }
  fl_raft *raft = tnode_raft(node);
  if (raft == NULL) {
    return;
  }
  const char *broken = NULL;
  if (!fl_raft_check_invariants(raft, &broken)) {
    fail_msg("node %llu: invariant broken: %s", (unsigned long long)id, broken);
  }
  fl_raft_status status;
  fl_raft_get_status(raft, &status);
  check_single_leader(net, id, &status);
}

/* ---- links ---- */

void tnet_cut_one_way(tnet *net, uint64_t from, uint64_t to) {
  assert_true(from <= TNET_MAX_NODES && to <= TNET_MAX_NODES);
  net->cut[from][to] = true;
}

void tnet_cut(tnet *net, uint64_t a, uint64_t b) {
  tnet_cut_one_way(net, a, b);
  tnet_cut_one_way(net, b, a);
}

void tnet_isolate(tnet *net, uint64_t id) {
  for (uint64_t other = 1; other <= TNET_MAX_NODES; other++) {
    if (other != id) {
      tnet_cut(net, id, other);
    }
  }
}

void tnet_heal(tnet *net) {
  memset(net->cut, 0, sizeof(net->cut));
}

/* ---- messages and writes ---- */

uint32_t tnet_persist(tnet *net, uint64_t id) {
  tnode *node = tnet_node(net, id);
  uint32_t done = 0;
  while (tnode_is_up(node) && tnode_pending_writes(node) > 0) {
    uint64_t write_id = 0;
    assert_int_equal(tnode_complete_write(node, &write_id), 0);
    assert_int_equal(tnode_persisted(node, write_id), 0);
    tnet_check(net, id);
    assert_true(++done < TNET_MAX_ROUNDS);
  }
  return done;
}

static bool link_is_cut(const tnet *net, uint64_t from, uint64_t to) {
  return from <= TNET_MAX_NODES && to <= TNET_MAX_NODES && net->cut[from][to];
}

/* TNET_TRACE=1 in the environment prints every message (debugging aid). */
static void trace(const fl_raft_message *m, const char *fate) {
  static int enabled = -1;
  if (enabled < 0) {
    enabled = getenv("TNET_TRACE") != NULL;
  }
  if (enabled) {
    print_message("%-9s %-14s %llu->%llu term %llu index %llu log_term %llu commit %llu "
                  "entries %u reject %d hint %llu context %llu\n",
                  fate, fl_raft_message_type_name(m->type), (unsigned long long)m->from,
                  (unsigned long long)m->to, (unsigned long long)m->term,
                  (unsigned long long)m->index, (unsigned long long)m->log_term,
                  (unsigned long long)m->commit, m->entry_count, m->reject,
                  (unsigned long long)m->reject_hint, (unsigned long long)m->context);
  }
}

void tnet_send(tnet *net, tenvelope *envelope) {
  const fl_raft_message *m = &envelope->message;
  uint64_t to = m->to;
  tnode *target = to >= 1 && to <= TNET_MAX_NODES ? net->nodes[to] : NULL;
  if (target == NULL || !tnode_is_up(target) || link_is_cut(net, m->from, to) ||
      (net->filter != NULL && net->filter(net->filter_context, envelope) == TNET_DROP)) {
    trace(m, "dropped");
    net->dropped++;
    tenvelope_destroy(envelope);
    return;
  }
  assert_true(m->type < FL_RAFT_MSG_TYPE_COUNT);
  trace(m, "delivered");
  net->delivered[m->type]++;
  uint32_t type = m->type;
  int result = tnode_step(target, envelope);
  if (result != 0) {
    fail_msg("node %llu refused a %s: %d", (unsigned long long)to, fl_raft_message_type_name(type),
             result);
  }
  tnet_check(net, to);
}

static uint64_t send_outbox(tnet *net, uint64_t id) {
  uint64_t moved = 0;
  tenvelope *envelope;
  while ((envelope = tnode_take_message(net->nodes[id])) != NULL) {
    tnet_send(net, envelope);
    moved++;
  }
  return moved;
}

uint64_t tnet_deliver(tnet *net) {
  uint64_t total = 0;
  for (uint32_t round = 0;; round++) {
    assert_true(round < TNET_MAX_ROUNDS);
    uint64_t moved = 0;
    for (uint64_t id = 1; id <= TNET_MAX_NODES; id++) {
      if (net->nodes[id] != NULL && !net->hold_writes[id]) {
        moved += tnet_persist(net, id);
      }
    }
    for (uint64_t id = 1; id <= TNET_MAX_NODES; id++) {
      if (net->nodes[id] != NULL && tnode_is_up(net->nodes[id])) {
        uint64_t sent = send_outbox(net, id);
        moved += sent;
        total += sent;
      }
    }
    if (moved == 0) {
      return total;
    }
  }
}

uint32_t tnet_take_all(tnet *net, uint64_t id, tenvelope **out, uint32_t capacity) {
  uint32_t count = 0;
  tenvelope *envelope;
  while ((envelope = tnode_take_message(tnet_node(net, id))) != NULL) {
    assert_true(count < capacity);
    out[count++] = envelope;
  }
  return count;
}

uint32_t tnet_count(tenvelope *const *messages, uint32_t count, uint32_t type, uint64_t to) {
  uint32_t matching = 0;
  for (uint32_t i = 0; i < count; i++) {
    matching += messages[i]->message.type == type && (to == 0 || messages[i]->message.to == to);
  }
  return matching;
}

void tnet_destroy_all(tenvelope **messages, uint32_t count) {
  for (uint32_t i = 0; i < count; i++) {
    tenvelope_destroy(messages[i]);
  }
}

/* ---- time and roles ---- */

void tnet_tick(tnet *net, uint64_t id) {
  tnode *node = tnet_node(net, id);
  if (tnode_is_up(node)) {
    assert_int_equal(tnode_tick(node), 0);
    tnet_check(net, id);
  }
}

void tnet_tick_all(tnet *net, uint32_t ticks) {
  for (uint32_t t = 0; t < ticks; t++) {
    for (uint64_t id = 1; id <= TNET_MAX_NODES; id++) {
      if (net->nodes[id] != NULL) {
        tnet_tick(net, id);
      }
    }
    tnet_deliver(net);
  }
}

uint64_t tnet_leader(tnet *net) {
  uint64_t highest = 0;
  uint64_t leader = 0;
  for (uint64_t id = 1; id <= TNET_MAX_NODES; id++) {
    if (net->nodes[id] == NULL || !tnode_is_up(net->nodes[id])) {
      continue;
    }
    fl_raft_status status = tnet_status(net, id);
    if (status.term > highest) {
      highest = status.term;
      leader = 0;
    }
    if (status.term == highest && status.role == FL_RAFT_LEADER) {
      leader = id;
    }
  }
  return leader;
}

uint64_t tnet_wait_leader(tnet *net, uint32_t max_ticks) {
  for (uint32_t t = 0; t < max_ticks; t++) {
    uint64_t leader = tnet_leader(net);
    if (leader != 0) {
      return leader;
    }
    tnet_tick_all(net, 1);
  }
  uint64_t leader = tnet_leader(net);
  if (leader == 0) {
    fail_msg("no leader after %u ticks", max_ticks);
  }
  return leader;
}

/*
 * A forced campaign, as a leader transfer makes one: it skips pre-vote and
 * overrides the leases that followers (and freshly started nodes) honour,
 * so the election is won at once whatever the timers say.
 */
uint64_t tnet_elect(tnet *net, uint64_t id) {
  fl_raft_status status = tnet_status(net, id);
  assert_int_not_equal(status.role, FL_RAFT_LEADER);
  fl_raft_message timeout_now = {.type = FL_RAFT_MSG_TIMEOUT_NOW,
                                 .from = status.leader != 0 ? status.leader : TNET_FAKE_LEADER,
                                 .to = id,
                                 .term = status.term > 0 ? status.term : 1};
  assert_int_equal(tnode_step(tnet_node(net, id), tenvelope_create(&timeout_now, NULL)), 0);
  tnet_check(net, id);
  tnet_deliver(net);
  status = tnet_status(net, id);
  assert_int_equal(status.role, FL_RAFT_LEADER);
  return status.term;
}

int tnet_propose(tnet *net, uint64_t id, uint64_t key, uint64_t value, uint32_t padding) {
  tcommand command = {
      .proposal_id = ++net->next_proposal_id, .proposer = id, .key = key, .value = value};
  uint8_t buffer[TCOMMAND_MAX_BYTES];
  size_t length = tcommand_encode(&command, padding, buffer, sizeof(buffer));
  assert_true(length > 0);
  const uint8_t *data = buffer;
  uint32_t length32 = (uint32_t)length;
  int result = tnode_propose(tnet_node(net, id), &data, &length32, 1);
  tnet_check(net, id);
  return result;
}

/* ---- crafted logs and comparisons ---- */

#define CRAFT_PAYLOAD_BYTES 16
#define CRAFT_MAX_ENTRIES 32

void tnet_craft_log(tnet *net, uint64_t id, uint64_t term, const uint64_t *terms, uint32_t count,
                    uint64_t commit) {
  assert_true(count <= CRAFT_MAX_ENTRIES);
  fl_raft_entry entries[CRAFT_MAX_ENTRIES];
  uint8_t payloads[CRAFT_MAX_ENTRIES][CRAFT_PAYLOAD_BYTES];
  for (uint32_t i = 0; i < count; i++) {
    uint64_t index = i + 1;
    memcpy(payloads[i], &index, sizeof(index));
    memcpy(payloads[i] + 8, &terms[i], sizeof(terms[i]));
    entries[i] = (fl_raft_entry){.term = terms[i],
                                 .index = index,
                                 .type = FL_RAFT_ENTRY_NORMAL,
                                 .length = CRAFT_PAYLOAD_BYTES,
                                 .data = payloads[i]};
  }
  fl_raft_message append = {.type = FL_RAFT_MSG_APPEND,
                            .entry_count = count,
                            .from = TNET_FAKE_LEADER,
                            .to = id,
                            .term = term,
                            .commit = commit,
                            .entries = entries};
  assert_int_equal(tnode_step(tnet_node(net, id), tenvelope_create(&append, NULL)), 0);
  tnet_check(net, id);
  tnet_persist(net, id);
  /* Only the answer to the fake leader can be there: nobody receives it. */
  tenvelope *answers[4];
  tnet_destroy_all(answers, tnet_take_all(net, id, answers, 4));
  fl_raft_status status = tnet_status(net, id);
  assert_int_equal(status.last_index, count);
  assert_int_equal(status.stable_index, count);
}

bool tnet_logs_equal(tnet *net, uint64_t a, uint64_t b) {
  const tlog *log_a = tnode_log(tnet_node(net, a));
  const tlog *log_b = tnode_log(tnet_node(net, b));
  uint64_t last = tlog_last_index(log_a);
  uint64_t hash_a = 0;
  uint64_t hash_b = 0;
  return last == tlog_last_index(log_b) && tlog_prefix_hash_at(log_a, last, &hash_a) &&
         tlog_prefix_hash_at(log_b, last, &hash_b) && hash_a == hash_b;
}

bool tnet_state_matches_log(tnet *net, uint64_t id) {
  const tstate *state = tnode_state(tnet_node(net, id));
  uint64_t hash = 0;
  return tlog_prefix_hash_at(tnode_log(tnet_node(net, id)), state->applied_index, &hash) &&
         hash == state->chain_hash;
}
