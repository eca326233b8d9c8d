/*
 * transport_bench.c - transport-bench: the transport carrying AppendEntries
 * batches between two nodes on loopback, measured against the limit of a raw
 * TCP connection on the same loopback, in one run.
 *
 *   transport-bench [--seconds N] [--case GROUPSxBYTES] [--frame-bytes N]
 *                   [--queue-bytes N] [--json]
 *
 * 1. The limit: one loopback TCP connection, a sender thread writing a
 *    1 MiB buffer as fast as it can and a receiver thread reading into a
 *    1 MiB buffer and discarding it, with blocking write/read and with
 *    io_uring send/recv (one operation in flight per side, as the
 *    transport does). The blocking loop also runs for half a case's time
 *    right before each transport case, and the case's ratio is to that
 *    adjacent run: loopback speed is CPU speed, and on a machine shared
 *    with other work it swings by tens of percent within one run. The
 *    ratio to the fastest raw run of the whole run is printed as well.
 * 2. The transport (transport.h) between node 1 and node 2, each with its
 *    own io_uring driven by its own thread. Every iteration of node 1's loop
 *    ticks, fills one batch (one reservation of --frame-bytes, the engine's
 *    batch size by default) with APPEND messages encoded by codec_raft_add
 *    straight into the send buffer, round-robin over the groups, commits it,
 *    flushes and reaps without waiting. When a reservation is refused with
 *    TRANSPORT_E_FULL (the peer's queue holds max_queue_bytes) node 1
 *    flushes, waits for a completion and retries: a closed loop that never
 *    drops. Node 2's on_frame decodes every message with codec_raft_next
 *    and checks that each group's indexes follow on, so lost or reordered
 *    messages are found. Cases: 1 and 1,024 groups, 16 B and 1 KiB entries.
 *
 * Each case warms up for WARMUP_NS, then is measured for --seconds by the
 * receiving side (bytes or messages received inside the window). CPU is
 * CLOCK_THREAD_CPUTIME_ID of each loop's thread and CLOCK_PROCESS_CPUTIME_ID
 * of the process (which adds the kernel's io_uring workers, if any) over the
 * same window. MB = 10^6 bytes; wire bytes are frames, headers included;
 * user bytes are entry data. Ratios are figure / target: >= 1.00 meets it.
 * Targets: wire MB/s >= 0.7 x raw in the 1 KiB cases (large batches), and
 * >= 5,000,000 16-byte entries/s with each node's loop within one core.
 * Ports are ephemeral (bound to port 0 and read back), never fixed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/dispatch.h"
#include "raft/raft.h"
#include "transport/codec.h"
#include "transport/transport.h"

#define TARGET_BANDWIDTH_RATIO 0.7
#define TARGET_SMALL_ENTRIES_PER_SECOND 5e6
#define DEFAULT_SECONDS 2.0
/* The engine reserves 1 MiB per open batch (engine/network.c). */
#define DEFAULT_FRAME_BYTES (1u << 20)
#define RAW_BUFFER_BYTES (1u << 20)
#define PATTERN_BYTES (1u << 20)
#define WARMUP_NS 200000000ull
#define CONNECT_TIMEOUT_NS 10000000000ull
#define DRAIN_TIMEOUT_NS 10000000000ull
/* A bounded wait keeps every loop checking the shared flags. */
#define DISPATCH_WAIT_NS 1000000ll
#define RING_ENTRIES 256u
#define MAX_GROUPS 1024u
#define CLUSTER_ID 0x7472616e73626e63ull
#define SENDER_NODE 1u
#define RECEIVER_NODE 2u
#define MB 1e6
#define NS_PER_SECOND 1e9
#define RAW_METHOD_COUNT 2
#define CASE_COUNT 4

/* ---- the transport cases ------------------------------------------------ */

typedef struct shape {
  uint32_t groups;
  uint32_t entry_bytes;
  uint32_t entries_per_message;
} shape;

/*
 * 64 x 16 B entries (1 KiB of commands) per message, as a leader batching
 * small proposals sends; 4 x 1 KiB (4 KiB) per message, so the 1 KiB cases
 * still carry many messages per batch.
 */
static const shape transport_shapes[CASE_COUNT] = {
    {1, 16, 64},
    {1, 1024, 4},
    {MAX_GROUPS, 16, 64},
    {MAX_GROUPS, 1024, 4},
};

/* ---- settings ------------------------------------------------------------ */

typedef struct settings {
  double seconds;
  uint32_t only_groups, only_entry_bytes; /* --case; 0: every case */
  uint32_t frame_bytes;                   /* payload bytes reserved per batch */
  uint32_t queue_bytes;                   /* max_queue_bytes of the transports; 0: their default */
  bool json;
} settings;

static void usage(FILE *out) {
  fprintf(out, "usage: transport-bench [--seconds N] [--case GROUPSxBYTES] [--frame-bytes N]\n"
               "                       [--queue-bytes N] [--json]\n"
               "  --seconds N        measured length of each case (default 2)\n"
               "  --case GxB         run only the transport case of G groups and B-byte\n"
               "                     entries (1x16, 1x1024, 1024x16, 1024x1024)\n"
               "  --frame-bytes N    payload bytes reserved per batch (default 1048576)\n"
               "  --queue-bytes N    the transports' max_queue_bytes (default: theirs, 16 MiB)\n"
               "  --json             print one JSON object instead of the tables\n");
}

static bool settings_valid(const settings *s) {
  bool frame_ok = s->frame_bytes >= 16384 && s->frame_bytes <= TRANSPORT_MAX_FRAME_PAYLOAD_LIMIT;
  bool queue_ok = s->queue_bytes == 0 || (s->queue_bytes >= s->frame_bytes + FRAME_HEADER_BYTES &&
                                          s->queue_bytes <= (1u << 30));
  bool case_ok = s->only_groups == 0;
  for (uint32_t i = 0; i < CASE_COUNT; i++) {
    case_ok = case_ok || (transport_shapes[i].groups == s->only_groups &&
                          transport_shapes[i].entry_bytes == s->only_entry_bytes);
  }
  return s->seconds > 0 && s->seconds <= 3600 && frame_ok && queue_ok && case_ok;
}

