/*
 * test_wal_io.c - the wal_io seam: the same behaviour from the io_uring
 * backend (on a temporary directory under /tmp) and the in-memory twin,
 * then the twin's fault injection: failed syncs, crashes, torn writes,
 * flipped bits and a full disk.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include "wal/wal_io.h"

#define QUEUE_DEPTH 8
#define MAX_NAMES 16

typedef struct fixture {
  wal_io *io;
  bool real;
  char directory[64];
} fixture;

static int setup_memory(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  f->io = wal_io_memory_create();
  assert_non_null(f->io);
  *state = f;
  return 0;
}

static int setup_uring(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  f->real = true;
  strcpy(f->directory, "/tmp/flotilla-wal-io-XXXXXX");
  assert_non_null(mkdtemp(f->directory));
  int error = 1;
  f->io = wal_io_uring_create(f->directory, QUEUE_DEPTH, false, &error);
  assert_non_null(f->io);
  assert_int_equal(error, 0);
  *state = f;
  return 0;
}

/* Removes whatever a test left, then the directory itself. */
static int remove_file(void *context, const char *name) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", (const char *)context, name);
  unlink(path);
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  if (f->real) {
    f->io->ops->list(f->io, remove_file, f->directory);
    rmdir(f->directory);
  }
  f->io->ops->destroy(f->io);
  free(f);
  return 0;
}

typedef struct name_list {
  char names[MAX_NAMES][64];
  int count;
} name_list;

static int collect_name(void *context, const char *name) {
  name_list *list = context;
  assert_true(list->count < MAX_NAMES);
  snprintf(list->names[list->count++], sizeof(list->names[0]), "%s", name);
  return 0;
}

static bool listed(wal_io *io, const char *name) {
  name_list list = {.count = 0};
  assert_int_equal(io->ops->list(io, collect_name, &list), 0);
  for (int i = 0; i < list.count; i++) {
    if (strcmp(list.names[i], name) == 0) {
      return true;
    }
  }
  return false;
}

/* Reaps until `expected` completions arrived (a bounded number of waits). */
static void reap_exactly(wal_io *io, wal_io_completion *out, int expected) {
  int count = 0;
  for (int round = 0; round < 1000 && count < expected; round++) {
    int reaped = io->ops->reap(io, out + count, expected - count, true);
    assert_true(reaped >= 0);
    count += reaped;
  }
  assert_int_equal(count, expected);
}

static void expect_bytes(wal_io *io, int file, uint64_t offset, uint8_t value, size_t length) {
  uint8_t *buffer = malloc(length);
  assert_int_equal(io->ops->read(io, file, offset, buffer, length), 0);
  for (size_t i = 0; i < length; i++) {
    assert_int_equal(buffer[i], value);
  }
  free(buffer);
}

/* ---- both backends ---- */

static void test_files(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = io->ops->create(io, "a", 8192);
  assert_true(file >= 0);
  uint64_t size = 0;
  assert_int_equal(io->ops->size(io, file, &size), 0);
  assert_int_equal(size, 8192);
  expect_bytes(io, file, 0, 0, 8192); /* preallocated space reads as zeros */
  assert_int_equal(io->ops->write_sync(io, file, 100, "hello", 5), 0);
  char buffer[8] = {0};
  assert_int_equal(io->ops->read(io, file, 100, buffer, 5), 0);
  assert_string_equal(buffer, "hello");
  assert_int_equal(io->ops->read(io, file, 8190, buffer, 4), -EIO); /* past the end */
  assert_int_equal(io->ops->close(io, file), 0);
  assert_int_equal(io->ops->close(io, file), -EBADF);
  assert_int_equal(io->ops->sync_directory(io), 0);

  int reader = io->ops->open(io, "a", false);
  assert_true(reader >= 0);
  memset(buffer, 0, sizeof(buffer));
  assert_int_equal(io->ops->read(io, reader, 100, buffer, 5), 0);
  assert_string_equal(buffer, "hello");
  assert_int_equal(io->ops->close(io, reader), 0);

  assert_true(listed(io, "a"));
  assert_int_equal(io->ops->rename(io, "a", "b"), 0);
  assert_int_equal(io->ops->sync_directory(io), 0);
  assert_false(listed(io, "a"));
  assert_true(listed(io, "b"));
  assert_int_equal(io->ops->open(io, "a", false), -ENOENT);
  assert_int_equal(io->ops->rename(io, "a", "c"), -ENOENT);
  assert_int_equal(io->ops->unlink(io, "b"), 0);
  assert_int_equal(io->ops->unlink(io, "b"), -ENOENT);
  assert_false(listed(io, "b"));
  assert_int_equal(io->ops->open(io, "b", true), -ENOENT);
}

