/*
 * ack_client.c - ack-client: writes keys through flotillad's Redis protocol
 * and remembers exactly which writes were acknowledged, then checks that
 * none of them was lost. Used by server_kill_test.sh.
 *
 *   ack-client write --ports P1,P2,... --acks FILE [--seconds S] [--pipeline K]
 *       one connection per port (plain clients: the server forwards to the
 *       group's leader); connection i sends SET key:<n> <value(n)> for
 *       n = i, i + ports, i + 2 * ports, ..., so every key is written once,
 *       keys spread over all slots. Up to K (default 16) SETs are in flight
 *       per connection. Each +OK appends "<n>\n" to FILE (flushed every
 *       round, so the file is complete up to the last line whenever the
 *       client is stopped); any other reply counts as an error and the key
 *       is not recorded; a lost connection loses its in-flight SETs (their
 *       fate is unknown) and is reopened after a short pause. Stops on
 *       SIGTERM/SIGINT or after S seconds (default 60) and prints a summary.
 *   ack-client verify --port P --acks FILE [--seconds S]
 *       GETs every key listed in FILE from port P and compares the value.
 *       Error replies (e.g. a group without a leader yet) and lost
 *       connections are retried until S seconds (default 30) have passed;
 *       a missing key or a wrong value fails at once. Exits 0 when every
 *       key matched, 1 naming the first key that did not.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/server/client.h"

#define MAX_PORTS 16
#define MAX_PIPELINE 256
#define RECONNECT_PAUSE_MS 50
/* After a batch with error replies (no leader yet, forwarding failed) the
 * stream waits this long before the next batch instead of spinning. */
#define ERROR_PAUSE_MS 10
/* A connection whose oldest request has waited this long is reopened: the
 * client must keep writing to the other nodes whatever one node does. */
#define STUCK_REQUEST_MS 5000
#define VERIFY_BATCH 256
#define VALUE_BYTES 48

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int signal_number) {
  (void)signal_number;
  stop_requested = 1;
}

/* The value stored under key:<n>: the number and a mix of it, so a value
 * written under a different key never matches. */
static size_t value_of(uint64_t n, char value[VALUE_BYTES]) {
  uint64_t mix = n + 0x9e3779b97f4a7c15ull;
  mix = (mix ^ (mix >> 30)) * 0xbf58476d1ce4e5b9ull;
  mix = (mix ^ (mix >> 27)) * 0x94d049bb133111ebull;
  mix ^= mix >> 31;
  int length = snprintf(value, VALUE_BYTES, "value-%" PRIu64 "-%016" PRIx64, n, mix);
  assert(length > 0 && length < VALUE_BYTES);
  return (size_t)length;
}

static size_t key_of(uint64_t n, char key[32]) {
  int length = snprintf(key, 32, "key:%" PRIu64, n);
  assert(length > 0 && length < 32);
  return (size_t)length;
}

/* ---- write mode ------------------------------------------------------------ */

typedef struct writer_stream {
  client_connection connection;
  uint64_t next_key;                /* the next n this stream writes */
  uint64_t in_flight[MAX_PIPELINE]; /* n of each unanswered SET, oldest first */
  uint32_t in_flight_head;
  uint32_t in_flight_count;
  uint64_t oldest_sent_ms;
  uint64_t reconnect_at_ms;
  uint64_t resume_at_ms; /* no new batch before this */
} writer_stream;

typedef struct writer {
  writer_stream streams[MAX_PORTS];
  uint32_t stream_count;
  uint32_t pipeline;
  FILE *acks;
  uint64_t acknowledged;
  uint64_t errors;
  uint64_t disconnects;
  char first_error[128];
} writer;

static void writer_note_error(writer *w, const char *text) {
  w->errors++;
  if (w->first_error[0] == '\0') {
    snprintf(w->first_error, sizeof(w->first_error), "%s", text);
  }
}

static void stream_drop(writer *w, writer_stream *s, uint64_t now) {
  if (client_connection_open(&s->connection)) {
    w->disconnects++;
  }
  client_connection_close(&s->connection);
  s->in_flight_count = 0;
  s->in_flight_head = 0;
  s->reconnect_at_ms = now + RECONNECT_PAUSE_MS;
}

