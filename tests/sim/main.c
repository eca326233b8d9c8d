/*
 * main.c - flotilla-sim, the command line of the simulator.
 *
 *   flotilla-sim [--nodes N] [--seed S | --seeds COUNT [--first-seed S]]
 *                [--steps N] [--profile NAME] [--trace] [--soak SECONDS]
 *                [--self-test]
 *
 * A failure prints the seed, its settings and the one command that replays
 * it with a trace. The wall clock is read here only, to report seeds per
 * second and to end a soak; the simulation itself never sees it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/sim/self_test.h"
#include "tests/sim/sim.h"

typedef struct options {
  uint32_t nodes; /* 0: 3 (or 3/5/7 in a soak) */
  uint64_t first_seed;
  uint64_t seed_count;
  uint32_t steps;
  const char *profile;
  bool trace;
  double soak_seconds;
  bool self_test;
  bool keep_going;
  const char *program;
} options;

typedef struct totals {
  uint64_t seeds;
  uint64_t failures;
  sim_stats stats;
} totals;

static void usage(FILE *out, const char *program) {
  fprintf(out,
          "usage: %s [--nodes N] [--seed S | --seeds COUNT [--first-seed S]] [--steps N]\n"
          "          [--profile NAME] [--trace] [--soak SECONDS] [--keep-going] [--self-test]\n"
          "  --nodes N         initial cluster size, 1..%d (default 3; a soak rotates 3/5/7)\n"
          "  --seed S          run exactly seed S\n"
          "  --seeds COUNT     run COUNT seeds from --first-seed (default 1)\n"
          "  --steps N         chaos ticks per seed (default %d), then a calm phase\n"
          "  --profile NAME    one of: %s\n"
          "  --trace           print every delivery, drop, crash, role change and commit\n"
          "  --soak SECONDS    run seeds until the time is up, then print totals\n"
          "  --keep-going      report every failing seed instead of stopping at the first\n"
          "  --self-test       prove the checker fails on injected violations\n",
          program, SIM_MAX_INITIAL_NODES, SIM_DEFAULT_STEPS, sim_profile_names());
}

static bool parse_number(const char *text, uint64_t *out) {
  char *end = NULL;
  errno = 0;
  unsigned long long value = strtoull(text, &end, 0);
  if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
    return false;
  }
  *out = value;
  return true;
}

/* Parses one "--flag value" pair; returns false on a bad value. */
static bool parse_valued(options *o, const char *flag, const char *value) {
  uint64_t number = 0;
  if (strcmp(flag, "--profile") == 0) {
    o->profile = value;
    return sim_profile_exists(value);
  }
  if (!parse_number(value, &number)) {
    return false;
  }
  if (strcmp(flag, "--nodes") == 0) {
    o->nodes = (uint32_t)number;
    return number >= 1 && number <= SIM_MAX_INITIAL_NODES;
  } else if (strcmp(flag, "--seed") == 0) {
    o->first_seed = number;
    o->seed_count = 1;
  } else if (strcmp(flag, "--seeds") == 0) {
    o->seed_count = number;
  } else if (strcmp(flag, "--first-seed") == 0) {
    o->first_seed = number;
  } else if (strcmp(flag, "--steps") == 0) {
    o->steps = (uint32_t)number;
    return number <= 10000000;
  } else if (strcmp(flag, "--soak") == 0) {
    o->soak_seconds = (double)number;
  } else {
    return false;
  }
  return true;
}

static int parse(int argc, char **argv, options *o) {
  *o = (options){.first_seed = 1,
                 .seed_count = 1,
                 .steps = SIM_DEFAULT_STEPS,
                 .profile = "mixed",
                 .program = argv[0]};
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout, argv[0]);
      return 1;
    } else if (strcmp(argv[i], "--trace") == 0) {
      o->trace = true;
    } else if (strcmp(argv[i], "--self-test") == 0) {
      o->self_test = true;
    } else if (strcmp(argv[i], "--keep-going") == 0) {
      o->keep_going = true;
    } else if (i + 1 < argc && parse_valued(o, argv[i], argv[i + 1])) {
      i++;
    } else {
      fprintf(stderr, "flotilla-sim: bad argument '%s'%s\n", argv[i],
              i + 1 < argc ? "" : " (missing value?)");
      usage(stderr, argv[0]);
      return -1;
    }
  }
  return 0;
}

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void add_stats(sim_stats *total, const sim_stats *one) {
  uint64_t *t = (uint64_t *)total;
  const uint64_t *o = (const uint64_t *)one;
  for (size_t i = 0; i < sizeof(*total) / sizeof(uint64_t); i++) {
    t[i] += o[i];
  }
}

