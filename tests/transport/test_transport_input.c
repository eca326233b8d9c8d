/*
 * test_transport_input.c - hostile and broken peers, played by raw sockets
 * against a real transport (node 1) that also has a good connection with
 * another transport (node 2).
 *
 * Node 3 is a configured peer of node 1 played by the test. As a dialer the
 * raw socket sends bytes to node 1's listener; as an acceptor (a raw
 * listening socket at node 3's address) it answers node 1's dial. Every
 * case checks that node 1 closes exactly the offending connection, counts
 * the reason, and keeps exchanging frames with node 2.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "test_transport_harness.h"

/* A pump advances the clock by 1 ms unless a test waits for a timeout on
 * purpose: a legitimate handshake has a thousand pumps to complete, which
 * holds even on a loaded machine. */
#define HANDSHAKE_TIMEOUT_MS 1000
#define FRAME_TIMEOUT_MS 1000
#define NODE3 3u
/* A handshake frame: header and transport_handshake. */
#define TRANSPORT_CONTROL_BYTES_TEST (FRAME_HEADER_BYTES + sizeof(transport_handshake))

static harness the_harness;
static int node3_socket = -1; /* bound (listening in the dialer tests) at node 3's address */
static uint16_t node3_port;

/* ---- raw sockets ---- */

static int bind_loopback(bool listening, uint16_t *port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  assert_true(fd >= 0);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = 0};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&address, sizeof(address)), 0);
  if (listening) {
    assert_int_equal(listen(fd, 16), 0);
  }
  socklen_t length = sizeof(address);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&address, &length), 0);
  *port = ntohs(address.sin_port);
  return fd;
}

/* Without it, Nagle holds small writes until the peer acknowledges the
 * previous one, which a delayed ACK postpones by real milliseconds: ages
 * on the virtual clock. */
static void no_delay(int fd) {
  int on = 1;
  assert_int_equal(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)), 0);
}

/* Loopback connects complete in the kernel's backlog: no waiting needed. */
static int raw_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  assert_true(fd >= 0);
  no_delay(fd);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port)};
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&address, sizeof(address)), 0);
  return fd;
}

static void raw_write(int fd, const void *bytes, size_t length) {
  assert_int_equal(send(fd, bytes, length, MSG_NOSIGNAL), (ssize_t)length);
}

/* Closed by the other side: end of stream or reset, after any unread data. */
static bool raw_closed(int fd) {
  uint8_t scratch[256];
  for (;;) {
    ssize_t got = recv(fd, scratch, sizeof(scratch), MSG_DONTWAIT);
    if (got > 0) {
      continue;
    }
    return got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
  }
}

static bool raw_read_some(int fd, uint8_t *buffer, size_t want, size_t *have) {
  ssize_t got = recv(fd, buffer + *have, want - *have, MSG_DONTWAIT);
  if (got > 0) {
    *have += (size_t)got;
  }
  return *have == want;
}

/* ---- frames ---- */

static uint32_t build_frame(uint8_t *out, frame_type type, const void *payload, uint32_t length) {
  struct iovec iov = {.iov_base = (void *)payload, .iov_len = length};
  frame_header header;
  frame_seal(&header, type, &iov, 1);
  memcpy(out, &header, sizeof(header));
  memcpy(out + sizeof(header), payload, length);
  return FRAME_HEADER_BYTES + length;
}

/* Recomputes the header checksum after a field was changed on purpose, so
 * only the changed field is wrong. */
static void reseal_header(uint8_t *frame) {
  uint64_t checksum = XXH3_64bits(frame, 24);
  memcpy(frame + 24, &checksum, sizeof(checksum));
}

static transport_handshake identity(uint64_t node) {
  return (transport_handshake){.cluster_id = 42,
                               .node_id = node,
                               .protocol_version = TRANSPORT_PROTOCOL_VERSION,
                               .shard_id = 0,
                               .shard_count = 1,
                               .result = 0};
}

static uint32_t build_handshake(uint8_t *out, frame_type type, const transport_handshake *h) {
  return build_frame(out, type, h, sizeof(*h));
}

