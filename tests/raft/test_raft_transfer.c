/*
 * test_raft_transfer.c - leader transfer (TimeoutNow): to an up-to-date
 * follower, to a slow follower the leader first catches up, proposals
 * refused meanwhile, and the transfer abandoned after an election timeout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/raft/net.h"

#define ELECTION_TICKS 10

static int transfer(tnet *net, uint64_t leader, uint64_t target) {
  int result = fl_raft_transfer_leader(tnet_raft(net, leader), target);
  assert_int_equal(tnode_drain(tnet_node(net, leader)), 0);
  tnet_check(net, leader);
  return result;
}

static void test_transfer_to_up_to_date_follower(void **state) {
  (void)state;
  /* Check-quorum on: the forced campaign must override the followers' lease. */
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 61);
  uint64_t term = tnet_elect(net, 1);
  tnet_tick_all(net, 2);
  assert_int_equal(transfer(net, 1, 9), FL_RAFT_E_NOT_MEMBER);
  assert_int_equal(transfer(net, 2, 3), FL_RAFT_E_NOT_LEADER);
  assert_int_equal(transfer(net, 1, 2), 0);
  tnet_deliver(net);
  assert_int_equal(net->delivered[FL_RAFT_MSG_TIMEOUT_NOW], 1);
  for (uint64_t id = 1; id <= 3; id++) {
    fl_raft_status status = tnet_status(net, id);
    assert_int_equal(status.term, term + 1);
    assert_int_equal(status.leader, 2);
    assert_int_equal(status.role, id == 2 ? FL_RAFT_LEADER : FL_RAFT_FOLLOWER);
  }
  tnet_destroy(net);
}

typedef struct timeout_now_watch {
  tnet *net;
  uint32_t sent;
  bool target_was_behind;
} timeout_now_watch;

/* TIMEOUT_NOW must leave only once the target holds the whole log. */
static tnet_verdict watch_timeout_now(void *context, tenvelope *envelope) {
  timeout_now_watch *watch = context;
  const fl_raft_message *m = &envelope->message;
  if (m->type == FL_RAFT_MSG_TIMEOUT_NOW) {
    watch->sent++;
    uint64_t match = 0;
    uint64_t next = 0;
    assert_true(fl_raft_peer_match(tnet_raft(watch->net, m->from), m->to, &match, &next));
    watch->target_was_behind = watch->target_was_behind ||
                               match != tnet_status(watch->net, m->from).last_index ||
                               tnet_status(watch->net, m->to).last_index != match;
  }
  return TNET_DELIVER;
}

static void test_transfer_to_slow_follower(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 62);
  uint64_t term = tnet_elect(net, 1);
  tnet_isolate(net, 3);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(tnet_propose(net, 1, 1, (uint64_t)i, 0), 0);
  }
  tnet_deliver(net);
  tnet_heal(net);
  assert_true(tnet_status(net, 3).last_index < tnet_status(net, 1).last_index);
  timeout_now_watch watch = {.net = net};
  net->filter = watch_timeout_now;
  net->filter_context = &watch;
  assert_int_equal(transfer(net, 1, 3), 0);
  assert_int_equal(tnet_status(net, 1).lead_transferee, 3);
  /* No new entries while the target catches up to a fixed end. */
  assert_int_equal(tnet_propose(net, 1, 1, 9, 0), FL_RAFT_E_TRANSFERRING);
  static const fl_raft_change change[] = {{FL_RAFT_REMOVE, 2}};
  assert_int_equal(fl_raft_propose_change(tnet_raft(net, 1), change, 1, false),
                   FL_RAFT_E_TRANSFERRING);
  for (uint32_t t = 0; t < ELECTION_TICKS && tnet_status(net, 3).role != FL_RAFT_LEADER; t++) {
    tnet_deliver(net);
    tnet_tick_all(net, 1);
  }
  assert_int_equal(watch.sent, 1);
  assert_false(watch.target_was_behind);
  fl_raft_status target = tnet_status(net, 3);
  assert_int_equal(target.role, FL_RAFT_LEADER);
  assert_int_equal(target.term, term + 1);
  assert_int_equal(tnode_state(tnet_node(net, 3))->command_count, 5);
  assert_int_equal(tnet_status(net, 1).role, FL_RAFT_FOLLOWER);
  tnet_destroy(net);
}

static void test_transfer_abandoned_after_election_timeout(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 63);
  uint64_t term = tnet_elect(net, 1);
  tnet_isolate(net, 3); /* the target never answers */
  assert_int_equal(transfer(net, 1, 3), 0);
  tnet_tick_all(net, ELECTION_TICKS - 1);
  assert_int_equal(tnet_status(net, 1).lead_transferee, 3);
  assert_int_equal(tnet_propose(net, 1, 1, 1, 0), FL_RAFT_E_TRANSFERRING);
  tnet_tick_all(net, 1);
  fl_raft_status leader = tnet_status(net, 1);
  assert_int_equal(leader.lead_transferee, 0);
  assert_int_equal(leader.role, FL_RAFT_LEADER);
  assert_int_equal(leader.term, term);
  assert_int_equal(tnet_propose(net, 1, 1, 1, 0), 0);
  tnet_deliver(net);
  assert_int_equal(tnet_status(net, 2).commit, tnet_status(net, 1).last_index);
  tnet_destroy(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_transfer_to_up_to_date_follower),
      cmocka_unit_test(test_transfer_to_slow_follower),
      cmocka_unit_test(test_transfer_abandoned_after_election_timeout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
