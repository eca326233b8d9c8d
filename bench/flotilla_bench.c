/*
 * flotilla_bench.c - flotilla-bench, the main job (`make demo`): a cluster
 * of engines on loopback (three in this process by default), G groups
 * replicated on every node, fsync on, driven by a load of KV writes (and
 * optionally reads), ending with a table of throughput, latency and costs,
 * each with its ratio to the target.
 *
 *   flotilla-bench [--nodes N] [--groups N] [--shards N] [--payload BYTES]
 *                  [--concurrency N] [--seconds N] [--read-ratio R]
 *                  [--half-load-seconds N] [--pace-us N] [--dir PATH] [--processes]
 *                  [--json] [--plot FILE.png]
 *
 * Two phases: a closed loop (every group keeps `concurrency` commands in
 * flight: each completion issues the next) gives the peak; then an open
 * loop at half that rate, paced every `pace_us`, gives the latency at
 * half load (the target is p99 <= 5 ms there). Latency is measured from
 * the moment a command is issued (open loop: from when it was due, each
 * command with its own due time) to its callback, which runs after commit
 * (a majority fsynced) and apply.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jemalloc/jemalloc.h>

#include "common/free_ports.h"
#include "flotilla.h"

#define TARGET_WRITES_PER_SECOND 1e6
#define TARGET_P99_HALF_LOAD_MS 5.0
#define TARGET_IDLE_CPU_PERCENT 5.0
#define TARGET_IDLE_BYTES_PER_GROUP 1024.0
#define IDLE_MEASURE_SECONDS 5.0
#define MAX_NODES 5
#define MAX_SAMPLES_SECONDS 3600

/* ---- latency histograms: log-linear, 1 us resolution below 128 us, then
 * 64 sub-buckets per power of two (under 1.6% error) ---- */

#define HISTOGRAM_BUCKETS (128 + 40 * 64)

typedef struct histogram {
  _Atomic uint64_t counts[HISTOGRAM_BUCKETS];
  _Atomic uint64_t max_us;
} histogram;

static uint32_t bucket_of(uint64_t us) {
  if (us < 128) {
    return (uint32_t)us;
  }
  uint32_t msb = 63u - (uint32_t)__builtin_clzll(us);
  uint32_t shift = msb - 6;
  uint32_t index = 128 + (msb - 7) * 64 + (uint32_t)((us >> shift) - 64);
  return index < HISTOGRAM_BUCKETS ? index : HISTOGRAM_BUCKETS - 1;
}

static double value_of(uint32_t bucket) {
  if (bucket < 128) {
    return bucket;
  }
  uint32_t msb = (bucket - 128) / 64 + 7;
  uint32_t sub = (bucket - 128) % 64 + 64;
  return ldexp(sub + 0.5, (int)msb - 6);
}

static void histogram_record(histogram *h, uint64_t us) {
  atomic_fetch_add_explicit(&h->counts[bucket_of(us)], 1, memory_order_relaxed);
  uint64_t max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
  while (us > max && !atomic_compare_exchange_weak(&h->max_us, &max, us)) {
  }
}

static double histogram_percentile(histogram *h, double fraction) {
  uint64_t total = 0;
  for (uint32_t i = 0; i < HISTOGRAM_BUCKETS; i++) {
    total += atomic_load(&h->counts[i]);
  }
  uint64_t rank = (uint64_t)ceil(fraction * (double)total);
  uint64_t seen = 0;
  for (uint32_t i = 0; i < HISTOGRAM_BUCKETS; i++) {
    seen += atomic_load(&h->counts[i]);
    if (seen >= rank && seen > 0) {
      return value_of(i) / 1000.0;
    }
  }
  return 0;
}

/* ---- settings ---- */

typedef struct settings {
  uint32_t nodes;
  uint32_t groups;
  uint32_t shards;
  uint32_t payload;
  uint32_t concurrency;
  double seconds;
  double half_load_seconds;
  double read_ratio;
  double half_load_rate; /* 0: half the measured peak */
  uint32_t idle_groups;  /* > 0: the idle-groups measurement instead of the load */
  uint32_t pace_us;      /* the open loop's generator wakes this often */
  const char *dir;
  const char *plot;
  bool json;
  bool processes; /* one engine per child process instead of all in this one */
} settings;

static void usage(FILE *out) {
  fprintf(out,
          "usage: flotilla-bench [options]\n"
          "  --nodes N              replicas, each an engine in this process (default 3)\n"
          "  --groups N             Raft groups, each on every node (default 64)\n"
          "  --shards N             shards (threads) per engine (default 1)\n"
          "  --payload BYTES        value size of each write (default 16)\n"
          "  --concurrency N        commands in flight per group, closed loop (default 64)\n"
          "  --seconds N            closed-loop phase (default 10)\n"
          "  --half-load-seconds N  open-loop phase at half the peak (default 5; 0 skips)\n"
          "  --half-load-rate R     writes/s of the open-loop phase instead of half the peak\n"
          "  --pace-us N            the open loop issues what is due every N us (default 1000)\n"
          "  --idle-groups N        instead of the load: N idle groups on every node, their\n"
          "                         memory per group and idle CPU per node\n"
          "  --read-ratio R         fraction of linearizable reads, 0..1 (default 0)\n"
          "  --dir PATH             data directory (default: fresh under /var/tmp)\n"
          "  --processes            every node in its own process (default: all in this one)\n"
          "  --json                 one JSON object instead of the table\n"
          "  --plot FILE.png        throughput over time and latency (needs gnuplot)\n");
}

static bool parse_number(const char *text, double low, double high, double *out) {
  char *end = NULL;
  errno = 0;
  double value = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || value < low || value > high) {
    return false;
  }
  *out = value;
  return true;
}

