/*
 * peer.c - the peers of a transport and what is queued for them: the
 * membership changes, the two send classes, reserve/commit and the flush.
 *
 * Queues live in the peer's outgoing connection, so they die with it (a
 * lost connection drops what was queued; Raft retransmits) and a new
 * connection never inherits bytes the kernel may still be reading.
 *
 * Normal class, double-buffered: frames are appended to `filling`; a flush
 * swaps it with the empty `in_flight` buffer and sends that, so frames queue
 * while a send is in the kernel and no byte is ever moved. Each buffer holds
 * at most max_queue_bytes and grows by doubling as needed.
 *
 * Bulk class (snapshot chunks): one buffer bounded by max_bulk_bytes; each
 * flush sends its oldest frames up to bulk_quantum_bytes (at least one
 * whole frame) after all normal frames, in the same sendmsg. The part in
 * flight never moves; the rest is compacted to the front between sends.
 */
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transport/transport_internal.h"

/* ---- the peer table ---- */

transport_peer *peer_find(const transport *t, uint64_t node) {
  /* A cluster has a handful of nodes: a scan beats any index here. */
  for (uint32_t i = 0; i < t->peer_count; i++) {
    if (t->peers[i]->node_id == node) {
      return t->peers[i];
    }
  }
  return NULL;
}

void peer_schedule_dial(transport *t, transport_peer *peer) {
  peer->next_dial_ms = t->now_ms + fault_jitter_ms(t, peer->backoff_ms);
  uint64_t doubled = (uint64_t)peer->backoff_ms * 2;
  peer->backoff_ms =
      doubled < t->options.backoff_max_ms ? (uint32_t)doubled : t->options.backoff_max_ms;
}

static int resolve_peer(transport_peer *peer, const transport_peer_address *address) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  hints.ai_flags = AI_NUMERICSERV;
  char service[8];
  snprintf(service, sizeof(service), "%u", address->port);
  struct addrinfo *found = NULL;
  if (getaddrinfo(address->host, service, &hints, &found) != 0 || found == NULL) {
    return -EINVAL;
  }
  memcpy(&peer->address, found->ai_addr, found->ai_addrlen);
  peer->address_length = found->ai_addrlen;
  freeaddrinfo(found);
  return transport_address_text((const struct sockaddr *)&peer->address, peer->address_length,
                                peer->address_text, sizeof(peer->address_text));
}

static int validate_address(const transport *t, const transport_peer_address *address) {
  if (address == NULL || address->node_id == 0 || address->node_id == t->options.node_id ||
      address->host == NULL || strlen(address->host) > TRANSPORT_MAX_HOST_BYTES ||
      address->port == 0) {
    return -EINVAL;
  }
  if (peer_find(t, address->node_id) != NULL) {
    return -EEXIST;
  }
  return t->peer_count < TRANSPORT_MAX_PEERS ? 0 : -ENOSPC;
}

static int grow_peer_table(transport *t) {
  if (t->peer_count < t->peer_capacity) {
    return 0;
  }
  uint32_t capacity = t->peer_capacity == 0 ? 8 : t->peer_capacity * 2;
  transport_peer **peers = realloc(t->peers, capacity * sizeof(*peers));
  if (peers == NULL) {
    return -ENOMEM;
  }
  t->peers = peers;
  t->peer_capacity = capacity;
  return 0;
}

int transport_add_peer(transport *t, const transport_peer_address *address) {
  assert(t->in_callback == 0);
  if (t->shut_down) {
    return TRANSPORT_E_CLOSED;
  }
  int rc = validate_address(t, address);
  if (rc == 0) {
    rc = grow_peer_table(t);
  }
  if (rc != 0) {
    return rc;
  }
  transport_peer *peer = calloc(1, sizeof(*peer));
  if (peer == NULL) {
    return -ENOMEM;
  }
  peer->node_id = address->node_id;
  rc = resolve_peer(peer, address);
  if (rc != 0) {
    free(peer);
    return rc;
  }
  peer->backoff_ms = t->options.backoff_min_ms;
  peer->next_dial_ms = t->now_ms; /* dial at the next tick */
  t->peers[t->peer_count++] = peer;
  transport_log(t, TRANSPORT_LOG_INFO, "peer node %llu at %s added",
                (unsigned long long)peer->node_id, peer->address_text);
  return 0;
}

