/*
 * codec_internal.h - the fixed-width wire structs of the codec (codec.h) and
 * the helpers its three source files share.
 *
 * The structs are the wire layout itself: little-endian, naturally aligned
 * fields, no implicit padding, every offset asserted below, so they can be
 * memcpy'd to and from a payload at any address. frame.c already refuses to
 * build on a big-endian host, so no byte swapping is needed. Any change here
 * is a wire format change: see the versioning policy in docs/wire-format.md.
 */
#ifndef FLOTILLA_TRANSPORT_CODEC_INTERNAL_H
#define FLOTILLA_TRANSPORT_CODEC_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "transport/codec.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire format is little-endian and the codec copies structs as they sit in memory"
#endif

/* Start of a FRAME_RAFT payload. */
typedef struct codec_raft_batch_wire {
  uint32_t message_count;
  uint32_t reserved; /* 0 */
} codec_raft_batch_wire;
FL_STATIC_ASSERT(sizeof(codec_raft_batch_wire) == CODEC_RAFT_BATCH_HEADER_BYTES, "batch header");
FL_STATIC_ASSERT(offsetof(codec_raft_batch_wire, reserved) == 4, "batch header layout");

/* Bits of codec_raft_message_wire.flags. */
#define CODEC_RAFT_FLAG_REJECT 0x01u

/* One message; followed by the snapshot meta (SNAPSHOT) or the entries. */
typedef struct codec_raft_message_wire {
  uint64_t group;
  uint8_t type;
  uint8_t flags;     /* CODEC_RAFT_FLAG_REJECT, other bits 0 */
  uint16_t reserved; /* 0 */
  uint32_t entry_count;
  uint64_t term;
  uint64_t log_term;
  uint64_t index;
  uint64_t commit;
  uint64_t reject_hint;
  uint64_t context;
} codec_raft_message_wire;
FL_STATIC_ASSERT(sizeof(codec_raft_message_wire) == CODEC_RAFT_MESSAGE_HEADER_BYTES,
                 "message header size");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, type) == 8, "message header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, flags) == 9, "message header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, reserved) == 10, "message header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, entry_count) == 12, "message header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, term) == 16, "message header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, log_term) == 24, "message header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, index) == 32, "message header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, commit) == 40, "message header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, reject_hint) == 48, "message header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_message_wire, context) == 56, "message header layout");
FL_STATIC_ASSERT(FL_RAFT_MSG_TYPE_COUNT <= 256, "message types fit the type byte");

/* After a SNAPSHOT message's header; the configuration follows, padded to 8. */
typedef struct codec_raft_snapshot_meta_wire {
  uint64_t index;
  uint64_t term;
  uint32_t conf_length;
  uint32_t reserved; /* 0 */
} codec_raft_snapshot_meta_wire;
FL_STATIC_ASSERT(sizeof(codec_raft_snapshot_meta_wire) == CODEC_RAFT_SNAPSHOT_META_BYTES,
                 "snapshot meta size");
FL_STATIC_ASSERT(offsetof(codec_raft_snapshot_meta_wire, term) == 8, "snapshot meta layout");
FL_STATIC_ASSERT(offsetof(codec_raft_snapshot_meta_wire, conf_length) == 16,
                 "snapshot meta layout");
FL_STATIC_ASSERT(offsetof(codec_raft_snapshot_meta_wire, reserved) == 20, "snapshot meta layout");

/* Before each entry's data (padded to 8). The index is implicit. */
typedef struct codec_raft_entry_wire {
  uint64_t term;
  uint32_t type;
  uint32_t length;
} codec_raft_entry_wire;
FL_STATIC_ASSERT(sizeof(codec_raft_entry_wire) == CODEC_RAFT_ENTRY_HEADER_BYTES,
                 "entry header size");
FL_STATIC_ASSERT(offsetof(codec_raft_entry_wire, type) == 8, "entry header layout");
FL_STATIC_ASSERT(offsetof(codec_raft_entry_wire, length) == 12, "entry header layout");

/* Start of a FRAME_HEARTBEATS payload; the varint items follow. */
typedef struct codec_heartbeats_wire {
  uint32_t heartbeat_count;
  uint32_t response_count;
} codec_heartbeats_wire;
FL_STATIC_ASSERT(sizeof(codec_heartbeats_wire) == CODEC_HEARTBEATS_HEADER_BYTES,
                 "heartbeats header size");
FL_STATIC_ASSERT(offsetof(codec_heartbeats_wire, response_count) == 4, "heartbeats layout");

/* Bits of codec_snapshot_chunk_wire.flags. */
#define CODEC_SNAPSHOT_FLAG_LAST 0x01u

/* A FRAME_SNAPSHOT_CHUNK payload: this header, then exactly `length` bytes. */
typedef struct codec_snapshot_chunk_wire {
  uint64_t group;
  uint64_t stream_id;
  uint64_t snapshot_index;
  uint64_t snapshot_term;
  uint64_t offset;
  uint64_t total_bytes;
  uint32_t length;
  uint8_t flags; /* CODEC_SNAPSHOT_FLAG_LAST, other bits 0 */
  uint8_t reserved[3];
} codec_snapshot_chunk_wire;
FL_STATIC_ASSERT(sizeof(codec_snapshot_chunk_wire) == CODEC_SNAPSHOT_CHUNK_HEADER_BYTES,
                 "snapshot chunk header size");
FL_STATIC_ASSERT(offsetof(codec_snapshot_chunk_wire, stream_id) == 8, "chunk layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_chunk_wire, snapshot_index) == 16, "chunk layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_chunk_wire, snapshot_term) == 24, "chunk layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_chunk_wire, offset) == 32, "chunk layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_chunk_wire, total_bytes) == 40, "chunk layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_chunk_wire, length) == 48, "chunk layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_chunk_wire, flags) == 52, "chunk layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_chunk_wire, reserved) == 53, "chunk layout");

/* A whole FRAME_SNAPSHOT_ACK payload. */
typedef struct codec_snapshot_ack_wire {
  uint64_t group;
  uint64_t stream_id;
  uint64_t next_offset;
  uint32_t window_bytes;
  uint8_t status;
  uint8_t reserved[3];
} codec_snapshot_ack_wire;
FL_STATIC_ASSERT(sizeof(codec_snapshot_ack_wire) == CODEC_SNAPSHOT_ACK_BYTES, "ack size");
FL_STATIC_ASSERT(offsetof(codec_snapshot_ack_wire, stream_id) == 8, "ack layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_ack_wire, next_offset) == 16, "ack layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_ack_wire, window_bytes) == 24, "ack layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_ack_wire, status) == 28, "ack layout");
FL_STATIC_ASSERT(offsetof(codec_snapshot_ack_wire, reserved) == 29, "ack layout");

/* Data is padded with zero bytes to the next multiple of 8. */
static inline uint64_t codec_padded_8(uint64_t length) {
  return (length + 7) & ~(uint64_t)7;
}

/* True when every byte of `bytes` is zero (reserved fields). */
static inline bool codec_all_zero(const uint8_t *bytes, size_t count) {
  uint8_t any = 0;
  for (size_t i = 0; i < count; i++) {
    any |= bytes[i];
  }
  return any == 0;
}

#endif