static int parse_option(settings *s, const char *name, const char *value) {
  double number = 0;
  struct {
    const char *name;
    double low, high;
    void *target;
    bool integer;
  } table[] = {
      {"--nodes", 1, MAX_NODES, &s->nodes, true},
      {"--groups", 1, 1e6, &s->groups, true},
      {"--shards", 1, 64, &s->shards, true},
      {"--payload", 0, 1 << 20, &s->payload, true},
      {"--concurrency", 1, 4096, &s->concurrency, true},
      {"--seconds", 0.1, MAX_SAMPLES_SECONDS, &s->seconds, false},
      {"--half-load-seconds", 0, MAX_SAMPLES_SECONDS, &s->half_load_seconds, false},
      {"--read-ratio", 0, 1, &s->read_ratio, false},
      {"--half-load-rate", 0, 1e8, &s->half_load_rate, false},
      {"--idle-groups", 0, 1e7, &s->idle_groups, true},
      {"--pace-us", 10, 100000, &s->pace_us, true},
  };
  for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
    if (strcmp(name, table[i].name) != 0) {
      continue;
    }
    if (value == NULL || !parse_number(value, table[i].low, table[i].high, &number)) {
      fprintf(stderr, "flotilla-bench: %s needs a number in [%g, %g]\n", name, table[i].low,
              table[i].high);
      return -1;
    }
    if (table[i].integer) {
      *(uint32_t *)table[i].target = (uint32_t)number;
    } else {
      *(double *)table[i].target = number;
    }
    return 2;
  }
  if (strcmp(name, "--dir") == 0 || strcmp(name, "--plot") == 0) {
    if (value == NULL) {
      fprintf(stderr, "flotilla-bench: %s needs a path\n", name);
      return -1;
    }
    *(strcmp(name, "--dir") == 0 ? &s->dir : &s->plot) = value;
    return 2;
  }
  if (strcmp(name, "--json") == 0 || strcmp(name, "--processes") == 0) {
    *(strcmp(name, "--json") == 0 ? &s->json : &s->processes) = true;
    return 1;
  }
  fprintf(stderr, "flotilla-bench: unknown option %s\n", name);
  return -1;
}

static int parse_settings(int argc, char **argv, settings *s) {
  *s = (settings){.nodes = 3,
                  .groups = 64,
                  .shards = 1,
                  .payload = 16,
                  .concurrency = 64,
                  .seconds = 10,
                  .half_load_seconds = 5,
                  .pace_us = 1000};
  for (int i = 1; i < argc;) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      exit(0);
    }
    int used = parse_option(s, argv[i], i + 1 < argc ? argv[i + 1] : NULL);
    if (used < 0) {
      usage(stderr);
      return -1;
    }
    i += used;
  }
  return 0;
}

/* ---- the cluster ---- */

typedef struct bench bench;

typedef struct slot {
  bench *b;
  uint64_t group;
  uint32_t leader_guess; /* node index */
  uint64_t started_ns;   /* closed loop: when its command was issued */
  char key[32];
  uint32_t key_length;
} slot;

/* One command of the open loop, with its own due time: a slot (a key and
 * its group) issues again while earlier commands are in flight, so the
 * start cannot live in the slot without a slow completion being measured
 * from a later command's due time. */
typedef struct open_command {
  slot *sl;
  uint64_t due_ns;
  atomic_bool in_flight;
} open_command;

struct bench {
  settings s;
  /* --processes: the node this process runs (an index), or -1 in the
   * process that runs every node or, with --processes, none */
  int32_t self;
  int report_fd;  /* child: where it reports to the parent */
  int control_fd; /* child: where the parent's orders come from */
  char directory[256];
  fl_node_address nodes[MAX_NODES];
  fl_engine *engines[MAX_NODES];
  uint8_t *value;
  slot *slots;
  uint32_t slot_count;
  atomic_bool stopping;
  atomic_bool open_loop; /* completions do not issue the next command */
  _Atomic uint64_t completed;
  _Atomic uint64_t errors;
  _Atomic uint64_t in_flight;
  open_command *commands; /* the open loop's ring */
  uint32_t command_mask;
  histogram *latency; /* of the current phase */
  histogram closed_latency;
  histogram half_latency;
  double per_second[MAX_SAMPLES_SECONDS];
  uint32_t samples;
};

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

static double cpu_seconds(void) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6 +
         (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6;
}

/* The data directory and every node's address: decided once, before any
 * child process exists, so that all of them agree. */
static int prepare_cluster(bench *b) {
  if (b->s.dir != NULL) {
    snprintf(b->directory, sizeof(b->directory), "%s", b->s.dir);
  } else {
    snprintf(b->directory, sizeof(b->directory), "/var/tmp/flotilla-bench-XXXXXX");
    if (mkdtemp(b->directory) == NULL) {
      return FL_E_IO;
    }
  }
  uint16_t base = fl_free_ports(b->s.nodes * b->s.shards);
  if (base == 0) {
    return FL_E_IO;
  }
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    b->nodes[i] = (fl_node_address){.node_id = i + 1, .port = (uint16_t)(base + i * b->s.shards)};
    snprintf(b->nodes[i].host, sizeof(b->nodes[i].host), "127.0.0.1");
  }
  return 0;
}

static bool runs_node(const bench *b, uint32_t node) {
  return b->self < 0 || (uint32_t)b->self == node;
}

/* Opens the engines this process runs: every node, or its own one. */
static int start_engines(bench *b) {
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    if (!runs_node(b, i)) {
      continue;
    }
    char directory[512];
    snprintf(directory, sizeof(directory), "%s/node-%u", b->directory, i + 1);
    fl_options options;
    fl_options_default(&options);
    options.node_id = i + 1;
    options.data_dir = directory;
    options.nodes = b->nodes;
    options.node_count = b->s.nodes;
    options.shard_count = b->s.shards;
    options.log_level = 3; /* peers going down at the end are expected */
    int rc = fl_engine_open(&options, &b->engines[i]);
    if (rc != 0) {
      fprintf(stderr, "flotilla-bench: node %u: %s\n", i + 1, fl_strerror(rc));
      return rc;
    }
  }
  return 0;
}

static void stop_engines(bench *b) {
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    fl_engine_close(b->engines[i]);
    b->engines[i] = NULL;
  }
}

static void remove_directory(bench *b) {
  if (b->s.dir == NULL) {
    char command[512];
    snprintf(command, sizeof(command), "rm -rf '%s'", b->directory);
    if (system(command) != 0) {
      fprintf(stderr, "flotilla-bench: could not remove %s\n", b->directory);
    }
  }
}

/* The index of the node leading `group` among the nodes of this process;
 * UINT32_MAX when none of them leads it. */
static uint32_t leader_of(bench *b, uint64_t group) {
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    fl_group_status status;
    if (b->engines[i] != NULL && fl_group_status_get(b->engines[i], group, &status) == 0 &&
        status.role == FL_LEADER) {
      return i;
    }
  }
  return UINT32_MAX;
}

/* Whether a node of this process knows a leader of `group` (a child
 * process sees only its own replica). */
static bool has_leader(bench *b, uint64_t group) {
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    fl_group_status status;
    if (b->engines[i] != NULL && fl_group_status_get(b->engines[i], group, &status) == 0 &&
        status.leader != 0) {
      return true;
    }
  }
  return false;
}

