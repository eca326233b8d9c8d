/*
 * io_uring.c - the production wal_io: one io_uring per WAL (per shard) for
 * the appends, plain system calls for everything off the hot path.
 *
 * A queued write is a "unit": one or more linked writev SQEs (split when
 * the iovecs exceed IOV_MAX) and, when asked, a linked fdatasync. Every SQE
 * of a unit carries the unit's slot in a FIFO table instead of the caller's
 * token, so that any SQE's failure is charged to its unit, and the token is
 * reported once, when the whole unit is done:
 *
 *   QUEUED --submit--> IN_KERNEL --last CQE--> DONE --reap, in order--> free
 *
 * Units are reported strictly in queue order even when the kernel finishes
 * a later one first (two units are not linked to each other, so they may).
 *
 * The caller's iovec array is copied at queue time into a pool that lives
 * until submit: the kernel reads iovecs when it takes the SQE (guaranteed
 * by IORING_FEAT_SUBMIT_STABLE, required at create), so callers may build
 * several writes from one iovec variable, as with writev.
 *
 * Invariants: unit_count <= queue_depth; sqes_in_kernel <= sqes_outstanding
 * <= the completion ring's size, so the kernel never has to hold back a
 * completion; a unit is reported only once its sqes_pending reached 0.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "wal/wal_io.h"

/* Open files at once: a shard holds its segments plus a few being read. */
#define WAL_IO_URING_MAX_FILES 1024
/* Linux writes at most this much per system call (MAX_RW_COUNT) and
 * silently shortens larger writes; the expected length must fit 32 bits. */
#define WAL_IO_URING_MAX_SQE_BYTES 0x7ffff000u
/* The Linux ring limit (IORING_MAX_ENTRIES); the ring holds 2 x depth. */
#define WAL_IO_URING_MAX_DEPTH 16384u

#ifdef IOV_MAX
#define WAL_IO_URING_MAX_IOVECS IOV_MAX
#else
#define WAL_IO_URING_MAX_IOVECS UIO_MAXIOV
#endif
/* iovecs queued between two submits: a few maximal writev calls' worth. */
#define WAL_IO_URING_IOVEC_POOL (4 * WAL_IO_URING_MAX_IOVECS)

typedef struct uring_file {
  int fd;          /* -1 when the slot is free */
  int buffered_fd; /* == fd unless fd is O_DIRECT; reads and write_sync use it */
} uring_file;

typedef struct uring_unit {
  uint64_t token;
  int first_error;
  unsigned sqes_pending; /* SQEs whose completion has not been seen */
} uring_unit;

typedef struct uring_io {
  wal_io base;
  struct io_uring ring;
  int directory_fd;
  int notify_fd; /* eventfd signalled on every completion; -1 until asked for */
  bool direct;
  unsigned queue_depth;
  uring_unit *units; /* FIFO ring of queue_depth */
  unsigned unit_head;
  unsigned unit_count;
  unsigned sqes_outstanding; /* prepared and not yet completed */
  unsigned sqes_in_kernel;   /* submitted and not yet completed */
  unsigned iovecs_queued;    /* pool entries in use until the next submit */
  struct iovec iovec_pool[WAL_IO_URING_IOVEC_POOL];
  uring_file files[WAL_IO_URING_MAX_FILES];
} uring_io;

static uring_io *uring_of(wal_io *io) {
  return (uring_io *)io;
}

/* ---- files and the directory: plain system calls ---- */

static int allocate_handle(uring_io *u, int fd, int buffered_fd) {
  for (int i = 0; i < WAL_IO_URING_MAX_FILES; i++) {
    if (u->files[i].fd < 0) {
      u->files[i].fd = fd;
      u->files[i].buffered_fd = buffered_fd;
      return i;
    }
  }
  return -EMFILE;
}

static uring_file *file_of(uring_io *u, int handle) {
  if (handle < 0 || handle >= WAL_IO_URING_MAX_FILES || u->files[handle].fd < 0) {
    return NULL;
  }
  return &u->files[handle];
}

static void close_descriptors(int fd, int buffered_fd) {
  if (buffered_fd >= 0 && buffered_fd != fd) {
    close(buffered_fd);
  }
  if (fd >= 0) {
    close(fd);
  }
}

/* Direct handles get a second, buffered descriptor so that reads and
 * write_sync need no aligned buffers; only queued appends go direct. */
