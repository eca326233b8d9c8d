/*
 * commands.c - the command table, dispatch, and the commands that need no
 * group: PING, ECHO, HELLO, SELECT, QUIT, CLIENT, COMMAND, CONFIG, INFO,
 * READONLY, READWRITE, CLUSTER. Replies and errors are those of
 * redis-server 7.0 in cluster mode for the same requests.
 */
#include <fnmatch.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/server_internal.h"
#include "server/slot.h"

typedef void (*command_fn)(client *c, const resp_argument *arguments, uint32_t count);

typedef struct command_spec {
  const char *name;
  int arity; /* Redis's: N exactly, -N at least N (the name included) */
  command_fn run;
  const char *flags; /* for COMMAND, space-separated */
  int first_key, last_key, key_step;
} command_spec;

static void command_ping(client *c, const resp_argument *arguments, uint32_t count);
static void command_echo(client *c, const resp_argument *arguments, uint32_t count);
static void command_hello(client *c, const resp_argument *arguments, uint32_t count);
static void command_select(client *c, const resp_argument *arguments, uint32_t count);
static void command_quit(client *c, const resp_argument *arguments, uint32_t count);
static void command_client(client *c, const resp_argument *arguments, uint32_t count);
static void command_command(client *c, const resp_argument *arguments, uint32_t count);
static void command_config(client *c, const resp_argument *arguments, uint32_t count);
static void command_info(client *c, const resp_argument *arguments, uint32_t count);
static void command_readonly(client *c, const resp_argument *arguments, uint32_t count);
static void command_readwrite(client *c, const resp_argument *arguments, uint32_t count);
static void command_cluster(client *c, const resp_argument *arguments, uint32_t count);

static const command_spec commands[] = {
    {"get", 2, keyspace_get, "readonly fast", 1, 1, 1},
    {"set", -3, keyspace_set, "write denyoom", 1, 1, 1},
    {"del", -2, keyspace_del, "write", 1, -1, 1},
    {"exists", -2, keyspace_exists, "readonly fast", 1, -1, 1},
    {"incr", 2, keyspace_incr, "write denyoom fast", 1, 1, 1},
    {"incrby", 3, keyspace_incrby, "write denyoom fast", 1, 1, 1},
    {"decr", 2, keyspace_decr, "write denyoom fast", 1, 1, 1},
    {"decrby", 3, keyspace_decrby, "write denyoom fast", 1, 1, 1},
    {"append", 3, keyspace_append, "write denyoom fast", 1, 1, 1},
    {"strlen", 2, keyspace_strlen, "readonly fast", 1, 1, 1},
    {"mget", -2, keyspace_mget, "readonly fast", 1, -1, 1},
    {"mset", -3, keyspace_mset, "write denyoom", 1, -1, 2},
    {"ping", -1, command_ping, "fast", 0, 0, 0},
    {"echo", 2, command_echo, "fast", 0, 0, 0},
    {"hello", -1, command_hello, "noscript loading stale fast no_auth", 0, 0, 0},
    {"select", 2, command_select, "loading stale fast", 0, 0, 0},
    {"quit", -1, command_quit, "noscript loading stale fast no_auth", 0, 0, 0},
    {"client", -2, command_client, "", 0, 0, 0},
    {"command", -1, command_command, "loading stale", 0, 0, 0},
    {"config", -2, command_config, "", 0, 0, 0},
    {"dbsize", 1, admin_dbsize, "readonly fast", 0, 0, 0},
    {"info", -1, command_info, "loading stale", 0, 0, 0},
    {"readonly", 1, command_readonly, "loading stale fast", 0, 0, 0},
    {"readwrite", 1, command_readwrite, "loading stale fast", 0, 0, 0},
    {"cluster", -2, command_cluster, "", 0, 0, 0},
    {"flotilla", -2, admin_flotilla, "admin", 0, 0, 0},
};

#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

bool argument_is(const resp_argument *argument, const char *text) {
  size_t length = strlen(text);
  return argument->length == length && strncasecmp(argument->data, text, length) == 0;
}

