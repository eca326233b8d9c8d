/*
 * frame.h - the frame every byte between two nodes travels in (layout in
 * docs/wire-format.md). Little-endian, fixed width, asserted.
 *
 *   offset 0   frame header (32 bytes)
 *   offset 32  payload (payload_length bytes, meaning given by type)
 *
 * The header checksum covers the header's first 24 bytes, so a bad length
 * is caught before anything is allocated or awaited for it; the payload
 * checksum covers the payload. Both are XXH3-64 with seed 0: a frame is
 * checked once, on receipt, and never stored.
 *
 * Errors of the whole transport are the negative transport_error codes
 * below (or a negative errno from a system call, which never collides:
 * these start at -1000).
 */
#ifndef FLOTILLA_TRANSPORT_FRAME_H
#define FLOTILLA_TRANSPORT_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/limits.h"

#define FRAME_MAGIC 0x50544c46u /* "FLTP" */
#define FRAME_VERSION 1u
#define FRAME_HEADER_BYTES 32u

typedef enum frame_type {
  FRAME_HANDSHAKE = 1,      /* first frame on a connection, from the dialer */
  FRAME_HANDSHAKE_ACK = 2,  /* the acceptor's answer */
  FRAME_RAFT = 3,           /* a batch of Raft messages of many groups */
  FRAME_HEARTBEATS = 4,     /* coalesced heartbeats (and responses) */
  FRAME_SNAPSHOT_CHUNK = 5, /* one chunk of a snapshot stream */
  FRAME_SNAPSHOT_ACK = 6,   /* flow control of a snapshot stream */
  FRAME_TYPE_COUNT = 7,
} frame_type;

typedef struct frame_header {
  uint32_t magic;
  uint8_t version;
  uint8_t type;
  uint16_t flags; /* reserved, 0 */
  uint32_t payload_length;
  uint32_t reserved;
  uint64_t payload_checksum;
  uint64_t header_checksum; /* XXH3 of the 24 bytes above */
} frame_header;
FL_STATIC_ASSERT(sizeof(frame_header) == FRAME_HEADER_BYTES, "frame header layout");

typedef enum transport_error {
  TRANSPORT_OK = 0,
  TRANSPORT_E_MAGIC = -1000,            /* not a Flotilla frame */
  TRANSPORT_E_VERSION = -1001,          /* unknown protocol version */
  TRANSPORT_E_TYPE = -1002,             /* unknown frame or message type */
  TRANSPORT_E_TOO_LARGE = -1003,        /* length above the configured limit */
  TRANSPORT_E_HEADER_CHECKSUM = -1004,  /* header damaged */
  TRANSPORT_E_PAYLOAD_CHECKSUM = -1005, /* payload damaged */
  TRANSPORT_E_TRUNCATED = -1006,        /* content shorter than it claims */
  TRANSPORT_E_MALFORMED = -1007,        /* content invalid (counts, ids, ranges) */
  TRANSPORT_E_HANDSHAKE = -1008,        /* cluster, node, version or shard mismatch */
  TRANSPORT_E_FULL = -1009,             /* a bounded queue is full: retry or drop */
  TRANSPORT_E_CLOSED = -1010,           /* the connection is down */
  TRANSPORT_E_NOMEM = -1011,            /* allocation failed */
  TRANSPORT_E_TIMEOUT = -1012,          /* a peer took too long (handshake, frame) */
} transport_error;

const char *transport_strerror(int error);

/* Writes a sealed header for a payload given as iovecs (checksummed in place,
 * so the payload is never copied to be framed). */
void frame_seal(frame_header *header, frame_type type, const struct iovec *payload, int count);
/* Same, for a payload whose checksum is already known (computed while encoding). */
void frame_seal_checksum(frame_header *header, frame_type type, uint32_t payload_length,
                         uint64_t payload_checksum);

/*
 * Checks a received header: magic, version, header checksum, type, and
 * payload_length <= max_payload_bytes. Returns 0 or a TRANSPORT_E_* code.
 * Safe on any 32 bytes.
 */
int frame_header_check(const frame_header *header, uint32_t max_payload_bytes);
/* 0 or TRANSPORT_E_PAYLOAD_CHECKSUM. */
int frame_payload_check(const frame_header *header, const void *payload);

#endif
