/*
 * lean_cluster.c - the zero-copy benchmark driver (see lean_cluster.h).
 *
 * Delivery: a replica's update is handled in drain(). Its messages are
 * stepped straight into their destination (one level of nesting) while the
 * update is still outstanding, so entry arrays inside them are alive; the
 * destination is drained at once, before the sender advances. Messages a
 * nested replica sends (normally replies to the sender, whose update is
 * outstanding and so cannot be stepped) wait in a FIFO queue that the top
 * level empties; only those copy their message struct (replies carry no
 * entries; the rare queued message with entries gets its entry array copied,
 * never the payload bytes).
 *
 * Durability: storing an update is its write; fl_raft_persisted() follows the
 * advance at once, and messages_after_write leave with the other messages.
 */
#include "bench/lean_cluster.h"

#include <stdlib.h>
#include <string.h>

_Static_assert((LEAN_LOG_WINDOW & (LEAN_LOG_WINDOW - 1)) == 0, "the log ring is indexed by mask");
_Static_assert(2 * LEAN_MAX_BATCH <= LEAN_LOG_WINDOW / 2, "two batches fit after compaction");

/* Queued messages at once: a round trip of three replicas needs a handful. */
#define LEAN_QUEUE_CAPACITY 1024

typedef struct lean_log {
  fl_raft_entry *ring; /* entry i lives at ring[i & (LEAN_LOG_WINDOW - 1)] */
  uint64_t first_index;
  uint64_t last_index;
  fl_raft_snapshot_meta snapshot;
} lean_log;

typedef struct lean_replica {
  uint64_t id;
  fl_raft *raft;
  fl_raft_storage storage;
  lean_log log;
  uint64_t applied;
  bool in_update; /* between get_update and advance: must not be stepped */
} lean_replica;

typedef struct lean_queued {
  fl_raft_message message;
  fl_raft_entry *entries; /* owned copy of message.entries, NULL when none */
} lean_queued;

struct lean_group {
  lean_shape shape;
  const fl_raft_options *options;
  fl_raft_conf conf;
  lean_replica replicas[LEAN_REPLICAS];
  uint32_t replica_count; /* 3, or 1 with synthetic peers */
  lean_queued *queue;     /* ring of LEAN_QUEUE_CAPACITY */
  uint32_t queue_head;
  uint32_t queue_count;
  lean_stats stats;
  const char *error;
};

/* One read-only payload arena shared by every group: proposals point into
 * it, and so do the logs, so no payload byte is ever copied. */
static uint8_t payload_arena[LEAN_MAX_BATCH][LEAN_PAYLOAD_BYTES];
static const uint8_t *payload_pointers[LEAN_MAX_BATCH];
static uint32_t payload_lengths[LEAN_MAX_BATCH];

static void payload_arena_init(void) {
  if (payload_pointers[0] != NULL) {
    return;
  }
  for (uint32_t i = 0; i < LEAN_MAX_BATCH; i++) {
    memset(payload_arena[i], (int)(i & 0xff), LEAN_PAYLOAD_BYTES);
    payload_pointers[i] = payload_arena[i];
    payload_lengths[i] = LEAN_PAYLOAD_BYTES;
  }
}

static void fail(lean_group *group, const char *error) {
  if (group->error == NULL) {
    group->error = error;
  }
}

void lean_options_default(fl_raft_options *options) {
  fl_raft_options_default(options);
  options->max_entries_per_message = LEAN_MAX_BATCH;
}

/* ---- the log ring and the storage callbacks ---- */

static int storage_entries(void *context, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                           fl_raft_entry *out, uint32_t out_capacity, uint32_t *out_count) {
  const lean_log *log = context;
  *out_count = 0;
  if (lo < log->first_index) {
    return FL_RAFT_E_COMPACTED;
  }
  if (hi > log->last_index + 1) {
    return FL_RAFT_E_UNAVAILABLE;
  }
  uint64_t bytes = 0;
  uint32_t count = 0;
  for (uint64_t index = lo; index < hi && count < out_capacity; index++) {
    const fl_raft_entry *entry = &log->ring[index & (LEAN_LOG_WINDOW - 1)];
    if (count > 0 && bytes + entry->length > max_bytes) {
      break;
    }
    bytes += entry->length;
    out[count++] = *entry;
  }
  *out_count = count;
  return 0;
}

