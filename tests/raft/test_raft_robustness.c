/*
 * test_raft_robustness.c - input the core must refuse or survive: numbers
 * near 2^64 from the wire, acknowledgements of entries never sent, reads
 * beyond the per-update bound, and a restart whose state machine is ahead of
 * its snapshot.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/raft/net.h"

static void assert_core_sound(fl_raft *r) {
  const char *broken = NULL;
  bool sound = fl_raft_check_invariants(r, &broken);
  if (!sound) {
    print_error("invariant broken: %s\n", broken);
  }
  assert_true(sound);
}

/* A TIMEOUT_NOW at the largest term would make the next campaign wrap. */
static void test_refuses_term_near_wrap(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 7);
  tnet_elect(net, 1);
  fl_raft *r = tnet_raft(net, 2);
  uint64_t term_before = tnet_status(net, 2).term;
  fl_raft_message m = {.type = FL_RAFT_MSG_TIMEOUT_NOW, .from = 1, .to = 2, .term = UINT64_MAX};
  assert_int_equal(fl_raft_step(r, &m), FL_RAFT_E_INVALID);
  assert_int_equal(tnet_status(net, 2).term, term_before);
  assert_core_sound(r);
  tnet_destroy(net);
}

/* A snapshot at index 2^64-1 would wrap first_index to 0. */
static void test_refuses_snapshot_index_near_wrap(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 7);
  uint64_t term = tnet_elect(net, 1);
  fl_raft *r = tnet_raft(net, 2);
  fl_raft_message m = {.type = FL_RAFT_MSG_SNAPSHOT, .from = 1, .to = 2, .term = term};
  m.snapshot.index = UINT64_MAX;
  m.snapshot.term = term;
  m.snapshot.conf = tnet_status(net, 2).conf;
  assert_int_equal(fl_raft_step(r, &m), FL_RAFT_E_INVALID);
  assert_int_equal(tnet_status(net, 2).first_index, 1);
  assert_core_sound(r);
  tnet_destroy(net);
}

/* An acknowledgement past the leader's log must not move the follower's
 * next beyond the log (that would stall it for good). */
static void test_ignores_ack_past_the_log(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 7);
  uint64_t term = tnet_elect(net, 1);
  fl_raft *r = tnet_raft(net, 1);
  uint64_t last = tnet_status(net, 1).last_index;
  fl_raft_message m = {
      .type = FL_RAFT_MSG_APPEND_RESP, .from = 2, .to = 1, .term = term, .index = last + 5};
  assert_int_equal(fl_raft_step(r, &m), 0);
  assert_int_equal(tnode_drain(tnet_node(net, 1)), 0);
  uint64_t match = 0;
  uint64_t next = 0;
  assert_true(fl_raft_peer_match(r, 2, &match, &next));
  assert_true(match <= last && next <= last + 1);
  for (uint32_t i = 0; i < 5; i++) {
    assert_int_equal(tnet_propose(net, 1, 1, i, 0), 0);
  }
  tnet_deliver(net);
  assert_int_equal(tnet_status(net, 2).last_index, tnet_status(net, 1).last_index);
  tnet_destroy(net);
}

/* Lease reads beyond what one update carries are refused, never lost. */
static void test_lease_reads_beyond_the_bound_are_refused(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  options.lease_read = true;
  tnet *net = tnet_create(3, &options, 7);
  tnet_elect(net, 1);
  assert_int_equal(tnet_propose(net, 1, 1, 1, 0), 0);
  tnet_tick_all(net, 3);
  fl_raft *r = tnet_raft(net, 1);
  uint32_t accepted = 0;
  uint32_t refused = 0;
  for (uint32_t i = 0; i < FL_RAFT_MAX_PENDING_READS + 10; i++) {
    int rc = fl_raft_read_index(r, 1000 + i);
    accepted += rc == 0;
    refused += rc == FL_RAFT_E_BUSY;
  }
  fl_raft_update u;
  fl_raft_get_update(r, &u);
  assert_int_equal(u.read_state_count, accepted);
  assert_int_equal(accepted + refused, FL_RAFT_MAX_PENDING_READS + 10);
  assert_true(refused > 0);
  fl_raft_advance(r, &u);
  tnet_destroy(net);
}

/* ---- a two-entry storage for the restart test ---- */

typedef struct two_entry_log {
  fl_raft_entry entries[2];
  fl_raft_snapshot_meta snapshot;
} two_entry_log;

static int two_entry_read(void *context, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                          fl_raft_entry *out, uint32_t capacity, uint32_t *count) {
  const two_entry_log *log = context;
  (void)max_bytes;
  *count = 0;
  if (lo < 1) {
    return FL_RAFT_E_COMPACTED;
  }
  for (uint64_t index = lo; index < hi && *count < capacity; index++) {
    if (index > 2) {
      return FL_RAFT_E_UNAVAILABLE;
    }
    out[(*count)++] = log->entries[index - 1];
  }
  return 0;
}

static int two_entry_snapshot(void *context, fl_raft_snapshot_meta *out) {
  *out = ((const two_entry_log *)context)->snapshot;
  return 0;
}

/* The state machine applied a conf change after the snapshot: the restarted
 * core must run with that configuration, not the snapshot's. */
static void test_restart_replays_applied_conf_changes(void **state) {
  (void)state;
  static const fl_raft_conf three = {.voter_count = 3, .voters = {1, 2, 3}};
  static const fl_raft_conf five = {.voter_count = 5, .voters = {1, 2, 3, 4, 5}};
  uint8_t encoded[128];
  size_t length = fl_raft_conf_encode(&five, encoded, sizeof(encoded));
  assert_true(length > 0);
  two_entry_log log = {.snapshot = {.index = 0, .term = 0, .conf = three}};
  log.entries[0] = (fl_raft_entry){.term = 1, .index = 1};
  log.entries[1] = (fl_raft_entry){.term = 1,
                                   .index = 2,
                                   .type = FL_RAFT_ENTRY_CONF_CHANGE,
                                   .length = (uint32_t)length,
                                   .data = encoded};
  fl_raft_storage storage = {
      .context = &log, .entries = two_entry_read, .snapshot = two_entry_snapshot};
  fl_raft_options options;
  fl_raft_options_default(&options);
  fl_raft_term_run run = {.first_index = 1, .term = 1};
  fl_raft_restore restore = {.hard_state = {.term = 1, .vote = 1, .commit = 2},
                             .snapshot = log.snapshot,
                             .last_index = 2,
                             .term_runs = &run,
                             .term_run_count = 1,
                             .applied = 2};
  fl_raft *r = fl_raft_create(1, &options, &storage, &restore, 1);
  assert_non_null(r);
  fl_raft_status status;
  fl_raft_get_status(r, &status);
  assert_true(fl_raft_conf_equal(&status.conf, &five));
  assert_core_sound(r);
  fl_raft_destroy(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_refuses_term_near_wrap),
      cmocka_unit_test(test_refuses_snapshot_index_near_wrap),
      cmocka_unit_test(test_ignores_ack_past_the_log),
      cmocka_unit_test(test_lease_reads_beyond_the_bound_are_refused),
      cmocka_unit_test(test_restart_replays_applied_conf_changes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
