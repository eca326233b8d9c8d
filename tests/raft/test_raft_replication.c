/*
 * test_raft_replication.c - log replication and flow control: pipelining,
 * the inflight window (messages and bytes), probing, per-message bounds,
 * the uncommitted-bytes limit, the leader's self-quorum, persistence
 * completions that arrive after their entries were overwritten (ABA), and
 * the repair of a follower whose appends were lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/raft/net.h"

#define ELECTION_TICKS 10
#define MAX_MESSAGES 64

/* Takes the leader's outbox and returns how many APPENDs go to `to`. */
static uint32_t appends_in_outbox(tnet *net, uint64_t leader, uint64_t to, tenvelope **messages,
                                  uint32_t *count) {
  *count = tnet_take_all(net, leader, messages, MAX_MESSAGES);
  return tnet_count(messages, *count, FL_RAFT_MSG_APPEND, to);
}

static void send_all(tnet *net, tenvelope **messages, uint32_t count) {
  for (uint32_t i = 0; i < count; i++) {
    tnet_send(net, messages[i]);
  }
}

/* One heartbeat round first: a follower whose window was full when the
 * commit index moved learns it from the next heartbeat. */
static void assert_all_caught_up(tnet *net, uint64_t leader, uint64_t count) {
  tnet_tick_all(net, 1);
  fl_raft_status status = tnet_status(net, leader);
  for (uint64_t id = 1; id <= count; id++) {
    assert_true(tnet_logs_equal(net, leader, id));
    assert_int_equal(tnet_status(net, id).commit, status.last_index);
  }
}

static void test_pipelining_sends_before_responses(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 31);
  tnet_elect(net, 1);
  uint64_t last = tnet_status(net, 1).last_index;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(tnet_propose(net, 1, 1, (uint64_t)i, 0), 0);
  }
  tenvelope *messages[MAX_MESSAGES];
  uint32_t count = 0;
  assert_int_equal(appends_in_outbox(net, 1, 2, messages, &count), 3);
  /* Three APPENDs, each right after the previous: no wait for an answer. */
  uint64_t expected_previous = last;
  for (uint32_t i = 0; i < count; i++) {
    const fl_raft_message *m = &messages[i]->message;
    if (m->type == FL_RAFT_MSG_APPEND && m->to == 2) {
      assert_int_equal(m->index, expected_previous);
      assert_int_equal(m->entry_count, 1);
      expected_previous++;
    }
  }
  send_all(net, messages, count);
  tnet_deliver(net);
  assert_all_caught_up(net, 1, 3);
  tnet_destroy(net);
}

static void test_inflight_window_bounded_in_messages(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.max_inflight_messages = 2;
  tnet *net = tnet_create(3, &options, 32);
  tnet_elect(net, 1);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(tnet_propose(net, 1, 1, (uint64_t)i, 0), 0);
  }
  tenvelope *messages[MAX_MESSAGES];
  uint32_t count = 0;
  assert_int_equal(appends_in_outbox(net, 1, 2, messages, &count), 2);
  assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_APPEND, 3), 2);
  send_all(net, messages, count);
  tnet_deliver(net); /* acknowledgements open the window again */
  assert_all_caught_up(net, 1, 3);
  tnet_destroy(net);
}

static void test_inflight_window_bounded_in_bytes(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.max_inflight_bytes = 100;
  tnet *net = tnet_create(3, &options, 33);
  tnet_elect(net, 1);
  /* 60-byte commands: the window is full after two messages (120 >= 100),
   * far below the message bound. */
  for (int i = 0; i < 5; i++) {
    assert_int_equal(tnet_propose(net, 1, 1, (uint64_t)i, 28), 0);
  }
  tenvelope *messages[MAX_MESSAGES];
  uint32_t count = 0;
  assert_int_equal(appends_in_outbox(net, 1, 2, messages, &count), 2);
  send_all(net, messages, count);
  tnet_deliver(net);
  assert_all_caught_up(net, 1, 3);
  tnet_destroy(net);
}

static tnet_verdict drop_appends_to_two(void *context, tenvelope *envelope) {
  (void)context;
  return envelope->message.type == FL_RAFT_MSG_APPEND && envelope->message.to == 2 ? TNET_DROP
                                                                                   : TNET_DELIVER;
}

/*
 * Node 2's first probe is lost. A probing follower gets one APPEND per
 * answer (heartbeat response or append response), whatever is proposed.
 */
