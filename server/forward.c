/*
 * forward.c - an io thread's connections to other nodes' client ports,
 * carrying forwarded requests as pipelined RESP (server.h, "forwarding").
 *
 * One link per other node; a link has at most one live connection:
 *
 *   first send (backoff passed)
 *        |
 *        v
 *   CONNECTING --connected--> OPEN --EOF, error, bad reply, destroy--+
 *        |                                                           |
 *        | refused, error, destroy                                   v
 *        +--------------------------------------------------> CLOSING
 *                                                                    |
 *          last operation completed: fd closed, buffers freed        |
 *                                                       (gone) <-----+
 *
 * Requests are encoded into `queued` as soon as they are sent, behind the
 * "FLOTILLA FORWARDED" handshake that opens every connection, so nothing
 * waits for the connect; `pending` holds who waits for each reply, in the
 * order the requests were written, and replies are matched to it FIFO.
 *
 * A connection leaving for CLOSING is detached from its link at once (the
 * next send may open a new one), its pending requests fail with the
 * reason, its socket is shut down and its operations cancelled; the struct
 * and buffers stay until the last CQE came back, since the kernel may
 * still be writing into them.
 *
 * Invariants (asserted): link->connection is never CLOSING and points back
 * to its link; at most one operation of each kind is on the ring; the
 * `sending` buffer is empty unless a send is pending; while the handshake
 * is unanswered it is the first pending entry (callback NULL).
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/completion.h"
#include "common/dispatch.h"
#include "server/reply_scan.h"
#include "server/server.h"

#define HANDSHAKE_REQUEST "*2\r\n$8\r\nFLOTILLA\r\n$9\r\nFORWARDED\r\n"
#define HANDSHAKE_REPLY "+OK\r\n"
/* Receive buffer: starts here, grows by doubling while a reply needs it. */
#define RECEIVE_INITIAL_BYTES (16u * 1024u)
/* Free room below which the receive buffer grows before the next recv. */
#define RECEIVE_MIN_ROOM_BYTES (4u * 1024u)
/* An idle buffer larger than this is freed, so one huge value does not pin
 * memory for the life of the connection. */
#define RETAINED_BUFFER_BYTES (1024u * 1024u)
/* forwarder_destroy() stops waiting for the kernel after this long. */
#define DESTROY_TIMEOUT_MS 5000u

typedef struct byte_buffer {
  char *data;
  size_t length;
  size_t capacity;
} byte_buffer;

typedef struct pending_request {
  forward_reply_fn callback; /* NULL: the handshake, answered internally */
  void *context;
} pending_request;

typedef enum connection_state {
  CONNECTION_CONNECTING,
  CONNECTION_OPEN,
  CONNECTION_CLOSING,
} connection_state;

typedef struct forward_connection forward_connection;

typedef struct forward_link {
  uint64_t node;
  bool resolved;
  struct sockaddr_storage address;
  socklen_t address_length;
  forward_connection *connection; /* NULL, or CONNECTING / OPEN */
  uint64_t retry_at_ms;           /* no new connection before this */
  uint32_t backoff_ms;            /* 0 after a good handshake */
} forward_link;

struct forward_connection {
  forwarder *owner;
  forward_link *link; /* NULL once CLOSING */
  int fd;
  connection_state state;
  bool handshake_done;
  bool connect_pending;
  bool send_pending;
  bool receive_pending;
  bool cancel_pending;
  fl_completion connect_completion;
  fl_completion send_completion;
  fl_completion receive_completion;
  fl_completion cancel_completion;
  byte_buffer queued;  /* encoded, not yet handed to the kernel */
  byte_buffer sending; /* the bytes of the send on the ring */
  size_t sent;         /* of `sending`, taken by the kernel */
  pending_request *pending;
  uint32_t pending_capacity;
  uint32_t pending_head;
  uint32_t pending_count;
  byte_buffer input; /* received, not yet delivered: starts at a reply */
  reply_scanner scanner;
  forward_connection *previous;
  forward_connection *next;
};

