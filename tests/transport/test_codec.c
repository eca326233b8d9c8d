/*
 * test_codec.c - the payload codec (transport/codec.h): seeded random round
 * trips of every message type, exact byte layouts against
 * docs/wire-format.md, the encoder's FULL and TOO_LARGE behaviour, every
 * truncation of valid payloads, every single-bit flip, and hand-made damage
 * to each field the decoders validate.
 *
 * Payloads under test are copied into buffers of exactly their length (and
 * at odd addresses), so under the sanitizer build a read one byte past the
 * end, or an aligned load, is caught.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "transport/codec.h"
#include "transport/frame.h"

#define LIMIT FL_RAFT_MAX_TERM_OR_INDEX
#define FROM_NODE 11
#define TO_NODE 22
#define MAX_SAMPLE_ENTRIES 48
#define MAX_BATCH 64
#define DATA_POOL_BYTES 65536
#define BUFFER_BYTES (1u << 20)
#define POOL_ENTRIES 8192

/* ---- seeded randomness ---------------------------------------------- */

typedef struct rng {
  uint64_t state;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rng_below(rng *r, uint64_t bound) {
  return bound == 0 ? 0 : rng_next(r) % bound;
}

/* A number in [0, max], drawn so that edges (0, small, max) come up often. */
static uint64_t rng_number(rng *r, uint64_t max) {
  switch (rng_below(r, 8)) {
  case 0:
    return 0;
  case 1:
  case 2:
    return rng_below(r, max < 200 ? max + 1 : 200);
  case 3:
    return max - rng_below(r, max < 3 ? max + 1 : 3);
  default:
    return max == UINT64_MAX ? rng_next(r) : rng_below(r, max + 1);
  }
}

static uint8_t data_pool[DATA_POOL_BYTES];

static void fill_data_pool(void) {
  rng r = {.state = 12345};
  for (size_t i = 0; i < DATA_POOL_BYTES; i++) {
    data_pool[i] = (uint8_t)rng_next(&r);
  }
}

/* ---- sample messages ------------------------------------------------ */

typedef struct sample {
  uint64_t group;
  fl_raft_message message;
  fl_raft_entry entries[MAX_SAMPLE_ENTRIES];
} sample;

static uint64_t fresh_node(rng *r) {
  return rng_below(r, 4) == 0 ? 1 + rng_below(r, 50) : 1 + rng_below(r, UINT64_MAX - 1);
}

static void random_conf(rng *r, fl_raft_conf *conf) {
  do {
    memset(conf, 0, sizeof(*conf));
    conf->voter_count = (uint8_t)rng_below(r, FL_RAFT_MAX_VOTERS + 1);
    conf->outgoing_count = (uint8_t)rng_below(r, FL_RAFT_MAX_VOTERS + 1);
    conf->learner_count = (uint8_t)rng_below(r, FL_RAFT_MAX_LEARNERS + 1);
    conf->auto_leave = (uint8_t)rng_below(r, 2);
    for (uint32_t i = 0; i < conf->voter_count; i++) {
      conf->voters[i] = fresh_node(r);
    }
    for (uint32_t i = 0; i < conf->outgoing_count; i++) {
      /* Joint configurations share most members. */
      bool shared = i < conf->voter_count && rng_below(r, 2) == 0;
      conf->outgoing[i] = shared ? conf->voters[i] : fresh_node(r);
    }
    for (uint32_t i = 0; i < conf->learner_count; i++) {
      conf->learners[i] = fresh_node(r);
    }
  } while (!fl_raft_conf_is_valid(conf));
}

static uint32_t random_entry_length(rng *r) {
  switch (rng_below(r, 6)) {
  case 0:
    return 0;
  case 1:
    return 16;
  case 2:
    return (uint32_t)rng_below(r, 1000);
  default:
    return (uint32_t)rng_below(r, 40);
  }
}

static void random_entries(rng *r, sample *s) {
  fl_raft_message *m = &s->message;
  m->entry_count = (uint32_t)rng_below(r, MAX_SAMPLE_ENTRIES + 1);
  if (rng_below(r, 4) == 0) {
    m->entry_count = (uint32_t)rng_below(r, 3);
  }
  m->index = rng_number(r, LIMIT - m->entry_count);
  for (uint32_t i = 0; i < m->entry_count; i++) {
    fl_raft_entry *e = &s->entries[i];
    e->term = rng_number(r, LIMIT);
    e->index = m->index + 1 + i;
    e->type = (uint32_t)rng_below(r, 2);
    e->length = random_entry_length(r);
    e->data = data_pool + rng_below(r, DATA_POOL_BYTES - e->length + 1);
  }
  m->entries = m->entry_count > 0 ? s->entries : NULL;
}

static void random_sample(rng *r, sample *s, uint32_t type) {
  memset(s, 0, sizeof(*s));
  s->group = rng_below(r, 3) == 0 ? rng_below(r, 16) : rng_next(r);
  fl_raft_message *m = &s->message;
  m->type = type;
  m->term = rng_number(r, LIMIT);
  m->log_term = rng_number(r, LIMIT);
  m->index = rng_number(r, LIMIT);
  m->commit = rng_number(r, LIMIT);
  m->reject_hint = rng_number(r, LIMIT);
  m->context = rng_number(r, UINT64_MAX);
  m->reject = rng_below(r, 2) == 1;
  if (type == FL_RAFT_MSG_APPEND) {
    random_entries(r, s);
  } else if (type == FL_RAFT_MSG_SNAPSHOT) {
    m->snapshot.index = rng_number(r, LIMIT);
    m->snapshot.term = rng_number(r, LIMIT);
    random_conf(r, &m->snapshot.conf);
  }
}

static uint32_t random_type(rng *r) {
  return 1 + (uint32_t)rng_below(r, FL_RAFT_MSG_TYPE_COUNT - 1);
}

/* ---- comparing ------------------------------------------------------ */

static void assert_conf_equal(const fl_raft_conf *expected, const fl_raft_conf *actual) {
  assert_int_equal(expected->voter_count, actual->voter_count);
  assert_int_equal(expected->outgoing_count, actual->outgoing_count);
  assert_int_equal(expected->learner_count, actual->learner_count);
  assert_int_equal(expected->auto_leave, actual->auto_leave);
  for (uint32_t i = 0; i < expected->voter_count; i++) {
    assert_int_equal(expected->voters[i], actual->voters[i]);
  }
  for (uint32_t i = 0; i < expected->outgoing_count; i++) {
    assert_int_equal(expected->outgoing[i], actual->outgoing[i]);
  }
  for (uint32_t i = 0; i < expected->learner_count; i++) {
    assert_int_equal(expected->learners[i], actual->learners[i]);
  }
}

static void assert_entries_equal(const fl_raft_message *expected, const fl_raft_message *actual,
                                 const uint8_t *payload, size_t length) {
  assert_int_equal(expected->entry_count, actual->entry_count);
  if (expected->entry_count == 0) {
    assert_null(actual->entries);
    return;
  }
  for (uint32_t i = 0; i < expected->entry_count; i++) {
    const fl_raft_entry *e = &expected->entries[i];
    const fl_raft_entry *a = &actual->entries[i];
    assert_int_equal(e->term, a->term);
    assert_int_equal(e->index, a->index);
    assert_int_equal(e->type, a->type);
    assert_int_equal(e->length, a->length);
    /* Decoded data lies inside the payload: no copy, no stray pointer. */
    assert_true(a->data >= payload && a->data + a->length <= payload + length);
    if (e->length > 0) {
      assert_memory_equal(e->data, a->data, e->length);
    }
  }
}

static void assert_message_equal(const sample *expected, uint64_t group,
                                 const fl_raft_message *actual, const uint8_t *payload,
                                 size_t length) {
  const fl_raft_message *e = &expected->message;
  assert_int_equal(expected->group, group);
  assert_int_equal(e->type, actual->type);
  assert_int_equal(FROM_NODE, actual->from);
  assert_int_equal(TO_NODE, actual->to);
  assert_int_equal(e->term, actual->term);
  assert_int_equal(e->log_term, actual->log_term);
  assert_int_equal(e->index, actual->index);
  assert_int_equal(e->commit, actual->commit);
  assert_int_equal(e->reject_hint, actual->reject_hint);
  assert_int_equal(e->context, actual->context);
  assert_int_equal(e->reject, actual->reject);
  if (e->type == FL_RAFT_MSG_SNAPSHOT) {
    assert_int_equal(e->snapshot.index, actual->snapshot.index);
    assert_int_equal(e->snapshot.term, actual->snapshot.term);
    assert_conf_equal(&e->snapshot.conf, &actual->snapshot.conf);
  } else {
    assert_int_equal(0, actual->snapshot.index);
    assert_int_equal(0, actual->snapshot.conf.voter_count);
  }
  assert_entries_equal(e, actual, payload, length);
}

/* A copy of `length` bytes at an odd address, in a block of exactly that
 * size past the offset: the sanitizers see any read past the end. */
static uint8_t *exact_copy(const uint8_t *bytes, size_t length, size_t misalign, uint8_t **block) {
  *block = malloc(length + misalign + 1);
  assert_non_null(*block);
  uint8_t *copy = *block + misalign;
  if (length > 0) {
    memcpy(copy, bytes, length);
  }
  return copy;
}

/* ---- FRAME_RAFT helpers --------------------------------------------- */

static size_t encode_samples(const sample *samples, uint32_t count, uint8_t *buffer,
                             size_t capacity) {
  codec_raft_encoder encoder;
  assert_int_equal(0, codec_raft_encoder_init(&encoder, buffer, capacity));
  size_t expected = CODEC_RAFT_BATCH_HEADER_BYTES;
  for (uint32_t i = 0; i < count; i++) {
    assert_int_equal(0, codec_raft_add(&encoder, samples[i].group, &samples[i].message));
    expected += codec_raft_message_size(&samples[i].message);
  }
  size_t length = 0;
  codec_raft_finish(&encoder, &length);
  assert_int_equal(expected, length);
  return length;
}

static void decode_and_compare(const sample *samples, uint32_t count, const uint8_t *payload,
                               size_t length) {
  static fl_raft_entry scratch[CODEC_MAX_ENTRIES_PER_MESSAGE];
  codec_raft_decoder decoder;
  codec_raft_decoder_init(&decoder, payload, length, FROM_NODE, TO_NODE);
  for (uint32_t i = 0; i < count; i++) {
    uint64_t group = 0;
    fl_raft_message message;
    assert_int_equal(
        1, codec_raft_next(&decoder, &group, &message, scratch, CODEC_MAX_ENTRIES_PER_MESSAGE));
    assert_message_equal(&samples[i], group, &message, payload, length);
  }
  uint64_t group = 0;
  fl_raft_message message;
  assert_int_equal(0, codec_raft_next(&decoder, &group, &message, scratch, 1));
  assert_int_equal(0, codec_raft_next(&decoder, &group, &message, scratch, 1));
}

/* Decodes until the end or an error; returns 0 or the error. */
static int decode_all(const uint8_t *payload, size_t length, uint32_t *messages) {
  static fl_raft_entry scratch[CODEC_MAX_ENTRIES_PER_MESSAGE];
  codec_raft_decoder decoder;
  codec_raft_decoder_init(&decoder, payload, length, FROM_NODE, TO_NODE);
  uint64_t group;
  fl_raft_message message;
  int rc;
  *messages = 0;
  while ((rc = codec_raft_next(&decoder, &group, &message, scratch,
                               CODEC_MAX_ENTRIES_PER_MESSAGE)) == 1) {
    (*messages)++;
  }
  return rc;
}

/* A batch of one message of every type, APPEND with a few entries. */
static uint32_t every_type_batch(sample *samples, uint64_t seed) {
  rng r = {.state = seed};
  uint32_t count = 0;
  for (uint32_t type = 1; type < FL_RAFT_MSG_TYPE_COUNT; type++) {
    random_sample(&r, &samples[count], type);
    if (type == FL_RAFT_MSG_APPEND) {
      fl_raft_message *m = &samples[count].message;
      m->entry_count = 3;
      m->index = 100;
      m->entries = samples[count].entries;
      uint32_t lengths[3] = {0, 5, 16};
      for (uint32_t i = 0; i < 3; i++) {
        samples[count].entries[i] = (fl_raft_entry){
            .term = 7, .index = 101 + i, .type = i % 2, .length = lengths[i], .data = data_pool};
      }
    }
    count++;
  }
  return count;
}

/* ---- FRAME_RAFT tests ----------------------------------------------- */

static void test_raft_round_trip_random(void **state) {
  (void)state;
  uint8_t *buffer = malloc(BUFFER_BYTES);
  sample *samples = malloc(sizeof(sample) * MAX_BATCH);
  assert_non_null(buffer);
  assert_non_null(samples);
  rng r = {.state = 0x5eed};
  uint32_t per_type[FL_RAFT_MSG_TYPE_COUNT] = {0};
  uint64_t total_entries = 0;
  for (int batch = 0; batch < 400; batch++) {
    uint32_t count = 1 + (uint32_t)rng_below(&r, MAX_BATCH);
    for (uint32_t i = 0; i < count; i++) {
      random_sample(&r, &samples[i], random_type(&r));
      per_type[samples[i].message.type]++;
      total_entries += samples[i].message.entry_count;
    }
    size_t length = encode_samples(samples, count, buffer, BUFFER_BYTES);
    uint8_t *block;
    uint8_t *copy = exact_copy(buffer, length, (size_t)batch % 8, &block);
    decode_and_compare(samples, count, copy, length);
    free(block);
  }
  for (uint32_t type = 1; type < FL_RAFT_MSG_TYPE_COUNT; type++) {
    assert_true(per_type[type] >= 500);
  }
  assert_true(total_entries >= 10000);
  free(samples);
  free(buffer);
}

static uint64_t load_u64(const uint8_t *p) {
  uint64_t value;
  memcpy(&value, p, sizeof(value));
  return value;
}

static uint32_t load_u32(const uint8_t *p) {
  uint32_t value;
  memcpy(&value, p, sizeof(value));
  return value;
}

/* The offsets of docs/wire-format.md, byte for byte. */
static void test_raft_layout(void **state) {
  (void)state;
  sample s[2];
  memset(s, 0, sizeof(s));
  s[0].group = 0x0102030405060708ull;
  s[0].message = (fl_raft_message){.type = FL_RAFT_MSG_APPEND,
                                   .entry_count = 2,
                                   .term = 9,
                                   .log_term = 8,
                                   .index = 40,
                                   .commit = 39,
                                   .reject_hint = 3,
                                   .context = 0xabcdef,
                                   .reject = true,
                                   .entries = s[0].entries};
  const uint8_t *data = (const uint8_t *)"hello, world";
  s[0].entries[0] = (fl_raft_entry){.term = 9, .index = 41, .type = 1, .length = 5, .data = data};
  s[0].entries[1] = (fl_raft_entry){.term = 9, .index = 42, .type = 0, .length = 8, .data = data};
  s[1].group = 77;
  s[1].message.type = FL_RAFT_MSG_SNAPSHOT;
  s[1].message.snapshot = (fl_raft_snapshot_meta){.index = 500, .term = 6};
  s[1].message.snapshot.conf = (fl_raft_conf){.voter_count = 2, .voters = {1, 2}};
  uint8_t buffer[512];
  size_t length = encode_samples(s, 2, buffer, sizeof(buffer));
  assert_int_equal(8 + (64 + 16 + 8 + 16 + 8) + (64 + 24 + 24), length);
  assert_int_equal(2, load_u32(buffer));
  assert_int_equal(0, load_u32(buffer + 4));
  const uint8_t *m = buffer + 8;
  assert_int_equal(s[0].group, load_u64(m));
  assert_int_equal(FL_RAFT_MSG_APPEND, m[8]);
  assert_int_equal(1, m[9]);
  assert_int_equal(0, m[10] | m[11]);
  assert_int_equal(2, load_u32(m + 12));
  uint64_t expected_numbers[6] = {9, 8, 40, 39, 3, 0xabcdef};
  for (int i = 0; i < 6; i++) {
    assert_int_equal(expected_numbers[i], load_u64(m + 16 + 8 * i));
  }
  const uint8_t *entry = m + 64;
  assert_int_equal(9, load_u64(entry));
  assert_int_equal(1, load_u32(entry + 8));
  assert_int_equal(5, load_u32(entry + 12));
  assert_memory_equal("hello\0\0\0", entry + 16, 8);
  entry += 24;
  assert_int_equal(8, load_u32(entry + 12));
  assert_memory_equal("hello, w", entry + 16, 8);
  const uint8_t *snap = entry + 24;
  assert_int_equal(77, load_u64(snap));
  assert_int_equal(FL_RAFT_MSG_SNAPSHOT, snap[8]);
  assert_int_equal(500, load_u64(snap + 64));
  assert_int_equal(6, load_u64(snap + 72));
  assert_int_equal(24, load_u32(snap + 80));
  assert_int_equal(0, load_u32(snap + 84));
  uint8_t conf[24];
  assert_int_equal(24, fl_raft_conf_encode(&s[1].message.snapshot.conf, conf, sizeof(conf)));
  assert_memory_equal(conf, snap + 88, 24);
  decode_and_compare(s, 2, buffer, length);
}

static void test_raft_empty_batch(void **state) {
  (void)state;
  uint8_t buffer[8];
  codec_raft_encoder encoder;
  assert_int_equal(TRANSPORT_E_FULL, codec_raft_encoder_init(&encoder, buffer, 7));
  assert_int_equal(0, codec_raft_encoder_init(&encoder, buffer, sizeof(buffer)));
  size_t length = 0;
  codec_raft_finish(&encoder, &length);
  assert_int_equal(8, length);
  uint32_t messages = 99;
  assert_int_equal(0, decode_all(buffer, length, &messages));
  assert_int_equal(0, messages);
}

/* FULL leaves every byte of the buffer and the encoder as they were. */
static void test_raft_encoder_full(void **state) {
  (void)state;
  rng r = {.state = 77};
  sample s;
  random_sample(&r, &s, FL_RAFT_MSG_APPEND);
  size_t size = codec_raft_message_size(&s.message);
  size_t capacity = CODEC_RAFT_BATCH_HEADER_BYTES + 3 * size + size / 2;
  uint8_t *buffer = malloc(capacity);
  uint8_t *before = malloc(capacity);
  memset(buffer, 0xa5, capacity);
  codec_raft_encoder encoder;
  assert_int_equal(0, codec_raft_encoder_init(&encoder, buffer, capacity));
  for (int i = 0; i < 3; i++) {
    assert_int_equal(0, codec_raft_add(&encoder, 5, &s.message));
  }
  memcpy(before, buffer, capacity);
  codec_raft_encoder saved = encoder;
  assert_int_equal(TRANSPORT_E_FULL, codec_raft_add(&encoder, 5, &s.message));
  assert_memory_equal(before, buffer, capacity);
  assert_memory_equal(&saved, &encoder, sizeof(encoder));
  size_t length = 0;
  codec_raft_finish(&encoder, &length);
  assert_int_equal(CODEC_RAFT_BATCH_HEADER_BYTES + 3 * size, length);
  sample three[3] = {s, s, s};
  for (int i = 0; i < 3; i++) {
    three[i].group = 5;
    three[i].message.entries = three[i].entries;
  }
  decode_and_compare(three, 3, buffer, length);
  free(before);
  free(buffer);
}

static void test_raft_encoder_exact_fit(void **state) {
  (void)state;
  rng r = {.state = 78};
  sample s;
  random_sample(&r, &s, FL_RAFT_MSG_SNAPSHOT);
  size_t exact = CODEC_RAFT_BATCH_HEADER_BYTES + codec_raft_message_size(&s.message);
  uint8_t *buffer = malloc(exact);
  codec_raft_encoder encoder;
  /* One byte short of an empty batch: it can never fit, so not FULL. */
  assert_int_equal(0, codec_raft_encoder_init(&encoder, buffer, exact - 1));
  memset(buffer, 0x3c, exact);
  assert_int_equal(TRANSPORT_E_TOO_LARGE, codec_raft_add(&encoder, s.group, &s.message));
  for (size_t i = 0; i < exact; i++) {
    assert_int_equal(0x3c, buffer[i]);
  }
  assert_int_equal(0, codec_raft_encoder_init(&encoder, buffer, exact));
  assert_int_equal(0, codec_raft_add(&encoder, s.group, &s.message));
  size_t length = 0;
  codec_raft_finish(&encoder, &length);
  assert_int_equal(exact, length);
  decode_and_compare(&s, 1, buffer, length);
  free(buffer);
}

/* What the decoder would refuse, the encoder refuses, writing nothing. */
static void expect_add_error(const fl_raft_message *message, int expected) {
  uint8_t buffer[4096];
  memset(buffer, 0x11, sizeof(buffer));
  codec_raft_encoder encoder;
  assert_int_equal(0, codec_raft_encoder_init(&encoder, buffer, sizeof(buffer)));
  assert_int_equal(expected, codec_raft_add(&encoder, 1, message));
  assert_int_equal(CODEC_RAFT_BATCH_HEADER_BYTES, encoder.length);
  assert_int_equal(0, encoder.message_count);
  for (size_t i = 0; i < sizeof(buffer); i++) {
    assert_int_equal(0x11, buffer[i]);
  }
}

static void test_raft_encoder_refuses(void **state) {
  (void)state;
  fl_raft_entry entries[2] = {{.term = 1, .index = 11, .length = 1, .data = data_pool},
                              {.term = 1, .index = 12, .length = 1, .data = data_pool}};
  fl_raft_message good = {
      .type = FL_RAFT_MSG_APPEND, .term = 1, .index = 10, .entry_count = 2, .entries = entries};
  fl_raft_message m = good;
  m.type = 0;
  expect_add_error(&m, TRANSPORT_E_TYPE);
  m.type = FL_RAFT_MSG_TYPE_COUNT;
  expect_add_error(&m, TRANSPORT_E_TYPE);
  m = good;
  m.type = FL_RAFT_MSG_VOTE; /* entries on a type that carries none */
  expect_add_error(&m, TRANSPORT_E_MALFORMED);
  m = good;
  m.term = LIMIT + 1;
  expect_add_error(&m, TRANSPORT_E_MALFORMED);
  m = good;
  m.index = LIMIT - 1; /* index + entry_count past the limit */
  expect_add_error(&m, TRANSPORT_E_MALFORMED);
  m = good;
  m.index = 9; /* entries not at index + 1 */
  expect_add_error(&m, TRANSPORT_E_MALFORMED);
  m = good;
  m.entries = NULL;
  expect_add_error(&m, TRANSPORT_E_MALFORMED);
  m = good;
  entries[1].type = 2;
  expect_add_error(&m, TRANSPORT_E_MALFORMED);
  entries[1].type = 0;
  entries[1].term = LIMIT + 1;
  expect_add_error(&m, TRANSPORT_E_MALFORMED);
  entries[1].term = 1;
  m = good;
  m.entry_count = CODEC_MAX_ENTRIES_PER_MESSAGE + 1;
  m.index = 0;
  expect_add_error(&m, TRANSPORT_E_TOO_LARGE);
  m = (fl_raft_message){.type = FL_RAFT_MSG_SNAPSHOT, .term = 1};
  m.snapshot.conf = (fl_raft_conf){.voter_count = 2, .voters = {3, 3}};
  expect_add_error(&m, TRANSPORT_E_MALFORMED);
  m.snapshot.conf = (fl_raft_conf){.voter_count = 1, .voters = {3}};
  m.snapshot.term = LIMIT + 1;
  expect_add_error(&m, TRANSPORT_E_MALFORMED);
}

static void test_raft_limits_accepted(void **state) {
  (void)state;
  sample s;
  memset(&s, 0, sizeof(s));
  s.group = UINT64_MAX;
  fl_raft_message *m = &s.message;
  m->type = FL_RAFT_MSG_APPEND;
  m->term = m->log_term = m->commit = m->reject_hint = LIMIT;
  m->context = UINT64_MAX;
  m->entry_count = 2;
  m->index = LIMIT - 2;
  m->entries = s.entries;
  s.entries[0] = (fl_raft_entry){.term = LIMIT, .index = LIMIT - 1, .length = 0};
  s.entries[1] = (fl_raft_entry){.term = LIMIT, .index = LIMIT, .length = 3, .data = data_pool};
  uint8_t buffer[512];
  size_t length = encode_samples(&s, 1, buffer, sizeof(buffer));
  decode_and_compare(&s, 1, buffer, length);
}

static void test_raft_truncated_everywhere(void **state) {
  (void)state;
  sample samples[FL_RAFT_MSG_TYPE_COUNT];
  uint32_t count = every_type_batch(samples, 99);
  uint8_t buffer[8192];
  size_t length = encode_samples(samples, count, buffer, sizeof(buffer));
  for (size_t cut = 0; cut < length; cut++) {
    uint8_t *block;
    uint8_t *copy = exact_copy(buffer, cut, cut % 8, &block);
    uint32_t messages = 0;
    assert_int_equal(TRANSPORT_E_TRUNCATED, decode_all(copy, cut, &messages));
    assert_true(messages < count);
    free(block);
  }
  uint32_t messages = 0;
  assert_int_equal(0, decode_all(buffer, length, &messages));
  assert_int_equal(count, messages);
}

/* Checks one decoded message against what any decoded message promises. */
static void assert_bounded(const fl_raft_message *m, const uint8_t *payload, size_t length,
                           uint32_t scratch_capacity) {
  assert_true(m->type >= 1 && m->type < FL_RAFT_MSG_TYPE_COUNT);
  assert_int_equal(FROM_NODE, m->from);
  assert_int_equal(TO_NODE, m->to);
  assert_true(m->term <= LIMIT && m->log_term <= LIMIT && m->commit <= LIMIT);
  assert_true(m->reject_hint <= LIMIT && m->index <= LIMIT - m->entry_count);
  assert_true(m->entry_count <= scratch_capacity);
  assert_true(m->entry_count == 0 || m->type == FL_RAFT_MSG_APPEND);
  for (uint32_t i = 0; i < m->entry_count; i++) {
    const fl_raft_entry *e = &m->entries[i];
    assert_int_equal(m->index + 1 + i, e->index);
    assert_true(e->term <= LIMIT && e->type <= FL_RAFT_ENTRY_CONF_CHANGE);
    assert_true(e->data >= payload && e->data + e->length <= payload + length);
  }
  if (m->type == FL_RAFT_MSG_SNAPSHOT) {
    assert_true(fl_raft_conf_is_valid(&m->snapshot.conf));
  }
}

/* Decodes a damaged payload: errors are fine, anything returned must be
 * bounded, and a payload that decodes whole re-encodes to the same bytes
 * (the encoding is canonical, so damage is either refused or meaningful). */
static int decode_damaged(const uint8_t *payload, size_t length, uint8_t *reencoded) {
  static fl_raft_entry pool[POOL_ENTRIES];
  static sample decoded[MAX_BATCH * 4];
  codec_raft_decoder decoder;
  codec_raft_decoder_init(&decoder, payload, length, FROM_NODE, TO_NODE);
  uint32_t count = 0;
  uint32_t used = 0;
  int rc;
  while (count < MAX_BATCH * 4 && used + 64 <= POOL_ENTRIES &&
         (rc = codec_raft_next(&decoder, &decoded[count].group, &decoded[count].message,
                               pool + used, 64)) == 1) {
    assert_bounded(&decoded[count].message, payload, length, 64);
    used += decoded[count].message.entry_count;
    count++;
  }
  assert_true(count < MAX_BATCH * 4 && used + 64 <= POOL_ENTRIES);
  if (rc < 0) {
    assert_int_equal(rc, codec_raft_next(&decoder, &decoded[0].group, &decoded[0].message, pool,
                                         64)); /* sticky */
    return rc;
  }
  codec_raft_encoder encoder;
  assert_int_equal(0, codec_raft_encoder_init(&encoder, reencoded, length));
  for (uint32_t i = 0; i < count; i++) {
    assert_int_equal(0, codec_raft_add(&encoder, decoded[i].group, &decoded[i].message));
  }
  size_t reencoded_length = 0;
  codec_raft_finish(&encoder, &reencoded_length);
  assert_int_equal(length, reencoded_length);
  assert_memory_equal(payload, reencoded, length);
  return 0;
}

static void test_raft_bit_flips(void **state) {
  (void)state;
  sample samples[FL_RAFT_MSG_TYPE_COUNT];
  uint32_t count = every_type_batch(samples, 1234);
  uint8_t buffer[8192];
  uint8_t reencoded[8192];
  size_t length = encode_samples(samples, count, buffer, sizeof(buffer));
  uint32_t refused = 0;
  for (size_t bit = 0; bit < length * 8; bit++) {
    uint8_t *block;
    uint8_t *copy = exact_copy(buffer, length, 1 + bit % 7, &block);
    copy[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    refused += decode_damaged(copy, length, reencoded) < 0;
    free(block);
  }
  /* Counts, lengths, reserved bytes, types and padding are all guarded:
   * about 15% of the bits (1196 of 8064 with this seed). */
  assert_true(refused > length);
  assert_int_equal(0, decode_damaged(buffer, length, reencoded));
}

static void test_raft_random_damage(void **state) {
  (void)state;
  rng r = {.state = 4242};
  sample samples[16];
  uint8_t buffer[65536];
  uint8_t reencoded[65536];
  for (int round = 0; round < 300; round++) {
    uint32_t count = 1 + (uint32_t)rng_below(&r, 16);
    for (uint32_t i = 0; i < count; i++) {
      random_sample(&r, &samples[i], random_type(&r));
    }
    size_t length = encode_samples(samples, count, buffer, sizeof(buffer));
    for (int hits = 1 + (int)rng_below(&r, 4); hits > 0; hits--) {
      size_t at = rng_below(&r, length);
      buffer[at] = rng_below(&r, 2) ? (uint8_t)rng_next(&r) : 0xff;
    }
    (void)decode_damaged(buffer, length, reencoded);
  }
}

/* Encodes one message, lets `patch` damage it, decodes, returns the result. */
typedef void (*patch_function)(uint8_t *payload, size_t length);

static int decode_patched(const sample *s, patch_function patch, uint32_t scratch_capacity) {
  static fl_raft_entry scratch[CODEC_MAX_ENTRIES_PER_MESSAGE];
  uint8_t buffer[4096];
  size_t length = encode_samples(s, 1, buffer, sizeof(buffer));
  if (patch != NULL) {
    patch(buffer, length);
  }
  codec_raft_decoder decoder;
  codec_raft_decoder_init(&decoder, buffer, length, FROM_NODE, TO_NODE);
  uint64_t group;
  fl_raft_message message;
  int rc = codec_raft_next(&decoder, &group, &message, scratch, scratch_capacity);
  if (rc == 1) {
    rc = codec_raft_next(&decoder, &group, &message, scratch, scratch_capacity);
  }
  return rc;
}

static void store_u32(uint8_t *p, uint32_t value) {
  memcpy(p, &value, sizeof(value));
}

static void store_u64(uint8_t *p, uint64_t value) {
  memcpy(p, &value, sizeof(value));
}

/* Message at 8; its entries from 72 on; the first entry's data at 88. */
static void patch_batch_reserved(uint8_t *p, size_t n) {
  (void)n;
  p[5] = 1;
}
static void patch_batch_count_huge(uint8_t *p, size_t n) {
  (void)n;
  store_u32(p, 0xffffffffu);
}
static void patch_batch_count_zero(uint8_t *p, size_t n) {
  (void)n;
  store_u32(p, 0);
}
static void patch_type_zero(uint8_t *p, size_t n) {
  (void)n;
  p[16] = 0;
}
static void patch_type_high(uint8_t *p, size_t n) {
  (void)n;
  p[16] = FL_RAFT_MSG_TYPE_COUNT;
}
static void patch_flags(uint8_t *p, size_t n) {
  (void)n;
  p[17] |= 2;
}
static void patch_message_reserved(uint8_t *p, size_t n) {
  (void)n;
  p[19] = 0x80;
}
static void patch_entry_count_huge(uint8_t *p, size_t n) {
  (void)n;
  store_u32(p + 20, 0xffffffffu);
}
static void patch_entry_count_plus_one(uint8_t *p, size_t n) {
  (void)n;
  store_u32(p + 20, 4);
}
static void patch_term_over(uint8_t *p, size_t n) {
  (void)n;
  store_u64(p + 24, LIMIT + 1);
}
static void patch_commit_over(uint8_t *p, size_t n) {
  (void)n;
  store_u64(p + 48, UINT64_MAX);
}
static void patch_index_at_edge(uint8_t *p, size_t n) {
  (void)n;
  store_u64(p + 40, LIMIT - 3); /* + 3 entries = LIMIT: allowed */
}
static void patch_index_over(uint8_t *p, size_t n) {
  (void)n;
  store_u64(p + 40, LIMIT - 2);
}
static void patch_entry_term(uint8_t *p, size_t n) {
  (void)n;
  store_u64(p + 72, LIMIT + 1);
}
static void patch_entry_type(uint8_t *p, size_t n) {
  (void)n;
  store_u32(p + 80, 2);
}
static void patch_entry_length_huge(uint8_t *p, size_t n) {
  (void)n;
  store_u32(p + 84, 0xfffffff0u);
}
static void patch_entry_padding(uint8_t *p, size_t n) {
  (void)n;
  p[88 + 7] = 1; /* first entry: 5 bytes of data, so byte 7 is padding */
}
/* Group 3, an APPEND at index 20 with 3 entries of 5, 13 and 21 bytes. */
static void append_sample(sample *s) {
  memset(s, 0, sizeof(*s));
  s->group = 3;
  s->message = (fl_raft_message){.type = FL_RAFT_MSG_APPEND,
                                 .term = 5,
                                 .index = 20,
                                 .commit = 19,
                                 .entry_count = 3,
                                 .entries = s->entries};
  for (uint32_t i = 0; i < 3; i++) {
    s->entries[i] =
        (fl_raft_entry){.term = 5, .index = 21 + i, .length = 5 + 8 * i, .data = data_pool + 100};
  }
}

static void test_raft_damaged_fields(void **state) {
  (void)state;
  sample s;
  append_sample(&s);
  assert_int_equal(0, decode_patched(&s, NULL, 3));
  assert_int_equal(0, decode_patched(&s, patch_index_at_edge, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, NULL, 2)); /* scratch too small */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_batch_reserved, 3));
  assert_int_equal(TRANSPORT_E_TRUNCATED, decode_patched(&s, patch_batch_count_huge, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_batch_count_zero, 3));
  assert_int_equal(TRANSPORT_E_TYPE, decode_patched(&s, patch_type_zero, 3));
  assert_int_equal(TRANSPORT_E_TYPE, decode_patched(&s, patch_type_high, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_flags, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_message_reserved, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_entry_count_huge, 4096));
  assert_int_equal(TRANSPORT_E_TRUNCATED, decode_patched(&s, patch_entry_count_plus_one, 4096));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_term_over, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_commit_over, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_index_over, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_entry_term, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_entry_type, 3));
  assert_int_equal(TRANSPORT_E_TRUNCATED, decode_patched(&s, patch_entry_length_huge, 3));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_patched(&s, patch_entry_padding, 3));
}

