/*
 * test_kv_command.c - every command's Redis semantics, the encoders' rules,
 * and malformed commands: every truncation, trailing bytes, bad lengths,
 * non-canonical varints, unknown kinds and flags, and random corruption.
 * A malformed command must fail with KV_E_MALFORMED and leave the store
 * byte for byte as it was (compared through its snapshot stream).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/kv.h"
#include "tests/support/random.h"

#define NOW 1000000u

typedef struct command {
  uint8_t bytes[512];
  size_t length;
} command;

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

static command set_command(const char *key, const char *value, uint32_t flags,
                           uint64_t expire_at_ms, uint64_t now_ms) {
  command c;
  kv_set_command set = {
      .key = (const uint8_t *)key,
      .key_length = strlen(key),
      .value = (const uint8_t *)value,
      .value_length = strlen(value),
      .flags = flags,
      .expire_at_ms = expire_at_ms,
      .now_ms = now_ms,
  };
  assert_int_equal(kv_command_encode_set(&set, c.bytes, sizeof(c.bytes), &c.length), 0);
  return c;
}

static command del_command(uint64_t now_ms, const char *const *keys, size_t count) {
  command c;
  kv_bytes list[8];
  assert_true(count <= 8);
  for (size_t i = 0; i < count; i++) {
    list[i] = (kv_bytes){(const uint8_t *)keys[i], strlen(keys[i])};
  }
  assert_int_equal(kv_command_encode_del(now_ms, list, count, c.bytes, sizeof(c.bytes), &c.length),
                   0);
  return c;
}

static command incrby_command(const char *key, int64_t delta, uint64_t now_ms) {
  command c;
  assert_int_equal(kv_command_encode_incrby(now_ms, (const uint8_t *)key, strlen(key), delta,
                                            c.bytes, sizeof(c.bytes), &c.length),
                   0);
  return c;
}

static command append_command(const char *key, const char *tail, uint64_t now_ms) {
  command c;
  assert_int_equal(kv_command_encode_append(now_ms, (const uint8_t *)key, strlen(key),
                                            (const uint8_t *)tail, strlen(tail), c.bytes,
                                            sizeof(c.bytes), &c.length),
                   0);
  return c;
}

static command sweep_command(uint64_t now_ms, uint32_t max_keys) {
  command c;
  assert_int_equal(
      kv_command_encode_expire_sweep(now_ms, max_keys, c.bytes, sizeof(c.bytes), &c.length), 0);
  return c;
}

/* keys[i] = values[i]; at most 8 pairs. */
static command mset_command(uint64_t now_ms, const char *const *keys, const char *const *values,
                            size_t count) {
  command c;
  kv_bytes key_list[8];
  kv_bytes value_list[8];
  assert_true(count <= 8);
  for (size_t i = 0; i < count; i++) {
    key_list[i] = (kv_bytes){(const uint8_t *)keys[i], strlen(keys[i])};
    value_list[i] = (kv_bytes){(const uint8_t *)values[i], strlen(values[i])};
  }
  assert_int_equal(kv_command_encode_mset(now_ms, key_list, value_list, count, c.bytes,
                                          sizeof(c.bytes), &c.length),
                   0);
  return c;
}

static kv_result apply(kv_store *kv, command c) {
  kv_result result;
  int rc = kv_apply(kv, c.bytes, c.length, &result);
  assert_int_equal(rc, result.error);
  return result;
}

static void assert_value(const kv_store *kv, const char *key, uint64_t now_ms, const char *value) {
  kv_entry entry;
  bool found = kv_get(kv, (const uint8_t *)key, strlen(key), now_ms, &entry);
  if (value == NULL) {
    assert_false(found);
    return;
  }
  assert_true(found);
  assert_int_equal(entry.value_length, strlen(value));
  assert_memory_equal(entry.value, value, entry.value_length);
}

static uint64_t expiry_of(const kv_store *kv, const char *key) {
  kv_entry entry;
  assert_true(kv_get(kv, (const uint8_t *)key, strlen(key), 0, &entry));
  return entry.expire_at_ms;
}

static void assert_result_value(const kv_result *result, const char *value) {
  if (value == NULL) {
    assert_false(result->has_value);
    return;
  }
  assert_true(result->has_value);
  assert_int_equal(result->value_length, strlen(value));
  assert_memory_equal(result->value, value, result->value_length);
}

/* Reads a whole open snapshot's stream. */
static uint8_t *snapshot_stream(kv_snapshot *snapshot, size_t *length) {
  *length = (size_t)kv_snapshot_stream_bytes(snapshot);
  uint8_t *bytes = malloc(*length);
  assert_non_null(bytes);
  size_t got = 0;
  bool done = false;
  assert_int_equal(kv_snapshot_read(snapshot, bytes, *length, &got, &done), 0);
  assert_true(done && got == *length);
  return bytes;
}

/* The store's whole snapshot stream. */
static uint8_t *stream_of(kv_store *kv, size_t *length) {
  kv_snapshot *snapshot = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
  uint8_t *bytes = snapshot_stream(snapshot, length);
  kv_snapshot_end(snapshot);
  return bytes;
}

/* ---- SET ------------------------------------------------------------------ */

static void test_set_plain_nx_xx(void **state) {
  (void)state;
  kv_store *kv = new_store();
  kv_result r = apply(kv, set_command("k", "v1", 0, 0, NOW));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_null(r.message);
  assert_false(r.has_value);
  assert_value(kv, "k", NOW, "v1");
  /* NX on a present key: refused, nothing changes. */
  r = apply(kv, set_command("k", "v2", KV_SET_NX, 0, NOW));
  assert_int_equal(r.status, KV_STATUS_NOT_APPLIED);
  assert_int_equal(r.error, 0);
  assert_value(kv, "k", NOW, "v1");
  r = apply(kv, set_command("n", "v", KV_SET_NX, 0, NOW));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_value(kv, "n", NOW, "v");
  /* XX only on a present key. */
  r = apply(kv, set_command("absent", "v", KV_SET_XX, 0, NOW));
  assert_int_equal(r.status, KV_STATUS_NOT_APPLIED);
  assert_value(kv, "absent", NOW, NULL);
  r = apply(kv, set_command("k", "v3", KV_SET_XX, 0, NOW));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_value(kv, "k", NOW, "v3");
  assert_int_equal(kv_count(kv), 2);
  assert_invariants(kv);
  kv_destroy(kv);
}

