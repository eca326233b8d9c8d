/*
 * checker.c - global safety checks of the simulator (see checker.h).
 *
 * History kept, all growing with the run (runs are bounded in steps):
 *   leaders[term]       the leader of each term seen;
 *   entries             hash table (index, term) -> prefix hash;
 *   committed[index]    prefix hash, entry term and the term in which the
 *                       commit was first reported, for index <= committed_max;
 *   proposals[id]       where a proposal was applied, whether acknowledged;
 *   reads[context]      the acknowledged index when a read was requested.
 */
#include "tests/sim/checker.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/hash.h"

typedef struct committed_entry {
  uint64_t prefix_hash;
  uint64_t entry_term;
  uint64_t commit_term; /* term of the node that first reported the commit */
  bool known;           /* false when the reporter had compacted it away */
} committed_entry;

typedef struct entry_slot {
  uint64_t index; /* 0 = free */
  uint64_t term;
  uint64_t prefix_hash;
  uint64_t node;
} entry_slot;

typedef struct proposal_record {
  uint64_t index; /* where it was applied, 0 = not yet */
  bool acknowledged;
} proposal_record;

typedef struct acknowledged {
  uint64_t proposal_id;
  uint64_t index;
} acknowledged;

struct checker {
  char violation[1024];
  uint64_t violation_count;
  uint64_t *leaders; /* by term, 0 = none */
  size_t leader_capacity;
  uint64_t leader_count;
  entry_slot *entries;
  size_t entry_capacity; /* power of two */
  size_t entry_count;
  committed_entry *committed; /* by index */
  size_t committed_capacity;
  uint64_t committed_max;
  proposal_record *proposals; /* by proposal id */
  size_t proposal_capacity;
  acknowledged *acknowledged;
  size_t acknowledged_count;
  size_t acknowledged_capacity;
  uint64_t acknowledged_max;
  uint64_t *read_required; /* by context, UINT64_MAX = unknown */
  size_t read_capacity;
  uint64_t read_count;
};

/* Grows a zero-filled array so that `needed` items fit. */
static void *ensure(void *items, size_t *capacity, size_t needed, size_t item_size) {
  if (needed <= *capacity) {
    return items;
  }
  size_t fresh = *capacity == 0 ? 1024 : *capacity;
  while (fresh < needed) {
    fresh *= 2;
  }
  uint8_t *result = realloc(items, fresh * item_size);
  if (result == NULL) {
    fprintf(stderr, "flotilla-sim: out of memory\n");
    abort();
  }
  memset(result + *capacity * item_size, 0, (fresh - *capacity) * item_size);
  *capacity = fresh;
  return result;
}

checker *checker_create(void) {
  checker *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    abort();
  }
  c->entries = ensure(NULL, &c->entry_capacity, 4096, sizeof(*c->entries));
  return c;
}

void checker_destroy(checker *c) {
  if (c == NULL) {
    return;
  }
  free(c->leaders);
  free(c->entries);
  free(c->committed);
  free(c->proposals);
  free(c->acknowledged);
  free(c->read_required);
  free(c);
}

bool checker_failed(const checker *c) {
  return c->violation_count > 0;
}

const char *checker_violation(const checker *c) {
  return c->violation;
}

void checker_fail(checker *c, const char *format, ...) {
  if (c->violation_count++ > 0) {
    return;
  }
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(c->violation, sizeof(c->violation), format, arguments);
  va_end(arguments);
}

void checker_note_leader(checker *c, uint64_t term, uint64_t node) {
  c->leaders = ensure(c->leaders, &c->leader_capacity, term + 1, sizeof(*c->leaders));
  if (c->leaders[term] == 0) {
    c->leaders[term] = node;
    c->leader_count++;
  } else if (c->leaders[term] != node) {
    checker_fail(c, "election safety: two leaders in term %llu: nodes %llu and %llu",
                 (unsigned long long)term, (unsigned long long)c->leaders[term],
                 (unsigned long long)node);
  }
}

/* ---- log matching: (index, term) -> prefix hash ---- */

