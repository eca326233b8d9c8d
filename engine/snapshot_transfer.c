/*
 * snapshot_transfer.c - streaming a snapshot file to a follower and
 * receiving one (see snapshot.c for the file and the overall flow).
 *
 * Sender, per (group, follower):
 *   STREAMING --every byte queued--> WAITING_ACK --ack OK--> done (core:
 *   report_snapshot success) ; any failure, a restart request, the peer
 *   going down --> dropped (core: report_snapshot failure, it retries).
 * Receiver, per group: chunks must arrive in order from offset 0 of one
 * stream; anything else asks the sender to restart. Only the last chunk
 * makes the file durable and hands the core the SNAPSHOT message.
 *
 * The stream is the sender's snapshot file with the header's leader_term
 * set to the sender's term: the first chunk is that header, from memory;
 * the rest is read from the file. Chunks travel in the transport's bulk
 * class, so log traffic to the same peer is never held up behind them.
 */
#include "engine/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport/transport.h"

#define TRANSFER_CHUNK_BYTES (256u << 10)
#define SNAPSHOT_HEADER_BYTES ((uint32_t)sizeof(snapshot_file_header))

struct snapshot_send {
  uint64_t node;
  uint64_t stream_id;
  int fd;
  snapshot_file_header header;
  uint64_t offset;
  uint64_t total;
  bool done;
  snapshot_send *next;
};

struct snapshot_receive {
  uint64_t from;
  uint64_t stream_id;
  int fd;
  uint64_t offset;
  uint64_t total;
  uint64_t index;
};

/* ---- sending ----------------------------------------------------------- */

static void drop_send(replica *r, snapshot_send *send, bool success) {
  for (snapshot_send **link = &r->sending; *link != NULL; link = &(*link)->next) {
    if (*link == send) {
      *link = send->next;
      break;
    }
  }
  fl_raft_report_snapshot(r->raft, send->node, success);
  shard_mark_ready(r->owner, r);
  close(send->fd);
  free(send);
}

static snapshot_send *find_send(replica *r, uint64_t node) {
  for (snapshot_send *send = r->sending; send != NULL; send = send->next) {
    if (send->node == node) {
      return send;
    }
  }
  return NULL;
}

void snapshot_send_start(replica *r, const fl_raft_message *m) {
  snapshot_send *old = find_send(r, m->to);
  if (old != NULL) {
    if (!old->done && old->header.index == m->snapshot.index) {
      return; /* the same snapshot is on its way */
    }
    drop_send(r, old, false);
  }
  char path[4200];
  snapshot_path(r->owner, r->group, m->snapshot.index, ".snap", path, sizeof(path));
  snapshot_send *send = calloc(1, sizeof(*send));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  bool ok = send != NULL && fd >= 0 && fstat(fd, &st) == 0 &&
            pread(fd, &send->header, sizeof(send->header), 0) == (ssize_t)sizeof(send->header) &&
            send->header.magic == SNAPSHOT_MAGIC;
  if (!ok) {
    shard_log(r->owner, 2, "group %llu: cannot send snapshot %s", (unsigned long long)r->group,
              path);
    if (fd >= 0) {
      close(fd);
    }
    free(send);
    fl_raft_report_snapshot(r->raft, m->to, false);
    return;
  }
  send->node = m->to;
  send->stream_id = ++r->owner->next_stream_id;
  send->fd = fd;
  send->header.leader_term = m->term;
  send->total = (uint64_t)st.st_size;
  send->next = r->sending;
  r->sending = send;
}

/* Queues one chunk; false when the peer's bulk queue has no room. */
static bool send_chunk(replica *r, snapshot_send *send, uint8_t *buffer) {
  transport *link = network_transport(r->owner);
  uint32_t space = transport_bulk_space(link, send->node);
  if (space <= CODEC_SNAPSHOT_CHUNK_HEADER_BYTES) {
    return false;
  }
  uint64_t left = send->total - send->offset;
  uint32_t length = send->offset < SNAPSHOT_HEADER_BYTES
                        ? SNAPSHOT_HEADER_BYTES
                        : (uint32_t)(left < TRANSFER_CHUNK_BYTES ? left : TRANSFER_CHUNK_BYTES);
  if (length > space - CODEC_SNAPSHOT_CHUNK_HEADER_BYTES) {
    length = space - CODEC_SNAPSHOT_CHUNK_HEADER_BYTES;
    if (send->offset < SNAPSHOT_HEADER_BYTES) {
      return false; /* the header goes whole */
    }
  }
  if (send->offset < SNAPSHOT_HEADER_BYTES) {
    memcpy(buffer, &send->header, SNAPSHOT_HEADER_BYTES);
  } else if (pread(send->fd, buffer, length, (off_t)send->offset) != (ssize_t)length) {
    drop_send(r, send, false);
    return false;
  }
  codec_snapshot_chunk chunk = {.group = r->group,
                                .stream_id = send->stream_id,
                                .snapshot_index = send->header.index,
                                .snapshot_term = send->header.term,
                                .offset = send->offset,
                                .total_bytes = send->total,
                                .length = length,
                                .last = send->offset + length == send->total,
                                .data = buffer};
  uint8_t header[CODEC_SNAPSHOT_CHUNK_HEADER_BYTES];
  codec_snapshot_chunk_encode_header(&chunk, header);
  struct iovec parts[2] = {{header, sizeof(header)}, {buffer, length}};
  if (transport_send_bulk(link, send->node, FRAME_SNAPSHOT_CHUNK, parts, 2) != 0) {
    return false;
  }
  send->offset += length;
  send->done = send->offset == send->total;
  return true;
}