static void test_set_get(void **state) {
  (void)state;
  kv_store *kv = new_store();
  kv_result r = apply(kv, set_command("k", "old", KV_SET_GET, 0, NOW));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_result_value(&r, NULL);
  r = apply(kv, set_command("k", "new", KV_SET_GET, 0, NOW));
  assert_int_equal(r.status, KV_STATUS_OK);
  /* The old value outlives its replacement until the next change. */
  assert_result_value(&r, "old");
  assert_value(kv, "k", NOW, "new");
  assert_invariants(kv);
  /* GET with NX on a present key: refused, but the value comes back. */
  r = apply(kv, set_command("k", "newer", KV_SET_GET | KV_SET_NX, 0, NOW));
  assert_int_equal(r.status, KV_STATUS_NOT_APPLIED);
  assert_result_value(&r, "new");
  r = apply(kv, set_command("absent", "x", KV_SET_GET | KV_SET_XX, 0, NOW));
  assert_int_equal(r.status, KV_STATUS_NOT_APPLIED);
  assert_result_value(&r, NULL);
  /* A GET of a key an expiry in the past removes. */
  r = apply(kv, set_command("k", "gone", KV_SET_GET, NOW - 1, NOW));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_result_value(&r, "new");
  assert_value(kv, "k", NOW, NULL);
  assert_int_equal(kv_count(kv), 0);
  assert_invariants(kv);
  kv_destroy(kv);
}

static void test_set_expiry_and_keepttl(void **state) {
  (void)state;
  kv_store *kv = new_store();
  apply(kv, set_command("k", "v", 0, NOW + 100, NOW));
  assert_value(kv, "k", NOW + 99, "v");
  assert_value(kv, "k", NOW + 100, NULL);
  /* KEEPTTL keeps the expiry of a present key... */
  apply(kv, set_command("k", "w", KV_SET_KEEPTTL, 0, NOW + 10));
  assert_int_equal(expiry_of(kv, "k"), NOW + 100);
  assert_value(kv, "k", NOW + 10, "w");
  /* ...a plain SET clears it... */
  apply(kv, set_command("k", "x", 0, 0, NOW + 20));
  assert_int_equal(expiry_of(kv, "k"), 0);
  assert_int_equal(kv_next_expiry_ms(kv), 0);
  /* ...and KEEPTTL on an absent or expired key sets none. */
  apply(kv, set_command("e", "v", 0, NOW + 5, NOW));
  apply(kv, set_command("e", "again", KV_SET_KEEPTTL, 0, NOW + 5));
  assert_int_equal(expiry_of(kv, "e"), 0);
  apply(kv, set_command("fresh", "v", KV_SET_KEEPTTL, 0, NOW));
  assert_int_equal(expiry_of(kv, "fresh"), 0);
  /* An expired key is absent to NX and XX although still stored. */
  apply(kv, set_command("t", "v", 0, NOW + 5, NOW));
  assert_int_equal(apply(kv, set_command("t", "v2", KV_SET_XX, 0, NOW + 5)).status,
                   KV_STATUS_NOT_APPLIED);
  assert_int_equal(apply(kv, set_command("t", "v3", KV_SET_NX, 0, NOW + 5)).status, KV_STATUS_OK);
  assert_value(kv, "t", NOW + 6, "v3");
  assert_int_equal(expiry_of(kv, "t"), 0);
  /* An expiry equal to now is already due. */
  apply(kv, set_command("due", "v", 0, NOW, NOW));
  assert_value(kv, "due", 0, NULL);
  assert_invariants(kv);
  kv_destroy(kv);
}

/* A SET replacing a value by one as long never changes what an open
 * snapshot or SET's GET result still holds (as a rewrite in place of the
 * shared item would). */
static void test_set_same_length_keeps_older_versions(void **state) {
  (void)state;
  kv_store *kv = new_store();
  apply(kv, set_command("k", "aaaa", 0, 0, NOW));
  apply(kv, set_command("other", "x", 0, 0, NOW));
  size_t pinned_length = 0;
  uint8_t *pinned = stream_of(kv, &pinned_length);
  kv_snapshot *snapshot = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
  apply(kv, set_command("k", "bbbb", 0, 0, NOW));
  assert_value(kv, "k", NOW, "bbbb");
  assert_invariants(kv);
  size_t length = 0;
  uint8_t *stream = snapshot_stream(snapshot, &length);
  assert_int_equal(length, pinned_length);
  assert_memory_equal(stream, pinned, length);
  free(stream);
  free(pinned);
  kv_snapshot_end(snapshot);
  assert_invariants(kv);
  /* Nothing else holds it now: the same size replaced, the same memory. */
  uint64_t memory = kv_memory_bytes(kv);
  apply(kv, set_command("k", "cccc", 0, 0, NOW));
  assert_int_equal(kv_memory_bytes(kv), memory);
  assert_value(kv, "k", NOW, "cccc");
  /* GET's result is the old value, intact after the write. */
  kv_result result = apply(kv, set_command("k", "dddd", KV_SET_GET, 0, NOW));
  assert_result_value(&result, "cccc");
  assert_value(kv, "k", NOW, "dddd");
  /* An entry with an expiry is replaced, and leaves the index. */
  apply(kv, set_command("t", "eeee", 0, NOW + 100, NOW));
  apply(kv, set_command("t", "ffff", 0, 0, NOW));
  assert_int_equal(kv_next_expiry_ms(kv), 0);
  assert_value(kv, "t", NOW + 200, "ffff");
  assert_invariants(kv);
  kv_destroy(kv);
}