static size_t entry_bucket(const checker *c, uint64_t index, uint64_t term) {
  return (size_t)(thash_mix(index * 0x9e3779b97f4a7c15ull ^ term) & (c->entry_capacity - 1));
}

static entry_slot *entry_find(checker *c, uint64_t index, uint64_t term) {
  size_t i = entry_bucket(c, index, term);
  while (c->entries[i].index != 0 && (c->entries[i].index != index || c->entries[i].term != term)) {
    i = (i + 1) & (c->entry_capacity - 1);
  }
  return &c->entries[i];
}

static void entry_table_grow(checker *c) {
  entry_slot *old = c->entries;
  size_t old_capacity = c->entry_capacity;
  c->entry_capacity = 0;
  c->entries = ensure(NULL, &c->entry_capacity, 2 * old_capacity, sizeof(*c->entries));
  for (size_t i = 0; i < old_capacity; i++) {
    if (old[i].index != 0) {
      *entry_find(c, old[i].index, old[i].term) = old[i];
    }
  }
  free(old);
}

void checker_note_entry(checker *c, uint64_t node, uint64_t index, uint64_t term,
                        uint64_t prefix_hash) {
  if (2 * (c->entry_count + 1) > c->entry_capacity) {
    entry_table_grow(c);
  }
  entry_slot *slot = entry_find(c, index, term);
  if (slot->index == 0) {
    *slot = (entry_slot){.index = index, .term = term, .prefix_hash = prefix_hash, .node = node};
    c->entry_count++;
  } else if (slot->prefix_hash != prefix_hash) {
    checker_fail(c,
                 "log matching: entry (index %llu, term %llu) on node %llu follows another "
                 "history than the same entry on node %llu",
                 (unsigned long long)index, (unsigned long long)term, (unsigned long long)node,
                 (unsigned long long)slot->node);
  }
}

/* ---- committed history ---- */

static committed_entry *committed_at(checker *c, uint64_t index) {
  c->committed = ensure(c->committed, &c->committed_capacity, index + 1, sizeof(*c->committed));
  return &c->committed[index];
}

/* Compares `hash` at `index` with the committed history, or records it. */
static void check_committed_hash(checker *c, uint64_t node, uint64_t index, uint64_t term,
                                 uint64_t hash, const char *what) {
  committed_entry *entry = committed_at(c, index);
  if (!entry->known) {
    entry->known = true;
    entry->prefix_hash = hash;
    entry->entry_term = term;
    return;
  }
  if (entry->prefix_hash != hash) {
    checker_fail(c,
                 "state machine safety: node %llu %s index %llu (term %llu) but the committed "
                 "entry there has term %llu or an earlier entry differs",
                 (unsigned long long)node, what, (unsigned long long)index,
                 (unsigned long long)term, (unsigned long long)entry->entry_term);
  }
}

uint64_t checker_committed_index(const checker *c) {
  return c->committed_max;
}

bool checker_note_commit(checker *c, uint64_t node, uint64_t term, const tlog *log,
                         uint64_t commit) {
  if (commit > tlog_last_index(log)) {
    checker_fail(c, "node %llu commits %llu beyond its last log index %llu",
                 (unsigned long long)node, (unsigned long long)commit,
                 (unsigned long long)tlog_last_index(log));
    return false;
  }
  uint64_t hash = 0;
  uint64_t checked = commit < c->committed_max ? commit : c->committed_max;
  if (checked >= log->snapshot.index && tlog_prefix_hash_at(log, checked, &hash)) {
    check_committed_hash(c, node, checked, tlog_term_at(log, checked), hash, "commits");
  }
  if (commit <= c->committed_max) {
    return false;
  }
  for (uint64_t index = c->committed_max + 1; index <= commit; index++) {
    committed_entry *entry = committed_at(c, index);
    entry->commit_term = term;
    if (tlog_prefix_hash_at(log, index, &hash)) {
      check_committed_hash(c, node, index, tlog_term_at(log, index), hash, "commits");
    }
  }
  c->committed_max = commit;
  return true;
}

