/*
 * test_engine.c - engines in one process talking over loopback TCP: every
 * group elects a leader, writes replicate and apply on every node, reads
 * are linearizable on the leader, a restarted node comes back from its WAL
 * with every acknowledged write, a node that was down catches up, and a
 * leader hands over leadership on request.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tests/engine/cluster.h"

#define GROUPS 16
#define WAIT_MS 15000

static void key_of(uint64_t group, uint32_t i, char *key, size_t size) {
  snprintf(key, size, "g%llu-k%u", (unsigned long long)group, i);
}

static void value_of(uint64_t group, uint32_t i, uint32_t round, char *value, size_t size) {
  snprintf(value, size, "v%llu-%u-%u", (unsigned long long)group, i, round);
}

static void create_groups(cluster *c) {
  for (uint64_t group = 1; group <= GROUPS; group++) {
    assert_int_equal(cluster_create_group(c, group), 0);
  }
  for (uint64_t group = 1; group <= GROUPS; group++) {
    assert_true(cluster_wait_leader(c, group, WAIT_MS) != 0);
  }
}

static void write_round(cluster *c, uint32_t keys, uint32_t round) {
  for (uint64_t group = 1; group <= GROUPS; group++) {
    for (uint32_t i = 0; i < keys; i++) {
      char key[64];
      char value[64];
      key_of(group, i, key, sizeof(key));
      value_of(group, i, round, value, sizeof(value));
      assert_int_equal(cluster_put_retry(c, group, key, value, WAIT_MS), 0);
    }
  }
}

/* Every key reads back with the round's value: linearizable on the
 * leader, and locally on every running node once it applied. */
static void check_round(cluster *c, uint32_t keys, uint32_t round) {
  for (uint64_t group = 1; group <= GROUPS; group++) {
    uint64_t leader = cluster_wait_leader(c, group, WAIT_MS);
    assert_true(leader != 0);
    fl_group_status status;
    assert_int_equal(fl_group_status_get(c->engines[leader - 1], group, &status), 0);
    assert_true(cluster_wait_applied(c, group, status.commit, WAIT_MS));
    for (uint32_t i = 0; i < keys; i++) {
      char key[64];
      char expected[64];
      char value[256];
      key_of(group, i, key, sizeof(key));
      value_of(group, i, round, expected, sizeof(expected));
      assert_int_equal(
          cluster_get(c, leader, group, key, FL_READ_LINEARIZABLE, value, sizeof(value)), 0);
      assert_string_equal(value, expected);
      for (uint64_t node = 1; node <= c->node_count; node++) {
        if (c->engines[node - 1] != NULL) {
          assert_int_equal(cluster_get(c, node, group, key, FL_READ_LOCAL, value, sizeof(value)),
                           0);
          assert_string_equal(value, expected);
        }
      }
    }
  }
}

static void test_replication_and_reads(void **state) {
  (void)state;
  cluster c;
  assert_int_equal(cluster_start(&c, 3, 2), 0);
  create_groups(&c);
  write_round(&c, 20, 1);
  check_round(&c, 20, 1);
  char value[64];
  assert_int_equal(cluster_get(&c, 1, 1, "missing", FL_READ_LOCAL, value, sizeof(value)),
                   FL_E_NOT_FOUND);
  cluster_destroy(&c);
}

/* Every node closed and reopened: acknowledged writes are all there. */
static void test_restart_all_nodes(void **state) {
  (void)state;
  cluster c;
  assert_int_equal(cluster_start(&c, 3, 2), 0);
  create_groups(&c);
  write_round(&c, 10, 1);
  for (uint64_t node = 1; node <= 3; node++) {
    cluster_stop_node(&c, node);
  }
  for (uint64_t node = 1; node <= 3; node++) {
    assert_int_equal(cluster_start_node(&c, node), 0);
  }
  uint64_t groups[GROUPS + 1];
  uint32_t count = 0;
  assert_int_equal(fl_group_list(c.engines[0], groups, GROUPS + 1, &count), 0);
  assert_int_equal(count, GROUPS);
  check_round(&c, 10, 1);
  write_round(&c, 10, 2); /* and they go on */
  check_round(&c, 10, 2);
  cluster_destroy(&c);
}

/* A data directory serves one engine at a time: a second open of a running
 * node's directory is refused before it touches the WAL or the port, and
 * the directory opens again once the first engine is closed. */
static void test_data_dir_held_while_open(void **state) {
  (void)state;
  cluster c;
  assert_int_equal(cluster_start(&c, 3, 1), 0);
  create_groups(&c);
  write_round(&c, 5, 1);
  fl_engine *running = c.engines[0];
  assert_int_equal(cluster_start_node(&c, 1), FL_E_IN_USE);
  assert_null(c.engines[0]);
  c.engines[0] = running;
  write_round(&c, 5, 2); /* the refused open disturbed nothing */
  check_round(&c, 5, 2);
  cluster_stop_node(&c, 1);
  assert_int_equal(cluster_start_node(&c, 1), 0);
  check_round(&c, 5, 2);
  cluster_destroy(&c);
}