struct forwarder {
  struct io_uring *ring;
  forward_limits limits;
  uint32_t link_count;
  forward_link links[SERVER_MAX_NODES];
  forward_connection *connections; /* every connection not yet released */
  bool destroying;
};

static void on_connect(fl_completion *completion, int result, uint32_t flags);
static void on_send(fl_completion *completion, int result, uint32_t flags);
static void on_receive(fl_completion *completion, int result, uint32_t flags);
static void on_cancel(fl_completion *completion, int result, uint32_t flags);

forward_limits forward_limits_default(void) {
  return (forward_limits){
      .max_pending = 65536,
      .max_output_bytes = 64u * 1024u * 1024u,
      .max_reply_bytes = REPLY_SCAN_DEFAULT_MAX_BYTES,
      .backoff_min_ms = 50,
      .backoff_max_ms = 2000,
  };
}

static uint64_t now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static struct io_uring_sqe *get_sqe(forwarder *f) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(f->ring);
  if (sqe == NULL) {
    /* The queue is full of other work: hand it to the kernel now. */
    io_uring_submit(f->ring);
    sqe = io_uring_get_sqe(f->ring);
  }
  return sqe;
}

/* ---- buffers ---- */

/* Room for `extra` more bytes, never past `limit` bytes in all. */
static int buffer_reserve(byte_buffer *buffer, size_t extra, size_t limit) {
  if (extra > limit || buffer->length > limit - extra) {
    return -ENOBUFS;
  }
  size_t needed = buffer->length + extra;
  if (needed <= buffer->capacity) {
    return 0;
  }
  size_t capacity = buffer->capacity < 256 ? 256 : buffer->capacity;
  while (capacity < needed) {
    capacity = capacity > SIZE_MAX / 2 ? needed : capacity * 2;
  }
  capacity = capacity > limit ? limit : capacity;
  char *data = realloc(buffer->data, capacity);
  if (data == NULL) {
    return -ENOMEM;
  }
  buffer->data = data;
  buffer->capacity = capacity;
  return 0;
}

static void buffer_append(byte_buffer *buffer, const void *data, size_t length) {
  assert(buffer->capacity - buffer->length >= length);
  if (length > 0) {
    memcpy(buffer->data + buffer->length, data, length);
    buffer->length += length;
  }
}

static void buffer_free(byte_buffer *buffer) {
  free(buffer->data);
  *buffer = (byte_buffer){0};
}

static void buffer_trim_if_idle(byte_buffer *buffer) {
  if (buffer->length == 0 && buffer->capacity > RETAINED_BUFFER_BYTES) {
    buffer_free(buffer);
  }
}

/* ---- the pending FIFO ---- */

static int pending_reserve(forward_connection *c) {
  if (c->pending_count < c->pending_capacity) {
    return 0;
  }
  uint32_t bound = c->owner->limits.max_pending + 1; /* + the handshake */
  uint32_t capacity = c->pending_capacity == 0 ? 16 : c->pending_capacity * 2;
  capacity = capacity > bound ? bound : capacity;
  assert(capacity > c->pending_count);
  pending_request *grown = malloc(capacity * sizeof(*grown));
  if (grown == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < c->pending_count; i++) {
    grown[i] = c->pending[(c->pending_head + i) % c->pending_capacity];
  }
  free(c->pending);
  c->pending = grown;
  c->pending_capacity = capacity;
  c->pending_head = 0;
  return 0;
}

static void pending_push(forward_connection *c, forward_reply_fn callback, void *context) {
  assert(c->pending_count < c->pending_capacity);
  uint32_t tail = (c->pending_head + c->pending_count) % c->pending_capacity;
  c->pending[tail] = (pending_request){.callback = callback, .context = context};
  c->pending_count++;
}

static pending_request pending_pop(forward_connection *c) {
  assert(c->pending_count > 0);
  pending_request request = c->pending[c->pending_head];
  c->pending_head = (c->pending_head + 1) % c->pending_capacity;
  c->pending_count--;
  return request;
}

/* Requests awaiting replies, the handshake not counted. */
static uint32_t requests_pending(const forward_connection *c) {
  return c->pending_count - (c->handshake_done ? 0u : 1u);
}

/* ---- encoding ---- */

