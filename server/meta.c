/*
 * meta.c - the cluster map kept in the meta group, and the admin membership
 * operations that change it.
 *
 * THE META GROUP'S KEYS (built-in KV store of group SERVER_META_GROUP)
 *
 *   members/<g>, members/meta   the voters of a group, sorted ids "1,2,4"
 *   node/<id>                   "active" or "removed"
 *   version                     changes with every write (written in the
 *                               same command as the entry), so a refresh
 *                               reads the whole map only when it changed
 *
 * A group with no entry keeps the static placement (cluster.c). An entry is
 * written only after the group's membership change is applied on its
 * leader, and holds the voters that leader then reports, so the map never
 * names a member the group does not have.
 *
 * THE THREAD
 *
 *        +--------------------- wait META_REFRESH_MS or a submitted operation
 *        v                                                          |
 *   [operation?] --yes--> run it (blocking steps), answer the request
 *        |                                                          |
 *        +--> refresh: local meta replica (FL_READ_LOCAL) or MAP   -+
 *             from a meta member; leaders from every other node
 *
 * Remote steps go through the internal FLOTILLA subcommands (admin.c) on
 * the nodes' client ports, over one blocking connection per node with
 * timeouts: JOIN, DROP, CHANGE, PROGRESS, META-SET, MAP, LEADERS. Calls
 * to this node itself take the same path, so one code path serves every
 * node and the io threads stay the only users of the client protocol.
 *
 * Invariants: at most one operation is queued or running (busy); the map
 * state (version, node states, recorded groups) changes only on the
 * thread, under `lock`, and io threads read it under `lock`.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/reply_scan.h"
#include "server/server_internal.h"

/* One reply of an internal command; the MAP of 16384 groups fits. */
#define RPC_MAX_REPLY_BYTES (4u * 1024u * 1024u)
#define RPC_CONNECT_TIMEOUT_MS 500u
#define RPC_TIMEOUT_MS 10000u
/* A node that could not be reached is not tried again for this long. */
#define RPC_RETRY_AFTER_MS 1000u
/* How long one step may wait for an election or a catch-up. */
#define STEP_DEADLINE_MS 20000u
#define STEP_POLL_MS 50u
/* A learner within this many entries of the leader's commit has caught up. */
#define CATCH_UP_SLACK_ENTRIES 16u
#define ERROR_BYTES 256u

typedef struct rpc_link {
  int fd; /* -1: not connected */
  uint64_t retry_at_ms;
} rpc_link;

typedef struct rpc_reply {
  char type; /* '+', '-', ':', '$' or '_' (null) */
  int64_t integer;
  char *text; /* owned, NUL-terminated (simple strings, errors, bulks) */
} rpc_reply;

struct meta {
  server *server;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  bool stopping;
  bool busy;        /* an operation is queued or running */
  bool has_pending; /* `pending` waits for the thread */
  meta_operation pending;
  /* The map as read from the meta group (under `lock`). */
  char version[96];
  bool loaded_locally;                 /* read from this node's meta replica */
  bool node_removed[SERVER_MAX_NODES]; /* by index in config->nodes */
  bool *recorded;                      /* [groups + 1], meta at 0: has an entry */
  rpc_link links[SERVER_MAX_NODES];    /* by index in config->nodes; thread only */
};

typedef struct group_progress {
  int role;
  uint64_t leader;
  uint64_t commit;
  uint64_t applied;
  uint32_t voter_count;
  uint64_t voters[SERVER_MAX_REPLICAS];
  uint32_t learner_count;
  uint64_t learners[SERVER_MAX_REPLICAS];
} group_progress;

static uint64_t monotonic_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

static void pause_ms(uint32_t ms) {
  struct timespec delay = {.tv_sec = ms / 1000u, .tv_nsec = (long)(ms % 1000u) * 1000000L};
  nanosleep(&delay, NULL);
}

static uint32_t node_position(const server_config *config, uint64_t node) {
  for (uint32_t i = 0; i < config->node_count; i++) {
    if (config->nodes[i].id == node) {
      return i;
    }
  }
  return UINT32_MAX;
}

static bool stopping(meta *m) {
  pthread_mutex_lock(&m->lock);
  bool result = m->stopping;
  pthread_mutex_unlock(&m->lock);
  return result;
}

/* An error text; a long one is cut short, which is fine for a message. */
__attribute__((format(printf, 3, 4))) static void set_error(char *error, size_t bytes,
                                                            const char *format, ...) {
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(error, bytes, format, arguments);
  va_end(arguments);
}

void meta_members_key(uint64_t group, char *key, size_t key_bytes) {
  if (group == SERVER_META_GROUP) {
    snprintf(key, key_bytes, "members/meta");
  } else {
    snprintf(key, key_bytes, "members/%" PRIu64, group);
  }
}

static uint32_t group_slot(uint64_t group) {
  return group == SERVER_META_GROUP ? 0u : (uint32_t)group;
}

/* ---- blocking RPC to a node's client port ---------------------------------- */

static void rpc_reply_free(rpc_reply *reply) {
  free(reply->text);
  *reply = (rpc_reply){0};
}

static void link_close(rpc_link *link) {
  if (link->fd >= 0) {
    close(link->fd);
    link->fd = -1;
  }
}