static void test_raft_entries_on_other_types(void **state) {
  (void)state;
  /* A VOTE whose header claims one entry, followed by a valid-looking one. */
  uint8_t payload[8 + 64 + 16];
  memset(payload, 0, sizeof(payload));
  store_u32(payload, 1);
  payload[16] = FL_RAFT_MSG_VOTE;
  store_u32(payload + 20, 1);
  uint32_t messages = 0;
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_all(payload, sizeof(payload), &messages));
  payload[16] = FL_RAFT_MSG_APPEND;
  assert_int_equal(0, decode_all(payload, sizeof(payload), &messages));
  assert_int_equal(1, messages);
}

static void test_raft_trailing_bytes(void **state) {
  (void)state;
  sample s;
  append_sample(&s);
  uint8_t buffer[1024];
  size_t length = encode_samples(&s, 1, buffer, sizeof(buffer) - 8);
  memset(buffer + length, 0, 8);
  uint32_t messages = 0;
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_all(buffer, length + 8, &messages));
  assert_int_equal(1, messages);
}

/* Offsets of a SNAPSHOT message alone in a batch: meta at 72, conf at 96. */
static int decode_snapshot_patched(size_t offset, uint8_t value) {
  sample s;
  memset(&s, 0, sizeof(s));
  s.message.type = FL_RAFT_MSG_SNAPSHOT;
  s.message.snapshot.index = 9;
  s.message.snapshot.term = 2;
  s.message.snapshot.conf =
      (fl_raft_conf){.voter_count = 2, .voters = {4, 5}, .learner_count = 1, .learners = {6}};
  uint8_t buffer[512];
  size_t length = encode_samples(&s, 1, buffer, sizeof(buffer));
  assert_int_equal(8 + 64 + 24 + 32, length);
  buffer[offset] = value;
  uint32_t messages = 0;
  return decode_all(buffer, length, &messages);
}

