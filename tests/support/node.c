/*
 * node.c - the in-memory test node: one fl_raft and the driver around it.
 *
 * States of a node:
 *
 *     tnode_create -> UP --tnode_crash--> DOWN --tnode_restart--> UP
 *
 * Invariants while UP (each update keeps them):
 *   - volatile log = durable log with every pending write applied in order;
 *   - state.applied_index <= hard_state.commit <= last index of the log;
 *   - snapshot_state describes log.snapshot (same index, term and hash);
 *   - blobs and envelopes the core may still point at (retired, stepped)
 *     are freed only after fl_raft_advance().
 * While DOWN only the durable part exists.
 */
#include "tests/support/node.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/hash.h"

/* Snapshots received and not installed yet that a node remembers: the core
 * may install one after others arrived (duplicates, reordering). */
#define TNODE_INCOMING_SNAPSHOTS 4
/* Updates one input may produce before the driver calls it a livelock. */
#define TNODE_MAX_UPDATES_PER_DRAIN 100000

typedef struct tnode_write {
  uint64_t write_id;
  bool hard_state_changed;
  fl_raft_hard_state hard_state;
  fl_raft_snapshot_meta snapshot;
  tstate *snapshot_state; /* NULL unless the write installs a snapshot */
  uint64_t first_index;
  tlog_entry *entries; /* blob references owned; prefix hashes unused */
  uint32_t entry_count;
  tenvelope **messages; /* messages_after_write, owned */
  uint32_t message_count;
} tnode_write;

typedef struct tenvelope_list {
  tenvelope **items;
  size_t head;
  size_t count;
  size_t capacity;
} tenvelope_list;

struct tnode {
  uint64_t id;
  const fl_raft_options *options;
  uint64_t seed;
  uint64_t incarnation;
  const tnode_observer *observer;
  fl_raft *raft;
  fl_raft_storage storage;

  /* volatile */
  tlog log;
  fl_raft_hard_state hard_state;
  tstate state;
  tstate snapshot_state;
  tstate incoming[TNODE_INCOMING_SNAPSHOTS]; /* ring of received snapshot data */
  uint32_t incoming_count;

  /* durable */
  tlog durable_log;
  fl_raft_hard_state durable_hard_state;
  tstate durable_snapshot;

  tnode_write *writes; /* ring: FIFO of pending writes, oldest at write_head */
  size_t write_head;
  size_t write_count;
  size_t write_capacity;
  tenvelope_list outbox;
  tblob_list retired_blobs;
  tenvelope_list retired_envelopes;
  char error[256];
};

static void *grow(void *items, size_t *capacity, size_t item_size) {
  *capacity = *capacity == 0 ? 16 : 2 * *capacity;
  void *result = realloc(items, *capacity * item_size);
  if (result == NULL) {
    fprintf(stderr, "tests: out of memory\n");
    abort();
  }
  return result;
}

static void envelope_list_push(tenvelope_list *list, tenvelope *envelope) {
  if (list->head > 0 && list->head + list->count == list->capacity) {
    memmove(list->items, list->items + list->head, list->count * sizeof(*list->items));
    list->head = 0;
  }
  if (list->head + list->count == list->capacity) {
    list->items = grow(list->items, &list->capacity, sizeof(*list->items));
  }
  list->items[list->head + list->count++] = envelope;
}

static tenvelope *envelope_list_pop(tenvelope_list *list) {
  if (list->count == 0) {
    return NULL;
  }
  list->count--;
  return list->items[list->head++];
}

static void envelope_list_clear(tenvelope_list *list) {
  for (tenvelope *e = envelope_list_pop(list); e != NULL; e = envelope_list_pop(list)) {
    tenvelope_destroy(e);
  }
  list->head = 0;
}

static void envelope_list_destroy(tenvelope_list *list) {
  envelope_list_clear(list);
  free(list->items);
  memset(list, 0, sizeof(*list));
}

/* Records the first breach only: later ones are usually its consequences. */
static void fail(tnode *node, const char *format, ...) {
  if (node->error[0] != '\0') {
    return;
  }
  int used =
      snprintf(node->error, sizeof(node->error), "node %llu: ", (unsigned long long)node->id);
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(node->error + used, sizeof(node->error) - (size_t)used, format, arguments);
  va_end(arguments);
}

/* ---- storage callbacks: the core reads the volatile log ---- */