static int connect_with_timeout(const server_node *node) {
  char port[8];
  snprintf(port, sizeof(port), "%u", node->client_port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *found = NULL;
  if (getaddrinfo(node->host, port, &hints, &found) != 0 || found == NULL) {
    return -EHOSTUNREACH;
  }
  int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int rc = fd < 0 ? -errno : 0;
  if (rc == 0 && connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    rc = errno == EINPROGRESS ? 0 : -errno;
    struct pollfd waiting = {.fd = fd, .events = POLLOUT};
    if (rc == 0 && poll(&waiting, 1, RPC_CONNECT_TIMEOUT_MS) != 1) {
      rc = -ETIMEDOUT;
    }
    int error = 0;
    socklen_t length = sizeof(error);
    if (rc == 0 && (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0 || error != 0)) {
      rc = -(error != 0 ? error : ECONNREFUSED);
    }
  }
  freeaddrinfo(found);
  if (rc != 0) {
    if (fd >= 0) {
      close(fd);
    }
    return rc;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  struct timeval timeout = {.tv_sec = RPC_TIMEOUT_MS / 1000u};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  /* Back to blocking: the timeouts above bound every send and receive. */
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  return fd;
}

static int send_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t sent = send(fd, data, length, MSG_NOSIGNAL);
    if (sent <= 0) {
      return sent < 0 && errno != 0 ? -errno : -ECONNRESET;
    }
    data += sent;
    length -= (size_t)sent;
  }
  return 0;
}

/* The command as a RESP multibulk: at most 8 arguments of short text. */
static int send_command(int fd, const char *const *arguments, uint32_t count) {
  char buffer[4096];
  int length = snprintf(buffer, sizeof(buffer), "*%u\r\n", count);
  for (uint32_t i = 0; i < count && length > 0 && (size_t)length < sizeof(buffer); i++) {
    length += snprintf(buffer + length, sizeof(buffer) - (size_t)length, "$%zu\r\n%s\r\n",
                       strlen(arguments[i]), arguments[i]);
  }
  if (length <= 0 || (size_t)length >= sizeof(buffer)) {
    return -EMSGSIZE;
  }
  return send_all(fd, buffer, (size_t)length);
}

/* Parses one complete reply of a simple type (what internal commands send). */
static int parse_reply(const char *data, size_t length, rpc_reply *reply) {
  const char *end = memchr(data, '\r', length);
  if (end == NULL || length < 3) {
    return -EPROTO;
  }
  size_t line = (size_t)(end - data - 1);
  reply->type = data[0];
  switch (data[0]) {
  case '+':
  case '-':
    reply->text = strndup(data + 1, line);
    return reply->text != NULL ? 0 : -ENOMEM;
  case ':':
    reply->integer = strtoll(data + 1, NULL, 10);
    return 0;
  case '$': {
    long long bytes = strtoll(data + 1, NULL, 10);
    if (bytes < 0) {
      reply->type = '_';
      return 0;
    }
    size_t start = line + 3;
    if (start + (size_t)bytes > length) {
      return -EPROTO;
    }
    reply->text = strndup(data + start, (size_t)bytes);
    return reply->text != NULL ? 0 : -ENOMEM;
  }
  default:
    return -EPROTO; /* internal commands never answer with aggregates */
  }
}

static int receive_reply(int fd, rpc_reply *reply) {
  reply_scanner scanner;
  reply_scanner_init(&scanner, RPC_MAX_REPLY_BYTES);
  size_t capacity = 4096, length = 0, reply_length = 0;
  char *buffer = malloc(capacity);
  int rc = buffer == NULL ? -ENOMEM : 0;
  while (rc == 0) {
    if (length == capacity) {
      char *grown = capacity < RPC_MAX_REPLY_BYTES ? realloc(buffer, capacity * 2) : NULL;
      if (grown == NULL) {
        rc = -ENOBUFS;
        break;
      }
      buffer = grown;
      capacity *= 2;
    }
    ssize_t got = recv(fd, buffer + length, capacity - length, 0);
    if (got <= 0) {
      rc = got < 0 ? -errno : -ECONNRESET;
      break;
    }
    length += (size_t)got;
    rc = reply_scan(&scanner, buffer, length, &reply_length);
    if (rc == 1) {
      rc = length == reply_length ? parse_reply(buffer, length, reply) : -EPROTO;
      break;
    }
  }
  free(buffer);
  return rc;
}

/* Connects and says "FLOTILLA FORWARDED": the internal subcommands that
 * change replicas are taken only from such connections, and the node never
 * forwards their commands elsewhere. */
static int link_open(rpc_link *link, const server_node *node) {
  int fd = connect_with_timeout(node);
  if (fd < 0) {
    return fd;
  }
  static const char *const handshake[] = {"FLOTILLA", "FORWARDED"};
  rpc_reply reply = {0};
  int rc = send_command(fd, handshake, 2);
  if (rc == 0) {
    rc = receive_reply(fd, &reply);
  }
  if (rc == 0 && !(reply.type == '+' && strcmp(reply.text, "OK") == 0)) {
    rc = -EPROTO;
  }
  free(reply.text);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  link->fd = fd;
  return 0;
}

/*
 * Sends one command to `node` (this node included) and waits for its
 * reply: 0 with *reply filled (errors included, type '-'), or a negative
 * errno when the node could not be reached or did not answer in time.
 */
static int rpc_call(meta *m, uint64_t node, const char *const *arguments, uint32_t count,
                    rpc_reply *reply) {
  const server_config *config = m->server->config;
  uint32_t position = node_position(config, node);
  *reply = (rpc_reply){0};
  if (position == UINT32_MAX) {
    return -EINVAL;
  }
  rpc_link *link = &m->links[position];
  if (link->fd < 0) {
    if (monotonic_ms() < link->retry_at_ms) {
      return -ECONNREFUSED;
    }
    int rc = link_open(link, &config->nodes[position]);
    if (rc != 0) {
      link->retry_at_ms = monotonic_ms() + RPC_RETRY_AFTER_MS;
      return rc;
    }
  }
  int rc = send_command(link->fd, arguments, count);
  if (rc == 0) {
    rc = receive_reply(link->fd, reply);
  }
  if (rc != 0) {
    /* A half-read reply would desynchronize the pipeline: start over. */
    link_close(link);
    rpc_reply_free(reply);
  }
  return rc;
}

static bool reply_is_ok(const rpc_reply *reply) {
  return reply->type == '+' && strcmp(reply->text, "OK") == 0;
}

