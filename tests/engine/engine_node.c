/*
 * engine_node.c - engine-node: one node of a three-node cluster in its own
 * process, for engine_kill_test.sh, which kills nodes with SIGKILL while
 * they write and then checks that no acknowledged write was lost.
 *
 *   engine-node ports COUNT
 *       prints a base port with COUNT consecutive free loopback ports.
 *   engine-node serve ID DIR BASE GROUPS [SECONDS]
 *       opens node ID (1-3) on DIR/node-ID (recovering what a killed run
 *       left), creates groups 1..GROUPS with voters 1, 2, 3 (FL_E_EXISTS
 *       is fine: the WAL already holds them), then writes until SECONDS
 *       (default 120, a bound for a run nobody kills) have passed: to every
 *       group this node leads, keys unique to this run of this node, the
 *       value equal to the key. Once a write's callback reports success it
 *       prints "ack GROUP KEY ok" and flushes stdout, so a complete line on
 *       stdout means "acknowledged"; a line cut by the kill lacks " ok".
 *   engine-node verify DIR BASE GROUPS ACKFILE...
 *       opens the three nodes in this one process on the same directories
 *       and ports, waits until every group has a leader and every node
 *       applied the leader's commit index, then reads every acknowledged
 *       key: linearizably on the leader (a miss there is a lost write) and
 *       locally on every node (a miss there is a replica that diverged or
 *       never caught up). Exits 1 on any miss.
 *
 * Every node writes, and only to groups it leads (fl_propose must run on
 * the leader), so the writes go on whichever node is killed; every node
 * holds a replica of every group, so a kill and restart exercise WAL
 * recovery and catch-up on every group.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/free_ports.h"
#include "flotilla.h"

#define NODES 3u
#define SHARDS 2u
#define MAX_GROUPS 64u
/* Writes waiting for their callback: enough to keep the WAL batching, few
 * enough that the acknowledgement files stay small for the verification. */
#define WRITES_IN_FLIGHT 8
#define WAIT_MS 20000u
/* A read's callback is owed within this (a lost one is a failure). */
#define READ_BOUND_MS 5000u

static uint64_t now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static void pause_ms(uint32_t ms) {
  struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&pause, NULL);
}

static void die(const char *what, int rc) {
  fprintf(stderr, "engine-node: %s: %s (%d)\n", what, fl_strerror(rc), rc);
  exit(1);
}

/* ---- ports ----------------------------------------------------------------- */

static int find_ports(uint32_t count) {
  uint16_t base = fl_free_ports(count);
  if (base == 0) {
    fprintf(stderr, "engine-node: no %u free ports\n", count);
    return 1;
  }
  printf("%u\n", base);
  return 0;
}

/* ---- opening a node -------------------------------------------------------- */

typedef struct node_setup {
  fl_node_address nodes[NODES];
  char directory[4096];
} node_setup;

static fl_engine *open_node(node_setup *setup, uint64_t id, const char *directory, uint16_t base) {
  for (uint32_t i = 0; i < NODES; i++) {
    setup->nodes[i] = (fl_node_address){.node_id = i + 1, .port = (uint16_t)(base + i * SHARDS)};
    snprintf(setup->nodes[i].host, sizeof(setup->nodes[i].host), "127.0.0.1");
  }
  snprintf(setup->directory, sizeof(setup->directory), "%s/node-%" PRIu64, directory, id);
  fl_options options;
  fl_options_default(&options);
  options.cluster_id = 11;
  options.node_id = id;
  options.data_dir = setup->directory;
  options.nodes = setup->nodes;
  options.node_count = NODES;
  options.shard_count = SHARDS;
  options.tick_ms = 10;
  options.election_ticks = 30; /* 300 ms: three processes share two cores */
  options.heartbeat_ticks = 3;
  options.wal_segment_bytes = 4u << 20;
  options.log_level = 3;
  fl_engine *engine = NULL;
  int rc = fl_engine_open(&options, &engine);
  if (rc != 0) {
    die("opening the node", rc);
  }
  return engine;
}

static void create_groups(fl_engine *engine, uint32_t groups) {
  const uint64_t members[NODES] = {1, 2, 3};
  for (uint64_t group = 1; group <= groups; group++) {
    int rc = fl_group_create(engine, group, members, NODES);
    if (rc != 0 && rc != FL_E_EXISTS) {
      die("creating a group", rc);
    }
  }
}

/* ---- serving and writing ----------------------------------------------------- */

typedef struct pending_write {
  uint64_t group;
  char key[64];
} pending_write;

static sem_t slots; /* free places for writes in flight */