static int storage_entries(void *context, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                           fl_raft_entry *out, uint32_t out_capacity, uint32_t *out_count) {
  tnode *node = context;
  *out_count = 0;
  if (lo <= node->log.snapshot.index) {
    return FL_RAFT_E_COMPACTED;
  }
  if (lo > tlog_last_index(&node->log) || hi > tlog_last_index(&node->log) + 1) {
    return FL_RAFT_E_UNAVAILABLE;
  }
  uint64_t bytes = 0;
  for (uint64_t index = lo; index < hi && *out_count < out_capacity; index++) {
    const tlog_entry *entry = tlog_entry_at(&node->log, index);
    bytes += tlog_entry_length(entry);
    if (*out_count > 0 && bytes > max_bytes) {
      break;
    }
    out[*out_count] = (fl_raft_entry){.term = entry->term,
                                      .index = index,
                                      .type = entry->type,
                                      .length = tlog_entry_length(entry),
                                      .data = tlog_entry_data(entry)};
    (*out_count)++;
  }
  return 0;
}

static int storage_snapshot(void *context, fl_raft_snapshot_meta *out) {
  tnode *node = context;
  *out = node->log.snapshot;
  return 0;
}

/* ---- writes ---- */

static void write_destroy(tnode_write *write) {
  free(write->snapshot_state);
  for (uint32_t i = 0; i < write->entry_count; i++) {
    tblob_release(write->entries[i].blob);
  }
  free(write->entries);
  for (uint32_t i = 0; i < write->message_count; i++) {
    tenvelope_destroy(write->messages[i]);
  }
  free(write->messages);
}

static void write_add_message(tnode_write *write, tenvelope *envelope) {
  write->messages = realloc(write->messages, (write->message_count + 1) * sizeof(tenvelope *));
  if (write->messages == NULL) {
    fprintf(stderr, "tests: out of memory\n");
    abort();
  }
  write->messages[write->message_count++] = envelope;
}

static tnode_write *write_at(tnode *node, size_t position) {
  return &node->writes[(node->write_head + position) % node->write_capacity];
}

static void discard_writes(tnode *node) {
  for (size_t i = 0; i < node->write_count; i++) {
    write_destroy(write_at(node, i));
  }
  node->write_head = 0;
  node->write_count = 0;
}

/* ---- volatile side of an update ---- */

static void remember_incoming_snapshot(tnode *node, const tstate *state) {
  node->incoming[node->incoming_count % TNODE_INCOMING_SNAPSHOTS] = *state;
  node->incoming_count++;
}

static const tstate *find_incoming_snapshot(const tnode *node, const fl_raft_snapshot_meta *meta) {
  uint32_t held = node->incoming_count < TNODE_INCOMING_SNAPSHOTS ? node->incoming_count
                                                                  : TNODE_INCOMING_SNAPSHOTS;
  for (uint32_t i = 0; i < held; i++) {
    const tstate *state = &node->incoming[i];
    if (state->applied_index == meta->index && state->applied_term == meta->term) {
      return state;
    }
  }
  return NULL;
}

static void install_incoming_snapshot(tnode *node, const fl_raft_snapshot_meta *meta) {
  const tstate *incoming = find_incoming_snapshot(node, meta);
  if (incoming == NULL) {
    fail(node, "update installs snapshot (%llu, term %llu) that was never received",
         (unsigned long long)meta->index, (unsigned long long)meta->term);
    return;
  }
  if (!fl_raft_conf_equal(&incoming->conf, &meta->conf)) {
    fail(node, "installed snapshot %llu has another configuration than the one sent",
         (unsigned long long)meta->index);
  }
  tstate state = *incoming;
  tlog_reset(&node->log, meta, state.chain_hash, &node->retired_blobs);
  node->state = state;
  node->snapshot_state = state;
  if (node->observer != NULL && node->observer->on_snapshot != NULL) {
    node->observer->on_snapshot(node->observer->context, node, &node->state);
  }
}

