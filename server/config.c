/*
 * config.c - flotillad's configuration: an INI file read with libinih, then
 * command-line flags that override it.
 *
 *   flotillad --config FILE [--name value | --name=value ...]
 *
 * Every option has one name, used as the INI key (in its section) and as
 * the flag. One table describes them all: section, name, type, default,
 * bounds and help; --help prints it. A value is checked when it is read, so
 * the error names the option (and file:line for the INI); checks that
 * involve several options run once everything is read.
 *
 * Sizes are bytes with an optional suffix, as in redis.conf: k = 1000,
 * kb = 1024, m = 1000^2, mb = 1024^2, g = 1000^3, gb = 1024^3 (case
 * insensitive).
 */
#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/server.h"
#include "server/server_internal.h"

/* The built-in store's largest value (engine/kv.h KV_MAX_VALUE_BYTES). */
#define CONFIG_MAX_VALUE_BYTES (2u * 1024u * 1024u)
#define CONFIG_MAX_IO_THREADS 64u
#define CONFIG_MAX_SHARDS 256u
/* Longest line of an INI file (a `nodes` line of 64 nodes fits). */
#define CONFIG_MAX_LINE_BYTES 16384

typedef enum option_type {
  OPTION_UINT,   /* decimal integer in [minimum, maximum] */
  OPTION_SIZE,   /* bytes, with a k/kb/m/mb/g/gb suffix */
  OPTION_BOOL,   /* yes/no */
  OPTION_TEXT,   /* a string of at most `maximum` bytes */
  OPTION_CHOICE, /* one of `choices`, stored as its index */
  OPTION_NODES,  /* ID@HOST:CLIENTPORT:PEERPORT,... */
} option_type;

typedef struct option {
  const char *section;
  const char *name;
  option_type type;
  size_t offset;  /* into server_config */
  uint32_t width; /* bytes of the field (integers) */
  uint64_t minimum;
  uint64_t maximum;
  const char *default_value; /* NULL: required or derived */
  const char *const *choices;
  const char *help;
} option;

static const char *const redirect_choices[] = {"auto", "forward", "moved", NULL};
static const char *const fsync_choices[] = {"data", "direct", NULL};
static const char *const level_choices[] = {"debug", "info", "warning", "error", NULL};

#define FIELD(field) offsetof(server_config, field), sizeof(((server_config *)0)->field)