static size_t decimal_length(size_t value) {
  size_t digits = 1;
  while (value >= 10) {
    value /= 10;
    digits++;
  }
  return digits;
}

static size_t encoded_length(const resp_argument *arguments, uint32_t count) {
  size_t total = 3 + decimal_length(count);
  for (uint32_t i = 0; i < count; i++) {
    total += 5 + decimal_length(arguments[i].length) + arguments[i].length;
  }
  return total;
}

/* By hand rather than with snprintf: four headers per forwarded SET. */
static void append_header(byte_buffer *buffer, char type, size_t value) {
  char header[32];
  size_t digits = decimal_length(value);
  header[0] = type;
  for (size_t i = digits; i > 0; i--) {
    header[i] = (char)('0' + value % 10);
    value /= 10;
  }
  header[digits + 1] = '\r';
  header[digits + 2] = '\n';
  buffer_append(buffer, header, digits + 3);
}

/* The request as a multibulk into `queued`, within the output bound. */
static int encode_request(forward_connection *c, const resp_argument *arguments, uint32_t count) {
  size_t in_kernel = c->sending.length - c->sent;
  size_t limit = c->owner->limits.max_output_bytes;
  if (in_kernel > limit) {
    return -ENOBUFS;
  }
  size_t bytes = encoded_length(arguments, count);
  int rc = buffer_reserve(&c->queued, bytes, limit - in_kernel);
  if (rc != 0) {
    return rc;
  }
  size_t before = c->queued.length;
  append_header(&c->queued, '*', count);
  for (uint32_t i = 0; i < count; i++) {
    append_header(&c->queued, '$', arguments[i].length);
    buffer_append(&c->queued, arguments[i].data, arguments[i].length);
    buffer_append(&c->queued, "\r\n", 2);
  }
  assert(c->queued.length - before == bytes);
  (void)before;
  return 0;
}

/* ---- closing ---- */

static unsigned operations_of(const forward_connection *c) {
  return (unsigned)c->connect_pending + (unsigned)c->send_pending + (unsigned)c->receive_pending +
         (unsigned)c->cancel_pending;
}

/* Frees the connection once CLOSING with nothing left on the ring; true if it did. */
static bool release_if_done(forward_connection *c) {
  if (c->state != CONNECTION_CLOSING || operations_of(c) > 0) {
    return false;
  }
  forwarder *f = c->owner;
  assert(c->link == NULL && c->pending_count == 0);
  close(c->fd);
  buffer_free(&c->queued);
  buffer_free(&c->sending);
  buffer_free(&c->input);
  free(c->pending);
  if (c->previous != NULL) {
    c->previous->next = c->next;
  } else {
    f->connections = c->next;
  }
  if (c->next != NULL) {
    c->next->previous = c->previous;
  }
  free(c);
  return true;
}

/* shutdown() already woke a receive or send; the cancel also catches a
 * connect, and operations prepared but not yet submitted (they go first). */
static void cancel_operations(forward_connection *c) {
  if (operations_of(c) == 0 || c->cancel_pending) {
    return;
  }
  struct io_uring_sqe *sqe = get_sqe(c->owner);
  if (sqe == NULL) {
    return; /* forwarder_destroy() tries again; shutdown() did the rest */
  }
  io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data(sqe, &c->cancel_completion);
  c->cancel_pending = true;
}

static void backoff_after_failure(forward_link *link, const forward_limits *limits) {
  uint32_t doubled =
      link->backoff_ms > limits->backoff_max_ms / 2 ? limits->backoff_max_ms : link->backoff_ms * 2;
  link->backoff_ms = link->backoff_ms == 0 ? limits->backoff_min_ms : doubled;
  link->retry_at_ms = now_ms() + link->backoff_ms;
}

/* Moves to CLOSING and fails every pending request with `status`, each
 * exactly once: popped before its callback runs, and a callback sending
 * to the same node reaches a new connection, never this one. */
