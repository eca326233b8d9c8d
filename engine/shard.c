/*
 * shard.c - one shard: a thread, its io_uring, its WAL, its transport and
 * the replicas of the groups that hash to it.
 *
 *   STARTING --setup ok--> RUNNING --REQUEST_STOP--> STOPPING --> (joined)
 *       \--setup failed--> (joined, fl_engine_open fails)
 *   RUNNING --fatal disk or memory error--> FAILED (answers FL_E_IO)
 *
 * One loop iteration, in the order the brief's write path needs:
 *   1. wait in the kernel (io_uring) unless work is known to be ready;
 *      completions: the request queue's eventfd, the WAL's eventfd, the
 *      tick timer, and the transport's sends and receives (inbound frames
 *      are stepped into their replicas and drained at once);
 *   2. report durable writes to their cores (persisted, then the messages
 *      that waited for them);
 *   3. on a tick: tick every active replica, the transport's clock, and
 *      propose the expiry sweeps that are due (expiry.c);
 *   4. take every queued request: proposals are gathered per replica;
 *   5. drain every replica with work: persist, send, apply, answer;
 *   6. tell fl_options.on_leader of the leaders that changed;
 *   7. one transport flush (one send per peer) and one WAL flush (one write
 *      + one fdatasync for all groups) unless the pipeline is full or a
 *      small batch waits for the one in flight (flush_wal; the queued
 *      requests wait with it: hold_requests);
 *   8. free what the cores referenced (arena, proposal requests).
 *
 * Invariant: between iterations no replica holds an update it has not
 * advanced, so the arena can be reset.
 */
#include "engine/engine_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/dispatch.h"
#include "engine/snapshot.h"

#define SHARD_RING_ENTRIES 4096u
/* Snapshot bytes (written or streamed) per replica per iteration: bounds
 * the stall one snapshot adds to a loop iteration. */
#define SHARD_SNAPSHOT_SLICE_BYTES (1u << 20)
/* Garbage collection of the WAL at most this often, after compactions. */
#define SHARD_COLLECTION_INTERVAL_MS 1000u
#define SHARD_COLLECTION_MIN_SEGMENTS 3u
/* A WAL batch smaller than this waits for the one in flight instead of
 * taking a second pipeline slot (flush_wal): at 16-byte writes it is a
 * under a thousand entries, what a shard gathers in about a millisecond at
 * 100,000 writes/s; the peak's batches are several times larger. */
#define SHARD_WAL_PIPELINE_MIN_BYTES (64u * 1024u)

uint64_t shard_monotonic_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

void shard_log(shard *s, int level, const char *format, ...) {
  if (level < s->engine->options.log_level) {
    return;
  }
  char message[512];
  int prefix = snprintf(message, sizeof(message), "shard %u: ", s->index);
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(message + prefix, sizeof(message) - (size_t)prefix, format, arguments);
  va_end(arguments);
  const fl_options *o = &s->engine->options;
  if (o->log != NULL) {
    o->log(o->log_context, level, message);
  } else {
    fprintf(stderr, "flotilla: %s\n", message);
  }
}

uint32_t shard_of_group(const fl_engine *engine, uint64_t group) {
  group ^= group >> 31;
  group *= 0x7fb5d329728ea185ULL;
  group ^= group >> 27;
  return (uint32_t)(group % engine->shard_count);
}

void shard_fail(shard *s, int error, const char *what) {
  if (s->failure == 0) {
    s->failure = error;
    shard_log(s, 3, "fatal: %s: %s; the shard stops serving", what, strerror(-error));
  }
}

void shard_mark_ready(shard *s, replica *r) {
  if (r->ready) {
    return;
  }
  r->ready = true;
  r->next_ready = NULL;
  if (s->ready_tail != NULL) {
    s->ready_tail->next_ready = r;
  } else {
    s->ready_head = r;
  }
  s->ready_tail = r;
}

/* ---- leader reports (fl_options.on_leader) ---------------------------- */

/* Whether on_leader has not heard of the replica's leader yet: a new
 * leader, or a new term's leader (the same node elected again). Terms
 * passing without a leader are not news. */
static bool leader_is_news(const replica *r) {
  return !r->leader_reported || r->leader != r->reported_leader ||
         (r->leader != 0 && r->term != r->reported_term);
}