static int parse_settings(int argc, char **argv, settings *s) {
  *s = (settings){.seconds = DEFAULT_SECONDS, .frame_bytes = DEFAULT_FRAME_BYTES};
  for (int i = 1; i < argc; i++) {
    const char *name = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(name, "--json") == 0) {
      s->json = true;
    } else if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
      usage(stdout);
      exit(0);
    } else if (value != NULL && strcmp(name, "--seconds") == 0) {
      s->seconds = strtod(value, NULL);
      i++;
    } else if (value != NULL && strcmp(name, "--case") == 0) {
      if (sscanf(value, "%ux%u", &s->only_groups, &s->only_entry_bytes) != 2) {
        return -EINVAL;
      }
      i++;
    } else if (value != NULL && strcmp(name, "--frame-bytes") == 0) {
      s->frame_bytes = (uint32_t)strtoul(value, NULL, 0);
      i++;
    } else if (value != NULL && strcmp(name, "--queue-bytes") == 0) {
      s->queue_bytes = (uint32_t)strtoul(value, NULL, 0);
      i++;
    } else {
      return -EINVAL;
    }
  }
  return settings_valid(s) ? 0 : -EINVAL;
}

static bool case_selected(const settings *s, shape shape) {
  return s->only_groups == 0 ||
         (shape.groups == s->only_groups && shape.entry_bytes == s->only_entry_bytes);
}

/* ---- clocks and the measurement window ------------------------------------ */

static uint64_t clock_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t now_ns(void) {
  return clock_ns(CLOCK_MONOTONIC);
}

/* What one side counted: bytes, and for the transport frames and Raft. */
typedef struct tally {
  uint64_t bytes;
  uint64_t frames;
  uint64_t messages;
  uint64_t entries;
  uint64_t user_bytes;
} tally;

typedef struct snapshot {
  uint64_t wall_ns;
  uint64_t thread_cpu_ns;
  uint64_t process_cpu_ns;
  tally counted;
} snapshot;

/* One thread's counters and the two snapshots it takes as it passes the
 * edges of the window: each thread reads its own clock and counters, so the
 * hot path shares nothing but the start time, written once. */
typedef struct meter {
  tally total;
  snapshot begin, end;
  bool begun, ended;
} meter;

/*
 * Shared by the threads of one case. start_ns stays 0 until every thread
 * is connected and ready; then the main thread sets it WARMUP_NS ahead.
 */
typedef struct schedule {
  _Atomic uint32_t ready;
  _Atomic uint64_t start_ns;
  _Atomic int error;
  uint64_t length_ns;
} schedule;

static uint64_t schedule_start(schedule *s) {
  return atomic_load_explicit(&s->start_ns, memory_order_acquire);
}

static bool schedule_failed(schedule *s) {
  return atomic_load_explicit(&s->error, memory_order_relaxed) != 0;
}

static void schedule_fail(schedule *s, int error) {
  int expected = 0;
  atomic_compare_exchange_strong(&s->error, &expected, error != 0 ? error : -EIO);
}

static void take_snapshot(snapshot *out, const meter *m, uint64_t now) {
  out->wall_ns = now;
  out->thread_cpu_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID);
  out->process_cpu_ns = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
  out->counted = m->total;
}

/* Takes the snapshots due by now; true once the window is over. */
static bool meter_observe(meter *m, schedule *s, uint64_t now) {
  uint64_t start = schedule_start(s);
  if (start == 0 || now < start) {
    return false;
  }
  if (!m->begun) {
    take_snapshot(&m->begin, m, now);
    m->begun = true;
  }
  if (now < start + s->length_ns) {
    return false;
  }
  if (!m->ended) {
    take_snapshot(&m->end, m, now);
    m->ended = true;
  }
  return true;
}

/* What one side did inside the window. */
typedef struct window {
  double seconds;
  double thread_cpu_seconds;
  double process_cpu_seconds;
  tally counted;
} window;

static window meter_window(const meter *m) {
  window w = {0};
  if (!m->begun || !m->ended) {
    return w;
  }
  w.seconds = (double)(m->end.wall_ns - m->begin.wall_ns) / NS_PER_SECOND;
  w.thread_cpu_seconds = (double)(m->end.thread_cpu_ns - m->begin.thread_cpu_ns) / NS_PER_SECOND;
  w.process_cpu_seconds = (double)(m->end.process_cpu_ns - m->begin.process_cpu_ns) / NS_PER_SECOND;
  const tally *a = &m->begin.counted;
  const tally *b = &m->end.counted;
  w.counted = (tally){.bytes = b->bytes - a->bytes,
                      .frames = b->frames - a->frames,
                      .messages = b->messages - a->messages,
                      .entries = b->entries - a->entries,
                      .user_bytes = b->user_bytes - a->user_bytes};
  return w;
}

static double per_second(double amount, double seconds) {
  return seconds > 0 ? amount / seconds : 0;
}

/* Waits for `threads` ready threads, then opens the window after a warm-up. */
static int schedule_open(schedule *s, uint32_t threads) {
  uint64_t deadline = now_ns() + CONNECT_TIMEOUT_NS;
  while (atomic_load(&s->ready) < threads) {
    if (schedule_failed(s) || now_ns() > deadline) {
      schedule_fail(s, -ETIMEDOUT);
      return atomic_load(&s->error);
    }
    usleep(1000);
  }
  atomic_store_explicit(&s->start_ns, now_ns() + WARMUP_NS, memory_order_release);
  return 0;
}

/* ---- the limit: raw TCP on loopback ------------------------------------------ */

/* A listening socket on 127.0.0.1 with a port the kernel chose. */
static int listen_loopback(uint16_t *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -errno;
  }
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t length = sizeof(address);
  if (bind(fd, (struct sockaddr *)&address, sizeof(address)) != 0 || listen(fd, 4) != 0 ||
      getsockname(fd, (struct sockaddr *)&address, &length) != 0) {
    int error = -errno;
    close(fd);
    return error;
  }
  *port = ntohs(address.sin_port);
  return fd;
}

static int connect_loopback(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -errno;
  }
  struct sockaddr_in address = {
      .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  /* TCP_NODELAY as the transport sets it, so both paths send alike. */
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0 ||
      connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
    int error = -errno;
    close(fd);
    return error;
  }
  return fd;
}

typedef enum raw_method {
  RAW_BLOCKING = 0, /* write(2) / read(2) */
  RAW_URING = 1,    /* io_uring send / recv, one in flight per side */
} raw_method;

typedef struct raw_case {
  const char *name;
  raw_method method;
  schedule schedule;
  int listen_fd;
  uint16_t port;
  uint8_t *send_buffer;
  meter sender, receiver;
} raw_case;

