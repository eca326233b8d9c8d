/*
 * test_transport.c - transports talking to each other over real sockets on
 * 127.0.0.1: ordered exchanges between two and three nodes, large batches,
 * the queue bounds, the bulk class, reconnection after a restart,
 * handshake mismatches, membership changes, shutdown with traffic in
 * flight and the fault seam. Every frame's bytes are checked on arrival
 * (test_transport_harness.c); invariants are checked after every pump.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_transport_harness.h"

static harness the_harness;

static uint32_t payload_size(uint64_t sequence, uint32_t spread) {
  uint64_t x = sequence * 0x9e3779b97f4a7c15ull;
  x ^= x >> 29;
  return HARNESS_TEST_HEADER_BYTES + (uint32_t)(x % spread);
}

static uint64_t total_received(harness *h, int to, int class_) {
  uint64_t total = 0;
  for (int from = 0; from < HARNESS_MAX_NODES; from++) {
    total += h->endpoints[to].received[from][class_];
  }
  return total;
}

static uint64_t frames_sent_stat(harness *h, int index) {
  transport_stats stats;
  transport_get_stats(h->endpoints[index].t, &stats);
  return stats.frames_sent;
}

/* Every running endpoint sends `frames` frames to every other one, a burst
 * per pump, backing off on a full queue; returns when all arrived. */
static void exchange(harness *h, uint64_t frames, uint32_t spread, int burst) {
  for (int pumps = 0; pumps < 20000; pumps++) {
    bool done = true;
    for (int from = 0; from < h->count; from++) {
      for (int to = 0; to < h->count; to++) {
        endpoint *sender = &h->endpoints[from];
        uint64_t node = h->endpoints[to].node_id;
        if (from == to) {
          continue;
        }
        for (int i = 0; i < burst && sender->sent[node][0] < frames; i++) {
          uint64_t sequence = sender->sent[node][0];
          int rc = sequence % 3 == 0
                       ? harness_send_iovec(h, from, node, payload_size(sequence, spread))
                       : harness_send(h, from, node, payload_size(sequence, spread), false);
          if (rc == TRANSPORT_E_FULL) {
            break;
          }
          assert_int_equal(rc, 0);
        }
        if (h->endpoints[to].received[sender->node_id][0] < frames) {
          done = false;
        }
      }
    }
    if (done) {
      return;
    }
    harness_pump(h);
  }
  fail_msg("exchange did not complete");
}

static void assert_exchange_complete(harness *h, uint64_t frames) {
  uint64_t sent = 0;
  uint64_t received = 0;
  for (int i = 0; i < h->count; i++) {
    assert_int_equal(h->endpoints[i].bad_frames, 0);
    received += total_received(h, i, HARNESS_CLASS_NORMAL);
  }
  assert_int_equal(received, frames * (uint64_t)h->count * (uint64_t)(h->count - 1));
  /* The senders learn of their last send's completion a little later. */
  bool settled = HARNESS_PUMP_UNTIL(h, ({
                                      sent = 0;
                                      for (int i = 0; i < h->count; i++) {
                                        sent += frames_sent_stat(h, i);
                                      }
                                      sent == received;
                                    }),
                                    200);
  assert_true(settled);
  for (int i = 0; i < h->count; i++) {
    transport_stats stats;
    transport_get_stats(h->endpoints[i].t, &stats);
    assert_int_equal(stats.frames_received, total_received(h, i, HARNESS_CLASS_NORMAL));
    for (int reason = 0; reason < TRANSPORT_REASON_COUNT; reason++) {
      assert_int_equal(stats.errors[reason], 0);
    }
  }
}

static void test_two_endpoints_exchange_in_order(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 2);
  exchange(h, 3000, 4096, 64);
  assert_exchange_complete(h, 3000);
  transport_stats stats;
  transport_get_stats(h->endpoints[0].t, &stats);
  /* Coalesced: many frames per send. */
  assert_true(stats.sends * 4 < stats.frames_sent);
  assert_int_equal(stats.connections_dialed, 1);
  assert_int_equal(stats.connections_accepted, 1);
  harness_teardown(h);
}

