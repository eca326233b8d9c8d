/*
 * network.c - a shard's Raft traffic over its transport (transport/).
 *
 * Sending: every message a replica emits goes into the open FRAME_RAFT batch
 * of its peer, encoded straight into the transport's send buffer (the only
 * copy of entry bytes on this side); heartbeats and their responses are set
 * aside and coalesced at the flush into one FRAME_HEARTBEATS per peer. A
 * group may set aside two of a kind for one peer within an iteration (a
 * tick's heartbeat and a read round's; the answers to two heartbeat frames
 * received together): only the newest is sent, since a frame carries each
 * group once per kind and a leader's heartbeats only grow within a term
 * (read round, tick, commit), so the newest says all the older ones did.
 * The flush closes every open batch and hands the transport one send per
 * peer.
 * A message the transport cannot take (peer down, queue full) is dropped:
 * Raft retries, and a down peer is reported unreachable to every replica.
 *
 * Receiving: a frame's messages are stepped into their replicas, which are
 * drained before the callback returns, since the entries point into the
 * receive buffer.
 *
 * Shard s of this node dials shard s of every other node, at the node's
 * base port + s: a group lives on the same shard index everywhere.
 */
#include "engine/engine_internal.h"
#include "engine/snapshot.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/dispatch.h"
#include "transport/codec.h"
#include "transport/transport.h"

/* Payload bytes reserved for one open batch; a larger message gets its own. */
#define NETWORK_BATCH_BYTES (1u << 20)
/* Heartbeats coalesced per peer per iteration before an early flush. */
#define NETWORK_MAX_HEARTBEATS 65536u

typedef struct peer_batch {
  uint64_t node;
  bool open;
  codec_raft_encoder encoder;
  fl_raft_message *heartbeats; /* copies: they carry no entries */
  uint64_t *heartbeat_groups;
  uint32_t heartbeat_count;
  uint32_t heartbeat_capacity;
  bool up;
  bool alive; /* a frame arrived within the election timeout */
  uint64_t last_received_ms;
  uint64_t last_sent_ms;
} peer_batch;

struct network {
  transport *link;
  peer_batch *peers;
  uint32_t peer_count;
  fl_raft_entry *scratch;    /* decoded entries of one message */
  codec_heartbeat *coalesce; /* encoder input */
};

static peer_batch *find_peer(const network *n, uint64_t node) {
  for (uint32_t i = 0; i < n->peer_count; i++) {
    if (n->peers[i].node == node) {
      return &n->peers[i];
    }
  }
  return NULL;
}

/* ---- sending ------------------------------------------------------------ */

static void close_batch(shard *s, peer_batch *p) {
  if (!p->open) {
    return;
  }
  size_t length = 0;
  codec_raft_finish(&p->encoder, &length);
  transport_commit(s->net->link, p->node, FRAME_RAFT, (uint32_t)length);
  p->open = false;
  p->last_sent_ms = s->now_ms;
  s->stats.frames_sent++;
}

static int open_batch(shard *s, peer_batch *p, size_t need) {
  uint32_t bytes = need > NETWORK_BATCH_BYTES ? (uint32_t)need : NETWORK_BATCH_BYTES;
  void *room = NULL;
  int rc = transport_reserve(s->net->link, p->node, bytes, &room);
  if (rc != 0) {
    return rc;
  }
  codec_raft_encoder_init(&p->encoder, room, bytes);
  p->open = true;
  return 0;
}

static void keep_heartbeat(peer_batch *p, uint64_t group, const fl_raft_message *m) {
  if (p->heartbeat_count == p->heartbeat_capacity) {
    uint32_t capacity = p->heartbeat_capacity ? p->heartbeat_capacity * 2 : 256;
    if (capacity > NETWORK_MAX_HEARTBEATS) {
      return; /* dropped: the next heartbeat tick resends */
    }
    fl_raft_message *messages = realloc(p->heartbeats, capacity * sizeof(*messages));
    uint64_t *groups =
        messages != NULL ? realloc(p->heartbeat_groups, capacity * sizeof(uint64_t)) : NULL;
    if (messages != NULL) {
      p->heartbeats = messages;
    }
    if (groups == NULL) {
      return;
    }
    p->heartbeat_groups = groups;
    p->heartbeat_capacity = capacity;
  }
  p->heartbeats[p->heartbeat_count] = *m;
  p->heartbeat_groups[p->heartbeat_count++] = group;
}