static void test_raft_snapshot_meta_damage(void **state) {
  (void)state;
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(72 + 7, 0x80));  /* index */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(72 + 15, 0xff)); /* term */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(72 + 16, 200));  /* too long */
  assert_int_equal(TRANSPORT_E_TRUNCATED, decode_snapshot_patched(72 + 16, 160));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(72 + 16, 24));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(72 + 20, 1)); /* reserved */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(96, 2));      /* version */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(96 + 4, 2));  /* auto_leave */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(96 + 6, 1));  /* conf pad */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(96 + 16, 4)); /* duplicate */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(96 + 24, 4)); /* learner */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_snapshot_patched(96 + 8, 0));  /* zero id */
  assert_int_equal(0, decode_snapshot_patched(96 + 9, 1));                      /* other id */
}

/* ---- FRAME_HEARTBEATS ----------------------------------------------- */

typedef struct heartbeat_set {
  uint32_t count;
  codec_heartbeat items[2048];
  fl_raft_message messages[2048];
} heartbeat_set;

static void add_heartbeat(heartbeat_set *set, uint64_t group, uint32_t type, uint64_t term,
                          uint64_t index, uint64_t commit, uint64_t context) {
  fl_raft_message *m = &set->messages[set->count];
  *m = (fl_raft_message){.type = type,
                         .term = term,
                         .index = index,
                         .commit = type == FL_RAFT_MSG_HEARTBEAT ? commit : 0,
                         .context = context};
  set->items[set->count] = (codec_heartbeat){.group = group, .message = m};
  set->count++;
}