/* On a shard thread: short, and stdout's lock orders the lines. */
static void on_written(void *context, int status, const fl_result *result) {
  (void)result;
  pending_write *write = context;
  if (status == 0) {
    printf("ack %" PRIu64 " %s ok\n", write->group, write->key);
    fflush(stdout);
  }
  free(write);
  sem_post(&slots);
}

/* Queues up to `count` writes to `group`; false when the node is closing. */
static bool write_burst(fl_engine *engine, uint64_t group, const char *run, uint64_t *sequence,
                        uint32_t count) {
  for (uint32_t i = 0; i < count; i++) {
    sem_wait(&slots);
    pending_write *write = malloc(sizeof(*write));
    if (write == NULL) {
      die("allocating a write", FL_E_NOMEM);
    }
    write->group = group;
    snprintf(write->key, sizeof(write->key), "%s-%" PRIu64, run, (*sequence)++);
    uint32_t length = (uint32_t)strlen(write->key);
    int rc = fl_kv_put(engine, group, write->key, length, write->key, length, on_written, write);
    if (rc != 0) {
      free(write);
      sem_post(&slots);
      return rc != FL_E_CLOSED;
    }
  }
  return true;
}

static int serve(uint64_t id, const char *directory, uint16_t base, uint32_t groups,
                 uint32_t seconds) {
  node_setup setup;
  fl_engine *engine = open_node(&setup, id, directory, base);
  create_groups(engine, groups);
  sem_init(&slots, 0, WRITES_IN_FLIGHT);
  char run[48]; /* unique per run of this node: a restart never reuses a key */
  struct timespec wall;
  clock_gettime(CLOCK_REALTIME, &wall);
  snprintf(run, sizeof(run), "n%" PRIu64 "-%lld%09ld-%d", id, (long long)wall.tv_sec, wall.tv_nsec,
           (int)getpid());
  uint64_t sequence = 0;
  uint64_t deadline = now_ms() + (uint64_t)seconds * 1000u;
  bool running = true;
  while (running && now_ms() < deadline) {
    bool led = false;
    for (uint64_t group = 1; group <= groups && running; group++) {
      fl_group_status status;
      if (fl_group_status_get(engine, group, &status) == 0 && status.role == FL_LEADER) {
        led = true;
        running = write_burst(engine, group, run, &sequence, 4);
      }
    }
    if (!led) {
      pause_ms(10); /* leads nothing now: look again soon */
    }
  }
  fl_engine_close(engine);
  return 0;
}

/* ---- verifying ------------------------------------------------------------------ */

/* On the heap: a callback that does not come in time may still come
 * later, so a timed-out call is never freed. */
typedef struct read_call {
  sem_t done;
  int status;
  char value[128];
} read_call;

static void on_read(void *context, int status, const uint8_t *value, uint32_t length) {
  read_call *call = context;
  call->status = status;
  uint32_t kept = length < sizeof(call->value) - 1 ? length : (uint32_t)sizeof(call->value) - 1;
  if (value != NULL) {
    memcpy(call->value, value, kept);
  }
  call->value[value != NULL ? kept : 0] = '\0';
  sem_post(&call->done);
}

/* The callback's status, FL_E_TIMEOUT when it did not come in time. */
static int wait_read(read_call *call) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += READ_BOUND_MS / 1000u;
  int rc;
  do {
    rc = sem_timedwait(&call->done, &deadline);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? call->status : FL_E_TIMEOUT;
}

/* 0 when `key` reads back as itself. */
static int read_key(fl_engine *engine, uint64_t group, const char *key, fl_read_mode mode) {
  read_call *call = calloc(1, sizeof(*call));
  if (call == NULL) {
    die("allocating a read", FL_E_NOMEM);
  }
  sem_init(&call->done, 0, 0);
  int rc = fl_kv_get(engine, group, key, (uint32_t)strlen(key), mode, on_read, call);
  if (rc == 0) {
    rc = wait_read(call);
    if (rc == FL_E_TIMEOUT) {
      fprintf(stderr, "engine-node: a %s read of group %" PRIu64 " key %s got no answer in %u ms\n",
              mode == FL_READ_LOCAL ? "local" : "linearizable", group, key, READ_BOUND_MS);
      return rc; /* leaked: the callback may still come */
    }
  }
  if (rc == 0 && strcmp(call->value, key) != 0) {
    rc = FL_E_CORRUPT;
  }
  sem_destroy(&call->done);
  free(call);
  return rc;
}

