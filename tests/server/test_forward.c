/*
 * test_forward.c - the forwarder (server/server.h, forward.c) against a
 * small RESP server running in a thread of this test, and the reply
 * scanner (server/reply_scan.h) on its own.
 *
 * The server answers each command by its name: ECHO <x> with the bulk
 * <x>, BIG <n> with a bulk of n bytes, NESTED with nested arrays and
 * nulls, INT, NULL, NULLARRAY, ERR, SIMPLE, EMPTY with replies of those
 * types, SLOW <x> with the bulk <x> written one byte at a time, CLOSE by
 * closing the connection, GARBAGE with a reply of no RESP type, SILENT
 * with nothing. It records every command so the test can check the
 * handshake came first on each connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/dispatch.h"
#include "common/free_ports.h"
#include "server/reply_scan.h"
#include "server/resp.h"
#include "server/server.h"

/* ---- the reply scanner alone ---- */

/* Feeds `text` one byte more at a time; the reply must end exactly at its end. */
static void assert_scans_whole(const char *text, size_t length) {
  reply_scanner scanner;
  reply_scanner_init(&scanner, 1 << 20);
  size_t reply_length = 0;
  for (size_t seen = 0; seen < length; seen++) {
    assert_int_equal(reply_scan(&scanner, text, seen, &reply_length), 0);
  }
  assert_int_equal(reply_scan(&scanner, text, length, &reply_length), 1);
  assert_int_equal(reply_length, length);
  /* Whole at once, followed by the start of another reply. */
  char *followed = malloc(length + 2);
  memcpy(followed, text, length);
  memcpy(followed + length, "+O", 2);
  reply_scanner_init(&scanner, 1 << 20);
  assert_int_equal(reply_scan(&scanner, followed, length + 2, &reply_length), 1);
  assert_int_equal(reply_length, length);
  assert_int_equal(reply_scan(&scanner, followed + length, 2, &reply_length), 0);
  free(followed);
}

static void test_scanner_finds_reply_ends(void **state) {
  (void)state;
  const char *replies[] = {
      "+OK\r\n",
      "-ERR bad\r\n",
      ":0\r\n",
      ":-9223372036854775808\r\n",
      "$-1\r\n",
      "*-1\r\n",
      "$0\r\n\r\n",
      "$5\r\nab\r\nc\r\n",
      "*0\r\n",
      "*2\r\n$1\r\na\r\n*2\r\n:1\r\n*-1\r\n",
      "*3\r\n*1\r\n*1\r\n*0\r\n$-1\r\n+x\r\n",
      "_\r\n",
      "%1\r\n+k\r\n,1.5\r\n",
      "~2\r\n#t\r\n(123\r\n",
      "=8\r\ntxt:abcd\r\n",
      ">1\r\n!3\r\nerr\r\n",
  };
  for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
    assert_scans_whole(replies[i], strlen(replies[i]));
  }
}

static int scan_once(const char *text, size_t max_bytes) {
  reply_scanner scanner;
  reply_scanner_init(&scanner, max_bytes);
  size_t reply_length = 0;
  return reply_scan(&scanner, text, strlen(text), &reply_length);
}

static void test_scanner_refuses_bad_replies(void **state) {
  (void)state;
  const char *bad[] = {
      "?garbage\r\n",
      ":12a\r\n",
      ":\r\n",
      "$-2\r\n",
      "$3\r\nabcde\r\n",
      "*-2\r\n",
      "+OK\n",
      "\r\n",
      "$abc\r\n",
      ":99999999999999999999\r\n",
      "_x\r\n",
      "%-1\r\n",
      "|1\r\n+a\r\n+b\r\n",
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(scan_once(bad[i], 1 << 20), -EPROTO);
  }
  /* Over the bound: a bulk, a line, an array no reply of the bound could hold. */
  assert_int_equal(scan_once("$100\r\n", 64), -EPROTO);
  assert_int_equal(scan_once("+0123456789012345678901234567890123456789", 16), -EPROTO);
  assert_int_equal(scan_once("*30\r\n", 64), -EPROTO);
  assert_int_equal(scan_once("*10\r\n", 64), 0);
  assert_int_equal(scan_once("*5\r\n*5\r\n*5\r\n", 64), 0);
  assert_int_equal(scan_once("*5\r\n*5\r\n*5\r\n*5\r\n", 64), -EPROTO);
  /* The error is sticky. */
  reply_scanner scanner;
  reply_scanner_init(&scanner, 64);
  size_t length = 0;
  assert_int_equal(reply_scan(&scanner, "?", 1, &length), -EPROTO);
  assert_int_equal(reply_scan(&scanner, "+OK\r\n", 5, &length), -EPROTO);
}