void snapshot_send_continue(replica *r, uint32_t budget) {
  uint8_t *buffer = arena_allocate(&r->owner->scratch, TRANSFER_CHUNK_BYTES);
  if (buffer == NULL) {
    return;
  }
  uint32_t sent = 0;
  for (snapshot_send *send = r->sending, *next; send != NULL && sent < budget; send = next) {
    next = send->next;
    while (!send->done && sent < budget) {
      uint64_t before = send->offset;
      if (!send_chunk(r, send, buffer)) {
        break;
      }
      sent += (uint32_t)(send->offset - before);
    }
  }
}

void snapshot_peer_down(replica *r, uint64_t node) {
  snapshot_send *send = find_send(r, node);
  if (send != NULL) {
    drop_send(r, send, false);
  }
}

void snapshot_receive_ack(shard *s, uint64_t from, const codec_snapshot_ack *ack) {
  replica *r = replica_table_find(&s->replicas, ack->group);
  snapshot_send *send = r != NULL ? find_send(r, from) : NULL;
  if (send == NULL || send->stream_id != ack->stream_id) {
    return; /* a stream already dropped */
  }
  bool complete = ack->status == CODEC_SNAPSHOT_OK && send->done && ack->next_offset == send->total;
  if (complete || ack->status != CODEC_SNAPSHOT_OK) {
    drop_send(r, send, complete);
  }
}

/* ---- receiving -------------------------------------------------------- */

static void acknowledge(shard *s, uint64_t to, const codec_snapshot_chunk *chunk, uint32_t status,
                        uint64_t next_offset) {
  codec_snapshot_ack ack = {.group = chunk->group,
                            .stream_id = chunk->stream_id,
                            .next_offset = status == CODEC_SNAPSHOT_OK ? next_offset : 0,
                            .status = status};
  uint8_t bytes[CODEC_SNAPSHOT_ACK_BYTES];
  size_t length = 0;
  if (codec_snapshot_ack_encode(&ack, bytes, sizeof(bytes), &length) == 0) {
    network_send_frame(s, to, FRAME_SNAPSHOT_ACK, bytes, (uint32_t)length);
  }
}

/* An unfinished stream's file goes with it: a peer restarting streams at
 * other indexes must not leave them behind on the disk. */
static void drop_receive(replica *r) {
  if (r->receiving != NULL) {
    if (r->receiving->fd >= 0) {
      char path[4200];
      snapshot_path(r->owner, r->group, r->receiving->index, ".recv", path, sizeof(path));
      unlink(path);
    }
    close(r->receiving->fd);
    free(r->receiving);
    r->receiving = NULL;
  }
}

static int start_receive(replica *r, uint64_t from, const codec_snapshot_chunk *chunk) {
  drop_receive(r);
  char path[4200];
  snapshot_path(r->owner, r->group, chunk->snapshot_index, ".recv", path, sizeof(path));
  snapshot_receive *receive = calloc(1, sizeof(*receive));
  /* read back at the end: the header rebuilds the core's message */
  int fd = open(path, O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0644);
  if (receive == NULL || fd < 0) {
    free(receive);
    if (fd >= 0) {
      close(fd);
    }
    return -EIO;
  }
  *receive = (snapshot_receive){.from = from,
                                .stream_id = chunk->stream_id,
                                .fd = fd,
                                .total = chunk->total_bytes,
                                .index = chunk->snapshot_index};
  r->receiving = receive;
  return 0;
}

void snapshot_drop_verified(shard *s) {
  machine_destroy(s, s->verified_state);
  s->verified_state = NULL;
}

/* Keeps a received snapshot's restored state for its install: the core
 * takes the snapshot, and the drain installs it, in this very iteration,
 * and restoring a large state twice would double the follower's catch-up
 * work. One per shard, dropped at the end of the iteration
 * (snapshot_drop_verified), so a snapshot the core refused holds nothing
 * longer. */
static void keep_verified(shard *s, uint64_t group, uint64_t index, void *state) {
  snapshot_drop_verified(s);
  s->verified_state = state;
  s->verified_group = group;
  s->verified_index = index;
}

void *snapshot_take_verified(shard *s, uint64_t group, uint64_t index) {
  if (s->verified_state == NULL || s->verified_group != group || s->verified_index != index) {
    return NULL;
  }
  void *state = s->verified_state;
  s->verified_state = NULL;
  return state;
}

/* The whole file is here: verified by restoring it, durable under its
 * final name, then the core gets the SNAPSHOT message its header
 * describes. */