static void stream_send_batch(writer *w, writer_stream *s, uint32_t stride, uint64_t now) {
  while (s->in_flight_count < w->pipeline) {
    char key[32], value[VALUE_BYTES];
    size_t key_bytes = key_of(s->next_key, key);
    size_t value_bytes = value_of(s->next_key, value);
    client_argument arguments[] = {{"SET", 3}, {key, key_bytes}, {value, value_bytes}};
    if (client_connection_queue(&s->connection, arguments, 3) != 0) {
      break; /* output buffer full: the rest goes next round */
    }
    uint32_t slot = (s->in_flight_head + s->in_flight_count) % MAX_PIPELINE;
    s->in_flight[slot] = s->next_key;
    s->in_flight_count++;
    s->next_key += stride;
  }
  s->oldest_sent_ms = now;
}

/* Takes every complete reply off the stream; false if the stream broke. */
static bool stream_take_replies(writer *w, writer_stream *s) {
  client_reply reply;
  int status;
  while ((status = client_connection_reply(&s->connection, &reply)) > 0) {
    if (s->in_flight_count == 0) {
      writer_note_error(w, "a reply nobody asked for");
      return false;
    }
    uint64_t n = s->in_flight[s->in_flight_head];
    s->in_flight_head = (s->in_flight_head + 1) % MAX_PIPELINE;
    s->in_flight_count--;
    if (reply.type == '+' && reply.length == 2 && memcmp(reply.data, "OK", 2) == 0) {
      fprintf(w->acks, "%" PRIu64 "\n", n);
      w->acknowledged++;
    } else {
      char text[96];
      snprintf(text, sizeof(text), "SET key:%" PRIu64 ": %c%.*s", n, reply.type,
               (int)(reply.length < 80 ? reply.length : 80), reply.data);
      writer_note_error(w, text);
      s->resume_at_ms = client_now_ms() + ERROR_PAUSE_MS;
    }
  }
  if (status < 0) {
    writer_note_error(w, "malformed reply");
    return false;
  }
  return true;
}

static void stream_step(writer *w, writer_stream *s, short revents, uint64_t now) {
  bool healthy = true;
  if (revents & (POLLIN | POLLHUP | POLLERR)) {
    /* Replies that arrived before the end of the stream still count. */
    bool open = client_connection_read(&s->connection) == 0;
    healthy = stream_take_replies(w, s) && open;
  }
  if (healthy && (revents & POLLOUT)) {
    healthy = client_connection_write(&s->connection) == 0;
  }
  if (healthy && s->in_flight_count > 0 && now - s->oldest_sent_ms > STUCK_REQUEST_MS) {
    writer_note_error(w, "no reply within 5 s: connection reopened");
    healthy = false;
  }
  if (!healthy) {
    stream_drop(w, s, now);
  }
}

static void writer_prepare(writer *w, uint64_t now) {
  for (uint32_t i = 0; i < w->stream_count; i++) {
    writer_stream *s = &w->streams[i];
    if (!client_connection_open(&s->connection) && now >= s->reconnect_at_ms) {
      if (client_connection_connect(&s->connection) != 0) {
        s->reconnect_at_ms = now + RECONNECT_PAUSE_MS;
      }
    }
    if (client_connection_open(&s->connection) && s->in_flight_count == 0 &&
        now >= s->resume_at_ms) {
      stream_send_batch(w, s, w->stream_count, now);
    }
  }
}

static void writer_round(writer *w) {
  struct pollfd fds[MAX_PORTS];
  uint64_t now = client_now_ms();
  writer_prepare(w, now);
  for (uint32_t i = 0; i < w->stream_count; i++) {
    client_connection *c = &w->streams[i].connection;
    fds[i].fd = client_connection_open(c) ? c->fd : -1;
    fds[i].events = (short)(POLLIN | (client_connection_pending(c) ? POLLOUT : 0));
    fds[i].revents = 0;
  }
  if (poll(fds, w->stream_count, 20) < 0 && errno != EINTR) {
    perror("ack-client: poll");
    exit(1);
  }
  now = client_now_ms();
  for (uint32_t i = 0; i < w->stream_count; i++) {
    if (fds[i].fd >= 0) {
      stream_step(w, &w->streams[i], fds[i].revents, now);
    }
  }
  fflush(w->acks);
}