static void store_entries(tnode *node, const fl_raft_entry *entries, uint32_t count) {
  uint64_t first = entries[0].index;
  if (first <= node->log.snapshot.index || first > tlog_last_index(&node->log) + 1) {
    fail(node, "update entries from %llu do not attach to the log [%llu, %llu]",
         (unsigned long long)first, (unsigned long long)tlog_first_index(&node->log),
         (unsigned long long)tlog_last_index(&node->log));
    return;
  }
  tlog_truncate(&node->log, first, &node->retired_blobs);
  for (uint32_t i = 0; i < count; i++) {
    uint64_t index = first + i;
    if (entries[i].index != index || entries[i].term < tlog_term_at(&node->log, index - 1)) {
      fail(node, "update entry %u (index %llu, term %llu) breaks the log order", i,
           (unsigned long long)entries[i].index, (unsigned long long)entries[i].term);
      return;
    }
    tblob *blob = tblob_create(entries[i].data, entries[i].length);
    const tlog_entry *stored = tlog_append(&node->log, entries[i].term, entries[i].type, blob);
    if (node->observer != NULL && node->observer->on_append != NULL) {
      node->observer->on_append(node->observer->context, node, index, stored);
    }
  }
}

static void store_update(tnode *node, const fl_raft_update *update) {
  if (update->snapshot != NULL) {
    install_incoming_snapshot(node, update->snapshot);
  }
  if (update->entry_count > 0) {
    store_entries(node, update->entries, update->entry_count);
  }
  if (update->hard_state_changed) {
    node->hard_state = update->hard_state;
  }
}

static tnode_write *push_write(tnode *node) {
  if (node->write_count == node->write_capacity) {
    size_t old_capacity = node->write_capacity;
    node->writes = grow(node->writes, &node->write_capacity, sizeof(*node->writes));
    /* Unwrap the ring: the part before the head moves after the old end,
     * so the writes run from the head on without wrapping. */
    for (size_t i = 0; i < node->write_head; i++) {
      node->writes[old_capacity + i] = node->writes[i];
    }
  }
  tnode_write *write = write_at(node, node->write_count++);
  memset(write, 0, sizeof(*write));
  return write;
}

/* The write shares the payload blobs the volatile log just stored. */
static void queue_write(tnode *node, const fl_raft_update *update) {
  tnode_write *write = push_write(node);
  write->write_id = update->write_id;
  write->hard_state_changed = update->hard_state_changed;
  write->hard_state = update->hard_state;
  if (update->snapshot != NULL) {
    write->snapshot = *update->snapshot;
    write->snapshot_state = malloc(sizeof(*write->snapshot_state));
    if (write->snapshot_state == NULL) {
      abort();
    }
    *write->snapshot_state = node->snapshot_state;
  }
  if (update->entry_count > 0) {
    write->first_index = update->entries[0].index;
    write->entry_count = update->entry_count;
    write->entries = malloc(update->entry_count * sizeof(*write->entries));
    if (write->entries == NULL) {
      abort();
    }
    for (uint32_t i = 0; i < update->entry_count; i++) {
      const tlog_entry *stored = tlog_entry_at(&node->log, write->first_index + i);
      write->entries[i] = stored != NULL ? *stored : (tlog_entry){0};
      tblob_retain(write->entries[i].blob);
    }
  }
  if (node->observer != NULL && node->observer->on_write != NULL) {
    node->observer->on_write(node->observer->context, node, update->write_id);
  }
}

static tenvelope *envelope_for(tnode *node, const fl_raft_message *message) {
  const tstate *state = NULL;
  if (message->type == FL_RAFT_MSG_SNAPSHOT) {
    if (message->snapshot.index == node->snapshot_state.applied_index &&
        message->snapshot.term == node->snapshot_state.applied_term) {
      state = &node->snapshot_state;
    } else {
      fail(node, "sends snapshot (%llu, term %llu) but storage holds (%llu, term %llu)",
           (unsigned long long)message->snapshot.index, (unsigned long long)message->snapshot.term,
           (unsigned long long)node->snapshot_state.applied_index,
           (unsigned long long)node->snapshot_state.applied_term);
    }
  }
  tenvelope *envelope = tenvelope_create(message, state);
  envelope->sender_incarnation = node->incarnation;
  return envelope;
}

/*
 * Messages after a write wait for it; when the update has no write of its
 * own they wait for the newest pending one, since they may acknowledge
 * what it holds. With nothing pending they go at once.
 */
static void route_messages(tnode *node, const fl_raft_update *update) {
  for (uint32_t i = 0; i < update->message_count; i++) {
    envelope_list_push(&node->outbox, envelope_for(node, &update->messages[i]));
  }
  for (uint32_t i = 0; i < update->message_after_write_count; i++) {
    tenvelope *envelope = envelope_for(node, &update->messages_after_write[i]);
    if (node->write_count > 0) {
      write_add_message(write_at(node, node->write_count - 1), envelope);
    } else {
      envelope_list_push(&node->outbox, envelope);
    }
  }
}