/* One io_uring send or recv, waited for: res, or a negative errno. */
static int uring_transfer(struct io_uring *ring, int fd, uint8_t *buffer, size_t length,
                          bool send) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
  if (send) {
    io_uring_prep_send(sqe, fd, buffer, length, MSG_NOSIGNAL);
  } else {
    io_uring_prep_recv(sqe, fd, buffer, length, 0);
  }
  struct io_uring_cqe *cqe = NULL;
  int rc = io_uring_submit_and_wait(ring, 1);
  if (rc >= 0) {
    rc = io_uring_wait_cqe(ring, &cqe);
  }
  if (rc < 0) {
    return rc;
  }
  int result = cqe->res;
  io_uring_cqe_seen(ring, cqe);
  return result;
}

/* One write or read of up to `length` bytes by the case's method. */
static ssize_t raw_transfer(const raw_case *c, struct io_uring *ring, int fd, uint8_t *buffer,
                            size_t length, bool send) {
  if (c->method == RAW_URING) {
    return uring_transfer(ring, fd, buffer, length, send);
  }
  ssize_t n = send ? write(fd, buffer, length) : read(fd, buffer, length);
  return n >= 0 ? n : -errno;
}

/* Reads and discards until the sender closes; counts every byte. */
static int raw_receive_all(raw_case *c, struct io_uring *ring, int fd) {
  uint8_t *buffer = malloc(RAW_BUFFER_BYTES);
  if (buffer == NULL) {
    return -ENOMEM;
  }
  atomic_fetch_add(&c->schedule.ready, 1);
  int rc = 0;
  for (;;) {
    ssize_t n = raw_transfer(c, ring, fd, buffer, RAW_BUFFER_BYTES, false);
    if (n == -EINTR) {
      continue;
    }
    if (n <= 0) {
      rc = (int)n;
      break;
    }
    c->receiver.total.bytes += (uint64_t)n;
    meter_observe(&c->receiver, &c->schedule, now_ns());
  }
  /* The end of the stream may come after the last data crossed the edge. */
  meter_observe(&c->receiver, &c->schedule, now_ns());
  free(buffer);
  return rc;
}

static void *raw_receiver_main(void *argument) {
  raw_case *c = argument;
  pthread_setname_np(pthread_self(), "raw-receive");
  struct io_uring ring;
  int rc = c->method == RAW_URING ? io_uring_queue_init(8, &ring, 0) : 0;
  bool ring_ready = c->method == RAW_URING && rc == 0;
  int fd = rc == 0 ? accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC) : -1;
  if (rc == 0 && fd < 0) {
    rc = -errno;
  }
  if (rc == 0) {
    rc = raw_receive_all(c, &ring, fd);
    close(fd);
  }
  if (ring_ready) {
    io_uring_queue_exit(&ring);
  }
  if (rc != 0) {
    schedule_fail(&c->schedule, rc);
  }
  return NULL;
}

/* Writes the whole buffer again and again until the window is over. */
static int raw_send_until_done(raw_case *c, struct io_uring *ring, int fd) {
  atomic_fetch_add(&c->schedule.ready, 1);
  size_t offset = 0;
  while (!meter_observe(&c->sender, &c->schedule, now_ns()) && !schedule_failed(&c->schedule)) {
    ssize_t n = raw_transfer(c, ring, fd, c->send_buffer + offset, RAW_BUFFER_BYTES - offset, true);
    if (n == -EINTR) {
      continue;
    }
    if (n <= 0) {
      return n < 0 ? (int)n : -EIO;
    }
    c->sender.total.bytes += (uint64_t)n;
    offset = (offset + (size_t)n) % RAW_BUFFER_BYTES;
  }
  return 0;
}

static void *raw_sender_main(void *argument) {
  raw_case *c = argument;
  pthread_setname_np(pthread_self(), "raw-send");
  struct io_uring ring;
  int rc = c->method == RAW_URING ? io_uring_queue_init(8, &ring, 0) : 0;
  bool ring_ready = c->method == RAW_URING && rc == 0;
  int fd = rc == 0 ? connect_loopback(c->port) : -1;
  if (rc == 0 && fd < 0) {
    rc = fd;
  }
  if (rc == 0) {
    rc = raw_send_until_done(c, &ring, fd);
    close(fd); /* the receiver's end of stream */
  }
  if (ring_ready) {
    io_uring_queue_exit(&ring);
  }
  if (rc != 0) {
    schedule_fail(&c->schedule, rc);
  }
  return NULL;
}

static int run_raw_case(double seconds, raw_case *c, uint8_t *pattern) {
  c->schedule.length_ns = (uint64_t)(seconds * NS_PER_SECOND);
  c->send_buffer = pattern;
  c->listen_fd = listen_loopback(&c->port);
  if (c->listen_fd < 0) {
    return c->listen_fd;
  }
  pthread_t receiver, sender;
  int rc = -pthread_create(&receiver, NULL, raw_receiver_main, c);
  bool receiver_started = rc == 0;
  bool sender_started = false;
  if (rc == 0) {
    rc = -pthread_create(&sender, NULL, raw_sender_main, c);
    sender_started = rc == 0;
  }
  if (rc == 0) {
    rc = schedule_open(&c->schedule, 2);
  }
  if (rc != 0) {
    schedule_fail(&c->schedule, rc);
    shutdown(c->listen_fd, SHUT_RDWR); /* releases an accept still waiting */
  }
  if (sender_started) {
    pthread_join(sender, NULL);
  }
  if (receiver_started) {
    pthread_join(receiver, NULL);
  }
  close(c->listen_fd);
  return rc != 0 ? rc : atomic_load(&c->schedule.error);
}

/* ---- the transport: node 1 sends APPEND batches to node 2 ---------------------- */

typedef struct transport_case transport_case;

typedef struct node {
  transport_case *owner;
  struct io_uring ring;
  bool ring_ready;
  transport *t;
  uint64_t id;
  uint64_t peer;
  bool peer_up; /* our outgoing connection to the peer is ready */
  meter meter;
  uint64_t start_ns; /* the transports' clock starts at 0 */
  transport_stats stats;
} node;

struct transport_case {
  const settings *settings;
  shape shape;
  schedule schedule;
  node sender, receiver;
  const uint8_t *pattern;
  /* node 1 */
  fl_raft_entry *entries;
  uint64_t next_index[MAX_GROUPS];
  uint32_t next_group;
  uint32_t pattern_offset;
  uint64_t full_waits; /* reservations refused with TRANSPORT_E_FULL, retried */
  _Atomic bool sender_done;
  _Atomic uint64_t messages_sent;
  _Atomic bool closing; /* everything received: connection losses are expected */
  /* node 2 */
  fl_raft_entry *scratch;
  uint64_t expected_index[MAX_GROUPS];
  uint64_t out_of_order; /* a group's message not following its previous one */
  uint64_t decode_errors;
  uint64_t unexpected_frames;
  bool drain_timed_out;
};

