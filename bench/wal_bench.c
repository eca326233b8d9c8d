/*
 * wal_bench.c - wal-bench: the shard WAL's group commit measured against the
 * limit of the disk it runs on, in one run on one file system.
 *
 *   wal-bench [--dir DIR] [--seconds N] [--batch-bytes N] [--json]
 *
 * 1. The limit: a raw loop writing one batch buffer and syncing it, into a
 *    preallocated file, at the batch size the WAL uses: pwrite + fdatasync;
 *    io_uring writev linked to fsync(DATASYNC), the very submission the WAL
 *    makes, one at a time; and the same with as many batches in flight as
 *    the WAL's pipeline. The last one also runs interleaved with each WAL
 *    case (0.25 s slices, half as much raw time as WAL time), and that
 *    case's ratio is to it: a virtual disk's speed swings by tens of percent
 *    within one run, far more than the 10% margin the target leaves, and
 *    interleaving exposes both loops to the same swings.
 * 2. The WAL (wal.h, io_uring backend) with 1, 64 and 1,024 groups appending
 *    16 B and 1 KiB entries in a closed loop: every iteration fills a batch
 *    round-robin across the groups, flushes it and reaps without waiting;
 *    wal_flush waits only when pipeline_depth batches are already in
 *    flight, so the disk always has work. Latency is append-to-durable, per
 *    request: from just before wal_append to its callback.
 * 3. Recovery: the WAL of the 1,024 groups x 16 B case is closed and
 *    reopened, the scan timed with its segments in the page cache (warm) and
 *    after dropping them from it (cold: POSIX_FADV_DONTNEED, as after a
 *    reboot), and every group's recovered log checked against what was
 *    acknowledged. One case only: a scan of every case would double the run.
 *
 * MB = 10^6 bytes. WAL MB/s counts the bytes written to the segments
 * (record headers included), the same quantity the raw loop writes; "user
 * MB/s" counts entry data only. Ratios are figure / target, so >= 1.00 meets
 * the target. clock_gettime(CLOCK_MONOTONIC) is used for measurement only.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "wal/wal.h"

#define TARGET_BANDWIDTH_RATIO 0.9
#define TARGET_DURABLE_ENTRIES_PER_SECOND 1e6
#define TARGET_RECOVERY_MB_PER_SECOND 500.0
#define DEFAULT_BATCH_BYTES (1u << 20)
#define DEFAULT_SECONDS 2.0
/* The raw loop's file: large enough for seconds x a fast NVMe disk, so it
 * never wraps (overwriting written blocks is cheaper than first writes,
 * which would flatter the limit); capped by a quarter of the free space. */
#define RAW_FILE_MAX_BYTES (8ull << 30)
#define MB 1e6
#define CASE_COUNT 6
#define RAW_METHOD_COUNT 3
#define APPENDS_PER_CHUNK 1024
#define INTERLEAVE_SLICE_SECONDS 0.25

/* ---- settings ------------------------------------------------------------ */

typedef struct settings {
  const char *parent_directory; /* the run directory is made inside it */
  double seconds;
  uint32_t batch_bytes;
  bool json;
} settings;

static void usage(FILE *out) {
  fprintf(out, "usage: wal-bench [--dir DIR] [--seconds N] [--batch-bytes N] [--json]\n"
               "  --dir DIR          file system to measure; a fresh directory is made in\n"
               "                     DIR and removed afterwards (default /var/tmp)\n"
               "  --seconds N        length of each case (default 2)\n"
               "  --batch-bytes N    one WAL batch and one raw write (default 1048576)\n"
               "  --json             print one JSON object instead of the table\n");
}

static int parse_settings(int argc, char **argv, settings *s) {
  *s = (settings){.parent_directory = "/var/tmp",
                  .seconds = DEFAULT_SECONDS,
                  .batch_bytes = DEFAULT_BATCH_BYTES};
  for (int i = 1; i < argc; i++) {
    const char *name = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(name, "--json") == 0) {
      s->json = true;
    } else if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
      usage(stdout);
      exit(0);
    } else if (value != NULL && strcmp(name, "--dir") == 0) {
      s->parent_directory = value;
      i++;
    } else if (value != NULL && strcmp(name, "--seconds") == 0) {
      s->seconds = strtod(value, NULL);
      i++;
    } else if (value != NULL && strcmp(name, "--batch-bytes") == 0) {
      s->batch_bytes = (uint32_t)strtoul(value, NULL, 0);
      i++;
    } else {
      return -EINVAL;
    }
  }
  /* The WAL refuses batches under 4 KiB, and a batch must fit in one of
   * its default 64 MiB segments with room to spare. */
  bool ok = s->seconds > 0 && s->seconds <= 3600 && s->batch_bytes >= 4096 &&
            s->batch_bytes <= (32u << 20);
  return ok ? 0 : -EINVAL;
}

/* ---- time and latency ------------------------------------------------------ */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * A log-linear histogram (64 sub-buckets per power of two, under 1.6%
 * error): millions of samples in fixed memory, nothing allocated while
 * measuring.
 */
#define HISTOGRAM_SUB_BITS 6u
#define HISTOGRAM_SUB_BUCKETS (1u << HISTOGRAM_SUB_BITS)
#define HISTOGRAM_BUCKETS (64u * HISTOGRAM_SUB_BUCKETS)