static int storage_snapshot(void *context, fl_raft_snapshot_meta *out) {
  const lean_log *log = context;
  *out = log->snapshot;
  return 0;
}

/* Stores entries that attach to the log, replacing any suffix they overlap. */
static void log_store(lean_group *group, lean_log *log, const fl_raft_entry *entries,
                      uint32_t count) {
  uint64_t first = entries[0].index;
  uint64_t last = first + count - 1;
  if (first < log->first_index || first > log->last_index + 1) {
    fail(group, "update entries do not attach to the log");
    return;
  }
  if (last - log->first_index + 1 > LEAN_LOG_WINDOW) {
    fail(group, "log ring full: compaction fell behind");
    return;
  }
  /* Copy in at most two pieces: the ring may wrap once. */
  uint32_t start = (uint32_t)(first & (LEAN_LOG_WINDOW - 1));
  uint32_t head = count < LEAN_LOG_WINDOW - start ? count : LEAN_LOG_WINDOW - start;
  memcpy(&log->ring[start], entries, head * sizeof(*entries));
  memcpy(log->ring, entries + head, (count - head) * sizeof(*entries));
  log->last_index = last;
}

static void log_reset(lean_log *log, const fl_raft_snapshot_meta *snapshot) {
  log->snapshot = *snapshot;
  log->first_index = snapshot->index + 1;
  log->last_index = snapshot->index;
}

/* ---- delivery ---- */

static lean_replica *replica_of(lean_group *group, uint64_t id) {
  if (id == 0 || id > group->replica_count) {
    return NULL;
  }
  return &group->replicas[id - 1];
}

static void enqueue(lean_group *group, const fl_raft_message *message) {
  if (group->queue_count == LEAN_QUEUE_CAPACITY) {
    fail(group, "message queue full");
    return;
  }
  uint32_t slot = (group->queue_head + group->queue_count++) % LEAN_QUEUE_CAPACITY;
  lean_queued *queued = &group->queue[slot];
  queued->message = *message;
  queued->entries = NULL;
  if (message->entry_count > 0) {
    /* The sender's entry pool dies at its advance: keep our own array. */
    size_t bytes = message->entry_count * sizeof(fl_raft_entry);
    queued->entries = malloc(bytes);
    if (queued->entries == NULL) {
      fail(group, "out of memory");
      queued->message.entry_count = 0;
      return;
    }
    memcpy(queued->entries, message->entries, bytes);
    queued->message.entries = queued->entries;
  }
}

/* What a healthy follower that holds everything would answer. */
static void answer_as_synthetic_peer(lean_group *group, const fl_raft_message *request) {
  fl_raft_message reply;
  memset(&reply, 0, sizeof(reply));
  reply.from = request->to;
  reply.to = request->from;
  reply.term = request->term;
  switch (request->type) {
  case FL_RAFT_MSG_APPEND:
    reply.type = FL_RAFT_MSG_APPEND_RESP;
    reply.index = request->index + request->entry_count;
    break;
  case FL_RAFT_MSG_HEARTBEAT:
    reply.type = FL_RAFT_MSG_HEARTBEAT_RESP;
    reply.context = request->context;
    break;
  case FL_RAFT_MSG_PRE_VOTE:
    reply.type = FL_RAFT_MSG_PRE_VOTE_RESP;
    break;
  case FL_RAFT_MSG_VOTE:
    reply.type = FL_RAFT_MSG_VOTE_RESP;
    break;
  default:
    return;
  }
  group->stats.messages++; /* the reply travels too */
  enqueue(group, &reply);
}

static void drain(lean_group *group, lean_replica *replica, int depth);

