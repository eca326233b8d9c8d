/*
 * test_transport_harness.c - endpoints on loopback for the connection tests
 * (see test_transport_harness.h).
 */
#include "test_transport_harness.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/dispatch.h"

/* Each ring's wait per pump: long enough for loopback to answer, short
 * enough that an idle pump costs little. */
#define HARNESS_DISPATCH_WAIT_NS 200000
#define HARNESS_RING_ENTRIES 256u
#define HARNESS_STOP_PUMPS 2000

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

static uint64_t pattern_seed(uint64_t sequence, uint64_t from, uint64_t to, int class_) {
  return mix(sequence * 0x9e3779b97f4a7c15ull ^ (from << 48) ^ (to << 40) ^ (uint64_t)class_);
}

static uint8_t pattern_byte(uint64_t seed, uint32_t offset) {
  return (uint8_t)((seed >> ((offset & 7u) * 8u)) ^ (offset * 7u) ^ (offset >> 9));
}

void harness_fill_payload(uint8_t *payload, uint32_t length, uint64_t sequence, uint64_t from,
                          uint64_t to, int class_) {
  uint32_t class_word = (uint32_t)class_;
  memset(payload, 0, HARNESS_TEST_HEADER_BYTES);
  memcpy(payload, &sequence, 8);
  memcpy(payload + 8, &from, 8);
  memcpy(payload + 16, &to, 8);
  memcpy(payload + 24, &class_word, 4);
  uint64_t seed = pattern_seed(sequence, from, to, class_);
  for (uint32_t i = HARNESS_TEST_HEADER_BYTES; i < length; i++) {
    payload[i] = pattern_byte(seed, i);
  }
}

static bool payload_intact(const uint8_t *payload, uint32_t length, uint64_t sequence,
                           uint64_t from, uint64_t to, int class_) {
  uint64_t seed = pattern_seed(sequence, from, to, class_);
  for (uint32_t i = HARNESS_TEST_HEADER_BYTES; i < length; i++) {
    if (payload[i] != pattern_byte(seed, i)) {
      return false;
    }
  }
  return true;
}

/* ---- callbacks ---- */

static void on_frame(void *context, uint64_t from, frame_type type, const uint8_t *payload,
                     uint32_t length) {
  endpoint *e = context;
  uint64_t sequence = 0, sender = 0, receiver = 0;
  uint32_t class_ = 0;
  if (length < HARNESS_TEST_HEADER_BYTES || from >= HARNESS_MAX_NODES) {
    e->bad_frames++;
    return;
  }
  memcpy(&sequence, payload, 8);
  memcpy(&sender, payload + 8, 8);
  memcpy(&receiver, payload + 16, 8);
  memcpy(&class_, payload + 24, 4);
  frame_type expected = class_ == HARNESS_CLASS_BULK ? FRAME_SNAPSHOT_CHUNK : FRAME_RAFT;
  bool in_order = sequence == e->next_sequence[from][class_ & 1u];
  if (e->h->allow_gaps) {
    in_order = sequence >= e->next_sequence[from][class_ & 1u];
  }
  if (sender != from || receiver != e->node_id || class_ > 1 || type != expected || !in_order ||
      !payload_intact(payload, length, sequence, from, receiver, (int)class_)) {
    e->bad_frames++;
    return;
  }
  e->next_sequence[from][class_] = sequence + 1;
  e->received[from][class_]++;
  e->received_bytes += length;
  if (class_ == HARNESS_CLASS_NORMAL) {
    e->bulk_before_last_normal = e->received[from][HARNESS_CLASS_BULK];
  }
}

static void on_peer(void *context, uint64_t node, bool up) {
  endpoint *e = context;
  if (node >= HARNESS_MAX_NODES) {
    e->bad_transitions++;
    return;
  }
  if (e->up[node] == up) {
    e->bad_transitions++;
  }
  e->up[node] = up;
  if (up) {
    e->ups[node]++;
  } else {
    e->downs[node]++;
  }
}