bool argument_to_int64(const resp_argument *argument, int64_t *value) {
  const char *p = argument->data;
  size_t length = argument->length;
  if (length == 0 || length >= 21) {
    return false;
  }
  if (length == 1 && p[0] == '0') {
    *value = 0;
    return true;
  }
  bool negative = p[0] == '-';
  size_t i = negative ? 1 : 0;
  if (i == length || p[i] < '1' || p[i] > '9') {
    return false;
  }
  uint64_t magnitude = 0;
  for (; i < length; i++) {
    if (p[i] < '0' || p[i] > '9') {
      return false;
    }
    uint64_t digit = (uint64_t)(p[i] - '0');
    if (magnitude > (UINT64_MAX - digit) / 10) {
      return false;
    }
    magnitude = magnitude * 10 + digit;
  }
  if (negative ? magnitude > (uint64_t)INT64_MAX + 1 : magnitude > (uint64_t)INT64_MAX) {
    return false;
  }
  *value = negative ? (int64_t)(0 - magnitude) : (int64_t)magnitude;
  return true;
}

static const command_spec *find_command(const resp_argument *name) {
  for (size_t i = 0; i < COMMAND_COUNT; i++) {
    if (argument_is(name, commands[i].name)) {
      return &commands[i];
    }
  }
  return NULL;
}

void command_dispatch(client *c, const resp_argument *arguments, uint32_t count) {
  atomic_fetch_add_explicit(&c->thread->server->commands_processed, 1, memory_order_relaxed);
  const command_spec *command = find_command(&arguments[0]);
  if (command == NULL) {
    resp_writer *w = client_reply_writer(c);
    if (w != NULL) {
      resp_write_unknown_command_error(w, arguments, count);
    }
    return;
  }
  if ((command->arity > 0 && (uint32_t)command->arity != count) ||
      (command->arity < 0 && count < (uint32_t)-command->arity)) {
    resp_writer *w = client_reply_writer(c);
    if (w != NULL) {
      resp_write_arity_error(w, command->name);
    }
    return;
  }
  command->run(c, arguments, count);
}

/* ---- connection commands ----------------------------------------------- */

static void command_ping(client *c, const resp_argument *arguments, uint32_t count) {
  resp_writer *w = client_reply_writer(c);
  if (w == NULL) {
    return;
  }
  if (count > 2) {
    resp_write_arity_error(w, "ping");
  } else if (count == 2) {
    resp_write_bulk(w, arguments[1].data, arguments[1].length);
  } else {
    resp_write_simple_string(w, "PONG", 4);
  }
}

static void command_echo(client *c, const resp_argument *arguments, uint32_t count) {
  (void)count;
  resp_writer *w = client_reply_writer(c);
  if (w != NULL) {
    resp_write_bulk(w, arguments[1].data, arguments[1].length);
  }
}

static void command_quit(client *c, const resp_argument *arguments, uint32_t count) {
  (void)arguments;
  (void)count;
  resp_writer *w = client_reply_writer(c);
  if (w != NULL) {
    resp_write_ok(w);
  }
  client_close_after_reply(c);
}

static void command_select(client *c, const resp_argument *arguments, uint32_t count) {
  (void)count;
  resp_writer *w = client_reply_writer(c);
  int64_t index = 0;
  if (w == NULL) {
    return;
  }
  if (!argument_to_int64(&arguments[1], &index) || index < INT32_MIN || index > INT32_MAX) {
    resp_write_error(w, RESP_ERROR_NOT_INTEGER);
  } else if (index != 0) {
    resp_write_error(w, "ERR SELECT is not allowed in cluster mode");
  } else {
    resp_write_ok(w);
  }
}

/* Redis's rule for client names: printable ASCII without spaces. */
static bool valid_client_name(const resp_argument *name) {
  if (name->length >= sizeof(((client *)0)->name)) {
    return false;
  }
  for (size_t i = 0; i < name->length; i++) {
    if (name->data[i] < '!' || name->data[i] > '~') {
      return false;
    }
  }
  return true;
}

static void set_client_name(client *c, const resp_argument *name) {
  memcpy(c->name, name->data, name->length);
  c->name[name->length] = '\0';
}