/* Closes without reporting anything to the peer entry (being forgotten). */
static void drop_connection(transport_connection *c) {
  if (c == NULL) {
    return;
  }
  c->peer = NULL;
  connection_close(c);
  connection_release_if_done(c);
}

int transport_remove_peer(transport *t, uint64_t node) {
  assert(t->in_callback == 0);
  for (uint32_t i = 0; i < t->peer_count; i++) {
    transport_peer *peer = t->peers[i];
    if (peer->node_id != node) {
      continue;
    }
    transport_connection *outgoing = peer->outgoing;
    transport_connection *incoming = peer->incoming;
    peer->outgoing = peer->incoming = NULL;
    drop_connection(outgoing);
    drop_connection(incoming);
    fault_discard_delayed(t, peer, true);
    t->peers[i] = t->peers[--t->peer_count];
    transport_log(t, TRANSPORT_LOG_INFO, "peer node %llu removed", (unsigned long long)node);
    free(peer);
    return 0;
  }
  return -ENOENT;
}

/* ---- queues ---- */

void send_buffer_free(send_buffer *buffer) {
  free(buffer->bytes);
  *buffer = (send_buffer){0};
}

void bulk_queue_free(bulk_queue *queue) {
  free(queue->bytes);
  *queue = (bulk_queue){0};
}

uint32_t bulk_frame_length(const uint8_t *frame) {
  frame_header header;
  memcpy(&header, frame, sizeof(header));
  return FRAME_HEADER_BYTES + header.payload_length;
}

static transport_connection *ready_connection(const transport *t, uint64_t node) {
  transport_peer *peer = t->shut_down ? NULL : peer_find(t, node);
  if (peer == NULL || peer->outgoing == NULL || peer->outgoing->state != CONNECTION_READY) {
    return NULL;
  }
  return peer->outgoing;
}

static uint32_t grown_capacity(uint32_t capacity, uint64_t needed, uint32_t limit) {
  uint64_t grown = capacity == 0 ? TRANSPORT_SEND_INITIAL_BYTES : capacity;
  while (grown < needed) {
    grown *= 2;
  }
  return grown < limit ? (uint32_t)grown : limit;
}

/* Room for frame_bytes at the end of the filling buffer. */
static int normal_room(const transport *t, send_buffer *filling, uint32_t frame_bytes,
                       uint8_t **frame) {
  uint64_t needed = (uint64_t)filling->length + frame_bytes;
  if (needed > t->options.max_queue_bytes) {
    return TRANSPORT_E_FULL;
  }
  if (needed > filling->capacity) {
    uint32_t capacity = grown_capacity(filling->capacity, needed, t->options.max_queue_bytes);
    uint8_t *bytes = realloc(filling->bytes, capacity); /* never in flight: may move */
    if (bytes == NULL) {
      return TRANSPORT_E_NOMEM;
    }
    filling->bytes = bytes;
    filling->capacity = capacity;
  }
  *frame = filling->bytes + filling->length;
  return 0;
}

/* Largest frame the bulk queue can take now. While a send is in flight the
 * buffer may neither move nor grow, so only its tail counts. */
static uint32_t bulk_available(const transport *t, const bulk_queue *bulk) {
  uint32_t unused = t->options.max_bulk_bytes - (bulk->tail - bulk->head);
  if (bulk->in_flight_bytes == 0) {
    return unused;
  }
  uint32_t tail_room = bulk->capacity - bulk->tail;
  return tail_room < unused ? tail_room : unused;
}

static int bulk_room(const transport *t, bulk_queue *bulk, uint32_t frame_bytes, uint8_t **frame) {
  if (frame_bytes > bulk_available(t, bulk)) {
    return TRANSPORT_E_FULL;
  }
  if ((uint64_t)bulk->tail + frame_bytes > bulk->capacity && bulk->head > 0) {
    assert(bulk->in_flight_bytes == 0);
    memmove(bulk->bytes, bulk->bytes + bulk->head, bulk->tail - bulk->head);
    bulk->tail -= bulk->head;
    bulk->head = 0;
  }
  uint64_t needed = (uint64_t)bulk->tail + frame_bytes;
  if (needed > bulk->capacity) {
    assert(bulk->in_flight_bytes == 0);
    uint32_t capacity = grown_capacity(bulk->capacity, needed, t->options.max_bulk_bytes);
    uint8_t *bytes = realloc(bulk->bytes, capacity);
    if (bytes == NULL) {
      return TRANSPORT_E_NOMEM;
    }
    bulk->bytes = bytes;
    bulk->capacity = capacity;
  }
  *frame = bulk->bytes + bulk->tail;
  return 0;
}