static int create_groups(bench *b) {
  uint64_t members[MAX_NODES];
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    members[i] = i + 1;
  }
  for (uint64_t group = 1; group <= b->s.groups; group++) {
    for (uint32_t i = 0; i < b->s.nodes; i++) {
      int rc = b->engines[i] ? fl_group_create(b->engines[i], group, members, b->s.nodes) : 0;
      if (rc != 0) {
        return rc;
      }
    }
  }
  uint64_t deadline = now_ns() + 30ull * 1000000000ull;
  for (uint64_t group = 1; group <= b->s.groups; group++) {
    while (!has_leader(b, group)) {
      if (now_ns() > deadline) {
        fprintf(stderr, "flotilla-bench: group %llu elected no leader\n",
                (unsigned long long)group);
        return FL_E_TIMEOUT;
      }
      usleep(2000); /* polling the status: an election takes ticks */
    }
  }
  return 0;
}

/* ---- the load ---- */

static void issue(slot *sl);

/* A command of the slot ended: its latency counts from `started_ns`. */
static void finish(slot *sl, uint64_t started_ns, int status) {
  bench *b = sl->b;
  if (status == 0 || status == FL_E_NOT_FOUND) {
    uint64_t now = now_ns();
    histogram_record(b->latency, now > started_ns ? (now - started_ns) / 1000 : 0);
    atomic_fetch_add_explicit(&b->completed, 1, memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&b->errors, 1, memory_order_relaxed);
    if (b->self < 0) {
      sl->leader_guess = (sl->leader_guess + 1) % b->s.nodes; /* look elsewhere */
    }
  }
}

static void on_write(void *context, int status, const fl_result *result) {
  (void)result;
  slot *sl = context;
  finish(sl, sl->started_ns, status);
  issue(sl);
}

static void on_open_write(void *context, int status, const fl_result *result) {
  (void)result;
  open_command *c = context;
  bench *b = c->sl->b;
  finish(c->sl, c->due_ns, status);
  atomic_store_explicit(&c->in_flight, false, memory_order_release);
  atomic_fetch_sub(&b->in_flight, 1);
}

static void on_read(void *context, int status, const uint8_t *value, uint32_t length) {
  (void)value;
  (void)length;
  slot *sl = context;
  finish(sl, sl->started_ns, status);
  issue(sl);
}

/* Issues the slot's next command, or retires the slot when stopping. Runs
 * on shard threads (from callbacks): only asynchronous calls. */
static void issue(slot *sl) {
  bench *b = sl->b;
  if (atomic_load_explicit(&b->stopping, memory_order_relaxed) ||
      atomic_load_explicit(&b->open_loop, memory_order_relaxed)) {
    atomic_fetch_sub(&b->in_flight, 1);
    return;
  }
  for (uint32_t attempt = 0;; attempt++) {
    sl->started_ns = now_ns();
    fl_engine *e = b->engines[sl->leader_guess];
    bool read = b->s.read_ratio > 0 && (double)(sl->started_ns % 10007) / 10007.0 < b->s.read_ratio;
    int rc =
        read ? fl_kv_get(e, sl->group, sl->key, sl->key_length, FL_READ_LINEARIZABLE, on_read, sl)
             : fl_kv_put(e, sl->group, sl->key, sl->key_length, b->value, b->s.payload, on_write,
                         sl);
    if (rc == 0) {
      return;
    }
    if (rc != FL_E_BUSY || attempt > 1000000) {
      atomic_fetch_add(&b->errors, 1);
      atomic_fetch_sub(&b->in_flight, 1);
      return;
    }
    sched_yield(); /* the shard's queue is full */
  }
}

/* `concurrency` slots per group; a child process drives only the groups
 * its node leads (a proposal must be made on the leader). */
static int make_slots(bench *b) {
  uint32_t capacity = b->s.groups * b->s.concurrency;
  b->slots = calloc(capacity, sizeof(slot));
  b->value = malloc(b->s.payload + 1);
  if (b->slots == NULL || b->value == NULL) {
    return FL_E_NOMEM;
  }
  memset(b->value, 'v', b->s.payload);
  b->slot_count = 0;
  for (uint32_t i = 0; i < capacity; i++) {
    uint64_t group = 1 + i % b->s.groups;
    uint32_t leader = leader_of(b, group);
    if (b->self >= 0 && leader != (uint32_t)b->self) {
      continue;
    }
    slot *sl = &b->slots[b->slot_count++];
    sl->b = b;
    sl->group = group;
    sl->leader_guess = leader == UINT32_MAX ? (b->self < 0 ? 0 : (uint32_t)b->self) : leader;
    sl->key_length = (uint32_t)snprintf(sl->key, sizeof(sl->key), "key-%u", i);
  }
  return 0;
}

static void wait_quiet(bench *b) {
  atomic_store(&b->stopping, true);
  uint64_t deadline = now_ns() + 30ull * 1000000000ull;
  while (atomic_load(&b->in_flight) > 0 && now_ns() < deadline) {
    usleep(1000); /* commands in flight finish at their own pace */
  }
}

typedef struct phase_result {
  double seconds;
  uint64_t completed;
  uint64_t errors;
  double cpu_seconds;
  fl_shard_stats stats; /* summed over nodes and shards */
} phase_result;

static void sum_stats(bench *b, fl_shard_stats *out) {
  memset(out, 0, sizeof(*out));
  for (uint32_t n = 0; n < b->s.nodes; n++) {
    for (uint32_t i = 0; b->engines[n] != NULL && i < fl_engine_shard_count(b->engines[n]); i++) {
      fl_shard_stats s;
      if (fl_shard_stats_get(b->engines[n], i, &s) != 0) {
        continue;
      }
      out->proposals += s.proposals;
      out->applied += s.applied;
      out->wal_batches += s.wal_batches;
      out->wal_bytes += s.wal_bytes;
      out->wal_syncs += s.wal_syncs;
      out->wal_entries += s.wal_entries;
      out->frames_sent += s.frames_sent;
      out->messages_sent += s.messages_sent;
      out->entries_sent += s.entries_sent;
    }
  }
}

static void difference(fl_shard_stats *after, const fl_shard_stats *before) {
  after->proposals -= before->proposals;
  after->wal_batches -= before->wal_batches;
  after->wal_bytes -= before->wal_bytes;
  after->wal_syncs -= before->wal_syncs;
  after->wal_entries -= before->wal_entries;
  after->frames_sent -= before->frames_sent;
  after->messages_sent -= before->messages_sent;
  after->entries_sent -= before->entries_sent;
}

