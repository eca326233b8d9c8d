/*
 * test_transport_harness.h - endpoints for the connection tests: each one a
 * transport on its own io_uring, all pumped by the test's own loop on
 * 127.0.0.1 with ephemeral ports and a virtual clock.
 *
 * Test frames carry (sequence, from, to, class) in their first 32 bytes and
 * a pattern derived from them after it; every arrival is checked for order
 * (per sender and class) and for every byte, so a reordered, duplicated,
 * lost-in-the-middle or damaged frame fails the test.
 *
 * Waiting is always a bounded loop of pumps (HARNESS_PUMP_UNTIL), never a
 * sleep: a pump ticks every endpoint at the virtual time, flushes, and
 * dispatches each ring with a short wait.
 */
#ifndef FLOTILLA_TESTS_TRANSPORT_HARNESS_H
#define FLOTILLA_TESTS_TRANSPORT_HARNESS_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "transport/transport.h"

#define HARNESS_MAX_ENDPOINTS 4
/* Node ids are index + 1; ids up to this are tracked per sender. */
#define HARNESS_MAX_NODES 8
#define HARNESS_TEST_HEADER_BYTES 32u
#define HARNESS_CLASS_NORMAL 0
#define HARNESS_CLASS_BULK 1

typedef struct harness harness;

typedef struct endpoint {
  harness *h;
  int index;
  uint64_t node_id;
  bool running;
  struct io_uring ring;
  transport *t;
  uint16_t port;
  /* What arrived, per sender node and class. */
  uint64_t next_sequence[HARNESS_MAX_NODES][2];
  uint64_t received[HARNESS_MAX_NODES][2];
  uint64_t received_bytes;
  uint64_t bad_frames; /* out of order or damaged: must stay 0 */
  /* Bulk frames received before each normal frame (the starvation test). */
  uint64_t bulk_before_last_normal;
  /* on_peer: transitions per node, and the current view. */
  uint32_t ups[HARNESS_MAX_NODES];
  uint32_t downs[HARNESS_MAX_NODES];
  bool up[HARNESS_MAX_NODES];
  uint32_t bad_transitions; /* the same value twice in a row: must stay 0 */
  uint32_t log_lines;
  /* Sender side: next sequence to send, per destination and class. */
  uint64_t sent[HARNESS_MAX_NODES][2];
} endpoint;

struct harness {
  endpoint endpoints[HARNESS_MAX_ENDPOINTS];
  int count;
  uint64_t now_ms;
  uint32_t step_ms; /* virtual time added by each pump (default 1) */
  uint64_t pumps;
  bool allow_gaps; /* fault tests: sequences must rise, not be consecutive */
};

/* Options for endpoint index: ids, callbacks, test-sized limits, no peers. */
void harness_default_options(harness *h, int index, transport_options *options);
/* Creates the ring and the transport; asserts success. */
void harness_start(harness *h, int index, const transport_options *options);
/* Returns transport_create's result instead of asserting. */
int harness_try_start(harness *h, int index, const transport_options *options);
/* Shuts down, pumps until idle (bounded), destroys, frees the ring. */
void harness_stop(harness *h, int index);
/* Makes every running endpoint a peer of every other running one. */
void harness_connect_all(harness *h);
/* Adds endpoint `to` as a peer of endpoint `from`. */
void harness_add_peer(harness *h, int from, int to);
/* Starts `count` endpoints with default options and connects them all;
 * pumps until every outgoing connection is up. */
void harness_setup(harness *h, int count);
void harness_teardown(harness *h);

/* One loop iteration of every endpoint; advances the clock by step_ms. */
void harness_pump(harness *h);
/* Checks transport_check_invariants of every running endpoint. */
void harness_check(harness *h);
bool harness_all_up(harness *h);

/* Sends one test frame of payload_bytes (>= HARNESS_TEST_HEADER_BYTES)
 * from endpoint `from` to node `to` through reserve/commit (bulk: the bulk
 * class); the sequence advances only when the transport took it. */
int harness_send(harness *h, int from, uint64_t to, uint32_t payload_bytes, bool bulk);
/* Same through transport_send with the payload split in three iovecs. */
int harness_send_iovec(harness *h, int from, uint64_t to, uint32_t payload_bytes);
void harness_fill_payload(uint8_t *payload, uint32_t length, uint64_t sequence, uint64_t from,
                          uint64_t to, int class_);

#define HARNESS_PUMP_UNTIL(h, condition, max_pumps)                                                \
  ({                                                                                               \
    bool reached_ = false;                                                                         \
    for (int pump_ = 0; pump_ < (max_pumps); pump_++) {                                            \
      if (condition) {                                                                             \
        reached_ = true;                                                                           \
        break;                                                                                     \
      }                                                                                            \
      harness_pump(h);                                                                             \
    }                                                                                              \
    reached_ || (condition);                                                                       \
  })

#endif
