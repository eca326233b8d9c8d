/*
 * test_raft_read_index.c - linearizable reads: ReadIndex on the leader needs
 * a heartbeat round acknowledged by a quorum; a follower's read goes through
 * the leader; a leader cut off from the majority never releases a read;
 * lease reads answer at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/raft/net.h"

#define ELECTION_TICKS 10
#define MAX_MESSAGES 64

static int read_index(tnet *net, uint64_t id, uint64_t context) {
  int result = fl_raft_read_index(tnet_raft(net, id), context);
  assert_int_equal(tnode_drain(tnet_node(net, id)), 0);
  tnet_check(net, id);
  return result;
}

/* A leader with two committed commands: commit is 3. */
static tnet *cluster_with_commits(const fl_raft_options *options, uint64_t seed) {
  tnet *net = tnet_create(3, options, seed);
  tnet_elect(net, 1);
  assert_int_equal(tnet_propose(net, 1, 1, 1, 0), 0);
  assert_int_equal(tnet_propose(net, 1, 2, 2, 0), 0);
  tnet_tick_all(net, 1);
  for (uint64_t id = 1; id <= 3; id++) {
    assert_int_equal(tnet_status(net, id).commit, 3);
  }
  return net;
}

static void send_all(tnet *net, tenvelope **messages, uint32_t count) {
  for (uint32_t i = 0; i < count; i++) {
    tnet_send(net, messages[i]);
  }
}

static void test_leader_read_waits_for_quorum_round(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = cluster_with_commits(&options, 91);
  tnet_isolate(net, 1);
  assert_int_equal(read_index(net, 1, 42), 0);
  for (int t = 0; t < 3; t++) { /* heartbeats lost: no quorum heard */
    tnet_tick(net, 1);
    tnet_deliver(net);
  }
  assert_int_equal(net->read_count[1], 0);
  tnet_heal(net);
  tnet_isolate(net, 3);
  tnet_tick(net, 1);
  tenvelope *messages[MAX_MESSAGES];
  uint32_t count = tnet_take_all(net, 1, messages, MAX_MESSAGES);
  assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_HEARTBEAT, 2), 1);
  send_all(net, messages, count);
  assert_int_equal(net->read_count[1], 0); /* sent, not yet acknowledged */
  count = tnet_take_all(net, 2, messages, MAX_MESSAGES);
  assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_HEARTBEAT_RESP, 1), 1);
  send_all(net, messages, count);
  /* Node 2's acknowledgement plus the leader: a quorum of 3. */
  assert_int_equal(net->read_count[1], 1);
  assert_int_equal(net->reads[1][0].context, 42);
  assert_int_equal(net->reads[1][0].index, 3);
  tnet_destroy(net);
}

typedef struct read_messages {
  uint32_t requests;  /* READ_INDEX 2 -> 1 */
  uint32_t responses; /* READ_INDEX_RESP 1 -> 2 */
} read_messages;

static tnet_verdict count_read_messages(void *context, tenvelope *envelope) {
  read_messages *seen = context;
  const fl_raft_message *m = &envelope->message;
  seen->requests += m->type == FL_RAFT_MSG_READ_INDEX && m->from == 2 && m->to == 1;
  seen->responses += m->type == FL_RAFT_MSG_READ_INDEX_RESP && m->from == 1 && m->to == 2;
  return TNET_DELIVER;
}

static void test_follower_read_goes_through_leader(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = cluster_with_commits(&options, 92);
  read_messages seen = {0};
  net->filter = count_read_messages;
  net->filter_context = &seen;
  assert_int_equal(read_index(net, 2, 7), 0);
  assert_int_equal(net->read_count[2], 0);
  tnet_deliver(net);
  assert_int_equal(seen.requests, 1);
  assert_int_equal(seen.responses, 1);
  assert_int_equal(net->read_count[2], 1);
  assert_int_equal(net->reads[2][0].context, 7);
  assert_int_equal(net->reads[2][0].index, tnet_status(net, 1).commit);
  assert_int_equal(net->read_count[1], 0); /* the leader answers the follower only */
  /* Without a known leader (it campaigns alone) a node cannot read. */
  tnet_isolate(net, 3);
  tnet_tick_all(net, 3 * ELECTION_TICKS);
  assert_int_equal(tnet_status(net, 3).leader, 0);
  assert_int_equal(read_index(net, 3, 8), FL_RAFT_E_NOT_LEADER);
  tnet_destroy(net);
}

/*
 * A leader cut off from the majority (no check-quorum, so it keeps its
 * role) while the majority elects another leader and commits new writes:
 * releasing the read would return stale data, so it never happens.
 */
static void test_partitioned_leader_never_releases_read(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, false);
  tnet *net = cluster_with_commits(&options, 93);
  tnet_isolate(net, 1);
  assert_int_equal(read_index(net, 1, 5), 0);
  tnet_tick_all(net, 10 * ELECTION_TICKS);
  uint64_t leader = tnet_leader(net);
  assert_true(leader == 2 || leader == 3);
  assert_int_equal(tnet_propose(net, leader, 3, 3, 0), 0);
  tnet_tick_all(net, 2);
  assert_int_equal(tnet_status(net, leader).commit, 5);
  assert_int_equal(tnet_status(net, 1).role, FL_RAFT_LEADER); /* stale, still leading */
  assert_int_equal(net->read_count[1], 0);
  tnet_destroy(net);
}

