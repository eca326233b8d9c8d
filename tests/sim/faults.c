/*
 * faults.c - what goes wrong during the chaos phase, and the operator's
 * actions that run under load: crashes and restarts, partitions,
 * snapshots with compaction, membership changes and leader transfers.
 *
 * Every rate is drawn per seed (sim_faults_draw), so some seeds are calm
 * and some are brutal, and a failing seed keeps its exact mix on replay.
 */
#include <stdio.h>
#include <string.h>

#include "tests/sim/sim_internal.h"

/* Uniform in [0, maximum] parts per million. */
static uint32_t rate(sim *s, uint32_t maximum) {
  return (uint32_t)trandom_below(&s->random, (uint64_t)maximum + 1);
}

void sim_faults_draw(sim *s) {
  sim_faults *f = &s->faults;
  bool brutal = trandom_chance(&s->random, 250000);
  f->drop = rate(s, brutal ? 250000 : 80000);
  f->duplicate = rate(s, 60000);
  f->delay = rate(s, 200000);
  f->latency_moments = (uint32_t)trandom_range(&s->random, 1, 2 * SIM_MOMENTS_PER_TICK);
  f->delay_moments = (uint32_t)trandom_range(&s->random, 1, 12 * SIM_MOMENTS_PER_TICK);
  f->write_moments = (uint32_t)trandom_range(&s->random, 1, 2 * SIM_MOMENTS_PER_TICK);
  f->write_delay = rate(s, 150000);
  f->notify_delay = rate(s, 300000);
  f->slow_moments = (uint32_t)trandom_range(&s->random, 1, 8 * SIM_MOMENTS_PER_TICK);
  f->crash = rate(s, brutal ? 20000 : 6000);
  f->restart = (uint32_t)trandom_range(&s->random, 10000, 100000);
  f->max_crashed = (s->config.node_count - 1) / 2 + (uint32_t)trandom_below(&s->random, 2);
  f->partition = rate(s, brutal ? 20000 : 8000);
  f->heal = (uint32_t)trandom_range(&s->random, 10000, 60000);
  f->snapshot = rate(s, 15000);
  f->membership = rate(s, 15000);
  f->transfer = rate(s, 8000);
  f->propose = (uint32_t)trandom_range(&s->random, 100000, 900000);
  f->read = rate(s, 300000);
  f->unreachable = rate(s, 500000);
}

/* ---- crashes ---- */

static uint32_t count_crashed(const sim *s) {
  uint32_t crashed = 0;
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    const sim_slot *slot = &s->slots[id];
    crashed += slot->node != NULL && !slot->retired && !tnode_is_up(slot->node);
  }
  return crashed;
}

static void crash_one(sim *s) {
  if (count_crashed(s) >= s->faults.max_crashed) {
    return;
  }
  uint32_t id = (uint32_t)trandom_range(&s->random, 1, s->slot_count);
  if (!sim_is_live(s, id)) {
    return;
  }
  sim_slot *slot = &s->slots[id];
  sim_trace(s, "crash node %u (%zu writes not durable are lost)", id,
            tnode_pending_writes(slot->node));
  tnode_crash(slot->node);
  slot->role = FL_RAFT_FOLLOWER;
  s->result->stats.crashes++;
}

void sim_restart(sim *s, uint32_t id) {
  sim_slot *slot = &s->slots[id];
  const fl_raft_hard_state *hard_state = tnode_durable_hard_state(slot->node);
  checker_check_durable(s->checker, id, tnode_durable_log(slot->node), hard_state);
  uint64_t durable_commit = hard_state->commit;
  if (durable_commit < tnode_durable_log(slot->node)->snapshot.index) {
    durable_commit = tnode_durable_log(slot->node)->snapshot.index;
  }
  slot->commit = 0; /* a new run of the node */
  slot->role = FL_RAFT_FOLLOWER;
  slot->term = hard_state->term;
  slot->last_write_moment = s->moment;
  sim_trace(s, "restart node %u: durable term %llu commit %llu, log [%llu, %llu]", id,
            (unsigned long long)hard_state->term, (unsigned long long)hard_state->commit,
            (unsigned long long)tlog_first_index(tnode_durable_log(slot->node)),
            (unsigned long long)tlog_last_index(tnode_durable_log(slot->node)));
  int result = tnode_restart(slot->node);
  if (tnode_is_up(slot->node)) {
    fl_raft_status status;
    fl_raft_get_status(tnode_raft(slot->node), &status);
    if (status.commit < durable_commit) {
      sim_violation(s, "node %u restarts with commit %llu below its durable commit %llu", id,
                    (unsigned long long)status.commit, (unsigned long long)durable_commit);
    }
    checker_note_commit(s->checker, id, status.term, tnode_log(slot->node), status.commit);
    if (slot->commit < status.commit) {
      slot->commit = status.commit;
    }
  }
  sim_after_input(s, id, result);
}

