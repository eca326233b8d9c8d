/*
 * engine.c - the public API (include/flotilla.h): options, opening and
 * closing a node, and every call turned into a request for the shard that
 * owns the group. Asynchronous calls return as soon as the request is
 * queued; blocking ones wait on a semaphore the shard posts.
 */
#include "engine/engine_internal.h"
#include "engine/engine_testing.h"

#include "common/limits.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bounds of the options: far above any use, below overflow and nonsense. */
#define ENGINE_MAX_SHARDS 256u
#define ENGINE_MAX_NODES 1024u
#define ENGINE_MAX_COMMAND_BYTES (64u << 20)
/* Room a WAL record and entry header take around one command, with margin
 * (wal/format.h; the O_DIRECT padding reserve included). */
#define ENGINE_ENTRY_OVERHEAD_BYTES (64u * 1024u)

const char *fl_strerror(int error) {
  switch (error) {
  case FL_OK:
    return "ok";
  case FL_E_INVALID:
    return "invalid argument";
  case FL_E_NOMEM:
    return "out of memory";
  case FL_E_IO:
    return "input/output error";
  case FL_E_NOT_LEADER:
    return "not the leader";
  case FL_E_NO_GROUP:
    return "no such group";
  case FL_E_EXISTS:
    return "group exists";
  case FL_E_BUSY:
    return "busy, retry later";
  case FL_E_TIMEOUT:
    return "timed out";
  case FL_E_CLOSED:
    return "engine closed";
  case FL_E_CORRUPT:
    return "corrupt data";
  case FL_E_TOO_LARGE:
    return "too large";
  case FL_E_DROPPED:
    return "command dropped by a leader change";
  case FL_E_NOT_FOUND:
    return "not found";
  case FL_E_UNAVAILABLE:
    return "no leader";
  case FL_E_CONFLICT:
    return "a membership change is in progress";
  case FL_E_STATE:
    return "refused by the state machine";
  case FL_E_IN_USE:
    return "the data directory is in use by another engine";
  default:
    return "unknown error";
  }
}

void fl_options_default(fl_options *options) {
  *options = (fl_options){
      .cluster_id = 1,
      .listen_host = "127.0.0.1",
      .tick_ms = 10,
      .election_ticks = 100,
      .heartbeat_ticks = 10,
      .fsync_mode = FL_FSYNC_DATA,
      .max_command_bytes = 1u << 20,
      .queue_capacity = 65536,
      .wal_segment_bytes = 64u << 20,
      .snapshot_entries = 100000,
      .log_level = 2,
  };
}

/*
 * The WAL batch of a shard. 1 MiB keeps append-to-durable latency near one
 * disk write; a small segment takes a quarter of itself. But one entry is
 * never split across batches, so a batch must also hold the largest
 * command with its record and entry headers: otherwise a proposal the API
 * accepted would stop the shard when its entry reached the WAL.
 */
uint32_t engine_wal_batch_bytes(const fl_options *o) {
  uint64_t batch = o->wal_segment_bytes / 4 < (1u << 20) ? o->wal_segment_bytes / 4 : (1u << 20);
  uint64_t largest =
      ((uint64_t)o->max_command_bytes + ENGINE_ENTRY_OVERHEAD_BYTES + 4095) & ~(uint64_t)4095;
  batch = batch > largest ? batch : largest;
  return (uint32_t)(batch & ~(uint64_t)4095);
}

/* A segment must hold at least two batches, so that a rollover does not
 * come with every batch. */
static bool wal_fits_commands(const fl_options *o) {
  return engine_wal_batch_bytes(o) <= o->wal_segment_bytes / 2;
}