static int compare_items(const void *a, const void *b) {
  const codec_heartbeat *x = a;
  const codec_heartbeat *y = b;
  if (x->message->type != y->message->type) {
    return x->message->type < y->message->type ? -1 : 1;
  }
  return x->group < y->group ? -1 : x->group > y->group;
}

static void assert_heartbeats_decode(const heartbeat_set *set, const uint8_t *payload,
                                     size_t length) {
  codec_heartbeat expected[2048];
  memcpy(expected, set->items, sizeof(codec_heartbeat) * set->count);
  qsort(expected, set->count, sizeof(codec_heartbeat), compare_items);
  codec_heartbeats_decoder decoder;
  codec_heartbeats_decoder_init(&decoder, payload, length, FROM_NODE, TO_NODE);
  for (uint32_t i = 0; i < set->count; i++) {
    uint64_t group = 0;
    fl_raft_message m;
    assert_int_equal(1, codec_heartbeats_next(&decoder, &group, &m));
    const fl_raft_message *e = expected[i].message;
    assert_int_equal(expected[i].group, group);
    assert_int_equal(e->type, m.type);
    assert_int_equal(FROM_NODE, m.from);
    assert_int_equal(TO_NODE, m.to);
    assert_int_equal(e->term, m.term);
    assert_int_equal(e->index, m.index);
    assert_int_equal(e->commit, m.commit);
    assert_int_equal(e->context, m.context);
    assert_int_equal(0, m.log_term | m.reject_hint | m.entry_count | m.reject);
    assert_null(m.entries);
  }
  uint64_t group;
  fl_raft_message m;
  assert_int_equal(0, codec_heartbeats_next(&decoder, &group, &m));
}

