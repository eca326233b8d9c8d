/*
 * test_engine_machine.c - engines in one process with a USER state machine
 * (fl_options.machine): snapshots of it (the log is compacted, a follower
 * that was down catches up by a streamed snapshot, every node restarts
 * from its snapshot), snapshots that must be refused (restore() failing,
 * a damaged stream, a damaged local file at restart), fl_query,
 * fl_propose_batch and request deadlines.
 *
 * The machine: a running sum of 8-byte commands with a hash of the
 * sequence, so two replicas that applied different sequences disagree.
 * Its saved stream is the state plus SUM_FILLER_BYTES derived from it,
 * more than one write buffer, checked again by restore().
 */
#include <dirent.h>
#include <fcntl.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/engine_testing.h"
#include "tests/engine/cluster.h"

#define WAIT_MS 15000u
#define SNAPSHOT_EVERY 50u
/* Enough for several snapshots while a node is down. */
#define WRITES 300u
/* A saved stream larger than the engine's write buffer (256 KiB). */
#define SUM_FILLER_BYTES (300u * 1024u)

/* ---- the machine ----------------------------------------------------- */

/* One per node: what its machine did, and faults to inject. */
typedef struct node_machine {
  fl_state_machine machine;
  atomic_uint saves;
  atomic_uint restores;         /* restore() calls that succeeded */
  atomic_uint refused_restores; /* restore() calls that failed */
  atomic_bool fail_restores;
} node_machine;

typedef struct sum_values {
  uint64_t count;
  int64_t sum;
  uint64_t hash;
} sum_values;

typedef struct sum_state {
  node_machine *owner;
  sum_values values;
} sum_state;

static node_machine machines[CLUSTER_MAX_NODES];

static void *sum_create(void *context, uint64_t group) {
  (void)group;
  sum_state *s = calloc(1, sizeof(sum_state));
  if (s != NULL) {
    s->owner = context;
  }
  return s;
}

static void sum_destroy(void *state) {
  free(state);
}

static uint64_t mix_hash(uint64_t hash, uint64_t value) {
  hash ^= value + 0x9e3779b97f4a7c15ULL + (hash << 6) + (hash >> 2);
  return hash * 0xff51afd7ed558ccdULL;
}

static void sum_apply(void *state, const fl_command *commands, uint32_t count, fl_result *results) {
  sum_values *v = &((sum_state *)state)->values;
  for (uint32_t i = 0; i < count; i++) {
    int64_t value = 0;
    if (commands[i].length != sizeof(value)) {
      results[i].status = FL_E_STATE;
      continue;
    }
    memcpy(&value, commands[i].data, sizeof(value));
    v->count++;
    v->sum += value;
    v->hash = mix_hash(v->hash, (uint64_t)value);
    results[i].applied = true;
    results[i].integer = v->sum;
  }
}

static uint8_t filler_byte(const sum_values *v, uint32_t i) {
  return (uint8_t)((v->hash >> (8 * (i % 8))) ^ i);
}

static int sum_save(void *state, int (*write)(void *sink, const void *bytes, size_t length),
                    void *sink) {
  sum_state *s = state;
  atomic_fetch_add(&s->owner->saves, 1);
  int rc = write(sink, &s->values, sizeof(s->values));
  uint8_t block[4096];
  for (uint32_t done = 0; rc == 0 && done < SUM_FILLER_BYTES; done += sizeof(block)) {
    for (uint32_t i = 0; i < sizeof(block); i++) {
      block[i] = filler_byte(&s->values, done + i);
    }
    rc = write(sink, block, sizeof(block));
  }
  return rc;
}

static int read_exactly(long (*read)(void *, void *, size_t), void *source, void *bytes,
                        size_t length) {
  uint8_t *p = bytes;
  while (length > 0) {
    long n = read(source, p, length);
    if (n <= 0) {
      return -1;
    }
    p += n;
    length -= (size_t)n;
  }
  return 0;
}

