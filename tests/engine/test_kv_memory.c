/*
 * test_kv_memory.c - running out of memory at every allocation a change
 * makes. The binary is linked with --wrap for malloc, calloc and realloc,
 * so the store's allocations come through here; armed, every allocation
 * from the k-th on fails. For k = 0, 1, 2, ... until the change succeeds,
 * each single-key change must either succeed or return KV_E_NOMEM with
 * the store exactly as before (compared through its snapshot stream), and
 * the invariants must hold either way. A snapshot is open during the
 * changes, so they also have to copy shared nodes and items.
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

void *__real_malloc(size_t size);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *pointer, size_t size);

/* -1: disarmed; otherwise the allocations left before they start failing. */
static long allocations_left = -1;
static unsigned long failures;

static bool allocation_fails(void) {
  if (allocations_left < 0) {
    return false;
  }
  if (allocations_left == 0) {
    failures++;
    return true;
  }
  allocations_left--;
  return false;
}

void *__wrap_malloc(size_t size) {
  return allocation_fails() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t count, size_t size) {
  return allocation_fails() ? NULL : __real_calloc(count, size);
}

void *__wrap_realloc(void *pointer, size_t size) {
  return allocation_fails() ? NULL : __real_realloc(pointer, size);
}

static void arm(long after) {
  failures = 0;
  allocations_left = after;
}

static void disarm(void) {
  allocations_left = -1;
}

static void assert_invariants(const kv_store *kv) {
  const char *broken = NULL;
  bool good = kv_check_invariants(kv, &broken);
  if (!good) {
    print_error("invariant broken: %s\n", broken);
  }
  assert_true(good);
}

static uint8_t *stream_of(kv_store *kv, size_t *length) {
  kv_snapshot *snapshot = NULL;
  assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
  *length = (size_t)kv_snapshot_stream_bytes(snapshot);
  uint8_t *bytes = malloc(*length);
  assert_non_null(bytes);
  size_t got = 0;
  bool done = false;
  assert_int_equal(kv_snapshot_read(snapshot, bytes, *length, &got, &done), 0);
  assert_true(done && got == *length);
  kv_snapshot_end(snapshot);
  return bytes;
}

/* Enough keys for a tree of three levels, some with an expiry, one
 * integer, and a value being appended to. */
static kv_store *populated(void) {
  kv_store *kv = NULL;
  assert_int_equal(kv_create(&kv), 0);
  for (int i = 0; i < 1200; i++) {
    char key[32];
    int length = snprintf(key, sizeof(key), "key:%06d", i);
    assert_int_equal(kv_put(kv, (const uint8_t *)key, (size_t)length, (const uint8_t *)"value", 5,
                            i % 3 == 0 ? 5000 + (uint64_t)i : 0),
                     0);
  }
  assert_int_equal(kv_put(kv, (const uint8_t *)"n", 1, (const uint8_t *)"41", 2, 0), 0);
  assert_int_equal(kv_put(kv, (const uint8_t *)"a", 1, (const uint8_t *)"abc", 3, 0), 0);
  return kv;
}

typedef int (*change)(kv_store *kv, const uint8_t *command, size_t length);

static int apply_command(kv_store *kv, const uint8_t *command, size_t length) {
  kv_result result;
  int rc = kv_apply(kv, command, length, &result);
  assert_int_equal(rc, result.error);
  assert_true(rc == 0 || rc == KV_E_NOMEM);
  return rc;
}

/* Fails the k-th allocation on for k = 0.. until the command succeeds;
 * with_snapshot pins the version first so the change must copy. */