/* What the store should hold for one key of the model test below. */
typedef struct model_entry {
  bool stored;
  char value[24];
  uint64_t expire_at_ms;
} model_entry;

#define MODEL_KEYS 300
#define MODEL_STEPS 20000
#define MODEL_WINDOW 1000

static bool model_present(const model_entry *entry, uint64_t now_ms) {
  return entry->stored && !(entry->expire_at_ms != 0 && entry->expire_at_ms <= now_ms);
}

/* Redis's SET on the model; returns whether it applied. */
static bool model_set(model_entry *entry, const char *value, uint32_t flags, uint64_t expire_at_ms,
                      uint64_t now_ms) {
  bool present = model_present(entry, now_ms);
  if (((flags & KV_SET_NX) && present) || ((flags & KV_SET_XX) && !present)) {
    return false;
  }
  if ((flags & KV_SET_KEEPTTL) && present) {
    expire_at_ms = entry->expire_at_ms;
  }
  if (expire_at_ms != 0 && expire_at_ms <= now_ms) {
    entry->stored = false;
    return true;
  }
  entry->stored = true;
  snprintf(entry->value, sizeof(entry->value), "%s", value);
  entry->expire_at_ms = expire_at_ms;
  return true;
}

/* Flags for a random SET: mostly none (the one-descent path), else one
 * of the conditions or options that read the old entry. */
static uint32_t random_set_flags(trandom *random) {
  static const uint32_t choices[] = {0, 0, 0, 0, KV_SET_NX, KV_SET_XX, KV_SET_GET, KV_SET_KEEPTTL};
  return choices[trandom_below(random, sizeof(choices) / sizeof(choices[0]))];
}

/* No expiry, one to come, or one already due when applied. */
static uint64_t random_expiry(trandom *random, uint32_t flags, uint64_t now_ms) {
  uint64_t draw = trandom_below(random, 10);
  if ((flags & KV_SET_KEEPTTL) || draw < 5) {
    return 0;
  }
  return draw < 8 ? now_ms + trandom_range(random, 1, 50) : now_ms - trandom_below(random, 3);
}

static void assert_matches_model(const kv_store *kv, const model_entry *model, uint64_t now_ms) {
  uint64_t stored = 0;
  uint64_t next_expiry = 0;
  char key[16];
  for (int i = 0; i < MODEL_KEYS; i++) {
    snprintf(key, sizeof(key), "key:%04d", i);
    assert_value(kv, key, now_ms, model_present(&model[i], now_ms) ? model[i].value : NULL);
    if (model[i].stored) {
      stored++;
      uint64_t at = model[i].expire_at_ms;
      next_expiry = at != 0 && (next_expiry == 0 || at < next_expiry) ? at : next_expiry;
    }
  }
  assert_int_equal(kv_count(kv), stored);
  assert_int_equal(kv_next_expiry_ms(kv), next_expiry);
  assert_invariants(kv);
}

/*
 * Random SETs, with and without flags and expiries, against a model of
 * Redis's SET; every other window of steps runs beside an open snapshot,
 * whose stream must come out as it was when the snapshot began: a SET
 * that replaces in place of copying would change it.
 */
static void test_set_against_model(void **state) {
  (void)state;
  static model_entry model[MODEL_KEYS];
  memset(model, 0, sizeof(model));
  kv_store *kv = new_store();
  trandom random;
  trandom_seed(&random, 2026);
  uint64_t now = NOW;
  kv_snapshot *snapshot = NULL;
  uint8_t *pinned = NULL;
  size_t pinned_length = 0;
  for (int step = 1; step <= MODEL_STEPS; step++) {
    int index = (int)trandom_below(&random, MODEL_KEYS);
    char key[16];
    char value[24];
    snprintf(key, sizeof(key), "key:%04d", index);
    /* Mostly one length: replacements of a value by one as long. */
    int width = trandom_below(&random, 4) == 0 ? 12 : 8;
    snprintf(value, sizeof(value), "v%0*d", width, step);
    uint32_t flags = random_set_flags(&random);
    uint64_t expire_at_ms = random_expiry(&random, flags, now);
    bool present = model_present(&model[index], now);
    char old[24];
    snprintf(old, sizeof(old), "%s", model[index].value);
    bool applied = model_set(&model[index], value, flags, expire_at_ms, now);
    kv_result result = apply(kv, set_command(key, value, flags, expire_at_ms, now));
    assert_int_equal(result.status, applied ? KV_STATUS_OK : KV_STATUS_NOT_APPLIED);
    assert_result_value(&result, (flags & KV_SET_GET) && present ? old : NULL);
    now += trandom_below(&random, 3);
    if (step % MODEL_WINDOW != 0) {
      continue;
    }
    assert_matches_model(kv, model, now);
    if (snapshot != NULL) {
      size_t length = 0;
      uint8_t *stream = snapshot_stream(snapshot, &length);
      assert_int_equal(length, pinned_length);
      assert_memory_equal(stream, pinned, length);
      free(stream);
      free(pinned);
      kv_snapshot_end(snapshot);
      snapshot = NULL;
      assert_invariants(kv);
    } else {
      assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
      kv_snapshot *reader = NULL;
      assert_int_equal(kv_snapshot_begin(kv, &reader), 0);
      pinned = snapshot_stream(reader, &pinned_length);
      kv_snapshot_end(reader);
    }
  }
  if (snapshot != NULL) {
    kv_snapshot_end(snapshot);
    free(pinned);
  }
  assert_matches_model(kv, model, now);
  kv_destroy(kv);
}

/* ---- DEL ------------------------------------------------------------------ */

static void test_del_counts(void **state) {
  (void)state;
  kv_store *kv = new_store();
  apply(kv, set_command("a", "1", 0, 0, NOW));
  apply(kv, set_command("b", "2", 0, 0, NOW));
  apply(kv, set_command("c", "3", 0, NOW + 10, NOW));
  const char *keys[] = {"a", "a", "missing", "c", "b"};
  /* c has expired at NOW + 10: removed but not counted; a counts once. */
  kv_result r = apply(kv, del_command(NOW + 10, keys, 5));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_int_equal(r.integer, 2);
  assert_int_equal(kv_count(kv), 0);
  assert_int_equal(kv_next_expiry_ms(kv), 0);
  r = apply(kv, del_command(NOW, keys, 1));
  assert_int_equal(r.integer, 0);
  assert_invariants(kv);
  kv_destroy(kv);
}