/* A short description of a failed call, for error replies. */
static void describe_failure(int rc, const rpc_reply *reply, char *text, size_t bytes) {
  if (rc != 0) {
    snprintf(text, bytes, "%s", strerror(-rc));
  } else if (reply->type == '-') {
    snprintf(text, bytes, "%s", reply->text);
  } else {
    snprintf(text, bytes, "unexpected reply");
  }
}

/* An internal command whose answer is +OK: 0, or -1 with `error` set. */
static int rpc_expect_ok(meta *m, uint64_t node, const char *const *arguments, uint32_t count,
                         char *error, size_t error_bytes) {
  rpc_reply reply;
  int rc = rpc_call(m, node, arguments, count, &reply);
  bool ok = rc == 0 && reply_is_ok(&reply);
  if (!ok) {
    char why[ERROR_BYTES];
    describe_failure(rc, &reply, why, sizeof(why));
    set_error(error, error_bytes, "%s %s on node %" PRIu64 ": %s", arguments[1],
              count > 2 ? arguments[2] : "", node, why);
  }
  rpc_reply_free(&reply);
  return ok ? 0 : -1;
}

/* ---- reading this node's meta replica ----------------------------------- */

typedef struct read_waiter {
  pthread_mutex_t lock;
  pthread_cond_t done_signal;
  bool done;
  int status;
  char *value; /* owned copy, NUL-terminated */
} read_waiter;

static void on_local_read(void *context, int status, const uint8_t *value, uint32_t length) {
  read_waiter *waiter = context;
  char *copy = status == 0 ? strndup((const char *)value, length) : NULL;
  pthread_mutex_lock(&waiter->lock);
  waiter->status = status == 0 && copy == NULL ? FL_E_NOMEM : status;
  waiter->value = copy;
  waiter->done = true;
  pthread_cond_signal(&waiter->done_signal);
  pthread_mutex_unlock(&waiter->lock);
}

/* This replica's value of `key` (*value owned by the caller): 0,
 * FL_E_NOT_FOUND, FL_E_NO_GROUP (no meta replica here) or another error.
 * A local read needs no network, so the engine answers promptly. */
static int local_meta_get(meta *m, const char *key, char **value) {
  read_waiter waiter = {.lock = PTHREAD_MUTEX_INITIALIZER, .done_signal = PTHREAD_COND_INITIALIZER};
  *value = NULL;
  int rc = fl_kv_get(m->server->engine, SERVER_META_GROUP, key, (uint32_t)strlen(key),
                     FL_READ_LOCAL, on_local_read, &waiter);
  if (rc != 0) {
    return rc;
  }
  pthread_mutex_lock(&waiter.lock);
  while (!waiter.done) {
    pthread_cond_wait(&waiter.done_signal, &waiter.lock);
  }
  pthread_mutex_unlock(&waiter.lock);
  *value = waiter.value;
  return waiter.status;
}

/* ---- applying entries to the map ----------------------------------------- */

/* "1,2,4" -> ids: false unless 1..SERVER_MAX_REPLICAS configured node ids. */
static bool parse_members(const server_config *config, const char *text, uint64_t *members,
                          uint32_t *count) {
  *count = 0;
  const char *cursor = text;
  while (*cursor != '\0') {
    char *end = NULL;
    errno = 0;
    unsigned long long id = strtoull(cursor, &end, 10);
    if (end == cursor || errno != 0 || *count == SERVER_MAX_REPLICAS ||
        server_config_node(config, id) == NULL || (*end != ',' && *end != '\0')) {
      return false;
    }
    members[(*count)++] = id;
    cursor = *end == ',' ? end + 1 : end;
  }
  return *count > 0;
}

static void format_members(const uint64_t *members, uint32_t count, char *text, size_t bytes) {
  size_t length = 0;
  text[0] = '\0';
  for (uint32_t i = 0; i < count && length < bytes; i++) {
    length +=
        (size_t)snprintf(text + length, bytes - length, "%s%" PRIu64, i > 0 ? "," : "", members[i]);
  }
}

static void apply_members(meta *m, uint64_t group, const char *text) {
  uint64_t members[SERVER_MAX_REPLICAS];
  uint32_t count = 0;
  if (!parse_members(m->server->config, text, members, &count)) {
    server_log(2, "meta: ignoring a bad members entry of group %" PRIu64 ": '%s'", group, text);
    return;
  }
  cluster_set_members(m->server->map, group, members, count);
  pthread_mutex_lock(&m->lock);
  m->recorded[group_slot(group)] = true;
  pthread_mutex_unlock(&m->lock);
}

static void apply_node_state(meta *m, uint64_t node, const char *state) {
  uint32_t position = node_position(m->server->config, node);
  if (position == UINT32_MAX) {
    return;
  }
  pthread_mutex_lock(&m->lock);
  m->node_removed[position] = strcmp(state, "removed") == 0;
  pthread_mutex_unlock(&m->lock);
}

static void set_version(meta *m, const char *version, bool local) {
  pthread_mutex_lock(&m->lock);
  snprintf(m->version, sizeof(m->version), "%s", version);
  m->loaded_locally = local;
  pthread_mutex_unlock(&m->lock);
}

static bool version_is(meta *m, const char *version) {
  pthread_mutex_lock(&m->lock);
  bool same = strcmp(m->version, version) == 0;
  pthread_mutex_unlock(&m->lock);
  return same;
}

/* ---- refreshing from this node's replica ------------------------------------ */

static int read_entry_locally(meta *m, const char *key, char **value) {
  int rc = local_meta_get(m, key, value);
  return rc == FL_E_NOT_FOUND ? 0 : rc;
}

