/*
 * wal.h - the write-ahead log of one shard, shared by all its Raft groups.
 *
 * Everything queued between two wal_flush() calls becomes ONE submission:
 * the records of every group, written with one vectored write and followed
 * by one fdatasync (group commit across groups). Completions arrive in
 * submission order through wal_poll(); each request's callback fires once
 * the batch holding it is durable. A failed write or fdatasync is fatal:
 * pending and later requests fail with the error and the WAL must be closed
 * (a failed fsync is never retried: the page cache may have lost the data).
 *
 * The WAL stores (group, index, term, bytes) records, hard states and
 * snapshot markers; it knows nothing of Raft's rules. An ENTRIES record
 * replaces the group's log from its first index on.
 *
 * Threading: a wal belongs to one thread (its shard). Ownership: entry data
 * is copied into the batch at queue time; requests are caller-owned and
 * must stay alive until their callback ran.
 * Errors: int, 0 or a negative errno.
 */
#ifndef FLOTILLA_WAL_H
#define FLOTILLA_WAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wal/wal_io.h"

typedef struct wal wal;

typedef struct wal_options {
  const char *directory;   /* for the default io_uring backend */
  wal_io *io;              /* NULL: io_uring on directory; otherwise borrowed */
  uint32_t shard_id;       /* written in every segment header and checked */
  uint64_t segment_bytes;  /* fixed segment size (default 64 MiB) */
  uint32_t batch_bytes;    /* one submission's buffer (default 4 MiB) */
  uint32_t pipeline_depth; /* batches in flight at once (default 2) */
  bool direct;             /* O_DIRECT with the io_uring backend */
  uint32_t spare_segments; /* dead segments kept for reuse instead of deleted (default 2) */
  uint32_t cache_batches;  /* durable batches kept in memory for reads (default 2) */
} wal_options;

void wal_options_default(wal_options *options);

/* One entry to store or read back; data is borrowed (append) or points into
 * the caller's read buffer (read). */
typedef struct wal_entry {
  uint64_t index;
  uint64_t term;
  uint32_t type;
  uint32_t length;
  const uint8_t *data;
} wal_entry;

typedef struct wal_hard_state {
  uint64_t term;
  uint64_t vote;
  uint64_t commit;
} wal_hard_state;

typedef void (*wal_callback)(void *context, int result);

/* Caller-owned; fill callback and context, leave the rest to the WAL. */
typedef struct wal_request {
  wal_callback callback;
  void *context;
  struct wal_request *next; /* internal */
} wal_request;

/* What recovery found: for logs and for the open's error message. */
typedef struct wal_recovery_report {
  uint32_t segments;
  uint64_t records;
  uint64_t bytes_scanned;
  uint64_t torn_tail_bytes; /* truncated from the newest segment */
  char error[256];          /* set when wal_open fails on corruption */
} wal_recovery_report;

/*
 * Opens (creating when empty) and recovers: scans every segment, rebuilds
 * every group's index, hard state and snapshot marker, truncates a torn
 * tail of the newest segment. Corruption anywhere else fails with -EUCLEAN
 * and report->error naming the file, offset and group.
 */
int wal_open(const wal_options *options, wal **out, wal_recovery_report *report);
/* Flushes, waits for everything in flight, closes. */
int wal_close(wal *w);

/* ---- queueing (nothing reaches the disk before wal_flush) ---- */

/* Entries must be consecutive and follow the group's log or overlap it
 * (replacing the overlapped suffix). request may be NULL. -ENOBUFS when the
 * batch is full: flush and retry. */
int wal_append(wal *w, uint64_t group, const wal_entry *entries, uint32_t count,
               wal_request *request);
int wal_save_hard_state(wal *w, uint64_t group, const wal_hard_state *state, wal_request *request);
/* A snapshot covering the group's log up to index: entries up to it die.
 * Index 0 is allowed: it records a new group's initial state (data). */
int wal_save_snapshot(wal *w, uint64_t group, uint64_t index, uint64_t term, const void *data,
                      uint32_t length, wal_request *request);
/* Entries up to and including index are no longer needed. */
int wal_compact(wal *w, uint64_t group, uint64_t index);
int wal_remove_group(wal *w, uint64_t group, wal_request *request);