static uint64_t node_clock_ms(const node *n) {
  return (now_ns() - n->start_ns) / 1000000u;
}

static void on_peer(void *context, uint64_t node_id, bool up) {
  node *n = context;
  if (node_id == n->peer) {
    n->peer_up = up;
  }
}

static void on_log(void *context, transport_log_level level, const char *message) {
  node *n = context;
  if (level >= TRANSPORT_LOG_WARN && !atomic_load(&n->owner->closing)) {
    fprintf(stderr, "transport-bench: node %llu: %s\n", (unsigned long long)n->id, message);
  }
}

/* Counts one message of a group and checks it follows the group's last. */
static void account_message(transport_case *c, uint64_t group, const fl_raft_message *m) {
  meter *counted = &c->receiver.meter;
  counted->total.messages++;
  counted->total.entries += m->entry_count;
  for (uint32_t i = 0; i < m->entry_count; i++) {
    counted->total.user_bytes += c->scratch[i].length;
  }
  if (group == 0 || group > MAX_GROUPS || m->index + 1 != c->expected_index[group - 1]) {
    c->out_of_order++;
    return;
  }
  c->expected_index[group - 1] = m->index + 1 + m->entry_count;
}

/* Node 2: decodes every message of the batch (so decoding is counted). */
static void on_frame(void *context, uint64_t from, frame_type type, const uint8_t *payload,
                     uint32_t length) {
  node *n = context;
  transport_case *c = n->owner;
  n->meter.total.frames++;
  n->meter.total.bytes += FRAME_HEADER_BYTES + (uint64_t)length;
  if (type != FRAME_RAFT) {
    c->unexpected_frames++;
    return;
  }
  codec_raft_decoder decoder;
  codec_raft_decoder_init(&decoder, payload, length, from, n->id);
  uint64_t group = 0;
  fl_raft_message message;
  int rc;
  while ((rc = codec_raft_next(&decoder, &group, &message, c->scratch,
                               CODEC_MAX_ENTRIES_PER_MESSAGE)) == 1) {
    account_message(c, group, &message);
  }
  c->decode_errors += rc < 0 ? 1 : 0;
}

static int create_node(transport_case *c, node *n, uint64_t id, uint64_t peer) {
  *n = (node){.owner = c, .id = id, .peer = peer, .start_ns = now_ns()};
  int rc = io_uring_queue_init(RING_ENTRIES, &n->ring, 0);
  if (rc != 0) {
    return rc;
  }
  n->ring_ready = true;
  transport_options options;
  transport_options_default(&options);
  options.cluster_id = CLUSTER_ID;
  options.node_id = id;
  options.listen_host = "127.0.0.1";
  options.listen_port = 0; /* ephemeral: read back with transport_listen_port */
  options.seed = id;
  if (c->settings->queue_bytes != 0) {
    options.max_queue_bytes = c->settings->queue_bytes;
    options.max_frame_payload_bytes = c->settings->frame_bytes;
  }
  options.on_frame = on_frame;
  options.on_peer = on_peer;
  options.log = on_log;
  options.context = n;
  return transport_create(&options, &n->ring, &n->t);
}

static int add_peer(node *n, const node *peer) {
  transport_peer_address address = {
      .node_id = peer->id, .host = "127.0.0.1", .port = transport_listen_port(peer->t)};
  return transport_add_peer(n->t, &address);
}

/* One loop step without new frames: tick, flush, reap (waiting a little
 * when asked). */
static int drive(node *n, bool wait) {
  int rc = transport_tick(n->t, node_clock_ms(n));
  if (rc == 0) {
    transport_flush(n->t);
    rc = fl_dispatch(&n->ring, wait ? 1 : 0, wait ? DISPATCH_WAIT_NS : 0);
  }
  return rc < 0 ? rc : 0;
}

/* Both directions up: ours dialed and acknowledged, the peer's accepted. */
static bool node_connected(const node *n) {
  transport_peer_info info;
  return n->peer_up && transport_peer_info_get(n->t, n->peer, &info) == 0 && info.connected_in;
}

/* Drives the loop until connected, reports ready, drives until the start. */
static int wait_for_start(node *n) {
  transport_case *c = n->owner;
  bool counted = false;
  while (schedule_start(&c->schedule) == 0) {
    if (schedule_failed(&c->schedule)) {
      return atomic_load(&c->schedule.error);
    }
    int rc = drive(n, true);
    if (rc != 0) {
      return rc;
    }
    if (!counted && node_connected(n)) {
      atomic_fetch_add(&c->schedule.ready, 1);
      counted = true;
    }
  }
  return 0;
}

/* The next message, round-robin over the groups: entries of 16 B or 1 KiB
 * at consecutive indexes, their data taken from the pattern in turn. */
static void next_message(transport_case *c, uint64_t *group, fl_raft_message *m) {
  uint32_t g = c->next_group;
  uint32_t count = c->shape.entries_per_message;
  uint32_t length = c->shape.entry_bytes;
  uint64_t first = c->next_index[g];
  if (c->pattern_offset + (uint64_t)count * length > PATTERN_BYTES) {
    c->pattern_offset = 0;
  }
  for (uint32_t i = 0; i < count; i++) {
    c->entries[i].index = first + i;
    c->entries[i].data = c->pattern + c->pattern_offset + (size_t)i * length;
  }
  *group = (uint64_t)g + 1;
  *m = (fl_raft_message){.type = FL_RAFT_MSG_APPEND,
                         .entry_count = count,
                         .from = SENDER_NODE,
                         .to = RECEIVER_NODE,
                         .term = 1,
                         .log_term = 1,
                         .index = first - 1,
                         .commit = first - 1,
                         .entries = c->entries};
}

static void message_added(transport_case *c) {
  uint32_t g = c->next_group;
  uint32_t count = c->shape.entries_per_message;
  c->next_index[g] += count;
  c->next_group = g + 1 == c->shape.groups ? 0 : g + 1;
  c->pattern_offset += count * c->shape.entry_bytes;
  meter *m = &c->sender.meter;
  m->total.messages++;
  m->total.entries += count;
  m->total.user_bytes += (uint64_t)count * c->shape.entry_bytes;
}

/* A reservation of one batch; on a full queue, sends what is queued, waits
 * for the kernel to take it and tries again (flow control, no drop). */