static void test_lease_read_answers_without_round(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.lease_read = true;
  tnet *net = cluster_with_commits(&options, 94);
  assert_int_equal(read_index(net, 1, 11), 0);
  assert_int_equal(net->read_count[1], 1);
  assert_int_equal(net->reads[1][0].context, 11);
  assert_int_equal(net->reads[1][0].index, 3);
  tenvelope *messages[MAX_MESSAGES];
  uint32_t count = tnet_take_all(net, 1, messages, MAX_MESSAGES);
  assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_HEARTBEAT, 0), 0);
  tnet_destroy_all(messages, count);
  tnet_destroy(net);
  /* The same cluster without the lease: the read starts a heartbeat round. */
  options.lease_read = false;
  net = cluster_with_commits(&options, 94);
  assert_int_equal(read_index(net, 1, 12), 0);
  assert_int_equal(net->read_count[1], 0);
  count = tnet_take_all(net, 1, messages, MAX_MESSAGES);
  assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_HEARTBEAT, 0), 2);
  send_all(net, messages, count);
  tnet_deliver(net);
  assert_int_equal(net->read_count[1], 1);
  assert_int_equal(net->reads[1][0].index, 3);
  tnet_destroy(net);
}

static tnet_verdict drop_appends_from_two(void *context, tenvelope *envelope) {
  (void)context;
  return envelope->message.type == FL_RAFT_MSG_APPEND && envelope->message.from == 2 ? TNET_DROP
                                                                                     : TNET_DELIVER;
}

/*
 * A new leader does not know the commit index of earlier terms until it
 * commits an entry of its own: a read waits for that, then uses the new
 * commit index (which covers the leader's empty entry).
 */
static void test_read_waits_for_leader_first_commit(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = cluster_with_commits(&options, 97);
  net->filter = drop_appends_from_two;
  uint64_t term = tnet_status(net, 1).term;
  assert_int_equal(tnet_elect(net, 2), term + 1);
  assert_int_equal(tnet_status(net, 2).commit, 3);
  assert_int_equal(read_index(net, 2, 21), 0);
  tnet_tick_all(net, 2);
  assert_int_equal(net->read_count[2], 0);
  net->filter = NULL;
  tnet_tick_all(net, 2);
  assert_int_equal(tnet_status(net, 2).commit, 4);
  assert_int_equal(net->read_count[2], 1);
  assert_int_equal(net->reads[2][0].context, 21);
  assert_int_equal(net->reads[2][0].index, 4);
  tnet_destroy(net);
}

static bool other_leader_exists(tnet *net) {
  return tnet_status(net, 2).role == FL_RAFT_LEADER || tnet_status(net, 3).role == FL_RAFT_LEADER;
}

/*
 * The leader is cut off; every tick it is asked for a lease read. The lease
 * may answer at first, but never once the majority could have elected
 * another leader (which then commits writes the old leader cannot see).
 */
static void test_lease_ends_before_another_leader_exists(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.lease_read = true;
  tnet *net = cluster_with_commits(&options, 95);
  tnet_isolate(net, 1);
  uint32_t answered_at_once = 0;
  bool other_leader = false;
  for (uint64_t t = 0; t < 5 * ELECTION_TICKS && !other_leader; t++) {
    tnet_tick_all(net, 1);
    other_leader = other_leader_exists(net);
    if (tnet_status(net, 1).role != FL_RAFT_LEADER) {
      continue;
    }
    uint32_t before = net->read_count[1];
    assert_int_equal(read_index(net, 1, 1000 + t), 0);
    bool answered = net->read_count[1] > before;
    assert_false(answered && other_leader);
    answered_at_once += answered;
  }
  assert_true(answered_at_once > 0); /* the lease did serve reads at first */
  assert_true(other_leader);
  tnet_destroy(net);
}

/* Once TIMEOUT_NOW left, the target may win at once ignoring leases: the
 * old leader's lease is void and reads take a heartbeat round. */
static void test_lease_void_once_timeout_now_sent(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.lease_read = true;
  tnet *net = cluster_with_commits(&options, 96);
  assert_int_equal(fl_raft_transfer_leader(tnet_raft(net, 1), 2), 0);
  assert_int_equal(tnode_drain(tnet_node(net, 1)), 0);
  tenvelope *messages[MAX_MESSAGES];
  uint32_t count = tnet_take_all(net, 1, messages, MAX_MESSAGES);
  assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_TIMEOUT_NOW, 2), 1);
  assert_int_equal(read_index(net, 1, 13), 0);
  assert_int_equal(net->read_count[1], 0);
  tnet_destroy_all(messages, count);
  tnet_destroy(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_leader_read_waits_for_quorum_round),
      cmocka_unit_test(test_follower_read_goes_through_leader),
      cmocka_unit_test(test_partitioned_leader_never_releases_read),
      cmocka_unit_test(test_read_waits_for_leader_first_commit),
      cmocka_unit_test(test_lease_read_answers_without_round),
      cmocka_unit_test(test_lease_ends_before_another_leader_exists),
      cmocka_unit_test(test_lease_void_once_timeout_now_sent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