#define CLIENT_NAME_ERROR "ERR Client names cannot contain spaces, newlines or special characters."

static void write_hello_reply(client *c, resp_writer *w) {
  resp_write_map_header(w, 7);
  resp_write_bulk(w, "server", 6);
  resp_write_bulk(w, "flotilla", 8);
  resp_write_bulk(w, "version", 7);
  resp_write_bulk(w, SERVER_VERSION, strlen(SERVER_VERSION));
  resp_write_bulk(w, "proto", 5);
  resp_write_integer(w, c->protocol);
  resp_write_bulk(w, "id", 2);
  resp_write_integer(w, (int64_t)c->id);
  resp_write_bulk(w, "mode", 4);
  resp_write_bulk(w, "cluster", 7);
  resp_write_bulk(w, "role", 4);
  resp_write_bulk(w, "master", 6);
  resp_write_bulk(w, "modules", 7);
  resp_write_array_header(w, 0);
}

/* HELLO [protover [AUTH username password] [SETNAME clientname]]. There is
 * no authentication: AUTH is accepted for the default user only. */
static void command_hello(client *c, const resp_argument *arguments, uint32_t count) {
  resp_writer *w = client_reply_writer(c);
  int64_t version = 0;
  const resp_argument *name = NULL;
  if (w == NULL) {
    return;
  }
  if (count >= 2) {
    if (!argument_to_int64(&arguments[1], &version)) {
      resp_write_error(w, "ERR Protocol version is not an integer or out of range");
      return;
    }
    if (version < 2 || version > 3) {
      resp_write_error(w, RESP_ERROR_NO_PROTOCOL);
      return;
    }
  }
  for (uint32_t j = 2; j < count; j++) {
    uint32_t more = count - 1 - j;
    if (argument_is(&arguments[j], "auth") && more >= 2) {
      if (!argument_is(&arguments[j + 1], "default")) {
        resp_write_error(w, "WRONGPASS invalid username-password pair or user is disabled.");
        return;
      }
      j += 2;
    } else if (argument_is(&arguments[j], "setname") && more >= 1) {
      if (!valid_client_name(&arguments[j + 1])) {
        resp_write_error(w, CLIENT_NAME_ERROR);
        return;
      }
      name = &arguments[++j];
    } else {
      resp_write_error_format(w, "ERR Syntax error in HELLO option '%.*s'",
                              (int)(arguments[j].length > 128 ? 128 : arguments[j].length),
                              arguments[j].data);
      return;
    }
  }
  if (name != NULL) {
    set_client_name(c, name);
  }
  if (version != 0) {
    c->protocol = (uint32_t)version;
    resp_writer_set_protocol(&c->output, (int)version);
    resp_writer_set_protocol(w, (int)version);
  }
  write_hello_reply(c, w);
}

static void write_client_info(client *c, resp_writer *w, bool newline) {
  char line[512];
  uint64_t now = server_now_ms();
  int length =
      snprintf(line, sizeof(line),
               "id=%" PRIu64 " addr=%s laddr= fd=%d name=%s age=%" PRIu64
               " idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=%zu "
               "qbuf-free=%zu argv-mem=0 multi-mem=0 rbs=%zu rbp=0 obl=0 oll=%u "
               "omem=%zu tot-mem=0 events=r cmd=client|info user=default redir=-1 "
               "resp=%u%s",
               c->id, c->address, c->fd, c->name, (now - c->created_ms) / 1000, c->input_length,
               c->input_capacity - c->input_length, c->input_capacity, c->pipeline,
               c->output.length + c->sending.length, c->protocol, newline ? "\n" : "");
  resp_write_bulk(w, line, (size_t)length < sizeof(line) ? (size_t)length : sizeof(line) - 1);
}

