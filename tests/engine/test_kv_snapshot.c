/*
 * test_kv_snapshot.c - snapshots and restores of the KV store.
 *
 * A snapshot read while the store keeps changing must give exactly the
 * bytes of the version it began on; a stream restored and snapshotted
 * again must come back byte for byte; and a damaged stream - cut at any
 * length, any bit of any byte flipped, or well-checksummed but wrong
 * inside - must be refused with the live store left exactly as it was.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "engine/kv.h"
#include "tests/support/random.h"

static kv_store *new_store(void) {
  kv_store *kv = NULL;
  assert_int_equal(kv_create(&kv), 0);
  return kv;
}

static void assert_invariants(const kv_store *kv) {
  const char *broken = NULL;
  bool good = kv_check_invariants(kv, &broken);
  if (!good) {
    print_error("invariant broken: %s\n", broken);
  }
  assert_true(good);
}

/* Reads a whole snapshot in chunks of chunk bytes (0: random sizes). */
static uint8_t *read_all(kv_snapshot *snapshot, size_t chunk, size_t *length) {
  size_t total = (size_t)kv_snapshot_stream_bytes(snapshot);
  uint8_t *bytes = malloc(total + 1);
  assert_non_null(bytes);
  trandom random;
  trandom_seed(&random, total);
  size_t at = 0;
  bool done = false;
  while (!done) {
    size_t capacity = chunk != 0 ? chunk : 1 + (size_t)trandom_below(&random, 5000);
    uint8_t *scratch = malloc(capacity);
    size_t got = 0;
    assert_int_equal(kv_snapshot_read(snapshot, scratch, capacity, &got, &done), 0);
    assert_true(got == capacity || done);
    assert_true(at + got <= total);
    memcpy(bytes + at, scratch, got);
    free(scratch);
    at += got;
  }
  assert_int_equal(at, total);
  *length = total;
  return bytes;
}

static uint8_t *stream_of(kv_store *kv, size_t *length) {
  kv_snapshot *snapshot = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
  uint8_t *bytes = read_all(snapshot, 1 << 20, length);
  kv_snapshot_end(snapshot);
  return bytes;
}

/* Feeds stream in chunks of chunk bytes (0: random) and finishes. */
static int restore(kv_store *kv, const uint8_t *stream, size_t length, size_t chunk) {
  kv_restore *r = NULL;
  assert_int_equal(kv_restore_begin(kv, &r), 0);
  trandom random;
  trandom_seed(&random, length + chunk);
  int fed = 0;
  for (size_t at = 0; at < length && fed == 0;) {
    size_t n = chunk != 0 ? chunk : 1 + (size_t)trandom_below(&random, 3000);
    n = n < length - at ? n : length - at;
    /* An exact-size copy: a read past the chunk shows under ASan. */
    uint8_t *piece = malloc(n);
    memcpy(piece, stream + at, n);
    fed = kv_restore_feed(r, piece, n);
    free(piece);
    at += n;
  }
  int finished = kv_restore_finish(r);
  assert_true(fed == 0 || finished == fed);
  return finished;
}

static void put(kv_store *kv, const char *key, const char *value, uint64_t expire_at_ms) {
  assert_int_equal(kv_put(kv, (const uint8_t *)key, strlen(key), (const uint8_t *)value,
                          strlen(value), expire_at_ms),
                   0);
}

/* A store with every kind of entry the format must carry. */
static kv_store *varied_store(size_t count, uint64_t seed) {
  kv_store *kv = new_store();
  trandom random;
  trandom_seed(&random, seed);
  uint8_t *value = malloc(70000);
  assert_non_null(value);
  put(kv, "", "the empty key", 0);
  for (size_t i = 0; i < count; i++) {
    char key[64];
    int key_length = snprintf(key, sizeof(key), "%s:%08zu", i % 3 ? "user" : "k", i * 7919 % count);
    size_t value_length = (size_t)trandom_below(&random, i % 50 == 0 ? 70000 : 40);
    for (size_t j = 0; j < value_length; j++) {
      value[j] = (uint8_t)trandom_below(&random, 256);
    }
    uint64_t expire_at_ms = i % 4 == 0 ? 1000 + trandom_below(&random, 1000) : 0;
    assert_int_equal(
        kv_put(kv, (const uint8_t *)key, (size_t)key_length, value, value_length, expire_at_ms), 0);
  }
  free(value);
  return kv;
}