static void restart_some(sim *s) {
  for (uint32_t id = 1; id <= s->slot_count && !s->failed; id++) {
    sim_slot *slot = &s->slots[id];
    if (slot->node != NULL && !slot->retired && !tnode_is_up(slot->node) &&
        trandom_chance(&s->random, s->faults.restart)) {
      sim_restart(s, id);
    }
  }
}

/* ---- partitions ---- */

static void block(sim *s, uint32_t from, uint32_t to) {
  if (from != to) {
    s->blocked[from][to] = true;
  }
}

static void partition(sim *s) {
  uint32_t n = s->slot_count;
  uint32_t victim = (uint32_t)trandom_range(&s->random, 1, n);
  uint32_t kind = (uint32_t)trandom_below(&s->random, 4);
  uint64_t side = trandom_next(&s->random); /* bit i: node i's side of a split */
  for (uint32_t a = 1; a <= n; a++) {
    for (uint32_t b = 1; b <= n; b++) {
      if ((kind == 0 && (a == victim || b == victim)) ||
          (kind == 1 && ((side >> a) & 1) != ((side >> b) & 1)) || (kind == 2 && a == victim) ||
          (kind == 3 && b == victim)) {
        block(s, a, b);
      }
    }
  }
  static const char *const kinds[] = {"isolate", "split", "mute (sends lost)",
                                      "deafen (receives lost)"};
  sim_trace(s, "partition: %s node %u (split mask %llx)", kinds[kind], victim,
            (unsigned long long)(side & 0xffff));
  s->partitioned = true;
  s->result->stats.partitions++;
}

/* ---- snapshots ---- */

static void take_snapshots(sim *s) {
  for (uint32_t id = 1; id <= s->slot_count && !s->failed; id++) {
    if (!sim_is_live(s, id) || !trandom_chance(&s->random, s->faults.snapshot)) {
      continue;
    }
    int result = tnode_take_snapshot(s->slots[id].node);
    if (result == 0) {
      s->result->stats.snapshots_taken++;
      sim_trace(s, "snapshot node %u at %llu, log compacted", id,
                (unsigned long long)tnode_log(s->slots[id].node)->snapshot.index);
    }
    sim_after_input(s, id, result);
  }
}

/* ---- membership and leadership ---- */

uint32_t sim_add_joiner(sim *s) {
  if (s->slot_count >= SIM_MAX_NODES) {
    return 0;
  }
  uint32_t id = s->slot_count + 1;
  tnode_config config = {.id = id,
                         .options = &s->options,
                         .seed = s->config.seed,
                         .initial_conf = NULL,
                         .observer = &s->observer};
  memset(&s->slots[id], 0, sizeof(s->slots[id]));
  s->slots[id].node = tnode_create(&config);
  if (s->slots[id].node == NULL) {
    sim_violation(s, "a joiner with an empty configuration cannot be created");
    return 0;
  }
  s->slot_count = id;
  sim_trace(s, "joiner node %u starts with an empty configuration", id);
  sim_after_input(s, id, 0);
  return id;
}