static void test_three_endpoints_exchange_in_order(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 3);
  exchange(h, 1500, 2048, 32);
  assert_exchange_complete(h, 1500);
  for (int i = 0; i < 3; i++) {
    for (uint64_t node = 1; node <= 3; node++) {
      assert_int_equal(h->endpoints[i].ups[node], node == h->endpoints[i].node_id ? 0 : 1);
      assert_int_equal(h->endpoints[i].downs[node], 0);
    }
  }
  harness_teardown(h);
}

/* Frames up to the limit and tens of megabytes through reserve/commit. */
static void test_large_batches(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 2);
  const uint32_t largest = 1u << 20; /* max_frame_payload_bytes of the harness */
  const uint64_t large_frames = 16;
  const uint64_t small_frames = 4000;
  uint64_t target = large_frames + small_frames;
  for (int pumps = 0; pumps < 20000 && h->endpoints[1].received[1][0] < target; pumps++) {
    for (int i = 0; i < 256 && h->endpoints[0].sent[2][0] < target; i++) {
      uint64_t sequence = h->endpoints[0].sent[2][0];
      uint32_t size = sequence < large_frames ? largest : 4096;
      int rc = harness_send(h, 0, 2, size, false);
      if (rc == TRANSPORT_E_FULL) {
        break;
      }
      assert_int_equal(rc, 0);
    }
    harness_pump(h);
  }
  assert_int_equal(h->endpoints[1].received[1][0], target);
  assert_int_equal(h->endpoints[1].bad_frames, 0);
  assert_int_equal(h->endpoints[1].received_bytes, large_frames * largest + small_frames * 4096);
  /* A payload one byte over the limit is refused before any byte moves. */
  void *room = NULL;
  assert_int_equal(transport_reserve(h->endpoints[0].t, 2, largest + 1, &room),
                   TRANSPORT_E_TOO_LARGE);
  harness_teardown(h);
}

static void test_queue_full_policy(void **state) {
  (void)state;
  harness *h = &the_harness;
  memset(h, 0, sizeof(*h));
  h->step_ms = 1;
  for (int i = 0; i < 2; i++) {
    transport_options options;
    harness_default_options(h, i, &options);
    options.max_frame_payload_bytes = 16u << 10;
    options.max_queue_bytes = 64u << 10;
    options.max_bulk_bytes = 64u << 10;
    harness_start(h, i, &options);
  }
  harness_connect_all(h);
  assert_true(HARNESS_PUMP_UNTIL(h, harness_all_up(h), 2000));
  const uint32_t payload = 1000;
  const uint32_t per_queue = (64u << 10) / (payload + FRAME_HEADER_BYTES);
  uint32_t accepted = 0;
  while (harness_send(h, 0, 2, payload, false) == 0) {
    accepted++;
  }
  assert_int_equal(accepted, per_queue);
  transport_stats stats;
  transport_get_stats(h->endpoints[0].t, &stats);
  assert_int_equal(stats.frames_dropped_full, 1);
  /* Double buffering: once the queue is in flight, a second one fills. */
  assert_int_equal(transport_flush(h->endpoints[0].t), 1);
  transport_peer_info info;
  assert_int_equal(transport_peer_info_get(h->endpoints[0].t, 2, &info), 0);
  assert_int_equal(info.queued_bytes, 0);
  assert_int_equal(info.in_flight_bytes, per_queue * (payload + FRAME_HEADER_BYTES));
  while (harness_send(h, 0, 2, payload, false) == 0) {
    accepted++;
  }
  assert_int_equal(accepted, 2 * per_queue);
  assert_int_equal(transport_flush(h->endpoints[0].t), 0); /* one send in flight at a time */
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[1].received[1][0] == accepted, 2000));
  assert_int_equal(h->endpoints[1].bad_frames, 0);
  /* Drained: the queue takes frames again. */
  assert_int_equal(harness_send(h, 0, 2, payload, false), 0);
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[1].received[1][0] == accepted + 1, 2000));
  transport_get_stats(h->endpoints[0].t, &stats);
  assert_int_equal(stats.frames_dropped_full, 2);
  harness_teardown(h);
}