void network_send(shard *s, uint64_t group, const fl_raft_message *m) {
  peer_batch *p = find_peer(s->net, m->to);
  if (p == NULL || !p->up) {
    return; /* unknown or down: Raft retries once it is reachable */
  }
  s->stats.messages_sent++;
  s->stats.entries_sent += m->entry_count;
  if (codec_heartbeat_is_coalescible(m)) {
    keep_heartbeat(p, group, m);
    return;
  }
  size_t need = codec_raft_message_size(m) + CODEC_RAFT_BATCH_HEADER_BYTES;
  if (!p->open && open_batch(s, p, need) != 0) {
    return;
  }
  int rc = codec_raft_add(&p->encoder, group, m);
  if (rc == TRANSPORT_E_FULL || rc == TRANSPORT_E_TOO_LARGE) {
    close_batch(s, p);
    rc = open_batch(s, p, need);
    rc = rc == 0 ? codec_raft_add(&p->encoder, group, m) : rc;
  }
  if (rc != 0 && rc != TRANSPORT_E_FULL && rc != TRANSPORT_E_CLOSED) {
    shard_log(s, 2, "group %llu: message to node %llu not encoded: %s", (unsigned long long)group,
              (unsigned long long)m->to, transport_strerror(rc));
  }
}

/* Sorts the items for the frame and keeps the newest of each group and
 * kind (see the top of the file); returns how many are left. */
static uint32_t newest_heartbeats(codec_heartbeat *items, uint32_t count) {
  codec_heartbeats_sort(items, count); /* same group and kind: set-aside order */
  uint32_t kept = 0;
  for (uint32_t i = 0; i < count; i++) {
    bool superseded = i + 1 < count && items[i + 1].group == items[i].group &&
                      items[i + 1].message->type == items[i].message->type;
    if (!superseded) {
      items[kept++] = items[i];
    }
  }
  return kept;
}

static void send_heartbeats(shard *s, peer_batch *p) {
  if (p->heartbeat_count == 0) {
    return;
  }
  codec_heartbeat *items = s->net->coalesce;
  for (uint32_t i = 0; i < p->heartbeat_count; i++) {
    items[i] = (codec_heartbeat){.group = p->heartbeat_groups[i], .message = &p->heartbeats[i]};
  }
  uint32_t count = newest_heartbeats(items, p->heartbeat_count);
  size_t capacity = codec_heartbeats_max_size(count);
  void *room = NULL;
  size_t length = 0;
  int rc = transport_reserve(s->net->link, p->node, (uint32_t)capacity, &room);
  if (rc == 0) {
    rc = codec_heartbeats_encode(items, count, room, capacity, &length);
    assert(rc != TRANSPORT_E_MALFORMED); /* one per group and kind, each coalescible */
  }
  if (rc == 0) {
    transport_commit(s->net->link, p->node, FRAME_HEARTBEATS, (uint32_t)length);
    p->last_sent_ms = s->now_ms;
    s->stats.frames_sent++;
  }
  p->heartbeat_count = 0;
}

void network_flush(shard *s) {
  network *n = s->net;
  for (uint32_t i = 0; i < n->peer_count; i++) {
    close_batch(s, &n->peers[i]);
    send_heartbeats(s, &n->peers[i]);
  }
  transport_flush(n->link);
}

/* ---- receiving ---------------------------------------------------------- */

static void step_into(shard *s, uint64_t group, const fl_raft_message *m) {
  replica *r = replica_table_find(&s->replicas, group);
  if (r != NULL) {
    replica_step(r, m);
  }
}

static void receive_raft(shard *s, uint64_t from, const uint8_t *payload, uint32_t length) {
  codec_raft_decoder decoder;
  codec_raft_decoder_init(&decoder, payload, length, from, s->engine->options.node_id);
  uint64_t group = 0;
  fl_raft_message m;
  int rc;
  while ((rc = codec_raft_next(&decoder, &group, &m, s->net->scratch,
                               CODEC_MAX_ENTRIES_PER_MESSAGE)) == 1) {
    step_into(s, group, &m);
  }
  if (rc < 0) {
    shard_log(s, 2, "bad raft frame from node %llu: %s", (unsigned long long)from,
              transport_strerror(rc));
  }
}

