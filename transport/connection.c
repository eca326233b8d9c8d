/*
 * connection.c - one TCP connection on the shard's io_uring: its state
 * machine, the receive path (frames parsed in place and checked before
 * anything is trusted) and the one send it may have in flight.
 *
 * Outgoing (dialed by us; carries our frames to the peer, nothing back but
 * the handshake ACK):
 *
 *   peer down, backoff expired (transport_tick)
 *        |
 *        v
 *    DIALING --connected--> HANDSHAKING --ACK accepted--> READY --+
 *        |                      |         (on_peer up)            |
 *        | refused,             | refused ACK, bad input,         | EOF, send or receive
 *        | handshake timeout    | handshake timeout               | error, bad input,
 *        v                      v                                 v removal, shutdown
 *    CLOSING <------------------+---------------------------------+  (on_peer down
 *        |                                                           if it was up)
 *        | last operation completed: fd closed, buffers freed
 *        v
 *     (gone; the peer dials again after its backoff: min doubling to max, jittered)
 *
 * Incoming (accepted by the listener; carries the peer's frames to us):
 *
 *   accept --> HANDSHAKING --valid handshake, ACK sent--> READY --EOF, error,--> CLOSING
 *                |      \                                         bad input
 *                |       +--mismatch--> REJECTING --refusing ACK sent--> CLOSING
 *                +--bad input, handshake timeout, EOF--> CLOSING
 *
 * CLOSING is reached only through connection_close(): the connection is
 * detached from its peer at once (so the peer may dial a new one), the
 * socket is shut down and its operations cancelled on the ring; the struct
 * and its buffers stay until the last CQE came back, because the kernel
 * may still be writing into them.
 *
 * Invariants (asserted here, checked by transport_check_invariants()):
 *   - a CLOSING connection has no peer, and no peer points to it;
 *   - peer->outgoing is OUTGOING and not CLOSING; peer->incoming is INCOMING
 *     and READY; both point back to their peer;
 *   - at most one operation of each kind is on the ring;
 *   - receive_start <= receive_end <= receive_capacity <= receive_limit; the
 *     limit is one handshake frame until the handshake is done, then a
 *     header plus max_frame_payload_bytes on an incoming connection: a peer
 *     can never make us allocate more, whatever it sends;
 *   - before READY only handshake frames are sent; data only on a READY
 *     outgoing connection, and bytes of a send are not touched until all
 *     of them were taken by the kernel.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "transport/transport_internal.h"

static void on_connect(fl_completion *completion, int result, uint32_t flags);
static void on_receive(fl_completion *completion, int result, uint32_t flags);
static void on_send(fl_completion *completion, int result, uint32_t flags);
static void on_cancel(fl_completion *completion, int result, uint32_t flags);
static void post_receive(transport_connection *c);
static void start_control_send(transport_connection *c);

static unsigned operations_of(const transport_connection *c) {
  return (unsigned)c->connect_pending + (unsigned)c->receive_pending + (unsigned)c->send_pending +
         (unsigned)c->cancel_pending;
}

/* ---- lifecycle ---- */

transport_connection *connection_create(transport *t, connection_direction direction, int fd) {
  transport_connection *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    close(fd);
    transport_log(t, TRANSPORT_LOG_ERROR, "out of memory for a connection");
    return NULL;
  }
  c->t = t;
  c->fd = fd;
  c->direction = direction;
  c->state = direction == CONNECTION_OUTGOING ? CONNECTION_DIALING : CONNECTION_HANDSHAKING;
  c->deadline_ms = t->now_ms + t->options.handshake_timeout_ms;
  c->connect_completion.handle = on_connect;
  c->receive_completion.handle = on_receive;
  c->send_completion.handle = on_send;
  c->cancel_completion.handle = on_cancel;
  c->receive_bytes = c->small_receive;
  c->receive_capacity = c->receive_limit = (uint32_t)TRANSPORT_CONTROL_BYTES;
  c->next = t->connections;
  if (t->connections != NULL) {
    t->connections->previous = c;
  }
  t->connections = c;
  t->connection_count++;
  return c;
}