static void report_progress(bench *b, uint64_t completed);

static void progress(bench *b, const char *phase, double elapsed, uint64_t done_last,
                     uint64_t done_now) {
  if (b->self >= 0) {
    report_progress(b, done_now - done_last);
    return;
  }
  double rate = (double)(done_now - done_last);
  if (b->samples < MAX_SAMPLES_SECONDS) {
    b->per_second[b->samples++] = rate;
  }
  if (!b->s.json) {
    fprintf(stderr, "  %-10s %5.0f s  %12.0f ops/s  %8.2f ms p99 so far\n", phase, elapsed, rate,
            histogram_percentile(b->latency, 0.99));
  }
}

static void run_closed_loop(bench *b, phase_result *r) {
  fl_shard_stats before;
  sum_stats(b, &before);
  b->latency = &b->closed_latency;
  atomic_store(&b->stopping, false);
  uint64_t start_completed = atomic_load(&b->completed);
  double start_cpu = cpu_seconds();
  uint64_t start = now_ns();
  atomic_store(&b->in_flight, b->slot_count);
  for (uint32_t i = 0; i < b->slot_count; i++) {
    issue(&b->slots[i]);
  }
  uint64_t last = start_completed;
  for (uint32_t second = 1; second <= (uint32_t)ceil(b->s.seconds); second++) {
    uint64_t until = start + (uint64_t)(fmin(second, b->s.seconds) * 1e9);
    while (now_ns() < until) {
      usleep(10000); /* the reporting clock; the load runs on the shards */
    }
    uint64_t current = atomic_load(&b->completed);
    progress(b, "peak", second, last, current);
    last = current;
  }
  r->seconds = (double)(now_ns() - start) / 1e9;
  r->completed = atomic_load(&b->completed) - start_completed;
  r->cpu_seconds = cpu_seconds() - start_cpu;
  wait_quiet(b);
  sum_stats(b, &r->stats);
  difference(&r->stats, &before);
  r->errors = atomic_load(&b->errors);
}

/* The open loop's ring holds a second of commands at the rate (a command
 * older than that holds the generator back: see open_command_for). */
static int make_command_ring(bench *b, double rate) {
  uint64_t wanted = rate > 4096 ? (uint64_t)rate : 4096;
  uint64_t capacity = 4096;
  while (capacity < wanted && capacity < (1u << 22)) {
    capacity *= 2;
  }
  free(b->commands);
  b->commands = malloc(capacity * sizeof(open_command));
  if (b->commands == NULL) {
    return FL_E_NOMEM;
  }
  /* written now, so the generator does not take its page faults while
   * the commands are timed */
  memset(b->commands, 0, capacity * sizeof(open_command));
  b->command_mask = (uint32_t)capacity - 1;
  return 0;
}

/* The ring's record for the command `number`. One still in flight (a
 * command a whole ring older, still unanswered) is waited for: the
 * generator falls behind, and the commands due meanwhile count their
 * latency from when they were due, so the wait is not hidden. NULL when
 * it is still unanswered after 30 s (a lost callback: the phase stops). */
static open_command *open_command_for(bench *b, uint64_t number) {
  open_command *c = &b->commands[number & b->command_mask];
  uint64_t deadline = now_ns() + 30ull * 1000000000ull;
  while (atomic_load_explicit(&c->in_flight, memory_order_acquire)) {
    if (now_ns() > deadline) {
      fprintf(stderr, "flotilla-bench: a write was not answered in 30 s\n");
      return NULL;
    }
    usleep(100); /* the engine is a second behind: nothing better to do */
  }
  return c;
}

static void issue_open(bench *b, open_command *c, slot *sl, uint64_t due_ns) {
  c->sl = sl;
  c->due_ns = due_ns;
  atomic_store_explicit(&c->in_flight, true, memory_order_relaxed);
  atomic_fetch_add(&b->in_flight, 1);
  int rc = fl_kv_put(b->engines[sl->leader_guess], sl->group, sl->key, sl->key_length, b->value,
                     b->s.payload, on_open_write, c);
  if (rc != 0) {
    atomic_store_explicit(&c->in_flight, false, memory_order_relaxed);
    atomic_fetch_sub(&b->in_flight, 1);
    atomic_fetch_add(&b->errors, 1);
  }
}

/* Sleeps until `deadline_ns` (monotonic), whatever the signals. */
static void sleep_until(uint64_t deadline_ns) {
  struct timespec t = {.tv_sec = (time_t)(deadline_ns / 1000000000ull),
                       .tv_nsec = (long)(deadline_ns % 1000000000ull)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR) {
  }
}

/*
 * Open loop: command k is due at start + k / rate. The generator wakes
 * every pace interval (on an absolute clock, so it does not drift) and
 * issues every command due by then; each counts its latency from its own
 * due time, so neither a late wake-up nor queueing is hidden. The interval
 * trades the generator's wake-ups (a core's worth of time it takes from
 * the shards) against how late a command may be issued.
 */
static void run_half_load(bench *b, double rate, phase_result *r) {
  b->latency = &b->half_latency;
  atomic_store(&b->open_loop, true);
  atomic_store(&b->stopping, false);
  uint64_t start_completed = atomic_load(&b->completed);
  uint64_t start_errors = atomic_load(&b->errors);
  double start_cpu = cpu_seconds();
  uint64_t start = now_ns();
  uint64_t issued = 0;
  uint32_t next_slot = 0;
  uint64_t until = start + (uint64_t)(b->s.half_load_seconds * 1e9);
  /* the phase's commands: a generator running late issues them late (and
   * their latency shows it), never more of them */
  double total = rate * b->s.half_load_seconds;
  uint64_t pace_ns = (uint64_t)b->s.pace_us * 1000u;
  bool lost = false;
  for (uint64_t wake = start; wake < until && !lost; wake += pace_ns) {
    sleep_until(wake);
    double due = fmin(total, rate * (double)(now_ns() - start) / 1e9);
    for (; (double)issued < due; issued++) {
      slot *sl = &b->slots[next_slot];
      next_slot = (next_slot + 1) % b->slot_count;
      open_command *c = open_command_for(b, issued);
      if (c == NULL) {
        atomic_fetch_add(&b->errors, 1);
        lost = true;
        break;
      }
      issue_open(b, c, sl, start + (uint64_t)((double)issued / rate * 1e9));
    }
  }
  r->seconds = (double)(now_ns() - start) / 1e9;
  r->completed = atomic_load(&b->completed) - start_completed;
  r->cpu_seconds = cpu_seconds() - start_cpu;
  wait_quiet(b);
  r->errors = atomic_load(&b->errors) - start_errors; /* refused or failed: not timed */
}