typedef struct latency_histogram {
  uint64_t counts[HISTOGRAM_BUCKETS];
  uint64_t total;
} latency_histogram;

static uint32_t histogram_bucket(uint64_t ns) {
  if (ns < HISTOGRAM_SUB_BUCKETS) {
    return (uint32_t)ns;
  }
  uint32_t exponent = 63u - (uint32_t)__builtin_clzll(ns);
  uint32_t shift = exponent - HISTOGRAM_SUB_BITS;
  uint32_t sub = (uint32_t)(ns >> shift) - HISTOGRAM_SUB_BUCKETS;
  return (shift + 1) * HISTOGRAM_SUB_BUCKETS + sub;
}

/* The middle of a bucket's range of values. */
static double histogram_value(uint32_t bucket) {
  if (bucket < HISTOGRAM_SUB_BUCKETS) {
    return bucket;
  }
  uint32_t shift = bucket / HISTOGRAM_SUB_BUCKETS - 1;
  uint64_t low = (uint64_t)(HISTOGRAM_SUB_BUCKETS + bucket % HISTOGRAM_SUB_BUCKETS) << shift;
  return (double)low + (double)(1ull << shift) / 2.0;
}

static void histogram_add(latency_histogram *h, uint64_t ns) {
  h->counts[histogram_bucket(ns)]++;
  h->total++;
}

static double histogram_percentile_ms(const latency_histogram *h, double fraction) {
  if (h->total == 0) {
    return 0;
  }
  uint64_t rank = (uint64_t)(fraction * (double)h->total + 0.999999);
  uint64_t seen = 0;
  for (uint32_t bucket = 0; bucket < HISTOGRAM_BUCKETS; bucket++) {
    seen += h->counts[bucket];
    if (seen >= rank && h->counts[bucket] > 0) {
      return histogram_value(bucket) / 1e6;
    }
  }
  return 0;
}

/* ---- files ----------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path) == 0 ? 0 : -errno;
}

static void remove_tree(const char *path) {
  nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static const char *file_system_name(const char *path) {
  struct statfs fs;
  if (statfs(path, &fs) != 0) {
    return "unknown";
  }
  switch ((unsigned long)fs.f_type) {
  case 0xEF53ul:
    return "ext4";
  case 0x58465342ul:
    return "xfs";
  case 0x9123683Eul:
    return "btrfs";
  case 0x01021994ul:
    return "tmpfs";
  case 0x794c7630ul:
    return "overlayfs";
  default:
    return "other";
  }
}

/* Drops a directory's clean pages from the page cache, as a reboot would. */
static void drop_directory_cache(const char *directory) {
  DIR *dir = opendir(directory);
  if (dir == NULL) {
    return;
  }
  for (struct dirent *e = readdir(dir); e != NULL; e = readdir(dir)) {
    int fd = openat(dirfd(dir), e->d_name, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      close(fd);
    }
  }
  closedir(dir);
}

/* ---- the limit: raw write + sync loops -------------------------------------- */

typedef struct raw_result {
  const char *method;
  double seconds;
  uint64_t bytes;
  uint64_t syncs;
  latency_histogram latency;
} raw_result;

typedef struct raw_target {
  int fd;
  struct io_uring ring;
  bool ring_ready;
  struct iovec batch; /* the buffer written at every step */
  uint64_t file_bytes;
  uint32_t depth;  /* batches in flight at once (io_uring loops) */
  uint64_t offset; /* of the next write: loops resume where the last stopped */
} raw_target;

typedef int (*raw_loop)(raw_target *t, double seconds, raw_result *r);

static void raw_account(raw_result *r, const raw_target *t, uint64_t latency_ns) {
  histogram_add(&r->latency, latency_ns);
  r->bytes += t->batch.iov_len;
  r->syncs++;
}

/* The next write offset; wraps only on a disk far faster than
 * RAW_FILE_MAX_BYTES assumes. */
static uint64_t raw_next_offset(raw_target *t) {
  if (t->offset + t->batch.iov_len > t->file_bytes) {
    t->offset = 0;
  }
  uint64_t here = t->offset;
  t->offset += t->batch.iov_len;
  return here;
}

static int pwrite_and_fdatasync(raw_target *t, uint64_t offset) {
  const uint8_t *p = t->batch.iov_base;
  size_t left = t->batch.iov_len;
  while (left > 0) {
    ssize_t n = pwrite(t->fd, p, left, (off_t)offset);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return n < 0 ? -errno : -EIO;
    }
    p += n;
    left -= (size_t)n;
    offset += (uint64_t)n;
  }
  return fdatasync(t->fd) == 0 ? 0 : -errno;
}

static int pwrite_loop(raw_target *t, double seconds, raw_result *r) {
  uint64_t start = now_ns();
  uint64_t deadline = start + (uint64_t)(seconds * 1e9);
  uint64_t now = start;
  while (now < deadline) {
    int rc = pwrite_and_fdatasync(t, raw_next_offset(t));
    uint64_t done = now_ns();
    if (rc != 0) {
      return rc;
    }
    raw_account(r, t, done - now);
    now = done;
  }
  r->seconds += (double)(now - start) / 1e9;
  return 0;
}

