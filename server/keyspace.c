/*
 * keyspace.c - the commands on keys: key -> slot -> group -> leader, then
 * the engine (this node leads), MOVED (the client follows redirects),
 * TRYAGAIN (no leader known) or a forward to the leader (plain clients).
 *
 * SINGLE-KEY COMMANDS (GET SET INCR[BY] DECR[BY] APPEND STRLEN)
 *
 *   route ---- leader here -------> engine call --callback (shard)--+
 *     |  \---- leader elsewhere --> forward -----callback (io)------+--> reply
 *     |   \--- no leader ---------> TRYAGAIN                         |
 *     +<-- retry once (io thread) <-- NOT_LEADER/UNAVAILABLE/DROPPED -+
 *
 * A leadership error from the engine (or a MOVED/TRYAGAIN from the node a
 * request was forwarded to) sends a plain client's request through the
 * router once more, with the map as it is then; a cluster-aware client gets
 * MOVED to the new leader (or TRYAGAIN) instead. DROPPED is retried only
 * for commands that give the same result when applied twice (not INCR,
 * APPEND): for those the reply says the write may or may not be applied.
 *
 * MULTI-KEY COMMANDS (MGET EXISTS DEL MSET)
 *
 * The keys are grouped by Raft group into parts. A part led here runs as
 * engine calls (MGET/EXISTS one read per key, DEL/MSET one batch command per
 * FL_KV_MAX_BATCH_KEYS keys or SERVER_BATCH_BYTES); a part led elsewhere is
 * forwarded as the same command on its keys. The calls of all parts finish
 * on different threads: each part counts its calls, the request its parts
 * (atomics); the last one hands the request to the io thread, which
 * retries failed parts once or assembles the reply. A cluster-aware client
 * gets Redis Cluster's CROSSSLOT when the keys span slots; MSET is atomic
 * per batch within one group, not across groups.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"
#include "server/slot.h"

enum keyspace_command {
  KEYSPACE_GET,
  KEYSPACE_STRLEN,
  KEYSPACE_SET,
  KEYSPACE_INCRBY,
  KEYSPACE_APPEND,
  KEYSPACE_MGET,
  KEYSPACE_EXISTS,
  KEYSPACE_DEL,
  KEYSPACE_MSET,
};

/* A forwarded reply that asks to route again (MOVED, TRYAGAIN). */
#define STATUS_REDIRECTED (-1000)
/* A forward that failed or brought an error reply (kept in part->error). */
#define STATUS_FORWARD_ERROR (-1001)
#define TRYAGAIN_TEXT "TRYAGAIN The slot has no leader right now, retry later"

struct request_part {
  request *owner;
  uint64_t group;
  uint32_t slot;  /* of its first key: for MOVED */
  uint32_t *keys; /* key indexes, in request order */
  uint32_t key_count;
  _Atomic uint32_t calls_pending;
  _Atomic int status;
  /* EXISTS and DEL: what this part counted. Per part, so that a part
   * retried after some of its calls succeeded counts them once. */
  _Atomic int64_t total;
  bool retried;
  char *error; /* a forwarded error reply, without "-" and "\r\n" */
};

typedef struct key_call {
  request_part *part;
  uint32_t key;
} key_call;

typedef struct found_value {
  uint8_t *data;
  uint32_t length;
  bool found;
} found_value;

static server *server_of(const request *r) {
  return r->owner->thread->server;
}

bool client_redirected(const client *c) {
  server_redirect mode = c->thread->server->config->redirect;
  return c->forwarder || mode == SERVER_REDIRECT_MOVED ||
         (mode == SERVER_REDIRECT_AUTO && c->cluster_aware);
}

static bool is_read(uint8_t command) {
  return command == KEYSPACE_GET || command == KEYSPACE_STRLEN || command == KEYSPACE_MGET ||
         command == KEYSPACE_EXISTS;
}

static bool retryable(int status, uint8_t command) {
  bool idempotent = command != KEYSPACE_INCRBY && command != KEYSPACE_APPEND;
  return status == FL_E_NOT_LEADER || status == FL_E_UNAVAILABLE || status == STATUS_REDIRECTED ||
         (status == FL_E_DROPPED && idempotent);
}

static void write_status_error(resp_writer *w, int status) {
  switch (status) {
  case FL_E_TOO_LARGE:
    resp_write_error(w, "ERR the command is larger than the engine's limit");
    break;
  case FL_E_BUSY:
    resp_write_error(w, "TRYAGAIN The group's queue is full, retry later");
    break;
  case FL_E_DROPPED:
    resp_write_error(w, "ERR a leader change interrupted the write: it may or may not be applied");
    break;
  case FL_E_CLOSED:
    resp_write_error(w, "ERR the server is shutting down");
    break;
  case FL_E_NOT_LEADER:
  case FL_E_UNAVAILABLE:
  case FL_E_NO_GROUP:
  case FL_E_TIMEOUT:
  case STATUS_REDIRECTED:
    resp_write_error(w, TRYAGAIN_TEXT);
    break;
  default:
    resp_write_error_format(w, "ERR %s", status < -900 ? "forwarding failed" : fl_strerror(status));
  }
}

/* ---- forwarded replies ---------------------------------------------------- */

