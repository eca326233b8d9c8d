/*
 * test_engine_faults.c - engines in one process on loopback TCP, with
 * faults: a leader partitioned away (it must not commit, must not serve a
 * stale linearizable read, and must step down and catch up once healed);
 * a follower partitioned during writes (it catches up); a follower, and
 * a leader, removed and added back while a writer keeps writing (5 nodes;
 * the rejoined node then restarts); a leader stopped during writes, and
 * every node stopped at once, then restarted.
 *
 * Why: the simulation tests check the Raft core on virtual time; these
 * check the engine around it (WAL, transport, request queues, callbacks)
 * under the same faults, with real disks and sockets. Every test checks
 * that no acknowledged write is lost, on every node, and that the engine
 * calls back every call it accepted (cluster.lost_callbacks).
 *
 * Partitions go through the transport's fault seam
 * (fl_engine_set_link_fault); stops are fl_engine_close and reopening
 * from the data directory (the multi-process SIGKILL test is
 * engine_kill_test.sh).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/engine/cluster.h"

#define WAIT_MS 15000u
/* How long a write keeps retrying across leader changes before the test
 * gives it up as unacknowledged. */
#define WRITE_RETRY_MS 8000u
/* How long a partitioned leader is watched for a commit it must not make. */
#define PARTITION_WATCH_MS 1000u
#define WRITER_MAX_KEYS 200000u

static uint32_t all_nodes(const cluster *c) {
  return (1u << c->node_count) - 1u;
}

static uint32_t all_but(const cluster *c, uint64_t node) {
  return all_nodes(c) & ~(1u << (node - 1));
}

static void create_groups(cluster *c, uint32_t groups) {
  for (uint64_t group = 1; group <= groups; group++) {
    assert_int_equal(cluster_create_group(c, group), 0);
  }
  for (uint64_t group = 1; group <= groups; group++) {
    assert_true(cluster_wait_leader(c, group, WAIT_MS) != 0);
  }
}

/* Prints every node's view of `group`: what a failed wait leaves behind. */
static void print_group(cluster *c, uint64_t group) {
  for (uint64_t node = 1; node <= c->node_count; node++) {
    fl_group_status s = {0};
    if (c->engines[node - 1] == NULL) {
      print_message("  group %llu node %llu: down\n", (unsigned long long)group,
                    (unsigned long long)node);
      continue;
    }
    int rc = fl_group_status_get(c->engines[node - 1], group, &s);
    print_message("  group %llu node %llu: status %d role %d term %llu leader %llu commit %llu "
                  "applied %llu last %llu voters %u\n",
                  (unsigned long long)group, (unsigned long long)node, rc, (int)s.role,
                  (unsigned long long)s.term, (unsigned long long)s.leader,
                  (unsigned long long)s.commit, (unsigned long long)s.applied,
                  (unsigned long long)s.last_index, s.voter_count);
  }
}

/* Every running node agrees on the leader and applied its commit index. */
static void assert_caught_up(cluster *c, uint64_t group) {
  if (cluster_wait_caught_up(c, group, WAIT_MS) == 0) {
    print_group(c, group);
    fail_msg("group %llu did not catch up within %u ms", (unsigned long long)group, WAIT_MS);
  }
}

/* Puts through the leader that the nodes of `among` agree on, retrying
 * across elections: how a client on the majority side writes. A put that
 * gets no answer in time is not retried: that leader has a majority
 * around it and must commit (FL_E_TIMEOUT fails the test). */
static int put_among(cluster *c, uint32_t among, uint64_t group, const char *key,
                     const char *value) {
  uint64_t deadline = cluster_now_ms() + WRITE_RETRY_MS;
  int rc = FL_E_TIMEOUT;
  while (cluster_now_ms() < deadline) {
    uint64_t leader = cluster_wait_leader_among(c, group, among, WRITE_RETRY_MS);
    if (leader == 0) {
      return FL_E_TIMEOUT;
    }
    rc = cluster_put_within(c, leader, group, key, value, CLUSTER_CALLBACK_BOUND_MS);
    if (rc == 0 || rc == FL_E_TIMEOUT) {
      return rc;
    }
    cluster_pause_ms(10);
  }
  return rc;
}

/* put_among every node, failing the test with the group's state. */
static void assert_put(cluster *c, uint32_t among, uint64_t group, const char *key,
                       const char *value) {
  int rc = put_among(c, among, group, key, value);
  if (rc != 0) {
    print_group(c, group);
    fail_msg("group %llu: put %s: %s", (unsigned long long)group, key, fl_strerror(rc));
  }
}

