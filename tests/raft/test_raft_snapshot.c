/*
 * test_raft_snapshot.c - snapshots and log compaction: a follower behind the
 * leader's compacted log gets a SNAPSHOT, installs it, catches up with the
 * entries after it, and restarts from it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/raft/net.h"

#define ELECTION_TICKS 10

typedef struct snapshot_watch {
  uint64_t target;
  uint32_t sent;
  uint64_t index;
} snapshot_watch;

static tnet_verdict watch_snapshots(void *context, tenvelope *envelope) {
  snapshot_watch *watch = context;
  const fl_raft_message *m = &envelope->message;
  if (m->type == FL_RAFT_MSG_SNAPSHOT && m->to == watch->target) {
    watch->sent++;
    watch->index = m->snapshot.index;
    assert_non_null(envelope->snapshot_state); /* the data travels with it */
  }
  return TNET_DELIVER;
}

static void assert_same_state(const tstate *a, const tstate *b) {
  assert_int_equal(a->applied_index, b->applied_index);
  assert_int_equal(a->applied_term, b->applied_term);
  assert_int_equal(a->chain_hash, b->chain_hash);
  assert_int_equal(a->command_count, b->command_count);
  assert_memory_equal(a->values, b->values, sizeof(a->values));
  assert_true(fl_raft_conf_equal(&a->conf, &b->conf));
}

/* Node 3 misses 10 commands; the leader snapshots and compacts them away,
 * then commits 2 more. */
static tnet *leader_with_compacted_log(uint64_t *snapshot_index) {
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 101);
  tnet_elect(net, 1);
  tnet_isolate(net, 3);
  for (uint64_t i = 0; i < 10; i++) {
    assert_int_equal(tnet_propose(net, 1, i % 4, 100 + i, (uint32_t)i), 0);
  }
  tnet_tick_all(net, 1);
  assert_int_equal(tnode_take_snapshot(tnet_node(net, 1)), 0);
  tnet_check(net, 1);
  fl_raft_status leader = tnet_status(net, 1);
  assert_int_equal(leader.first_index, leader.applied + 1); /* compacted up to applied */
  *snapshot_index = leader.applied;
  for (uint64_t i = 0; i < 2; i++) {
    assert_int_equal(tnet_propose(net, 1, 5, 200 + i, 0), 0);
  }
  tnet_tick_all(net, 1);
  assert_true(tnet_status(net, 3).last_index < leader.first_index);
  return net;
}

static void test_follower_behind_compacted_log_gets_snapshot(void **state) {
  (void)state;
  uint64_t snapshot_index = 0;
  tnet *net = leader_with_compacted_log(&snapshot_index);
  snapshot_watch watch = {.target = 3};
  net->filter = watch_snapshots;
  net->filter_context = &watch;
  tnet_heal(net);
  tnet_tick_all(net, 3);
  assert_int_equal(watch.sent, 1);
  assert_int_equal(watch.index, snapshot_index);
  fl_raft_status leader = tnet_status(net, 1);
  fl_raft_status follower = tnet_status(net, 3);
  assert_int_equal(follower.first_index, snapshot_index + 1);
  assert_int_equal(follower.last_index, leader.last_index);
  assert_int_equal(follower.commit, leader.commit);
  assert_int_equal(follower.applied, leader.applied);
  assert_true(tnet_logs_equal(net, 1, 3));
  assert_true(tnet_state_matches_log(net, 3));
  assert_same_state(tnode_state(tnet_node(net, 3)), tnode_state(tnet_node(net, 1)));
  assert_int_equal(tnode_state(tnet_node(net, 3))->command_count, 12);
  uint64_t match = 0;
  uint64_t next = 0;
  assert_true(fl_raft_peer_match(tnet_raft(net, 1), 3, &match, &next));
  assert_int_equal(match, leader.last_index);
  /* Replication resumes normally after the snapshot. */
  assert_int_equal(tnet_propose(net, 1, 6, 300, 0), 0);
  tnet_tick_all(net, 1);
  assert_same_state(tnode_state(tnet_node(net, 3)), tnode_state(tnet_node(net, 1)));
  tnet_destroy(net);
}

static void test_follower_restarts_from_installed_snapshot(void **state) {
  (void)state;
  uint64_t snapshot_index = 0;
  tnet *net = leader_with_compacted_log(&snapshot_index);
  tnet_heal(net);
  tnet_tick_all(net, 3);
  assert_int_equal(tnode_durable_snapshot(tnet_node(net, 3))->applied_index, snapshot_index);
  tnode_crash(tnet_node(net, 3));
  assert_int_equal(tnode_restart(tnet_node(net, 3)), 0);
  tnet_check(net, 3);
  fl_raft_status restarted = tnet_status(net, 3);
  assert_int_equal(restarted.first_index, snapshot_index + 1);
  assert_int_equal(restarted.last_index, tnet_status(net, 1).last_index);
  tnet_tick_all(net, 2);
  assert_same_state(tnode_state(tnet_node(net, 3)), tnode_state(tnet_node(net, 1)));
  assert_int_equal(tnet_leader(net), 1);
  tnet_destroy(net);
}

/* A learner added after compaction starts from the leader's snapshot,
 * whose configuration predates it, and learns its own addition from the
 * log after it. */
static void test_new_learner_starts_from_snapshot(void **state) {
  (void)state;
  uint64_t snapshot_index = 0;
  tnet *net = leader_with_compacted_log(&snapshot_index);
  tnet_heal(net);
  tnet_add_joiner(net, 4);
  snapshot_watch watch = {.target = 4};
  static const fl_raft_change add_learner[] = {{FL_RAFT_ADD_LEARNER, 4}};
  assert_int_equal(fl_raft_propose_change(tnet_raft(net, 1), add_learner, 1, false), 0);
  assert_int_equal(tnode_drain(tnet_node(net, 1)), 0);
  net->filter = watch_snapshots;
  net->filter_context = &watch;
  tnet_tick_all(net, 3);
  assert_int_equal(watch.sent, 1);
  assert_int_equal(watch.index, snapshot_index);
  fl_raft_status learner = tnet_status(net, 4);
  assert_int_equal(learner.first_index, snapshot_index + 1);
  assert_true(fl_raft_conf_has_learner(&learner.conf, 4));
  assert_true(tnet_logs_equal(net, 1, 4));
  assert_same_state(tnode_state(tnet_node(net, 4)), tnode_state(tnet_node(net, 1)));
  tnet_destroy(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_follower_behind_compacted_log_gets_snapshot),
      cmocka_unit_test(test_follower_restarts_from_installed_snapshot),
      cmocka_unit_test(test_new_learner_starts_from_snapshot),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