void shard_note_leader(shard *s, replica *r) {
  if (s->engine->options.on_leader == NULL || r->leader_report_listed || !leader_is_news(r)) {
    return;
  }
  r->leader_report_listed = true;
  r->next_leader_report = s->leader_reports;
  s->leader_reports = r;
}

/* At the end of an iteration: no group is in the middle of an update, so
 * the callback may call back into the engine (asynchronously). */
static void report_leaders(shard *s) {
  const fl_options *o = &s->engine->options;
  while (s->leader_reports != NULL) {
    replica *r = s->leader_reports;
    s->leader_reports = r->next_leader_report;
    r->leader_report_listed = false;
    if (!leader_is_news(r)) {
      continue; /* changed back within the iteration */
    }
    r->leader_reported = true;
    r->reported_leader = r->leader;
    r->reported_term = r->term;
    o->on_leader(o->on_leader_context, r->group, r->leader, r->term);
  }
}

/* A removed replica knows no leader any more: said at once, since it is
 * about to be freed. */
static void report_removal(shard *s, replica *r) {
  for (replica **link = &s->leader_reports; r->leader_report_listed && *link != NULL;
       link = &(*link)->next_leader_report) {
    if (*link == r) {
      *link = r->next_leader_report;
      r->leader_report_listed = false;
      break;
    }
  }
  const fl_options *o = &s->engine->options;
  if (o->on_leader != NULL) {
    o->on_leader(o->on_leader_context, r->group, 0, r->term);
  }
}

/* ---- quiescence (see replica_may_quiesce) --------------------------- */

void shard_wake(shard *s, replica *r) {
  if (r->active_slot != UINT32_MAX) {
    return;
  }
  if (s->active_count == s->active_capacity) {
    uint32_t capacity = s->active_capacity ? s->active_capacity * 2 : 256;
    replica **grown = realloc(s->active, capacity * sizeof(*grown));
    if (grown == NULL) {
      shard_fail(s, -ENOMEM, "waking a group");
      return;
    }
    s->active = grown;
    s->active_capacity = capacity;
  }
  r->active_slot = s->active_count;
  r->idle_ticks = 0;
  s->active[s->active_count++] = r;
}

static void quiesce(shard *s, replica *r) {
  fl_raft_shrink(r->raft); /* an idle group keeps no buffers */
  uint32_t slot = r->active_slot;
  replica *last = s->active[--s->active_count];
  s->active[slot] = last;
  last->active_slot = slot;
  r->active_slot = UINT32_MAX;
}

void shard_wake_led_by(shard *s, uint64_t node) {
  for (uint32_t i = 0; i < s->replicas.capacity; i++) {
    replica *r = s->replicas.slots[i];
    if (r != NULL && r->active_slot == UINT32_MAX && r->leader == node) {
      shard_wake(s, r);
    }
  }
}

/* The snapshot work list is an array in the shard rather than a link in
 * every replica: few groups ever have snapshot work at once, and every
 * replica's byte counts. */
void shard_mark_snapshot_work(shard *s, replica *r) {
  if (r->snapshot_listed) {
    return;
  }
  if (s->snapshot_count == s->snapshot_capacity) {
    uint32_t capacity = s->snapshot_capacity ? s->snapshot_capacity * 2 : 16;
    replica **grown = realloc(s->snapshot_list, capacity * sizeof(*grown));
    if (grown == NULL) {
      shard_fail(s, -ENOMEM, "listing snapshot work");
      return;
    }
    s->snapshot_list = grown;
    s->snapshot_capacity = capacity;
  }
  r->snapshot_listed = true;
  s->snapshot_list[s->snapshot_count++] = r;
}

static void unlist_snapshot_work(shard *s, replica *r) {
  for (uint32_t i = 0; i < s->snapshot_count; i++) {
    if (s->snapshot_list[i] == r) {
      memmove(&s->snapshot_list[i], &s->snapshot_list[i + 1],
              (s->snapshot_count - i - 1) * sizeof(replica *));
      s->snapshot_count--;
      r->snapshot_listed = false;
      return;
    }
  }
}

/* After compactions, and not too often: retiring segments drains the WAL. */
static void maybe_collect_garbage(shard *s) {
  if (s->markers_since_collection == 0 ||
      s->now_ms < s->last_collection_ms + SHARD_COLLECTION_INTERVAL_MS) {
    return;
  }
  wal_stats stats;
  wal_get_stats(s->log, &stats);
  if (stats.segments < SHARD_COLLECTION_MIN_SEGMENTS) {
    return;
  }
  int rc = wal_collect_garbage(s->log);
  if (rc < 0) {
    shard_fail(s, rc, "WAL garbage collection");
  }
  s->markers_since_collection = 0;
  s->last_collection_ms = s->now_ms;
}