/* ---- fixture ---- */

static void setup_nodes(harness *h, bool node3_listens) {
  memset(h, 0, sizeof(*h));
  h->step_ms = 1;
  h->now_ms = 1000;
  for (int i = 0; i < 2; i++) {
    transport_options options;
    harness_default_options(h, i, &options);
    options.handshake_timeout_ms = HANDSHAKE_TIMEOUT_MS;
    options.frame_timeout_ms = FRAME_TIMEOUT_MS;
    options.backoff_max_ms = node3_listens ? 50 : 100000; /* quiet dials to node 3 */
    harness_start(h, i, &options);
  }
  harness_connect_all(h);
  node3_socket = bind_loopback(node3_listens, &node3_port);
  transport_peer_address node3 = {.node_id = NODE3, .host = "127.0.0.1", .port = node3_port};
  assert_int_equal(transport_add_peer(h->endpoints[0].t, &node3), 0);
  assert_true(HARNESS_PUMP_UNTIL(h, harness_all_up(h), 2000));
}

static int setup_acceptor(void **state) {
  (void)state;
  setup_nodes(&the_harness, false);
  return 0;
}

static int setup_dialer(void **state) {
  (void)state;
  setup_nodes(&the_harness, true);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  harness_teardown(&the_harness);
  close(node3_socket);
  node3_socket = -1;
  return 0;
}

static transport_stats stats_of_node1(void) {
  transport_stats stats;
  transport_get_stats(the_harness.endpoints[0].t, &stats);
  return stats;
}

static uint64_t total_errors(const transport_stats *stats) {
  uint64_t total = 0;
  for (int i = 0; i < TRANSPORT_REASON_COUNT; i++) {
    total += stats->errors[i];
  }
  return total;
}

static bool node3_connected_in(harness *h) {
  transport_peer_info info;
  assert_int_equal(transport_peer_info_get(h->endpoints[0].t, NODE3, &info), 0);
  return info.connected_in;
}

/* Nodes 1 and 2 still exchange frames, and never went down. */
static void assert_good_connection_works(harness *h) {
  uint64_t from2 = h->endpoints[0].received[2][0];
  uint64_t from1 = h->endpoints[1].received[1][0];
  for (int i = 0; i < 5; i++) {
    assert_int_equal(harness_send(h, 0, 2, 300, false), 0);
    assert_int_equal(harness_send(h, 1, 1, 300, false), 0);
  }
  assert_true(HARNESS_PUMP_UNTIL(
      h, h->endpoints[0].received[2][0] == from2 + 5 && h->endpoints[1].received[1][0] == from1 + 5,
      500));
  assert_int_equal(h->endpoints[0].bad_frames + h->endpoints[1].bad_frames, 0);
  assert_int_equal(h->endpoints[0].downs[2] + h->endpoints[1].downs[1], 0);
}

/* Node 3's side of a good handshake with node 1; returns the socket. */
static int connect_as_node3(harness *h) {
  int fd = raw_connect(h->endpoints[0].port);
  uint8_t frame[TRANSPORT_CONTROL_BYTES_TEST];
  transport_handshake hello = identity(NODE3);
  raw_write(fd, frame, build_handshake(frame, FRAME_HANDSHAKE, &hello));
  uint8_t ack[FRAME_HEADER_BYTES + sizeof(transport_handshake)];
  size_t have = 0;
  assert_true(HARNESS_PUMP_UNTIL(h, raw_read_some(fd, ack, sizeof(ack), &have), 500));
  frame_header header;
  memcpy(&header, ack, sizeof(header));
  assert_int_equal(frame_header_check(&header, 1024), 0);
  assert_int_equal(header.type, FRAME_HANDSHAKE_ACK);
  assert_int_equal(frame_payload_check(&header, ack + FRAME_HEADER_BYTES), 0);
  transport_handshake answer;
  memcpy(&answer, ack + FRAME_HEADER_BYTES, sizeof(answer));
  assert_int_equal(answer.result, TRANSPORT_HANDSHAKE_ACCEPTED);
  assert_int_equal(answer.node_id, 1);
  assert_int_equal(answer.cluster_id, 42);
  assert_true(HARNESS_PUMP_UNTIL(h, node3_connected_in(h), 200));
  return fd;
}