/* One batch in an io_uring loop: a writev linked to fsync(DATASYNC), the
 * very submission the WAL makes for a batch. */
typedef struct raw_unit {
  uint64_t submitted_ns;
  uint32_t pending; /* completions still to come: 0 when the slot is free */
  int error;
} raw_unit;

#define RAW_MAX_DEPTH 16u

/* user_data = slot * 2 + 1 for the write, slot * 2 for the sync. */
static void queue_raw_unit(raw_target *t, raw_unit *units, uint32_t slot, uint64_t offset) {
  struct io_uring_sqe *write = io_uring_get_sqe(&t->ring);
  io_uring_prep_writev(write, t->fd, &t->batch, 1, offset);
  io_uring_sqe_set_data64(write, (uint64_t)slot * 2 + 1);
  write->flags |= IOSQE_IO_LINK;
  struct io_uring_sqe *sync = io_uring_get_sqe(&t->ring);
  io_uring_prep_fsync(sync, t->fd, IORING_FSYNC_DATASYNC);
  io_uring_sqe_set_data64(sync, (uint64_t)slot * 2);
  units[slot] = (raw_unit){.submitted_ns = now_ns(), .pending = 2};
}

/* Waits for one completion; accounts the unit once both of its are in. */
static int reap_raw_unit(raw_target *t, raw_unit *units, raw_result *r, uint32_t *in_flight) {
  struct io_uring_cqe *cqe = NULL;
  int rc = io_uring_wait_cqe(&t->ring, &cqe);
  if (rc < 0) {
    return rc;
  }
  uint64_t data = io_uring_cqe_get_data64(cqe);
  raw_unit *unit = &units[data / 2];
  /* A short write breaks the link: the sync is cancelled, not run. */
  bool short_write = (data & 1) && cqe->res >= 0 && (size_t)cqe->res != t->batch.iov_len;
  int error = cqe->res < 0 ? cqe->res : short_write ? -EIO : 0;
  unit->error = unit->error != 0 ? unit->error : error;
  io_uring_cqe_seen(&t->ring, cqe);
  if (--unit->pending > 0) {
    return 0;
  }
  (*in_flight)--;
  if (unit->error == 0) {
    raw_account(r, t, now_ns() - unit->submitted_ns);
  }
  return unit->error;
}

static uint32_t free_raw_slot(const raw_unit *units) {
  uint32_t slot = 0;
  while (units[slot].pending != 0) {
    slot++;
  }
  return slot;
}

static int uring_loop(raw_target *t, double seconds, raw_result *r) {
  raw_unit units[RAW_MAX_DEPTH] = {0};
  uint64_t start = now_ns();
  uint64_t deadline = start + (uint64_t)(seconds * 1e9);
  uint32_t in_flight = 0;
  int rc = 0;
  while (rc == 0 && (in_flight > 0 || now_ns() < deadline)) {
    uint32_t queued = 0;
    for (; in_flight < t->depth && now_ns() < deadline; in_flight++, queued++) {
      queue_raw_unit(t, units, free_raw_slot(units), raw_next_offset(t));
    }
    if (queued > 0) {
      rc = io_uring_submit(&t->ring) < 0 ? -EIO : 0;
    }
    if (rc == 0 && in_flight > 0) {
      rc = reap_raw_unit(t, units, r, &in_flight);
    }
  }
  r->seconds += (double)(now_ns() - start) / 1e9;
  return rc;
}

static uint64_t raw_file_bytes(const char *directory, uint32_t batch_bytes) {
  struct statvfs vfs;
  uint64_t bytes = RAW_FILE_MAX_BYTES;
  if (statvfs(directory, &vfs) == 0) {
    uint64_t quarter_free = (uint64_t)vfs.f_bavail * vfs.f_frsize / 4;
    bytes = quarter_free < bytes ? quarter_free : bytes;
  }
  bytes -= bytes % batch_bytes;
  return bytes < batch_bytes ? batch_bytes : bytes;
}

/* A fresh file, preallocated and synced: the state a new WAL segment is in
 * (the io_uring backend fallocates, then fsyncs). */
static int open_raw_target(const char *path, raw_target *t) {
  t->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (t->fd < 0) {
    return -errno;
  }
  if (fallocate(t->fd, 0, 0, (off_t)t->file_bytes) != 0 || fsync(t->fd) != 0) {
    return -errno;
  }
  int rc = io_uring_queue_init(2 * RAW_MAX_DEPTH, &t->ring, 0);
  t->ring_ready = rc == 0;
  return rc;
}

static void close_raw_target(const char *path, raw_target *t) {
  if (t->ring_ready) {
    io_uring_queue_exit(&t->ring);
  }
  if (t->fd >= 0) {
    close(t->fd);
  }
  unlink(path);
}

/* A raw target kept open across the slices it is measured in. */
typedef struct raw_session {
  raw_target target;
  char path[4200];
} raw_session;

static int raw_session_open(const settings *s, const char *directory, uint32_t depth,
                            uint8_t *buffer, raw_session *session) {
  snprintf(session->path, sizeof(session->path), "%s/raw-limit.dat", directory);
  session->target = (raw_target){.fd = -1,
                                 .batch = {.iov_base = buffer, .iov_len = s->batch_bytes},
                                 .file_bytes = raw_file_bytes(directory, s->batch_bytes),
                                 .depth = depth < RAW_MAX_DEPTH ? depth : RAW_MAX_DEPTH};
  return open_raw_target(session->path, &session->target);
}