static int open_with_flags(uring_io *u, const char *name, int flags, bool writable) {
  bool direct = writable && u->direct;
  int fd = openat(u->directory_fd, name, flags | (direct ? O_DIRECT : 0), 0644);
  if (fd < 0) {
    return -errno;
  }
  int buffered_fd = fd;
  if (direct) {
    buffered_fd = openat(u->directory_fd, name, O_RDWR | O_CLOEXEC);
    if (buffered_fd < 0) {
      int error = -errno;
      close(fd);
      return error;
    }
  }
  int handle = allocate_handle(u, fd, buffered_fd);
  if (handle < 0) {
    close_descriptors(fd, buffered_fd);
  }
  return handle;
}

static int uring_open(wal_io *io, const char *name, bool writable) {
  int flags = (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC;
  return open_with_flags(uring_of(io), name, flags, writable);
}

/* Reserves the blocks now so appends never allocate (and never hit ENOSPC
 * halfway through a batch); file systems without fallocate get a sparse
 * file, which still reads back as zeros. */
static int reserve_space(int fd, uint64_t size) {
  if (size == 0) {
    return 0;
  }
  if (fallocate(fd, 0, 0, (off_t)size) == 0) {
    return 0;
  }
  if (errno != EOPNOTSUPP) {
    return -errno;
  }
  return ftruncate(fd, (off_t)size) == 0 ? 0 : -errno;
}

static int uring_create(wal_io *io, const char *name, uint64_t size) {
  uring_io *u = uring_of(io);
  int handle = open_with_flags(u, name, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, true);
  if (handle < 0) {
    return handle;
  }
  uring_file *file = &u->files[handle];
  int rc = reserve_space(file->buffered_fd, size);
  /* The size must be durable before records rely on it (fdatasync skips
   * metadata that is not needed to read data back, fsync does not). */
  if (rc == 0 && fsync(file->buffered_fd) != 0) {
    rc = -errno;
  }
  if (rc < 0) {
    close_descriptors(file->fd, file->buffered_fd);
    file->fd = file->buffered_fd = -1;
    return rc;
  }
  return handle;
}

static int uring_close(wal_io *io, int handle) {
  uring_file *file = file_of(uring_of(io), handle);
  if (file == NULL) {
    return -EBADF;
  }
  close_descriptors(file->fd, file->buffered_fd);
  file->fd = file->buffered_fd = -1;
  return 0;
}

static int uring_rename(wal_io *io, const char *from, const char *to) {
  uring_io *u = uring_of(io);
  return renameat(u->directory_fd, from, u->directory_fd, to) == 0 ? 0 : -errno;
}

static int uring_unlink(wal_io *io, const char *name) {
  return unlinkat(uring_of(io)->directory_fd, name, 0) == 0 ? 0 : -errno;
}

static int uring_sync_directory(wal_io *io) {
  return fsync(uring_of(io)->directory_fd) == 0 ? 0 : -errno;
}

static bool is_regular_file(int directory_fd, const struct dirent *entry) {
  if (entry->d_type == DT_REG) {
    return true;
  }
  if (entry->d_type != DT_UNKNOWN) {
    return false;
  }
  /* Some file systems do not fill d_type. */
  struct stat status;
  return fstatat(directory_fd, entry->d_name, &status, AT_SYMLINK_NOFOLLOW) == 0 &&
         S_ISREG(status.st_mode);
}

static int uring_list(wal_io *io, wal_io_list_fn callback, void *context) {
  uring_io *u = uring_of(io);
  /* fdopendir takes the descriptor over; keep ours for fsync. */
  int fd = openat(u->directory_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return -errno;
  }
  DIR *directory = fdopendir(fd);
  if (directory == NULL) {
    int error = -errno;
    close(fd);
    return error;
  }
  int rc = 0;
  struct dirent *entry;
  errno = 0;
  while (rc == 0 && (entry = readdir(directory)) != NULL) {
    if (is_regular_file(u->directory_fd, entry)) {
      rc = callback(context, entry->d_name);
    }
    errno = 0;
  }
  if (rc == 0 && errno != 0) {
    rc = -errno;
  }
  closedir(directory);
  return rc;
}

static int uring_size(wal_io *io, int handle, uint64_t *size) {
  uring_file *file = file_of(uring_of(io), handle);
  if (file == NULL) {
    return -EBADF;
  }
  struct stat status;
  if (fstat(file->buffered_fd, &status) != 0) {
    return -errno;
  }
  *size = (uint64_t)status.st_size;
  return 0;
}

static int uring_read(wal_io *io, int handle, uint64_t offset, void *buffer, size_t length) {
  uring_file *file = file_of(uring_of(io), handle);
  if (file == NULL) {
    return -EBADF;
  }
  uint8_t *cursor = buffer;
  while (length > 0) {
    ssize_t done = pread(file->buffered_fd, cursor, length, (off_t)offset);
    if (done < 0 && errno == EINTR) {
      continue;
    }
    if (done < 0) {
      return -errno;
    }
    if (done == 0) {
      return -EIO; /* the file ends before the range does */
    }
    cursor += done;
    offset += (uint64_t)done;
    length -= (size_t)done;
  }
  return 0;
}

static int uring_write_sync(wal_io *io, int handle, uint64_t offset, const void *buffer,
                            size_t length) {
  uring_file *file = file_of(uring_of(io), handle);
  if (file == NULL) {
    return -EBADF;
  }
  const uint8_t *cursor = buffer;
  while (length > 0) {
    ssize_t done = pwrite(file->buffered_fd, cursor, length, (off_t)offset);
    if (done < 0 && errno == EINTR) {
      continue;
    }
    if (done <= 0) {
      return done < 0 ? -errno : -EIO;
    }
    cursor += done;
    offset += (uint64_t)done;
    length -= (size_t)done;
  }
  return fdatasync(file->buffered_fd) == 0 ? 0 : -errno;
}

/* ---- queued writes: the hot path ---- */

/* user_data of every SQE: the unit's slot and the result that means
 * success (bytes for a writev, 0 for fdatasync and no-op). */
static uint64_t encode_user_data(unsigned slot, uint32_t expected) {
  return ((uint64_t)slot << 32) | expected;
}

static unsigned sqes_needed(int count, bool sync) {
  unsigned writes = (unsigned)((count + WAL_IO_URING_MAX_IOVECS - 1) / WAL_IO_URING_MAX_IOVECS);
  unsigned total = writes + (sync ? 1u : 0u);
  return total == 0 ? 1u : total; /* an empty unit still completes: a no-op */
}

static int chunk_bytes(const struct iovec *iov, int count, uint32_t *bytes) {
  uint64_t sum = 0;
  for (int i = 0; i < count; i++) {
    sum += iov[i].iov_len;
    if (sum > WAL_IO_URING_MAX_SQE_BYTES) {
      return -EINVAL;
    }
  }
  *bytes = (uint32_t)sum;
  return 0;
}

static int check_write_fits(uring_io *u, const struct iovec *iov, int count, unsigned needed) {
  if (count < 0) {
    return -EINVAL;
  }
  for (int first = 0; first < count; first += WAL_IO_URING_MAX_IOVECS) {
    int chunk = count - first < WAL_IO_URING_MAX_IOVECS ? count - first : WAL_IO_URING_MAX_IOVECS;
    uint32_t bytes;
    if (chunk_bytes(iov + first, chunk, &bytes) != 0) {
      return -EINVAL;
    }
  }
  if (needed > u->ring.sq.ring_entries || count > WAL_IO_URING_IOVEC_POOL) {
    return -EINVAL; /* could never fit, not even in an empty ring */
  }
  if (u->unit_count == u->queue_depth || io_uring_sq_space_left(&u->ring) < needed ||
      u->sqes_outstanding + needed > u->ring.cq.ring_entries ||
      u->iovecs_queued + (unsigned)count > WAL_IO_URING_IOVEC_POOL) {
    return -EBUSY;
  }
  return 0;
}

/* Prepares the unit's SQEs, all linked so a failure cancels the rest:
 * the data is never synced (and so never acknowledged) after a hole. */
static void prepare_unit(uring_io *u, unsigned slot, uring_file *file, uint64_t offset,
                         const struct iovec *iov, int count, bool sync) {
  struct io_uring_sqe *last = NULL;
  for (int first = 0; first < count; first += WAL_IO_URING_MAX_IOVECS) {
    int chunk = count - first < WAL_IO_URING_MAX_IOVECS ? count - first : WAL_IO_URING_MAX_IOVECS;
    uint32_t bytes = 0;
    chunk_bytes(iov + first, chunk, &bytes);
    if (last != NULL) {
      last->flags |= IOSQE_IO_LINK;
    }
    last = io_uring_get_sqe(&u->ring);
    io_uring_prep_writev(last, file->fd, iov + first, (unsigned)chunk, offset);
    io_uring_sqe_set_data64(last, encode_user_data(slot, bytes));
    offset += bytes;
  }
  if (sync || last == NULL) {
    if (last != NULL) {
      last->flags |= IOSQE_IO_LINK;
    }
    last = io_uring_get_sqe(&u->ring);
    if (sync) {
      io_uring_prep_fsync(last, file->fd, IORING_FSYNC_DATASYNC);
    } else {
      io_uring_prep_nop(last);
    }
    io_uring_sqe_set_data64(last, encode_user_data(slot, 0));
  }
}

/* Note: a unit's fdatasync covers its own write and whatever completed
 * before it, not an earlier unit still in the kernel; the WAL syncs every
 * batch, so each acknowledgement rests on its own sync. */
static int uring_queue_write(wal_io *io, int handle, uint64_t offset, const struct iovec *iov,
                             int count, bool sync, uint64_t token) {
  uring_io *u = uring_of(io);
  uring_file *file = file_of(u, handle);
  if (file == NULL) {
    return -EBADF;
  }
  unsigned needed = sqes_needed(count, sync);
  int rc = check_write_fits(u, iov, count, needed);
  if (rc != 0) {
    return rc;
  }
  unsigned slot = (u->unit_head + u->unit_count) % u->queue_depth;
  u->units[slot] = (uring_unit){.token = token, .first_error = 0, .sqes_pending = needed};
  u->unit_count++;
  u->sqes_outstanding += needed;
  struct iovec *copy = u->iovec_pool + u->iovecs_queued;
  if (count > 0) {
    memcpy(copy, iov, sizeof(*iov) * (size_t)count);
  }
  u->iovecs_queued += (unsigned)count;
  prepare_unit(u, slot, file, offset, copy, count, sync);
  return 0;
}

static int uring_submit(wal_io *io) {
  uring_io *u = uring_of(io);
  while (io_uring_sq_ready(&u->ring) > 0) {
    int submitted = io_uring_submit(&u->ring);
    if (submitted == -EINTR) {
      continue;
    }
    if (submitted < 0) {
      return submitted;
    }
    if (submitted == 0) {
      return -EAGAIN; /* never spin on a ring the kernel does not take */
    }
    u->sqes_in_kernel += (unsigned)submitted;
  }
  u->iovecs_queued = 0; /* every SQE is in the kernel, which copied them */
  return 0;
}

static void record_completion(uring_io *u, const struct io_uring_cqe *cqe) {
  uint64_t data = io_uring_cqe_get_data64(cqe);
  unsigned slot = (unsigned)(data >> 32);
  uint32_t expected = (uint32_t)data;
  uring_unit *unit = &u->units[slot];
  int error = 0;
  if (cqe->res < 0) {
    error = cqe->res;
  } else if ((uint32_t)cqe->res != expected) {
    error = -EIO; /* a short write leaves a hole: never acknowledge it */
  }
  /* Links after a failure complete with -ECANCELED: keep the cause. */
  if (error != 0 && (unit->first_error == 0 || unit->first_error == -ECANCELED)) {
    unit->first_error = error;
  }
  unit->sqes_pending--;
  u->sqes_in_kernel--;
  u->sqes_outstanding--;
}

/* Hands out finished units from the head of the FIFO, in queue order. */
static int deliver_done_units(uring_io *u, wal_io_completion *out, int capacity) {
  int delivered = 0;
  while (delivered < capacity && u->unit_count > 0) {
    uring_unit *unit = &u->units[u->unit_head];
    if (unit->sqes_pending > 0) {
      break;
    }
    out[delivered++] = (wal_io_completion){.token = unit->token, .result = unit->first_error};
    u->unit_head = (u->unit_head + 1) % u->queue_depth;
    u->unit_count--;
  }
  return delivered;
}

static int uring_reap(wal_io *io, wal_io_completion *out, int capacity, bool wait) {
  uring_io *u = uring_of(io);
  int count = 0;
  for (;;) {
    count += deliver_done_units(u, out + count, capacity - count);
    if (count == capacity || u->sqes_in_kernel == 0) {
      break;
    }
    struct io_uring_cqe *cqe = NULL;
    int rc = io_uring_peek_cqe(&u->ring, &cqe);
    if (rc == -EAGAIN) {
      if (!wait || count > 0) {
        break;
      }
      rc = io_uring_wait_cqe(&u->ring, &cqe);
    }
    if (rc == -EINTR) {
      continue;
    }
    if (rc < 0) {
      return count > 0 ? count : rc;
    }
    record_completion(u, cqe);
    io_uring_cqe_seen(&u->ring, cqe);
  }
  return count;
}

/* The kernel may still be reading caller buffers: wait for every SQE in
 * flight before the ring (and the caller's memory) goes away. */
static void drain_in_flight(uring_io *u) {
  while (u->sqes_in_kernel > 0) {
    struct io_uring_cqe *cqe = NULL;
    int rc = io_uring_wait_cqe(&u->ring, &cqe);
    if (rc == -EINTR) {
      continue;
    }
    if (rc < 0) {
      break;
    }
    record_completion(u, cqe);
    io_uring_cqe_seen(&u->ring, cqe);
  }
}

/* Created on first use: a WAL driven by a loop of its own never needs it. */
static int uring_notify_fd(wal_io *io) {
  uring_io *u = uring_of(io);
  if (u->notify_fd >= 0) {
    return u->notify_fd;
  }
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) {
    return -errno;
  }
  int rc = io_uring_register_eventfd(&u->ring, fd);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  u->notify_fd = fd;
  return fd;
}