/* Node 1 closed the raw connection for `reason`, counted it once, and
 * nothing else. */
static void expect_closed(harness *h, int fd, transport_reason reason,
                          const transport_stats *before) {
  transport_stats now;
  assert_true(HARNESS_PUMP_UNTIL(h, ({
                                   now = stats_of_node1();
                                   now.errors[reason] == before->errors[reason] + 1 &&
                                       raw_closed(fd);
                                 }),
                                 500));
  assert_int_equal(total_errors(&now), total_errors(before) + 1);
  assert_false(node3_connected_in(h));
  close(fd);
  assert_good_connection_works(h);
}

/* Sends `bytes` after a good handshake and expects `reason`. */
static void after_handshake(const uint8_t *bytes, size_t length, transport_reason reason) {
  harness *h = &the_harness;
  int fd = connect_as_node3(h);
  transport_stats before = stats_of_node1();
  raw_write(fd, bytes, length);
  expect_closed(h, fd, reason, &before);
}

/* Sends `bytes` instead of a handshake and expects `reason`. */
static void instead_of_handshake(const uint8_t *bytes, size_t length, transport_reason reason) {
  harness *h = &the_harness;
  int fd = raw_connect(h->endpoints[0].port);
  transport_stats before = stats_of_node1();
  if (length > 0) {
    raw_write(fd, bytes, length);
  }
  expect_closed(h, fd, reason, &before);
}

/* ---- after the handshake ---- */

static uint32_t good_frame(uint8_t *out, uint32_t payload_bytes) {
  uint8_t payload[512];
  assert_true(payload_bytes <= sizeof(payload));
  harness_fill_payload(payload, payload_bytes, 0, NODE3, 1, HARNESS_CLASS_NORMAL);
  return build_frame(out, FRAME_RAFT, payload, payload_bytes);
}

static void test_oversized_length(void **state) {
  (void)state;
  uint8_t frame[FRAME_HEADER_BYTES];
  frame_header header;
  frame_seal_checksum(&header, FRAME_RAFT, (1u << 20) + 1, 0); /* the limit plus one */
  memcpy(frame, &header, sizeof(header));
  after_handshake(frame, sizeof(frame), TRANSPORT_REASON_TOO_LARGE);
}

static void test_huge_length(void **state) {
  (void)state;
  uint8_t frame[FRAME_HEADER_BYTES];
  frame_header header;
  frame_seal_checksum(&header, FRAME_RAFT, UINT32_MAX, 0);
  memcpy(frame, &header, sizeof(header));
  after_handshake(frame, sizeof(frame), TRANSPORT_REASON_TOO_LARGE);
}

static void test_bad_header_checksum(void **state) {
  (void)state;
  uint8_t frame[600];
  uint32_t length = good_frame(frame, 100);
  frame[8] ^= 0x01; /* payload_length changes, the checksum no longer matches */
  after_handshake(frame, length, TRANSPORT_REASON_HEADER_CHECKSUM);
}

static void test_bad_payload_checksum(void **state) {
  (void)state;
  uint8_t frame[600];
  uint32_t length = good_frame(frame, 100);
  frame[FRAME_HEADER_BYTES + 77] ^= 0x40;
  after_handshake(frame, length, TRANSPORT_REASON_PAYLOAD_CHECKSUM);
}

static void test_unknown_type(void **state) {
  (void)state;
  uint8_t frame[600];
  uint32_t length = good_frame(frame, 100);
  frame[offsetof(frame_header, type)] = 9;
  reseal_header(frame);
  after_handshake(frame, length, TRANSPORT_REASON_BAD_TYPE);
}