/* A node down during writes catches up when it returns. */
static void test_follower_catches_up(void **state) {
  (void)state;
  cluster c;
  assert_int_equal(cluster_start(&c, 3, 2), 0);
  create_groups(&c);
  write_round(&c, 5, 1);
  cluster_stop_node(&c, 3);
  write_round(&c, 5, 2);
  assert_int_equal(cluster_start_node(&c, 3), 0);
  check_round(&c, 5, 2);
  cluster_destroy(&c);
}

/* Nodes snapshot every 50 entries and compact their logs: a node that was
 * down meanwhile is behind the leaders' first index and catches up by a
 * streamed snapshot; then every node restarts from its snapshot and log. */
static void test_follower_catches_up_by_snapshot(void **state) {
  (void)state;
  cluster c;
  assert_int_equal(cluster_start(&c, 3, 1), 0);
  cluster_stop_node(&c, 3);
  c.snapshot_entries = 50;
  cluster_stop_node(&c, 1);
  cluster_stop_node(&c, 2);
  assert_int_equal(cluster_start_node(&c, 1), 0);
  assert_int_equal(cluster_start_node(&c, 2), 0);
  for (uint64_t group = 1; group <= 4; group++) {
    uint64_t members[3] = {1, 2, 3};
    assert_int_equal(fl_group_create(c.engines[0], group, members, 3), 0);
    assert_int_equal(fl_group_create(c.engines[1], group, members, 3), 0);
  }
  for (uint32_t i = 0; i < 200; i++) {
    char key[32];
    snprintf(key, sizeof(key), "k%u", i);
    for (uint64_t group = 1; group <= 4; group++) {
      assert_int_equal(cluster_put_retry(&c, group, key, "v", WAIT_MS), 0);
    }
  }
  fl_group_status status;
  assert_int_equal(fl_group_status_get(c.engines[0], 1, &status), 0);
  assert_true(status.first_index > 50); /* compacted: a log alone cannot catch node 3 up */
  assert_int_equal(cluster_start_node(&c, 3), 0);
  for (uint64_t group = 1; group <= 4; group++) {
    assert_int_equal(fl_group_create(c.engines[2], group, (uint64_t[]){1, 2, 3}, 3), 0);
  }
  for (uint32_t round = 0; round < 2; round++) {
    for (uint64_t group = 1; group <= 4; group++) {
      uint64_t leader = cluster_wait_leader(&c, group, WAIT_MS);
      assert_true(leader != 0);
      assert_int_equal(fl_group_status_get(c.engines[leader - 1], group, &status), 0);
      assert_true(cluster_wait_applied(&c, group, status.commit, WAIT_MS));
      char value[64];
      for (uint32_t i = 0; i < 200; i += 13) {
        char key[32];
        snprintf(key, sizeof(key), "k%u", i);
        assert_int_equal(cluster_get(&c, 3, group, key, FL_READ_LOCAL, value, sizeof(value)), 0);
        assert_string_equal(value, "v");
      }
    }
    for (uint64_t node = 1; node <= 3; node++) { /* and back from snapshots */
      cluster_stop_node(&c, node);
    }
    for (uint64_t node = 1; node <= 3; node++) {
      assert_int_equal(cluster_start_node(&c, node), 0);
    }
  }
  cluster_destroy(&c);
}

/* Leadership moves to the node asked for. */
static void test_leader_transfer(void **state) {
  (void)state;
  cluster c;
  assert_int_equal(cluster_start(&c, 3, 1), 0);
  assert_int_equal(cluster_create_group(&c, 1), 0);
  uint64_t leader = cluster_wait_leader(&c, 1, WAIT_MS);
  assert_true(leader != 0);
  uint64_t target = leader % 3 + 1;
  assert_int_equal(fl_group_transfer_leader(c.engines[leader - 1], 1, target), 0);
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  while (cluster_wait_leader(&c, 1, WAIT_MS) != target && cluster_now_ms() < deadline) {
    cluster_pause_ms(10);
  }
  assert_int_equal(cluster_wait_leader(&c, 1, WAIT_MS), target);
  assert_int_equal(cluster_put_retry(&c, 1, "after", "transfer", WAIT_MS), 0);
  cluster_destroy(&c);
}

/* Proposals on a follower are refused with the leader's hint. */
static void test_follower_refuses_proposals(void **state) {
  (void)state;
  cluster c;
  assert_int_equal(cluster_start(&c, 3, 1), 0);
  assert_int_equal(cluster_create_group(&c, 1), 0);
  uint64_t leader = cluster_wait_leader(&c, 1, WAIT_MS);
  assert_true(leader != 0);
  uint64_t follower = leader % 3 + 1;
  assert_int_equal(cluster_put(&c, follower, 1, "k", "v", NULL), FL_E_NOT_LEADER);
  assert_int_equal(cluster_put(&c, leader, 1, "k", "v", NULL), 0);
  assert_int_equal(cluster_put(&c, leader, 99, "k", "v", NULL), FL_E_NO_GROUP);
  cluster_destroy(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_replication_and_reads),
      cmocka_unit_test(test_restart_all_nodes),
      cmocka_unit_test(test_data_dir_held_while_open),
      cmocka_unit_test(test_follower_catches_up),
      cmocka_unit_test(test_follower_catches_up_by_snapshot),
      cmocka_unit_test(test_leader_transfer),
      cmocka_unit_test(test_follower_refuses_proposals),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