/* 0 once read (or unchanged), FL_E_NO_GROUP without a meta replica here. */
static int refresh_from_local(meta *m) {
  char *version = NULL;
  int rc = local_meta_get(m, "version", &version);
  if (rc == FL_E_NOT_FOUND) {
    set_version(m, "", true); /* nothing recorded yet: the static placement holds */
    return 0;
  }
  if (rc != 0 || version_is(m, version)) {
    free(version);
    return rc;
  }
  const server_config *config = m->server->config;
  char key[64];
  for (uint32_t i = 0; i < config->node_count && rc == 0; i++) {
    char *state = NULL;
    snprintf(key, sizeof(key), "node/%" PRIu64, config->nodes[i].id);
    rc = read_entry_locally(m, key, &state);
    if (state != NULL) {
      apply_node_state(m, config->nodes[i].id, state);
    }
    free(state);
  }
  uint32_t groups = cluster_group_count(m->server->map);
  for (uint64_t g = 0; g <= groups && rc == 0; g++) {
    uint64_t group = g == 0 ? SERVER_META_GROUP : g;
    char *members = NULL;
    meta_members_key(group, key, sizeof(key));
    rc = read_entry_locally(m, key, &members);
    if (members != NULL) {
      apply_members(m, group, members);
    }
    free(members);
  }
  if (rc == 0) {
    set_version(m, version, true);
  }
  free(version);
  return rc;
}

/* ---- refreshing from another node ------------------------------------------- */

/* One line of a MAP reply: "version <v>", "node <id> <state>", "group <g> <ids>". */
static void apply_map_line(meta *m, const char *line) {
  char word[16], first[96], second[SERVER_MAX_REPLICAS * 24];
  int fields = sscanf(line, "%15s %95s %167s", word, first, second);
  if (fields == 3 && strcmp(word, "node") == 0) {
    apply_node_state(m, strtoull(first, NULL, 10), second);
  } else if (fields == 3 && strcmp(word, "group") == 0) {
    uint64_t group = strtoull(first, NULL, 10);
    if (group == SERVER_META_GROUP ||
        (group >= 1 && group <= cluster_group_count(m->server->map))) {
      apply_members(m, group, second);
    }
  }
}

static int refresh_from_remote(meta *m) {
  uint64_t members[SERVER_MAX_REPLICAS];
  uint32_t count = cluster_members(m->server->map, SERVER_META_GROUP, members);
  static const char *const command[] = {"FLOTILLA", "MAP"};
  for (uint32_t i = 0; i < count; i++) {
    if (members[i] == m->server->config->node_id) {
      continue;
    }
    rpc_reply reply;
    if (rpc_call(m, members[i], command, 2, &reply) != 0 || reply.type != '$') {
      rpc_reply_free(&reply);
      continue;
    }
    char *saveptr = NULL;
    char *line = strtok_r(reply.text, "\n", &saveptr);
    char version[96] = "";
    if (line != NULL && sscanf(line, "version %95s", version) == 1 && !version_is(m, version)) {
      while ((line = strtok_r(NULL, "\n", &saveptr)) != NULL) {
        apply_map_line(m, line);
      }
      set_version(m, version, false);
    }
    rpc_reply_free(&reply);
    return 0;
  }
  return -EHOSTUNREACH;
}

/* ---- leaders of groups this node holds no replica of -------------------- */

/*
 * The engine reports leaders only for local replicas; a node learns the
 * others from each node's claims (the groups it leads, LEADERS). A node
 * answering without claiming a group this node thought it led no longer
 * leads it; one that cannot be reached keeps its groups until another
 * node claims them.
 */
static void learn_leaders_from(meta *m, uint64_t node, char *claims) {
  cluster_map *map = m->server->map;
  uint64_t self = m->server->config->node_id;
  uint32_t groups = cluster_group_count(map);
  for (uint64_t g = 0; g <= groups; g++) {
    uint64_t group = g == 0 ? SERVER_META_GROUP : g;
    if (!cluster_is_member(map, group, self) && cluster_leader(map, group) == node) {
      cluster_set_leader(map, group, 0);
    }
  }
  char *saveptr = NULL;
  for (char *word = strtok_r(claims, " ", &saveptr); word != NULL;
       word = strtok_r(NULL, " ", &saveptr)) {
    uint64_t group = strtoull(word, NULL, 10);
    if (group != 0 && !cluster_is_member(map, group, self)) {
      cluster_set_leader(map, group, node);
    }
  }
}

static void refresh_leaders(meta *m) {
  const server_config *config = m->server->config;
  static const char *const command[] = {"FLOTILLA", "LEADERS"};
  for (uint32_t i = 0; i < config->node_count; i++) {
    uint64_t node = config->nodes[i].id;
    rpc_reply reply;
    if (node == config->node_id || rpc_call(m, node, command, 2, &reply) != 0) {
      continue;
    }
    if (reply.type == '$') {
      learn_leaders_from(m, node, reply.text);
    }
    rpc_reply_free(&reply);
  }
}

static void refresh(meta *m) {
  int rc = refresh_from_local(m);
  if (rc == FL_E_NO_GROUP) {
    refresh_from_remote(m);
  } else if (rc != 0) {
    server_log(2, "meta: reading the cluster map: %s", fl_strerror(rc));
  }
  refresh_leaders(m);
}

/* ---- the steps of a membership operation ------------------------------------ */

static void group_text(uint64_t group, char *text, size_t bytes) {
  if (group == SERVER_META_GROUP) {
    snprintf(text, bytes, "meta");
  } else {
    snprintf(text, bytes, "%" PRIu64, group);
  }
}

/* "<role> <leader> <commit> <applied> <voters|-> <learners|->" */
static bool parse_progress(const char *text, group_progress *progress) {
  char voters[160], learners[160];
  *progress = (group_progress){0};
  if (sscanf(text, "%d %" SCNu64 " %" SCNu64 " %" SCNu64 " %159s %159s", &progress->role,
             &progress->leader, &progress->commit, &progress->applied, voters, learners) != 6) {
    return false;
  }
  uint64_t *lists[] = {progress->voters, progress->learners};
  uint32_t *counts[] = {&progress->voter_count, &progress->learner_count};
  char *texts[] = {voters, learners};
  for (int list = 0; list < 2; list++) {
    char *saveptr = NULL;
    for (char *id = strtok_r(texts[list], ",", &saveptr); id != NULL && strcmp(id, "-") != 0;
         id = strtok_r(NULL, ",", &saveptr)) {
      if (*counts[list] < SERVER_MAX_REPLICAS) {
        lists[list][(*counts[list])++] = strtoull(id, NULL, 10);
      }
    }
  }
  return true;
}