static void uring_destroy(wal_io *io) {
  uring_io *u = uring_of(io);
  drain_in_flight(u);
  io_uring_queue_exit(&u->ring);
  if (u->notify_fd >= 0) {
    close(u->notify_fd);
  }
  for (int i = 0; i < WAL_IO_URING_MAX_FILES; i++) {
    close_descriptors(u->files[i].fd, u->files[i].buffered_fd);
  }
  close(u->directory_fd);
  free(u->units);
  free(u);
}

static const wal_io_ops uring_ops = {
    .open = uring_open,
    .create = uring_create,
    .close = uring_close,
    .rename = uring_rename,
    .unlink = uring_unlink,
    .sync_directory = uring_sync_directory,
    .list = uring_list,
    .size = uring_size,
    .read = uring_read,
    .write_sync = uring_write_sync,
    .queue_write = uring_queue_write,
    .submit = uring_submit,
    .reap = uring_reap,
    .notify_fd = uring_notify_fd,
    .destroy = uring_destroy,
};

static int open_directory(const char *directory) {
  if (mkdir(directory, 0755) != 0 && errno != EEXIST) {
    return -errno;
  }
  int fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  return fd < 0 ? -errno : fd;
}

static int setup_ring(uring_io *u, unsigned queue_depth) {
  u->units = calloc(queue_depth, sizeof(*u->units));
  if (u->units == NULL) {
    return -ENOMEM;
  }
  int rc = io_uring_queue_init(queue_depth * 2, &u->ring, 0);
  if (rc == 0 && (u->ring.features & IORING_FEAT_SUBMIT_STABLE) == 0) {
    io_uring_queue_exit(&u->ring); /* Linux < 5.5: iovecs must outlive submit */
    rc = -ENOSYS;
  }
  return rc;
}

wal_io *wal_io_uring_create(const char *directory, unsigned queue_depth, bool direct, int *error) {
  if (queue_depth == 0 || queue_depth > WAL_IO_URING_MAX_DEPTH) {
    *error = -EINVAL;
    return NULL;
  }
  uring_io *u = calloc(1, sizeof(*u));
  if (u == NULL) {
    *error = -ENOMEM;
    return NULL;
  }
  u->base.ops = &uring_ops;
  u->direct = direct;
  u->queue_depth = queue_depth;
  u->notify_fd = -1;
  for (int i = 0; i < WAL_IO_URING_MAX_FILES; i++) {
    u->files[i].fd = u->files[i].buffered_fd = -1;
  }
  u->directory_fd = open_directory(directory);
  int rc = u->directory_fd < 0 ? u->directory_fd : setup_ring(u, queue_depth);
  if (rc < 0) {
    if (u->directory_fd >= 0) {
      close(u->directory_fd);
    }
    free(u->units);
    free(u);
    *error = rc;
    return NULL;
  }
  *error = 0;
  return &u->base;
}