/* Advances every listed replica's snapshot work; the ones done leave the
 * list (kept in order, compacted in place). */
static void snapshot_work(shard *s) {
  uint32_t kept = 0;
  for (uint32_t i = 0; i < s->snapshot_count; i++) {
    replica *r = s->snapshot_list[i];
    if (r->saving != NULL) {
      int rc = snapshot_continue(r, SHARD_SNAPSHOT_SLICE_BYTES);
      if (rc < 0) {
        shard_log(s, 2, "group %llu: snapshot failed: %s", (unsigned long long)r->group,
                  strerror(-rc));
        snapshot_abandon_saving(r);
      }
    }
    if (r->sending != NULL) {
      snapshot_send_continue(r, SHARD_SNAPSHOT_SLICE_BYTES);
    }
    if (!snapshot_busy(r)) {
      r->snapshot_listed = false;
    } else {
      s->snapshot_list[kept++] = r;
    }
  }
  s->snapshot_count = kept;
  maybe_collect_garbage(s);
}

void shard_drain_ready(shard *s) {
  while (s->ready_head != NULL && s->failure == 0) {
    replica *r = s->ready_head;
    s->ready_head = r->next_ready;
    if (s->ready_head == NULL) {
      s->ready_tail = NULL;
    }
    r->ready = false;
    replica_drain(r);
  }
}

void shard_write_done(write_ticket *ticket, int result) {
  shard *s = ticket->owner;
  ticket->result = result;
  ticket->next = NULL;
  if (s->durable_tail != NULL) {
    s->durable_tail->next = ticket;
  } else {
    s->durable_head = ticket;
  }
  s->durable_tail = ticket;
}

void shard_defer_free(shard *s, request *list) {
  while (list != NULL) {
    request *next = list->next;
    list->next = s->deferred;
    s->deferred = list;
    list = next;
  }
}

static void report_durable(shard *s) {
  while (s->durable_head != NULL) {
    write_ticket *ticket = s->durable_head;
    s->durable_head = ticket->next;
    if (s->durable_head == NULL) {
      s->durable_tail = NULL;
    }
    if (ticket->result != 0) {
      shard_fail(s, ticket->result, "WAL write");
    }
    replica *r = replica_table_find(&s->replicas, ticket->group);
    if (ticket->result == 0 && r != NULL && r->generation == ticket->generation) {
      replica_persisted(r, ticket->write_id);
    }
    free(ticket);
  }
}

/* ---- ring completions ---------------------------------------------------- */

static void arm_read(shard *s, fl_completion *completion, int fd, uint64_t *value) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
  if (sqe == NULL) {
    io_uring_submit(&s->ring);
    sqe = io_uring_get_sqe(&s->ring);
  }
  io_uring_prep_read(sqe, fd, value, sizeof(*value), 0);
  io_uring_sqe_set_data(sqe, completion);
}

static void arm_tick(shard *s) {
  struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
  if (sqe == NULL) {
    io_uring_submit(&s->ring);
    sqe = io_uring_get_sqe(&s->ring);
  }
  io_uring_prep_timeout(sqe, &s->tick_interval, 0, 0);
  io_uring_sqe_set_data(sqe, &s->tick);
}

static void on_queue_wake(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  shard *s = FL_CONTAINER_OF(completion, shard, queue_wake);
  (void)result;
  s->queue_signaled = true;
  if (!s->stopping) {
    arm_read(s, &s->queue_wake, fl_queue_event_fd(&s->queue), &s->queue_wake_value);
  }
}

static void on_wal_wake(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  (void)result;
  shard *s = FL_CONTAINER_OF(completion, shard, wal_wake);
  s->wal_signaled = true;
  if (!s->stopping) {
    arm_read(s, &s->wal_wake, wal_notify_fd(s->log), &s->wal_wake_value);
  }
}

static void on_tick(fl_completion *completion, int result, uint32_t flags) {
  (void)flags;
  (void)result;
  shard *s = FL_CONTAINER_OF(completion, shard, tick);
  s->tick_due = true;
  if (!s->stopping) {
    arm_tick(s);
  }
}