/* ---- idle groups ---- */

static double resident_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0;
  long resident = 0;
  if (f != NULL) {
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) {
      resident = 0;
    }
    fclose(f);
  }
  return (double)resident * (double)sysconf(_SC_PAGESIZE);
}

/* Live heap bytes by the allocator's own count (jemalloc, the engine's
 * allocator): unlike the resident set, it does not include freed pages
 * the allocator keeps for reuse. */
static double allocated_bytes(void) {
  uint64_t epoch = 1;
  size_t length = sizeof(epoch);
  mallctl("epoch", &epoch, &length, &epoch, length);
  size_t allocated = 0;
  length = sizeof(allocated);
  if (mallctl("stats.allocated", &allocated, &length, NULL, 0) != 0) {
    return 0;
  }
  return (double)allocated;
}

static uint64_t active_groups(bench *b) {
  uint64_t active = 0;
  for (uint32_t n = 0; n < b->s.nodes; n++) {
    for (uint32_t i = 0; i < fl_engine_shard_count(b->engines[n]); i++) {
      fl_shard_stats stats;
      if (fl_shard_stats_get(b->engines[n], i, &stats) == 0) {
        active += stats.active_groups;
      }
    }
  }
  return active;
}

/* Threads creating groups at once: fl_group_create blocks until the new
 * replica is durable, so one caller pays a WAL flush per group; this many
 * share each flush, which takes 100,000 groups from minutes to seconds. */
#define IDLE_CREATE_THREADS 64u

typedef struct idle_creator {
  bench *b;
  uint64_t first; /* this thread creates first, first + stride, ... <= last */
  uint64_t last;
  uint64_t stride;
  int result;
} idle_creator;

static void *create_idle_slice(void *argument) {
  idle_creator *c = argument;
  uint64_t members[MAX_NODES];
  for (uint32_t i = 0; i < c->b->s.nodes; i++) {
    members[i] = i + 1;
  }
  for (uint64_t group = c->first; group <= c->last && c->result == 0; group += c->stride) {
    for (uint32_t i = 0; i < c->b->s.nodes && c->result == 0; i++) {
      c->result = fl_group_create(c->b->engines[i], group, members, c->b->s.nodes);
    }
  }
  return NULL;
}

static int create_idle_groups(bench *b, uint64_t first, uint64_t last) {
  idle_creator creators[IDLE_CREATE_THREADS];
  pthread_t threads[IDLE_CREATE_THREADS];
  uint32_t started = 0;
  int rc = 0;
  for (uint32_t t = 0; t < IDLE_CREATE_THREADS && first + t <= last; t++) {
    creators[t] =
        (idle_creator){.b = b, .first = first + t, .last = last, .stride = IDLE_CREATE_THREADS};
    if (pthread_create(&threads[t], NULL, create_idle_slice, &creators[t]) != 0) {
      rc = FL_E_NOMEM;
      break;
    }
    started++;
  }
  for (uint32_t t = 0; t < started; t++) {
    pthread_join(threads[t], NULL);
    rc = rc != 0 ? rc : creators[t].result;
  }
  return rc;
}

static uint64_t wait_all_quiet(bench *b) {
  uint64_t deadline = now_ns() + 120ull * 1000000000ull;
  uint64_t active = 0;
  while ((active = active_groups(b)) > 0 && now_ns() < deadline) {
    usleep(100000); /* polling how many groups still tick */
  }
  return active;
}

/*
 * Groups are created in two halves; each half elects and goes quiet. The
 * memory figure is the growth from the first quiet half to the second,
 * per group and node: the buffers every engine sizes once (WAL batches,
 * send and receive buffers at their high-water mark) are in both
 * measurements, so what remains is what a group itself costs.
 */
static int run_idle_groups(bench *b) {
  uint64_t half = b->s.idle_groups / 2;
  uint64_t start = now_ns();
  int rc = create_idle_groups(b, 1, half);
  uint64_t active = rc == 0 ? wait_all_quiet(b) : 0;
  double before = resident_bytes();
  double heap_before = allocated_bytes();
  rc = rc == 0 ? create_idle_groups(b, half + 1, b->s.idle_groups) : rc;
  if (rc != 0) {
    fprintf(stderr, "flotilla-bench: creating groups: %s\n", fl_strerror(rc));
    return rc;
  }
  double created_seconds = (double)(now_ns() - start) / 1e9;
  active += wait_all_quiet(b);
  double quiet_seconds = (double)(now_ns() - start) / 1e9;
  double after = resident_bytes();
  double heap_after = allocated_bytes();
  double cpu_before = cpu_seconds();
  uint64_t measure_start = now_ns();
  usleep((useconds_t)(IDLE_MEASURE_SECONDS * 1e6)); /* the idle period being measured */
  double wall = (double)(now_ns() - measure_start) / 1e9;
  double cpu_percent = (cpu_seconds() - cpu_before) / wall * 100.0 / b->s.nodes;
  double replicas = (double)(b->s.idle_groups - half) * b->s.nodes;
  double per_group = (heap_after - heap_before) / replicas;
  double resident_per_group = (after - before) / replicas;
  printf("\nflotilla-bench --idle-groups: %u nodes in one process, %u groups on every node\n",
         b->s.nodes, b->s.idle_groups);
  printf("  created in %.1f s, all quiet after %.1f s (%llu still ticking)\n", created_seconds,
         quiet_seconds, (unsigned long long)active);
  printf("  heap per idle group per node    %8.0f B    target %6.0f B  ratio %5.2f  %s\n",
         per_group, TARGET_IDLE_BYTES_PER_GROUP, TARGET_IDLE_BYTES_PER_GROUP / per_group,
         per_group <= TARGET_IDLE_BYTES_PER_GROUP ? "met" : "MISSED");
  printf("  resident set growth per group   %8.0f B    (includes pages the allocator keeps)\n",
         resident_per_group);
  printf("  idle CPU per node               %8.2f %%    target %6.2f %%  ratio %5.2f  %s\n",
         cpu_percent, TARGET_IDLE_CPU_PERCENT,
         cpu_percent > 0 ? TARGET_IDLE_CPU_PERCENT / cpu_percent : 99.0,
         cpu_percent <= TARGET_IDLE_CPU_PERCENT ? "met" : "MISSED");
  return active == 0 ? 0 : FL_E_TIMEOUT;
}

