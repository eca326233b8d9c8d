/*
 * test_wal.c - the WAL over the fault-injecting in-memory io: group commit,
 * ordered completions, reads, recovery after crashes, torn tails,
 * corruption, fatal sync failures, segment rollover, markers.
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

#define MAX_INDEX 4096

typedef struct completion_log {
  uint32_t count;
  int results[1024];
  uint32_t order[1024];
} completion_log;

typedef struct tracked {
  wal_request request;
  completion_log *log;
  uint32_t number;
} tracked;

static void on_done(void *context, int result) {
  tracked *t = context;
  completion_log *log = t->log;
  log->results[log->count] = result;
  log->order[log->count] = t->number;
  log->count++;
}

static void test_group_commit_completes_in_order(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  completion_log log = {0};
  tracked requests[3 * GROUPS];
  uint32_t number = 0;
  uint64_t syncs_before = wal_io_memory_sync_count(io);
  for (uint32_t batch = 0; batch < 3; batch++) {
    for (uint64_t group = 1; group <= GROUPS; group++) {
      tracked *t = &requests[number];
      *t = (tracked){.request = {.callback = on_done, .context = t}, .log = &log, .number = number};
      number++;
      assert_int_equal(append_one(w, group, batch + 1, 1, &t->request), 0);
    }
    assert_int_equal(wal_flush(w), 0);
  }
  drain(w);
  assert_int_equal(log.count, number);
  for (uint32_t i = 0; i < number; i++) {
    assert_int_equal(log.order[i], i);
    assert_int_equal(log.results[i], 0);
  }
  /* one fdatasync per batch, not per group or per entry */
  assert_int_equal(wal_io_memory_sync_count(io) - syncs_before, 3);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