static int complete_receive(replica *r, snapshot_receive *receive) {
  shard *s = r->owner;
  char temporary[4200];
  char final[4200];
  snapshot_path(s, r->group, receive->index, ".recv", temporary, sizeof(temporary));
  snapshot_path(s, r->group, receive->index, ".snap", final, sizeof(final));
  snapshot_file_header header;
  uint8_t conf_bytes[SNAPSHOT_MAX_CONF_BYTES];
  int fd = receive->fd;
  /* the header must describe the snapshot the chunks announced, and the
   * stream must verify: a damaged snapshot is refused here, never handed
   * to the core (installing it could only fail the shard) */
  void *restored = NULL;
  bool ok =
      snapshot_read_header(fd, receive->index, &header) == 0 &&
      pread(fd, conf_bytes, header.conf_length, sizeof(header)) == (ssize_t)header.conf_length &&
      snapshot_restore_file(s, r->group, fd, receive->index, &restored) == 0;
  fl_raft_message m = {.type = FL_RAFT_MSG_SNAPSHOT,
                       .from = receive->from,
                       .to = s->engine->options.node_id,
                       .term = header.leader_term,
                       .snapshot = {.index = header.index, .term = header.term}};
  ok = ok && fl_raft_conf_decode(conf_bytes, header.conf_length, &m.snapshot.conf) == 0;
  ok = ok && fsync(fd) == 0 && rename(temporary, final) == 0;
  close(fd);
  receive->fd = -1;
  if (!ok) {
    shard_log(s, 2, "group %llu: refused snapshot %llu from node %llu: it does not verify",
              (unsigned long long)r->group, (unsigned long long)receive->index,
              (unsigned long long)receive->from);
    machine_destroy(s, restored);
    unlink(temporary);
    return -EIO;
  }
  s->stats.snapshots_received++;
  keep_verified(s, r->group, receive->index, restored);
  replica_step(r, &m);
  return 0;
}

void snapshot_receive_chunk(shard *s, uint64_t from, const codec_snapshot_chunk *chunk) {
  replica *r = replica_table_find(&s->replicas, chunk->group);
  if (r == NULL) {
    acknowledge(s, from, chunk, CODEC_SNAPSHOT_ABORT, 0);
    return;
  }
  snapshot_receive *receive = r->receiving;
  if (chunk->offset == 0 && start_receive(r, from, chunk) != 0) {
    acknowledge(s, from, chunk, CODEC_SNAPSHOT_ABORT, 0);
    return;
  }
  receive = r->receiving;
  /* the total is the first chunk's: a sender raising it chunk by chunk
   * would never have to end the stream */
  bool in_order = receive != NULL && receive->stream_id == chunk->stream_id &&
                  receive->from == from && chunk->offset == receive->offset &&
                  chunk->total_bytes == receive->total;
  if (!in_order) {
    acknowledge(s, from, chunk, CODEC_SNAPSHOT_RESTART, 0);
    return;
  }
  if (pwrite(receive->fd, chunk->data, chunk->length, (off_t)receive->offset) !=
      (ssize_t)chunk->length) {
    drop_receive(r);
    acknowledge(s, from, chunk, CODEC_SNAPSHOT_ABORT, 0);
    return;
  }
  receive->offset += chunk->length;
  if (!chunk->last) {
    return;
  }
  int rc = complete_receive(r, receive);
  uint64_t total = receive->total;
  drop_receive(r);
  acknowledge(s, from, chunk, rc == 0 ? CODEC_SNAPSHOT_OK : CODEC_SNAPSHOT_ABORT, total);
}

/* ---- installing ---------------------------------------------------------- */

int snapshot_install(replica *r, const fl_raft_snapshot_meta *meta) {
  int rc = snapshot_load(r, meta->index);
  if (rc == 0) {
    rc = snapshot_record_marker(r, meta->index, meta->term, &meta->conf);
  }
  if (rc == 0) {
    r->owner->stats.snapshots_installed++;
    uint64_t previous = r->snapshot_index;
    r->snapshot_index = meta->index;
    r->snapshot_term = meta->term;
    r->applied = meta->index;
    r->applied_term = meta->term;
    if (previous != 0 && previous != meta->index) {
      char path[4200];
      snapshot_path(r->owner, r->group, previous, ".snap", path, sizeof(path));
      unlink(path);
    }
  }
  return rc;
}

void snapshot_transfer_abandon(replica *r) {
  while (r->sending != NULL) {
    snapshot_send *next = r->sending->next;
    close(r->sending->fd);
    free(r->sending);
    r->sending = next;
  }
  drop_receive(r);
  if (r->owner->verified_state != NULL && r->owner->verified_group == r->group) {
    snapshot_drop_verified(r->owner);
  }
}

bool snapshot_busy(const replica *r) {
  if (r->saving != NULL) {
    return true;
  }
  for (const snapshot_send *send = r->sending; send != NULL; send = send->next) {
    if (!send->done) {
      return true;
    }
  }
  return false;
}