static int check_options(const fl_options *o) {
  bool ok = o->node_id != 0 && o->data_dir != NULL && o->nodes != NULL && o->node_count > 0 &&
            o->node_count <= ENGINE_MAX_NODES && o->shard_count <= ENGINE_MAX_SHARDS &&
            o->tick_ms > 0 && o->heartbeat_ticks > 0 && o->election_ticks > o->heartbeat_ticks &&
            o->max_command_bytes > 0 && o->max_command_bytes <= ENGINE_MAX_COMMAND_BYTES &&
            o->queue_capacity >= 2 && (o->queue_capacity & (o->queue_capacity - 1)) == 0 &&
            o->request_timeout_ms <= FL_MAX_REQUEST_TIMEOUT_MS;
  if (ok && !wal_fits_commands(o)) {
    char message[256];
    snprintf(message, sizeof(message),
             "max_command_bytes %u needs wal_segment_bytes of at least %llu (a WAL batch, "
             "at most half a segment, must hold the largest command)",
             o->max_command_bytes, 2ull * engine_wal_batch_bytes(o));
    if (o->log != NULL) {
      o->log(o->log_context, 3, message);
    } else {
      fprintf(stderr, "flotilla: %s\n", message);
    }
    return FL_E_INVALID;
  }
  const fl_state_machine *m = o->machine;
  ok = ok && (m == NULL || (m->create != NULL && m->destroy != NULL && m->apply != NULL));
  bool self_listed = false;
  for (uint32_t i = 0; ok && i < o->node_count; i++) {
    self_listed |= o->nodes[i].node_id == o->node_id;
    ok = o->nodes[i].node_id != 0 &&
         (uint32_t)o->nodes[i].port + (o->shard_count ? o->shard_count : 1) <= 65536u;
  }
  return ok && self_listed ? 0 : FL_E_INVALID;
}

static uint32_t default_shards(void) {
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? (uint32_t)cores : 1;
}

static void raft_options_from(const fl_options *o, fl_raft_options *raft) {
  fl_raft_options_default(raft);
  raft->election_ticks = o->election_ticks;
  raft->heartbeat_ticks = o->heartbeat_ticks;
  raft->pre_vote = true;
  raft->check_quorum = true;
  raft->lease_read = o->lease_read;
}

static int copy_options(fl_engine *e, const fl_options *options) {
  e->options = *options;
  e->nodes = malloc(options->node_count * sizeof(fl_node_address));
  e->data_dir = strdup(options->data_dir);
  e->listen_host = strdup(options->listen_host != NULL ? options->listen_host : "0.0.0.0");
  if (e->nodes == NULL || e->data_dir == NULL || e->listen_host == NULL) {
    return FL_E_NOMEM;
  }
  memcpy(e->nodes, options->nodes, options->node_count * sizeof(fl_node_address));
  e->options.nodes = e->nodes;
  e->options.data_dir = e->data_dir;
  e->options.listen_host = e->listen_host;
  e->shard_count = options->shard_count ? options->shard_count : default_shards();
  if (options->machine != NULL) {
    e->machine = *options->machine;
    e->custom_machine = true;
  }
  raft_options_from(options, &e->raft_options);
  return fl_raft_options_validate(&e->raft_options) == 0 ? 0 : FL_E_INVALID;
}

/*
 * Two engines on one data directory would interleave their WAL writes and
 * destroy both logs: the directory's LOCK file is held exclusively for the
 * engine's life. flock() locks belong to the open file, so a second open
 * in the same process is refused as well, and the kernel drops the lock
 * when the process dies, leaving nothing stale after a crash.
 */