static void test_reads_before_and_after_durability(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  for (uint64_t index = 1; index <= 50; index++) {
    assert_int_equal(append_one(w, 3, index, 1 + index / 20, NULL), 0);
  }
  expect_entry(w, 3, 10, 1); /* still in the filling batch */
  drain(w);
  for (uint64_t index = 1; index <= 50; index++) {
    expect_entry(w, 3, index, 1 + index / 20);
  }
  uint64_t term = 0;
  assert_int_equal(wal_term(w, 3, 45, &term), 0);
  assert_int_equal(term, 3);
  assert_int_equal(wal_term(w, 3, 51, &term), -ENOENT);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

static void test_overlap_replaces_suffix(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  for (uint64_t index = 1; index <= 10; index++) {
    assert_int_equal(append_one(w, 1, index, 1, NULL), 0);
  }
  drain(w);
  for (uint64_t index = 6; index <= 8; index++) {
    assert_int_equal(append_one(w, 1, index, 2, NULL), 0);
  }
  drain(w);
  assert_int_equal(append_one(w, 1, 20, 2, NULL), -EINVAL); /* a gap */
  assert_int_equal(wal_close(w), 0);
  w = open_wal(io, NULL);
  wal_group_state group;
  assert_int_equal(wal_group(w, 1, &group), 0);
  assert_int_equal(group.last_index, 8);
  expect_entry(w, 1, 5, 1);
  expect_entry(w, 1, 6, 2);
  expect_entry(w, 1, 8, 2);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

static void test_crash_keeps_exactly_the_acknowledged(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  for (uint64_t index = 1; index <= 20; index++) {
    assert_int_equal(append_one(w, 2, index, 1, NULL), 0);
  }
  drain(w);
  for (uint64_t index = 21; index <= 30; index++) {
    assert_int_equal(append_one(w, 2, index, 1, NULL), 0);
  }
  assert_int_equal(wal_flush(w), 0); /* submitted, never reaped: not acknowledged */
  wal_io_memory_crash(io);
  wal_close(w);
  w = open_wal(io, NULL);
  wal_group_state group;
  assert_int_equal(wal_group(w, 2, &group), 0);
  assert_int_equal(group.last_index, 20);
  expect_entry(w, 2, 20, 1);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

static void test_torn_tail_is_truncated(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  for (uint64_t index = 1; index <= 5; index++) {
    assert_int_equal(append_one(w, 1, index, 1, NULL), 0);
    drain(w);
  }
  assert_int_equal(wal_close(w), 0);
  char name[64];
  wal_segment_name(1, name, sizeof(name));
  /* the last durable write (entry 5) keeps only part of its bytes */
  assert_int_equal(wal_io_memory_tear_last_write(io, name, 20), 0);
  wal_recovery_report report;
  w = open_wal(io, &report);
  assert_true(report.torn_tail_bytes > 0);
  wal_group_state group;
  assert_int_equal(wal_group(w, 1, &group), 0);
  assert_int_equal(group.last_index, 4);
  /* appends resume where the tail was cut, and survive a reopen */
  assert_int_equal(append_one(w, 1, 5, 2, NULL), 0);
  drain(w);
  assert_int_equal(wal_close(w), 0);
  w = open_wal(io, &report);
  assert_int_equal(report.torn_tail_bytes, 0);
  expect_entry(w, 1, 5, 2);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

static void test_corruption_in_an_older_segment_stops_the_open(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  uint64_t last_index[GROUPS + 1] = {0};
  fill_segments(w, last_index, 200);
  wal_stats stats;
  wal_get_stats(w, &stats);
  assert_true(stats.segments >= 3);
  assert_int_equal(wal_close(w), 0);
  char name[64];
  wal_segment_name(1, name, sizeof(name));
  assert_int_equal(wal_io_memory_flip_bit(io, name, WAL_SEGMENT_HEADER_AREA + 1000, 3), 0);
  wal_options options = small_options(io);
  wal_recovery_report report;
  wal *broken = NULL;
  assert_int_equal(wal_open(&options, &broken, &report), -EUCLEAN);
  assert_null(broken);
  assert_non_null(strstr(report.error, name));
  assert_non_null(strstr(report.error, "offset"));
  assert_non_null(strstr(report.error, "group"));
  io->ops->destroy(io);
}

static void test_rollover_and_reopen(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  uint64_t last_index[GROUPS + 1] = {0};
  fill_segments(w, last_index, 150);
  assert_int_equal(wal_close(w), 0);
  wal_recovery_report report;
  w = open_wal(io, &report);
  assert_true(report.segments >= 3);
  for (uint64_t group = 1; group <= GROUPS; group++) {
    wal_group_state state_of_group;
    assert_int_equal(wal_group(w, group, &state_of_group), 0);
    assert_int_equal(state_of_group.last_index, last_index[group]);
    expect_entry(w, group, 1, 1);
    expect_entry(w, group, last_index[group] / 2, 1);
    expect_entry(w, group, last_index[group], 1);
  }
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* wal_pending_bytes is what the shard decides a flush on: it must grow
 * with each record and fall to zero when the batch goes to the disk. */
static void test_pending_bytes_follow_the_filling_batch(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  drain(w);
  assert_int_equal(wal_pending_bytes(w), 0);
  assert_int_equal(append_one(w, 1, 1, 1, NULL), 0);
  uint32_t one = wal_pending_bytes(w);
  assert_true(one > 0);
  assert_int_equal(append_one(w, 1, 2, 1, NULL), 0);
  assert_true(wal_pending_bytes(w) > one);
  assert_int_equal(wal_flush(w), 0);
  assert_int_equal(wal_pending_bytes(w), 0);
  assert_int_equal(wal_in_flight(w), 1);
  drain(w);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

static void test_failed_sync_is_fatal(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  assert_int_equal(append_one(w, 1, 1, 1, NULL), 0);
  drain(w);
  wal_io_memory_faults faults = {
      .fail_sync_after = 0, .fail_write_after = -1, .crash_after_writes = -1};
  wal_io_memory_set_faults(io, &faults);
  completion_log log = {0};
  tracked t = {.request = {.callback = on_done, .context = &t}, .log = &log};
  assert_int_equal(append_one(w, 1, 2, 1, &t.request), 0);
  assert_int_equal(wal_flush(w), 0);
  while (wal_in_flight(w) > 0 && wal_poll(w, true) >= 0) {
  }
  assert_int_equal(log.count, 1);
  assert_int_equal(log.results[0], -EIO);
  /* no retry after a failed fsync: everything fails from now on */
  assert_int_equal(append_one(w, 1, 3, 1, NULL), -EIO);
  assert_int_equal(wal_flush(w), -EIO);
  assert_int_equal(wal_close(w), -EIO);
  faults.fail_sync_after = -1;
  wal_io_memory_set_faults(io, &faults);
  wal_io_memory_crash(io);
  w = open_wal(io, NULL);
  wal_group_state group;
  assert_int_equal(wal_group(w, 1, &group), 0);
  assert_int_equal(group.last_index, 1); /* the failed write is not reported durable */
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

static void test_markers_survive_reopen(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  for (uint64_t index = 1; index <= 30; index++) {
    assert_int_equal(append_one(w, 4, index, 2, NULL), 0);
  }
  wal_hard_state hard = {.term = 3, .vote = 2, .commit = 25};
  assert_int_equal(wal_save_hard_state(w, 4, &hard, NULL), 0);
  static const char conf[] = "configuration bytes";
  assert_int_equal(wal_save_snapshot(w, 4, 20, 2, conf, sizeof(conf), NULL), 0);
  assert_int_equal(wal_compact(w, 4, 22), 0);
  assert_int_equal(append_one(w, 5, 1, 1, NULL), 0);
  assert_int_equal(wal_remove_group(w, 5, NULL), 0);
  drain(w);
  assert_int_equal(wal_close(w), 0);
  w = open_wal(io, NULL);
  wal_group_state group;
  assert_int_equal(wal_group(w, 4, &group), 0);
  assert_int_equal(group.first_index, 23);
  assert_int_equal(group.last_index, 30);
  assert_int_equal(group.snapshot_index, 20);
  assert_int_equal(group.snapshot_term, 2);
  assert_memory_equal(&group.hard_state, &hard, sizeof(hard));
  char data[64];
  uint32_t length = 0;
  assert_int_equal(wal_snapshot_data(w, 4, data, sizeof(data), &length), 0);
  assert_int_equal(length, sizeof(conf));
  assert_memory_equal(data, conf, sizeof(conf));
  expect_entry(w, 4, 23, 2);
  assert_int_equal(wal_group(w, 5, &group), -ENOENT);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* ---- crash at every point: the recovered log is a prefix of the batches
 * submitted, never shorter than what was acknowledged ---- */

#define CRASH_BATCHES 24
#define CRASH_LOG 512

typedef struct model {
  uint64_t last[GROUPS + 1];
  uint64_t term[GROUPS + 1][CRASH_LOG];
} model;

typedef struct crash_run {
  model states[CRASH_BATCHES + 1]; /* states[k]: after the first k batches */
  uint32_t submitted;
  uint32_t acknowledged;
  uint64_t random;
} crash_run;

static uint64_t next_random(uint64_t *state) {
  *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
  return *state >> 33;
}

static void on_batch_durable(void *context, int result) {
  crash_run *run = context;
  if (result == 0) {
    run->acknowledged++;
  }
}

/* Appends a few entries to a random group, sometimes rewriting its tail. */
static void random_append(wal *w, crash_run *run, model *m) {
  uint64_t group = 1 + next_random(&run->random) % GROUPS;
  uint64_t first = m->last[group] + 1;
  uint64_t term = m->last[group] ? m->term[group][m->last[group]] : 1;
  if (m->last[group] > 3 && next_random(&run->random) % 4 == 0) {
    first = m->last[group] - next_random(&run->random) % 3;
    term++;
  }
  uint32_t count = 1 + next_random(&run->random) % 4;
  if (first + count >= CRASH_LOG) {
    return;
  }
  for (uint32_t i = 0; i < count; i++) {
    int rc = append_one(w, group, first + i, term, NULL);
    assert_int_equal(rc, 0);
    m->term[group][first + i] = term;
  }
  m->last[group] = first + count - 1;
}

static bool matches(wal *w, const model *m) {
  for (uint64_t group = 1; group <= GROUPS; group++) {
    wal_group_state state;
    if (wal_group(w, group, &state) != 0) {
      if (m->last[group] != 0) {
        return false;
      }
      continue;
    }
    if (state.last_index != m->last[group]) {
      return false;
    }
    for (uint64_t index = 1; index <= m->last[group]; index++) {
      uint64_t term = 0;
      if (wal_term(w, group, index, &term) != 0 || term != m->term[group][index]) {
        return false;
      }
    }
  }
  return true;
}

static void run_until_crash(wal *w, wal_io *io, crash_run *run, uint32_t crash_at) {
  wal_request requests[CRASH_BATCHES];
  model current = {0};
  for (uint32_t batch = 0; batch < CRASH_BATCHES; batch++) {
    if (batch == crash_at) {
      wal_io_memory_crash(io);
      return;
    }
    uint32_t appends = 1 + next_random(&run->random) % 6;
    for (uint32_t i = 0; i < appends; i++) {
      random_append(w, run, &current);
    }
    requests[batch] = (wal_request){.callback = on_batch_durable, .context = run};
    uint64_t group = 1 + next_random(&run->random) % GROUPS;
    wal_hard_state hard = {.term = batch + 1};
    assert_int_equal(wal_save_hard_state(w, group, &hard, &requests[batch]), 0);
    run->states[batch + 1] = current;
    assert_int_equal(wal_flush(w), 0);
    run->submitted++;
    if (next_random(&run->random) % 3 == 0) {
      assert_true(wal_poll(w, false) >= 0); /* else batches stay in flight */
    }
  }
  drain(w);
}

static void test_crash_at_every_batch(void **state) {
  (void)state;
  static crash_run run;
  uint32_t lost_unacknowledged = 0;
  for (uint32_t seed = 1; seed <= 40; seed++) {
    for (uint32_t crash_at = 0; crash_at <= CRASH_BATCHES; crash_at += 3) {
      memset(&run, 0, sizeof(run));
      run.random = seed;
      wal_io *io = wal_io_memory_create();
      wal *w = open_wal(io, NULL);
      run_until_crash(w, io, &run, crash_at);
      wal_close(w);
      w = open_wal(io, NULL);
      if (run.acknowledged < run.submitted) {
        lost_unacknowledged++;
      }
      bool found = false;
      for (uint32_t k = run.acknowledged; k <= run.submitted && !found; k++) {
        found = matches(w, &run.states[k]);
      }
      if (!found) {
        print_error("seed %u crash at batch %u: acknowledged %u submitted %u\n", seed, crash_at,
                    run.acknowledged, run.submitted);
      }
      assert_true(found);
      assert_int_equal(wal_close(w), 0);
      /* recovery is idempotent: a second open sees the same */
      w = open_wal(io, NULL);
      assert_int_equal(wal_close(w), 0);
      io->ops->destroy(io);
    }
  }
  /* the crashes really cut batches in flight, or the test proves little */
  assert_true(lost_unacknowledged > 0);
}

/* The same path on a real directory through io_uring and fdatasync, with
 * buffered writes and with O_DIRECT (batches padded to whole blocks). */
static void round_trip_on_disk(bool direct) {
  char directory[] = "/var/tmp/flotilla-wal-test.XXXXXX";
  assert_non_null(mkdtemp(directory));
  wal_options options = small_options(NULL);
  options.directory = directory;
  options.direct = direct;
  wal *w = NULL;
  assert_int_equal(wal_open(&options, &w, NULL), 0);
  uint64_t last_index[GROUPS + 1] = {0};
  fill_segments(w, last_index, 60);
  assert_int_equal(wal_close(w), 0);
  wal_recovery_report report;
  assert_int_equal(wal_open(&options, &w, &report), 0);
  assert_true(report.segments >= 2);
  for (uint64_t group = 1; group <= GROUPS; group++) {
    expect_entry(w, group, last_index[group], 1);
  }
  assert_int_equal(wal_close(w), 0);
  char command[128];
  snprintf(command, sizeof(command), "rm -rf '%s'", directory);
  assert_int_equal(system(command), 0);
}

static void test_real_directory_round_trip(void **state) {
  (void)state;
  round_trip_on_disk(false);
}

static void test_real_directory_round_trip_direct(void **state) {
  (void)state;
  round_trip_on_disk(true);
}

/* O_DIRECT batches end on a block: every batch starts 4096-aligned. */
static void test_direct_batches_are_block_aligned(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal_options options = small_options(io);
  options.direct = true;
  wal *w = NULL;
  assert_int_equal(wal_open(&options, &w, NULL), 0);
  for (uint64_t index = 1; index <= 40; index++) {
    assert_int_equal(append_one(w, 1, index, 1, NULL), 0);
    drain(w);
  }
  wal_stats stats;
  wal_get_stats(w, &stats);
  assert_int_equal(stats.bytes_written % WAL_DIRECT_ALIGN, 0);
  assert_int_equal(stats.bytes_written, 40 * WAL_DIRECT_ALIGN);
  assert_int_equal(wal_close(w), 0);
  assert_int_equal(wal_open(&options, &w, NULL), 0);
  for (uint64_t index = 1; index <= 40; index++) {
    expect_entry(w, 1, index, 1);
  }
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

static int count_files(void *context, const char *name) {
  (void)name;
  (*(uint32_t *)context)++;
  return 0;
}

/* A segment whose creation a crash interrupted is removed at open, and the
 * removal does not disturb the listing of the real segments. */
static void test_unfinished_segment_is_removed(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  uint64_t last_index[GROUPS + 1] = {0};
  fill_segments(w, last_index, 100);
  wal_stats stats;
  wal_get_stats(w, &stats);
  assert_int_equal(wal_close(w), 0);
  char name[64];
  char temporary[80];
  wal_segment_name(stats.segments + 1, name, sizeof(name));
  snprintf(temporary, sizeof(temporary), "%s.tmp", name);
  int file = io->ops->create(io, temporary, 4096);
  assert_true(file >= 0);
  assert_int_equal(io->ops->close(io, file), 0);
  assert_int_equal(io->ops->sync_directory(io), 0);
  wal_recovery_report report;
  w = open_wal(io, &report);
  assert_int_equal(report.segments, stats.segments);
  for (uint64_t group = 1; group <= GROUPS; group++) {
    expect_entry(w, group, last_index[group], 1);
  }
  uint32_t files = 0;
  assert_int_equal(io->ops->list(io, count_files, &files), 0);
  assert_int_equal(files, stats.segments);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* Zeros where a record header was, in an older segment, hide acknowledged
 * records after them: the open must fail, not stop early. */
static void test_zeroed_header_in_older_segment_is_corruption(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  uint64_t last_index[GROUPS + 1] = {0};
  fill_segments(w, last_index, 100);
  assert_int_equal(wal_close(w), 0);
  char name[64];
  wal_segment_name(1, name, sizeof(name));
  for (unsigned bit = 0; bit < 8; bit++) {
    /* clear the first record's length and type: a header of zeros */
    for (uint64_t byte = 0; byte < sizeof(wal_record_header); byte++) {
      uint8_t value = 0;
      int file = io->ops->open(io, name, false);
      assert_true(file >= 0);
      assert_int_equal(io->ops->read(io, file, WAL_SEGMENT_HEADER_AREA + byte, &value, 1), 0);
      io->ops->close(io, file);
      if (value & (1u << bit)) {
        assert_int_equal(wal_io_memory_flip_bit(io, name, WAL_SEGMENT_HEADER_AREA + byte, bit), 0);
      }
    }
  }
  expect_open_corrupt(io, "zeroed record");
  io->ops->destroy(io);
}

/* After a compaction, entries below the first live index are refused. */
static void test_append_below_compaction_is_refused(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  for (uint64_t index = 1; index <= 100; index++) {
    assert_int_equal(append_one(w, 1, index, 1, NULL), 0);
  }
  assert_int_equal(wal_compact(w, 1, 95), 0);
  assert_int_equal(append_one(w, 1, 92, 1, NULL), -EINVAL);
  assert_int_equal(append_one(w, 1, 96, 2, NULL), 0);
  drain(w);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* A barrier completes once everything queued before it is durable, and
 * says so at once when nothing is pending. */
static void test_barrier(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  completion_log log = {0};
  tracked first = {.request = {.callback = on_done, .context = &first}, .log = &log, .number = 1};
  tracked barrier = {
      .request = {.callback = on_done, .context = &barrier}, .log = &log, .number = 2};
  assert_int_equal(wal_barrier(w, &barrier.request), 1); /* nothing pending */
  /* joins the newest batch in flight */
  assert_int_equal(append_one(w, 1, 1, 1, &first.request), 0);
  assert_int_equal(wal_flush(w), 0);
  assert_int_equal(wal_barrier(w, &barrier.request), 0);
  assert_int_equal(wal_flush(w), 0); /* nothing to write: no new batch */
  drain(w);
  assert_int_equal(log.count, 2);
  assert_int_equal(log.order[0], 1);
  assert_int_equal(log.order[1], 2);
  /* joins the filling batch */
  assert_int_equal(append_one(w, 1, 2, 1, NULL), 0);
  assert_int_equal(wal_barrier(w, &barrier.request), 0);
  assert_int_equal(log.count, 2);
  drain(w);
  assert_int_equal(log.count, 3);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

/* A marker at index 0 records a new group's initial state: it survives a
 * reopen and garbage collection, and the log starts at 1 after it. */
static void test_bootstrap_marker_at_index_zero(void **state) {
  (void)state;
  wal_io *io = wal_io_memory_create();
  wal *w = open_wal(io, NULL);
  assert_int_equal(wal_save_snapshot(w, 5, 0, 0, "conf", 4, NULL), 0);
  wal_group_state group;
  assert_int_equal(wal_group(w, 5, &group), 0);
  assert_true(group.has_snapshot);
  assert_int_equal(group.snapshot_index, 0);
  assert_int_equal(append_one(w, 5, 1, 1, NULL), 0);
  drain(w);
  assert_int_equal(wal_close(w), 0);
  w = open_wal(io, NULL);
  assert_int_equal(wal_group(w, 5, &group), 0);
  assert_true(group.has_snapshot);
  assert_int_equal(group.first_index, 1);
  assert_int_equal(group.last_index, 1);
  char data[8];
  uint32_t length = 0;
  assert_int_equal(wal_snapshot_data(w, 5, data, sizeof(data), &length), 0);
  assert_int_equal(length, 4);
  assert_memory_equal(data, "conf", 4);
  expect_entry(w, 5, 1, 1);
  assert_int_equal(wal_group(w, 6, &group), -ENOENT);
  assert_int_equal(wal_close(w), 0);
  io->ops->destroy(io);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_zeroed_header_in_older_segment_is_corruption),
      cmocka_unit_test(test_append_below_compaction_is_refused),
      cmocka_unit_test(test_unfinished_segment_is_removed),
      cmocka_unit_test(test_pending_bytes_follow_the_filling_batch),
      cmocka_unit_test(test_real_directory_round_trip),
      cmocka_unit_test(test_real_directory_round_trip_direct),
      cmocka_unit_test(test_direct_batches_are_block_aligned),
      cmocka_unit_test(test_group_commit_completes_in_order),
      cmocka_unit_test(test_reads_before_and_after_durability),
      cmocka_unit_test(test_overlap_replaces_suffix),
      cmocka_unit_test(test_crash_keeps_exactly_the_acknowledged),
      cmocka_unit_test(test_torn_tail_is_truncated),
      cmocka_unit_test(test_corruption_in_an_older_segment_stops_the_open),
      cmocka_unit_test(test_rollover_and_reopen),
      cmocka_unit_test(test_failed_sync_is_fatal),
      cmocka_unit_test(test_markers_survive_reopen),
      cmocka_unit_test(test_crash_at_every_batch),
      cmocka_unit_test(test_barrier),
      cmocka_unit_test(test_bootstrap_marker_at_index_zero),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