static int parse_ports(const char *list, uint16_t *ports, uint32_t *count) {
  char copy[256];
  snprintf(copy, sizeof(copy), "%s", list);
  *count = 0;
  for (char *save = NULL, *item = strtok_r(copy, ",", &save); item != NULL;
       item = strtok_r(NULL, ",", &save)) {
    long port = strtol(item, NULL, 10);
    if (port <= 0 || port > 65535 || *count == MAX_PORTS) {
      return -1;
    }
    ports[(*count)++] = (uint16_t)port;
  }
  return *count > 0 ? 0 : -1;
}

static int run_writer(const uint16_t *ports, uint32_t port_count, const char *acks_path,
                      uint32_t seconds, uint32_t pipeline) {
  static writer w; /* large: the streams' buffers */
  w.acks = fopen(acks_path, "a");
  if (w.acks == NULL) {
    fprintf(stderr, "ack-client: cannot open %s: %s\n", acks_path, strerror(errno));
    return 1;
  }
  w.stream_count = port_count;
  w.pipeline = pipeline;
  for (uint32_t i = 0; i < port_count; i++) {
    client_connection_init(&w.streams[i].connection, ports[i]);
    w.streams[i].next_key = i;
  }
  uint64_t end = client_now_ms() + (uint64_t)seconds * 1000u;
  while (!stop_requested && client_now_ms() < end) {
    writer_round(&w);
  }
  for (uint32_t i = 0; i < port_count; i++) {
    client_connection_close(&w.streams[i].connection);
  }
  fclose(w.acks);
  printf("ack-client: %" PRIu64 " acknowledged, %" PRIu64 " errors, %" PRIu64 " disconnects%s%s\n",
         w.acknowledged, w.errors, w.disconnects, w.first_error[0] ? "; first error: " : "",
         w.first_error);
  return 0;
}

/* ---- verify mode ------------------------------------------------------------ */

typedef struct key_list {
  uint64_t *keys;
  size_t count;
} key_list;