/* Chooses one membership change for `conf`; returns the number of ops. */
static uint32_t choose_change(sim *s, const fl_raft_conf *conf, fl_raft_change *changes) {
  uint32_t max_voters = s->config.node_count + 2;
  max_voters = max_voters > FL_RAFT_MAX_VOTERS ? FL_RAFT_MAX_VOTERS : max_voters;
  uint64_t learner =
      conf->learner_count > 0 ? conf->learners[trandom_below(&s->random, conf->learner_count)] : 0;
  uint64_t voter = conf->voters[trandom_below(&s->random, conf->voter_count)];
  switch (trandom_below(&s->random, 5)) {
  case 0:
    if (conf->learner_count < 2) {
      uint32_t id = sim_add_joiner(s);
      changes[0] = (fl_raft_change){.op = FL_RAFT_ADD_LEARNER, .node = id};
      return id != 0;
    }
    return 0;
  case 1:
    changes[0] = (fl_raft_change){.op = FL_RAFT_ADD_VOTER, .node = learner};
    return learner != 0 && conf->voter_count < max_voters;
  case 2:
    changes[0] = (fl_raft_change){.op = FL_RAFT_REMOVE, .node = voter};
    return conf->voter_count > 3;
  case 3:
    changes[0] = (fl_raft_change){.op = FL_RAFT_REMOVE, .node = learner};
    return learner != 0;
  default: /* swap a voter for a learner: a joint change */
    changes[0] = (fl_raft_change){.op = FL_RAFT_ADD_VOTER, .node = learner};
    changes[1] = (fl_raft_change){.op = FL_RAFT_REMOVE, .node = voter};
    return learner != 0 && conf->voter_count >= 3 ? 2 : 0;
  }
}

static const char *op_name(uint32_t op) {
  return op == FL_RAFT_ADD_VOTER     ? "add-voter"
         : op == FL_RAFT_ADD_LEARNER ? "add-learner"
                                     : "remove";
}

void sim_leave_joint(sim *s, uint32_t leader) {
  int result = fl_raft_propose_leave_joint(tnode_raft(s->slots[leader].node));
  sim_trace(s, "leave joint at leader %u: %s", leader,
            result == 0 ? "proposed" : fl_raft_strerror(result));
  sim_after_input(s, leader, tnode_drain(s->slots[leader].node));
}

static void change_membership(sim *s) {
  uint32_t leader = sim_find_leader(s);
  if (leader == 0) {
    return;
  }
  fl_raft_status status;
  fl_raft_get_status(tnode_raft(s->slots[leader].node), &status);
  if (fl_raft_conf_is_joint(&status.conf)) {
    if (!status.conf.auto_leave) {
      sim_leave_joint(s, leader);
    }
    return;
  }
  fl_raft_change changes[2];
  uint32_t count = choose_change(s, &status.conf, changes);
  if (count == 0 || !sim_is_live(s, leader)) {
    return;
  }
  bool auto_leave = trandom_chance(&s->random, 500000);
  int result =
      fl_raft_propose_change(tnode_raft(s->slots[leader].node), changes, count, auto_leave);
  sim_trace(s, "change at leader %u: %s %llu%s%s%s: %s", leader, op_name(changes[0].op),
            (unsigned long long)changes[0].node, count > 1 ? " + " : "",
            count > 1 ? op_name(changes[1].op) : "", count > 1 && auto_leave ? " (auto leave)" : "",
            result == 0 ? "proposed" : fl_raft_strerror(result));
  sim_after_input(s, leader, tnode_drain(s->slots[leader].node));
}

static void transfer_leadership(sim *s) {
  uint32_t leader = sim_find_leader(s);
  if (leader == 0) {
    return;
  }
  fl_raft_status status;
  fl_raft_get_status(tnode_raft(s->slots[leader].node), &status);
  uint64_t target = status.conf.voters[trandom_below(&s->random, status.conf.voter_count)];
  int result = fl_raft_transfer_leader(tnode_raft(s->slots[leader].node), target);
  sim_trace(s, "transfer leadership %u -> %llu: %s", leader, (unsigned long long)target,
            result == 0 ? "started" : fl_raft_strerror(result));
  s->result->stats.transfers += result == 0;
  sim_after_input(s, leader, tnode_drain(s->slots[leader].node));
}

void sim_chaos_tick(sim *s) {
  if (trandom_chance(&s->random, s->faults.crash)) {
    crash_one(s);
  }
  restart_some(s);
  if (!s->partitioned && trandom_chance(&s->random, s->faults.partition)) {
    partition(s);
  } else if (s->partitioned && trandom_chance(&s->random, s->faults.heal)) {
    sim_heal(s);
  }
  take_snapshots(s);
  if (!s->failed && trandom_chance(&s->random, s->faults.membership)) {
    change_membership(s);
  }
  if (!s->failed && trandom_chance(&s->random, s->faults.transfer)) {
    transfer_leadership(s);
  }
}
