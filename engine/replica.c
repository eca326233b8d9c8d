/*
 * replica.c - one group's replica on a shard: the driver of its Raft core.
 *
 * The core is pure (raft/raft.h); this file gives it storage (the shard's
 * WAL), a network (network.c), a state machine (machine.c) and callers.
 * Each drain turns the core's updates into:
 *
 *   persist  hard state + entries queued in the shard's WAL batch; the
 *            write's completion comes back through the shard's durable list
 *   send     messages now (the leader does not wait for its own disk),
 *            messages_after_write once their write is durable
 *   apply    committed commands to the state machine, in batches; answer
 *            the proposals of this node whose entries they are
 *   read     read states release the reads waiting for that index
 *
 * Proposals: the proposer's entry is recognised at apply by (index, term);
 * an entry at its index with another term means the proposal was lost
 * (FL_E_DROPPED): leadership changed before it committed.
 *
 * Pending work (this node's proposals, reads, messages held for a write)
 * lives in r->pending, allocated by the first of them and freed when the
 * group goes quiet, so an idle group carries none of it. Calls with a
 * deadline (fl_options.request_timeout_ms) are failed by deadline.c
 * through replica_expire().
 *
 * Ownership: the replica owns its core, machine and lists; payloads handed
 * to the core (proposal bytes, entry bytes read from the WAL) live in the
 * shard's arena, which is reset only when no replica holds an un-advanced
 * update.
 */
#include "engine/engine_internal.h"
#include "engine/snapshot.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Entries one storage read may return: bounds the arena's growth per call. */
#define REPLICA_MAX_READ_ENTRIES 4096
/* Commands one apply call hands the state machine. */
#define REPLICA_APPLY_BATCH 256
/* Proposals handed to the core in one call. */
#define REPLICA_PROPOSE_CHUNK 256

/* ---- storage callbacks ---------------------------------------------------- */

/* The bytes of the entries read: the payloads are contiguous from the
 * first one's, in the buffer of the read. */
static size_t bytes_read(const wal_entry *entries, uint32_t count) {
  if (count == 0) {
    return 0;
  }
  const wal_entry *last = &entries[count - 1];
  return (size_t)(last->data - entries[0].data) + last->length;
}

/*
 * Entries the core no longer holds in memory: committed ones to apply, and
 * the ones a follower is sent after they were persisted. Every replica
 * with work reads here in every iteration, so the payload buffer, sized for
 * the largest read, is given back to the arena down to what the read used:
 * otherwise each read would cost the arena 2 MiB, and the iteration's
 * arena hundreds of MiB of pages touched once each (page faults, cache and
 * TLB misses on every iteration). The index of the read lives in the
 * shard: it is copied into `out` before returning.
 */
static int storage_entries(void *context, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                           fl_raft_entry *out, uint32_t out_capacity, uint32_t *out_count) {
  replica *r = context;
  shard *s = r->owner;
  uint32_t capacity =
      out_capacity < REPLICA_MAX_READ_ENTRIES ? out_capacity : REPLICA_MAX_READ_ENTRIES;
  if (s->read_entries == NULL) {
    s->read_entries = malloc(REPLICA_MAX_READ_ENTRIES * sizeof(wal_entry));
  }
  wal_entry *entries = s->read_entries;
  wal_group_state state;
  if (wal_group(s->log, r->group, &state) != 0 || lo < state.first_index) {
    return FL_RAFT_E_COMPACTED;
  }
  size_t buffer_bytes = max_bytes < (1u << 20) ? (size_t)max_bytes + (64u << 10) : (2u << 20);
  uint8_t *buffer = arena_allocate(&s->scratch, buffer_bytes);
  if (entries == NULL || buffer == NULL) {
    return FL_RAFT_E_NOMEM;
  }
  uint32_t count = 0;
  int rc = wal_read(s->log, r->group, lo, hi, max_bytes, entries, capacity, &count, buffer,
                    buffer_bytes);
  if (rc == -ERANGE) {
    /* the first entry is larger than the buffer: read it alone, with room
     * for the largest entry a WAL batch can hold */
    arena_shrink_last(&s->scratch, buffer, 0);
    buffer_bytes = 64u << 20;
    buffer = arena_allocate(&s->scratch, buffer_bytes);
    rc = buffer == NULL ? -ENOMEM
                        : wal_read(s->log, r->group, lo, lo + 1, max_bytes, entries, 1, &count,
                                   buffer, buffer_bytes);
  }
  if (buffer != NULL) {
    arena_shrink_last(&s->scratch, buffer, rc == 0 ? bytes_read(entries, count) : 0);
  }
  if (rc != 0) {
    return rc == -ENOENT ? FL_RAFT_E_UNAVAILABLE : FL_RAFT_E_NOMEM;
  }
  for (uint32_t i = 0; i < count; i++) {
    out[i] = (fl_raft_entry){.term = entries[i].term,
                             .index = entries[i].index,
                             .type = entries[i].type,
                             .length = entries[i].length,
                             .data = entries[i].data};
  }
  *out_count = count;
  return 0;
}