static void raw_session_close(raw_session *session) {
  close_raw_target(session->path, &session->target);
}

static int measure_raw(const settings *s, const char *directory, const char *method, raw_loop loop,
                       uint32_t depth, uint8_t *buffer, raw_result *r) {
  raw_session session;
  r->method = method;
  int rc = raw_session_open(s, directory, depth, buffer, &session);
  if (rc == 0) {
    rc = loop(&session.target, s->seconds, r);
  }
  raw_session_close(&session);
  return rc;
}

/* ---- the WAL closed loop ----------------------------------------------------- */

typedef struct wal_case {
  uint32_t groups;
  uint32_t entry_bytes;
} wal_case;

static const wal_case wal_cases[CASE_COUNT] = {
    {1, 16}, {1, 1024}, {64, 16}, {64, 1024}, {1024, 16}, {1024, 1024},
};

typedef struct wal_result {
  wal_case spec;
  uint32_t entries_per_append;
  double seconds;
  uint64_t entries;       /* reported durable by a callback */
  uint64_t user_bytes;    /* entry data of those */
  uint64_t written_bytes; /* to the segments, record framing included */
  uint64_t syncs;
  uint64_t batches;
  latency_histogram latency;
  /* The pipelined raw loop run right before this case: its limit. */
  raw_result adjacent_raw;
} wal_result;

/* The reopen of one case's WAL. */
typedef struct recovery_result {
  wal_case spec;
  uint32_t segments;
  uint64_t records;
  uint64_t scanned_bytes;
  double warm_seconds;
  double cold_seconds;
  uint32_t groups_wrong; /* groups whose recovered last index differs */
} recovery_result;

struct wal_runner;

/* One wal_append's request, recycled through a free list once durable. */
typedef struct pending_append {
  wal_request request;
  struct wal_runner *runner;
  struct pending_append *next_free;
  uint64_t queued_ns;
  uint32_t entries;
} pending_append;

typedef struct append_chunk {
  struct append_chunk *next;
  pending_append appends[APPENDS_PER_CHUNK];
} append_chunk;

typedef struct wal_runner {
  wal *log;
  wal_result *result;
  uint64_t *next_index; /* per group */
  wal_entry *entries;   /* one append's, reused */
  const uint8_t *payload;
  uint32_t cursor; /* the group whose turn it is */
  pending_append *free_list;
  append_chunk *chunks;
  int failure; /* first error a callback reported */
} wal_runner;

static void on_durable(void *context, int result) {
  pending_append *a = context;
  wal_runner *r = a->runner;
  if (result < 0) {
    r->failure = r->failure != 0 ? r->failure : result;
  } else {
    histogram_add(&r->result->latency, now_ns() - a->queued_ns);
    r->result->entries += a->entries;
    r->result->user_bytes += (uint64_t)a->entries * r->result->spec.entry_bytes;
  }
  a->next_free = r->free_list;
  r->free_list = a;
}

/* Grows the pool only while the pipeline fills up, never in steady state. */
static pending_append *take_append(wal_runner *r) {
  if (r->free_list == NULL) {
    append_chunk *chunk = calloc(1, sizeof(*chunk));
    if (chunk == NULL) {
      return NULL;
    }
    chunk->next = r->chunks;
    r->chunks = chunk;
    for (uint32_t i = 0; i < APPENDS_PER_CHUNK; i++) {
      pending_append *a = &chunk->appends[i];
      *a = (pending_append){.request = {.callback = on_durable, .context = a}, .runner = r};
      a->next_free = r->free_list;
      r->free_list = a;
    }
  }
  pending_append *a = r->free_list;
  r->free_list = a->next_free;
  return a;
}

static void give_back(wal_runner *r, pending_append *a) {
  a->next_free = r->free_list;
  r->free_list = a;
}

/*
 * Entries per append such that one round over every group about fills a
 * batch: one group sends big records, 1,024 groups small ones, as a shard's
 * groups would under the same load. At least one entry.
 */
static uint32_t entries_per_append(const wal_case *c, uint32_t batch_bytes) {
  uint64_t framing = 32 + 16; /* record header + entries header */
  uint64_t per_entry = 16 + ((c->entry_bytes + 7u) & ~7u);
  uint64_t share = batch_bytes / c->groups;
  uint64_t count = share > framing + per_entry ? (share - framing) / per_entry : 1;
  return (uint32_t)count;
}

/* Appends round-robin across the groups until the batch is full. */
static int queue_until_batch_full(wal_runner *r) {
  uint32_t count = r->result->entries_per_append;
  for (;;) {
    pending_append *a = take_append(r);
    if (a == NULL) {
      return -ENOMEM;
    }
    uint64_t first = r->next_index[r->cursor];
    for (uint32_t i = 0; i < count; i++) {
      r->entries[i].index = first + i;
    }
    a->entries = count;
    a->queued_ns = now_ns();
    int rc = wal_append(r->log, (uint64_t)r->cursor + 1, r->entries, count, &a->request);
    if (rc != 0) {
      give_back(r, a);
      return rc == -ENOBUFS ? 0 : rc;
    }
    r->next_index[r->cursor] = first + count;
    r->cursor = (r->cursor + 1) % r->result->spec.groups;
  }
}

