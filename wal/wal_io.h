/*
 * wal_io.h - the narrow file seam beneath the WAL.
 *
 * The WAL touches files only through these operations, so tests can put a
 * fault-injecting in-memory twin (wal_io_memory) where production uses
 * io_uring (wal_io_uring). Writes are asynchronous and complete in
 * submission order; everything else is synchronous (recovery, directory
 * changes and reads of lagging entries are off the hot path).
 *
 * Errors: int, 0 or a negative errno (-EIO, -ENOSPC, -ENOENT, ...).
 * Ownership: a wal_io is created by its constructor and freed by its
 * destroy operation; buffers passed to queue_write stay owned by the caller
 * and must stay alive until the write's completion is reaped (the iovec
 * array itself is copied: it may be reused as soon as queue_write returns).
 */
#ifndef FLOTILLA_WAL_IO_H
#define FLOTILLA_WAL_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef struct wal_io wal_io;

/* A reaped write: the token given at submission and its result (0 or -errno). */
typedef struct wal_io_completion {
  uint64_t token;
  int result;
} wal_io_completion;

/* The listing callback receives each regular file name in the directory. */
typedef int (*wal_io_list_fn)(void *context, const char *name);

typedef struct wal_io_ops {
  /* Files are named relative to the directory the io was created for.
   * open returns a small non-negative handle. create makes (or truncates) a
   * file, reserves `size` bytes (fallocate, zero-filled) and returns a
   * writable handle to it, as open does. */
  int (*open)(wal_io *io, const char *name, bool writable);
  int (*create)(wal_io *io, const char *name, uint64_t size);
  int (*close)(wal_io *io, int file);
  int (*rename)(wal_io *io, const char *from, const char *to);
  int (*unlink)(wal_io *io, const char *name);
  /* Makes creates, renames and unlinks durable (fsync of the directory). */
  int (*sync_directory)(wal_io *io);
  int (*list)(wal_io *io, wal_io_list_fn callback, void *context);
  /* Size of a file in bytes. */
  int (*size)(wal_io *io, int file, uint64_t *size);
  /* Reads exactly `length` bytes at `offset` (short files give -EIO). */
  int (*read)(wal_io *io, int file, uint64_t offset, void *buffer, size_t length);
  /* Synchronous write + fdatasync (segment headers, truncating a torn tail). */
  int (*write_sync)(wal_io *io, int file, uint64_t offset, const void *buffer, size_t length);
  /*
   * Queues a vectored write at `offset`, followed by an fdatasync of the
   * file when `sync` is set; both are one unit: the completion reports the
   * first failure. Nothing is sent to the kernel before submit().
   * Returns -EBUSY when the submission queue is full.
   */
  int (*queue_write)(wal_io *io, int file, uint64_t offset, const struct iovec *iov, int count,
                     bool sync, uint64_t token);
  /* Sends every queued write to the kernel in one system call. */
  int (*submit)(wal_io *io);
  /* Collects up to `capacity` completions; waits for at least one when
   * `wait` is set and writes are in flight. Returns how many, or -errno. */
  int (*reap)(wal_io *io, wal_io_completion *out, int capacity, bool wait);
  /* Optional (NULL in the in-memory twin): a file descriptor that becomes
   * readable whenever a write may have completed, so a loop waiting on
   * other things (sockets, timers) can wait for the disk too. Owned by the
   * io; read it (8 bytes) to rearm. Returns the fd or a negative errno. */
  int (*notify_fd)(wal_io *io);
  void (*destroy)(wal_io *io);
} wal_io_ops;

struct wal_io {
  const wal_io_ops *ops;
};

/* io_uring on a real directory (created if missing). queue_depth bounds the
 * writes in flight. Returns NULL and sets *error (-errno) on failure. */
wal_io *wal_io_uring_create(const char *directory, unsigned queue_depth, bool direct, int *error);

/*
 * The in-memory twin with fault injection, for tests and the simulation.
 * Each file has a durable image and a volatile image: writes land in the
 * volatile one when their completion is reaped; a sync copies it to the
 * durable one. wal_io_memory_crash() drops every volatile byte, every write
 * in flight and every directory change not synced.
 */
typedef struct wal_io_memory_faults {
  int64_t fail_sync_after;    /* syncs before one fails with -EIO; -1 never */
  int64_t fail_write_after;   /* writes before one fails with -EIO; -1 never */
  int64_t crash_after_writes; /* crash (as below) at that write; -1 never */
  uint64_t capacity_bytes;    /* total file bytes before -ENOSPC; 0 unlimited */
} wal_io_memory_faults;

wal_io *wal_io_memory_create(void);
void wal_io_memory_set_faults(wal_io *io, const wal_io_memory_faults *faults);
/* Loses what a power cut loses. The io stays usable, as after a reboot. */
void wal_io_memory_crash(wal_io *io);
/* Tears the newest durable write of `name` after `keep_bytes` of it: the
 * rest of that write reads back as it was before the write. */
int wal_io_memory_tear_last_write(wal_io *io, const char *name, size_t keep_bytes);
/* Flips one bit of the durable image of `name`. */
int wal_io_memory_flip_bit(wal_io *io, const char *name, uint64_t offset, unsigned bit);
/* Counts, for tests and benchmarks. */
uint64_t wal_io_memory_sync_count(const wal_io *io);

#endif
