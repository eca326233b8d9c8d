/*
 * test_wal_format.c - segment names, segment headers, and every outcome of
 * record verification. Records are verified from heap buffers exactly
 * `available` bytes long, so a read past the end shows under ASan.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <xxhash.h>

#include "wal/format.h"

#define SEQUENCE 0x1122334455667788ull

static void test_segment_name_round_trip(void **state) {
  (void)state;
  const uint64_t sequences[] = {0, 1, 0xdeadbeefull, SEQUENCE, UINT64_MAX};
  for (size_t i = 0; i < sizeof(sequences) / sizeof(sequences[0]); i++) {
    char name[32];
    wal_segment_name(sequences[i], name, sizeof(name));
    assert_int_equal(strlen(name), 24);
    uint64_t parsed = 0;
    assert_true(wal_segment_parse_name(name, &parsed));
    assert_true(parsed == sequences[i]);
  }
  char name[32];
  wal_segment_name(0xabcull, name, sizeof(name));
  assert_string_equal(name, "wal-0000000000000abc.log");
  /* a spare keeps its old sequence under another suffix; neither parser
   * takes the other's names */
  uint64_t parsed = 0;
  wal_spare_name(0xabcull, name, sizeof(name));
  assert_string_equal(name, "wal-0000000000000abc.spare");
  assert_true(wal_spare_parse_name(name, &parsed));
  assert_true(parsed == 0xabc);
  assert_false(wal_segment_parse_name(name, &parsed));
  assert_false(wal_spare_parse_name("wal-0000000000000abc.log", &parsed));
  assert_false(wal_spare_parse_name("wal-0000000000000abc.spare.tmp", &parsed));
}

static void test_segment_name_rejects_other_files(void **state) {
  (void)state;
  const char *others[] = {
      "",
      "wal-.log",
      "wal-0000000000000abc.lo",
      "wal-0000000000000abc.log.tmp",
      "wal-000000000000abc.log",   /* 15 digits */
      "wal-00000000000000abc.log", /* 17 digits */
      "wal-0000000000000ABC.log",  /* upper case: not the canonical name */
      "wal-000000000000000g.log",
      "wax-0000000000000abc.log",
      "wal-0000000000000abc.tmp",
      "wal-+000000000000abc.log",
  };
  for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
    uint64_t parsed = 42;
    assert_false(wal_segment_parse_name(others[i], &parsed));
    assert_true(parsed == 42); /* untouched on refusal */
  }
}

