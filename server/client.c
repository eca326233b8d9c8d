/*
 * client.c - one connection: input buffer and RESP parser, the FIFO of
 * requests, the output, and the client's life.
 *
 * STATES
 *
 *   open -----(EOF, error, output limit)----------------> closing, drop output
 *     |  \---(QUIT, protocol error: reply then close)--> closing, send output
 *     v
 *   closing: no more input; requests still run to completion. Once the
 *   output is sent (or dropped), the socket is shut down; once no receive or
 *   send is in flight and the FIFO is empty the client is freed.
 *
 * INVARIANTS
 *
 *   - at most one receive and one send are posted;
 *   - replies leave in command order: a reply goes straight into `output`
 *     only when the FIFO is empty, else it waits in its request until every
 *     request before it is done;
 *   - unsent bytes (`output` + `sending`) stay under client-output-limit,
 *     else the client is dropped, as Redis's client-output-buffer-limit;
 *   - the input buffer holds exactly the unconsumed bytes, at most what the
 *     parser's limits let one request need.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server/server_internal.h"

static void describe_peer(int fd, char *text, size_t bytes) {
  struct sockaddr_storage address;
  socklen_t length = sizeof(address);
  text[0] = '\0';
  if (getpeername(fd, (struct sockaddr *)&address, &length) != 0) {
    return;
  }
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (address.ss_family == AF_INET) {
    struct sockaddr_in *v4 = (struct sockaddr_in *)&address;
    inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
    port = ntohs(v4->sin_port);
  } else if (address.ss_family == AF_INET6) {
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&address;
    inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
    port = ntohs(v6->sin6_port);
  }
  snprintf(text, bytes, "%s:%u", host, port);
}

client *client_create(io_thread *t, int fd) {
  const server_config *config = t->server->config;
  client *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return NULL;
  }
  resp_limits limits = {.max_arguments = config->max_arguments,
                        .max_inline_bytes = config->max_inline_bytes,
                        .max_bulk_bytes = config->max_bulk_bytes};
  if (resp_parser_init(&c->parser, &limits) != 0) {
    free(c);
    return NULL;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  c->thread = t;
  c->fd = fd;
  c->protocol = 2;
  c->id = atomic_fetch_add(&t->server->next_client_id, 1) + 1;
  c->created_ms = server_now_ms();
  c->receive_completion.handle = client_on_receive;
  c->send_completion.handle = client_on_send;
  resp_writer_init(&c->output, config->client_output_limit);
  resp_writer_init(&c->sending, config->client_output_limit);
  describe_peer(fd, c->address, sizeof(c->address));
  c->next = t->clients;
  if (t->clients != NULL) {
    t->clients->previous = c;
  }
  t->clients = c;
  atomic_fetch_add_explicit(&t->server->connections_received, 1, memory_order_relaxed);
  client_arm_receive(c);
  return c;
}

static void client_free(client *c) {
  io_thread *t = c->thread;
  assert(c->head == NULL && !c->receiving && !c->send_in_flight);
  if (c->previous != NULL) {
    c->previous->next = c->next;
  } else {
    t->clients = c->next;
  }
  if (c->next != NULL) {
    c->next->previous = c->previous;
  }
  if (!c->fd_closed) {
    close(c->fd);
  }
  atomic_fetch_sub(&t->server->clients, 1);
  resp_parser_destroy(&c->parser);
  resp_writer_destroy(&c->output);
  resp_writer_destroy(&c->sending);
  free(c->input);
  free(c);
}

bool client_idle(const client *c) {
  return c->head == NULL && !c->send_in_flight && c->output.length == 0;
}

/* Both mark the client dirty only when its state changes: the dirty pass
 * runs until no client is dirty, so a client must not re-mark itself. */
void client_close_after_reply(client *c) {
  if (!c->closing) {
    c->closing = true;
    client_mark_dirty(c);
  }
}

void client_close_now(client *c) {
  if (!c->close_now) {
    c->closing = true;
    c->close_now = true;
    client_mark_dirty(c);
  }
}

/* ---- input ------------------------------------------------------------- */

/* The bytes of one request at most, as Redis's client-query-buffer-limit:
 * a request's arguments stay in the input buffer until it is complete, and
 * the parser bounds each argument and their count but not their sum. */
#define CLIENT_MAX_REQUEST_BYTES (1ull << 30)

static bool request_too_large(const client *c) {
  return resp_parser_bytes_needed(&c->parser) > CLIENT_MAX_REQUEST_BYTES ||
         c->input_length >= CLIENT_MAX_REQUEST_BYTES;
}

/* Room for the next receive: what the unfinished request needs, at least
 * CLIENT_RECEIVE_BYTES; the parser's limits bound what it can ask for. */