static int group_progress_of(meta *m, uint64_t node, uint64_t group, group_progress *progress) {
  char name[32];
  group_text(group, name, sizeof(name));
  const char *command[] = {"FLOTILLA", "PROGRESS", name};
  rpc_reply reply;
  int rc = rpc_call(m, node, command, 3, &reply);
  if (rc == 0 && (reply.type != '$' || !parse_progress(reply.text, progress))) {
    rc = -ENOENT; /* no replica there, or a bad answer */
  }
  rpc_reply_free(&reply);
  return rc;
}

static bool contains(const uint64_t *ids, uint32_t count, uint64_t id) {
  for (uint32_t i = 0; i < count; i++) {
    if (ids[i] == id) {
      return true;
    }
  }
  return false;
}

/* Asks `node`, then the leader it names; true once one of them leads. */
static bool leader_via(meta *m, uint64_t node, uint64_t group, uint64_t *leader,
                       group_progress *progress) {
  if (node == 0 || group_progress_of(m, node, group, progress) != 0) {
    return false;
  }
  if (progress->role == FL_LEADER) {
    *leader = node;
    return true;
  }
  uint64_t named = progress->leader;
  if (named == 0 || named == node || group_progress_of(m, named, group, progress) != 0) {
    return false;
  }
  *leader = named;
  return progress->role == FL_LEADER;
}

/* The group's leader and its progress, waiting (bounded) for an election. */
static int find_leader(meta *m, uint64_t group, uint64_t *leader, group_progress *progress,
                       char *error, size_t error_bytes) {
  cluster_map *map = m->server->map;
  uint64_t deadline_ms = monotonic_ms() + STEP_DEADLINE_MS;
  while (monotonic_ms() < deadline_ms && !stopping(m)) {
    if (leader_via(m, cluster_leader(map, group), group, leader, progress)) {
      return 0;
    }
    uint64_t members[SERVER_MAX_REPLICAS];
    uint32_t count = cluster_members(map, group, members);
    for (uint32_t i = 0; i < count; i++) {
      if (leader_via(m, members[i], group, leader, progress)) {
        return 0;
      }
    }
    pause_ms(STEP_POLL_MS);
  }
  char name[32];
  group_text(group, name, sizeof(name));
  set_error(error, error_bytes, "no leader of group %s could be reached", name);
  return -1;
}

static bool change_done(const group_progress *p, fl_change_type type, uint64_t node) {
  bool voter = contains(p->voters, p->voter_count, node);
  bool learner = contains(p->learners, p->learner_count, node);
  switch (type) {
  case FL_ADD_LEARNER:
    return voter || learner;
  case FL_ADD_VOTER:
    return voter;
  default:
    return !voter && !learner;
  }
}

static const char *change_name(fl_change_type type) {
  return type == FL_ADD_LEARNER ? "ADD-LEARNER" : type == FL_ADD_VOTER ? "ADD-VOTER" : "REMOVE";
}

/* A leader being removed hands its leadership to another voter first. */
static void hand_off_leadership(meta *m, uint64_t group, uint64_t leader, const group_progress *p) {
  for (uint32_t i = 0; i < p->voter_count; i++) {
    if (p->voters[i] != leader) {
      char name[32], target[24];
      group_text(group, name, sizeof(name));
      snprintf(target, sizeof(target), "%" PRIu64, p->voters[i]);
      const char *command[] = {"FLOTILLA", "TRANSFER", name, target};
      rpc_reply reply;
      rpc_call(m, leader, command, 4, &reply);
      rpc_reply_free(&reply);
      return;
    }
  }
}

/* Applies one membership change on the group's leader, retried through
 * elections and joint-consensus conflicts until the leader shows it. */
static int change_membership(meta *m, uint64_t group, fl_change_type type, uint64_t node,
                             char *error, size_t error_bytes) {
  uint64_t deadline_ms = monotonic_ms() + STEP_DEADLINE_MS;
  char name[32], id[24], why[ERROR_BYTES] = "timed out";
  group_text(group, name, sizeof(name));
  snprintf(id, sizeof(id), "%" PRIu64, node);
  while (monotonic_ms() < deadline_ms && !stopping(m)) {
    uint64_t leader = 0;
    group_progress p;
    if (find_leader(m, group, &leader, &p, why, sizeof(why)) != 0) {
      break;
    }
    if (change_done(&p, type, node)) {
      return 0;
    }
    if (type == FL_REMOVE_MEMBER && leader == node) {
      hand_off_leadership(m, group, leader, &p);
      pause_ms(STEP_POLL_MS);
      continue;
    }
    const char *command[] = {"FLOTILLA", "CHANGE", name, change_name(type), id};
    rpc_reply reply;
    int rc = rpc_call(m, leader, command, 5, &reply);
    if (rc != 0 || !reply_is_ok(&reply)) {
      describe_failure(rc, &reply, why, sizeof(why));
      pause_ms(STEP_POLL_MS); /* a change in progress, a new election: try again */
    }
    rpc_reply_free(&reply);
  }
  set_error(error, error_bytes, "%s of node %s in group %s failed: %s", change_name(type), id, name,
            why);
  return -1;
}

static int wait_caught_up(meta *m, uint64_t group, uint64_t node, char *error, size_t error_bytes) {
  uint64_t deadline_ms = monotonic_ms() + STEP_DEADLINE_MS;
  while (monotonic_ms() < deadline_ms && !stopping(m)) {
    uint64_t leader = 0;
    group_progress at_leader, at_node;
    if (find_leader(m, group, &leader, &at_leader, error, error_bytes) != 0) {
      return -1;
    }
    if (group_progress_of(m, node, group, &at_node) == 0 && at_node.applied > 0 &&
        at_node.applied + CATCH_UP_SLACK_ENTRIES >= at_leader.commit) {
      return 0;
    }
    pause_ms(STEP_POLL_MS);
  }
  set_error(error, error_bytes, "node %" PRIu64 " did not catch up with the group in time", node);
  return -1;
}