static size_t encode_heartbeats(heartbeat_set *set, uint8_t *buffer, size_t capacity) {
  size_t length = 0;
  assert_int_equal(0, codec_heartbeats_encode(set->items, set->count, buffer, capacity, &length));
  assert_true(length <= codec_heartbeats_max_size(set->count));
  return length;
}

static void shuffle_items(rng *r, heartbeat_set *set) {
  for (uint32_t i = set->count; i > 1; i--) {
    uint32_t j = (uint32_t)rng_below(r, i);
    codec_heartbeat swap = set->items[i - 1];
    set->items[i - 1] = set->items[j];
    set->items[j] = swap;
  }
}

static uint64_t random_group(rng *r) {
  switch (rng_below(r, 5)) {
  case 0:
    return rng_below(r, 3); /* 0, 1, 2 */
  case 1:
    return UINT64_MAX - rng_below(r, 3);
  case 2:
    return (1ull << 63) + rng_below(r, 1000);
  default:
    return rng_next(r);
  }
}

static void random_heartbeats(rng *r, heartbeat_set *set, uint32_t count) {
  set->count = 0;
  while (set->count < count) {
    uint64_t group = random_group(r);
    uint32_t type = rng_below(r, 2) ? FL_RAFT_MSG_HEARTBEAT : FL_RAFT_MSG_HEARTBEAT_RESP;
    bool duplicate = false;
    for (uint32_t i = 0; i < set->count; i++) {
      duplicate |= set->items[i].group == group && set->messages[i].type == type;
    }
    if (!duplicate) {
      add_heartbeat(set, group, type, rng_number(r, LIMIT), rng_number(r, LIMIT),
                    rng_number(r, LIMIT), rng_number(r, UINT64_MAX));
    }
  }
}

