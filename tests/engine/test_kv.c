/*
 * test_kv.c - the KV store against a reference model: a plain sorted array
 * with the Redis rules written out the obvious way.
 *
 * The randomized test drives both with the same operations - direct puts
 * and deletes, every command kind with random flags, expiry sweeps, clock
 * steps, snapshots read in random chunks between writes, and restores of
 * the store's own stream - and compares every result, every read, full
 * scans, counts and the invariant check. Keys are chosen to stress the node
 * prefixes: short ones, long ones sharing more than a node's 24 prefix
 * bytes, binary ones with 0x00 and 0xff, keys that are prefixes of others,
 * and the empty key. A failure prints the seed and the step.
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
#include "engine/kv_internal.h" /* tree height, for the run's summary */
#include "tests/support/random.h"

/* ---- Reference model ------------------------------------------------------ */

typedef struct model_entry {
  uint8_t *key;
  size_t key_length;
  uint8_t *value;
  size_t value_length;
  uint64_t expire_at_ms;
} model_entry;

/* Pointers, so that inserting and removing moves 8 bytes per entry. */
typedef struct model {
  model_entry **entries;
  size_t count;
  size_t capacity;
} model;

static int compare_keys(const uint8_t *a, size_t a_length, const uint8_t *b, size_t b_length) {
  size_t shared = a_length < b_length ? a_length : b_length;
  int order = shared == 0 ? 0 : memcmp(a, b, shared);
  if (order != 0) {
    return order;
  }
  return (a_length > b_length) - (a_length < b_length);
}

static uint8_t *duplicate(const uint8_t *bytes, size_t length) {
  uint8_t *copy = malloc(length + 1);
  assert_non_null(copy);
  if (length > 0) {
    memcpy(copy, bytes, length);
  }
  return copy;
}