/* Reads the values, checks the filler and the end of the stream. */
static int sum_restore(void *state, long (*read)(void *source, void *bytes, size_t capacity),
                       void *source) {
  sum_state *s = state;
  if (atomic_load(&s->owner->fail_restores)) {
    atomic_fetch_add(&s->owner->refused_restores, 1);
    return -1;
  }
  sum_values v;
  int rc = read_exactly(read, source, &v, sizeof(v));
  uint8_t block[4096];
  for (uint32_t done = 0; rc == 0 && done < SUM_FILLER_BYTES; done += sizeof(block)) {
    rc = read_exactly(read, source, block, sizeof(block));
    for (uint32_t i = 0; rc == 0 && i < sizeof(block); i++) {
      rc = block[i] == filler_byte(&v, done + i) ? 0 : -1;
    }
  }
  uint8_t extra;
  if (rc != 0 || read(source, &extra, 1) != 0) {
    atomic_fetch_add(&s->owner->refused_restores, 1);
    return -1;
  }
  s->values = v;
  atomic_fetch_add(&s->owner->restores, 1);
  return 0;
}

static void sum_query(void *state, const uint8_t *query, uint32_t length, fl_result *result) {
  const sum_values *v = &((const sum_state *)state)->values;
  if (length != 1 || (query[0] != 's' && query[0] != 'c' && query[0] != 'h')) {
    static const char reason[] = "unknown query";
    *result = (fl_result){.status = FL_E_STATE,
                          .has_bytes = true,
                          .bytes = (const uint8_t *)reason,
                          .length = sizeof(reason) - 1};
    return;
  }
  int64_t answer = query[0] == 's'   ? v->sum
                   : query[0] == 'c' ? (int64_t)v->count
                                     : (int64_t)v->hash;
  *result = (fl_result){.applied = true, .integer = answer};
}

/* A cluster whose every node runs the machine, snapshotting every
 * SNAPSHOT_EVERY entries; nothing is started. */
static void prepare(cluster *c, uint32_t nodes) {
  assert_int_equal(cluster_prepare(c, nodes, 1), 0);
  c->snapshot_entries = SNAPSHOT_EVERY;
  for (uint32_t i = 0; i < nodes; i++) {
    node_machine *m = &machines[i];
    memset(m, 0, sizeof(*m));
    m->machine = (fl_state_machine){.create = sum_create,
                                    .destroy = sum_destroy,
                                    .apply = sum_apply,
                                    .save = sum_save,
                                    .restore = sum_restore,
                                    .query = sum_query,
                                    .context = m};
    c->machines[i] = &m->machine;
  }
}

/* ---- blocking calls -------------------------------------------------- */

typedef struct call {
  sem_t done;
  atomic_int status;
  int64_t integer;
} call;

static void on_answer(void *context, int status, const fl_result *result) {
  call *k = context;
  k->integer = result != NULL ? result->integer : 0;
  atomic_store(&k->status, status);
  sem_post(&k->done);
}

static int wait_call(call *k) {
  sem_wait(&k->done);
  sem_destroy(&k->done);
  return atomic_load(&k->status);
}

static int propose_value(cluster *c, uint64_t node, uint64_t group, int64_t value) {
  call k = {0};
  sem_init(&k.done, 0, 0);
  int rc = fl_propose(c->engines[node - 1], group, &value, sizeof(value), on_answer, &k);
  if (rc != 0) {
    sem_destroy(&k.done);
    return rc;
  }
  return wait_call(&k);
}

/* On whichever node leads, across leader changes, until the deadline. */
static int propose_retry(cluster *c, uint64_t group, int64_t value) {
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  int rc = FL_E_TIMEOUT;
  while (cluster_now_ms() < deadline) {
    uint64_t leader = cluster_wait_leader(c, group, WAIT_MS);
    rc = leader == 0 ? FL_E_TIMEOUT : propose_value(c, leader, group, value);
    if (rc == 0) {
      return 0;
    }
    cluster_pause_ms(10);
  }
  return rc;
}

/* fl_query's status; *answer its integer. */
static int query(cluster *c, uint64_t node, uint64_t group, char what, fl_read_mode mode,
                 int64_t *answer) {
  call k = {0};
  sem_init(&k.done, 0, 0);
  int rc = fl_query(c->engines[node - 1], group, &what, 1, mode, on_answer, &k);
  if (rc != 0) {
    sem_destroy(&k.done);
    return rc;
  }
  rc = wait_call(&k);
  *answer = k.integer;
  return rc;
}

/* Writes values first..first+count-1; returns their sum. */
static int64_t write_values(cluster *c, uint64_t group, int64_t first, uint32_t count) {
  int64_t sum = 0;
  for (uint32_t i = 0; i < count; i++) {
    assert_int_equal(propose_retry(c, group, first + i), 0);
    sum += first + i;
  }
  return sum;
}