static int drain(wal_runner *r) {
  while (wal_in_flight(r->log) > 0) {
    int rc = wal_poll(r->log, true);
    if (rc < 0) {
      return rc;
    }
  }
  return r->failure;
}

static int run_closed_loop(wal_runner *r, double seconds) {
  wal_stats before;
  wal_get_stats(r->log, &before);
  uint64_t start = now_ns();
  uint64_t deadline = start + (uint64_t)(seconds * 1e9);
  int rc = 0;
  while (rc == 0 && r->failure == 0 && now_ns() < deadline) {
    rc = queue_until_batch_full(r);
    if (rc == 0) {
      /* Waits only when pipeline_depth batches are in flight already. */
      rc = wal_flush(r->log);
    }
    if (rc == 0) {
      rc = wal_poll(r->log, false);
      rc = rc > 0 ? 0 : rc;
    }
  }
  rc = rc != 0 ? rc : drain(r);
  r->result->seconds += (double)(now_ns() - start) / 1e9;
  wal_stats after;
  wal_get_stats(r->log, &after);
  r->result->written_bytes += after.bytes_written - before.bytes_written;
  r->result->syncs += after.syncs - before.syncs;
  r->result->batches += after.batches - before.batches;
  return rc != 0 ? rc : r->failure;
}

/*
 * Alternates short slices of the WAL loop with slices of the pipelined raw
 * loop (half as much raw time in all), so both see the same moments of a
 * disk whose speed swings by tens of percent within a second or two.
 */
static int run_interleaved(wal_runner *r, raw_session *raw, double seconds) {
  uint32_t slices = (uint32_t)(seconds / INTERLEAVE_SLICE_SECONDS);
  slices = slices > 0 ? slices : 1;
  double slice = seconds / slices;
  int rc = 0;
  for (uint32_t i = 0; i < slices && rc == 0; i++) {
    if (i % 2 == 0) {
      rc = uring_loop(&raw->target, slice, &r->result->adjacent_raw);
    }
    if (rc == 0) {
      rc = run_closed_loop(r, slice);
    }
  }
  return rc;
}

static void wal_case_options(const settings *s, const char *directory, wal_options *options) {
  wal_options_default(options);
  options->directory = directory;
  options->shard_id = 1;
  options->batch_bytes = s->batch_bytes;
}

static int prepare_runner(wal_runner *r, wal_result *result, const uint8_t *payload) {
  uint32_t count = result->entries_per_append;
  *r = (wal_runner){.result = result, .payload = payload};
  r->next_index = calloc(result->spec.groups, sizeof(*r->next_index));
  r->entries = calloc(count, sizeof(*r->entries));
  if (r->next_index == NULL || r->entries == NULL) {
    return -ENOMEM;
  }
  for (uint32_t g = 0; g < result->spec.groups; g++) {
    r->next_index[g] = 1;
  }
  for (uint32_t i = 0; i < count; i++) {
    r->entries[i] = (wal_entry){.term = 1, .length = result->spec.entry_bytes, .data = payload};
  }
  return 0;
}

static void release_runner(wal_runner *r) {
  while (r->chunks != NULL) {
    append_chunk *next = r->chunks->next;
    free(r->chunks);
    r->chunks = next;
  }
  free(r->next_index);
  free(r->entries);
}

/* ---- recovery ----------------------------------------------------------------- */

/* Counts groups whose recovered log does not end where the loop left it. */
static uint32_t count_wrong_groups(const wal *log, const wal_runner *r) {
  uint32_t wrong = 0;
  for (uint32_t g = 0; g < r->result->spec.groups; g++) {
    wal_group_state state;
    if (wal_group(log, (uint64_t)g + 1, &state) != 0 || state.last_index != r->next_index[g] - 1) {
      wrong++;
    }
  }
  return wrong;
}

static int timed_reopen(const wal_options *options, const wal_runner *r, recovery_result *recovery,
                        double *seconds) {
  wal_recovery_report report;
  wal *log = NULL;
  uint64_t start = now_ns();
  int rc = wal_open(options, &log, &report);
  *seconds = (double)(now_ns() - start) / 1e9;
  if (rc != 0) {
    fprintf(stderr, "wal-bench: reopen: %s %s\n", strerror(-rc), report.error);
    return rc;
  }
  recovery->scanned_bytes = report.bytes_scanned;
  recovery->segments = report.segments;
  recovery->records = report.records;
  recovery->groups_wrong = count_wrong_groups(log, r);
  return wal_close(log);
}

static int measure_recovery(const wal_options *options, const wal_runner *r,
                            recovery_result *recovery) {
  recovery->spec = r->result->spec;
  int rc = timed_reopen(options, r, recovery, &recovery->warm_seconds);
  if (rc == 0) {
    drop_directory_cache(options->directory);
    rc = timed_reopen(options, r, recovery, &recovery->cold_seconds);
  }
  return rc;
}