/* ---- INCRBY --------------------------------------------------------------- */

static void test_incrby(void **state) {
  (void)state;
  kv_store *kv = new_store();
  kv_result r = apply(kv, incrby_command("n", 5, NOW));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_int_equal(r.integer, 5);
  assert_value(kv, "n", NOW, "5");
  r = apply(kv, incrby_command("n", -7, NOW));
  assert_int_equal(r.integer, -2);
  assert_value(kv, "n", NOW, "-2");
  apply(kv, set_command("n", "9223372036854775806", 0, 0, NOW));
  r = apply(kv, incrby_command("n", 1, NOW));
  assert_true(r.integer == INT64_MAX);
  r = apply(kv, incrby_command("n", 1, NOW));
  assert_int_equal(r.status, KV_STATUS_ERROR);
  assert_int_equal(r.error, KV_E_OVERFLOW);
  assert_string_equal(r.message, "ERR increment or decrement would overflow");
  assert_value(kv, "n", NOW, "9223372036854775807");
  apply(kv, set_command("n", "-9223372036854775807", 0, 0, NOW));
  r = apply(kv, incrby_command("n", -1, NOW));
  assert_true(r.integer == INT64_MIN);
  assert_value(kv, "n", NOW, "-9223372036854775808");
  assert_int_equal(apply(kv, incrby_command("n", -1, NOW)).error, KV_E_OVERFLOW);
  assert_int_equal(apply(kv, incrby_command("n", INT64_MAX, NOW)).integer, -1);
  /* A present key keeps its expiry; an expired one starts again from 0
   * without one. */
  apply(kv, set_command("t", "10", 0, NOW + 50, NOW));
  assert_int_equal(apply(kv, incrby_command("t", 1, NOW)).integer, 11);
  assert_int_equal(expiry_of(kv, "t"), NOW + 50);
  assert_int_equal(apply(kv, incrby_command("t", 1, NOW + 50)).integer, 1);
  assert_int_equal(expiry_of(kv, "t"), 0);
  assert_invariants(kv);
  kv_destroy(kv);
}

static void test_incrby_not_integer(void **state) {
  (void)state;
  static const char *const refused[] = {
      "",
      " 1",
      "1 ",
      "+1",
      "01",
      "-0",
      "-",
      "1.5",
      "1e3",
      "abc",
      "0x10",
      "--1",
      "9223372036854775808",
      "-9223372036854775809",
      "99999999999999999999",
      "123456789012345678901",
  };
  static const char *const accepted[] = {"0", "-1", "42", "9223372036854775807",
                                         "-9223372036854775808"};
  kv_store *kv = new_store();
  for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
    apply(kv, set_command("k", refused[i], 0, 0, NOW));
    kv_result r = apply(kv, incrby_command("k", 0, NOW));
    assert_int_equal(r.status, KV_STATUS_ERROR);
    assert_int_equal(r.error, KV_E_NOT_INTEGER);
    assert_string_equal(r.message, "ERR value is not an integer or out of range");
    assert_value(kv, "k", NOW, refused[i]); /* untouched */
  }
  for (size_t i = 0; i < sizeof(accepted) / sizeof(accepted[0]); i++) {
    apply(kv, set_command("k", accepted[i], 0, 0, NOW));
    kv_result r = apply(kv, incrby_command("k", 0, NOW));
    assert_int_equal(r.status, KV_STATUS_OK);
    assert_value(kv, "k", NOW, accepted[i]);
  }
  /* A zero byte inside the value is not a digit. */
  uint8_t with_zero[] = {'1', 0, '2'};
  assert_int_equal(kv_put(kv, (const uint8_t *)"z", 1, with_zero, 3, 0), 0);
  assert_int_equal(apply(kv, incrby_command("z", 1, NOW)).error, KV_E_NOT_INTEGER);
  assert_invariants(kv);
  kv_destroy(kv);
}

/* ---- APPEND --------------------------------------------------------------- */

static void test_append(void **state) {
  (void)state;
  kv_store *kv = new_store();
  kv_result r = apply(kv, append_command("k", "", NOW));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_int_equal(r.integer, 0);
  assert_value(kv, "k", NOW, ""); /* created, empty */
  r = apply(kv, append_command("k", "Hello", NOW));
  assert_int_equal(r.integer, 5);
  r = apply(kv, append_command("k", " World", NOW));
  assert_int_equal(r.integer, 11);
  assert_value(kv, "k", NOW, "Hello World");
  /* Many appends grow the value in place, each byte kept. */
  char expect[4096] = "Hello World";
  for (int i = 0; i < 300; i++) {
    char tail[8];
    snprintf(tail, sizeof(tail), "%d,", i);
    strcat(expect, tail);
    assert_int_equal(apply(kv, append_command("k", tail, NOW)).integer, (int64_t)strlen(expect));
  }
  assert_value(kv, "k", NOW, expect);
  /* Expiry kept; an expired key starts over without one. */
  apply(kv, set_command("t", "ab", 0, NOW + 5, NOW));
  assert_int_equal(apply(kv, append_command("t", "c", NOW)).integer, 3);
  assert_int_equal(expiry_of(kv, "t"), NOW + 5);
  assert_int_equal(apply(kv, append_command("t", "z", NOW + 5)).integer, 1);
  assert_value(kv, "t", NOW + 5, "z");
  assert_int_equal(expiry_of(kv, "t"), 0);
  assert_invariants(kv);
  kv_destroy(kv);
}