/* ---- Streams out ---------------------------------------------------------- */

static void test_empty_store_stream(void **state) {
  (void)state;
  kv_store *kv = new_store();
  size_t length = 0;
  uint8_t *stream = stream_of(kv, &length);
  assert_int_equal(length, 32 + 8);
  uint32_t magic;
  memcpy(&magic, stream, 4);
  assert_int_equal(magic, KV_SNAPSHOT_MAGIC);
  /* Restoring it empties a full store. */
  kv_store *full = varied_store(100, 1);
  assert_int_equal(restore(full, stream, length, 0), 0);
  assert_int_equal(kv_count(full), 0);
  assert_int_equal(kv_next_expiry_ms(full), 0);
  assert_invariants(full);
  free(stream);
  kv_destroy(full);
  kv_destroy(kv);
}

static void test_read_rules(void **state) {
  (void)state;
  kv_store *kv = varied_store(10, 2);
  kv_snapshot *snapshot = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
  uint8_t buffer[64];
  size_t got = 99;
  bool done = true;
  assert_int_equal(kv_snapshot_read(snapshot, buffer, 0, &got, &done), KV_E_INVALID);
  assert_int_equal(got, 0);
  assert_false(done);
  size_t length = 0;
  uint8_t *bytes = read_all(snapshot, 1, &length); /* one byte at a time */
  /* Done came with the last byte; later reads give nothing. */
  assert_int_equal(kv_snapshot_read(snapshot, buffer, sizeof(buffer), &got, &done), 0);
  assert_int_equal(got, 0);
  assert_true(done);
  kv_snapshot_end(snapshot);
  size_t again_length = 0;
  uint8_t *again = stream_of(kv, &again_length);
  assert_int_equal(again_length, length);
  assert_memory_equal(again, bytes, length);
  /* At most KV_MAX_SNAPSHOTS at once. */
  kv_snapshot *open[KV_MAX_SNAPSHOTS];
  for (size_t i = 0; i < KV_MAX_SNAPSHOTS; i++) {
    assert_int_equal(kv_snapshot_begin(kv, &open[i]), 0);
  }
  kv_snapshot *one_more = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &one_more), KV_E_BUSY);
  assert_invariants(kv);
  for (size_t i = 0; i < KV_MAX_SNAPSHOTS; i++) {
    kv_snapshot_end(open[i]);
  }
  kv_snapshot_end(NULL);
  free(bytes);
  free(again);
  kv_destroy(kv);
}

/* Every kind of write between the reads of a snapshot; its stream must
 * equal one taken with no write in between. */
static void test_isolation_under_writes(void **state) {
  (void)state;
  kv_store *kv = varied_store(20000, 3);
  size_t expected_length = 0;
  uint8_t *expected = stream_of(kv, &expected_length);
  uint64_t memory_before = kv_memory_bytes(kv);
  kv_snapshot *snapshot = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
  assert_int_equal(kv_snapshot_stream_bytes(snapshot), expected_length);
  uint8_t *received = malloc(expected_length);
  size_t at = 0;
  bool done = false;
  trandom random;
  trandom_seed(&random, 4);
  uint8_t command[256];
  for (uint64_t step = 0; !done; step++) {
    char key[64];
    int key_length = snprintf(key, sizeof(key), "%s:%08llu", step % 3 ? "user" : "k",
                              (unsigned long long)trandom_below(&random, 25000));
    size_t length = 0;
    kv_result result;
    switch (step % 5) {
    case 0:
      assert_int_equal(
          kv_put(kv, (const uint8_t *)key, (size_t)key_length, (const uint8_t *)"changed", 7, 0),
          0);
      break;
    case 1:
      assert_int_equal(kv_delete(kv, (const uint8_t *)key, (size_t)key_length, NULL), 0);
      break;
    case 2: /* appends change values in place once nothing shares them */
      assert_int_equal(kv_command_encode_append(0, (const uint8_t *)key, (size_t)key_length,
                                                (const uint8_t *)"+tail", 5, command,
                                                sizeof(command), &length),
                       0);
      kv_apply(kv, command, length, &result);
      kv_apply(kv, command, length, &result);
      break;
    case 3:
      assert_int_equal(kv_command_encode_incrby(0, (const uint8_t *)key, (size_t)key_length, 3,
                                                command, sizeof(command), &length),
                       0);
      kv_apply(kv, command, length, &result);
      break;
    default:
      assert_int_equal(
          kv_command_encode_expire_sweep(1000 + step, 20, command, sizeof(command), &length), 0);
      assert_int_equal(kv_apply(kv, command, length, &result), 0);
    }
    size_t got = 0;
    size_t capacity = 1 + (size_t)trandom_below(&random, 600);
    capacity = capacity < expected_length - at ? capacity : expected_length - at;
    assert_int_equal(kv_snapshot_read(snapshot, received + at, capacity, &got, &done), 0);
    at += got;
    if (step % 20000 == 0) {
      assert_invariants(kv);
    }
  }
  assert_int_equal(at, expected_length);
  assert_memory_equal(received, expected, expected_length);
  /* While the snapshot holds the old version, both are in memory. */
  assert_invariants(kv);
  uint64_t memory_with_snapshot = kv_memory_bytes(kv);
  kv_snapshot_end(snapshot);
  assert_invariants(kv);
  assert_true(kv_memory_bytes(kv) < memory_with_snapshot);
  assert_true(memory_with_snapshot > memory_before);
  free(received);
  free(expected);
  kv_destroy(kv);
}