static void exhaust(const uint8_t *command, size_t length, bool with_snapshot) {
  unsigned long points = 0;
  for (long k = 0;; k++) {
    kv_store *kv = populated();
    kv_snapshot *snapshot = NULL;
    if (with_snapshot) {
      assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
    }
    size_t before_length = 0;
    uint8_t *before = stream_of(kv, &before_length);
    arm(k);
    int rc = apply_command(kv, command, length);
    disarm();
    assert_invariants(kv);
    if (rc == KV_E_NOMEM) {
      size_t after_length = 0;
      uint8_t *after = stream_of(kv, &after_length);
      assert_int_equal(after_length, before_length);
      assert_memory_equal(after, before, before_length);
      free(after);
      points++;
    }
    free(before);
    kv_snapshot_end(snapshot);
    assert_invariants(kv);
    kv_destroy(kv);
    if (rc == 0) {
      assert_int_equal(failures, 0);
      break;
    }
    assert_true(k < 1000);
  }
  print_message("command kind %u: %lu allocation points, each failed cleanly\n", command[0],
                points);
}

static void test_set_out_of_memory(void **state) {
  (void)state;
  uint8_t command[128];
  size_t length = 0;
  const bool snapshot_modes[] = {false, true};
  for (size_t m = 0; m < 2; m++) {
    kv_set_command set = {.key = (const uint8_t *)"key:000600",
                          .key_length = 10,
                          .value = (const uint8_t *)"new value",
                          .value_length = 9,
                          .expire_at_ms = 9000,
                          .now_ms = 100,
                          .flags = KV_SET_GET};
    assert_int_equal(kv_command_encode_set(&set, command, sizeof(command), &length), 0);
    exhaust(command, length, snapshot_modes[m]); /* replaces, moves the expiry */
    set.key = (const uint8_t *)"new:key";
    set.key_length = 7;
    assert_int_equal(kv_command_encode_set(&set, command, sizeof(command), &length), 0);
    exhaust(command, length, snapshot_modes[m]); /* inserts, may split */
  }
}

static void test_other_commands_out_of_memory(void **state) {
  (void)state;
  uint8_t command[128];
  size_t length = 0;
  const bool snapshot_modes[] = {false, true};
  for (size_t m = 0; m < 2; m++) {
    assert_int_equal(kv_command_encode_incrby(100, (const uint8_t *)"n", 1, 1, command,
                                              sizeof(command), &length),
                     0);
    exhaust(command, length, snapshot_modes[m]);
    assert_int_equal(kv_command_encode_append(100, (const uint8_t *)"a", 1,
                                              (const uint8_t *)"0123456789abcdef", 16, command,
                                              sizeof(command), &length),
                     0);
    exhaust(command, length, snapshot_modes[m]);
    kv_bytes key = {(const uint8_t *)"key:000300", 10};
    assert_int_equal(kv_command_encode_del(100, &key, 1, command, sizeof(command), &length), 0);
    exhaust(command, length, snapshot_modes[m]);
  }
}

/* MSET of many pairs is all or nothing: whichever allocation fails, the
 * store is as before, including when the failure comes after most pairs
 * were stored. Pairs replace keys with and without an expiry and add new
 * keys at both ends and in the middle (splits). */
static void test_mset_out_of_memory(void **state) {
  (void)state;
  enum { PAIRS = 48 };
  static char names[PAIRS][32];
  kv_bytes keys[PAIRS];
  kv_bytes values[PAIRS];
  for (int i = 0; i < PAIRS; i++) {
    int length = i % 4 == 0   ? snprintf(names[i], sizeof(names[i]), "key:%06d", i * 7)
                 : i % 4 == 1 ? snprintf(names[i], sizeof(names[i]), "key:%06d:new", i * 20)
                 : i % 4 == 2 ? snprintf(names[i], sizeof(names[i]), "0-new-%d", i)
                              : snprintf(names[i], sizeof(names[i]), "z-new-%d", i);
    keys[i] = (kv_bytes){(const uint8_t *)names[i], (size_t)length};
    values[i] = (kv_bytes){(const uint8_t *)"a value of some length", 22};
  }
  uint8_t command[4096];
  size_t length = 0;
  assert_int_equal(
      kv_command_encode_mset(100, keys, values, PAIRS, command, sizeof(command), &length), 0);
  exhaust(command, length, false);
  exhaust(command, length, true);
}