/* Runs one case; then, when `recovery` is given, times reopening its WAL. */
static int measure_wal_case(const settings *s, const char *directory, const uint8_t *payload,
                            raw_session *raw, wal_result *result, recovery_result *recovery) {
  wal_options options;
  wal_case_options(s, directory, &options);
  result->entries_per_append = entries_per_append(&result->spec, s->batch_bytes);
  wal_runner r;
  int rc = prepare_runner(&r, result, payload);
  if (rc == 0) {
    rc = wal_open(&options, &r.log, NULL);
  }
  if (rc == 0) {
    rc = run_interleaved(&r, raw, s->seconds);
    int closed = wal_close(r.log);
    rc = rc != 0 ? rc : closed;
  }
  if (rc == 0 && recovery != NULL) {
    rc = measure_recovery(&options, &r, recovery);
  }
  release_runner(&r);
  return rc;
}

/* ---- report ------------------------------------------------------------------- */

typedef struct run {
  settings settings;
  char directory[4096];
  const char *file_system;
  raw_result raw[RAW_METHOD_COUNT];
  wal_result wal[CASE_COUNT];
  uint32_t wal_done;
  recovery_result recovery;
} run;

static double per_second(double amount, double seconds) {
  return seconds > 0 ? amount / seconds : 0;
}

/* The limit is the fastest raw loop: the strictest comparison. */
static double raw_mb_per_second(const run *x) {
  double best = 0;
  for (int i = 0; i < RAW_METHOD_COUNT; i++) {
    double rate = per_second((double)x->raw[i].bytes / MB, x->raw[i].seconds);
    best = rate > best ? rate : best;
  }
  return best;
}

static double wal_mb_per_second(const wal_result *w) {
  return per_second((double)w->written_bytes / MB, w->seconds);
}

static double adjacent_raw_mb_per_second(const wal_result *w) {
  return per_second((double)w->adjacent_raw.bytes / MB, w->adjacent_raw.seconds);
}

/* The case against the limit measured next to it in time. */
static double bandwidth_ratio(const wal_result *w) {
  double limit = adjacent_raw_mb_per_second(w);
  return limit > 0 ? wal_mb_per_second(w) / limit : 0;
}

static double recovery_mb_per_second(const recovery_result *r, bool cold) {
  return per_second((double)r->scanned_bytes / MB, cold ? r->cold_seconds : r->warm_seconds);
}

static const wal_result *find_case(const run *x, uint32_t groups, uint32_t entry_bytes) {
  for (uint32_t i = 0; i < x->wal_done; i++) {
    if (x->wal[i].spec.groups == groups && x->wal[i].spec.entry_bytes == entry_bytes) {
      return &x->wal[i];
    }
  }
  return NULL;
}

typedef struct summary {
  double worst_bandwidth_ratio;
  double many_small_entries_per_second;
} summary;

static summary summarize(const run *x) {
  summary m = {.worst_bandwidth_ratio = 1e9};
  for (uint32_t i = 0; i < x->wal_done; i++) {
    double ratio = bandwidth_ratio(&x->wal[i]);
    m.worst_bandwidth_ratio = ratio < m.worst_bandwidth_ratio ? ratio : m.worst_bandwidth_ratio;
  }
  const wal_result *many = find_case(x, 1024, 16);
  m.many_small_entries_per_second =
      many != NULL ? per_second((double)many->entries, many->seconds) : 0;
  return m;
}

static void print_raw_table(const run *x) {
  printf("\nlimit: raw loops, one %u-byte batch per sync, into a preallocated file\n",
         x->settings.batch_bytes);
  printf("  %-38s %9s %9s %8s %8s\n", "method", "MB/s", "syncs/s", "p50 ms", "p99 ms");
  for (int i = 0; i < RAW_METHOD_COUNT; i++) {
    const raw_result *r = &x->raw[i];
    printf("  %-38s %9.1f %9.1f %8.2f %8.2f\n", r->method,
           per_second((double)r->bytes / MB, r->seconds), per_second((double)r->syncs, r->seconds),
           histogram_percentile_ms(&r->latency, 0.50), histogram_percentile_ms(&r->latency, 0.99));
  }
}

static void print_wal_row(const wal_result *w) {
  printf("  %6u %5u %8u %11.0f %8.1f %8.1f %8.1f %8.1f %7.2f %7.2f %8.1f %6.2f\n", w->spec.groups,
         w->spec.entry_bytes, w->entries_per_append, per_second((double)w->entries, w->seconds),
         wal_mb_per_second(w), per_second((double)w->user_bytes / MB, w->seconds),
         per_second((double)w->syncs, w->seconds),
         w->batches ? (double)w->written_bytes / (double)w->batches / 1024.0 : 0.0,
         histogram_percentile_ms(&w->latency, 0.50), histogram_percentile_ms(&w->latency, 0.99),
         adjacent_raw_mb_per_second(w), bandwidth_ratio(w));
}

static void print_wal_table(const run *x) {
  printf("\nWAL: group commit over io_uring, closed loop, default options (pipeline depth 2,\n"
         "64 MiB segments), batch as above\n");
  printf("  %6s %5s %8s %11s %8s %8s %8s %8s %7s %7s %8s %6s\n", "groups", "entry", "per rec",
         "entries/s", "MB/s", "user", "fsyncs/s", "KiB/bat", "p50 ms", "p99 ms", "raw MB/s",
         "x raw");
  for (uint32_t i = 0; i < x->wal_done; i++) {
    print_wal_row(&x->wal[i]);
  }
  printf("  entry: data bytes per entry; per rec: entries per append; MB/s: bytes written,\n"
         "  record framing included; user: entry data MB/s; raw MB/s: the pipelined raw loop\n"
         "  (same batch, same depth) interleaved with the case in 0.25 s slices;\n"
         "  x raw: MB/s / raw MB/s;\n"
         "  p50/p99: append-to-durable latency per request\n");
}

