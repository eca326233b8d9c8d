/*
 * test_raft_membership.c - joint consensus (enter, auto-leave, explicit
 * leave, removing the leader), learners, and one change at a time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/raft/net.h"

#define ELECTION_TICKS 10
#define MAX_CONF_ENTRIES 8

static fl_raft_conf make_conf(const uint64_t *voters, uint8_t voter_count, const uint64_t *outgoing,
                              uint8_t outgoing_count, bool auto_leave) {
  fl_raft_conf conf;
  memset(&conf, 0, sizeof(conf));
  conf.voter_count = voter_count;
  memcpy(conf.voters, voters, voter_count * sizeof(uint64_t));
  conf.outgoing_count = outgoing_count;
  if (outgoing_count > 0) {
    memcpy(conf.outgoing, outgoing, outgoing_count * sizeof(uint64_t));
  }
  conf.auto_leave = auto_leave ? 1 : 0;
  return conf;
}

typedef struct conf_entries {
  uint32_t count;
  uint64_t index[MAX_CONF_ENTRIES];
  uint64_t term[MAX_CONF_ENTRIES];
  fl_raft_conf conf[MAX_CONF_ENTRIES];
} conf_entries;

/* The configuration entries of node `id`'s log, decoded. */
static conf_entries conf_entries_of(tnet *net, uint64_t id) {
  conf_entries found = {0};
  const tlog *log = tnode_log(tnet_node(net, id));
  for (uint64_t index = tlog_first_index(log); index <= tlog_last_index(log); index++) {
    const tlog_entry *entry = tlog_entry_at(log, index);
    if (entry->type != FL_RAFT_ENTRY_CONF_CHANGE) {
      continue;
    }
    assert_true(found.count < MAX_CONF_ENTRIES);
    found.index[found.count] = index;
    found.term[found.count] = entry->term;
    assert_int_equal(fl_raft_conf_decode(tlog_entry_data(entry), tlog_entry_length(entry),
                                         &found.conf[found.count]),
                     0);
    found.count++;
  }
  return found;
}

static bool has_learner(tnet *net, uint64_t id, uint64_t learner) {
  fl_raft_status status = tnet_status(net, id);
  return fl_raft_conf_has_learner(&status.conf, learner);
}

/* Node `id` runs with `conf` and its state machine applied it too. */
static void assert_conf(tnet *net, uint64_t id, const fl_raft_conf *conf) {
  fl_raft_status status = tnet_status(net, id);
  assert_true(fl_raft_conf_equal(&status.conf, conf));
  assert_true(fl_raft_conf_equal(&tnode_state(tnet_node(net, id))->conf, conf));
}

static int propose_change(tnet *net, uint64_t id, const fl_raft_change *changes, uint32_t count,
                          bool auto_leave) {
  int result = fl_raft_propose_change(tnet_raft(net, id), changes, count, auto_leave);
  assert_int_equal(tnode_drain(tnet_node(net, id)), 0);
  tnet_check(net, id);
  return result;
}

static const fl_raft_change add_two_remove_one[] = {
    {FL_RAFT_ADD_VOTER, 4}, {FL_RAFT_ADD_VOTER, 5}, {FL_RAFT_REMOVE, 3}};
static const uint64_t old_voters[] = {1, 2, 3};
static const uint64_t new_voters[] = {1, 2, 4, 5};

static tnet *cluster_with_joiners(uint64_t seed) {
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, seed);
  tnet_add_joiner(net, 4);
  tnet_add_joiner(net, 5);
  tnet_elect(net, 1);
  return net;
}