static void apply_committed(tnode *node, const fl_raft_update *update) {
  for (uint32_t i = 0; i < update->committed_count; i++) {
    const fl_raft_entry *entry = &update->committed[i];
    const char *reason = NULL;
    if (entry->index > node->hard_state.commit) {
      fail(node, "applies entry %llu above its commit index %llu", (unsigned long long)entry->index,
           (unsigned long long)node->hard_state.commit);
    }
    if (tstate_apply(&node->state, entry, &reason) != 0) {
      fail(node, "%s (entry %llu, applied %llu)", reason, (unsigned long long)entry->index,
           (unsigned long long)node->state.applied_index);
      return;
    }
    if (node->observer != NULL && node->observer->on_apply != NULL) {
      node->observer->on_apply(node->observer->context, node, entry, &node->state);
    }
  }
}

static void release_after_advance(tnode *node) {
  tblob_list_release_all(&node->retired_blobs);
  envelope_list_clear(&node->retired_envelopes);
}

static void handle_update(tnode *node, const fl_raft_update *update) {
  bool carries_write =
      update->snapshot != NULL || update->entry_count > 0 || update->hard_state_changed;
  if (carries_write && !update->has_write) {
    fail(node, "update carries entries, a snapshot or a hard state but has_write is false");
  }
  store_update(node, update);
  if (node->observer != NULL && node->observer->on_update != NULL) {
    node->observer->on_update(node->observer->context, node, update);
  }
  if (update->has_write) {
    queue_write(node, update);
  }
  route_messages(node, update);
  apply_committed(node, update);
}

int tnode_drain(tnode *node) {
  if (node->raft == NULL) {
    return -1;
  }
  uint32_t updates = 0;
  while (fl_raft_has_update(node->raft)) {
    if (++updates > TNODE_MAX_UPDATES_PER_DRAIN) {
      fail(node, "the core keeps producing updates (livelock)");
      break;
    }
    fl_raft_update update;
    fl_raft_get_update(node->raft, &update);
    handle_update(node, &update);
    fl_raft_advance(node->raft, &update);
    release_after_advance(node);
  }
  return node->error[0] != '\0' ? -1 : 0;
}

/* ---- durable side ---- */

static void make_entries_durable(tnode *node, const tnode_write *write) {
  tlog *durable = &node->durable_log;
  uint64_t from = write->first_index;
  if (from <= durable->snapshot.index) {
    from = durable->snapshot.index + 1; /* a snapshot already covers the head */
  }
  uint64_t end = write->first_index + write->entry_count;
  if (from >= end) {
    return;
  }
  if (from > tlog_last_index(durable) + 1) {
    fail(node, "write %llu would leave a gap in the durable log at %llu",
         (unsigned long long)write->write_id, (unsigned long long)tlog_last_index(durable) + 1);
    return;
  }
  tlog_truncate(durable, from, NULL);
  for (uint64_t index = from; index < end; index++) {
    const tlog_entry *entry = &write->entries[index - write->first_index];
    tlog_append(durable, entry->term, entry->type, tblob_retain(entry->blob));
  }
}

static void make_durable(tnode *node, const tnode_write *write) {
  if (write->hard_state_changed) {
    node->durable_hard_state = write->hard_state;
  }
  /* A newer local snapshot may already cover the received one. */
  if (write->snapshot_state != NULL && write->snapshot.index > node->durable_log.snapshot.index) {
    tlog_reset(&node->durable_log, &write->snapshot, write->snapshot_state->chain_hash, NULL);
    node->durable_snapshot = *write->snapshot_state;
  }
  if (write->entry_count > 0) {
    make_entries_durable(node, write);
  }
}

int tnode_complete_write(tnode *node, uint64_t *write_id) {
  if (node->raft == NULL || node->write_count == 0) {
    return -1;
  }
  tnode_write write = *write_at(node, 0);
  node->write_head = (node->write_head + 1) % node->write_capacity;
  node->write_count--;
  make_durable(node, &write);
  for (uint32_t i = 0; i < write.message_count; i++) {
    envelope_list_push(&node->outbox, write.messages[i]);
  }
  write.message_count = 0;
  *write_id = write.write_id;
  write_destroy(&write);
  return node->error[0] != '\0' ? -1 : 0;
}

/* ---- life cycle ---- */

static uint64_t core_seed(const tnode *node) {
  return thash_mix(node->seed ^ thash_mix(node->id * 0x9e3779b97f4a7c15ull) ^
                   thash_mix(node->incarnation + 0x632be59bd9b4e019ull));
}