/* ---- requests -------------------------------------------------------------- */

static void finish_blocking(request *q, int result) {
  q->result = result;
  sem_post(q->done);
}

void request_fail(request *q, int status) {
  switch (q->type) {
  case REQUEST_PROPOSE:
  case REQUEST_CHANGE:
  case REQUEST_QUERY:
    q->propose_callback(q->context, status, NULL);
    free(q);
    return;
  case REQUEST_PROPOSE_BATCH:
    for (uint32_t i = 0; i < q->command_count; i++) {
      q->propose_callback(q->contexts[i], status, NULL);
    }
    free(q);
    return;
  case REQUEST_READ:
    q->read_callback(q->context, status, NULL, 0);
    free(q);
    return;
  case REQUEST_TRANSFER:
    free(q);
    return;
  default:
    finish_blocking(q, status);
  }
}

static void group_created(void *context, int result) {
  request *q = context;
  finish_blocking(q, result == 0 ? 0 : FL_E_IO);
}

/* Answers once the group's bootstrap record is durable (a barrier on the
 * WAL: it completes with the batch that holds the record). */
static void answer_when_durable(shard *s, request *q) {
  wal_request *done = (wal_request *)q->out;
  *done = (wal_request){.callback = group_created, .context = q};
  int rc = wal_barrier(s->log, done);
  if (rc != 0) {
    finish_blocking(q, rc == 1 ? 0 : FL_E_IO);
  }
}

static int create_group(shard *s, request *q, bool join) {
  if (replica_table_find(&s->replicas, q->group) != NULL) {
    return FL_E_EXISTS;
  }
  fl_raft_conf conf = {0};
  if (!join) {
    if (q->member_count == 0 || q->member_count > FL_RAFT_MAX_VOTERS) {
      return FL_E_INVALID;
    }
    conf.voter_count = (uint8_t)q->member_count;
    memcpy(conf.voters, q->members, q->member_count * sizeof(uint64_t));
    if (!fl_raft_conf_is_valid(&conf)) {
      return FL_E_INVALID;
    }
  }
  replica *r = NULL;
  int rc = replica_open(s, q->group, join ? NULL : &conf, &r);
  if (rc == 0 && replica_table_insert(&s->replicas, r) != 0) {
    replica_close(r, FL_E_CLOSED);
    rc = -ENOMEM;
  }
  if (rc != 0) {
    return rc == -ENOMEM ? FL_E_NOMEM : FL_E_INVALID;
  }
  shard_wake(s, r);
  shard_mark_ready(s, r);
  shard_note_leader(s, r);
  return 0;
}

static void group_removed(void *context, int result) {
  request *q = context;
  finish_blocking(q, result == 0 ? 0 : FL_E_IO);
}

static void remove_group(shard *s, request *q) {
  replica *r = replica_table_find(&s->replicas, q->group);
  if (r == NULL) {
    finish_blocking(q, FL_E_NO_GROUP);
    return;
  }
  replica_table_remove(&s->replicas, q->group);
  unlist_snapshot_work(s, r);
  if (r->active_slot != UINT32_MAX) {
    quiesce(s, r);
  }
  if (r->ready) {
    /* unlink from the ready list */
    for (replica **link = &s->ready_head; *link != NULL; link = &(*link)->next_ready) {
      if (*link == r) {
        *link = r->next_ready;
        break;
      }
    }
    s->ready_tail = NULL;
    for (replica *p = s->ready_head; p != NULL; p = p->next_ready) {
      s->ready_tail = p;
    }
  }
  uint64_t snapshot_index = r->snapshot_index;
  report_removal(s, r);
  replica_close(r, FL_E_NO_GROUP);
  snapshot_remove_files(s, q->group, snapshot_index);
  /* the request doubles as the WAL request: durable removal answers it */
  wal_request *done = (wal_request *)q->out;
  *done = (wal_request){.callback = group_removed, .context = q};
  int rc = wal_remove_group(s->log, q->group, done);
  if (rc == -ENOBUFS) {
    rc = wal_flush(s->log);
    rc = rc == 0 ? wal_remove_group(s->log, q->group, done) : rc;
  }
  if (rc != 0) {
    finish_blocking(q, FL_E_IO);
  }
}