bool connection_release_if_done(transport_connection *c) {
  if (c->state != CONNECTION_CLOSING || operations_of(c) > 0) {
    return false;
  }
  transport *t = c->t;
  assert(c->peer == NULL && !c->reserved);
  close(c->fd);
  if (c->receive_bytes != c->small_receive) {
    free(c->receive_bytes);
  }
  send_buffer_free(&c->filling);
  send_buffer_free(&c->in_flight);
  bulk_queue_free(&c->bulk);
  if (c->previous != NULL) {
    c->previous->next = c->next;
  } else {
    t->connections = c->next;
  }
  if (c->next != NULL) {
    c->next->previous = c->previous;
  }
  t->connection_count--;
  free(c);
  return true;
}

/* Cancels whatever is on the ring for this socket. shutdown() already woke
 * a receive or send in the kernel; the cancel also catches a connect and
 * operations prepared but not yet submitted (they run first, in order). */
static void cancel_operations(transport_connection *c) {
  if (operations_of(c) == 0 || c->cancel_pending) {
    return;
  }
  struct io_uring_sqe *sqe = transport_get_sqe(c->t);
  if (sqe == NULL) {
    return;
  }
  io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data(sqe, &c->cancel_completion);
  c->cancel_pending = true;
}

/* Frames queued and not yet handed to the kernel die with the connection;
 * Raft retransmits what matters. */
static void detach_outgoing(transport_connection *c, transport_peer *peer) {
  transport *t = c->t;
  t->stats.frames_dropped_down += c->filling.frames + (c->bulk.frames - c->bulk.in_flight_frames);
  if (peer == NULL) {
    return; /* removed: the caller forgot the peer already */
  }
  assert(peer->outgoing == c);
  peer->outgoing = NULL;
  if (t->shut_down) {
    peer->up = false;
    return;
  }
  peer_schedule_dial(t, peer);
  transport_report_peer(t, peer, false);
}

void connection_close(transport_connection *c) {
  if (c->state == CONNECTION_CLOSING) {
    return;
  }
  transport *t = c->t;
  transport_peer *peer = c->peer;
  if (c->state == CONNECTION_READY) {
    t->stats.connections_lost++;
  }
  c->state = CONNECTION_CLOSING;
  c->peer = NULL;
  c->reserved = false;
  if (c->counted_pending) {
    c->counted_pending = false;
    t->pending_handshakes--;
  }
  shutdown(c->fd, SHUT_RDWR);
  cancel_operations(c);
  if (c->direction == CONNECTION_OUTGOING) {
    detach_outgoing(c, peer);
  } else if (peer != NULL && peer->incoming == c) {
    peer->incoming = NULL;
  }
}

void connection_fail(transport_connection *c, transport_reason reason, const char *detail) {
  if (c->state == CONNECTION_CLOSING) {
    return;
  }
  transport *t = c->t;
  t->stats.errors[reason]++;
  const char *direction = c->direction == CONNECTION_OUTGOING ? "to" : "from";
  if (c->node_id != 0) {
    transport_log_once(t, c->peer != NULL ? c->peer : peer_find(t, c->node_id), (unsigned)reason,
                       TRANSPORT_LOG_WARN, "closing connection %s node %llu (%s): %s: %s",
                       direction, (unsigned long long)c->node_id, c->address_text,
                       transport_reason_name((int)reason), detail);
  } else {
    transport_log_once(t, NULL, (unsigned)reason, TRANSPORT_LOG_WARN,
                       "closing connection from %s: %s: %s", c->address_text,
                       transport_reason_name((int)reason), detail);
  }
  connection_close(c);
}

static void on_cancel(fl_completion *completion, int result, uint32_t flags) {
  (void)result;
  (void)flags;
  transport_connection *c = FL_CONTAINER_OF(completion, transport_connection, cancel_completion);
  c->cancel_pending = false;
  connection_release_if_done(c);
}

/* ---- dialing ---- */