static void connection_close(forward_connection *c, int status) {
  if (c->state == CONNECTION_CLOSING) {
    return;
  }
  forward_link *link = c->link;
  assert(link != NULL && link->connection == c);
  link->connection = NULL;
  c->link = NULL;
  if (!c->handshake_done || status == -EPROTO) {
    backoff_after_failure(link, &c->owner->limits);
  }
  c->state = CONNECTION_CLOSING;
  shutdown(c->fd, SHUT_RDWR);
  cancel_operations(c);
  while (c->pending_count > 0) {
    pending_request request = pending_pop(c);
    if (request.callback != NULL) {
      request.callback(request.context, status, NULL, 0);
    }
  }
}

/* ---- sending ---- */

static void prepare_send(forward_connection *c) {
  struct io_uring_sqe *sqe = get_sqe(c->owner);
  if (sqe == NULL) {
    connection_close(c, -ECONNRESET);
    return;
  }
  io_uring_prep_send(sqe, c->fd, c->sending.data + c->sent, c->sending.length - c->sent,
                     MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, &c->send_completion);
  c->send_pending = true;
}

/* Hands everything queued to the kernel in one send, if none is on the ring. */
static void start_send(forward_connection *c) {
  if (c->state != CONNECTION_OPEN || c->send_pending || c->queued.length == 0) {
    return;
  }
  assert(c->sending.length == 0);
  byte_buffer drained = c->sending;
  c->sending = c->queued;
  c->queued = drained;
  c->sent = 0;
  prepare_send(c);
}

static void on_send(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  forward_connection *c = FL_CONTAINER_OF(completion, forward_connection, send_completion);
  c->send_pending = false;
  if (c->state == CONNECTION_OPEN) {
    if (result <= 0) {
      connection_close(c, -ECONNRESET);
    } else if (c->sent + (size_t)result < c->sending.length) {
      c->sent += (size_t)result;
      prepare_send(c);
    } else {
      c->sending.length = 0;
      c->sent = 0;
      buffer_trim_if_idle(&c->sending);
      start_send(c);
    }
  }
  release_if_done(c);
}

/* ---- receiving ---- */

static void post_receive(forward_connection *c) {
  if (c->state != CONNECTION_OPEN) {
    return;
  }
  buffer_trim_if_idle(&c->input);
  size_t limit = c->owner->limits.max_reply_bytes + RECEIVE_INITIAL_BYTES;
  if (c->input.capacity - c->input.length < RECEIVE_MIN_ROOM_BYTES) {
    /* Delivered replies are gone: what is left is part of one reply, which
     * the scanner keeps below max_reply_bytes, so there is room to grow. */
    assert(c->input.length < limit);
    size_t grow =
        c->input.capacity < RECEIVE_INITIAL_BYTES ? RECEIVE_INITIAL_BYTES : c->input.capacity;
    size_t extra = grow < limit - c->input.length ? grow : limit - c->input.length;
    if (buffer_reserve(&c->input, extra, limit) != 0) {
      connection_close(c, -ECONNRESET);
      return;
    }
  }
  struct io_uring_sqe *sqe = get_sqe(c->owner);
  if (sqe == NULL) {
    connection_close(c, -ECONNRESET);
    return;
  }
  io_uring_prep_recv(sqe, c->fd, c->input.data + c->input.length,
                     c->input.capacity - c->input.length, 0);
  io_uring_sqe_set_data(sqe, &c->receive_completion);
  c->receive_pending = true;
}

/* The handshake's reply: the other node agreed never to forward again. */
static int accept_handshake_reply(forward_connection *c, const char *reply, size_t length) {
  if (length != strlen(HANDSHAKE_REPLY) || memcmp(reply, HANDSHAKE_REPLY, length) != 0) {
    return -EPROTO;
  }
  c->handshake_done = true;
  c->link->backoff_ms = 0;
  c->link->retry_at_ms = 0;
  return 0;
}