static const option options[] = {
    {"server", "node-id", OPTION_UINT, FIELD(node_id), 1, UINT64_MAX, NULL, NULL,
     "this node's id, one of the ids in `nodes`"},
    {"server", "cluster-id", OPTION_UINT, FIELD(cluster_id), 1, UINT64_MAX, "1", NULL,
     "the same on every node of a cluster"},
    {"server", "data-dir", OPTION_TEXT, FIELD(data_dir), 1, PATH_MAX - 1, NULL, NULL,
     "directory of the WALs and snapshots"},
    {"server", "bind", OPTION_TEXT, FIELD(bind), 1, 63, NULL, NULL,
     "address the client and peer ports listen on (default: this node's host in `nodes`)"},
    {"server", "io-threads", OPTION_UINT, FIELD(io_threads), 1, CONFIG_MAX_IO_THREADS, "1", NULL,
     "threads serving clients"},
    {"server", "redirect", OPTION_CHOICE, FIELD(redirect), 0, 0, "auto", redirect_choices,
     "keys led elsewhere: forward, answer MOVED, or auto (MOVED once a client asked for the "
     "cluster map)"},
    {"cluster", "nodes", OPTION_NODES, FIELD(nodes), 0, 0, NULL, NULL,
     "every node: ID@HOST:CLIENTPORT:PEERPORT, comma-separated"},
    {"cluster", "groups", OPTION_UINT, FIELD(groups), 1, 16384, "64", NULL,
     "data groups sharing the 16384 slots"},
    {"cluster", "replicas", OPTION_UINT, FIELD(replicas), 1, SERVER_MAX_REPLICAS, "3", NULL,
     "replicas of each group (at most the number of nodes)"},
    {"engine", "shards", OPTION_UINT, FIELD(shards), 0, CONFIG_MAX_SHARDS, "0", NULL,
     "engine shard threads, 0 = one per core; the same on every node"},
    {"engine", "tick-ms", OPTION_UINT, FIELD(tick_ms), 1, 10000, "10", NULL, "Raft's clock tick"},
    {"engine", "election-ticks", OPTION_UINT, FIELD(election_ticks), 2, 1000000, "100", NULL,
     "election timeout in ticks"},
    {"engine", "heartbeat-ticks", OPTION_UINT, FIELD(heartbeat_ticks), 1, 1000000, "10", NULL,
     "heartbeat interval in ticks (below election-ticks)"},
    {"engine", "lease-read", OPTION_BOOL, FIELD(lease_read), 0, 1, "no", NULL,
     "linearizable reads from the leader's lease, without a round trip"},
    {"engine", "fsync", OPTION_CHOICE, FIELD(fsync_mode), 0, 0, "data", fsync_choices,
     "WAL writes: data (buffered + fdatasync) or direct (O_DIRECT + fdatasync)"},
    {"engine", "snapshot-entries", OPTION_UINT, FIELD(snapshot_entries), 1, UINT32_MAX, "100000",
     NULL, "compact a group's log after this many applied entries"},
    {"limits", "max-clients", OPTION_UINT, FIELD(max_clients), 1, 1000000, "10000", NULL,
     "connected clients at most"},
    {"limits", "max-value-bytes", OPTION_SIZE, FIELD(max_value_bytes), 1, CONFIG_MAX_VALUE_BYTES,
     "2097152", NULL, "largest value a key may hold"},
    {"limits", "max-arguments", OPTION_UINT, FIELD(max_arguments), 1, RESP_MAX_ARGUMENTS_CEILING,
     "1048576", NULL, "arguments of one request"},
    {"limits", "max-inline-bytes", OPTION_SIZE, FIELD(max_inline_bytes), RESP_MIN_INLINE_BYTES,
     RESP_MAX_INLINE_BYTES_CEILING, "65536", NULL, "longest inline request or header line"},
    {"limits", "max-bulk-bytes", OPTION_SIZE, FIELD(max_bulk_bytes), 1, RESP_MAX_BULK_BYTES_CEILING,
     NULL, NULL,
     "largest bulk argument (default: twice max-value-bytes; at least max-value-bytes)"},
    {"limits", "client-output-limit", OPTION_SIZE, FIELD(client_output_limit), 1024, UINT64_MAX,
     "64mb", NULL, "unsent reply bytes after which a client is disconnected"},
    {"log", "log-level", OPTION_CHOICE, FIELD(log_level), 0, 0, "info", level_choices,
     "debug, info, warning or error"},
    {"log", "log-file", OPTION_TEXT, FIELD(log_file), 0, PATH_MAX - 1, "", NULL,
     "file to append the log to (default: standard error)"},
};

#define OPTION_COUNT (sizeof(options) / sizeof(options[0]))

/* ---- values ------------------------------------------------------------ */

static const option *find_option(const char *name) {
  for (size_t i = 0; i < OPTION_COUNT; i++) {
    if (strcmp(options[i].name, name) == 0) {
      return &options[i];
    }
  }
  return NULL;
}

static bool parse_unsigned(const char *text, uint64_t *value) {
  if (text[0] < '0' || text[0] > '9') {
    return false;
  }
  errno = 0;
  char *end = NULL;
  unsigned long long parsed = strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0') {
    return false;
  }
  *value = parsed;
  return true;
}