/* ---- the test server ---- */

#define MAX_RECORDED 256

typedef struct test_server {
  int listen_fd;
  int stop_pipe[2];
  uint16_t port;
  bool refuse_handshake;
  pthread_t thread;
  pthread_mutex_t lock;
  uint32_t connections;            /* accepted so far */
  uint32_t commands;               /* received so far */
  char recorded[MAX_RECORDED][32]; /* first word (and second for FLOTILLA) per command */
  uint32_t recorded_connection[MAX_RECORDED];
} test_server;

static bool write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t written = send(fd, data, length, MSG_NOSIGNAL);
    if (written <= 0) {
      return false;
    }
    data += written;
    length -= (size_t)written;
  }
  return true;
}

static bool write_bulk(int fd, const char *data, size_t length) {
  char header[32];
  int header_length = snprintf(header, sizeof(header), "$%zu\r\n", length);
  return write_all(fd, header, (size_t)header_length) && write_all(fd, data, length) &&
         write_all(fd, "\r\n", 2);
}

static bool is_command(const resp_command *command, const char *name) {
  return command->arguments[0].length == strlen(name) &&
         strncasecmp(command->arguments[0].data, name, strlen(name)) == 0;
}

static void record(test_server *server, const resp_command *command) {
  pthread_mutex_lock(&server->lock);
  if (server->commands < MAX_RECORDED) {
    char *slot = server->recorded[server->commands];
    snprintf(slot, 32, "%.*s", (int)command->arguments[0].length, command->arguments[0].data);
    if (command->count == 2 && is_command(command, "FLOTILLA")) {
      snprintf(slot, 32, "FLOTILLA %.*s", (int)command->arguments[1].length,
               command->arguments[1].data);
    }
    server->recorded_connection[server->commands] = server->connections;
  }
  server->commands++;
  pthread_mutex_unlock(&server->lock);
}

static bool answer_fixed(int fd, const resp_command *command) {
  static const struct {
    const char *name;
    const char *reply;
  } fixed[] = {
      {"NESTED", "*3\r\n:1\r\n*2\r\n$-1\r\n*-1\r\n*0\r\n"},
      {"INT", ":-42\r\n"},
      {"NULL", "$-1\r\n"},
      {"NULLARRAY", "*-1\r\n"},
      {"ERR", "-ERR boom\r\n"},
      {"SIMPLE", "+PONG\r\n"},
      {"EMPTY", "$0\r\n\r\n"},
      {"GARBAGE", "?garbage\r\n"},
  };
  for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
    if (is_command(command, fixed[i].name)) {
      return write_all(fd, fixed[i].reply, strlen(fixed[i].reply));
    }
  }
  return write_all(fd, "-ERR unknown\r\n", 14);
}

/* false: close the connection. */
static bool answer(test_server *server, int fd, const resp_command *command) {
  record(server, command);
  if (is_command(command, "FLOTILLA")) {
    const char *reply = server->refuse_handshake ? "-ERR unknown command\r\n" : "+OK\r\n";
    return write_all(fd, reply, strlen(reply));
  }
  if (is_command(command, "ECHO") && command->count == 2) {
    return write_bulk(fd, command->arguments[1].data, command->arguments[1].length);
  }
  if (is_command(command, "BIG") && command->count == 2) {
    size_t length = strtoull(command->arguments[1].data, NULL, 10);
    char *data = malloc(length);
    for (size_t i = 0; i < length; i++) {
      data[i] = (char)('a' + i % 26);
    }
    bool ok = write_bulk(fd, data, length);
    free(data);
    return ok;
  }
  if (is_command(command, "SLOW") && command->count == 2) {
    char reply[256];
    int length = snprintf(reply, sizeof(reply), "$%zu\r\n%.*s\r\n", command->arguments[1].length,
                          (int)command->arguments[1].length, command->arguments[1].data);
    for (int i = 0; i < length; i++) {
      if (!write_all(fd, reply + i, 1)) {
        return false;
      }
    }
    return true;
  }
  if (is_command(command, "CLOSE")) {
    return false;
  }
  if (is_command(command, "SILENT")) {
    return true;
  }
  return answer_fixed(fd, command);
}