void connection_set_socket_options(int fd) {
  /* Frames are batched by the flush; Nagle would only add latency. */
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
  int idle = TRANSPORT_KEEPALIVE_IDLE_SECONDS;
  int interval = TRANSPORT_KEEPALIVE_INTERVAL_SECONDS;
  int probes = TRANSPORT_KEEPALIVE_PROBES;
  unsigned user_timeout = TRANSPORT_USER_TIMEOUT_MS;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

static void dial_failed(transport *t, transport_peer *peer, const char *what, int error) {
  t->stats.connect_failures++;
  transport_log_once(t, peer, TRANSPORT_LOG_BIT_CONNECT, TRANSPORT_LOG_INFO,
                     "cannot connect to node %llu at %s: %s: %s", (unsigned long long)peer->node_id,
                     peer->address_text, what, transport_strerror(error));
}

static transport_connection *open_outgoing(transport *t, transport_peer *peer) {
  int fd = socket(peer->address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    dial_failed(t, peer, "socket", -errno);
    return NULL;
  }
  connection_set_socket_options(fd);
  transport_connection *c = connection_create(t, CONNECTION_OUTGOING, fd);
  if (c == NULL) {
    dial_failed(t, peer, "connection", TRANSPORT_E_NOMEM);
    return NULL;
  }
  c->peer = peer;
  c->node_id = peer->node_id;
  c->address = peer->address;
  c->address_length = peer->address_length;
  memcpy(c->address_text, peer->address_text, sizeof(c->address_text));
  return c;
}

void connection_dial(transport *t, transport_peer *peer) {
  assert(peer->outgoing == NULL && !t->shut_down);
  peer->dials++;
  t->stats.connections_dialed++;
  transport_connection *c = open_outgoing(t, peer);
  if (c == NULL) {
    peer_schedule_dial(t, peer);
    return;
  }
  peer->outgoing = c;
  struct io_uring_sqe *sqe = transport_get_sqe(t);
  if (sqe == NULL) {
    dial_failed(t, peer, "connect", -EBUSY);
    connection_close(c);
    connection_release_if_done(c);
    return;
  }
  /* The address lives in the connection: the peer may be removed while
   * the connect is still in the kernel. */
  io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&c->address, c->address_length);
  io_uring_sqe_set_data(sqe, &c->connect_completion);
  c->connect_pending = true;
}

static void on_connect(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  transport_connection *c = FL_CONTAINER_OF(completion, transport_connection, connect_completion);
  c->connect_pending = false;
  if (c->state == CONNECTION_DIALING) {
    assert(c->peer != NULL);
    if (result < 0) {
      dial_failed(c->t, c->peer, "connect", result);
      connection_close(c);
    } else {
      c->state = CONNECTION_HANDSHAKING;
      handshake_build(c->t, FRAME_HANDSHAKE, 0, c->control);
      start_control_send(c);
      if (c->state == CONNECTION_HANDSHAKING) {
        post_receive(c);
      }
    }
  }
  connection_release_if_done(c);
}

void connection_start_incoming(transport_connection *c) {
  transport *t = c->t;
  assert(c->direction == CONNECTION_INCOMING && c->state == CONNECTION_HANDSHAKING);
  c->counted_pending = true;
  t->pending_handshakes++;
  t->stats.connections_accepted++;
  post_receive(c);
}

/* ---- sending ---- */

static void prepare_send(transport_connection *c) {
  uint64_t skip = c->send_done;
  size_t count = 0;
  for (uint32_t i = 0; i < c->segment_count; i++) {
    if (skip >= c->segments[i].iov_len) {
      skip -= c->segments[i].iov_len;
      continue;
    }
    c->iov[count].iov_base = (uint8_t *)c->segments[i].iov_base + skip;
    c->iov[count].iov_len = c->segments[i].iov_len - skip;
    skip = 0;
    count++;
  }
  assert(count > 0);
  struct io_uring_sqe *sqe = transport_get_sqe(c->t);
  if (sqe == NULL) {
    connection_fail(c, TRANSPORT_REASON_SOCKET_ERROR, "no submission queue entry for a send");
    return;
  }
  memset(&c->message, 0, sizeof(c->message));
  c->message.msg_iov = c->iov;
  c->message.msg_iovlen = count;
  /* MSG_NOSIGNAL: a peer gone away is an error code, not a SIGPIPE. */
  io_uring_prep_sendmsg(sqe, c->fd, &c->message, MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, &c->send_completion);
  c->send_pending = true;
}

