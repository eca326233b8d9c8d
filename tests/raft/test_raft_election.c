/*
 * test_raft_election.c - leader election: one leader, randomized timeouts,
 * durable self-vote, the up-to-date rule, pre-vote against disruptive
 * rejoins, check-quorum step-down and leases, dueling candidates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/raft/net.h"

#define ELECTION_TICKS 10

static void test_three_nodes_elect_exactly_one_leader(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 11);
  uint64_t leader = tnet_wait_leader(net, 10 * ELECTION_TICKS);
  uint64_t term = tnet_status(net, leader).term;
  /* Heartbeats keep the leadership: no new election for a long while. */
  tnet_tick_all(net, 10 * ELECTION_TICKS);
  uint32_t leaders = 0;
  for (uint64_t id = 1; id <= 3; id++) {
    fl_raft_status status = tnet_status(net, id);
    leaders += status.role == FL_RAFT_LEADER;
    assert_int_equal(status.term, term);
    assert_int_equal(status.leader, leader);
    assert_int_equal(status.role, id == leader ? FL_RAFT_LEADER : FL_RAFT_FOLLOWER);
    /* The leader's empty entry of its term is committed everywhere. */
    assert_int_equal(status.commit, tnet_status(net, leader).last_index);
    assert_int_equal(fl_raft_term_at(tnet_raft(net, id), status.commit), term);
  }
  assert_int_equal(leaders, 1);
  tnet_destroy(net);
}

/* Ticks an isolated node until it sends pre-votes again; returns the ticks. */
static uint32_t ticks_until_pre_vote(tnet *net, uint64_t id) {
  for (uint32_t ticks = 1; ticks <= 4 * ELECTION_TICKS; ticks++) {
    tnet_tick(net, id);
    tenvelope *messages[16];
    uint32_t count = tnet_take_all(net, id, messages, 16);
    uint32_t pre_votes = tnet_count(messages, count, FL_RAFT_MSG_PRE_VOTE, 0);
    tnet_destroy_all(messages, count);
    if (pre_votes > 0) {
      return ticks;
    }
  }
  fail_msg("node %llu never campaigned", (unsigned long long)id);
  return 0;
}

static void test_randomized_timeouts_differ(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(5, &options, 12);
  uint32_t first[5];
  bool nodes_differ = false;
  for (uint64_t id = 1; id <= 5; id++) {
    first[id - 1] = ticks_until_pre_vote(net, id);
    assert_in_range(first[id - 1], ELECTION_TICKS, 2 * ELECTION_TICKS - 1);
    nodes_differ = nodes_differ || first[id - 1] != first[0];
  }
  assert_true(nodes_differ);
  /* One node draws a new timeout at every campaign. */
  uint32_t previous = 0;
  bool rounds_differ = false;
  for (int round = 0; round < 8; round++) {
    uint32_t ticks = ticks_until_pre_vote(net, 1);
    assert_in_range(ticks, ELECTION_TICKS, 2 * ELECTION_TICKS - 1);
    rounds_differ = rounds_differ || (round > 0 && ticks != previous);
    previous = ticks;
  }
  assert_true(rounds_differ);
  /* Pre-vote never moved the term of a lonely node. */
  assert_int_equal(tnet_status(net, 1).term, 0);
  tnet_destroy(net);
}

/*
 * Node 3 is down, so node 1 needs node 2's vote AND its own. Votes leave a
 * voter only once its vote is durable, and the candidate counts itself only
 * once its (term, vote) is durable.
 */