static void fill_status(replica *r, fl_group_status *out) {
  fl_raft_status st;
  fl_raft_get_status(r->raft, &st);
  *out = (fl_group_status){.group = r->group,
                           .role = (fl_role)st.role,
                           .term = st.term,
                           .leader = st.leader,
                           .commit = st.commit,
                           .applied = r->applied,
                           .first_index = st.first_index,
                           .last_index = st.last_index,
                           .voter_count = st.conf.voter_count,
                           .learner_count = st.conf.learner_count};
  if (!r->owner->engine->custom_machine && r->machine != NULL) {
    out->keys = kv_count(r->machine);
    out->kv_bytes = kv_memory_bytes(r->machine);
  }
  memcpy(out->voters, st.conf.voters, sizeof(out->voters));
  memcpy(out->learners, st.conf.learners, sizeof(out->learners));
}

static void list_groups(shard *s, request *q) {
  uint64_t *out = q->out;
  uint32_t n = 0;
  for (uint32_t i = 0; i < s->replicas.capacity; i++) {
    replica *r = s->replicas.slots[i];
    if (r != NULL) {
      if (n < q->out_capacity) {
        out[n] = r->group;
      }
      n++;
    }
  }
  q->out_count = n;
  finish_blocking(q, 0);
}

static void fill_stats(shard *s, fl_shard_stats *out) {
  wal_stats w;
  wal_get_stats(s->log, &w);
  *out = s->stats;
  out->shard = s->index;
  out->groups = s->replicas.count;
  out->active_groups = s->active_count;
  out->wal_batches = w.batches;
  out->wal_bytes = w.bytes_written;
  out->wal_syncs = w.syncs;
}

static void change_membership(replica *r, request *q) {
  fl_raft_change change = {.node = q->node};
  change.op = q->change == FL_ADD_VOTER     ? FL_RAFT_ADD_VOTER
              : q->change == FL_ADD_LEARNER ? FL_RAFT_ADD_LEARNER
                                            : FL_RAFT_REMOVE;
  int rc = fl_raft_propose_change(r->raft, &change, 1, true);
  if (rc != 0) {
    int status = rc == FL_RAFT_E_CONF_PENDING ? FL_E_CONFLICT
                 : rc == FL_RAFT_E_NOT_LEADER ? FL_E_NOT_LEADER
                                              : FL_E_INVALID;
    q->propose_callback(q->context, status, NULL);
    free(q);
    return;
  }
  /* answered when the conf entry applies: it is the newest proposal */
  fl_raft_status st;
  fl_raft_get_status(r->raft, &st);
  replica_track_proposal(r, st.last_index, st.term, q->propose_callback, q->context,
                         q->deadline_ms);
  free(q);
  shard_mark_ready(r->owner, r);
}

static void handle_group_request(shard *s, replica *r, request *q) {
  if (q->type != REQUEST_STATUS) {
    r->activity = true;
    shard_wake(s, r);
  }
  switch (q->type) {
  case REQUEST_PROPOSE:
    s->stats.proposals++;
    replica_add_proposal(r, q);
    return;
  case REQUEST_PROPOSE_BATCH:
    s->stats.proposals += q->command_count;
    replica_add_proposal(r, q);
    return;
  case REQUEST_READ:
  case REQUEST_QUERY:
    replica_read(r, q);
    return;
  case REQUEST_STATUS:
    fill_status(r, q->out);
    finish_blocking(q, 0);
    return;
  case REQUEST_CHANGE:
    change_membership(r, q);
    return;
  case REQUEST_TRANSFER:
    fl_raft_transfer_leader(r->raft, q->node);
    shard_mark_ready(s, r);
    free(q);
    return;
  default:
    assert(false);
  }
}

static void handle_request(shard *s, request *q) {
  if (s->failure != 0 && q->type != REQUEST_STOP) {
    request_fail(q, FL_E_IO);
    return;
  }
  switch (q->type) {
  case REQUEST_CREATE_GROUP:
  case REQUEST_JOIN_GROUP: {
    int rc = create_group(s, q, q->type == REQUEST_JOIN_GROUP);
    if (rc != 0) {
      finish_blocking(q, rc);
    } else {
      answer_when_durable(s, q);
    }
    return;
  }
  case REQUEST_REMOVE_GROUP:
    remove_group(s, q);
    return;
  case REQUEST_LIST_GROUPS:
    list_groups(s, q);
    return;
  case REQUEST_STATS:
    fill_stats(s, q->out);
    finish_blocking(q, 0);
    return;
  case REQUEST_FAULT:
    finish_blocking(q, network_set_fault(s, q->node, q->change != 0) == 0 ? 0 : FL_E_INVALID);
    return;
  case REQUEST_STOP:
    s->stopping = true;
    finish_blocking(q, 0);
    return;
  default:
    break;
  }
  replica *r = replica_table_find(&s->replicas, q->group);
  if (r == NULL) {
    request_fail(q, FL_E_NO_GROUP);
    return;
  }
  handle_group_request(s, r, q);
}

