/*
 * test_raft_conf.c - configuration encoding and validity, option
 * validation, and the invariant self-check of a fresh and a busy group.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tests/raft/net.h"

static fl_raft_conf joint_conf_with_learners(void) {
  fl_raft_conf conf;
  memset(&conf, 0, sizeof(conf));
  conf.voter_count = 3;
  conf.voters[0] = 1;
  conf.voters[1] = 2;
  conf.voters[2] = 0x0102030405060708ull; /* every byte differs: catches byte order */
  conf.outgoing_count = 2;
  conf.outgoing[0] = 1;
  conf.outgoing[1] = 9;
  conf.learner_count = 1;
  conf.learners[0] = 7;
  conf.auto_leave = 1;
  return conf;
}

static void test_conf_round_trip(void **state) {
  (void)state;
  fl_raft_conf conf = joint_conf_with_learners();
  assert_true(fl_raft_conf_is_valid(&conf));
  assert_true(fl_raft_conf_is_joint(&conf));
  size_t size = fl_raft_conf_encoded_size(&conf);
  assert_int_equal(size, 8 + 8 * 6);
  uint8_t buffer[128];
  assert_int_equal(fl_raft_conf_encode(&conf, buffer, size - 1), 0); /* too small */
  assert_int_equal(fl_raft_conf_encode(&conf, buffer, sizeof(buffer)), size);
  fl_raft_conf decoded;
  assert_int_equal(fl_raft_conf_decode(buffer, size, &decoded), 0);
  assert_true(fl_raft_conf_equal(&conf, &decoded));
  assert_memory_equal(decoded.voters, conf.voters, sizeof(conf.voters));
  assert_true(fl_raft_conf_has_voter(&decoded, 9)); /* outgoing voters vote */
  assert_true(fl_raft_conf_has_learner(&decoded, 7));
  assert_false(fl_raft_conf_has_voter(&decoded, 7));
  /* The empty configuration of a joiner round-trips too. */
  fl_raft_conf empty;
  memset(&empty, 0, sizeof(empty));
  assert_int_equal(fl_raft_conf_encode(&empty, buffer, sizeof(buffer)), 8);
  assert_int_equal(fl_raft_conf_decode(buffer, 8, &decoded), 0);
  assert_true(fl_raft_conf_equal(&empty, &decoded));
}

/* Encodes the valid conf, lets `corrupt` damage it, expects a refusal. */
static void expect_refused(void (*corrupt)(uint8_t *bytes, size_t *length)) {
  fl_raft_conf conf = joint_conf_with_learners();
  uint8_t buffer[128];
  size_t length = fl_raft_conf_encode(&conf, buffer, sizeof(buffer));
  corrupt(buffer, &length);
  fl_raft_conf decoded;
  assert_int_equal(fl_raft_conf_decode(buffer, length, &decoded), FL_RAFT_E_INVALID);
}

static void bad_version(uint8_t *bytes, size_t *length) {
  (void)length;
  bytes[0] = 2;
}
static void short_header(uint8_t *bytes, size_t *length) {
  (void)bytes;
  *length = 7;
}
static void truncated_ids(uint8_t *bytes, size_t *length) {
  (void)bytes;
  *length -= 1;
}
static void trailing_byte(uint8_t *bytes, size_t *length) {
  bytes[*length] = 0;
  *length += 1;
}
static void too_many_voters(uint8_t *bytes, size_t *length) {
  (void)length;
  bytes[1] = FL_RAFT_MAX_VOTERS + 1;
}
static void too_many_learners(uint8_t *bytes, size_t *length) {
  (void)length;
  bytes[3] = FL_RAFT_MAX_LEARNERS + 1;
}
static void bad_auto_leave(uint8_t *bytes, size_t *length) {
  (void)length;
  bytes[4] = 2;
}
static void zero_voter(uint8_t *bytes, size_t *length) {
  (void)length;
  memset(bytes + 8, 0, 8);
}
static void duplicate_voter(uint8_t *bytes, size_t *length) {
  (void)length;
  memcpy(bytes + 16, bytes + 8, 8);
}
static void learner_is_voter(uint8_t *bytes, size_t *length) {
  memcpy(bytes + *length - 8, bytes + 8, 8); /* learner 7 becomes voter 1 */
}
static void count_disagrees_with_length(uint8_t *bytes, size_t *length) {
  (void)length;
  bytes[1] = 2; /* one id fewer than the bytes hold */
}