static void test_candidate_waits_for_its_durable_vote(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(false, false);
  tnet *net = tnet_create(3, &options, 13);
  tnode_crash(tnet_node(net, 3));
  net->hold_writes[1] = true;
  net->hold_writes[2] = true;
  fl_raft_campaign(tnet_raft(net, 1));
  assert_int_equal(tnode_drain(tnet_node(net, 1)), 0);
  tnet_deliver(net);
  assert_int_equal(tnet_status(net, 2).vote, 1);              /* granted in memory... */
  assert_int_equal(net->delivered[FL_RAFT_MSG_VOTE_RESP], 0); /* ...not yet said */
  assert_int_equal(tnet_persist(net, 2), 1);
  tnet_deliver(net);
  assert_int_equal(net->delivered[FL_RAFT_MSG_VOTE_RESP], 1);
  fl_raft_status candidate = tnet_status(net, 1);
  assert_int_equal(candidate.role, FL_RAFT_CANDIDATE);
  assert_int_equal(candidate.term, 1);
  assert_int_equal(candidate.vote, 1);
  assert_int_equal(tnode_durable_hard_state(tnet_node(net, 1))->term, 0);
  /* Its own vote becomes durable: now it holds a majority. */
  tnet_persist(net, 1);
  assert_int_equal(tnet_status(net, 1).role, FL_RAFT_LEADER);
  assert_int_equal(tnode_durable_hard_state(tnet_node(net, 1))->vote, 1);
  tnet_destroy(net);
}

static void test_vote_refused_to_shorter_log(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(false, false);
  tnet *net = tnet_create(3, &options, 14);
  uint64_t term = tnet_elect(net, 1);
  tnet_isolate(net, 3);
  assert_int_equal(tnet_propose(net, 1, 1, 10, 0), 0);
  assert_int_equal(tnet_propose(net, 1, 2, 20, 0), 0);
  tnet_deliver(net);
  assert_int_equal(tnet_status(net, 2).commit, tnet_status(net, 1).last_index);
  tnet_heal(net);
  fl_raft_campaign(tnet_raft(net, 3));
  assert_int_equal(tnode_drain(tnet_node(net, 3)), 0);
  tnet_deliver(net);
  /* Both adopted its term but refused their vote: its log is shorter. */
  for (uint64_t id = 1; id <= 3; id++) {
    fl_raft_status status = tnet_status(net, id);
    assert_int_equal(status.term, term + 1);
    assert_int_not_equal(status.role, FL_RAFT_LEADER);
    assert_true(id == 3 || status.vote != 3);
  }
  uint64_t leader = tnet_wait_leader(net, 10 * ELECTION_TICKS);
  assert_true(leader == 1 || leader == 2);
  tnet_destroy(net);
}

/* Steps a crafted vote request into `id` and returns whether it granted. */
static bool ask_vote(tnet *net, uint64_t id, uint64_t from, uint64_t term, uint64_t index,
                     uint64_t log_term) {
  fl_raft_message vote = {.type = FL_RAFT_MSG_VOTE,
                          .from = from,
                          .to = id,
                          .term = term,
                          .index = index,
                          .log_term = log_term};
  assert_int_equal(tnode_step(tnet_node(net, id), tenvelope_create(&vote, NULL)), 0);
  tnet_persist(net, id);
  tenvelope *messages[8];
  uint32_t count = tnet_take_all(net, id, messages, 8);
  assert_int_equal(count, 1);
  assert_int_equal(messages[0]->message.type, FL_RAFT_MSG_VOTE_RESP);
  assert_int_equal(messages[0]->message.to, from);
  bool granted = !messages[0]->message.reject;
  tnet_destroy_all(messages, count);
  return granted;
}

static void test_vote_refused_to_older_last_term(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(false, false);
  tnet *net = tnet_create(3, &options, 15);
  static const uint64_t terms[] = {1, 1, 2};
  tnet_craft_log(net, 2, 2, terms, 3, 0);
  /* Longer but ending in an older term: not up to date. */
  assert_false(ask_vote(net, 2, 3, 3, 5, 1));
  assert_int_equal(tnet_status(net, 2).vote, 0);
  /* Same last (index, term) is up to date: granted in the same term. */
  assert_true(ask_vote(net, 2, 1, 3, 3, 2));
  assert_int_equal(tnet_status(net, 2).vote, 1);
  /* One vote per term: node 3 is refused now even with a newer log. */
  assert_false(ask_vote(net, 2, 3, 3, 9, 3));
  tnet_destroy(net);
}

