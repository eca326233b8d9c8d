/*
 * raft_sim_bench.c - `make demo` until the engine exists: many in-memory
 * Raft groups of three replicas driven in a closed loop on one thread, then
 * the idle-group memory measurement, printed as one table with each figure's
 * ratio to its target.
 *
 *   raft-sim-bench [--seconds N] [--groups N] [--batch N] [--idle-groups N] [--json]
 *
 * What it measures is the consensus core alone (lean_cluster.h): no disk,
 * no network. Ratios are figure / target, or target / figure where lower is
 * better, so a ratio >= 1.00 meets the target.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/idle_groups.h"
#include "bench/lean_cluster.h"

#define TARGET_ENTRIES_PER_SECOND 10e6
#define TARGET_NS_PER_ENTRY (1e9 / TARGET_ENTRIES_PER_SECOND)

typedef struct settings {
  double seconds;
  uint32_t groups;
  uint32_t batch;
  uint64_t idle_groups;
  bool json;
} settings;

typedef struct figures {
  uint64_t committed;
  uint64_t proposed;
  uint64_t messages;
  double wall_seconds;
  double cpu_seconds;
  idle_groups_result idle;
} figures;

static double now_seconds(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void usage(FILE *out) {
  fprintf(out,
          "usage: raft-sim-bench [--seconds N] [--groups N] [--batch N] "
          "[--idle-groups N] [--json]\n"
          "  --seconds N      length of the closed loop (default 2)\n"
          "  --groups N       Raft groups of 3 replicas (default 64)\n"
          "  --batch N        entries of 16 bytes per proposal, 1..%d (default 256)\n"
          "  --idle-groups N  groups for the idle-memory figure (default 100000)\n"
          "  --json           print one JSON object instead of the table\n",
          LEAN_MAX_BATCH);
}

static bool parse_number(const char *text, double low, double high, double *out) {
  char *end = NULL;
  errno = 0;
  double value = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || value < low || value > high) {
    return false;
  }
  *out = value;
  return true;
}

/* Returns 0 to run, 1 to exit successfully (--help), -1 on a bad argument. */
static int parse_arguments(int argc, char **argv, settings *s) {
  *s = (settings){.seconds = 2, .groups = 64, .batch = 256, .idle_groups = 100000};
  for (int i = 1; i < argc; i++) {
    const char *name = argv[i];
    double value = 0;
    if (strcmp(name, "--json") == 0) {
      s->json = true;
      continue;
    }
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
      usage(stdout);
      return 1;
    }
    bool known = strcmp(name, "--seconds") == 0 || strcmp(name, "--groups") == 0 ||
                 strcmp(name, "--batch") == 0 || strcmp(name, "--idle-groups") == 0;
    if (!known || i + 1 >= argc) {
      fprintf(stderr, "raft-sim-bench: unknown or incomplete argument '%s'\n", name);
      return -1;
    }
    const char *text = argv[++i];
    bool ok = (strcmp(name, "--seconds") == 0 && parse_number(text, 0.01, 3600, &s->seconds)) ||
              (strcmp(name, "--groups") == 0 && parse_number(text, 1, 100000, &value)) ||
              (strcmp(name, "--batch") == 0 && parse_number(text, 1, LEAN_MAX_BATCH, &value)) ||
              (strcmp(name, "--idle-groups") == 0 && parse_number(text, 1, 10000000, &value));
    if (!ok) {
      fprintf(stderr, "raft-sim-bench: bad value '%s' for %s\n", text, name);
      return -1;
    }
    if (strcmp(name, "--groups") == 0) {
      s->groups = (uint32_t)value;
    } else if (strcmp(name, "--batch") == 0) {
      s->batch = (uint32_t)value;
    } else if (strcmp(name, "--idle-groups") == 0) {
      s->idle_groups = (uint64_t)value;
    }
  }
  return 0;
}

static lean_group **create_groups(uint32_t count, const fl_raft_options *options) {
  lean_group **groups = calloc(count, sizeof(*groups));
  for (uint32_t i = 0; groups != NULL && i < count; i++) {
    groups[i] = lean_group_create(LEAN_THREE_REPLICAS, i + 1, options);
    if (groups[i] == NULL) {
      fprintf(stderr, "raft-sim-bench: group %u elected no leader\n", i + 1);
      for (uint32_t j = 0; j < i; j++) {
        lean_group_destroy(groups[j]);
      }
      free(groups);
      return NULL;
    }
  }
  return groups;
}

/* Round-robin over the groups, one proposal each, until the time is up. */
static int run_closed_loop(lean_group **groups, const settings *s, figures *f) {
  double wall_start = now_seconds(CLOCK_MONOTONIC);
  double cpu_start = now_seconds(CLOCK_PROCESS_CPUTIME_ID);
  double wall_end = wall_start;
  do {
    for (uint32_t g = 0; g < s->groups; g++) {
      if (lean_group_propose(groups[g], s->batch) < 0 || lean_group_error(groups[g]) != NULL) {
        const char *error = lean_group_error(groups[g]);
        fprintf(stderr, "raft-sim-bench: group %u failed: %s\n", g + 1,
                error != NULL ? error : "the leader refused a proposal");
        return -1;
      }
    }
    wall_end = now_seconds(CLOCK_MONOTONIC);
  } while (wall_end - wall_start < s->seconds);
  f->cpu_seconds = now_seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu_start;
  f->wall_seconds = wall_end - wall_start;
  for (uint32_t g = 0; g < s->groups; g++) {
    const lean_stats *stats = lean_group_stats(groups[g]);
    f->committed += stats->committed;
    f->proposed += stats->proposed;
    f->messages += stats->messages;
  }
  if (f->committed != f->proposed) {
    fprintf(stderr, "raft-sim-bench: %llu entries proposed but %llu committed\n",
            (unsigned long long)f->proposed, (unsigned long long)f->committed);
    return -1;
  }
  return 0;
}