/* The configuration of the newest snapshot is the one its WAL marker
 * holds (every marker is written with it): read back when the core asks,
 * which is rare (a follower behind the log), instead of a copy per group. */
static int storage_snapshot(void *context, fl_raft_snapshot_meta *out) {
  replica *r = context;
  uint8_t conf_bytes[SNAPSHOT_MAX_CONF_BYTES];
  uint32_t length = 0;
  *out = (fl_raft_snapshot_meta){.index = r->snapshot_index, .term = r->snapshot_term};
  int rc = wal_snapshot_data(r->owner->log, r->group, conf_bytes, sizeof(conf_bytes), &length);
  if (rc != 0 || (length > 0 && fl_raft_conf_decode(conf_bytes, length, &out->conf) != 0)) {
    shard_log(r->owner, 3, "group %llu: the snapshot marker's configuration is unreadable",
              (unsigned long long)r->group);
    return FL_RAFT_E_UNAVAILABLE;
  }
  return 0;
}

/* ---- opening: restore from the WAL -------------------------------------- */

static void collect_term_run(void *context, uint64_t first_index, uint64_t term) {
  shard *s = context;
  if (s->term_run_count == s->term_run_capacity) {
    uint32_t capacity = s->term_run_capacity ? s->term_run_capacity * 2 : 64;
    fl_raft_term_run *grown = realloc(s->term_runs, capacity * sizeof(*grown));
    if (grown == NULL) {
      return; /* detected by the caller: fewer runs than expected */
    }
    s->term_runs = grown;
    s->term_run_capacity = capacity;
  }
  s->term_runs[s->term_run_count++] = (fl_raft_term_run){first_index, term};
}

/* Reads what the WAL holds of the group into `restore`; 1 when nothing. */
static int load_from_wal(replica *r, fl_raft_restore *restore) {
  shard *s = r->owner;
  wal_group_state state;
  int rc = wal_group(s->log, r->group, &state);
  if (rc == -ENOENT || (rc == 0 && !state.has_snapshot)) {
    return 1;
  }
  uint8_t conf_bytes[SNAPSHOT_MAX_CONF_BYTES];
  uint32_t length = 0;
  rc = rc != 0 ? rc : wal_snapshot_data(s->log, r->group, conf_bytes, sizeof(conf_bytes), &length);
  if (rc != 0) {
    return rc;
  }
  fl_raft_snapshot_meta snapshot = {.index = state.snapshot_index, .term = state.snapshot_term};
  if (length > 0 && fl_raft_conf_decode(conf_bytes, length, &snapshot.conf) != 0) {
    return -EUCLEAN;
  }
  r->snapshot_index = snapshot.index;
  r->snapshot_term = snapshot.term;
  s->term_run_count = 0;
  wal_term_runs(s->log, r->group, collect_term_run, s);
  *restore = (fl_raft_restore){
      .hard_state = {state.hard_state.term, state.hard_state.vote, state.hard_state.commit},
      .snapshot = snapshot,
      .last_index = state.last_index,
      .term_runs = s->term_runs,
      .term_run_count = s->term_run_count,
      .applied = state.snapshot_index,
  };
  r->applied = state.snapshot_index;
  return 0;
}

/* A new group: its initial configuration is written as a marker at index 0
 * so that a restart finds it before any snapshot exists. */
static int bootstrap(replica *r, const fl_raft_conf *conf, fl_raft_restore *restore) {
  uint8_t bytes[SNAPSHOT_MAX_CONF_BYTES];
  size_t length = fl_raft_conf_encode(conf, bytes, sizeof(bytes));
  if (length == 0) {
    return -EINVAL;
  }
  int rc = wal_save_snapshot(r->owner->log, r->group, 0, 0, bytes, (uint32_t)length, NULL);
  if (rc == -ENOBUFS) {
    rc = wal_flush(r->owner->log);
    rc = rc == 0 ? wal_save_snapshot(r->owner->log, r->group, 0, 0, bytes, (uint32_t)length, NULL)
                 : rc;
  }
  *restore = (fl_raft_restore){.snapshot = {.conf = *conf}};
  return rc;
}

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return x;
}