static void test_append_limit(void **state) {
  (void)state;
  kv_store *kv = new_store();
  uint8_t *big = calloc(1, KV_MAX_VALUE_BYTES);
  assert_non_null(big);
  assert_int_equal(kv_put(kv, (const uint8_t *)"k", 1, big, KV_MAX_VALUE_BYTES - 5, 0), 0);
  kv_result r = apply(kv, append_command("k", "123456", NOW));
  assert_int_equal(r.status, KV_STATUS_ERROR);
  assert_int_equal(r.error, KV_E_TOO_LARGE);
  assert_string_equal(r.message, "ERR string exceeds maximum allowed size");
  r = apply(kv, append_command("k", "12345", NOW));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_int_equal(r.integer, KV_MAX_VALUE_BYTES);
  kv_entry entry;
  assert_true(kv_get(kv, (const uint8_t *)"k", 1, NOW, &entry));
  assert_int_equal(entry.value_length, KV_MAX_VALUE_BYTES);
  assert_memory_equal(entry.value + KV_MAX_VALUE_BYTES - 5, "12345", 5);
  assert_int_equal(apply(kv, append_command("k", "", NOW)).integer, KV_MAX_VALUE_BYTES);
  assert_int_equal(apply(kv, append_command("k", "x", NOW)).error, KV_E_TOO_LARGE);
  free(big);
  assert_invariants(kv);
  kv_destroy(kv);
}

/* ---- EXPIRE_SWEEP --------------------------------------------------------- */

static void test_expire_sweep(void **state) {
  (void)state;
  kv_store *kv = new_store();
  char key[16];
  for (int i = 0; i < 50; i++) {
    snprintf(key, sizeof(key), "k%02d", i);
    /* Every fifth key has no expiry; the others expire at NOW + 2 .. NOW + 10
     * (never NOW + 6), five keys each. */
    apply(kv, set_command(key, "v", 0, i % 5 == 0 ? 0 : NOW + 1 + (uint64_t)(i % 10), NOW));
  }
  assert_int_equal(kv_count(kv), 50);
  assert_int_equal(kv_next_expiry_ms(kv), NOW + 2);
  kv_result r = apply(kv, sweep_command(NOW + 1, 100));
  assert_int_equal(r.integer, 0); /* nothing due yet */
  r = apply(kv, sweep_command(NOW + 4, 3));
  assert_int_equal(r.integer, 3); /* bounded */
  /* The three earliest (expiry, key): k01, k11, k21 (NOW + 2). */
  assert_value(kv, "k01", 0, NULL);
  assert_value(kv, "k21", 0, NULL);
  assert_value(kv, "k31", 0, "v");
  r = apply(kv, sweep_command(NOW + 4, KV_MAX_SWEEP_KEYS));
  assert_int_equal(r.integer, 12); /* the rest due at NOW + 4: k31, k41, k?2, k?3 */
  assert_int_equal(kv_next_expiry_ms(kv), NOW + 5);
  r = apply(kv, sweep_command(UINT64_MAX, KV_MAX_SWEEP_KEYS));
  assert_int_equal(kv_count(kv), 10);
  assert_int_equal(r.integer, 25);
  assert_int_equal(kv_next_expiry_ms(kv), 0);
  assert_invariants(kv);
  kv_destroy(kv);
}

/* ---- MSET ----------------------------------------------------------------- */

static void test_mset(void **state) {
  (void)state;
  kv_store *kv = new_store();
  apply(kv, set_command("a", "old", 0, NOW + 50, NOW));
  apply(kv, set_command("gone", "x", 0, NOW + 1, NOW));
  const char *keys[] = {"a", "b", "gone", "b", ""};
  const char *values[] = {"1", "2", "3", "4", "empty key"};
  kv_result r = apply(kv, mset_command(NOW + 10, keys, values, 5));
  assert_int_equal(r.status, KV_STATUS_OK);
  assert_int_equal(r.integer, 5);
  assert_false(r.has_value);
  assert_value(kv, "a", NOW + 100, "1"); /* the old expiry is dropped */
  assert_int_equal(expiry_of(kv, "a"), 0);
  assert_value(kv, "b", NOW, "4");          /* a key given twice: the last value */
  assert_value(kv, "gone", NOW + 100, "3"); /* an expired key is simply set */
  assert_value(kv, "", NOW, "empty key");
  assert_int_equal(kv_count(kv), 4);
  assert_int_equal(kv_next_expiry_ms(kv), 0);
  /* One pair takes the single-key path; the outcome is the same. */
  const char *one_key[] = {"c"};
  const char *one_value[] = {"5"};
  r = apply(kv, mset_command(NOW, one_key, one_value, 1));
  assert_int_equal(r.integer, 1);
  assert_value(kv, "c", NOW, "5");
  assert_invariants(kv);
  kv_destroy(kv);
}

/* Many pairs under an open snapshot: the snapshot keeps the version
 * before, the store has every pair, and ending the snapshot frees what only
 * it held. */
static void test_mset_beside_snapshot(void **state) {
  (void)state;
  kv_store *kv = new_store();
  char key[32];
  for (int i = 0; i < 3000; i++) {
    snprintf(key, sizeof(key), "key:%05d", i);
    apply(kv, set_command(key, "before", 0, i % 2 ? NOW + 1000 : 0, NOW));
  }
  uint64_t memory = kv_memory_bytes(kv);
  kv_snapshot *snapshot = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
  kv_bytes keys[KV_MAX_COMMAND_KEYS];
  kv_bytes values[KV_MAX_COMMAND_KEYS];
  static char names[KV_MAX_COMMAND_KEYS][32];
  for (size_t i = 0; i < KV_MAX_COMMAND_KEYS; i++) {
    /* every third existing key, then new ones past the end */
    int length = snprintf(names[i], sizeof(names[i]), "key:%05zu", i * 3 + (i >= 900 ? 3000 : 0));
    keys[i] = (kv_bytes){(const uint8_t *)names[i], (size_t)length};
    values[i] = (kv_bytes){(const uint8_t *)"after", 5};
  }
  size_t length = 0;
  assert_int_equal(kv_command_encode_mset(NOW, keys, values, KV_MAX_COMMAND_KEYS, NULL, 0, &length),
                   KV_E_NO_SPACE);
  uint8_t *bytes = malloc(length);
  assert_non_null(bytes);
  assert_int_equal(
      kv_command_encode_mset(NOW, keys, values, KV_MAX_COMMAND_KEYS, bytes, length, &length), 0);
  kv_result r;
  assert_int_equal(kv_apply(kv, bytes, length, &r), 0);
  assert_int_equal(r.integer, KV_MAX_COMMAND_KEYS);
  free(bytes);
  assert_invariants(kv);
  assert_int_equal(kv_snapshot_count(snapshot), 3000);
  assert_int_equal(kv_count(kv), 3000 + (KV_MAX_COMMAND_KEYS - 900));
  assert_value(kv, "key:00003", NOW + 5000, "after");
  assert_value(kv, "key:00004", NOW, "before");
  uint64_t memory_with_snapshot = kv_memory_bytes(kv);
  kv_snapshot_end(snapshot);
  assert_invariants(kv); /* the accounting matches what is reachable */
  assert_true(kv_memory_bytes(kv) < memory_with_snapshot); /* the old version's nodes went */
  assert_true(kv_memory_bytes(kv) > memory);               /* the new keys stay */
  kv_destroy(kv);
}