static bool parse_size(const char *text, uint64_t *value) {
  static const struct {
    const char *suffix;
    uint64_t multiplier;
  } units[] = {{"kb", 1024ull},
               {"k", 1000ull},
               {"mb", 1024ull * 1024},
               {"m", 1000ull * 1000},
               {"gb", 1024ull << 20},
               {"g", 1000ull * 1000 * 1000},
               {"b", 1}};
  size_t length = strlen(text);
  size_t digits = 0;
  while (digits < length && text[digits] >= '0' && text[digits] <= '9') {
    digits++;
  }
  if (digits == 0 || digits > 19) {
    return false;
  }
  char number[20];
  memcpy(number, text, digits);
  number[digits] = '\0';
  uint64_t base = strtoull(number, NULL, 10);
  uint64_t multiplier = 1;
  if (digits < length) {
    multiplier = 0;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
      if (strcasecmp(text + digits, units[i].suffix) == 0) {
        multiplier = units[i].multiplier;
        break;
      }
    }
    if (multiplier == 0 || base > UINT64_MAX / multiplier) {
      return false;
    }
  }
  *value = base * multiplier;
  return true;
}

static void store_integer(server_config *config, const option *o, uint64_t value) {
  char *field = (char *)config + o->offset;
  switch (o->width) {
  case 1:
    *(bool *)field = value != 0;
    break;
  case 4:
    *(uint32_t *)field = (uint32_t)value;
    break;
  case 8:
    *(uint64_t *)field = value;
    break;
  default:
    abort(); /* the table names only these widths */
  }
}

static int fail(char *error, size_t error_bytes, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *error, size_t error_bytes, const char *format, ...) {
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(error, error_bytes, format, arguments);
  va_end(arguments);
  return -1;
}

/* One node: ID@HOST:CLIENTPORT:PEERPORT. */
static bool parse_node(char *text, server_node *node, const char **why) {
  char *at = strchr(text, '@');
  char *peer = strrchr(text, ':');
  char *client = NULL;
  if (at == NULL || peer == NULL || peer < at) {
    *why = "expected ID@HOST:CLIENTPORT:PEERPORT";
    return false;
  }
  *at = '\0';
  *peer = '\0';
  client = strrchr(at + 1, ':');
  if (client == NULL) {
    *why = "expected ID@HOST:CLIENTPORT:PEERPORT";
    return false;
  }
  *client = '\0';
  uint64_t id = 0, client_port = 0, peer_port = 0;
  const char *host = at + 1;
  if (!parse_unsigned(text, &id) || id == 0) {
    *why = "the node id must be an integer above 0";
    return false;
  }
  if (host[0] == '\0' || strlen(host) >= sizeof(node->host)) {
    *why = "the host must have 1 to 63 characters";
    return false;
  }
  if (!parse_unsigned(client + 1, &client_port) || client_port == 0 || client_port > 65535 ||
      !parse_unsigned(peer + 1, &peer_port) || peer_port == 0 || peer_port > 65535) {
    *why = "ports must be integers from 1 to 65535";
    return false;
  }
  node->id = id;
  snprintf(node->host, sizeof(node->host), "%s", host);
  node->client_port = (uint16_t)client_port;
  node->peer_port = (uint16_t)peer_port;
  return true;
}

static char *trim(char *text) {
  while (*text == ' ' || *text == '\t') {
    text++;
  }
  size_t length = strlen(text);
  while (length > 0 && (text[length - 1] == ' ' || text[length - 1] == '\t')) {
    text[--length] = '\0';
  }
  return text;
}

static bool nodes_conflict(const server_node *a, const server_node *b, const char **why) {
  if (a->id == b->id) {
    *why = "node ids must be unique";
    return true;
  }
  if (strcmp(a->host, b->host) == 0 &&
      (a->client_port == b->client_port || a->client_port == b->peer_port ||
       a->peer_port == b->client_port || a->peer_port == b->peer_port)) {
    *why = "two nodes on one host share a port";
    return true;
  }
  return false;
}

