/*
 * test_raft_paper.c - the named scenarios of the Raft paper.
 *
 * Figure 7: a leader of term 8 meets followers whose logs (a)-(f) miss
 * entries, hold extra ones, or both; it must bring each to its own log, and
 * the term hints of rejections must skip a whole conflicting term per round
 * trip.
 *
 * Figure 8: an entry of an earlier term stored on a majority is not yet
 * committed; counting replicas commits only entries of the current term.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/raft/net.h"

/* ---- Figure 7 ---- */

#define FIGURE7_NODES 7

typedef struct figure7_log {
  uint64_t term; /* the node's current term */
  uint32_t count;
  uint64_t terms[12];
} figure7_log;

/* Node 1 is the leader-to-be (term 7, campaigns for 8); nodes 2..7 hold
 * the follower logs (a)..(f) of the figure. */
static const figure7_log figure7_logs[FIGURE7_NODES] = {
    {7, 10, {1, 1, 1, 4, 4, 5, 5, 6, 6, 6}},
    {6, 9, {1, 1, 1, 4, 4, 5, 5, 6, 6}},
    {4, 4, {1, 1, 1, 4}},
    {6, 11, {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6}},
    {7, 12, {1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7}},
    {4, 7, {1, 1, 1, 4, 4, 4, 4}},
    {3, 11, {1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3}},
};

/*
 * Rejections allowed per node: one to find the end of a shorter log plus
 * one per conflicting term. With term hints (e) and (f) need one each;
 * backtracking one entry per round trip would need 4 and 7.
 */
static const uint32_t figure7_allowed_rejections[FIGURE7_NODES] = {0, 1, 1, 0, 0, 1, 2};

typedef struct rejection_count {
  uint32_t by_node[FIGURE7_NODES + 1];
} rejection_count;

static tnet_verdict count_rejections(void *context, tenvelope *envelope) {
  rejection_count *count = context;
  const fl_raft_message *m = &envelope->message;
  if (m->type == FL_RAFT_MSG_APPEND_RESP && m->reject && m->from <= FIGURE7_NODES) {
    count->by_node[m->from]++;
  }
  return TNET_DELIVER;
}

static void test_figure7_leader_repairs_every_follower(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(false, false);
  tnet *net = tnet_create(FIGURE7_NODES, &options, 71);
  for (uint64_t id = 1; id <= FIGURE7_NODES; id++) {
    const figure7_log *log = &figure7_logs[id - 1];
    tnet_craft_log(net, id, log->term, log->terms, log->count, 0);
  }
  rejection_count rejections = {0};
  net->filter = count_rejections;
  net->filter_context = &rejections;
  /* (a), (b), (e), (f) vote for it; (c) and (d) have longer logs. */
  assert_int_equal(tnet_elect(net, 1), 8);
  tnet_tick_all(net, 2);
  fl_raft_status leader = tnet_status(net, 1);
  assert_int_equal(leader.last_index, 11);
  assert_int_equal(fl_raft_term_at(tnet_raft(net, 1), 11), 8);
  uint32_t total = 0;
  for (uint64_t id = 1; id <= FIGURE7_NODES; id++) {
    assert_true(tnet_logs_equal(net, 1, id));
    assert_true(tnet_state_matches_log(net, id));
    fl_raft_status status = tnet_status(net, id);
    assert_int_equal(status.commit, 11);
    assert_int_equal(status.term, 8);
    assert_int_equal(status.leader, 1);
    assert_true(rejections.by_node[id] <= figure7_allowed_rejections[id - 1]);
    total += rejections.by_node[id];
  }
  assert_true(total <= 4); /* one each for (a), (b), (e), (f) */
  tnet_destroy(net);
}

/* ---- Figure 8 ---- */

#define FIGURE8_NODES 5

/* Strips from APPENDs of node 1 every entry at index 3 or later: the
 * term-4 entry never leaves the leader, while index 2 still replicates. */
static tnet_verdict withhold_current_term_entry(void *context, tenvelope *envelope) {
  (void)context;
  fl_raft_message *m = &envelope->message;
  if (m->type == FL_RAFT_MSG_APPEND && m->from == 1) {
    uint32_t kept = 0;
    while (kept < m->entry_count && m->entries[kept].index < 3) {
      kept++;
    }
    m->entry_count = kept;
    if (kept == 0) {
      m->entries = NULL;
    }
  }
  return TNET_DELIVER;
}

/*
 * State (c) of the figure: S1 leads term 4 and has replicated (2, term 2)
 * to S2 and S3, a majority; its own (3, term 4) is on its disk only. S4 and
 * S5 are cut off from S1. S5 holds (2, term 3).
 */