void connection_start_send(transport_connection *c, const struct iovec *segments, uint32_t count,
                           uint32_t frames, bool control) {
  assert(!c->send_pending && count >= 1 && count <= 2);
  assert(control || (c->direction == CONNECTION_OUTGOING && c->state == CONNECTION_READY));
  c->segment_count = count;
  c->send_total = 0;
  for (uint32_t i = 0; i < count; i++) {
    c->segments[i] = segments[i];
    c->send_total += segments[i].iov_len;
  }
  c->send_done = 0;
  c->send_frames = frames;
  c->send_is_control = control;
  prepare_send(c);
}

static void start_control_send(transport_connection *c) {
  struct iovec segment = {.iov_base = c->control, .iov_len = sizeof(c->control)};
  connection_start_send(c, &segment, 1, 0, true);
}

/* Everything of the send was taken: its buffers may be reused. */
static void finish_send(transport_connection *c) {
  transport *t = c->t;
  t->stats.sends++;
  if (c->send_is_control) {
    if (c->state == CONNECTION_REJECTING) {
      connection_close(c); /* the refusal is on its way: done */
    }
    return;
  }
  t->stats.frames_sent += c->send_frames;
  c->in_flight.length = 0;
  c->in_flight.frames = 0;
  bulk_queue *bulk = &c->bulk;
  bulk->head += bulk->in_flight_bytes;
  bulk->frames -= bulk->in_flight_frames;
  bulk->in_flight_bytes = bulk->in_flight_frames = 0;
  if (bulk->head == bulk->tail) {
    bulk->head = bulk->tail = 0;
  }
}

static void on_send(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  transport_connection *c = FL_CONTAINER_OF(completion, transport_connection, send_completion);
  c->send_pending = false;
  if (c->state != CONNECTION_CLOSING) {
    if (result <= 0) {
      connection_fail(c, TRANSPORT_REASON_SOCKET_ERROR,
                      result == 0 ? "send made no progress" : transport_strerror(result));
    } else {
      c->send_done += (uint64_t)result;
      c->t->stats.bytes_sent += (uint64_t)result;
      assert(c->send_done <= c->send_total);
      if (c->send_done < c->send_total) {
        prepare_send(c); /* short send: the rest goes out with the next submit */
      } else {
        finish_send(c);
      }
    }
  }
  connection_release_if_done(c);
}

/* ---- receiving: handshakes ---- */

static void reject_handshake(transport_connection *c, const transport_handshake *hello,
                             int result) {
  transport *t = c->t;
  char detail[160];
  handshake_describe(t, hello, result, detail, sizeof(detail));
  t->stats.handshake_rejects++;
  t->stats.handshake_rejects_by_result[result]++;
  transport_log_once(t, peer_find(t, hello->node_id), TRANSPORT_LOG_BIT_HANDSHAKE(result),
                     TRANSPORT_LOG_WARN, "refusing handshake from %s claiming node %llu: %s",
                     c->address_text, (unsigned long long)hello->node_id, detail);
  c->state = CONNECTION_REJECTING;
  start_control_send(c);
}

static void accept_handshake(transport_connection *c, const uint8_t *payload, uint32_t length) {
  transport *t = c->t;
  transport_handshake hello;
  if (!handshake_decode(FRAME_HANDSHAKE, payload, length, &hello)) {
    connection_fail(c, TRANSPORT_REASON_BAD_HANDSHAKE, "malformed handshake payload");
    return;
  }
  transport_peer *peer = NULL;
  transport_connection *stale = NULL;
  int result = handshake_check_dialer(t, &hello, &peer, &stale);
  handshake_build(t, FRAME_HANDSHAKE_ACK, result, c->control);
  if (result != TRANSPORT_HANDSHAKE_ACCEPTED) {
    reject_handshake(c, &hello, result);
    return;
  }
  if (stale != NULL) {
    t->stats.connections_replaced++;
    transport_log(t, TRANSPORT_LOG_WARN,
                  "node %llu dialed again from %s; its silent connection from %s is closed",
                  (unsigned long long)hello.node_id, c->address_text, stale->address_text);
    connection_close(stale); /* freed when its receive returns, not under our feet */
  }
  c->node_id = hello.node_id;
  c->peer = peer;
  peer->incoming = c;
  c->state = CONNECTION_READY;
  c->counted_pending = false;
  t->pending_handshakes--;
  c->receive_limit = FRAME_HEADER_BYTES + t->options.max_frame_payload_bytes;
  transport_log(t, TRANSPORT_LOG_INFO, "node %llu connected from %s",
                (unsigned long long)c->node_id, c->address_text);
  start_control_send(c);
}