static bool parse_nodes(const char *value, server_config *config, char *reason, size_t bytes) {
  char copy[CONFIG_MAX_LINE_BYTES];
  if (strlen(value) >= sizeof(copy)) {
    snprintf(reason, bytes, "the list is too long");
    return false;
  }
  snprintf(copy, sizeof(copy), "%s", value);
  uint32_t count = 0;
  char *save = NULL;
  for (char *item = strtok_r(copy, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
    char *node_text = trim(item);
    const char *why = NULL;
    if (count == SERVER_MAX_NODES) {
      snprintf(reason, bytes, "more than %d nodes", SERVER_MAX_NODES);
      return false;
    }
    char original[128];
    snprintf(original, sizeof(original), "%s", node_text);
    server_node node;
    if (!parse_node(node_text, &node, &why)) {
      snprintf(reason, bytes, "'%s': %s", original, why);
      return false;
    }
    if (node.client_port == node.peer_port) {
      snprintf(reason, bytes, "'%s': the client and peer ports must differ", original);
      return false;
    }
    for (uint32_t i = 0; i < count; i++) {
      if (nodes_conflict(&config->nodes[i], &node, &why)) {
        snprintf(reason, bytes, "'%s': %s", original, why);
        return false;
      }
    }
    config->nodes[count++] = node;
  }
  if (count == 0) {
    snprintf(reason, bytes, "no node given");
    return false;
  }
  config->node_count = count;
  return true;
}

static bool parse_choice(const option *o, const char *value, uint64_t *index) {
  for (uint64_t i = 0; o->choices[i] != NULL; i++) {
    if (strcasecmp(o->choices[i], value) == 0) {
      *index = i;
      return true;
    }
  }
  return false;
}

static void describe_choices(const option *o, char *out, size_t bytes) {
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; o->choices[i] != NULL && used < bytes; i++) {
    used += (size_t)snprintf(out + used, bytes - used, "%s%s", i == 0 ? "" : "|", o->choices[i]);
  }
}

/* Sets one option from text; false with `reason` saying what is wrong. */
static bool set_option(server_config *config, const option *o, const char *value, char *reason,
                       size_t bytes) {
  uint64_t number = 0;
  switch (o->type) {
  case OPTION_UINT:
  case OPTION_SIZE: {
    bool ok = o->type == OPTION_UINT ? parse_unsigned(value, &number) : parse_size(value, &number);
    if (!ok || number < o->minimum || number > o->maximum) {
      snprintf(reason, bytes, "'%s' is not %s from %" PRIu64 " to %" PRIu64, value,
               o->type == OPTION_UINT ? "an integer" : "a size", o->minimum, o->maximum);
      return false;
    }
    store_integer(config, o, number);
    return true;
  }
  case OPTION_BOOL:
    if (strcasecmp(value, "yes") == 0 || strcasecmp(value, "no") == 0) {
      store_integer(config, o, strcasecmp(value, "yes") == 0);
      return true;
    }
    snprintf(reason, bytes, "'%s' is neither yes nor no", value);
    return false;
  case OPTION_TEXT:
    if (strlen(value) < o->minimum || strlen(value) > o->maximum) {
      snprintf(reason, bytes, "must have %" PRIu64 " to %" PRIu64 " characters", o->minimum,
               o->maximum);
      return false;
    }
    snprintf((char *)config + o->offset, o->maximum + 1, "%s", value);
    return true;
  case OPTION_CHOICE:
    if (!parse_choice(o, value, &number)) {
      char choices[128];
      describe_choices(o, choices, sizeof(choices));
      snprintf(reason, bytes, "'%s' is not one of %s", value, choices);
      return false;
    }
    *(int *)((char *)config + o->offset) = (int)number;
    return true;
  case OPTION_NODES:
    return parse_nodes(value, config, reason, bytes);
  }
  return false;
}

/* ---- the INI file ------------------------------------------------------ */

typedef struct ini_context {
  server_config *config;
  bool *given;
  char reason[512];
} ini_context;

static int on_ini_value(void *user, const char *section, const char *name, const char *value) {
  ini_context *context = user;
  const option *o = find_option(name);
  if (o == NULL || strcmp(o->section, section) != 0) {
    snprintf(context->reason, sizeof(context->reason), "unknown option '%s' in section [%s]", name,
             section);
    return 0;
  }
  if (value == NULL) {
    snprintf(context->reason, sizeof(context->reason), "%s: no value", name);
    return 0;
  }
  char reason[400];
  if (!set_option(context->config, o, value, reason, sizeof(reason))) {
    snprintf(context->reason, sizeof(context->reason), "%s: %s", name, reason);
    return 0;
  }
  context->given[o - options] = true;
  return 1;
}