static void test_bulk_does_not_starve_normal_frames(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 2);
  const uint32_t chunk = 16u << 10; /* a quarter of the harness's 64 KiB quantum */
  uint32_t space_before = transport_bulk_space(h->endpoints[0].t, 2);
  assert_true(space_before >= chunk);
  uint64_t bulk_frames = 0;
  while (transport_bulk_space(h->endpoints[0].t, 2) >= chunk) {
    assert_int_equal(harness_send(h, 0, 2, chunk, true), 0);
    bulk_frames++;
  }
  assert_true(bulk_frames >= 100); /* 2 MiB of bulk queue */
  assert_int_equal(harness_send(h, 0, 2, chunk, true), TRANSPORT_E_FULL);
  /* One small normal frame per iteration while the stream is queued. */
  const uint64_t normal_frames = 10;
  for (int pumps = 0; pumps < 2000 && h->endpoints[1].received[1][0] < normal_frames; pumps++) {
    if (h->endpoints[0].sent[2][0] < normal_frames) {
      assert_int_equal(harness_send(h, 0, 2, 64, false), 0);
    }
    harness_pump(h);
  }
  assert_int_equal(h->endpoints[1].received[1][0], normal_frames);
  /* At most one quantum (four chunks) of bulk per flush went before each
   * normal frame: the log traffic was never stuck behind the snapshot. */
  uint64_t quantum_frames = (64u << 10) / (chunk + FRAME_HEADER_BYTES);
  assert_true(h->endpoints[1].bulk_before_last_normal <= (normal_frames + 2) * quantum_frames);
  assert_true(h->endpoints[1].bulk_before_last_normal < bulk_frames / 2);
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[1].received[1][1] == bulk_frames, 5000));
  assert_int_equal(h->endpoints[1].bad_frames, 0);
  assert_true(
      HARNESS_PUMP_UNTIL(h, transport_bulk_space(h->endpoints[0].t, 2) == space_before, 200));
  harness_teardown(h);
}

static void test_reserve_commit_contract(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 2);
  transport *t = h->endpoints[0].t;
  void *room = NULL;
  /* Commit without a reservation, for an unknown node, or of a bad type. */
  assert_int_equal(transport_commit(t, 2, FRAME_RAFT, 10), -EINVAL);
  assert_int_equal(transport_reserve(t, 2, 100, &room), 0);
  assert_int_equal(transport_commit(t, 3, FRAME_RAFT, 100), TRANSPORT_E_CLOSED);
  assert_int_equal(transport_reserve(t, 2, 100, &room), 0);
  assert_int_equal(transport_commit(t, 2, FRAME_HANDSHAKE, 100), -EINVAL);
  assert_int_equal(transport_reserve(t, 2, 100, &room), 0);
  assert_int_equal(transport_commit(t, 2, FRAME_RAFT, 101), -EINVAL);
  assert_int_equal(transport_reserve(t, 2, 100, &room), 0);
  assert_int_equal(transport_commit_bulk(t, 2, FRAME_SNAPSHOT_CHUNK, 100), -EINVAL);
  /* Unknown node. */
  assert_int_equal(transport_reserve(t, 9, 100, &room), TRANSPORT_E_CLOSED);
  assert_int_equal(transport_bulk_space(t, 9), 0);
  /* An encoder that reserves its maximum and writes less. */
  assert_int_equal(transport_reserve(t, 2, 4096, &room), 0);
  harness_fill_payload(room, 100, 0, 1, 2, HARNESS_CLASS_NORMAL);
  assert_int_equal(transport_commit(t, 2, FRAME_RAFT, 100), 0);
  h->endpoints[0].sent[2][0] = 1;
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[1].received[1][0] == 1, 500));
  assert_int_equal(h->endpoints[1].received_bytes, 100);
  assert_int_equal(h->endpoints[1].bad_frames, 0);
  harness_teardown(h);
}