/* Copies one RESP2 reply at `reply`, turning null bulks and arrays into
 * RESP3's null; returns its length, 0 if it is malformed. */
static size_t copy_reply_resp3(resp_writer *w, const char *reply, size_t length, int depth) {
  const char *end = memchr(reply, '\n', length);
  if (end == NULL || length < 3 || depth > 32) {
    return 0;
  }
  size_t line = (size_t)(end - reply) + 1;
  if ((reply[0] == '$' || reply[0] == '*') && reply[1] == '-') {
    resp_write_raw(w, "_\r\n", 3);
    return line;
  }
  long long n = reply[0] == '$' || reply[0] == '*' ? strtoll(reply + 1, NULL, 10) : 0;
  if (n < 0) {
    return 0;
  }
  if (reply[0] == '$') {
    if ((size_t)n + 2 > length - line) {
      return 0;
    }
    resp_write_raw(w, reply, line + (size_t)n + 2);
    return line + (size_t)n + 2;
  }
  resp_write_raw(w, reply, line);
  size_t used = line;
  for (long long i = 0; reply[0] == '*' && i < n; i++) {
    size_t element = copy_reply_resp3(w, reply + used, length - used, depth + 1);
    if (element == 0) {
      return 0;
    }
    used += element;
  }
  return used;
}

void write_forwarded_reply(resp_writer *w, const char *reply, size_t length) {
  if (w->protocol == 2) {
    resp_write_raw(w, reply, length);
    return;
  }
  size_t before = w->length;
  if (copy_reply_resp3(w, reply, length, 0) == 0) {
    /* A reply that cannot be converted (nested too deep): whatever part of
     * it was written goes, so the client's stream stays well formed. */
    w->length = before;
    resp_write_error(w, "ERR the leader's reply could not be converted to RESP3");
  }
}

/* Learns the leader a MOVED reply names, so the retry goes there. */
static void learn_from_moved(request *r, uint64_t group, const char *reply, size_t length) {
  char text[160];
  snprintf(text, sizeof(text), "%.*s", (int)(length < 159 ? length : 159), reply);
  char host[64];
  unsigned slot = 0, port = 0;
  if (sscanf(text, "-MOVED %u %63[^:]:%u", &slot, host, &port) != 3) {
    return;
  }
  const server_config *config = server_of(r)->config;
  for (uint32_t i = 0; i < config->node_count; i++) {
    if (config->nodes[i].client_port == port && strcmp(config->nodes[i].host, host) == 0) {
      cluster_set_leader(server_of(r)->map, group, config->nodes[i].id);
    }
  }
}

static bool reply_redirects(const char *reply, size_t length) {
  return (length >= 7 && memcmp(reply, "-MOVED ", 7) == 0) ||
         (length >= 9 && memcmp(reply, "-TRYAGAIN", 9) == 0);
}

/* ---- single-key commands ---------------------------------------------------- */

static void route_single(request *r);

static void retry_single(request *r) {
  client *c = r->owner;
  cluster_map *map = server_of(r)->map;
  uint64_t leader = cluster_leader(map, r->group);
  uint64_t self = server_of(r)->config->node_id;
  if (!r->retried && !client_redirected(c)) {
    r->retried = true;
    r->status = 0;
    resp_writer_destroy(&r->reply);
    resp_writer_init(&r->reply, server_of(r)->config->client_output_limit);
    r->reply.protocol = (uint8_t)c->protocol;
    route_single(r);
    return;
  }
  if (client_redirected(c) && leader != 0 && leader != self) {
    const server_node *node = server_config_node(server_of(r)->config, leader);
    resp_write_moved_error(&r->reply, r->slot, node->host, node->client_port);
  } else {
    write_status_error(&r->reply, r->status);
  }
  request_finish(r);
}

/* On a shard: a leadership error goes back to the io thread to be routed
 * again; anything else is the reply. */
static bool hand_back_for_retry(request *r, int status) {
  if (!retryable(status, r->command)) {
    return false;
  }
  r->status = status;
  r->on_io = retry_single;
  request_finish_from_shard(r);
  return true;
}

static void on_read(void *context, int status, const uint8_t *value, uint32_t length) {
  request *r = context;
  if (hand_back_for_retry(r, status)) {
    return;
  }
  if (status == 0 || status == FL_E_NOT_FOUND) {
    if (r->command == KEYSPACE_STRLEN) {
      resp_write_integer(&r->reply, status == 0 ? length : 0);
    } else if (status == 0) {
      resp_write_bulk(&r->reply, value, length);
    } else {
      resp_write_null(&r->reply);
    }
  } else {
    write_status_error(&r->reply, status);
  }
  request_finish_from_shard(r);
}

