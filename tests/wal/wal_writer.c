/*
 * wal_writer.c - wal-crash-writer DIR [SECONDS]: appends to a real WAL until
 * killed, printing what is durable.
 *
 * Opens the WAL on DIR with the io_uring backend (recovering what an
 * earlier, killed run left), then loops: each batch appends 1-4 entries to
 * several of CRASH_GROUPS groups, continuing every group's log where the
 * recovered one ends, then flushes and polls. When a batch is reported
 * durable, its callbacks print "ack GROUP LAST_INDEX" for every group in it
 * and stdout is flushed, so a line on stdout means "acknowledged". The
 * payload of every entry is crash_payload(group, index).
 *
 * Space is collected as it goes: every COMPACT_EVERY batches, groups 1 ..
 * CRASH_GROUPS-1 save a snapshot marker keeping their last KEEP_ENTRIES
 * entries, and wal_collect_garbage runs. Group CRASH_GROUPS is lagging: it
 * writes its first LAGGING_ENTRIES entries and then nothing, never
 * compacting, so collection must rewrite its live log forward, and retired
 * segments come back as spares.
 *
 * The crash test kills it with SIGKILL; SECONDS (default 10) only bounds a
 * writer nobody killed, so that a broken test never fills the disk.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tests/wal/crash_common.h"

/* Batches whose requests may still be pending: the WAL has at most
 * pipeline_depth in flight plus one filling, so this never waits long. */
#define WRITER_SLOTS 8
#define COMPACT_EVERY 32
#define KEEP_ENTRIES 32
#define LAGGING_ENTRIES 24

typedef struct ack {
  wal_request request;
  uint64_t group;
  uint64_t last_index;
  uint32_t *pending; /* of the slot the request belongs to */
} ack;

typedef struct batch_slot {
  ack acks[CRASH_GROUPS];
  uint32_t pending;
} batch_slot;

typedef struct writer {
  wal *w;
  uint64_t next_index[CRASH_GROUPS + 1];
  batch_slot slots[WRITER_SLOTS];
  uint64_t random;
} writer;

static void fail(const char *what, int rc) {
  fprintf(stderr, "wal-crash-writer: %s: %d\n", what, rc);
  exit(1);
}

static uint64_t next_random(writer *wr) {
  wr->random = wr->random * 6364136223846793005ULL + 1442695040888963407ULL;
  return wr->random >> 33;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs only once the batch holding the request is durable. */
static void on_durable(void *context, int result) {
  ack *a = context;
  if (result != 0) {
    fail("a batch failed", result); /* fatal: the WAL is unusable */
  }
  printf("ack %" PRIu64 " %" PRIu64 "\n", a->group, a->last_index);
  (*a->pending)--;
}

/* Resumes every group where the recovered log ends. */
static void resume(writer *wr) {
  for (uint64_t group = 1; group <= CRASH_GROUPS; group++) {
    wal_group_state state;
    int rc = wal_group(wr->w, group, &state);
    if (rc != 0 && rc != -ENOENT) {
      fail("wal_group", rc);
    }
    wr->next_index[group] = rc == 0 ? state.last_index + 1 : 1;
  }
}

static int append_run(writer *wr, uint64_t group, uint32_t count, ack *a) {
  uint8_t data[4][CRASH_MAX_PAYLOAD];
  wal_entry entries[4];
  uint64_t first = wr->next_index[group];
  for (uint32_t i = 0; i < count; i++) {
    entries[i] = (wal_entry){.index = first + i, .term = CRASH_TERM};
    entries[i].length = crash_payload(group, first + i, data[i]);
    entries[i].data = data[i];
  }
  *a = (ack){.request = {.callback = on_durable, .context = a},
             .group = group,
             .last_index = first + count - 1};
  return wal_append(wr->w, group, entries, count, &a->request);
}

/* Waits until every request of the slot has been answered. */
static void wait_for_slot(writer *wr, batch_slot *slot) {
  while (slot->pending > 0) {
    int rc = wal_poll(wr->w, true);
    if (rc < 0) {
      fail("wal_poll", rc);
    }
    fflush(stdout);
  }
}

static void write_batch(writer *wr, batch_slot *slot) {
  wait_for_slot(wr, slot);
  for (uint64_t group = 1; group <= CRASH_GROUPS; group++) {
    if (next_random(wr) % 4 == 0) {
      continue; /* not every group is in every batch */
    }
    if (group == CRASH_GROUPS && wr->next_index[group] > LAGGING_ENTRIES) {
      continue; /* the lagging group wrote all it ever writes */
    }
    ack *a = &slot->acks[group - 1];
    uint32_t count = 1 + (uint32_t)(next_random(wr) % 4);
    int rc = append_run(wr, group, count, a);
    if (rc == -ENOBUFS) {
      /* The head segment is full: it rolls over only between batches. */
      rc = wal_flush(wr->w);
      rc = rc == 0 ? append_run(wr, group, count, a) : rc;
    }
    if (rc != 0) {
      fail("wal_append", rc);
    }
    a->pending = &slot->pending;
    slot->pending++;
    wr->next_index[group] += count;
  }
  int rc = wal_flush(wr->w);
  if (rc == 0) {
    rc = wal_poll(wr->w, false);
  }
  if (rc < 0) {
    fail("wal_flush or wal_poll", rc);
  }
  fflush(stdout);
}

static int save_snapshot(writer *wr, uint64_t group, uint64_t index) {
  int rc = wal_save_snapshot(wr->w, group, index, CRASH_TERM, "c", 1, NULL);
  if (rc == -ENOBUFS) {
    rc = wal_flush(wr->w);
    rc = rc == 0 ? wal_save_snapshot(wr->w, group, index, CRASH_TERM, "c", 1, NULL) : rc;
  }
  return rc;
}

/* Snapshots of every group but the lagging one, then a collection. */
static void collect_space(writer *wr) {
  for (uint64_t group = 1; group < CRASH_GROUPS; group++) {
    if (wr->next_index[group] <= KEEP_ENTRIES + 1) {
      continue;
    }
    int rc = save_snapshot(wr, group, wr->next_index[group] - 1 - KEEP_ENTRIES);
    if (rc != 0) {
      fail("wal_save_snapshot", rc);
    }
  }
  int rc = wal_collect_garbage(wr->w);
  if (rc < 0) {
    fail("wal_collect_garbage", rc);
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: wal-crash-writer DIR [SECONDS]\n");
    return 2;
  }
  double seconds = argc == 3 ? atof(argv[2]) : 10.0;
  static writer wr;
  wal_options options = crash_options(argv[1]);
  int rc = wal_open(&options, &wr.w, NULL);
  if (rc != 0) {
    fail("wal_open", rc);
  }
  resume(&wr);
  wr.random = (uint64_t)time(NULL) ^ (uint64_t)clock();
  double deadline = now_seconds() + seconds;
  for (uint64_t n = 0; now_seconds() < deadline; n++) {
    write_batch(&wr, &wr.slots[n % WRITER_SLOTS]);
    if (n % COMPACT_EVERY == COMPACT_EVERY - 1) {
      collect_space(&wr);
    }
  }
  rc = wal_close(wr.w);
  fflush(stdout);
  return rc == 0 ? 0 : 1;
}