/* Top level (depth 0) steps the destination now; nested senders queue. */
static void route(lean_group *group, const fl_raft_message *message, int depth) {
  group->stats.messages++;
  lean_replica *to = replica_of(group, message->to);
  if (to == NULL) {
    if (group->shape == LEAN_SYNTHETIC_PEERS) {
      answer_as_synthetic_peer(group, message);
    }
    return;
  }
  if (depth > 0 || to->in_update) {
    enqueue(group, message);
    return;
  }
  fl_raft_step(to->raft, message);
  drain(group, to, depth + 1);
}

static void apply_committed(lean_group *group, lean_replica *replica, const fl_raft_update *u) {
  if (u->snapshot != NULL) {
    replica->applied = u->snapshot->index;
  }
  if (u->committed_count == 0) {
    return;
  }
  replica->applied = u->committed[u->committed_count - 1].index;
  if (replica->id != 1) {
    return;
  }
  for (uint32_t i = 0; i < u->committed_count; i++) {
    /* Count client entries only, not the leader's empty entry. */
    group->stats.committed += u->committed[i].length == LEAN_PAYLOAD_BYTES;
  }
}

static void handle_update(lean_group *group, lean_replica *replica, const fl_raft_update *u,
                          int depth) {
  if (u->snapshot != NULL) {
    log_reset(&replica->log, u->snapshot);
  }
  if (u->entry_count > 0) {
    log_store(group, &replica->log, u->entries, u->entry_count);
  }
  for (uint32_t i = 0; i < u->message_count; i++) {
    route(group, &u->messages[i], depth);
  }
  /* The write above is already durable: these may leave now. */
  for (uint32_t i = 0; i < u->message_after_write_count; i++) {
    route(group, &u->messages_after_write[i], depth);
  }
  apply_committed(group, replica, u);
}

static void drain(lean_group *group, lean_replica *replica, int depth) {
  while (fl_raft_has_update(replica->raft)) {
    fl_raft_update update;
    fl_raft_get_update(replica->raft, &update);
    group->stats.updates++;
    replica->in_update = true;
    handle_update(group, replica, &update, depth);
    replica->in_update = false;
    fl_raft_advance(replica->raft, &update);
    if (update.has_write) {
      fl_raft_persisted(replica->raft, update.write_id);
    }
  }
}

static void run_queue(lean_group *group) {
  while (group->queue_count > 0) {
    lean_queued queued = group->queue[group->queue_head];
    group->queue_head = (group->queue_head + 1) % LEAN_QUEUE_CAPACITY;
    group->queue_count--;
    lean_replica *to = replica_of(group, queued.message.to);
    if (to != NULL) {
      fl_raft_step(to->raft, &queued.message);
      drain(group, to, 0);
    }
    free(queued.entries);
  }
}

/* ---- compaction ---- */

/* The highest index every peer holds: a leader never compacts past it, so
 * no follower ever needs a snapshot in the benchmarks. */
static uint64_t peers_match(const lean_replica *leader) {
  uint64_t lowest = UINT64_MAX;
  for (uint64_t peer = 1; peer <= LEAN_REPLICAS; peer++) {
    uint64_t match = 0;
    uint64_t next = 0;
    if (peer != leader->id && fl_raft_peer_match(leader->raft, peer, &match, &next)) {
      lowest = match < lowest ? match : lowest;
    }
  }
  return lowest;
}

/* Keeps the ring at most half full, as a WAL's GC bounds the log on disk. */
static void maybe_compact(lean_group *group, lean_replica *replica) {
  lean_log *log = &replica->log;
  if (log->last_index + 1 - log->first_index <= LEAN_LOG_WINDOW / 2) {
    return;
  }
  uint64_t index = replica->applied;
  uint64_t match = peers_match(replica);
  index = match < index ? match : index;
  if (index < log->first_index || fl_raft_compact(replica->raft, index) != 0) {
    return;
  }
  fl_raft_snapshot_meta meta = {
      .index = index, .term = fl_raft_term_at(replica->raft, index), .conf = group->conf};
  log->snapshot = meta;
  log->first_index = index + 1;
}