static int reserve_batch(transport_case *c, void **room) {
  node *n = &c->sender;
  for (;;) {
    int rc = transport_reserve(n->t, n->peer, c->settings->frame_bytes, room);
    if (rc != TRANSPORT_E_FULL) {
      return rc;
    }
    c->full_waits++;
    transport_flush(n->t);
    rc = fl_dispatch(&n->ring, 1, DISPATCH_WAIT_NS);
    if (rc < 0) {
      return rc;
    }
    if (schedule_failed(&c->schedule)) {
      return atomic_load(&c->schedule.error);
    }
  }
}

/* Fills one batch with as many messages as fit, encoded in place, and
 * commits it. */
static int send_one_batch(transport_case *c) {
  void *room = NULL;
  int rc = reserve_batch(c, &room);
  if (rc != 0) {
    return rc;
  }
  codec_raft_encoder encoder;
  rc = codec_raft_encoder_init(&encoder, room, c->settings->frame_bytes);
  while (rc == 0) {
    uint64_t group;
    fl_raft_message message;
    next_message(c, &group, &message);
    rc = codec_raft_add(&encoder, group, &message);
    if (rc == 0) {
      message_added(c);
    }
  }
  if (rc != TRANSPORT_E_FULL || encoder.message_count == 0) {
    return rc == TRANSPORT_E_FULL ? TRANSPORT_E_TOO_LARGE : rc;
  }
  size_t payload_bytes = 0;
  codec_raft_finish(&encoder, &payload_bytes);
  c->sender.meter.total.frames++;
  c->sender.meter.total.bytes += FRAME_HEADER_BYTES + payload_bytes;
  return transport_commit(c->sender.t, c->sender.peer, FRAME_RAFT, (uint32_t)payload_bytes);
}

/* Flushes until node 2's queue and the send in flight are empty. */
static int drain_sender(node *n) {
  uint64_t deadline = now_ns() + DRAIN_TIMEOUT_NS;
  for (;;) {
    transport_peer_info info;
    int rc = transport_peer_info_get(n->t, n->peer, &info);
    if (rc != 0 || (info.queued_bytes == 0 && info.in_flight_bytes == 0)) {
      return rc;
    }
    if (!info.up || now_ns() > deadline) {
      return TRANSPORT_E_CLOSED;
    }
    rc = drive(n, true);
    if (rc != 0) {
      return rc;
    }
  }
}

/* Closes the transport on its own thread, reaping until it is idle. */
static void close_node(node *n) {
  transport_shutdown(n->t);
  while (!transport_is_idle(n->t)) {
    fl_dispatch(&n->ring, 1, DISPATCH_WAIT_NS);
    transport_tick(n->t, node_clock_ms(n));
  }
}

static int sender_loop(transport_case *c) {
  node *n = &c->sender;
  int rc = 0;
  while (rc == 0 && !meter_observe(&n->meter, &c->schedule, now_ns())) {
    rc = transport_tick(n->t, node_clock_ms(n));
    if (rc == 0) {
      rc = send_one_batch(c);
    }
    if (rc == 0) {
      transport_flush(n->t);
      rc = fl_dispatch(&n->ring, 0, 0);
      rc = rc < 0 ? rc : 0;
    }
  }
  return rc;
}

static void *sender_main(void *argument) {
  transport_case *c = argument;
  pthread_setname_np(pthread_self(), "node-1-send");
  node *n = &c->sender;
  int rc = wait_for_start(n);
  if (rc == 0) {
    rc = sender_loop(c);
  }
  if (rc == 0) {
    rc = drain_sender(n);
  }
  /* Counters now, before node 2 closes: its closing is no fault. */
  transport_get_stats(n->t, &n->stats);
  atomic_store(&c->messages_sent, n->meter.total.messages);
  atomic_store(&c->sender_done, true);
  if (rc != 0) {
    schedule_fail(&c->schedule, rc);
  }
  /* Keep answering until node 2 has everything: a close now would cut it. */
  while (!atomic_load(&c->closing) && !schedule_failed(&c->schedule)) {
    drive(n, true);
  }
  close_node(n);
  return NULL;
}

/* True once node 2 has every message node 1 sent (or gave up waiting). */
static bool receiver_finished(transport_case *c, uint64_t *drain_deadline) {
  if (!atomic_load(&c->sender_done)) {
    return false;
  }
  if (c->receiver.meter.total.messages >= atomic_load(&c->messages_sent)) {
    return true;
  }
  uint64_t now = now_ns();
  if (*drain_deadline == 0) {
    *drain_deadline = now + DRAIN_TIMEOUT_NS;
  }
  c->drain_timed_out = now > *drain_deadline;
  return c->drain_timed_out;
}

static void *receiver_main(void *argument) {
  transport_case *c = argument;
  pthread_setname_np(pthread_self(), "node-2-receive");
  node *n = &c->receiver;
  int rc = wait_for_start(n);
  uint64_t drain_deadline = 0;
  while (rc == 0 && !schedule_failed(&c->schedule) && !receiver_finished(c, &drain_deadline)) {
    rc = drive(n, true);
    meter_observe(&n->meter, &c->schedule, now_ns());
  }
  if (rc != 0) {
    schedule_fail(&c->schedule, rc);
  }
  transport_get_stats(n->t, &n->stats);
  atomic_store(&c->closing, true);
  close_node(n);
  return NULL;
}

static int prepare_transport_case(transport_case *c) {
  for (uint32_t g = 0; g < MAX_GROUPS; g++) {
    c->next_index[g] = 1;
    c->expected_index[g] = 1;
  }
  c->entries = calloc(c->shape.entries_per_message, sizeof(fl_raft_entry));
  c->scratch = calloc(CODEC_MAX_ENTRIES_PER_MESSAGE, sizeof(fl_raft_entry));
  if (c->entries == NULL || c->scratch == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < c->shape.entries_per_message; i++) {
    c->entries[i] =
        (fl_raft_entry){.term = 1, .type = FL_RAFT_ENTRY_NORMAL, .length = c->shape.entry_bytes};
  }
  int rc = create_node(c, &c->sender, SENDER_NODE, RECEIVER_NODE);
  if (rc == 0) {
    rc = create_node(c, &c->receiver, RECEIVER_NODE, SENDER_NODE);
  }
  if (rc == 0) {
    rc = add_peer(&c->sender, &c->receiver);
  }
  return rc == 0 ? add_peer(&c->receiver, &c->sender) : rc;
}

static void release_node(node *n) {
  if (n->t != NULL) {
    if (!transport_is_idle(n->t)) {
      close_node(n); /* never started: its thread did not run */
    }
    transport_destroy(n->t);
    n->t = NULL;
  }
  if (n->ring_ready) {
    io_uring_queue_exit(&n->ring);
    n->ring_ready = false;
  }
}