/* `key` reads `expected` locally on every running node (callers first wait
 * for the group to catch up). */
static void assert_everywhere(cluster *c, uint64_t group, const char *key, const char *expected) {
  for (uint64_t node = 1; node <= c->node_count; node++) {
    if (c->engines[node - 1] == NULL) {
      continue;
    }
    char value[256];
    int rc = cluster_get(c, node, group, key, FL_READ_LOCAL, value, sizeof(value));
    if (rc != 0 || strcmp(value, expected) != 0) {
      fail_msg("group %llu key %s on node %llu: status %d value '%s', expected '%s'",
               (unsigned long long)group, key, (unsigned long long)node, rc, rc == 0 ? value : "",
               expected);
    }
  }
}

static void assert_nowhere(cluster *c, uint64_t group, const char *key) {
  for (uint64_t node = 1; node <= c->node_count; node++) {
    char value[256];
    if (c->engines[node - 1] != NULL) {
      int rc = cluster_get(c, node, group, key, FL_READ_LOCAL, value, sizeof(value));
      if (rc != FL_E_NOT_FOUND) {
        fail_msg("group %llu key %s on node %llu: status %d value '%s', expected none",
                 (unsigned long long)group, key, (unsigned long long)node, rc,
                 rc == 0 ? value : "");
      }
    }
  }
}

static void key_of(const char *prefix, uint64_t group, char *key, size_t size) {
  snprintf(key, size, "%s-%llu", prefix, (unsigned long long)group);
}

/* ---- a writer thread beside the faults -------------------------------------- */

/* Key i goes to group i % groups + 1; acked[i] once acknowledged. */
typedef struct writer {
  cluster *c;
  uint32_t groups;
  pthread_t thread;
  atomic_bool stop;
  atomic_uint attempted;
  atomic_uint acknowledged;
  bool *acked;
} writer;

static void writer_key(uint32_t i, char *key, size_t key_size, char *value, size_t value_size) {
  snprintf(key, key_size, "w%u", i);
  snprintf(value, value_size, "value-%u", i);
}

static void *writer_run(void *argument) {
  writer *w = argument;
  for (uint32_t i = 0; i < WRITER_MAX_KEYS && !atomic_load(&w->stop); i++) {
    char key[32];
    char value[32];
    writer_key(i, key, sizeof(key), value, sizeof(value));
    int rc = cluster_put_shared(w->c, i % w->groups + 1, key, value, WRITE_RETRY_MS);
    w->acked[i] = rc == 0;
    atomic_store(&w->attempted, i + 1);
    if (rc == 0) {
      atomic_fetch_add(&w->acknowledged, 1);
    }
  }
  return NULL;
}

static void writer_start(writer *w, cluster *c, uint32_t groups) {
  memset(w, 0, sizeof(*w));
  w->c = c;
  w->groups = groups;
  w->acked = calloc(WRITER_MAX_KEYS, sizeof(bool));
  assert_non_null(w->acked);
  assert_int_equal(pthread_create(&w->thread, NULL, writer_run, w), 0);
}

static void writer_stop(writer *w) {
  atomic_store(&w->stop, true);
  pthread_join(w->thread, NULL);
}

/* Waits until `more` writes beyond the current count are acknowledged:
 * proof that writes go on. */
static void writer_wait_progress(writer *w, uint32_t more, const char *what) {
  uint32_t target = atomic_load(&w->acknowledged) + more;
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  while (atomic_load(&w->acknowledged) < target && cluster_now_ms() < deadline) {
    cluster_pause_ms(10);
  }
  if (atomic_load(&w->acknowledged) < target) {
    fail_msg("writes stalled %s: %u acknowledged, wanted %u", what, atomic_load(&w->acknowledged),
             target);
  }
}

/* Every acknowledged write reads back on every running node. */
static void writer_verify(writer *w) {
  cluster *c = w->c;
  for (uint64_t group = 1; group <= w->groups; group++) {
    assert_caught_up(c, group);
  }
  uint32_t attempted = atomic_load(&w->attempted);
  for (uint32_t i = 0; i < attempted; i++) {
    if (w->acked[i]) {
      char key[32];
      char value[32];
      writer_key(i, key, sizeof(key), value, sizeof(value));
      assert_everywhere(c, i % w->groups + 1, key, value);
    }
  }
  print_message("%u writes attempted, %u acknowledged and found on every node\n", attempted,
                atomic_load(&w->acknowledged));
  assert_int_equal(atomic_load(&c->lost_callbacks), 0);
}

