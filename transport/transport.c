/*
 * transport.c - the life of a transport (create, tick, shutdown, destroy),
 * its statistics, its logging and its self-check. The connections
 * themselves are in connection.c, the queues in peer.c.
 *
 * Lifecycle:
 *
 *   create --> RUNNING --transport_shutdown--> SHUTTING DOWN --last CQE--> idle --> destroy
 *
 * While shutting down every connection is CLOSING and the listener's accept
 * is cancelled; the caller keeps dispatching the ring until
 * transport_is_idle(), because the kernel may still write into buffers of
 * operations in flight, and only then frees the transport.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/transport_internal.h"

/* ---- names ---- */

const char *transport_reason_name(int reason) {
  static const char *const names[TRANSPORT_REASON_COUNT] = {
      [TRANSPORT_REASON_BAD_MAGIC] = "bad magic",
      [TRANSPORT_REASON_BAD_VERSION] = "bad version",
      [TRANSPORT_REASON_BAD_TYPE] = "bad frame type",
      [TRANSPORT_REASON_TOO_LARGE] = "frame too large",
      [TRANSPORT_REASON_HEADER_CHECKSUM] = "header checksum",
      [TRANSPORT_REASON_PAYLOAD_CHECKSUM] = "payload checksum",
      [TRANSPORT_REASON_TRUNCATED] = "truncated frame",
      [TRANSPORT_REASON_UNEXPECTED_FRAME] = "unexpected frame",
      [TRANSPORT_REASON_BAD_HANDSHAKE] = "bad handshake",
      [TRANSPORT_REASON_HANDSHAKE_TIMEOUT] = "handshake timeout",
      [TRANSPORT_REASON_FRAME_TIMEOUT] = "frame timeout",
      [TRANSPORT_REASON_SOCKET_ERROR] = "socket error",
  };
  return reason >= 0 && reason < TRANSPORT_REASON_COUNT ? names[reason] : "unknown reason";
}

/* ---- helpers shared by the files ---- */

static void vlog(transport *t, transport_log_level level, const char *format, va_list arguments) {
  char message[384];
  vsnprintf(message, sizeof(message), format, arguments);
  t->in_callback++;
  t->options.log(t->options.context, level, message);
  t->in_callback--;
}

void transport_log(transport *t, transport_log_level level, const char *format, ...) {
  if (t->options.log == NULL) {
    return;
  }
  va_list arguments;
  va_start(arguments, format);
  vlog(t, level, format, arguments);
  va_end(arguments);
}

void transport_log_once(transport *t, transport_peer *peer, unsigned bit, transport_log_level level,
                        const char *format, ...) {
  assert(bit < 32);
  uint32_t *logged = peer != NULL ? &peer->logged : &t->logged;
  if ((*logged & (1u << bit)) != 0) {
    return;
  }
  *logged |= 1u << bit;
  if (t->options.log == NULL) {
    return;
  }
  va_list arguments;
  va_start(arguments, format);
  vlog(t, level, format, arguments);
  va_end(arguments);
}

struct io_uring_sqe *transport_get_sqe(transport *t) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(t->ring);
  if (sqe == NULL) {
    /* The queue is full of other work: hand it to the kernel now. */
    io_uring_submit(t->ring);
    sqe = io_uring_get_sqe(t->ring);
  }
  return sqe;
}

void transport_report_peer(transport *t, transport_peer *peer, bool up) {
  if (peer->up == up) {
    return;
  }
  peer->up = up;
  transport_log(t, up ? TRANSPORT_LOG_INFO : TRANSPORT_LOG_WARN, "node %llu (%s) is %s",
                (unsigned long long)peer->node_id, peer->address_text, up ? "up" : "down");
  if (t->options.on_peer != NULL) {
    t->in_callback++;
    t->options.on_peer(t->options.context, peer->node_id, up);
    t->in_callback--;
  }
}

