/*
 * sim.c - one simulation run: set-up from the seed, the main loop, the calm
 * phase that checks liveness, and the trace.
 *
 * Phases of a run:
 *
 *   CHAOS (config.chaos_ticks ticks): faults, membership changes, leader
 *     transfers, snapshots, proposals and reads at seeded rates;
 *   CALM (at most SIM_LIVENESS_TICKS ticks): partitions heal, crashed
 *     nodes restart, the network stops dropping, duplicating and delaying;
 *     a marker proposal must then commit and be applied on every member of
 *     the configuration, or the run fails for liveness.
 *
 * Each tick: run the events due in each of its moments, then (chaos) the
 * fault and client actions, then tick every live node in a seeded order.
 * Safety is checked after every input of every node (observe.c).
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "tests/sim/sim_internal.h"

typedef struct sim_profile {
  const char *name;
  int pre_vote; /* -1: drawn per seed */
  int check_quorum;
  int lease_read;
} sim_profile;

static const sim_profile profiles[] = {
    {"mixed", -1, -1, -1},
    {"plain", 0, 0, 0},
    {"prevote", 1, 0, 0},
    {"checkquorum", 0, 1, 0},
    {"prevote-checkquorum", 1, 1, 0},
    {"lease", 1, 1, 1},
};

static const sim_profile *find_profile(const char *name) {
  for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++) {
    if (strcmp(profiles[i].name, name == NULL ? "mixed" : name) == 0) {
      return &profiles[i];
    }
  }
  return NULL;
}

bool sim_profile_exists(const char *name) {
  return find_profile(name) != NULL;
}

const char *sim_profile_names(void) {
  return "mixed plain prevote checkquorum prevote-checkquorum lease";
}

uint64_t sim_tick(const sim *s) {
  return s->moment / SIM_MOMENTS_PER_TICK;
}

void sim_trace(sim *s, const char *format, ...) {
  if (s->config.trace == NULL) {
    return;
  }
  fprintf(s->config.trace, "[%6llu.%u] ", (unsigned long long)sim_tick(s),
          (unsigned)(s->moment % SIM_MOMENTS_PER_TICK));
  va_list arguments;
  va_start(arguments, format);
  vfprintf(s->config.trace, format, arguments);
  va_end(arguments);
  fputc('\n', s->config.trace);
}

void sim_violation(sim *s, const char *format, ...) {
  char text[1024];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(text, sizeof(text), format, arguments);
  va_end(arguments);
  checker_fail(s->checker, "%s", text);
  s->failed = true;
}

static bool draw_flag(sim *s, int fixed) {
  return fixed >= 0 ? fixed != 0 : trandom_chance(&s->random, 500000);
}

/* Raft options from the profile and the seed: small windows and batches so
 * flow control and byte limits are exercised. */
static void draw_options(sim *s, const sim_profile *profile) {
  fl_raft_options *o = &s->options;
  fl_raft_options_default(o);
  o->election_ticks = 10;
  o->heartbeat_ticks = (uint32_t)trandom_range(&s->random, 1, 3);
  o->pre_vote = draw_flag(s, profile->pre_vote);
  o->check_quorum = draw_flag(s, profile->check_quorum);
  o->lease_read = o->check_quorum && draw_flag(s, profile->lease_read);
  o->max_inflight_messages = (uint32_t)trandom_range(&s->random, 1, 64);
  o->max_inflight_bytes = trandom_range(&s->random, 512, 1 << 16);
  o->max_entries_per_message = (uint32_t)trandom_range(&s->random, 1, 32);
  /* A window too small for the load would grow the backlog without end and
   * fail the calm phase for throughput, not for liveness: keep at least
   * SIM_MIN_ENTRIES_PER_ROUND_TRIP entries per round trip, and bound the
   * backlog with the uncommitted-bytes limit. */
  if (o->max_inflight_messages * o->max_entries_per_message < SIM_MIN_ENTRIES_PER_ROUND_TRIP) {
    o->max_entries_per_message =
        (SIM_MIN_ENTRIES_PER_ROUND_TRIP + o->max_inflight_messages - 1) / o->max_inflight_messages;
  }
  o->max_bytes_per_message = trandom_range(&s->random, 128, 1 << 14);
  o->max_uncommitted_bytes = trandom_range(&s->random, 4096, 1 << 16);
  o->max_apply_bytes = trandom_range(&s->random, 128, 1 << 14);
  snprintf(s->result->settings, sizeof(s->result->settings),
           "heartbeat=%u pre_vote=%d check_quorum=%d lease_read=%d inflight=%u "
           "entries/msg=%u drop=%.1f%% dup=%.1f%% crash=%.2f%%/tick partition=%.2f%%/tick",
           o->heartbeat_ticks, o->pre_vote, o->check_quorum, o->lease_read,
           o->max_inflight_messages, o->max_entries_per_message, s->faults.drop / 1e4,
           s->faults.duplicate / 1e4, s->faults.crash / 1e4, s->faults.partition / 1e4);
}

