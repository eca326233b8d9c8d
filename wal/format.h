/*
 * format.h - the on-disk layout of WAL segments (documented in
 * docs/wal-format.md). Little-endian, fixed width, every struct asserted.
 *
 * A segment is a preallocated file named wal-<sequence as 16 hex digits>.log:
 *
 *   offset 0:     segment header (64 bytes), zero-padded to 4096
 *   offset 4096:  records, each 8-byte aligned, until a zero header
 *
 * Every checksum is XXH3-64 seeded with the segment's sequence number, so a
 * record left over from a recycled segment's earlier life never verifies.
 */
#ifndef FLOTILLA_WAL_FORMAT_H
#define FLOTILLA_WAL_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"

#define WAL_SEGMENT_MAGIC 0x314c4157544f4c46ULL /* "FLOTWAL1" */
#define WAL_FORMAT_VERSION 1u
#define WAL_SEGMENT_HEADER_AREA 4096u /* records start here (O_DIRECT aligned) */
#define WAL_RECORD_ALIGN 8u
#define WAL_DIRECT_ALIGN 4096u /* batch offsets and sizes with O_DIRECT */

typedef struct wal_segment_header {
  uint64_t magic;
  uint32_t version;
  uint32_t shard_id;
  uint64_t sequence;
  uint64_t segment_size;
  /* Bytes past the first bad record that writes in flight could have
   * reached (pipeline depth x batch bytes): see recovery in wal-format.md. */
  uint64_t torn_window;
  /* Where the previous segment's records ended when this one was started:
   * recovery checks it, so a lost tail of an older segment is detected. */
  uint64_t previous_end;
  uint8_t reserved[8];
  uint64_t checksum; /* XXH3 of the 56 bytes above, seeded with sequence */
} wal_segment_header;
FL_STATIC_ASSERT(sizeof(wal_segment_header) == 64, "segment header layout");

typedef enum wal_record_type {
  WAL_RECORD_ENTRIES = 1,    /* entries of one group; replaces its log from first_index */
  WAL_RECORD_HARD_STATE = 2, /* term, vote, commit of one group */
  WAL_RECORD_SNAPSHOT = 3,   /* a group's snapshot marker: index, term, opaque bytes */
  WAL_RECORD_COMPACT = 4,    /* a group's entries up to index are dead */
  WAL_RECORD_REMOVE = 5,     /* a group is gone */
  WAL_RECORD_PADDING = 6,    /* fills a batch to the O_DIRECT block size; group 0 */
  WAL_RECORD_REWRITE = 7,    /* a group's whole live log, copied forward by GC */
  WAL_RECORD_TYPE_COUNT = 8,
} wal_record_type;

/*
 * Record header. payload_length excludes the header and the padding that
 * aligns the next record. header_checksum covers the first 24 bytes.
 */
typedef struct wal_record_header {
  uint32_t payload_length;
  uint8_t type;
  uint8_t reserved[3];
  uint64_t group_id;
  uint64_t payload_checksum;
  uint64_t header_checksum;
} wal_record_header;
FL_STATIC_ASSERT(sizeof(wal_record_header) == 32, "record header layout");

/* ENTRIES and REWRITE payload: this header, then per entry a
 * wal_entry_header and its data padded to 8 bytes. */
typedef struct wal_entries_header {
  uint64_t first_index;
  uint32_t count;
  uint32_t reserved;
} wal_entries_header;
FL_STATIC_ASSERT(sizeof(wal_entries_header) == 16, "entries header layout");

typedef struct wal_entry_header {
  uint64_t term;
  uint32_t length;
  uint32_t type;
} wal_entry_header;
FL_STATIC_ASSERT(sizeof(wal_entry_header) == 16, "entry header layout");

typedef struct wal_hard_state_payload {
  uint64_t term;
  uint64_t vote;
  uint64_t commit;
} wal_hard_state_payload;
FL_STATIC_ASSERT(sizeof(wal_hard_state_payload) == 24, "hard state layout");

/* SNAPSHOT payload: this, then `length` opaque bytes (e.g. the encoded
 * configuration), padded to 8. COMPACT payload: index only (term unused). */
typedef struct wal_snapshot_payload {
  uint64_t index;
  uint64_t term;
  uint32_t length;
  uint32_t reserved;
} wal_snapshot_payload;
FL_STATIC_ASSERT(sizeof(wal_snapshot_payload) == 24, "snapshot marker layout");

static inline uint64_t wal_align(uint64_t n) {
  return (n + WAL_RECORD_ALIGN - 1) & ~(uint64_t)(WAL_RECORD_ALIGN - 1);
}

/* Segment file name for a sequence number; buffer holds at least 32 bytes. */
void wal_segment_name(uint64_t sequence, char *buffer, size_t capacity);
/* Parses a segment file name; false for other files. */
bool wal_segment_parse_name(const char *name, uint64_t *sequence);
/* A dead segment kept for reuse: wal-<its old sequence>.spare. */
void wal_spare_name(uint64_t sequence, char *buffer, size_t capacity);
bool wal_spare_parse_name(const char *name, uint64_t *sequence);

void wal_segment_header_encode(wal_segment_header *header, uint32_t shard_id, uint64_t sequence,
                               uint64_t segment_size, uint64_t torn_window, uint64_t previous_end);
/* 0, or -EINVAL with *reason set (bad magic, version, checksum). */
int wal_segment_header_verify(const wal_segment_header *header, uint64_t sequence,
                              const char **reason);

/* Fills the header's checksums for `payload` (payload_length and type set). */
void wal_record_seal(wal_record_header *header, uint64_t sequence, const void *payload);

typedef enum wal_record_check {
  WAL_RECORD_OK = 0,
  WAL_RECORD_END = 1,         /* an all-zero header: the end of the written part */
  WAL_RECORD_BAD_HEADER = 2,  /* header checksum or fields wrong */
  WAL_RECORD_BAD_PAYLOAD = 3, /* payload checksum wrong */
  WAL_RECORD_SHORT = 4,       /* runs past the end of the segment */
} wal_record_check;

/*
 * Verifies the record at `record` with `available` bytes until the segment
 * end. On WAL_RECORD_OK, *total is the aligned size of header + payload.
 */
wal_record_check wal_record_verify(const uint8_t *record, uint64_t available, uint64_t sequence,
                                   uint64_t *total);

#endif
