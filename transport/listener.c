/*
 * listener.c - the listening socket of a transport and its accept on the
 * ring: one accept at a time, re-armed from its own completion.
 *
 * A multishot accept would save one SQE per connection, but connections
 * are few and long-lived (one per peer), so the plain accept keeps the
 * cancel and retry story simple. An accept that fails (EMFILE, ENFILE, ...)
 * is retried at the next tick, never from its own completion, so a full
 * descriptor table cannot turn the loop into a spin.
 */
#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport/transport_internal.h"

static void on_accept(fl_completion *completion, int result, uint32_t flags);
static void on_accept_cancelled(fl_completion *completion, int result, uint32_t flags);

static int resolve_listen_address(const char *host, uint16_t port, struct sockaddr_storage *out,
                                  socklen_t *length) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char service[8];
  snprintf(service, sizeof(service), "%u", port);
  struct addrinfo *found = NULL;
  if (getaddrinfo(host, service, &hints, &found) != 0 || found == NULL) {
    return -EINVAL;
  }
  memcpy(out, found->ai_addr, found->ai_addrlen);
  *length = found->ai_addrlen;
  freeaddrinfo(found);
  return 0;
}

static int bound_port(int fd, uint16_t *port) {
  struct sockaddr_storage address;
  socklen_t length = sizeof(address);
  if (getsockname(fd, (struct sockaddr *)&address, &length) != 0) {
    return -errno;
  }
  if (address.ss_family == AF_INET6) {
    *port = ntohs(((struct sockaddr_in6 *)&address)->sin6_port);
  } else {
    *port = ntohs(((struct sockaddr_in *)&address)->sin_port);
  }
  return 0;
}

static int open_socket(const struct sockaddr_storage *address, socklen_t length) {
  int fd = socket(address->ss_family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) {
    return -errno;
  }
  /* A restarted node binds its port again while connections of its former
   * life are in TIME_WAIT. */
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (bind(fd, (const struct sockaddr *)address, length) != 0 ||
      listen(fd, TRANSPORT_LISTEN_BACKLOG) != 0) {
    int error = -errno;
    close(fd);
    return error;
  }
  return fd;
}

int listener_open(transport *t, const char *host, uint16_t port) {
  struct sockaddr_storage address;
  socklen_t length = 0;
  int rc = resolve_listen_address(host, port, &address, &length);
  if (rc != 0) {
    return rc;
  }
  int fd = open_socket(&address, length);
  if (fd < 0) {
    return fd;
  }
  rc = bound_port(fd, &t->listen_port);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  t->listen_fd = fd;
  t->accept_completion.handle = on_accept;
  t->accept_cancel_completion.handle = on_accept_cancelled;
  transport_log(t, TRANSPORT_LOG_INFO, "node %llu shard %u listening on %s port %u",
                (unsigned long long)t->options.node_id, t->options.shard_id, host, t->listen_port);
  return 0;
}

void listener_arm(transport *t) {
  if (t->listen_fd < 0 || t->accept_pending || t->shut_down) {
    return;
  }
  struct io_uring_sqe *sqe = transport_get_sqe(t);
  if (sqe == NULL) {
    t->accept_retry = true;
    return;
  }
  t->accept_address_length = sizeof(t->accept_address);
  io_uring_prep_accept(sqe, t->listen_fd, (struct sockaddr *)&t->accept_address,
                       &t->accept_address_length, SOCK_CLOEXEC);
  io_uring_sqe_set_data(sqe, &t->accept_completion);
  t->accept_pending = true;
  t->accept_retry = false;
}

static void close_listener_if_done(transport *t) {
  if (t->shut_down && !t->accept_pending && !t->accept_cancel_pending && t->listen_fd >= 0) {
    close(t->listen_fd);
    t->listen_fd = -1;
  }
}

/* Unauthenticated sockets are bounded: beyond the limit they are closed
 * before a byte is read, so a flood costs no buffer. */
static void take_connection(transport *t, int fd) {
  if (t->pending_handshakes >= TRANSPORT_MAX_PENDING_HANDSHAKES) {
    close(fd);
    t->stats.connections_refused++;
    transport_log_once(t, NULL, TRANSPORT_LOG_BIT_REFUSED, TRANSPORT_LOG_WARN,
                       "refusing connections: %u handshakes already pending",
                       TRANSPORT_MAX_PENDING_HANDSHAKES);
    return;
  }
  connection_set_socket_options(fd);
  transport_connection *c = connection_create(t, CONNECTION_INCOMING, fd);
  if (c == NULL) {
    return;
  }
  c->address = t->accept_address;
  c->address_length = t->accept_address_length;
  transport_address_text((const struct sockaddr *)&c->address, c->address_length, c->address_text,
                         sizeof(c->address_text));
  connection_start_incoming(c);
  connection_release_if_done(c);
}

static void on_accept(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  transport *t = FL_CONTAINER_OF(completion, transport, accept_completion);
  t->accept_pending = false;
  if (t->shut_down) {
    if (result >= 0) {
      close(result);
    }
    close_listener_if_done(t);
    return;
  }
  if (result < 0) {
    transport_log_once(t, NULL, TRANSPORT_LOG_BIT_ACCEPT, TRANSPORT_LOG_ERROR,
                       "accept failed: %s (retrying at the next tick)", transport_strerror(result));
    t->accept_retry = true;
    return;
  }
  take_connection(t, result);
  listener_arm(t);
}

static void on_accept_cancelled(fl_completion *completion, int result, uint32_t flags) {
  (void)result;
  (void)flags;
  transport *t = FL_CONTAINER_OF(completion, transport, accept_cancel_completion);
  t->accept_cancel_pending = false;
  close_listener_if_done(t);
}

void listener_shutdown(transport *t) {
  assert(t->shut_down);
  if (t->listen_fd < 0) {
    return;
  }
  if (t->accept_pending && !t->accept_cancel_pending) {
    struct io_uring_sqe *sqe = transport_get_sqe(t);
    if (sqe != NULL) {
      io_uring_prep_cancel(sqe, &t->accept_completion, 0);
      io_uring_sqe_set_data(sqe, &t->accept_cancel_completion);
      t->accept_cancel_pending = true;
    }
  }
  /* Also wakes an accept the cancel could not reach. */
  shutdown(t->listen_fd, SHUT_RDWR);
  close_listener_if_done(t);
}