static int setup(sim *s, const sim_config *config, sim_result *result) {
  const sim_profile *profile = find_profile(config->profile);
  if (profile == NULL || config->node_count == 0 || config->node_count > SIM_MAX_INITIAL_NODES) {
    return -1;
  }
  s->config = *config;
  s->result = result;
  trandom_seed(&s->random, config->seed);
  sim_faults_draw(s);
  draw_options(s, profile);
  if (fl_raft_options_validate(&s->options) != 0) {
    return -1;
  }
  s->checker = checker_create();
  sim_events_init(s);
  sim_observer_init(s);
  s->chaos = true;
  return 0;
}

static int create_cluster(sim *s) {
  tnode *nodes[SIM_MAX_INITIAL_NODES];
  if (tnode_create_cluster(nodes, s->config.node_count, &s->options, s->config.seed,
                           &s->observer) != 0) {
    return -1;
  }
  s->slot_count = s->config.node_count;
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    s->slots[id].node = nodes[id - 1];
    s->slots[id].member = true;
  }
  s->conf = tnode_state(nodes[0])->conf;
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    sim_after_input(s, id, 0);
  }
  return 0;
}

static void teardown(sim *s) {
  sim_events_destroy(s);
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    tnode_destroy(s->slots[id].node);
  }
  checker_destroy(s->checker);
}

static void tick_nodes(sim *s) {
  uint32_t order[SIM_MAX_NODES];
  uint32_t count = s->slot_count;
  for (uint32_t i = 0; i < count; i++) {
    order[i] = i + 1;
  }
  for (uint32_t i = count; i > 1; i--) { /* Fisher-Yates */
    uint32_t j = (uint32_t)trandom_below(&s->random, i);
    uint32_t t = order[i - 1];
    order[i - 1] = order[j];
    order[j] = t;
  }
  for (uint32_t i = 0; i < count && !s->failed; i++) {
    if (sim_is_live(s, order[i])) {
      sim_after_input(s, order[i], tnode_tick(s->slots[order[i]].node));
    }
  }
}

static void run_tick(sim *s) {
  for (uint32_t m = 0; m < SIM_MOMENTS_PER_TICK && !s->failed; m++) {
    s->moment++;
    sim_run_due_events(s);
  }
  if (s->chaos && !s->failed) {
    sim_chaos_tick(s);
    if (!s->failed) {
      sim_client_tick(s);
    }
  }
  if (!s->failed) {
    tick_nodes(s);
  }
  s->result->stats.ticks++;
}

/* ---- the calm phase ---- */

static bool is_member(const fl_raft_conf *conf, uint64_t id) {
  for (uint32_t i = 0; i < conf->outgoing_count; i++) {
    if (conf->outgoing[i] == id) {
      return true;
    }
  }
  return fl_raft_conf_has_voter(conf, id) || fl_raft_conf_has_learner(conf, id);
}

static void start_calm(sim *s) {
  sim_trace(s, "calm: faults stop; heal, restart every crashed node");
  s->chaos = false;
  sim_heal(s);
  for (uint32_t id = 1; id <= s->slot_count && !s->failed; id++) {
    sim_slot *slot = &s->slots[id];
    if (slot->node != NULL && !slot->retired && !tnode_is_up(slot->node)) {
      sim_restart(s, id);
    }
  }
}

/* True once every member of the committed configuration applied the marker. */
static bool marker_everywhere(const sim *s) {
  if (s->marker_index == 0) {
    return false;
  }
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    const sim_slot *slot = &s->slots[id];
    if (slot->node == NULL || slot->retired || !is_member(&s->conf, id)) {
      continue;
    }
    if (!tnode_is_up(slot->node) || tnode_state(slot->node)->applied_index < s->marker_index) {
      return false;
    }
  }
  return true;
}

