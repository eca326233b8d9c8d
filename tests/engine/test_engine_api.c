/*
 * test_engine_api.c - the KV calls a Redis front end needs, on a 3-node
 * cluster in one process: SET with NX/XX/GET/KEEPTTL and expiry, APPEND,
 * DEL and MSET of many keys, their results and their call-time refusals;
 * the key count and memory in fl_group_status; fl_options.on_leader on
 * every node through elections, a leader transfer, a restart and a removal;
 * and expired keys swept from memory on every replica, also in a group
 * that had gone quiet and by the next leader when the leader stops.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/engine/cluster.h"

#define WAIT_MS 15000u
#define GROUPS 4u

/* ---- blocking calls with their results ----------------------------------- */

typedef struct call {
  sem_t done;
  int status;
  bool applied;
  bool has_bytes;
  int64_t integer;
  char bytes[256];
} call;

static void on_call(void *context, int status, const fl_result *result) {
  call *c = context;
  c->status = status;
  c->applied = result != NULL && result->applied;
  c->has_bytes = result != NULL && result->has_bytes;
  c->integer = result != NULL ? result->integer : 0;
  c->bytes[0] = '\0';
  if (c->has_bytes) {
    uint32_t length = result->length < sizeof(c->bytes) - 1 ? result->length : 0;
    memcpy(c->bytes, result->bytes, length);
    c->bytes[length] = '\0';
  }
  sem_post(&c->done);
}

static call *call_begin(call *c) {
  memset(c, 0, sizeof(*c));
  sem_init(&c->done, 0, 0);
  return c;
}

/* The call's return code, or the status its callback gave. */
static int call_end(call *c, int rc) {
  if (rc == 0) {
    sem_wait(&c->done);
    rc = c->status;
  }
  sem_destroy(&c->done);
  return rc;
}

/* Runs one asynchronous fl_kv_* call whose last two arguments are
 * on_call, c, and waits for it. */
#define CALL(c, function, ...) call_end(call_begin(c), function(__VA_ARGS__, on_call, (c)))

static uint64_t wall_clock_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static fl_group_status status_of(cluster *c, uint64_t node, uint64_t group) {
  fl_group_status status;
  assert_int_equal(fl_group_status_get(c->engines[node - 1], group, &status), 0);
  return status;
}

/* Waits until every node applied what the leader committed. */
static void wait_replicated(cluster *c, uint64_t leader, uint64_t group) {
  assert_true(cluster_wait_applied(c, group, status_of(c, leader, group).commit, WAIT_MS));
}

static void assert_read(cluster *c, uint64_t node, const char *key, const char *expected) {
  char value[256];
  int rc = cluster_get(c, node, 1, key, FL_READ_LOCAL, value, sizeof(value));
  if (expected == NULL) {
    assert_int_equal(rc, FL_E_NOT_FOUND);
    return;
  }
  assert_int_equal(rc, 0);
  assert_string_equal(value, expected);
}

/* Starts every node of a prepared cluster (or 3 nodes with one shard when
 * node_count is 0), creates group 1 and returns its leader. */
static uint64_t start_with_group(cluster *c) {
  if (c->node_count == 0) {
    assert_int_equal(cluster_start(c, 3, 1), 0);
  } else {
    assert_int_equal(cluster_start_all(c), 0);
  }
  assert_int_equal(cluster_create_group(c, 1), 0);
  uint64_t leader = cluster_wait_leader(c, 1, WAIT_MS);
  assert_true(leader != 0);
  return leader;
}

/* ---- KV commands ---------------------------------------------------------- */