static void test_create_truncates(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = io->ops->create(io, "t", 4096);
  assert_int_equal(io->ops->write_sync(io, file, 0, "xyz", 3), 0);
  assert_int_equal(io->ops->close(io, file), 0);
  file = io->ops->create(io, "t", 1024);
  assert_true(file >= 0);
  uint64_t size = 0;
  assert_int_equal(io->ops->size(io, file, &size), 0);
  assert_int_equal(size, 1024);
  expect_bytes(io, file, 0, 0, 1024);
  assert_int_equal(io->ops->close(io, file), 0);
}

static void test_rename_replaces(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int first = io->ops->create(io, "first", 16);
  int second = io->ops->create(io, "second", 16);
  assert_int_equal(io->ops->write_sync(io, first, 0, "1", 1), 0);
  assert_int_equal(io->ops->write_sync(io, second, 0, "2", 1), 0);
  assert_int_equal(io->ops->rename(io, "first", "second"), 0);
  int file = io->ops->open(io, "second", false);
  char byte = 0;
  assert_int_equal(io->ops->read(io, file, 0, &byte, 1), 0);
  assert_int_equal(byte, '1');
  assert_false(listed(io, "first"));
  io->ops->close(io, file);
  io->ops->close(io, first);
  io->ops->close(io, second);
}

static void test_queued_writes_in_order(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = io->ops->create(io, "q", 1 << 16);
  uint8_t blocks[6][512];
  /* One iovec variable for every write: queue_write must not keep it. */
  for (int i = 0; i < 6; i++) {
    memset(blocks[i], 'a' + i, sizeof(blocks[i]));
    struct iovec iov = {.iov_base = blocks[i], .iov_len = sizeof(blocks[i])};
    bool sync = i % 2 == 1;
    assert_int_equal(io->ops->queue_write(io, file, (uint64_t)i * 512, &iov, 1, sync, 100 + i), 0);
  }
  /* Nothing reaches the file before submit. */
  wal_io_completion out[8];
  assert_int_equal(io->ops->reap(io, out, 8, false), 0);
  assert_int_equal(io->ops->submit(io), 0);
  reap_exactly(io, out, 6);
  for (int i = 0; i < 6; i++) {
    assert_true(out[i].token == (uint64_t)(100 + i));
    assert_int_equal(out[i].result, 0);
    expect_bytes(io, file, (uint64_t)i * 512, (uint8_t)('a' + i), 512);
  }
  /* Nothing in flight: a waiting reap returns at once. */
  assert_int_equal(io->ops->reap(io, out, 8, true), 0);
  io->ops->close(io, file);
}

static void test_empty_units(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = io->ops->create(io, "e", 4096);
  assert_int_equal(io->ops->queue_write(io, file, 0, NULL, 0, false, 1), 0);
  assert_int_equal(io->ops->queue_write(io, file, 0, NULL, 0, true, 2), 0);
  assert_int_equal(io->ops->submit(io), 0);
  wal_io_completion out[2];
  reap_exactly(io, out, 2);
  assert_true(out[0].token == 1 && out[0].result == 0);
  assert_true(out[1].token == 2 && out[1].result == 0);
  io->ops->close(io, file);
}