int replica_open(shard *s, uint64_t group, const fl_raft_conf *conf, replica **out) {
  replica *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return -ENOMEM;
  }
  r->group = group;
  r->owner = s;
  r->generation = ++s->generation;
  r->active_slot = UINT32_MAX;
  r->expiry_slot = UINT32_MAX;
  r->deadline_slot = UINT32_MAX;
  r->storage =
      (fl_raft_storage){.context = r, .entries = storage_entries, .snapshot = storage_snapshot};
  fl_raft_restore restore;
  int rc = load_from_wal(r, &restore);
  if (rc == 1) {
    /* a joiner records an empty configuration: it learns the real one from
     * the leader, and a restart must find it a member with its state */
    fl_raft_conf empty = {0};
    rc = bootstrap(r, conf != NULL ? conf : &empty, &restore);
  }
  if (rc == 0) {
    rc = machine_create(s, group, &r->machine);
  }
  if (rc == 0 && r->snapshot_index > 0) {
    rc = snapshot_load(r, r->snapshot_index);
    r->applied_term = r->snapshot_term;
  }
  uint64_t self = s->engine->options.node_id;
  if (rc == 0) {
    r->raft = fl_raft_create(self, &s->engine->raft_options, &r->storage, &restore,
                             mix(group ^ mix(self)) ^ (uint64_t)s->now_ms);
    rc = r->raft == NULL ? -EINVAL : 0;
  }
  if (rc == 0) {
    fl_raft_status status;
    fl_raft_get_status(r->raft, &status);
    r->term = status.term;
  }
  if (rc != 0) {
    machine_destroy(s, r->machine);
    free(r);
    return rc;
  }
  *out = r;
  return 0;
}

/* ---- answering callers ---------------------------------------------------- */

static void fail_requests(request *list, int status) {
  while (list != NULL) {
    request *next = list->next;
    request_fail(list, status);
    list = next;
  }
}

/* ---- calls in flight: allocated on demand, released when quiet --------- */

/* The replica's pending work, allocated by the first call or held message;
 * NULL (no memory) leaves the replica as it was. */
static replica_pending *pending_for(replica *r) {
  if (r->pending == NULL) {
    r->pending = calloc(1, sizeof(*r->pending));
  }
  return r->pending;
}

static bool pending_empty(const replica *r) {
  const replica_pending *p = r->pending;
  return p == NULL || (p->proposal_count == 0 && p->batch_count == 0 && p->reads_waiting == NULL &&
                       p->reads_ready == NULL && p->after_write_head == NULL);
}

/* A quiet group keeps no pending state: the ring and the struct go. */
static void release_pending(replica *r) {
  assert(pending_empty(r));
  if (r->pending != NULL) {
    free(r->pending->proposals);
    free(r->pending);
    r->pending = NULL;
  }
}

static void fail_proposals(replica *r, int status) {
  if (r->pending == NULL) {
    return;
  }
  while (r->pending->proposal_count > 0) {
    pending_proposal *p = &r->pending->proposals[r->pending->proposal_head];
    r->pending->proposal_head = (r->pending->proposal_head + 1) % r->pending->proposal_capacity;
    r->pending->proposal_count--;
    p->callback(p->context, status, NULL);
  }
}

static void release_after_write(replica *r) {
  if (r->pending == NULL) {
    return;
  }
  while (r->pending->after_write_head != NULL) {
    after_write *next = r->pending->after_write_head->next;
    free(r->pending->after_write_head);
    r->pending->after_write_head = next;
  }
  r->pending->after_write_tail = NULL;
}

void replica_close(replica *r, int status) {
  if (r == NULL) {
    return;
  }
  /* first: the callbacks below must not put it back on any shard list */
  r->removed = true;
  expiry_update(r->owner, r);
  deadline_forget(r->owner, r);
  fail_proposals(r, status);
  if (r->pending != NULL) {
    fail_requests(r->pending->batch_head, status);
    fail_requests(r->pending->reads_waiting, status);
    fail_requests(r->pending->reads_ready, status);
    r->pending->batch_head = r->pending->reads_waiting = r->pending->reads_ready = NULL;
    r->pending->batch_count = 0;
  }
  release_after_write(r);
  release_pending(r);
  snapshot_abandon(r);
  fl_raft_destroy(r->raft);
  machine_destroy(r->owner, r->machine);
  free(r);
}

/* ---- proposals ------------------------------------------------------------ */

static int grow_proposals(replica *r, uint32_t need) {
  if (pending_for(r) == NULL) {
    return -ENOMEM;
  }
  if (r->pending->proposal_count + need <= r->pending->proposal_capacity) {
    return 0;
  }
  uint32_t capacity = r->pending->proposal_capacity ? r->pending->proposal_capacity : 16;
  while (capacity < r->pending->proposal_count + need) {
    capacity *= 2;
  }
  pending_proposal *ring = malloc(capacity * sizeof(*ring));
  if (ring == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < r->pending->proposal_count; i++) {
    ring[i] =
        r->pending->proposals[(r->pending->proposal_head + i) % r->pending->proposal_capacity];
  }
  free(r->pending->proposals);
  r->pending->proposals = ring;
  r->pending->proposal_head = 0;
  r->pending->proposal_capacity = capacity;
  return 0;
}

