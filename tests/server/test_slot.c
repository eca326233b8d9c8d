/*
 * test_slot.c - CRC16 and key -> slot (server/slot.h) against the values
 * redis-server 7.0 gives for CLUSTER KEYSLOT, and the CRC table against a
 * bit-by-bit computation of the same polynomial.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "server/slot.h"

/* CRC16/XMODEM one bit at a time: the definition the table must match. */
static uint16_t crc16_bitwise(const void *data, size_t length) {
  const unsigned char *bytes = data;
  uint16_t crc = 0;
  for (size_t index = 0; index < length; index++) {
    crc ^= (uint16_t)(bytes[index] << 8);
    for (int bit = 0; bit < 8; bit++) {
      crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
  }
  return crc;
}

static uint16_t slot_of(const char *key) {
  return slot_for_key(key, strlen(key));
}

static void test_crc16_check_value(void **state) {
  (void)state;
  assert_int_equal(slot_crc16("123456789", 9), 0x31C3);
  assert_int_equal(slot_crc16(NULL, 0), 0);
  assert_int_equal(slot_crc16("A", 1), 0x58E5);
}

static void test_crc16_matches_bitwise(void **state) {
  (void)state;
  unsigned char data[512];
  uint32_t seed = 12345;
  for (size_t index = 0; index < sizeof(data); index++) {
    seed = seed * 1103515245u + 12345u;
    data[index] = (unsigned char)(seed >> 16);
  }
  /* Every single byte exercises every table entry. */
  for (unsigned value = 0; value < 256; value++) {
    unsigned char byte = (unsigned char)value;
    assert_int_equal(slot_crc16(&byte, 1), crc16_bitwise(&byte, 1));
  }
  for (size_t length = 0; length <= sizeof(data); length += 7) {
    assert_int_equal(slot_crc16(data, length), crc16_bitwise(data, length));
  }
}

/* Values given by redis-server 7.0.15 for CLUSTER KEYSLOT <key>. */
static void test_redis_keyslot_values(void **state) {
  (void)state;
  static const struct {
    const char *key;
    uint16_t slot;
  } known[] = {
      {"foo", 12182},
      {"bar", 5061},
      {"{user1000}.following", 3443},
      {"{user1000}.followers", 3443},
      {"foo{}{bar}", 8363},
      {"foo{{bar}}zap", 4015},
      {"foo{bar}{zap}", 5061},
      {"{bar", 4015},
      {"", 0},
      {"{}", 15257},
      {"a{b}", 3300},
      {"{", 4092},
      {"}", 12090},
      {"123456789", 12739},
  };
  for (size_t index = 0; index < sizeof(known) / sizeof(known[0]); index++) {
    if (slot_of(known[index].key) != known[index].slot) {
      fail_msg("key \"%s\": expected slot %u, got %u", known[index].key, known[index].slot,
               slot_of(known[index].key));
    }
  }
}

static void test_hash_tags(void **state) {
  (void)state;
  /* The tag is what lies between the first '{' and the next '}'. */
  assert_int_equal(slot_of("{user1000}.following"), slot_of("user1000"));
  assert_int_equal(slot_of("x{tag}y{other}"), slot_of("tag"));
  assert_int_equal(slot_of("foo{bar}{zap}"), slot_of("bar"));
  assert_int_equal(slot_of("foo{{bar}}zap"), slot_of("{bar"));
  assert_int_equal(slot_of("a{b}c{d}"), slot_of("b"));
  /* No tag: an empty one, an unclosed one, a '}' before the '{'. */
  assert_int_equal(slot_of("foo{}{bar}"), slot_crc16("foo{}{bar}", 10) & (SLOT_COUNT - 1));
  assert_int_equal(slot_of("foo{bar"), slot_crc16("foo{bar", 7) & (SLOT_COUNT - 1));
  assert_int_equal(slot_of("foo}bar{"), slot_crc16("foo}bar{", 8) & (SLOT_COUNT - 1));
  assert_int_equal(slot_of("}{x}"), slot_of("x"));
  /* Binary keys: NUL bytes are key bytes, inside a tag too. */
  assert_int_equal(slot_for_key("a\0{b\0c}", 7), slot_crc16("b\0c", 3) & (SLOT_COUNT - 1));
  assert_int_equal(slot_for_key("a\0b", 3), slot_crc16("a\0b", 3) & (SLOT_COUNT - 1));
  assert_int_not_equal(slot_for_key("a\0b", 3), slot_of("a"));
}

static void test_slots_in_range(void **state) {
  (void)state;
  char key[32];
  unsigned seen_high = 0;
  for (unsigned index = 0; index < 100000; index++) {
    int length = snprintf(key, sizeof(key), "key:%u", index);
    uint16_t slot = slot_for_key(key, (size_t)length);
    assert_true(slot < SLOT_COUNT);
    if (slot >= SLOT_COUNT / 2) {
      seen_high++;
    }
  }
  /* Spread over the whole range, not folded into half of it. */
  assert_true(seen_high > 40000 && seen_high < 60000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc16_check_value),    cmocka_unit_test(test_crc16_matches_bitwise),
      cmocka_unit_test(test_redis_keyslot_values), cmocka_unit_test(test_hash_tags),
      cmocka_unit_test(test_slots_in_range),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