static void test_probe_sends_one_message_at_a_time(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 34);
  net->filter = drop_appends_to_two;
  tnet_elect(net, 1);
  net->filter = NULL;
  tenvelope *messages[MAX_MESSAGES];
  uint32_t count = 0;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(tnet_propose(net, 1, 1, (uint64_t)i, 0), 0);
  }
  assert_int_equal(appends_in_outbox(net, 1, 2, messages, &count), 0); /* probe outstanding */
  assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_APPEND, 3), 3);
  send_all(net, messages, count);
  tnet_deliver(net);
  /* A heartbeat round: node 2's answer lets the leader probe once more. */
  tnet_tick(net, 1);
  count = tnet_take_all(net, 1, messages, MAX_MESSAGES);
  send_all(net, messages, count);
  count = tnet_take_all(net, 2, messages, MAX_MESSAGES);
  assert_int_equal(tnet_count(messages, count, FL_RAFT_MSG_HEARTBEAT_RESP, 1), 1);
  send_all(net, messages, count);
  assert_int_equal(tnet_propose(net, 1, 1, 9, 0), 0);
  assert_int_equal(appends_in_outbox(net, 1, 2, messages, &count), 1);
  send_all(net, messages, count);
  tnet_deliver(net);
  assert_all_caught_up(net, 1, 3);
  tnet_destroy(net);
}

typedef struct append_limits {
  uint32_t max_entries;
  uint64_t max_bytes;
  uint32_t appends_with_entries;
  uint32_t largest_count;
  uint64_t largest_bytes;
  bool exceeded;
} append_limits;

static tnet_verdict watch_append_sizes(void *context, tenvelope *envelope) {
  append_limits *limits = context;
  const fl_raft_message *m = &envelope->message;
  if (m->type != FL_RAFT_MSG_APPEND || m->entry_count == 0) {
    return TNET_DELIVER;
  }
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < m->entry_count; i++) {
    bytes += m->entries[i].length;
  }
  /* A single entry may exceed the byte bound: it must still travel. */
  limits->exceeded = limits->exceeded || m->entry_count > limits->max_entries ||
                     (m->entry_count > 1 && bytes > limits->max_bytes);
  limits->appends_with_entries++;
  if (m->entry_count > limits->largest_count) {
    limits->largest_count = m->entry_count;
  }
  if (bytes > limits->largest_bytes) {
    limits->largest_bytes = bytes;
  }
  return TNET_DELIVER;
}

/* Node 3 misses the election and 8 proposals, then catches up while the
 * filter measures every APPEND. */
static void catch_up_measured(fl_raft_options *options, uint32_t padding, append_limits *limits) {
  limits->max_entries = options->max_entries_per_message;
  limits->max_bytes = options->max_bytes_per_message;
  tnet *net = tnet_create(3, options, 35);
  tnet_isolate(net, 3);
  tnet_elect(net, 1);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(tnet_propose(net, 1, 1, (uint64_t)i, padding), 0);
  }
  tnet_deliver(net);
  tnet_heal(net);
  net->filter = watch_append_sizes;
  net->filter_context = limits;
  tnet_tick_all(net, 3);
  assert_all_caught_up(net, 1, 3);
  tnet_destroy(net);
}

static void test_max_entries_per_message(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.max_entries_per_message = 2;
  append_limits limits = {0};
  catch_up_measured(&options, 0, &limits);
  assert_false(limits.exceeded);
  assert_int_equal(limits.largest_count, 2);
  assert_true(limits.appends_with_entries >= 5); /* 9 entries, 2 per message */
}

static void test_max_bytes_per_message(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.max_bytes_per_message = 100;
  append_limits limits = {0};
  catch_up_measured(&options, 8, &limits); /* 40-byte commands */
  assert_false(limits.exceeded);
  assert_int_equal(limits.largest_count, 3); /* the empty entry and two commands */
  assert_int_equal(limits.largest_bytes, 80);
}

static void test_max_uncommitted_bytes(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.max_uncommitted_bytes = 100;
  tnet *net = tnet_create(3, &options, 36);
  tnet_elect(net, 1);
  net->hold_writes[2] = true; /* no acknowledgement: nothing commits */
  net->hold_writes[3] = true;
  assert_int_equal(tnet_propose(net, 1, 1, 1, 28), 0); /* 60 bytes */
  assert_int_equal(tnet_propose(net, 1, 1, 2, 28), FL_RAFT_E_TOO_LARGE);
  assert_int_equal(tnet_propose(net, 1, 1, 3, 0), 0); /* 32: 92 in all */
  assert_int_equal(tnet_propose(net, 1, 1, 4, 0), FL_RAFT_E_TOO_LARGE);
  uint64_t last = tnet_status(net, 1).last_index;
  tnet_deliver(net);
  assert_true(tnet_status(net, 1).commit < last);
  net->hold_writes[2] = false;
  net->hold_writes[3] = false;
  tnet_deliver(net);
  assert_int_equal(tnet_status(net, 1).commit, last);
  assert_int_equal(tnet_status(net, 1).applied, last);
  /* Applied on the leader: the budget is free again. */
  assert_int_equal(tnet_propose(net, 1, 1, 5, 28), 0);
  tnet_deliver(net);
  assert_int_equal(tnode_state(tnet_node(net, 2))->command_count, 3);
  tnet_destroy(net);
}