/* Writes one entry of the map through the meta group's leader. */
static int meta_set(meta *m, const char *key, const char *value, char *error, size_t error_bytes) {
  uint64_t deadline_ms = monotonic_ms() + STEP_DEADLINE_MS;
  char why[ERROR_BYTES] = "timed out";
  while (monotonic_ms() < deadline_ms && !stopping(m)) {
    uint64_t leader = 0;
    group_progress p;
    if (find_leader(m, SERVER_META_GROUP, &leader, &p, why, sizeof(why)) != 0) {
      break;
    }
    const char *command[] = {"FLOTILLA", "META-SET", key, value};
    rpc_reply reply;
    int rc = rpc_call(m, leader, command, 4, &reply);
    bool ok = rc == 0 && reply_is_ok(&reply);
    describe_failure(rc, &reply, why, sizeof(why));
    rpc_reply_free(&reply);
    if (ok) {
      return 0;
    }
    pause_ms(STEP_POLL_MS);
  }
  set_error(error, error_bytes, "writing %s to the meta group failed: %s", key, why);
  return -1;
}

static int compare_ids(const void *left, const void *right) {
  uint64_t a = *(const uint64_t *)left, b = *(const uint64_t *)right;
  return (a > b) - (a < b);
}

/* Records the voters the group's leader reports, then shows them here. */
static int record_members(meta *m, uint64_t group, char *error, size_t error_bytes) {
  uint64_t leader = 0;
  group_progress p;
  if (find_leader(m, group, &leader, &p, error, error_bytes) != 0) {
    return -1;
  }
  if (p.voter_count == 0) {
    set_error(error, error_bytes, "the leader reports no voters");
    return -1;
  }
  qsort(p.voters, p.voter_count, sizeof(p.voters[0]), compare_ids);
  char key[64], value[SERVER_MAX_REPLICAS * 24];
  meta_members_key(group, key, sizeof(key));
  format_members(p.voters, p.voter_count, value, sizeof(value));
  if (meta_set(m, key, value, error, error_bytes) != 0) {
    return -1;
  }
  apply_members(m, group, value);
  return 0;
}

static int group_command(meta *m, uint64_t node, const char *verb, uint64_t group, char *error,
                         size_t error_bytes) {
  char name[32];
  group_text(group, name, sizeof(name));
  const char *command[] = {"FLOTILLA", verb, name};
  return rpc_expect_ok(m, node, command, 3, error, error_bytes);
}

/* ---- the operations ------------------------------------------------------------ */

/* Best effort after a failed step: the group must not keep a half-added member. */
static void undo_add(meta *m, uint64_t group, uint64_t node) {
  char ignored[ERROR_BYTES];
  if (change_membership(m, group, FL_REMOVE_MEMBER, node, ignored, sizeof(ignored)) == 0) {
    group_command(m, node, "DROP", group, ignored, sizeof(ignored));
  }
}

static bool node_is_removed(meta *m, uint64_t node) {
  uint32_t position = node_position(m->server->config, node);
  pthread_mutex_lock(&m->lock);
  bool removed = position == UINT32_MAX || m->node_removed[position];
  pthread_mutex_unlock(&m->lock);
  return removed;
}

static int add_replica(meta *m, uint64_t group, uint64_t node, char *error, size_t error_bytes) {
  if (node_is_removed(m, node)) {
    set_error(error, error_bytes, "node %" PRIu64 " is removed: FLOTILLA ADD-NODE it first", node);
    return -1;
  }
  if (cluster_is_member(m->server->map, group, node)) {
    set_error(error, error_bytes, "node %" PRIu64 " already holds a replica of the group", node);
    return -1;
  }
  if (group_command(m, node, "JOIN", group, error, error_bytes) != 0) {
    return -1;
  }
  if (change_membership(m, group, FL_ADD_LEARNER, node, error, error_bytes) != 0 ||
      wait_caught_up(m, group, node, error, error_bytes) != 0 ||
      change_membership(m, group, FL_ADD_VOTER, node, error, error_bytes) != 0) {
    undo_add(m, group, node);
    return -1;
  }
  return record_members(m, group, error, error_bytes);
}

static int remove_replica(meta *m, uint64_t group, uint64_t node, char *error, size_t error_bytes) {
  uint64_t members[SERVER_MAX_REPLICAS];
  uint32_t count = cluster_members(m->server->map, group, members);
  if (!contains(members, count, node)) {
    set_error(error, error_bytes, "node %" PRIu64 " holds no replica of the group", node);
    return -1;
  }
  if (count == 1) {
    set_error(error, error_bytes, "node %" PRIu64 " holds the group's last replica", node);
    return -1;
  }
  if (change_membership(m, group, FL_REMOVE_MEMBER, node, error, error_bytes) != 0 ||
      record_members(m, group, error, error_bytes) != 0) {
    return -1;
  }
  char why[ERROR_BYTES];
  if (group_command(m, node, "DROP", group, why, sizeof(why)) != 0) {
    set_error(error, error_bytes, "removed from the group, but its replica stays: %s", why);
    return -1;
  }
  return 0;
}

static int move_replica(meta *m, uint64_t group, uint64_t from, uint64_t to, char *error,
                        size_t error_bytes) {
  if (!cluster_is_member(m->server->map, group, from)) {
    set_error(error, error_bytes, "node %" PRIu64 " holds no replica of the group", from);
    return -1;
  }
  if (add_replica(m, group, to, error, error_bytes) != 0) {
    return -1;
  }
  char why[ERROR_BYTES];
  if (remove_replica(m, group, from, why, sizeof(why)) != 0) {
    set_error(error, error_bytes, "added node %" PRIu64 ", then removing node %" PRIu64 ": %s", to,
              from, why);
    return -1;
  }
  return 0;
}