/* Proposes the marker once a leader is there, again if it got lost, and
 * finishes a joint configuration nobody will leave otherwise. */
static void drive_calm(sim *s, uint64_t calm_tick) {
  uint32_t leader = sim_find_leader(s);
  if (leader == 0) {
    return;
  }
  fl_raft_status status;
  fl_raft_get_status(tnode_raft(s->slots[leader].node), &status);
  if (fl_raft_conf_is_joint(&status.conf) && !status.conf.auto_leave && calm_tick % 5 == 0) {
    sim_leave_joint(s, leader);
  }
  uint64_t retry_ticks = 4 * s->options.election_ticks;
  if (s->marker_index == 0 && (s->marker_id == 0 || calm_tick >= s->marker_tick + retry_ticks) &&
      sim_is_live(s, leader)) {
    if (sim_propose_marker(s, leader)) {
      s->marker_tick = calm_tick;
    }
  }
}

static void describe_stall(sim *s) {
  char text[512];
  size_t used =
      (size_t)snprintf(text, sizeof(text), "liveness: after %u calm ticks ", SIM_LIVENESS_TICKS);
  uint32_t leader = sim_find_leader(s);
  if (leader == 0) {
    used += (size_t)snprintf(text + used, sizeof(text) - used, "there is no leader");
  } else if (s->marker_index == 0) {
    used += (size_t)snprintf(text + used, sizeof(text) - used,
                             "leader %u has not committed the marker proposal", leader);
  } else {
    used += (size_t)snprintf(
        text + used, sizeof(text) - used,
        "the marker at %llu is not applied on:", (unsigned long long)s->marker_index);
    for (uint32_t id = 1; id <= s->slot_count && used < sizeof(text) - 32; id++) {
      const sim_slot *slot = &s->slots[id];
      if (slot->node != NULL && !slot->retired && is_member(&s->conf, id) &&
          tnode_state(slot->node)->applied_index < s->marker_index) {
        used += (size_t)snprintf(text + used, sizeof(text) - used, " node %u (applied %llu)", id,
                                 (unsigned long long)tnode_state(slot->node)->applied_index);
      }
    }
  }
  sim_violation(s, "%s", text);
}

static void finish(sim *s) {
  uint64_t applied[SIM_MAX_NODES];
  uint32_t count = 0;
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    const sim_slot *slot = &s->slots[id];
    if (slot->node != NULL && !slot->retired && is_member(&s->conf, id)) {
      applied[count++] = tnode_state(slot->node)->applied_index;
    }
  }
  checker_finish(s->checker, applied, count);
}

static void run_phases(sim *s) {
  for (uint32_t tick = 0; tick < s->config.chaos_ticks && !s->failed; tick++) {
    run_tick(s);
  }
  if (s->failed) {
    return;
  }
  start_calm(s);
  for (uint64_t tick = 0; tick < SIM_LIVENESS_TICKS && !s->failed; tick++) {
    drive_calm(s, tick);
    run_tick(s);
    if (marker_everywhere(s)) {
      finish(s);
      return;
    }
  }
  if (!s->failed) {
    describe_stall(s);
  }
}

static void fill_result(sim *s) {
  sim_result *result = s->result;
  result->passed = !checker_failed(s->checker);
  snprintf(result->violation, sizeof(result->violation), "%s",
           result->passed ? "" : checker_violation(s->checker));
  result->stats.leaders = checker_leader_count(s->checker);
  result->stats.committed = checker_committed_index(s->checker);
  result->stats.acknowledged = checker_acknowledged_count(s->checker);
  result->stats.reads = checker_read_count(s->checker);
}

int sim_run(const sim_config *config, sim_result *result) {
  memset(result, 0, sizeof(*result));
  sim *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    return -1;
  }
  if (setup(s, config, result) != 0) {
    free(s);
    return -1;
  }
  sim_trace(s, "start: %u nodes, seed %llu, profile %s, %s", config->node_count,
            (unsigned long long)config->seed, config->profile ? config->profile : "mixed",
            result->settings);
  if (create_cluster(s) != 0) {
    sim_violation(s, "the initial cluster cannot be created");
  } else {
    run_phases(s);
  }
  fill_result(s);
  sim_trace(s, "end: %s%s", result->passed ? "pass" : "VIOLATION: ", result->violation);
  teardown(s);
  free(s);
  return result->passed ? 0 : 1;
}
