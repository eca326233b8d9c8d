/*
 * fuzz_raft_cluster.c - a 3- or 5-node Raft cluster driven by fuzzer bytes,
 * with the safety properties checked after every action.
 *
 * Input layout:
 *   byte 0     cluster: bit 0 = 5 nodes (else 3), bit 1 pre-vote,
 *              bit 2 check-quorum, bits 2+3 lease reads
 *   byte 1     flow-control limits (entries and inflight per message)
 *   then       actions: one byte picks the action (byte % FC_ACTION_COUNT),
 *              the next byte(s) its arguments
 *
 * The network is one FIFO per directed link. Actions deliver, drop,
 * duplicate or delay (move to the back) the head of a non-empty link chosen
 * by the argument byte, so every byte value means something. Writes are
 * completed (made durable) one at a time per node, and their persisted
 * notifications are delivered separately, late and in any order. Nodes
 * crash (losing all but their durable state) and restart; leaders get
 * proposals, membership changes, transfers and read requests; any node may
 * take a snapshot. Joiners (ids above the initial nodes) come to life when a
 * first message reaches them.
 *
 * Checks after every action (any failure aborts, which libFuzzer reports):
 *   - the simulator's checker (tests/sim/checker.h): one leader per term,
 *     log matching, leader completeness, state machine safety, commits
 *     durable on a majority, restarts agreeing with the committed log,
 *     linearizable read indexes (quorum reads: lease reads assume bounded
 *     clock drift, which ticking nodes one by one does not give);
 *   - per node: fl_raft_check_invariants(), no driver-contract breach,
 *     commit index monotonic within a run, durable commit monotonic across
 *     runs and never lost by a restart.
 *
 * Deterministic: no clock, no rand(); node seeds are constants. Bounded: at
 * most FC_MAX_ACTIONS actions and FC_LINK_CAPACITY messages per link.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_input.h"
#include "fuzz/fuzz_report.h"
#include "raft/raft.h"
#include "tests/sim/checker.h"
#include "tests/support/node.h"
#include "tests/support/state_machine.h"

/* Initial nodes (3 or 5) plus joiners a membership change may add. */
#define FC_MAX_NODES 7
/* Messages a link holds; a send beyond it is dropped (bounded memory). */
#define FC_LINK_CAPACITY 64
/* Actions one input may run: bounds the time and memory of one input. */
#define FC_MAX_ACTIONS 3000
/* Completed writes whose notification is not delivered yet, per node. */
#define FC_MAX_NOTIFICATIONS 128
/* Rounds of A_STABILIZE: enough to commit after an election. */
#define FC_STABILIZE_ROUNDS 6

enum fc_action {
  A_DELIVER,
  A_DROP,
  A_DUPLICATE,
  A_DELAY,
  A_FLUSH,
  A_TICK,
  A_TICK_ALL,
  A_COMPLETE_WRITE,
  A_NOTIFY,
  A_STABILIZE,
  A_CRASH,
  A_RESTART,
  A_PROPOSE,
  A_SNAPSHOT,
  A_MEMBERSHIP,
  A_TRANSFER,
  A_CAMPAIGN,
  A_READ,
  A_UNREACHABLE,
  FC_ACTION_COUNT
};

typedef struct fc_link {
  tenvelope *items[FC_LINK_CAPACITY]; /* ring */
  uint32_t head;
  uint32_t count;
} fc_link;

typedef struct fc_node {
  tnode *node;     /* NULL: a joiner not contacted yet */
  uint64_t commit; /* highest commit this run reported */
  uint64_t durable_commit;
  fl_raft_role role;
  uint64_t term;
  fl_raft_conf conf_before;                     /* configuration before the latest input */
  uint64_t notifications[FC_MAX_NOTIFICATIONS]; /* completed write ids */
  uint32_t notification_count;
} fc_node;

