/*
 * crash_common.h - what wal-crash-writer writes and wal-crash-verify
 * expects: the WAL's options and each entry's bytes, a pure function of
 * (group, index) so that any process can tell a right entry from a wrong
 * one, whichever run of the writer put it there.
 */
#ifndef FLOTILLA_TESTS_WAL_CRASH_COMMON_H
#define FLOTILLA_TESTS_WAL_CRASH_COMMON_H

#include <stdint.h>
#include <string.h>

#include "wal/wal.h"

#define CRASH_GROUPS 8
#define CRASH_TERM 1
#define CRASH_MAX_PAYLOAD 64

/* Small segments so that a few runs roll over several of them. */
static inline wal_options crash_options(const char *directory) {
  wal_options options;
  wal_options_default(&options);
  options.directory = directory;
  options.shard_id = 11;
  options.segment_bytes = 1u << 20;
  options.batch_bytes = 64u << 10;
  options.pipeline_depth = 2;
  return options;
}

/* The index and group in the first 16 bytes, then a pattern: a misplaced
 * entry and a damaged one both show. */
static inline uint32_t crash_payload(uint64_t group, uint64_t index, uint8_t *out) {
  uint32_t length = 16 + (uint32_t)((group * 7 + index * 13) % (CRASH_MAX_PAYLOAD - 16 + 1));
  memcpy(out, &index, sizeof(index));
  memcpy(out + 8, &group, sizeof(group));
  for (uint32_t i = 16; i < length; i++) {
    out[i] = (uint8_t)(group * 31 + index * 17 + i * 7);
  }
  return length;
}

#endif