/* Every running node holds the sum and the same sequence hash, once it
 * applied the leader's commit. */
static void check_converged(cluster *c, uint64_t group, int64_t sum, uint64_t count) {
  assert_true(cluster_wait_caught_up(c, group, WAIT_MS) != 0);
  int64_t hash = 0;
  bool first = true;
  for (uint64_t node = 1; node <= c->node_count; node++) {
    if (c->engines[node - 1] == NULL) {
      continue;
    }
    int64_t answer = 0;
    assert_int_equal(query(c, node, group, 's', FL_READ_LOCAL, &answer), 0);
    assert_int_equal(answer, sum);
    assert_int_equal(query(c, node, group, 'c', FL_READ_LOCAL, &answer), 0);
    assert_int_equal(answer, (int64_t)count);
    assert_int_equal(query(c, node, group, 'h', FL_READ_LOCAL, &answer), 0);
    if (!first) {
      assert_int_equal(answer, hash);
    }
    hash = answer;
    first = false;
  }
}

static uint64_t first_index(cluster *c, uint64_t node, uint64_t group) {
  fl_group_status status;
  assert_int_equal(fl_group_status_get(c->engines[node - 1], group, &status), 0);
  return status.first_index;
}

/* Starts nodes 1 and 2 of a 3-node group whose node 3 is down, and writes
 * WRITES values: the leaders compact past what node 3 could get from a log. */
static int64_t write_without_node_3(cluster *c) {
  assert_int_equal(cluster_start_node(c, 1), 0);
  assert_int_equal(cluster_start_node(c, 2), 0);
  uint64_t members[3] = {1, 2, 3};
  assert_int_equal(fl_group_create(c->engines[0], 1, members, 3), 0);
  assert_int_equal(fl_group_create(c->engines[1], 1, members, 3), 0);
  int64_t sum = write_values(c, 1, 1, WRITES);
  uint64_t leader = cluster_wait_leader(c, 1, WAIT_MS);
  assert_true(leader != 0);
  assert_true(first_index(c, leader, 1) > SNAPSHOT_EVERY);
  assert_true(atomic_load(&machines[leader - 1].saves) > 0);
  return sum;
}

static int start_node_3(cluster *c) {
  int rc = cluster_start_node(c, 3);
  if (rc == 0) {
    rc = fl_group_create(c->engines[2], 1, (uint64_t[]){1, 2, 3}, 3);
  }
  return rc;
}

/* ---- snapshots ------------------------------------------------------- */

/* Snapshots node `node` received from a leader and installed, over its
 * shards. */
static void snapshot_counts(cluster *c, uint64_t node, uint64_t *received, uint64_t *installed) {
  *received = *installed = 0;
  for (uint32_t i = 0; i < fl_engine_shard_count(c->engines[node - 1]); i++) {
    fl_shard_stats stats;
    assert_int_equal(fl_shard_stats_get(c->engines[node - 1], i, &stats), 0);
    *received += stats.snapshots_received;
    *installed += stats.snapshots_installed;
  }
}

/* The log is compacted, a follower that was down catches up by a
 * snapshot (restore() ran once per snapshot received: the state restored
 * to verify the stream is the one installed), and every node restarted
 * recovers the same state from its snapshot and the log after it. */
static void test_snapshots_compact_and_catch_up(void **state) {
  (void)state;
  cluster c;
  prepare(&c, 3);
  int64_t sum = write_without_node_3(&c);
  assert_int_equal(start_node_3(&c), 0);
  check_converged(&c, 1, sum, WRITES);
  uint64_t received = 0;
  uint64_t installed = 0;
  snapshot_counts(&c, 3, &received, &installed);
  assert_true(installed > 0);
  assert_true(received >= installed);
  assert_int_equal(atomic_load(&machines[2].restores), received);
  sum += write_values(&c, 1, 1000, 20);
  for (uint64_t node = 1; node <= 3; node++) {
    cluster_stop_node(&c, node);
  }
  for (uint64_t node = 1; node <= 3; node++) {
    assert_int_equal(cluster_start_node(&c, node), 0);
  }
  check_converged(&c, 1, sum, WRITES + 20);
  for (uint64_t node = 1; node <= 3; node++) {
    assert_true(first_index(&c, node, 1) > 1);
  }
  cluster_destroy(&c);
}