static void check_set_conditions(fl_engine *e) {
  call c;
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "k", 1, "v1", 2, FL_KV_SET_NX, 0), 0);
  assert_true(c.applied);
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "k", 1, "v9", 2, FL_KV_SET_NX, 0), 0);
  assert_false(c.applied);
  assert_false(c.has_bytes);
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "k", 1, "v9", 2, FL_KV_SET_NX | FL_KV_SET_GET, 0), 0);
  assert_false(c.applied); /* refused, yet the old value comes back */
  assert_true(c.has_bytes);
  assert_string_equal(c.bytes, "v1");
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "absent", 6, "x", 1, FL_KV_SET_XX, 0), 0);
  assert_false(c.applied);
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "k", 1, "v2", 2, FL_KV_SET_XX | FL_KV_SET_GET, 0), 0);
  assert_true(c.applied);
  assert_string_equal(c.bytes, "v1");
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "fresh", 5, "f", 1, FL_KV_SET_GET, 0), 0);
  assert_true(c.applied);
  assert_false(c.has_bytes); /* no old value */
  /* An expiry far ahead, kept by KEEPTTL; one already past removes the key. */
  uint64_t later = wall_clock_ms() + 3600000u;
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "ttl", 3, "t1", 2, 0, later), 0);
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "ttl", 3, "t2", 2, FL_KV_SET_KEEPTTL, 0), 0);
  assert_true(c.applied);
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "fresh", 5, "f2", 2, FL_KV_SET_GET, 1), 0);
  assert_string_equal(c.bytes, "f");
}

static void check_call_time_refusals(fl_engine *e) {
  call c;
  static char huge_key[FL_KV_MAX_KEY_BYTES + 1];
  static fl_bytes many[FL_KV_MAX_BATCH_KEYS + 1];
  for (uint32_t i = 0; i <= FL_KV_MAX_BATCH_KEYS; i++) {
    many[i] = (fl_bytes){"k", 1};
  }
  const uint32_t bad_flags[] = {FL_KV_SET_NX | FL_KV_SET_XX, 16, 1u << 31};
  for (size_t i = 0; i < sizeof(bad_flags) / sizeof(bad_flags[0]); i++) {
    assert_int_equal(CALL(&c, fl_kv_set, e, 1, "k", 1, "v", 1, bad_flags[i], 0), FL_E_INVALID);
  }
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "k", 1, "v", 1, FL_KV_SET_KEEPTTL, 5), FL_E_INVALID);
  assert_int_equal(fl_kv_set(e, 1, "k", 1, "v", 1, 0, 0, NULL, NULL), FL_E_INVALID);
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, "k", 1, NULL, 3, 0, 0), FL_E_INVALID);
  assert_int_equal(CALL(&c, fl_kv_set, e, 1, huge_key, sizeof(huge_key), "v", 1, 0, 0),
                   FL_E_TOO_LARGE);
  assert_int_equal(CALL(&c, fl_kv_append, e, 1, huge_key, sizeof(huge_key), "v", 1),
                   FL_E_TOO_LARGE);
  assert_int_equal(CALL(&c, fl_kv_delete_many, e, 1, many, 0), FL_E_INVALID);
  assert_int_equal(CALL(&c, fl_kv_delete_many, e, 1, many, FL_KV_MAX_BATCH_KEYS + 1), FL_E_INVALID);
  assert_int_equal(CALL(&c, fl_kv_delete_many, e, 1, NULL, 1), FL_E_INVALID);
  assert_int_equal(CALL(&c, fl_kv_set_many, e, 1, many, many, FL_KV_MAX_BATCH_KEYS + 1),
                   FL_E_INVALID);
  assert_int_equal(CALL(&c, fl_kv_set_many, e, 1, many, NULL, 1), FL_E_INVALID);
  fl_bytes too_long = {huge_key, sizeof(huge_key)};
  assert_int_equal(CALL(&c, fl_kv_set_many, e, 1, &too_long, many, 1), FL_E_TOO_LARGE);
  /* Above max_command_bytes (1 MiB by default) as a whole. */
  static char big_value[8192];
  fl_bytes big = {big_value, sizeof(big_value)};
  fl_bytes values[200];
  for (size_t i = 0; i < 200; i++) {
    values[i] = big;
  }
  assert_int_equal(CALL(&c, fl_kv_set_many, e, 1, many, values, 200), FL_E_TOO_LARGE);
}