/* More iovecs than one writev takes (IOV_MAX is 1024 on Linux). */
static void test_many_iovecs(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  enum { COUNT = 2500, PIECE = 8 };
  int file = io->ops->create(io, "many", COUNT * PIECE + 4096);
  uint8_t *data = malloc(COUNT * PIECE);
  struct iovec *iov = malloc(sizeof(*iov) * COUNT);
  for (int i = 0; i < COUNT * PIECE; i++) {
    data[i] = (uint8_t)(i * 7 + 3);
  }
  for (int i = 0; i < COUNT; i++) {
    iov[i] = (struct iovec){.iov_base = data + i * PIECE, .iov_len = PIECE};
  }
  assert_int_equal(io->ops->queue_write(io, file, 4096, iov, COUNT, true, 77), 0);
  assert_int_equal(io->ops->submit(io), 0);
  wal_io_completion out;
  reap_exactly(io, &out, 1);
  assert_true(out.token == 77);
  assert_int_equal(out.result, 0);
  uint8_t *back = malloc(COUNT * PIECE);
  assert_int_equal(io->ops->read(io, file, 4096, back, COUNT * PIECE), 0);
  assert_memory_equal(back, data, COUNT * PIECE);
  free(back);
  free(iov);
  free(data);
  io->ops->close(io, file);
}

static void test_bad_handles(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  uint64_t size;
  char byte;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  assert_int_equal(io->ops->size(io, 5, &size), -EBADF);
  assert_int_equal(io->ops->read(io, -1, 0, &byte, 1), -EBADF);
  assert_int_equal(io->ops->write_sync(io, 100000, 0, &byte, 1), -EBADF);
  assert_int_equal(io->ops->queue_write(io, 7, 0, &iov, 1, true, 1), -EBADF);
}

/* ---- the io_uring backend only ---- */

static void test_uring_queue_full(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = io->ops->create(io, "full", 1 << 16);
  static uint8_t block[512];
  struct iovec iov = {.iov_base = block, .iov_len = sizeof(block)};
  for (int i = 0; i < QUEUE_DEPTH; i++) {
    assert_int_equal(io->ops->queue_write(io, file, (uint64_t)i * 512, &iov, 1, true, i), 0);
  }
  assert_int_equal(io->ops->queue_write(io, file, 0, &iov, 1, true, 99), -EBUSY);
  assert_int_equal(io->ops->submit(io), 0);
  wal_io_completion out[QUEUE_DEPTH];
  reap_exactly(io, out, QUEUE_DEPTH);
  for (int i = 0; i < QUEUE_DEPTH; i++) {
    assert_true(out[i].token == (uint64_t)i && out[i].result == 0);
  }
  /* Room again once reaped. */
  assert_int_equal(io->ops->queue_write(io, file, 0, &iov, 1, true, 100), 0);
  assert_int_equal(io->ops->submit(io), 0);
  reap_exactly(io, out, 1);
  io->ops->close(io, file);
}

/* The notify fd turns readable when a write completes, so a loop waiting
 * on sockets and timers can wait for the disk too. */
static void test_uring_notify_fd(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int notify = io->ops->notify_fd(io);
  assert_true(notify >= 0);
  assert_int_equal(io->ops->notify_fd(io), notify); /* one fd, made once */
  struct pollfd idle = {.fd = notify, .events = POLLIN};
  assert_int_equal(poll(&idle, 1, 0), 0); /* nothing completed yet */
  int file = io->ops->create(io, "notify", 1 << 16);
  static uint8_t block[512];
  struct iovec iov = {.iov_base = block, .iov_len = sizeof(block)};
  assert_int_equal(io->ops->queue_write(io, file, 0, &iov, 1, true, 1), 0);
  assert_int_equal(io->ops->submit(io), 0);
  struct pollfd ready = {.fd = notify, .events = POLLIN};
  assert_int_equal(poll(&ready, 1, 10000), 1); /* bounded: the write completes */
  uint64_t count = 0;
  assert_int_equal(read(notify, &count, sizeof(count)), (ssize_t)sizeof(count));
  assert_true(count >= 1);
  wal_io_completion out;
  reap_exactly(io, &out, 1);
  assert_int_equal(out.result, 0);
  io->ops->close(io, file);
}