static void on_write(void *context, int status, const fl_result *result) {
  request *r = context;
  if (hand_back_for_retry(r, status)) {
    return;
  }
  resp_writer *w = &r->reply;
  if (status != 0 && (result == NULL || result->status == 0)) {
    write_status_error(w, status);
  } else if (result->status != 0) {
    /* The store refused the command: its text is Redis's error. */
    char text[256];
    snprintf(text, sizeof(text), "%.*s", (int)(result->length < 255 ? result->length : 255),
             (const char *)result->bytes);
    resp_write_error(w, text[0] != '\0' ? text : "ERR the command was refused");
  } else if (r->command == KEYSPACE_INCRBY || r->command == KEYSPACE_APPEND) {
    resp_write_integer(w, result->integer);
  } else if (r->set_flags & FL_KV_SET_GET) {
    if (result->has_bytes) {
      resp_write_bulk(w, result->bytes, result->length);
    } else {
      resp_write_null(w);
    }
  } else if (result->applied) {
    resp_write_ok(w);
  } else {
    resp_write_null(w);
  }
  request_finish_from_shard(r);
}

static int call_engine_single(request *r, fl_read_mode mode) {
  fl_engine *engine = server_of(r)->engine;
  const resp_argument *key = &r->arguments[1];
  switch (r->command) {
  case KEYSPACE_GET:
  case KEYSPACE_STRLEN:
    return fl_kv_get(engine, r->group, key->data, (uint32_t)key->length, mode, on_read, r);
  case KEYSPACE_SET:
    return fl_kv_set(engine, r->group, key->data, (uint32_t)key->length, r->arguments[2].data,
                     (uint32_t)r->arguments[2].length, r->set_flags, r->expire_at_ms, on_write, r);
  case KEYSPACE_INCRBY:
    return fl_kv_incr(engine, r->group, key->data, (uint32_t)key->length, r->delta, on_write, r);
  case KEYSPACE_APPEND:
    return fl_kv_append(engine, r->group, key->data, (uint32_t)key->length, r->arguments[2].data,
                        (uint32_t)r->arguments[2].length, on_write, r);
  default:
    abort(); /* multi-key commands never route here */
  }
}

static void on_forwarded_single(void *context, int status, const char *reply, size_t length) {
  request *r = context;
  if (status == 0 && !r->retried && !client_redirected(r->owner) &&
      reply_redirects(reply, length)) {
    learn_from_moved(r, r->group, reply, length);
    r->status = STATUS_REDIRECTED;
    retry_single(r);
    return;
  }
  if (status != 0) {
    resp_write_error_format(&r->reply, "TRYAGAIN forwarding to the leader failed: %s",
                            strerror(status < 0 ? -status : status));
  } else {
    write_forwarded_reply(&r->reply, reply, length);
  }
  request_finish(r);
}

static void forward_request(request *r, uint64_t leader) {
  io_thread *t = r->owner->thread;
  int rc =
      forward_send(t->forwarder, leader, r->arguments, r->argument_count, on_forwarded_single, r);
  if (rc != 0) {
    /* Unreachable (backing off after a failed connect) or over the bound:
     * both pass, so the client may retry. */
    resp_write_error_format(&r->reply, "TRYAGAIN cannot forward to the slot's leader: %s",
                            strerror(-rc));
    request_finish(r);
    return;
  }
  atomic_fetch_add_explicit(&t->server->commands_forwarded, 1, memory_order_relaxed);
}

static void route_single(request *r) {
  server *s = server_of(r);
  uint64_t self = s->config->node_id;
  uint64_t leader = cluster_leader(s->map, r->group);
  bool local_read = is_read(r->command) && r->owner->read_only && leader != self &&
                    cluster_is_member(s->map, r->group, self);
  if (leader == self || local_read) {
    int rc = call_engine_single(r, local_read ? FL_READ_LOCAL : FL_READ_LINEARIZABLE);
    if (rc != 0) {
      r->status = rc;
      if (retryable(rc, r->command)) {
        retry_single(r);
      } else {
        write_status_error(&r->reply, rc);
        request_finish(r);
      }
    }
  } else if (leader == 0) {
    resp_write_error(&r->reply, TRYAGAIN_TEXT);
    request_finish(r);
  } else if (client_redirected(r->owner)) {
    const server_node *node = server_config_node(s->config, leader);
    resp_write_moved_error(&r->reply, r->slot, node->host, node->client_port);
    request_finish(r);
  } else {
    forward_request(r, leader);
  }
}

/* Checks sizes the engine would refuse, with an error naming the limit. */
static bool refuse_oversized(client *c, const resp_argument *key, const resp_argument *value) {
  const server_config *config = c->thread->server->config;
  const char *problem = NULL;
  char text[128];
  if (key->length > SERVER_MAX_KEY_BYTES) {
    snprintf(text, sizeof(text), "ERR key is larger than %u bytes", SERVER_MAX_KEY_BYTES);
    problem = text;
  } else if (value != NULL && value->length > config->max_value_bytes) {
    snprintf(text, sizeof(text), "ERR value is larger than max-value-bytes (%" PRIu64 " bytes)",
             config->max_value_bytes);
    problem = text;
  }
  if (problem == NULL) {
    return false;
  }
  resp_writer *w = client_reply_writer(c);
  if (w != NULL) {
    resp_write_error(w, problem);
  }
  return true;
}

static request *start_single(client *c, uint8_t command, const resp_argument *arguments,
                             uint32_t count) {
  request *r = request_create(c);
  if (r == NULL) {
    return NULL;
  }
  r->command = command;
  if (request_copy_arguments(r, arguments, count) != 0) {
    resp_write_error(&r->reply, "ERR out of memory");
    request_finish(r);
    return NULL;
  }
  server *s = c->thread->server;
  r->slot = slot_for_key(arguments[1].data, arguments[1].length);
  r->group = cluster_group_of_slot(s->map, r->slot);
  return r;
}

