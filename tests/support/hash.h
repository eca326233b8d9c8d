/*
 * hash.h - the hashes the tests use to compare logs and state machines.
 *
 * A log's prefix hash at index i chains the (term, type, payload) of every
 * entry 1..i. Two logs with equal prefix hashes at i hold identical entries up
 * to i, so the simulator checks Log Matching, Leader Completeness and State
 * Machine Safety with one comparison per entry instead of a scan. The state
 * machine folds applied entries with the same chain, so a snapshot carries the
 * prefix hash of the log it replaces.
 */
#ifndef FLOTILLA_TESTS_HASH_H
#define FLOTILLA_TESTS_HASH_H

#include <stddef.h>
#include <stdint.h>

/* The prefix hash of the empty log (index 0). */
#define THASH_EMPTY_LOG 0x6a09e667f3bcc908ull

static inline uint64_t thash_mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

/* FNV-1a, finalized: payloads are tiny, so speed hardly matters. */
static inline uint64_t thash_bytes(const uint8_t *data, size_t length) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < length; i++) {
    h = (h ^ data[i]) * 0x100000001b3ull;
  }
  return thash_mix(h ^ length);
}

/* The prefix hash after appending one entry to a log whose prefix hash is
 * `previous`. */
static inline uint64_t thash_chain(uint64_t previous, uint64_t term, uint32_t type,
                                   uint64_t payload_hash) {
  uint64_t h = thash_mix(previous ^ 0x9e3779b97f4a7c15ull);
  h = thash_mix(h ^ term);
  h = thash_mix(h ^ ((uint64_t)type << 32));
  return thash_mix(h ^ payload_hash);
}

#endif