static void on_log(void *context, transport_log_level level, const char *message) {
  endpoint *e = context;
  e->log_lines++;
  if (getenv("FL_TEST_VERBOSE") != NULL) {
    fprintf(stderr, "[node %llu level %d] %s\n", (unsigned long long)e->node_id, (int)level,
            message);
  }
}

/* ---- endpoints ---- */

void harness_default_options(harness *h, int index, transport_options *options) {
  transport_options_default(options);
  options->cluster_id = 42;
  options->node_id = (uint64_t)index + 1;
  options->shard_id = 0;
  options->shard_count = 1;
  options->listen_host = "127.0.0.1";
  options->listen_port = 0;
  options->max_frame_payload_bytes = 1u << 20;
  options->max_queue_bytes = 4u << 20;
  options->max_bulk_bytes = 2u << 20;
  options->bulk_quantum_bytes = 64u << 10;
  options->backoff_min_ms = 10;
  options->backoff_max_ms = 200;
  options->handshake_timeout_ms = 1000;
  options->frame_timeout_ms = 1000;
  options->seed = 7 + (uint64_t)index;
  options->on_frame = on_frame;
  options->on_peer = on_peer;
  options->log = on_log;
  options->context = &h->endpoints[index];
}

int harness_try_start(harness *h, int index, const transport_options *options) {
  assert_true(index < HARNESS_MAX_ENDPOINTS);
  endpoint *e = &h->endpoints[index];
  assert_false(e->running);
  memset(e, 0, sizeof(*e));
  e->h = h;
  e->index = index;
  e->node_id = options->node_id;
  assert_int_equal(io_uring_queue_init(HARNESS_RING_ENTRIES, &e->ring, 0), 0);
  int rc = transport_create(options, &e->ring, &e->t);
  if (rc != 0) {
    io_uring_queue_exit(&e->ring);
    return rc;
  }
  assert_int_equal(transport_tick(e->t, h->now_ms), 0);
  e->port = transport_listen_port(e->t);
  e->running = true;
  if (index >= h->count) {
    h->count = index + 1;
  }
  return 0;
}

void harness_start(harness *h, int index, const transport_options *options) {
  assert_int_equal(harness_try_start(h, index, options), 0);
}

void harness_stop(harness *h, int index) {
  endpoint *e = &h->endpoints[index];
  assert_true(e->running);
  transport_shutdown(e->t);
  for (int i = 0; i < HARNESS_STOP_PUMPS && !transport_is_idle(e->t); i++) {
    assert_true(fl_dispatch(&e->ring, 1, HARNESS_DISPATCH_WAIT_NS) >= 0);
    assert_int_equal(transport_tick(e->t, h->now_ms), 0);
  }
  assert_true(transport_is_idle(e->t));
  assert_true(transport_check_invariants(e->t, NULL));
  transport_destroy(e->t);
  e->t = NULL;
  io_uring_queue_exit(&e->ring);
  e->running = false;
}

void harness_add_peer(harness *h, int from, int to) {
  endpoint *target = &h->endpoints[to];
  transport_peer_address address = {
      .node_id = target->node_id, .host = "127.0.0.1", .port = target->port};
  assert_int_equal(transport_add_peer(h->endpoints[from].t, &address), 0);
}

void harness_connect_all(harness *h) {
  for (int i = 0; i < h->count; i++) {
    for (int j = 0; j < h->count; j++) {
      if (i != j && h->endpoints[i].running && h->endpoints[j].running) {
        harness_add_peer(h, i, j);
      }
    }
  }
}

