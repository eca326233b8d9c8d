/*
 * server.c - the io threads: each owns an io_uring, a listening socket
 * (SO_REUSEPORT: the kernel spreads connections over the threads), its
 * clients, a forwarder and the queue on which shard threads hand back
 * finished requests (woken by an eventfd read on the ring).
 *
 * One loop iteration:
 *   service the dirty clients (move finished replies to their output, resume
 *   input, start sends) -> forwarder_flush() -> submit and wait -> handle
 *   every completion (accepts, receives, sends, wake-ups, forwards).
 *
 * Shutdown (server_stop): the threads stop accepting and reading, wait up
 * to SERVER_DRAIN_TIMEOUT_MS for requests in flight to finish and their
 * replies to be sent, then close their clients. A thread that timed out
 * keeps its queue and requests allocated: late engine callbacks may still
 * hand requests to it until the engine is closed.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/server_internal.h"

/* A stopping thread looks at the clock this often while draining. */
#define DRAIN_POLL_MS 50

uint64_t server_now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static uint64_t monotonic_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

struct io_uring_sqe *server_get_sqe(struct io_uring *ring) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
  while (sqe == NULL) {
    /* The submission queue is full: hand it to the kernel and retry. */
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

void client_mark_dirty(client *c) {
  if (!c->is_dirty) {
    c->is_dirty = true;
    c->dirty_next = c->thread->dirty;
    c->thread->dirty = c;
  }
}

/* ---- the listener -------------------------------------------------------- */

static int open_listener(const char *host, uint16_t port, int *out) {
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
  struct addrinfo *addresses = NULL;
  char service[8];
  snprintf(service, sizeof(service), "%u", port);
  int rc = getaddrinfo(host, service, &hints, &addresses);
  if (rc != 0) {
    server_log(3, "bind %s: %s", host, gai_strerror(rc));
    return -EINVAL;
  }
  int fd = socket(addresses->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
      bind(fd, addresses->ai_addr, addresses->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
    rc = -errno;
    server_log(3, "listening on %s:%u: %s", host, port, strerror(errno));
    if (fd >= 0) {
      close(fd);
    }
    freeaddrinfo(addresses);
    return rc;
  }
  freeaddrinfo(addresses);
  *out = fd;
  return 0;
}

static void on_accept(fl_completion *completion, int result, uint32_t flags);

static void arm_accept(io_thread *t) {
  struct io_uring_sqe *sqe = server_get_sqe(&t->ring);
  io_uring_prep_multishot_accept(sqe, t->listen_fd, NULL, NULL, SOCK_CLOEXEC);
  io_uring_sqe_set_data(sqe, &t->accept_completion);
  t->accept_armed = true;
}

/* Over max-clients: Redis's error, then close. The socket is new, so the
 * short reply fits its send buffer: a plain write does not block. */
static void refuse_client(server *s, int fd) {
  static const char reply[] = "-ERR max number of clients reached\r\n";
  ssize_t ignored = send(fd, reply, sizeof(reply) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)ignored;
  close(fd);
  atomic_fetch_add_explicit(&s->connections_rejected, 1, memory_order_relaxed);
}

static void on_accept(fl_completion *completion, int result, uint32_t flags) {
  io_thread *t = FL_CONTAINER_OF(completion, io_thread, accept_completion);
  server *s = t->server;
  if (!(flags & IORING_CQE_F_MORE)) {
    t->accept_armed = false;
  }
  if (result >= 0) {
    if (t->draining) {
      close(result);
    } else if (atomic_fetch_add(&s->clients, 1) >= s->config->max_clients) {
      atomic_fetch_sub(&s->clients, 1);
      refuse_client(s, result);
    } else if (client_create(t, result) == NULL) {
      atomic_fetch_sub(&s->clients, 1);
      close(result);
    }
  } else if (result != -ECANCELED) {
    server_log(2, "io thread %u: accept: %s", t->index, strerror(-result));
  }
  if (!t->accept_armed && !t->draining) {
    arm_accept(t);
  }
}

/* ---- requests coming back from shard threads ------------------------------- */

static void on_wake(fl_completion *completion, int result, uint32_t flags);

static void arm_wake(io_thread *t) {
  struct io_uring_sqe *sqe = server_get_sqe(&t->ring);
  io_uring_prep_read(sqe, fl_queue_event_fd(&t->completions), &t->wake_value, sizeof(t->wake_value),
                     0);
  io_uring_sqe_set_data(sqe, &t->wake_completion);
}

static void on_wake(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  io_thread *t = FL_CONTAINER_OF(completion, io_thread, wake_completion);
  if (result < 0 && result != -EINTR && result != -EAGAIN) {
    server_log(3, "io thread %u: wake-up read: %s", t->index, strerror(-result));
  }
  fl_queue_rearm(&t->completions);
  request *r;
  while ((r = fl_queue_pop(&t->completions)) != NULL) {
    request_done_fn hook = r->on_io;
    r->on_io = NULL;
    if (hook != NULL) {
      hook(r);
    } else {
      request_finish(r);
    }
  }
  arm_wake(t);
}

void request_finish_from_shard(request *r) {
  io_thread *t = r->owner->thread;
  bool pushed = fl_queue_push(&t->completions, r);
  /* The queue holds SERVER_MAX_INFLIGHT items and at most that many
   * requests are admitted, each pushed once per trip. */
  assert(pushed);
  (void)pushed;
}

bool io_thread_admits(const io_thread *t) {
  return t->inflight < SERVER_MAX_INFLIGHT && !t->draining;
}

/* ---- the loop ---------------------------------------------------------- */

static void service_dirty_clients(io_thread *t) {
  while (t->dirty != NULL) {
    client *c = t->dirty;
    t->dirty = c->dirty_next;
    c->is_dirty = false;
    client_service(c); /* may free c, or mark it dirty again */
  }
}

static void begin_drain(io_thread *t) {
  t->draining = true;
  if (t->accept_armed) {
    struct io_uring_sqe *sqe = server_get_sqe(&t->ring);
    io_uring_prep_cancel(sqe, &t->accept_completion, 0);
    io_uring_sqe_set_data(sqe, NULL);
  }
  for (client *c = t->clients; c != NULL; c = c->next) {
    client_mark_dirty(c); /* each stops reading and closes once idle */
  }
}

static bool drained(const io_thread *t) {
  if (t->inflight > 0) {
    return false;
  }
  for (const client *c = t->clients; c != NULL; c = c->next) {
    if (!client_idle(c)) {
      return false;
    }
  }
  return true;
}

static void handle_completions(io_thread *t) {
  struct io_uring_cqe *cqe;
  unsigned head;
  unsigned seen = 0;
  io_uring_for_each_cqe(&t->ring, head, cqe) {
    fl_completion *completion = io_uring_cqe_get_data(cqe);
    if (completion != NULL) {
      completion->handle(completion, cqe->res, cqe->flags);
    }
    seen++;
  }
  io_uring_cq_advance(&t->ring, seen);
}

static void run_loop(io_thread *t) {
  uint64_t deadline_ms = 0;
  for (;;) {
    if (atomic_load(&t->server->stopping) && !t->draining) {
      begin_drain(t);
      deadline_ms = monotonic_ms() + SERVER_DRAIN_TIMEOUT_MS;
    }
    service_dirty_clients(t);
    if (t->forwarder != NULL) {
      forwarder_flush(t->forwarder);
    }
    if (t->draining && (drained(t) || monotonic_ms() >= deadline_ms)) {
      return;
    }
    struct io_uring_cqe *cqe = NULL;
    struct __kernel_timespec wait = {.tv_sec = 0, .tv_nsec = DRAIN_POLL_MS * 1000000ll};
    int rc = io_uring_submit_and_wait_timeout(&t->ring, &cqe, 1, t->draining ? &wait : NULL, NULL);
    if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
      server_log(3, "io thread %u: io_uring: %s", t->index, strerror(-rc));
      return;
    }
    handle_completions(t);
  }
}

static void close_clients(io_thread *t) {
  while (t->clients != NULL) {
    client_close_now(t->clients);
    client *c = t->clients;
    /* Nothing is in flight any more: the kernel owns no buffer of it. */
    c->receiving = false;
    c->send_in_flight = false;
    c->is_dirty = false; /* no dirty pass runs any more */
    t->dirty = NULL;
    client_service(c);
    if (t->clients == c) {
      break; /* still has requests: left to the process's end */
    }
  }
}

static void *io_thread_main(void *argument) {
  io_thread *t = argument;
  arm_accept(t);
  arm_wake(t);
  run_loop(t);
  if (t->inflight > 0) {
    server_log(2, "io thread %u: %u requests still in flight after %u ms", t->index, t->inflight,
               SERVER_DRAIN_TIMEOUT_MS);
    return NULL;
  }
  if (t->forwarder != NULL) {
    forwarder_destroy(t->forwarder);
    t->forwarder = NULL;
  }
  /* Closing the ring cancels the receives and sends still posted. */
  io_uring_queue_exit(&t->ring);
  close_clients(t);
  request_free_spares(t);
  close(t->listen_fd);
  fl_queue_destroy(&t->completions);
  t->clean = true;
  return NULL;
}

static int init_thread(server *s, io_thread *t, uint32_t index) {
  *t = (io_thread){.server = s, .index = index, .listen_fd = -1};
  t->accept_completion.handle = on_accept;
  t->wake_completion.handle = on_wake;
  int rc = open_listener(s->config->bind, s->self->client_port, &t->listen_fd);
  if (rc != 0) {
    return rc;
  }
  rc = io_uring_queue_init(SERVER_RING_ENTRIES, &t->ring, 0);
  if (rc != 0) {
    server_log(3, "io thread %u: io_uring_queue_init: %s", index, strerror(-rc));
    close(t->listen_fd);
    return rc;
  }
  rc = fl_queue_init(&t->completions, SERVER_MAX_INFLIGHT);
  if (rc == 0) {
    rc = forwarder_create(&t->ring, s->config, &t->forwarder);
    if (rc != 0) {
      fl_queue_destroy(&t->completions);
    }
  }
  if (rc != 0) {
    server_log(3, "io thread %u: %s", index, strerror(rc < 0 ? -rc : rc));
    io_uring_queue_exit(&t->ring);
    close(t->listen_fd);
  }
  return rc;
}

int server_start(server *s) {
  s->started_ms = server_now_ms();
  s->thread_count = s->config->io_threads;
  s->threads = calloc(s->thread_count, sizeof(io_thread));
  if (s->threads == NULL) {
    return -ENOMEM;
  }
  uint32_t started = 0;
  int rc = 0;
  for (; started < s->thread_count; started++) {
    io_thread *t = &s->threads[started];
    rc = init_thread(s, t, started);
    if (rc == 0 && pthread_create(&t->thread, NULL, io_thread_main, t) != 0) {
      rc = -EAGAIN;
    }
    if (rc != 0) {
      break;
    }
  }
  if (rc != 0) {
    s->thread_count = started;
    server_stop(s);
  }
  return rc;
}

void server_stop(server *s) {
  atomic_store(&s->stopping, true);
  for (uint32_t i = 0; i < s->thread_count; i++) {
    uint64_t one = 1;
    /* Wakes the loop, which sees `stopping`. */
    ssize_t ignored = write(fl_queue_event_fd(&s->threads[i].completions), &one, sizeof(one));
    (void)ignored;
  }
  bool clean = true;
  for (uint32_t i = 0; i < s->thread_count; i++) {
    pthread_join(s->threads[i].thread, NULL);
    clean &= s->threads[i].clean;
  }
  if (clean) {
    /* Otherwise late engine callbacks may still reach a thread's queue. */
    free(s->threads);
    s->threads = NULL;
  }
  server_log(1, "io threads stopped");
}