static void report_failure(const options *o, const sim_config *config, const sim_result *result) {
  printf("flotilla-sim: VIOLATION with %u nodes, seed %" PRIu64 ", profile %s, steps %u\n",
         config->node_count, config->seed, config->profile, config->chaos_ticks);
  printf("  what:     %s\n", result->violation);
  printf("  settings: %s\n", result->settings);
  printf("  replay:   %s --nodes %u --seed %" PRIu64 " --profile %s --steps %u --trace\n",
         o->program, config->node_count, config->seed, config->profile, config->chaos_ticks);
}

/* Runs one seed; returns 0 (pass), 1 (violation) or -1 (bad settings). */
static int run_seed(const options *o, uint32_t nodes, uint64_t seed, totals *sum) {
  sim_config config = {.seed = seed,
                       .node_count = nodes,
                       .chaos_ticks = o->steps,
                       .profile = o->profile,
                       .trace = o->trace ? stdout : NULL};
  sim_result result;
  int status = sim_run(&config, &result);
  if (status < 0) {
    fprintf(stderr, "flotilla-sim: bad configuration (profile %s, %u nodes)\n", o->profile, nodes);
    return -1;
  }
  sum->seeds++;
  add_stats(&sum->stats, &result.stats);
  if (status != 0) {
    sum->failures++;
    report_failure(o, &config, &result);
  }
  return status;
}

static void print_summary(const totals *sum, double seconds, const char *what) {
  const sim_stats *t = &sum->stats;
  char verdict[48] = "PASS";
  if (sum->failures > 0) {
    snprintf(verdict, sizeof(verdict), "FAIL (%" PRIu64 " failing)", sum->failures);
  }
  printf("flotilla-sim: %s %" PRIu64 " seeds (%s) in %.2f s, %.1f seeds/s; ticks %" PRIu64
         ", delivered %" PRIu64 ", dropped %" PRIu64 ", duplicated %" PRIu64 ", crashes %" PRIu64
         ", partitions %" PRIu64 ", leaders %" PRIu64 ", committed %" PRIu64
         ", acknowledged %" PRIu64 ", reads %" PRIu64 ", snapshots %" PRIu64 " taken/%" PRIu64
         " sent, configurations %" PRIu64 ", transfers %" PRIu64 "\n",
         verdict, sum->seeds, what, seconds, seconds > 0 ? (double)sum->seeds / seconds : 0.0,
         t->ticks, t->delivered, t->dropped, t->duplicated, t->crashes, t->partitions, t->leaders,
         t->committed, t->acknowledged, t->reads, t->snapshots_taken, t->snapshots_sent,
         t->conf_changes, t->transfers);
}

static int run_seeds(const options *o) {
  totals sum = {0};
  uint32_t nodes = o->nodes == 0 ? 3 : o->nodes;
  double start = now_seconds();
  int status = 0;
  for (uint64_t i = 0; i < o->seed_count && (status == 0 || o->keep_going); i++) {
    if (run_seed(o, nodes, o->first_seed + i, &sum) != 0) {
      status = 1;
    }
  }
  char what[128];
  snprintf(what, sizeof(what), "%u nodes, profile %s, seeds %" PRIu64 "..%" PRIu64, nodes,
           o->profile, o->first_seed, o->first_seed + o->seed_count - 1);
  print_summary(&sum, now_seconds() - start, what);
  return status == 0 ? 0 : 1;
}

/* Rotates 3/5/7 nodes (unless --nodes) over consecutive seeds until the
 * deadline; checks the clock between seeds only. */
static int run_soak(const options *o) {
  static const uint32_t sizes[] = {3, 5, 7};
  totals sum = {0};
  double start = now_seconds();
  int status = 0;
  uint64_t seed = o->first_seed;
  for (uint64_t i = 0; (status == 0 || o->keep_going) && now_seconds() - start < o->soak_seconds;
       i++, seed++) {
    uint32_t nodes = o->nodes != 0 ? o->nodes : sizes[i % 3];
    if (run_seed(o, nodes, seed, &sum) != 0) {
      status = 1;
    }
  }
  char what[128];
  snprintf(what, sizeof(what), "soak, %s nodes, profile %s, seeds %" PRIu64 "..%" PRIu64,
           o->nodes != 0 ? "fixed" : "3/5/7", o->profile, o->first_seed, seed - 1);
  print_summary(&sum, now_seconds() - start, what);
  return status == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  options o;
  int parsed = parse(argc, argv, &o);
  if (parsed != 0) {
    return parsed > 0 ? 0 : 2;
  }
  setvbuf(stdout, NULL, _IOFBF, 1 << 16);
  if (o.self_test) {
    return sim_self_test(stdout) == 0 ? 0 : 1;
  }
  if (o.soak_seconds > 0) {
    return run_soak(&o);
  }
  return run_seeds(&o);
}
