/*
 * frame.c - sealing and checking frame headers (layout in frame.h).
 *
 * Headers are checksummed as they sit in memory, which is the wire's
 * little-endian layout only on a little-endian host.
 */
#include "transport/frame.h"

#include <string.h>

/* XXH3_state_t lives in the static-linking part of the header. */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
/* Debian's libxxhash is built for baseline x86-64; its dispatching entry
 * points pick the AVX2/AVX-512 code at run time (about 4x faster on large
 * inputs). Same hash values, so nothing on the disk or the wire changes. */
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the wire format is little-endian and is sent from memory as is"
#endif

#define FRAME_CHECKED_BYTES offsetof(frame_header, header_checksum)
FL_STATIC_ASSERT(FRAME_CHECKED_BYTES == 24, "the header checksum covers 24 bytes");
FL_STATIC_ASSERT(FRAME_HEADER_BYTES % 8 == 0, "payloads start 8-byte aligned");

const char *transport_strerror(int error) {
  switch (error) {
  case TRANSPORT_OK:
    return "ok";
  case TRANSPORT_E_MAGIC:
    return "bad frame magic";
  case TRANSPORT_E_VERSION:
    return "unsupported protocol version";
  case TRANSPORT_E_TYPE:
    return "unknown frame or message type";
  case TRANSPORT_E_TOO_LARGE:
    return "frame larger than the limit";
  case TRANSPORT_E_HEADER_CHECKSUM:
    return "frame header checksum mismatch";
  case TRANSPORT_E_PAYLOAD_CHECKSUM:
    return "frame payload checksum mismatch";
  case TRANSPORT_E_TRUNCATED:
    return "truncated content";
  case TRANSPORT_E_MALFORMED:
    return "malformed content";
  case TRANSPORT_E_HANDSHAKE:
    return "handshake mismatch";
  case TRANSPORT_E_FULL:
    return "queue full";
  case TRANSPORT_E_CLOSED:
    return "connection closed";
  case TRANSPORT_E_NOMEM:
    return "out of memory";
  case TRANSPORT_E_TIMEOUT:
    return "peer timed out";
  default:
    return error < 0 && error > -1000 ? strerror(-error) : "unknown transport error";
  }
}

void frame_seal_checksum(frame_header *header, frame_type type, uint32_t payload_length,
                         uint64_t payload_checksum) {
  memset(header, 0, sizeof(*header));
  header->magic = FRAME_MAGIC;
  header->version = FRAME_VERSION;
  header->type = (uint8_t)type;
  header->payload_length = payload_length;
  header->payload_checksum = payload_checksum;
  header->header_checksum = XXH3_64bits(header, FRAME_CHECKED_BYTES);
}

void frame_seal(frame_header *header, frame_type type, const struct iovec *payload, int count) {
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  uint64_t length = 0;
  for (int i = 0; i < count; i++) {
    XXH3_64bits_update(&state, payload[i].iov_base, payload[i].iov_len);
    length += payload[i].iov_len;
  }
  frame_seal_checksum(header, type, (uint32_t)length, XXH3_64bits_digest(&state));
}

int frame_header_check(const frame_header *header, uint32_t max_payload_bytes) {
  if (header->magic != FRAME_MAGIC) {
    return TRANSPORT_E_MAGIC;
  }
  if (XXH3_64bits(header, FRAME_CHECKED_BYTES) != header->header_checksum) {
    return TRANSPORT_E_HEADER_CHECKSUM;
  }
  if (header->version != FRAME_VERSION) {
    return TRANSPORT_E_VERSION;
  }
  if (header->type == 0 || header->type >= FRAME_TYPE_COUNT || header->flags != 0 ||
      header->reserved != 0) {
    return TRANSPORT_E_TYPE;
  }
  if (header->payload_length > max_payload_bytes) {
    return TRANSPORT_E_TOO_LARGE;
  }
  return TRANSPORT_OK;
}

int frame_payload_check(const frame_header *header, const void *payload) {
  if (XXH3_64bits(payload, header->payload_length) != header->payload_checksum) {
    return TRANSPORT_E_PAYLOAD_CHECKSUM;
  }
  return TRANSPORT_OK;
}