/* Index of the first entry >= key. */
static size_t model_lower_bound(const model *m, const uint8_t *key, size_t key_length,
                                bool *found) {
  size_t low = 0;
  size_t high = m->count;
  while (low < high) {
    size_t middle = (low + high) / 2;
    if (compare_keys(m->entries[middle]->key, m->entries[middle]->key_length, key, key_length) <
        0) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  *found = low < m->count &&
           compare_keys(m->entries[low]->key, m->entries[low]->key_length, key, key_length) == 0;
  return low;
}

static model_entry *model_stored(model *m, const uint8_t *key, size_t key_length) {
  bool found;
  size_t index = model_lower_bound(m, key, key_length, &found);
  return found ? m->entries[index] : NULL;
}

static bool expired(const model_entry *entry, uint64_t now_ms) {
  return entry->expire_at_ms != 0 && entry->expire_at_ms <= now_ms;
}

static model_entry *model_live(model *m, const uint8_t *key, size_t key_length, uint64_t now_ms) {
  model_entry *entry = model_stored(m, key, key_length);
  return entry != NULL && !expired(entry, now_ms) ? entry : NULL;
}

static void model_put(model *m, const uint8_t *key, size_t key_length, const uint8_t *value,
                      size_t value_length, uint64_t expire_at_ms) {
  bool found;
  size_t index = model_lower_bound(m, key, key_length, &found);
  uint8_t *value_copy = duplicate(value, value_length);
  if (found) {
    free(m->entries[index]->value);
    m->entries[index]->value = value_copy;
    m->entries[index]->value_length = value_length;
    m->entries[index]->expire_at_ms = expire_at_ms;
    return;
  }
  if (m->count == m->capacity) {
    m->capacity = m->capacity == 0 ? 64 : 2 * m->capacity;
    m->entries = realloc(m->entries, m->capacity * sizeof(*m->entries));
    assert_non_null(m->entries);
  }
  memmove(&m->entries[index + 1], &m->entries[index], (m->count - index) * sizeof(model_entry *));
  model_entry *entry = malloc(sizeof(*entry));
  assert_non_null(entry);
  *entry =
      (model_entry){duplicate(key, key_length), key_length, value_copy, value_length, expire_at_ms};
  m->entries[index] = entry;
  m->count++;
}

static bool model_remove(model *m, const uint8_t *key, size_t key_length) {
  bool found;
  size_t index = model_lower_bound(m, key, key_length, &found);
  if (!found) {
    return false;
  }
  free(m->entries[index]->key);
  free(m->entries[index]->value);
  free(m->entries[index]);
  memmove(&m->entries[index], &m->entries[index + 1],
          (m->count - index - 1) * sizeof(model_entry *));
  m->count--;
  return true;
}

static void model_free(model *m) {
  for (size_t i = 0; i < m->count; i++) {
    free(m->entries[i]->key);
    free(m->entries[i]->value);
    free(m->entries[i]);
  }
  free(m->entries);
  *m = (model){0};
}

/* The stream the format in kv.h describes, written independently. */
static uint8_t *model_stream(const model *m, size_t *length) {
  size_t records = 0;
  for (size_t i = 0; i < m->count; i++) {
    records += 16 + m->entries[i]->key_length + m->entries[i]->value_length;
  }
  *length = 32 + records + 8;
  uint8_t *stream = malloc(*length);
  assert_non_null(stream);
  uint32_t magic = 0x534b4c46u;
  uint16_t version = 1, flags = 0;
  uint64_t count = m->count, records_bytes = records;
  memcpy(stream, &magic, 4);
  memcpy(stream + 4, &version, 2);
  memcpy(stream + 6, &flags, 2);
  memcpy(stream + 8, &count, 8);
  memcpy(stream + 16, &records_bytes, 8);
  uint64_t header_checksum = XXH3_64bits(stream, 24);
  memcpy(stream + 24, &header_checksum, 8);
  size_t at = 32;
  for (size_t i = 0; i < m->count; i++) {
    const model_entry *e = m->entries[i];
    uint32_t key_length = (uint32_t)e->key_length, value_length = (uint32_t)e->value_length;
    memcpy(stream + at, &key_length, 4);
    memcpy(stream + at + 4, &value_length, 4);
    memcpy(stream + at + 8, &e->expire_at_ms, 8);
    memcpy(stream + at + 16, e->key, e->key_length);
    memcpy(stream + at + 16 + e->key_length, e->value, e->value_length);
    at += 16 + e->key_length + e->value_length;
  }
  uint64_t checksum = XXH3_64bits(stream, at);
  memcpy(stream + at, &checksum, 8);
  return stream;
}

/* ---- Model commands ------------------------------------------------------- */

typedef struct expected {
  kv_status status;
  int error;
  int64_t integer;
  bool has_value;
  uint8_t *value; /* owned */
  size_t value_length;
} expected;

static void expect_old_value(expected *x, const model_entry *entry) {
  x->has_value = true;
  x->value = duplicate(entry->value, entry->value_length);
  x->value_length = entry->value_length;
}

static void model_set(model *m, uint32_t flags, uint64_t now_ms, uint64_t expire_at_ms,
                      const kv_bytes *key, const kv_bytes *value, expected *x) {
  model_entry *old = model_live(m, key->data, key->length, now_ms);
  if (((flags & KV_SET_NX) && old != NULL) || ((flags & KV_SET_XX) && old == NULL)) {
    x->status = KV_STATUS_NOT_APPLIED;
    if ((flags & KV_SET_GET) && old != NULL) {
      expect_old_value(x, old);
    }
    return;
  }
  if ((flags & KV_SET_GET) && old != NULL) {
    expect_old_value(x, old);
  }
  if ((flags & KV_SET_KEEPTTL) && old != NULL) {
    expire_at_ms = old->expire_at_ms;
  }
  if (expire_at_ms != 0 && expire_at_ms <= now_ms) {
    model_remove(m, key->data, key->length);
  } else {
    model_put(m, key->data, key->length, value->data, value->length, expire_at_ms);
  }
  x->status = KV_STATUS_OK;
}

static void model_del(model *m, uint64_t now_ms, const kv_bytes *keys, size_t count, expected *x) {
  x->status = KV_STATUS_OK;
  for (size_t i = 0; i < count; i++) {
    model_entry *entry = model_stored(m, keys[i].data, keys[i].length);
    if (entry != NULL) {
      x->integer += expired(entry, now_ms) ? 0 : 1;
      model_remove(m, keys[i].data, keys[i].length);
    }
  }
}

/* An integer is a value that is the canonical decimal text of an int64:
 * the same set Redis accepts, defined without a hand-written parser. */
static bool model_integer(const model_entry *entry, int64_t *value) {
  char text[32];
  if (entry->value_length == 0 || entry->value_length > 20) {
    return false;
  }
  memcpy(text, entry->value, entry->value_length);
  text[entry->value_length] = 0;
  char *end = NULL;
  long long parsed = strtoll(text, &end, 10);
  char canonical[32];
  snprintf(canonical, sizeof(canonical), "%lld", parsed);
  if (strlen(canonical) != entry->value_length || memcmp(canonical, text, entry->value_length)) {
    return false;
  }
  *value = parsed;
  return true;
}

static void model_incrby(model *m, uint64_t now_ms, const kv_bytes *key, int64_t delta,
                         expected *x) {
  model_entry *old = model_live(m, key->data, key->length, now_ms);
  int64_t current = 0;
  if (old != NULL && !model_integer(old, &current)) {
    x->status = KV_STATUS_ERROR;
    x->error = KV_E_NOT_INTEGER;
    return;
  }
  int64_t sum;
  if (__builtin_add_overflow(current, delta, &sum)) {
    x->status = KV_STATUS_ERROR;
    x->error = KV_E_OVERFLOW;
    return;
  }
  char text[32];
  int length = snprintf(text, sizeof(text), "%lld", (long long)sum);
  model_put(m, key->data, key->length, (const uint8_t *)text, (size_t)length,
            old != NULL ? old->expire_at_ms : 0);
  x->status = KV_STATUS_OK;
  x->integer = sum;
}

static void model_append(model *m, uint64_t now_ms, const kv_bytes *key, const kv_bytes *tail,
                         expected *x) {
  model_entry *old = model_live(m, key->data, key->length, now_ms);
  size_t kept = old != NULL ? old->value_length : 0;
  if (kept + tail->length > KV_MAX_VALUE_BYTES) {
    x->status = KV_STATUS_ERROR;
    x->error = KV_E_TOO_LARGE;
    return;
  }
  uint8_t *joined = malloc(kept + tail->length + 1);
  assert_non_null(joined);
  if (kept > 0) {
    memcpy(joined, old->value, kept);
  }
  if (tail->length > 0) {
    memcpy(joined + kept, tail->data, tail->length);
  }
  model_put(m, key->data, key->length, joined, kept + tail->length,
            old != NULL ? old->expire_at_ms : 0);
  free(joined);
  x->status = KV_STATUS_OK;
  x->integer = (int64_t)(kept + tail->length);
}

static model_entry *const *sweep_entries;
static int compare_expiry_order(const void *a, const void *b) {
  const model_entry *x = sweep_entries[*(const size_t *)a];
  const model_entry *y = sweep_entries[*(const size_t *)b];
  if (x->expire_at_ms != y->expire_at_ms) {
    return x->expire_at_ms < y->expire_at_ms ? -1 : 1;
  }
  return compare_keys(x->key, x->key_length, y->key, y->key_length);
}

static void model_sweep(model *m, uint64_t now_ms, uint32_t max_keys, expected *x) {
  size_t *order = malloc((m->count + 1) * sizeof(*order));
  assert_non_null(order);
  size_t due = 0;
  for (size_t i = 0; i < m->count; i++) {
    if (expired(m->entries[i], now_ms)) {
      order[due++] = i;
    }
  }
  sweep_entries = m->entries;
  qsort(order, due, sizeof(*order), compare_expiry_order);
  size_t removed = due < max_keys ? due : max_keys;
  kv_bytes *keys = malloc((removed + 1) * sizeof(*keys));
  assert_non_null(keys);
  for (size_t i = 0; i < removed; i++) {
    const model_entry *e = m->entries[order[i]];
    keys[i] = (kv_bytes){duplicate(e->key, e->key_length), e->key_length};
  }
  for (size_t i = 0; i < removed; i++) {
    model_remove(m, keys[i].data, keys[i].length);
    free((void *)keys[i].data);
  }
  free(keys);
  free(order);
  x->status = KV_STATUS_OK;
  x->integer = (int64_t)removed;
}

/* ---- The randomized run --------------------------------------------------- */

#define RUN_SNAPSHOTS 2
#define CHUNK_MOST 700

typedef struct open_snapshot {
  kv_snapshot *snapshot;
  uint8_t *expected;
  size_t expected_length;
  uint8_t *received;
  size_t received_length;
  size_t chunk_most; /* reads finish in about 3000 steps whatever the size */
} open_snapshot;

typedef struct run {
  uint64_t seed;
  uint64_t step;
  trandom random;
  kv_store *kv;
  model m;
  uint64_t now_ms;
  kv_bytes *keys;
  size_t key_count;
  open_snapshot snapshots[RUN_SNAPSHOTS];
  uint8_t *command;
  size_t command_capacity;
  /* What the run exercised, printed at its end. */
  uint64_t outcomes[3];
  uint64_t errors;
  uint64_t snapshots_verified;
  uint64_t round_trips;
  uint64_t restores;
  uint64_t most_entries;
  uint32_t most_height;
} run;

#define EXPECT(r, condition)                                                                       \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      print_error("seed %llu step %llu: %s (%s:%d)\n", (unsigned long long)(r)->seed,              \
                  (unsigned long long)(r)->step, #condition, __FILE__, __LINE__);                  \
      fail();                                                                                      \
    }                                                                                              \
  } while (0)