static int load_file(const char *path, server_config *config, bool *given, char *error,
                     size_t error_bytes) {
  /* Heap line buffer that may grow: a long `nodes` line is one line. */
  ini_use_stack = false;
  ini_allow_realloc = true;
  ini_max_line = CONFIG_MAX_LINE_BYTES;
  ini_allow_multiline = false;
  ini_stop_on_first_error = true;
  ini_context context = {.config = config, .given = given};
  FILE *file = fopen(path, "r");
  if (file == NULL) {
    return fail(error, error_bytes, "config: cannot open %s: %s", path, strerror(errno));
  }
  int line = ini_parse_file(file, on_ini_value, &context);
  fclose(file);
  if (line == 0) {
    return 0;
  }
  if (line < 0) {
    return fail(error, error_bytes, "config: cannot read %s", path);
  }
  if (context.reason[0] == '\0') {
    snprintf(context.reason, sizeof(context.reason), "not a section, key = value or comment");
  }
  return fail(error, error_bytes, "%s:%d: %s", path, line, context.reason);
}

/* ---- flags ------------------------------------------------------------- */

/* Splits argv[*index] into a name and a value ("--name value" or
 * "--name=value"); advances *index past what was used. */
static int next_flag(int argc, char **argv, int *index, char *name, size_t name_bytes,
                     const char **value, char *error, size_t error_bytes) {
  const char *argument = argv[*index];
  if (strncmp(argument, "--", 2) != 0 || argument[2] == '\0') {
    return fail(error, error_bytes, "unexpected argument '%s' (options start with --)", argument);
  }
  const char *equals = strchr(argument, '=');
  size_t length = equals != NULL ? (size_t)(equals - argument - 2) : strlen(argument + 2);
  if (length >= name_bytes) {
    return fail(error, error_bytes, "unknown option '%s'", argument);
  }
  memcpy(name, argument + 2, length);
  name[length] = '\0';
  if (equals != NULL) {
    *value = equals + 1;
  } else if (*index + 1 < argc) {
    *value = argv[++*index];
  } else {
    return fail(error, error_bytes, "--%s: no value", name);
  }
  ++*index;
  return 0;
}

static bool has_flag(int argc, char **argv, const char *flag) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], flag) == 0) {
      return true;
    }
  }
  return false;
}

static int apply_flags(int argc, char **argv, server_config *config, bool *given, char *error,
                       size_t error_bytes) {
  int index = 1;
  while (index < argc) {
    char name[64];
    const char *value = NULL;
    if (next_flag(argc, argv, &index, name, sizeof(name), &value, error, error_bytes) != 0) {
      return -1;
    }
    if (strcmp(name, "config") == 0) {
      continue; /* read first */
    }
    const option *o = find_option(name);
    if (o == NULL) {
      return fail(error, error_bytes, "unknown option '--%s'", name);
    }
    char reason[400];
    if (!set_option(config, o, value, reason, sizeof(reason))) {
      return fail(error, error_bytes, "--%s: %s", name, reason);
    }
    given[o - options] = true;
  }
  return 0;
}

static const char *find_config_path(int argc, char **argv) {
  const char *path = NULL;
  for (int i = 1; i < argc; i++) {
    if (strncmp(argv[i], "--config=", 9) == 0) {
      path = argv[i] + 9;
    } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      path = argv[++i];
    }
  }
  return path;
}

/* ---- checks across options --------------------------------------------- */