typedef struct fc_cluster {
  fuzz_input in;
  fl_raft_options options;
  tnode_observer observer;
  checker *checker;
  fc_node nodes[FC_MAX_NODES + 1]; /* by id */
  uint32_t highest_id;             /* ids 1..highest_id may exist */
  fc_link links[FC_MAX_NODES + 1][FC_MAX_NODES + 1];
  uint64_t next_proposal_id;
  uint64_t next_read_id;
  uint32_t action;
} fc_cluster;

static void fc_fail(fc_cluster *c, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* A violation: print it with the action number and abort for libFuzzer. */
static void fc_fail(fc_cluster *c, const char *format, ...) {
  fprintf(stderr, "fuzz-raft-cluster: violation at action %u: ", c->action);
  va_list arguments;
  va_start(arguments, format);
  fuzz_report_and_abort("", format, arguments);
}

static uint32_t id_of(const tnode *node) {
  return (uint32_t)tnode_id(node);
}

/* ---- observer: what each update means to the checker ---- */

static void check_commit_durable(fc_cluster *c, tnode *node, uint64_t commit) {
  const tlog *durable[FC_MAX_NODES + 1] = {0};
  for (uint32_t id = 1; id <= FC_MAX_NODES; id++) {
    if (c->nodes[id].node != NULL) {
      durable[id] = tnode_durable_log(c->nodes[id].node);
    }
  }
  fl_raft_status status;
  fl_raft_get_status(tnode_raft(node), &status);
  /* The core counted with its configuration before or after this update. */
  const fl_raft_conf *before = &c->nodes[id_of(node)].conf_before;
  if (!checker_quorum_durable(c->checker, commit, &status.conf, durable, FC_MAX_NODES + 1) &&
      !checker_quorum_durable(c->checker, commit, before, durable, FC_MAX_NODES + 1)) {
    fc_fail(c, "leader %u commits %llu before a majority holds it durably", id_of(node),
            (unsigned long long)commit);
  }
}

static void note_commit(fc_cluster *c, tnode *node, const fl_raft_update *update) {
  fc_node *slot = &c->nodes[id_of(node)];
  uint64_t commit = update->hard_state.commit;
  if (commit < slot->commit) {
    fc_fail(c, "node %u: commit goes back from %llu to %llu", id_of(node),
            (unsigned long long)slot->commit, (unsigned long long)commit);
  }
  if (commit == slot->commit) {
    return;
  }
  slot->commit = commit;
  bool extended =
      checker_note_commit(c->checker, id_of(node), update->term, tnode_log(node), commit);
  if (extended && update->role == FL_RAFT_LEADER) {
    check_commit_durable(c, node, commit);
  }
}

static void on_update(void *context, tnode *node, const fl_raft_update *update) {
  fc_cluster *c = context;
  fc_node *slot = &c->nodes[id_of(node)];
  if (update->role == FL_RAFT_LEADER) {
    checker_note_leader(c->checker, update->term, id_of(node));
    if (slot->role != FL_RAFT_LEADER || slot->term != update->term) {
      checker_check_leader_log(c->checker, id_of(node), update->term, tnode_log(node));
    }
  }
  slot->role = update->role;
  slot->term = update->term;
  if (update->hard_state_changed) {
    note_commit(c, node, update);
  }
  for (uint32_t i = 0; i < update->read_state_count; i++) {
    const fl_raft_read_state *read = &update->read_states[i];
    checker_note_read_state(c->checker, id_of(node), read->context, read->index);
  }
}

static void on_append(void *context, tnode *node, uint64_t index, const tlog_entry *entry) {
  fc_cluster *c = context;
  checker_note_entry(c->checker, id_of(node), index, entry->term, entry->prefix_hash);
}

static void on_snapshot(void *context, tnode *node, const tstate *state) {
  fc_cluster *c = context;
  checker_note_snapshot(c->checker, id_of(node), state);
}

static void on_apply(void *context, tnode *node, const fl_raft_entry *entry, const tstate *state) {
  fc_cluster *c = context;
  checker_note_apply(c->checker, id_of(node), entry, state);
}

/* ---- the network ---- */

static tenvelope *link_pop(fc_link *link) {
  if (link->count == 0) {
    return NULL;
  }
  tenvelope *envelope = link->items[link->head];
  link->head = (link->head + 1) % FC_LINK_CAPACITY;
  link->count--;
  return envelope;
}

static bool link_push(fc_link *link, tenvelope *envelope) {
  if (link->count == FC_LINK_CAPACITY) {
    return false;
  }
  link->items[(link->head + link->count++) % FC_LINK_CAPACITY] = envelope;
  return true;
}

/* The transport tells a sender how its snapshot went. */
static void report_snapshot(fc_cluster *c, const tenvelope *envelope, bool success) {
  const fl_raft_message *m = &envelope->message;
  tnode *sender = c->nodes[m->from].node;
  if (m->type != FL_RAFT_MSG_SNAPSHOT || sender == NULL || !tnode_is_up(sender) ||
      tnode_incarnation(sender) != envelope->sender_incarnation) {
    return;
  }
  fl_raft_report_snapshot(tnode_raft(sender), m->to, success);
  tnode_drain(sender);
}

static void drop(fc_cluster *c, tenvelope *envelope) {
  report_snapshot(c, envelope, false);
  tenvelope_destroy(envelope);
}

static void send_outbox(fc_cluster *c, uint32_t id) {
  tnode *node = c->nodes[id].node;
  for (tenvelope *e = tnode_take_message(node); e != NULL; e = tnode_take_message(node)) {
    uint64_t to = e->message.to;
    if (to == 0 || to > FC_MAX_NODES || to == id || !link_push(&c->links[id][to], e)) {
      drop(c, e);
    }
  }
}

/* The non-empty link number `pick` (modulo their count), or NULL. */
static fc_link *pick_link(fc_cluster *c, uint8_t pick) {
  uint32_t busy = 0;
  for (uint32_t from = 1; from <= FC_MAX_NODES; from++) {
    for (uint32_t to = 1; to <= FC_MAX_NODES; to++) {
      busy += c->links[from][to].count > 0;
    }
  }
  if (busy == 0) {
    return NULL;
  }
  uint32_t wanted = pick % busy;
  for (uint32_t from = 1; from <= FC_MAX_NODES; from++) {
    for (uint32_t to = 1; to <= FC_MAX_NODES; to++) {
      if (c->links[from][to].count > 0 && wanted-- == 0) {
        return &c->links[from][to];
      }
    }
  }
  return NULL;
}

/* ---- checks after every action ---- */

static void check_node(fc_cluster *c, uint32_t id) {
  fc_node *slot = &c->nodes[id];
  if (tnode_error(slot->node) != NULL) {
    fc_fail(c, "driver contract: %s", tnode_error(slot->node));
  }
  uint64_t durable_commit = tnode_durable_hard_state(slot->node)->commit;
  if (durable_commit < slot->durable_commit) {
    fc_fail(c, "node %u: durable commit goes back from %llu to %llu", id,
            (unsigned long long)slot->durable_commit, (unsigned long long)durable_commit);
  }
  slot->durable_commit = durable_commit;
  if (!tnode_is_up(slot->node)) {
    return;
  }
  const char *broken = NULL;
  if (!fl_raft_check_invariants(tnode_raft(slot->node), &broken)) {
    fc_fail(c, "node %u: core invariant broken: %s", id, broken != NULL ? broken : "?");
  }
  fl_raft_status status;
  fl_raft_get_status(tnode_raft(slot->node), &status);
  if (status.role == FL_RAFT_LEADER) {
    checker_note_leader(c->checker, status.term, id);
  }
  if (status.commit < slot->commit) {
    fc_fail(c, "node %u: commit %llu below the %llu it reported", id,
            (unsigned long long)status.commit, (unsigned long long)slot->commit);
  }
  slot->conf_before = status.conf;
}

static void after_action(fc_cluster *c) {
  for (uint32_t id = 1; id <= c->highest_id; id++) {
    if (c->nodes[id].node == NULL) {
      continue;
    }
    check_node(c, id);
    if (tnode_is_up(c->nodes[id].node)) {
      send_outbox(c, id);
    }
  }
  if (checker_failed(c->checker)) {
    fc_fail(c, "%s", checker_violation(c->checker));
  }
}

/* ---- nodes ---- */

/* The node `pick` designates among ids 1..highest_id, NULL if it has none. */
static tnode *pick_node(fc_cluster *c, uint8_t pick) {
  return c->nodes[1 + pick % c->highest_id].node;
}

static tnode *live(tnode *node) {
  return node != NULL && tnode_is_up(node) ? node : NULL;
}

/* A joiner starts with an empty configuration when first contacted. */
static tnode *contact(fc_cluster *c, uint64_t id) {
  fc_node *slot = &c->nodes[id];
  if (slot->node == NULL) {
    tnode_config config = {.id = id, .options = &c->options, .seed = 7, .observer = &c->observer};
    slot->node = tnode_create(&config);
    if (slot->node == NULL) {
      fc_fail(c, "joiner %llu cannot be created", (unsigned long long)id);
    }
    c->highest_id = id > c->highest_id ? (uint32_t)id : c->highest_id;
  }
  return slot->node;
}

static void deliver(fc_cluster *c, tenvelope *envelope) {
  tnode *to = contact(c, envelope->message.to);
  if (!tnode_is_up(to)) {
    drop(c, envelope);
    return;
  }
  bool snapshot = envelope->message.type == FL_RAFT_MSG_SNAPSHOT;
  tenvelope report = *envelope; /* the step takes the envelope */
  tnode_step(to, envelope);
  if (snapshot) {
    report_snapshot(c, &report, true);
  }
}

/* The live leader of the highest term, or NULL. */
static tnode *find_leader(fc_cluster *c) {
  tnode *leader = NULL;
  uint64_t best_term = 0;
  for (uint32_t id = 1; id <= c->highest_id; id++) {
    tnode *node = live(c->nodes[id].node);
    if (node == NULL) {
      continue;
    }
    fl_raft_status status;
    fl_raft_get_status(tnode_raft(node), &status);
    if (status.role == FL_RAFT_LEADER && status.term >= best_term) {
      leader = node;
      best_term = status.term;
    }
  }
  return leader;
}

static void complete_write(fc_cluster *c, tnode *node, bool notify_now) {
  fc_node *slot = &c->nodes[id_of(node)];
  uint64_t write_id = 0;
  if (tnode_complete_write(node, &write_id) != 0) {
    return;
  }
  if (notify_now || slot->notification_count == FC_MAX_NOTIFICATIONS) {
    tnode_persisted(node, write_id);
    return;
  }
  slot->notifications[slot->notification_count++] = write_id;
}

static void notify(fc_cluster *c, tnode *node, uint8_t pick) {
  fc_node *slot = &c->nodes[id_of(node)];
  if (slot->notification_count == 0) {
    return;
  }
  uint32_t k = pick % slot->notification_count;
  uint64_t write_id = slot->notifications[k];
  slot->notifications[k] = slot->notifications[--slot->notification_count];
  tnode_persisted(node, write_id);
}

static void crash(fc_cluster *c, tnode *node) {
  fc_node *slot = &c->nodes[id_of(node)];
  tnode_crash(node);
  /* Notifications of the lost run must never reach the next one. */
  slot->notification_count = 0;
}

static void restart(fc_cluster *c, tnode *node) {
  uint32_t id = id_of(node);
  fc_node *slot = &c->nodes[id];
  const fl_raft_hard_state *hard_state = tnode_durable_hard_state(node);
  const tlog *durable = tnode_durable_log(node);
  checker_check_durable(c->checker, id, durable, hard_state);
  uint64_t durable_commit =
      hard_state->commit > durable->snapshot.index ? hard_state->commit : durable->snapshot.index;
  slot->commit = 0; /* a new run of the node */
  slot->role = FL_RAFT_FOLLOWER;
  slot->term = hard_state->term;
  if (tnode_restart(node) != 0 || !tnode_is_up(node)) {
    fc_fail(c, "node %u cannot restart: %s", id, tnode_error(node) ? tnode_error(node) : "?");
  }
  fl_raft_status status;
  fl_raft_get_status(tnode_raft(node), &status);
  if (status.commit < durable_commit) {
    fc_fail(c, "node %u restarts with commit %llu below its durable commit %llu", id,
            (unsigned long long)status.commit, (unsigned long long)durable_commit);
  }
  checker_note_commit(c->checker, id, status.term, tnode_log(node), status.commit);
  slot->commit = status.commit > slot->commit ? status.commit : slot->commit;
}

/* ---- client and operator actions ---- */

static void propose(fc_cluster *c, tnode *node, uint8_t shape) {
  uint32_t count = 1 + (shape & 7);
  uint8_t buffers[8][TCOMMAND_MAX_BYTES];
  const uint8_t *data[8];
  uint32_t lengths[8];
  for (uint32_t i = 0; i < count; i++) {
    tcommand command = {.proposal_id = ++c->next_proposal_id,
                        .proposer = tnode_id(node),
                        .key = (shape >> 3) % TSTATE_KEYS,
                        .value = c->action};
    uint32_t padding = (uint32_t)((shape >> 4) * 6 + i) % (TCOMMAND_MAX_BYTES - 31);
    lengths[i] = (uint32_t)tcommand_encode(&command, padding, buffers[i], sizeof(buffers[i]));
    data[i] = buffers[i];
  }
  tnode_propose(node, data, lengths, count);
}

static void change_membership(fc_cluster *c, uint8_t shape) {
  tnode *leader = find_leader(c);
  if (leader == NULL) {
    return;
  }
  fl_raft *raft = tnode_raft(leader);
  if ((shape & 3) == 3) {
    fl_raft_propose_leave_joint(raft);
    tnode_drain(leader);
    return;
  }
  fl_raft_change changes[2];
  uint32_t count = 1 + (shape & 1);
  for (uint32_t i = 0; i < count; i++) {
    uint8_t change = fuzz_u8(&c->in);
    changes[i] = (fl_raft_change){.op = change % 3, .node = 1 + (change / 3) % FC_MAX_NODES};
  }
  fl_raft_propose_change(raft, changes, count, (shape & 4) != 0);
  tnode_drain(leader);
}

static void transfer(fc_cluster *c, uint8_t target) {
  tnode *leader = find_leader(c);
  if (leader != NULL) {
    fl_raft_transfer_leader(tnode_raft(leader), 1 + target % FC_MAX_NODES);
    tnode_drain(leader);
  }
}

static void read_index(fc_cluster *c, tnode *node) {
  uint64_t context = ++c->next_read_id;
  /* Lease reads trust bounded clock drift, which ticking nodes one by one
   * breaks: only reads confirmed by a quorum round are held to
   * linearizability. Registered first: a read state may come out of this
   * very drain. */
  uint64_t required = c->options.lease_read ? 0 : checker_acknowledged_index(c->checker);
  checker_note_read_request(c->checker, context, required);
  fl_raft_read_index(tnode_raft(node), context);
  tnode_drain(node);
}

/* ---- network actions ---- */

static void link_action(fc_cluster *c, uint32_t action) {
  fc_link *link = pick_link(c, fuzz_u8(&c->in));
  if (link == NULL) {
    return;
  }
  if (action == A_DUPLICATE) {
    /* The copy arrives after what is queued; on a full link it is lost. */
    tenvelope *copy = tenvelope_clone(link->items[link->head]);
    if (!link_push(link, copy)) {
      tenvelope_destroy(copy);
    }
    return;
  }
  tenvelope *head = link_pop(link);
  if (action == A_DELIVER) {
    deliver(c, head);
  } else if (action == A_DROP) {
    drop(c, head);
  } else {
    link_push(link, head); /* A_DELAY: to the back of the queue */
  }
}

/* Delivers what is in flight now (not what it provokes), link by link. */
static void flush(fc_cluster *c) {
  uint32_t pending[FC_MAX_NODES + 1][FC_MAX_NODES + 1];
  for (uint32_t from = 1; from <= FC_MAX_NODES; from++) {
    for (uint32_t to = 1; to <= FC_MAX_NODES; to++) {
      pending[from][to] = c->links[from][to].count;
    }
  }
  for (uint32_t from = 1; from <= FC_MAX_NODES; from++) {
    for (uint32_t to = 1; to <= FC_MAX_NODES; to++) {
      for (uint32_t k = 0; k < pending[from][to]; k++) {
        deliver(c, link_pop(&c->links[from][to]));
        after_action(c);
      }
    }
  }
}

/* A calm stretch: every write completes and is notified, then a flush. */
static void stabilize(fc_cluster *c) {
  for (uint32_t round = 0; round < FC_STABILIZE_ROUNDS; round++) {
    for (uint32_t id = 1; id <= c->highest_id; id++) {
      tnode *node = live(c->nodes[id].node);
      while (node != NULL && tnode_pending_writes(node) > 0) {
        complete_write(c, node, true);
      }
    }
    after_action(c);
    flush(c);
  }
}

/* ---- the action loop ---- */

static void node_action(fc_cluster *c, uint32_t action) {
  tnode *node = pick_node(c, fuzz_u8(&c->in));
  if (node == NULL) {
    return;
  }
  if (action == A_RESTART) {
    if (!tnode_is_up(node)) {
      restart(c, node);
    }
    return;
  }
  if (!tnode_is_up(node)) {
    return;
  }
  switch (action) {
  case A_TICK:
    tnode_tick(node);
    break;
  case A_COMPLETE_WRITE:
    complete_write(c, node, (fuzz_u8(&c->in) & 1) != 0);
    break;
  case A_NOTIFY:
    notify(c, node, fuzz_u8(&c->in));
    break;
  case A_CRASH:
    crash(c, node);
    break;
  case A_PROPOSE:
    propose(c, node, fuzz_u8(&c->in));
    break;
  case A_SNAPSHOT:
    tnode_take_snapshot(node);
    fl_raft_shrink(tnode_raft(node)); /* a group gone idle after compaction */
    break;
  case A_CAMPAIGN:
    fl_raft_campaign(tnode_raft(node));
    tnode_drain(node);
    break;
  case A_READ:
    read_index(c, node);
    break;
  default: /* A_UNREACHABLE */
    fl_raft_report_unreachable(tnode_raft(node), 1 + fuzz_u8(&c->in) % FC_MAX_NODES);
    tnode_drain(node);
    break;
  }
}

/* FLOTILLA_FUZZ_TRACE=1 prints every action and the nodes after it. */
static void trace_nodes(fc_cluster *c, uint32_t action) {
  static const char *const names[FC_ACTION_COUNT] = {
      "deliver",        "drop",     "duplicate", "delay", "flush",      "tick",    "tick-all",
      "complete-write", "notify",   "stabilize", "crash", "restart",    "propose", "snapshot",
      "membership",     "transfer", "campaign",  "read",  "unreachable"};
  fprintf(stderr, "action %u %s:", c->action, names[action]);
  for (uint32_t id = 1; id <= c->highest_id; id++) {
    tnode *node = live(c->nodes[id].node);
    if (node == NULL) {
      fprintf(stderr, " [%u down]", id);
      continue;
    }
    fl_raft_status s;
    fl_raft_get_status(tnode_raft(node), &s);
    fprintf(stderr, " [%u %s t%llu c%llu a%llu log %llu-%llu w%zu]", id, fl_raft_role_name(s.role),
            (unsigned long long)s.term, (unsigned long long)s.commit, (unsigned long long)s.applied,
            (unsigned long long)s.first_index, (unsigned long long)s.last_index,
            tnode_pending_writes(node));
  }
  fputc('\n', stderr);
}

static void run_action(fc_cluster *c, uint32_t action) {
  if (tracing()) {
    trace_nodes(c, action);
  }
  switch (action) {
  case A_DELIVER:
  case A_DROP:
  case A_DUPLICATE:
  case A_DELAY:
    link_action(c, action);
    break;
  case A_FLUSH:
    flush(c);
    break;
  case A_TICK_ALL:
    for (uint32_t id = 1; id <= c->highest_id; id++) {
      if (live(c->nodes[id].node) != NULL) {
        tnode_tick(c->nodes[id].node);
      }
    }
    break;
  case A_STABILIZE:
    stabilize(c);
    break;
  case A_MEMBERSHIP:
    change_membership(c, fuzz_u8(&c->in));
    break;
  case A_TRANSFER:
    transfer(c, fuzz_u8(&c->in));
    break;
  default:
    node_action(c, action);
    break;
  }
  after_action(c);
}

static void configure(fc_cluster *c) {
  uint8_t cluster = fuzz_u8(&c->in);
  uint8_t limits = fuzz_u8(&c->in);
  fl_raft_options_default(&c->options);
  /* Short timeouts: fewer bytes between interesting events. */
  c->options.election_ticks = 3;
  c->options.heartbeat_ticks = 1;
  c->options.pre_vote = (cluster & 2) != 0;
  c->options.check_quorum = (cluster & 4) != 0;
  c->options.lease_read = (cluster & 12) == 12; /* needs check-quorum */
  static const uint32_t entries[4] = {1, 2, 8, 1024};
  static const uint32_t inflight[4] = {1, 2, 4, 256};
  static const uint64_t bytes[4] = {64, 256, 4096, 1u << 20};
  c->options.max_entries_per_message = entries[limits & 3];
  c->options.max_inflight_messages = inflight[(limits >> 2) & 3];
  c->options.max_bytes_per_message = bytes[(limits >> 4) & 3];
  c->options.max_inflight_bytes = bytes[(limits >> 6) & 3] * 4;
  c->options.max_uncommitted_bytes = 1u << 16;
  c->highest_id = (cluster & 1) ? 5 : 3;
}

static void cluster_destroy(fc_cluster *c) {
  for (uint32_t from = 1; from <= FC_MAX_NODES; from++) {
    for (uint32_t to = 1; to <= FC_MAX_NODES; to++) {
      for (tenvelope *e = link_pop(&c->links[from][to]); e != NULL;
           e = link_pop(&c->links[from][to])) {
        tenvelope_destroy(e);
      }
    }
  }
  for (uint32_t id = 1; id <= FC_MAX_NODES; id++) {
    tnode_destroy(c->nodes[id].node);
  }
  checker_destroy(c->checker);
  free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fc_cluster *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return 0;
  }
  c->in = (fuzz_input){.data = data, .size = size};
  configure(c);
  c->checker = checker_create();
  c->observer = (tnode_observer){.context = c,
                                 .on_update = on_update,
                                 .on_append = on_append,
                                 .on_snapshot = on_snapshot,
                                 .on_apply = on_apply};
  tnode *initial[FC_MAX_NODES];
  if (tnode_create_cluster(initial, c->highest_id, &c->options, 7, &c->observer) != 0) {
    fc_fail(c, "the cluster cannot be created");
  }
  for (uint32_t id = 1; id <= c->highest_id; id++) {
    c->nodes[id].node = initial[id - 1];
  }
  after_action(c);
  for (c->action = 1; c->action <= FC_MAX_ACTIONS && !fuzz_input_done(&c->in); c->action++) {
    run_action(c, fuzz_u8(&c->in) % FC_ACTION_COUNT);
  }
  cluster_destroy(c);
  return 0;
}