static void test_reserved_flags(void **state) {
  (void)state;
  uint8_t frame[600];
  uint32_t length = good_frame(frame, 100);
  frame[offsetof(frame_header, flags)] = 1;
  reseal_header(frame);
  after_handshake(frame, length, TRANSPORT_REASON_BAD_TYPE);
}

static void test_bad_version(void **state) {
  (void)state;
  uint8_t frame[600];
  uint32_t length = good_frame(frame, 100);
  frame[offsetof(frame_header, version)] = FRAME_VERSION + 1;
  reseal_header(frame);
  after_handshake(frame, length, TRANSPORT_REASON_BAD_VERSION);
}

static void test_bad_magic_mid_stream(void **state) {
  (void)state;
  uint8_t bytes[600];
  uint32_t length = good_frame(bytes, 100);
  memcpy(bytes + length, "GET / HTTP/1.1\r\n", 16);
  /* The good frame is delivered (node 3 is a peer); the garbage closes. */
  after_handshake(bytes, length + 16, TRANSPORT_REASON_BAD_MAGIC);
  assert_int_equal(the_harness.endpoints[0].received[NODE3][0], 1);
}

static void test_second_handshake_is_unexpected(void **state) {
  (void)state;
  uint8_t frame[TRANSPORT_CONTROL_BYTES_TEST];
  transport_handshake hello = identity(NODE3);
  after_handshake(frame, build_handshake(frame, FRAME_HANDSHAKE, &hello),
                  TRANSPORT_REASON_UNEXPECTED_FRAME);
}

static void test_truncated_frame_then_close(void **state) {
  (void)state;
  harness *h = &the_harness;
  uint8_t frame[600];
  uint32_t length = good_frame(frame, 400);
  int fd = connect_as_node3(h);
  transport_stats before = stats_of_node1();
  raw_write(fd, frame, length / 2);
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  expect_closed(h, fd, TRANSPORT_REASON_TRUNCATED, &before);
}

static void test_unfinished_frame_times_out(void **state) {
  (void)state;
  harness *h = &the_harness;
  uint8_t frame[600];
  uint32_t length = good_frame(frame, 400);
  int fd = connect_as_node3(h);
  transport_stats before = stats_of_node1();
  raw_write(fd, frame, length - 1);
  uint64_t started = h->now_ms;
  for (int i = 0; i < 20; i++) {
    harness_pump(h);
  }
  assert_true(node3_connected_in(h)); /* not before its time */
  h->step_ms = 20;
  expect_closed(h, fd, TRANSPORT_REASON_FRAME_TIMEOUT, &before);
  assert_true(h->now_ms >= started + FRAME_TIMEOUT_MS);
}

/* A byte every 10 ms: the connection is never silent, yet one frame takes
 * longer than frame_timeout_ms, which is what bounds it. */
static void test_slow_frame_times_out(void **state) {
  (void)state;
  harness *h = &the_harness;
  uint8_t frame[600];
  uint32_t length = good_frame(frame, 100);
  int fd = connect_as_node3(h);
  transport_stats before = stats_of_node1();
  h->step_ms = 10;
  uint32_t sent = 0;
  uint64_t started = h->now_ms;
  transport_stats now = before;
  for (int i = 0; i < 200 && now.errors[TRANSPORT_REASON_FRAME_TIMEOUT] ==
                                 before.errors[TRANSPORT_REASON_FRAME_TIMEOUT];
       i++) {
    if (sent < length) {
      send(fd, frame + sent, 1, MSG_NOSIGNAL);
      sent++;
    }
    harness_pump(h);
    now = stats_of_node1();
  }
  assert_true(sent < length); /* closed while the bytes were still coming */
  assert_true(h->now_ms - started >= FRAME_TIMEOUT_MS);
  /* and they did arrive, a byte per pump: the peer was never silent */
  assert_true(now.bytes_received - before.bytes_received >= FRAME_TIMEOUT_MS / 10 - 2);
  expect_closed(h, fd, TRANSPORT_REASON_FRAME_TIMEOUT, &before);
}

/* The opposite: frames straddle every receive, so a partial frame is
 * always buffered, but each one completes in time. The clock is per frame,
 * not per connection: this must never time out. */