static void take_requests(shard *s) {
  fl_queue_rearm(&s->queue);
  for (request *q; (q = fl_queue_pop(&s->queue)) != NULL;) {
    handle_request(s, q);
  }
}

bool shard_submit(shard *s, request *q) {
  return fl_queue_push(&s->queue, q);
}

/* ---- the loop ------------------------------------------------------------ */

/* Ticks the active replicas only; each may go quiet (swap-removed, so the
 * loop looks at the same slot again). */
static void tick_all(shard *s) {
  s->now_ms = shard_monotonic_ms();
  for (uint32_t i = 0; i < s->active_count;) {
    replica *r = s->active[i];
    fl_raft_tick(r->raft);
    shard_mark_ready(s, r);
    if (replica_may_quiesce(r)) {
      quiesce(s, r);
    } else {
      i++;
    }
  }
  network_tick(s, s->now_ms);
  expiry_tick(s);
  deadline_tick(s);
}

static void free_deferred(shard *s) {
  while (s->deferred != NULL) {
    request *next = s->deferred->next;
    free(s->deferred);
    s->deferred = next;
  }
  arena_reset(&s->scratch);
}

/* Snapshots being written always progress; streams waiting for room in a
 * peer's queue are woken by the send completions, so they do not count. */
static bool has_ready_work(const shard *s) {
  bool saving = false;
  for (uint32_t i = 0; i < s->snapshot_count && !saving; i++) {
    saving = s->snapshot_list[i]->saving != NULL;
  }
  return s->ready_head != NULL || s->durable_head != NULL || saving;
}

/* Whether the iteration's WAL batch may go to the disk now. Never when
 * every pipeline slot is taken: wal_flush would then wait for an
 * fdatasync, and the whole shard with it (receives, acknowledgements,
 * applies, callbacks). Nor when a batch is in flight and this one is
 * small: its own fdatasync would mostly wait for the one in flight (the
 * two share the page at their boundary, and the disk) and costs the
 * shard a system call, an io-wq hand-off and a disk flush, where waiting
 * lets the completion (the WAL's eventfd wakes the loop) take everything
 * gathered meanwhile in one batch. A large batch (a busy shard) still
 * goes at once: pipelining is what keeps the disk busy at the peak.
 * Nothing waits forever: a batch is only held back while another is in
 * flight. */
static bool wal_may_flush(const shard *s) {
  uint32_t in_flight = wal_in_flight(s->log);
  if (in_flight >= s->wal_pipeline_depth) {
    return false;
  }
  return in_flight == 0 || wal_pending_bytes(s->log) >= SHARD_WAL_PIPELINE_MIN_BYTES;
}

static void flush_wal(shard *s) {
  if (s->failure != 0 || !wal_may_flush(s)) {
    return;
  }
  if (wal_flush(s->log) < 0) {
    shard_fail(s, -EIO, "WAL flush");
  }
}

/* Whether the queued requests wait for the next iteration. A leader's
 * proposals cannot commit before its own fdatasync, and while a small
 * batch waits for the one in flight (above) their entries would only
 * wait in it too; taking them now costs a Raft round per group (appends
 * to every follower, their responses, the commit's appends and their
 * responses) for one or two commands each. Left queued, the completion
 * that ends the write in flight wakes the loop (the WAL's eventfd), and
 * the next iteration takes everything that arrived meanwhile: fewer,
 * larger rounds at moderate rates, while the leader's own sync starts
 * no later than it could have; only the followers hear of the entries
 * later.
 *
 * A hold ends at the first WAL completion after it began, whatever is in
 * flight then: a shard that writes its followers' entries all the time
 * always has a write in flight, and must still take its requests. Never
 * held while the queue is a quarter full (producers would be refused
 * FL_E_BUSY for it), nor once the engine is closing (its stop request is
 * in the queue). Reads and admin requests share the queue and wait as
 * long: one fdatasync at most. */