/*
 * Keeps disk use bounded. When the oldest half of the segments is pinned by
 * a few groups, copies forward what pins it: hard states and snapshot
 * markers are re-saved, and a lagging group's whole live log is rewritten at
 * the head as one REWRITE record (when it fits in a batch). Waits until the
 * copies are durable, then retires every oldest segment nothing live refers
 * to: kept as a spare for reuse (up to spare_segments) or deleted. Blocks on
 * the disk; call it after compactions, not per write. Returns the number of
 * segments retired, or a negative errno.
 */
int wal_collect_garbage(wal *w);

/*
 * Completes `request` once everything queued so far is durable, without
 * writing anything: it joins the filling batch when that holds records,
 * else the newest batch in flight. Returns 0 (the callback will run), or 1
 * when nothing is pending: all is durable already and the callback will
 * NOT run. A driver uses it for a write that persists nothing new.
 */
int wal_barrier(wal *w, wal_request *request);

/* Submits the batch (write + one fdatasync). 0 when there was nothing. */
int wal_flush(wal *w);
/* Reaps completions and runs callbacks in order. Returns the number of
 * batches completed, or a negative errno once the WAL has failed. */
int wal_poll(wal *w, bool wait);
/* Batches submitted and not yet durable. */
uint32_t wal_in_flight(const wal *w);
/* Batches completed (durable or failed) since open: grows by one per
 * completion, so a caller can tell whether any completed since it looked. */
uint64_t wal_completed_batches(const wal *w);
/* Bytes of records in the filling batch (what wal_flush would write). */
uint32_t wal_pending_bytes(const wal *w);
/* A file descriptor that turns readable when wal_poll() may have work (see
 * wal_io_ops.notify_fd), or -ENOTSUP when the io has none. Owned by the WAL. */
int wal_notify_fd(wal *w);

/* ---- reads ---- */

typedef struct wal_group_state {
  uint64_t first_index; /* first live entry (snapshot index + 1) */
  uint64_t last_index;  /* first_index - 1 when empty */
  wal_hard_state hard_state;
  uint64_t snapshot_index;
  uint64_t snapshot_term;
  bool has_snapshot; /* a marker exists (index 0 is a valid marker: a bootstrap) */
} wal_group_state;

/* -ENOENT for an unknown group. */
int wal_group(const wal *w, uint64_t group, wal_group_state *out);
/* Term of an entry (or of the snapshot index); -ENOENT outside the log. */
int wal_term(const wal *w, uint64_t group, uint64_t index, uint64_t *term);
/* Calls back each (first index, term) run of the group's live log. */
int wal_term_runs(const wal *w, uint64_t group,
                  void (*callback)(void *context, uint64_t first_index, uint64_t term),
                  void *context);
/* The snapshot marker's opaque bytes, copied into buffer. */
int wal_snapshot_data(wal *w, uint64_t group, void *buffer, uint32_t capacity, uint32_t *length);
/*
 * Reads entries [lo, hi) of a group, stopping at `capacity` entries or once
 * max_bytes of payload would be passed (at least one entry). Payloads are
 * copied into `buffer`; out[i].data points into it. -ERANGE when the buffer
 * cannot hold the first entry, -ENOENT below the first or above the last.
 */
int wal_read(wal *w, uint64_t group, uint64_t lo, uint64_t hi, uint64_t max_bytes, wal_entry *out,
             uint32_t capacity, uint32_t *count, uint8_t *buffer, size_t buffer_bytes);
/* Calls back every group the WAL holds. */
int wal_groups(const wal *w, void (*callback)(void *context, uint64_t group), void *context);

typedef struct wal_stats {
  uint64_t batches;
  uint64_t records;
  uint64_t bytes_written;
  uint64_t syncs;
  uint32_t segments;
  uint32_t spares;
  uint64_t segments_recycled; /* new segments made from spares */
  uint64_t groups_rewritten;  /* REWRITE records written by garbage collection */
  uint64_t bytes_rewritten;
  uint64_t records_read_from_memory; /* wal_read served by a batch still in memory */
  uint64_t records_read_from_disk;
} wal_stats;

void wal_get_stats(const wal *w, wal_stats *out);

#endif