/* ---- report ---- */

static void print_table(bench *b, const phase_result *peak, const phase_result *half,
                        double half_rate) {
  double writes = (double)peak->completed / peak->seconds;
  double mb = writes * (b->s.payload + 8) / 1e6;
  histogram *h = &b->closed_latency;
  printf("\nflotilla-bench: %u nodes %s, %u groups, %u shard(s) per node, "
         "%u-byte values, fsync on, %u commands in flight per group\n",
         b->s.nodes, b->s.processes ? "each in its own process" : "in one process", b->s.groups,
         b->s.shards, b->s.payload, b->s.concurrency);
  printf("\n  peak (closed loop, %.1f s)\n", peak->seconds);
  printf("    committed writes/s          %12.0f    target %9.0f   ratio %5.2f  %s\n", writes,
         TARGET_WRITES_PER_SECOND, writes / TARGET_WRITES_PER_SECOND,
         writes >= TARGET_WRITES_PER_SECOND ? "met" : "MISSED");
  printf("    MB/s (key + value)          %12.1f\n", mb);
  printf("    latency ms p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
         histogram_percentile(h, 0.50), histogram_percentile(h, 0.90),
         histogram_percentile(h, 0.99), histogram_percentile(h, 0.999),
         (double)atomic_load(&h->max_us) / 1000.0);
  const fl_shard_stats *s = &peak->stats;
  printf("    fsyncs/s (all nodes)        %12.0f\n", (double)s->wal_syncs / peak->seconds);
  printf("    entries per WAL write       %12.1f\n",
         s->wal_batches ? (double)s->wal_entries / (double)s->wal_batches : 0.0);
  printf("    messages per network frame  %12.1f\n",
         s->frames_sent ? (double)s->messages_sent / (double)s->frames_sent : 0.0);
  printf("    entries per network frame   %12.1f\n",
         s->frames_sent ? (double)s->entries_sent / (double)s->frames_sent : 0.0);
  printf("    CPU s per million writes    %12.2f\n",
         peak->completed ? peak->cpu_seconds / ((double)peak->completed / 1e6) : 0.0);
  printf("    errors (retried)            %12llu\n", (unsigned long long)peak->errors);
  if (half != NULL) {
    histogram *q = &b->half_latency;
    double p99 = histogram_percentile(q, 0.99);
    printf("\n  half load (open loop at %.0f writes/s, %.1f s): %.0f writes/s\n", half_rate,
           half->seconds, (double)half->completed / half->seconds);
    printf("    latency ms p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
           histogram_percentile(q, 0.50), histogram_percentile(q, 0.90), p99,
           histogram_percentile(q, 0.999), (double)atomic_load(&q->max_us) / 1000.0);
    printf("    CPU s per million writes    %12.2f\n",
           half->completed ? half->cpu_seconds / ((double)half->completed / 1e6) : 0.0);
    printf("    errors (not timed)          %12llu\n", (unsigned long long)half->errors);
    printf("    p99 at half load            %12.2f ms target %6.2f ms ratio %5.2f  %s\n", p99,
           TARGET_P99_HALF_LOAD_MS, p99 > 0 ? TARGET_P99_HALF_LOAD_MS / p99 : 0.0,
           p99 <= TARGET_P99_HALF_LOAD_MS ? "met" : "MISSED");
  }
}

static void print_json(bench *b, const phase_result *peak, const phase_result *half) {
  histogram *h = &b->closed_latency;
  printf("{\"processes\": %s, ", b->s.processes ? "true" : "false");
  printf("\"nodes\": %u, \"groups\": %u, \"shards\": %u, \"payload\": %u, \"concurrency\": %u, "
         "\"seconds\": %.2f, \"writes_per_second\": %.0f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, "
         "\"p99_ms\": %.3f, \"p999_ms\": %.3f, \"max_ms\": %.3f, \"fsyncs_per_second\": %.0f, "
         "\"entries_per_wal_write\": %.2f, \"messages_per_frame\": %.2f, "
         "\"cpu_seconds_per_million\": %.3f",
         b->s.nodes, b->s.groups, b->s.shards, b->s.payload, b->s.concurrency, peak->seconds,
         (double)peak->completed / peak->seconds, histogram_percentile(h, 0.5),
         histogram_percentile(h, 0.9), histogram_percentile(h, 0.99),
         histogram_percentile(h, 0.999), (double)atomic_load(&h->max_us) / 1000.0,
         (double)peak->stats.wal_syncs / peak->seconds,
         peak->stats.wal_batches ? (double)peak->stats.wal_entries / peak->stats.wal_batches : 0,
         peak->stats.frames_sent ? (double)peak->stats.messages_sent / peak->stats.frames_sent : 0,
         peak->completed ? peak->cpu_seconds / ((double)peak->completed / 1e6) : 0.0);
  if (half != NULL) {
    printf(", \"half_load_writes_per_second\": %.0f, \"half_load_p50_ms\": %.3f, "
           "\"half_load_p99_ms\": %.3f, \"half_load_cpu_seconds_per_million\": %.3f",
           (double)half->completed / half->seconds, histogram_percentile(&b->half_latency, 0.5),
           histogram_percentile(&b->half_latency, 0.99),
           half->completed ? half->cpu_seconds / ((double)half->completed / 1e6) : 0.0);
  }
  printf("}\n");
}

/* The latency distribution of the closed loop: for every non-empty bucket,
 * its latency and the fraction of commands at or below it. */
static bool write_distribution(bench *b, const char *path) {
  FILE *f = fopen(path, "w");
  if (f == NULL) {
    return false;
  }
  histogram *h = &b->closed_latency;
  uint64_t total = 0;
  for (uint32_t i = 0; i < HISTOGRAM_BUCKETS; i++) {
    total += atomic_load(&h->counts[i]);
  }
  uint64_t seen = 0;
  for (uint32_t i = 0; i < HISTOGRAM_BUCKETS && total > 0; i++) {
    uint64_t count = atomic_load(&h->counts[i]);
    if (count > 0) {
      seen += count;
      fprintf(f, "%.3f %.6f\n", value_of(i) / 1000.0, (double)seen / (double)total);
    }
  }
  fclose(f);
  return true;
}