/* Replicas per node (by config position), data groups and the meta group. */
static void count_replicas(meta *m, uint32_t *counts) {
  const server_config *config = m->server->config;
  memset(counts, 0, config->node_count * sizeof(counts[0]));
  uint32_t groups = cluster_group_count(m->server->map);
  for (uint64_t g = 0; g <= groups; g++) {
    uint64_t members[SERVER_MAX_REPLICAS];
    uint32_t count = cluster_members(m->server->map, g == 0 ? SERVER_META_GROUP : g, members);
    for (uint32_t i = 0; i < count; i++) {
      uint32_t position = node_position(config, members[i]);
      if (position != UINT32_MAX) {
        counts[position]++;
      }
    }
  }
}

static bool node_answers(meta *m, uint64_t node) {
  static const char *const command[] = {"PING"};
  rpc_reply reply;
  bool answers = rpc_call(m, node, command, 1, &reply) == 0 && reply.type == '+';
  rpc_reply_free(&reply);
  return answers;
}

/* The active, reachable node with the fewest replicas not holding `group`. */
static uint64_t choose_target(meta *m, uint64_t group, uint64_t leaving) {
  const server_config *config = m->server->config;
  uint32_t counts[SERVER_MAX_NODES];
  count_replicas(m, counts);
  uint64_t best = 0;
  uint32_t best_count = UINT32_MAX;
  for (uint32_t i = 0; i < config->node_count; i++) {
    uint64_t node = config->nodes[i].id;
    if (node == leaving || counts[i] >= best_count || node_is_removed(m, node) ||
        cluster_is_member(m->server->map, group, node) || !node_answers(m, node)) {
      continue;
    }
    best = node;
    best_count = counts[i];
  }
  return best;
}

static int set_node_state(meta *m, uint64_t node, const char *state, char *error,
                          size_t error_bytes) {
  char key[48];
  snprintf(key, sizeof(key), "node/%" PRIu64, node);
  if (meta_set(m, key, state, error, error_bytes) != 0) {
    return -1;
  }
  apply_node_state(m, node, state);
  return 0;
}

static int remove_node(meta *m, uint64_t node, char *error, size_t error_bytes) {
  uint32_t groups = cluster_group_count(m->server->map);
  for (uint64_t g = 0; g <= groups; g++) {
    uint64_t group = g == 0 ? SERVER_META_GROUP : g;
    if (!cluster_is_member(m->server->map, group, node)) {
      continue;
    }
    char name[32], why[ERROR_BYTES];
    group_text(group, name, sizeof(name));
    uint64_t target = choose_target(m, group, node);
    if (target == 0) {
      set_error(error, error_bytes, "no active node can take the replica of group %s", name);
      return -1;
    }
    if (move_replica(m, group, node, target, why, sizeof(why)) != 0) {
      set_error(error, error_bytes, "moving group %s to node %" PRIu64 ": %s", name, target, why);
      return -1;
    }
  }
  return set_node_state(m, node, "removed", error, error_bytes);
}

/* A data group `donor` holds and `node` does not; 0 if none. */
static uint64_t group_to_take(meta *m, uint64_t donor, uint64_t node) {
  for (uint64_t group = 1; group <= cluster_group_count(m->server->map); group++) {
    if (cluster_is_member(m->server->map, group, donor) &&
        !cluster_is_member(m->server->map, group, node)) {
      return group;
    }
  }
  return 0;
}

/* Moves replicas from the fullest active nodes until `node` is within one. */
static int add_node(meta *m, uint64_t node, char *error, size_t error_bytes) {
  if (set_node_state(m, node, "active", error, error_bytes) != 0) {
    return -1;
  }
  const server_config *config = m->server->config;
  uint32_t position = node_position(config, node);
  for (uint32_t moves = 0; moves <= cluster_group_count(m->server->map) && !stopping(m); moves++) {
    uint32_t counts[SERVER_MAX_NODES];
    count_replicas(m, counts);
    uint32_t donor = UINT32_MAX;
    for (uint32_t i = 0; i < config->node_count; i++) {
      if (i != position && (donor == UINT32_MAX || counts[i] > counts[donor]) &&
          group_to_take(m, config->nodes[i].id, node) != 0) {
        donor = i;
      }
    }
    if (donor == UINT32_MAX || counts[donor] <= counts[position] + 1) {
      return 0;
    }
    uint64_t from = config->nodes[donor].id;
    uint64_t group = group_to_take(m, from, node);
    char why[ERROR_BYTES];
    if (move_replica(m, group, from, node, why, sizeof(why)) != 0) {
      set_error(error, error_bytes, "moving group %" PRIu64 " from node %" PRIu64 ": %s", group,
                from, why);
      return -1;
    }
  }
  return 0;
}

static int run_operation(meta *m, const meta_operation *op, char *error, size_t error_bytes) {
  switch (op->kind) {
  case META_ADD_REPLICA:
    return add_replica(m, op->group, op->node, error, error_bytes);
  case META_REMOVE_REPLICA:
    return remove_replica(m, op->group, op->node, error, error_bytes);
  case META_MOVE_REPLICA:
    return move_replica(m, op->group, op->from, op->node, error, error_bytes);
  case META_ADD_NODE:
    return add_node(m, op->node, error, error_bytes);
  case META_REMOVE_NODE:
    return remove_node(m, op->node, error, error_bytes);
  }
  set_error(error, error_bytes, "unknown operation");
  return -1;
}

static void answer(meta_operation *op, int rc, const char *error) {
  request *r = op->request;
  if (rc == 0) {
    resp_write_ok(&r->reply);
  } else {
    resp_write_error_format(&r->reply, "ERR %s", error);
  }
  request_finish_from_shard(r);
}