int transport_address_text(const struct sockaddr *address, socklen_t length, char *text,
                           size_t capacity) {
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (address->sa_family == AF_INET && length >= sizeof(struct sockaddr_in)) {
    const struct sockaddr_in *ipv4 = (const struct sockaddr_in *)address;
    inet_ntop(AF_INET, &ipv4->sin_addr, host, sizeof(host));
    port = ntohs(ipv4->sin_port);
    snprintf(text, capacity, "%s:%u", host, port);
    return 0;
  }
  if (address->sa_family == AF_INET6 && length >= sizeof(struct sockaddr_in6)) {
    const struct sockaddr_in6 *ipv6 = (const struct sockaddr_in6 *)address;
    inet_ntop(AF_INET6, &ipv6->sin6_addr, host, sizeof(host));
    port = ntohs(ipv6->sin6_port);
    snprintf(text, capacity, "[%s]:%u", host, port);
    return 0;
  }
  snprintf(text, capacity, "(unknown address family)");
  return -EAFNOSUPPORT;
}

/* ---- options and creation ---- */

void transport_options_default(transport_options *options) {
  memset(options, 0, sizeof(*options));
  options->shard_count = 1;
  options->max_frame_payload_bytes = 4u << 20;
  options->max_queue_bytes = 16u << 20;
  options->max_bulk_bytes = 8u << 20;
  options->bulk_quantum_bytes = 1u << 20;
  options->backoff_min_ms = 50;
  options->backoff_max_ms = 5000;
  options->handshake_timeout_ms = 5000;
  options->frame_timeout_ms = 10000;
}

/* Queues hold at least one largest frame; sizes stay below 2^31 so sums of
 * two never wrap in 32 bits. */
static int validate_sizes(const transport_options *options) {
  uint64_t largest_frame = (uint64_t)FRAME_HEADER_BYTES + options->max_frame_payload_bytes;
  const uint32_t queue_limit = 1u << 30;
  if (options->max_frame_payload_bytes == 0 ||
      options->max_frame_payload_bytes > TRANSPORT_MAX_FRAME_PAYLOAD_LIMIT ||
      options->max_queue_bytes < largest_frame || options->max_queue_bytes > queue_limit ||
      options->max_bulk_bytes < largest_frame || options->max_bulk_bytes > queue_limit ||
      options->bulk_quantum_bytes == 0) {
    return -EINVAL;
  }
  return 0;
}

static int validate_options(const transport_options *options, const struct io_uring *ring) {
  if (options == NULL || ring == NULL || options->node_id == 0 || options->on_frame == NULL ||
      options->shard_count == 0 || options->shard_id >= options->shard_count ||
      (options->peer_count > 0 && options->peers == NULL) ||
      options->peer_count > TRANSPORT_MAX_PEERS) {
    return -EINVAL;
  }
  if (options->backoff_min_ms == 0 || options->backoff_max_ms < options->backoff_min_ms ||
      options->handshake_timeout_ms == 0 || options->frame_timeout_ms == 0) {
    return -EINVAL;
  }
  if (options->listen_host != NULL && strlen(options->listen_host) > TRANSPORT_MAX_HOST_BYTES) {
    return -EINVAL;
  }
  return validate_sizes(options);
}

static void free_peers(transport *t) {
  for (uint32_t i = 0; i < t->peer_count; i++) {
    fault_discard_delayed(t, t->peers[i], false);
    free(t->peers[i]);
  }
  free(t->peers);
  t->peers = NULL;
  t->peer_count = t->peer_capacity = 0;
}