/* Two snapshots of two versions read in turns while writes go on. */
static void test_two_versions(void **state) {
  (void)state;
  kv_store *kv = varied_store(3000, 5);
  size_t first_length = 0, second_length = 0;
  uint8_t *first_expected = stream_of(kv, &first_length);
  kv_snapshot *first = NULL, *second = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &first), 0);
  for (int i = 0; i < 500; i++) {
    char key[32];
    snprintf(key, sizeof(key), "k:%08d", i * 5);
    put(kv, key, "second version", 0);
  }
  uint8_t *second_expected = stream_of(kv, &second_length);
  assert_int_equal(kv_snapshot_begin(kv, &second), 0);
  for (int i = 0; i < 3000; i++) {
    char key[32];
    snprintf(key, sizeof(key), "user:%08d", i);
    assert_int_equal(kv_delete(kv, (const uint8_t *)key, strlen(key), NULL), 0);
  }
  size_t length = 0;
  uint8_t *first_bytes = read_all(first, 0, &length);
  assert_int_equal(length, first_length);
  assert_memory_equal(first_bytes, first_expected, length);
  uint8_t *second_bytes = read_all(second, 0, &length);
  assert_int_equal(length, second_length);
  assert_memory_equal(second_bytes, second_expected, length);
  assert_invariants(kv);
  kv_snapshot_end(first);
  assert_invariants(kv);
  kv_snapshot_end(second);
  assert_invariants(kv);
  free(first_expected);
  free(second_expected);
  free(first_bytes);
  free(second_bytes);
  kv_destroy(kv);
}

/* ---- Streams in ----------------------------------------------------------- */

static void test_round_trip(void **state) {
  (void)state;
  kv_store *source = varied_store(5000, 6);
  /* The largest key and value travel too. */
  uint8_t *big = malloc(KV_MAX_VALUE_BYTES);
  memset(big, 0xab, KV_MAX_VALUE_BYTES);
  assert_int_equal(kv_put(source, big, KV_MAX_KEY_BYTES, big, KV_MAX_VALUE_BYTES, 77), 0);
  free(big);
  size_t length = 0;
  uint8_t *stream = stream_of(source, &length);
  const uint64_t source_count = kv_count(source);
  const uint64_t source_next_expiry = kv_next_expiry_ms(source);
  const size_t chunks[] = {0, 1, 7, 4096, 1 << 30};
  for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
    kv_store *copy = varied_store(50, 7); /* replaced whole */
    assert_int_equal(restore(copy, stream, length, chunks[c]), 0);
    assert_invariants(copy);
    assert_int_equal(kv_count(copy), source_count);
    assert_int_equal(kv_next_expiry_ms(copy), source_next_expiry);
    size_t again_length = 0;
    uint8_t *again = stream_of(copy, &again_length);
    assert_int_equal(again_length, length);
    assert_memory_equal(again, stream, length);
    free(again);
    /* The expiry index came back: a sweep removes the same keys. */
    uint32_t removed_source = 0, removed_copy = 0;
    if (c == 0) {
      assert_int_equal(kv_expire_step(source, 1500, KV_MAX_SWEEP_KEYS, &removed_source), 0);
      assert_int_equal(kv_expire_step(copy, 1500, KV_MAX_SWEEP_KEYS, &removed_copy), 0);
      assert_true(removed_source > 0);
      assert_int_equal(removed_copy, removed_source);
      size_t a_length = 0, b_length = 0;
      uint8_t *a = stream_of(source, &a_length);
      uint8_t *b = stream_of(copy, &b_length);
      assert_int_equal(a_length, b_length);
      assert_memory_equal(a, b, a_length);
      free(a);
      free(b);
      /* The source changed; later rounds restore the old stream again. */
    }
    kv_destroy(copy);
  }
  free(stream);
  kv_destroy(source);
}

