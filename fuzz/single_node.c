/*
 * single_node.c - the strict single-node driver of the message fuzzer
 * (see single_node.h for the checks).
 */
#include "fuzz/single_node.h"
#include "fuzz/fuzz_report.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sn_fail(const char *format, ...) __attribute__((format(printf, 1, 2), noreturn));

static void sn_fail(const char *format, ...) {
  va_list arguments;
  va_start(arguments, format);
  fuzz_report_and_abort("fuzz-raft-messages: contract violation: ", format, arguments);
}

static void *grow(void *items, size_t *capacity, size_t needed, size_t item_size) {
  if (needed <= *capacity) {
    return items;
  }
  size_t fresh = *capacity == 0 ? 16 : *capacity;
  while (fresh < needed) {
    fresh *= 2;
  }
  void *result = realloc(items, fresh * item_size);
  if (result == NULL) {
    abort();
  }
  *capacity = fresh;
  return result;
}

/* ---- the log ---- */

uint64_t sn_last_index(const sn_node *node) {
  return node->snapshot.index + node->count;
}

static const sn_entry *entry_at(const sn_node *node, uint64_t index) {
  if (index <= node->snapshot.index || index > sn_last_index(node)) {
    return NULL;
  }
  return &node->entries[index - node->snapshot.index - 1];
}

uint64_t sn_term_at(const sn_node *node, uint64_t index) {
  if (index == node->snapshot.index) {
    return node->snapshot.term;
  }
  const sn_entry *entry = entry_at(node, index);
  return entry != NULL ? entry->term : 0;
}

static void retire(sn_node *node, uint8_t *data) {
  if (data == NULL) {
    return;
  }
  node->retired =
      grow(node->retired, &node->retired_capacity, node->retired_count + 1, sizeof(uint8_t *));
  node->retired[node->retired_count++] = data;
}

static void free_retired(sn_node *node) {
  for (size_t i = 0; i < node->retired_count; i++) {
    free(node->retired[i]);
  }
  node->retired_count = 0;
}

/* Drops entries from `index` on. */
static void log_truncate(sn_node *node, uint64_t index) {
  while (sn_last_index(node) >= index && node->count > 0) {
    retire(node, node->entries[--node->count].data);
  }
}

static void log_append(sn_node *node, const fl_raft_entry *entry) {
  node->entries = grow(node->entries, &node->capacity, node->count + 1, sizeof(sn_entry));
  sn_entry *stored = &node->entries[node->count++];
  *stored = (sn_entry){.term = entry->term, .type = entry->type, .length = entry->length};
  if (entry->length > 0) {
    stored->data = malloc(entry->length);
    if (stored->data == NULL) {
      abort();
    }
    memcpy(stored->data, entry->data, entry->length);
  }
}

/* Everything up to and including `index` is gone; `meta` describes it. */
static void log_drop_through(sn_node *node, const fl_raft_snapshot_meta *meta) {
  size_t dropped = 0;
  while (dropped < node->count && node->snapshot.index + 1 + dropped <= meta->index) {
    retire(node, node->entries[dropped++].data);
  }
  memmove(node->entries, node->entries + dropped, (node->count - dropped) * sizeof(sn_entry));
  node->count -= dropped;
  node->snapshot = *meta;
}

static int storage_entries(void *context, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                           fl_raft_entry *out, uint32_t out_capacity, uint32_t *out_count) {
  const sn_node *node = context;
  *out_count = 0;
  if (lo <= node->snapshot.index) {
    return FL_RAFT_E_COMPACTED;
  }
  if (lo > sn_last_index(node) || hi > sn_last_index(node) + 1) {
    return FL_RAFT_E_UNAVAILABLE;
  }
  uint64_t bytes = 0;
  for (uint64_t index = lo; index < hi && *out_count < out_capacity; index++) {
    const sn_entry *entry = entry_at(node, index);
    if (*out_count > 0 && bytes + entry->length > max_bytes) {
      break;
    }
    bytes += entry->length;
    out[(*out_count)++] = (fl_raft_entry){.term = entry->term,
                                          .index = index,
                                          .type = entry->type,
                                          .length = entry->length,
                                          .data = entry->data};
  }
  return 0;
}