static void run_single(client *c, uint8_t command, const resp_argument *arguments, uint32_t count,
                       const resp_argument *value) {
  if (refuse_oversized(c, &arguments[1], value)) {
    return;
  }
  request *r = start_single(c, command, arguments, count);
  if (r != NULL) {
    request_launch(r, !is_read(command), route_single);
  }
}

void keyspace_get(client *c, const resp_argument *arguments, uint32_t count) {
  run_single(c, KEYSPACE_GET, arguments, count, NULL);
}

void keyspace_strlen(client *c, const resp_argument *arguments, uint32_t count) {
  run_single(c, KEYSPACE_STRLEN, arguments, count, NULL);
}

void keyspace_append(client *c, const resp_argument *arguments, uint32_t count) {
  run_single(c, KEYSPACE_APPEND, arguments, count, &arguments[2]);
}

static void run_incrby(client *c, const resp_argument *arguments, uint32_t count, int64_t delta) {
  if (refuse_oversized(c, &arguments[1], NULL)) {
    return;
  }
  request *r = start_single(c, KEYSPACE_INCRBY, arguments, count);
  if (r != NULL) {
    r->delta = delta;
    request_launch(r, true, route_single);
  }
}

static void reply_error(client *c, const char *text) {
  resp_writer *w = client_reply_writer(c);
  if (w != NULL) {
    resp_write_error(w, text);
  }
}

void keyspace_incr(client *c, const resp_argument *arguments, uint32_t count) {
  run_incrby(c, arguments, count, 1);
}

void keyspace_decr(client *c, const resp_argument *arguments, uint32_t count) {
  run_incrby(c, arguments, count, -1);
}

void keyspace_incrby(client *c, const resp_argument *arguments, uint32_t count) {
  int64_t delta = 0;
  if (!argument_to_int64(&arguments[2], &delta)) {
    reply_error(c, RESP_ERROR_NOT_INTEGER);
    return;
  }
  run_incrby(c, arguments, count, delta);
}

void keyspace_decrby(client *c, const resp_argument *arguments, uint32_t count) {
  int64_t delta = 0;
  if (!argument_to_int64(&arguments[2], &delta)) {
    reply_error(c, RESP_ERROR_NOT_INTEGER);
    return;
  }
  if (delta == INT64_MIN) {
    reply_error(c, "ERR decrement would overflow");
    return;
  }
  run_incrby(c, arguments, count, -delta);
}

/* ---- SET ------------------------------------------------------------------ */

enum set_option_flags {
  SET_NX = 1,
  SET_XX = 2,
  SET_GET = 4,
  SET_KEEPTTL = 8,
  SET_EX = 16,
  SET_PX = 32,
  SET_EXAT = 64,
  SET_PXAT = 128,
};

#define SET_ANY_EXPIRY (SET_EX | SET_PX | SET_EXAT | SET_PXAT)

/* Redis 7.0's parseExtendedStringArgumentsOrReply for SET: which option
 * may follow which, and a repeated expiry of one kind is allowed. */
static bool parse_set_options(const resp_argument *arguments, uint32_t count, uint32_t *flags,
                              const resp_argument **expire) {
  static const struct {
    const char *name;
    uint32_t flag;
  } expiries[] = {{"ex", SET_EX}, {"px", SET_PX}, {"exat", SET_EXAT}, {"pxat", SET_PXAT}};
  for (uint32_t j = 3; j < count; j++) {
    const resp_argument *option = &arguments[j];
    bool has_next = j + 1 < count;
    if (argument_is(option, "nx") && !(*flags & SET_XX)) {
      *flags |= SET_NX;
      continue;
    }
    if (argument_is(option, "xx") && !(*flags & SET_NX)) {
      *flags |= SET_XX;
      continue;
    }
    if (argument_is(option, "get")) {
      *flags |= SET_GET;
      continue;
    }
    if (argument_is(option, "keepttl") && !(*flags & SET_ANY_EXPIRY)) {
      *flags |= SET_KEEPTTL;
      continue;
    }
    bool matched = false;
    for (size_t e = 0; e < sizeof(expiries) / sizeof(expiries[0]) && !matched; e++) {
      uint32_t others = SET_ANY_EXPIRY & ~expiries[e].flag;
      if (argument_is(option, expiries[e].name) && !(*flags & (SET_KEEPTTL | others)) && has_next) {
        *flags |= expiries[e].flag;
        *expire = &arguments[++j];
        matched = true;
      }
    }
    if (!matched) {
      return false;
    }
  }
  return true;
}

/* Redis 7.0's getExpireMillisecondsOrReply: the absolute expiry in ms. */
static const char *set_expiry(uint32_t flags, const resp_argument *expire, uint64_t *at_ms) {
  int64_t value = 0;
  if (!argument_to_int64(expire, &value)) {
    return RESP_ERROR_NOT_INTEGER;
  }
  bool seconds = flags & (SET_EX | SET_EXAT);
  if (value <= 0 || (seconds && value > INT64_MAX / 1000)) {
    return "ERR invalid expire time in 'set' command";
  }
  if (seconds) {
    value *= 1000;
  }
  if (flags & (SET_EX | SET_PX)) {
    int64_t now = (int64_t)server_now_ms();
    if (value > INT64_MAX - now) {
      return "ERR invalid expire time in 'set' command";
    }
    value += now;
  }
  *at_ms = (uint64_t)value;
  return NULL;
}