static void release_transport_case(transport_case *c) {
  release_node(&c->sender);
  release_node(&c->receiver);
  free(c->entries);
  free(c->scratch);
  c->entries = c->scratch = NULL;
}

/* Transports are created here and handed to their threads, which own
 * them (and their rings) from then on until joined. */
static int run_transport_case(const settings *s, shape shape, const uint8_t *pattern,
                              transport_case *c) {
  c->settings = s;
  c->shape = shape;
  c->pattern = pattern;
  c->schedule.length_ns = (uint64_t)(s->seconds * NS_PER_SECOND);
  int rc = prepare_transport_case(c);
  pthread_t sender, receiver;
  bool receiver_started = false;
  if (rc == 0) {
    rc = -pthread_create(&receiver, NULL, receiver_main, c);
    receiver_started = rc == 0;
  }
  if (rc == 0 && (rc = -pthread_create(&sender, NULL, sender_main, c)) == 0) {
    rc = schedule_open(&c->schedule, 2);
    pthread_join(sender, NULL);
  }
  if (receiver_started) {
    if (rc != 0) {
      schedule_fail(&c->schedule, rc); /* stops a receiver whose sender never ran */
    }
    pthread_join(receiver, NULL);
  }
  rc = rc != 0 ? rc : atomic_load(&c->schedule.error);
  release_transport_case(c);
  return rc;
}

/* ---- report ------------------------------------------------------------------- */

typedef struct run {
  settings settings;
  raw_case raw[RAW_METHOD_COUNT];
  transport_case cases[CASE_COUNT];
  raw_case adjacent[CASE_COUNT]; /* the blocking raw loop right before each case */
  uint32_t cases_done;
} run;

static double raw_mb_per_second(const raw_case *r) {
  window w = meter_window(&r->receiver);
  return per_second((double)w.counted.bytes / MB, w.seconds);
}

/* The fastest raw run of the whole run: the strictest comparison. */
static double best_raw_mb_per_second(const run *x) {
  double best = 0;
  for (int i = 0; i < RAW_METHOD_COUNT; i++) {
    double rate = raw_mb_per_second(&x->raw[i]);
    best = rate > best ? rate : best;
  }
  for (uint32_t i = 0; i < x->cases_done; i++) {
    double rate = raw_mb_per_second(&x->adjacent[i]);
    best = rate > best ? rate : best;
  }
  return best;
}

/* Figures of one transport case, from node 2's window (what was carried)
 * and both threads' CPU over their windows. */
typedef struct case_figures {
  double messages_per_second;
  double entries_per_second;
  double wire_mb_per_second;
  double user_mb_per_second;
  double adjacent_raw_mb_per_second;
  double ratio_to_raw;  /* to the adjacent raw run: the target's ratio */
  double ratio_to_best; /* to the fastest raw run */
  double sender_cores, receiver_cores, process_cores, other_cores;
  double sender_ns_per_message, receiver_ns_per_message, cpu_ns_per_message;
  double messages_per_frame;
  double entries_per_cpu_second; /* both loops' CPU together */
  uint64_t lost;
} case_figures;

static void cpu_figures(const transport_case *c, const window *sent, const window *got,
                        case_figures *f) {
  f->sender_cores = per_second(sent->thread_cpu_seconds, sent->seconds);
  f->receiver_cores = per_second(got->thread_cpu_seconds, got->seconds);
  f->process_cores = per_second(got->process_cpu_seconds, got->seconds);
  f->other_cores = f->process_cores - f->sender_cores - f->receiver_cores;
  f->other_cores = f->other_cores > 0 ? f->other_cores : 0;
  double messages = (double)got->counted.messages;
  /* CPU per message: each thread's CPU per second over the messages carried
   * per second, so windows a few microseconds apart compare fairly. */
  f->sender_ns_per_message = messages > 0 ? f->sender_cores * 1e9 / f->messages_per_second : 0;
  f->receiver_ns_per_message = messages > 0 ? f->receiver_cores * 1e9 / f->messages_per_second : 0;
  f->cpu_ns_per_message = f->sender_ns_per_message + f->receiver_ns_per_message;
  double cores = f->sender_cores + f->receiver_cores;
  f->entries_per_cpu_second = cores > 0 ? f->entries_per_second / cores : 0;
  uint64_t sent_total = atomic_load(&c->messages_sent);
  uint64_t got_total = c->receiver.meter.total.messages;
  f->lost = sent_total > got_total ? sent_total - got_total : 0;
}

static case_figures figures_of(const run *x, uint32_t index) {
  const transport_case *c = &x->cases[index];
  case_figures f = {0};
  window sent = meter_window(&c->sender.meter);
  window got = meter_window(&c->receiver.meter);
  f.messages_per_second = per_second((double)got.counted.messages, got.seconds);
  f.entries_per_second = per_second((double)got.counted.entries, got.seconds);
  f.wire_mb_per_second = per_second((double)got.counted.bytes / MB, got.seconds);
  f.user_mb_per_second = per_second((double)got.counted.user_bytes / MB, got.seconds);
  f.adjacent_raw_mb_per_second = raw_mb_per_second(&x->adjacent[index]);
  double best = best_raw_mb_per_second(x);
  f.ratio_to_raw =
      f.adjacent_raw_mb_per_second > 0 ? f.wire_mb_per_second / f.adjacent_raw_mb_per_second : 0;
  f.ratio_to_best = best > 0 ? f.wire_mb_per_second / best : 0;
  f.messages_per_frame =
      got.counted.frames > 0 ? (double)got.counted.messages / (double)got.counted.frames : 0;
  cpu_figures(c, &sent, &got, &f);
  return f;
}

/* The index of a case that ran, or -1. */
static int find_case(const run *x, uint32_t groups, uint32_t entry_bytes) {
  for (uint32_t i = 0; i < x->cases_done; i++) {
    if (x->cases[i].shape.groups == groups && x->cases[i].shape.entry_bytes == entry_bytes) {
      return (int)i;
    }
  }
  return -1;
}

/* Anything that makes a case's figures untrustworthy. */
static uint64_t case_faults(const transport_case *c) {
  const transport_stats *a = &c->sender.stats;
  const transport_stats *b = &c->receiver.stats;
  uint64_t faults = c->out_of_order + c->decode_errors + c->unexpected_frames +
                    a->frames_dropped_down + a->connections_lost + b->connections_lost;
  for (int i = 0; i < TRANSPORT_REASON_COUNT; i++) {
    faults += a->errors[i] + b->errors[i];
  }
  return faults + (c->drain_timed_out ? 1 : 0);
}