static int check_config(server_config *config, const bool *given, char *error, size_t error_bytes) {
  for (size_t i = 0; i < OPTION_COUNT; i++) {
    bool required = options[i].default_value == NULL && strcmp(options[i].name, "bind") != 0 &&
                    strcmp(options[i].name, "max-bulk-bytes") != 0;
    if (required && !given[i]) {
      return fail(error, error_bytes, "%s: required (section [%s])", options[i].name,
                  options[i].section);
    }
  }
  const server_node *self = server_config_node(config, config->node_id);
  if (self == NULL) {
    return fail(error, error_bytes, "node-id: %" PRIu64 " is not in nodes", config->node_id);
  }
  if (config->replicas > config->node_count) {
    return fail(error, error_bytes, "replicas: %u is more than the %u nodes", config->replicas,
                config->node_count);
  }
  if (config->heartbeat_ticks >= config->election_ticks) {
    return fail(error, error_bytes, "heartbeat-ticks: must be below election-ticks (%u)",
                config->election_ticks);
  }
  if (config->shards > 0) {
    for (uint32_t i = 0; i < config->node_count; i++) {
      if ((uint32_t)config->nodes[i].peer_port + config->shards > 65536u) {
        return fail(error, error_bytes, "nodes: peer port %u + %u shards passes 65535",
                    config->nodes[i].peer_port, config->shards);
      }
    }
  }
  if (!given[find_option("bind") - options]) {
    snprintf(config->bind, sizeof(config->bind), "%s", self->host);
  }
  if (!given[find_option("max-bulk-bytes") - options]) {
    uint64_t bulk = config->max_value_bytes * 2;
    config->max_bulk_bytes =
        bulk > RESP_MAX_BULK_BYTES_CEILING ? RESP_MAX_BULK_BYTES_CEILING : bulk;
  } else if (config->max_bulk_bytes < config->max_value_bytes) {
    return fail(error, error_bytes, "max-bulk-bytes: below max-value-bytes (%" PRIu64 ")",
                config->max_value_bytes);
  }
  return 0;
}

static void set_defaults(server_config *config) {
  memset(config, 0, sizeof(*config));
  for (size_t i = 0; i < OPTION_COUNT; i++) {
    char reason[256];
    if (options[i].default_value != NULL &&
        !set_option(config, &options[i], options[i].default_value, reason, sizeof(reason))) {
      abort(); /* a default outside its own bounds: the table is wrong */
    }
  }
}

int server_config_load(int argc, char **argv, server_config *config, char *error,
                       size_t error_bytes) {
  if (has_flag(argc, argv, "--help") || has_flag(argc, argv, "-h")) {
    server_config_usage(stdout);
    return 1;
  }
  if (has_flag(argc, argv, "--version")) {
    printf("flotillad %s\n", SERVER_VERSION);
    return 1;
  }
  set_defaults(config);
  bool given[OPTION_COUNT] = {false};
  const char *path = find_config_path(argc, argv);
  if (path != NULL && load_file(path, config, given, error, error_bytes) != 0) {
    return -1;
  }
  if (apply_flags(argc, argv, config, given, error, error_bytes) != 0) {
    return -1;
  }
  return check_config(config, given, error, error_bytes);
}

void server_config_usage(FILE *out) {
  fprintf(out, "usage: flotillad --config FILE [--option value | --option=value ...]\n"
               "       flotillad --help | --version\n\n"
               "Every option is an INI key in its [section] and a flag; flags override the\n"
               "file. Sizes take k (1000), kb (1024), m, mb, g, gb suffixes.\n");
  const char *section = "";
  for (size_t i = 0; i < OPTION_COUNT; i++) {
    const option *o = &options[i];
    if (strcmp(section, o->section) != 0) {
      section = o->section;
      fprintf(out, "\n[%s]\n", section);
    }
    char default_text[160];
    if (o->default_value == NULL) {
      snprintf(default_text, sizeof(default_text), "%s",
               strcmp(o->name, "bind") == 0 || strcmp(o->name, "max-bulk-bytes") == 0 ? "derived"
                                                                                      : "required");
    } else if (o->type == OPTION_CHOICE) {
      char choices[128];
      describe_choices(o, choices, sizeof(choices));
      snprintf(default_text, sizeof(default_text), "default %s; %s", o->default_value, choices);
    } else {
      snprintf(default_text, sizeof(default_text), "default %s",
               o->default_value[0] != '\0' ? o->default_value : "\"\"");
    }
    fprintf(out, "  --%-20s %s (%s)\n", o->name, o->help, default_text);
  }
}

const server_node *server_config_node(const server_config *config, uint64_t id) {
  for (uint32_t i = 0; i < config->node_count; i++) {
    if (config->nodes[i].id == id) {
      return &config->nodes[i];
    }
  }
  return NULL;
}