/* ---- life cycle ---- */

static int replica_init(lean_group *group, lean_replica *replica, uint64_t id, uint64_t seed) {
  replica->id = id;
  replica->log.ring = calloc(LEAN_LOG_WINDOW, sizeof(fl_raft_entry));
  if (replica->log.ring == NULL) {
    return -1;
  }
  fl_raft_snapshot_meta start = {.index = 0, .term = 0, .conf = group->conf};
  log_reset(&replica->log, &start);
  replica->storage = (fl_raft_storage){
      .context = &replica->log, .entries = storage_entries, .snapshot = storage_snapshot};
  fl_raft_restore restore;
  memset(&restore, 0, sizeof(restore));
  restore.snapshot = start;
  replica->raft = fl_raft_create(id, group->options, &replica->storage, &restore, seed);
  return replica->raft == NULL ? -1 : 0;
}

static bool leader_elected(lean_group *group) {
  lean_replica *candidate = &group->replicas[0];
  fl_raft_campaign(candidate->raft);
  drain(group, candidate, 0);
  run_queue(group);
  fl_raft_status status;
  fl_raft_get_status(candidate->raft, &status);
  return status.role == FL_RAFT_LEADER && status.commit == status.last_index &&
         group->error == NULL;
}

lean_group *lean_group_create(lean_shape shape, uint64_t group_id, const fl_raft_options *options) {
  payload_arena_init();
  lean_group *group = calloc(1, sizeof(*group));
  if (group == NULL) {
    return NULL;
  }
  group->shape = shape;
  group->options = options;
  group->conf.voter_count = LEAN_REPLICAS;
  for (uint32_t i = 0; i < LEAN_REPLICAS; i++) {
    group->conf.voters[i] = i + 1;
  }
  group->replica_count = shape == LEAN_THREE_REPLICAS ? LEAN_REPLICAS : 1;
  group->queue = calloc(LEAN_QUEUE_CAPACITY, sizeof(*group->queue));
  bool ok = group->queue != NULL;
  for (uint32_t i = 0; ok && i < group->replica_count; i++) {
    ok = replica_init(group, &group->replicas[i], i + 1, group_id * 0x9e3779b97f4a7c15ull) == 0;
  }
  if (!ok || !leader_elected(group)) {
    lean_group_destroy(group);
    return NULL;
  }
  memset(&group->stats, 0, sizeof(group->stats));
  return group;
}

void lean_group_destroy(lean_group *group) {
  if (group == NULL) {
    return;
  }
  for (uint32_t i = 0; i < LEAN_REPLICAS; i++) {
    fl_raft_destroy(group->replicas[i].raft);
    free(group->replicas[i].log.ring);
  }
  while (group->queue != NULL && group->queue_count > 0) {
    free(group->queue[group->queue_head].entries);
    group->queue_head = (group->queue_head + 1) % LEAN_QUEUE_CAPACITY;
    group->queue_count--;
  }
  free(group->queue);
  free(group);
}

int64_t lean_group_propose(lean_group *group, uint32_t batch) {
  if (batch == 0 || batch > LEAN_MAX_BATCH) {
    return -1;
  }
  lean_replica *leader = &group->replicas[0];
  uint64_t before = group->stats.committed;
  if (fl_raft_propose(leader->raft, payload_pointers, payload_lengths, batch) != 0) {
    return -1;
  }
  group->stats.proposed += batch;
  drain(group, leader, 0);
  run_queue(group);
  for (uint32_t i = 0; i < group->replica_count; i++) {
    maybe_compact(group, &group->replicas[i]);
  }
  return (int64_t)(group->stats.committed - before);
}

const lean_stats *lean_group_stats(const lean_group *group) {
  return &group->stats;
}

const char *lean_group_error(const lean_group *group) {
  return group->error;
}