static int lock_data_dir(fl_engine *e) {
  char path[PATH_MAX];
  if (snprintf(path, sizeof(path), "%s/LOCK", e->data_dir) >= (int)sizeof(path)) {
    return FL_E_INVALID;
  }
  e->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (e->lock_fd < 0) {
    return FL_E_IO;
  }
  if (flock(e->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    return errno == EWOULDBLOCK ? FL_E_IN_USE : FL_E_IO;
  }
  return 0;
}

static void free_engine(fl_engine *e) {
  if (e->lock_fd >= 0) {
    close(e->lock_fd); /* releases the lock */
  }
  free(e->shards);
  free(e->nodes);
  free(e->data_dir);
  free(e->listen_host);
  free(e);
}

int fl_engine_open(const fl_options *options, fl_engine **out) {
  *out = NULL;
  int rc = check_options(options);
  if (rc != 0) {
    return rc;
  }
  if (mkdir(options->data_dir, 0755) != 0 && errno != EEXIST) {
    return FL_E_IO;
  }
  fl_engine *e = calloc(1, sizeof(*e));
  if (e == NULL) {
    return FL_E_NOMEM;
  }
  e->lock_fd = -1;
  rc = copy_options(e, options);
  rc = rc == 0 ? lock_data_dir(e) : rc;
  e->shards = rc == 0 ? calloc(e->shard_count, sizeof(shard *)) : NULL;
  rc = rc == 0 && e->shards == NULL ? FL_E_NOMEM : rc;
  for (uint32_t i = 0; rc == 0 && i < e->shard_count; i++) {
    int started = shard_start(e, i, &e->shards[i]);
    rc = started == 0 ? 0 : started == -EUCLEAN ? FL_E_CORRUPT : FL_E_IO;
  }
  if (rc != 0) {
    for (uint32_t i = 0; e->shards != NULL && i < e->shard_count; i++) {
      if (e->shards[i] != NULL) {
        shard_stop(e->shards[i]);
      }
    }
    free_engine(e);
    return rc;
  }
  *out = e;
  return 0;
}

int fl_engine_close(fl_engine *e) {
  if (e == NULL) {
    return 0;
  }
  atomic_store(&e->closing, true);
  for (uint32_t i = 0; i < e->shard_count; i++) {
    shard_stop(e->shards[i]);
  }
  free_engine(e);
  return 0;
}

uint32_t fl_engine_shard_count(const fl_engine *engine) {
  return engine->shard_count;
}

/* ---- requests ------------------------------------------------------------ */

static request *new_request(request_type type, uint64_t group, const void *data, uint32_t length) {
  request *q = malloc(sizeof(request) + length);
  if (q == NULL) {
    return NULL;
  }
  memset(q, 0, sizeof(*q));
  q->type = type;
  q->group = group;
  q->length = length;
  if (data != NULL && length > 0) {
    memcpy(q->data, data, length); /* NULL: the caller writes the bytes */
  }
  return q;
}

static shard *owner_of(fl_engine *e, uint64_t group) {
  return e->shards[shard_of_group(e, group)];
}

/* Queues an asynchronous request; on refusal frees it (no callback). */
static int submit_async(fl_engine *e, shard *s, request *q) {
  if (q == NULL) {
    return FL_E_NOMEM;
  }
  if (atomic_load(&e->closing)) {
    free(q);
    return FL_E_CLOSED;
  }
  uint32_t timeout_ms = e->options.request_timeout_ms;
  q->deadline_ms = timeout_ms != 0 ? shard_monotonic_ms() + timeout_ms : 0;
  if (!shard_submit(s, q)) {
    free(q);
    return FL_E_BUSY;
  }
  return 0;
}

/* Queues a blocking request and waits for the shard's answer. */
static int submit_and_wait(fl_engine *e, shard *s, request *q) {
  if (atomic_load(&e->closing)) {
    return FL_E_CLOSED;
  }
  sem_t done;
  sem_init(&done, 0, 0);
  q->done = &done;
  while (!shard_submit(s, q)) {
    sched_yield(); /* full: the shard drains it; admin calls are rare */
  }
  sem_wait(&done);
  sem_destroy(&done);
  return q->result;
}

/* The caller's bytes as one request answered through a propose callback:
 * a command (fl_propose) or a query of a user machine (fl_query). */
static int submit_bytes(fl_engine *e, request_type type, uint64_t group, const void *data,
                        uint32_t length, fl_read_mode mode, fl_propose_callback callback,
                        void *context) {
  if (length > e->options.max_command_bytes) {
    return FL_E_TOO_LARGE;
  }
  request *q = new_request(type, group, data, length);
  if (q != NULL) {
    q->read_mode = mode;
    q->propose_callback = callback;
    q->context = context;
  }
  return submit_async(e, owner_of(e, group), q);
}

int fl_propose(fl_engine *engine, uint64_t group, const void *data, uint32_t length,
               fl_propose_callback callback, void *context) {
  if (callback == NULL || (length > 0 && data == NULL)) {
    return FL_E_INVALID;
  }
  return submit_bytes(engine, REQUEST_PROPOSE, group, data, length, FL_READ_LINEARIZABLE, callback,
                      context);
}

/* The bytes of a batch request: the commands one after another (where
 * the proposing code reads them), then the contexts (aligned), then the
 * lengths. */
static size_t batch_layout(uint32_t count, size_t command_bytes, size_t *contexts_at,
                           size_t *lengths_at) {
  *contexts_at = (command_bytes + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
  *lengths_at = *contexts_at + count * sizeof(void *);
  return *lengths_at + count * sizeof(uint32_t);
}

/* Checks a batch's commands: 0 and their total bytes, or an FL_E code. */
static int batch_bytes(const fl_engine *e, const fl_bytes *commands, uint32_t count,
                       size_t *total) {
  *total = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (commands[i].length > 0 && commands[i].data == NULL) {
      return FL_E_INVALID;
    }
    if (commands[i].length > e->options.max_command_bytes) {
      return FL_E_TOO_LARGE;
    }
    *total += commands[i].length;
  }
  return *total <= FL_MAX_BATCH_BYTES ? 0 : FL_E_TOO_LARGE;
}

int fl_propose_batch(fl_engine *engine, uint64_t group, const fl_bytes *commands, uint32_t count,
                     fl_propose_callback callback, void *const *contexts) {
  if (callback == NULL || commands == NULL || contexts == NULL || count == 0 ||
      count > FL_MAX_BATCH_COMMANDS) {
    return FL_E_INVALID;
  }
  size_t total = 0;
  int rc = batch_bytes(engine, commands, count, &total);
  if (rc != 0) {
    return rc;
  }
  size_t contexts_at = 0;
  size_t lengths_at = 0;
  size_t bytes = batch_layout(count, total, &contexts_at, &lengths_at);
  request *q = new_request(REQUEST_PROPOSE_BATCH, group, NULL, (uint32_t)bytes);
  if (q == NULL) {
    return FL_E_NOMEM;
  }
  FL_STATIC_ASSERT(offsetof(request, data) % sizeof(void *) == 0, "a batch's contexts align");
  void **copied_contexts = (void **)(q->data + contexts_at);
  uint32_t *lengths = (uint32_t *)(q->data + lengths_at);
  uint8_t *out = q->data;
  for (uint32_t i = 0; i < count; i++) {
    copied_contexts[i] = contexts[i];
    lengths[i] = commands[i].length;
    if (commands[i].length > 0) {
      memcpy(out, commands[i].data, commands[i].length);
    }
    out += commands[i].length;
  }
  q->contexts = copied_contexts;
  q->lengths = lengths;
  q->command_count = count;
  q->propose_callback = callback;
  return submit_async(engine, owner_of(engine, group), q);
}

int fl_group_create(fl_engine *engine, uint64_t group, const uint64_t *members,
                    uint32_t member_count) {
  if (group == 0 || members == NULL || member_count == 0) {
    return FL_E_INVALID;
  }
  wal_request durable;
  request q = {.type = REQUEST_CREATE_GROUP,
               .group = group,
               .members = members,
               .member_count = member_count,
               .out = &durable};
  return submit_and_wait(engine, owner_of(engine, group), &q);
}

int fl_group_join(fl_engine *engine, uint64_t group) {
  if (group == 0) {
    return FL_E_INVALID;
  }
  wal_request durable;
  request q = {.type = REQUEST_JOIN_GROUP, .group = group, .out = &durable};
  return submit_and_wait(engine, owner_of(engine, group), &q);
}

int fl_group_remove(fl_engine *engine, uint64_t group) {
  wal_request done;
  request q = {.type = REQUEST_REMOVE_GROUP, .group = group, .out = &done};
  return submit_and_wait(engine, owner_of(engine, group), &q);
}

int fl_group_list(fl_engine *engine, uint64_t *groups, uint32_t capacity, uint32_t *count) {
  uint32_t total = 0;
  for (uint32_t i = 0; i < engine->shard_count; i++) {
    request q = {.type = REQUEST_LIST_GROUPS,
                 .out = total < capacity ? groups + total : NULL,
                 .out_capacity = total < capacity ? capacity - total : 0};
    int rc = submit_and_wait(engine, engine->shards[i], &q);
    if (rc != 0) {
      return rc;
    }
    total += q.out_count;
  }
  *count = total;
  return 0;
}

int fl_group_status_get(fl_engine *engine, uint64_t group, fl_group_status *status) {
  request q = {.type = REQUEST_STATUS, .group = group, .out = status};
  return submit_and_wait(engine, owner_of(engine, group), &q);
}

int fl_group_change(fl_engine *engine, uint64_t group, fl_change_type type, uint64_t node,
                    fl_propose_callback callback, void *context) {
  if (callback == NULL || node == 0 || type > FL_REMOVE_MEMBER) {
    return FL_E_INVALID;
  }
  request *q = new_request(REQUEST_CHANGE, group, NULL, 0);
  if (q != NULL) {
    q->change = type;
    q->node = node;
    q->propose_callback = callback;
    q->context = context;
  }
  return submit_async(engine, owner_of(engine, group), q);
}

int fl_group_transfer_leader(fl_engine *engine, uint64_t group, uint64_t node) {
  request *q = new_request(REQUEST_TRANSFER, group, NULL, 0);
  if (q != NULL) {
    q->node = node;
  }
  return submit_async(engine, owner_of(engine, group), q);
}

int fl_shard_stats_get(fl_engine *engine, uint32_t shard_index, fl_shard_stats *stats) {
  if (shard_index >= engine->shard_count) {
    return FL_E_INVALID;
  }
  request q = {.type = REQUEST_STATS, .out = stats};
  return submit_and_wait(engine, engine->shards[shard_index], &q);
}

/* ---- the built-in KV store ------------------------------------------- */

FL_STATIC_ASSERT(FL_KV_MAX_BATCH_KEYS == KV_MAX_COMMAND_KEYS,
                 "a batch of the API is one command of the store");
FL_STATIC_ASSERT(FL_KV_MAX_KEY_BYTES == KV_MAX_KEY_BYTES &&
                     FL_KV_MAX_VALUE_BYTES == KV_MAX_VALUE_BYTES,
                 "the API's limits are the store's");
FL_STATIC_ASSERT((int)FL_KV_SET_NX == (int)KV_SET_NX && (int)FL_KV_SET_XX == (int)KV_SET_XX &&
                     (int)FL_KV_SET_GET == (int)KV_SET_GET &&
                     (int)FL_KV_SET_KEEPTTL == (int)KV_SET_KEEPTTL,
                 "SET flags go into the command unchanged");

/* A KV command on its way to the shard: encoded straight into the
 * request's bytes, so a command is allocated and copied once. */
typedef struct kv_proposal {
  fl_engine *engine;
  uint64_t group;
  size_t length; /* of the command, as measured */
  request *request;
} kv_proposal;

/* Takes the encoder's measuring call (capacity 0: KV_E_NO_SPACE and the
 * size) and allocates the request the command will be written into. */
static int kv_proposal_begin(kv_proposal *p, int measured, fl_propose_callback callback,
                             void *context) {
  p->request = NULL;
  if (callback == NULL) {
    return FL_E_INVALID;
  }
  if (measured != KV_E_NO_SPACE) {
    return FL_E_INVALID; /* a rule of the format: flags, a count */
  }
  if (p->length > p->engine->options.max_command_bytes) {
    return FL_E_TOO_LARGE;
  }
  p->request = new_request(REQUEST_PROPOSE, p->group, NULL, (uint32_t)p->length);
  if (p->request == NULL) {
    return FL_E_NOMEM;
  }
  p->request->propose_callback = callback;
  p->request->context = context;
  return 0;
}

/* Takes the encoder's writing call; the size was measured, so it fits. */
static int kv_proposal_submit(kv_proposal *p, int encoded) {
  assert(encoded == 0);
  (void)encoded;
  return submit_async(p->engine, owner_of(p->engine, p->group), p->request);
}

static bool kv_lengths_fit(uint32_t key_length, uint32_t value_length) {
  return key_length <= KV_MAX_KEY_BYTES && value_length <= KV_MAX_VALUE_BYTES;
}

static bool bytes_valid(const void *data, uint32_t length) {
  return data != NULL || length == 0;
}

int fl_kv_set(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
              const void *value, uint32_t value_length, uint32_t flags, uint64_t expire_at_ms,
              fl_propose_callback callback, void *context) {
  if (!bytes_valid(key, key_length) || !bytes_valid(value, value_length)) {
    return FL_E_INVALID;
  }
  if (!kv_lengths_fit(key_length, value_length)) {
    return FL_E_TOO_LARGE;
  }
  kv_set_command set = {.key = key,
                        .key_length = key_length,
                        .value = value,
                        .value_length = value_length,
                        .flags = flags,
                        .expire_at_ms = expire_at_ms,
                        .now_ms = machine_wall_clock_ms()};
  kv_proposal p = {.engine = engine, .group = group};
  int measured = kv_command_encode_set(&set, NULL, 0, &p.length);
  int rc = kv_proposal_begin(&p, measured, callback, context);
  if (rc != 0) {
    return rc;
  }
  return kv_proposal_submit(&p, kv_command_encode_set(&set, p.request->data, p.length, &p.length));
}

int fl_kv_put(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
              const void *value, uint32_t value_length, fl_propose_callback callback,
              void *context) {
  return fl_kv_set(engine, group, key, key_length, value, value_length, 0, 0, callback, context);
}

int fl_kv_delete(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
                 fl_propose_callback callback, void *context) {
  fl_bytes keys = {.data = key, .length = key_length};
  return fl_kv_delete_many(engine, group, &keys, 1, callback, context);
}

int fl_kv_incr(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
               int64_t delta, fl_propose_callback callback, void *context) {
  if (!bytes_valid(key, key_length)) {
    return FL_E_INVALID;
  }
  if (!kv_lengths_fit(key_length, 0)) {
    return FL_E_TOO_LARGE;
  }
  const uint64_t now_ms = machine_wall_clock_ms();
  kv_proposal p = {.engine = engine, .group = group};
  int measured = kv_command_encode_incrby(now_ms, key, key_length, delta, NULL, 0, &p.length);
  int rc = kv_proposal_begin(&p, measured, callback, context);
  if (rc != 0) {
    return rc;
  }
  return kv_proposal_submit(&p, kv_command_encode_incrby(now_ms, key, key_length, delta,
                                                         p.request->data, p.length, &p.length));
}

int fl_kv_append(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
                 const void *value, uint32_t value_length, fl_propose_callback callback,
                 void *context) {
  if (!bytes_valid(key, key_length) || !bytes_valid(value, value_length)) {
    return FL_E_INVALID;
  }
  if (!kv_lengths_fit(key_length, value_length)) {
    return FL_E_TOO_LARGE;
  }
  const uint64_t now_ms = machine_wall_clock_ms();
  kv_proposal p = {.engine = engine, .group = group};
  int measured =
      kv_command_encode_append(now_ms, key, key_length, value, value_length, NULL, 0, &p.length);
  int rc = kv_proposal_begin(&p, measured, callback, context);
  if (rc != 0) {
    return rc;
  }
  return kv_proposal_submit(&p,
                            kv_command_encode_append(now_ms, key, key_length, value, value_length,
                                                     p.request->data, p.length, &p.length));
}

/* The API's (pointer, 32-bit length) pairs as the store's byte strings;
 * NULL with *error set when one is invalid or too long. */
static kv_bytes *kv_bytes_from(const fl_bytes *list, uint32_t count, bool values, int *error) {
  kv_bytes *out = malloc(count * sizeof(*out));
  if (out == NULL) {
    *error = FL_E_NOMEM;
    return NULL;
  }
  for (uint32_t i = 0; i < count; i++) {
    if (!bytes_valid(list[i].data, list[i].length)) {
      *error = FL_E_INVALID;
    } else if (!kv_lengths_fit(values ? 0 : list[i].length, values ? list[i].length : 0)) {
      *error = FL_E_TOO_LARGE;
    } else {
      out[i] = (kv_bytes){.data = list[i].data, .length = list[i].length};
      continue;
    }
    free(out);
    return NULL;
  }
  return out;
}

static bool batch_valid(const fl_bytes *list, uint32_t count) {
  return list != NULL && count > 0 && count <= FL_KV_MAX_BATCH_KEYS;
}

int fl_kv_delete_many(fl_engine *engine, uint64_t group, const fl_bytes *keys, uint32_t count,
                      fl_propose_callback callback, void *context) {
  if (!batch_valid(keys, count)) {
    return FL_E_INVALID;
  }
  int rc = 0;
  kv_bytes *list = kv_bytes_from(keys, count, false, &rc);
  if (list == NULL) {
    return rc;
  }
  const uint64_t now_ms = machine_wall_clock_ms();
  kv_proposal p = {.engine = engine, .group = group};
  int measured = kv_command_encode_del(now_ms, list, count, NULL, 0, &p.length);
  rc = kv_proposal_begin(&p, measured, callback, context);
  if (rc == 0) {
    rc = kv_proposal_submit(
        &p, kv_command_encode_del(now_ms, list, count, p.request->data, p.length, &p.length));
  }
  free(list);
  return rc;
}

int fl_kv_set_many(fl_engine *engine, uint64_t group, const fl_bytes *keys, const fl_bytes *values,
                   uint32_t count, fl_propose_callback callback, void *context) {
  if (!batch_valid(keys, count) || !batch_valid(values, count)) {
    return FL_E_INVALID;
  }
  int rc = 0;
  kv_bytes *key_list = kv_bytes_from(keys, count, false, &rc);
  kv_bytes *value_list = key_list != NULL ? kv_bytes_from(values, count, true, &rc) : NULL;
  if (value_list == NULL) {
    free(key_list);
    return rc;
  }
  const uint64_t now_ms = machine_wall_clock_ms();
  kv_proposal p = {.engine = engine, .group = group};
  int measured = kv_command_encode_mset(now_ms, key_list, value_list, count, NULL, 0, &p.length);
  rc = kv_proposal_begin(&p, measured, callback, context);
  if (rc == 0) {
    rc = kv_proposal_submit(&p, kv_command_encode_mset(now_ms, key_list, value_list, count,
                                                       p.request->data, p.length, &p.length));
  }
  free(key_list);
  free(value_list);
  return rc;
}

int fl_kv_get(fl_engine *engine, uint64_t group, const void *key, uint32_t key_length,
              fl_read_mode mode, fl_read_callback callback, void *context) {
  if (callback == NULL || !bytes_valid(key, key_length) || key_length > KV_MAX_KEY_BYTES ||
      mode > FL_READ_LOCAL) {
    return FL_E_INVALID;
  }
  request *q = new_request(REQUEST_READ, group, key, key_length);
  if (q != NULL) {
    q->read_mode = mode;
    q->read_callback = callback;
    q->context = context;
  }
  return submit_async(engine, owner_of(engine, group), q);
}

/* ---- reads of a user state machine ----------------------------------- */

int fl_query(fl_engine *engine, uint64_t group, const void *query, uint32_t length,
             fl_read_mode mode, fl_propose_callback callback, void *context) {
  if (callback == NULL || (length > 0 && query == NULL) || mode > FL_READ_LOCAL ||
      !engine->custom_machine || engine->machine.query == NULL) {
    return FL_E_INVALID;
  }
  return submit_bytes(engine, REQUEST_QUERY, group, query, length, mode, callback, context);
}

/* ---- fault injection (engine/engine_testing.h) ------------------------ */

int fl_engine_set_link_fault(fl_engine *engine, uint64_t node, bool drop) {
  for (uint32_t i = 0; i < engine->shard_count; i++) {
    request q = {.type = REQUEST_FAULT, .node = node, .change = drop ? 1 : 0};
    int rc = submit_and_wait(engine, engine->shards[i], &q);
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}