/* ---- Encoders ------------------------------------------------------------- */

static void test_encoding_bytes(void **state) {
  (void)state;
  /* The documented layout, byte for byte. */
  command c = set_command("k", "v", KV_SET_NX | KV_SET_GET, 300, 1);
  const uint8_t set[] = {1, 5, 1, 0xac, 0x02, 1, 'k', 1, 'v'};
  assert_int_equal(c.length, sizeof(set));
  assert_memory_equal(c.bytes, set, sizeof(set));
  c = incrby_command("k", -2, 0);
  const uint8_t incrby[] = {3, 0, 3, 1, 'k'};
  assert_int_equal(c.length, sizeof(incrby));
  assert_memory_equal(c.bytes, incrby, sizeof(incrby));
  const char *keys[] = {"a", ""};
  c = del_command(127, keys, 2);
  const uint8_t del[] = {2, 127, 2, 1, 'a', 0};
  assert_int_equal(c.length, sizeof(del));
  assert_memory_equal(c.bytes, del, sizeof(del));
  c = append_command("k", "xy", 128);
  const uint8_t append[] = {4, 0x80, 0x01, 1, 'k', 2, 'x', 'y'};
  assert_int_equal(c.length, sizeof(append));
  assert_memory_equal(c.bytes, append, sizeof(append));
  c = sweep_command(UINT64_MAX, 5);
  const uint8_t sweep[] = {5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 5};
  assert_int_equal(c.length, sizeof(sweep));
  assert_memory_equal(c.bytes, sweep, sizeof(sweep));
  const char *mset_keys[] = {"a", ""};
  const char *mset_values[] = {"x", ""};
  c = mset_command(127, mset_keys, mset_values, 2);
  const uint8_t mset[] = {6, 127, 2, 1, 'a', 1, 'x', 0, 0};
  assert_int_equal(c.length, sizeof(mset));
  assert_memory_equal(c.bytes, mset, sizeof(mset));
  c = incrby_command("", INT64_MIN, 0);
  assert_int_equal(c.length, 1 + 1 + 10 + 1);
}

static void test_encoder_rules(void **state) {
  (void)state;
  uint8_t buffer[64];
  size_t length = 0;
  kv_set_command set = {.key = (const uint8_t *)"k", .key_length = 1};
  set.flags = KV_SET_NX | KV_SET_XX;
  assert_int_equal(kv_command_encode_set(&set, buffer, sizeof(buffer), &length), KV_E_INVALID);
  set.flags = KV_SET_KEEPTTL;
  set.expire_at_ms = 5;
  assert_int_equal(kv_command_encode_set(&set, buffer, sizeof(buffer), &length), KV_E_INVALID);
  set.flags = 16;
  set.expire_at_ms = 0;
  assert_int_equal(kv_command_encode_set(&set, buffer, sizeof(buffer), &length), KV_E_INVALID);
  set.flags = 0;
  set.key_length = KV_MAX_KEY_BYTES + 1;
  assert_int_equal(kv_command_encode_set(&set, buffer, sizeof(buffer), &length), KV_E_INVALID);
  set.key_length = 1;
  set.value_length = KV_MAX_VALUE_BYTES + 1;
  assert_int_equal(kv_command_encode_set(&set, buffer, sizeof(buffer), &length), KV_E_INVALID);
  /* Too small: the size needed comes back and the buffer is not touched. */
  set.value = (const uint8_t *)"value";
  set.value_length = 5;
  assert_int_equal(kv_command_encode_set(&set, NULL, 0, &length), KV_E_NO_SPACE);
  assert_int_equal(length, 12);
  memset(buffer, 0xaa, sizeof(buffer));
  size_t needed = 0;
  assert_int_equal(kv_command_encode_set(&set, buffer, 11, &needed), KV_E_NO_SPACE);
  assert_int_equal(needed, 12);
  for (size_t i = 0; i < sizeof(buffer); i++) {
    assert_int_equal(buffer[i], 0xaa);
  }
  assert_int_equal(kv_command_encode_set(&set, buffer, 12, &length), 0);
  assert_int_equal(length, 12);
  kv_bytes keys[KV_MAX_COMMAND_KEYS + 1];
  for (size_t i = 0; i <= KV_MAX_COMMAND_KEYS; i++) {
    keys[i] = (kv_bytes){(const uint8_t *)"k", 1};
  }
  assert_int_equal(kv_command_encode_del(0, keys, 0, buffer, sizeof(buffer), &length),
                   KV_E_INVALID);
  assert_int_equal(kv_command_encode_del(0, keys, KV_MAX_COMMAND_KEYS + 1, NULL, 0, &length),
                   KV_E_INVALID);
  assert_int_equal(kv_command_encode_del(0, keys, KV_MAX_COMMAND_KEYS, NULL, 0, &length),
                   KV_E_NO_SPACE);
  keys[0].length = KV_MAX_KEY_BYTES + 1;
  assert_int_equal(kv_command_encode_del(0, keys, 1, buffer, sizeof(buffer), &length),
                   KV_E_INVALID);
  assert_int_equal(kv_command_encode_incrby(0, keys[0].data, KV_MAX_KEY_BYTES + 1, 1, buffer,
                                            sizeof(buffer), &length),
                   KV_E_INVALID);
  assert_int_equal(kv_command_encode_append(0, keys[0].data, 1, keys[0].data,
                                            KV_MAX_VALUE_BYTES + 1, buffer, sizeof(buffer),
                                            &length),
                   KV_E_INVALID);
  assert_int_equal(kv_command_encode_expire_sweep(0, 0, buffer, sizeof(buffer), &length),
                   KV_E_INVALID);
  assert_int_equal(
      kv_command_encode_expire_sweep(0, KV_MAX_SWEEP_KEYS + 1, buffer, sizeof(buffer), &length),
      KV_E_INVALID);
  kv_bytes values[KV_MAX_COMMAND_KEYS + 1];
  for (size_t i = 0; i <= KV_MAX_COMMAND_KEYS; i++) {
    keys[i] = (kv_bytes){(const uint8_t *)"k", 1};
    values[i] = (kv_bytes){(const uint8_t *)"v", 1};
  }
  assert_int_equal(kv_command_encode_mset(0, keys, values, 0, buffer, sizeof(buffer), &length),
                   KV_E_INVALID);
  assert_int_equal(
      kv_command_encode_mset(0, keys, values, KV_MAX_COMMAND_KEYS + 1, NULL, 0, &length),
      KV_E_INVALID);
  assert_int_equal(kv_command_encode_mset(0, keys, values, KV_MAX_COMMAND_KEYS, NULL, 0, &length),
                   KV_E_NO_SPACE);
  assert_int_equal(length, 1 + 1 + 2 + KV_MAX_COMMAND_KEYS * 4);
  keys[1].length = KV_MAX_KEY_BYTES + 1;
  assert_int_equal(kv_command_encode_mset(0, keys, values, 2, NULL, 0, &length), KV_E_INVALID);
  keys[1].length = 1;
  values[1].length = KV_MAX_VALUE_BYTES + 1;
  assert_int_equal(kv_command_encode_mset(0, keys, values, 2, NULL, 0, &length), KV_E_INVALID);
}

