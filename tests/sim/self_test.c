/*
 * self_test.c - injects violations and expects the checks to report them.
 */
#include "tests/sim/self_test.h"

#include <stdbool.h>
#include <string.h>

#include "tests/sim/checker.h"
#include "tests/sim/sim.h"
#include "tests/support/hash.h"

typedef struct expectation {
  const char *name;
  const char *fragment; /* the violation text must contain it */
} expectation;

static int expect(FILE *out, const expectation *e, bool failed, const char *violation) {
  bool caught = failed && strstr(violation, e->fragment) != NULL;
  fprintf(out, "self-test: %-36s %s%s%s\n", e->name, caught ? "caught: " : "MISSED",
          caught ? "" : " ", failed ? violation : "(no violation reported)");
  return caught ? 0 : 1;
}

static int two_leaders(FILE *out) {
  checker *c = checker_create();
  checker_note_leader(c, 3, 1);
  checker_note_leader(c, 3, 1);
  checker_note_leader(c, 4, 2);
  checker_note_leader(c, 3, 2);
  expectation e = {"two leaders in one term", "election safety"};
  int status = expect(out, &e, checker_failed(c), checker_violation(c));
  checker_destroy(c);
  return status;
}

static int two_histories(FILE *out) {
  checker *c = checker_create();
  checker_note_entry(c, 1, 4, 2, 0x1111);
  checker_note_entry(c, 2, 4, 2, 0x1111);
  checker_note_entry(c, 3, 4, 2, 0x2222);
  expectation e = {"one (index, term), two histories", "log matching"};
  int status = expect(out, &e, checker_failed(c), checker_violation(c));
  checker_destroy(c);
  return status;
}

/* A log of `count` entries of term 1 whose payloads start with `salt`. */
static void build_log(tlog *log, uint32_t count, uint8_t salt) {
  fl_raft_snapshot_meta start;
  memset(&start, 0, sizeof(start));
  tlog_init(log, &start, THASH_EMPTY_LOG);
  for (uint32_t i = 0; i < count; i++) {
    uint8_t payload[2] = {salt, (uint8_t)i};
    tlog_append(log, 1, FL_RAFT_ENTRY_NORMAL, tblob_create(payload, sizeof(payload)));
  }
}

static int divergent_apply(FILE *out) {
  checker *c = checker_create();
  tlog log;
  build_log(&log, 5, 'a');
  checker_note_commit(c, 1, 1, &log, 5);
  tstate state;
  tstate_init(&state, NULL);
  const char *error = NULL;
  for (uint64_t index = 1; index <= 5; index++) {
    uint8_t payload[2] = {index == 4 ? 'b' : 'a', (uint8_t)(index - 1)};
    fl_raft_entry entry = {.term = 1, .index = index, .data = payload, .length = 2};
    tstate_apply(&state, &entry, &error);
    checker_note_apply(c, 2, &entry, &state);
  }
  expectation e = {"a different command applied at 4", "state machine safety"};
  int status = expect(out, &e, checker_failed(c), checker_violation(c));
  tlog_destroy(&log, NULL);
  checker_destroy(c);
  return status;
}

static int leader_without_commit(FILE *out) {
  checker *c = checker_create();
  tlog committed;
  tlog stale;
  build_log(&committed, 6, 'a');
  build_log(&stale, 3, 'a');
  checker_note_commit(c, 1, 2, &committed, 6);
  checker_check_leader_log(c, 3, 5, &stale);
  expectation e = {"leader lacking committed entries", "leader completeness"};
  int status = expect(out, &e, checker_failed(c), checker_violation(c));
  tlog_destroy(&committed, NULL);
  tlog_destroy(&stale, NULL);
  checker_destroy(c);
  return status;
}

static int stale_read(FILE *out) {
  checker *c = checker_create();
  checker_note_read_request(c, 7, 12);
  checker_note_read_state(c, 2, 7, 11);
  expectation e = {"read below an acknowledged write", "linearizability"};
  int status = expect(out, &e, checker_failed(c), checker_violation(c));
  checker_destroy(c);
  return status;
}

/* The same violations, injected into real runs: proves the wiring from the
 * nodes to the checker, not just the checker. */
static int injected_run(FILE *out, sim_injection injection, const expectation *e) {
  sim_config config = {
      .seed = 7, .node_count = 3, .chaos_ticks = 300, .profile = "mixed", .injection = injection};
  sim_result result;
  int status = sim_run(&config, &result);
  return expect(out, e, status == 1, result.violation);
}

int sim_self_test(FILE *out) {
  int missed = two_leaders(out) + two_histories(out) + divergent_apply(out) +
               leader_without_commit(out) + stale_read(out);
  expectation apply = {"simulated divergent apply", "state machine safety"};
  expectation leader = {"simulated second leader", "election safety"};
  missed += injected_run(out, SIM_INJECT_DIVERGENT_APPLY, &apply);
  missed += injected_run(out, SIM_INJECT_SECOND_LEADER, &leader);
  fprintf(out, "self-test: %s (%d missed)\n", missed == 0 ? "PASS" : "FAIL", missed);
  return missed == 0 ? 0 : 1;
}