static int read_acks(const char *path, key_list *list) {
  FILE *file = fopen(path, "r");
  if (file == NULL) {
    fprintf(stderr, "ack-client: cannot open %s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t capacity = 1024;
  list->keys = malloc(capacity * sizeof(*list->keys));
  list->count = 0;
  uint64_t n;
  while (list->keys != NULL && fscanf(file, "%" SCNu64, &n) == 1) {
    if (list->count == capacity) {
      capacity *= 2;
      uint64_t *bigger = realloc(list->keys, capacity * sizeof(*list->keys));
      if (bigger == NULL) {
        free(list->keys);
        list->keys = NULL;
        break;
      }
      list->keys = bigger;
    }
    list->keys[list->count++] = n;
  }
  fclose(file);
  return list->keys != NULL ? 0 : -1;
}

typedef enum batch_result { BATCH_OK, BATCH_RETRY, BATCH_LOST } batch_result;

static batch_result check_reply(uint64_t n, const client_reply *reply, uint16_t port) {
  char value[VALUE_BYTES];
  size_t value_bytes = value_of(n, value);
  if (reply->type == '$' && reply->length == value_bytes &&
      memcmp(reply->data, value, value_bytes) == 0) {
    return BATCH_OK;
  }
  if (reply->type == '-') {
    return BATCH_RETRY;
  }
  if (reply->type == '$' && reply->is_null) {
    fprintf(stderr, "ack-client: acknowledged key:%" PRIu64 " is missing on port %u\n", n, port);
  } else {
    fprintf(stderr, "ack-client: key:%" PRIu64 " on port %u: expected '%s', got %c'%.*s'\n", n,
            port, value, reply->type, (int)(reply->length < 80 ? reply->length : 80), reply->data);
  }
  return BATCH_LOST;
}

/* GETs keys[0..count) in one pipeline and checks every value. */
static batch_result verify_batch(client_connection *c, const uint64_t *keys, size_t count) {
  for (size_t i = 0; i < count; i++) {
    char key[32];
    client_argument arguments[] = {{"GET", 3}, {key, key_of(keys[i], key)}};
    if (client_connection_queue(c, arguments, 2) != 0) {
      return BATCH_RETRY;
    }
  }
  batch_result result = BATCH_OK;
  for (size_t i = 0; i < count; i++) {
    client_reply reply;
    if (client_connection_exchange(c, &reply, STUCK_REQUEST_MS) != 0) {
      return BATCH_RETRY;
    }
    batch_result one = check_reply(keys[i], &reply, c->port);
    if (one == BATCH_LOST) {
      return BATCH_LOST;
    }
    if (one == BATCH_RETRY) {
      result = BATCH_RETRY; /* read the rest of the pipeline first */
    }
  }
  return result;
}

static int run_verify(uint16_t port, const char *acks_path, uint32_t seconds) {
  key_list list;
  if (read_acks(acks_path, &list) != 0) {
    return 1;
  }
  client_connection c;
  client_connection_init(&c, port);
  uint64_t deadline = client_now_ms() + (uint64_t)seconds * 1000u;
  uint64_t retries = 0;
  size_t done = 0;
  while (done < list.count) {
    size_t count = list.count - done < VERIFY_BATCH ? list.count - done : VERIFY_BATCH;
    batch_result result = BATCH_RETRY;
    if (client_connection_open(&c) || client_connection_connect(&c) == 0) {
      result = verify_batch(&c, list.keys + done, count);
    }
    if (result == BATCH_LOST) {
      free(list.keys);
      return 1;
    }
    if (result == BATCH_OK) {
      done += count;
      continue;
    }
    retries++;
    client_connection_close(&c);
    if (client_now_ms() >= deadline) {
      fprintf(stderr, "ack-client: port %u still failing after %u s; %zu of %zu keys verified\n",
              port, seconds, done, list.count);
      free(list.keys);
      return 1;
    }
    client_pause_ms(100);
  }
  client_connection_close(&c);
  printf("ack-client: all %zu acknowledged keys present on port %u (%" PRIu64 " retries)\n",
         list.count, port, retries);
  free(list.keys);
  return 0;
}

/* ---- main ------------------------------------------------------------------------ */

static int usage(void) {
  fprintf(stderr, "usage: ack-client write --ports P1,P2,... --acks FILE [--seconds S] "
                  "[--pipeline K]\n"
                  "       ack-client verify --port P --acks FILE [--seconds S]\n");
  return 2;
}

int main(int argc, char **argv) {
  static const struct option options[] = {
      {"ports", required_argument, NULL, 'p'},    {"port", required_argument, NULL, 'p'},
      {"acks", required_argument, NULL, 'a'},     {"seconds", required_argument, NULL, 's'},
      {"pipeline", required_argument, NULL, 'k'}, {NULL, 0, NULL, 0}};
  if (argc < 2) {
    return usage();
  }
  const char *mode = argv[1], *ports_text = NULL, *acks = NULL;
  long seconds = -1, pipeline = 16;
  int option;
  optind = 2;
  while ((option = getopt_long(argc, argv, "", options, NULL)) != -1) {
    switch (option) {
    case 'p':
      ports_text = optarg;
      break;
    case 'a':
      acks = optarg;
      break;
    case 's':
      seconds = strtol(optarg, NULL, 10);
      break;
    case 'k':
      pipeline = strtol(optarg, NULL, 10);
      break;
    default:
      return usage();
    }
  }
  uint16_t ports[MAX_PORTS];
  uint32_t port_count = 0;
  if (optind != argc || ports_text == NULL || acks == NULL ||
      parse_ports(ports_text, ports, &port_count) != 0 || pipeline < 1 || pipeline > MAX_PIPELINE) {
    return usage();
  }
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_stop_signal);
  signal(SIGINT, on_stop_signal);
  if (strcmp(mode, "write") == 0) {
    return run_writer(ports, port_count, acks, seconds < 0 ? 60 : (uint32_t)seconds,
                      (uint32_t)pipeline);
  }
  if (strcmp(mode, "verify") == 0 && port_count == 1) {
    return run_verify(ports[0], acks, seconds < 0 ? 30 : (uint32_t)seconds);
  }
  return usage();
}