static bool hold_requests(shard *s) {
  bool may_hold = !s->stopping && s->failure == 0 && !atomic_load(&s->engine->closing) &&
                  fl_queue_length(&s->queue) < fl_queue_capacity(&s->queue) / 4 &&
                  wal_in_flight(s->log) > 0 &&
                  wal_pending_bytes(s->log) < SHARD_WAL_PIPELINE_MIN_BYTES;
  uint64_t completed = wal_completed_batches(s->log);
  if (!may_hold || (s->holding_requests && completed != s->hold_mark)) {
    s->holding_requests = false;
    return false;
  }
  if (!s->holding_requests) {
    s->holding_requests = true;
    s->hold_mark = completed;
  }
  return true;
}

static void run_iteration(shard *s) {
  bool wait = !has_ready_work(s) && !s->stopping;
  int rc = fl_dispatch(&s->ring, wait ? 1 : 0, wait ? -1 : 0);
  if (rc < 0) {
    shard_fail(s, rc, "io_uring wait");
  }
  s->stats.loop_iterations++;
  if (wal_poll(s->log, false) < 0) {
    shard_fail(s, -EIO, "WAL");
  }
  s->wal_signaled = false;
  report_durable(s);
  if (s->tick_due) {
    s->tick_due = false;
    tick_all(s);
  }
  if (s->queue_signaled && !hold_requests(s)) {
    s->queue_signaled = false;
    take_requests(s);
  }
  shard_drain_ready(s);
  if (s->failure == 0) {
    snapshot_work(s);
    shard_drain_ready(s); /* compactions and snapshot reports */
  }
  report_leaders(s);
  network_flush(s);
  flush_wal(s);
  snapshot_drop_verified(s); /* a snapshot the core took is installed by now */
  free_deferred(s);
}

static void close_replicas(shard *s, int status) {
  for (uint32_t i = 0; i < s->replicas.capacity; i++) {
    if (s->replicas.slots[i] != NULL) {
      replica_close(s->replicas.slots[i], status);
      s->replicas.slots[i] = NULL;
    }
  }
  replica_table_release(&s->replicas);
  expiry_release(s);
  deadline_release(s);
  s->leader_reports = NULL;
  free(s->active);
  s->active = NULL;
  s->active_count = s->active_capacity = 0;
  s->ready_head = s->ready_tail = NULL;
  free(s->snapshot_list);
  s->snapshot_list = NULL;
  s->snapshot_count = s->snapshot_capacity = 0;
}

static void fail_queued(shard *s) {
  for (request *q; (q = fl_queue_pop(&s->queue)) != NULL;) {
    request_fail(q, FL_E_CLOSED);
  }
}

static void shutdown_shard(shard *s) {
  close_replicas(s, FL_E_CLOSED);
  fail_queued(s);
  network_close(s); /* dispatches until the transport is idle */
  wal_close(s->log);
  s->log = NULL;
  report_durable(s); /* tickets completed by the close */
  free_deferred(s);
  io_uring_queue_exit(&s->ring);
}

/* ---- setup ------------------------------------------------------------ */

typedef struct group_list {
  uint64_t *ids;
  uint32_t count;
  uint32_t capacity;
} group_list;

static void collect_group(void *context, uint64_t group) {
  group_list *list = context;
  if (list->count == list->capacity) {
    uint32_t capacity = list->capacity ? list->capacity * 2 : 64;
    uint64_t *grown = realloc(list->ids, capacity * sizeof(uint64_t));
    if (grown == NULL) {
      return;
    }
    list->ids = grown;
    list->capacity = capacity;
  }
  list->ids[list->count++] = group;
}

static int recover_groups(shard *s) {
  group_list list = {0};
  wal_groups(s->log, collect_group, &list);
  int rc = 0;
  for (uint32_t i = 0; i < list.count && rc == 0; i++) {
    replica *r = NULL;
    rc = replica_open(s, list.ids[i], NULL, &r);
    if (rc == 0) {
      rc = replica_table_insert(&s->replicas, r);
    }
    if (rc == 0) {
      shard_wake(s, r);
      shard_mark_ready(s, r);
      shard_note_leader(s, r);
    }
  }
  free(list.ids);
  return rc;
}