static void handle_acknowledgement(transport_connection *c, const uint8_t *payload,
                                   uint32_t length) {
  transport *t = c->t;
  transport_peer *peer = c->peer;
  transport_handshake ack;
  if (!handshake_decode(FRAME_HANDSHAKE_ACK, payload, length, &ack)) {
    connection_fail(c, TRANSPORT_REASON_BAD_HANDSHAKE, "malformed handshake acknowledgement");
    return;
  }
  if (ack.result != TRANSPORT_HANDSHAKE_ACCEPTED) {
    t->stats.handshakes_refused++;
    transport_log_once(t, peer, TRANSPORT_LOG_BIT_HANDSHAKE(ack.result), TRANSPORT_LOG_WARN,
                       "node %llu (%s) refused our handshake: %s mismatch",
                       (unsigned long long)c->node_id, c->address_text,
                       transport_handshake_result_name(ack.result));
    connection_close(c);
    return;
  }
  int result = handshake_check_acceptor(t, &ack, c->node_id);
  if (result != TRANSPORT_HANDSHAKE_ACCEPTED) {
    char detail[160];
    handshake_describe(t, &ack, result, detail, sizeof(detail));
    t->stats.handshake_rejects++;
    t->stats.handshake_rejects_by_result[result]++;
    transport_log_once(t, peer, TRANSPORT_LOG_BIT_HANDSHAKE(result), TRANSPORT_LOG_WARN,
                       "node %llu at %s answered as another node: %s",
                       (unsigned long long)c->node_id, c->address_text, detail);
    connection_close(c);
    return;
  }
  c->state = CONNECTION_READY;
  peer->backoff_ms = t->options.backoff_min_ms;
  transport_report_peer(t, peer, true);
}

/* ---- receiving: frames ---- */

static transport_reason reason_of_frame_error(int error) {
  switch (error) {
  case TRANSPORT_E_MAGIC:
    return TRANSPORT_REASON_BAD_MAGIC;
  case TRANSPORT_E_VERSION:
    return TRANSPORT_REASON_BAD_VERSION;
  case TRANSPORT_E_TOO_LARGE:
    return TRANSPORT_REASON_TOO_LARGE;
  case TRANSPORT_E_HEADER_CHECKSUM:
    return TRANSPORT_REASON_HEADER_CHECKSUM;
  case TRANSPORT_E_PAYLOAD_CHECKSUM:
    return TRANSPORT_REASON_PAYLOAD_CHECKSUM;
  default:
    return TRANSPORT_REASON_BAD_TYPE;
  }
}

/* Which frames this connection may carry in its state. Checked on the
 * header alone, so nothing is awaited or allocated for a frame that will be
 * refused anyway (a handshake is exactly one small frame). */
static bool frame_allowed(transport_connection *c, const frame_header *header) {
  if (c->state == CONNECTION_HANDSHAKING) {
    frame_type expected =
        c->direction == CONNECTION_INCOMING ? FRAME_HANDSHAKE : FRAME_HANDSHAKE_ACK;
    if (header->type != expected || header->payload_length != sizeof(transport_handshake)) {
      connection_fail(c, TRANSPORT_REASON_BAD_HANDSHAKE,
                      "first frame is not a handshake of the right size");
      return false;
    }
    return true;
  }
  if (c->direction == CONNECTION_OUTGOING || header->type == FRAME_HANDSHAKE ||
      header->type == FRAME_HANDSHAKE_ACK) {
    connection_fail(c, TRANSPORT_REASON_UNEXPECTED_FRAME, "frame not allowed after the handshake");
    return false;
  }
  return true;
}