/* A follower whose restore() refuses every stream stays behind with its
 * old state (it never applies past what it holds), and catches up once
 * restore() accepts again: the leader keeps retrying. */
static void test_refused_restore_keeps_follower_behind(void **state) {
  (void)state;
  cluster c;
  prepare(&c, 3);
  int64_t sum = write_without_node_3(&c);
  atomic_store(&machines[2].fail_restores, true);
  assert_int_equal(start_node_3(&c), 0);
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  while (atomic_load(&machines[2].refused_restores) < 2 && cluster_now_ms() < deadline) {
    cluster_pause_ms(10);
  }
  assert_true(atomic_load(&machines[2].refused_restores) >= 2); /* refused, then retried */
  int64_t count = -1;
  assert_int_equal(query(&c, 3, 1, 'c', FL_READ_LOCAL, &count), 0);
  assert_int_equal(count, 0);
  fl_group_status status;
  assert_int_equal(fl_group_status_get(c.engines[2], 1, &status), 0);
  assert_int_equal(status.applied, 0);
  atomic_store(&machines[2].fail_restores, false);
  check_converged(&c, 1, sum, WRITES);
  cluster_destroy(&c);
}

/* Flips one byte in the middle of the newest snapshot file of a node. */
static void damage_newest_snapshot(cluster *c, uint64_t node) {
  char directory[256];
  snprintf(directory, sizeof(directory), "%s/node-%llu/shard-0/snapshots", c->directory,
           (unsigned long long)node);
  DIR *d = opendir(directory);
  assert_non_null(d);
  char newest[256] = "";
  for (struct dirent *e; (e = readdir(d)) != NULL;) {
    size_t n = strlen(e->d_name);
    if (n > 5 && strcmp(e->d_name + n - 5, ".snap") == 0 && strcmp(e->d_name, newest) > 0) {
      snprintf(newest, sizeof(newest), "%s", e->d_name);
    }
  }
  closedir(d);
  assert_true(newest[0] != '\0');
  char path[600];
  snprintf(path, sizeof(path), "%s/%s", directory, newest);
  int fd = open(path, O_RDWR);
  assert_true(fd >= 0);
  off_t size = lseek(fd, 0, SEEK_END);
  uint8_t byte = 0;
  assert_int_equal(pread(fd, &byte, 1, size / 2), 1);
  byte ^= 0x5a;
  assert_int_equal(pwrite(fd, &byte, 1, size / 2), 1);
  close(fd);
}

typedef struct log_watch {
  atomic_uint not_verified; /* "does not verify" messages */
} log_watch;

static void watch_log(void *context, int level, const char *message) {
  log_watch *watch = context;
  if (level >= 2 && strstr(message, "does not verify") != NULL) {
    atomic_fetch_add(&watch->not_verified, 1);
  }
}

/* A damaged stream is refused by its checksum before restore() sees it;
 * the follower catches up from the next (sound) snapshot. A node whose own
 * snapshot file is damaged refuses to open. */
static void test_damaged_snapshot_is_refused(void **state) {
  (void)state;
  cluster c;
  prepare(&c, 3);
  log_watch watch = {0};
  c.log = watch_log;
  c.log_context = &watch;
  int64_t sum = write_without_node_3(&c);
  uint64_t leader = cluster_wait_leader(&c, 1, WAIT_MS);
  damage_newest_snapshot(&c, leader);
  assert_int_equal(start_node_3(&c), 0);
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  while (atomic_load(&watch.not_verified) == 0 && cluster_now_ms() < deadline) {
    cluster_pause_ms(10);
  }
  assert_true(atomic_load(&watch.not_verified) > 0);
  assert_int_equal(atomic_load(&machines[2].restores), 0);
  assert_int_equal(atomic_load(&machines[2].refused_restores), 0);
  sum += write_values(&c, 1, 5000, 2 * SNAPSHOT_EVERY); /* a new snapshot */
  check_converged(&c, 1, sum, WRITES + 2 * SNAPSHOT_EVERY);
  assert_true(atomic_load(&machines[2].restores) > 0);
  uint64_t victim = cluster_wait_leader(&c, 1, WAIT_MS) % 3 + 1;
  cluster_stop_node(&c, victim);
  damage_newest_snapshot(&c, victim);
  assert_int_equal(cluster_start_node(&c, victim), FL_E_CORRUPT);
  cluster_destroy(&c);
}