/* A reservation per peer: an encoder keeps one batch open for each peer
 * and commits them in any order. */
static void test_reservations_per_peer(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 3);
  transport *t = h->endpoints[0].t;
  void *to_two = NULL;
  void *to_three = NULL;
  assert_int_equal(transport_reserve(t, 2, 4096, &to_two), 0);
  assert_int_equal(transport_reserve(t, 3, 4096, &to_three), 0);
  harness_fill_payload(to_two, 64, 0, 1, 2, HARNESS_CLASS_NORMAL);
  harness_fill_payload(to_three, 80, 0, 1, 3, HARNESS_CLASS_NORMAL);
  assert_int_equal(transport_commit(t, 3, FRAME_RAFT, 80), 0);
  assert_int_equal(transport_commit(t, 2, FRAME_RAFT, 64), 0);
  h->endpoints[0].sent[2][0] = 1;
  h->endpoints[0].sent[3][0] = 1;
  assert_true(HARNESS_PUMP_UNTIL(
      h, h->endpoints[1].received[1][0] == 1 && h->endpoints[2].received[1][0] == 1, 500));
  assert_int_equal(h->endpoints[1].received_bytes, 64);
  assert_int_equal(h->endpoints[2].received_bytes, 80);
  assert_int_equal(h->endpoints[1].bad_frames + h->endpoints[2].bad_frames, 0);
  /* a flush abandons a reservation left open */
  assert_int_equal(transport_reserve(t, 2, 100, &to_two), 0);
  transport_flush(t);
  assert_int_equal(transport_commit(t, 2, FRAME_RAFT, 100), -EINVAL);
  harness_teardown(h);
}

/* ---- reconnection ---- */

/* While node 2 is away, node 1 dials it again and again: each delay is
 * drawn in [backoff / 2, backoff] and the backoff doubles up to its maximum
 * (the harness's 10 ms to 200 ms). */
static void check_backoff_while_down(harness *h) {
  transport_peer_info info;
  assert_int_equal(transport_peer_info_get(h->endpoints[0].t, 2, &info), 0);
  uint64_t scheduled = info.next_dial_ms;
  uint32_t backoff = info.backoff_ms;
  uint32_t reschedules = 0;
  uint32_t jittered = 0; /* delays strictly inside the range: the jitter is real */
  uint64_t dials = info.dials;
  for (int pumps = 0; pumps < 1500; pumps++) {
    harness_pump(h);
    assert_int_equal(transport_peer_info_get(h->endpoints[0].t, 2, &info), 0);
    assert_false(info.up);
    if (info.next_dial_ms != scheduled) {
      /* A refused dial was rescheduled during this pump. */
      uint64_t delay = info.next_dial_ms - h->now_ms;
      assert_true(delay >= backoff / 2 && delay <= backoff);
      jittered += delay != backoff / 2 && delay != backoff ? 1u : 0u;
      assert_int_equal(info.backoff_ms, backoff * 2 < 200 ? backoff * 2 : 200);
      scheduled = info.next_dial_ms;
      backoff = info.backoff_ms;
      reschedules++;
    }
  }
  assert_true(reschedules >= 8);
  assert_true(jittered >= reschedules / 2);
  assert_true(info.dials - dials >= 8);
  assert_true(info.dials - dials <= 1500 / 100 + 6); /* spaced by >= 100 ms once at the cap */
  assert_int_equal(info.backoff_ms, 200);
}