/* ---- fixture ----------------------------------------------------------------- */

/* Each test's cluster and writer, torn down even when the test fails, so
 * that a failed test leaves no thread or engine behind for the next. */
typedef struct fixture {
  cluster c;
  bool started;
  writer w;
  bool writing;
} fixture;

static int fixture_setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  *state = f;
  return f != NULL ? 0 : -1;
}

static int fixture_teardown(void **state) {
  fixture *f = *state;
  if (f->writing) {
    writer_stop(&f->w);
  }
  if (f->started) {
    cluster_destroy(&f->c);
  }
  free(f->w.acked);
  free(f);
  return 0;
}

/* Starts the fixture's cluster with `groups` groups, each with a leader. */
static cluster *fixture_cluster(void **state, uint32_t nodes, uint32_t groups) {
  fixture *f = *state;
  int rc = FL_E_IO;
  /* The free ports cluster_start picks can be taken before the engines
   * bind them (an outgoing connection's ephemeral port): try again. */
  for (uint32_t attempt = 0; attempt < 3 && rc != 0; attempt++) {
    if (f->started) {
      cluster_destroy(&f->c);
    }
    f->started = true; /* a partial start is torn down too */
    rc = cluster_start(&f->c, nodes, 2);
  }
  assert_int_equal(rc, 0);
  create_groups(&f->c, groups);
  return &f->c;
}

static writer *fixture_writer(void **state, uint32_t groups) {
  fixture *f = *state;
  writer_start(&f->w, &f->c, groups);
  f->writing = true;
  return &f->w;
}

static void fixture_stop_writer(void **state) {
  fixture *f = *state;
  writer_stop(&f->w);
  f->writing = false;
}

/* ---- a partitioned leader ---------------------------------------------------- */

/* Watches what the isolated old leader did with the write and the read it
 * accepted while cut off: neither may have succeeded. */
static void check_isolated_leader(cluster *c, uint64_t old, cluster_pending *orphan,
                                  cluster_pending *stale_read) {
  /* check-quorum: a leader that hears from no majority steps down */
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  fl_group_status status = {.role = FL_LEADER};
  while (cluster_now_ms() < deadline && status.role == FL_LEADER) {
    assert_int_equal(fl_group_status_get(c->engines[old - 1], 1, &status), 0);
    cluster_pause_ms(5);
  }
  if (status.role == FL_LEADER) {
    fail_msg("node %llu, cut off from every other node, still leads group 1 after %u ms",
             (unsigned long long)old, WAIT_MS);
  }
  cluster_wait_pending(orphan, PARTITION_WATCH_MS);
  if (atomic_load(&orphan->done) && atomic_load(&orphan->status) == 0) {
    fail_msg("the partitioned leader acknowledged a write it could not commit");
  }
  if (atomic_load(&stale_read->done)) {
    int rc = atomic_load(&stale_read->status);
    if (rc == 0 || rc == FL_E_NOT_FOUND) {
      fail_msg("the partitioned leader served a linearizable read: status %d value '%s'", rc,
               stale_read->value);
    }
  }
}

/* The majority side elects leaders for every group (none of them the old
 * leader) and commits; the overwrite of x-GROUP makes a stale read
 * detectable. */
static void write_on_majority(cluster *c, uint64_t old, uint32_t groups) {
  for (uint64_t group = 1; group <= groups; group++) {
    uint64_t leader = cluster_wait_leader_among(c, group, all_but(c, old), WAIT_MS);
    assert_true(leader != 0);
    assert_int_not_equal(leader, old);
    char key[32];
    key_of("x", group, key, sizeof(key));
    assert_put(c, all_but(c, old), group, key, "2");
  }
}