static void perform(meta *m, meta_operation *op) {
  char error[ERROR_BYTES] = "";
  server_log(1, "meta: membership operation %d started (group %" PRIu64 ", node %" PRIu64 ")",
             (int)op->kind, op->group, op->node);
  int rc = run_operation(m, op, error, sizeof(error));
  if (rc != 0 && stopping(m)) {
    set_error(error, sizeof(error), "the server is shutting down");
  }
  server_log(rc == 0 ? 1 : 2, "meta: membership operation %d %s%s", (int)op->kind,
             rc == 0 ? "done" : "failed: ", error);
  answer(op, rc, error);
}

/* ---- the thread --------------------------------------------------------------- */

static void *meta_main(void *argument) {
  meta *m = argument;
  for (;;) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)META_REFRESH_MS * 1000000L;
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&m->lock);
    while (!m->stopping && !m->has_pending &&
           pthread_cond_timedwait(&m->wake, &m->lock, &until) == 0) {
    }
    bool stop = m->stopping;
    bool has_operation = m->has_pending && !stop;
    meta_operation op = m->pending;
    m->has_pending = false;
    pthread_mutex_unlock(&m->lock);
    if (stop) {
      break;
    }
    if (has_operation) {
      perform(m, &op);
      pthread_mutex_lock(&m->lock);
      m->busy = false;
      pthread_mutex_unlock(&m->lock);
    }
    refresh(m);
  }
  return NULL;
}

int meta_start(server *s) {
  meta *m = calloc(1, sizeof(*m));
  if (m == NULL) {
    return -ENOMEM;
  }
  m->server = s;
  m->recorded = calloc(cluster_group_count(s->map) + 1u, sizeof(bool));
  pthread_condattr_t attributes;
  pthread_condattr_init(&attributes);
  pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC);
  int rc = m->recorded == NULL ? ENOMEM : pthread_cond_init(&m->wake, &attributes);
  pthread_condattr_destroy(&attributes);
  if (rc != 0) {
    free(m->recorded);
    free(m);
    return -rc;
  }
  pthread_mutex_init(&m->lock, NULL);
  for (uint32_t i = 0; i < SERVER_MAX_NODES; i++) {
    m->links[i].fd = -1;
  }
  rc = pthread_create(&m->thread, NULL, meta_main, m);
  if (rc != 0) {
    pthread_cond_destroy(&m->wake);
    pthread_mutex_destroy(&m->lock);
    free(m->recorded);
    free(m);
    return -rc;
  }
  s->meta = m;
  return 0;
}

void meta_stop(server *s) {
  meta *m = s->meta;
  if (m == NULL) {
    return;
  }
  pthread_mutex_lock(&m->lock);
  m->stopping = true;
  pthread_cond_signal(&m->wake);
  bool unanswered = m->has_pending;
  m->has_pending = false;
  pthread_mutex_unlock(&m->lock);
  if (unanswered) {
    answer(&m->pending, -1, "the server is shutting down");
  }
  pthread_join(m->thread, NULL);
  for (uint32_t i = 0; i < SERVER_MAX_NODES; i++) {
    link_close(&m->links[i]);
  }
  pthread_cond_destroy(&m->wake);
  pthread_mutex_destroy(&m->lock);
  free(m->recorded);
  free(m);
  s->meta = NULL;
}

int meta_submit(meta *m, const meta_operation *operation) {
  assert(operation->request != NULL);
  pthread_mutex_lock(&m->lock);
  int rc = m->busy || m->stopping ? -EBUSY : 0;
  if (rc == 0) {
    m->busy = true;
    m->has_pending = true;
    m->pending = *operation;
    pthread_cond_signal(&m->wake);
  }
  pthread_mutex_unlock(&m->lock);
  return rc;
}

/* ---- replies (io threads) ------------------------------------------------------- */

void meta_write_map(meta *m, resp_writer *w) {
  pthread_mutex_lock(&m->lock);
  bool loaded = m->loaded_locally;
  char version[96];
  snprintf(version, sizeof(version), "%s", m->version[0] != '\0' ? m->version : "none");
  pthread_mutex_unlock(&m->lock);
  if (!loaded) {
    resp_write_error(w, "ERR this node has not read its meta replica yet");
    return;
  }
  const server_config *config = m->server->config;
  uint32_t groups = cluster_group_count(m->server->map);
  size_t capacity = 128 + (size_t)config->node_count * 48 + ((size_t)groups + 1) * 192;
  char *text = malloc(capacity);
  if (text == NULL) {
    resp_write_error(w, "ERR out of memory");
    return;
  }
  size_t length = (size_t)snprintf(text, capacity, "version %s\n", version);
  for (uint32_t i = 0; i < config->node_count; i++) {
    length += (size_t)snprintf(text + length, capacity - length, "node %" PRIu64 " %s\n",
                               config->nodes[i].id,
                               node_is_removed(m, config->nodes[i].id) ? "removed" : "active");
  }
  for (uint64_t g = 0; g <= groups; g++) {
    pthread_mutex_lock(&m->lock);
    bool recorded = m->recorded[g];
    pthread_mutex_unlock(&m->lock);
    if (!recorded) {
      continue;
    }
    uint64_t group = g == 0 ? SERVER_META_GROUP : g, members[SERVER_MAX_REPLICAS];
    char ids[SERVER_MAX_REPLICAS * 24];
    format_members(members, cluster_members(m->server->map, group, members), ids, sizeof(ids));
    length +=
        (size_t)snprintf(text + length, capacity - length, "group %" PRIu64 " %s\n", group, ids);
  }
  assert(length < capacity);
  resp_write_bulk(w, text, length);
  free(text);
}

void meta_write_nodes(meta *m, resp_writer *w) {
  const server_config *config = m->server->config;
  uint32_t counts[SERVER_MAX_NODES];
  count_replicas(m, counts);
  resp_write_array_header(w, config->node_count);
  for (uint32_t i = 0; i < config->node_count; i++) {
    const char *state = node_is_removed(m, config->nodes[i].id) ? "removed" : "active";
    resp_write_array_header(w, 3);
    resp_write_integer(w, (int64_t)config->nodes[i].id);
    resp_write_bulk(w, state, strlen(state));
    resp_write_integer(w, counts[i]);
  }
}