/* Waits for `fd` to be readable; false when the test asked the server to stop. */
static bool wait_readable(test_server *server, int fd) {
  struct pollfd fds[2] = {{.fd = fd, .events = POLLIN},
                          {.fd = server->stop_pipe[0], .events = POLLIN}};
  while (poll(fds, 2, -1) < 0) {
  }
  return (fds[1].revents & POLLIN) == 0;
}

static void serve_connection(test_server *server, int fd) {
  resp_parser parser;
  resp_parser_init(&parser, NULL);
  size_t capacity = 8u << 20; /* the largest request of the tests fits */
  char *buffer = malloc(capacity);
  size_t length = 0;
  bool open = true;
  while (open && wait_readable(server, fd)) {
    ssize_t received = recv(fd, buffer + length, capacity - length, 0);
    if (received <= 0) {
      break;
    }
    length += (size_t)received;
    for (;;) {
      size_t consumed = 0;
      resp_command command;
      int rc = resp_parse(&parser, buffer, length, &consumed, &command);
      if (rc == 1) {
        open = answer(server, fd, &command);
      }
      memmove(buffer, buffer + consumed, length - consumed);
      length -= consumed;
      if (rc != 1 || !open) {
        open = open && rc >= 0;
        break;
      }
    }
  }
  resp_parser_destroy(&parser);
  free(buffer);
  close(fd);
}

static void *serve(void *argument) {
  test_server *server = argument;
  while (wait_readable(server, server->listen_fd)) {
    int fd = accept4(server->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      continue;
    }
    pthread_mutex_lock(&server->lock);
    server->connections++;
    pthread_mutex_unlock(&server->lock);
    serve_connection(server, fd);
  }
  return NULL;
}

static void server_start(test_server *server) {
  memset(server, 0, sizeof(*server));
  pthread_mutex_init(&server->lock, NULL);
  assert_int_equal(pipe2(server->stop_pipe, O_CLOEXEC), 0);
  for (int attempt = 0; attempt < 20 && server->port == 0; attempt++) {
    uint16_t port = fl_free_ports(1);
    assert_true(port != 0);
    server->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(server->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in address = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(server->listen_fd, (struct sockaddr *)&address, sizeof(address)) == 0 &&
        listen(server->listen_fd, 16) == 0) {
      server->port = port;
    } else {
      close(server->listen_fd);
    }
  }
  assert_true(server->port != 0);
  assert_int_equal(pthread_create(&server->thread, NULL, serve, server), 0);
}

static void server_stop(test_server *server) {
  assert_int_equal(write(server->stop_pipe[1], "x", 1), 1);
  pthread_join(server->thread, NULL);
  close(server->listen_fd);
  close(server->stop_pipe[0]);
  close(server->stop_pipe[1]);
  pthread_mutex_destroy(&server->lock);
}

static uint32_t server_connections(test_server *server) {
  pthread_mutex_lock(&server->lock);
  uint32_t connections = server->connections;
  pthread_mutex_unlock(&server->lock);
  return connections;
}

/* ---- the forwarder's side: a ring, a loop, recorded callbacks ---- */

#define LOCAL_NODE 1u
#define SERVER_NODE 2u
#define DEAD_NODE 3u

typedef struct outcome {
  int calls;
  int status;
  char *reply;
  size_t length;
  int order; /* when it completed, counting from 1 */
} outcome;

typedef struct fixture {
  struct io_uring ring;
  test_server server;
  forwarder *forwarder;
  int completed;
} fixture;

static fixture *current;

static void on_reply(void *context, int status, const char *reply, size_t length) {
  outcome *o = context;
  o->calls++;
  o->status = status;
  o->order = ++current->completed;
  assert_true(status == 0 ? reply != NULL : reply == NULL);
  if (status == 0) {
    free(o->reply);
    o->reply = malloc(length + 1);
    memcpy(o->reply, reply, length);
    o->reply[length] = '\0';
    o->length = length;
  }
}

static uint64_t clock_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

/* A millisecond between two looks at a condition polled with a deadline. */
static void poll_pause(void) {
  struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};
  nanosleep(&pause, NULL);
}