static void print_raw_row(const raw_case *r) {
  window sent = meter_window(&r->sender);
  window got = meter_window(&r->receiver);
  printf("  %-38s %9.1f %10.2f %10.2f\n", r->name, raw_mb_per_second(r),
         per_second(sent.thread_cpu_seconds, sent.seconds),
         per_second(got.thread_cpu_seconds, got.seconds));
}

static void print_raw_table(const run *x) {
  printf("\nlimit: raw TCP on loopback, one connection, %u-byte writes and reads,\n"
         "a sender and a receiver thread\n",
         RAW_BUFFER_BYTES);
  printf("  %-38s %9s %10s %10s\n", "method", "MB/s", "send cores", "recv cores");
  for (int i = 0; i < RAW_METHOD_COUNT; i++) {
    print_raw_row(&x->raw[i]);
  }
  for (uint32_t i = 0; i < x->cases_done; i++) {
    print_raw_row(&x->adjacent[i]);
  }
  printf("  the fastest: %.1f MB/s\n", best_raw_mb_per_second(x));
}

static void print_case_row(const run *x, uint32_t index) {
  const transport_case *c = &x->cases[index];
  case_figures f = figures_of(x, index);
  printf("  %6u %5u %4u %5.0f %9.0f %10.0f %7.1f %7.1f %7.1f %5.2f %5.2f %6.0f %6.0f %5.2f %5.2f"
         " %5.2f %4llu\n",
         c->shape.groups, c->shape.entry_bytes, c->shape.entries_per_message, f.messages_per_frame,
         f.messages_per_second, f.entries_per_second, f.wire_mb_per_second, f.user_mb_per_second,
         f.adjacent_raw_mb_per_second, f.ratio_to_raw, f.ratio_to_best, f.sender_ns_per_message,
         f.receiver_ns_per_message, f.sender_cores, f.receiver_cores, f.other_cores,
         (unsigned long long)f.lost);
}

static double mean_send_kib(const transport_case *c) {
  const transport_stats *a = &c->sender.stats;
  return a->sends > 0 ? (double)a->bytes_sent / (double)a->sends / 1024.0 : 0;
}

static void print_case_notes(const run *x) {
  for (uint32_t i = 0; i < x->cases_done; i++) {
    const transport_case *c = &x->cases[i];
    printf("  %u x %u B: %llu sendmsg of %.0f KiB on average; %llu reservations refused\n"
           "    (queue full) and retried after a wait\n",
           c->shape.groups, c->shape.entry_bytes, (unsigned long long)c->sender.stats.sends,
           mean_send_kib(c), (unsigned long long)c->full_waits);
    uint64_t faults = case_faults(c);
    if (faults > 0) {
      printf("  ERROR: %llu faults (out of order %llu, decode errors %llu, connection errors\n"
             "    or losses, drain timeout %s)\n",
             (unsigned long long)faults, (unsigned long long)c->out_of_order,
             (unsigned long long)c->decode_errors, c->drain_timed_out ? "yes" : "no");
    }
  }
}

static void print_transport_table(const run *x) {
  printf("\ntransport: node 1 -> node 2, APPEND messages encoded in place into %u-byte\n"
         "batches, every message decoded by node 2; default transport options%s\n",
         x->settings.frame_bytes, x->settings.queue_bytes != 0 ? " but the queue bound" : "");
  printf("  %6s %5s %4s %5s %9s %10s %7s %7s %7s %5s %5s %6s %6s %5s %5s %5s %4s\n", "groups",
         "entry", "/msg", "/frm", "msgs/s", "entries/s", "wire MB", "user MB", "raw MB", "x raw",
         "xbest", "snd ns", "rcv ns", "snd c", "rcv c", "oth c", "lost");
  for (uint32_t i = 0; i < x->cases_done; i++) {
    print_case_row(x, i);
  }
  printf("  entry: data bytes per entry; /msg: entries per message; /frm: messages per batch;\n"
         "  wire MB: MB/s of frames (headers included); user MB: entry data MB/s;\n"
         "  raw MB: the blocking raw loop run right before the case; x raw: wire MB/s / raw MB;\n"
         "  xbest: wire MB/s / the fastest raw run; snd/rcv ns: CPU ns per message of node 1's\n"
         "  and node 2's thread; snd/rcv/oth c: cores used by node 1's thread, node 2's\n"
         "  thread and the rest of the process (io_uring workers); lost: messages sent and\n"
         "  never decoded (after draining)\n");
  print_case_notes(x);
}

static void print_target(const char *what, double figure, double target, const char *unit) {
  printf("  %-44s %8.2f %-4s target %5.2f  ratio %5.2f  %s\n", what, figure, unit, target,
         target > 0 ? figure / target : 0, figure >= target ? "met" : "MISSED");
}

static void print_bandwidth_target(const run *x, uint32_t groups) {
  int index = find_case(x, groups, 1024);
  if (index < 0) {
    return;
  }
  case_figures f = figures_of(x, (uint32_t)index);
  char what[96];
  snprintf(what, sizeof(what), "%u x 1 KiB: wire MB/s / adjacent raw MB/s", groups);
  print_target(what, f.ratio_to_raw, TARGET_BANDWIDTH_RATIO, "x");
  printf("    (to the fastest raw run: %.2f x)\n", f.ratio_to_best);
}

/* Each node's loop is one thread: within one core when that thread stays
 * under one core and the process has no other busy threads. */
static bool within_one_core(const case_figures *f) {
  return f->sender_cores <= 1.0 && f->receiver_cores <= 1.0 && f->other_cores < 0.05;
}

static void print_small_entries_target(const run *x, uint32_t groups) {
  int index = find_case(x, groups, 16);
  if (index < 0) {
    return;
  }
  case_figures f = figures_of(x, (uint32_t)index);
  char what[96];
  snprintf(what, sizeof(what), "%u x 16 B: entries/s", groups);
  print_target(what, f.entries_per_second / 1e6, TARGET_SMALL_ENTRIES_PER_SECOND / 1e6, "M/s");
  printf("    CPU: node 1 %.2f cores, node 2 %.2f, other threads %.2f: %s;\n"
         "    %.1f M entries per CPU-second of both nodes together\n",
         f.sender_cores, f.receiver_cores, f.other_cores,
         within_one_core(&f) ? "each node within one core" : "NOT within one core per node",
         f.entries_per_cpu_second / 1e6);
}