bool harness_all_up(harness *h) {
  for (int i = 0; i < h->count; i++) {
    for (int j = 0; j < h->count; j++) {
      endpoint *a = &h->endpoints[i];
      endpoint *b = &h->endpoints[j];
      if (i == j || !a->running || !b->running) {
        continue;
      }
      transport_peer_info info;
      if (transport_peer_info_get(a->t, b->node_id, &info) != 0 || !info.up || !a->up[b->node_id]) {
        return false;
      }
      if (transport_peer_info_get(b->t, a->node_id, &info) != 0 || !info.connected_in) {
        return false;
      }
    }
  }
  return true;
}

void harness_setup(harness *h, int count) {
  memset(h, 0, sizeof(*h));
  h->step_ms = 1;
  h->now_ms = 1000;
  for (int i = 0; i < count; i++) {
    transport_options options;
    harness_default_options(h, i, &options);
    harness_start(h, i, &options);
  }
  harness_connect_all(h);
  assert_true(HARNESS_PUMP_UNTIL(h, harness_all_up(h), 2000));
}

void harness_teardown(harness *h) {
  for (int i = 0; i < h->count; i++) {
    if (h->endpoints[i].running) {
      harness_stop(h, i);
    }
  }
}

/* ---- the loop ---- */

void harness_check(harness *h) {
  for (int i = 0; i < h->count; i++) {
    endpoint *e = &h->endpoints[i];
    if (!e->running) {
      continue;
    }
    const char *broken = NULL;
    if (!transport_check_invariants(e->t, &broken)) {
      fail_msg("invariant of node %llu broken: %s", (unsigned long long)e->node_id, broken);
    }
    assert_int_equal(e->bad_transitions, 0);
  }
}

void harness_pump(harness *h) {
  h->now_ms += h->step_ms;
  h->pumps++;
  for (int i = 0; i < h->count; i++) {
    endpoint *e = &h->endpoints[i];
    if (e->running) {
      assert_int_equal(transport_tick(e->t, h->now_ms), 0);
      assert_true(transport_flush(e->t) >= 0);
    }
  }
  for (int i = 0; i < h->count; i++) {
    endpoint *e = &h->endpoints[i];
    if (e->running) {
      assert_true(fl_dispatch(&e->ring, 1, HARNESS_DISPATCH_WAIT_NS) >= 0);
    }
  }
  harness_check(h);
}

/* ---- sending test frames ---- */

int harness_send(harness *h, int from, uint64_t to, uint32_t payload_bytes, bool bulk) {
  endpoint *e = &h->endpoints[from];
  int class_ = bulk ? HARNESS_CLASS_BULK : HARNESS_CLASS_NORMAL;
  void *room = NULL;
  int rc = bulk ? transport_reserve_bulk(e->t, to, payload_bytes, &room)
                : transport_reserve(e->t, to, payload_bytes, &room);
  if (rc != 0) {
    return rc;
  }
  harness_fill_payload(room, payload_bytes, e->sent[to][class_], e->node_id, to, class_);
  rc = bulk ? transport_commit_bulk(e->t, to, FRAME_SNAPSHOT_CHUNK, payload_bytes)
            : transport_commit(e->t, to, FRAME_RAFT, payload_bytes);
  if (rc == 0) {
    e->sent[to][class_]++;
  }
  return rc;
}

int harness_send_iovec(harness *h, int from, uint64_t to, uint32_t payload_bytes) {
  endpoint *e = &h->endpoints[from];
  uint8_t *payload = malloc(payload_bytes);
  assert_non_null(payload);
  harness_fill_payload(payload, payload_bytes, e->sent[to][HARNESS_CLASS_NORMAL], e->node_id, to,
                       HARNESS_CLASS_NORMAL);
  uint32_t first = payload_bytes / 3;
  uint32_t second = payload_bytes / 3;
  struct iovec iov[3] = {
      {payload, first},
      {payload + first, second},
      {payload + first + second, payload_bytes - first - second},
  };
  int rc = transport_send(e->t, to, FRAME_RAFT, iov, 3);
  free(payload);
  if (rc == 0) {
    e->sent[to][HARNESS_CLASS_NORMAL]++;
  }
  return rc;
}