void replica_track_proposal(replica *r, uint64_t index, uint64_t term, fl_propose_callback callback,
                            void *context, uint64_t deadline_ms) {
  if (grow_proposals(r, 1) != 0) {
    callback(context, FL_E_NOMEM, NULL);
    return;
  }
  uint32_t slot =
      (r->pending->proposal_head + r->pending->proposal_count) % r->pending->proposal_capacity;
  r->pending->proposals[slot] = (pending_proposal){.index = index,
                                                   .term = term,
                                                   .callback = callback,
                                                   .context = context,
                                                   .deadline_ms = deadline_ms};
  r->pending->proposal_count++;
  deadline_note(r->owner, r, deadline_ms);
}

void replica_add_proposal(replica *r, request *q) {
  r->activity = true;
  shard_wake(r->owner, r);
  if (pending_for(r) == NULL) {
    request_fail(q, FL_E_NOMEM);
    return;
  }
  q->next = NULL;
  if (r->pending->batch_tail != NULL) {
    r->pending->batch_tail->next = q;
  } else {
    r->pending->batch_head = q;
  }
  r->pending->batch_tail = q;
  r->pending->batch_count += q->type == REQUEST_PROPOSE_BATCH ? q->command_count : 1;
  shard_mark_ready(r->owner, r);
}

static int propose_status(int raft_error) {
  switch (raft_error) {
  case FL_RAFT_E_NOT_LEADER:
  case FL_RAFT_E_TRANSFERRING:
    return FL_E_NOT_LEADER;
  case FL_RAFT_E_TOO_LARGE:
  case FL_RAFT_E_BUSY:
    return FL_E_BUSY;
  case FL_RAFT_E_NOMEM:
    return FL_E_NOMEM;
  default:
    return FL_E_INVALID;
  }
}

/* The gathered commands, walked one at a time across requests (a batch
 * request holds many, one after another in its bytes). */
typedef struct command_cursor {
  request *request;
  uint32_t position; /* in the request */
  uint32_t offset;   /* of that command's bytes */
  request *done;     /* requests walked past, for the deferred free */
} command_cursor;

/* Up to REPLICA_PROPOSE_CHUNK commands handed to the core in one call. */
typedef struct propose_chunk {
  uint32_t count;
  const uint8_t *data[REPLICA_PROPOSE_CHUNK];
  uint32_t lengths[REPLICA_PROPOSE_CHUNK];
  fl_propose_callback callbacks[REPLICA_PROPOSE_CHUNK];
  void *contexts[REPLICA_PROPOSE_CHUNK];
  uint64_t deadlines[REPLICA_PROPOSE_CHUNK];
} propose_chunk;

static void take_command(command_cursor *cursor, propose_chunk *chunk) {
  request *q = cursor->request;
  uint32_t i = chunk->count++;
  chunk->callbacks[i] = q->propose_callback;
  chunk->deadlines[i] = q->deadline_ms;
  if (q->type != REQUEST_PROPOSE_BATCH) {
    chunk->data[i] = q->data;
    chunk->lengths[i] = q->length;
    chunk->contexts[i] = q->context;
    cursor->position = 1;
  } else {
    chunk->data[i] = q->data + cursor->offset;
    chunk->lengths[i] = q->lengths[cursor->position];
    chunk->contexts[i] = q->contexts[cursor->position];
    cursor->offset += q->lengths[cursor->position++];
  }
  uint32_t commands = q->type == REQUEST_PROPOSE_BATCH ? q->command_count : 1;
  if (cursor->position == commands) {
    cursor->request = q->next;
    cursor->position = cursor->offset = 0;
    q->next = cursor->done;
    cursor->done = q;
  }
}

/* Proposes one chunk; each command is tracked, or answered at once when
 * the core refused the chunk. */
static void propose_chunk_now(replica *r, const propose_chunk *chunk) {
  int rc = grow_proposals(r, chunk->count);
  rc = rc == 0 ? fl_raft_propose(r->raft, chunk->data, chunk->lengths, chunk->count)
               : FL_RAFT_E_NOMEM;
  fl_raft_status status;
  fl_raft_get_status(r->raft, &status);
  for (uint32_t i = 0; i < chunk->count; i++) {
    if (rc != 0) {
      chunk->callbacks[i](chunk->contexts[i], propose_status(rc), NULL);
      continue;
    }
    uint32_t slot =
        (r->pending->proposal_head + r->pending->proposal_count) % r->pending->proposal_capacity;
    r->pending->proposals[slot] =
        (pending_proposal){.index = status.last_index - chunk->count + 1 + i,
                           .term = status.term,
                           .callback = chunk->callbacks[i],
                           .context = chunk->contexts[i],
                           .deadline_ms = chunk->deadlines[i]};
    r->pending->proposal_count++;
    deadline_note(r->owner, r, chunk->deadlines[i]);
  }
}