static void test_conf_decode_rejects_malformed(void **state) {
  (void)state;
  expect_refused(bad_version);
  expect_refused(short_header);
  expect_refused(truncated_ids);
  expect_refused(trailing_byte);
  expect_refused(too_many_voters);
  expect_refused(too_many_learners);
  expect_refused(bad_auto_leave);
  expect_refused(zero_voter);
  expect_refused(duplicate_voter);
  expect_refused(learner_is_voter);
  expect_refused(count_disagrees_with_length);
  fl_raft_conf decoded;
  assert_int_equal(fl_raft_conf_decode((const uint8_t *)"", 0, &decoded), FL_RAFT_E_INVALID);
}

static void test_conf_validity(void **state) {
  (void)state;
  fl_raft_conf conf = joint_conf_with_learners();
  conf.learners[0] = 2; /* also a voter */
  assert_false(fl_raft_conf_is_valid(&conf));
  conf = joint_conf_with_learners();
  conf.outgoing[1] = 1; /* duplicate outgoing */
  assert_false(fl_raft_conf_is_valid(&conf));
  conf = joint_conf_with_learners();
  conf.voter_count = FL_RAFT_MAX_VOTERS + 1;
  assert_false(fl_raft_conf_is_valid(&conf));
  fl_raft_conf other = joint_conf_with_learners();
  conf = joint_conf_with_learners();
  /* Equality ignores order. */
  other.voters[0] = conf.voters[2];
  other.voters[2] = conf.voters[0];
  assert_true(fl_raft_conf_equal(&conf, &other));
  other.auto_leave = 0;
  assert_false(fl_raft_conf_equal(&conf, &other));
}

static void test_options_validation(void **state) {
  (void)state;
  fl_raft_options good;
  fl_raft_options_default(&good);
  assert_int_equal(fl_raft_options_validate(&good), 0);
  fl_raft_options bad[13];
  for (int i = 0; i < 13; i++) {
    bad[i] = good;
  }
  bad[0].election_ticks = 1;
  bad[1].heartbeat_ticks = 0;
  bad[2].heartbeat_ticks = bad[2].election_ticks;
  bad[3].max_inflight_messages = 0;
  bad[4].max_inflight_messages = FL_RAFT_MAX_INFLIGHT_MESSAGES + 1;
  bad[5].max_inflight_bytes = 0;
  bad[6].max_entries_per_message = 0;
  bad[7].max_entries_per_message = FL_RAFT_MAX_UNSTABLE_ENTRIES + 1;
  bad[8].max_bytes_per_message = 0;
  bad[9].max_uncommitted_bytes = 0;
  bad[10].max_apply_bytes = 0;
  bad[11].lease_read = true; /* a lease needs check-quorum */
  bad[11].check_quorum = false;
  bad[12] = good;
  bad[12].lease_read = true; /* fine with check-quorum: the control case */
  for (int i = 0; i < 12; i++) {
    assert_int_equal(fl_raft_options_validate(&bad[i]), FL_RAFT_E_INVALID);
  }
  assert_int_equal(fl_raft_options_validate(&bad[12]), 0);
  /* A group refuses to start with invalid options. */
  fl_raft_storage storage = {0};
  fl_raft_restore restore;
  memset(&restore, 0, sizeof(restore));
  assert_null(fl_raft_create(1, &bad[0], &storage, &restore, 1));
  assert_null(fl_raft_create(0, &good, &storage, &restore, 1));
}

static void test_invariants_hold_on_fresh_and_busy_groups(void **state) {
  (void)state;
  fl_raft_options options = tnet_options(true, true);
  tnet *net = tnet_create(3, &options, 21);
  for (uint64_t id = 1; id <= 3; id++) {
    const char *broken = "not set";
    assert_true(fl_raft_check_invariants(tnet_raft(net, id), &broken));
    assert_null(broken);
  }
  /* tnet checks every node after every step while this runs. */
  uint64_t leader = tnet_wait_leader(net, 100);
  for (uint64_t i = 0; i < 20; i++) {
    assert_int_equal(tnet_propose(net, leader, i % 16, i, (uint32_t)i), 0);
  }
  tnet_tick_all(net, 5);
  for (uint64_t id = 1; id <= 3; id++) {
    assert_true(tnet_logs_equal(net, leader, id));
    assert_true(tnet_state_matches_log(net, id));
    assert_int_equal(tnode_state(tnet_node(net, id))->command_count, 20);
  }
  tnet_destroy(net);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conf_round_trip),
      cmocka_unit_test(test_conf_decode_rejects_malformed),
      cmocka_unit_test(test_conf_validity),
      cmocka_unit_test(test_options_validation),
      cmocka_unit_test(test_invariants_hold_on_fresh_and_busy_groups),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