static void test_joint_change_auto_leave(void **state) {
  (void)state;
  tnet *net = cluster_with_joiners(51);
  uint64_t term = tnet_status(net, 1).term;
  assert_int_equal(propose_change(net, 1, add_two_remove_one, 3, true), 0);
  tnet_tick_all(net, 3);
  fl_raft_conf joint = make_conf(new_voters, 4, old_voters, 3, true);
  fl_raft_conf final = make_conf(new_voters, 4, NULL, 0, false);
  /* Enter joint, then the leader itself proposed the leave entry. */
  conf_entries entries = conf_entries_of(net, 1);
  assert_int_equal(entries.count, 2);
  assert_true(fl_raft_conf_equal(&entries.conf[0], &joint));
  assert_true(fl_raft_conf_equal(&entries.conf[1], &final));
  assert_int_equal(entries.term[1], term);
  static const uint64_t members[] = {1, 2, 4, 5};
  for (int i = 0; i < 4; i++) {
    assert_conf(net, members[i], &final);
    assert_true(tnet_logs_equal(net, 1, members[i]));
    assert_int_equal(tnet_status(net, members[i]).commit, entries.index[1]);
  }
  /* The new configuration commits without node 3. */
  tnode_crash(tnet_node(net, 3));
  assert_int_equal(tnet_propose(net, 1, 1, 1, 0), 0);
  tnet_tick_all(net, 2);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(tnet_status(net, members[i]).commit, tnet_status(net, 1).last_index);
  }
  assert_int_equal(tnet_status(net, 1).role, FL_RAFT_LEADER);
  tnet_destroy(net);
}

static void test_joint_change_explicit_leave(void **state) {
  (void)state;
  tnet *net = cluster_with_joiners(52);
  assert_int_equal(propose_change(net, 1, add_two_remove_one, 3, false), 0);
  tnet_tick_all(net, 3 * ELECTION_TICKS);
  fl_raft_conf joint = make_conf(new_voters, 4, old_voters, 3, false);
  for (uint64_t id = 1; id <= 5; id++) {
    assert_conf(net, id, &joint); /* stays joint: nobody leaves on its own */
  }
  static const fl_raft_change another[] = {{FL_RAFT_ADD_LEARNER, 6}};
  assert_int_equal(propose_change(net, 1, another, 1, false), FL_RAFT_E_CONF_PENDING);
  /* Joint quorum: {1,2,3} has a majority but {1,2,4,5} does not. */
  tnet_isolate(net, 4);
  tnet_isolate(net, 5);
  assert_int_equal(tnet_propose(net, 1, 1, 1, 0), 0);
  tnet_tick_all(net, 2);
  uint64_t last = tnet_status(net, 1).last_index;
  assert_true(tnet_status(net, 1).commit < last);
  tnet_heal(net);
  tnet_tick_all(net, 2);
  assert_int_equal(tnet_status(net, 1).commit, last);
  int result = fl_raft_propose_leave_joint(tnet_raft(net, 1));
  assert_int_equal(tnode_drain(tnet_node(net, 1)), 0);
  assert_int_equal(result, 0);
  tnet_tick_all(net, 3);
  fl_raft_conf final = make_conf(new_voters, 4, NULL, 0, false);
  static const uint64_t members[] = {1, 2, 4, 5};
  for (int i = 0; i < 4; i++) {
    assert_conf(net, members[i], &final);
  }
  /* Leaving twice is refused: the configuration is simple again. */
  assert_int_equal(fl_raft_propose_leave_joint(tnet_raft(net, 1)), FL_RAFT_E_INVALID);
  tnet_destroy(net);
}

/*
 * Remove the leader (and add node 4) in one joint change. Node 1 is in the
 * outgoing half: it keeps leading through the joint configuration, proposes
 * the leave entry, steps down once that is applied, and the remaining
 * members elect a leader among themselves.
 */