/* Proposes the gathered commands in chunks the core accepts at once, in
 * order. The requests (and their bytes) stay alive until the drain's
 * advance: they go to the shard's arena-lifetime free list. */
void replica_propose_batch(replica *r) {
  command_cursor cursor = {.request = r->pending->batch_head};
  propose_chunk *chunk = arena_allocate(&r->owner->scratch, sizeof(*chunk));
  uint32_t left = r->pending->batch_count;
  while (left > 0) {
    if (chunk == NULL) {
      fail_requests(cursor.request, FL_E_NOMEM);
      break;
    }
    chunk->count = 0;
    while (chunk->count < REPLICA_PROPOSE_CHUNK && left > 0) {
      take_command(&cursor, chunk);
      left--;
    }
    propose_chunk_now(r, chunk);
  }
  r->pending->batch_head = r->pending->batch_tail = NULL;
  r->pending->batch_count = 0;
  shard_defer_free(r->owner, cursor.done);
}

/* Answers the proposals whose entries are at or below `index`. */
static void resolve_proposals(replica *r, const fl_raft_entry *entry, const fl_result *result) {
  if (r->pending == NULL) {
    return;
  }
  while (r->pending->proposal_count > 0) {
    pending_proposal *p = &r->pending->proposals[r->pending->proposal_head];
    if (p->index > entry->index) {
      return;
    }
    bool mine = p->index == entry->index && p->term == entry->term;
    r->pending->proposal_head = (r->pending->proposal_head + 1) % r->pending->proposal_capacity;
    r->pending->proposal_count--;
    if (mine) {
      p->callback(p->context, result != NULL ? result->status : 0, result);
    } else {
      p->callback(p->context, FL_E_DROPPED, NULL);
    }
  }
}

/* ---- reads ---------------------------------------------------------------- */

/* Answers a read (fl_kv_get) or a query (fl_query) from the state now,
 * and frees it. */
static void serve_read(replica *r, request *q) {
  if (q->type == REQUEST_QUERY) {
    machine_query(r->owner, r->machine, q->data, q->length, q->propose_callback, q->context);
  } else {
    machine_get(r->owner, r->machine, q->data, q->length, q->read_callback, q->context);
  }
  free(q);
}

void replica_read(replica *r, request *q) {
  r->activity = true;
  shard_wake(r->owner, r);
  if (q->read_mode == FL_READ_LOCAL) {
    serve_read(r, q);
    return;
  }
  if (pending_for(r) == NULL) {
    request_fail(q, FL_E_NOMEM);
    return;
  }
  q->read_index = ++r->owner->next_context;
  int rc = fl_raft_read_index(r->raft, q->read_index);
  if (rc != 0) {
    request_fail(q, rc == FL_RAFT_E_BUSY ? FL_E_BUSY : FL_E_UNAVAILABLE);
    return;
  }
  q->next = r->pending->reads_waiting;
  r->pending->reads_waiting = q;
  deadline_note(r->owner, r, q->deadline_ms);
  shard_mark_ready(r->owner, r);
}

static void take_read_states(replica *r, const fl_raft_read_state *states, uint32_t count) {
  if (r->pending == NULL) {
    return;
  }
  for (uint32_t i = 0; i < count; i++) {
    for (request **link = &r->pending->reads_waiting; *link != NULL; link = &(*link)->next) {
      request *q = *link;
      if (q->read_index == states[i].context) {
        *link = q->next;
        q->read_index = states[i].index;
        q->next = r->pending->reads_ready;
        r->pending->reads_ready = q;
        break;
      }
    }
  }
}

static void serve_reads(replica *r) {
  if (r->pending == NULL) {
    return;
  }
  for (request **link = &r->pending->reads_ready; *link != NULL;) {
    request *q = *link;
    if (q->read_index > r->applied) {
      link = &q->next;
      continue;
    }
    *link = q->next;
    serve_read(r, q);
  }
}

/* ---- deadlines (deadline.c) ------------------------------------------------ */

/* Fails the reads of a list due by now; returns the earliest deadline left
 * in it (UINT64_MAX: none). */
static uint64_t expire_reads(request **list, uint64_t now_ms) {
  uint64_t earliest = UINT64_MAX;
  for (request **link = list; *link != NULL;) {
    request *q = *link;
    if (q->deadline_ms != 0 && q->deadline_ms <= now_ms) {
      *link = q->next;
      request_fail(q, FL_E_TIMEOUT);
      continue;
    }
    if (q->deadline_ms != 0 && q->deadline_ms < earliest) {
      earliest = q->deadline_ms;
    }
    link = &q->next;
  }
  return earliest;
}