void keyspace_set(client *c, const resp_argument *arguments, uint32_t count) {
  uint32_t flags = 0;
  const resp_argument *expire = NULL;
  uint64_t expire_at_ms = 0;
  if (!parse_set_options(arguments, count, &flags, &expire)) {
    reply_error(c, RESP_ERROR_SYNTAX);
    return;
  }
  if (expire != NULL) {
    const char *error = set_expiry(flags, expire, &expire_at_ms);
    if (error != NULL) {
      reply_error(c, error);
      return;
    }
  }
  if (refuse_oversized(c, &arguments[1], &arguments[2])) {
    return;
  }
  request *r = start_single(c, KEYSPACE_SET, arguments, count);
  if (r == NULL) {
    return;
  }
  r->set_flags = (flags & SET_NX ? FL_KV_SET_NX : 0) | (flags & SET_XX ? FL_KV_SET_XX : 0) |
                 (flags & SET_GET ? FL_KV_SET_GET : 0) |
                 (flags & SET_KEEPTTL ? FL_KV_SET_KEEPTTL : 0);
  r->expire_at_ms = expire_at_ms;
  request_launch(r, true, route_single);
}

/* ---- multi-key commands ------------------------------------------------------ */

static uint32_t key_count_of(const request *r) {
  return r->command == KEYSPACE_MSET ? (r->argument_count - 1) / 2 : r->argument_count - 1;
}

static const resp_argument *key_of(const request *r, uint32_t key) {
  return &r->arguments[r->command == KEYSPACE_MSET ? 1 + 2 * key : 1 + key];
}

static const char *command_name(uint8_t command) {
  switch (command) {
  case KEYSPACE_MGET:
    return "MGET";
  case KEYSPACE_EXISTS:
    return "EXISTS";
  case KEYSPACE_DEL:
    return "DEL";
  default:
    return "MSET";
  }
}

static void launch_parts(request *r, bool retries_only);

static void assemble_multi(request *r) {
  resp_writer *w = &r->reply;
  for (uint32_t p = 0; p < r->part_count; p++) {
    request_part *part = &r->parts[p];
    int status = atomic_load(&part->status);
    if (part->error != NULL) {
      resp_write_error(w, part->error);
      return;
    }
    if (status != 0) {
      write_status_error(w, status);
      return;
    }
  }
  if (r->command == KEYSPACE_MGET) {
    uint32_t keys = key_count_of(r);
    found_value *values = r->results;
    resp_write_array_header(w, keys);
    for (uint32_t k = 0; k < keys; k++) {
      if (values[k].found) {
        resp_write_bulk(w, values[k].data, values[k].length);
      } else {
        resp_write_null(w);
      }
    }
  } else if (r->command == KEYSPACE_MSET) {
    resp_write_ok(w);
  } else {
    int64_t total = 0;
    for (uint32_t p = 0; p < r->part_count; p++) {
      total += atomic_load(&r->parts[p].total);
    }
    resp_write_integer(w, total);
  }
}

static void free_values(request *r) {
  found_value *values = r->results;
  for (uint32_t k = 0; values != NULL && k < key_count_of(r); k++) {
    free(values[k].data);
  }
}

/* On the io thread, once every part finished: retry, or reply. */
static void multi_on_io(request *r) {
  bool retry = false;
  for (uint32_t p = 0; p < r->part_count; p++) {
    request_part *part = &r->parts[p];
    if (!part->retried && !client_redirected(r->owner) &&
        retryable(atomic_load(&part->status), r->command)) {
      retry = true;
    }
  }
  if (retry) {
    launch_parts(r, true);
    return;
  }
  assemble_multi(r);
  free_values(r);
  for (uint32_t p = 0; p < r->part_count; p++) {
    free(r->parts[p].error);
    r->parts[p].error = NULL;
  }
  request_finish(r);
}

static void part_call_done(request_part *part, int status) {
  if (status != 0) {
    int none = 0;
    atomic_compare_exchange_strong(&part->status, &none, status);
  }
  if (atomic_fetch_sub(&part->calls_pending, 1) == 1) {
    request *r = part->owner;
    if (atomic_fetch_sub(&r->parts_pending, 1) == 1) {
      r->on_io = multi_on_io;
      request_finish_from_shard(r); /* any thread: the queue takes it */
    }
  }
}

static void on_multi_read(void *context, int status, const uint8_t *value, uint32_t length) {
  key_call *call = context;
  request *r = call->part->owner;
  if (status == 0) {
    if (r->command == KEYSPACE_EXISTS) {
      atomic_fetch_add(&call->part->total, 1);
    } else {
      found_value *slot = &((found_value *)r->results)[call->key];
      slot->data = malloc(length > 0 ? length : 1);
      if (slot->data == NULL) {
        status = FL_E_NOMEM;
      } else {
        memcpy(slot->data, value, length);
        slot->length = length;
        slot->found = true;
      }
    }
  }
  part_call_done(call->part, status == FL_E_NOT_FOUND ? 0 : status);
}