static void test_steady_trickle_is_not_a_timeout(void **state) {
  (void)state;
  harness *h = &the_harness;
  enum { FRAMES = 80, FRAME_BYTES = FRAME_HEADER_BYTES + 32, CHUNK = 41 };
  static uint8_t stream[FRAMES * FRAME_BYTES];
  for (uint64_t i = 0; i < FRAMES; i++) {
    uint8_t payload[32];
    harness_fill_payload(payload, sizeof(payload), i, NODE3, 1, HARNESS_CLASS_NORMAL);
    build_frame(stream + i * FRAME_BYTES, FRAME_RAFT, payload, sizeof(payload));
  }
  int fd = connect_as_node3(h);
  transport_stats before = stats_of_node1();
  /* 41 bytes a pump of 25 ms: the buffer is first empty after 64 pumps,
   * 1600 ms, well past frame_timeout_ms; each frame takes two pumps. */
  h->step_ms = 25;
  for (size_t sent = 0; sent < sizeof(stream); sent += CHUNK) {
    size_t length = sizeof(stream) - sent < CHUNK ? sizeof(stream) - sent : CHUNK;
    raw_write(fd, stream + sent, length);
    harness_pump(h);
  }
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[0].received[NODE3][0] == FRAMES, 100));
  transport_stats now = stats_of_node1();
  assert_int_equal(total_errors(&now), total_errors(&before));
  assert_true(node3_connected_in(h));
  assert_int_equal(h->endpoints[0].bad_frames, 0);
  close(fd);
  h->step_ms = 1;
  assert_true(HARNESS_PUMP_UNTIL(h, !node3_connected_in(h), 100));
}

/* ---- instead of the handshake ---- */

static void test_garbage_handshake(void **state) {
  (void)state;
  uint8_t garbage[64];
  for (size_t i = 0; i < sizeof(garbage); i++) {
    garbage[i] = (uint8_t)(i * 37 + 11);
  }
  instead_of_handshake(garbage, sizeof(garbage), TRANSPORT_REASON_BAD_MAGIC);
}

static void test_handshake_of_wrong_size(void **state) {
  (void)state;
  uint8_t frame[128];
  uint8_t payload[16] = {1, 2, 3};
  instead_of_handshake(frame, build_frame(frame, FRAME_HANDSHAKE, payload, sizeof(payload)),
                       TRANSPORT_REASON_BAD_HANDSHAKE);
}

static void test_data_before_handshake(void **state) {
  (void)state;
  uint8_t frame[600];
  instead_of_handshake(frame, good_frame(frame, 100), TRANSPORT_REASON_BAD_HANDSHAKE);
}

static void test_handshake_with_result_set(void **state) {
  (void)state;
  uint8_t frame[TRANSPORT_CONTROL_BYTES_TEST];
  transport_handshake hello = identity(NODE3);
  hello.result = 3;
  instead_of_handshake(frame, build_handshake(frame, FRAME_HANDSHAKE, &hello),
                       TRANSPORT_REASON_BAD_HANDSHAKE);
}

static void test_silent_connection_times_out(void **state) {
  (void)state;
  the_harness.step_ms = 20;
  instead_of_handshake(NULL, 0, TRANSPORT_REASON_HANDSHAKE_TIMEOUT);
}

static void test_half_handshake_times_out(void **state) {
  (void)state;
  uint8_t frame[TRANSPORT_CONTROL_BYTES_TEST];
  transport_handshake hello = identity(NODE3);
  uint32_t length = build_handshake(frame, FRAME_HANDSHAKE, &hello);
  the_harness.step_ms = 20;
  instead_of_handshake(frame, length / 2, TRANSPORT_REASON_HANDSHAKE_TIMEOUT);
}

/* ---- handshakes refused with an answer ---- */