/* Proposals are in index order, which is their order of arrival, so the
 * oldest deadlines are at the front (calls from several threads may be a
 * little out of order: one expires at most a tick late). The command of a
 * timed-out proposal may still commit: only its answer is given up. */
uint64_t replica_expire(replica *r, uint64_t now_ms) {
  if (r->pending == NULL) {
    return 0;
  }
  uint64_t earliest = UINT64_MAX;
  while (r->pending->proposal_count > 0) {
    pending_proposal *p = &r->pending->proposals[r->pending->proposal_head];
    if (p->deadline_ms == 0 || p->deadline_ms > now_ms) {
      earliest = p->deadline_ms != 0 ? p->deadline_ms : earliest;
      break;
    }
    r->pending->proposal_head = (r->pending->proposal_head + 1) % r->pending->proposal_capacity;
    r->pending->proposal_count--;
    p->callback(p->context, FL_E_TIMEOUT, NULL);
  }
  uint64_t reads = expire_reads(&r->pending->reads_waiting, now_ms);
  earliest = reads < earliest ? reads : earliest;
  reads = expire_reads(&r->pending->reads_ready, now_ms);
  earliest = reads < earliest ? reads : earliest;
  return earliest == UINT64_MAX ? 0 : earliest;
}

/* ---- one update ----------------------------------------------------------- */

static void on_write_durable(void *context, int result) {
  write_ticket *ticket = context;
  shard_write_done(ticket, result);
}

/* Appends, flushing a full batch; a run larger than what a batch takes is
 * split (the first part replaces the log from its index, the rest follow:
 * nothing is acknowledged before the last part is durable). */
static int append_entries(wal *w, uint64_t group, const wal_entry *entries, uint32_t count) {
  int rc = wal_append(w, group, entries, count, NULL);
  if (rc == -ENOBUFS) {
    rc = wal_flush(w);
    rc = rc == 0 ? wal_append(w, group, entries, count, NULL) : rc;
  }
  if ((rc == -ENOBUFS || rc == -EMSGSIZE) && count > 1) {
    uint32_t half = count / 2;
    rc = append_entries(w, group, entries, half);
    rc = rc == 0 ? append_entries(w, group, entries + half, count - half) : rc;
  }
  return rc;
}

static int queue_entries(replica *r, const fl_raft_update *u) {
  wal_entry *entries = arena_allocate(&r->owner->scratch, u->entry_count * sizeof(wal_entry));
  if (entries == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < u->entry_count; i++) {
    const fl_raft_entry *e = &u->entries[i];
    entries[i] = (wal_entry){
        .index = e->index, .term = e->term, .type = e->type, .length = e->length, .data = e->data};
  }
  r->owner->stats.wal_entries += u->entry_count;
  return append_entries(r->owner->log, r->group, entries, u->entry_count);
}

static int queue_hard_state(replica *r, const fl_raft_hard_state *h) {
  wal_hard_state state = {.term = h->term, .vote = h->vote, .commit = h->commit};
  int rc = wal_save_hard_state(r->owner->log, r->group, &state, NULL);
  if (rc == -ENOBUFS) {
    rc = wal_flush(r->owner->log);
    rc = rc == 0 ? wal_save_hard_state(r->owner->log, r->group, &state, NULL) : rc;
  }
  return rc;
}

/* The core took a snapshot from the leader: it replaces the state machine;
 * this node's proposals at or below it can no longer be matched. */
static int install_snapshot(replica *r, const fl_raft_snapshot_meta *meta) {
  snapshot_abandon_saving(r);
  int rc = snapshot_install(r, meta);
  fl_raft_entry boundary = {.index = meta->index, .term = 0};
  resolve_proposals(r, &boundary, NULL);
  return rc;
}

static int queue_write(replica *r, const fl_raft_update *u) {
  int rc = u->snapshot != NULL ? install_snapshot(r, u->snapshot) : 0;
  if (rc != 0) {
    return rc;
  }
  rc = u->hard_state_changed ? queue_hard_state(r, &u->hard_state) : 0;
  if (rc == 0 && u->entry_count > 0) {
    rc = queue_entries(r, u);
  }
  if (rc != 0) {
    return rc;
  }
  write_ticket *ticket = malloc(sizeof(*ticket));
  if (ticket == NULL) {
    return -ENOMEM;
  }
  *ticket = (write_ticket){.request = {.callback = on_write_durable, .context = ticket},
                           .owner = r->owner,
                           .group = r->group,
                           .generation = r->generation,
                           .write_id = u->write_id};
  rc = wal_barrier(r->owner->log, &ticket->request);
  if (rc == 1) {
    shard_write_done(ticket, 0); /* nothing pending: durable now */
    rc = 0;
  }
  return rc;
}

