/*
 * format.c - names, segment headers and record checksums of WAL segments
 * (layout in format.h and docs/wal-format.md).
 *
 * Structs are checksummed as they sit in memory, which is the on-disk
 * little-endian layout only on a little-endian host: refuse the others at
 * compile time instead of writing segments no other machine can read.
 */
#include "wal/format.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <xxhash.h>
/* Debian's libxxhash is built for baseline x86-64; its dispatching entry
 * points pick the AVX2/AVX-512 code at run time (about 4x faster on large
 * inputs). Same hash values, so nothing on the disk or the wire changes. */
#if defined(__x86_64__)
#include <xxh_x86dispatch.h>
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the WAL format is little-endian and is written from memory as is"
#endif

#define WAL_SEGMENT_PREFIX "wal-"
#define WAL_SEGMENT_SUFFIX ".log"
#define WAL_SPARE_SUFFIX ".spare"
#define WAL_SEGMENT_HEX_DIGITS 16u
/* The header checksum covers everything before itself. */
#define WAL_RECORD_CHECKED_BYTES offsetof(wal_record_header, header_checksum)
#define WAL_SEGMENT_CHECKED_BYTES offsetof(wal_segment_header, checksum)

FL_STATIC_ASSERT(WAL_RECORD_CHECKED_BYTES == 24, "header checksum covers 24 bytes");
FL_STATIC_ASSERT(WAL_SEGMENT_CHECKED_BYTES == 56, "segment checksum covers 56 bytes");
FL_STATIC_ASSERT(sizeof(wal_record_header) % WAL_RECORD_ALIGN == 0,
                 "payloads start aligned after the record header");
FL_STATIC_ASSERT(WAL_SEGMENT_HEADER_AREA % WAL_RECORD_ALIGN == 0, "the first record is aligned");

void wal_segment_name(uint64_t sequence, char *buffer, size_t capacity) {
  snprintf(buffer, capacity, WAL_SEGMENT_PREFIX "%016llx" WAL_SEGMENT_SUFFIX,
           (unsigned long long)sequence);
}

void wal_spare_name(uint64_t sequence, char *buffer, size_t capacity) {
  snprintf(buffer, capacity, WAL_SEGMENT_PREFIX "%016llx" WAL_SPARE_SUFFIX,
           (unsigned long long)sequence);
}

static int hex_digit_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  /* Lower case only: one sequence has exactly one name, so two files can
   * never claim the same sequence. */
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;
}

static bool parse_name(const char *name, const char *suffix, uint64_t *sequence) {
  const size_t prefix = sizeof(WAL_SEGMENT_PREFIX) - 1;
  const size_t suffix_length = strlen(suffix);
  if (strlen(name) != prefix + WAL_SEGMENT_HEX_DIGITS + suffix_length) {
    return false;
  }
  if (memcmp(name, WAL_SEGMENT_PREFIX, prefix) != 0 ||
      memcmp(name + prefix + WAL_SEGMENT_HEX_DIGITS, suffix, suffix_length) != 0) {
    return false;
  }
  uint64_t value = 0;
  for (size_t i = 0; i < WAL_SEGMENT_HEX_DIGITS; i++) {
    int digit = hex_digit_value(name[prefix + i]);
    if (digit < 0) {
      return false;
    }
    value = (value << 4) | (uint64_t)digit;
  }
  *sequence = value;
  return true;
}

bool wal_segment_parse_name(const char *name, uint64_t *sequence) {
  return parse_name(name, WAL_SEGMENT_SUFFIX, sequence);
}

bool wal_spare_parse_name(const char *name, uint64_t *sequence) {
  return parse_name(name, WAL_SPARE_SUFFIX, sequence);
}