static void expect_refusal(const transport_handshake *hello, int result) {
  harness *h = &the_harness;
  transport_stats before = stats_of_node1();
  int fd = raw_connect(h->endpoints[0].port);
  uint8_t frame[TRANSPORT_CONTROL_BYTES_TEST];
  raw_write(fd, frame, build_handshake(frame, FRAME_HANDSHAKE, hello));
  uint8_t ack[TRANSPORT_CONTROL_BYTES_TEST];
  size_t have = 0;
  assert_true(HARNESS_PUMP_UNTIL(h, raw_read_some(fd, ack, sizeof(ack), &have), 500));
  transport_handshake answer;
  memcpy(&answer, ack + FRAME_HEADER_BYTES, sizeof(answer));
  assert_int_equal(answer.result, result);
  assert_true(HARNESS_PUMP_UNTIL(h, raw_closed(fd), 500));
  close(fd);
  transport_stats now = stats_of_node1();
  assert_int_equal(now.handshake_rejects_by_result[result],
                   before.handshake_rejects_by_result[result] + 1);
  assert_int_equal(total_errors(&now), total_errors(&before));
  assert_good_connection_works(h);
}

static void test_handshake_version_mismatch(void **state) {
  (void)state;
  transport_handshake hello = identity(NODE3);
  hello.protocol_version = TRANSPORT_PROTOCOL_VERSION + 1;
  expect_refusal(&hello, TRANSPORT_HANDSHAKE_VERSION);
}

static void test_handshake_duplicate_node(void **state) {
  (void)state;
  assert_good_connection_works(&the_harness); /* node 2's connection is live */
  transport_handshake hello = identity(2);
  expect_refusal(&hello, TRANSPORT_HANDSHAKE_NODE_DUPLICATE);
  hello = identity(1); /* node 1 itself */
  expect_refusal(&hello, TRANSPORT_HANDSHAKE_NODE_DUPLICATE);
  hello = identity(77);
  expect_refusal(&hello, TRANSPORT_HANDSHAKE_NODE_UNKNOWN);
}

/* A node that dials again while its previous connection is live is refused;
 * once that connection has been silent longer than a handshake may take
 * (its node crashed and restarted before TCP noticed), the new one replaces
 * it. */
static void test_silent_connection_is_replaced(void **state) {
  (void)state;
  harness *h = &the_harness;
  int first = connect_as_node3(h);
  transport_handshake hello = identity(NODE3);
  expect_refusal(&hello, TRANSPORT_HANDSHAKE_NODE_DUPLICATE);
  assert_true(node3_connected_in(h));
  transport_stats before = stats_of_node1();
  h->step_ms = 10;
  for (int i = 0; i < HANDSHAKE_TIMEOUT_MS / 10; i++) {
    harness_pump(h);
  }
  h->step_ms = 1;
  int second = connect_as_node3(h);
  assert_true(HARNESS_PUMP_UNTIL(h, raw_closed(first), 200));
  close(first);
  transport_stats now = stats_of_node1();
  assert_int_equal(now.connections_replaced, before.connections_replaced + 1);
  assert_int_equal(total_errors(&now), total_errors(&before));
  /* The new connection carries frames. */
  uint8_t frame[600];
  raw_write(second, frame, good_frame(frame, 64));
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[0].received[NODE3][0] == 1, 200));
  assert_true(node3_connected_in(h));
  close(second);
  assert_good_connection_works(h);
}

/* More unauthenticated connections than allowed: the excess is closed at
 * once, the rest time out; the good connection never notices. */