static void receive_heartbeats(shard *s, uint64_t from, const uint8_t *payload, uint32_t length) {
  codec_heartbeats_decoder decoder;
  codec_heartbeats_decoder_init(&decoder, payload, length, from, s->engine->options.node_id);
  uint64_t group = 0;
  fl_raft_message m;
  int rc;
  while ((rc = codec_heartbeats_next(&decoder, &group, &m)) == 1) {
    step_into(s, group, &m);
  }
  if (rc < 0) {
    shard_log(s, 2, "bad heartbeats frame from node %llu: %s", (unsigned long long)from,
              transport_strerror(rc));
  }
}

static void receive_snapshot_frame(shard *s, uint64_t from, frame_type type, const uint8_t *payload,
                                   uint32_t length) {
  if (type == FRAME_SNAPSHOT_CHUNK) {
    codec_snapshot_chunk chunk;
    if (codec_snapshot_chunk_decode(payload, length, &chunk) == 0) {
      snapshot_receive_chunk(s, from, &chunk);
    }
    return;
  }
  codec_snapshot_ack ack;
  if (codec_snapshot_ack_decode(payload, length, &ack) == 0) {
    snapshot_receive_ack(s, from, &ack);
  }
}

static void note_alive(shard *s, uint64_t from) {
  peer_batch *p = find_peer(s->net, from);
  if (p != NULL) {
    p->alive = true;
    p->last_received_ms = s->now_ms;
  }
}

static void on_frame(void *context, uint64_t from, frame_type type, const uint8_t *payload,
                     uint32_t length) {
  shard *s = context;
  s->stats.frames_received++;
  note_alive(s, from);
  if (type == FRAME_RAFT) {
    receive_raft(s, from, payload, length);
  } else if (type == FRAME_HEARTBEATS) {
    receive_heartbeats(s, from, payload, length);
  } else if (type == FRAME_SNAPSHOT_CHUNK || type == FRAME_SNAPSHOT_ACK) {
    receive_snapshot_frame(s, from, type, payload, length);
  }
  shard_drain_ready(s); /* the entries point into the receive buffer */
}

static void on_peer(void *context, uint64_t node, bool up) {
  shard *s = context;
  peer_batch *p = find_peer(s->net, node);
  if (p == NULL) {
    return;
  }
  p->up = up;
  if (up) {
    return;
  }
  /* The connection's send buffer, where an open batch was being encoded,
   * goes away with it: the batch is abandoned, never finished. */
  p->open = false;
  p->heartbeat_count = 0;
  p->alive = false;
  shard_wake_led_by(s, node);
  for (uint32_t i = 0; i < s->replicas.capacity; i++) {
    replica *r = s->replicas.slots[i];
    if (r != NULL) {
      fl_raft_report_unreachable(r->raft, node);
      snapshot_peer_down(r, node);
      shard_mark_ready(s, r);
    }
  }
}

static void on_log(void *context, transport_log_level level, const char *message) {
  shard_log(context, (int)level, "transport: %s", message);
}

/* ---- lifecycle ---------------------------------------------------------- */

static int add_peers(shard *s, transport_options *options, transport_peer_address *addresses) {
  const fl_engine *e = s->engine;
  network *n = s->net;
  n->peers = calloc(e->options.node_count, sizeof(peer_batch));
  if (n->peers == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < e->options.node_count; i++) {
    const fl_node_address *node = &e->nodes[i];
    if (node->node_id == e->options.node_id) {
      options->listen_port = (uint16_t)(node->port + s->index);
      continue;
    }
    addresses[options->peer_count++] = (transport_peer_address){
        .node_id = node->node_id, .host = node->host, .port = (uint16_t)(node->port + s->index)};
    n->peers[n->peer_count++] = (peer_batch){.node = node->node_id};
  }
  return 0;
}