static void print_recovery_table(const recovery_result *r) {
  printf("\nrecovery: reopen of the %u groups x %u B WAL: %u segments, %llu records, %.1f MB\n",
         r->spec.groups, r->spec.entry_bytes, r->segments, (unsigned long long)r->records,
         (double)r->scanned_bytes / MB);
  printf("  %-26s %9s %9s\n", "page cache", "seconds", "MB/s");
  printf("  %-26s %9.3f %9.1f\n", "warm (restart)", r->warm_seconds,
         recovery_mb_per_second(r, false));
  printf("  %-26s %9.3f %9.1f\n", "cold (after FADV_DONTNEED)", r->cold_seconds,
         recovery_mb_per_second(r, true));
  if (r->groups_wrong > 0) {
    printf("  ERROR: %u groups recovered a log that differs from what was acknowledged\n",
           r->groups_wrong);
  }
}

static void print_target(const char *what, double figure, double target, const char *unit) {
  printf("  %-48s %10.2f %-4s target %8.2f  ratio %6.2f  %s\n", what, figure, unit, target,
         target > 0 ? figure / target : 0, figure >= target ? "met" : "MISSED");
}

static void print_table(const run *x) {
  printf("wal-bench: %s (%s), %.1f s per case, batch %u bytes\n", x->directory, x->file_system,
         x->settings.seconds, x->settings.batch_bytes);
  print_raw_table(x);
  print_wal_table(x);
  print_recovery_table(&x->recovery);
  summary m = summarize(x);
  printf("\ntargets (ratio = figure / target)\n");
  print_target("WAL MB/s / adjacent raw MB/s, worst case", m.worst_bandwidth_ratio,
               TARGET_BANDWIDTH_RATIO, "x");
  print_target("1,024 groups x 16 B, durable entries/s", m.many_small_entries_per_second / 1e6,
               TARGET_DURABLE_ENTRIES_PER_SECOND / 1e6, "M/s");
  print_target("recovery scan, warm page cache", recovery_mb_per_second(&x->recovery, false),
               TARGET_RECOVERY_MB_PER_SECOND, "MB/s");
  print_target("recovery scan, cold page cache", recovery_mb_per_second(&x->recovery, true),
               TARGET_RECOVERY_MB_PER_SECOND, "MB/s");
}

static void print_json_raw(const raw_result *r, bool last) {
  printf("    {\"method\": \"%s\", \"mb_per_s\": %.1f, \"syncs_per_s\": %.1f, "
         "\"p50_ms\": %.3f, \"p99_ms\": %.3f}%s\n",
         r->method, per_second((double)r->bytes / MB, r->seconds),
         per_second((double)r->syncs, r->seconds), histogram_percentile_ms(&r->latency, 0.50),
         histogram_percentile_ms(&r->latency, 0.99), last ? "" : ",");
}

static void print_json_wal(const run *x, const wal_result *w, bool last) {
  double best = raw_mb_per_second(x);
  printf("    {\"groups\": %u, \"entry_bytes\": %u, \"entries_per_append\": %u, "
         "\"entries_per_s\": %.0f, \"mb_per_s\": %.1f, \"user_mb_per_s\": %.1f, "
         "\"fsyncs_per_s\": %.1f, \"batch_bytes_mean\": %.0f, \"p50_ms\": %.3f, "
         "\"p99_ms\": %.3f, \"adjacent_raw_mb_per_s\": %.1f, \"ratio_to_raw\": %.3f, "
         "\"ratio_to_best_raw\": %.3f}%s\n",
         w->spec.groups, w->spec.entry_bytes, w->entries_per_append,
         per_second((double)w->entries, w->seconds), wal_mb_per_second(w),
         per_second((double)w->user_bytes / MB, w->seconds),
         per_second((double)w->syncs, w->seconds),
         w->batches ? (double)w->written_bytes / (double)w->batches : 0.0,
         histogram_percentile_ms(&w->latency, 0.50), histogram_percentile_ms(&w->latency, 0.99),
         adjacent_raw_mb_per_second(w), bandwidth_ratio(w),
         best > 0 ? wal_mb_per_second(w) / best : 0, last ? "" : ",");
}

static void print_json_recovery(const recovery_result *r) {
  printf("  \"recovery\": {\"groups\": %u, \"entry_bytes\": %u, \"segments\": %u, "
         "\"records\": %llu, \"scanned_bytes\": %llu, \"warm_mb_per_s\": %.1f, "
         "\"cold_mb_per_s\": %.1f, \"groups_wrong\": %u},\n",
         r->spec.groups, r->spec.entry_bytes, r->segments, (unsigned long long)r->records,
         (unsigned long long)r->scanned_bytes, recovery_mb_per_second(r, false),
         recovery_mb_per_second(r, true), r->groups_wrong);
}