/* Term runs of the durable log, as fl_raft_restore wants them. */
static fl_raft_term_run *durable_term_runs(const tnode *node, uint32_t *count) {
  const tlog *log = &node->durable_log;
  fl_raft_term_run *runs = malloc((log->count + 1) * sizeof(*runs));
  if (runs == NULL) {
    abort();
  }
  *count = 0;
  for (size_t i = 0; i < log->count; i++) {
    if (*count == 0 || runs[*count - 1].term != log->entries[i].term) {
      runs[*count].first_index = log->snapshot.index + 1 + i;
      runs[*count].term = log->entries[i].term;
      (*count)++;
    }
  }
  return runs;
}

/* Builds the volatile state from the durable one and starts a core. */
static int start_core(tnode *node) {
  fl_raft_restore restore;
  memset(&restore, 0, sizeof(restore));
  restore.hard_state = node->durable_hard_state;
  restore.snapshot = node->durable_log.snapshot;
  /* A snapshot holds only committed entries, even when the hard state that
   * says so was not written yet. */
  if (restore.hard_state.commit < restore.snapshot.index) {
    restore.hard_state.commit = restore.snapshot.index;
  }
  restore.last_index = tlog_last_index(&node->durable_log);
  restore.applied = restore.snapshot.index;
  fl_raft_term_run *runs = durable_term_runs(node, &restore.term_run_count);
  restore.term_runs = runs;

  tlog_copy(&node->log, &node->durable_log);
  node->hard_state = restore.hard_state;
  node->state = node->durable_snapshot;
  node->snapshot_state = node->durable_snapshot;
  node->incoming_count = 0;
  node->raft = fl_raft_create(node->id, node->options, &node->storage, &restore, core_seed(node));
  free(runs);
  if (node->raft == NULL) {
    fail(node, "fl_raft_create refused the restore (commit %llu, last %llu, snapshot %llu)",
         (unsigned long long)restore.hard_state.commit, (unsigned long long)restore.last_index,
         (unsigned long long)restore.snapshot.index);
    tlog_destroy(&node->log, NULL);
    return -1;
  }
  return tnode_drain(node);
}

tnode *tnode_create(const tnode_config *config) {
  tnode *node = calloc(1, sizeof(*node));
  if (node == NULL || config->id == 0) {
    free(node);
    return NULL;
  }
  node->id = config->id;
  node->options = config->options;
  node->seed = config->seed;
  node->observer = config->observer;
  node->storage =
      (fl_raft_storage){.context = node, .entries = storage_entries, .snapshot = storage_snapshot};
  fl_raft_snapshot_meta start;
  memset(&start, 0, sizeof(start));
  if (config->initial_conf != NULL) {
    start.conf = *config->initial_conf;
  }
  tstate_init(&node->durable_snapshot, config->initial_conf);
  tlog_init(&node->durable_log, &start, node->durable_snapshot.chain_hash);
  if (start_core(node) != 0 && node->raft == NULL) {
    tnode_destroy(node);
    return NULL;
  }
  return node;
}

int tnode_create_cluster(tnode **nodes, uint32_t count, const fl_raft_options *options,
                         uint64_t seed, const tnode_observer *observer) {
  if (count == 0 || count > FL_RAFT_MAX_VOTERS) {
    return -1;
  }
  fl_raft_conf conf;
  memset(&conf, 0, sizeof(conf));
  conf.voter_count = (uint8_t)count;
  for (uint32_t i = 0; i < count; i++) {
    conf.voters[i] = i + 1;
  }
  for (uint32_t i = 0; i < count; i++) {
    tnode_config config = {
        .id = i + 1, .options = options, .seed = seed, .initial_conf = &conf, .observer = observer};
    nodes[i] = tnode_create(&config);
    if (nodes[i] == NULL) {
      for (uint32_t j = 0; j < i; j++) {
        tnode_destroy(nodes[j]);
      }
      return -1;
    }
  }
  return 0;
}

void tnode_crash(tnode *node) {
  if (node->raft == NULL) {
    return;
  }
  fl_raft_destroy(node->raft);
  node->raft = NULL;
  discard_writes(node);
  envelope_list_clear(&node->outbox);
  release_after_advance(node);
  tlog_destroy(&node->log, NULL);
  node->incoming_count = 0;
}