/* ---- Malformed commands --------------------------------------------------- */

/* A store the samples below would change if they were applied. */
static kv_store *populated_store(void) {
  kv_store *kv = new_store();
  apply(kv, set_command("k", "41", 0, 0, NOW));
  apply(kv, set_command("t", "x", 0, NOW + 100, NOW));
  apply(kv, set_command("other", "y", 0, 0, NOW));
  return kv;
}

/* Applies bytes that must be refused and checks nothing changed. */
static void assert_refused(kv_store *kv, const uint8_t *bytes, size_t length) {
  size_t before_length = 0;
  uint8_t *before = stream_of(kv, &before_length);
  uint64_t memory = kv_memory_bytes(kv);
  /* A copy exactly `length` long, so a read past it shows under ASan. */
  uint8_t *copy = malloc(length + 1);
  assert_non_null(copy);
  if (length > 0) {
    memcpy(copy, bytes, length);
  }
  kv_result result;
  int rc = kv_apply(kv, copy, length, &result);
  free(copy);
  assert_int_equal(rc, KV_E_MALFORMED);
  assert_int_equal(result.status, KV_STATUS_ERROR);
  assert_int_equal(result.error, KV_E_MALFORMED);
  assert_false(result.has_value);
  assert_int_equal(kv_memory_bytes(kv), memory);
  size_t after_length = 0;
  uint8_t *after = stream_of(kv, &after_length);
  assert_int_equal(after_length, before_length);
  assert_memory_equal(after, before, before_length);
  free(before);
  free(after);
}

static void test_malformed_truncations(void **state) {
  (void)state;
  const char *keys[] = {"k", "t", "other"};
  command samples[] = {
      set_command("k", "value", KV_SET_GET, NOW + 1000, NOW),
      set_command("new", "", 0, 0, NOW),
      del_command(NOW, keys, 3),
      incrby_command("k", -300000, NOW),
      append_command("k", "tail", NOW),
      sweep_command(NOW + 1000, 10),
      mset_command(NOW, keys, (const char *const[]){"1", "", "three"}, 3),
  };
  kv_store *kv = populated_store();
  for (size_t s = 0; s < sizeof(samples) / sizeof(samples[0]); s++) {
    for (size_t length = 0; length < samples[s].length; length++) {
      assert_refused(kv, samples[s].bytes, length);
    }
    /* One byte more is as bad as one byte less. */
    samples[s].bytes[samples[s].length] = 0;
    assert_refused(kv, samples[s].bytes, samples[s].length + 1);
  }
  assert_int_equal(kv_apply(kv, NULL, 0, &(kv_result){0}), KV_E_MALFORMED);
  assert_invariants(kv);
  kv_destroy(kv);
}