static void test_peer_restart_reconnects_with_backoff(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 2);
  exchange(h, 200, 512, 16);
  uint16_t port = h->endpoints[1].port;
  harness_stop(h, 1);
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[0].downs[2] == 1, 500));
  assert_false(h->endpoints[0].up[2]);
  void *room = NULL;
  assert_int_equal(transport_reserve(h->endpoints[0].t, 2, 10, &room), TRANSPORT_E_CLOSED);
  check_backoff_while_down(h);
  transport_stats stats;
  transport_get_stats(h->endpoints[0].t, &stats);
  assert_true(stats.connect_failures >= 6);
  /* The same node comes back on the same port. */
  transport_options options;
  harness_default_options(h, 1, &options);
  options.listen_port = port;
  harness_start(h, 1, &options);
  harness_add_peer(h, 1, 0);
  assert_true(HARNESS_PUMP_UNTIL(h, harness_all_up(h), 2000));
  assert_int_equal(h->endpoints[0].ups[2], 2);
  assert_int_equal(h->endpoints[0].downs[2], 1);
  /* A new life: both directions start their sequences again. */
  memset(h->endpoints[0].next_sequence[2], 0, sizeof(h->endpoints[0].next_sequence[2]));
  memset(h->endpoints[0].received[2], 0, sizeof(h->endpoints[0].received[2]));
  memset(h->endpoints[0].sent[2], 0, sizeof(h->endpoints[0].sent[2]));
  exchange(h, 200, 512, 16);
  assert_int_equal(h->endpoints[0].bad_frames, 0);
  assert_int_equal(h->endpoints[1].bad_frames, 0);
  harness_teardown(h);
}

/* Shutting down with frames in flight: the peer sees it go down, the
 * stopped side reaches idle (harness_stop asserts it). */
static void test_shutdown_with_traffic_in_flight(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 2);
  for (int i = 0; i < 200; i++) {
    assert_int_equal(harness_send(h, 0, 2, 8192, false), 0);
    assert_int_equal(harness_send(h, 1, 1, 8192, false), 0);
  }
  assert_int_equal(transport_flush(h->endpoints[0].t), 1);
  assert_int_equal(transport_flush(h->endpoints[1].t), 1);
  harness_stop(h, 0);
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[1].downs[1] == 1, 500));
  assert_int_equal(h->endpoints[1].bad_frames, 0);
  harness_teardown(h);
}

/* ---- handshakes ---- */

static void run_mismatch(void (*adjust)(transport_options *options), int result, bool both_refuse) {
  harness *h = &the_harness;
  memset(h, 0, sizeof(*h));
  h->step_ms = 1;
  for (int i = 0; i < 2; i++) {
    transport_options options;
    harness_default_options(h, i, &options);
    if (i == 1) {
      adjust(&options);
    }
    harness_start(h, i, &options);
  }
  harness_connect_all(h);
  transport_stats a, b;
  bool counted = HARNESS_PUMP_UNTIL(
      h, ({
        transport_get_stats(h->endpoints[0].t, &a);
        transport_get_stats(h->endpoints[1].t, &b);
        a.handshake_rejects_by_result[result] >= 2 && b.handshakes_refused >= 2 &&
            (!both_refuse ||
             (b.handshake_rejects_by_result[result] >= 2 && a.handshakes_refused >= 2));
      }),
      3000);
  assert_true(counted);
  assert_int_equal(h->endpoints[0].ups[2], 0);
  assert_int_equal(h->endpoints[1].ups[1], 0);
  assert_int_equal(a.handshake_rejects, a.handshake_rejects_by_result[result]);
  assert_int_equal(a.frames_received + b.frames_received, 0);
  harness_teardown(h);
}

static void other_cluster(transport_options *options) {
  options->cluster_id = 43;
}

static void other_shard_count(transport_options *options) {
  options->shard_count = 2;
}

static void other_shard(transport_options *options) {
  options->shard_count = 2;
  options->shard_id = 1;
}

static void test_handshake_cluster_mismatch(void **state) {
  (void)state;
  run_mismatch(other_cluster, TRANSPORT_HANDSHAKE_CLUSTER, true);
}

static void test_handshake_shard_count_mismatch(void **state) {
  (void)state;
  run_mismatch(other_shard_count, TRANSPORT_HANDSHAKE_SHARD_COUNT, true);
}