static int add_initial_peers(transport *t, const transport_options *options) {
  for (uint32_t i = 0; i < options->peer_count; i++) {
    int rc = transport_add_peer(t, &options->peers[i]);
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

int transport_create(const transport_options *options, struct io_uring *ring, transport **out) {
  *out = NULL;
  int rc = validate_options(options, ring);
  if (rc != 0) {
    return rc;
  }
  transport *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    return -ENOMEM;
  }
  t->options = *options;
  t->options.listen_host = NULL; /* the caller's strings are not kept */
  t->options.peers = NULL;
  t->options.peer_count = 0;
  t->ring = ring;
  t->listen_fd = -1;
  t->random_state = options->seed ^ (options->node_id * 0x9e3779b97f4a7c15ull);
  rc = add_initial_peers(t, options);
  if (rc == 0 && !options->no_listener) {
    const char *host = options->listen_host != NULL ? options->listen_host : "0.0.0.0";
    rc = listener_open(t, host, options->listen_port);
  }
  if (rc != 0) {
    free_peers(t);
    free(t);
    return rc;
  }
  listener_arm(t); /* the first SQE: nothing above can fail after it */
  *out = t;
  return 0;
}

uint16_t transport_listen_port(const transport *t) {
  return t->listen_fd >= 0 ? t->listen_port : 0;
}

/* ---- shutdown ---- */

void transport_shutdown(transport *t) {
  assert(t->in_callback == 0);
  if (t->shut_down) {
    return;
  }
  t->shut_down = true;
  transport_connection *c = t->connections;
  while (c != NULL) {
    transport_connection *next = c->next;
    connection_close(c);
    connection_release_if_done(c);
    c = next;
  }
  for (uint32_t i = 0; i < t->peer_count; i++) {
    fault_discard_delayed(t, t->peers[i], true);
  }
  listener_shutdown(t);
  transport_log(t, TRANSPORT_LOG_INFO, "node %llu shard %u transport shutting down",
                (unsigned long long)t->options.node_id, t->options.shard_id);
}

bool transport_is_idle(const transport *t) {
  return t->shut_down && t->connections == NULL && !t->accept_pending &&
         !t->accept_cancel_pending && t->listen_fd < 0;
}

void transport_destroy(transport *t) {
  if (t == NULL) {
    return;
  }
  assert(t->in_callback == 0);
  assert(transport_is_idle(t));
  free_peers(t);
  free(t);
}

/* ---- time ---- */

int transport_tick(transport *t, uint64_t now_ms) {
  assert(t->in_callback == 0);
  if (now_ms < t->now_ms) {
    return -EINVAL;
  }
  t->now_ms = now_ms;
  transport_connection *c = t->connections;
  while (c != NULL) {
    transport_connection *next = c->next; /* c may be freed below */
    connection_tick(c, now_ms);
    connection_release_if_done(c);
    c = next;
  }
  if (t->shut_down) {
    return 0;
  }
  for (uint32_t i = 0; i < t->peer_count; i++) {
    transport_peer *peer = t->peers[i];
    fault_release_due(t, peer);
    if (peer->outgoing == NULL && now_ms >= peer->next_dial_ms) {
      connection_dial(t, peer);
    }
  }
  if (t->accept_retry) {
    listener_arm(t);
  }
  return 0;
}

/* ---- queries ---- */

void transport_get_stats(const transport *t, transport_stats *out) {
  *out = t->stats;
}

int transport_peer_info_get(const transport *t, uint64_t node, transport_peer_info *out) {
  transport_peer *peer = peer_find(t, node);
  if (peer == NULL) {
    return -ENOENT;
  }
  memset(out, 0, sizeof(*out));
  out->up = peer->up;
  out->connected_in = peer->incoming != NULL;
  out->backoff_ms = peer->backoff_ms;
  out->next_dial_ms = peer->next_dial_ms;
  out->dials = peer->dials;
  const transport_connection *c = peer->outgoing;
  if (c != NULL) {
    out->queued_bytes = c->filling.length;
    out->in_flight_bytes = c->in_flight.length + c->bulk.in_flight_bytes;
    out->bulk_queued_bytes = c->bulk.tail - c->bulk.head;
  }
  return 0;
}

/* ---- invariants ---- */

#define CHECK(condition)                                                                           \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      *broken = #condition;                                                                        \
      return false;                                                                                \
    }                                                                                              \
  } while (0)

static bool check_queues(const transport *t, const transport_connection *c, const char **broken) {
  CHECK(c->filling.length <= c->filling.capacity);
  CHECK(c->filling.capacity <= t->options.max_queue_bytes);
  CHECK(c->in_flight.length <= c->in_flight.capacity);
  CHECK(c->in_flight.capacity <= t->options.max_queue_bytes);
  CHECK((c->filling.length == 0) == (c->filling.frames == 0));
  CHECK(c->bulk.head <= c->bulk.tail && c->bulk.tail <= c->bulk.capacity);
  CHECK(c->bulk.capacity <= t->options.max_bulk_bytes);
  CHECK(c->bulk.in_flight_bytes <= c->bulk.tail - c->bulk.head);
  CHECK(c->bulk.in_flight_frames <= c->bulk.frames);
  /* Bytes of a data send are only released when all of them were sent. */
  CHECK(c->in_flight.length == 0 || c->send_pending || c->state == CONNECTION_CLOSING);
  CHECK(c->bulk.in_flight_bytes == 0 || c->send_pending || c->state == CONNECTION_CLOSING);
  CHECK(!c->send_pending || c->send_done < c->send_total);
  return true;
}