static void make_key(run *r, size_t i, uint8_t *key, size_t *length) {
  switch (i % 6) {
  case 0:
    *length = (size_t)sprintf((char *)key, "k%05zu", i);
    break;
  case 1: /* longer than a node's 24 remembered prefix bytes, all alike */
    *length = (size_t)sprintf((char *)key, "user:session:0000000000000:%08zu", i);
    break;
  case 2: { /* binary, short */
    static const uint8_t alphabet[] = {0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, 'a'};
    *length = 1 + (size_t)trandom_below(&r->random, 12);
    for (size_t j = 0; j < *length; j++) {
      key[j] = alphabet[trandom_below(&r->random, sizeof(alphabet))];
    }
    break;
  }
  case 3: /* a family of keys that are prefixes of one another */
    *length = 1 + (i / 6) % 40;
    memset(key, 'a', *length);
    break;
  case 4: /* the same with zero bytes, which pad windows the same way */
    *length = 1 + (i / 6) % 30;
    memset(key, 0, *length);
    key[0] = 'p';
    break;
  default: /* long, random tail */
    *length = (size_t)sprintf((char *)key, "LONGKEY-%zu-", i % 97);
    size_t tail = 20 + (size_t)trandom_below(&r->random, 80);
    for (size_t j = 0; j < tail; j++) {
      key[*length + j] = (uint8_t)trandom_below(&r->random, 256);
    }
    *length += tail;
  }
}

static void make_keys(run *r, size_t count) {
  r->keys = calloc(count, sizeof(*r->keys));
  assert_non_null(r->keys);
  uint8_t key[256];
  for (size_t i = 1; i < count; i++) { /* keys[0] is the empty key */
    size_t length = 0;
    make_key(r, i, key, &length);
    r->keys[i] = (kv_bytes){duplicate(key, length), length};
  }
  r->keys[0] = (kv_bytes){duplicate(key, 0), 0};
  r->key_count = count;
}

static const kv_bytes *pick_key(run *r) {
  return &r->keys[trandom_below(&r->random, r->key_count)];
}

/* Values: mostly small, some large, some integers (canonical or nearly). */
static size_t make_value(run *r, uint8_t *value) {
  static const char *const near_integers[] = {"007",
                                              "-0",
                                              "+5",
                                              " 5",
                                              "5 ",
                                              "",
                                              "-",
                                              "1e3",
                                              "12a",
                                              "9223372036854775808",
                                              "-9223372036854775809",
                                              "0x10"};
  uint64_t kind = trandom_below(&r->random, 100);
  if (kind < 20) {
    static const int64_t edges[] = {0, 1, -1, INT64_MAX, INT64_MIN, INT64_MAX - 3, INT64_MIN + 3};
    int64_t number = trandom_chance(&r->random, 500000)
                         ? edges[trandom_below(&r->random, sizeof(edges) / sizeof(edges[0]))]
                         : (int64_t)trandom_range(&r->random, 0, 2000) - 1000;
    return (size_t)sprintf((char *)value, "%lld", (long long)number);
  }
  if (kind < 25) {
    const char *text =
        near_integers[trandom_below(&r->random, sizeof(near_integers) / sizeof(near_integers[0]))];
    memcpy(value, text, strlen(text));
    return strlen(text);
  }
  size_t length = kind < 80    ? (size_t)trandom_below(&r->random, 25)
                  : kind < 97  ? (size_t)trandom_range(&r->random, 25, 400)
                  : kind < 100 ? (size_t)trandom_range(&r->random, 401, 5000)
                               : 0;
  if (trandom_chance(&r->random, 2000)) {
    length = (size_t)trandom_range(&r->random, 5000, 70000);
  }
  for (size_t i = 0; i < length; i++) {
    value[i] = (uint8_t)trandom_below(&r->random, 256);
  }
  return length;
}

static uint64_t make_expiry(run *r) {
  uint64_t kind = trandom_below(&r->random, 10);
  if (kind < 6) {
    return 0;
  }
  if (kind < 9) {
    return r->now_ms + trandom_range(&r->random, 1, 3000);
  }
  return r->now_ms - trandom_below(&r->random, 50); /* due already, or exactly now */
}