/* The leader all three nodes name, once it says so itself. */
static uint64_t agreed_leader(fl_engine **engines, uint64_t group) {
  uint64_t leader = 0;
  for (uint32_t i = 0; i < NODES; i++) {
    fl_group_status status;
    if (fl_group_status_get(engines[i], group, &status) != 0 || status.leader == 0 ||
        status.leader > NODES || (leader != 0 && status.leader != leader)) {
      return 0;
    }
    leader = status.leader;
  }
  fl_group_status status;
  return fl_group_status_get(engines[leader - 1], group, &status) == 0 && status.role == FL_LEADER
             ? leader
             : 0;
}

static bool all_applied(fl_engine **engines, uint64_t group, uint64_t index) {
  for (uint32_t i = 0; i < NODES; i++) {
    fl_group_status status;
    if (fl_group_status_get(engines[i], group, &status) != 0 || status.applied < index) {
      return false;
    }
  }
  return true;
}

static void print_group(fl_engine **engines, uint64_t group) {
  for (uint32_t i = 0; i < NODES; i++) {
    fl_group_status s = {0};
    int rc = fl_group_status_get(engines[i], group, &s);
    fprintf(stderr,
            "  group %" PRIu64 " node %u: status %d role %d term %" PRIu64 " leader %" PRIu64
            " commit %" PRIu64 " applied %" PRIu64 " last %" PRIu64 "\n",
            group, i + 1, rc, (int)s.role, s.term, s.leader, s.commit, s.applied, s.last_index);
  }
}

/* Waits until the three nodes agree on a leader of `group`; 0 when the
 * deadline passes first. */
static uint64_t wait_leader(fl_engine **engines, uint64_t group, uint64_t deadline) {
  uint64_t leader = agreed_leader(engines, group);
  while (leader == 0 && now_ms() < deadline) {
    pause_ms(10);
    leader = agreed_leader(engines, group);
  }
  return leader;
}

/* Waits until every node applied what `leader` has committed. */
static bool wait_applied(fl_engine **engines, uint64_t group, uint64_t leader, uint64_t deadline) {
  fl_group_status status;
  if (fl_group_status_get(engines[leader - 1], group, &status) != 0) {
    return false;
  }
  while (!all_applied(engines, group, status.commit)) {
    if (now_ms() >= deadline) {
      return false;
    }
    pause_ms(10);
  }
  return true;
}

typedef struct tally {
  uint64_t checked;
  uint64_t lost;       /* not on the leader */
  uint64_t diverged;   /* on the leader, not on some node */
  uint64_t unverified; /* in a group without a leader */
  uint64_t unanswered; /* reads whose callback never came */
} tally;

/* Reads without an answer after which the check stops: each costs
 * READ_BOUND_MS, and one is already a failure. */
#define MAX_UNANSWERED 3u

/* A linearizable read on the leader; a leader change meanwhile (the read
 * fails without an answer about the key) sends it to the new leader. */
static int read_on_leader(fl_engine **engines, uint64_t *leaders, uint64_t group, const char *key) {
  int rc = FL_E_UNAVAILABLE;
  for (uint32_t attempt = 0; attempt < 5; attempt++) {
    rc = read_key(engines[leaders[group] - 1], group, key, FL_READ_LINEARIZABLE);
    if (rc == 0 || rc == FL_E_NOT_FOUND || rc == FL_E_CORRUPT || rc == FL_E_TIMEOUT) {
      return rc;
    }
    uint64_t leader = wait_leader(engines, group, now_ms() + WAIT_MS);
    leaders[group] = leader != 0 ? leader : leaders[group];
  }
  return rc;
}

static void check_ack(fl_engine **engines, uint64_t *leaders, uint64_t group, const char *key,
                      tally *t) {
  t->checked++;
  if (leaders[group] == 0) {
    t->unverified++;
    return;
  }
  int rc = read_on_leader(engines, leaders, group, key);
  t->unanswered += rc == FL_E_TIMEOUT ? 1 : 0;
  if (rc != 0) {
    t->lost++;
    if (t->lost <= 10) {
      fprintf(stderr, "engine-node: LOST group %" PRIu64 " key %s: %s\n", group, key,
              fl_strerror(rc));
    }
    return;
  }
  for (uint32_t i = 0; i < NODES; i++) {
    rc = read_key(engines[i], group, key, FL_READ_LOCAL);
    t->unanswered += rc == FL_E_TIMEOUT ? 1 : 0;
    if (rc != 0) {
      t->diverged++;
      if (t->diverged <= 10) {
        fprintf(stderr, "engine-node: node %u lacks group %" PRIu64 " key %s: %s\n", i + 1, group,
                key, fl_strerror(rc));
      }
    }
  }
}

