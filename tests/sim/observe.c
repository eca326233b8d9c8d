/*
 * observe.c - turns what each node does into checker events.
 *
 * The tnode harness calls these from inside its driving loop, after an
 * update is stored and before it is applied, so a node's log as seen here
 * is exactly the core's log. Roles and terms are tracked per node to spot
 * a node becoming leader (Leader Completeness is checked at that moment)
 * and to trace role changes.
 */
#include "tests/sim/sim_internal.h"
#include "tests/support/hash.h"

static uint32_t id_of(const tnode *node) {
  return (uint32_t)tnode_id(node);
}

static void inject_second_leader(sim *s, uint32_t id, uint64_t term) {
  if (s->config.injection != SIM_INJECT_SECOND_LEADER || sim_tick(s) < 50) {
    return;
  }
  s->config.injection = SIM_INJECT_NONE;
  uint32_t other = id == 1 ? 2 : 1;
  sim_trace(s, "inject: report node %u as a second leader of term %llu", other,
            (unsigned long long)term);
  checker_note_leader(s->checker, term, other);
}

static void note_role(sim *s, tnode *node, const fl_raft_update *update) {
  uint32_t id = id_of(node);
  sim_slot *slot = &s->slots[id];
  bool became_leader = update->role == FL_RAFT_LEADER &&
                       (slot->role != FL_RAFT_LEADER || slot->term != update->term);
  if (update->role != slot->role || update->term != slot->term) {
    sim_trace(s, "role node %u: %s term %llu -> %s term %llu (leader %llu)", id,
              fl_raft_role_name(slot->role), (unsigned long long)slot->term,
              fl_raft_role_name(update->role), (unsigned long long)update->term,
              (unsigned long long)update->leader);
  }
  slot->role = update->role;
  slot->term = update->term;
  if (update->role == FL_RAFT_LEADER) {
    checker_note_leader(s->checker, update->term, id);
  }
  if (became_leader) {
    checker_check_leader_log(s->checker, id, update->term, tnode_log(node));
  }
}

/*
 * A leader's commit must be durable on a majority. The configuration the
 * core counted with is either the one it has now or the one it had before
 * this update (a configuration entry may take effect in between).
 */
static void check_commit_durable(sim *s, tnode *node, uint64_t commit) {
  const tlog *durable[SIM_MAX_NODES + 1] = {0};
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    if (s->slots[id].node != NULL) {
      durable[id] = tnode_durable_log(s->slots[id].node);
    }
  }
  fl_raft_status status;
  fl_raft_get_status(tnode_raft(node), &status);
  const sim_slot *slot = &s->slots[id_of(node)];
  if (!checker_quorum_durable(s->checker, commit, &status.conf, durable, SIM_MAX_NODES + 1) &&
      !checker_quorum_durable(s->checker, commit, &slot->conf_before, durable, SIM_MAX_NODES + 1)) {
    sim_violation(s, "durability: leader %u commits %llu before a majority holds it durably",
                  id_of(node), (unsigned long long)commit);
  }
}

static void note_commit(sim *s, tnode *node, const fl_raft_update *update) {
  uint32_t id = id_of(node);
  sim_slot *slot = &s->slots[id];
  uint64_t commit = update->hard_state.commit;
  if (commit < slot->commit) {
    sim_violation(s, "node %u: commit index goes back from %llu to %llu", id,
                  (unsigned long long)slot->commit, (unsigned long long)commit);
    return;
  }
  if (commit == slot->commit) {
    return;
  }
  sim_trace(s, "commit node %u: %llu -> %llu", id, (unsigned long long)slot->commit,
            (unsigned long long)commit);
  slot->commit = commit;
  bool extended = checker_note_commit(s->checker, id, update->term, tnode_log(node), commit);
  if (extended && update->role == FL_RAFT_LEADER) {
    check_commit_durable(s, node, commit);
  }
}

static void on_update(void *context, tnode *node, const fl_raft_update *update) {
  sim *s = context;
  note_role(s, node, update);
  if (update->hard_state_changed) {
    note_commit(s, node, update);
  }
  for (uint32_t i = 0; i < update->read_state_count; i++) {
    const fl_raft_read_state *read = &update->read_states[i];
    sim_trace(s, "read state node %u: request %llu at index %llu", id_of(node),
              (unsigned long long)read->context, (unsigned long long)read->index);
    checker_note_read_state(s->checker, id_of(node), read->context, read->index);
  }
}

static void on_append(void *context, tnode *node, uint64_t index, const tlog_entry *entry) {
  sim *s = context;
  checker_note_entry(s->checker, id_of(node), index, entry->term, entry->prefix_hash);
}