static int measure(const settings *s, figures *f) {
  memset(f, 0, sizeof(*f));
  fl_raft_options options;
  lean_options_default(&options);
  lean_group **groups = create_groups(s->groups, &options);
  if (groups == NULL) {
    return -1;
  }
  int rc = run_closed_loop(groups, s, f);
  for (uint32_t g = 0; g < s->groups; g++) {
    lean_group_destroy(groups[g]);
  }
  free(groups);
  if (rc == 0 && idle_groups_measure(s->idle_groups, &f->idle) != 0) {
    fprintf(stderr, "raft-sim-bench: a group did not become an idle follower\n");
    rc = -1;
  }
  return rc;
}

static void print_row(const char *name, double value, const char *format, double target,
                      bool lower_is_better) {
  char text[64];
  snprintf(text, sizeof(text), format, value);
  if (target <= 0) {
    printf("  %-34s %16s\n", name, text);
    return;
  }
  char target_text[64];
  snprintf(target_text, sizeof(target_text), format, target);
  double ratio = lower_is_better ? target / value : value / target;
  printf("  %-34s %16s %14s %8.2fx%s\n", name, text, target_text, ratio,
         lower_is_better ? "  (lower is better)" : "");
}

static void print_table(const settings *s, const figures *f) {
  double entries_per_second = (double)f->committed / f->wall_seconds;
  double cpu_ns = f->cpu_seconds * 1e9 / (double)f->committed;
  printf("raft-sim-bench: %u groups x %d replicas, in memory, one thread, "
         "batch %u x %d B, %.1f s\n\n",
         s->groups, LEAN_REPLICAS, s->batch, LEAN_PAYLOAD_BYTES, f->wall_seconds);
  printf("  %-34s %16s %14s %9s\n", "figure", "value", "target", "ratio");
  print_row("groups", s->groups, "%.0f", 0, false);
  print_row("replicas per group", LEAN_REPLICAS, "%.0f", 0, false);
  print_row("entries committed", (double)f->committed, "%.0f", 0, false);
  print_row("committed entries/s", entries_per_second, "%.0f", TARGET_ENTRIES_PER_SECOND, false);
  print_row("core CPU per entry (ns)", cpu_ns, "%.1f", TARGET_NS_PER_ENTRY, true);
  print_row("messages per entry", (double)f->messages / (double)f->committed, "%.4f", 0, false);
  print_row("bytes per idle group (heap)", f->idle.heap_bytes_per_group, "%.0f",
            IDLE_GROUP_TARGET_BYTES, true);
  print_row("bytes per idle group (core says)", f->idle.core_bytes_per_group, "%.0f",
            IDLE_GROUP_TARGET_BYTES, true);
  print_row("idle groups per GiB", f->idle.groups_per_gib, "%.0f",
            (double)(1u << 30) / IDLE_GROUP_TARGET_BYTES, false);
  printf("\nratio = value / target (target / value where lower is better); >= 1.00 meets it.\n"
         "CPU covers leader and both followers of every group. Idle groups: %llu followers\n"
         "after fl_raft_shrink(), heap = malloc in-use growth (mallinfo2), excluding the\n"
         "driver's %llu-byte slot per group (storage callbacks, log index window).\n",
         (unsigned long long)f->idle.groups, (unsigned long long)f->idle.driver_slot_bytes);
}

static void print_json(const settings *s, const figures *f) {
  double entries_per_second = (double)f->committed / f->wall_seconds;
  printf("{\"groups\": %u, \"replicas\": %d, \"batch\": %u, \"payload_bytes\": %d, "
         "\"seconds\": %.3f, \"entries_committed\": %llu, \"entries_per_second\": %.0f, "
         "\"entries_per_second_ratio\": %.3f, \"cpu_ns_per_entry\": %.2f, "
         "\"messages_per_entry\": %.4f, \"idle_groups\": %llu, "
         "\"idle_heap_bytes_per_group\": %.1f, \"idle_core_bytes_per_group\": %.1f, "
         "\"idle_bytes_ratio\": %.3f, \"idle_groups_per_gib\": %.0f}\n",
         s->groups, LEAN_REPLICAS, s->batch, LEAN_PAYLOAD_BYTES, f->wall_seconds,
         (unsigned long long)f->committed, entries_per_second,
         entries_per_second / TARGET_ENTRIES_PER_SECOND,
         f->cpu_seconds * 1e9 / (double)f->committed, (double)f->messages / (double)f->committed,
         (unsigned long long)f->idle.groups, f->idle.heap_bytes_per_group,
         f->idle.core_bytes_per_group, IDLE_GROUP_TARGET_BYTES / f->idle.heap_bytes_per_group,
         f->idle.groups_per_gib);
}

int main(int argc, char **argv) {
  settings s;
  int parsed = parse_arguments(argc, argv, &s);
  if (parsed != 0) {
    if (parsed < 0) {
      usage(stderr);
    }
    return parsed < 0 ? 2 : 0;
  }
  figures f;
  if (measure(&s, &f) != 0) {
    return 1;
  }
  if (s.json) {
    print_json(&s, &f);
  } else {
    print_table(&s, &f);
  }
  return 0;
}