/* A write the kernel refuses fails its unit with the cause, and the linked
 * fdatasync is cancelled rather than reported. */
static void test_uring_failed_write_reports_cause(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = io->ops->create(io, "ro", 4096);
  io->ops->close(io, file);
  int reader = io->ops->open(io, "ro", false);
  char byte = 1;
  struct iovec iov = {.iov_base = &byte, .iov_len = 1};
  assert_int_equal(io->ops->queue_write(io, reader, 0, &iov, 1, true, 5), 0);
  assert_int_equal(io->ops->submit(io), 0);
  wal_io_completion out;
  reap_exactly(io, &out, 1);
  assert_true(out.token == 5);
  assert_int_equal(out.result, -EBADF);
  io->ops->close(io, reader);
}

static void test_uring_direct(void **state) {
  fixture *f = *state;
  int error = 0;
  wal_io *io = wal_io_uring_create(f->directory, 4, true, &error);
  assert_non_null(io);
  int file = io->ops->create(io, "direct", 1 << 16);
  if (file == -EINVAL) { /* the file system has no O_DIRECT */
    io->ops->destroy(io);
    skip();
  }
  assert_true(file >= 0);
  void *block = NULL;
  assert_int_equal(posix_memalign(&block, 4096, 8192), 0);
  memset(block, 0x5a, 8192);
  struct iovec iov[2] = {{.iov_base = block, .iov_len = 4096},
                         {.iov_base = (uint8_t *)block + 4096, .iov_len = 4096}};
  assert_int_equal(io->ops->queue_write(io, file, 4096, iov, 2, true, 9), 0);
  assert_int_equal(io->ops->submit(io), 0);
  wal_io_completion out;
  reap_exactly(io, &out, 1);
  assert_int_equal(out.result, 0);
  /* Reads go through the buffered descriptor: no alignment needed. */
  expect_bytes(io, file, 4097, 0x5a, 100);
  assert_int_equal(io->ops->write_sync(io, file, 3, "unaligned", 9), 0);
  io->ops->close(io, file);
  io->ops->destroy(io);
  free(block);
}

static void test_uring_creates_directory(void **state) {
  fixture *f = *state;
  char nested[128];
  snprintf(nested, sizeof(nested), "%s/nested", f->directory);
  int error = 0;
  wal_io *io = wal_io_uring_create(nested, 2, false, &error);
  assert_non_null(io);
  io->ops->destroy(io);
  assert_int_equal(rmdir(nested), 0);
  assert_null(wal_io_uring_create(nested, 0, false, &error));
  assert_int_equal(error, -EINVAL);
}

/* ---- the in-memory twin's faults ---- */

static wal_io_memory_faults no_faults(void) {
  return (wal_io_memory_faults){
      .fail_sync_after = -1, .fail_write_after = -1, .crash_after_writes = -1, .capacity_bytes = 0};
}

static int queue_one(wal_io *io, int file, uint64_t offset, const void *data, size_t length,
                     bool sync, uint64_t token) {
  struct iovec iov = {.iov_base = (void *)data, .iov_len = length};
  int rc = io->ops->queue_write(io, file, offset, &iov, 1, sync, token);
  return rc != 0 ? rc : io->ops->submit(io);
}

/* A durable file "d" of 4096 zero bytes, open for writing. */
static int durable_file(wal_io *io) {
  int file = io->ops->create(io, "d", 4096);
  assert_true(file >= 0);
  assert_int_equal(io->ops->sync_directory(io), 0);
  return file;
}

