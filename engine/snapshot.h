/*
 * snapshot.h - snapshots of replicas (snapshot.c: taking, loading and the
 * file format; snapshot_transfer.c: streaming to and from followers).
 * Everything runs on the replica's shard thread.
 */
#ifndef FLOTILLA_ENGINE_SNAPSHOT_H
#define FLOTILLA_ENGINE_SNAPSHOT_H

#include "engine/engine_internal.h"
#include "transport/codec.h"

#define SNAPSHOT_MAGIC 0x4e534c46u /* "FLSN" */
#define SNAPSHOT_VERSION 1u
/* An encoded configuration: an 8-byte head and every member id. */
#define SNAPSHOT_MAX_CONF_BYTES CODEC_MAX_CONF_BYTES

/* What follows the configuration in a snapshot file: a node refuses a
 * file of the other kind, so a KV stream never reaches a user machine's
 * restore() nor the reverse. */
typedef enum snapshot_payload {
  SNAPSHOT_PAYLOAD_KV = 0,   /* the KV store's own checksummed stream (engine/kv.h) */
  SNAPSHOT_PAYLOAD_USER = 1, /* the bytes save() wrote, then a snapshot_user_trailer */
} snapshot_payload;

/* The head of a snapshot file (little-endian), then conf_length bytes of
 * encoded configuration, then the state machine's stream. */
typedef struct snapshot_file_header {
  uint32_t magic;
  uint32_t version;
  uint64_t index;
  uint64_t term;
  uint64_t leader_term; /* in a stream: the sender's term; 0 in a local file */
  uint32_t conf_length;
  uint32_t payload; /* snapshot_payload (0, KV, in files written before it existed) */
} snapshot_file_header;
FL_STATIC_ASSERT(sizeof(snapshot_file_header) == 40, "snapshot file header layout");

/* The end of a user machine's stream: its length and the XXH3-64 of its
 * bytes, checked before restore() sees any of them. */
typedef struct snapshot_user_trailer {
  uint64_t stream_bytes;
  uint64_t checksum;
} snapshot_user_trailer;
FL_STATIC_ASSERT(sizeof(snapshot_user_trailer) == 16, "user stream trailer layout");

/* <data>/shard-<n>/snapshots/<group>-<index><suffix> */
void snapshot_path(const shard *s, uint64_t group, uint64_t index, const char *suffix, char *out,
                   size_t size);
int snapshot_prepare_directory(shard *s);
/* A removed group's snapshot files (the newest, and any transfer or save
 * left unfinished) go. */
void snapshot_remove_files(shard *s, uint64_t group, uint64_t index);

/* Whether the engine's state machine can be snapshotted: the KV store
 * always, a user machine when it has both save() and restore(). */
bool snapshot_supported(const fl_engine *engine);
/* True when the replica applied enough since its last snapshot. */
bool snapshot_due(const replica *r);
/* Pins the state machine's current version and starts its file. A user
 * machine has no copy-on-write: its whole save() runs here, at the applied
 * index, stalling the shard for its duration; the loop then publishes it. */
int snapshot_start(replica *r);
/* Writes up to budget bytes of it; 1 once durable, marked and compacted. */
int snapshot_continue(replica *r, uint32_t budget);
/* Drops every snapshot activity of the replica (closing or removal). */
void snapshot_abandon(replica *r);
void snapshot_transfer_abandon(replica *r);
void snapshot_abandon_saving(replica *r);
/* Queues the WAL marker of a snapshot at (index, term) with its conf. */
int snapshot_record_marker(replica *r, uint64_t index, uint64_t term, const fl_raft_conf *conf);
/* Restores the state machine from the snapshot file at index. */
int snapshot_load(replica *r, uint64_t index);
/* Reads and checks a snapshot file's header (magic, version, index). */
int snapshot_read_header(int fd, uint64_t index, snapshot_file_header *header);
/* Checks that a received file is a whole, verifying snapshot at index of
 * the engine's kind, by restoring it into a fresh state machine (for a
 * user machine: after its checksum verified): a damaged one, or one the
 * machine refuses, is refused before the core ever sees it. 0 with the
 * state in *restored (the caller owns it), -EUCLEAN or -ENOMEM. */
int snapshot_restore_file(shard *s, uint64_t group, int fd, uint64_t index, void **restored);
/* The state snapshot_restore_file gave for (group, index), if the transfer
 * kept it for the install; the caller owns it. NULL otherwise. */
void *snapshot_take_verified(shard *s, uint64_t group, uint64_t index);
/* Drops the kept state, if any (the end of every loop iteration). */
void snapshot_drop_verified(shard *s);
/* The core handed a received snapshot to install: state machine and
 * marker, from the file the transfer left. */
int snapshot_install(replica *r, const fl_raft_snapshot_meta *meta);

/* The core asked to send a snapshot to m->to: start streaming it. */
void snapshot_send_start(replica *r, const fl_raft_message *m);
/* Streams what the peers' bulk queues take, up to budget bytes. */
void snapshot_send_continue(replica *r, uint32_t budget);
/* A peer is down: its streams fail (the core hears so). */
void snapshot_peer_down(replica *r, uint64_t node);

/* Frames from the network. */
void snapshot_receive_chunk(shard *s, uint64_t from, const codec_snapshot_chunk *chunk);
void snapshot_receive_ack(shard *s, uint64_t from, const codec_snapshot_ack *ack);

/* True while the replica has snapshot work for the loop. */
bool snapshot_busy(const replica *r);

#endif