static void check_result(run *r, const kv_result *result, int rc, expected *x) {
  EXPECT(r, rc == x->error);
  EXPECT(r, result->status == x->status);
  EXPECT(r, result->error == x->error);
  EXPECT(r, (result->message != NULL) == (x->status == KV_STATUS_ERROR));
  EXPECT(r, x->status == KV_STATUS_ERROR || result->integer == x->integer);
  EXPECT(r, result->has_value == x->has_value);
  if (x->has_value) {
    EXPECT(r, result->value_length == x->value_length);
    EXPECT(r, x->value_length == 0 || memcmp(result->value, x->value, x->value_length) == 0);
  }
  free(x->value);
}

static void check_key(run *r, const kv_bytes *key) {
  kv_entry entry;
  model_entry *want = model_live(&r->m, key->data, key->length, r->now_ms);
  bool found = kv_get(r->kv, key->data, key->length, r->now_ms, &entry);
  EXPECT(r, found == (want != NULL));
  if (found) {
    EXPECT(r, entry.key_length == key->length);
    EXPECT(r, key->length == 0 || memcmp(entry.key, key->data, key->length) == 0);
    EXPECT(r, entry.value_length == want->value_length);
    EXPECT(r, want->value_length == 0 || memcmp(entry.value, want->value, want->value_length) == 0);
    EXPECT(r, entry.expire_at_ms == want->expire_at_ms);
  }
}

static uint8_t *command_buffer(run *r, size_t length) {
  if (length > r->command_capacity) {
    r->command = realloc(r->command, length);
    assert_non_null(r->command);
    r->command_capacity = length;
  }
  return r->command;
}

static uint8_t value_buffer[80000];

static void do_put(run *r) {
  const kv_bytes *key = pick_key(r);
  size_t length = make_value(r, value_buffer);
  uint64_t expire_at_ms = make_expiry(r);
  EXPECT(r, kv_put(r->kv, key->data, key->length, value_buffer, length, expire_at_ms) == 0);
  model_put(&r->m, key->data, key->length, value_buffer, length, expire_at_ms);
  check_key(r, key);
}

static void do_delete(run *r) {
  const kv_bytes *key = pick_key(r);
  bool existed = false;
  EXPECT(r, kv_delete(r->kv, key->data, key->length, &existed) == 0);
  EXPECT(r, existed == model_remove(&r->m, key->data, key->length));
  check_key(r, key);
}

static void apply_and_check(run *r, size_t length, expected *x) {
  kv_result result;
  int rc = kv_apply(r->kv, r->command, length, &result);
  r->outcomes[result.status]++;
  r->errors += rc != 0 ? 1 : 0;
  check_result(r, &result, rc, x);
}

static void do_set(run *r) {
  const kv_bytes *key = pick_key(r);
  kv_set_command command = {.key = key->data, .key_length = key->length, .now_ms = r->now_ms};
  command.value = value_buffer;
  command.value_length = make_value(r, value_buffer);
  uint64_t condition = trandom_below(&r->random, 5);
  command.flags = condition == 0 ? KV_SET_NX : condition == 1 ? KV_SET_XX : 0;
  command.flags |= trandom_chance(&r->random, 300000) ? KV_SET_GET : 0;
  command.expire_at_ms = make_expiry(r);
  if (command.expire_at_ms == 0 && trandom_chance(&r->random, 300000)) {
    command.flags |= KV_SET_KEEPTTL;
  }
  size_t length = 0;
  EXPECT(r, kv_command_encode_set(&command, NULL, 0, &length) == KV_E_NO_SPACE);
  EXPECT(r, kv_command_encode_set(&command, command_buffer(r, length), length, &length) == 0);
  expected x = {0};
  kv_bytes value = {value_buffer, command.value_length};
  model_set(&r->m, command.flags, r->now_ms, command.expire_at_ms, key, &value, &x);
  apply_and_check(r, length, &x);
  check_key(r, key);
}

static void do_del(run *r) {
  kv_bytes keys[6];
  size_t count = 1 + (size_t)trandom_below(&r->random, 6);
  for (size_t i = 0; i < count; i++) {
    keys[i] = *pick_key(r);
  }
  size_t length = 0;
  EXPECT(r, kv_command_encode_del(r->now_ms, keys, count, NULL, 0, &length) == KV_E_NO_SPACE);
  EXPECT(r, kv_command_encode_del(r->now_ms, keys, count, command_buffer(r, length), length,
                                  &length) == 0);
  expected x = {0};
  model_del(&r->m, r->now_ms, keys, count, &x);
  apply_and_check(r, length, &x);
  check_key(r, &keys[0]);
}

static int64_t make_delta(run *r) {
  uint64_t kind = trandom_below(&r->random, 10);
  if (kind < 6) {
    return (int64_t)trandom_range(&r->random, 0, 200) - 100;
  }
  if (kind < 8) {
    return (int64_t)trandom_next(&r->random);
  }
  return kind == 8 ? INT64_MAX - (int64_t)trandom_below(&r->random, 4)
                   : INT64_MIN + (int64_t)trandom_below(&r->random, 4);
}

static void do_incrby(run *r) {
  const kv_bytes *key = pick_key(r);
  int64_t delta = make_delta(r);
  size_t length = 0;
  uint8_t *buffer = command_buffer(r, 32 + key->length);
  EXPECT(r, kv_command_encode_incrby(r->now_ms, key->data, key->length, delta, buffer,
                                     r->command_capacity, &length) == 0);
  expected x = {0};
  model_incrby(&r->m, r->now_ms, key, delta, &x);
  apply_and_check(r, length, &x);
  check_key(r, key);
}