/* The live store, as bytes and memory, to show a failed restore left it. */
typedef struct fingerprint {
  uint8_t *stream;
  size_t length;
  uint64_t memory;
} fingerprint;

static fingerprint take_fingerprint(kv_store *kv) {
  fingerprint f;
  f.stream = stream_of(kv, &f.length);
  f.memory = kv_memory_bytes(kv);
  return f;
}

static void assert_untouched(kv_store *kv, fingerprint *before) {
  fingerprint after = take_fingerprint(kv);
  assert_int_equal(after.length, before->length);
  assert_memory_equal(after.stream, before->stream, before->length);
  assert_int_equal(after.memory, before->memory);
  free(after.stream);
}

static void test_restore_truncated(void **state) {
  (void)state;
  kv_store *source = varied_store(40, 8);
  size_t length = 0;
  uint8_t *stream = stream_of(source, &length);
  kv_store *live = varied_store(30, 9);
  fingerprint before = take_fingerprint(live);
  for (size_t cut = 0; cut < length; cut++) {
    /* As one chunk and as single bytes. */
    assert_int_equal(restore(live, stream, cut, 0), KV_E_TRUNCATED);
    if (cut % 7 == 0) {
      assert_int_equal(restore(live, stream, cut, 1), KV_E_TRUNCATED);
    }
  }
  assert_untouched(live, &before);
  assert_invariants(live);
  /* The whole stream still restores. */
  assert_int_equal(restore(live, stream, length, 0), 0);
  free(before.stream);
  free(stream);
  kv_destroy(live);
  kv_destroy(source);
}

static void test_restore_flipped_bits(void **state) {
  (void)state;
  kv_store *source = varied_store(40, 10);
  size_t length = 0;
  uint8_t *stream = stream_of(source, &length);
  kv_store *live = varied_store(30, 11);
  fingerprint before = take_fingerprint(live);
  uint8_t *damaged = malloc(length);
  size_t refusals[3] = {0, 0, 0};
  for (size_t at = 0; at < length; at++) {
    for (unsigned bit = 0; bit < 8; bit++) {
      memcpy(damaged, stream, length);
      damaged[at] ^= (uint8_t)(1u << bit);
      int rc = restore(live, damaged, length, at % 2 == 0 ? 0 : length);
      assert_true(rc == KV_E_CORRUPT || rc == KV_E_VERSION || rc == KV_E_TRUNCATED);
      refusals[rc == KV_E_CORRUPT ? 0 : rc == KV_E_VERSION ? 1 : 2]++;
    }
  }
  print_message("%zu bytes x 8 bits: %zu corrupt, %zu version, %zu truncated\n", length,
                refusals[0], refusals[1], refusals[2]);
  assert_untouched(live, &before);
  assert_invariants(live);
  free(damaged);
  free(before.stream);
  free(stream);
  kv_destroy(live);
  kv_destroy(source);
}

/* ---- Well-checksummed but wrong streams ----------------------------------- */

typedef struct crafted {
  uint8_t bytes[4096];
  size_t length;
} crafted;

static void crafted_put(crafted *c, const void *bytes, size_t length) {
  assert_true(c->length + length <= sizeof(c->bytes));
  memcpy(c->bytes + c->length, bytes, length);
  c->length += length;
}

static void crafted_header(crafted *c, uint32_t magic, uint16_t version, uint16_t flags,
                           uint64_t count, uint64_t records_bytes) {
  c->length = 0;
  crafted_put(c, &magic, 4);
  crafted_put(c, &version, 2);
  crafted_put(c, &flags, 2);
  crafted_put(c, &count, 8);
  crafted_put(c, &records_bytes, 8);
  uint64_t checksum = XXH3_64bits(c->bytes, 24);
  crafted_put(c, &checksum, 8);
}