static void print_json(const run *x) {
  summary m = summarize(x);
  printf("{\n  \"file_system\": \"%s\", \"seconds\": %.2f, \"batch_bytes\": %u,\n", x->file_system,
         x->settings.seconds, x->settings.batch_bytes);
  printf("  \"raw\": [\n");
  for (int i = 0; i < RAW_METHOD_COUNT; i++) {
    print_json_raw(&x->raw[i], i + 1 == RAW_METHOD_COUNT);
  }
  printf("  ],\n  \"wal\": [\n");
  for (uint32_t i = 0; i < x->wal_done; i++) {
    print_json_wal(x, &x->wal[i], i + 1 == x->wal_done);
  }
  printf("  ],\n");
  print_json_recovery(&x->recovery);
  printf("  \"targets\": {\"bandwidth_ratio\": %.3f, \"bandwidth_ratio_target\": %.2f, "
         "\"entries_per_s_1024x16\": %.0f, \"entries_per_s_target\": %.0f, "
         "\"recovery_target_mb_per_s\": %.0f}\n}\n",
         m.worst_bandwidth_ratio, TARGET_BANDWIDTH_RATIO, m.many_small_entries_per_second,
         TARGET_DURABLE_ENTRIES_PER_SECOND, TARGET_RECOVERY_MB_PER_SECOND);
}

/* ---- main ---------------------------------------------------------------------- */

/* Bytes that compress and hash like real data, never all zero. */
static uint8_t *make_pattern(size_t bytes) {
  uint8_t *buffer = aligned_alloc(4096, (bytes + 4095) & ~(size_t)4095);
  uint64_t state = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; buffer != NULL && i < bytes; i++) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    buffer[i] = (uint8_t)state | 1u;
  }
  return buffer;
}

/*
 * Serial loops are the classic limit; the pipelined io_uring loop keeps as
 * many batches in flight as the WAL does, so the WAL's overlap of one
 * batch's sync with the next batch's write is in the limit too.
 */
static int measure_limit(run *x, uint8_t *buffer) {
  static const char *methods[RAW_METHOD_COUNT] = {
      "pwrite + fdatasync",
      "io_uring writev -> fsync(DATASYNC)",
      "io_uring, WAL pipeline depth in flight",
  };
  wal_options defaults;
  wal_options_default(&defaults);
  const raw_loop loops[RAW_METHOD_COUNT] = {pwrite_loop, uring_loop, uring_loop};
  const uint32_t depths[RAW_METHOD_COUNT] = {1, 1, defaults.pipeline_depth};
  int rc = 0;
  for (int i = 0; i < RAW_METHOD_COUNT && rc == 0; i++) {
    rc = measure_raw(&x->settings, x->directory, methods[i], loops[i], depths[i], buffer,
                     &x->raw[i]);
  }
  if (rc != 0) {
    fprintf(stderr, "wal-bench: raw loop: %s\n", strerror(-rc));
  }
  return rc;
}

/* Runs one case and its adjacent raw loop, on a fresh raw file. */
static int measure_one_case(run *x, uint32_t i, uint8_t *payload) {
  char directory[4200];
  snprintf(directory, sizeof(directory), "%s/wal-%u-%u", x->directory, wal_cases[i].groups,
           wal_cases[i].entry_bytes);
  wal_options defaults;
  wal_options_default(&defaults);
  wal_result *result = &x->wal[i];
  result->spec = wal_cases[i];
  result->adjacent_raw.method = "io_uring, WAL pipeline depth in flight";
  bool recover = wal_cases[i].groups == 1024 && wal_cases[i].entry_bytes == 16;
  raw_session raw;
  int rc = raw_session_open(&x->settings, x->directory, defaults.pipeline_depth, payload, &raw);
  if (rc == 0) {
    rc = measure_wal_case(&x->settings, directory, payload, &raw, result,
                          recover ? &x->recovery : NULL);
  }
  raw_session_close(&raw);
  remove_tree(directory); /* keeps the disk use of a run to one case */
  return rc;
}

static int measure_wal_cases(run *x, uint8_t *payload) {
  for (uint32_t i = 0; i < CASE_COUNT; i++) {
    int rc = measure_one_case(x, i, payload);
    if (rc != 0) {
      fprintf(stderr, "wal-bench: %u groups x %u B: %s\n", wal_cases[i].groups,
              wal_cases[i].entry_bytes, strerror(-rc));
      return rc;
    }
    x->wal_done = i + 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  static run x; /* histograms make it large */
  if (parse_settings(argc, argv, &x.settings) != 0) {
    usage(stderr);
    return 2;
  }
  snprintf(x.directory, sizeof(x.directory), "%s/wal-bench-XXXXXX", x.settings.parent_directory);
  if (mkdtemp(x.directory) == NULL) {
    fprintf(stderr, "wal-bench: mkdtemp %s: %s\n", x.directory, strerror(errno));
    return 1;
  }
  x.file_system = file_system_name(x.directory);
  uint8_t *buffer = make_pattern(x.settings.batch_bytes);
  int rc = buffer == NULL ? -ENOMEM : measure_limit(&x, buffer);
  if (rc == 0) {
    rc = measure_wal_cases(&x, buffer);
  }
  remove_tree(x.directory);
  free(buffer);
  if (rc == 0) {
    x.settings.json ? print_json(&x) : print_table(&x);
  }
  return rc == 0 ? 0 : 1;
}