static void check_append_and_errors(fl_engine *e) {
  call c;
  assert_int_equal(CALL(&c, fl_kv_append, e, 1, "a", 1, "he", 2), 0);
  assert_int_equal(c.integer, 2);
  assert_int_equal(CALL(&c, fl_kv_append, e, 1, "a", 1, "llo", 3), 0);
  assert_int_equal(c.integer, 5);
  assert_int_equal(CALL(&c, fl_kv_incr, e, 1, "a", 1, 1), FL_E_STATE);
  assert_true(c.has_bytes);
  assert_string_equal(c.bytes, "ERR value is not an integer or out of range");
}

static void check_batches(fl_engine *e) {
  call c;
  fl_bytes keys[] = {{"m1", 2}, {"m2", 2}, {"m3", 2}, {"m1", 2}};
  fl_bytes values[] = {{"one", 3}, {"two", 3}, {"three", 5}, {"uno", 3}};
  assert_int_equal(CALL(&c, fl_kv_set_many, e, 1, keys, values, 4), 0);
  assert_int_equal(c.integer, 4);
  assert_true(c.applied);
  fl_bytes doomed[] = {{"m2", 2}, {"missing", 7}, {"m3", 2}, {"m2", 2}};
  assert_int_equal(CALL(&c, fl_kv_delete_many, e, 1, doomed, 4), 0);
  assert_int_equal(c.integer, 2);
  assert_int_equal(CALL(&c, fl_kv_delete, e, 1, "k", 1), 0);
  assert_int_equal(c.integer, 1);
  /* The largest batch, in one command. */
  static char names[FL_KV_MAX_BATCH_KEYS][16];
  static fl_bytes full[FL_KV_MAX_BATCH_KEYS];
  for (uint32_t i = 0; i < FL_KV_MAX_BATCH_KEYS; i++) {
    int length = snprintf(names[i], sizeof(names[i]), "batch:%04u", i);
    full[i] = (fl_bytes){names[i], (uint32_t)length};
  }
  assert_int_equal(CALL(&c, fl_kv_set_many, e, 1, full, full, FL_KV_MAX_BATCH_KEYS), 0);
  assert_int_equal(c.integer, FL_KV_MAX_BATCH_KEYS);
}

static void test_kv_commands(void **state) {
  (void)state;
  cluster c = {0};
  uint64_t leader = start_with_group(&c);
  fl_group_status status = status_of(&c, leader, 1);
  assert_int_equal(status.keys, 0);
  assert_int_equal(status.kv_bytes, 0); /* no store until the first command */
  fl_engine *e = c.engines[leader - 1];
  check_set_conditions(e);
  check_call_time_refusals(e);
  check_append_and_errors(e);
  check_batches(e);
  wait_replicated(&c, leader, 1);
  /* Left: ttl, a, m1 and the batch ("fresh" expired at once, "k", "m2"
   * and "m3" were deleted), alike on every node. */
  for (uint64_t node = 1; node <= 3; node++) {
    status = status_of(&c, node, 1);
    assert_int_equal(status.keys, 3 + FL_KV_MAX_BATCH_KEYS);
    assert_true(status.kv_bytes > FL_KV_MAX_BATCH_KEYS * 20u);
    assert_read(&c, node, "ttl", "t2");
    assert_read(&c, node, "a", "hello");
    assert_read(&c, node, "m1", "uno");
    assert_read(&c, node, "m2", NULL);
    assert_read(&c, node, "fresh", NULL);
    assert_read(&c, node, "batch:1023", "batch:1023");
  }
  cluster_destroy(&c);
}

/* ---- the largest value ---------------------------------------------------- */

typedef struct big_read {
  sem_t done;
  int status;
  bool matches;
} big_read;

static void on_big_read(void *context, int status, const uint8_t *value, uint32_t length) {
  big_read *r = context;
  r->status = status;
  r->matches = status == 0 && length == FL_KV_MAX_VALUE_BYTES;
  for (uint32_t i = 0; r->matches && i < length; i++) {
    r->matches = value[i] == (uint8_t)(i * 7u);
  }
  sem_post(&r->done);
}