static void command_client(client *c, const resp_argument *arguments, uint32_t count) {
  resp_writer *w = client_reply_writer(c);
  if (w == NULL) {
    return;
  }
  const resp_argument *sub = &arguments[1];
  if (argument_is(sub, "id") || argument_is(sub, "getname") || argument_is(sub, "info")) {
    if (count != 2) {
      char name[32];
      snprintf(name, sizeof(name), "client|%.*s", (int)sub->length, sub->data);
      for (char *p = name; *p; p++) {
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
      }
      resp_write_arity_error(w, name);
    } else if (argument_is(sub, "id")) {
      resp_write_integer(w, (int64_t)c->id);
    } else if (argument_is(sub, "info")) {
      write_client_info(c, w, true);
    } else if (c->name[0] == '\0') {
      resp_write_null(w);
    } else {
      resp_write_bulk(w, c->name, strlen(c->name));
    }
  } else if (argument_is(sub, "setname")) {
    if (count != 3) {
      resp_write_arity_error(w, "client|setname");
    } else if (!valid_client_name(&arguments[2])) {
      resp_write_error(w, CLIENT_NAME_ERROR);
    } else {
      set_client_name(c, &arguments[2]);
      resp_write_ok(w);
    }
  } else {
    resp_write_unknown_subcommand_error(w, &arguments[0], sub);
  }
}

/* ---- COMMAND ------------------------------------------------------------- */

static void write_flags(resp_writer *w, const char *flags) {
  size_t words = 0;
  for (const char *p = flags; *p; p++) {
    words += (p == flags || p[-1] == ' ') && *p != ' ';
  }
  resp_write_set_header(w, words);
  for (const char *p = flags; *p;) {
    size_t length = strcspn(p, " ");
    if (length > 0) {
      resp_write_simple_string(w, p, length);
    }
    p += length + (p[length] == ' ');
  }
}

/* Redis 7's COMMAND INFO entry: name, arity, flags, first key, last key,
 * step, ACL categories, tips, key specs, subcommands. */
static void write_command_info(resp_writer *w, const command_spec *command) {
  resp_write_array_header(w, 10);
  resp_write_bulk(w, command->name, strlen(command->name));
  resp_write_integer(w, command->arity);
  write_flags(w, command->flags);
  resp_write_integer(w, command->first_key);
  resp_write_integer(w, command->last_key);
  resp_write_integer(w, command->key_step);
  resp_write_set_header(w, 0);
  resp_write_set_header(w, 0);
  resp_write_array_header(w, 0);
  resp_write_array_header(w, 0);
}

static void command_command(client *c, const resp_argument *arguments, uint32_t count) {
  resp_writer *w = client_reply_writer(c);
  if (w == NULL) {
    return;
  }
  if (count == 1) {
    resp_write_array_header(w, COMMAND_COUNT);
    for (size_t i = 0; i < COMMAND_COUNT; i++) {
      write_command_info(w, &commands[i]);
    }
    return;
  }
  const resp_argument *sub = &arguments[1];
  if (argument_is(sub, "count")) {
    if (count != 2) {
      resp_write_arity_error(w, "command|count");
    } else {
      resp_write_integer(w, COMMAND_COUNT);
    }
  } else if (argument_is(sub, "docs")) {
    resp_write_map_header(w, 0); /* no documentation is served */
  } else if (argument_is(sub, "info")) {
    resp_write_array_header(w, count - 2);
    for (uint32_t i = 2; i < count; i++) {
      const command_spec *command = find_command(&arguments[i]);
      if (command == NULL) {
        resp_write_null_array(w);
      } else {
        write_command_info(w, command);
      }
    }
  } else {
    resp_write_unknown_subcommand_error(w, &arguments[0], sub);
  }
}

/* ---- CONFIG ---------------------------------------------------------------- */

/* The parameters clients (redis-benchmark) ask for, with the values that
 * describe flotillad: every write is durable before it is acknowledged. */
static const struct {
  const char *name;
  const char *value;
} config_parameters[] = {{"save", ""}, {"appendonly", "yes"}};