static int storage_snapshot(void *context, fl_raft_snapshot_meta *out) {
  const sn_node *node = context;
  *out = node->snapshot;
  return 0;
}

/* ---- configurations, for the metadata of a compaction point ---- */

static void conf_push(sn_node *node, uint64_t index, const fl_raft_conf *conf) {
  node->confs =
      grow(node->confs, &node->conf_capacity, node->conf_count + 1, sizeof(sn_conf_change));
  node->confs[node->conf_count++] = (sn_conf_change){.index = index, .conf = *conf};
}

/* The configuration in force at `index`: the last one applied at or below. */
static const fl_raft_conf *conf_at(const sn_node *node, uint64_t index) {
  const fl_raft_conf *conf = &node->confs[0].conf;
  for (size_t i = 0; i < node->conf_count && node->confs[i].index <= index; i++) {
    conf = &node->confs[i].conf;
  }
  return conf;
}

static void conf_reset(sn_node *node, const fl_raft_snapshot_meta *meta) {
  node->conf_count = 0;
  conf_push(node, meta->index, &meta->conf);
}

/* ---- checking and storing one update ---- */

static void store_entries(sn_node *node, const fl_raft_update *u) {
  uint64_t first = u->entries[0].index;
  if (first <= node->snapshot.index || first > sn_last_index(node) + 1) {
    sn_fail("entries from %llu do not attach to the log (%llu, %llu]", (unsigned long long)first,
            (unsigned long long)node->snapshot.index, (unsigned long long)sn_last_index(node));
  }
  log_truncate(node, first);
  for (uint32_t i = 0; i < u->entry_count; i++) {
    const fl_raft_entry *e = &u->entries[i];
    if (e->index != first + i || e->term < sn_term_at(node, e->index - 1) ||
        e->term > u->hard_state.term || (e->length > 0 && e->data == NULL)) {
      sn_fail("update entry %u (index %llu, term %llu) breaks the log order", i,
              (unsigned long long)e->index, (unsigned long long)e->term);
    }
    log_append(node, e);
  }
}

static void check_hard_state(sn_node *node, const fl_raft_update *u) {
  const fl_raft_hard_state *hs = &u->hard_state;
  if (hs->term < node->highest_term || u->term != hs->term) {
    sn_fail("term goes back from %llu to %llu", (unsigned long long)node->highest_term,
            (unsigned long long)hs->term);
  }
  node->highest_term = hs->term;
  if (hs->vote != 0) {
    if (node->vote_term == hs->term && node->vote != 0 && node->vote != hs->vote) {
      sn_fail("two votes in term %llu: %llu and %llu", (unsigned long long)hs->term,
              (unsigned long long)node->vote, (unsigned long long)hs->vote);
    }
    node->vote_term = hs->term;
    node->vote = hs->vote;
  }
  if (hs->commit < node->highest_commit || hs->commit > sn_last_index(node)) {
    sn_fail("commit %llu goes back (from %llu) or passes the log (last %llu)",
            (unsigned long long)hs->commit, (unsigned long long)node->highest_commit,
            (unsigned long long)sn_last_index(node));
  }
  node->highest_commit = hs->commit;
  if (u->hard_state_changed) {
    node->hard_state = *hs;
  }
}

static uint64_t checksum(uint64_t sum, const uint8_t *data, uint32_t length) {
  for (uint32_t i = 0; i < length; i++) {
    sum = (sum ^ data[i]) * 0x100000001b3ull;
  }
  return sum;
}