int network_open(shard *s) {
  network *n = calloc(1, sizeof(*n));
  s->net = n;
  if (n == NULL) {
    return -ENOMEM;
  }
  n->scratch = calloc(CODEC_MAX_ENTRIES_PER_MESSAGE, sizeof(fl_raft_entry));
  n->coalesce = calloc(NETWORK_MAX_HEARTBEATS, sizeof(codec_heartbeat));
  transport_peer_address *addresses =
      calloc(s->engine->options.node_count + 1, sizeof(transport_peer_address));
  if (n->scratch == NULL || n->coalesce == NULL || addresses == NULL) {
    free(addresses);
    return -ENOMEM;
  }
  const fl_engine *e = s->engine;
  transport_options options;
  transport_options_default(&options);
  options.cluster_id = e->options.cluster_id;
  options.node_id = e->options.node_id;
  options.shard_id = s->index;
  options.shard_count = e->shard_count;
  options.listen_host = e->listen_host;
  options.seed = e->options.node_id * 1000003u + s->index;
  options.on_frame = on_frame;
  options.on_peer = on_peer;
  options.log = on_log;
  options.context = s;
  int rc = add_peers(s, &options, addresses);
  options.peers = addresses;
  if (rc == 0) {
    rc = transport_create(&options, &s->ring, &n->link);
  }
  free(addresses);
  if (rc != 0) {
    shard_log(s, 3, "cannot start the transport: %s", transport_strerror(rc));
  }
  return rc;
}

/* An empty heartbeats frame: keeps this node alive in the peer's eyes
 * while every group it leads is quiet. */
static void send_keepalive(shard *s, peer_batch *p) {
  void *room = NULL;
  size_t length = 0;
  size_t capacity = codec_heartbeats_max_size(0);
  if (transport_reserve(s->net->link, p->node, (uint32_t)capacity, &room) == 0 &&
      codec_heartbeats_encode(NULL, 0, room, capacity, &length) == 0 &&
      transport_commit(s->net->link, p->node, FRAME_HEARTBEATS, (uint32_t)length) == 0) {
    p->last_sent_ms = s->now_ms;
  }
}

/* Node liveness for quiescence: a peer silent for an election timeout is
 * dead, and the quiet groups it led wake up to elect. */
void network_tick(shard *s, uint64_t now_ms) {
  /* no open batch may span a transport tick (it may release delayed frames
   * or close connections), nor a keepalive's reservation on the same peer */
  for (uint32_t i = 0; i < s->net->peer_count; i++) {
    close_batch(s, &s->net->peers[i]);
  }
  transport_tick(s->net->link, now_ms);
  const fl_options *o = &s->engine->options;
  uint64_t heartbeat_ms = (uint64_t)o->heartbeat_ticks * o->tick_ms;
  uint64_t election_ms = (uint64_t)o->election_ticks * o->tick_ms;
  for (uint32_t i = 0; i < s->net->peer_count; i++) {
    peer_batch *p = &s->net->peers[i];
    if (p->alive && now_ms > p->last_received_ms + election_ms) {
      p->alive = false;
      shard_wake_led_by(s, p->node);
    }
    if (p->up && now_ms >= p->last_sent_ms + heartbeat_ms) {
      send_keepalive(s, p);
    }
  }
}

bool network_node_alive(const shard *s, uint64_t node) {
  const peer_batch *p = find_peer(s->net, node);
  return p != NULL && p->alive;
}

void network_send_frame(shard *s, uint64_t node, int type, const void *bytes, uint32_t length) {
  peer_batch *p = find_peer(s->net, node);
  if (p == NULL) {
    return;
  }
  close_batch(s, p);
  struct iovec payload = {.iov_base = (void *)bytes, .iov_len = length};
  if (transport_send(s->net->link, node, (frame_type)type, &payload, 1) == 0) {
    s->stats.frames_sent++;
  }
}

struct transport *network_transport(shard *s) {
  return s->net->link;
}

int network_set_fault(shard *s, uint64_t node, bool drop) {
  transport_fault fault = {.drop = drop};
  return transport_set_fault(s->net->link, node, &fault);
}

bool network_is_idle(const shard *s) {
  return s->net == NULL || s->net->link == NULL || transport_is_idle(s->net->link);
}

void network_close(shard *s) {
  network *n = s->net;
  if (n == NULL) {
    return;
  }
  if (n->link != NULL) {
    transport_shutdown(n->link);
    while (!transport_is_idle(n->link)) {
      fl_dispatch(&s->ring, 1, 100 * 1000000ll);
    }
    transport_destroy(n->link);
  }
  for (uint32_t i = 0; i < n->peer_count; i++) {
    free(n->peers[i].heartbeats);
    free(n->peers[i].heartbeat_groups);
  }
  free(n->peers);
  free(n->scratch);
  free(n->coalesce);
  free(n);
  s->net = NULL;
}