/* Node 3 is down: node 2's acknowledgement alone is no majority, so the
 * leader's entry commits only once the leader's own disk holds it. */
static void test_leader_counts_itself_only_when_persisted(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 37);
  tnet_elect(net, 1);
  tnode_crash(tnet_node(net, 3));
  uint64_t commit = tnet_status(net, 1).commit;
  net->hold_writes[1] = true;
  assert_int_equal(tnet_propose(net, 1, 1, 1, 0), 0);
  uint64_t index = tnet_status(net, 1).last_index;
  tnet_deliver(net);
  uint64_t match = 0;
  uint64_t next = 0;
  assert_true(fl_raft_peer_match(tnet_raft(net, 1), 2, &match, &next));
  assert_int_equal(match, index);
  fl_raft_status leader = tnet_status(net, 1);
  assert_int_equal(leader.stable_index, index - 1);
  assert_int_equal(leader.commit, commit);
  tnet_persist(net, 1);
  assert_int_equal(tnet_status(net, 1).commit, index);
  tnet_deliver(net);
  assert_int_equal(tnet_status(net, 2).commit, index);
  tnet_destroy(net);
}

static void step_append(tnet *net, uint64_t to, uint64_t from, uint64_t term, uint64_t entry_term,
                        uint64_t commit) {
  /* The payload depends on the entry's term only: the re-appended entry is
   * byte for byte the one first written. */
  uint8_t payload[8] = {(uint8_t)entry_term};
  fl_raft_entry entry = {
      .term = entry_term, .index = 1, .type = FL_RAFT_ENTRY_NORMAL, .length = 8, .data = payload};
  fl_raft_message append = {.type = FL_RAFT_MSG_APPEND,
                            .entry_count = 1,
                            .from = from,
                            .to = to,
                            .term = term,
                            .commit = commit,
                            .entries = &entry};
  assert_int_equal(tnode_step(tnet_node(net, to), tenvelope_create(&append, NULL)), 0);
  tnet_check(net, to);
}

/* Completes the oldest write of node 2 and returns the APPEND_RESPs that
 * it released, by term (bit t set: an answer of term t left). */
static uint32_t complete_oldest_write(tnet *net) {
  uint64_t write_id = 0;
  assert_int_equal(tnode_complete_write(tnet_node(net, 2), &write_id), 0);
  assert_int_equal(tnode_persisted(tnet_node(net, 2), write_id), 0);
  tnet_check(net, 2);
  tenvelope *messages[MAX_MESSAGES];
  uint32_t count = tnet_take_all(net, 2, messages, MAX_MESSAGES);
  uint32_t terms = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (messages[i]->message.type == FL_RAFT_MSG_APPEND_RESP) {
      terms |= 1u << messages[i]->message.term;
    }
  }
  tnet_destroy_all(messages, count);
  return terms;
}

/*
 * etcd's async_storage_writes_append_aba_race. Node 2 writes (1, term 1)
 * [W1], has it overwritten by (1, term 2) [W2], then gets (1, term 1) again
 * from the term-3 leader, committed [W3]. W1 completing first says nothing
 * about the current entry: W2 may still overwrite it on disk. Nothing may
 * count as durable, be applied, or be acknowledged until W3 completes.
 */
static void test_persist_completion_aba(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 38);
  step_append(net, 2, 1, 1, 1, 0);
  step_append(net, 2, 3, 2, 2, 0);
  step_append(net, 2, 1, 3, 1, 1);
  assert_int_equal(tnode_pending_writes(tnet_node(net, 2)), 3);
  fl_raft_status status = tnet_status(net, 2);
  assert_int_equal(status.last_index, 1);
  assert_int_equal(fl_raft_term_at(tnet_raft(net, 2), 1), 1);
  assert_int_equal(status.commit, 1);
  assert_int_equal(status.stable_index, 0);
  for (int write = 1; write <= 2; write++) {
    uint32_t answered = complete_oldest_write(net);
    assert_int_equal(answered, 1u << write); /* only the answer of that write's term */
    status = tnet_status(net, 2);
    assert_int_equal(status.stable_index, 0);
    assert_int_equal(status.applied, 0);
    assert_int_equal(tnode_state(tnet_node(net, 2))->applied_index, 0);
  }
  assert_int_equal(complete_oldest_write(net), 1u << 3);
  status = tnet_status(net, 2);
  assert_int_equal(status.stable_index, 1);
  assert_int_equal(status.applied, 1);
  assert_int_equal(tnode_state(tnet_node(net, 2))->applied_term, 1);
  assert_int_equal(tlog_term_at(tnode_durable_log(tnet_node(net, 2)), 1), 1);
  tnet_destroy(net);
}

