/*
 * random.h - the seeded pseudo-random generator of the tests (xoshiro256**).
 *
 * Tests never call rand() or read a clock: every choice comes from one of
 * these, seeded from the 64-bit seed a failure prints, so a run replays
 * exactly. The generator is small and inline because the simulator draws
 * several numbers per simulated message.
 */
#ifndef FLOTILLA_TESTS_RANDOM_H
#define FLOTILLA_TESTS_RANDOM_H

#include <stdbool.h>
#include <stdint.h>

typedef struct trandom {
  uint64_t state[4];
} trandom;

/* One step of splitmix64: spreads a seed over the whole state. */
static inline uint64_t trandom_splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static inline void trandom_seed(trandom *random, uint64_t seed) {
  for (int i = 0; i < 4; i++) {
    random->state[i] = trandom_splitmix(&seed);
  }
}

static inline uint64_t trandom_rotate(uint64_t x, int bits) {
  return (x << bits) | (x >> (64 - bits));
}

static inline uint64_t trandom_next(trandom *random) {
  uint64_t *s = random->state;
  uint64_t result = trandom_rotate(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = trandom_rotate(s[3], 45);
  return result;
}

/* Uniform in [0, bound); bound 0 gives 0. The modulo bias is irrelevant for
 * tests and keeps the draw count per call fixed, which keeps replays simple. */
static inline uint64_t trandom_below(trandom *random, uint64_t bound) {
  return bound == 0 ? 0 : trandom_next(random) % bound;
}

/* Uniform in [low, high]. */
static inline uint64_t trandom_range(trandom *random, uint64_t low, uint64_t high) {
  return low + trandom_below(random, high - low + 1);
}

/* True with probability parts_per_million / 1e6: integers keep the
 * arithmetic exact on every platform. */
static inline bool trandom_chance(trandom *random, uint32_t parts_per_million) {
  return trandom_below(random, 1000000) < parts_per_million;
}

#endif
