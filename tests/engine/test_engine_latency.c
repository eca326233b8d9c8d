/*
 * test_engine_latency.c - calls complete on their own messages, never on
 * the next heartbeat tick.
 *
 * The nodes send heartbeats every 5 s, and every call must be answered
 * within 2.5 s of being made. A call that waits for a tick (a read round
 * whose heartbeats or acknowledgements were lost and are resent only with
 * the next tick's, an append resent only on a heartbeat response) waits
 * up to 5 s and most often fails the bound, however fast the machine; a
 * call that completes on its own messages takes milliseconds, so the bound
 * leaves room for a slow, sanitized and busy machine (an fdatasync stall
 * of seconds would still fail it: the test runs alone, RUN_SERIAL). Many groups share the nodes and
 * every call of a burst is issued at once, so read rounds of all groups overlap in the coalesced
 * heartbeat frames between the nodes, which is where a group's two heartbeats (or acknowledgements)
 * in one frame once made the whole frame go unsent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/engine/cluster.h"

#define GROUPS 16
#define CALLS_PER_GROUP 8
#define BURSTS 100
/* 5 s between heartbeats; an election timeout of 8 to 16 s. */
#define HEARTBEAT_TICKS 500
#define ELECTION_TICKS 800
#define HEARTBEAT_MS (HEARTBEAT_TICKS * 10u)
/* Half a heartbeat interval, far above a call on loopback. */
#define CALL_BOUND_MS 2500u
#define ELECTION_WAIT_MS 30000u

_Static_assert(CALL_BOUND_MS * 2 <= HEARTBEAT_MS, "a call waiting for a tick must miss the bound");

typedef struct fixture {
  cluster c;
  uint64_t leaders[GROUPS + 1];
  /* live until the cluster is destroyed: a late callback writes here */
  cluster_pending calls[GROUPS * CALLS_PER_GROUP];
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  assert_int_equal(cluster_prepare(&f->c, 3, 1), 0);
  f->c.heartbeat_ticks = HEARTBEAT_TICKS;
  f->c.election_ticks = ELECTION_TICKS;
  assert_int_equal(cluster_start_all(&f->c), 0);
  for (uint64_t group = 1; group <= GROUPS; group++) {
    assert_int_equal(cluster_create_group(&f->c, group), 0);
  }
  for (uint64_t group = 1; group <= GROUPS; group++) {
    f->leaders[group] = cluster_wait_leader(&f->c, group, ELECTION_WAIT_MS);
    assert_true(f->leaders[group] != 0);
    assert_int_equal(cluster_put(&f->c, f->leaders[group], group, "key", "value", NULL), 0);
  }
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  cluster_destroy(&f->c);
  free(f);
  return 0;
}

/* Waits for every call of the burst, each within the bound from when the
 * burst was issued; returns how many missed it. */
static uint32_t late_calls(fixture *f, uint64_t issued_ms) {
  uint32_t late = 0;
  for (uint32_t i = 0; i < GROUPS * CALLS_PER_GROUP; i++) {
    uint64_t now = cluster_now_ms();
    uint64_t deadline = issued_ms + CALL_BOUND_MS;
    uint32_t left = now < deadline ? (uint32_t)(deadline - now) : 0;
    if (!cluster_wait_pending(&f->calls[i], left)) {
      late++;
      /* answered eventually (the next tick's round), so the slot is free */
      assert_true(cluster_wait_pending(&f->calls[i], 4 * HEARTBEAT_MS));
    }
    assert_int_equal(atomic_load(&f->calls[i].status), FL_OK);
  }
  return late;
}

static void test_linearizable_reads_do_not_wait_for_a_tick(void **state) {
  fixture *f = *state;
  uint32_t late = 0;
  for (uint32_t burst = 0; burst < BURSTS; burst++) {
    uint64_t issued_ms = cluster_now_ms();
    for (uint64_t group = 1; group <= GROUPS; group++) {
      for (uint32_t i = 0; i < CALLS_PER_GROUP; i++) {
        cluster_pending *call = &f->calls[(group - 1) * CALLS_PER_GROUP + i];
        assert_int_equal(
            cluster_get_async(&f->c, f->leaders[group], group, "key", FL_READ_LINEARIZABLE, call),
            0);
      }
    }
    late += late_calls(f, issued_ms);
    for (uint32_t i = 0; i < GROUPS * CALLS_PER_GROUP; i++) {
      assert_string_equal(f->calls[i].value, "value");
    }
  }
  assert_int_equal(late, 0);
}

static void test_proposals_do_not_wait_for_a_tick(void **state) {
  fixture *f = *state;
  uint32_t late = 0;
  char values[CALLS_PER_GROUP][32];
  for (uint32_t burst = 0; burst < BURSTS; burst++) {
    uint64_t issued_ms = cluster_now_ms();
    for (uint64_t group = 1; group <= GROUPS; group++) {
      for (uint32_t i = 0; i < CALLS_PER_GROUP; i++) {
        snprintf(values[i], sizeof(values[i]), "v%u-%u", burst, i);
        cluster_pending *call = &f->calls[(group - 1) * CALLS_PER_GROUP + i];
        assert_int_equal(cluster_put_async(&f->c, f->leaders[group], group, "key", values[i], call),
                         0);
      }
    }
    late += late_calls(f, issued_ms);
  }
  assert_int_equal(late, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_linearizable_reads_do_not_wait_for_a_tick),
      cmocka_unit_test(test_proposals_do_not_wait_for_a_tick),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