static after_write *copy_message(const fl_raft_message *m, uint64_t write_id) {
  size_t bytes = sizeof(after_write) + m->entry_count * sizeof(fl_raft_entry);
  for (uint32_t i = 0; i < m->entry_count; i++) {
    bytes += m->entries[i].length;
  }
  after_write *copy = malloc(bytes);
  if (copy == NULL) {
    return NULL;
  }
  copy->write_id = write_id;
  copy->message = *m;
  copy->next = NULL;
  fl_raft_entry *entries = (fl_raft_entry *)(copy + 1);
  uint8_t *data = (uint8_t *)(entries + m->entry_count);
  for (uint32_t i = 0; i < m->entry_count; i++) {
    entries[i] = m->entries[i];
    if (m->entries[i].length > 0) {
      memcpy(data, m->entries[i].data, m->entries[i].length);
    }
    entries[i].data = data;
    data += m->entries[i].length;
  }
  copy->message.entries = m->entry_count > 0 ? entries : NULL;
  return copy;
}

static int hold_after_write(replica *r, const fl_raft_update *u) {
  if (u->message_after_write_count > 0 && pending_for(r) == NULL) {
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < u->message_after_write_count; i++) {
    after_write *copy = copy_message(&u->messages_after_write[i], u->write_id);
    if (copy == NULL) {
      return -ENOMEM;
    }
    if (r->pending->after_write_tail != NULL) {
      r->pending->after_write_tail->next = copy;
    } else {
      r->pending->after_write_head = copy;
    }
    r->pending->after_write_tail = copy;
  }
  return 0;
}

/* Applies committed entries in batches of commands; conf changes are the
 * core's business (it read them when they were appended). */
static void apply_committed(replica *r, const fl_raft_entry *entries, uint32_t count) {
  fl_command commands[REPLICA_APPLY_BATCH];
  fl_result results[REPLICA_APPLY_BATCH];
  uint32_t positions[REPLICA_APPLY_BATCH];
  for (uint32_t start = 0; start < count;) {
    uint32_t end = start;
    uint32_t n = 0;
    for (; end < count && n < REPLICA_APPLY_BATCH; end++) {
      const fl_raft_entry *e = &entries[end];
      if (e->type == FL_RAFT_ENTRY_NORMAL && e->length > 0) {
        commands[n] = (fl_command){e->index, e->term, e->data, e->length};
        positions[n++] = end;
      }
    }
    if (n > 0) {
      machine_apply(r->owner, &r->machine, commands, n, results);
    }
    uint32_t k = 0;
    for (uint32_t i = start; i < end; i++) {
      const fl_result *result = k < n && positions[k] == i ? &results[k++] : NULL;
      r->applied = entries[i].index;
      r->applied_term = entries[i].term;
      resolve_proposals(r, &entries[i], result);
    }
    r->owner->stats.applied += end - start;
    start = end;
  }
  if (count > 0) {
    expiry_update(r->owner, r); /* the store's next expiry may have moved */
  }
  if (count > 0 && snapshot_due(r)) {
    if (snapshot_start(r) == 0) {
      shard_mark_snapshot_work(r->owner, r);
    }
  }
}

static void note_role(replica *r, const fl_raft_update *u) {
  bool lost = r->role == FL_RAFT_LEADER && u->role != FL_RAFT_LEADER;
  bool leader_changed = r->leader != u->leader;
  bool role_changed = r->role != u->role;
  bool term_changed = r->term != u->term;
  r->role = u->role;
  r->leader = u->leader;
  r->term = u->term;
  if (leader_changed || term_changed) {
    shard_note_leader(r->owner, r);
  }
  if (role_changed) {
    expiry_update(r->owner, r); /* only a leader sweeps */
  }
  if ((lost || leader_changed) && r->pending != NULL) {
    /* the core dropped its pending reads: callers retry elsewhere */
    fail_requests(r->pending->reads_waiting, FL_E_UNAVAILABLE);
    r->pending->reads_waiting = NULL;
  }
}

