/*
 * codec_snapshot.c - FRAME_SNAPSHOT_CHUNK and FRAME_SNAPSHOT_ACK payloads
 * (layouts in docs/wire-format.md).
 *
 * A snapshot can be gigabytes, so it never travels as one Raft message: the
 * SNAPSHOT message carries only its metadata and the data follows in chunks
 * on the same connection, interleaved with the log traffic, paced by the
 * receiver's acks. Each chunk says where it lies in the whole (offset, total)
 * so the receiver checks it lands exactly after the previous one, and the
 * decoder refuses any chunk whose numbers do not add up before the receiver
 * ever sees it.
 */
#include "transport/codec_internal.h"

#include <string.h>

#define LIMIT FL_RAFT_MAX_TERM_OR_INDEX

int codec_snapshot_chunk_check(const codec_snapshot_chunk *chunk) {
  if (chunk->snapshot_index > LIMIT || chunk->snapshot_term > LIMIT) {
    return TRANSPORT_E_MALFORMED;
  }
  if (chunk->offset > chunk->total_bytes || chunk->length > chunk->total_bytes - chunk->offset) {
    return TRANSPORT_E_MALFORMED;
  }
  bool reaches_end = chunk->offset + chunk->length == chunk->total_bytes;
  if (reaches_end != chunk->last) {
    return TRANSPORT_E_MALFORMED;
  }
  /* Only the single chunk of an empty snapshot is empty: any other empty
   * chunk would let a stream make no progress forever. */
  if (chunk->length == 0 && chunk->total_bytes != 0) {
    return TRANSPORT_E_MALFORMED;
  }
  return 0;
}

int codec_snapshot_chunk_encode_header(const codec_snapshot_chunk *chunk,
                                       uint8_t header[CODEC_SNAPSHOT_CHUNK_HEADER_BYTES]) {
  int rc = codec_snapshot_chunk_check(chunk);
  if (rc != 0) {
    return rc;
  }
  if (chunk->length > UINT32_MAX - CODEC_SNAPSHOT_CHUNK_HEADER_BYTES) {
    return TRANSPORT_E_MALFORMED; /* the frame's length is 32 bits */
  }
  codec_snapshot_chunk_wire wire = {
      .group = chunk->group,
      .stream_id = chunk->stream_id,
      .snapshot_index = chunk->snapshot_index,
      .snapshot_term = chunk->snapshot_term,
      .offset = chunk->offset,
      .total_bytes = chunk->total_bytes,
      .length = chunk->length,
      .flags = chunk->last ? CODEC_SNAPSHOT_FLAG_LAST : 0,
      .reserved = {0, 0, 0},
  };
  memcpy(header, &wire, sizeof(wire));
  return 0;
}

int codec_snapshot_chunk_encode(const codec_snapshot_chunk *chunk, uint8_t *buffer, size_t capacity,
                                size_t *payload_length) {
  if (chunk->length > 0 && chunk->data == NULL) {
    return TRANSPORT_E_MALFORMED;
  }
  size_t size = CODEC_SNAPSHOT_CHUNK_HEADER_BYTES + (size_t)chunk->length;
  codec_snapshot_chunk_wire header;
  int rc = codec_snapshot_chunk_encode_header(chunk, (uint8_t *)&header);
  if (rc != 0) {
    return rc;
  }
  if (size > capacity) {
    return TRANSPORT_E_FULL;
  }
  memcpy(buffer, &header, sizeof(header));
  if (chunk->length > 0) {
    memcpy(buffer + sizeof(header), chunk->data, chunk->length);
  }
  *payload_length = size;
  return 0;
}

int codec_snapshot_chunk_decode(const uint8_t *payload, size_t length,
                                codec_snapshot_chunk *chunk) {
  if (length < CODEC_SNAPSHOT_CHUNK_HEADER_BYTES) {
    return TRANSPORT_E_TRUNCATED;
  }
  codec_snapshot_chunk_wire wire;
  memcpy(&wire, payload, sizeof(wire));
  size_t data_bytes = length - CODEC_SNAPSHOT_CHUNK_HEADER_BYTES;
  if (data_bytes < wire.length) {
    return TRANSPORT_E_TRUNCATED;
  }
  if (data_bytes > wire.length || (wire.flags & ~CODEC_SNAPSHOT_FLAG_LAST) != 0 ||
      !codec_all_zero(wire.reserved, sizeof(wire.reserved))) {
    return TRANSPORT_E_MALFORMED;
  }
  *chunk = (codec_snapshot_chunk){
      .group = wire.group,
      .stream_id = wire.stream_id,
      .snapshot_index = wire.snapshot_index,
      .snapshot_term = wire.snapshot_term,
      .offset = wire.offset,
      .total_bytes = wire.total_bytes,
      .length = wire.length,
      .last = (wire.flags & CODEC_SNAPSHOT_FLAG_LAST) != 0,
      .data = payload + CODEC_SNAPSHOT_CHUNK_HEADER_BYTES,
  };
  return codec_snapshot_chunk_check(chunk);
}

/* Only OK carries a position: RESTART means 0 and ABORT means none. */
static int check_ack(const codec_snapshot_ack *ack) {
  if (ack->status >= CODEC_SNAPSHOT_STATUS_COUNT ||
      (ack->status != CODEC_SNAPSHOT_OK && ack->next_offset != 0)) {
    return TRANSPORT_E_MALFORMED;
  }
  return 0;
}

int codec_snapshot_ack_encode(const codec_snapshot_ack *ack, uint8_t *buffer, size_t capacity,
                              size_t *payload_length) {
  int rc = check_ack(ack);
  if (rc != 0) {
    return rc;
  }
  if (capacity < CODEC_SNAPSHOT_ACK_BYTES) {
    return TRANSPORT_E_FULL;
  }
  codec_snapshot_ack_wire wire = {
      .group = ack->group,
      .stream_id = ack->stream_id,
      .next_offset = ack->next_offset,
      .window_bytes = ack->window_bytes,
      .status = (uint8_t)ack->status,
      .reserved = {0, 0, 0},
  };
  memcpy(buffer, &wire, sizeof(wire));
  *payload_length = sizeof(wire);
  return 0;
}

int codec_snapshot_ack_decode(const uint8_t *payload, size_t length, codec_snapshot_ack *ack) {
  if (length < CODEC_SNAPSHOT_ACK_BYTES) {
    return TRANSPORT_E_TRUNCATED;
  }
  if (length > CODEC_SNAPSHOT_ACK_BYTES) {
    return TRANSPORT_E_MALFORMED;
  }
  codec_snapshot_ack_wire wire;
  memcpy(&wire, payload, sizeof(wire));
  if (!codec_all_zero(wire.reserved, sizeof(wire.reserved))) {
    return TRANSPORT_E_MALFORMED;
  }
  *ack = (codec_snapshot_ack){
      .group = wire.group,
      .stream_id = wire.stream_id,
      .next_offset = wire.next_offset,
      .window_bytes = wire.window_bytes,
      .status = wire.status,
  };
  return check_ack(ack);
}