static void test_memory_failed_sync_is_not_durable(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = durable_file(io);
  uint64_t syncs = wal_io_memory_sync_count(io);
  wal_io_memory_faults faults = no_faults();
  faults.fail_sync_after = 1; /* one sync succeeds, the next fails */
  wal_io_memory_set_faults(io, &faults);
  uint8_t ones[64], twos[64];
  memset(ones, 1, sizeof(ones));
  memset(twos, 2, sizeof(twos));
  assert_int_equal(queue_one(io, file, 0, ones, 64, true, 1), 0);
  assert_int_equal(queue_one(io, file, 64, twos, 64, true, 2), 0);
  wal_io_completion out[2];
  reap_exactly(io, out, 2);
  assert_int_equal(out[0].result, 0);
  assert_int_equal(out[1].result, -EIO);
  assert_true(wal_io_memory_sync_count(io) == syncs + 1);
  expect_bytes(io, file, 64, 2, 64); /* written to the cache... */
  wal_io_memory_crash(io);
  file = io->ops->open(io, "d", false);
  expect_bytes(io, file, 0, 1, 64);
  expect_bytes(io, file, 64, 0, 64); /* ...but never made durable */
  io->ops->close(io, file);
}

static void test_memory_failed_write(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = durable_file(io);
  wal_io_memory_faults faults = no_faults();
  faults.fail_write_after = 0;
  wal_io_memory_set_faults(io, &faults);
  uint64_t syncs = wal_io_memory_sync_count(io);
  assert_int_equal(queue_one(io, file, 0, "abc", 3, true, 1), 0);
  assert_int_equal(queue_one(io, file, 8, "def", 3, true, 2), 0);
  wal_io_completion out[2];
  reap_exactly(io, out, 2);
  assert_int_equal(out[0].result, -EIO); /* and its sync was cancelled */
  assert_int_equal(out[1].result, 0);
  assert_true(wal_io_memory_sync_count(io) == syncs + 1);
  expect_bytes(io, file, 0, 0, 3);
  io->ops->close(io, file);
}

static void test_memory_crash_loses_unsynced_data(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = durable_file(io);
  uint8_t synced[100], cached[100];
  memset(synced, 's', sizeof(synced));
  memset(cached, 'c', sizeof(cached));
  assert_int_equal(queue_one(io, file, 0, synced, 100, true, 1), 0);
  assert_int_equal(queue_one(io, file, 100, cached, 100, false, 2), 0);
  assert_int_equal(io->ops->write_sync(io, file, 1000, "w", 1), 0);
  wal_io_completion out[2];
  reap_exactly(io, out, 2);
  expect_bytes(io, file, 100, 'c', 100);
  /* In flight at the crash: dropped, reported as failed. */
  assert_int_equal(queue_one(io, file, 200, cached, 100, true, 3), 0);
  wal_io_memory_crash(io);
  reap_exactly(io, out, 1);
  assert_true(out[0].token == 3 && out[0].result == -EIO);
  /* The old handle died with the process. */
  char byte;
  assert_int_equal(io->ops->read(io, file, 0, &byte, 1), -EIO);
  assert_int_equal(io->ops->write_sync(io, file, 0, &byte, 1), -EIO);
  assert_int_equal(io->ops->close(io, file), 0);
  file = io->ops->open(io, "d", true);
  expect_bytes(io, file, 0, 's', 100);
  expect_bytes(io, file, 100, 0, 200);
  expect_bytes(io, file, 1000, 'w', 1);
  io->ops->close(io, file);
}