static void deliver(transport_connection *c, frame_type type, const uint8_t *payload,
                    uint32_t length) {
  transport *t = c->t;
  if (c->state == CONNECTION_HANDSHAKING) {
    if (c->direction == CONNECTION_INCOMING) {
      accept_handshake(c, payload, length);
    } else {
      handle_acknowledgement(c, payload, length);
    }
    return;
  }
  assert(c->state == CONNECTION_READY && c->direction == CONNECTION_INCOMING && c->peer != NULL);
  if (fault_drops_incoming(t, c->peer)) {
    return;
  }
  t->stats.frames_received++;
  t->in_callback++;
  t->options.on_frame(t->options.context, c->node_id, type, payload, length);
  t->in_callback--;
}

/* Checks and delivers one frame at receive_start. Returns false when it is
 * incomplete (receive_frame_bytes then says how big it is, 0 if unknown)
 * or when the connection failed. */
static bool parse_one(transport_connection *c) {
  uint32_t available = c->receive_end - c->receive_start;
  const uint8_t *cursor = c->receive_bytes + c->receive_start;
  uint32_t magic = FRAME_MAGIC;
  c->receive_frame_bytes = 0;
  if (available >= sizeof(magic) && memcmp(cursor, &magic, sizeof(magic)) != 0) {
    /* Refused on the first four bytes: garbage need not fill a header. */
    connection_fail(c, TRANSPORT_REASON_BAD_MAGIC, "not a Flotilla frame");
    return false;
  }
  if (available < FRAME_HEADER_BYTES) {
    return false;
  }
  frame_header header; /* copied: the header may sit at any alignment */
  memcpy(&header, cursor, sizeof(header));
  int rc = frame_header_check(&header, c->t->options.max_frame_payload_bytes);
  if (rc != TRANSPORT_OK) {
    connection_fail(c, reason_of_frame_error(rc), transport_strerror(rc));
    return false;
  }
  if (!frame_allowed(c, &header)) {
    return false;
  }
  uint32_t frame_bytes = FRAME_HEADER_BYTES + header.payload_length;
  if (available < frame_bytes) {
    c->receive_frame_bytes = frame_bytes;
    return false;
  }
  const uint8_t *payload = cursor + FRAME_HEADER_BYTES;
  if (frame_payload_check(&header, payload) != TRANSPORT_OK) {
    connection_fail(c, TRANSPORT_REASON_PAYLOAD_CHECKSUM, "payload checksum mismatch");
    return false;
  }
  c->receive_start += frame_bytes;
  deliver(c, (frame_type)header.type, payload, header.payload_length);
  return true;
}

static void parse_frames(transport_connection *c) {
  uint32_t start_before = c->receive_start;
  while (c->state == CONNECTION_HANDSHAKING || c->state == CONNECTION_READY) {
    if (!parse_one(c)) {
      break;
    }
  }
  if (c->state == CONNECTION_CLOSING) {
    return;
  }
  if (c->receive_start == c->receive_end) {
    c->receive_start = c->receive_end = 0;
    c->frame_started = false;
  } else if (!c->frame_started || c->receive_start != start_before) {
    /* A new frame began: it has frame_timeout_ms from now to complete. */
    c->frame_started = true;
    c->frame_started_ms = c->t->now_ms;
  }
}

static uint32_t round_up_capacity(uint32_t needed, uint32_t limit) {
  uint64_t capacity = TRANSPORT_RECEIVE_INITIAL_BYTES;
  while (capacity < needed) {
    capacity *= 2;
  }
  return capacity < limit ? (uint32_t)capacity : limit;
}

/* Moves the incomplete frame to the front and grows the buffer when the
 * frame (or a ready connection's first real traffic) needs it. Never beyond
 * receive_limit: the header check refused anything larger. */