static void test_connection_flood(void **state) {
  (void)state;
  harness *h = &the_harness;
  enum { FLOOD = TRANSPORT_MAX_PENDING_HANDSHAKES + 8 };
  int fds[FLOOD];
  transport_stats before = stats_of_node1();
  for (int i = 0; i < FLOOD; i++) {
    fds[i] = raw_connect(h->endpoints[0].port);
  }
  transport_stats now;
  assert_true(HARNESS_PUMP_UNTIL(h, ({
                                   now = stats_of_node1();
                                   now.connections_accepted + now.connections_refused ==
                                       before.connections_accepted + before.connections_refused +
                                           FLOOD;
                                 }),
                                 1000));
  assert_int_equal(now.connections_refused - before.connections_refused, 8);
  assert_good_connection_works(h);
  h->step_ms = 20;
  assert_true(HARNESS_PUMP_UNTIL(h, ({
                                   now = stats_of_node1();
                                   now.errors[TRANSPORT_REASON_HANDSHAKE_TIMEOUT] ==
                                       before.errors[TRANSPORT_REASON_HANDSHAKE_TIMEOUT] +
                                           TRANSPORT_MAX_PENDING_HANDSHAKES;
                                 }),
                                 500));
  for (int i = 0; i < FLOOD; i++) {
    assert_true(HARNESS_PUMP_UNTIL(h, raw_closed(fds[i]), 100));
    close(fds[i]);
  }
  h->step_ms = 1;
  assert_good_connection_works(h);
}

/* ---- node 1 dialing a broken node 3 ---- */

/* Accepts node 1's dial on node 3's listening socket and checks the
 * handshake it sends. */
static int accept_node1(harness *h) {
  int fd = -1;
  assert_true(HARNESS_PUMP_UNTIL(h, (fd = accept(node3_socket, NULL, NULL)) >= 0, 1000));
  no_delay(fd);
  uint8_t hello_frame[TRANSPORT_CONTROL_BYTES_TEST];
  size_t have = 0;
  assert_true(
      HARNESS_PUMP_UNTIL(h, raw_read_some(fd, hello_frame, sizeof(hello_frame), &have), 500));
  frame_header header;
  memcpy(&header, hello_frame, sizeof(header));
  assert_int_equal(frame_header_check(&header, 1024), 0);
  assert_int_equal(header.type, FRAME_HANDSHAKE);
  assert_int_equal(header.payload_length, sizeof(transport_handshake));
  assert_int_equal(frame_payload_check(&header, hello_frame + FRAME_HEADER_BYTES), 0);
  transport_handshake hello;
  memcpy(&hello, hello_frame + FRAME_HEADER_BYTES, sizeof(hello));
  transport_handshake expected = identity(1);
  assert_memory_equal(&hello, &expected, sizeof(hello));
  return fd;
}

static void answer(int fd, const transport_handshake *ack) {
  uint8_t frame[TRANSPORT_CONTROL_BYTES_TEST];
  raw_write(fd, frame, build_handshake(frame, FRAME_HANDSHAKE_ACK, ack));
}

static bool node1_sees_node3_up(harness *h) {
  transport_peer_info info;
  assert_int_equal(transport_peer_info_get(h->endpoints[0].t, NODE3, &info), 0);
  return info.up;
}

static void expect_dial_closed(harness *h, int fd, const transport_stats *before,
                               int reason_or_minus_one) {
  transport_stats now;
  assert_true(HARNESS_PUMP_UNTIL(h, raw_closed(fd), 500));
  close(fd);
  now = stats_of_node1();
  if (reason_or_minus_one >= 0) {
    assert_int_equal(now.errors[reason_or_minus_one], before->errors[reason_or_minus_one] + 1);
    assert_int_equal(total_errors(&now), total_errors(before) + 1);
  } else {
    assert_int_equal(total_errors(&now), total_errors(before));
  }
  assert_false(node1_sees_node3_up(h));
  assert_good_connection_works(h);
}

static void test_dialed_node_never_answers(void **state) {
  (void)state;
  harness *h = &the_harness;
  transport_stats before = stats_of_node1();
  int fd = accept_node1(h);
  h->step_ms = 20;
  expect_dial_closed(h, fd, &before, TRANSPORT_REASON_HANDSHAKE_TIMEOUT);
}

static void test_dialed_node_is_another_node(void **state) {
  (void)state;
  harness *h = &the_harness;
  transport_stats before = stats_of_node1();
  int fd = accept_node1(h);
  transport_handshake ack = identity(4);
  answer(fd, &ack);
  expect_dial_closed(h, fd, &before, -1);
  transport_stats now = stats_of_node1();
  assert_int_equal(now.handshake_rejects_by_result[TRANSPORT_HANDSHAKE_WRONG_NODE], 1);
}