static void test_joint_change_removing_the_leader(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 53);
  tnet_add_joiner(net, 4);
  uint64_t term = tnet_elect(net, 1);
  static const fl_raft_change swap[] = {{FL_RAFT_ADD_VOTER, 4}, {FL_RAFT_REMOVE, 1}};
  assert_int_equal(propose_change(net, 1, swap, 2, true), 0);
  tnet_deliver(net);
  fl_raft_status old = tnet_status(net, 1);
  assert_int_equal(old.role, FL_RAFT_FOLLOWER);
  assert_int_equal(old.term, term);
  static const uint64_t remaining[] = {2, 3, 4};
  fl_raft_conf final = make_conf(remaining, 3, NULL, 0, false);
  assert_true(fl_raft_conf_equal(&old.conf, &final));
  conf_entries entries = conf_entries_of(net, 2);
  assert_int_equal(entries.count, 2);
  assert_int_equal(entries.conf[0].outgoing_count, 3); /* joint */
  assert_int_equal(entries.term[1], term);             /* the leave came from node 1 */
  uint64_t leader = tnet_wait_leader(net, 10 * ELECTION_TICKS);
  assert_true(leader >= 2 && leader <= 4);
  assert_true(tnet_status(net, leader).term > term);
  assert_int_equal(tnet_propose(net, leader, 2, 2, 0), 0);
  tnet_tick_all(net, 2);
  for (int i = 0; i < 3; i++) {
    assert_conf(net, remaining[i], &final);
    assert_int_equal(tnet_status(net, remaining[i]).commit, tnet_status(net, leader).last_index);
  }
  /* Node 1 is no voter any more: it never campaigns. */
  tnet_tick_all(net, 5 * ELECTION_TICKS);
  assert_int_equal(tnet_status(net, 1).role, FL_RAFT_FOLLOWER);
  assert_int_equal(tnet_leader(net), leader);
  tnet_destroy(net);
}

/* One voter removed, the leader itself: a simple change, applied directly.
 * The entry commits under the old configuration, then the leader steps
 * down and the other two go on. */
static void test_simple_change_removing_the_leader(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 57);
  tnet_elect(net, 1);
  static const fl_raft_change remove_leader[] = {{FL_RAFT_REMOVE, 1}};
  assert_int_equal(propose_change(net, 1, remove_leader, 1, false), 0);
  tnet_deliver(net);
  static const uint64_t remaining[] = {2, 3};
  fl_raft_conf final = make_conf(remaining, 2, NULL, 0, false);
  for (uint64_t id = 1; id <= 3; id++) {
    assert_conf(net, id, &final);
    assert_int_equal(tnet_status(net, id).role, FL_RAFT_FOLLOWER);
  }
  uint64_t leader = tnet_wait_leader(net, 10 * ELECTION_TICKS);
  assert_true(leader == 2 || leader == 3);
  assert_int_equal(tnet_propose(net, leader, 1, 1, 0), 0);
  tnet_tick_all(net, 2);
  uint64_t other = leader == 2 ? 3 : 2;
  assert_true(tnet_logs_equal(net, leader, other));
  assert_int_equal(tnet_status(net, other).commit, tnet_status(net, leader).last_index);
  tnet_destroy(net);
}

/*
 * A candidate applies, mid-election, the committed entry that removes it.
 * Node 3 holds the removal in its log, not yet durable, when it starts a
 * forced campaign; the other two grant their votes; then its write completes
 * and it applies the entry. The votes, now a majority of {1, 2}, must not
 * make a non-member the leader: it is a follower from the moment it applies.
 */
static void test_candidate_removed_while_campaigning(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(false, false);
  tnet *net = tnet_create(3, &options, 59);
  uint64_t term = tnet_elect(net, 1);
  net->hold_writes[3] = true;
  static const fl_raft_change remove_three[] = {{FL_RAFT_REMOVE, 3}};
  assert_int_equal(propose_change(net, 1, remove_three, 1, false), 0);
  tnet_deliver(net);
  uint64_t removal = conf_entries_of(net, 1).index[0];
  assert_true(tnet_status(net, 1).applied >= removal);
  assert_true(tnet_status(net, 3).applied < removal);
  fl_raft_status before = tnet_status(net, 3);
  assert_true(fl_raft_conf_has_voter(&before.conf, 3));

  fl_raft_message timeout_now = {.type = FL_RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 3, .term = term};
  assert_int_equal(tnode_step(tnet_node(net, 3), tenvelope_create(&timeout_now, NULL)), 0);
  assert_int_equal(tnet_status(net, 3).role, FL_RAFT_CANDIDATE);
  tenvelope *requests[8];
  uint32_t request_count = tnet_take_all(net, 3, requests, 8);
  assert_int_equal(tnet_count(requests, request_count, FL_RAFT_MSG_VOTE, 0), 2);
  for (uint32_t i = 0; i < request_count; i++) {
    tnet_send(net, requests[i]);
  }
  tenvelope *grants[16];
  uint32_t grant_count = 0;
  for (uint64_t voter = 1; voter <= 2; voter++) {
    tnet_persist(net, voter);
    grant_count += tnet_take_all(net, voter, grants + grant_count, 8);
  }
  assert_int_equal(tnet_count(grants, grant_count, FL_RAFT_MSG_VOTE_RESP, 3), 2);

  net->hold_writes[3] = false;
  tnet_persist(net, 3);
  fl_raft_status after = tnet_status(net, 3);
  assert_true(after.applied >= removal);
  assert_false(fl_raft_conf_has_voter(&after.conf, 3));
  assert_int_equal(after.role, FL_RAFT_FOLLOWER);
  for (uint32_t i = 0; i < grant_count; i++) {
    tnet_send(net, grants[i]);
  }
  assert_int_not_equal(tnet_status(net, 3).role, FL_RAFT_LEADER);
  uint64_t leader = tnet_wait_leader(net, 10 * ELECTION_TICKS);
  assert_true(leader == 1 || leader == 2);
  tnet_destroy(net);
}