static void crafted_record(crafted *c, const char *key, uint32_t value_length,
                           uint64_t expire_at_ms) {
  uint32_t key_length = (uint32_t)strlen(key);
  crafted_put(c, &key_length, 4);
  crafted_put(c, &value_length, 4);
  crafted_put(c, &expire_at_ms, 8);
  crafted_put(c, key, key_length);
  for (uint32_t i = 0; i < value_length; i++) {
    crafted_put(c, "v", 1);
  }
}

static void crafted_trailer(crafted *c) {
  uint64_t checksum = XXH3_64bits(c->bytes, c->length);
  crafted_put(c, &checksum, 8);
}

/* Records (key, 1-byte value) in the order given, with the header's count
 * and records_bytes as given (0, 0: the true ones). */
static void crafted_stream(crafted *c, const char *const *keys, size_t count,
                           uint64_t claimed_count, uint64_t claimed_bytes) {
  uint64_t true_bytes = 0;
  for (size_t i = 0; i < count; i++) {
    true_bytes += 16 + strlen(keys[i]) + 1;
  }
  crafted_header(c, KV_SNAPSHOT_MAGIC, KV_SNAPSHOT_VERSION, 0,
                 claimed_count != 0 ? claimed_count : count,
                 claimed_bytes != 0 ? claimed_bytes : true_bytes);
  for (size_t i = 0; i < count; i++) {
    crafted_record(c, keys[i], 1, 0);
  }
  crafted_trailer(c);
}

static void test_restore_wrong_streams(void **state) {
  (void)state;
  kv_store *live = varied_store(20, 12);
  fingerprint before = take_fingerprint(live);
  crafted c;
  const char *sorted[] = {"a", "b", "c"};
  crafted_stream(&c, sorted, 3, 0, 0);
  kv_store *check = new_store();
  assert_int_equal(restore(check, c.bytes, c.length, 0), 0); /* the writer is right */
  assert_int_equal(kv_count(check), 3);
  kv_destroy(check);

  const char *unsorted[] = {"a", "c", "b"};
  crafted_stream(&c, unsorted, 3, 0, 0);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  const char *repeated[] = {"a", "b", "b"};
  crafted_stream(&c, repeated, 3, 0, 0);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  /* Counts and byte totals that disagree with the records. */
  crafted_stream(&c, sorted, 3, 2, 0);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  crafted_stream(&c, sorted, 3, 4, 0);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  crafted_stream(&c, sorted, 3, 0, 3 * 18 + 1);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  crafted_stream(&c, sorted, 3, 0, 3 * 18 - 1);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  crafted_stream(&c, sorted, 3, UINT64_MAX, UINT64_MAX);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  /* Header fields. */
  crafted_header(&c, KV_SNAPSHOT_MAGIC, KV_SNAPSHOT_VERSION + 1, 0, 0, 0);
  crafted_trailer(&c);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_VERSION);
  crafted_header(&c, KV_SNAPSHOT_MAGIC, KV_SNAPSHOT_VERSION, 1, 0, 0);
  crafted_trailer(&c);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  crafted_header(&c, KV_SNAPSHOT_MAGIC + 1, KV_SNAPSHOT_VERSION, 0, 0, 0);
  crafted_trailer(&c);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  crafted_header(&c, KV_SNAPSHOT_MAGIC, KV_SNAPSHOT_VERSION, 0, 0, 16);
  crafted_trailer(&c);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  /* Lengths above their bounds, refused before anything is allocated. */
  uint32_t too_long = KV_MAX_KEY_BYTES + 1;
  crafted_header(&c, KV_SNAPSHOT_MAGIC, KV_SNAPSHOT_VERSION, 0, 1, 16 + too_long);
  uint32_t zero = 0;
  uint64_t none = 0;
  crafted_put(&c, &too_long, 4);
  crafted_put(&c, &zero, 4);
  crafted_put(&c, &none, 8);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  uint32_t value_too_long = KV_MAX_VALUE_BYTES + 1;
  crafted_header(&c, KV_SNAPSHOT_MAGIC, KV_SNAPSHOT_VERSION, 0, 1, 16 + value_too_long);
  crafted_put(&c, &zero, 4);
  crafted_put(&c, &value_too_long, 4);
  crafted_put(&c, &none, 8);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  /* A byte after the trailer. */
  crafted_stream(&c, sorted, 3, 0, 0);
  crafted_put(&c, "x", 1);
  assert_int_equal(restore(live, c.bytes, c.length, 0), KV_E_CORRUPT);
  assert_untouched(live, &before);
  assert_invariants(live);
  free(before.stream);
  kv_destroy(live);
}

