/*
 * cluster.c - in-process clusters of engines for tests (cluster.h).
 */
#define _GNU_SOURCE
#include "tests/engine/cluster.h"

#include "common/free_ports.h"

#include "engine/engine_testing.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t cluster_now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

void cluster_pause_ms(uint32_t ms) {
  struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&pause, NULL);
}

static fl_options node_options(cluster *c, uint64_t node, char *directory, size_t size) {
  snprintf(directory, size, "%s/node-%llu", c->directory, (unsigned long long)node);
  fl_options options;
  fl_options_default(&options);
  options.cluster_id = 7;
  options.node_id = node;
  options.data_dir = directory;
  options.nodes = c->nodes;
  options.node_count = c->node_count;
  options.shard_count = c->shard_count;
  options.tick_ms = 10;
  options.election_ticks = c->election_ticks != 0 ? c->election_ticks : 20;
  options.heartbeat_ticks = c->heartbeat_ticks != 0 ? c->heartbeat_ticks : 2;
  options.wal_segment_bytes = c->wal_segment_bytes != 0 ? c->wal_segment_bytes : 4u << 20;
  if (c->max_command_bytes != 0) {
    options.max_command_bytes = c->max_command_bytes;
  }
  if (c->snapshot_entries != 0) {
    options.snapshot_entries = c->snapshot_entries;
  }
  options.request_timeout_ms = c->request_timeout_ms;
  options.machine = c->machines[node - 1];
  if (c->log != NULL) {
    options.log = c->log;
    options.log_context = c->log_context;
  }
  options.on_leader = c->on_leader;
  options.on_leader_context = c->on_leader_contexts[node - 1];
  return options;
}

int cluster_start_node(cluster *c, uint64_t node) {
  char directory[256];
  fl_options options = node_options(c, node, directory, sizeof(directory));
  return fl_engine_open(&options, &c->engines[node - 1]);
}

void cluster_stop_node(cluster *c, uint64_t node) {
  fl_engine_close(c->engines[node - 1]);
  c->engines[node - 1] = NULL;
}

int cluster_prepare(cluster *c, uint32_t node_count, uint32_t shard_count) {
  memset(c, 0, sizeof(*c));
  pthread_rwlockattr_t attributes;
  pthread_rwlockattr_init(&attributes);
  /* a stop must not starve behind a client thread that keeps reading */
  pthread_rwlockattr_setkind_np(&attributes, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&c->lock, &attributes);
  pthread_rwlockattr_destroy(&attributes);
  c->node_count = node_count;
  c->shard_count = shard_count;
  snprintf(c->directory, sizeof(c->directory), "/tmp/flotilla-engine-XXXXXX");
  if (mkdtemp(c->directory) == NULL) {
    return FL_E_IO;
  }
  uint16_t base = fl_free_ports(node_count * shard_count);
  if (base == 0) {
    return FL_E_IO;
  }
  for (uint32_t i = 0; i < node_count; i++) {
    c->nodes[i] = (fl_node_address){.node_id = i + 1, .port = (uint16_t)(base + i * shard_count)};
    snprintf(c->nodes[i].host, sizeof(c->nodes[i].host), "127.0.0.1");
  }
  return 0;
}