static void print_table(const run *x) {
  printf("transport-bench: loopback 127.0.0.1, %.1f s per case (after %.1f s of warm-up)\n",
         x->settings.seconds, WARMUP_NS / NS_PER_SECOND);
  print_raw_table(x);
  print_transport_table(x);
  printf("\ntargets (ratio = figure / target)\n");
  print_bandwidth_target(x, 1);
  print_bandwidth_target(x, MAX_GROUPS);
  print_small_entries_target(x, 1);
  print_small_entries_target(x, MAX_GROUPS);
}

static void print_json_raw(const raw_case *r, bool last) {
  window sent = meter_window(&r->sender);
  window got = meter_window(&r->receiver);
  printf("    {\"method\": \"%s\", \"mb_per_s\": %.1f, \"sender_cores\": %.3f, "
         "\"receiver_cores\": %.3f}%s\n",
         r->name, raw_mb_per_second(r), per_second(sent.thread_cpu_seconds, sent.seconds),
         per_second(got.thread_cpu_seconds, got.seconds), last ? "" : ",");
}

static void print_json_case(const run *x, uint32_t index) {
  const transport_case *c = &x->cases[index];
  case_figures f = figures_of(x, index);
  printf("    {\"groups\": %u, \"entry_bytes\": %u, \"entries_per_message\": %u, "
         "\"messages_per_frame\": %.1f, \"messages_per_s\": %.0f, \"entries_per_s\": %.0f, "
         "\"wire_mb_per_s\": %.1f, \"user_mb_per_s\": %.1f, \"adjacent_raw_mb_per_s\": %.1f, "
         "\"ratio_to_raw\": %.3f, \"ratio_to_best_raw\": %.3f, ",
         c->shape.groups, c->shape.entry_bytes, c->shape.entries_per_message, f.messages_per_frame,
         f.messages_per_second, f.entries_per_second, f.wire_mb_per_second, f.user_mb_per_second,
         f.adjacent_raw_mb_per_second, f.ratio_to_raw, f.ratio_to_best);
  printf("\"sender_cpu_ns_per_message\": %.1f, \"receiver_cpu_ns_per_message\": %.1f, "
         "\"sender_cores\": %.3f, \"receiver_cores\": %.3f, \"other_cores\": %.3f, "
         "\"sends\": %llu, \"mean_send_kib\": %.1f, \"full_waits\": %llu, \"lost\": %llu, "
         "\"faults\": %llu}%s\n",
         f.sender_ns_per_message, f.receiver_ns_per_message, f.sender_cores, f.receiver_cores,
         f.other_cores, (unsigned long long)c->sender.stats.sends, mean_send_kib(c),
         (unsigned long long)c->full_waits, (unsigned long long)f.lost,
         (unsigned long long)case_faults(c), index + 1 == x->cases_done ? "" : ",");
}

static void print_json(const run *x) {
  printf("{\n  \"seconds\": %.2f, \"frame_bytes\": %u, \"queue_bytes\": %u,\n", x->settings.seconds,
         x->settings.frame_bytes, x->settings.queue_bytes);
  printf("  \"raw\": [\n");
  for (int i = 0; i < RAW_METHOD_COUNT; i++) {
    print_json_raw(&x->raw[i], false);
  }
  for (uint32_t i = 0; i < x->cases_done; i++) {
    print_json_raw(&x->adjacent[i], i + 1 == x->cases_done);
  }
  printf("  ],\n  \"best_raw_mb_per_s\": %.1f,\n  \"transport\": [\n", best_raw_mb_per_second(x));
  for (uint32_t i = 0; i < x->cases_done; i++) {
    print_json_case(x, i);
  }
  printf("  ],\n  \"targets\": {\"bandwidth_ratio\": %.2f, \"small_entries_per_s\": %.0f}\n}\n",
         TARGET_BANDWIDTH_RATIO, TARGET_SMALL_ENTRIES_PER_SECOND);
}

/* ---- main ---------------------------------------------------------------------- */

/* Bytes that hash like real data, never all zero. */
static uint8_t *make_pattern(size_t bytes) {
  uint8_t *buffer = malloc(bytes);
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; buffer != NULL && i < bytes; i++) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    buffer[i] = (uint8_t)state | 1u;
  }
  return buffer;
}

static int measure_raw(double seconds, const char *name, raw_method method, uint8_t *pattern,
                       raw_case *r) {
  r->name = name;
  r->method = method;
  int rc = run_raw_case(seconds, r, pattern);
  if (rc != 0) {
    fprintf(stderr, "transport-bench: raw loop (%s): %s\n", r->name, strerror(-rc));
  }
  return rc;
}

static int measure_limit(run *x, uint8_t *pattern) {
  int rc =
      measure_raw(x->settings.seconds, "write/read (blocking)", RAW_BLOCKING, pattern, &x->raw[0]);
  if (rc == 0) {
    rc = measure_raw(x->settings.seconds, "io_uring send/recv", RAW_URING, pattern, &x->raw[1]);
  }
  return rc;
}

/* Each case right after its own adjacent raw run (half as long). */
static int measure_transport(run *x, uint8_t *pattern) {
  static char names[CASE_COUNT][48];
  for (uint32_t i = 0; i < CASE_COUNT; i++) {
    shape shape = transport_shapes[i];
    if (!case_selected(&x->settings, shape)) {
      continue;
    }
    uint32_t slot = x->cases_done;
    snprintf(names[slot], sizeof(names[slot]), "write/read, before %u x %u B", shape.groups,
             shape.entry_bytes);
    int rc = measure_raw(x->settings.seconds / 2, names[slot], RAW_BLOCKING, pattern,
                         &x->adjacent[slot]);
    if (rc == 0) {
      rc = run_transport_case(&x->settings, shape, pattern, &x->cases[slot]);
    }
    if (rc != 0) {
      fprintf(stderr, "transport-bench: %u groups x %u B: %s\n", shape.groups, shape.entry_bytes,
              rc <= TRANSPORT_E_MAGIC ? transport_strerror(rc) : strerror(-rc));
      return rc;
    }
    x->cases_done = slot + 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  static run x; /* per-group index tables make it large */
  if (parse_settings(argc, argv, &x.settings) != 0) {
    usage(stderr);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN); /* a receiver gone early is an error code */
  uint8_t *pattern = make_pattern(PATTERN_BYTES);
  int rc = pattern == NULL ? -ENOMEM : measure_limit(&x, pattern);
  if (rc == 0) {
    rc = measure_transport(&x, pattern);
  }
  free(pattern);
  if (rc == 0) {
    x.settings.json ? print_json(&x) : print_table(&x);
  }
  bool faults = false;
  for (uint32_t i = 0; i < x.cases_done; i++) {
    faults = faults || case_faults(&x.cases[i]) > 0;
  }
  return rc == 0 && !faults ? 0 : 1;
}