static void do_append(run *r) {
  const kv_bytes *key = pick_key(r);
  size_t tail_length = (size_t)trandom_below(&r->random, 30);
  if (trandom_chance(&r->random, 20000)) {
    tail_length = (size_t)trandom_range(&r->random, 30, 20000);
  }
  for (size_t i = 0; i < tail_length; i++) {
    value_buffer[i] = (uint8_t)('a' + trandom_below(&r->random, 26));
  }
  size_t length = 0;
  uint8_t *buffer = command_buffer(r, 32 + key->length + tail_length);
  EXPECT(r, kv_command_encode_append(r->now_ms, key->data, key->length, value_buffer, tail_length,
                                     buffer, r->command_capacity, &length) == 0);
  expected x = {0};
  kv_bytes tail = {value_buffer, tail_length};
  model_append(&r->m, r->now_ms, key, &tail, &x);
  apply_and_check(r, length, &x);
  check_key(r, key);
}

static void do_sweep(run *r) {
  uint32_t max_keys = 1 + (uint32_t)trandom_below(&r->random, 40);
  uint64_t earliest = 0;
  for (size_t i = 0; i < r->m.count; i++) {
    uint64_t at = r->m.entries[i]->expire_at_ms;
    earliest = at != 0 && (earliest == 0 || at < earliest) ? at : earliest;
  }
  EXPECT(r, kv_next_expiry_ms(r->kv) == earliest);
  size_t length = 0;
  EXPECT(r, kv_command_encode_expire_sweep(r->now_ms, max_keys, command_buffer(r, 32), 32,
                                           &length) == 0);
  expected x = {0};
  model_sweep(&r->m, r->now_ms, max_keys, &x);
  apply_and_check(r, length, &x);
}

/* Entries >= start in order, expired skipped, at most capacity. */
static void do_scan(run *r, const kv_bytes *start, size_t capacity) {
  kv_entry entries[64];
  assert_true(capacity <= 64);
  size_t filled = kv_scan(r->kv, start->data, start->length, r->now_ms, entries, capacity);
  bool found;
  size_t index = model_lower_bound(&r->m, start->data, start->length, &found);
  size_t matched = 0;
  for (; index < r->m.count && matched < capacity; index++) {
    const model_entry *want = r->m.entries[index];
    if (expired(want, r->now_ms)) {
      continue;
    }
    EXPECT(r, matched < filled);
    const kv_entry *got = &entries[matched++];
    EXPECT(r, compare_keys(got->key, got->key_length, want->key, want->key_length) == 0);
    EXPECT(r, got->value_length == want->value_length);
    EXPECT(r, want->value_length == 0 || memcmp(got->value, want->value, want->value_length) == 0);
    EXPECT(r, got->expire_at_ms == want->expire_at_ms);
  }
  EXPECT(r, matched == filled);
}

/* Pages through everything with the successor of the last key. */
static void check_everything(run *r) {
  const char *broken = NULL;
  if (!kv_check_invariants(r->kv, &broken)) {
    print_error("seed %llu step %llu: invariant broken: %s\n", (unsigned long long)r->seed,
                (unsigned long long)r->step, broken);
    fail();
  }
  EXPECT(r, kv_count(r->kv) == r->m.count);
  uint8_t start[512];
  kv_bytes from = {start, 0};
  size_t live = 0;
  for (size_t i = 0; i < r->m.count; i++) {
    live += expired(r->m.entries[i], r->now_ms) ? 0 : 1;
  }
  size_t seen = 0;
  for (;;) {
    kv_entry entries[64];
    size_t filled = kv_scan(r->kv, from.data, from.length, r->now_ms, entries, 64);
    do_scan(r, &from, 64);
    seen += filled;
    if (filled < 64) {
      break;
    }
    const kv_entry *last = &entries[filled - 1];
    assert_true(last->key_length < sizeof(start));
    memcpy(start, last->key, last->key_length);
    start[last->key_length] = 0;
    from.length = last->key_length + 1;
  }
  EXPECT(r, seen == live);
}

/* ---- Snapshots inside the run --------------------------------------------- */

static void snapshot_open(run *r) {
  for (size_t i = 0; i < RUN_SNAPSHOTS; i++) {
    open_snapshot *o = &r->snapshots[i];
    if (o->snapshot != NULL) {
      continue;
    }
    EXPECT(r, kv_snapshot_begin(r->kv, &o->snapshot) == 0);
    o->expected = model_stream(&r->m, &o->expected_length);
    EXPECT(r, kv_snapshot_stream_bytes(o->snapshot) == o->expected_length);
    EXPECT(r, kv_snapshot_count(o->snapshot) == r->m.count);
    o->chunk_most = o->expected_length / 1500 > CHUNK_MOST ? o->expected_length / 1500 : CHUNK_MOST;
    o->received = malloc(o->expected_length + o->chunk_most);
    assert_non_null(o->received);
    o->received_length = 0;
    return;
  }
}

static void snapshot_close(open_snapshot *o) {
  kv_snapshot_end(o->snapshot);
  free(o->expected);
  free(o->received);
  *o = (open_snapshot){0};
}

/* Restores stream into a new store, snapshots that again and compares. */
static void check_round_trip(run *r, const uint8_t *stream, size_t length) {
  kv_store *copy = NULL;
  kv_restore *restore = NULL;
  EXPECT(r, kv_create(&copy) == 0);
  EXPECT(r, kv_restore_begin(copy, &restore) == 0);
  for (size_t at = 0; at < length;) {
    size_t chunk = 1 + (size_t)trandom_below(&r->random, 3000);
    chunk = chunk < length - at ? chunk : length - at;
    EXPECT(r, kv_restore_feed(restore, stream + at, chunk) == 0);
    at += chunk;
  }
  EXPECT(r, kv_restore_finish(restore) == 0);
  const char *broken = NULL;
  EXPECT(r, kv_check_invariants(copy, &broken));
  kv_snapshot *again = NULL;
  EXPECT(r, kv_snapshot_begin(copy, &again) == 0);
  uint8_t *bytes = malloc(length + 1);
  size_t got = 0;
  bool done = false;
  EXPECT(r, kv_snapshot_read(again, bytes, length + 1, &got, &done) == 0);
  EXPECT(r, done && got == length && memcmp(bytes, stream, length) == 0);
  free(bytes);
  kv_snapshot_end(again);
  kv_destroy(copy);
}