static bool check_connection(const transport *t, const transport_connection *c,
                             const char **broken) {
  CHECK(c->t == t);
  CHECK(c->receive_start <= c->receive_end);
  CHECK(c->receive_end <= c->receive_capacity);
  CHECK(c->receive_capacity <= c->receive_limit);
  CHECK(c->receive_limit <= FRAME_HEADER_BYTES + t->options.max_frame_payload_bytes);
  CHECK(c->state == CONNECTION_READY || c->receive_limit == TRANSPORT_CONTROL_BYTES ||
        c->state == CONNECTION_CLOSING);
  CHECK(c->state != CONNECTION_CLOSING || c->peer == NULL);
  CHECK(!c->connect_pending || c->direction == CONNECTION_OUTGOING);
  CHECK(c->state != CONNECTION_DIALING || c->direction == CONNECTION_OUTGOING);
  CHECK(c->state != CONNECTION_REJECTING || c->direction == CONNECTION_INCOMING);
  CHECK(c->counted_pending ==
        (c->direction == CONNECTION_INCOMING &&
         (c->state == CONNECTION_HANDSHAKING || c->state == CONNECTION_REJECTING)));
  CHECK(c->direction == CONNECTION_OUTGOING || (c->filling.capacity == 0 && c->bulk.capacity == 0));
  if (c->peer != NULL) {
    CHECK(c->direction == CONNECTION_OUTGOING ? c->peer->outgoing == c : c->peer->incoming == c);
  }
  return check_queues(t, c, broken);
}

static bool check_peer(const transport *t, const transport_peer *peer, const char **broken) {
  CHECK(peer->node_id != 0 && peer->node_id != t->options.node_id);
  CHECK(peer->backoff_ms >= t->options.backoff_min_ms);
  CHECK(peer->backoff_ms <= t->options.backoff_max_ms);
  CHECK(peer->delayed_bytes <= (uint64_t)t->options.max_queue_bytes + t->options.max_bulk_bytes);
  CHECK((peer->delayed_head == NULL) == (peer->delayed_tail == NULL));
  CHECK(peer->delayed_head != NULL || peer->delayed_bytes == 0);
  if (peer->outgoing != NULL) {
    CHECK(peer->outgoing->peer == peer);
    CHECK(peer->outgoing->direction == CONNECTION_OUTGOING);
    CHECK(peer->outgoing->state != CONNECTION_CLOSING);
  }
  CHECK(!peer->up || (peer->outgoing != NULL && peer->outgoing->state == CONNECTION_READY));
  if (peer->incoming != NULL) {
    CHECK(peer->incoming->peer == peer);
    CHECK(peer->incoming->direction == CONNECTION_INCOMING);
    CHECK(peer->incoming->state == CONNECTION_READY);
  }
  for (uint32_t i = 0; i < t->peer_count; i++) {
    CHECK(t->peers[i] == peer || t->peers[i]->node_id != peer->node_id);
  }
  return true;
}

static bool check_connections(const transport *t, const char **broken) {
  uint32_t count = 0;
  uint32_t pending = 0;
  for (const transport_connection *c = t->connections; c != NULL; c = c->next) {
    CHECK(c->next == NULL || c->next->previous == c);
    if (!check_connection(t, c, broken)) {
      return false;
    }
    count++;
    pending += c->counted_pending ? 1u : 0u;
  }
  CHECK(count == t->connection_count);
  CHECK(pending == t->pending_handshakes);
  CHECK(t->pending_handshakes <= TRANSPORT_MAX_PENDING_HANDSHAKES);
  return true;
}

bool transport_check_invariants(const transport *t, const char **broken) {
  const char *ignored = NULL;
  if (broken == NULL) {
    broken = &ignored;
  }
  *broken = NULL;
  CHECK(t->peer_count <= t->peer_capacity && t->peer_count <= TRANSPORT_MAX_PEERS);
  for (const transport_connection *c = t->connections; c != NULL; c = c->next) {
    CHECK(!c->reserved || c->state == CONNECTION_READY);
  }
  CHECK(!t->accept_pending || t->listen_fd >= 0);
  for (uint32_t i = 0; i < t->peer_count; i++) {
    if (!check_peer(t, t->peers[i], broken)) {
      return false;
    }
  }
  return check_connections(t, broken);
}
