/*
 * handshake.c - the first frame on every connection: who is calling, of
 * which cluster, speaking which protocol version, for which shard.
 *
 * The dialer sends FRAME_HANDSHAKE with its identity; the acceptor checks
 * it and answers FRAME_HANDSHAKE_ACK with its own identity and the result;
 * a refused dialer is closed once the ACK is sent, so the dialer learns the
 * reason instead of guessing from a reset. The dialer checks the acceptor's
 * identity too: a wrong address in the configuration must not join two
 * clusters or two shards. Payload layout: transport_handshake (transport.h),
 * described in docs/transport.md.
 */
#include <stdio.h>
#include <string.h>

#include "transport/transport_internal.h"

const char *transport_handshake_result_name(int result) {
  switch (result) {
  case TRANSPORT_HANDSHAKE_ACCEPTED:
    return "accepted";
  case TRANSPORT_HANDSHAKE_CLUSTER:
    return "cluster id";
  case TRANSPORT_HANDSHAKE_VERSION:
    return "protocol version";
  case TRANSPORT_HANDSHAKE_SHARD_ID:
    return "shard id";
  case TRANSPORT_HANDSHAKE_SHARD_COUNT:
    return "shard count";
  case TRANSPORT_HANDSHAKE_NODE_UNKNOWN:
    return "node id (unknown)";
  case TRANSPORT_HANDSHAKE_NODE_DUPLICATE:
    return "node id (duplicate)";
  case TRANSPORT_HANDSHAKE_WRONG_NODE:
    return "node id (not the node dialed)";
  default:
    return "unknown result";
  }
}

void handshake_build(const transport *t, frame_type type, int32_t result,
                     uint8_t out[TRANSPORT_CONTROL_BYTES]) {
  transport_handshake handshake = {
      .cluster_id = t->options.cluster_id,
      .node_id = t->options.node_id,
      .protocol_version = TRANSPORT_PROTOCOL_VERSION,
      .shard_id = t->options.shard_id,
      .shard_count = t->options.shard_count,
      .result = result,
  };
  struct iovec payload = {.iov_base = &handshake, .iov_len = sizeof(handshake)};
  frame_header header;
  frame_seal(&header, type, &payload, 1);
  memcpy(out, &header, sizeof(header));
  memcpy(out + sizeof(header), &handshake, sizeof(handshake));
}

bool handshake_decode(frame_type type, const uint8_t *payload, uint32_t length,
                      transport_handshake *out) {
  if (length != sizeof(*out)) {
    return false;
  }
  memcpy(out, payload, sizeof(*out));
  if (type == FRAME_HANDSHAKE) {
    return out->result == 0;
  }
  /* An acceptor never says WRONG_NODE: only a dialer can tell. */
  return out->result >= 0 && out->result < TRANSPORT_HANDSHAKE_WRONG_NODE;
}

/* The version first: another version may give the other fields another
 * meaning, so nothing else of it is worth comparing. */
static int check_identity(const transport *t, const transport_handshake *remote) {
  if (remote->protocol_version != TRANSPORT_PROTOCOL_VERSION) {
    return TRANSPORT_HANDSHAKE_VERSION;
  }
  if (remote->cluster_id != t->options.cluster_id) {
    return TRANSPORT_HANDSHAKE_CLUSTER;
  }
  if (remote->shard_count != t->options.shard_count) {
    return TRANSPORT_HANDSHAKE_SHARD_COUNT;
  }
  if (remote->shard_id != t->options.shard_id) {
    return TRANSPORT_HANDSHAKE_SHARD_ID;
  }
  return TRANSPORT_HANDSHAKE_ACCEPTED;
}

/*
 * One ready connection per peer and direction. A second one claiming the
 * node of a live connection (bytes received within handshake_timeout_ms) is
 * refused as a duplicate: a twin with the same id, or a race with the close
 * of the old one, which the dialer's backoff resolves. A connection silent
 * for longer is presumed dead (its node crashed and came back before TCP
 * noticed): the new one replaces it, instead of waiting for keepalive.
 */
int handshake_check_dialer(transport *t, const transport_handshake *hello, transport_peer **peer,
                           transport_connection **stale) {
  *peer = NULL;
  *stale = NULL;
  int result = check_identity(t, hello);
  if (result != TRANSPORT_HANDSHAKE_ACCEPTED) {
    return result;
  }
  if (hello->node_id == t->options.node_id) {
    return TRANSPORT_HANDSHAKE_NODE_DUPLICATE;
  }
  transport_peer *found = peer_find(t, hello->node_id);
  if (found == NULL) {
    return TRANSPORT_HANDSHAKE_NODE_UNKNOWN;
  }
  if (found->incoming != NULL) {
    uint64_t silent_ms = t->now_ms - found->incoming->last_receive_ms;
    if (silent_ms < t->options.handshake_timeout_ms) {
      return TRANSPORT_HANDSHAKE_NODE_DUPLICATE;
    }
    *stale = found->incoming;
  }
  *peer = found;
  return TRANSPORT_HANDSHAKE_ACCEPTED;
}

int handshake_check_acceptor(const transport *t, const transport_handshake *ack, uint64_t node) {
  int result = check_identity(t, ack);
  if (result != TRANSPORT_HANDSHAKE_ACCEPTED) {
    return result;
  }
  return ack->node_id == node ? TRANSPORT_HANDSHAKE_ACCEPTED : TRANSPORT_HANDSHAKE_WRONG_NODE;
}

/* "<field> <theirs>, ours <ours>" for the log line of a refusal. */
void handshake_describe(const transport *t, const transport_handshake *remote, int result,
                        char *text, size_t capacity) {
  unsigned long long theirs = 0, ours = 0;
  switch (result) {
  case TRANSPORT_HANDSHAKE_CLUSTER:
    theirs = remote->cluster_id;
    ours = t->options.cluster_id;
    break;
  case TRANSPORT_HANDSHAKE_VERSION:
    theirs = remote->protocol_version;
    ours = TRANSPORT_PROTOCOL_VERSION;
    break;
  case TRANSPORT_HANDSHAKE_SHARD_ID:
    theirs = remote->shard_id;
    ours = t->options.shard_id;
    break;
  case TRANSPORT_HANDSHAKE_SHARD_COUNT:
    theirs = remote->shard_count;
    ours = t->options.shard_count;
    break;
  default:
    snprintf(text, capacity, "%s mismatch: %llu", transport_handshake_result_name(result),
             (unsigned long long)remote->node_id);
    return;
  }
  snprintf(text, capacity, "%s mismatch: %llu, ours %llu", transport_handshake_result_name(result),
           theirs, ours);
}