void checker_check_leader_log(checker *c, uint64_t node, uint64_t term, const tlog *log) {
  uint64_t index = c->committed_max;
  while (index > 0 && c->committed[index].commit_term >= term) {
    index--;
  }
  if (index == 0) {
    return;
  }
  if (tlog_last_index(log) < index) {
    checker_fail(c,
                 "leader completeness: node %llu leads term %llu but its log ends at %llu, "
                 "before committed index %llu",
                 (unsigned long long)node, (unsigned long long)term,
                 (unsigned long long)tlog_last_index(log), (unsigned long long)index);
    return;
  }
  if (index < log->snapshot.index) {
    index = log->snapshot.index; /* its snapshot was checked when it arrived */
  }
  uint64_t hash = 0;
  const committed_entry *entry = &c->committed[index];
  if (index <= c->committed_max && entry->known && tlog_prefix_hash_at(log, index, &hash) &&
      hash != entry->prefix_hash) {
    checker_fail(c,
                 "leader completeness: node %llu leads term %llu without the committed entry "
                 "at %llu (committed term %llu, its term %llu)",
                 (unsigned long long)node, (unsigned long long)term, (unsigned long long)index,
                 (unsigned long long)entry->entry_term,
                 (unsigned long long)tlog_term_at(log, index));
  }
}

static void note_proposal(checker *c, uint64_t node, const fl_raft_entry *entry) {
  tcommand command;
  if (entry->type != FL_RAFT_ENTRY_NORMAL ||
      !tcommand_decode(entry->data, entry->length, &command)) {
    return;
  }
  c->proposals =
      ensure(c->proposals, &c->proposal_capacity, command.proposal_id + 1, sizeof(*c->proposals));
  proposal_record *record = &c->proposals[command.proposal_id];
  if (record->index != 0 && record->index != entry->index) {
    checker_fail(c, "proposal %llu applied at index %llu and at index %llu (node %llu)",
                 (unsigned long long)command.proposal_id, (unsigned long long)record->index,
                 (unsigned long long)entry->index, (unsigned long long)node);
    return;
  }
  record->index = entry->index;
  if (!record->acknowledged && command.proposer == node) {
    /* The node that accepted the proposal applied it: the client hears back. */
    record->acknowledged = true;
    c->acknowledged = ensure(c->acknowledged, &c->acknowledged_capacity, c->acknowledged_count + 1,
                             sizeof(*c->acknowledged));
    c->acknowledged[c->acknowledged_count++] =
        (acknowledged){.proposal_id = command.proposal_id, .index = entry->index};
    if (entry->index > c->acknowledged_max) {
      c->acknowledged_max = entry->index;
    }
  }
}

void checker_note_apply(checker *c, uint64_t node, const fl_raft_entry *entry,
                        const tstate *state) {
  if (entry->index > c->committed_max) {
    checker_fail(c, "node %llu applies index %llu that no node reported committed (%llu)",
                 (unsigned long long)node, (unsigned long long)entry->index,
                 (unsigned long long)c->committed_max);
    return;
  }
  check_committed_hash(c, node, entry->index, entry->term, state->chain_hash, "applies");
  note_proposal(c, node, entry);
}

void checker_note_snapshot(checker *c, uint64_t node, const tstate *state) {
  if (state->applied_index > c->committed_max) {
    checker_fail(c, "node %llu installs snapshot %llu above the committed index %llu",
                 (unsigned long long)node, (unsigned long long)state->applied_index,
                 (unsigned long long)c->committed_max);
    return;
  }
  if (state->applied_index > 0) {
    checker_note_entry(c, node, state->applied_index, state->applied_term, state->chain_hash);
    check_committed_hash(c, node, state->applied_index, state->applied_term, state->chain_hash,
                         "installs a snapshot at");
  }
}

/* ---- durability ---- */

static bool holds_durably(const checker *c, const tlog *durable, uint64_t index) {
  uint64_t hash = 0;
  if (durable == NULL) {
    return false;
  }
  if (durable->snapshot.index >= index) {
    return true; /* snapshots hold committed state only (checked on arrival) */
  }
  return tlog_prefix_hash_at(durable, index, &hash) && hash == c->committed[index].prefix_hash;
}