static bool make_room(transport_connection *c) {
  uint32_t pending = c->receive_end - c->receive_start;
  if (c->receive_start > 0) {
    memmove(c->receive_bytes, c->receive_bytes + c->receive_start, pending);
    c->receive_start = 0;
    c->receive_end = pending;
  }
  uint32_t wanted = c->receive_capacity;
  if (c->receive_bytes == c->small_receive && c->receive_limit > c->receive_capacity) {
    wanted = round_up_capacity(TRANSPORT_RECEIVE_INITIAL_BYTES, c->receive_limit);
  }
  if (c->receive_frame_bytes > wanted) {
    wanted = round_up_capacity(c->receive_frame_bytes, c->receive_limit);
  }
  if (wanted > c->receive_capacity) {
    assert(wanted <= c->receive_limit);
    uint8_t *bytes = malloc(wanted);
    if (bytes == NULL) {
      connection_fail(c, TRANSPORT_REASON_SOCKET_ERROR, "out of memory for a receive buffer");
      return false;
    }
    memcpy(bytes, c->receive_bytes, pending);
    if (c->receive_bytes != c->small_receive) {
      free(c->receive_bytes);
    }
    c->receive_bytes = bytes;
    c->receive_capacity = wanted;
  }
  assert(c->receive_end < c->receive_capacity);
  return true;
}

static void post_receive(transport_connection *c) {
  assert(!c->receive_pending && c->receive_end < c->receive_capacity);
  struct io_uring_sqe *sqe = transport_get_sqe(c->t);
  if (sqe == NULL) {
    connection_fail(c, TRANSPORT_REASON_SOCKET_ERROR, "no submission queue entry for a receive");
    return;
  }
  io_uring_prep_recv(sqe, c->fd, c->receive_bytes + c->receive_end,
                     c->receive_capacity - c->receive_end, 0);
  io_uring_sqe_set_data(sqe, &c->receive_completion);
  c->receive_pending = true;
}

static void handle_end_of_stream(transport_connection *c) {
  if (c->receive_end > c->receive_start) {
    connection_fail(c, TRANSPORT_REASON_TRUNCATED, "closed in the middle of a frame");
    return;
  }
  if (c->state == CONNECTION_HANDSHAKING && c->direction == CONNECTION_OUTGOING) {
    /* The acceptor hung up without an answer (too many pending handshakes,
     * or shutting down): a failed dial like a refused connect. */
    dial_failed(c->t, c->peer, "handshake", TRANSPORT_E_CLOSED);
  } else if (c->state == CONNECTION_READY) {
    transport_log(c->t, TRANSPORT_LOG_INFO, "node %llu closed the connection %s it",
                  (unsigned long long)c->node_id,
                  c->direction == CONNECTION_OUTGOING ? "to" : "from");
  }
  connection_close(c);
}

static void handle_received(transport_connection *c, int result) {
  if (result < 0) {
    connection_fail(c, TRANSPORT_REASON_SOCKET_ERROR, transport_strerror(result));
    return;
  }
  if (result == 0) {
    handle_end_of_stream(c);
    return;
  }
  c->receive_end += (uint32_t)result;
  c->last_receive_ms = c->t->now_ms;
  c->t->stats.bytes_received += (uint64_t)result;
  parse_frames(c);
  /* A REJECTING connection reads nothing more: it closes once its refusal
   * is sent. */
  if ((c->state == CONNECTION_HANDSHAKING || c->state == CONNECTION_READY) && make_room(c)) {
    post_receive(c);
  }
}

static void on_receive(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  transport_connection *c = FL_CONTAINER_OF(completion, transport_connection, receive_completion);
  c->receive_pending = false;
  if (c->state != CONNECTION_CLOSING) {
    handle_received(c, result);
  }
  connection_release_if_done(c);
}

/* ---- deadlines ---- */

void connection_tick(transport_connection *c, uint64_t now_ms) {
  transport *t = c->t;
  if (c->state == CONNECTION_CLOSING) {
    return;
  }
  if (c->state != CONNECTION_READY && now_ms >= c->deadline_ms) {
    if (c->state == CONNECTION_DIALING) {
      dial_failed(t, c->peer, "connect", TRANSPORT_E_TIMEOUT);
      connection_close(c);
    } else {
      connection_fail(c, TRANSPORT_REASON_HANDSHAKE_TIMEOUT, "handshake not done in time");
    }
    return;
  }
  if (c->frame_started && now_ms - c->frame_started_ms >= t->options.frame_timeout_ms) {
    connection_fail(c, TRANSPORT_REASON_FRAME_TIMEOUT, "frame not complete in time");
  }
}