/* ---- fl_query ---------------------------------------------------------- */

/* Linearizable queries on the leader see every acknowledged write; local
 * ones on every replica once it applied them; query() reports its own
 * refusals; the KV store and bad arguments are refused at call time. */
static void test_query(void **state) {
  (void)state;
  cluster c;
  prepare(&c, 3);
  assert_int_equal(cluster_start_all(&c), 0);
  assert_int_equal(cluster_create_group(&c, 1), 0);
  int64_t sum = write_values(&c, 1, 10, 30);
  uint64_t leader = cluster_wait_leader(&c, 1, WAIT_MS);
  int64_t answer = 0;
  assert_int_equal(query(&c, leader, 1, 's', FL_READ_LINEARIZABLE, &answer), 0);
  assert_int_equal(answer, sum);
  check_converged(&c, 1, sum, 30);
  call k = {0};
  sem_init(&k.done, 0, 0);
  assert_int_equal(fl_query(c.engines[leader - 1], 1, "x", 1, FL_READ_LOCAL, on_answer, &k), 0);
  assert_int_equal(wait_call(&k), FL_E_STATE);
  assert_int_equal(query(&c, leader, 99, 's', FL_READ_LOCAL, &answer), FL_E_NO_GROUP);
  assert_int_equal(fl_query(c.engines[0], 1, "s", 1, FL_READ_LOCAL, NULL, NULL), FL_E_INVALID);
  assert_int_equal(fl_query(c.engines[0], 1, NULL, 1, FL_READ_LOCAL, on_answer, &k), FL_E_INVALID);
  cluster_destroy(&c);

  cluster kv; /* the built-in store has fl_kv_get instead */
  assert_int_equal(cluster_start(&kv, 1, 1), 0);
  assert_int_equal(fl_query(kv.engines[0], 1, "s", 1, FL_READ_LOCAL, on_answer, &k), FL_E_INVALID);
  cluster_destroy(&kv);
}

/* ---- fl_propose_batch --------------------------------------------------- */

#define BATCH 300u

/* One request of BATCH commands: each answered once, with its own
 * result, in the order proposed (the running sum shows the order). */
static void test_propose_batch(void **state) {
  (void)state;
  cluster c;
  prepare(&c, 3);
  assert_int_equal(cluster_start_all(&c), 0);
  assert_int_equal(cluster_create_group(&c, 1), 0);
  uint64_t leader = cluster_wait_leader(&c, 1, WAIT_MS);
  assert_true(leader != 0);
  static int64_t values[BATCH];
  static fl_bytes commands[BATCH];
  static call calls[BATCH];
  static void *contexts[BATCH];
  for (uint32_t i = 0; i < BATCH; i++) {
    values[i] = (int64_t)i + 1;
    commands[i] = (fl_bytes){.data = &values[i], .length = sizeof(values[i])};
    memset(&calls[i], 0, sizeof(calls[i]));
    sem_init(&calls[i].done, 0, 0);
    contexts[i] = &calls[i];
  }
  fl_engine *e = c.engines[leader - 1];
  assert_int_equal(fl_propose_batch(e, 1, commands, BATCH, on_answer, contexts), 0);
  int64_t sum = 0;
  for (uint32_t i = 0; i < BATCH; i++) {
    sum += values[i];
    assert_int_equal(wait_call(&calls[i]), 0);
    assert_int_equal(calls[i].integer, sum);
  }
  check_converged(&c, 1, sum, BATCH);
  /* on a follower every command is answered with the refusal */
  uint64_t follower = leader % 3 + 1;
  for (uint32_t i = 0; i < 3; i++) {
    sem_init(&calls[i].done, 0, 0);
  }
  assert_int_equal(fl_propose_batch(c.engines[follower - 1], 1, commands, 3, on_answer, contexts),
                   0);
  for (uint32_t i = 0; i < 3; i++) {
    assert_int_equal(wait_call(&calls[i]), FL_E_NOT_LEADER);
  }
  assert_int_equal(fl_propose_batch(e, 1, commands, 0, on_answer, contexts), FL_E_INVALID);
  assert_int_equal(fl_propose_batch(e, 1, commands, FL_MAX_BATCH_COMMANDS + 1, on_answer, contexts),
                   FL_E_INVALID);
  assert_int_equal(fl_propose_batch(e, 1, commands, 1, NULL, contexts), FL_E_INVALID);
  fl_bytes bad = {.data = NULL, .length = 8};
  assert_int_equal(fl_propose_batch(e, 1, &bad, 1, on_answer, contexts), FL_E_INVALID);
  cluster_destroy(&c);
}

