/*
 * wal_verify.c - wal-crash-verify DIR ACKLOG: after wal-crash-writer was
 * killed, checks that the WAL on DIR holds everything it acknowledged.
 *
 * ACKLOG is the writers' stdout, of every run on DIR: lines "ack GROUP
 * LAST_INDEX". Reopening the WAL (which truncates a torn tail) must give,
 * for every group, a log that starts right after its snapshot marker (at 1
 * without one), reaches at least the highest index ever acknowledged, and
 * holds at every index exactly crash_payload(group, index) with the
 * writer's term: nothing acknowledged is lost (only compacted below a
 * snapshot) and nothing recovered differs from what was written. A last line
 * cut short (the kill landing inside a write to the log) is ignored: it
 * weakens the check, never fails it.
 *
 * Prints one summary line; exits 0 when all holds, 1 otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/wal/crash_common.h"

#define READ_CHUNK 256

typedef struct acknowledged {
  uint64_t highest[CRASH_GROUPS + 1];
  uint64_t lines;
} acknowledged;

static int parse_line(const char *line, acknowledged *acks) {
  uint64_t group = 0;
  uint64_t index = 0;
  if (sscanf(line, "ack %" SCNu64 " %" SCNu64, &group, &index) != 2 || group == 0 ||
      group > CRASH_GROUPS) {
    fprintf(stderr, "wal-crash-verify: malformed acknowledgement: %s", line);
    return -EINVAL;
  }
  if (index > acks->highest[group]) {
    acks->highest[group] = index;
  }
  acks->lines++;
  return 0;
}

static int read_acks(const char *path, acknowledged *acks) {
  FILE *file = fopen(path, "r");
  if (file == NULL) {
    fprintf(stderr, "wal-crash-verify: cannot open %s\n", path);
    return -errno;
  }
  char line[128];
  int rc = 0;
  while (rc == 0 && fgets(line, sizeof(line), file) != NULL) {
    if (strchr(line, '\n') == NULL) {
      break; /* cut short by the kill: the last line, incomplete */
    }
    rc = parse_line(line, acks);
  }
  fclose(file);
  return rc;
}

static int check_entry(uint64_t group, uint64_t index, const wal_entry *e) {
  uint8_t expected[CRASH_MAX_PAYLOAD];
  uint32_t length = crash_payload(group, index, expected);
  if (e->index != index || e->term != CRASH_TERM || e->length != length ||
      memcmp(e->data, expected, length) != 0) {
    fprintf(stderr,
            "wal-crash-verify: group %" PRIu64 " index %" PRIu64 ": recovered entry (index %" PRIu64
            ", term %" PRIu64 ", %u bytes) differs from "
            "what was written\n",
            group, index, e->index, e->term, e->length);
    return -EBADMSG;
  }
  return 0;
}

/* Reads the group's whole log back and compares every entry. */
static int check_group(wal *w, uint64_t group, uint64_t highest_acknowledged, uint64_t *entries) {
  wal_group_state state = {.first_index = 1, .last_index = 0};
  int rc = wal_group(w, group, &state);
  if (rc != 0 && rc != -ENOENT) {
    return rc;
  }
  if (state.first_index != state.snapshot_index + 1 || state.last_index < highest_acknowledged) {
    fprintf(stderr,
            "wal-crash-verify: group %" PRIu64 ": recovered log %" PRIu64 "..%" PRIu64
            " but index %" PRIu64 " was acknowledged\n",
            group, state.first_index, state.last_index, highest_acknowledged);
    return -ENODATA;
  }
  static wal_entry out[READ_CHUNK];
  static uint8_t buffer[READ_CHUNK * CRASH_MAX_PAYLOAD];
  for (uint64_t lo = state.first_index; lo <= state.last_index;) {
    uint32_t count = 0;
    rc = wal_read(w, group, lo, state.last_index + 1, sizeof(buffer), out, READ_CHUNK, &count,
                  buffer, sizeof(buffer));
    if (rc != 0 || count == 0) {
      fprintf(stderr, "wal-crash-verify: group %" PRIu64 ": reading at %" PRIu64 " failed: %d\n",
              group, lo, rc);
      return rc != 0 ? rc : -EIO;
    }
    for (uint32_t i = 0; i < count && rc == 0; i++) {
      rc = check_entry(group, lo + i, &out[i]);
    }
    if (rc != 0) {
      return rc;
    }
    lo += count;
  }
  *entries += state.last_index - state.first_index + 1;
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: wal-crash-verify DIR ACKLOG\n");
    return 2;
  }
  acknowledged acks = {0};
  if (read_acks(argv[2], &acks) != 0) {
    return 1;
  }
  wal_options options = crash_options(argv[1]);
  wal_recovery_report report;
  wal *w = NULL;
  int rc = wal_open(&options, &w, &report);
  if (rc != 0) {
    fprintf(stderr, "wal-crash-verify: wal_open: %d %s\n", rc, report.error);
    return 1;
  }
  uint64_t entries = 0;
  uint64_t acknowledged_entries = 0;
  for (uint64_t group = 1; group <= CRASH_GROUPS && rc == 0; group++) {
    rc = check_group(w, group, acks.highest[group], &entries);
    acknowledged_entries += acks.highest[group];
  }
  wal_stats stats;
  wal_get_stats(w, &stats);
  wal_close(w);
  if (rc != 0) {
    fprintf(stderr, "wal-crash-verify: FAILED (%d)\n", rc);
    return 1;
  }
  printf("wal-crash-verify: ok: %" PRIu64 " acknowledgements, %" PRIu64
         " entries acknowledged, %" PRIu64
         " live recovered, %u segments, %u spares, torn tail %" PRIu64 " bytes\n",
         acks.lines, acknowledged_entries, entries, report.segments, stats.spares,
         report.torn_tail_bytes);
  return 0;
}