/* Several keys in one command: a failure may leave some removed, but the
 * store stays consistent. */
static void test_sweep_out_of_memory(void **state) {
  (void)state;
  uint8_t command[32];
  size_t length = 0;
  assert_int_equal(kv_command_encode_expire_sweep(6000, 40, command, sizeof(command), &length), 0);
  for (long k = 0;; k++) {
    kv_store *kv = populated();
    kv_snapshot *snapshot = NULL;
    assert_int_equal(kv_snapshot_begin(kv, &snapshot), 0);
    uint64_t count = kv_count(kv);
    arm(k);
    int rc = apply_command(kv, command, length);
    disarm();
    assert_invariants(kv);
    assert_true(kv_count(kv) <= count && kv_count(kv) >= count - 40);
    kv_snapshot_end(snapshot);
    kv_destroy(kv);
    if (rc == 0) {
      break;
    }
  }
}

static void test_snapshot_and_restore_out_of_memory(void **state) {
  (void)state;
  kv_store *source = populated();
  size_t length = 0;
  uint8_t *stream = stream_of(source, &length);
  kv_store *live = populated();
  assert_int_equal(kv_delete(live, (const uint8_t *)"n", 1, NULL), 0);
  size_t before_length = 0;
  uint8_t *before = stream_of(live, &before_length);
  for (long k = 0;; k++) {
    kv_restore *restore = NULL;
    arm(k);
    int rc = kv_restore_begin(live, &restore);
    if (rc == 0) {
      rc = kv_restore_feed(restore, stream, length);
      int finished = kv_restore_finish(restore);
      rc = rc != 0 ? rc : finished;
    }
    disarm();
    assert_invariants(live);
    if (rc == 0) {
      break;
    }
    assert_int_equal(rc, KV_E_NOMEM);
    size_t after_length = 0;
    uint8_t *after = stream_of(live, &after_length);
    assert_int_equal(after_length, before_length);
    assert_memory_equal(after, before, before_length);
    free(after);
  }
  size_t now_length = 0;
  uint8_t *now = stream_of(live, &now_length);
  assert_int_equal(now_length, length);
  assert_memory_equal(now, stream, length);
  free(now);
  /* A first key with an expiry in an empty store: item, scratch buffer,
   * index entry and nodes each fail cleanly. */
  for (long k = 0;; k++) {
    kv_store *fresh = NULL;
    assert_int_equal(kv_create(&fresh), 0);
    arm(k);
    int rc = kv_put(fresh, (const uint8_t *)"key", 3, (const uint8_t *)"v", 1, 99);
    disarm();
    assert_invariants(fresh);
    assert_int_equal(kv_count(fresh), rc == 0 ? 1 : 0);
    assert_int_equal(kv_next_expiry_ms(fresh), rc == 0 ? 99 : 0);
    kv_destroy(fresh);
    if (rc == 0) {
      assert_true(k >= 4);
      break;
    }
    assert_int_equal(rc, KV_E_NOMEM);
  }
  /* Creating a store and beginning a snapshot fail cleanly too. */
  kv_store *kv = NULL;
  arm(0);
  assert_int_equal(kv_create(&kv), KV_E_NOMEM);
  disarm();
  kv_snapshot *snapshot = NULL;
  arm(0);
  assert_int_equal(kv_snapshot_begin(live, &snapshot), KV_E_NOMEM);
  disarm();
  assert_invariants(live);
  free(stream);
  free(before);
  kv_destroy(live);
  kv_destroy(source);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_set_out_of_memory),
      cmocka_unit_test(test_other_commands_out_of_memory),
      cmocka_unit_test(test_mset_out_of_memory),
      cmocka_unit_test(test_sweep_out_of_memory),
      cmocka_unit_test(test_snapshot_and_restore_out_of_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