static void test_memory_crash_loses_unsynced_names(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int kept = io->ops->create(io, "kept", 64);
  int moved = io->ops->create(io, "moved", 64);
  int doomed = io->ops->create(io, "doomed", 64);
  assert_int_equal(io->ops->sync_directory(io), 0);
  int fresh = io->ops->create(io, "fresh", 64); /* never directory-synced */
  assert_int_equal(io->ops->rename(io, "moved", "renamed"), 0);
  assert_int_equal(io->ops->unlink(io, "doomed"), 0);
  assert_true(listed(io, "fresh") && listed(io, "renamed") && !listed(io, "doomed"));
  wal_io_memory_crash(io);
  assert_true(listed(io, "kept"));
  assert_true(listed(io, "moved"));
  assert_true(listed(io, "doomed"));
  assert_false(listed(io, "fresh"));
  assert_false(listed(io, "renamed"));
  assert_int_equal(io->ops->open(io, "fresh", false), -ENOENT);
  io->ops->close(io, kept);
  io->ops->close(io, moved);
  io->ops->close(io, doomed);
  io->ops->close(io, fresh);
}

static void test_memory_crash_after_writes(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = durable_file(io);
  wal_io_memory_faults faults = no_faults();
  faults.crash_after_writes = 2;
  wal_io_memory_set_faults(io, &faults);
  assert_int_equal(io->ops->write_sync(io, file, 0, "A", 1), 0); /* write 1 */
  assert_int_equal(queue_one(io, file, 1, "B", 1, true, 1), 0);  /* write 2 */
  assert_int_equal(queue_one(io, file, 2, "C", 1, true, 2), 0);  /* crashes */
  assert_int_equal(queue_one(io, file, 3, "D", 1, true, 3), 0);
  wal_io_completion out[3];
  reap_exactly(io, out, 3);
  assert_int_equal(out[0].result, 0);
  assert_int_equal(out[1].result, -EIO);
  assert_int_equal(out[2].result, -EIO);
  /* After the reboot: the io works again, the old handle does not. */
  assert_int_equal(queue_one(io, file, 4, "E", 1, true, 4), -EIO);
  file = io->ops->open(io, "d", true);
  char bytes[5];
  assert_int_equal(io->ops->read(io, file, 0, bytes, 5), 0);
  assert_memory_equal(bytes, "AB\0\0\0", 5);
  assert_int_equal(io->ops->write_sync(io, file, 2, "c", 1), 0);
  expect_bytes(io, file, 2, 'c', 1);
  io->ops->close(io, file);
}

static void test_memory_tear_last_write(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = durable_file(io);
  uint8_t old_bytes[64], new_bytes[64];
  memset(old_bytes, 0xab, sizeof(old_bytes));
  memset(new_bytes, 0xcd, sizeof(new_bytes));
  assert_int_equal(wal_io_memory_tear_last_write(io, "d", 0), -ENODATA);
  assert_int_equal(io->ops->write_sync(io, file, 0, old_bytes, 64), 0);
  assert_int_equal(queue_one(io, file, 0, new_bytes, 64, true, 1), 0);
  wal_io_completion out;
  reap_exactly(io, &out, 1);
  wal_io_memory_crash(io);
  assert_int_equal(wal_io_memory_tear_last_write(io, "d", 10), 0);
  assert_int_equal(wal_io_memory_tear_last_write(io, "missing", 10), -ENOENT);
  file = io->ops->open(io, "d", false);
  expect_bytes(io, file, 0, 0xcd, 10);
  expect_bytes(io, file, 10, 0xab, 54);
  io->ops->close(io, file);
}

static void test_memory_flip_bit(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = durable_file(io);
  assert_int_equal(io->ops->write_sync(io, file, 0, "\x10", 1), 0);
  assert_int_equal(wal_io_memory_flip_bit(io, "d", 0, 0), 0);
  expect_bytes(io, file, 0, 0x11, 1); /* reads see it at once */
  wal_io_memory_crash(io);
  assert_int_equal(wal_io_memory_flip_bit(io, "d", 4095, 7), 0);
  file = io->ops->open(io, "d", false);
  expect_bytes(io, file, 0, 0x11, 1); /* and it is on the durable image */
  expect_bytes(io, file, 4095, 0x80, 1);
  assert_int_equal(wal_io_memory_flip_bit(io, "d", 4096, 0), -ERANGE);
  assert_int_equal(wal_io_memory_flip_bit(io, "d", 0, 8), -EINVAL);
  assert_int_equal(wal_io_memory_flip_bit(io, "nope", 0, 0), -ENOENT);
  io->ops->close(io, file);
}