/* Drops APPENDs of node 1 that carry a configuration entry leaving joint. */
static tnet_verdict drop_leave_entry(void *context, tenvelope *envelope) {
  (void)context;
  const fl_raft_message *m = &envelope->message;
  for (uint32_t i = 0; m->type == FL_RAFT_MSG_APPEND && m->from == 1 && i < m->entry_count; i++) {
    fl_raft_conf conf;
    if (m->entries[i].type == FL_RAFT_ENTRY_CONF_CHANGE &&
        fl_raft_conf_decode(m->entries[i].data, m->entries[i].length, &conf) == 0 &&
        !fl_raft_conf_is_joint(&conf)) {
      return TNET_DROP;
    }
  }
  return TNET_DELIVER;
}

/*
 * The leader that entered the joint configuration (auto_leave) dies before
 * its leave entry reaches anyone. The next leader runs the same joint
 * configuration and must propose the leave itself, as etcd's leader does
 * at every advance; otherwise the group stays joint for ever.
 */
static void test_auto_leave_survives_leader_change(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 56);
  tnet_add_joiner(net, 4);
  tnet_elect(net, 1);
  net->filter = drop_leave_entry;
  static const fl_raft_change swap[] = {{FL_RAFT_ADD_VOTER, 4}, {FL_RAFT_REMOVE, 3}};
  assert_int_equal(propose_change(net, 1, swap, 2, true), 0);
  tnet_deliver(net);
  static const uint64_t incoming[] = {1, 2, 4};
  fl_raft_conf joint = make_conf(incoming, 3, old_voters, 3, true);
  assert_conf(net, 2, &joint);
  assert_conf(net, 3, &joint);
  tnode_crash(tnet_node(net, 1));
  net->filter = NULL;
  tnet_elect(net, 2);
  tnet_tick_all(net, 3 * ELECTION_TICKS);
  fl_raft_conf final = make_conf(incoming, 3, NULL, 0, false);
  assert_conf(net, 2, &final);
  assert_conf(net, 4, &final);
  tnet_destroy(net);
}

static tnet_verdict count_vote_requests_to_four(void *context, tenvelope *envelope) {
  uint32_t *count = context;
  uint32_t type = envelope->message.type;
  if ((type == FL_RAFT_MSG_VOTE || type == FL_RAFT_MSG_PRE_VOTE) && envelope->message.to == 4) {
    (*count)++;
  }
  return TNET_DELIVER;
}

/* Isolated, the learner ticks for a long time and never asks for votes. */
static void assert_learner_never_campaigns(tnet *net, uint64_t learner) {
  uint64_t term = tnet_status(net, learner).term;
  tnet_isolate(net, learner);
  for (uint32_t t = 0; t < 5 * ELECTION_TICKS; t++) {
    tnet_tick(net, learner);
    tenvelope *messages[16];
    uint32_t count = tnet_take_all(net, learner, messages, 16);
    assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_PRE_VOTE, 0), 0);
    assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_VOTE, 0), 0);
    tnet_destroy_all(messages, count);
  }
  assert_int_equal(tnet_status(net, learner).role, FL_RAFT_FOLLOWER);
  assert_int_equal(tnet_status(net, learner).term, term);
  tnet_heal(net);
}