/* Same shard count, another shard: dialed the wrong port of the node. */
static void test_handshake_shard_id_mismatch(void **state) {
  (void)state;
  harness *h = &the_harness;
  memset(h, 0, sizeof(*h));
  h->step_ms = 1;
  for (int i = 0; i < 2; i++) {
    transport_options options;
    harness_default_options(h, i, &options);
    options.shard_count = 2;
    if (i == 1) {
      other_shard(&options);
    }
    harness_start(h, i, &options);
  }
  harness_connect_all(h);
  transport_stats a;
  assert_true(HARNESS_PUMP_UNTIL(h, ({
                                   transport_get_stats(h->endpoints[0].t, &a);
                                   a.handshake_rejects_by_result[TRANSPORT_HANDSHAKE_SHARD_ID] >= 2;
                                 }),
                                 3000));
  assert_int_equal(h->endpoints[0].ups[2] + h->endpoints[1].ups[1], 0);
  harness_teardown(h);
}

/* A node that is not (yet) a peer is refused; once added it connects. */
static void test_handshake_unknown_node_then_membership_change(void **state) {
  (void)state;
  harness *h = &the_harness;
  memset(h, 0, sizeof(*h));
  h->step_ms = 1;
  for (int i = 0; i < 2; i++) {
    transport_options options;
    harness_default_options(h, i, &options);
    harness_start(h, i, &options);
  }
  harness_add_peer(h, 1, 0); /* node 2 knows node 1, not the other way */
  transport_stats a, b;
  assert_true(
      HARNESS_PUMP_UNTIL(h, ({
                           transport_get_stats(h->endpoints[0].t, &a);
                           transport_get_stats(h->endpoints[1].t, &b);
                           a.handshake_rejects_by_result[TRANSPORT_HANDSHAKE_NODE_UNKNOWN] >= 2 &&
                               b.handshakes_refused >= 2;
                         }),
                         3000));
  assert_int_equal(h->endpoints[1].ups[1], 0);
  harness_add_peer(h, 0, 1);
  assert_true(HARNESS_PUMP_UNTIL(h, harness_all_up(h), 2000));
  exchange(h, 100, 256, 16);
  assert_exchange_complete(h, 100);
  harness_teardown(h);
}

static void test_remove_peer_closes_and_refuses(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 3);
  assert_int_equal(transport_remove_peer(h->endpoints[0].t, 3), 0);
  assert_int_equal(transport_remove_peer(h->endpoints[0].t, 3), -ENOENT);
  void *room = NULL;
  assert_int_equal(transport_reserve(h->endpoints[0].t, 3, 10, &room), TRANSPORT_E_CLOSED);
  /* Node 3 loses its connection to node 1 and is refused when it redials. */
  transport_stats a;
  assert_true(
      HARNESS_PUMP_UNTIL(h, ({
                           transport_get_stats(h->endpoints[0].t, &a);
                           h->endpoints[2].downs[1] == 1 &&
                               a.handshake_rejects_by_result[TRANSPORT_HANDSHAKE_NODE_UNKNOWN] >= 1;
                         }),
                         2000));
  assert_int_equal(h->endpoints[0].downs[3], 0); /* removal reports nothing */
  h->endpoints[0].up[3] = false;                 /* so up comes again when re-added */
  /* Nodes 1 and 2 are unaffected. */
  for (int i = 0; i < 20; i++) {
    assert_int_equal(harness_send(h, 0, 2, 100, false), 0);
    assert_int_equal(harness_send(h, 1, 1, 100, false), 0);
  }
  assert_true(HARNESS_PUMP_UNTIL(
      h, h->endpoints[1].received[1][0] == 20 && h->endpoints[0].received[2][0] == 20, 500));
  harness_add_peer(h, 0, 2);
  assert_true(HARNESS_PUMP_UNTIL(h, harness_all_up(h), 2000));
  assert_int_equal(h->endpoints[0].ups[3], 2);
  harness_teardown(h);
}

/* ---- faults ---- */