static bool reserve_input(client *c) {
  size_t needed = resp_parser_bytes_needed(&c->parser);
  size_t want = c->input_length + CLIENT_RECEIVE_BYTES / 4;
  if (want < needed) {
    want = needed;
  }
  if (want < CLIENT_RECEIVE_BYTES) {
    want = CLIENT_RECEIVE_BYTES;
  }
  if (want <= c->input_capacity && c->input_capacity - c->input_length > 0) {
    return true;
  }
  if (want <= c->input_capacity) {
    want = c->input_capacity * 2;
  }
  char *input = realloc(c->input, want);
  if (input == NULL) {
    return false;
  }
  c->input = input;
  c->input_capacity = want;
  return true;
}

/* Gives back the memory of a large request once it is done. */
static void shrink_input(client *c) {
  if (c->input_capacity > CLIENT_RECEIVE_BYTES && c->input_length <= CLIENT_RECEIVE_BYTES / 2 &&
      resp_parser_bytes_needed(&c->parser) <= CLIENT_RECEIVE_BYTES / 2) {
    char *input = realloc(c->input, CLIENT_RECEIVE_BYTES);
    if (input != NULL) {
      c->input = input;
      c->input_capacity = CLIENT_RECEIVE_BYTES;
    }
  }
}

/* Unsent reply bytes beyond which a client is over client-output-limit. */
static bool over_output_limit(const client *c) {
  uint64_t limit = c->thread->server->config->client_output_limit;
  return c->output.length + c->sending.length > limit;
}

/* Another node's connection (FLOTILLA FORWARDED) carries the commands of
 * many clients: cutting it at the output limit would fail all of them, so
 * it is paused instead - no more commands are read from it until its
 * replies drain below the limit. Its memory stays bounded by the limit
 * plus the replies of at most CLIENT_MAX_PIPELINE commands in flight. */
static bool may_read(const client *c) {
  return !c->closing && c->deferred == NULL && !c->thread->draining &&
         c->pipeline < CLIENT_MAX_PIPELINE && io_thread_admits(c->thread) &&
         !(c->forwarder && over_output_limit(c));
}

void client_arm_receive(client *c) {
  if (c->receiving || !may_read(c)) {
    return;
  }
  if (request_too_large(c)) {
    resp_writer *w = client_reply_writer(c);
    if (w != NULL) {
      resp_write_error(w, "ERR Protocol error: a request larger than 1 GiB");
    }
    client_close_after_reply(c);
    return;
  }
  if (!reserve_input(c)) {
    client_close_now(c);
    return;
  }
  struct io_uring_sqe *sqe = server_get_sqe(&c->thread->ring);
  io_uring_prep_recv(sqe, c->fd, c->input + c->input_length, c->input_capacity - c->input_length,
                     0);
  io_uring_sqe_set_data(sqe, &c->receive_completion);
  c->receiving = true;
}

static void protocol_error(client *c) {
  resp_writer *w = client_reply_writer(c);
  if (w != NULL) {
    resp_write_error(w, resp_parser_error_text(&c->parser));
  }
  client_close_after_reply(c);
}

/* Parses and runs every complete command the buffer holds, while the
 * bounds allow. */
static void process_input(client *c) {
  size_t start = 0;
  while (may_read(c) && start < c->input_length) {
    size_t consumed = 0;
    resp_command command;
    int rc = resp_parse(&c->parser, c->input + start, c->input_length - start, &consumed, &command);
    if (rc == 1) {
      c->commands++;
      command_dispatch(c, command.arguments, command.count);
      start += consumed;
      continue;
    }
    start += consumed;
    if (rc == -EPROTO) {
      protocol_error(c);
    } else if (rc < 0) {
      client_close_now(c);
    }
    break;
  }
  if (!c->closing && !c->thread->draining && c->pipeline < CLIENT_MAX_PIPELINE &&
      !io_thread_admits(c->thread)) {
    c->thread->input_paused = true;
  }
  if (start > 0) {
    memmove(c->input, c->input + start, c->input_length - start);
    c->input_length -= start;
  }
  shrink_input(c);
}

void client_on_receive(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  client *c = FL_CONTAINER_OF(completion, client, receive_completion);
  c->receiving = false;
  if (result <= 0) {
    if (result != -ECANCELED && result != -EINTR) {
      client_close_now(c); /* end of stream or error: nobody reads replies */
    }
    client_mark_dirty(c);
    return;
  }
  if (!c->closing) {
    c->input_length += (size_t)result;
    assert(c->input_length <= c->input_capacity);
    process_input(c);
  }
  client_mark_dirty(c);
}

/* ---- output ------------------------------------------------------------ */

void client_on_send(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  client *c = FL_CONTAINER_OF(completion, client, send_completion);
  c->send_in_flight = false;
  if (result < 0) {
    client_close_now(c);
  } else {
    resp_writer_discard(&c->sending, (size_t)result);
  }
  client_mark_dirty(c);
}