static void on_snapshot(void *context, tnode *node, const tstate *state) {
  sim *s = context;
  sim_trace(s, "snapshot installed node %u: index %llu term %llu", id_of(node),
            (unsigned long long)state->applied_index, (unsigned long long)state->applied_term);
  checker_note_snapshot(s->checker, id_of(node), state);
}

static bool is_member(const fl_raft_conf *conf, uint64_t id) {
  for (uint32_t i = 0; i < conf->outgoing_count; i++) {
    if (conf->outgoing[i] == id) {
      return true;
    }
  }
  return fl_raft_conf_has_voter(conf, id) || fl_raft_conf_has_learner(conf, id);
}

/* A committed configuration retires the nodes it no longer lists: they get
 * no more input, as an operator would shut a removed server down. */
static void note_configuration(sim *s, uint64_t index, const fl_raft_conf *conf) {
  if (index <= s->conf_index) {
    return;
  }
  s->conf_index = index;
  s->conf = *conf;
  s->result->stats.conf_changes++;
  sim_trace(s, "configuration at %llu: %u voters, %u outgoing, %u learners%s",
            (unsigned long long)index, conf->voter_count, conf->outgoing_count, conf->learner_count,
            fl_raft_conf_is_joint(conf) ? " (joint)" : "");
  for (uint32_t id = 1; id <= s->slot_count; id++) {
    sim_slot *slot = &s->slots[id];
    if (is_member(conf, id)) {
      slot->member = true;
    } else if (slot->member && !slot->retired) {
      slot->retired = true;
      sim_trace(s, "retire node %u: removed from the configuration", id);
    }
  }
}

static void on_apply(void *context, tnode *node, const fl_raft_entry *entry, const tstate *state) {
  sim *s = context;
  tstate seen = *state;
  if (s->config.injection == SIM_INJECT_DIVERGENT_APPLY && entry->index > 3 && id_of(node) == 2) {
    s->config.injection = SIM_INJECT_NONE;
    sim_trace(s, "inject: node 2 pretends to apply another command at %llu",
              (unsigned long long)entry->index);
    seen.chain_hash = thash_mix(seen.chain_hash + 1);
  }
  checker_note_apply(s->checker, id_of(node), entry, &seen);
  if (entry->type == FL_RAFT_ENTRY_CONF_CHANGE) {
    note_configuration(s, entry->index, &state->conf);
  }
  tcommand command;
  if (s->marker_id != 0 && entry->type == FL_RAFT_ENTRY_NORMAL &&
      tcommand_decode(entry->data, entry->length, &command) &&
      command.proposal_id == s->marker_id && s->marker_index == 0) {
    s->marker_index = entry->index;
    sim_trace(s, "marker %llu applied at %llu by node %u", (unsigned long long)s->marker_id,
              (unsigned long long)entry->index, id_of(node));
  }
}

static void on_write(void *context, tnode *node, uint64_t write_id) {
  sim_schedule_write(context, node, write_id);
}

void sim_observer_init(sim *s) {
  s->observer = (tnode_observer){.context = s,
                                 .on_update = on_update,
                                 .on_append = on_append,
                                 .on_snapshot = on_snapshot,
                                 .on_apply = on_apply,
                                 .on_write = on_write};
}

void sim_after_input(sim *s, uint32_t id, int result) {
  (void)result; /* refusals (not leader, busy, ...) are part of the game */
  sim_slot *slot = &s->slots[id];
  tnode *node = slot->node;
  const char *error = tnode_error(node);
  if (error != NULL) {
    sim_violation(s, "driver contract: %s", error);
  }
  if (tnode_is_up(node)) {
    const char *broken = NULL;
    if (!fl_raft_check_invariants(tnode_raft(node), &broken)) {
      sim_violation(s, "node %u: core invariant broken: %s", id, broken ? broken : "?");
    }
    fl_raft_status status;
    fl_raft_get_status(tnode_raft(node), &status);
    if (status.role == FL_RAFT_LEADER) {
      checker_note_leader(s->checker, status.term, id);
      inject_second_leader(s, id, status.term);
    }
    if (status.commit < slot->commit) {
      sim_violation(s, "node %u: commit index %llu is below the %llu it reported", id,
                    (unsigned long long)status.commit, (unsigned long long)slot->commit);
    }
    slot->conf_before = status.conf;
    sim_send_outbox(s, id);
  }
  if (checker_failed(s->checker)) {
    s->failed = true;
  }
}