static void test_partitioned_leader_cannot_commit(void **state) {
  const uint32_t groups = 4;
  cluster *c = fixture_cluster(state, 3, groups);
  for (uint64_t group = 1; group <= groups; group++) {
    char key[32];
    key_of("x", group, key, sizeof(key));
    assert_put(c, all_nodes(c), group, key, "1");
  }
  uint64_t old = cluster_wait_leader(c, 1, WAIT_MS);
  assert_true(old != 0);
  assert_int_equal(cluster_isolate(c, old, true), 0);
  /* At once, while it still believes it leads: both are accepted. */
  static cluster_pending orphan;
  static cluster_pending stale_read;
  int orphan_rc = cluster_put_async(c, old, 1, "orphan", "lost", &orphan);
  write_on_majority(c, old, groups);
  int read_rc = cluster_get_async(c, old, 1, "x-1", FL_READ_LINEARIZABLE, &stale_read);
  check_isolated_leader(c, old, &orphan, &stale_read);

  assert_int_equal(cluster_isolate(c, old, false), 0);
  /* Writes after the heal move every log past the orphan's index, so the
   * old leader learns its entry was replaced. */
  for (uint64_t group = 1; group <= groups; group++) {
    char key[32];
    key_of("after", group, key, sizeof(key));
    assert_put(c, all_nodes(c), group, key, "3");
  }
  for (uint64_t group = 1; group <= groups; group++) {
    assert_caught_up(c, group);
    char key[32];
    key_of("x", group, key, sizeof(key));
    assert_everywhere(c, group, key, "2");
    key_of("after", group, key, sizeof(key));
    assert_everywhere(c, group, key, "3");
  }
  assert_nowhere(c, 1, "orphan");
  if (orphan_rc == 0) {
    /* the promise of the API: exactly one callback, and not a success */
    assert_true(cluster_wait_pending(&orphan, WAIT_MS));
    assert_int_not_equal(atomic_load(&orphan.status), 0);
  }
  print_message("the write on the partitioned leader: %s\n",
                fl_strerror(orphan_rc != 0 ? orphan_rc : atomic_load(&orphan.status)));
  if (read_rc == 0 && cluster_wait_pending(&stale_read, WAIT_MS) &&
      atomic_load(&stale_read.status) == 0) {
    assert_string_equal(stale_read.value, "2"); /* served after the heal: fresh */
  }
}

/* ---- a partitioned follower ------------------------------------------------ */

static void write_keys(cluster *c, uint32_t among, uint32_t groups, uint32_t keys,
                       const char *value) {
  for (uint64_t group = 1; group <= groups; group++) {
    for (uint32_t i = 0; i < keys; i++) {
      char key[32];
      snprintf(key, sizeof(key), "k%u", i);
      assert_put(c, among, group, key, value);
    }
  }
}

static void test_partitioned_follower_catches_up(void **state) {
  const uint32_t groups = 4;
  const uint32_t keys = 25;
  cluster *c = fixture_cluster(state, 3, groups);
  write_keys(c, all_nodes(c), groups, keys, "before");
  uint64_t leader = cluster_wait_leader(c, 1, WAIT_MS);
  uint64_t follower = leader % 3 + 1;
  for (uint64_t group = 1; group <= groups; group++) {
    assert_caught_up(c, group);
  }
  assert_int_equal(cluster_isolate(c, follower, true), 0);
  write_keys(c, all_but(c, follower), groups, keys, "during");
  /* The cut is real: the follower saw none of it. */
  char value[256];
  assert_int_equal(cluster_get(c, follower, 1, "k0", FL_READ_LOCAL, value, sizeof(value)), 0);
  assert_string_equal(value, "before");

  assert_int_equal(cluster_isolate(c, follower, false), 0);
  for (uint64_t group = 1; group <= groups; group++) {
    assert_caught_up(c, group);
    for (uint32_t i = 0; i < keys; i++) {
      char key[32];
      snprintf(key, sizeof(key), "k%u", i);
      assert_everywhere(c, group, key, "during");
    }
  }
}

/* ---- membership under load -------------------------------------------------- */

static int change_retry(cluster *c, uint64_t group, fl_change_type type, uint64_t node) {
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  int rc = FL_E_TIMEOUT;
  while (cluster_now_ms() < deadline) {
    uint64_t leader = cluster_find_leader_shared(c, group);
    rc = leader == 0 ? FL_E_UNAVAILABLE : cluster_change(c, leader, group, type, node);
    if (rc == 0 || rc == FL_E_TIMEOUT) {
      return rc;
    }
    cluster_pause_ms(10);
  }
  return rc;
}

static void assert_change(cluster *c, uint64_t group, fl_change_type type, uint64_t node) {
  int rc = change_retry(c, group, type, node);
  if (rc != 0) {
    print_group(c, group);
    fail_msg("group %llu: %s node %llu: %s", (unsigned long long)group,
             type == FL_REMOVE_MEMBER ? "removing" : "adding", (unsigned long long)node,
             fl_strerror(rc));
  }
}

/* Removes `target` from the voters of `group`, deletes its replica, joins
 * a fresh one and adds it back: the documented way to re-add a node. */