/* Runs the loop until `count` more callbacks ran (deadline: 10 s). */
static void run_until_completed(fixture *fx, int count) {
  int target = fx->completed + count;
  uint64_t deadline = clock_ms() + 10000;
  while (fx->completed < target && clock_ms() < deadline) {
    forwarder_flush(fx->forwarder);
    assert_true(fl_dispatch(&fx->ring, 1, 10 * 1000 * 1000) >= 0);
  }
  assert_int_equal(fx->completed, target);
}

static void fixture_start(fixture *fx, const forward_limits *limits, bool refuse_handshake) {
  memset(fx, 0, sizeof(*fx));
  current = fx;
  server_start(&fx->server);
  fx->server.refuse_handshake = refuse_handshake;
  assert_int_equal(io_uring_queue_init(256, &fx->ring, 0), 0);
  server_config config;
  memset(&config, 0, sizeof(config));
  config.node_id = LOCAL_NODE;
  config.node_count = 3;
  const uint64_t ids[] = {LOCAL_NODE, SERVER_NODE, DEAD_NODE};
  uint16_t dead_port = fl_free_ports(1);
  const uint16_t ports[] = {1, fx->server.port, dead_port};
  for (uint32_t i = 0; i < 3; i++) {
    config.nodes[i].id = ids[i];
    snprintf(config.nodes[i].host, sizeof(config.nodes[i].host), "127.0.0.1");
    config.nodes[i].client_port = ports[i];
  }
  assert_int_equal(forwarder_create_with_limits(&fx->ring, &config, limits, &fx->forwarder), 0);
}

static void fixture_stop(fixture *fx) {
  forwarder_destroy(fx->forwarder);
  io_uring_queue_exit(&fx->ring);
  server_stop(&fx->server);
  current = NULL;
}

static int send_words(fixture *fx, uint64_t node, outcome *o, const char *first,
                      const char *second) {
  resp_argument arguments[2] = {{first, strlen(first)}, {second, second ? strlen(second) : 0}};
  return forward_send(fx->forwarder, node, arguments, second ? 2 : 1, on_reply, o);
}

static void outcomes_free(outcome *outcomes, size_t count) {
  for (size_t i = 0; i < count; i++) {
    free(outcomes[i].reply);
  }
}

static void assert_reply(const outcome *o, const char *expected) {
  assert_int_equal(o->calls, 1);
  assert_int_equal(o->status, 0);
  assert_int_equal(o->length, strlen(expected));
  assert_memory_equal(o->reply, expected, o->length);
}

/* ---- the forwarder ---- */

static void test_pipelined_replies_of_every_type(void **state) {
  (void)state;
  fixture fx;
  fixture_start(&fx, NULL, false);
  struct {
    const char *first;
    const char *second;
    const char *reply;
  } cases[] = {
      {"ECHO", "hello", "$5\r\nhello\r\n"},
      {"NESTED", NULL, "*3\r\n:1\r\n*2\r\n$-1\r\n*-1\r\n*0\r\n"},
      {"INT", NULL, ":-42\r\n"},
      {"NULL", NULL, "$-1\r\n"},
      {"NULLARRAY", NULL, "*-1\r\n"},
      {"ERR", NULL, "-ERR boom\r\n"},
      {"SIMPLE", NULL, "+PONG\r\n"},
      {"EMPTY", NULL, "$0\r\n\r\n"},
      {"SLOW", "split", "$5\r\nsplit\r\n"},
      {"ECHO", "a\r\nb", "$4\r\na\r\nb\r\n"},
  };
  enum { CASES = sizeof(cases) / sizeof(cases[0]) };
  outcome outcomes[CASES] = {0};
  for (int i = 0; i < CASES; i++) {
    assert_int_equal(send_words(&fx, SERVER_NODE, &outcomes[i], cases[i].first, cases[i].second),
                     0);
  }
  run_until_completed(&fx, CASES);
  for (int i = 0; i < CASES; i++) {
    assert_reply(&outcomes[i], cases[i].reply);
    assert_int_equal(outcomes[i].order, i + 1);
  }
  /* One connection; the handshake came first, its "+OK" went to nobody. */
  assert_int_equal(server_connections(&fx.server), 1);
  assert_string_equal(fx.server.recorded[0], "FLOTILLA FORWARDED");
  assert_int_equal(fx.server.commands, CASES + 1);
  outcomes_free(outcomes, CASES);
  fixture_stop(&fx);
}