static void test_memory_disk_full(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  wal_io_memory_faults faults = no_faults();
  faults.capacity_bytes = 10000;
  wal_io_memory_set_faults(io, &faults);
  int file = io->ops->create(io, "big", 8192);
  assert_true(file >= 0);
  assert_int_equal(io->ops->create(io, "more", 4096), -ENOSPC);
  uint8_t block[2048] = {0};
  struct iovec iov = {.iov_base = block, .iov_len = sizeof(block)};
  assert_int_equal(io->ops->queue_write(io, file, 8192, &iov, 1, true, 1), -ENOSPC);
  assert_int_equal(io->ops->write_sync(io, file, 9000, block, 2048), -ENOSPC);
  assert_int_equal(io->ops->queue_write(io, file, 8192, &iov, 1, false, 2), -ENOSPC);
  /* Rewriting allocated space and growing within the limit still work. */
  assert_int_equal(io->ops->queue_write(io, file, 0, &iov, 1, true, 3), 0);
  assert_int_equal(io->ops->write_sync(io, file, 8192, block, 1808), 0);
  assert_int_equal(io->ops->submit(io), 0);
  wal_io_completion out;
  reap_exactly(io, &out, 1);
  assert_int_equal(out.result, 0);
  /* Space comes back with the file. */
  io->ops->close(io, file);
  assert_int_equal(io->ops->unlink(io, "big"), 0);
  file = io->ops->create(io, "more", 4096);
  assert_true(file >= 0);
  io->ops->close(io, file);
}

static void test_memory_queue_full(void **state) {
  wal_io *io = ((fixture *)*state)->io;
  int file = durable_file(io);
  int queued = 0;
  while (io->ops->queue_write(io, file, 0, NULL, 0, false, (uint64_t)queued) == 0) {
    queued++;
    assert_true(queued <= 1 << 20);
  }
  assert_int_equal(io->ops->queue_write(io, file, 0, NULL, 0, false, 0), -EBUSY);
  assert_int_equal(io->ops->submit(io), 0);
  wal_io_completion out[64];
  for (int done = 0; done < queued;) {
    int reaped = io->ops->reap(io, out, 64, true);
    assert_true(reaped > 0);
    for (int i = 0; i < reaped; i++) {
      assert_true(out[i].token == (uint64_t)(done + i));
    }
    done += reaped;
  }
  io->ops->close(io, file);
}

#define BOTH(test)                                                                                 \
  cmocka_unit_test_setup_teardown(test, setup_memory, teardown),                                   \
      cmocka_unit_test_setup_teardown(test, setup_uring, teardown)
#define MEMORY(test) cmocka_unit_test_setup_teardown(test, setup_memory, teardown)
#define URING(test) cmocka_unit_test_setup_teardown(test, setup_uring, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      BOTH(test_files),
      BOTH(test_create_truncates),
      BOTH(test_rename_replaces),
      BOTH(test_queued_writes_in_order),
      BOTH(test_empty_units),
      BOTH(test_many_iovecs),
      BOTH(test_bad_handles),
      URING(test_uring_queue_full),
      URING(test_uring_notify_fd),
      URING(test_uring_failed_write_reports_cause),
      URING(test_uring_direct),
      URING(test_uring_creates_directory),
      MEMORY(test_memory_failed_sync_is_not_durable),
      MEMORY(test_memory_failed_write),
      MEMORY(test_memory_crash_loses_unsynced_data),
      MEMORY(test_memory_crash_loses_unsynced_names),
      MEMORY(test_memory_crash_after_writes),
      MEMORY(test_memory_tear_last_write),
      MEMORY(test_memory_flip_bit),
      MEMORY(test_memory_disk_full),
      MEMORY(test_memory_queue_full),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
