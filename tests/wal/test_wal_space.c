/*
 * test_wal_space.c - keeping disk use bounded: garbage collection, the
 * rewrite of lagging groups' live logs, recycled segments, and the recent
 * batches kept in memory for reads. Over the fault-injecting in-memory io.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/wal/wal_test_util.h"
#include "wal/format.h"
#include "wal/wal.h"

/* A group that wrote a few entries once and never compacts: without a
 * rewrite it would pin the first segment for ever. */
#define LAGGING (GROUPS + 1)
#define LAGGING_ENTRIES 3
/* A group with only markers (its entries compacted by its snapshot). */
#define IDLE (GROUPS + 2)

static const wal_hard_state idle_hard = {.term = 9, .vote = 1, .commit = 3};

static void write_lagging_and_idle(wal *w) {
  for (uint64_t index = 1; index <= LAGGING_ENTRIES; index++) {
    assert_int_equal(append_one(w, LAGGING, index, 4, NULL), 0);
  }
  assert_int_equal(append_one(w, IDLE, 1, 9, NULL), 0);
  assert_int_equal(wal_save_hard_state(w, IDLE, &idle_hard, NULL), 0);
  assert_int_equal(wal_save_snapshot(w, IDLE, 1, 9, "idle", 4, NULL), 0);
  drain(w);
}

/* Every group 1..GROUPS keeps its last 5 entries after a snapshot. */
static void snapshot_all(wal *w, const uint64_t *last_index) {
  for (uint64_t group = 1; group <= GROUPS; group++) {
    int rc = wal_save_snapshot(w, group, last_index[group] - 5, 1, "s", 1, NULL);
    if (rc == -ENOBUFS) {
      assert_int_equal(wal_flush(w), 0);
      rc = wal_save_snapshot(w, group, last_index[group] - 5, 1, "s", 1, NULL);
    }
    assert_int_equal(rc, 0);
  }
}

static void expect_everything(wal *w, const uint64_t *last_index) {
  wal_group_state group;
  for (uint64_t index = 1; index <= LAGGING_ENTRIES; index++) {
    expect_entry(w, LAGGING, index, 4);
  }
  assert_int_equal(wal_group(w, LAGGING, &group), 0);
  assert_int_equal(group.first_index, 1);
  assert_int_equal(group.last_index, LAGGING_ENTRIES);
  assert_int_equal(wal_group(w, IDLE, &group), 0);
  assert_memory_equal(&group.hard_state, &idle_hard, sizeof(idle_hard));
  assert_int_equal(group.snapshot_index, 1);
  char data[8];
  uint32_t length = 0;
  assert_int_equal(wal_snapshot_data(w, IDLE, data, sizeof(data), &length), 0);
  assert_int_equal(length, 4);
  assert_memory_equal(data, "idle", 4);
  for (uint64_t g = 1; g <= GROUPS; g++) {
    if (last_index[g] > 5) {
      assert_int_equal(wal_group(w, g, &group), 0);
      assert_true(group.last_index >= last_index[g]);
      expect_entry(w, g, last_index[g], 1);
    }
  }
}

/* Steady load with periodic snapshots, a lagging group and an idle group:
 * disk use plateaus, the lagging group's live log is rewritten forward,
 * retired segments come back as the new heads, and everything survives. */