int cluster_start_all(cluster *c) {
  for (uint32_t i = 0; i < c->node_count; i++) {
    int rc = cluster_start_node(c, i + 1);
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

int cluster_start(cluster *c, uint32_t node_count, uint32_t shard_count) {
  int rc = cluster_prepare(c, node_count, shard_count);
  return rc == 0 ? cluster_start_all(c) : rc;
}

void cluster_destroy(cluster *c) {
  for (uint32_t i = 0; i < c->node_count; i++) {
    if (c->engines[i] != NULL) {
      cluster_stop_node(c, i + 1);
    }
  }
  pthread_rwlock_destroy(&c->lock);
  char command[256];
  snprintf(command, sizeof(command), "rm -rf '%s'", c->directory);
  if (system(command) != 0) {
    fprintf(stderr, "cluster: could not remove %s\n", c->directory);
  }
}

int cluster_create_group(cluster *c, uint64_t group) {
  uint64_t members[CLUSTER_MAX_NODES];
  for (uint32_t i = 0; i < c->node_count; i++) {
    members[i] = i + 1;
  }
  for (uint32_t i = 0; i < c->node_count; i++) {
    if (c->engines[i] != NULL) {
      int rc = fl_group_create(c->engines[i], group, members, c->node_count);
      if (rc != 0) {
        return rc;
      }
    }
  }
  return 0;
}

uint64_t cluster_wait_leader(cluster *c, uint64_t group, uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  while (cluster_now_ms() < deadline) {
    uint64_t leader = 0;
    bool agreed = true;
    for (uint32_t i = 0; i < c->node_count && agreed; i++) {
      fl_group_status status;
      if (c->engines[i] == NULL) {
        continue;
      }
      if (fl_group_status_get(c->engines[i], group, &status) != 0 || status.leader == 0 ||
          (leader != 0 && status.leader != leader)) {
        agreed = false;
      }
      leader = status.leader;
    }
    if (agreed && leader != 0 && c->engines[leader - 1] != NULL) {
      fl_group_status status;
      if (fl_group_status_get(c->engines[leader - 1], group, &status) == 0 &&
          status.role == FL_LEADER) {
        return leader;
      }
    }
    cluster_pause_ms(5);
  }
  return 0;
}

bool cluster_wait_applied(cluster *c, uint64_t group, uint64_t index, uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  while (cluster_now_ms() < deadline) {
    bool all = true;
    for (uint32_t i = 0; i < c->node_count && all; i++) {
      fl_group_status status;
      if (c->engines[i] != NULL) {
        all = fl_group_status_get(c->engines[i], group, &status) == 0 && status.applied >= index;
      }
    }
    if (all) {
      return true;
    }
    cluster_pause_ms(5);
  }
  return false;
}

typedef struct waiter {
  sem_t done;
  int status;
  char value[256];
  uint32_t length;
} waiter;

static void on_proposed(void *context, int status, const fl_result *result) {
  (void)result;
  waiter *w = context;
  w->status = status;
  sem_post(&w->done);
}

static void on_read(void *context, int status, const uint8_t *value, uint32_t length) {
  waiter *w = context;
  w->status = status;
  w->length = length < sizeof(w->value) - 1 ? length : (uint32_t)sizeof(w->value) - 1;
  if (value != NULL) {
    memcpy(w->value, value, w->length);
  }
  w->value[w->length] = '\0';
  sem_post(&w->done);
}

int cluster_put(cluster *c, uint64_t node, uint64_t group, const char *key, const char *value,
                uint64_t *index) {
  (void)index;
  waiter w = {0};
  sem_init(&w.done, 0, 0);
  int rc = fl_kv_put(c->engines[node - 1], group, key, (uint32_t)strlen(key), value,
                     (uint32_t)strlen(value), on_proposed, &w);
  if (rc == 0) {
    sem_wait(&w.done);
    rc = w.status;
  }
  sem_destroy(&w.done);
  return rc;
}

int cluster_get(cluster *c, uint64_t node, uint64_t group, const char *key, fl_read_mode mode,
                char *value, uint32_t capacity) {
  waiter w = {0};
  sem_init(&w.done, 0, 0);
  int rc = fl_kv_get(c->engines[node - 1], group, key, (uint32_t)strlen(key), mode, on_read, &w);
  if (rc == 0) {
    sem_wait(&w.done);
    rc = w.status;
    snprintf(value, capacity, "%s", w.value);
  }
  sem_destroy(&w.done);
  return rc;
}

int cluster_put_retry(cluster *c, uint64_t group, const char *key, const char *value,
                      uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  int rc = FL_E_TIMEOUT;
  while (cluster_now_ms() < deadline) {
    uint64_t leader = cluster_wait_leader(c, group, (uint32_t)(deadline - cluster_now_ms()));
    if (leader == 0) {
      return FL_E_TIMEOUT;
    }
    rc = cluster_put(c, leader, group, key, value, NULL);
    if (rc == 0) {
      return 0;
    }
    cluster_pause_ms(10);
  }
  return rc;
}

/* ---- faults, and clients running beside them ------------------------------- */

int cluster_isolate(cluster *c, uint64_t node, bool cut) {
  for (uint64_t other = 1; other <= c->node_count; other++) {
    if (other == node) {
      continue;
    }
    if (c->engines[node - 1] != NULL) {
      int rc = fl_engine_set_link_fault(c->engines[node - 1], other, cut);
      if (rc != 0) {
        return rc;
      }
    }
    if (c->engines[other - 1] != NULL) {
      int rc = fl_engine_set_link_fault(c->engines[other - 1], node, cut);
      if (rc != 0) {
        return rc;
      }
    }
  }
  return 0;
}

static bool node_in(uint32_t among, uint64_t node) {
  return node >= 1 && node <= 32 && ((among >> (node - 1)) & 1u) != 0;
}

/* The leader every running node of `among` names, if it is one of them and
 * says so itself; 0 otherwise. */
static uint64_t agreed_leader(cluster *c, uint64_t group, uint32_t among) {
  uint64_t leader = 0;
  for (uint64_t node = 1; node <= c->node_count; node++) {
    fl_group_status status;
    if (c->engines[node - 1] == NULL || !node_in(among, node)) {
      continue;
    }
    if (fl_group_status_get(c->engines[node - 1], group, &status) != 0 || status.leader == 0 ||
        (leader != 0 && status.leader != leader)) {
      return 0;
    }
    leader = status.leader;
  }
  if (leader == 0 || !node_in(among, leader) || leader > c->node_count ||
      c->engines[leader - 1] == NULL) {
    return 0;
  }
  fl_group_status status;
  bool leads =
      fl_group_status_get(c->engines[leader - 1], group, &status) == 0 && status.role == FL_LEADER;
  return leads ? leader : 0;
}

uint64_t cluster_wait_leader_among(cluster *c, uint64_t group, uint32_t among,
                                   uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  while (cluster_now_ms() < deadline) {
    uint64_t leader = agreed_leader(c, group, among);
    if (leader != 0) {
      return leader;
    }
    cluster_pause_ms(5);
  }
  return 0;
}

static uint32_t left_until(uint64_t deadline) {
  uint64_t now = cluster_now_ms();
  return now < deadline ? (uint32_t)(deadline - now) : 1;
}

uint64_t cluster_wait_caught_up(cluster *c, uint64_t group, uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  for (;;) {
    uint64_t leader = cluster_wait_leader(c, group, left_until(deadline));
    fl_group_status status;
    if (leader == 0 || fl_group_status_get(c->engines[leader - 1], group, &status) != 0) {
      return 0;
    }
    if (status.role == FL_LEADER && status.commit == status.last_index) {
      return cluster_wait_applied(c, group, status.commit, left_until(deadline)) ? leader : 0;
    }
    if (cluster_now_ms() >= deadline) {
      return 0;
    }
    cluster_pause_ms(5); /* polling the leader's commit, up to the deadline */
  }
}

static bool same_voters(const fl_group_status *status, const uint64_t *voters, uint32_t count) {
  if (status->voter_count != count || status->learner_count != 0) {
    return false;
  }
  for (uint32_t i = 0; i < count; i++) {
    bool found = false;
    for (uint32_t j = 0; j < status->voter_count && !found; j++) {
      found = status->voters[j] == voters[i];
    }
    if (!found) {
      return false;
    }
  }
  return true;
}

bool cluster_wait_voters(cluster *c, uint64_t group, uint32_t among, const uint64_t *voters,
                         uint32_t count, uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  while (cluster_now_ms() < deadline) {
    bool all = true;
    for (uint32_t i = 0; i < c->node_count && all; i++) {
      fl_group_status status;
      if (c->engines[i] != NULL && node_in(among, i + 1)) {
        all = fl_group_status_get(c->engines[i], group, &status) == 0 &&
              same_voters(&status, voters, count);
      }
    }
    if (all) {
      return true;
    }
    cluster_pause_ms(5);
  }
  return false;
}

/* A call whose callback the caller waits for with a bound. On the heap:
 * when the bound passes the callback may still come, so it is never freed
 * then (a test failure already). */
typedef struct bounded_call {
  sem_t done;
  int status;
} bounded_call;

static void on_bounded_call(void *context, int status, const fl_result *result) {
  (void)result;
  bounded_call *call = context;
  call->status = status;
  sem_post(&call->done);
}

static bounded_call *bounded_call_new(void) {
  bounded_call *call = calloc(1, sizeof(*call));
  if (call != NULL) {
    sem_init(&call->done, 0, 0);
  }
  return call;
}

static void bounded_call_free(bounded_call *call) {
  sem_destroy(&call->done);
  free(call);
}

/* The callback's status, or FL_E_TIMEOUT (the call leaked) when it does
 * not come within timeout_ms. */
static int bounded_call_wait_ms(bounded_call *call, uint32_t timeout_ms) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeout_ms / 1000u;
  deadline.tv_nsec += (long)(timeout_ms % 1000u) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  int rc;
  do {
    rc = sem_timedwait(&call->done, &deadline);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    return FL_E_TIMEOUT;
  }
  int status = call->status;
  bounded_call_free(call);
  return status;
}

/* As above with CLUSTER_CALLBACK_BOUND_MS; a timeout is counted in
 * lost_callbacks. */
static int bounded_call_wait(cluster *c, bounded_call *call) {
  int rc = bounded_call_wait_ms(call, CLUSTER_CALLBACK_BOUND_MS);
  if (rc == FL_E_TIMEOUT) {
    atomic_fetch_add(&c->lost_callbacks, 1);
    fprintf(stderr, "cluster: a callback did not come within %u ms\n", CLUSTER_CALLBACK_BOUND_MS);
  }
  return rc;
}

int cluster_put_within(cluster *c, uint64_t node, uint64_t group, const char *key,
                       const char *value, uint32_t timeout_ms) {
  bounded_call *call = bounded_call_new();
  if (call == NULL) {
    return FL_E_NOMEM;
  }
  int rc = fl_kv_put(c->engines[node - 1], group, key, (uint32_t)strlen(key), value,
                     (uint32_t)strlen(value), on_bounded_call, call);
  if (rc != 0) {
    bounded_call_free(call);
    return rc;
  }
  return bounded_call_wait_ms(call, timeout_ms);
}

int cluster_change(cluster *c, uint64_t node, uint64_t group, fl_change_type type,
                   uint64_t target) {
  bounded_call *call = bounded_call_new();
  if (call == NULL) {
    return FL_E_NOMEM;
  }
  int rc = fl_group_change(c->engines[node - 1], group, type, target, on_bounded_call, call);
  if (rc != 0) {
    bounded_call_free(call);
    return rc;
  }
  return bounded_call_wait(c, call);
}

static void on_pending_proposed(void *context, int status, const fl_result *result) {
  (void)result;
  cluster_pending *pending = context;
  atomic_store(&pending->status, status);
  atomic_store(&pending->done, true);
}

static void on_pending_read(void *context, int status, const uint8_t *value, uint32_t length) {
  cluster_pending *pending = context;
  uint32_t kept = length < sizeof(pending->value) - 1 ? length : sizeof(pending->value) - 1;
  if (value != NULL) {
    memcpy(pending->value, value, kept);
  }
  pending->value[value != NULL ? kept : 0] = '\0';
  atomic_store(&pending->status, status);
  atomic_store(&pending->done, true);
}

int cluster_put_async(cluster *c, uint64_t node, uint64_t group, const char *key, const char *value,
                      cluster_pending *pending) {
  memset(pending, 0, sizeof(*pending));
  return fl_kv_put(c->engines[node - 1], group, key, (uint32_t)strlen(key), value,
                   (uint32_t)strlen(value), on_pending_proposed, pending);
}

int cluster_get_async(cluster *c, uint64_t node, uint64_t group, const char *key, fl_read_mode mode,
                      cluster_pending *pending) {
  memset(pending, 0, sizeof(*pending));
  return fl_kv_get(c->engines[node - 1], group, key, (uint32_t)strlen(key), mode, on_pending_read,
                   pending);
}

bool cluster_wait_pending(cluster_pending *pending, uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  while (!atomic_load(&pending->done) && cluster_now_ms() < deadline) {
    cluster_pause_ms(5);
  }
  return atomic_load(&pending->done);
}

void cluster_stop_node_shared(cluster *c, uint64_t node) {
  pthread_rwlock_wrlock(&c->lock);
  cluster_stop_node(c, node);
  pthread_rwlock_unlock(&c->lock);
}

int cluster_start_node_shared(cluster *c, uint64_t node) {
  pthread_rwlock_wrlock(&c->lock);
  int rc = cluster_start_node(c, node);
  pthread_rwlock_unlock(&c->lock);
  return rc;
}

/* Under the lock (for reading): the running node leading in the highest
 * term. A partitioned or removed replica may still believe it leads in
 * an older term; the highest term is the one that can commit. */
static uint64_t find_leader_locked(cluster *c, uint64_t group) {
  uint64_t leader = 0;
  uint64_t term = 0;
  for (uint64_t node = 1; node <= c->node_count; node++) {
    fl_group_status status;
    if (c->engines[node - 1] != NULL &&
        fl_group_status_get(c->engines[node - 1], group, &status) == 0 &&
        status.role == FL_LEADER && status.term > term) {
      leader = node;
      term = status.term;
    }
  }
  return leader;
}

uint64_t cluster_find_leader_shared(cluster *c, uint64_t group) {
  pthread_rwlock_rdlock(&c->lock);
  uint64_t leader = find_leader_locked(c, group);
  pthread_rwlock_unlock(&c->lock);
  return leader;
}

/* One attempt: submitted under the lock, waited for outside it, so that a
 * stop can close the engine meanwhile (the close answers FL_E_CLOSED). */
static int put_on_leader_shared(cluster *c, uint64_t group, const char *key, const char *value) {
  bounded_call *call = bounded_call_new();
  if (call == NULL) {
    return FL_E_NOMEM;
  }
  pthread_rwlock_rdlock(&c->lock);
  uint64_t leader = find_leader_locked(c, group);
  int rc = leader == 0 ? FL_E_UNAVAILABLE
                       : fl_kv_put(c->engines[leader - 1], group, key, (uint32_t)strlen(key), value,
                                   (uint32_t)strlen(value), on_bounded_call, call);
  pthread_rwlock_unlock(&c->lock);
  if (rc != 0) {
    bounded_call_free(call);
    return rc;
  }
  return bounded_call_wait(c, call);
}

int cluster_put_shared(cluster *c, uint64_t group, const char *key, const char *value,
                       uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  int rc = FL_E_TIMEOUT;
  while (cluster_now_ms() < deadline) {
    rc = put_on_leader_shared(c, group, key, value);
    if (rc == 0 || rc == FL_E_TIMEOUT) {
      return rc; /* a lost callback is not retried: the test must see it */
    }
    cluster_pause_ms(5);
  }
  return rc;
}