/* A WAL batch never splits an entry, so it must hold the largest command
 * the engine accepts: a value of FL_KV_MAX_VALUE_BYTES replicates and reads
 * back on every node, and options whose segments are too small for such a
 * batch are refused at open rather than stopping a shard later. */
static void test_largest_value(void **state) {
  (void)state;
  cluster c = {0};
  assert_int_equal(cluster_prepare(&c, 3, 1), 0);
  c.max_command_bytes = FL_KV_MAX_VALUE_BYTES + FL_KV_MAX_KEY_BYTES + 1024;
  c.wal_segment_bytes = 4u << 20; /* half is 2 MiB: too small */
  assert_int_equal(cluster_start_node(&c, 1), FL_E_INVALID);
  c.wal_segment_bytes = 16u << 20;
  uint64_t leader = start_with_group(&c);
  static uint8_t value[FL_KV_MAX_VALUE_BYTES];
  for (uint32_t i = 0; i < sizeof(value); i++) {
    value[i] = (uint8_t)(i * 7u);
  }
  call done;
  for (int round = 0; round < 3; round++) { /* several: the WAL batches roll over */
    /* A slow machine (sanitizers) may elect anew while 2 MiB entries are in
     * flight: a write lost that way is retried on the new leader. */
    int rc = FL_E_DROPPED;
    for (int attempt = 0; attempt < 10 && (rc == FL_E_DROPPED || rc == FL_E_NOT_LEADER);
         attempt++) {
      leader = cluster_wait_leader(&c, 1, WAIT_MS);
      assert_true(leader != 0);
      rc = CALL(&done, fl_kv_set, c.engines[leader - 1], 1, "big", 3, value, sizeof(value), 0, 0);
    }
    assert_int_equal(rc, 0);
  }
  wait_replicated(&c, leader, 1);
  for (uint64_t node = 1; node <= 3; node++) {
    big_read r = {0};
    sem_init(&r.done, 0, 0);
    assert_int_equal(fl_kv_get(c.engines[node - 1], 1, "big", 3, FL_READ_LOCAL, on_big_read, &r),
                     0);
    sem_wait(&r.done);
    sem_destroy(&r.done);
    assert_int_equal(r.status, 0);
    assert_true(r.matches);
  }
  cluster_destroy(&c);
}

/* ---- on_leader ------------------------------------------------------------- */

/* What one node's callback was told, per group. */
typedef struct leader_watch {
  atomic_uint_fast64_t leader[GROUPS + 1];
  atomic_uint_fast64_t term[GROUPS + 1];
  atomic_uint calls[GROUPS + 1];
  atomic_uint foreign; /* calls for a group the test never made */
} leader_watch;

static void on_leader(void *context, uint64_t group, uint64_t leader, uint64_t term) {
  leader_watch *w = context;
  if (group == 0 || group > GROUPS) {
    atomic_fetch_add(&w->foreign, 1);
    return;
  }
  atomic_store(&w->leader[group], leader);
  atomic_store(&w->term[group], term);
  atomic_fetch_add(&w->calls[group], 1);
}

static void reset_watch(leader_watch *w) {
  for (uint32_t g = 0; g <= GROUPS; g++) {
    atomic_store(&w->leader[g], 0);
    atomic_store(&w->term[g], 0);
    atomic_store(&w->calls[g], 0);
  }
  atomic_store(&w->foreign, 0);
}

/* Every node's callback last said `leader` leads `group`, in the term the
 * leader itself is in. */
static bool watches_agree(cluster *c, leader_watch *watches, uint64_t group, uint64_t leader) {
  fl_group_status status;
  if (fl_group_status_get(c->engines[leader - 1], group, &status) != 0 ||
      status.role != FL_LEADER) {
    return false;
  }
  for (uint32_t node = 0; node < c->node_count; node++) {
    if (atomic_load(&watches[node].leader[group]) != leader ||
        atomic_load(&watches[node].term[group]) != status.term) {
      return false;
    }
  }
  return true;
}