static void on_multi_write(void *context, int status, const fl_result *result) {
  request_part *part = context;
  if (status == 0 && result->status != 0) {
    status = FL_E_STATE;
  }
  if (status == 0 && part->owner->command == KEYSPACE_DEL) {
    atomic_fetch_add(&part->total, result->integer);
  }
  part_call_done(part, status);
}

/* Engine calls of one part: one read per key, or batches of writes. */
static uint32_t count_calls(request *r, request_part *part) {
  if (is_read(r->command)) {
    return part->key_count;
  }
  uint32_t calls = 0;
  size_t bytes = 0;
  uint32_t in_batch = 0;
  for (uint32_t i = 0; i < part->key_count; i++) {
    const resp_argument *key = key_of(r, part->keys[i]);
    size_t item = key->length + (r->command == KEYSPACE_MSET ? key[1].length : 0);
    if (in_batch == 0 || in_batch == FL_KV_MAX_BATCH_KEYS || bytes + item > SERVER_BATCH_BYTES) {
      calls++;
      in_batch = 0;
      bytes = 0;
    }
    in_batch++;
    bytes += item;
  }
  return calls;
}

static int call_batch(request *r, request_part *part, fl_bytes *keys, fl_bytes *values,
                      uint32_t count) {
  fl_engine *engine = server_of(r)->engine;
  if (r->command == KEYSPACE_DEL) {
    return fl_kv_delete_many(engine, part->group, keys, count, on_multi_write, part);
  }
  return fl_kv_set_many(engine, part->group, keys, values, count, on_multi_write, part);
}

static void run_part_writes(request *r, request_part *part) {
  fl_bytes keys[64], values[64];
  fl_bytes *key_batch = keys, *value_batch = values;
  uint32_t capacity =
      part->key_count < FL_KV_MAX_BATCH_KEYS ? part->key_count : FL_KV_MAX_BATCH_KEYS;
  if (capacity > 64) {
    key_batch = malloc(2 * capacity * sizeof(fl_bytes));
    if (key_batch == NULL) {
      for (uint32_t c = count_calls(r, part); c > 0; c--) {
        part_call_done(part, FL_E_NOMEM);
      }
      return;
    }
    value_batch = key_batch + capacity;
  }
  uint32_t in_batch = 0;
  size_t bytes = 0;
  for (uint32_t i = 0; i <= part->key_count; i++) {
    const resp_argument *key = i < part->key_count ? key_of(r, part->keys[i]) : NULL;
    size_t item = key == NULL ? 0 : key->length + (r->command == KEYSPACE_MSET ? key[1].length : 0);
    bool flush = in_batch > 0 && (key == NULL || in_batch == FL_KV_MAX_BATCH_KEYS ||
                                  bytes + item > SERVER_BATCH_BYTES);
    if (flush) {
      int rc = call_batch(r, part, key_batch, value_batch, in_batch);
      if (rc != 0) {
        part_call_done(part, rc);
      }
      in_batch = 0;
      bytes = 0;
    }
    if (key != NULL) {
      key_batch[in_batch] = (fl_bytes){key->data, (uint32_t)key->length};
      if (r->command == KEYSPACE_MSET) {
        value_batch[in_batch] = (fl_bytes){key[1].data, (uint32_t)key[1].length};
      }
      in_batch++;
      bytes += item;
    }
  }
  if (key_batch != keys) {
    free(key_batch);
  }
}

static void run_part_reads(request *r, request_part *part, key_call *calls, fl_read_mode mode) {
  for (uint32_t i = 0; i < part->key_count; i++) {
    key_call *call = &calls[i];
    *call = (key_call){.part = part, .key = part->keys[i]};
    const resp_argument *key = key_of(r, call->key);
    int rc = fl_kv_get(server_of(r)->engine, part->group, key->data, (uint32_t)key->length, mode,
                       on_multi_read, call);
    if (rc != 0) {
      part_call_done(part, rc);
    }
  }
}

/* A forwarded part's reply, on the io thread. */
static void on_forwarded_part(void *context, int status, const char *reply, size_t length) {
  request_part *part = context;
  request *r = part->owner;
  if (status != 0) {
    part_call_done(part, STATUS_FORWARD_ERROR);
    return;
  }
  if (reply_redirects(reply, length)) {
    learn_from_moved(r, part->group, reply, length);
    part_call_done(part, STATUS_REDIRECTED);
    return;
  }
  if (reply[0] == '-') {
    free(part->error);
    part->error = strndup(reply + 1, length >= 3 ? length - 3 : 0);
    part_call_done(part, STATUS_FORWARD_ERROR);
    return;
  }
  if (reply[0] == ':') {
    atomic_fetch_add(&part->total, strtoll(reply + 1, NULL, 10));
  } else if (reply[0] == '*' && r->command == KEYSPACE_MGET) {
    const char *p = memchr(reply, '\n', length) + 1;
    const char *end = reply + length;
    found_value *values = r->results;
    for (uint32_t i = 0; i < part->key_count && p < end; i++) {
      long long n = strtoll(p + 1, NULL, 10);
      const char *data = memchr(p, '\n', (size_t)(end - p));
      if (data == NULL) {
        break;
      }
      data++;
      if (n >= 0 && data + n + 2 <= end) {
        found_value *slot = &values[part->keys[i]];
        slot->data = malloc(n > 0 ? (size_t)n : 1);
        if (slot->data != NULL) {
          memcpy(slot->data, data, (size_t)n);
          slot->length = (uint32_t)n;
          slot->found = true;
        }
        p = data + n + 2;
      } else {
        p = data;
      }
    }
  }
  part_call_done(part, 0);
}