/* An entry handed out (to apply or to send) must be what the log holds. */
static void check_matches_log(sn_node *node, const fl_raft_entry *e, const char *what) {
  const sn_entry *stored = entry_at(node, e->index);
  node->payload_checksum = checksum(node->payload_checksum, e->data, e->length);
  if (stored == NULL || stored->term != e->term || stored->type != e->type ||
      stored->length != e->length ||
      (e->length > 0 && memcmp(stored->data, e->data, e->length) != 0)) {
    sn_fail("%s entry %llu (term %llu) is not the one in the log", what,
            (unsigned long long)e->index, (unsigned long long)e->term);
  }
}

static void apply_committed(sn_node *node, const fl_raft_update *u) {
  for (uint32_t i = 0; i < u->committed_count; i++) {
    const fl_raft_entry *e = &u->committed[i];
    if (e->index != node->applied + 1 || e->index > u->hard_state.commit) {
      sn_fail("committed entry %llu does not follow applied %llu within commit %llu",
              (unsigned long long)e->index, (unsigned long long)node->applied,
              (unsigned long long)u->hard_state.commit);
    }
    check_matches_log(node, e, "committed");
    node->applied = e->index;
    fl_raft_conf conf;
    if (e->type == FL_RAFT_ENTRY_CONF_CHANGE &&
        fl_raft_conf_decode(e->data, e->length, &conf) == 0) {
      conf_push(node, e->index, &conf);
    }
  }
}

static void check_promise(const sn_node *node, const fl_raft_message *m, bool after_write) {
  bool granted_vote = m->type == FL_RAFT_MSG_VOTE_RESP && !m->reject;
  bool acknowledges = m->type == FL_RAFT_MSG_APPEND_RESP && !m->reject && m->index > 0;
  if ((granted_vote || acknowledges) && !after_write) {
    sn_fail("%s leaves before the write that makes it true", fl_raft_message_type_name(m->type));
  }
  if (granted_vote && (node->hard_state.term != m->term || node->hard_state.vote != m->to)) {
    sn_fail("vote for %llu in term %llu granted but not persisted", (unsigned long long)m->to,
            (unsigned long long)m->term);
  }
  if (acknowledges && m->index > sn_last_index(node)) {
    sn_fail("acknowledges index %llu beyond the log (last %llu)", (unsigned long long)m->index,
            (unsigned long long)sn_last_index(node));
  }
}

static void check_message(sn_node *node, const fl_raft_update *u, const fl_raft_message *m,
                          bool after_write) {
  bool pre_vote = m->type == FL_RAFT_MSG_PRE_VOTE || m->type == FL_RAFT_MSG_PRE_VOTE_RESP;
  if (m->from != SN_SELF || m->to == 0 || m->to == SN_SELF || m->type == 0 ||
      m->type >= FL_RAFT_MSG_TYPE_COUNT || (!pre_vote && m->term != u->term) ||
      (m->type == FL_RAFT_MSG_PRE_VOTE && m->term != u->term + 1)) {
    sn_fail("malformed %s message %llu->%llu term %llu (node term %llu)",
            fl_raft_message_type_name(m->type), (unsigned long long)m->from,
            (unsigned long long)m->to, (unsigned long long)m->term, (unsigned long long)u->term);
  }
  if (m->entry_count > 0 && (m->type != FL_RAFT_MSG_APPEND || m->entries == NULL ||
                             m->entry_count > node->options.max_entries_per_message)) {
    sn_fail("%u entries on a %s message", m->entry_count, fl_raft_message_type_name(m->type));
  }
  if (m->type == FL_RAFT_MSG_APPEND && m->log_term != sn_term_at(node, m->index)) {
    sn_fail("append after %llu claims term %llu, the log has %llu", (unsigned long long)m->index,
            (unsigned long long)m->log_term, (unsigned long long)sn_term_at(node, m->index));
  }
  for (uint32_t i = 0; i < m->entry_count; i++) {
    if (m->entries[i].index != m->index + 1 + i) {
      sn_fail("append entries are not consecutive after %llu", (unsigned long long)m->index);
    }
    check_matches_log(node, &m->entries[i], "sent");
  }
  if (m->type == FL_RAFT_MSG_SNAPSHOT &&
      (m->snapshot.index != node->snapshot.index || m->snapshot.term != node->snapshot.term)) {
    sn_fail("sends snapshot %llu that storage does not hold",
            (unsigned long long)m->snapshot.index);
  }
  check_promise(node, m, after_write);
}