static void wait_watches_agree(cluster *c, leader_watch *watches, uint64_t group, uint64_t leader) {
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  while (!watches_agree(c, watches, group, leader) && cluster_now_ms() < deadline) {
    cluster_pause_ms(5);
  }
  assert_true(watches_agree(c, watches, group, leader));
}

static uint64_t wait_every_group(cluster *c, leader_watch *watches, uint64_t *leaders) {
  for (uint64_t group = 1; group <= GROUPS; group++) {
    leaders[group] = cluster_wait_leader(c, group, WAIT_MS);
    assert_true(leaders[group] != 0);
    wait_watches_agree(c, watches, group, leaders[group]);
    for (uint32_t node = 0; node < c->node_count; node++) {
      assert_true(atomic_load(&watches[node].calls[group]) >= 1);
    }
  }
  return leaders[1];
}

static void test_on_leader(void **state) {
  (void)state;
  static leader_watch watches[3];
  cluster c = {0};
  assert_int_equal(cluster_prepare(&c, 3, 2), 0);
  c.on_leader = on_leader;
  for (uint32_t node = 0; node < 3; node++) {
    reset_watch(&watches[node]);
    c.on_leader_contexts[node] = &watches[node];
  }
  assert_int_equal(cluster_start_all(&c), 0);
  for (uint64_t group = 1; group <= GROUPS; group++) {
    assert_int_equal(cluster_create_group(&c, group), 0);
  }
  uint64_t leaders[GROUPS + 1];
  uint64_t leader = wait_every_group(&c, watches, leaders);
  /* A transfer: every node's callback reports the new leader. */
  uint64_t target = leader % 3 + 1;
  assert_int_equal(fl_group_transfer_leader(c.engines[leader - 1], 1, target), 0);
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  while (cluster_wait_leader(&c, 1, WAIT_MS) != target && cluster_now_ms() < deadline) {
    cluster_pause_ms(5);
  }
  assert_int_equal(cluster_wait_leader(&c, 1, WAIT_MS), target);
  wait_watches_agree(&c, watches, 1, target);
  /* A restarted node reports every group it recovers. */
  cluster_stop_node(&c, 3);
  reset_watch(&watches[2]);
  assert_int_equal(cluster_start_node(&c, 3), 0);
  wait_every_group(&c, watches, leaders);
  /* A removed replica knows no leader: said before the removal returns. */
  assert_int_equal(fl_group_remove(c.engines[0], 2), 0);
  assert_int_equal(atomic_load(&watches[0].leader[2]), 0);
  for (uint32_t node = 0; node < 3; node++) {
    assert_int_equal(atomic_load(&watches[node].foreign), 0);
  }
  cluster_destroy(&c);
}

/* ---- expiry ----------------------------------------------------------------- */

typedef struct batch {
  sem_t done;
  atomic_uint left;
  atomic_int failures;
} batch;

static void on_batch_call(void *context, int status, const fl_result *result) {
  batch *b = context;
  if (status != 0 || result == NULL || !result->applied) {
    atomic_fetch_add(&b->failures, 1);
  }
  if (atomic_fetch_sub(&b->left, 1) == 1) {
    sem_post(&b->done);
  }
}

/* `count` keys "prefix:i" set on the leader, pipelined, expiring at
 * expire_at_ms (0: never). */
static void set_keys(fl_engine *e, const char *prefix, uint32_t count, uint64_t expire_at_ms) {
  batch b;
  sem_init(&b.done, 0, 0);
  atomic_store(&b.left, count);
  atomic_store(&b.failures, 0);
  for (uint32_t i = 0; i < count; i++) {
    char key[32];
    int length = snprintf(key, sizeof(key), "%s:%u", prefix, i);
    assert_int_equal(
        fl_kv_set(e, 1, key, (uint32_t)length, "value", 5, 0, expire_at_ms, on_batch_call, &b), 0);
  }
  sem_wait(&b.done);
  sem_destroy(&b.done);
  assert_int_equal(atomic_load(&b.failures), 0);
}

static bool every_node_quiet(cluster *c) {
  for (uint64_t node = 1; node <= c->node_count; node++) {
    fl_shard_stats stats;
    if (fl_shard_stats_get(c->engines[node - 1], 0, &stats) != 0 || stats.active_groups != 0) {
      return false;
    }
  }
  return true;
}