static void config_get(resp_writer *w, const resp_argument *patterns, uint32_t count) {
  bool matched[sizeof(config_parameters) / sizeof(config_parameters[0])] = {false};
  size_t matches = 0;
  for (uint32_t i = 0; i < count; i++) {
    char pattern[256];
    snprintf(pattern, sizeof(pattern), "%.*s",
             (int)(patterns[i].length < 255 ? patterns[i].length : 255), patterns[i].data);
    for (size_t p = 0; p < sizeof(config_parameters) / sizeof(config_parameters[0]); p++) {
      if (!matched[p] && fnmatch(pattern, config_parameters[p].name, FNM_CASEFOLD) == 0) {
        matched[p] = true;
        matches++;
      }
    }
  }
  resp_write_map_header(w, matches);
  for (size_t p = 0; p < sizeof(config_parameters) / sizeof(config_parameters[0]); p++) {
    if (matched[p]) {
      resp_write_bulk(w, config_parameters[p].name, strlen(config_parameters[p].name));
      resp_write_bulk(w, config_parameters[p].value, strlen(config_parameters[p].value));
    }
  }
}

static void command_config(client *c, const resp_argument *arguments, uint32_t count) {
  resp_writer *w = client_reply_writer(c);
  if (w == NULL) {
    return;
  }
  const resp_argument *sub = &arguments[1];
  if (argument_is(sub, "get")) {
    if (count < 3) {
      resp_write_arity_error(w, "config|get");
    } else {
      config_get(w, arguments + 2, count - 2);
    }
  } else if (argument_is(sub, "resetstat")) {
    resp_write_ok(w);
  } else {
    resp_write_unknown_subcommand_error(w, &arguments[0], sub);
  }
}

/* ---- INFO ----------------------------------------------------------------- */

static void command_info(client *c, const resp_argument *arguments, uint32_t count) {
  resp_writer *w = client_reply_writer(c);
  if (w != NULL) {
    info_write(c, w, count >= 2 ? &arguments[1] : NULL);
  }
}

/* ---- cluster ------------------------------------------------------------ */

static void command_readonly(client *c, const resp_argument *arguments, uint32_t count) {
  (void)arguments;
  (void)count;
  resp_writer *w = client_reply_writer(c);
  c->read_only = true;
  c->cluster_aware = true;
  if (w != NULL) {
    resp_write_ok(w);
  }
}

static void command_readwrite(client *c, const resp_argument *arguments, uint32_t count) {
  (void)arguments;
  (void)count;
  resp_writer *w = client_reply_writer(c);
  c->read_only = false;
  c->cluster_aware = true;
  if (w != NULL) {
    resp_write_ok(w);
  }
}

static bool cluster_map_reply(client *c, resp_writer *w, const resp_argument *sub) {
  cluster_map *map = c->thread->server->map;
  if (argument_is(sub, "slots")) {
    cluster_write_slots(map, w);
  } else if (argument_is(sub, "shards")) {
    cluster_write_shards(map, w);
  } else if (argument_is(sub, "nodes")) {
    cluster_write_nodes(map, w);
  } else if (argument_is(sub, "info")) {
    cluster_write_info(map, w);
    return true;
  } else {
    return false;
  }
  c->cluster_aware = true; /* it knows the map: MOVED from now on */
  return true;
}

static void command_cluster(client *c, const resp_argument *arguments, uint32_t count) {
  resp_writer *w = client_reply_writer(c);
  if (w == NULL) {
    return;
  }
  const resp_argument *sub = &arguments[1];
  bool without_arguments = argument_is(sub, "slots") || argument_is(sub, "shards") ||
                           argument_is(sub, "nodes") || argument_is(sub, "info") ||
                           argument_is(sub, "myid");
  if (without_arguments && count != 2) {
    char name[32];
    snprintf(name, sizeof(name), "cluster|%.*s", (int)sub->length, sub->data);
    for (char *p = name; *p; p++) {
      *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    }
    resp_write_arity_error(w, name);
  } else if (argument_is(sub, "myid")) {
    char name[41];
    cluster_node_name(c->thread->server->config->node_id, name);
    resp_write_bulk(w, name, 40);
  } else if (argument_is(sub, "keyslot")) {
    if (count != 3) {
      resp_write_arity_error(w, "cluster|keyslot");
    } else {
      resp_write_integer(w, slot_for_key(arguments[2].data, arguments[2].length));
    }
  } else if (!cluster_map_reply(c, w, sub)) {
    resp_write_unknown_subcommand_error(w, &arguments[0], sub);
  }
}