/*
 * Node 3 is cut off while the cluster commits a new entry, ticks for ten
 * election timeouts, then rejoins. Returns the term the cluster ends in.
 */
static uint64_t rejoin_after_partition(tnet *net, uint64_t *term_before) {
  *term_before = tnet_elect(net, 1);
  tnet_isolate(net, 3);
  assert_int_equal(tnet_propose(net, 1, 1, 7, 0), 0);
  tnet_deliver(net);
  tnet_tick_all(net, 10 * ELECTION_TICKS);
  fl_raft_status lonely = tnet_status(net, 3);
  tnet_heal(net);
  tnet_tick_all(net, 5 * ELECTION_TICKS);
  return lonely.term;
}

static void test_pre_vote_prevents_disruptive_rejoin(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, false);
  tnet *net = tnet_create(3, &options, 16);
  uint64_t term = 0;
  uint64_t lonely_term = rejoin_after_partition(net, &term);
  assert_int_equal(lonely_term, term); /* pre-candidates never bump the term */
  fl_raft_status leader = tnet_status(net, 1);
  assert_int_equal(leader.role, FL_RAFT_LEADER);
  assert_int_equal(leader.term, term);
  fl_raft_status rejoined = tnet_status(net, 3);
  assert_int_equal(rejoined.role, FL_RAFT_FOLLOWER);
  assert_int_equal(rejoined.term, term);
  assert_int_equal(rejoined.leader, 1);
  tnet_destroy(net);
}

static void test_without_pre_vote_rejoin_disrupts(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(false, false);
  tnet *net = tnet_create(3, &options, 16);
  uint64_t term = 0;
  uint64_t lonely_term = rejoin_after_partition(net, &term);
  assert_true(lonely_term > term + 1); /* it campaigned again and again */
  uint64_t leader = tnet_wait_leader(net, 10 * ELECTION_TICKS);
  /* The healthy leader was deposed by the rejoining node's term. */
  assert_true(tnet_status(net, leader).term > lonely_term);
  assert_true(tnet_status(net, 1).term > term);
  /* The rejoining node, whose log is behind, cannot win. */
  assert_int_not_equal(leader, 3);
  tnet_destroy(net);
}

static void test_check_quorum_leader_steps_down(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 17);
  uint64_t term = tnet_elect(net, 1);
  tnet_isolate(net, 1);
  uint32_t ticks = 0;
  while (tnet_status(net, 1).role == FL_RAFT_LEADER) {
    assert_true(ticks < 2 * ELECTION_TICKS); /* one full timeout after the last contact */
    tnet_tick(net, 1);
    ticks++;
  }
  assert_true(ticks >= ELECTION_TICKS);
  fl_raft_status old = tnet_status(net, 1);
  assert_int_equal(old.role, FL_RAFT_FOLLOWER);
  assert_int_equal(old.term, term); /* stepping down does not bump the term */
  assert_int_equal(old.leader, 0);
  /* The majority side elects a new leader. */
  uint64_t leader = 0;
  for (uint32_t t = 0; t < 10 * ELECTION_TICKS && leader == 0; t++) {
    tnet_tick(net, 2);
    tnet_tick(net, 3);
    tnet_deliver(net);
    leader = tnet_status(net, 2).role == FL_RAFT_LEADER   ? 2
             : tnet_status(net, 3).role == FL_RAFT_LEADER ? 3
                                                          : 0;
  }
  assert_true(leader != 0);
  assert_true(tnet_status(net, leader).term > term);
  tnet_heal(net);
  tnet_tick_all(net, ELECTION_TICKS);
  assert_int_equal(tnet_status(net, 1).leader, leader);
  tnet_destroy(net);
}

