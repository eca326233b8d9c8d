/*
 * wal_test_util.c - helpers shared by the WAL's cmocka tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "tests/wal/wal_test_util.h"

#include <errno.h>
#include <string.h>

wal_options small_options(wal_io *io) {
  wal_options options;
  wal_options_default(&options);
  options.io = io;
  options.segment_bytes = 256 * 1024;
  options.batch_bytes = 32 * 1024;
  options.pipeline_depth = 2;
  options.shard_id = 7;
  return options;
}

wal *open_wal(wal_io *io, wal_recovery_report *report) {
  wal_options options = small_options(io);
  wal_recovery_report local;
  report = report != NULL ? report : &local;
  wal *w = NULL;
  int rc = wal_open(&options, &w, report);
  if (rc != 0) {
    print_error("wal_open: %d %s\n", rc, report->error);
  }
  assert_int_equal(rc, 0);
  return w;
}

void expect_open_corrupt(wal_io *io, const char *text) {
  wal_options options = small_options(io);
  wal_recovery_report report;
  wal *broken = NULL;
  assert_int_equal(wal_open(&options, &broken, &report), -EUCLEAN);
  assert_null(broken);
  if (strstr(report.error, text) == NULL) {
    print_error("open failed with \"%s\", not naming \"%s\"\n", report.error, text);
  }
  assert_non_null(strstr(report.error, text));
}

uint32_t payload_of(uint64_t group, uint64_t index, uint64_t term, uint8_t *out) {
  uint32_t length = (uint32_t)((group * 7 + index * 13) % 40);
  for (uint32_t i = 0; i < length; i++) {
    out[i] = (uint8_t)(group * 31 + index * 17 + term + i);
  }
  return length;
}

int append_one(wal *w, uint64_t group, uint64_t index, uint64_t term, wal_request *request) {
  uint8_t data[64];
  wal_entry entry = {.index = index, .term = term};
  entry.length = payload_of(group, index, term, data);
  entry.data = data;
  return wal_append(w, group, &entry, 1, request);
}

void expect_entry(wal *w, uint64_t group, uint64_t index, uint64_t term) {
  wal_entry out[1];
  uint8_t buffer[64];
  uint8_t expected[64];
  uint32_t count = 0;
  assert_int_equal(
      wal_read(w, group, index, index + 1, 1 << 20, out, 1, &count, buffer, sizeof(buffer)), 0);
  assert_int_equal(count, 1);
  assert_int_equal(out[0].index, index);
  assert_int_equal(out[0].term, term);
  uint32_t length = payload_of(group, index, term, expected);
  assert_int_equal(out[0].length, length);
  assert_memory_equal(out[0].data, expected, length);
}

void drain(wal *w) {
  assert_int_equal(wal_flush(w), 0);
  while (wal_in_flight(w) > 0) {
    assert_true(wal_poll(w, true) >= 0);
  }
}

void fill_segments(wal *w, uint64_t *last_index, uint32_t rounds) {
  for (uint32_t round = 0; round < rounds; round++) {
    for (uint64_t group = 1; group <= GROUPS; group++) {
      for (uint32_t i = 0; i < 20; i++) {
        uint64_t index = ++last_index[group];
        int rc = append_one(w, group, index, 1, NULL);
        if (rc == -ENOBUFS) {
          assert_int_equal(wal_flush(w), 0);
          rc = append_one(w, group, index, 1, NULL);
        }
        assert_int_equal(rc, 0);
      }
    }
    assert_int_equal(wal_flush(w), 0);
    assert_true(wal_poll(w, false) >= 0);
  }
  drain(w);
}