static tnet *figure8_state_c(void) {
  fl_raft_options options = tnet_options(false, false);
  options.max_entries_per_message = 1;
  tnet *net = tnet_create(FIGURE8_NODES, &options, 81);
  static const uint64_t s1[] = {1, 2};
  static const uint64_t s3[] = {1};
  static const uint64_t s5[] = {1, 3};
  tnet_craft_log(net, 1, 3, s1, 2, 1);
  tnet_craft_log(net, 2, 2, s1, 2, 1);
  tnet_craft_log(net, 3, 2, s3, 1, 1);
  tnet_craft_log(net, 4, 2, s3, 1, 1);
  tnet_craft_log(net, 5, 3, s5, 2, 1);
  net->filter = withhold_current_term_entry;
  tnet_cut(net, 1, 4);
  tnet_cut(net, 1, 5);
  assert_int_equal(tnet_elect(net, 1), 4); /* votes of S2 and S3 */
  tnet_tick(net, 1);
  tnet_deliver(net);
  for (uint64_t id = 1; id <= 3; id++) {
    assert_int_equal(fl_raft_term_at(tnet_raft(net, id), 2), 2);
  }
  uint64_t match = 0;
  uint64_t next = 0;
  assert_true(fl_raft_peer_match(tnet_raft(net, 1), 3, &match, &next));
  assert_int_equal(match, 2);
  assert_int_equal(tnet_status(net, 1).stable_index, 3);
  return net;
}

static void test_figure8_old_term_entry_not_committed_by_counting(void **state) {
  (void)state;
  tnet *net = figure8_state_c();
  /* Several heartbeat rounds: (2, term 2) sits on 3 of 5, uncommitted. */
  for (int round = 0; round < 5; round++) {
    tnet_tick(net, 1);
    tnet_deliver(net);
  }
  for (uint64_t id = 1; id <= FIGURE8_NODES; id++) {
    assert_int_equal(tnet_status(net, id).commit, 1);
    assert_int_equal(tnode_state(tnet_node(net, id))->applied_index, 1);
  }
  /* State (e): the term-4 entry reaches the majority; both commit at once. */
  net->filter = NULL;
  tnet_tick(net, 1);
  tnet_deliver(net);
  assert_int_equal(tnet_status(net, 1).commit, 3);
  tnet_tick(net, 1);
  tnet_deliver(net);
  for (uint64_t id = 1; id <= 3; id++) {
    assert_int_equal(tnet_status(net, id).commit, 3);
    const tstate *applied = tnode_state(tnet_node(net, id));
    assert_int_equal(applied->applied_index, 3);
    assert_true(tnet_state_matches_log(net, id));
    assert_int_equal(fl_raft_term_at(tnet_raft(net, id), 2), 2);
  }
  tnet_destroy(net);
}

static void campaign(tnet *net, uint64_t id) {
  fl_raft_campaign(tnet_raft(net, id));
  assert_int_equal(tnode_drain(tnet_node(net, id)), 0);
  tnet_check(net, id);
  tnet_deliver(net);
}

/*
 * State (d): S1 is gone before its term-4 entry spread; S5 wins term 5 with
 * the votes of S2, S3, S4 and overwrites (2, term 2) with (2, term 3). Had
 * S1 committed (2, term 2) by counting, a committed entry would be lost now.
 */
static void test_figure8_uncommitted_old_entry_is_overwritten(void **state) {
  (void)state;
  tnet *net = figure8_state_c();
  tnet_heal(net);
  tnet_isolate(net, 1);
  /* Term 4: S2 and S3 already voted for S1. Term 5: S2, S3, S4 grant, as
   * (2, term 3) is more up to date than their (2, term 2). */
  campaign(net, 5);
  assert_int_equal(tnet_status(net, 5).role, FL_RAFT_CANDIDATE);
  campaign(net, 5);
  assert_int_equal(tnet_status(net, 5).role, FL_RAFT_LEADER);
  assert_int_equal(tnet_status(net, 5).term, 5);
  tnet_tick(net, 5);
  tnet_deliver(net);
  for (uint64_t id = 2; id <= FIGURE8_NODES; id++) {
    assert_int_equal(fl_raft_term_at(tnet_raft(net, id), 2), 3);
    assert_int_equal(tnet_status(net, id).commit, 3);
    assert_true(tnet_logs_equal(net, 5, id));
    assert_true(tnet_state_matches_log(net, id));
  }
  /* S1 rejoins and follows: its term-2 and term-4 entries are replaced. */
  tnet_heal(net);
  net->filter = NULL;
  for (int round = 0; round < 3; round++) {
    tnet_tick(net, 5);
    tnet_deliver(net);
  }
  assert_int_equal(tnet_status(net, 1).role, FL_RAFT_FOLLOWER);
  assert_true(tnet_logs_equal(net, 5, 1));
  assert_true(tnet_state_matches_log(net, 1));
  assert_int_equal(tnode_state(tnet_node(net, 1))->applied_term, 5);
  tnet_destroy(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_figure7_leader_repairs_every_follower),
      cmocka_unit_test(test_figure8_old_term_entry_not_committed_by_counting),
      cmocka_unit_test(test_figure8_uncommitted_old_entry_is_overwritten),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
