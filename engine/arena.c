/*
 * arena.c - bump allocation for bytes the Raft core references until an
 * advance: proposal payloads, entries read back from the WAL. The shard
 * resets it once per loop iteration, when every replica touched in the
 * iteration has been advanced, so nothing handed out is still referenced.
 * Chunks grow geometrically; a reset keeps one chunk (the largest) so a
 * steady load allocates nothing.
 */
#include "engine/engine_internal.h"

#include <assert.h>
#include <stdlib.h>

#define ARENA_MIN_CHUNK_BYTES (1u << 20)
#define ARENA_ALIGN 16u

struct arena_chunk {
  arena_chunk *next;
  size_t capacity;
  _Alignas(16) uint8_t bytes[];
};

static size_t align_up(size_t bytes) {
  return (bytes + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
}

void *arena_allocate(arena *a, size_t bytes) {
  bytes = align_up(bytes == 0 ? 1 : bytes);
  arena_chunk *chunk = a->chunks;
  if (chunk == NULL || a->used + bytes > chunk->capacity) {
    size_t capacity = chunk != NULL ? chunk->capacity * 2 : ARENA_MIN_CHUNK_BYTES;
    while (capacity < bytes) {
      capacity *= 2;
    }
    arena_chunk *fresh = malloc(sizeof(arena_chunk) + capacity);
    if (fresh == NULL) {
      return NULL;
    }
    fresh->next = chunk;
    fresh->capacity = capacity;
    a->chunks = fresh;
    a->used = 0;
    chunk = fresh;
  }
  void *out = chunk->bytes + a->used;
  a->used += bytes;
  return out;
}

void arena_shrink_last(arena *a, void *last, size_t keep) {
  arena_chunk *chunk = a->chunks;
  assert(chunk != NULL && (uint8_t *)last >= chunk->bytes &&
         (uint8_t *)last + keep <= chunk->bytes + a->used);
  a->used = (size_t)((uint8_t *)last - chunk->bytes) + align_up(keep);
}

void arena_reset(arena *a) {
  if (a->chunks == NULL) {
    return;
  }
  arena_chunk *keep = a->chunks; /* the newest is the largest */
  arena_chunk *older = keep->next;
  while (older != NULL) {
    arena_chunk *next = older->next;
    free(older);
    older = next;
  }
  keep->next = NULL;
  a->used = 0;
}

void arena_release(arena *a) {
  arena_reset(a);
  free(a->chunks);
  a->chunks = NULL;
}