static void plot(bench *b) {
  char data[512];
  char latency[512];
  snprintf(data, sizeof(data), "%s.dat", b->s.plot);
  snprintf(latency, sizeof(latency), "%s.latency.dat", b->s.plot);
  FILE *f = fopen(data, "w");
  if (f == NULL || !write_distribution(b, latency)) {
    if (f != NULL) {
      fclose(f);
    }
    fprintf(stderr, "flotilla-bench: cannot write the plot's data next to %s\n", b->s.plot);
    return;
  }
  for (uint32_t i = 0; i < b->samples; i++) {
    fprintf(f, "%u %.0f\n", i + 1, b->per_second[i]);
  }
  fclose(f);
  char command[4096];
  snprintf(command, sizeof(command),
           "gnuplot -e \"set terminal png size 1200,500; set output '%s'; "
           "set multiplot layout 1,2; "
           "set xlabel 'second'; set ylabel 'operations/s'; "
           "plot '%s' using 1:2 with linespoints title 'committed operations/s'; "
           "set logscale x; set xlabel 'latency (ms)'; set ylabel 'fraction of commands'; "
           "plot '%s' using 1:2 with steps title 'latency distribution (peak)'; "
           "unset multiplot\" 2>/dev/null",
           b->s.plot, data, latency);
  if (system(command) != 0) {
    fprintf(stderr, "flotilla-bench: gnuplot is not installed or failed; data in %s and %s\n", data,
            latency);
  }
}

/* ---- --processes: every node in its own process ----
 *
 * The parent picks the ports and the directory, then forks one child per
 * node. Each child opens its engine, creates the groups, waits until each
 * has a leader, and reports how many commands it will keep in flight (the
 * groups its node leads times the concurrency). The parent then orders
 * each phase; every child runs it on its own groups, reports each second's
 * count and at the end its counters and latency histogram, which the parent
 * adds up into the same table as the one-process run.
 */

enum { ORDER_CLOSED = 1, ORDER_HALF = 2, ORDER_EXIT = 3 };
enum { REPORT_READY = 1, REPORT_PROGRESS = 2, REPORT_RESULT = 3, REPORT_FAILED = 4 };

typedef struct order {
  uint32_t kind;
  double rate; /* ORDER_HALF: this child's share of the open-loop rate */
} order;

typedef struct report {
  uint32_t kind;
  uint32_t slots;     /* READY */
  uint64_t completed; /* PROGRESS: in that second */
  phase_result result;
  uint64_t counts[HISTOGRAM_BUCKETS];
  uint64_t max_us;
} report;

/* The whole of `length` bytes through a pipe, in as many calls as it takes;
 * false at end of file or on an error (the other process is gone). */
static bool transfer_all(int fd, void *data, size_t length, bool writing) {
  char *p = data;
  while (length > 0) {
    ssize_t n = writing ? write(fd, p, length) : read(fd, p, length);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return false;
    }
    p += n;
    length -= (size_t)n;
  }
  return true;
}

static bool write_all(int fd, const void *data, size_t length) {
  return transfer_all(fd, (void *)data, length, true);
}

static bool read_all(int fd, void *data, size_t length) {
  return transfer_all(fd, data, length, false);
}

static void send_report(bench *b, report *r) {
  if (!write_all(b->report_fd, r, sizeof(*r))) {
    _exit(3); /* the parent is gone: nothing left to measure for */
  }
}

static void report_progress(bench *b, uint64_t completed) {
  static report r;
  r = (report){.kind = REPORT_PROGRESS, .completed = completed};
  send_report(b, &r);
}

static void report_result(bench *b, const phase_result *result, histogram *h) {
  static report r;
  r = (report){.kind = REPORT_RESULT, .result = *result};
  for (uint32_t i = 0; i < HISTOGRAM_BUCKETS; i++) {
    r.counts[i] = atomic_load(&h->counts[i]);
  }
  r.max_us = atomic_load(&h->max_us);
  send_report(b, &r);
}

/* A child: its node, its groups, the phases the parent orders. */
static int run_child(bench *b) {
  static report r;
  int rc = start_engines(b);
  rc = rc == 0 ? create_groups(b) : rc;
  rc = rc == 0 ? make_slots(b) : rc;
  r = (report){.kind = rc == 0 ? REPORT_READY : REPORT_FAILED, .slots = b->slot_count};
  send_report(b, &r);
  order o;
  while (rc == 0 && read_all(b->control_fd, &o, sizeof(o)) && o.kind != ORDER_EXIT) {
    phase_result result = {0};
    if (o.kind == ORDER_CLOSED) {
      run_closed_loop(b, &result);
      report_result(b, &result, &b->closed_latency);
    } else {
      if (o.rate > 0 && b->slot_count > 0) {
        rc = make_command_ring(b, o.rate);
        if (rc == 0) {
          run_half_load(b, o.rate, &result);
        }
      }
      report_result(b, &result, &b->half_latency);
    }
  }
  stop_engines(b);
  free(b->slots);
  free(b->commands);
  free(b->value);
  return rc;
}

typedef struct children {
  pid_t pid[MAX_NODES];
  int control[MAX_NODES]; /* write ends */
  int reports[MAX_NODES]; /* read ends */
  uint32_t slots[MAX_NODES];
} children;

static int fork_children(bench *b, children *c) {
  fflush(NULL);
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    int control[2];
    int reports[2];
    if (pipe(control) != 0 || pipe(reports) != 0) {
      return FL_E_IO;
    }
    pid_t pid = fork();
    if (pid < 0) {
      return FL_E_IO;
    }
    if (pid == 0) {
      close(control[1]);
      close(reports[0]);
      for (uint32_t j = 0; j < i; j++) { /* the pipes of earlier children */
        close(c->control[j]);
        close(c->reports[j]);
      }
      b->self = (int32_t)i;
      b->control_fd = control[0];
      b->report_fd = reports[1];
      _exit(run_child(b) == 0 ? 0 : 1);
    }
    close(control[0]);
    close(reports[1]);
    c->pid[i] = pid;
    c->control[i] = control[1];
    c->reports[i] = reports[0];
  }
  return 0;
}

static bool read_report(children *c, uint32_t i, report *r) {
  return read_all(c->reports[i], r, sizeof(*r));
}