static tnet_verdict only_votes(void *context, tenvelope *envelope) {
  (void)context;
  uint32_t type = envelope->message.type;
  return type == FL_RAFT_MSG_VOTE || type == FL_RAFT_MSG_VOTE_RESP ? TNET_DELIVER : TNET_DROP;
}

static void test_lease_ignores_vote_requests(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(false, true);
  tnet *net = tnet_create(3, &options, 18);
  uint64_t term = tnet_elect(net, 1);
  tnet_tick_all(net, 3);
  net->filter = only_votes;
  uint64_t votes_before = net->delivered[FL_RAFT_MSG_VOTE];
  uint64_t answers_before = net->delivered[FL_RAFT_MSG_VOTE_RESP];
  fl_raft_campaign(tnet_raft(net, 3));
  assert_int_equal(tnode_drain(tnet_node(net, 3)), 0);
  tnet_deliver(net);
  assert_int_equal(net->delivered[FL_RAFT_MSG_VOTE] - votes_before, 2);
  /* Both heard from the leader within the timeout: request ignored. */
  assert_int_equal(net->delivered[FL_RAFT_MSG_VOTE_RESP] - answers_before, 0);
  assert_int_equal(tnet_status(net, 1).role, FL_RAFT_LEADER);
  assert_int_equal(tnet_status(net, 1).term, term);
  assert_int_equal(tnet_status(net, 2).term, term);
  assert_int_equal(tnet_status(net, 2).vote, 1);
  assert_int_equal(tnet_status(net, 3).term, term + 1);
  tnet_destroy(net);
}

/*
 * Nodes 1 and 2 campaign in the same term while node 3 is unreachable:
 * each votes for itself and refuses the other, so neither wins. Once node 3
 * is back, randomized timeouts break the tie.
 */
static void test_dueling_candidates_split_then_one_leader(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(false, false);
  tnet *net = tnet_create(3, &options, 19);
  tnet_isolate(net, 3);
  fl_raft_campaign(tnet_raft(net, 1));
  fl_raft_campaign(tnet_raft(net, 2));
  assert_int_equal(tnode_drain(tnet_node(net, 1)), 0);
  assert_int_equal(tnode_drain(tnet_node(net, 2)), 0);
  tnet_deliver(net);
  for (uint64_t id = 1; id <= 2; id++) {
    fl_raft_status status = tnet_status(net, id);
    assert_int_equal(status.role, FL_RAFT_CANDIDATE);
    assert_int_equal(status.term, 1);
    assert_int_equal(status.vote, id);
  }
  assert_int_equal(net->delivered[FL_RAFT_MSG_VOTE_RESP], 2);
  tnet_heal(net);
  uint64_t leader = tnet_wait_leader(net, 10 * ELECTION_TICKS);
  uint64_t term = tnet_status(net, leader).term;
  assert_true(term >= 2);
  tnet_tick_all(net, 2 * ELECTION_TICKS);
  uint32_t leaders = 0;
  for (uint64_t id = 1; id <= 3; id++) {
    leaders += tnet_status(net, id).role == FL_RAFT_LEADER;
    assert_int_equal(tnet_status(net, id).leader, leader);
  }
  assert_int_equal(leaders, 1);
  tnet_destroy(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_three_nodes_elect_exactly_one_leader),
      cmocka_unit_test(test_randomized_timeouts_differ),
      cmocka_unit_test(test_candidate_waits_for_its_durable_vote),
      cmocka_unit_test(test_vote_refused_to_shorter_log),
      cmocka_unit_test(test_vote_refused_to_older_last_term),
      cmocka_unit_test(test_pre_vote_prevents_disruptive_rejoin),
      cmocka_unit_test(test_without_pre_vote_rejoin_disrupts),
      cmocka_unit_test(test_check_quorum_leader_steps_down),
      cmocka_unit_test(test_lease_ignores_vote_requests),
      cmocka_unit_test(test_dueling_candidates_split_then_one_leader),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