static void send_both_ways(harness *h, int count) {
  for (int i = 0; i < count; i++) {
    assert_int_equal(harness_send(h, 0, 2, 200, false), 0);
    assert_int_equal(harness_send(h, 1, 1, 200, false), 0);
  }
}

static void test_fault_drop_both_directions(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 2);
  h->allow_gaps = true;
  transport_fault drop = {.drop = true};
  assert_int_equal(transport_set_fault(h->endpoints[0].t, 2, &drop), 0);
  send_both_ways(h, 10);
  for (int i = 0; i < 100; i++) {
    harness_pump(h);
  }
  assert_int_equal(h->endpoints[1].received[1][0], 0);
  assert_int_equal(h->endpoints[0].received[2][0], 0);
  transport_stats stats;
  transport_get_stats(h->endpoints[0].t, &stats);
  assert_int_equal(stats.frames_dropped_fault, 20);
  assert_true(harness_all_up(h)); /* frames are lost, connections stay */
  assert_int_equal(transport_set_fault(h->endpoints[0].t, 2, NULL), 0);
  send_both_ways(h, 5);
  assert_true(HARNESS_PUMP_UNTIL(
      h, h->endpoints[1].received[1][0] == 5 && h->endpoints[0].received[2][0] == 5, 500));
  assert_int_equal(h->endpoints[1].next_sequence[1][0], 15);
  assert_int_equal(h->endpoints[0].bad_frames + h->endpoints[1].bad_frames, 0);
  harness_teardown(h);
}

/* A partition between nodes 1 and 2 is both sides dropping; node 3 still
 * talks to both. */
static void test_fault_partition(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 3);
  h->allow_gaps = true;
  transport_fault drop = {.drop = true};
  assert_int_equal(transport_set_fault(h->endpoints[0].t, 2, &drop), 0);
  assert_int_equal(transport_set_fault(h->endpoints[1].t, 1, &drop), 0);
  assert_int_equal(
      transport_set_fault(h->endpoints[0].t, 2, &(transport_fault){.drop_probability = 2.0}),
      -EINVAL);
  send_both_ways(h, 10);
  for (int i = 0; i < 10; i++) {
    assert_int_equal(harness_send(h, 2, 1, 200, false), 0);
    assert_int_equal(harness_send(h, 2, 2, 200, false), 0);
  }
  assert_true(HARNESS_PUMP_UNTIL(
      h, h->endpoints[0].received[3][0] == 10 && h->endpoints[1].received[3][0] == 10, 500));
  assert_int_equal(h->endpoints[1].received[1][0], 0);
  assert_int_equal(h->endpoints[0].received[2][0], 0);
  assert_int_equal(transport_set_fault(h->endpoints[0].t, 2, &(transport_fault){0}), 0);
  assert_int_equal(transport_set_fault(h->endpoints[1].t, 1, &(transport_fault){0}), 0);
  send_both_ways(h, 3);
  assert_true(HARNESS_PUMP_UNTIL(
      h, h->endpoints[1].received[1][0] == 3 && h->endpoints[0].received[2][0] == 3, 500));
  harness_teardown(h);
}

static void test_fault_drop_probability(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 2);
  h->allow_gaps = true;
  transport_fault lossy = {.drop_probability = 0.5};
  assert_int_equal(transport_set_fault(h->endpoints[0].t, 2, &lossy), 0);
  for (int i = 0; i < 1000; i++) {
    assert_int_equal(harness_send(h, 0, 2, 64, false), 0);
    if (i % 100 == 99) {
      harness_pump(h);
    }
  }
  transport_stats stats;
  transport_get_stats(h->endpoints[0].t, &stats);
  uint64_t dropped = stats.frames_dropped_fault;
  assert_true(dropped > 350 && dropped < 650);
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[1].received[1][0] == 1000 - dropped, 500));
  assert_int_equal(h->endpoints[1].bad_frames, 0);
  harness_teardown(h);
}