static void handle_update(sn_node *node, const fl_raft_update *u) {
  if (u->snapshot != NULL) {
    if (u->snapshot->index <= node->applied || !fl_raft_conf_is_valid(&u->snapshot->conf)) {
      sn_fail("installs snapshot %llu at or below applied %llu, or with a bad configuration",
              (unsigned long long)u->snapshot->index, (unsigned long long)node->applied);
    }
    log_truncate(node, 0);
    node->snapshot = *u->snapshot;
    node->applied = u->snapshot->index;
    conf_reset(node, u->snapshot);
  }
  if (u->entry_count > 0) {
    store_entries(node, u);
  }
  check_hard_state(node, u);
  if (u->has_write) {
    if (u->write_id <= node->last_write_id) {
      sn_fail("write id %llu does not increase", (unsigned long long)u->write_id);
    }
    node->last_write_id = u->write_id;
  }
  for (uint32_t i = 0; i < u->message_count; i++) {
    check_message(node, u, &u->messages[i], false);
  }
  for (uint32_t i = 0; i < u->message_after_write_count; i++) {
    check_message(node, u, &u->messages_after_write[i], true);
  }
  apply_committed(node, u);
  /* A leader answers at its commit index; a follower relays the leader's,
   * which may be ahead of its own commit (the client waits for it). */
  for (uint32_t i = 0; i < u->read_state_count && u->role == FL_RAFT_LEADER; i++) {
    if (u->read_states[i].index > u->hard_state.commit) {
      sn_fail("read state at %llu beyond commit %llu", (unsigned long long)u->read_states[i].index,
              (unsigned long long)u->hard_state.commit);
    }
  }
}

/* Updates one input may cause before the driver calls it a livelock. */
#define SN_MAX_UPDATES_PER_DRAIN 10000

void sn_drain(sn_node *node) {
  for (uint32_t updates = 0; fl_raft_has_update(node->raft); updates++) {
    if (updates == SN_MAX_UPDATES_PER_DRAIN) {
      sn_fail("the core keeps producing updates (livelock)");
    }
    fl_raft_update update;
    fl_raft_get_update(node->raft, &update);
    handle_update(node, &update);
    fl_raft_advance(node->raft, &update);
    free_retired(node);
  }
}

/* The introspection calls must hold up in any state, too. */
static void exercise_introspection(const sn_node *node) {
  for (uint64_t peer = 0; peer <= 8; peer++) {
    uint64_t match = 0;
    uint64_t next = 0;
    if (fl_raft_peer_match(node->raft, peer, &match, &next) && match >= next) {
      sn_fail("peer %llu: match %llu not below next %llu", (unsigned long long)peer,
              (unsigned long long)match, (unsigned long long)next);
    }
  }
  if (fl_raft_memory_bytes(node->raft) == 0) {
    sn_fail("a group that holds no memory");
  }
}

void sn_check(const sn_node *node) {
  exercise_introspection(node);
  const char *broken = NULL;
  if (!fl_raft_check_invariants(node->raft, &broken)) {
    sn_fail("core invariant broken: %s", broken != NULL ? broken : "?");
  }
  fl_raft_status status;
  fl_raft_get_status(node->raft, &status);
  if (status.last_index != sn_last_index(node) || status.first_index != node->snapshot.index + 1 ||
      status.applied != node->applied ||
      fl_raft_term_at(node->raft, status.last_index) != sn_term_at(node, status.last_index)) {
    sn_fail("core log [%llu, %llu] applied %llu differs from the stored (%llu, %llu] "
            "applied %llu",
            (unsigned long long)status.first_index, (unsigned long long)status.last_index,
            (unsigned long long)status.applied, (unsigned long long)node->snapshot.index,
            (unsigned long long)sn_last_index(node), (unsigned long long)node->applied);
  }
}