static void submit_send(client *c) {
  if (c->send_in_flight || c->close_now || c->fd_closed) {
    return;
  }
  if (c->sending.length == 0 && c->output.length > 0) {
    /* The output becomes what is sent; replies accumulate in the other
     * buffer meanwhile, so a buffer on the wire never moves. */
    resp_writer spare = c->sending;
    uint8_t protocol = c->output.protocol;
    c->sending = c->output;
    c->output = spare;
    c->output.protocol = protocol;
    c->output.error = 0;
  }
  if (c->sending.length == 0) {
    return;
  }
  struct io_uring_sqe *sqe = server_get_sqe(&c->thread->ring);
  io_uring_prep_send(sqe, c->fd, c->sending.data, c->sending.length, MSG_NOSIGNAL);
  io_uring_sqe_set_data(sqe, &c->send_completion);
  c->send_in_flight = true;
}

/* A reply that reaches an empty output when no finished reply follows
 * it (the unpipelined case) becomes the output: its buffer is swapped in,
 * not copied, and the request takes the output's empty buffer. Replies
 * collected together are copied instead, so the one buffer that goes on
 * the wire does not grow reply by reply from a request's small one. The
 * reply is within the output limit, as every writer has that limit. */
static bool take_reply_buffer(client *c, request *r) {
  if (c->output.length != 0 || c->output.error != 0 || (r->next != NULL && r->next->done)) {
    return false;
  }
  assert(r->reply.length <= c->thread->server->config->client_output_limit);
  resp_writer_swap_buffers(&c->output, &r->reply);
  return true;
}

/* A node's connection is not held to the output limit (see may_read), so
 * its writer takes any reply that memory allows. */
static bool append_reply(client *c, request *r) {
  if (r->reply.error != 0) {
    return false;
  }
  if (take_reply_buffer(c, r)) {
    return true;
  }
  size_t saved_limit = c->output.max_bytes;
  if (c->forwarder) {
    c->output.max_bytes = SIZE_MAX;
  }
  int rc = resp_write_raw(&c->output, r->reply.data, r->reply.length);
  c->output.max_bytes = saved_limit;
  return rc == 0;
}

/* Moves the replies of the finished requests at the FIFO's head to the
 * output (or drops them when the client is gone). */
static void collect_replies(client *c) {
  while (c->head != NULL && c->head->done) {
    request *r = c->head;
    c->head = r->next;
    if (c->head == NULL) {
      c->tail = NULL;
    }
    c->pipeline--;
    if (!c->close_now && !append_reply(c, r)) {
      client_close_now(c); /* over the output limit (or out of memory) */
    }
    request_free(r);
  }
  if (!c->close_now && (c->output.error != 0 || (!c->forwarder && over_output_limit(c)))) {
    client_close_now(c);
  }
}

/* Once the client is closing and its output is sent or dropped, the socket
 * is shut down (which also ends a posted receive); once nothing is in
 * flight it is freed. */
static bool finish_closing(client *c) {
  if (!c->closing) {
    return false;
  }
  bool output_done = c->close_now || (c->output.length == 0 && c->sending.length == 0);
  if (output_done && !c->fd_closed) {
    if (c->receiving || c->send_in_flight) {
      shutdown(c->fd, SHUT_RDWR);
      return false;
    }
    close(c->fd);
    c->fd_closed = true;
  }
  /* A client marked dirty again is on the dirty list: it is freed when
   * that pass reaches it, never while the list still points at it. */
  if (c->fd_closed && c->head == NULL && !c->receiving && !c->send_in_flight && !c->is_dirty) {
    client_free(c);
    return true;
  }
  return false;
}

void client_service(client *c) {
  collect_replies(c);
  if (c->thread->draining && !c->closing && c->head == NULL && c->output.length == 0 &&
      c->sending.length == 0) {
    client_close_after_reply(c); /* shutting down: idle clients go */
  }
  if (finish_closing(c)) {
    return;
  }
  if (!c->closing && c->input_length > 0 && may_read(c)) {
    process_input(c);
    collect_replies(c);
  }
  submit_send(c);
  client_arm_receive(c);
}

/* ---- requests ------------------------------------------------------------ */

resp_writer *client_reply_writer(client *c) {
  if (c->head == NULL) {
    return &c->output;
  }
  request *r = request_create(c);
  if (r == NULL) {
    return NULL;
  }
  r->done = true;
  c->thread->inflight--; /* answered already: never in flight */
  return &r->reply;
}

/* A zeroed request, apart from the buffers a spare one keeps. */
static request *take_request(io_thread *t) {
  request *r = t->spare_requests;
  if (r == NULL) {
    return calloc(1, sizeof(*r));
  }
  t->spare_requests = r->next;
  t->spare_count--;
  r->next = NULL;
  return r;
}