/* Hands every complete reply to its request; 0, or -EPROTO. */
static int deliver_replies(forward_connection *c) {
  size_t offset = 0;
  int rc = 0;
  while (offset < c->input.length) {
    size_t length = 0;
    rc = reply_scan(&c->scanner, c->input.data + offset, c->input.length - offset, &length);
    if (rc <= 0) {
      break;
    }
    if (c->pending_count == 0) {
      rc = -EPROTO; /* a reply nobody asked for */
      break;
    }
    pending_request request = pending_pop(c);
    const char *reply = c->input.data + offset;
    offset += length;
    if (request.callback == NULL) {
      rc = accept_handshake_reply(c, reply, length);
      if (rc != 0) {
        break;
      }
    } else {
      request.callback(request.context, 0, reply, length);
    }
  }
  memmove(c->input.data, c->input.data + offset, c->input.length - offset);
  c->input.length -= offset;
  return rc < 0 ? rc : 0;
}

static void on_receive(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  forward_connection *c = FL_CONTAINER_OF(completion, forward_connection, receive_completion);
  c->receive_pending = false;
  if (c->state == CONNECTION_OPEN) {
    if (result <= 0) {
      connection_close(c, -ECONNRESET);
    } else {
      c->input.length += (size_t)result;
      int rc = deliver_replies(c);
      if (rc < 0) {
        connection_close(c, rc);
      } else {
        post_receive(c);
      }
    }
  }
  release_if_done(c);
}

/* ---- connecting ---- */

static void on_connect(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  forward_connection *c = FL_CONTAINER_OF(completion, forward_connection, connect_completion);
  c->connect_pending = false;
  if (c->state == CONNECTION_CONNECTING) {
    if (result < 0) {
      connection_close(c, -ECONNREFUSED);
    } else {
      c->state = CONNECTION_OPEN;
      post_receive(c);
      start_send(c);
    }
  }
  release_if_done(c);
}

static void on_cancel(fl_completion *completion, int result, uint32_t flags) {
  (void)result;
  (void)flags;
  forward_connection *c = FL_CONTAINER_OF(completion, forward_connection, cancel_completion);
  c->cancel_pending = false;
  release_if_done(c);
}

static forward_connection *connection_new(forwarder *f, int fd) {
  forward_connection *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return NULL;
  }
  c->owner = f;
  c->fd = fd;
  c->state = CONNECTION_CONNECTING;
  c->connect_completion.handle = on_connect;
  c->send_completion.handle = on_send;
  c->receive_completion.handle = on_receive;
  c->cancel_completion.handle = on_cancel;
  reply_scanner_init(&c->scanner, f->limits.max_reply_bytes);
  size_t handshake = strlen(HANDSHAKE_REQUEST);
  if (pending_reserve(c) != 0 || buffer_reserve(&c->queued, handshake, SIZE_MAX) != 0) {
    free(c->pending);
    buffer_free(&c->queued);
    free(c);
    return NULL;
  }
  buffer_append(&c->queued, HANDSHAKE_REQUEST, handshake);
  pending_push(c, NULL, NULL);
  return c;
}