static int check_file(fl_engine **engines, uint64_t *leaders, uint32_t groups, const char *path,
                      tally *t) {
  FILE *file = fopen(path, "r");
  if (file == NULL) {
    fprintf(stderr, "engine-node: cannot open %s: %s\n", path, strerror(errno));
    return 1;
  }
  char line[256];
  while (t->unanswered < MAX_UNANSWERED && fgets(line, sizeof(line), file) != NULL) {
    uint64_t group = 0;
    char key[128];
    char end[8];
    if (sscanf(line, "ack %" SCNu64 " %127s %7s", &group, key, end) != 3 ||
        strcmp(end, "ok") != 0) {
      continue; /* a line cut short by the kill: never a complete acknowledgement */
    }
    if (group < 1 || group > groups) {
      fprintf(stderr, "engine-node: %s: bad group in: %s", path, line);
      fclose(file);
      return 1;
    }
    check_ack(engines, leaders, group, key, t);
  }
  fclose(file);
  return 0;
}

static int verify(const char *directory, uint16_t base, uint32_t groups, char **files,
                  int file_count) {
  static node_setup setups[NODES];
  fl_engine *engines[NODES];
  for (uint32_t i = 0; i < NODES; i++) {
    engines[i] = open_node(&setups[i], i + 1, directory, base);
  }
  uint64_t leaders[MAX_GROUPS + 1] = {0};
  int failed = 0;
  uint64_t deadline = now_ms() + WAIT_MS; /* for all groups together */
  for (uint64_t group = 1; group <= groups; group++) {
    leaders[group] = wait_leader(engines, group, deadline);
    if (leaders[group] == 0 || !wait_applied(engines, group, leaders[group], deadline)) {
      /* still checked below: a lagging replica shows as missing keys */
      fprintf(stderr, "engine-node: group %" PRIu64 " has %s within %u ms\n", group,
              leaders[group] == 0 ? "no leader" : "a node that did not catch up", WAIT_MS);
      print_group(engines, group);
      failed = 1;
    }
  }
  tally t = {0};
  for (int i = 0; i < file_count; i++) {
    failed |= check_file(engines, leaders, groups, files[i], &t);
  }
  for (uint32_t i = 0; i < NODES; i++) {
    fl_engine_close(engines[i]);
  }
  if (failed != 0 || t.lost != 0 || t.diverged != 0 || t.unverified != 0 || t.unanswered != 0 ||
      t.checked == 0) {
    fprintf(stderr,
            "engine-node: verification FAILED: %" PRIu64 " acknowledged writes checked: %" PRIu64
            " lost, %" PRIu64 " missing on some node, %" PRIu64
            " in groups without a leader, %" PRIu64 " reads unanswered%s\n",
            t.checked, t.lost, t.diverged, t.unverified, t.unanswered,
            t.unanswered >= MAX_UNANSWERED ? " (check stopped)" : "");
    return 1;
  }
  printf("%" PRIu64 " acknowledged writes found on the leader and on every node\n", t.checked);
  return 0;
}

/* ---- main -------------------------------------------------------------------- */

static uint32_t number(const char *text, uint32_t low, uint32_t high, const char *what) {
  char *end = NULL;
  unsigned long value = strtoul(text, &end, 10);
  if (end == text || *end != '\0' || value < low || value > high) {
    fprintf(stderr, "engine-node: bad %s: %s\n", what, text);
    exit(2);
  }
  return (uint32_t)value;
}

static int usage(void) {
  fprintf(stderr, "usage: engine-node ports COUNT\n"
                  "       engine-node serve ID DIR BASE GROUPS [SECONDS]\n"
                  "       engine-node verify DIR BASE GROUPS ACKFILE...\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "ports") == 0) {
    return find_ports(number(argv[2], 1, 1000, "count"));
  }
  if ((argc == 6 || argc == 7) && strcmp(argv[1], "serve") == 0) {
    uint32_t seconds = argc == 7 ? number(argv[6], 1, 3600, "seconds") : 120;
    return serve(number(argv[2], 1, NODES, "node id"), argv[3],
                 (uint16_t)number(argv[4], 1, 65535 - NODES * SHARDS, "base port"),
                 number(argv[5], 1, MAX_GROUPS, "groups"), seconds);
  }
  if (argc >= 6 && strcmp(argv[1], "verify") == 0) {
    return verify(argv[2], (uint16_t)number(argv[3], 1, 65535 - NODES * SHARDS, "base port"),
                  number(argv[4], 1, MAX_GROUPS, "groups"), argv + 5, argc - 5);
  }
  return usage();
}