static void test_fault_delay(void **state) {
  (void)state;
  harness *h = &the_harness;
  harness_setup(h, 2);
  transport_fault slow = {.delay_ms = 100};
  assert_int_equal(transport_set_fault(h->endpoints[0].t, 2, &slow), 0);
  uint64_t sent_at = h->now_ms;
  for (int i = 0; i < 5; i++) {
    assert_int_equal(harness_send(h, 0, 2, 500, false), 0);
  }
  /* Cleared before release: held frames keep their time, and frames sent
   * meanwhile queue behind them, in order. */
  assert_int_equal(transport_set_fault(h->endpoints[0].t, 2, NULL), 0);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(harness_send(h, 0, 2, 500, false), 0);
  }
  while (h->now_ms < sent_at + 99) {
    harness_pump(h);
  }
  assert_int_equal(h->endpoints[1].received[1][0], 0);
  assert_true(HARNESS_PUMP_UNTIL(h, h->endpoints[1].received[1][0] == 10, 1000));
  assert_true(h->now_ms >= sent_at + 100);
  assert_int_equal(h->endpoints[1].bad_frames, 0);
  transport_stats stats;
  transport_get_stats(h->endpoints[0].t, &stats);
  assert_int_equal(stats.frames_delayed, 10);
  harness_teardown(h);
}

static void test_options_are_validated(void **state) {
  (void)state;
  harness *h = &the_harness;
  memset(h, 0, sizeof(*h));
  transport_options options;
  harness_default_options(h, 0, &options);
  options.max_queue_bytes = options.max_frame_payload_bytes; /* no room for a header */
  assert_int_equal(harness_try_start(h, 0, &options), -EINVAL);
  harness_default_options(h, 0, &options);
  options.shard_id = 1; /* of one shard */
  assert_int_equal(harness_try_start(h, 0, &options), -EINVAL);
  harness_default_options(h, 0, &options);
  options.backoff_max_ms = 1; /* below the minimum */
  assert_int_equal(harness_try_start(h, 0, &options), -EINVAL);
  harness_default_options(h, 0, &options);
  transport_peer_address self = {.node_id = 1, .host = "127.0.0.1", .port = 9};
  options.peers = &self;
  options.peer_count = 1;
  assert_int_equal(harness_try_start(h, 0, &options), -EINVAL);
  harness_default_options(h, 0, &options);
  options.no_listener = true;
  harness_start(h, 0, &options);
  assert_int_equal(transport_listen_port(h->endpoints[0].t), 0);
  transport_peer_address bad = {.node_id = 5, .host = "not an address", .port = 9};
  assert_int_equal(transport_add_peer(h->endpoints[0].t, &bad), -EINVAL);
  transport_peer_address good = {.node_id = 5, .host = "127.0.0.1", .port = 9};
  assert_int_equal(transport_add_peer(h->endpoints[0].t, &good), 0);
  assert_int_equal(transport_add_peer(h->endpoints[0].t, &good), -EEXIST);
  harness_teardown(h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_two_endpoints_exchange_in_order),
      cmocka_unit_test(test_three_endpoints_exchange_in_order),
      cmocka_unit_test(test_large_batches),
      cmocka_unit_test(test_queue_full_policy),
      cmocka_unit_test(test_bulk_does_not_starve_normal_frames),
      cmocka_unit_test(test_reserve_commit_contract),
      cmocka_unit_test(test_reservations_per_peer),
      cmocka_unit_test(test_peer_restart_reconnects_with_backoff),
      cmocka_unit_test(test_shutdown_with_traffic_in_flight),
      cmocka_unit_test(test_handshake_cluster_mismatch),
      cmocka_unit_test(test_handshake_shard_count_mismatch),
      cmocka_unit_test(test_handshake_shard_id_mismatch),
      cmocka_unit_test(test_handshake_unknown_node_then_membership_change),
      cmocka_unit_test(test_remove_peer_closes_and_refuses),
      cmocka_unit_test(test_fault_drop_both_directions),
      cmocka_unit_test(test_fault_partition),
      cmocka_unit_test(test_fault_drop_probability),
      cmocka_unit_test(test_fault_delay),
      cmocka_unit_test(test_options_are_validated),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