static void test_large_bulks_across_many_receives(void **state) {
  (void)state;
  fixture fx;
  fixture_start(&fx, NULL, false);
  const size_t sizes[] = {3u << 20, 100000, 1, 5u << 20};
  enum { SIZES = sizeof(sizes) / sizeof(sizes[0]) };
  outcome outcomes[SIZES] = {0};
  for (int i = 0; i < SIZES; i++) {
    char length[32];
    snprintf(length, sizeof(length), "%zu", sizes[i]);
    assert_int_equal(send_words(&fx, SERVER_NODE, &outcomes[i], "BIG", length), 0);
  }
  /* A large request too: 2 MiB of argument. */
  size_t big = 2u << 20;
  char *value = malloc(big);
  memset(value, 'v', big);
  outcome echoed = {0};
  resp_argument arguments[2] = {{"ECHO", 4}, {value, big}};
  assert_int_equal(forward_send(fx.forwarder, SERVER_NODE, arguments, 2, on_reply, &echoed), 0);
  run_until_completed(&fx, SIZES + 1);
  for (int i = 0; i < SIZES; i++) {
    assert_int_equal(outcomes[i].calls, 1);
    assert_int_equal(outcomes[i].status, 0);
    char header[32];
    int header_length = snprintf(header, sizeof(header), "$%zu\r\n", sizes[i]);
    assert_int_equal(outcomes[i].length, (size_t)header_length + sizes[i] + 2);
    assert_memory_equal(outcomes[i].reply, header, (size_t)header_length);
    for (size_t b = 0; b < sizes[i]; b += 4099) {
      assert_int_equal(outcomes[i].reply[header_length + b], 'a' + b % 26);
    }
    assert_int_equal(outcomes[i].order, i + 1);
  }
  assert_int_equal(echoed.status, 0);
  assert_int_equal(echoed.length, strlen("$2097152\r\n") + big + 2);
  assert_memory_equal(echoed.reply + strlen("$2097152\r\n"), value, big);
  free(value);
  free(echoed.reply);
  outcomes_free(outcomes, SIZES);
  fixture_stop(&fx);
}

static void test_connection_loss_fails_pending_once_and_reconnects(void **state) {
  (void)state;
  fixture fx;
  fixture_start(&fx, NULL, false);
  outcome first = {0};
  outcome lost[4] = {0};
  assert_int_equal(send_words(&fx, SERVER_NODE, &first, "ECHO", "before"), 0);
  run_until_completed(&fx, 1);
  assert_reply(&first, "$6\r\nbefore\r\n");
  /* The server closes at CLOSE: it and everything after it are lost. */
  assert_int_equal(send_words(&fx, SERVER_NODE, &lost[0], "SILENT", NULL), 0);
  assert_int_equal(send_words(&fx, SERVER_NODE, &lost[1], "CLOSE", NULL), 0);
  assert_int_equal(send_words(&fx, SERVER_NODE, &lost[2], "ECHO", "after"), 0);
  assert_int_equal(send_words(&fx, SERVER_NODE, &lost[3], "ECHO", "later"), 0);
  run_until_completed(&fx, 4);
  for (int i = 0; i < 4; i++) {
    assert_int_equal(lost[i].calls, 1);
    assert_int_equal(lost[i].status, -ECONNRESET);
  }
  /* Run the loop a little more: nothing is reported twice. */
  for (int i = 0; i < 5; i++) {
    fl_dispatch(&fx.ring, 0, 0);
  }
  for (int i = 0; i < 4; i++) {
    assert_int_equal(lost[i].calls, 1);
  }
  /* A connection that had answered its handshake reconnects at once. */
  outcome again = {0};
  assert_int_equal(send_words(&fx, SERVER_NODE, &again, "ECHO", "again"), 0);
  run_until_completed(&fx, 1);
  assert_reply(&again, "$5\r\nagain\r\n");
  assert_int_equal(server_connections(&fx.server), 2);
  pthread_mutex_lock(&fx.server.lock);
  bool seen_second = false;
  for (uint32_t i = 1; i < fx.server.commands; i++) {
    if (fx.server.recorded_connection[i] == 2 && !seen_second) {
      assert_string_equal(fx.server.recorded[i], "FLOTILLA FORWARDED");
      seen_second = true;
    }
  }
  pthread_mutex_unlock(&fx.server.lock);
  assert_true(seen_second);
  outcomes_free(&first, 1);
  outcomes_free(lost, 4);
  outcomes_free(&again, 1);
  fixture_stop(&fx);
}