/* ---- deadlines ------------------------------------------------------------ */

#define TIMEOUT_MS 150u
/* Deadlines are checked on ticks (10 ms here); the rest is scheduling
 * slack of a loaded (or sanitized) test machine. Still far below what a
 * missing deadline gives: the call would wait until the partition heals. */
#define TIMEOUT_MARGIN_MS 2000u

/* A call that remembers when it was answered; it must outlive the
 * cluster's close, which answers whatever is still waiting. */
typedef struct timed_call {
  atomic_bool done;
  atomic_int status;
  atomic_uint_fast64_t answered_ms;
} timed_call;

static void on_timed_answer(void *context, int status, const fl_result *result) {
  (void)result;
  timed_call *t = context;
  atomic_store(&t->answered_ms, cluster_now_ms());
  atomic_store(&t->status, status);
  atomic_store(&t->done, true);
}

static void wait_timed(timed_call *t) {
  uint64_t deadline = cluster_now_ms() + WAIT_MS;
  while (!atomic_load(&t->done) && cluster_now_ms() < deadline) {
    cluster_pause_ms(2);
  }
  assert_true(atomic_load(&t->done));
}

/* A leader cut from its followers cannot commit a write nor confirm a
 * read: both are answered FL_E_TIMEOUT once request_timeout_ms passed
 * (within a tick and some slack), not before; writes that can commit
 * are not affected. */
static void test_deadlines(void **state) {
  (void)state;
  cluster c;
  prepare(&c, 3);
  c.request_timeout_ms = TIMEOUT_MS;
  assert_int_equal(cluster_start_all(&c), 0);
  assert_int_equal(cluster_create_group(&c, 1), 0);
  int64_t sum = write_values(&c, 1, 1, 20);
  uint64_t leader = cluster_wait_leader(&c, 1, WAIT_MS);
  assert_true(leader != 0);
  assert_int_equal(cluster_isolate(&c, leader, true), 0);
  static timed_call write;
  static timed_call read;
  memset(&write, 0, sizeof(write));
  memset(&read, 0, sizeof(read));
  int64_t value = 1000;
  uint64_t start = cluster_now_ms();
  assert_int_equal(
      fl_propose(c.engines[leader - 1], 1, &value, sizeof(value), on_timed_answer, &write), 0);
  assert_int_equal(
      fl_query(c.engines[leader - 1], 1, "s", 1, FL_READ_LINEARIZABLE, on_timed_answer, &read), 0);
  wait_timed(&write);
  wait_timed(&read);
  assert_int_equal(atomic_load(&write.status), FL_E_TIMEOUT);
  assert_int_equal(atomic_load(&read.status), FL_E_TIMEOUT);
  for (timed_call *t = &write; t != NULL; t = t == &write ? &read : NULL) {
    uint64_t elapsed = atomic_load(&t->answered_ms) - start;
    assert_true(elapsed + 1 >= TIMEOUT_MS);
    assert_true(elapsed <= TIMEOUT_MS + TIMEOUT_MARGIN_MS);
  }
  assert_int_equal(cluster_isolate(&c, leader, false), 0);
  /* the timed-out write may or may not have committed: only later ones
   * are counted */
  assert_true(cluster_wait_caught_up(&c, 1, WAIT_MS) != 0);
  int64_t before = 0;
  uint64_t now_leader = cluster_wait_leader(&c, 1, WAIT_MS);
  assert_int_equal(query(&c, now_leader, 1, 's', FL_READ_LINEARIZABLE, &before), 0);
  assert_true(before == sum || before == sum + value);
  cluster_destroy(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_snapshots_compact_and_catch_up),
      cmocka_unit_test(test_refused_restore_keeps_follower_behind),
      cmocka_unit_test(test_damaged_snapshot_is_refused),
      cmocka_unit_test(test_query),
      cmocka_unit_test(test_propose_batch),
      cmocka_unit_test(test_deadlines),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