static int handle_update(replica *r, const fl_raft_update *u) {
  note_role(r, u);
  int rc = u->has_write ? queue_write(r, u) : 0;
  if (rc != 0) {
    return rc;
  }
  for (uint32_t i = 0; i < u->message_count; i++) {
    if (u->messages[i].type == FL_RAFT_MSG_SNAPSHOT) {
      snapshot_send_start(r, &u->messages[i]); /* the data goes first, in chunks */
      shard_mark_snapshot_work(r->owner, r);
    } else {
      network_send(r->owner, r->group, &u->messages[i]);
    }
  }
  if (u->has_write) {
    rc = hold_after_write(r, u);
  } else {
    /* nothing to wait for: the core allows them out at once (a follower's
     * rejection of an append with a gap is one; held, the leader would
     * never back up) */
    for (uint32_t i = 0; i < u->message_after_write_count; i++) {
      network_send(r->owner, r->group, &u->messages_after_write[i]);
    }
  }
  if (rc != 0) {
    return rc;
  }
  apply_committed(r, u->committed, u->committed_count);
  take_read_states(r, u->read_states, u->read_state_count);
  serve_reads(r);
  return 0;
}

void replica_drain(replica *r) {
  if (r->pending != NULL && r->pending->batch_count > 0) {
    replica_propose_batch(r);
  }
  while (fl_raft_has_update(r->raft)) {
    fl_raft_update u;
    fl_raft_get_update(r->raft, &u);
    int rc = handle_update(r, &u);
    fl_raft_advance(r->raft, &u);
    if (rc != 0) {
      shard_fail(r->owner, rc, "group update");
      return;
    }
  }
}

void replica_step(replica *r, const fl_raft_message *message) {
  r->owner->stats.messages_received++;
  /* A leader hears heartbeat responses while idle; anything else (and a
   * follower's heartbeats) is activity that keeps the group awake. */
  if (message->type != FL_RAFT_MSG_HEARTBEAT_RESP || r->role != FL_RAFT_LEADER) {
    r->activity = true;
    shard_wake(r->owner, r);
  }
  fl_raft_step(r->raft, message);
  shard_mark_ready(r->owner, r);
}

/* Every member matched the leader's whole log, committed and applied. */
static bool followers_caught_up(const replica *r, const fl_raft_status *status) {
  const fl_raft_conf *conf = &status->conf;
  const uint64_t *lists[3] = {conf->voters, conf->outgoing, conf->learners};
  const uint32_t counts[3] = {conf->voter_count, conf->outgoing_count, conf->learner_count};
  for (uint32_t list = 0; list < 3; list++) {
    for (uint32_t i = 0; i < counts[list]; i++) {
      uint64_t match = 0;
      uint64_t next = 0;
      if (lists[list][i] != status->id &&
          (!fl_raft_peer_match(r->raft, lists[list][i], &match, &next) ||
           match != status->last_index)) {
        return false;
      }
    }
  }
  return true;
}

/*
 * Quiescence: an idle group stops being ticked, so 100,000 idle groups cost
 * nothing. Its leader goes quiet once every member matched its log and two
 * heartbeat intervals passed (so the followers heard the final commit); a
 * follower goes quiet once it heard nothing for two heartbeat intervals,
 * holds everything up to its commit, and the leader's node is alive (node
 * liveness comes from the shard's frames, heartbeats or keepalives). Any
 * message, proposal or read wakes a group; a leader node that stops
 * sending wakes the groups it led, which then elect as usual. Lease reads
 * measure time in ticks, so a group that reads by lease never goes quiet.
 */
bool replica_may_quiesce(replica *r) {
  const fl_engine *e = r->owner->engine;
  if (r->activity) {
    r->activity = false;
    r->idle_ticks = 0;
    return false;
  }
  r->idle_ticks++;
  if (e->options.lease_read || r->idle_ticks < 2 * e->options.heartbeat_ticks ||
      !pending_empty(r) || r->snapshot_listed) {
    return false;
  }
  fl_raft_status status;
  fl_raft_get_status(r->raft, &status);
  bool settled = status.leader != 0 && status.commit == status.last_index &&
                 r->applied == status.commit && status.stable_index == status.last_index &&
                 status.lead_transferee == 0;
  if (!settled) {
    return false;
  }
  /* a leader that removed itself no longer leads anything: stay awake to
   * elect a new one */
  bool quiet = status.role == FL_RAFT_LEADER
                   ? followers_caught_up(r, &status)
                   : status.role == FL_RAFT_FOLLOWER &&
                         fl_raft_conf_has_voter(&status.conf, status.leader) &&
                         network_node_alive(r->owner, status.leader);
  if (quiet) {
    release_pending(r);
  }
  return quiet;
}

/* A write is durable: tell the core, then send what waited for it. */
void replica_persisted(replica *r, uint64_t write_id) {
  fl_raft_persisted(r->raft, write_id);
  replica_pending *p = r->pending;
  while (p != NULL && p->after_write_head != NULL && p->after_write_head->write_id <= write_id) {
    after_write *first = p->after_write_head;
    p->after_write_head = first->next;
    network_send(r->owner, r->group, &first->message);
    free(first);
  }
  if (p != NULL && p->after_write_head == NULL) {
    p->after_write_tail = NULL;
  }
  shard_mark_ready(r->owner, r);
}