static void remove_and_add_back(cluster *c, uint64_t group, uint64_t target) {
  uint64_t everyone[CLUSTER_MAX_NODES];
  uint64_t rest[CLUSTER_MAX_NODES];
  uint32_t rest_count = 0;
  for (uint64_t node = 1; node <= c->node_count; node++) {
    everyone[node - 1] = node;
    if (node != target) {
      rest[rest_count++] = node;
    }
  }
  assert_change(c, group, FL_REMOVE_MEMBER, target);
  if (!cluster_wait_voters(c, group, all_but(c, target), rest, rest_count, WAIT_MS)) {
    print_group(c, group);
    fail_msg("group %llu: node %llu still a voter", (unsigned long long)group,
             (unsigned long long)target);
  }
  assert_int_equal(fl_group_remove(c->engines[target - 1], group), 0);
  fl_group_status status;
  assert_int_equal(fl_group_status_get(c->engines[target - 1], group, &status), FL_E_NO_GROUP);
  assert_int_equal(fl_group_join(c->engines[target - 1], group), 0);
  assert_change(c, group, FL_ADD_VOTER, target);
  if (!cluster_wait_voters(c, group, all_nodes(c), everyone, c->node_count, WAIT_MS)) {
    print_group(c, group);
    fail_msg("group %llu: node %llu not a voter again", (unsigned long long)group,
             (unsigned long long)target);
  }
}

/* A follower of group 1 leaves and comes back while writes go on. */
static void test_follower_removed_and_added_back(void **state) {
  const uint32_t groups = 4;
  cluster *c = fixture_cluster(state, 5, groups);
  writer *w = fixture_writer(state, groups);
  writer_wait_progress(w, 40, "at the start");
  uint64_t leader = cluster_find_leader_shared(c, 1);
  assert_true(leader != 0);
  remove_and_add_back(c, 1, leader % 5 + 1);
  writer_wait_progress(w, 40, "after the follower came back");
  fixture_stop_writer(state);
  writer_verify(w);
}

/* The leader of group 1 removes itself and comes back while writes go on;
 * then its node restarts: the rejoined replica recovers from its WAL. */
static void test_leader_removed_and_added_back(void **state) {
  const uint32_t groups = 4;
  cluster *c = fixture_cluster(state, 5, groups);
  writer *w = fixture_writer(state, groups);
  writer_wait_progress(w, 40, "at the start");
  uint64_t leader = cluster_find_leader_shared(c, 1);
  assert_true(leader != 0);
  remove_and_add_back(c, 1, leader);
  writer_wait_progress(w, 40, "after the leader came back");
  cluster_stop_node_shared(c, leader);
  assert_int_equal(cluster_start_node_shared(c, leader), 0);
  writer_wait_progress(w, 40, "after the rejoined node restarted");
  fixture_stop_writer(state);
  writer_verify(w);
}

/* ---- stopped nodes ----------------------------------------------------------- */

static void test_leader_stopped_during_writes(void **state) {
  const uint32_t groups = 8;
  cluster *c = fixture_cluster(state, 3, groups);
  writer *w = fixture_writer(state, groups);
  writer_wait_progress(w, 50, "at the start");

  uint64_t old = cluster_find_leader_shared(c, 1);
  assert_true(old != 0);
  cluster_stop_node_shared(c, old);
  uint64_t leader = cluster_wait_leader(c, 1, WAIT_MS);
  assert_true(leader != 0);
  assert_int_not_equal(leader, old);
  writer_wait_progress(w, 100, "with the leader down");

  assert_int_equal(cluster_start_node_shared(c, old), 0);
  writer_wait_progress(w, 100, "after the leader returned");
  fixture_stop_writer(state);
  writer_verify(w);
}

static void test_all_nodes_stopped_during_writes(void **state) {
  const uint32_t groups = 8;
  cluster *c = fixture_cluster(state, 3, groups);
  writer *w = fixture_writer(state, groups);
  writer_wait_progress(w, 100, "at the start");
  for (uint64_t node = 1; node <= 3; node++) {
    cluster_stop_node_shared(c, node);
  }
  for (uint64_t node = 1; node <= 3; node++) {
    assert_int_equal(cluster_start_node_shared(c, node), 0);
  }
  writer_wait_progress(w, 100, "after the restart");
  fixture_stop_writer(state);
  writer_verify(w);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_partitioned_leader_cannot_commit, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_partitioned_follower_catches_up, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_follower_removed_and_added_back, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_leader_removed_and_added_back, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_leader_stopped_during_writes, fixture_setup,
                                      fixture_teardown),
      cmocka_unit_test_setup_teardown(test_all_nodes_stopped_during_writes, fixture_setup,
                                      fixture_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