static int open_wal(shard *s) {
  const fl_engine *e = s->engine;
  char directory[4096];
  snprintf(directory, sizeof(directory), "%s/shard-%u", e->data_dir, s->index);
  wal_options options;
  wal_options_default(&options);
  options.directory = directory;
  options.shard_id = s->index;
  options.segment_bytes = e->options.wal_segment_bytes;
  options.batch_bytes = engine_wal_batch_bytes(&e->options);
  options.direct = e->options.fsync_mode == FL_FSYNC_DIRECT;
  s->wal_pipeline_depth = options.pipeline_depth;
  wal_recovery_report report;
  int rc = wal_open(&options, &s->log, &report);
  if (rc != 0) {
    shard_log(s, 3, "cannot open the WAL in %s: %s %s", directory, strerror(-rc), report.error);
  }
  return rc;
}

static int setup(shard *s) {
  int rc = io_uring_queue_init(SHARD_RING_ENTRIES, &s->ring, 0);
  if (rc != 0) {
    return rc;
  }
  s->now_ms = shard_monotonic_ms();
  rc = open_wal(s);
  rc = rc == 0 ? snapshot_prepare_directory(s) : rc;
  rc = rc == 0 ? recover_groups(s) : rc;
  rc = rc == 0 ? network_open(s) : rc;
  int wal_fd = rc == 0 ? wal_notify_fd(s->log) : rc;
  if (wal_fd < 0) {
    return wal_fd;
  }
  s->queue_wake.handle = on_queue_wake;
  s->wal_wake.handle = on_wal_wake;
  s->tick.handle = on_tick;
  uint32_t tick_ms = s->engine->options.tick_ms;
  s->tick_interval = (struct __kernel_timespec){.tv_sec = tick_ms / 1000,
                                                .tv_nsec = (long long)(tick_ms % 1000) * 1000000};
  arm_read(s, &s->queue_wake, fl_queue_event_fd(&s->queue), &s->queue_wake_value);
  arm_read(s, &s->wal_wake, wal_fd, &s->wal_wake_value);
  arm_tick(s);
  s->queue_signaled = true; /* requests may have arrived before the first read */
  return 0;
}

static void undo_setup(shard *s) {
  close_replicas(s, FL_E_CLOSED);
  if (s->net != NULL) {
    network_close(s);
  }
  if (s->log != NULL) {
    wal_close(s->log);
    s->log = NULL;
  }
  report_durable(s);
  if (s->ring.ring_fd > 0) {
    io_uring_queue_exit(&s->ring);
  }
}

static void *shard_main(void *argument) {
  shard *s = argument;
  s->start_result = setup(s);
  bool started = s->start_result == 0;
  if (!started) {
    undo_setup(s);
  }
  sem_post(&s->started);
  if (!started) {
    return NULL;
  }
  while (!s->stopping) {
    run_iteration(s);
  }
  shutdown_shard(s);
  return NULL;
}

int shard_start(fl_engine *engine, uint32_t index, shard **out) {
  shard *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    return -ENOMEM;
  }
  s->engine = engine;
  s->index = index;
  int rc = fl_queue_init(&s->queue, engine->options.queue_capacity);
  if (rc == 0) {
    sem_init(&s->started, 0, 0);
    rc = pthread_create(&s->thread, NULL, shard_main, s);
    rc = rc != 0 ? -rc : 0;
  }
  if (rc == 0) {
    sem_wait(&s->started);
    rc = s->start_result;
    if (rc != 0) {
      pthread_join(s->thread, NULL);
    }
  }
  if (rc != 0) {
    /* what a failed recovery left (a group that would not open) */
    fl_queue_destroy(&s->queue);
    arena_release(&s->scratch);
    free(s->term_runs);
    free(s->read_entries);
    free(s);
    return rc;
  }
  *out = s;
  return 0;
}

void shard_stop(shard *s) {
  sem_t done;
  sem_init(&done, 0, 0);
  request stop = {.type = REQUEST_STOP, .done = &done};
  while (!shard_submit(s, &stop)) {
    sched_yield(); /* the queue is full: the shard is draining it */
  }
  sem_wait(&done);
  pthread_join(s->thread, NULL);
  sem_destroy(&done);
  sem_destroy(&s->started);
  fl_queue_destroy(&s->queue);
  arena_release(&s->scratch);
  free(s->term_runs);
  free(s->read_entries);
  free(s);
}