static void test_dialed_node_refuses(void **state) {
  (void)state;
  harness *h = &the_harness;
  transport_stats before = stats_of_node1();
  int fd = accept_node1(h);
  transport_handshake ack = identity(NODE3);
  ack.result = TRANSPORT_HANDSHAKE_CLUSTER;
  answer(fd, &ack);
  shutdown(fd, SHUT_WR);
  expect_dial_closed(h, fd, &before, -1);
  assert_int_equal(stats_of_node1().handshakes_refused, before.handshakes_refused + 1);
}

static void test_dialed_node_sends_garbage(void **state) {
  (void)state;
  harness *h = &the_harness;
  transport_stats before = stats_of_node1();
  int fd = accept_node1(h);
  raw_write(fd, "\x00\x01\x02\x03garbage garbage garbage garbage", 36);
  expect_dial_closed(h, fd, &before, TRANSPORT_REASON_BAD_MAGIC);
}

/* The dialed side carries nothing after its ACK: a frame is a violation.
 * Node 1 saw node 3 up, then down, once each. */
static void test_dialed_node_sends_frames(void **state) {
  (void)state;
  harness *h = &the_harness;
  transport_stats before = stats_of_node1();
  int fd = accept_node1(h);
  transport_handshake ack = identity(NODE3);
  answer(fd, &ack);
  assert_true(HARNESS_PUMP_UNTIL(h, node1_sees_node3_up(h), 500));
  assert_int_equal(h->endpoints[0].ups[NODE3], 1);
  uint8_t frame[600];
  raw_write(fd, frame, good_frame(frame, 64));
  expect_dial_closed(h, fd, &before, TRANSPORT_REASON_UNEXPECTED_FRAME);
  assert_int_equal(h->endpoints[0].downs[NODE3], 1);
  /* It dials again after its backoff. */
  int again = accept_node1(h);
  close(again);
}

#define ACCEPTOR_TEST(name) cmocka_unit_test_setup_teardown(name, setup_acceptor, teardown)
#define DIALER_TEST(name) cmocka_unit_test_setup_teardown(name, setup_dialer, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      ACCEPTOR_TEST(test_oversized_length),
      ACCEPTOR_TEST(test_huge_length),
      ACCEPTOR_TEST(test_bad_header_checksum),
      ACCEPTOR_TEST(test_bad_payload_checksum),
      ACCEPTOR_TEST(test_unknown_type),
      ACCEPTOR_TEST(test_reserved_flags),
      ACCEPTOR_TEST(test_bad_version),
      ACCEPTOR_TEST(test_bad_magic_mid_stream),
      ACCEPTOR_TEST(test_second_handshake_is_unexpected),
      ACCEPTOR_TEST(test_truncated_frame_then_close),
      ACCEPTOR_TEST(test_unfinished_frame_times_out),
      ACCEPTOR_TEST(test_slow_frame_times_out),
      ACCEPTOR_TEST(test_steady_trickle_is_not_a_timeout),
      ACCEPTOR_TEST(test_garbage_handshake),
      ACCEPTOR_TEST(test_handshake_of_wrong_size),
      ACCEPTOR_TEST(test_data_before_handshake),
      ACCEPTOR_TEST(test_handshake_with_result_set),
      ACCEPTOR_TEST(test_silent_connection_times_out),
      ACCEPTOR_TEST(test_half_handshake_times_out),
      ACCEPTOR_TEST(test_handshake_version_mismatch),
      ACCEPTOR_TEST(test_handshake_duplicate_node),
      ACCEPTOR_TEST(test_silent_connection_is_replaced),
      ACCEPTOR_TEST(test_connection_flood),
      DIALER_TEST(test_dialed_node_never_answers),
      DIALER_TEST(test_dialed_node_is_another_node),
      DIALER_TEST(test_dialed_node_refuses),
      DIALER_TEST(test_dialed_node_sends_garbage),
      DIALER_TEST(test_dialed_node_sends_frames),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