static void test_disk_use_plateaus(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  write_lagging_and_idle(w);
  uint64_t last_index[GROUPS + 1] = {0};
  uint32_t most_segments_late = 0;
  for (uint32_t cycle = 0; cycle < 40; cycle++) {
    fill_segments(w, last_index, 40);
    snapshot_all(w, last_index);
    assert_true(wal_collect_garbage(w) >= 0);
    wal_stats stats;
    wal_get_stats(w, &stats);
    assert_true(stats.spares <= 2);
    if (cycle >= 20 && stats.segments > most_segments_late) {
      most_segments_late = stats.segments;
    }
  }
  wal_stats stats;
  wal_get_stats(w, &stats);
  /* 40 cycles wrote ~40 segments' worth; only a few stay */
  assert_true(most_segments_late <= 4);
  assert_true(stats.groups_rewritten > 0);
  assert_true(stats.segments_recycled > 0);
  assert_int_equal(wal_close(w), 0);
  w = open_wal(io, NULL);
  expect_everything(w, last_index);
  wal_get_stats(w, &stats);
  assert_true(stats.spares > 0); /* found again at open */
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* Many lagging groups with a few hundred live entries each: rewriting
 * them takes several batches and a rollover, so a crash has many places
 * to strike. */
#define CRASH_LAGGING_GROUPS 20
#define CRASH_LAGGING_ENTRIES 200
#define CRASH_LAGGING_FIRST (GROUPS + 10)

static void write_many_lagging(wal *w) {
  for (uint64_t g = 0; g < CRASH_LAGGING_GROUPS; g++) {
    for (uint64_t index = 1; index <= CRASH_LAGGING_ENTRIES; index++) {
      int rc = append_one(w, CRASH_LAGGING_FIRST + g, index, 3, NULL);
      if (rc == -ENOBUFS) {
        assert_int_equal(wal_flush(w), 0);
        rc = append_one(w, CRASH_LAGGING_FIRST + g, index, 3, NULL);
      }
      assert_int_equal(rc, 0);
    }
  }
  drain(w);
}

static void expect_many_lagging(wal *w) {
  for (uint64_t g = 0; g < CRASH_LAGGING_GROUPS; g++) {
    for (uint64_t index = 1; index <= CRASH_LAGGING_ENTRIES; index += 7) {
      expect_entry(w, CRASH_LAGGING_FIRST + g, index, 3);
    }
    expect_entry(w, CRASH_LAGGING_FIRST + g, CRASH_LAGGING_ENTRIES, 3);
  }
}

static void set_crash(wal_io *io, int64_t crash_after_writes) {
  wal_io_memory_faults faults = {.fail_sync_after = -1,
                                 .fail_write_after = -1,
                                 .crash_after_writes = crash_after_writes,
                                 .capacity_bytes = 0};
  wal_io_memory_set_faults(io, &faults);
}

/* Builds the same pinned WAL every time, then arms a crash at the
 * `crash_at`-th write of the first collection, which rewrites the lagging
 * groups. True when the crash struck. */
static bool collect_until_crash(wal_io *io, uint64_t *last_index, int64_t crash_at) {
  wal *w = open_wal(io, NULL);
  write_lagging_and_idle(w);
  write_many_lagging(w);
  fill_segments(w, last_index, 40);
  snapshot_all(w, last_index);
  drain(w);
  wal_stats before;
  wal_get_stats(w, &before);
  set_crash(io, crash_at);
  bool crashed = wal_collect_garbage(w) < 0;
  set_crash(io, -1);
  wal_stats after;
  wal_get_stats(w, &after);
  assert_true(crashed || after.groups_rewritten >= before.groups_rewritten + 20);
  wal_close(w);
  return crashed;
}

/* A crash at any write of a collection loses nothing that was durable
 * before it began, and the next open is idempotent. */
static void test_collection_survives_a_crash_anywhere(void **state) {
  (void)state;
  uint32_t crashes = 0;
  for (int64_t crash_at = 0; crash_at < 64; crash_at++) {
    wal_io *io = wal_io_memory_create();
    uint64_t last_index[GROUPS + 1] = {0};
    bool crashed = collect_until_crash(io, last_index, crash_at);
    crashes += crashed;
    for (int open = 0; open < 2; open++) {
      wal *w = open_wal(io, NULL);
      expect_everything(w, last_index);
      expect_many_lagging(w);
      assert_int_equal(wal_close(w), 0);
    }
    io->ops->destroy(io);
    if (!crashed) {
      break; /* past the collection's last write: every point was tried */
    }
  }
  print_message("%u crash points in one collection\n", crashes);
  assert_true(crashes >= 5);
}

/* A group whose live log is larger than one batch is not rewritten (it
 * keeps its segments) and stays intact. */
static void test_large_live_log_is_left_in_place(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  const uint64_t big = GROUPS + 3;
  const uint64_t big_entries = 3000; /* ~ 3000 x 40 B > one 32 KiB batch */
  for (uint64_t index = 1; index <= big_entries; index++) {
    int rc = append_one(w, big, index, 2, NULL);
    if (rc == -ENOBUFS) {
      assert_int_equal(wal_flush(w), 0);
      rc = append_one(w, big, index, 2, NULL);
    }
    assert_int_equal(rc, 0);
  }
  drain(w);
  uint64_t last_index[GROUPS + 1] = {0};
  for (uint32_t cycle = 0; cycle < 4; cycle++) {
    fill_segments(w, last_index, 40);
    snapshot_all(w, last_index);
    assert_true(wal_collect_garbage(w) >= 0);
  }
  wal_stats stats;
  wal_get_stats(w, &stats);
  assert_int_equal(stats.groups_rewritten, 0);
  assert_int_equal(wal_close(w), 0);
  w = open_wal(io, NULL);
  for (uint64_t index = 1; index <= big_entries; index += 97) {
    expect_entry(w, big, index, 2);
  }
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* A sealed recycled segment holds stale records of its earlier life after
 * its own: recovery reads it only up to where its successor says it ended.
 * Damage before that point is still corruption. */
static void test_sealed_recycled_segment_reads_to_its_end(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  uint64_t last_index[GROUPS + 1] = {0};
  for (uint32_t cycle = 0; cycle < 6; cycle++) {
    fill_segments(w, last_index, 40);
    snapshot_all(w, last_index);
    assert_true(wal_collect_garbage(w) >= 0);
  }
  wal_stats stats;
  wal_get_stats(w, &stats);
  assert_true(stats.segments_recycled >= 2);
  assert_int_equal(wal_close(w), 0);
  w = open_wal(io, NULL);
  for (uint64_t g = 1; g <= GROUPS; g++) {
    expect_entry(w, g, last_index[g], 1);
  }
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* Reads of entries in the batches still held in memory never touch the
 * disk; older ones do. */
static void test_recent_reads_come_from_memory(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  for (uint64_t index = 1; index <= 800; index++) {
    assert_int_equal(append_one(w, 1, index, 1, NULL), 0);
    if (index % 100 == 0) {
      drain(w); /* eight batches of 100 entries: more than the ring holds */
    }
  }
  wal_stats before;
  wal_get_stats(w, &before);
  expect_entry(w, 1, 800, 1); /* the newest batch: durable, still cached */
  expect_entry(w, 1, 650, 1);
  wal_stats after;
  wal_get_stats(w, &after);
  assert_int_equal(after.records_read_from_disk, before.records_read_from_disk);
  assert_int_equal(after.records_read_from_memory, before.records_read_from_memory + 2);
  expect_entry(w, 1, 5, 1); /* the first batch's buffer was filled again */
  wal_get_stats(w, &after);
  assert_int_equal(after.records_read_from_disk, before.records_read_from_disk + 1);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* A missing middle segment loses acknowledged records: the open fails. */
static void test_missing_middle_segment_stops_the_open(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  uint64_t last_index[GROUPS + 1] = {0};
  fill_segments(w, last_index, 100);
  wal_stats stats;
  wal_get_stats(w, &stats);
  assert_true(stats.segments >= 3);
  assert_int_equal(wal_close(w), 0);
  char name[64];
  wal_segment_name(2, name, sizeof(name));
  assert_int_equal(io->ops->unlink(io, name), 0);
  assert_int_equal(io->ops->sync_directory(io), 0);
  expect_open_corrupt(io, "missing");
  io->ops->destroy(io);
}

/* Appends entries to `group` until the head segment changes; returns the
 * last index written before the rollover. */
static uint64_t append_until_rollover(wal *w, uint64_t group, uint64_t *next) {
  wal_stats stats;
  wal_get_stats(w, &stats);
  uint32_t segments = stats.segments;
  uint64_t last_before = 0;
  while (stats.segments == segments) {
    last_before = *next - 1;
    int rc = append_one(w, group, *next, 1, NULL);
    if (rc == -ENOBUFS) {
      assert_int_equal(wal_flush(w), 0);
      rc = append_one(w, group, *next, 1, NULL);
    }
    assert_int_equal(rc, 0);
    (*next)++;
    wal_get_stats(w, &stats);
  }
  return last_before;
}

/* A group's old entries in a retired segment were compacted by a marker
 * written after the first records of the surviving segment: replay meets a
 * gap there, which the later marker covers. The open succeeds. */
static void test_gap_covered_by_a_later_marker(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  uint64_t next = 1;
  uint64_t last_in_first = append_until_rollover(w, 1, &next);
  drain(w);
  /* a marker below the first segment's end: entries there stay live */
  assert_int_equal(wal_save_snapshot(w, 1, last_in_first - 10, 1, "a", 1, NULL), 0);
  for (int i = 0; i < 50; i++, next++) {
    assert_int_equal(append_one(w, 1, next, 1, NULL), 0);
  }
  drain(w);
  /* a later marker past everything of the first segment */
  assert_int_equal(wal_save_snapshot(w, 1, next - 5, 1, "b", 1, NULL), 0);
  drain(w);
  assert_true(wal_collect_garbage(w) >= 1); /* the first segment goes */
  assert_int_equal(wal_close(w), 0);
  w = open_wal(io, NULL);
  wal_group_state group;
  assert_int_equal(wal_group(w, 1, &group), 0);
  assert_int_equal(group.snapshot_index, next - 5);
  expect_entry(w, 1, next - 1, 1);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* A gap no marker covers: group 1's entries 6..10 sit in the first
 * segment, its marker at 5 and entries 11.. in the second, and the first
 * segment is lost. The open fails, naming the gap. */
static void test_gap_with_live_entries_stops_the_open(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  for (uint64_t index = 1; index <= 10; index++) {
    assert_int_equal(append_one(w, 1, index, 1, NULL), 0);
  }
  drain(w);
  uint64_t next = 1;
  append_until_rollover(w, 2, &next); /* group 2 fills the first segment */
  drain(w);
  assert_int_equal(wal_save_snapshot(w, 1, 5, 1, "a", 1, NULL), 0);
  for (uint64_t index = 11; index <= 20; index++) {
    assert_int_equal(append_one(w, 1, index, 1, NULL), 0);
  }
  drain(w);
  assert_int_equal(wal_close(w), 0);
  char name[64];
  wal_segment_name(1, name, sizeof(name));
  assert_int_equal(io->ops->unlink(io, name), 0);
  assert_int_equal(io->ops->sync_directory(io), 0);
  expect_open_corrupt(io, "still live");
  io->ops->destroy(io);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_disk_use_plateaus),
      cmocka_unit_test(test_collection_survives_a_crash_anywhere),
      cmocka_unit_test(test_large_live_log_is_left_in_place),
      cmocka_unit_test(test_sealed_recycled_segment_reads_to_its_end),
      cmocka_unit_test(test_recent_reads_come_from_memory),
      cmocka_unit_test(test_missing_middle_segment_stops_the_open),
      cmocka_unit_test(test_gap_covered_by_a_later_marker),
      cmocka_unit_test(test_gap_with_live_entries_stops_the_open),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