request *request_create(client *c) {
  request *r = take_request(c->thread);
  if (r == NULL) {
    client_close_now(c);
    return NULL;
  }
  r->owner = c;
  /* As resp_writer_init, but a spare request's reply keeps its buffer
   * (take_request zeroed the rest). */
  assert(r->reply.length == 0 && r->reply.error == 0);
  r->reply.max_bytes = c->thread->server->config->client_output_limit;
  r->reply.protocol = (uint8_t)c->protocol;
  if (c->tail != NULL) {
    c->tail->next = r;
  } else {
    c->head = r;
  }
  c->tail = r;
  c->pipeline++;
  c->thread->inflight++;
  return r;
}

void request_launch(request *r, bool is_write, request_done_fn launch) {
  client *c = r->owner;
  r->is_key_command = true;
  r->is_write = is_write;
  c->kind_pending[is_write]++;
  if (c->kind_pending[!is_write] == 0) {
    launch(r);
    return;
  }
  assert(c->deferred == NULL); /* input stops while one waits */
  r->launch = launch;
  c->deferred = r;
}

/* The last command of the other kind is done: the deferred one starts. */
static void launch_deferred(client *c) {
  request *r = c->deferred;
  c->deferred = NULL;
  request_done_fn launch = r->launch;
  r->launch = NULL;
  launch(r);
}

void request_finish(request *r) {
  assert(!r->done);
  client *c = r->owner;
  io_thread *t = c->thread;
  r->done = true;
  t->inflight--;
  if (r->is_key_command && --c->kind_pending[r->is_write] == 0 && c->deferred != NULL &&
      c->deferred->is_write != r->is_write) {
    launch_deferred(c);
  }
  if (t->input_paused && io_thread_admits(t)) {
    /* Clients stopped at the thread's bound may read again. */
    t->input_paused = false;
    for (client *other = t->clients; other != NULL; other = other->next) {
      client_mark_dirty(other);
    }
  }
  client_mark_dirty(c);
}

int request_copy_arguments(request *r, const resp_argument *arguments, uint32_t count) {
  size_t bytes = (size_t)count * sizeof(resp_argument);
  for (uint32_t i = 0; i < count; i++) {
    bytes += arguments[i].length;
  }
  if (bytes == 0) {
    bytes = 1;
  }
  if (bytes > r->arguments_bytes) {
    /* The block of a spare request is too small: a new one. */
    free(r->arguments);
    r->arguments_bytes = 0;
    r->arguments = malloc(bytes);
    if (r->arguments == NULL) {
      return -ENOMEM;
    }
    r->arguments_bytes = bytes;
  }
  char *block = (char *)r->arguments;
  resp_argument *copies = (resp_argument *)block;
  char *data = block + (size_t)count * sizeof(resp_argument);
  for (uint32_t i = 0; i < count; i++) {
    memcpy(data, arguments[i].data, arguments[i].length);
    copies[i] = (resp_argument){.data = data, .length = arguments[i].length};
    data += arguments[i].length;
  }
  r->arguments = copies;
  r->argument_count = count;
  return 0;
}

/* Frees the buffers of a request kept as a spare that are too large to
 * keep: the request itself is still reused, and a later command needing
 * that much allocates again. */
static void drop_large_buffers(request *r) {
  if (r->reply.capacity > SERVER_SPARE_BUFFER_BYTES) {
    resp_writer_destroy(&r->reply);
  }
  if (r->arguments_bytes > SERVER_SPARE_BUFFER_BYTES) {
    free(r->arguments);
    r->arguments = NULL;
    r->arguments_bytes = 0;
  }
}

/* Runs on the request's io thread (the only one that takes spares). */
void request_free(request *r) {
  io_thread *t = r->owner->thread;
  free(r->parts);
  free(r->results);
  if (t->spare_count >= SERVER_SPARE_REQUESTS) {
    resp_writer_destroy(&r->reply);
    free(r->arguments);
    free(r);
    return;
  }
  drop_large_buffers(r);
  resp_writer reply = r->reply;
  resp_argument *arguments = r->arguments;
  size_t arguments_bytes = r->arguments_bytes;
  memset(r, 0, sizeof(*r));
  r->reply.data = reply.data;
  r->reply.capacity = reply.capacity;
  r->arguments = arguments;
  r->arguments_bytes = arguments_bytes;
  r->next = t->spare_requests;
  t->spare_requests = r;
  t->spare_count++;
}

void request_free_spares(io_thread *t) {
  while (t->spare_requests != NULL) {
    request *r = t->spare_requests;
    t->spare_requests = r->next;
    resp_writer_destroy(&r->reply);
    free(r->arguments);
    free(r);
  }
  t->spare_count = 0;
}