static int room_for(transport *t, transport_connection *c, uint32_t frame_bytes, bool bulk,
                    uint8_t **frame) {
  return bulk ? bulk_room(t, &c->bulk, frame_bytes, frame)
              : normal_room(t, &c->filling, frame_bytes, frame);
}

static void append_frame(transport_connection *c, uint32_t frame_bytes, bool bulk) {
  if (bulk) {
    c->bulk.tail += frame_bytes;
    c->bulk.frames++;
  } else {
    c->filling.length += frame_bytes;
    c->filling.frames++;
  }
}

bool peer_enqueue_frame(transport_connection *c, const uint8_t *frame, uint32_t length, bool bulk) {
  uint8_t *destination = NULL;
  if (room_for(c->t, c, length, bulk, &destination) != 0) {
    return false;
  }
  memcpy(destination, frame, length);
  append_frame(c, length, bulk);
  return true;
}

/* ---- reserve and commit ---- */

static int reserve_frame(transport *t, uint64_t node, uint32_t payload_bytes, bool bulk,
                         void **payload) {
  *payload = NULL;
  if (payload_bytes > t->options.max_frame_payload_bytes) {
    return TRANSPORT_E_TOO_LARGE;
  }
  transport_connection *c = ready_connection(t, node);
  if (c == NULL) {
    t->stats.frames_dropped_down++;
    return TRANSPORT_E_CLOSED;
  }
  c->reserved = false; /* a second reservation on a peer abandons the first */
  uint8_t *frame = NULL;
  int rc = room_for(t, c, FRAME_HEADER_BYTES + payload_bytes, bulk, &frame);
  if (rc != 0) {
    t->stats.frames_dropped_full += rc == TRANSPORT_E_FULL ? 1 : 0;
    return rc;
  }
  c->reserved = true;
  c->reserved_bulk = bulk;
  c->reserved_bytes = payload_bytes;
  *payload = frame + FRAME_HEADER_BYTES;
  return 0;
}

static bool is_sendable_type(frame_type type) {
  return type > FRAME_HANDSHAKE_ACK && type < FRAME_TYPE_COUNT;
}

static int commit_frame(transport *t, uint64_t node, frame_type type, uint32_t payload_bytes,
                        bool bulk) {
  transport_connection *c = ready_connection(t, node);
  if (c == NULL) {
    return TRANSPORT_E_CLOSED; /* closed since the reservation: the frame is lost */
  }
  bool matches = c->reserved && c->reserved_bulk == bulk && payload_bytes <= c->reserved_bytes;
  c->reserved = false;
  if (!matches || !is_sendable_type(type)) {
    return -EINVAL;
  }
  /* A connection that closes clears the reservation: this one is live. */
  assert(c->state == CONNECTION_READY && c->peer != NULL && c->peer->outgoing == c);
  uint8_t *frame = bulk ? c->bulk.bytes + c->bulk.tail : c->filling.bytes + c->filling.length;
  struct iovec payload = {.iov_base = frame + FRAME_HEADER_BYTES, .iov_len = payload_bytes};
  frame_header header; /* sealed aside: the frame may sit at any alignment */
  frame_seal(&header, type, &payload, 1);
  memcpy(frame, &header, sizeof(header));
  uint32_t frame_bytes = FRAME_HEADER_BYTES + payload_bytes;
  if (fault_divert_outgoing(t, c->peer, frame, frame_bytes, bulk)) {
    return 0;
  }
  append_frame(c, frame_bytes, bulk);
  return 0;
}

int transport_reserve(transport *t, uint64_t node, uint32_t payload_bytes, void **payload) {
  return reserve_frame(t, node, payload_bytes, false, payload);
}

int transport_commit(transport *t, uint64_t node, frame_type type, uint32_t payload_bytes) {
  return commit_frame(t, node, type, payload_bytes, false);
}

