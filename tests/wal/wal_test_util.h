/*
 * wal_test_util.h - helpers shared by the WAL's cmocka tests: small
 * options over the in-memory io, recognisable payloads, appends, checks.
 * Include after <cmocka.h>.
 */
#ifndef FLOTILLA_TESTS_WAL_TEST_UTIL_H
#define FLOTILLA_TESTS_WAL_TEST_UTIL_H

#include <stdint.h>

#include "wal/wal.h"

/* Groups fill_segments writes to: 1..GROUPS. */
#define GROUPS 8

/* 256 KiB segments, 32 KiB batches, pipeline depth 2, shard 7. */
wal_options small_options(wal_io *io);
/* Opens with small_options, asserting success (printing the report). */
wal *open_wal(wal_io *io, wal_recovery_report *report);
/* Payload of (group, index, term): recognisable, 0-39 bytes long. */
uint32_t payload_of(uint64_t group, uint64_t index, uint64_t term, uint8_t *out);
int append_one(wal *w, uint64_t group, uint64_t index, uint64_t term, wal_request *request);
/* Asserts the entry reads back with its term and payload. */
void expect_entry(wal *w, uint64_t group, uint64_t index, uint64_t term);
/* Asserts that opening fails as corruption (-EUCLEAN, nothing opened) with
 * an error naming `text`. */
void expect_open_corrupt(wal_io *io, const char *text);
/* Flushes and waits until nothing is in flight. */
void drain(wal *w);
/* `rounds` rounds of 20 entries (term 1) for each group 1..GROUPS, then drains. */
void fill_segments(wal *w, uint64_t *last_index, uint32_t rounds);

#endif