static void test_heartbeats_round_trip_random(void **state) {
  (void)state;
  static heartbeat_set set;
  static uint8_t buffer[2048 * CODEC_HEARTBEAT_MAX_BYTES + 8];
  rng r = {.state = 31337};
  uint32_t total = 0;
  for (int round = 0; round < 300; round++) {
    random_heartbeats(&r, &set, (uint32_t)rng_below(&r, 40));
    shuffle_items(&r, &set);
    size_t length = encode_heartbeats(&set, buffer, sizeof(buffer));
    uint8_t *block;
    uint8_t *copy = exact_copy(buffer, length, 1 + (size_t)round % 7, &block);
    assert_heartbeats_decode(&set, copy, length);
    free(block);
    total += set.count;
  }
  assert_true(total > 5000);
}

static void test_heartbeats_dense_are_small(void **state) {
  (void)state;
  static heartbeat_set set;
  static uint8_t buffer[2048 * CODEC_HEARTBEAT_MAX_BYTES + 8];
  set.count = 0;
  for (uint64_t group = 1000; group < 3000; group++) {
    add_heartbeat(&set, group, FL_RAFT_MSG_HEARTBEAT, 3, 120, 100000, 0);
  }
  size_t length = encode_heartbeats(&set, buffer, sizeof(buffer));
  /* First: 2 + 1 + 1 + 3 + 1 bytes; then 1 + 1 + 1 + 3 + 1. */
  assert_int_equal(8 + 8 + 1999 * 7, length);
  assert_heartbeats_decode(&set, buffer, length);
}

/* The exact bytes of docs/wire-format.md's example. */
static void test_heartbeats_layout(void **state) {
  (void)state;
  static heartbeat_set set;
  set.count = 0;
  add_heartbeat(&set, 300, FL_RAFT_MSG_HEARTBEAT, 3, 7, 2, 1);
  add_heartbeat(&set, 2, FL_RAFT_MSG_HEARTBEAT_RESP, 3, 9, 0, 4);
  add_heartbeat(&set, 5, FL_RAFT_MSG_HEARTBEAT, 3, 7, 2, 0);
  uint8_t buffer[64];
  size_t length = encode_heartbeats(&set, buffer, sizeof(buffer));
  const uint8_t expected[] = {2, 0,    0,    0, 1, 0, 0, 0, 5, 3, 7, 2,
                              0, 0xa7, 0x02, 3, 7, 2, 1, 2, 3, 9, 4};
  assert_int_equal(sizeof(expected), length);
  assert_memory_equal(expected, buffer, length);
  /* The input was sorted in place. */
  assert_int_equal(5, set.items[0].group);
  assert_int_equal(300, set.items[1].group);
  assert_int_equal(2, set.items[2].group);
  assert_heartbeats_decode(&set, buffer, length);
}

static void test_heartbeats_extreme_groups(void **state) {
  (void)state;
  static heartbeat_set set;
  static uint8_t buffer[4096];
  set.count = 0;
  add_heartbeat(&set, UINT64_MAX, FL_RAFT_MSG_HEARTBEAT, LIMIT, LIMIT, LIMIT, UINT64_MAX);
  add_heartbeat(&set, 0, FL_RAFT_MSG_HEARTBEAT, 0, 0, 0, 0);
  add_heartbeat(&set, 1ull << 63, FL_RAFT_MSG_HEARTBEAT, 1, 2, 3, 4);
  add_heartbeat(&set, 1, FL_RAFT_MSG_HEARTBEAT, 1, 2, 3, 4);
  add_heartbeat(&set, UINT64_MAX, FL_RAFT_MSG_HEARTBEAT_RESP, LIMIT, LIMIT, 0, UINT64_MAX);
  add_heartbeat(&set, 0, FL_RAFT_MSG_HEARTBEAT_RESP, 1, 1, 0, 1);
  add_heartbeat(&set, 1ull << 40, FL_RAFT_MSG_HEARTBEAT_RESP, 1, 1, 0, 1);
  size_t length = encode_heartbeats(&set, buffer, sizeof(buffer));
  assert_heartbeats_decode(&set, buffer, length);
  static heartbeat_set empty;
  assert_int_equal(0, codec_heartbeats_encode(empty.items, 0, buffer, 8, &length));
  assert_int_equal(8, length);
  assert_heartbeats_decode(&empty, buffer, length);
}

static int encode_three(heartbeat_set *set, size_t capacity, size_t *length) {
  static uint8_t buffer[256];
  return codec_heartbeats_encode(set->items, set->count, buffer, capacity, length);
}

static void test_heartbeats_encoder_refuses(void **state) {
  (void)state;
  static heartbeat_set set;
  size_t length = 0;
  set.count = 0;
  add_heartbeat(&set, 4, FL_RAFT_MSG_HEARTBEAT, 1, 1, 1, 1);
  add_heartbeat(&set, 4, FL_RAFT_MSG_HEARTBEAT_RESP, 1, 1, 0, 1); /* other kind: fine */
  add_heartbeat(&set, 5, FL_RAFT_MSG_HEARTBEAT, 2, 2, 2, 2);
  assert_int_equal(0, encode_three(&set, 256, &length));
  set.items[2].group = 4; /* whichever item it is now, one group twice in one kind */
  set.messages[0].type = set.messages[1].type = set.messages[2].type = FL_RAFT_MSG_HEARTBEAT;
  assert_int_equal(TRANSPORT_E_MALFORMED, encode_three(&set, 256, &length));

  fl_raft_message *m = &set.messages[1];
  set.items[0].group = 1;
  set.items[1].group = 2;
  set.items[2].group = 3;
  assert_int_equal(0, encode_three(&set, 256, &length));
  *m = (fl_raft_message){.type = FL_RAFT_MSG_APPEND, .term = 1};
  assert_int_equal(TRANSPORT_E_TYPE, encode_three(&set, 256, &length));
  *m = (fl_raft_message){.type = FL_RAFT_MSG_HEARTBEAT, .term = 1, .reject = true};
  assert_false(codec_heartbeat_is_coalescible(m));
  assert_int_equal(TRANSPORT_E_MALFORMED, encode_three(&set, 256, &length));
  *m = (fl_raft_message){.type = FL_RAFT_MSG_HEARTBEAT, .term = 1, .log_term = 1};
  assert_false(codec_heartbeat_is_coalescible(m));
  *m = (fl_raft_message){.type = FL_RAFT_MSG_HEARTBEAT, .term = 1, .reject_hint = 1};
  assert_false(codec_heartbeat_is_coalescible(m));
  *m = (fl_raft_message){.type = FL_RAFT_MSG_HEARTBEAT_RESP, .term = 1, .commit = 1};
  assert_false(codec_heartbeat_is_coalescible(m));
  assert_int_equal(TRANSPORT_E_MALFORMED, encode_three(&set, 256, &length));
  *m = (fl_raft_message){.type = FL_RAFT_MSG_HEARTBEAT, .term = LIMIT + 1};
  assert_false(codec_heartbeat_is_coalescible(m));
  *m = (fl_raft_message){.type = FL_RAFT_MSG_HEARTBEAT, .term = 1, .index = LIMIT + 1};
  assert_false(codec_heartbeat_is_coalescible(m));
  *m = (fl_raft_message){.type = FL_RAFT_MSG_HEARTBEAT, .term = 1, .commit = 7, .context = 9};
  assert_true(codec_heartbeat_is_coalescible(m));
  assert_int_equal(0, encode_three(&set, 256, &length));
}

/* FULL writes nothing; exactly the size needed succeeds. */
static void test_heartbeats_encoder_full(void **state) {
  (void)state;
  static heartbeat_set set;
  static uint8_t buffer[4096];
  rng r = {.state = 8};
  random_heartbeats(&r, &set, 50);
  size_t needed = 0;
  assert_int_equal(0,
                   codec_heartbeats_encode(set.items, set.count, buffer, sizeof(buffer), &needed));
  memset(buffer, 0xee, sizeof(buffer));
  size_t length = 0;
  assert_int_equal(TRANSPORT_E_FULL,
                   codec_heartbeats_encode(set.items, set.count, buffer, needed - 1, &length));
  for (size_t i = 0; i < sizeof(buffer); i++) {
    assert_int_equal(0xee, buffer[i]);
  }
  assert_int_equal(0, codec_heartbeats_encode(set.items, set.count, buffer, needed, &length));
  assert_int_equal(needed, length);
  assert_heartbeats_decode(&set, buffer, length);
}