static void test_learner_receives_log_never_votes_never_counts(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 54);
  tnet_add_joiner(net, 4);
  uint32_t vote_requests = 0;
  net->filter = count_vote_requests_to_four;
  net->filter_context = &vote_requests;
  tnet_elect(net, 1);
  static const fl_raft_change add_learner[] = {{FL_RAFT_ADD_LEARNER, 4}};
  assert_int_equal(propose_change(net, 1, add_learner, 1, false), 0);
  assert_int_equal(tnet_propose(net, 1, 3, 3, 0), 0);
  tnet_tick_all(net, 3);
  assert_true(tnet_logs_equal(net, 1, 4));
  assert_true(tnet_state_matches_log(net, 4));
  assert_int_equal(tnode_state(tnet_node(net, 4))->command_count, 1);
  assert_true(has_learner(net, 4, 4));
  assert_learner_never_campaigns(net, 4);
  /* Leader and learner hold the entry: 1 of 3 voters, no commit. */
  tnet_isolate(net, 2);
  tnet_isolate(net, 3);
  uint64_t commit = tnet_status(net, 1).commit;
  assert_int_equal(tnet_propose(net, 1, 4, 4, 0), 0);
  tnet_tick_all(net, 3);
  uint64_t match = 0;
  uint64_t next = 0;
  assert_true(fl_raft_peer_match(tnet_raft(net, 1), 4, &match, &next));
  assert_int_equal(match, tnet_status(net, 1).last_index);
  assert_int_equal(tnet_status(net, 1).commit, commit);
  /* A new election among the voters never asks the learner. */
  tnet_heal(net);
  tnet_isolate(net, 1);
  tnet_tick_all(net, 6 * ELECTION_TICKS);
  uint64_t leader = tnet_leader(net);
  assert_true(leader == 2 || leader == 3);
  assert_int_equal(vote_requests, 0);
  tnet_destroy(net);
}

static void test_one_change_at_a_time(void **state) {
  (void)state;
  tnet *net = cluster_with_joiners(55);
  static const fl_raft_change add_four[] = {{FL_RAFT_ADD_VOTER, 4}};
  static const fl_raft_change add_five[] = {{FL_RAFT_ADD_LEARNER, 5}};
  assert_int_equal(propose_change(net, 2, add_four, 1, false), FL_RAFT_E_NOT_LEADER);
  assert_int_equal(propose_change(net, 1, add_four, 1, false), 0);
  /* Until the first change is applied, the second is refused. */
  assert_int_equal(propose_change(net, 1, add_five, 1, false), FL_RAFT_E_CONF_PENDING);
  tnet_tick_all(net, 2);
  /* One voter added: applied directly, without a joint configuration. */
  static const uint64_t four_voters[] = {1, 2, 3, 4};
  fl_raft_conf simple = make_conf(four_voters, 4, NULL, 0, false);
  for (uint64_t id = 1; id <= 4; id++) {
    assert_conf(net, id, &simple);
  }
  assert_int_equal(propose_change(net, 1, add_five, 1, false), 0);
  tnet_tick_all(net, 2);
  assert_true(has_learner(net, 5, 5));
  /* Malformed requests are refused and leave nothing pending. */
  static const fl_raft_change bad[] = {{FL_RAFT_REMOVE, 9}};
  assert_int_equal(propose_change(net, 1, bad, 1, false), FL_RAFT_E_INVALID);
  static const fl_raft_change remove_one[] = {{FL_RAFT_REMOVE, 5}};
  assert_int_equal(propose_change(net, 1, remove_one, 1, false), 0);
  tnet_destroy(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_joint_change_auto_leave),
      cmocka_unit_test(test_joint_change_explicit_leave),
      cmocka_unit_test(test_joint_change_removing_the_leader),
      cmocka_unit_test(test_simple_change_removing_the_leader),
      cmocka_unit_test(test_candidate_removed_while_campaigning),
      cmocka_unit_test(test_auto_leave_survives_leader_change),
      cmocka_unit_test(test_learner_receives_log_never_votes_never_counts),
      cmocka_unit_test(test_one_change_at_a_time),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