/* Reads a random chunk of each open snapshot, between the writes. */
static void snapshot_advance(run *r) {
  for (size_t i = 0; i < RUN_SNAPSHOTS; i++) {
    open_snapshot *o = &r->snapshots[i];
    if (o->snapshot == NULL) {
      continue;
    }
    if (trandom_chance(&r->random, 200)) {
      snapshot_close(o); /* abandoned half way */
      continue;
    }
    size_t capacity = 1 + (size_t)trandom_below(&r->random, o->chunk_most);
    size_t length = 0;
    bool done = false;
    EXPECT(r, kv_snapshot_read(o->snapshot, o->received + o->received_length, capacity, &length,
                               &done) == 0);
    o->received_length += length;
    EXPECT(r, o->received_length <= o->expected_length);
    EXPECT(r, done || length == capacity);
    if (!done) {
      continue;
    }
    EXPECT(r, o->received_length == o->expected_length);
    EXPECT(r, memcmp(o->received, o->expected, o->expected_length) == 0);
    r->snapshots_verified++;
    if (trandom_chance(&r->random, 300000)) {
      check_round_trip(r, o->received, o->received_length);
      r->round_trips++;
    }
    snapshot_close(o);
  }
}

/* Replaces the live store by a restore of its own stream: the bulk-built
 * tree must then take the rest of the run. */
static void restore_in_place(run *r) {
  size_t length = 0;
  uint8_t *stream = model_stream(&r->m, &length);
  kv_restore *restore = NULL;
  EXPECT(r, kv_restore_begin(r->kv, &restore) == 0);
  EXPECT(r, kv_restore_feed(restore, stream, length) == 0);
  EXPECT(r, kv_restore_finish(restore) == 0);
  free(stream);
  r->restores++;
  check_everything(r);
}

static void run_step(run *r) {
  uint64_t choice = trandom_below(&r->random, 1000);
  if (choice < 140) {
    do_put(r);
  } else if (choice < 220) {
    do_delete(r);
  } else if (choice < 420) {
    do_set(r);
  } else if (choice < 480) {
    do_del(r);
  } else if (choice < 580) {
    do_incrby(r);
  } else if (choice < 660) {
    do_append(r);
  } else if (choice < 690) {
    do_sweep(r);
  } else if (choice < 840) {
    check_key(r, pick_key(r));
  } else if (choice < 890) {
    do_scan(r, pick_key(r), 1 + (size_t)trandom_below(&r->random, 64));
  } else if (choice < 990) {
    r->now_ms += trandom_below(&r->random, 100);
  } else if (choice < 999) {
    snapshot_open(r);
  } else if (trandom_chance(&r->random, 100000)) {
    restore_in_place(r);
  }
  snapshot_advance(r);
}

static void run_model(uint64_t seed, size_t key_count, uint64_t steps) {
  run r = {.seed = seed, .now_ms = 1000000};
  trandom_seed(&r.random, seed);
  make_keys(&r, key_count);
  assert_int_equal(kv_create(&r.kv), 0);
  for (r.step = 0; r.step < steps; r.step++) {
    run_step(&r);
    r.most_entries = r.m.count > r.most_entries ? r.m.count : r.most_entries;
    r.most_height = r.kv->main.height > r.most_height ? r.kv->main.height : r.most_height;
    if (r.step % 4999 == 0) {
      check_everything(&r);
    }
  }
  check_everything(&r);
  for (size_t i = 0; i < RUN_SNAPSHOTS; i++) {
    if (r.snapshots[i].snapshot != NULL) {
      snapshot_close(&r.snapshots[i]);
    }
  }
  check_everything(&r);
  print_message("seed %llu: %llu steps; commands ok %llu, not applied %llu, errors %llu; "
                "up to %llu entries, height %u; %llu snapshots verified, %llu round trips, "
                "%llu restores\n",
                (unsigned long long)seed, (unsigned long long)steps,
                (unsigned long long)r.outcomes[KV_STATUS_OK],
                (unsigned long long)r.outcomes[KV_STATUS_NOT_APPLIED], (unsigned long long)r.errors,
                (unsigned long long)r.most_entries, r.most_height,
                (unsigned long long)r.snapshots_verified, (unsigned long long)r.round_trips,
                (unsigned long long)r.restores);
  kv_destroy(r.kv);
  model_free(&r.m);
  for (size_t i = 0; i < r.key_count; i++) {
    free((void *)r.keys[i].data);
  }
  free(r.keys);
  free(r.command);
}

/* Few keys: heavy churn on a shallow tree, every key touched often. */
static void test_model_small(void **state) {
  (void)state;
  for (uint64_t seed = 1; seed <= 3; seed++) {
    run_model(seed, 60, 100000);
  }
}

/* More keys: a tree three levels deep, merges and rotations between
 * internal nodes. */
static void test_model_medium(void **state) {
  (void)state;
  for (uint64_t seed = 11; seed <= 13; seed++) {
    run_model(seed, 3000, 100000);
  }
}

/* Enough keys for four levels. */
static void test_model_large(void **state) {
  (void)state;
  run_model(21, 150000, 200000);
}

/* ---- Direct cases --------------------------------------------------------- */

static void assert_invariants(const kv_store *kv) {
  const char *broken = NULL;
  bool good = kv_check_invariants(kv, &broken);
  if (!good) {
    print_error("invariant broken: %s\n", broken);
  }
  assert_true(good);
}

static void put_text(kv_store *kv, const char *key, const char *value, uint64_t expire_at_ms) {
  assert_int_equal(kv_put(kv, (const uint8_t *)key, strlen(key), (const uint8_t *)value,
                          strlen(value), expire_at_ms),
                   0);
}