int tnode_restart(tnode *node) {
  if (node->raft != NULL) {
    return -1;
  }
  node->incarnation++;
  return start_core(node);
}

void tnode_destroy(tnode *node) {
  if (node == NULL) {
    return;
  }
  tnode_crash(node);
  free(node->writes);
  envelope_list_destroy(&node->outbox);
  envelope_list_destroy(&node->retired_envelopes);
  tblob_list_destroy(&node->retired_blobs);
  tlog_destroy(&node->durable_log, NULL);
  free(node);
}

/* ---- inputs ---- */

int tnode_tick(tnode *node) {
  if (node->raft == NULL) {
    return -1;
  }
  fl_raft_tick(node->raft);
  return tnode_drain(node);
}

int tnode_step(tnode *node, tenvelope *envelope) {
  if (node->raft == NULL) {
    tenvelope_destroy(envelope);
    return -1;
  }
  if (envelope->message.type == FL_RAFT_MSG_SNAPSHOT && envelope->snapshot_state != NULL) {
    remember_incoming_snapshot(node, envelope->snapshot_state);
  }
  /* The core references the entries until its next advance. */
  envelope_list_push(&node->retired_envelopes, envelope);
  int result = fl_raft_step(node->raft, &envelope->message);
  int drained = tnode_drain(node);
  return drained != 0 ? drained : result;
}

int tnode_propose(tnode *node, const uint8_t *const *data, const uint32_t *lengths,
                  uint32_t count) {
  if (node->raft == NULL || count == 0) {
    return -1;
  }
  if (count > TNODE_MAX_PROPOSAL_BATCH) {
    return FL_RAFT_E_INVALID;
  }
  const uint8_t *copies[TNODE_MAX_PROPOSAL_BATCH];
  for (uint32_t i = 0; i < count; i++) {
    tblob *blob = tblob_create(data[i], lengths[i]);
    copies[i] = blob == NULL ? NULL : blob->data;
    tblob_list_push(&node->retired_blobs, blob);
  }
  int result = fl_raft_propose(node->raft, copies, lengths, count);
  int drained = tnode_drain(node);
  return drained != 0 ? drained : result;
}

int tnode_persisted(tnode *node, uint64_t write_id) {
  if (node->raft == NULL) {
    return -1;
  }
  fl_raft_persisted(node->raft, write_id);
  return tnode_drain(node);
}

/* Only with no write pending: then the applied entries and a hard state
 * whose term covers them are all durable, so the snapshot never gets ahead
 * of the durable hard state. */
int tnode_take_snapshot(tnode *node) {
  if (node->raft == NULL || node->write_count > 0 ||
      node->state.applied_index <= node->log.snapshot.index) {
    return 1;
  }
  fl_raft_snapshot_meta meta = {.index = node->state.applied_index,
                                .term = node->state.applied_term,
                                .conf = node->state.conf};
  int result = fl_raft_compact(node->raft, meta.index);
  if (result != 0) {
    return result;
  }
  node->snapshot_state = node->state;
  node->durable_snapshot = node->state;
  tlog_compact(&node->log, &meta, node->state.chain_hash, &node->retired_blobs);
  tlog_compact(&node->durable_log, &meta, node->state.chain_hash, NULL);
  return tnode_drain(node);
}

tenvelope *tnode_take_message(tnode *node) {
  return envelope_list_pop(&node->outbox);
}

/* ---- accessors ---- */

uint64_t tnode_id(const tnode *node) {
  return node->id;
}
bool tnode_is_up(const tnode *node) {
  return node->raft != NULL;
}
fl_raft *tnode_raft(tnode *node) {
  return node->raft;
}
uint64_t tnode_incarnation(const tnode *node) {
  return node->incarnation;
}
const tlog *tnode_log(const tnode *node) {
  return &node->log;
}
const tlog *tnode_durable_log(const tnode *node) {
  return &node->durable_log;
}
const tstate *tnode_state(const tnode *node) {
  return &node->state;
}
const tstate *tnode_durable_snapshot(const tnode *node) {
  return &node->durable_snapshot;
}
const fl_raft_hard_state *tnode_hard_state(const tnode *node) {
  return &node->hard_state;
}
const fl_raft_hard_state *tnode_durable_hard_state(const tnode *node) {
  return &node->durable_hard_state;
}
size_t tnode_pending_writes(const tnode *node) {
  return node->write_count;
}
const char *tnode_error(const tnode *node) {
  return node->error[0] != '\0' ? node->error : NULL;
}