int transport_reserve_bulk(transport *t, uint64_t node, uint32_t payload_bytes, void **payload) {
  return reserve_frame(t, node, payload_bytes, true, payload);
}

int transport_commit_bulk(transport *t, uint64_t node, frame_type type, uint32_t payload_bytes) {
  return commit_frame(t, node, type, payload_bytes, true);
}

static int send_frame(transport *t, uint64_t node, frame_type type, const struct iovec *payload,
                      int count, bool bulk) {
  if (count < 0 || (count > 0 && payload == NULL) || !is_sendable_type(type)) {
    return -EINVAL;
  }
  uint64_t total = 0;
  for (int i = 0; i < count; i++) {
    total += payload[i].iov_len;
  }
  if (total > t->options.max_frame_payload_bytes) {
    return TRANSPORT_E_TOO_LARGE;
  }
  void *room = NULL;
  int rc = reserve_frame(t, node, (uint32_t)total, bulk, &room);
  if (rc != 0) {
    return rc;
  }
  uint8_t *cursor = room;
  for (int i = 0; i < count; i++) {
    if (payload[i].iov_len > 0) {
      memcpy(cursor, payload[i].iov_base, payload[i].iov_len);
      cursor += payload[i].iov_len;
    }
  }
  return commit_frame(t, node, type, (uint32_t)total, bulk);
}

int transport_send(transport *t, uint64_t node, frame_type type, const struct iovec *payload,
                   int count) {
  return send_frame(t, node, type, payload, count, false);
}

int transport_send_bulk(transport *t, uint64_t node, frame_type type, const struct iovec *payload,
                        int count) {
  return send_frame(t, node, type, payload, count, true);
}

uint32_t transport_bulk_space(const transport *t, uint64_t node) {
  transport_connection *c = ready_connection(t, node);
  if (c == NULL) {
    return 0;
  }
  uint32_t available = bulk_available(t, &c->bulk);
  if (available <= FRAME_HEADER_BYTES) {
    return 0;
  }
  uint32_t payload = available - FRAME_HEADER_BYTES;
  return payload < t->options.max_frame_payload_bytes ? payload
                                                      : t->options.max_frame_payload_bytes;
}

/* ---- flush ---- */

/* The oldest bulk frames up to the quantum, at least one whole frame. */
static void choose_bulk_slice(const transport *t, bulk_queue *bulk) {
  uint32_t offset = bulk->head;
  uint32_t bytes = 0;
  uint32_t frames = 0;
  while (offset < bulk->tail) {
    uint32_t length = bulk_frame_length(bulk->bytes + offset);
    if (frames > 0 && bytes + length > t->options.bulk_quantum_bytes) {
      break;
    }
    bytes += length;
    frames++;
    offset += length;
  }
  bulk->in_flight_bytes = bytes;
  bulk->in_flight_frames = frames;
}

static bool flush_connection(transport *t, transport_connection *c) {
  if (c->send_pending || (c->filling.length == 0 && c->bulk.frames == 0)) {
    return false;
  }
  assert(c->in_flight.length == 0 && c->bulk.in_flight_bytes == 0);
  send_buffer swap = c->in_flight;
  c->in_flight = c->filling;
  c->filling = swap;
  choose_bulk_slice(t, &c->bulk);
  struct iovec segments[2];
  uint32_t count = 0;
  if (c->in_flight.length > 0) {
    segments[count++] = (struct iovec){c->in_flight.bytes, c->in_flight.length};
  }
  if (c->bulk.in_flight_bytes > 0) {
    segments[count++] = (struct iovec){c->bulk.bytes + c->bulk.head, c->bulk.in_flight_bytes};
  }
  connection_start_send(c, segments, count, c->in_flight.frames + c->bulk.in_flight_frames, false);
  return true;
}

int transport_flush(transport *t) {
  if (t->shut_down) {
    return 0;
  }
  int prepared = 0;
  for (uint32_t i = 0; i < t->peer_count; i++) {
    transport_connection *c = t->peers[i]->outgoing;
    if (c != NULL) {
      c->reserved = false; /* a flush abandons what was not committed */
    }
    if (c != NULL && c->state == CONNECTION_READY && flush_connection(t, c)) {
      prepared++;
    }
  }
  return prepared;
}