static void test_bogus_reply_fails_the_connection(void **state) {
  (void)state;
  forward_limits limits = forward_limits_default();
  limits.backoff_min_ms = 20;
  fixture fx;
  fixture_start(&fx, &limits, false);
  outcome outcomes[3] = {0};
  assert_int_equal(send_words(&fx, SERVER_NODE, &outcomes[0], "ECHO", "fine"), 0);
  assert_int_equal(send_words(&fx, SERVER_NODE, &outcomes[1], "GARBAGE", NULL), 0);
  assert_int_equal(send_words(&fx, SERVER_NODE, &outcomes[2], "ECHO", "behind"), 0);
  run_until_completed(&fx, 3);
  assert_reply(&outcomes[0], "$4\r\nfine\r\n");
  assert_int_equal(outcomes[1].status, -EPROTO);
  assert_int_equal(outcomes[2].status, -EPROTO);
  assert_int_equal(outcomes[1].calls, 1);
  assert_int_equal(outcomes[2].calls, 1);
  /* Backed off for a moment, then a new connection works. */
  outcome retry = {0};
  uint64_t deadline = clock_ms() + 5000;
  int rc = -ECONNREFUSED;
  while (rc == -ECONNREFUSED && clock_ms() < deadline) {
    rc = send_words(&fx, SERVER_NODE, &retry, "ECHO", "retry");
    fl_dispatch(&fx.ring, 0, 0);
    poll_pause(); /* polling for the backoff's end, up to the deadline */
  }
  assert_int_equal(rc, 0);
  run_until_completed(&fx, 1);
  assert_reply(&retry, "$5\r\nretry\r\n");
  outcomes_free(outcomes, 3);
  outcomes_free(&retry, 1);
  fixture_stop(&fx);
}

static void test_oversized_reply_fails_with_eproto(void **state) {
  (void)state;
  forward_limits limits = forward_limits_default();
  limits.max_reply_bytes = 1000;
  fixture fx;
  fixture_start(&fx, &limits, false);
  outcome small = {0}, large = {0};
  assert_int_equal(send_words(&fx, SERVER_NODE, &small, "BIG", "900"), 0);
  assert_int_equal(send_words(&fx, SERVER_NODE, &large, "BIG", "100000"), 0);
  run_until_completed(&fx, 2);
  assert_int_equal(small.status, 0);
  assert_int_equal(small.length, 900 + 8);
  assert_int_equal(large.status, -EPROTO);
  assert_int_equal(large.calls, 1);
  outcomes_free(&small, 1);
  fixture_stop(&fx);
}

static void test_refused_handshake_fails_requests(void **state) {
  (void)state;
  forward_limits limits = forward_limits_default();
  limits.backoff_min_ms = 2000; /* long enough that the last send runs within it */
  limits.backoff_max_ms = 2000;
  fixture fx;
  fixture_start(&fx, &limits, true);
  outcome o = {0};
  assert_int_equal(send_words(&fx, SERVER_NODE, &o, "ECHO", "x"), 0);
  run_until_completed(&fx, 1);
  assert_int_equal(o.status, -EPROTO);
  /* Backing off: the next send fails fast. */
  assert_int_equal(send_words(&fx, SERVER_NODE, &o, "ECHO", "x"), -ECONNREFUSED);
  fixture_stop(&fx);
}