static void add_result(phase_result *sum, histogram *h, const report *r) {
  sum->seconds = fmax(sum->seconds, r->result.seconds);
  sum->completed += r->result.completed;
  sum->errors += r->result.errors;
  sum->cpu_seconds += r->result.cpu_seconds;
  const fl_shard_stats *s = &r->result.stats;
  sum->stats.wal_batches += s->wal_batches;
  sum->stats.wal_bytes += s->wal_bytes;
  sum->stats.wal_syncs += s->wal_syncs;
  sum->stats.wal_entries += s->wal_entries;
  sum->stats.frames_sent += s->frames_sent;
  sum->stats.messages_sent += s->messages_sent;
  sum->stats.entries_sent += s->entries_sent;
  for (uint32_t i = 0; i < HISTOGRAM_BUCKETS; i++) {
    atomic_fetch_add(&h->counts[i], r->counts[i]);
  }
  if (r->max_us > atomic_load(&h->max_us)) {
    atomic_store(&h->max_us, r->max_us);
  }
}

/* Orders one phase and gathers it: progress each second, then results. */
static int run_phase(bench *b, children *c, const order *orders, double seconds, phase_result *sum,
                     histogram *h) {
  static report r;
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    if (!write_all(c->control[i], &orders[i], sizeof(order))) {
      return FL_E_IO;
    }
  }
  uint32_t reported_seconds = orders[0].kind == ORDER_CLOSED ? (uint32_t)ceil(seconds) : 0;
  for (uint32_t second = 1; second <= reported_seconds; second++) {
    uint64_t total = 0;
    for (uint32_t i = 0; i < b->s.nodes; i++) {
      if (!read_report(c, i, &r) || r.kind != REPORT_PROGRESS) {
        return FL_E_IO;
      }
      total += r.completed;
    }
    if (b->samples < MAX_SAMPLES_SECONDS) {
      b->per_second[b->samples++] = (double)total;
    }
    if (!b->s.json) {
      fprintf(stderr, "  %-10s %5u s  %12llu ops/s\n", "peak", second, (unsigned long long)total);
    }
  }
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    if (!read_report(c, i, &r) || r.kind != REPORT_RESULT) {
      return FL_E_IO;
    }
    add_result(sum, h, &r);
  }
  return 0;
}

static int wait_children(bench *b, children *c) {
  int failed = 0;
  order o = {.kind = ORDER_EXIT};
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    if (c->pid[i] <= 0) {
      continue;
    }
    if (!write_all(c->control[i], &o, sizeof(o))) {
      kill(c->pid[i], SIGKILL); /* it is gone or stuck: do not wait forever */
    }
    close(c->control[i]);
    int status = 0;
    if (waitpid(c->pid[i], &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      fprintf(stderr, "flotilla-bench: node %u's process failed\n", i + 1);
      failed = 1;
    }
    close(c->reports[i]);
  }
  return failed;
}

static int run_processes(bench *b) {
  static report r;
  children c = {0};
  int rc = fork_children(b, &c);
  uint32_t total_slots = 0;
  for (uint32_t i = 0; rc == 0 && i < b->s.nodes; i++) {
    if (!read_report(&c, i, &r) || r.kind != REPORT_READY) {
      fprintf(stderr, "flotilla-bench: node %u did not start\n", i + 1);
      rc = FL_E_IO;
      break;
    }
    c.slots[i] = r.slots;
    total_slots += r.slots;
  }
  phase_result peak = {0};
  phase_result half = {0};
  order orders[MAX_NODES];
  for (uint32_t i = 0; i < b->s.nodes; i++) {
    orders[i] = (order){.kind = ORDER_CLOSED};
  }
  if (rc == 0) {
    rc = run_phase(b, &c, orders, b->s.seconds, &peak, &b->closed_latency);
  }
  double half_rate =
      b->s.half_load_rate > 0 ? b->s.half_load_rate : (double)peak.completed / peak.seconds / 2;
  bool with_half = rc == 0 && b->s.half_load_seconds > 0 && half_rate > 0 && total_slots > 0;
  for (uint32_t i = 0; with_half && i < b->s.nodes; i++) {
    orders[i] = (order){.kind = ORDER_HALF, .rate = half_rate * c.slots[i] / total_slots};
  }
  if (with_half) {
    rc = run_phase(b, &c, orders, b->s.half_load_seconds, &half, &b->half_latency);
  }
  int failed = wait_children(b, &c);
  if (rc == 0 && failed == 0) {
    if (b->s.json) {
      print_json(b, &peak, with_half ? &half : NULL);
    } else {
      print_table(b, &peak, with_half ? &half : NULL, half_rate);
    }
    if (b->s.plot != NULL) {
      plot(b);
    }
  }
  return rc == 0 ? failed : 1;
}

int main(int argc, char **argv) {
  static bench b;
  b.self = -1;
  if (parse_settings(argc, argv, &b.s) != 0) {
    return 2;
  }
  if (b.s.processes && b.s.idle_groups > 0) {
    fprintf(stderr, "flotilla-bench: --idle-groups measures nodes in one process\n");
    return 2;
  }
  int rc = prepare_cluster(&b);
  if (rc == 0 && b.s.processes) {
    rc = run_processes(&b);
    remove_directory(&b);
    return rc == 0 ? 0 : 1;
  }
  rc = rc == 0 ? start_engines(&b) : rc;
  if (rc == 0 && b.s.idle_groups > 0) {
    rc = run_idle_groups(&b);
    stop_engines(&b);
    remove_directory(&b);
    return rc == 0 ? 0 : 1;
  }
  rc = rc == 0 ? create_groups(&b) : rc;
  rc = rc == 0 ? make_slots(&b) : rc;
  if (rc != 0) {
    stop_engines(&b);
    remove_directory(&b);
    return 1;
  }
  phase_result peak = {0};
  phase_result half = {0};
  run_closed_loop(&b, &peak);
  double half_rate =
      b.s.half_load_rate > 0 ? b.s.half_load_rate : (double)peak.completed / peak.seconds / 2;
  bool with_half = b.s.half_load_seconds > 0 && half_rate > 0;
  if (with_half && make_command_ring(&b, half_rate) != 0) {
    fprintf(stderr, "flotilla-bench: no memory for the open loop\n");
    with_half = false;
  }
  if (with_half) {
    run_half_load(&b, half_rate, &half);
  }
  if (b.s.json) {
    print_json(&b, &peak, with_half ? &half : NULL);
  } else {
    print_table(&b, &peak, with_half ? &half : NULL, half_rate);
  }
  if (b.s.plot != NULL) {
    plot(&b);
  }
  stop_engines(&b);
  remove_directory(&b);
  free(b.slots);
  free(b.commands);
  free(b.value);
  return 0;
}