/* ---- life cycle ---- */

static fl_raft_term_run *term_runs(const sn_node *node, uint32_t *count) {
  fl_raft_term_run *runs = malloc((node->count + 1) * sizeof(*runs));
  if (runs == NULL) {
    abort();
  }
  *count = 0;
  for (size_t i = 0; i < node->count; i++) {
    if (*count == 0 || runs[*count - 1].term != node->entries[i].term) {
      runs[(*count)++] = (fl_raft_term_run){.first_index = node->snapshot.index + 1 + i,
                                            .term = node->entries[i].term};
    }
  }
  return runs;
}

static void start_core(sn_node *node) {
  fl_raft_restore restore;
  memset(&restore, 0, sizeof(restore));
  restore.hard_state = node->hard_state;
  if (restore.hard_state.commit < node->snapshot.index) {
    restore.hard_state.commit = node->snapshot.index;
  }
  restore.snapshot = node->snapshot;
  restore.last_index = sn_last_index(node);
  restore.applied = node->snapshot.index;
  fl_raft_term_run *runs = term_runs(node, &restore.term_run_count);
  restore.term_runs = runs;
  node->applied = node->snapshot.index;
  /* The core replays the committed log: configurations come back with it. */
  while (node->conf_count > 1 && node->confs[node->conf_count - 1].index > node->applied) {
    node->conf_count--;
  }
  node->raft =
      fl_raft_create(SN_SELF, &node->options, &node->storage, &restore, 0x5eed + node->incarnation);
  free(runs);
  if (node->raft == NULL) {
    sn_fail("fl_raft_create refuses the state the core itself stored (snapshot %llu, last %llu, "
            "commit %llu, term %llu)",
            (unsigned long long)node->snapshot.index, (unsigned long long)sn_last_index(node),
            (unsigned long long)node->hard_state.commit, (unsigned long long)node->hard_state.term);
  }
  sn_drain(node);
}

void sn_init(sn_node *node, const fl_raft_options *options, const fl_raft_conf *conf) {
  memset(node, 0, sizeof(*node));
  node->options = *options;
  node->storage =
      (fl_raft_storage){.context = node, .entries = storage_entries, .snapshot = storage_snapshot};
  node->snapshot.conf = *conf;
  conf_reset(node, &node->snapshot);
  start_core(node);
}

void sn_restart(sn_node *node) {
  fl_raft_destroy(node->raft);
  node->raft = NULL;
  free_retired(node);
  node->incarnation++;
  node->last_write_id = 0; /* a new core numbers its writes from 1 again */
  start_core(node);
}

int sn_compact(sn_node *node, uint64_t index) {
  int rc = fl_raft_compact(node->raft, index);
  if (rc == 0 && index > node->snapshot.index) {
    if (index > node->applied || index > sn_last_index(node)) {
      sn_fail("the core compacts to %llu beyond applied %llu", (unsigned long long)index,
              (unsigned long long)node->applied);
    }
    fl_raft_snapshot_meta meta = {
        .index = index, .term = sn_term_at(node, index), .conf = *conf_at(node, index)};
    log_drop_through(node, &meta);
  }
  sn_drain(node);
  free_retired(node);
  return rc;
}

void sn_destroy(sn_node *node) {
  fl_raft_destroy(node->raft);
  log_truncate(node, 0);
  free_retired(node);
  free(node->entries);
  free(node->confs);
  free(node->retired);
  memset(node, 0, sizeof(*node));
}