/* A new connection to the link's node, its connect on the ring. */
static int connection_open(forwarder *f, forward_link *link) {
  int fd = socket(link->address.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -errno;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  forward_connection *c = connection_new(f, fd);
  struct io_uring_sqe *sqe = c == NULL ? NULL : get_sqe(f);
  if (sqe == NULL) {
    int rc = c == NULL ? -ENOMEM : -EBUSY;
    if (c != NULL) {
      free(c->pending);
      buffer_free(&c->queued);
      free(c);
    }
    close(fd);
    return rc;
  }
  io_uring_prep_connect(sqe, fd, (struct sockaddr *)&link->address, link->address_length);
  io_uring_sqe_set_data(sqe, &c->connect_completion);
  c->connect_pending = true;
  c->link = link;
  link->connection = c;
  c->next = f->connections;
  if (f->connections != NULL) {
    f->connections->previous = c;
  }
  f->connections = c;
  return 0;
}

/* ---- the forwarder ---- */

static bool limits_are_valid(const forward_limits *limits) {
  return limits->max_pending >= 1 && limits->max_pending < UINT32_MAX / 2 &&
         limits->max_output_bytes >= 64 && limits->max_reply_bytes >= 16 &&
         limits->max_reply_bytes <= SIZE_MAX / 4 && limits->backoff_min_ms >= 1 &&
         limits->backoff_min_ms <= limits->backoff_max_ms;
}

static void resolve_link(forward_link *link, const server_node *node) {
  char port[8];
  snprintf(port, sizeof(port), "%u", node->client_port);
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
  struct addrinfo *found = NULL;
  if (getaddrinfo(node->host, port, &hints, &found) != 0 || found == NULL) {
    return; /* forward_send answers -EHOSTUNREACH */
  }
  memcpy(&link->address, found->ai_addr, found->ai_addrlen);
  link->address_length = found->ai_addrlen;
  link->resolved = true;
  freeaddrinfo(found);
}

int forwarder_create_with_limits(struct io_uring *ring, const server_config *config,
                                 const forward_limits *limits, forwarder **out) {
  *out = NULL;
  forward_limits chosen = limits != NULL ? *limits : forward_limits_default();
  if (ring == NULL || config->node_count > SERVER_MAX_NODES || !limits_are_valid(&chosen)) {
    return -EINVAL;
  }
  forwarder *f = calloc(1, sizeof(*f));
  if (f == NULL) {
    return -ENOMEM;
  }
  f->ring = ring;
  f->limits = chosen;
  for (uint32_t i = 0; i < config->node_count; i++) {
    if (config->nodes[i].id == config->node_id) {
      continue; /* never forward to ourselves */
    }
    forward_link *link = &f->links[f->link_count++];
    link->node = config->nodes[i].id;
    resolve_link(link, &config->nodes[i]);
  }
  *out = f;
  return 0;
}

int forwarder_create(struct io_uring *ring, const server_config *config, forwarder **out) {
  return forwarder_create_with_limits(ring, config, NULL, out);
}

static forward_link *find_link(forwarder *f, uint64_t node) {
  for (uint32_t i = 0; i < f->link_count; i++) {
    if (f->links[i].node == node) {
      return &f->links[i];
    }
  }
  return NULL;
}

int forward_send(forwarder *f, uint64_t node, const resp_argument *arguments, uint32_t count,
                 forward_reply_fn callback, void *context) {
  if (f->destroying) {
    return -ECANCELED;
  }
  forward_link *link = find_link(f, node);
  if (link == NULL || count == 0 || callback == NULL) {
    return -EINVAL;
  }
  if (!link->resolved) {
    return -EHOSTUNREACH;
  }
  if (link->connection == NULL) {
    if (link->retry_at_ms != 0 && now_ms() < link->retry_at_ms) {
      return -ECONNREFUSED;
    }
    int rc = connection_open(f, link);
    if (rc != 0) {
      return rc;
    }
  }
  forward_connection *c = link->connection;
  assert(c->state != CONNECTION_CLOSING && c->link == link);
  if (requests_pending(c) >= f->limits.max_pending) {
    return -ENOBUFS;
  }
  int rc = pending_reserve(c);
  if (rc == 0) {
    rc = encode_request(c, arguments, count);
  }
  if (rc != 0) {
    return rc;
  }
  pending_push(c, callback, context);
  return 0;
}

void forwarder_flush(forwarder *f) {
  for (uint32_t i = 0; i < f->link_count; i++) {
    if (f->links[i].connection != NULL) {
      start_send(f->links[i].connection);
    }
  }
}

void forwarder_destroy(forwarder *f) {
  if (f == NULL) {
    return;
  }
  f->destroying = true;
  for (uint32_t i = 0; i < f->link_count; i++) {
    if (f->links[i].connection != NULL) {
      connection_close(f->links[i].connection, -ECANCELED);
    }
  }
  uint64_t deadline_ms = now_ms() + DESTROY_TIMEOUT_MS;
  while (f->connections != NULL && now_ms() < deadline_ms) {
    for (forward_connection *c = f->connections; c != NULL; c = c->next) {
      cancel_operations(c); /* again, if the queue was full the first time */
    }
    fl_dispatch(f->ring, 1, 50 * 1000 * 1000);
  }
  if (f->connections != NULL) {
    /* The kernel still owns buffers of ours: leaking them is safe, freeing is not. */
    fprintf(stderr, "forwarder: operations still on the ring after %u ms; memory kept\n",
            DESTROY_TIMEOUT_MS);
    return;
  }
  free(f);
}