static void forward_part(request *r, request_part *part, uint64_t leader) {
  uint32_t per_key = r->command == KEYSPACE_MSET ? 2 : 1;
  uint32_t count = 1 + part->key_count * per_key;
  resp_argument *arguments = malloc(count * sizeof(resp_argument));
  if (arguments == NULL) {
    part_call_done(part, FL_E_NOMEM);
    return;
  }
  const char *name = command_name(r->command);
  arguments[0] = (resp_argument){name, strlen(name)};
  for (uint32_t i = 0; i < part->key_count; i++) {
    const resp_argument *key = key_of(r, part->keys[i]);
    arguments[1 + i * per_key] = key[0];
    if (per_key == 2) {
      arguments[2 + i * per_key] = key[1];
    }
  }
  int rc =
      forward_send(r->owner->thread->forwarder, leader, arguments, count, on_forwarded_part, part);
  free(arguments);
  if (rc != 0) {
    part_call_done(part, STATUS_FORWARD_ERROR);
  }
}

static void run_part(request *r, request_part *part, key_call *calls) {
  server *s = server_of(r);
  uint64_t self = s->config->node_id;
  uint64_t leader = cluster_leader(s->map, part->group);
  bool local_read = is_read(r->command) && r->owner->read_only && leader != self &&
                    cluster_is_member(s->map, part->group, self);
  if (leader == self || local_read) {
    atomic_store(&part->calls_pending, count_calls(r, part));
    fl_read_mode mode = local_read ? FL_READ_LOCAL : FL_READ_LINEARIZABLE;
    if (is_read(r->command)) {
      run_part_reads(r, part, calls, mode);
    } else {
      run_part_writes(r, part);
    }
    return;
  }
  atomic_store(&part->calls_pending, 1);
  if (leader == 0) {
    part_call_done(part, FL_E_UNAVAILABLE);
  } else {
    forward_part(r, part, leader);
  }
}

static void launch_parts(request *r, bool retries_only) {
  uint32_t launching = 0;
  bool chosen[r->part_count > 0 ? r->part_count : 1];
  for (uint32_t p = 0; p < r->part_count; p++) {
    request_part *part = &r->parts[p];
    chosen[p] =
        !retries_only || (!part->retried && retryable(atomic_load(&part->status), r->command));
    launching += chosen[p];
  }
  assert(launching > 0);
  atomic_store(&r->parts_pending, launching);
  key_call *calls = (key_call *)(r->parts + r->part_count);
  for (uint32_t p = 0; p < r->part_count; p++) {
    request_part *part = &r->parts[p];
    if (!chosen[p]) {
      continue;
    }
    if (retries_only) {
      part->retried = true;
      atomic_store(&part->status, 0);
      atomic_store(&part->total, 0);
      for (uint32_t i = 0; r->results != NULL && i < part->key_count; i++) {
        found_value *slot = &((found_value *)r->results)[part->keys[i]];
        free(slot->data);
        *slot = (found_value){0};
      }
    }
    run_part(r, part, calls + (part->keys - (uint32_t *)(calls + key_count_of(r))));
  }
}

/* Groups the keys into parts (one per group, in order of first appearance,
 * keys in request order), in time linear in keys + groups: a request may
 * carry up to max-arguments keys, so nothing here is quadratic.
 * Memory: parts, then one key_call per key, then the key indexes. */
static int build_parts(request *r) {
  cluster_map *map = server_of(r)->map;
  uint32_t keys = key_count_of(r);
  uint32_t group_count = cluster_group_count(map);
  uint32_t *groups = malloc(keys * sizeof(uint32_t));
  /* part_of[g]: 1 + the part of group g, 0 while g has none */
  uint32_t *part_of = calloc((size_t)group_count + 1, sizeof(uint32_t));
  if (groups == NULL || part_of == NULL) {
    free(groups);
    free(part_of);
    return -ENOMEM;
  }
  uint32_t parts = 0;
  for (uint32_t k = 0; k < keys; k++) {
    const resp_argument *key = key_of(r, k);
    uint64_t group = cluster_group_of_slot(map, slot_for_key(key->data, key->length));
    assert(group >= 1 && group <= group_count);
    groups[k] = (uint32_t)group;
    if (part_of[group] == 0) {
      part_of[group] = ++parts;
    }
  }
  size_t bytes = parts * sizeof(request_part) + keys * (sizeof(key_call) + sizeof(uint32_t));
  r->parts = calloc(1, bytes);
  if (r->parts == NULL) {
    free(groups);
    free(part_of);
    return -ENOMEM;
  }
  uint32_t *order = (uint32_t *)((key_call *)(r->parts + parts) + keys);
  r->part_count = parts;
  for (uint32_t k = 0; k < keys; k++) { /* sizes, and each part's first key */
    request_part *part = &r->parts[part_of[groups[k]] - 1];
    if (part->key_count++ == 0) {
      const resp_argument *key = key_of(r, k);
      part->owner = r;
      part->group = groups[k];
      part->slot = slot_for_key(key->data, key->length);
    }
  }
  uint32_t used = 0;
  for (uint32_t p = 0; p < parts; p++) { /* each part's run of indexes */
    r->parts[p].keys = order + used;
    used += r->parts[p].key_count;
    r->parts[p].key_count = 0;
  }
  for (uint32_t k = 0; k < keys; k++) {
    request_part *part = &r->parts[part_of[groups[k]] - 1];
    part->keys[part->key_count++] = k;
  }
  free(groups);
  free(part_of);
  assert(used == keys);
  return 0;
}