/*
 * A follower in replicate state whose APPENDs were lost must be repaired
 * even while the leader is idle: the heartbeat response makes the leader
 * send an (empty) append, whose rejection sends the follower back to
 * probing (etcd does the same).
 */
static void test_idle_leader_repairs_follower_that_lost_appends(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 39);
  tnet_elect(net, 1);
  tnet_isolate(net, 3);
  assert_int_equal(tnet_propose(net, 1, 1, 1, 0), 0);
  tnet_deliver(net);
  tnet_heal(net);
  tnet_tick_all(net, 5 * ELECTION_TICKS);
  assert_all_caught_up(net, 1, 3);
  tnet_destroy(net);
}

/*
 * A whole inflight window of lost APPENDs must not pause the follower for
 * good: a heartbeat round trip proves the window stale and frees room.
 */
static void test_leader_repairs_follower_after_lost_window(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.max_inflight_messages = 4;
  tnet *net = tnet_create(3, &options, 40);
  tnet_elect(net, 1);
  tnet_isolate(net, 3);
  for (int i = 0; i < 6; i++) {
    assert_int_equal(tnet_propose(net, 1, 1, (uint64_t)i, 0), 0);
  }
  tnet_deliver(net);
  tnet_heal(net);
  assert_int_equal(tnet_propose(net, 1, 1, 99, 0), 0);
  tnet_tick_all(net, 5 * ELECTION_TICKS);
  assert_all_caught_up(net, 1, 3);
  tnet_destroy(net);
}

/*
 * Every node crashes at once, one of them with a write not yet durable.
 * After restart: committed entries are all there, nothing committed is
 * lost or applied twice, commit indexes do not go back, and the cluster
 * goes on.
 */
static void test_whole_cluster_restart(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 41);
  tnet_elect(net, 1);
  for (uint64_t i = 0; i < 5; i++) {
    assert_int_equal(tnet_propose(net, 1, i, i + 1, 0), 0);
  }
  tnet_tick_all(net, 1);
  uint64_t committed = tnet_status(net, 1).commit;
  tstate before = *tnode_state(tnet_node(net, 1));
  net->hold_writes[1] = true;
  assert_int_equal(tnet_propose(net, 1, 9, 9, 0), 0); /* never durable on node 1 */
  for (uint64_t id = 1; id <= 3; id++) {
    tnode_crash(tnet_node(net, id));
  }
  net->hold_writes[1] = false;
  for (uint64_t id = 1; id <= 3; id++) {
    assert_int_equal(tnode_restart(tnet_node(net, id)), 0);
    tnet_check(net, id);
    fl_raft_status status = tnet_status(net, id);
    assert_true(status.commit >= committed);
    assert_int_equal(tnode_state(tnet_node(net, id))->chain_hash, before.chain_hash);
  }
  uint64_t leader = tnet_wait_leader(net, 10 * ELECTION_TICKS);
  assert_int_equal(tnet_propose(net, leader, 10, 10, 0), 0);
  tnet_tick_all(net, 2);
  for (uint64_t id = 1; id <= 3; id++) {
    assert_true(tnet_logs_equal(net, leader, id));
    assert_true(tnet_state_matches_log(net, id));
    assert_int_equal(tnode_state(tnet_node(net, id))->command_count, 6);
  }
  tnet_destroy(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pipelining_sends_before_responses),
      cmocka_unit_test(test_inflight_window_bounded_in_messages),
      cmocka_unit_test(test_inflight_window_bounded_in_bytes),
      cmocka_unit_test(test_probe_sends_one_message_at_a_time),
      cmocka_unit_test(test_max_entries_per_message),
      cmocka_unit_test(test_max_bytes_per_message),
      cmocka_unit_test(test_max_uncommitted_bytes),
      cmocka_unit_test(test_leader_counts_itself_only_when_persisted),
      cmocka_unit_test(test_persist_completion_aba),
      cmocka_unit_test(test_idle_leader_repairs_follower_that_lost_appends),
      cmocka_unit_test(test_leader_repairs_follower_after_lost_window),
      cmocka_unit_test(test_whole_cluster_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