static void test_restore_busy_abort_and_sticky_errors(void **state) {
  (void)state;
  kv_store *live = varied_store(20, 13);
  fingerprint before = take_fingerprint(live);
  size_t length = 0;
  uint8_t *stream = stream_of(live, &length);
  kv_restore *first = NULL, *second = NULL;
  assert_int_equal(kv_restore_begin(live, &first), 0);
  assert_int_equal(kv_restore_begin(live, &second), KV_E_BUSY);
  assert_int_equal(kv_restore_feed(first, stream, length / 2), 0);
  kv_restore_abort(first);
  kv_restore_abort(NULL);
  assert_untouched(live, &before);
  /* After an error every feed and the finish repeat it. */
  assert_int_equal(kv_restore_begin(live, &first), 0);
  uint8_t garbage[40] = {1, 2, 3};
  assert_int_equal(kv_restore_feed(first, garbage, sizeof(garbage)), KV_E_CORRUPT);
  assert_int_equal(kv_restore_feed(first, stream, length), KV_E_CORRUPT);
  assert_int_equal(kv_restore_finish(first), KV_E_CORRUPT);
  assert_untouched(live, &before);
  /* An empty feed is harmless. */
  assert_int_equal(kv_restore_begin(live, &first), 0);
  assert_int_equal(kv_restore_feed(first, NULL, 0), 0);
  assert_int_equal(kv_restore_feed(first, stream, length), 0);
  assert_int_equal(kv_restore_finish(first), 0);
  /* Restored to itself: the same entries, though the bulk-built tree has
   * fuller nodes and so other memory. */
  size_t after_length = 0;
  uint8_t *after = stream_of(live, &after_length);
  assert_int_equal(after_length, before.length);
  assert_memory_equal(after, before.stream, after_length);
  free(after);
  assert_invariants(live);
  free(before.stream);
  free(stream);
  kv_destroy(live);
}

/* A restore replaces the live version; an open snapshot keeps reading the
 * one it pinned. */
static void test_snapshot_across_restore(void **state) {
  (void)state;
  kv_store *kv = varied_store(2000, 14);
  size_t old_length = 0;
  uint8_t *old_stream = stream_of(kv, &old_length);
  kv_store *other = varied_store(500, 15);
  size_t new_length = 0;
  uint8_t *new_stream = stream_of(other, &new_length);
  kv_snapshot *snapshot = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
  uint8_t head[100];
  size_t got = 0;
  bool done = false;
  assert_int_equal(kv_snapshot_read(snapshot, head, sizeof(head), &got, &done), 0);
  assert_int_equal(restore(kv, new_stream, new_length, 0), 0);
  assert_invariants(kv);
  uint8_t *rest = malloc(old_length);
  assert_int_equal(kv_snapshot_read(snapshot, rest, old_length, &got, &done), 0);
  assert_true(done);
  assert_int_equal(got, old_length - sizeof(head));
  assert_memory_equal(head, old_stream, sizeof(head));
  assert_memory_equal(rest, old_stream + sizeof(head), old_length - sizeof(head));
  kv_snapshot_end(snapshot);
  assert_invariants(kv);
  size_t now_length = 0;
  uint8_t *now_stream = stream_of(kv, &now_length);
  assert_int_equal(now_length, new_length);
  assert_memory_equal(now_stream, new_stream, new_length);
  free(old_stream);
  free(new_stream);
  free(now_stream);
  free(rest);
  kv_destroy(other);
  kv_destroy(kv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_store_stream),
      cmocka_unit_test(test_read_rules),
      cmocka_unit_test(test_isolation_under_writes),
      cmocka_unit_test(test_two_versions),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_restore_truncated),
      cmocka_unit_test(test_restore_flipped_bits),
      cmocka_unit_test(test_restore_wrong_streams),
      cmocka_unit_test(test_restore_busy_abort_and_sticky_errors),
      cmocka_unit_test(test_snapshot_across_restore),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