/* Redis Cluster's answer to a cluster-aware client: every key in one slot,
 * and that slot served here; NULL when the command may run. */
static bool redirect_multi(request *r) {
  server *s = server_of(r);
  uint32_t keys = key_count_of(r);
  uint32_t slot = slot_for_key(key_of(r, 0)->data, key_of(r, 0)->length);
  for (uint32_t k = 1; k < keys && !r->owner->forwarder; k++) {
    if (slot_for_key(key_of(r, k)->data, key_of(r, k)->length) != slot) {
      resp_write_error(&r->reply, "CROSSSLOT Keys in request don't hash to the same slot");
      return true;
    }
  }
  for (uint32_t p = 0; p < r->part_count; p++) {
    uint64_t leader = cluster_leader(s->map, r->parts[p].group);
    bool local_read = is_read(r->command) && r->owner->read_only &&
                      cluster_is_member(s->map, r->parts[p].group, s->config->node_id);
    if (leader == s->config->node_id || local_read) {
      continue;
    }
    if (leader == 0) {
      resp_write_error(&r->reply, TRYAGAIN_TEXT);
    } else {
      const server_node *node = server_config_node(s->config, leader);
      resp_write_moved_error(&r->reply, r->parts[p].slot, node->host, node->client_port);
    }
    return true;
  }
  return false;
}

/* All parts led by one other node: the whole command is forwarded. */
static bool forward_whole(request *r) {
  server *s = server_of(r);
  uint64_t leader = cluster_leader(s->map, r->parts[0].group);
  if (leader == 0 || leader == s->config->node_id || r->owner->read_only) {
    return false;
  }
  for (uint32_t p = 1; p < r->part_count; p++) {
    if (cluster_leader(s->map, r->parts[p].group) != leader) {
      return false;
    }
  }
  r->group = r->parts[0].group;
  r->slot = r->parts[0].slot;
  r->retried = true; /* the parts path does not retry a whole forward */
  forward_request(r, leader);
  return true;
}

static void start_multi(request *r) {
  client *c = r->owner;
  if (client_redirected(c) && redirect_multi(r)) {
    request_finish(r);
    return;
  }
  if (!client_redirected(c) && forward_whole(r)) {
    return;
  }
  launch_parts(r, false);
}

static void run_multi(client *c, uint8_t command, const resp_argument *arguments, uint32_t count) {
  request *r = request_create(c);
  if (r == NULL) {
    return;
  }
  r->command = command;
  if (request_copy_arguments(r, arguments, count) != 0 || build_parts(r) != 0 ||
      (command == KEYSPACE_MGET && (r->results = calloc(count, sizeof(found_value))) == NULL)) {
    resp_write_error(&r->reply, "ERR out of memory");
    request_finish(r);
    return;
  }
  request_launch(r, !is_read(command), start_multi);
}

static bool refuse_oversized_keys(client *c, const resp_argument *arguments, uint32_t count,
                                  bool pairs) {
  for (uint32_t i = 1; i < count; i += pairs ? 2 : 1) {
    if (refuse_oversized(c, &arguments[i], pairs ? &arguments[i + 1] : NULL)) {
      return true;
    }
  }
  return false;
}

void keyspace_mget(client *c, const resp_argument *arguments, uint32_t count) {
  if (!refuse_oversized_keys(c, arguments, count, false)) {
    run_multi(c, KEYSPACE_MGET, arguments, count);
  }
}

void keyspace_exists(client *c, const resp_argument *arguments, uint32_t count) {
  if (!refuse_oversized_keys(c, arguments, count, false)) {
    run_multi(c, KEYSPACE_EXISTS, arguments, count);
  }
}

void keyspace_del(client *c, const resp_argument *arguments, uint32_t count) {
  if (!refuse_oversized_keys(c, arguments, count, false)) {
    run_multi(c, KEYSPACE_DEL, arguments, count);
  }
}

void keyspace_mset(client *c, const resp_argument *arguments, uint32_t count) {
  if (count % 2 == 0) {
    reply_error(c, "ERR wrong number of arguments for 'mset' command");
    return;
  }
  if (!refuse_oversized_keys(c, arguments, count, true)) {
    run_multi(c, KEYSPACE_MSET, arguments, count);
  }
}