static void test_segment_header(void **state) {
  (void)state;
  wal_segment_header header;
  wal_segment_header_encode(&header, 7, SEQUENCE, 64u << 20, 8u << 20, 4096);
  const char *reason = NULL;
  assert_int_equal(wal_segment_header_verify(&header, SEQUENCE, &reason), 0);
  assert_true(header.magic == WAL_SEGMENT_MAGIC);
  assert_int_equal(header.shard_id, 7);
  assert_true(header.segment_size == 64u << 20);
  assert_true(header.torn_window == 8u << 20);

  /* A well-formed header of another sequence: a misnamed file. */
  assert_int_equal(wal_segment_header_verify(&header, SEQUENCE + 1, &reason), -EINVAL);
  assert_non_null(strstr(reason, "sequence"));

  for (size_t bit = 0; bit < sizeof(header) * 8; bit++) {
    wal_segment_header damaged = header;
    ((uint8_t *)&damaged)[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    reason = NULL;
    assert_int_equal(wal_segment_header_verify(&damaged, SEQUENCE, &reason), -EINVAL);
    assert_non_null(reason);
  }
  wal_segment_header other = header;
  other.magic ^= 1;
  assert_int_equal(wal_segment_header_verify(&other, SEQUENCE, &reason), -EINVAL);
  assert_non_null(strstr(reason, "magic"));
  other = header;
  other.version = 2;
  assert_int_equal(wal_segment_header_verify(&other, SEQUENCE, &reason), -EINVAL);
  assert_non_null(strstr(reason, "version"));
}

/* Builds header + payload + zero padding in a buffer of `available` bytes
 * (at least the record's size, the rest zero). */
static uint8_t *make_record(uint8_t type, uint64_t group, const void *payload, uint32_t length,
                            uint64_t sequence, size_t available) {
  uint8_t *buffer = calloc(1, available == 0 ? 1 : available);
  assert_non_null(buffer);
  wal_record_header header;
  memset(&header, 0, sizeof(header));
  header.payload_length = length;
  header.type = type;
  header.group_id = group;
  wal_record_seal(&header, sequence, payload);
  assert_true(available >= sizeof(header) + wal_align(length));
  memcpy(buffer, &header, sizeof(header));
  memcpy(buffer + sizeof(header), payload, length);
  return buffer;
}

static const char PAYLOAD[] = "thirteen byte"; /* 13 bytes: padded to 16 */
#define PAYLOAD_LENGTH 13u
#define RECORD_SIZE (32u + 16u)

static void test_record_round_trip(void **state) {
  (void)state;
  for (uint8_t type = WAL_RECORD_ENTRIES; type < WAL_RECORD_TYPE_COUNT; type++) {
    uint8_t *record = make_record(type, 99, PAYLOAD, PAYLOAD_LENGTH, SEQUENCE, RECORD_SIZE);
    uint64_t total = 0;
    assert_int_equal(wal_record_verify(record, RECORD_SIZE, SEQUENCE, &total), WAL_RECORD_OK);
    assert_int_equal(total, RECORD_SIZE);
    wal_record_header header;
    memcpy(&header, record, sizeof(header));
    assert_int_equal(header.payload_length, PAYLOAD_LENGTH);
    assert_int_equal(header.type, type);
    assert_true(header.group_id == 99);
    assert_true(header.payload_checksum == XXH3_64bits_withSeed(PAYLOAD, 13, SEQUENCE));
    free(record);
  }
  /* An empty payload is a bare header. */
  uint8_t *record = make_record(WAL_RECORD_REMOVE, 5, "", 0, SEQUENCE, 32);
  uint64_t total = 0;
  assert_int_equal(wal_record_verify(record, 32, SEQUENCE, &total), WAL_RECORD_OK);
  assert_int_equal(total, 32);
  free(record);
}

static void test_record_end(void **state) {
  (void)state;
  uint8_t *zeros = calloc(1, 64);
  uint64_t total = 12345;
  assert_int_equal(wal_record_verify(zeros, 64, SEQUENCE, &total), WAL_RECORD_END);
  assert_int_equal(wal_record_verify(zeros, 32, SEQUENCE, &total), WAL_RECORD_END);
  /* No room for a header and nothing written there: the segment's end. */
  assert_int_equal(wal_record_verify(zeros, 8, SEQUENCE, &total), WAL_RECORD_END);
  assert_int_equal(wal_record_verify(zeros, 0, SEQUENCE, &total), WAL_RECORD_END);
  assert_true(total == 12345);
  free(zeros);
}

static void test_record_flipped_header_bit(void **state) {
  (void)state;
  uint8_t *record =
      make_record(WAL_RECORD_ENTRIES, 3, PAYLOAD, PAYLOAD_LENGTH, SEQUENCE, RECORD_SIZE);
  for (unsigned bit = 0; bit < 32 * 8; bit++) {
    record[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    uint64_t total = 0;
    /* The header checksum is checked before any field is believed, so
     * even a flipped length is a bad header, not a short record. */
    wal_record_check check = wal_record_verify(record, RECORD_SIZE, SEQUENCE, &total);
    assert_int_equal(check, WAL_RECORD_BAD_HEADER);
    record[bit / 8] ^= (uint8_t)(1u << (bit % 8));
  }
  free(record);
}

static void test_record_flipped_payload_bit(void **state) {
  (void)state;
  uint8_t *record =
      make_record(WAL_RECORD_ENTRIES, 3, PAYLOAD, PAYLOAD_LENGTH, SEQUENCE, RECORD_SIZE);
  for (unsigned bit = 0; bit < PAYLOAD_LENGTH * 8; bit++) {
    record[32 + bit / 8] ^= (uint8_t)(1u << (bit % 8));
    uint64_t total = 0;
    assert_int_equal(wal_record_verify(record, RECORD_SIZE, SEQUENCE, &total),
                     WAL_RECORD_BAD_PAYLOAD);
    record[32 + bit / 8] ^= (uint8_t)(1u << (bit % 8));
  }
  free(record);
}

static void test_record_wrong_sequence(void **state) {
  (void)state;
  /* The stale record of a recycled segment's earlier life. */
  uint8_t *record =
      make_record(WAL_RECORD_ENTRIES, 3, PAYLOAD, PAYLOAD_LENGTH, SEQUENCE, RECORD_SIZE);
  uint64_t total = 0;
  assert_int_equal(wal_record_verify(record, RECORD_SIZE, SEQUENCE + 1, &total),
                   WAL_RECORD_BAD_HEADER);
  free(record);
}

static void test_record_short(void **state) {
  (void)state;
  uint8_t *full =
      make_record(WAL_RECORD_ENTRIES, 3, PAYLOAD, PAYLOAD_LENGTH, SEQUENCE, RECORD_SIZE);
  for (size_t available = 1; available < RECORD_SIZE; available++) {
    uint8_t *cut = malloc(available);
    memcpy(cut, full, available);
    uint64_t total = 0;
    assert_int_equal(wal_record_verify(cut, available, SEQUENCE, &total), WAL_RECORD_SHORT);
    free(cut);
  }
  free(full);
  /* A huge length in a valid header: refused without reading past the end. */
  wal_record_header header;
  memset(&header, 0, sizeof(header));
  header.payload_length = UINT32_MAX;
  header.type = WAL_RECORD_ENTRIES;
  header.header_checksum = XXH3_64bits_withSeed(&header, 24, SEQUENCE);
  uint8_t *record = malloc(64);
  memset(record, 0, 64);
  memcpy(record, &header, sizeof(header));
  uint64_t total = 0;
  assert_int_equal(wal_record_verify(record, 64, SEQUENCE, &total), WAL_RECORD_SHORT);
  free(record);
}

/* Fields a checksum cannot defend: a correctly sealed header that still
 * breaks the format's rules. */
static void test_record_bad_fields(void **state) {
  (void)state;
  const uint8_t bad_types[] = {0, WAL_RECORD_TYPE_COUNT, 255};
  for (size_t i = 0; i < sizeof(bad_types); i++) {
    uint8_t *record = make_record(bad_types[i], 3, PAYLOAD, PAYLOAD_LENGTH, SEQUENCE, RECORD_SIZE);
    uint64_t total = 0;
    assert_int_equal(wal_record_verify(record, RECORD_SIZE, SEQUENCE, &total),
                     WAL_RECORD_BAD_HEADER);
    free(record);
  }
  uint8_t *record =
      make_record(WAL_RECORD_ENTRIES, 3, PAYLOAD, PAYLOAD_LENGTH, SEQUENCE, RECORD_SIZE);
  wal_record_header header;
  memcpy(&header, record, sizeof(header));
  header.reserved[1] = 1;
  header.header_checksum = XXH3_64bits_withSeed(&header, 24, SEQUENCE);
  memcpy(record, &header, sizeof(header));
  uint64_t total = 0;
  assert_int_equal(wal_record_verify(record, RECORD_SIZE, SEQUENCE, &total), WAL_RECORD_BAD_HEADER);
  free(record);
}

static void test_records_in_sequence(void **state) {
  (void)state;
  /* Three records back to back, then zeros: a scan finds them and stops. */
  uint8_t segment[256];
  memset(segment, 0, sizeof(segment));
  uint64_t offset = 0;
  for (uint32_t length = 1; length <= 3 * 7; length += 10) {
    uint8_t payload[32];
    memset(payload, (int)length, sizeof(payload));
    uint8_t *record =
        make_record(WAL_RECORD_ENTRIES, length, payload, length, SEQUENCE, 32 + wal_align(length));
    memcpy(segment + offset, record, 32 + wal_align(length));
    offset += 32 + wal_align(length);
    free(record);
  }
  uint64_t position = 0;
  int records = 0;
  for (;;) {
    uint64_t total = 0;
    wal_record_check check =
        wal_record_verify(segment + position, sizeof(segment) - position, SEQUENCE, &total);
    if (check == WAL_RECORD_END) {
      break;
    }
    assert_int_equal(check, WAL_RECORD_OK);
    assert_int_equal(total % WAL_RECORD_ALIGN, 0);
    position += total;
    records++;
  }
  assert_int_equal(records, 3);
  assert_true(position == offset);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_segment_name_round_trip),
      cmocka_unit_test(test_segment_name_rejects_other_files),
      cmocka_unit_test(test_segment_header),
      cmocka_unit_test(test_record_round_trip),
      cmocka_unit_test(test_record_end),
      cmocka_unit_test(test_record_flipped_header_bit),
      cmocka_unit_test(test_record_flipped_payload_bit),
      cmocka_unit_test(test_record_wrong_sequence),
      cmocka_unit_test(test_record_short),
      cmocka_unit_test(test_record_bad_fields),
      cmocka_unit_test(test_records_in_sequence),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