static bool get_text(kv_store *kv, const char *key, uint64_t now_ms, const char *value) {
  kv_entry entry;
  if (!kv_get(kv, (const uint8_t *)key, strlen(key), now_ms, &entry)) {
    return value == NULL;
  }
  return value != NULL && entry.value_length == strlen(value) &&
         memcmp(entry.value, value, entry.value_length) == 0;
}

static void test_empty_store(void **state) {
  (void)state;
  kv_store *kv = NULL;
  assert_int_equal(kv_create(&kv), 0);
  kv_entry entry;
  assert_false(kv_get(kv, NULL, 0, 0, &entry));
  assert_int_equal(kv_scan(kv, NULL, 0, 0, &entry, 1), 0);
  assert_int_equal(kv_count(kv), 0);
  assert_int_equal(kv_memory_bytes(kv), 0);
  assert_int_equal(kv_next_expiry_ms(kv), 0);
  bool existed = true;
  assert_int_equal(kv_delete(kv, (const uint8_t *)"x", 1, &existed), 0);
  assert_false(existed);
  uint32_t removed = 7;
  assert_int_equal(kv_expire_step(kv, UINT64_MAX, 10, &removed), 0);
  assert_int_equal(removed, 0);
  assert_invariants(kv);
  kv_destroy(kv);
  kv_destroy(NULL);
}

static void test_basic_operations(void **state) {
  (void)state;
  kv_store *kv = NULL;
  assert_int_equal(kv_create(&kv), 0);
  put_text(kv, "alpha", "1", 0);
  put_text(kv, "beta", "2", 0);
  put_text(kv, "", "empty key", 0);
  assert_true(get_text(kv, "alpha", 0, "1"));
  assert_true(get_text(kv, "", 0, "empty key"));
  put_text(kv, "alpha", "one", 0);
  assert_true(get_text(kv, "alpha", 0, "one"));
  assert_int_equal(kv_count(kv), 3);
  bool existed = false;
  assert_int_equal(kv_delete(kv, (const uint8_t *)"alpha", 5, &existed), 0);
  assert_true(existed);
  assert_true(get_text(kv, "alpha", 0, NULL));
  assert_int_equal(kv_count(kv), 2);
  /* Bounds: the largest key and value pass, one byte more does not. */
  uint8_t *big = calloc(1, KV_MAX_VALUE_BYTES + 1);
  assert_non_null(big);
  assert_int_equal(kv_put(kv, big, KV_MAX_KEY_BYTES, big, KV_MAX_VALUE_BYTES, 0), 0);
  assert_int_equal(kv_put(kv, big, KV_MAX_KEY_BYTES + 1, big, 1, 0), KV_E_INVALID);
  assert_int_equal(kv_put(kv, big, 1, big, KV_MAX_VALUE_BYTES + 1, 0), KV_E_INVALID);
  kv_entry entry;
  assert_true(kv_get(kv, big, KV_MAX_KEY_BYTES, 0, &entry));
  assert_int_equal(entry.value_length, KV_MAX_VALUE_BYTES);
  assert_false(kv_get(kv, big, KV_MAX_KEY_BYTES + 1, 0, &entry));
  assert_true(kv_memory_bytes(kv) > KV_MAX_VALUE_BYTES + KV_MAX_KEY_BYTES);
  free(big);
  /* Expiry: present strictly before expire_at_ms. */
  put_text(kv, "ttl", "x", 5000);
  assert_true(get_text(kv, "ttl", 4999, "x"));
  assert_true(get_text(kv, "ttl", 5000, NULL));
  assert_int_equal(kv_next_expiry_ms(kv), 5000);
  assert_invariants(kv);
  kv_destroy(kv);
}

/* Scan order is memcmp order with a proper prefix first, whatever the bytes. */
static void test_scan_order_and_paging(void **state) {
  (void)state;
  static const struct {
    const char *bytes;
    size_t length;
  } sorted[] = {
      {"", 0},     {"\0", 1},      {"\0\0", 2}, {"\0\x01", 2},
      {"a", 1},    {"a\0", 2},     {"aa", 2},   {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 40},
      {"ab", 2},   {"b", 1},       {"\x7f", 1}, {"\x80", 1},
      {"\xff", 1}, {"\xff\xff", 2}};
  const size_t count = sizeof(sorted) / sizeof(sorted[0]);
  kv_store *kv = NULL;
  assert_int_equal(kv_create(&kv), 0);
  for (size_t i = count; i-- > 0;) {
    assert_int_equal(kv_put(kv, (const uint8_t *)sorted[i].bytes, sorted[i].length,
                            (const uint8_t *)"v", 1, i == 5 ? 10 : 0),
                     0);
  }
  kv_entry entries[32];
  assert_int_equal(kv_scan(kv, NULL, 0, 0, entries, 32), count);
  for (size_t i = 0; i < count; i++) {
    assert_int_equal(entries[i].key_length, sorted[i].length);
    assert_memory_equal(entries[i].key, sorted[i].bytes, sorted[i].length);
  }
  /* At time 10 "a\0" has expired and is skipped. */
  assert_int_equal(kv_scan(kv, NULL, 0, 10, entries, 32), count - 1);
  /* Paging one at a time with the successor of the last key. */
  uint8_t start[64];
  size_t start_length = 0;
  for (size_t i = 0; i < count; i++) {
    assert_int_equal(kv_scan(kv, start, start_length, 0, entries, 1), 1);
    assert_memory_equal(entries[0].key, sorted[i].bytes, sorted[i].length);
    memcpy(start, entries[0].key, entries[0].key_length);
    start[entries[0].key_length] = 0;
    start_length = entries[0].key_length + 1;
  }
  assert_int_equal(kv_scan(kv, start, start_length, 0, entries, 1), 0);
  assert_invariants(kv);
  kv_destroy(kv);
}

static void shuffle(trandom *random, uint32_t *values, size_t count) {
  for (size_t i = count; i > 1; i--) {
    size_t j = (size_t)trandom_below(random, i);
    uint32_t swap = values[i - 1];
    values[i - 1] = values[j];
    values[j] = swap;
  }
}