static void test_malformed_fields(void **state) {
  (void)state;
  static const struct {
    const char *why;
    uint8_t bytes[24];
    size_t length;
  } cases[] = {
      {"unknown kind 0", {0, 0}, 2},
      {"unknown kind 7", {7, 0, 1}, 3},
      {"unknown kind 255", {255}, 1},
      {"NX with XX", {1, 3, 0, 0, 1, 'k', 1, 'v'}, 8},
      {"KEEPTTL with an expiry", {1, 8, 0, 1, 1, 'k', 1, 'v'}, 8},
      {"unknown SET flag", {1, 16, 0, 0, 1, 'k', 1, 'v'}, 8},
      {"varint not in shortest form", {1, 0, 0x80, 0x00, 0, 1, 'k', 1, 'v'}, 9},
      {"zero-padded varint", {5, 0x81, 0x00, 1}, 4},
      {"varint beyond 64 bits",
       {5, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 1},
       12},
      {"varint of 11 bytes",
       {5, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 1},
       13},
      {"key longer than the bound", {3, 0, 0, 0x81, 0x80, 0x04}, 6},
      {"key longer than the command", {3, 0, 0, 5, 'k'}, 5},
      {"value longer than the bound", {4, 0, 1, 'k', 0x81, 0x80, 0x80, 0x01}, 8},
      {"DEL of no key", {2, 0, 0}, 3},
      {"DEL of too many keys", {2, 0, 0x81, 0x08, 0}, 5},
      {"DEL count above its keys", {2, 0, 2, 1, 'k'}, 5},
      {"sweep of no key", {5, 0, 0}, 3},
      {"sweep above the bound", {5, 0, 0x81, 0x20}, 4},
      {"MSET of no pair", {6, 0, 0}, 3},
      {"MSET of too many pairs", {6, 0, 0x81, 0x08, 0, 0}, 6},
      {"MSET count above its pairs", {6, 0, 2, 1, 'k', 1, 'v'}, 7},
      {"MSET key without its value", {6, 0, 1, 1, 'k'}, 5},
      {"MSET value longer than the bound", {6, 0, 1, 1, 'k', 0x81, 0x80, 0x80, 0x01}, 9},
  };
  kv_store *kv = populated_store();
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    print_message("refusing: %s\n", cases[i].why);
    assert_refused(kv, cases[i].bytes, cases[i].length);
  }
  /* The same shapes, well formed, are accepted: the cases fail for the
   * reason given, not another. */
  const uint8_t good_del[] = {2, 0, 1, 1, 'k'};
  kv_result result;
  assert_int_equal(kv_apply(kv, good_del, sizeof(good_del), &result), 0);
  assert_int_equal(result.integer, 1);
  const uint8_t good_sweep[] = {5, 0x81, 0x01, 0x80, 0x20};
  assert_int_equal(kv_apply(kv, good_sweep, sizeof(good_sweep), &result), 0);
  const uint8_t good_mset[] = {6, 0, 1, 1, 'k', 1, 'v'};
  assert_int_equal(kv_apply(kv, good_mset, sizeof(good_mset), &result), 0);
  assert_int_equal(result.integer, 1);
  assert_invariants(kv);
  kv_destroy(kv);
}

/* Random damage to valid commands: any outcome but a crash, a broken
 * invariant or a difference between two replicas applying the same bytes. */
static void test_random_damage_is_deterministic(void **state) {
  (void)state;
  trandom random;
  trandom_seed(&random, 99);
  kv_store *first = populated_store();
  kv_store *second = populated_store();
  const char *names[] = {"k", "t", "other", "", "n"};
  const uint32_t set_flags[] = {0,
                                KV_SET_NX,
                                KV_SET_XX,
                                KV_SET_GET,
                                KV_SET_NX | KV_SET_GET,
                                KV_SET_XX | KV_SET_GET,
                                KV_SET_KEEPTTL};
  for (int i = 0; i < 60000; i++) {
    const char *key = names[trandom_below(&random, 5)];
    const char *del_keys[] = {key, names[trandom_below(&random, 5)]};
    uint64_t now = NOW + trandom_below(&random, 200);
    command c;
    const char *mset_values[] = {"1", "2"};
    switch (trandom_below(&random, 6)) {
    case 0:
      c = set_command(key, "12", set_flags[trandom_below(&random, 7)], 0, now);
      break;
    case 1:
      c = del_command(now, del_keys, 2);
      break;
    case 2:
      c = incrby_command(key, (int64_t)trandom_next(&random) >> trandom_below(&random, 64), now);
      break;
    case 3:
      c = append_command(key, "ab", now);
      break;
    case 4:
      c = mset_command(now, del_keys, mset_values, 2);
      break;
    default:
      c = sweep_command(now, 1 + (uint32_t)trandom_below(&random, 4));
    }
    for (uint64_t flips = trandom_below(&random, 3); flips > 0; flips--) {
      c.bytes[trandom_below(&random, c.length)] ^= (uint8_t)(1u << trandom_below(&random, 8));
    }
    size_t length =
        trandom_chance(&random, 200000) ? (size_t)trandom_below(&random, c.length + 2) : c.length;
    kv_result a, b;
    int rc_a = kv_apply(first, c.bytes, length, &a);
    int rc_b = kv_apply(second, c.bytes, length, &b);
    assert_int_equal(rc_a, rc_b);
    assert_int_equal(a.status, b.status);
    assert_true(a.integer == b.integer);
    assert_int_equal(a.has_value, b.has_value);
    if (i % 5000 == 0) {
      assert_invariants(first);
    }
  }
  size_t length_a = 0, length_b = 0;
  uint8_t *stream_a = stream_of(first, &length_a);
  uint8_t *stream_b = stream_of(second, &length_b);
  assert_int_equal(length_a, length_b);
  assert_memory_equal(stream_a, stream_b, length_a);
  free(stream_a);
  free(stream_b);
  assert_invariants(first);
  kv_destroy(first);
  kv_destroy(second);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_set_plain_nx_xx),
      cmocka_unit_test(test_set_get),
      cmocka_unit_test(test_set_expiry_and_keepttl),
      cmocka_unit_test(test_set_against_model),
      cmocka_unit_test(test_set_same_length_keeps_older_versions),
      cmocka_unit_test(test_del_counts),
      cmocka_unit_test(test_incrby),
      cmocka_unit_test(test_incrby_not_integer),
      cmocka_unit_test(test_append),
      cmocka_unit_test(test_append_limit),
      cmocka_unit_test(test_expire_sweep),
      cmocka_unit_test(test_mset),
      cmocka_unit_test(test_mset_beside_snapshot),
      cmocka_unit_test(test_encoding_bytes),
      cmocka_unit_test(test_encoder_rules),
      cmocka_unit_test(test_malformed_truncations),
      cmocka_unit_test(test_malformed_fields),
      cmocka_unit_test(test_random_damage_is_deterministic),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