static bool majority_holds(const checker *c, uint64_t index, const uint64_t *voters, uint32_t count,
                           const tlog *const *durable_logs, uint64_t node_limit) {
  uint32_t holding = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (voters[i] < node_limit && holds_durably(c, durable_logs[voters[i]], index)) {
      holding++;
    }
  }
  return count == 0 || holding > count / 2;
}

bool checker_quorum_durable(const checker *c, uint64_t index, const fl_raft_conf *conf,
                            const tlog *const *durable_logs, uint64_t node_limit) {
  if (index == 0 || index > c->committed_max || !c->committed[index].known) {
    return true;
  }
  return majority_holds(c, index, conf->voters, conf->voter_count, durable_logs, node_limit) &&
         majority_holds(c, index, conf->outgoing, conf->outgoing_count, durable_logs, node_limit);
}

void checker_check_durable(checker *c, uint64_t node, const tlog *durable,
                           const fl_raft_hard_state *hard_state) {
  uint64_t commit = hard_state->commit;
  if (commit > tlog_last_index(durable)) {
    checker_fail(c, "node %llu has durable commit %llu beyond its durable log (last %llu)",
                 (unsigned long long)node, (unsigned long long)commit,
                 (unsigned long long)tlog_last_index(durable));
    return;
  }
  if (commit < durable->snapshot.index) {
    commit = durable->snapshot.index;
  }
  if (commit > c->committed_max) {
    checker_fail(c, "node %llu has durable commit %llu above the committed index %llu",
                 (unsigned long long)node, (unsigned long long)commit,
                 (unsigned long long)c->committed_max);
    return;
  }
  uint64_t hash = 0;
  if (commit > 0 && c->committed[commit].known && tlog_prefix_hash_at(durable, commit, &hash) &&
      hash != c->committed[commit].prefix_hash) {
    checker_fail(c,
                 "durability: node %llu restarts with a durable log that contradicts the "
                 "committed entry at %llu",
                 (unsigned long long)node, (unsigned long long)commit);
  }
}

/* ---- clients ---- */

uint64_t checker_acknowledged_index(const checker *c) {
  return c->acknowledged_max;
}

void checker_note_read_request(checker *c, uint64_t context, uint64_t required) {
  size_t old_capacity = c->read_capacity;
  c->read_required =
      ensure(c->read_required, &c->read_capacity, context + 1, sizeof(*c->read_required));
  for (size_t i = old_capacity; i < c->read_capacity; i++) {
    c->read_required[i] = UINT64_MAX;
  }
  c->read_required[context] = required;
}

void checker_note_read_state(checker *c, uint64_t node, uint64_t context, uint64_t index) {
  if (context >= c->read_capacity || c->read_required[context] == UINT64_MAX) {
    checker_fail(c, "node %llu returns a read state for unknown request %llu",
                 (unsigned long long)node, (unsigned long long)context);
    return;
  }
  c->read_count++;
  if (index < c->read_required[context]) {
    checker_fail(c,
                 "linearizability: node %llu serves read %llu at index %llu, below index %llu "
                 "acknowledged before the read was requested",
                 (unsigned long long)node, (unsigned long long)context, (unsigned long long)index,
                 (unsigned long long)c->read_required[context]);
  }
}

void checker_finish(checker *c, const uint64_t *applied_by_member, uint32_t member_count) {
  for (uint32_t i = 0; i < member_count; i++) {
    if (applied_by_member[i] < c->acknowledged_max) {
      checker_fail(c, "a member has applied %llu, below acknowledged index %llu at the end",
                   (unsigned long long)applied_by_member[i],
                   (unsigned long long)c->acknowledged_max);
    }
  }
  for (size_t i = 0; i < c->acknowledged_count; i++) {
    const acknowledged *a = &c->acknowledged[i];
    if (a->index > c->committed_max || !c->committed[a->index].known) {
      checker_fail(c, "acknowledged proposal %llu at %llu is not in the committed log",
                   (unsigned long long)a->proposal_id, (unsigned long long)a->index);
    }
  }
}

uint64_t checker_acknowledged_count(const checker *c) {
  return c->acknowledged_count;
}
uint64_t checker_leader_count(const checker *c) {
  return c->leader_count;
}
uint64_t checker_read_count(const checker *c) {
  return c->read_count;
}