static void test_dead_node_backs_off(void **state) {
  (void)state;
  forward_limits limits = forward_limits_default();
  limits.backoff_min_ms = 2000; /* long enough that the next line runs within it */
  limits.backoff_max_ms = 2000;
  fixture fx;
  fixture_start(&fx, &limits, false);
  outcome outcomes[2] = {0};
  assert_int_equal(send_words(&fx, DEAD_NODE, &outcomes[0], "ECHO", "x"), 0);
  assert_int_equal(send_words(&fx, DEAD_NODE, &outcomes[1], "ECHO", "y"), 0);
  run_until_completed(&fx, 2);
  assert_int_equal(outcomes[0].status, -ECONNREFUSED);
  assert_int_equal(outcomes[1].status, -ECONNREFUSED);
  outcome later = {0};
  uint64_t failed_at = clock_ms();
  assert_int_equal(send_words(&fx, DEAD_NODE, &later, "ECHO", "z"), -ECONNREFUSED);
  int rc = -ECONNREFUSED;
  while (rc == -ECONNREFUSED && clock_ms() < failed_at + 10000) {
    rc = send_words(&fx, DEAD_NODE, &later, "ECHO", "z");
    poll_pause(); /* polling for the backoff's end, up to the deadline */
  }
  assert_int_equal(rc, 0);
  run_until_completed(&fx, 1);
  assert_int_equal(later.status, -ECONNREFUSED);
  /* The server node is unaffected by the dead one. */
  outcome alive = {0};
  assert_int_equal(send_words(&fx, SERVER_NODE, &alive, "SIMPLE", NULL), 0);
  run_until_completed(&fx, 1);
  assert_reply(&alive, "+PONG\r\n");
  outcomes_free(&alive, 1);
  fixture_stop(&fx);
}

static void test_bounds_and_bad_arguments(void **state) {
  (void)state;
  forward_limits limits = forward_limits_default();
  limits.max_pending = 4;
  limits.max_output_bytes = 512;
  fixture fx;
  fixture_start(&fx, &limits, false);
  outcome outcomes[5] = {0};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(send_words(&fx, SERVER_NODE, &outcomes[i], "SIMPLE", NULL), 0);
  }
  assert_int_equal(send_words(&fx, SERVER_NODE, &outcomes[4], "SIMPLE", NULL), -ENOBUFS);
  run_until_completed(&fx, 4);
  char large[600];
  memset(large, 'x', sizeof(large) - 1);
  large[sizeof(large) - 1] = '\0';
  assert_int_equal(send_words(&fx, SERVER_NODE, &outcomes[4], "ECHO", large), -ENOBUFS);
  assert_int_equal(send_words(&fx, LOCAL_NODE, &outcomes[4], "SIMPLE", NULL), -EINVAL);
  assert_int_equal(send_words(&fx, 99, &outcomes[4], "SIMPLE", NULL), -EINVAL);
  assert_int_equal(forward_send(fx.forwarder, SERVER_NODE, NULL, 0, on_reply, &outcomes[4]),
                   -EINVAL);
  assert_int_equal(outcomes[4].calls, 0);
  outcomes_free(outcomes, 5);
  fixture_stop(&fx);
}

static void test_destroy_cancels_pending(void **state) {
  (void)state;
  fixture fx;
  fixture_start(&fx, NULL, false);
  outcome answered = {0};
  outcome silent[3] = {0};
  outcome unsent = {0};
  assert_int_equal(send_words(&fx, SERVER_NODE, &answered, "SIMPLE", NULL), 0);
  run_until_completed(&fx, 1);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(send_words(&fx, SERVER_NODE, &silent[i], "SILENT", NULL), 0);
  }
  forwarder_flush(fx.forwarder);
  fl_dispatch(&fx.ring, 0, 0);
  assert_int_equal(send_words(&fx, DEAD_NODE, &unsent, "SIMPLE", NULL), 0);
  forwarder_destroy(fx.forwarder);
  fx.forwarder = NULL;
  for (int i = 0; i < 3; i++) {
    assert_int_equal(silent[i].calls, 1);
    assert_int_equal(silent[i].status, -ECANCELED);
  }
  assert_int_equal(unsent.calls, 1);
  assert_int_equal(unsent.status, -ECANCELED);
  assert_int_equal(answered.calls, 1);
  outcomes_free(&answered, 1);
  fixture_stop(&fx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scanner_finds_reply_ends),
      cmocka_unit_test(test_scanner_refuses_bad_replies),
      cmocka_unit_test(test_pipelined_replies_of_every_type),
      cmocka_unit_test(test_large_bulks_across_many_receives),
      cmocka_unit_test(test_connection_loss_fails_pending_once_and_reconnects),
      cmocka_unit_test(test_bogus_reply_fails_the_connection),
      cmocka_unit_test(test_oversized_reply_fails_with_eproto),
      cmocka_unit_test(test_refused_handshake_fails_requests),
      cmocka_unit_test(test_dead_node_backs_off),
      cmocka_unit_test(test_bounds_and_bad_arguments),
      cmocka_unit_test(test_destroy_cancels_pending),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
