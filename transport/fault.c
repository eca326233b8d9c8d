/*
 * fault.c - the test seam on the links of a transport (drop, drop
 * probability, delay) and the seeded random numbers it and the reconnect
 * jitter use.
 *
 * Faults act on frames, not connections: a dropped link stays connected
 * and loses every frame silently, like a partition the TCP layer has not
 * noticed yet. Delayed frames are copied aside (this is a test seam: one
 * allocation per held frame is fine) and queued again, in order, by the
 * first transport_tick at or after their release time. Everything is
 * decided by a generator seeded from transport_options.seed, so a run is
 * replayable.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "transport/transport_internal.h"

/* splitmix64: tiny, fast, and every seed (0 included) gives a full stream. */
uint64_t fault_random(transport *t) {
  uint64_t z = (t->random_state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* "Equal jitter": at least half the backoff, so retries stay spaced, and a
 * random rest, so nodes restarted together do not dial in lockstep. */
uint32_t fault_jitter_ms(transport *t, uint32_t backoff_ms) {
  uint32_t half = backoff_ms / 2;
  return half + (uint32_t)(fault_random(t) % (uint64_t)(backoff_ms - half + 1));
}

static double random_unit(transport *t) {
  return (double)(fault_random(t) >> 11) * 0x1.0p-53;
}

int transport_set_fault(transport *t, uint64_t node, const transport_fault *fault) {
  transport_peer *peer = peer_find(t, node);
  if (peer == NULL) {
    return -ENOENT;
  }
  if (fault == NULL) {
    peer->fault = (transport_fault){0};
    return 0;
  }
  if (!(fault->drop_probability >= 0.0 && fault->drop_probability <= 1.0)) {
    return -EINVAL;
  }
  peer->fault = *fault;
  return 0;
}

static void hold_frame(transport *t, transport_peer *peer, const uint8_t *frame, uint32_t length,
                       bool bulk) {
  uint64_t limit = (uint64_t)t->options.max_queue_bytes + t->options.max_bulk_bytes;
  delayed_frame *held = NULL;
  if (peer->delayed_bytes + length <= limit) {
    held = malloc(sizeof(*held) + length);
  }
  if (held == NULL) {
    t->stats.frames_dropped_full++;
    return;
  }
  held->next = NULL;
  held->release_ms = t->now_ms + peer->fault.delay_ms;
  held->length = length;
  held->bulk = bulk;
  memcpy(held->bytes, frame, length);
  if (peer->delayed_tail != NULL) {
    peer->delayed_tail->next = held;
  } else {
    peer->delayed_head = held;
  }
  peer->delayed_tail = held;
  peer->delayed_bytes += length;
  t->stats.frames_delayed++;
}

bool fault_divert_outgoing(transport *t, transport_peer *peer, const uint8_t *frame,
                           uint32_t length, bool bulk) {
  const transport_fault *fault = &peer->fault;
  if (fault->drop || (fault->drop_probability > 0.0 && random_unit(t) < fault->drop_probability)) {
    t->stats.frames_dropped_fault++;
    return true;
  }
  /* Once frames are held, later ones queue behind them even when the delay
   * was cleared meanwhile: a delay reorders nothing. */
  if (fault->delay_ms > 0 || peer->delayed_head != NULL) {
    hold_frame(t, peer, frame, length, bulk);
    return true;
  }
  return false;
}

bool fault_drops_incoming(transport *t, transport_peer *peer) {
  if (!peer->fault.drop) {
    return false;
  }
  t->stats.frames_dropped_fault++;
  return true;
}

static void pop_delayed(transport_peer *peer) {
  delayed_frame *held = peer->delayed_head;
  peer->delayed_head = held->next;
  if (peer->delayed_head == NULL) {
    peer->delayed_tail = NULL;
  }
  peer->delayed_bytes -= held->length;
  free(held);
}

void fault_release_due(transport *t, transport_peer *peer) {
  while (peer->delayed_head != NULL && peer->delayed_head->release_ms <= t->now_ms) {
    delayed_frame *held = peer->delayed_head;
    transport_connection *c = peer->outgoing;
    if (c == NULL || c->state != CONNECTION_READY) {
      t->stats.frames_dropped_down++;
    } else if (!peer_enqueue_frame(c, held->bytes, held->length, held->bulk)) {
      t->stats.frames_dropped_full++;
    }
    pop_delayed(peer);
  }
}

void fault_discard_delayed(transport *t, transport_peer *peer, bool count_as_down) {
  while (peer->delayed_head != NULL) {
    t->stats.frames_dropped_down += count_as_down ? 1 : 0;
    pop_delayed(peer);
  }
  assert(peer->delayed_bytes == 0);
}