void wal_segment_header_encode(wal_segment_header *header, uint32_t shard_id, uint64_t sequence,
                               uint64_t segment_size, uint64_t torn_window, uint64_t previous_end) {
  memset(header, 0, sizeof(*header));
  header->magic = WAL_SEGMENT_MAGIC;
  header->version = WAL_FORMAT_VERSION;
  header->shard_id = shard_id;
  header->sequence = sequence;
  header->segment_size = segment_size;
  header->torn_window = torn_window;
  header->previous_end = previous_end;
  header->checksum = XXH3_64bits_withSeed(header, WAL_SEGMENT_CHECKED_BYTES, sequence);
}

int wal_segment_header_verify(const wal_segment_header *header, uint64_t sequence,
                              const char **reason) {
  if (header->magic != WAL_SEGMENT_MAGIC) {
    *reason = "bad segment magic";
    return -EINVAL;
  }
  if (header->version != WAL_FORMAT_VERSION) {
    *reason = "unsupported segment format version";
    return -EINVAL;
  }
  /* Seeded with the sequence the caller expects (from the file name): a
   * renamed or copied segment fails here as well as a damaged one. */
  if (XXH3_64bits_withSeed(header, WAL_SEGMENT_CHECKED_BYTES, sequence) == header->checksum) {
    return 0;
  }
  /* An intact header of another sequence is a misnamed file, not damage:
   * say so, it points the operator at a different mistake. */
  bool intact_elsewhere =
      XXH3_64bits_withSeed(header, WAL_SEGMENT_CHECKED_BYTES, header->sequence) == header->checksum;
  *reason = header->sequence != sequence && intact_elsewhere
                ? "segment sequence does not match its name"
                : "segment header checksum mismatch";
  return -EINVAL;
}

void wal_record_seal(wal_record_header *header, uint64_t sequence, const void *payload) {
  /* Verification refuses nonzero reserved bytes, so never seal any. */
  memset(header->reserved, 0, sizeof(header->reserved));
  header->payload_checksum = XXH3_64bits_withSeed(payload, header->payload_length, sequence);
  header->header_checksum = XXH3_64bits_withSeed(header, WAL_RECORD_CHECKED_BYTES, sequence);
}

static bool bytes_are_zero(const uint8_t *bytes, size_t length) {
  for (size_t i = 0; i < length; i++) {
    if (bytes[i] != 0) {
      return false;
    }
  }
  return true;
}

static bool record_header_is_valid(const wal_record_header *header, uint64_t sequence) {
  if (XXH3_64bits_withSeed(header, WAL_RECORD_CHECKED_BYTES, sequence) != header->header_checksum) {
    return false;
  }
  if (header->type < WAL_RECORD_ENTRIES || header->type >= WAL_RECORD_TYPE_COUNT) {
    return false;
  }
  return bytes_are_zero(header->reserved, sizeof(header->reserved));
}

wal_record_check wal_record_verify(const uint8_t *record, uint64_t available, uint64_t sequence,
                                   uint64_t *total) {
  const size_t header_bytes = sizeof(wal_record_header);
  if (available < header_bytes) {
    /* Too little room left for any record: zeros there are the untouched
     * end of the segment, anything else is the start of a cut record. */
    return bytes_are_zero(record, (size_t)available) ? WAL_RECORD_END : WAL_RECORD_SHORT;
  }
  if (bytes_are_zero(record, header_bytes)) {
    return WAL_RECORD_END;
  }
  wal_record_header header;
  memcpy(&header, record, header_bytes); /* the record may be unaligned */
  if (!record_header_is_valid(&header, sequence)) {
    return WAL_RECORD_BAD_HEADER;
  }
  uint64_t size = header_bytes + wal_align(header.payload_length);
  if (size > available) {
    return WAL_RECORD_SHORT;
  }
  if (XXH3_64bits_withSeed(record + header_bytes, header.payload_length, sequence) !=
      header.payload_checksum) {
    return WAL_RECORD_BAD_PAYLOAD;
  }
  *total = size;
  return WAL_RECORD_OK;
}