static void put_number(kv_store *kv, uint32_t number) {
  char key[32];
  int length = snprintf(key, sizeof(key), "key:%012u", number);
  assert_int_equal(
      kv_put(kv, (const uint8_t *)key, (size_t)length, (const uint8_t *)key, (size_t)length, 0), 0);
}

static void delete_number(kv_store *kv, uint32_t number) {
  char key[32];
  int length = snprintf(key, sizeof(key), "key:%012u", number);
  bool existed = false;
  assert_int_equal(kv_delete(kv, (const uint8_t *)key, (size_t)length, &existed), 0);
  assert_true(existed);
}

/* Inserts in three orders, removes in three orders; the shape stays valid
 * all the way and memory goes back to the node reserve alone. */
static void test_insert_and_delete_orders(void **state) {
  (void)state;
  const size_t count = 6000;
  uint32_t *numbers = malloc(count * sizeof(*numbers));
  assert_non_null(numbers);
  trandom random;
  trandom_seed(&random, 7);
  for (int order = 0; order < 3; order++) {
    kv_store *kv = NULL;
    assert_int_equal(kv_create(&kv), 0);
    for (size_t i = 0; i < count; i++) {
      numbers[i] = order == 1 ? (uint32_t)(count - i) : (uint32_t)i;
    }
    if (order == 2) {
      shuffle(&random, numbers, count);
    }
    for (size_t i = 0; i < count; i++) {
      put_number(kv, numbers[i]);
      if (i % 1000 == 0) {
        assert_invariants(kv);
      }
    }
    assert_int_equal(kv_count(kv), count);
    assert_invariants(kv);
    for (int removal = 0; removal < 3; removal++) {
      kv_store *copy = kv;
      if (removal > 0) {
        assert_int_equal(kv_create(&copy), 0);
        for (size_t i = 0; i < count; i++) {
          put_number(copy, numbers[i]);
        }
      }
      uint32_t *gone = malloc(count * sizeof(*gone));
      for (size_t i = 0; i < count; i++) {
        gone[i] = removal == 1 ? numbers[count - 1 - i] : numbers[i];
      }
      if (removal == 2) {
        shuffle(&random, gone, count);
      }
      for (size_t i = 0; i < count; i++) {
        delete_number(copy, gone[i]);
        if (i % 997 == 0) {
          assert_invariants(copy);
        }
      }
      free(gone);
      assert_int_equal(kv_count(copy), 0);
      assert_invariants(copy);
      /* Only the node reserve is left: a few dozen nodes, which an idle
       * store gives back. */
      assert_true(kv_memory_bytes(copy) < 200 * 1024);
      kv_shrink(copy);
      assert_int_equal(kv_memory_bytes(copy), 0);
      assert_invariants(copy);
      put_number(copy, 1);
      assert_invariants(copy);
      kv_destroy(copy);
    }
  }
  free(numbers);
}

static void test_expire_step(void **state) {
  (void)state;
  kv_store *kv = NULL;
  assert_int_equal(kv_create(&kv), 0);
  put_text(kv, "c", "3", 300);
  put_text(kv, "a", "1", 100);
  put_text(kv, "b", "2", 100);
  put_text(kv, "d", "4", 0);
  put_text(kv, "e", "5", 500);
  assert_int_equal(kv_next_expiry_ms(kv), 100);
  uint32_t removed = 0;
  assert_int_equal(kv_expire_step(kv, 99, 10, &removed), 0);
  assert_int_equal(removed, 0);
  /* Due: a, b (100) and c (300); the bound stops after two, in
   * (expiry, key) order. */
  assert_int_equal(kv_expire_step(kv, 300, 2, &removed), 0);
  assert_int_equal(removed, 2);
  assert_int_equal(kv_count(kv), 3);
  assert_true(get_text(kv, "c", 0, "3"));
  assert_int_equal(kv_next_expiry_ms(kv), 300);
  assert_int_equal(kv_expire_step(kv, 1000, 10, &removed), 0);
  assert_int_equal(removed, 2);
  assert_int_equal(kv_count(kv), 1);
  assert_true(get_text(kv, "d", UINT64_MAX, "4"));
  assert_int_equal(kv_next_expiry_ms(kv), 0);
  /* Changing an expiry moves the key in the index. */
  put_text(kv, "d", "4", 50);
  put_text(kv, "d", "4", 70);
  assert_int_equal(kv_next_expiry_ms(kv), 70);
  put_text(kv, "d", "4", 0);
  assert_int_equal(kv_next_expiry_ms(kv), 0);
  assert_invariants(kv);
  kv_destroy(kv);
}

/* Many keys in one tree: every one found, the shape valid. */
static void test_many_keys(void **state) {
  (void)state;
  const uint32_t count = 200000;
  kv_store *kv = NULL;
  assert_int_equal(kv_create(&kv), 0);
  uint32_t *numbers = malloc(count * sizeof(*numbers));
  for (uint32_t i = 0; i < count; i++) {
    numbers[i] = i * 2654435761u;
  }
  for (uint32_t i = 0; i < count; i++) {
    put_number(kv, numbers[i]);
  }
  assert_int_equal(kv_count(kv), count);
  for (uint32_t i = 0; i < count; i++) {
    char key[32];
    int length = snprintf(key, sizeof(key), "key:%012u", numbers[i]);
    kv_entry entry;
    assert_true(kv_get(kv, (const uint8_t *)key, (size_t)length, 0, &entry));
    assert_int_equal(entry.value_length, (size_t)length);
  }
  assert_invariants(kv);
  free(numbers);
  kv_destroy(kv);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_store),           cmocka_unit_test(test_basic_operations),
      cmocka_unit_test(test_scan_order_and_paging), cmocka_unit_test(test_insert_and_delete_orders),
      cmocka_unit_test(test_expire_step),           cmocka_unit_test(test_many_keys),
      cmocka_unit_test(test_model_small),           cmocka_unit_test(test_model_medium),
      cmocka_unit_test(test_model_large),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