static int decode_heartbeat_bytes(const uint8_t *bytes, size_t length, uint32_t *items) {
  uint8_t *block;
  uint8_t *copy = exact_copy(bytes, length, 3, &block);
  codec_heartbeats_decoder decoder;
  codec_heartbeats_decoder_init(&decoder, copy, length, FROM_NODE, TO_NODE);
  uint64_t group;
  fl_raft_message m;
  int rc;
  *items = 0;
  while ((rc = codec_heartbeats_next(&decoder, &group, &m)) == 1) {
    (*items)++;
    assert_true(m.term <= LIMIT && m.index <= LIMIT && m.commit <= LIMIT);
  }
  if (rc < 0) {
    assert_int_equal(rc, codec_heartbeats_next(&decoder, &group, &m));
  }
  free(block);
  return rc;
}

#define HB_DECODE(expected_rc, ...)                                                                \
  do {                                                                                             \
    const uint8_t bytes[] = {__VA_ARGS__};                                                         \
    uint32_t items_read;                                                                           \
    assert_int_equal(expected_rc, decode_heartbeat_bytes(bytes, sizeof(bytes), &items_read));      \
  } while (0)

static void test_heartbeats_malformed(void **state) {
  (void)state;
  /* One heartbeat: group 1, term 2, index 3, commit 4, context 5. */
  HB_DECODE(0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5);
  /* Group as the longest valid varint (UINT64_MAX). */
  HB_DECODE(0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2,
            3, 4, 5);
  /* Tenth byte above 1: bits past 64. */
  HB_DECODE(TRANSPORT_E_MALFORMED, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 2, 2, 3, 4, 5);
  /* An eleventh byte announced. */
  HB_DECODE(TRANSPORT_E_MALFORMED, 1, 0, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
            0x80, 0x80, 0x81, 1, 2, 3, 4, 5);
  /* Not the shortest form. */
  HB_DECODE(TRANSPORT_E_MALFORMED, 1, 0, 0, 0, 0, 0, 0, 0, 0x81, 0x00, 2, 3, 4, 5);
  /* Term above the limit (2^63: ten bytes). */
  HB_DECODE(TRANSPORT_E_MALFORMED, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
            0x80, 0x80, 0x80, 0x01, 3, 4, 5);
  /* Two heartbeats, the second with gap 0: not increasing. */
  HB_DECODE(TRANSPORT_E_MALFORMED, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 0, 2, 3, 4, 5);
  /* Gap past UINT64_MAX. */
  HB_DECODE(TRANSPORT_E_MALFORMED, 2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5);
  /* Group 0 first is fine, in both kinds. */
  HB_DECODE(0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 2, 3, 4, 5, 0, 2, 3, 5);
  /* Counts claiming more than the bytes can hold. */
  HB_DECODE(TRANSPORT_E_TRUNCATED, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 2, 3, 4, 5);
  HB_DECODE(TRANSPORT_E_TRUNCATED, 0, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7);
  /* A varint cut at the end. */
  HB_DECODE(TRANSPORT_E_TRUNCATED, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 0x85);
  /* Bytes past the last item. */
  HB_DECODE(TRANSPORT_E_MALFORMED, 1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 0);
  HB_DECODE(TRANSPORT_E_TRUNCATED, 1, 0, 0);
}

static void test_heartbeats_truncated_everywhere(void **state) {
  (void)state;
  static heartbeat_set set;
  static uint8_t buffer[100 * CODEC_HEARTBEAT_MAX_BYTES + 8];
  rng r = {.state = 555};
  random_heartbeats(&r, &set, 100);
  size_t length = encode_heartbeats(&set, buffer, sizeof(buffer));
  for (size_t cut = 0; cut < length; cut++) {
    uint32_t items = 0;
    assert_int_equal(TRANSPORT_E_TRUNCATED, decode_heartbeat_bytes(buffer, cut, &items));
    assert_true(items < set.count);
  }
  uint32_t items = 0;
  assert_int_equal(0, decode_heartbeat_bytes(buffer, length, &items));
  assert_int_equal(set.count, items);
  /* Every single-bit flip: an error or a bounded, canonical payload. */
  for (size_t bit = 0; bit < length * 8; bit++) {
    buffer[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    (void)decode_heartbeat_bytes(buffer, length, &items);
    buffer[bit / 8] ^= (uint8_t)(1u << (bit % 8));
  }
}

/* ---- snapshot chunks and acks --------------------------------------- */

static codec_snapshot_chunk chunk_at(uint64_t offset, uint32_t length, uint64_t total) {
  return (codec_snapshot_chunk){.group = 12,
                                .stream_id = 0xfeed,
                                .snapshot_index = 1000,
                                .snapshot_term = 4,
                                .offset = offset,
                                .total_bytes = total,
                                .length = length,
                                .last = offset + length == total,
                                .data = data_pool};
}

static void assert_chunk_round_trip(const codec_snapshot_chunk *chunk, bool every_cut) {
  uint8_t buffer[CODEC_SNAPSHOT_CHUNK_HEADER_BYTES + 4096];
  size_t length = 0;
  assert_int_equal(0, codec_snapshot_chunk_encode(chunk, buffer, sizeof(buffer), &length));
  assert_int_equal(CODEC_SNAPSHOT_CHUNK_HEADER_BYTES + chunk->length, length);
  uint8_t header[CODEC_SNAPSHOT_CHUNK_HEADER_BYTES];
  assert_int_equal(0, codec_snapshot_chunk_encode_header(chunk, header));
  assert_memory_equal(header, buffer, sizeof(header));
  uint8_t *block;
  uint8_t *copy = exact_copy(buffer, length, 5, &block);
  codec_snapshot_chunk decoded;
  assert_int_equal(0, codec_snapshot_chunk_decode(copy, length, &decoded));
  assert_int_equal(chunk->group, decoded.group);
  assert_int_equal(chunk->stream_id, decoded.stream_id);
  assert_int_equal(chunk->snapshot_index, decoded.snapshot_index);
  assert_int_equal(chunk->snapshot_term, decoded.snapshot_term);
  assert_int_equal(chunk->offset, decoded.offset);
  assert_int_equal(chunk->total_bytes, decoded.total_bytes);
  assert_int_equal(chunk->length, decoded.length);
  assert_int_equal(chunk->last, decoded.last);
  assert_ptr_equal(copy + CODEC_SNAPSHOT_CHUNK_HEADER_BYTES, decoded.data);
  if (chunk->length > 0) {
    assert_memory_equal(chunk->data, decoded.data, chunk->length);
  }
  for (size_t cut = 0; every_cut && cut < length; cut++) {
    assert_int_equal(TRANSPORT_E_TRUNCATED, codec_snapshot_chunk_decode(copy, cut, &decoded));
  }
  free(block);
}

static void test_snapshot_chunk_round_trip(void **state) {
  (void)state;
  codec_snapshot_chunk chunk = chunk_at(0, 100, 250);
  assert_chunk_round_trip(&chunk, true);
  chunk = chunk_at(100, 150, 250);
  assert_true(chunk.last);
  assert_chunk_round_trip(&chunk, true);
  chunk = chunk_at(0, 0, 0); /* the one chunk of an empty snapshot */
  chunk.data = NULL;
  assert_chunk_round_trip(&chunk, true);
  chunk = chunk_at(UINT64_MAX - 4000, 4000, UINT64_MAX);
  assert_chunk_round_trip(&chunk, true);
  rng r = {.state = 99};
  for (int i = 0; i < 2000; i++) {
    uint64_t total = 1 + rng_number(&r, UINT64_MAX - 1);
    uint64_t offset = rng_number(&r, total - 1);
    uint64_t room = total - offset;
    uint32_t length = 1 + (uint32_t)rng_below(&r, room < 4096 ? room : 4096);
    chunk = chunk_at(offset, length, total);
    chunk.group = rng_next(&r);
    chunk.stream_id = rng_next(&r);
    chunk.snapshot_index = rng_number(&r, LIMIT);
    chunk.snapshot_term = rng_number(&r, LIMIT);
    chunk.data = data_pool + rng_below(&r, DATA_POOL_BYTES - length);
    assert_chunk_round_trip(&chunk, i < 20);
  }
}

static void test_snapshot_chunk_bounds(void **state) {
  (void)state;
  uint8_t buffer[512];
  size_t length;
  codec_snapshot_chunk chunk = chunk_at(200, 100, 250); /* past the end */
  chunk.last = false;
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_chunk_check(&chunk));
  assert_int_equal(TRANSPORT_E_MALFORMED,
                   codec_snapshot_chunk_encode(&chunk, buffer, sizeof(buffer), &length));
  chunk = chunk_at(UINT64_MAX - 5, 10, UINT64_MAX); /* offset + length wraps */
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_chunk_check(&chunk));
  chunk = chunk_at(300, 1, 250); /* offset past the total */
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_chunk_check(&chunk));
  chunk = chunk_at(0, 100, 250);
  chunk.last = true; /* claims to end but does not */
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_chunk_check(&chunk));
  chunk = chunk_at(150, 100, 250);
  chunk.last = false; /* ends but does not say so */
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_chunk_check(&chunk));
  chunk = chunk_at(10, 0, 250); /* an empty chunk of a non-empty snapshot */
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_chunk_check(&chunk));
  chunk = chunk_at(0, 10, 250);
  chunk.snapshot_term = LIMIT + 1;
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_chunk_check(&chunk));
  chunk = chunk_at(0, 10, 250);
  chunk.data = NULL;
  assert_int_equal(TRANSPORT_E_MALFORMED,
                   codec_snapshot_chunk_encode(&chunk, buffer, sizeof(buffer), &length));
  chunk = chunk_at(0, 10, 250);
  assert_int_equal(TRANSPORT_E_FULL, codec_snapshot_chunk_encode(&chunk, buffer, 65, &length));
  assert_int_equal(0, codec_snapshot_chunk_encode(&chunk, buffer, 66, &length));
  assert_int_equal(66, length);
}