static bool wait_quiet(cluster *c) {
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  while (!every_node_quiet(c) && cluster_now_ms() < deadline) {
    cluster_pause_ms(10);
  }
  return every_node_quiet(c);
}

/* Every running node's replica of group 1 holds `keys` entries. */
static bool every_node_holds(cluster *c, uint64_t keys) {
  for (uint64_t node = 1; node <= c->node_count; node++) {
    if (c->engines[node - 1] != NULL && status_of(c, node, 1).keys != keys) {
      return false;
    }
  }
  return true;
}

static bool wait_every_node_holds(cluster *c, uint64_t keys, uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  while (!every_node_holds(c, keys) && cluster_now_ms() < deadline) {
    cluster_pause_ms(20);
  }
  return every_node_holds(c, keys);
}

/* Keys set to expire in a few seconds are swept from every replica once
 * their time comes, although the group went quiet before (nothing ticks
 * it then), in several sweeps (more keys than one sweep removes); the keys
 * without an expiry stay, and the group goes quiet again afterwards. */
static void test_expired_keys_swept(void **state) {
  (void)state;
  const uint32_t expiring = 2500;
  const uint32_t lasting = 5;
  cluster c = {0};
  uint64_t leader = start_with_group(&c);
  /* Far enough ahead for the writes and the quiet to come first even on a
   * slow (sanitized, loaded) machine; checked below. */
  const uint64_t expire_at_ms = wall_clock_ms() + 8000;
  set_keys(c.engines[leader - 1], "short", expiring, expire_at_ms);
  set_keys(c.engines[leader - 1], "long", lasting, 0);
  wait_replicated(&c, leader, 1);
  assert_true(wait_quiet(&c));
  /* Still before the expiry: the count below is of keys not yet due. */
  assert_true(wall_clock_ms() < expire_at_ms);
  assert_true(every_node_holds(&c, expiring + lasting));
  assert_true(wait_every_node_holds(&c, lasting, 8000 + WAIT_MS));
  assert_true(wall_clock_ms() >= expire_at_ms);
  for (uint64_t node = 1; node <= 3; node++) {
    assert_read(&c, node, "short:0", NULL);
    assert_read(&c, node, "long:4", "value");
  }
  assert_true(wait_quiet(&c)); /* no sweep keeps it awake */
  cluster_destroy(&c);
}

/* The leader that held the keys is stopped before they expire: the next
 * leader finds the expiries when it takes office and sweeps them; the old
 * leader, back, receives the sweeps with the log. */
static void test_next_leader_sweeps(void **state) {
  (void)state;
  cluster c = {0};
  uint64_t leader = start_with_group(&c);
  const uint64_t expire_at_ms = wall_clock_ms() + 4000;
  set_keys(c.engines[leader - 1], "short", 300, expire_at_ms);
  set_keys(c.engines[leader - 1], "long", 2, 0);
  wait_replicated(&c, leader, 1);
  /* The old leader must stop before the keys are due, or it would sweep
   * them itself and the next leader's part would go untested. */
  assert_true(wall_clock_ms() < expire_at_ms);
  cluster_stop_node(&c, leader);
  uint64_t next = cluster_wait_leader(&c, 1, WAIT_MS);
  assert_true(next != 0 && next != leader);
  assert_true(wait_every_node_holds(&c, 2, 4000 + WAIT_MS));
  assert_true(wall_clock_ms() >= expire_at_ms);
  assert_int_equal(cluster_start_node(&c, leader), 0);
  assert_true(cluster_wait_caught_up(&c, 1, WAIT_MS) != 0);
  assert_true(wait_every_node_holds(&c, 2, WAIT_MS));
  cluster_destroy(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_kv_commands),        cmocka_unit_test(test_largest_value),
      cmocka_unit_test(test_on_leader),          cmocka_unit_test(test_expired_keys_swept),
      cmocka_unit_test(test_next_leader_sweeps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