/* Damage a valid chunk's header at `offset` and decode it. */
static int decode_chunk_patched(size_t offset, uint8_t value, size_t extra_bytes) {
  codec_snapshot_chunk chunk = chunk_at(64, 16, 200);
  uint8_t buffer[128];
  size_t length = 0;
  assert_int_equal(0, codec_snapshot_chunk_encode(&chunk, buffer, sizeof(buffer), &length));
  if (offset < length) {
    buffer[offset] = value;
  }
  codec_snapshot_chunk decoded;
  return codec_snapshot_chunk_decode(buffer, length + extra_bytes, &decoded);
}

static void test_snapshot_chunk_damage(void **state) {
  (void)state;
  assert_int_equal(0, decode_chunk_patched(1000, 0, 0));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_chunk_patched(1000, 0, 1));  /* extra byte */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_chunk_patched(23, 0x80, 0)); /* index */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_chunk_patched(39, 0x01, 0)); /* offset */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_chunk_patched(40, 64, 0));   /* total < end */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_chunk_patched(40, 80, 0));   /* ends, not last */
  assert_int_equal(0, decode_chunk_patched(40, 81, 0));
  assert_int_equal(TRANSPORT_E_TRUNCATED, decode_chunk_patched(48, 17, 0)); /* length */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_chunk_patched(48, 15, 0));
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_chunk_patched(52, 1, 0)); /* last flag */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_chunk_patched(52, 2, 0)); /* unknown flag */
  assert_int_equal(TRANSPORT_E_MALFORMED, decode_chunk_patched(55, 1, 0)); /* reserved */
  assert_int_equal(0, decode_chunk_patched(56, 0x42, 0));                  /* data: any */
}

static void test_snapshot_ack(void **state) {
  (void)state;
  uint8_t buffer[64];
  size_t length = 0;
  codec_snapshot_ack acks[] = {
      {.group = 1,
       .stream_id = 2,
       .next_offset = 1 << 20,
       .window_bytes = 4 << 20,
       .status = CODEC_SNAPSHOT_OK},
      {.group = UINT64_MAX, .stream_id = 0, .status = CODEC_SNAPSHOT_RESTART, .window_bytes = 7},
      {.group = 0, .stream_id = UINT64_MAX, .status = CODEC_SNAPSHOT_ABORT},
  };
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(0, codec_snapshot_ack_encode(&acks[i], buffer, sizeof(buffer), &length));
    assert_int_equal(CODEC_SNAPSHOT_ACK_BYTES, length);
    assert_int_equal(acks[i].next_offset, load_u64(buffer + 16));
    assert_int_equal(acks[i].status, buffer[28]);
    codec_snapshot_ack decoded;
    assert_int_equal(0, codec_snapshot_ack_decode(buffer, length, &decoded));
    assert_memory_equal(&acks[i], &decoded, sizeof(decoded));
    for (size_t cut = 0; cut < length; cut++) {
      assert_int_equal(TRANSPORT_E_TRUNCATED, codec_snapshot_ack_decode(buffer, cut, &decoded));
    }
    assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_ack_decode(buffer, 33, &decoded));
  }
  codec_snapshot_ack bad = {.status = CODEC_SNAPSHOT_STATUS_COUNT};
  assert_int_equal(TRANSPORT_E_MALFORMED,
                   codec_snapshot_ack_encode(&bad, buffer, sizeof(buffer), &length));
  bad = (codec_snapshot_ack){.status = CODEC_SNAPSHOT_RESTART, .next_offset = 5};
  assert_int_equal(TRANSPORT_E_MALFORMED,
                   codec_snapshot_ack_encode(&bad, buffer, sizeof(buffer), &length));
  assert_int_equal(TRANSPORT_E_FULL, codec_snapshot_ack_encode(&acks[0], buffer, 31, &length));
  codec_snapshot_ack decoded;
  assert_int_equal(0, codec_snapshot_ack_encode(&acks[0], buffer, sizeof(buffer), &length));
  buffer[28] = 3;
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_ack_decode(buffer, 32, &decoded));
  buffer[28] = CODEC_SNAPSHOT_ABORT; /* with an offset: refused */
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_ack_decode(buffer, 32, &decoded));
  buffer[28] = CODEC_SNAPSHOT_OK;
  buffer[31] = 1;
  assert_int_equal(TRANSPORT_E_MALFORMED, codec_snapshot_ack_decode(buffer, 32, &decoded));
}

/* ---- through whole frames ------------------------------------------- */

static void test_through_frames(void **state) {
  (void)state;
  sample samples[FL_RAFT_MSG_TYPE_COUNT];
  uint32_t count = every_type_batch(samples, 2024);
  uint8_t buffer[FRAME_HEADER_BYTES + 8192];
  size_t length = encode_samples(samples, count, buffer + FRAME_HEADER_BYTES,
                                 sizeof(buffer) - FRAME_HEADER_BYTES);
  struct iovec payload = {.iov_base = buffer + FRAME_HEADER_BYTES, .iov_len = length};
  frame_header header;
  frame_seal(&header, FRAME_RAFT, &payload, 1);
  memcpy(buffer, &header, sizeof(header));
  frame_header received;
  memcpy(&received, buffer, sizeof(received));
  assert_int_equal(0, frame_header_check(&received, 1 << 20));
  assert_int_equal(FRAME_RAFT, received.type);
  assert_int_equal(length, received.payload_length);
  assert_int_equal(0, frame_payload_check(&received, buffer + FRAME_HEADER_BYTES));
  decode_and_compare(samples, count, buffer + FRAME_HEADER_BYTES, received.payload_length);
}

int main(void) {
  fill_data_pool();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_raft_round_trip_random),
      cmocka_unit_test(test_raft_layout),
      cmocka_unit_test(test_raft_empty_batch),
      cmocka_unit_test(test_raft_encoder_full),
      cmocka_unit_test(test_raft_encoder_exact_fit),
      cmocka_unit_test(test_raft_encoder_refuses),
      cmocka_unit_test(test_raft_limits_accepted),
      cmocka_unit_test(test_raft_truncated_everywhere),
      cmocka_unit_test(test_raft_bit_flips),
      cmocka_unit_test(test_raft_random_damage),
      cmocka_unit_test(test_raft_damaged_fields),
      cmocka_unit_test(test_raft_entries_on_other_types),
      cmocka_unit_test(test_raft_trailing_bytes),
      cmocka_unit_test(test_raft_snapshot_meta_damage),
      cmocka_unit_test(test_heartbeats_round_trip_random),
      cmocka_unit_test(test_heartbeats_dense_are_small),
      cmocka_unit_test(test_heartbeats_layout),
      cmocka_unit_test(test_heartbeats_extreme_groups),
      cmocka_unit_test(test_heartbeats_encoder_refuses),
      cmocka_unit_test(test_heartbeats_encoder_full),
      cmocka_unit_test(test_heartbeats_malformed),
      cmocka_unit_test(test_heartbeats_truncated_everywhere),
      cmocka_unit_test(test_snapshot_chunk_round_trip),
      cmocka_unit_test(test_snapshot_chunk_bounds),
      cmocka_unit_test(test_snapshot_chunk_damage),
      cmocka_unit_test(test_snapshot_ack),
      cmocka_unit_test(test_through_frames),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
