/*
 * admin.c - FLOTILLA admin commands, DBSIZE and INFO: the commands that
 * look at the engine's groups and shards rather than at keys. The status
 * and statistics calls of the engine block for one round trip to a shard;
 * these commands are rare, so the io thread waits for them.
 *
 * FLOTILLA FORWARDED
 *     +OK. Marks the connection as another node's forwarder: its commands
 *     are never forwarded again; a key led elsewhere gets MOVED or TRYAGAIN,
 *     so a stale cluster map cannot make requests loop between nodes.
 *
 * FLOTILLA TRANSFER <group> <node-id>
 *     Asks the leader of <group> to hand leadership to <node-id> (a voter
 *     of the group). Sent to any node: forwarded to the group's leader.
 *     +OK once the transfer started (watch FLOTILLA STATUS or CLUSTER
 *     SHARDS for the result); TRYAGAIN when the group has no leader.
 *
 * FLOTILLA REBALANCE
 *     Spreads leaderships evenly. The target leader of group g is the
 *     member at position (g - 1) mod R of its members sorted by node id;
 *     every node transfers the groups it leads whose target is another
 *     node. The receiving node runs it and sends it to every other node;
 *     the reply is the number of transfers started on all nodes (nodes
 *     that could not be reached count 0).
 *
 * FLOTILLA GROUPS
 *     One entry per group: [group, "first-last" slot range, leader node id
 *     (0 when unknown), [member node ids]], from this node's cluster map.
 *
 * FLOTILLA STATUS <group>
 *     This node's replica of <group>: a map of group, role, term, leader,
 *     commit, applied, first-index, last-index, voters, learners, keys,
 *     kv-bytes. An error when this node holds no replica of it.
 *
 * FLOTILLA ADD-REPLICA <group> <node> | REMOVE-REPLICA <group> <node> |
 * MOVE-REPLICA <group> <from> <to> | ADD-NODE <node> | REMOVE-NODE <node>
 *     Membership changes, run by this node's meta thread (meta.c), one at a
 *     time per node; +OK once done and recorded in the meta group, or an
 *     error naming the step that failed. <group> is a data group or "meta".
 *
 * FLOTILLA NODES
 *     [node id, "active" | "removed", replicas held] per configured node.
 *
 * Internal subcommands, sent by the meta threads of the nodes (meta.c);
 * each acts on this node only and is never forwarded. JOIN, DROP, CHANGE
 * and META-SET are refused unless the connection began with FLOTILLA
 * FORWARDED, as the nodes' own connections do:
 *   JOIN <group>                  an empty replica (fl_group_join)
 *   DROP <group>                  removes this node's replica
 *   CHANGE <group> ADD-LEARNER|ADD-VOTER|REMOVE <node>   on the leader
 *   PROGRESS <group>              "<role> <leader> <commit> <applied>
 *                                 <voters|-> <learners|->" of this replica
 *   META-SET <key> <value>        writes a map entry (on the meta leader)
 *   MAP                           the map as this node's meta replica holds it
 *   LEADERS                       the groups this node leads, "g g ..."
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/server_internal.h"

static server *server_of_client(const client *c) {
  return c->thread->server;
}

static bool parse_id(const resp_argument *argument, uint64_t *value) {
  int64_t parsed = 0;
  if (!argument_to_int64(argument, &parsed) || parsed <= 0) {
    return false;
  }
  *value = (uint64_t)parsed;
  return true;
}

/* A data group 1..G, or the meta group ("meta" or its id). */
static bool parse_group(const server *s, const resp_argument *argument, uint64_t *group) {
  if (argument_is(argument, "meta")) {
    *group = SERVER_META_GROUP;
    return true;
  }
  return parse_id(argument, group) &&
         (*group <= cluster_group_count(s->map) || *group == SERVER_META_GROUP);
}

static bool parse_node(const server *s, const resp_argument *argument, uint64_t *node) {
  return parse_id(argument, node) && server_config_node(s->config, *node) != NULL;
}

/* ---- forwarding an admin command ---------------------------------------- */

static void on_admin_forwarded(void *context, int status, const char *reply, size_t length) {
  request *r = context;
  if (status != 0) {
    resp_write_error(&r->reply, "ERR the leader could not be reached");
  } else {
    write_forwarded_reply(&r->reply, reply, length);
  }
  request_finish(r);
}

static void forward_admin(client *c, uint64_t node, const resp_argument *arguments,
                          uint32_t count) {
  request *r = request_create(c);
  if (r == NULL) {
    return;
  }
  if (forward_send(c->thread->forwarder, node, arguments, count, on_admin_forwarded, r) != 0) {
    resp_write_error(&r->reply, "ERR the leader could not be reached");
    request_finish(r);
  }
}

/* ---- TRANSFER -------------------------------------------------------------- */

static void admin_transfer(client *c, resp_writer *w, const resp_argument *arguments,
                           uint32_t count) {
  server *s = server_of_client(c);
  uint64_t group = 0, node = 0;
  if (count != 4) {
    resp_write_arity_error(w, "flotilla|transfer");
    return;
  }
  if (!parse_group(s, &arguments[2], &group) || !parse_node(s, &arguments[3], &node)) {
    resp_write_error(w, "ERR expected FLOTILLA TRANSFER <group> <node-id> of this cluster");
    return;
  }
  uint64_t leader = cluster_leader(s->map, group);
  if (leader == s->config->node_id) {
    int rc = fl_group_transfer_leader(s->engine, group, node);
    if (rc != 0) {
      resp_write_error_format(w, "ERR transfer of group %" PRIu64 ": %s", group, fl_strerror(rc));
    } else {
      server_log(1, "transferring the leadership of group %" PRIu64 " to node %" PRIu64, group,
                 node);
      resp_write_ok(w);
    }
  } else if (leader == 0 || c->forwarder) {
    resp_write_error(w, "TRYAGAIN The group has no leader here right now, retry later");
  } else {
    /* `w` is not used: the forwarded request answers in its place. */
    forward_admin(c, leader, arguments, count);
  }
}

/* ---- REBALANCE ------------------------------------------------------------ */

static int compare_ids(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Transfers this node's leaderships that belong elsewhere; returns how many. */
static int64_t rebalance_here(server *s) {
  int64_t started = 0;
  for (uint64_t group = 1; group <= cluster_group_count(s->map); group++) {
    if (cluster_leader(s->map, group) != s->config->node_id) {
      continue;
    }
    uint64_t members[SERVER_MAX_REPLICAS];
    uint32_t count = cluster_members(s->map, group, members);
    if (count == 0) {
      continue;
    }
    qsort(members, count, sizeof(members[0]), compare_ids);
    uint64_t target = members[(group - 1) % count];
    if (target != s->config->node_id && fl_group_transfer_leader(s->engine, group, target) == 0) {
      started++;
    }
  }
  if (started > 0) {
    server_log(1, "rebalance: %" PRId64 " leadership transfers started", started);
  }
  return started;
}

static void on_rebalance_reply(void *context, int status, const char *reply, size_t length) {
  request *r = context;
  if (status == 0 && length > 1 && reply[0] == ':') {
    atomic_fetch_add(&r->total, strtoll(reply + 1, NULL, 10));
  }
  if (atomic_fetch_sub(&r->parts_pending, 1) == 1) {
    resp_write_integer(&r->reply, atomic_load(&r->total));
    request_finish(r);
  }
}

static void admin_rebalance(client *c, resp_writer *w, const resp_argument *arguments,
                            uint32_t count) {
  server *s = server_of_client(c);
  bool local_only = count == 3 && argument_is(&arguments[2], "local");
  if (count != 2 && !local_only) {
    resp_write_error(w, RESP_ERROR_SYNTAX);
    return;
  }
  int64_t here = rebalance_here(s);
  if (local_only || s->config->node_count == 1) {
    resp_write_integer(w, here);
    return;
  }
  request *r = request_create(c);
  if (r == NULL) {
    return;
  }
  atomic_store(&r->total, here);
  atomic_store(&r->parts_pending, s->config->node_count); /* the others + this call */
  static const resp_argument local[] = {{"FLOTILLA", 8}, {"REBALANCE", 9}, {"LOCAL", 5}};
  for (uint32_t i = 0; i < s->config->node_count; i++) {
    uint64_t node = s->config->nodes[i].id;
    if (node != s->config->node_id &&
        forward_send(c->thread->forwarder, node, local, 3, on_rebalance_reply, r) != 0) {
      on_rebalance_reply(r, -EIO, NULL, 0);
    }
  }
  on_rebalance_reply(r, -EALREADY, NULL, 0); /* this node's own share is counted */
}

/* ---- GROUPS and STATUS --------------------------------------------------------- */

static void admin_groups(client *c, resp_writer *w) {
  cluster_map *map = server_of_client(c)->map;
  uint32_t groups = cluster_group_count(map);
  resp_write_array_header(w, groups);
  for (uint64_t group = 1; group <= groups; group++) {
    uint32_t first = 0, last = 0;
    cluster_group_slots(map, group, &first, &last);
    char range[32];
    int length = snprintf(range, sizeof(range), "%u-%u", first, last);
    uint64_t members[SERVER_MAX_REPLICAS];
    uint32_t count = cluster_members(map, group, members);
    resp_write_array_header(w, 4);
    resp_write_integer(w, (int64_t)group);
    resp_write_bulk(w, range, (size_t)length);
    resp_write_integer(w, (int64_t)cluster_leader(map, group));
    resp_write_array_header(w, count);
    for (uint32_t i = 0; i < count; i++) {
      resp_write_integer(w, (int64_t)members[i]);
    }
  }
}

static const char *role_name(fl_role role) {
  static const char *const names[] = {"follower", "pre-candidate", "candidate", "leader"};
  return role <= FL_LEADER ? names[role] : "unknown";
}

static void write_pair(resp_writer *w, const char *name, int64_t value) {
  resp_write_bulk(w, name, strlen(name));
  resp_write_integer(w, value);
}

static void admin_status(client *c, resp_writer *w, const resp_argument *arguments,
                         uint32_t count) {
  uint64_t group = 0;
  fl_group_status status;
  if (count != 3) {
    resp_write_arity_error(w, "flotilla|status");
    return;
  }
  if (!parse_id(&arguments[2], &group)) {
    resp_write_error(w, RESP_ERROR_NOT_INTEGER);
    return;
  }
  int rc = fl_group_status_get(server_of_client(c)->engine, group, &status);
  if (rc != 0) {
    resp_write_error_format(w, "ERR group %" PRIu64 ": %s", group,
                            rc == FL_E_NO_GROUP ? "no replica on this node" : fl_strerror(rc));
    return;
  }
  resp_write_map_header(w, 12);
  write_pair(w, "group", (int64_t)status.group);
  resp_write_bulk(w, "role", 4);
  resp_write_bulk(w, role_name(status.role), strlen(role_name(status.role)));
  write_pair(w, "term", (int64_t)status.term);
  write_pair(w, "leader", (int64_t)status.leader);
  write_pair(w, "commit", (int64_t)status.commit);
  write_pair(w, "applied", (int64_t)status.applied);
  write_pair(w, "first-index", (int64_t)status.first_index);
  write_pair(w, "last-index", (int64_t)status.last_index);
  resp_write_bulk(w, "voters", 6);
  resp_write_array_header(w, status.voter_count);
  for (uint32_t i = 0; i < status.voter_count; i++) {
    resp_write_integer(w, (int64_t)status.voters[i]);
  }
  resp_write_bulk(w, "learners", 8);
  resp_write_array_header(w, status.learner_count);
  for (uint32_t i = 0; i < status.learner_count; i++) {
    resp_write_integer(w, (int64_t)status.learners[i]);
  }
  write_pair(w, "keys", (int64_t)status.keys);
  write_pair(w, "kv-bytes", (int64_t)status.kv_bytes);
}

/* ---- membership operations (run by meta.c) ------------------------------------ */

typedef struct operation_syntax {
  const char *name;
  meta_operation_kind kind;
  uint32_t arguments; /* after the subcommand */
  const char *usage;
} operation_syntax;

static const operation_syntax operation_syntaxes[] = {
    {"add-replica", META_ADD_REPLICA, 2, "FLOTILLA ADD-REPLICA <group> <node-id>"},
    {"remove-replica", META_REMOVE_REPLICA, 2, "FLOTILLA REMOVE-REPLICA <group> <node-id>"},
    {"move-replica", META_MOVE_REPLICA, 3, "FLOTILLA MOVE-REPLICA <group> <from-node> <to-node>"},
    {"add-node", META_ADD_NODE, 1, "FLOTILLA ADD-NODE <node-id>"},
    {"remove-node", META_REMOVE_NODE, 1, "FLOTILLA REMOVE-NODE <node-id>"},
};

static const operation_syntax *operation_syntax_of(const resp_argument *sub) {
  for (size_t i = 0; i < sizeof(operation_syntaxes) / sizeof(operation_syntaxes[0]); i++) {
    if (argument_is(sub, operation_syntaxes[i].name)) {
      return &operation_syntaxes[i];
    }
  }
  return NULL;
}

/* Fills `op` from the arguments; false if they do not name this cluster's
 * groups and nodes. */
static bool parse_operation(const server *s, const operation_syntax *syntax,
                            const resp_argument *arguments, uint32_t count, meta_operation *op) {
  if (count != 2 + syntax->arguments) {
    return false;
  }
  *op = (meta_operation){.kind = syntax->kind};
  if (syntax->arguments == 1) {
    return parse_node(s, &arguments[2], &op->node);
  }
  if (!parse_group(s, &arguments[2], &op->group)) {
    return false;
  }
  if (syntax->kind == META_MOVE_REPLICA) {
    return parse_node(s, &arguments[3], &op->from) && parse_node(s, &arguments[4], &op->node) &&
           op->from != op->node;
  }
  return parse_node(s, &arguments[3], &op->node);
}

static void admin_membership(client *c, const operation_syntax *syntax,
                             const resp_argument *arguments, uint32_t count) {
  server *s = server_of_client(c);
  meta_operation op;
  if (!parse_operation(s, syntax, arguments, count, &op)) {
    resp_writer *w = client_reply_writer(c);
    if (w != NULL) {
      resp_write_error_format(w, "ERR expected %s of this cluster", syntax->usage);
    }
    return;
  }
  request *r = request_create(c);
  if (r == NULL) {
    return;
  }
  op.request = r;
  if (s->meta == NULL) {
    resp_write_error(&r->reply, "ERR the server is starting or stopping, retry later");
    request_finish(r);
  } else if (meta_submit(s->meta, &op) != 0) {
    resp_write_error(&r->reply, "ERR another membership change is in progress");
    request_finish(r);
  }
}

/* ---- internal subcommands (meta.c's steps) ------------------------------------- */

static void admin_join_or_drop(client *c, resp_writer *w, const resp_argument *arguments,
                               uint32_t count, bool join) {
  server *s = server_of_client(c);
  uint64_t group = 0;
  if (count != 3 || !parse_group(s, &arguments[2], &group)) {
    resp_write_error(w, "ERR expected FLOTILLA JOIN|DROP <group>");
    return;
  }
  int rc = join ? fl_group_join(s->engine, group) : fl_group_remove(s->engine, group);
  if (rc == (join ? FL_E_EXISTS : FL_E_NO_GROUP)) {
    rc = 0; /* already as asked: the step may be a retry */
  }
  if (rc != 0) {
    resp_write_error_format(w, "ERR %s", fl_strerror(rc));
    return;
  }
  server_log(1, "%s group %" PRIu64, join ? "joined" : "dropped the replica of", group);
  resp_write_ok(w);
}

static void write_ids(char *text, size_t bytes, const uint64_t *ids, uint32_t count) {
  size_t length = 0;
  snprintf(text, bytes, "-");
  for (uint32_t i = 0; i < count && length < bytes; i++) {
    length +=
        (size_t)snprintf(text + length, bytes - length, "%s%" PRIu64, i > 0 ? "," : "", ids[i]);
  }
}

static void admin_progress(client *c, resp_writer *w, const resp_argument *arguments,
                           uint32_t count) {
  server *s = server_of_client(c);
  uint64_t group = 0;
  fl_group_status st;
  if (count != 3 || !parse_group(s, &arguments[2], &group)) {
    resp_write_error(w, "ERR expected FLOTILLA PROGRESS <group>");
    return;
  }
  int rc = fl_group_status_get(s->engine, group, &st);
  if (rc != 0) {
    resp_write_error_format(w, "ERR %s", fl_strerror(rc));
    return;
  }
  char voters[8 * 24], learners[6 * 24], text[512];
  write_ids(voters, sizeof(voters), st.voters, st.voter_count);
  write_ids(learners, sizeof(learners), st.learners, st.learner_count);
  int length = snprintf(text, sizeof(text), "%d %" PRIu64 " %" PRIu64 " %" PRIu64 " %s %s",
                        (int)st.role, st.leader, st.commit, st.applied, voters, learners);
  resp_write_bulk(w, text, (size_t)length);
}

/* Runs on a shard thread: the change or the map write was applied, or failed. */
static void on_internal_applied(void *context, int status, const fl_result *result) {
  request *r = context;
  if (status == 0 && result != NULL && result->status == 0) {
    resp_write_ok(&r->reply);
  } else {
    resp_write_error_format(&r->reply, "ERR %s", fl_strerror(status != 0 ? status : FL_E_STATE));
  }
  request_finish_from_shard(r);
}

static bool parse_change_type(const resp_argument *argument, fl_change_type *type) {
  static const struct {
    const char *name;
    fl_change_type type;
  } types[] = {
      {"add-learner", FL_ADD_LEARNER}, {"add-voter", FL_ADD_VOTER}, {"remove", FL_REMOVE_MEMBER}};
  for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    if (argument_is(argument, types[i].name)) {
      *type = types[i].type;
      return true;
    }
  }
  return false;
}

/* Starts an engine call answered through on_internal_applied. */
static void finish_internal_call(request *r, int rc) {
  if (rc != 0) {
    resp_write_error_format(&r->reply, "ERR %s", fl_strerror(rc));
    request_finish(r);
  }
}

static void admin_change(client *c, const resp_argument *arguments, uint32_t count) {
  server *s = server_of_client(c);
  uint64_t group = 0, node = 0;
  fl_change_type type = FL_ADD_VOTER;
  if (count != 5 || !parse_group(s, &arguments[2], &group) ||
      !parse_change_type(&arguments[3], &type) || !parse_node(s, &arguments[4], &node)) {
    resp_writer *w = client_reply_writer(c);
    if (w != NULL) {
      resp_write_error(w, "ERR expected FLOTILLA CHANGE <group> ADD-LEARNER|ADD-VOTER|REMOVE "
                          "<node-id>");
    }
    return;
  }
  request *r = request_create(c);
  if (r != NULL) {
    finish_internal_call(r, fl_group_change(s->engine, group, type, node, on_internal_applied, r));
  }
}

static void new_map_version(server *s, char *version, size_t bytes) {
  static _Atomic uint64_t counter;
  snprintf(version, bytes, "%" PRIu64 ".%" PRIu64 ".%" PRIu64, s->config->node_id, server_now_ms(),
           atomic_fetch_add(&counter, 1));
}

/* The entry and a new version in one command, so a reader that sees the
 * version also sees the entry. */
static void admin_meta_set(client *c, const resp_argument *arguments, uint32_t count) {
  server *s = server_of_client(c);
  bool valid = count == 4 && arguments[2].length > 0 && arguments[2].length <= 64 &&
               arguments[3].length <= 4096;
  if (!valid) {
    resp_writer *w = client_reply_writer(c);
    if (w != NULL) {
      resp_write_error(w, "ERR expected FLOTILLA META-SET <key> <value>");
    }
    return;
  }
  request *r = request_create(c);
  if (r == NULL) {
    return;
  }
  char version[96];
  new_map_version(s, version, sizeof(version));
  fl_bytes keys[] = {{arguments[2].data, (uint32_t)arguments[2].length}, {"version", 7}};
  fl_bytes values[] = {{arguments[3].data, (uint32_t)arguments[3].length},
                       {version, (uint32_t)strlen(version)}};
  finish_internal_call(
      r, fl_kv_set_many(s->engine, SERVER_META_GROUP, keys, values, 2, on_internal_applied, r));
}

static void admin_leaders(client *c, resp_writer *w) {
  server *s = server_of_client(c);
  uint32_t groups = cluster_group_count(s->map);
  size_t capacity = ((size_t)groups + 1) * 21 + 1, length = 0;
  char *text = malloc(capacity);
  if (text == NULL) {
    resp_write_error(w, "ERR out of memory");
    return;
  }
  for (uint64_t g = 0; g <= groups; g++) {
    uint64_t group = g == 0 ? SERVER_META_GROUP : g;
    if (cluster_leader(s->map, group) == s->config->node_id) {
      length += (size_t)snprintf(text + length, capacity - length, "%" PRIu64 " ", group);
    }
  }
  resp_write_bulk(w, text, length);
  free(text);
}

/* The internal subcommands that change replicas or the map are taken only
 * from other nodes' connections (FLOTILLA FORWARDED first), so a client
 * cannot drop a replica by a slip; true if refused (and answered). */
static bool internal_refused(client *c, const resp_argument *sub) {
  static const char *const changing[] = {"join", "drop", "change", "meta-set"};
  for (size_t i = 0; i < sizeof(changing) / sizeof(changing[0]); i++) {
    if (argument_is(sub, changing[i]) && !c->forwarder) {
      resp_writer *w = client_reply_writer(c);
      if (w != NULL) {
        resp_write_error(w, "ERR an internal subcommand between nodes: use ADD-REPLICA, "
                            "REMOVE-REPLICA or MOVE-REPLICA");
      }
      return true;
    }
  }
  return false;
}

/* The subcommands that answer later, through a request of their own. */
static bool admin_flotilla_deferred(client *c, const resp_argument *arguments, uint32_t count) {
  const resp_argument *sub = &arguments[1];
  const operation_syntax *syntax = operation_syntax_of(sub);
  if (syntax != NULL) {
    admin_membership(c, syntax, arguments, count);
  } else if (internal_refused(c, sub)) {
    return true;
  } else if (argument_is(sub, "change")) {
    admin_change(c, arguments, count);
  } else if (argument_is(sub, "meta-set")) {
    admin_meta_set(c, arguments, count);
  } else {
    return false;
  }
  return true;
}

/* The subcommands answered at once; false if `sub` is none of them. */
static bool admin_flotilla_meta(client *c, resp_writer *w, const resp_argument *arguments,
                                uint32_t count) {
  server *s = server_of_client(c);
  const resp_argument *sub = &arguments[1];
  if (argument_is(sub, "join") || argument_is(sub, "drop")) {
    admin_join_or_drop(c, w, arguments, count, argument_is(sub, "join"));
  } else if (argument_is(sub, "progress")) {
    admin_progress(c, w, arguments, count);
  } else if (argument_is(sub, "leaders")) {
    admin_leaders(c, w);
  } else if (argument_is(sub, "map") || argument_is(sub, "nodes")) {
    if (s->meta == NULL) {
      resp_write_error(w, "ERR the cluster map is not loaded yet");
    } else if (argument_is(sub, "map")) {
      meta_write_map(s->meta, w);
    } else {
      meta_write_nodes(s->meta, w);
    }
  } else {
    return false;
  }
  return true;
}

void admin_flotilla(client *c, const resp_argument *arguments, uint32_t count) {
  resp_writer *w = NULL;
  const resp_argument *sub = &arguments[1];
  if (argument_is(sub, "transfer") || argument_is(sub, "rebalance")) {
    /* May answer through a forwarded request: take a writer only if needed,
     * so that request stays in order behind the ones before it. */
    resp_writer scratch;
    resp_writer_init(&scratch, c->thread->server->config->client_output_limit);
    scratch.protocol = (uint8_t)c->protocol;
    if (argument_is(sub, "transfer")) {
      admin_transfer(c, &scratch, arguments, count);
    } else {
      admin_rebalance(c, &scratch, arguments, count);
    }
    if (scratch.length > 0 && (w = client_reply_writer(c)) != NULL) {
      resp_write_raw(w, scratch.data, scratch.length);
    }
    resp_writer_destroy(&scratch);
    return;
  }
  if (admin_flotilla_deferred(c, arguments, count)) {
    return;
  }
  w = client_reply_writer(c);
  if (w == NULL) {
    return;
  }
  if (argument_is(sub, "forwarded")) {
    c->forwarder = true;
    resp_write_ok(w);
  } else if (argument_is(sub, "groups")) {
    admin_groups(c, w);
  } else if (argument_is(sub, "status")) {
    admin_status(c, w, arguments, count);
  } else if (!admin_flotilla_meta(c, w, arguments, count)) {
    resp_write_unknown_subcommand_error(w, &arguments[0], sub);
  }
}

/* ---- DBSIZE ---------------------------------------------------------------- */

/*
 * The keys of the groups this node holds a replica of, as its replicas
 * know them (followers may lag slightly). When every node holds every group
 * (replicas = nodes) this is the size of the whole database; with more
 * nodes than replicas it counts this node's share only.
 */
static uint64_t local_key_count(server *s) {
  uint64_t keys = 0;
  for (uint64_t group = 1; group <= cluster_group_count(s->map); group++) {
    fl_group_status status;
    if (cluster_is_member(s->map, group, s->config->node_id) &&
        fl_group_status_get(s->engine, group, &status) == 0) {
      keys += status.keys;
    }
  }
  return keys;
}

void admin_dbsize(client *c, const resp_argument *arguments, uint32_t count) {
  (void)arguments;
  (void)count;
  resp_writer *w = client_reply_writer(c);
  if (w != NULL) {
    resp_write_integer(w, (int64_t)local_key_count(server_of_client(c)));
  }
}

/* ---- INFO -------------------------------------------------------------------- */

typedef struct text {
  char *data;
  size_t length;
  size_t capacity;
} text;

static void append(text *t, const char *format, ...) __attribute__((format(printf, 2, 3)));

static void append(text *t, const char *format, ...) {
  for (;;) {
    va_list arguments;
    va_start(arguments, format);
    size_t room = t->capacity - t->length;
    int length = vsnprintf(t->data + t->length, room, format, arguments);
    va_end(arguments);
    if (length < 0) {
      return;
    }
    if ((size_t)length < room) {
      t->length += (size_t)length;
      return;
    }
    size_t capacity = (t->capacity + (size_t)length + 1) * 2;
    char *data = realloc(t->data, capacity);
    if (data == NULL) {
      return;
    }
    t->data = data;
    t->capacity = capacity;
  }
}

static void info_server(client *c, text *t) {
  server *s = server_of_client(c);
  uint64_t uptime = (server_now_ms() - s->started_ms) / 1000;
  append(t,
         "# Server\r\nflotilla_version:%s\r\nredis_mode:cluster\r\nos:Linux\r\n"
         "process_id:%ld\r\nnode_id:%" PRIu64 "\r\ncluster_id:%" PRIu64 "\r\ntcp_port:%u\r\n"
         "peer_port:%u\r\nio_threads:%u\r\nuptime_in_seconds:%" PRIu64 "\r\nuptime_in_days:%" PRIu64
         "\r\n",
         SERVER_VERSION, (long)getpid(), s->config->node_id, s->config->cluster_id,
         s->self->client_port, s->self->peer_port, s->thread_count, uptime, uptime / 86400);
}

static void info_clients(client *c, text *t) {
  server *s = server_of_client(c);
  append(t, "# Clients\r\nconnected_clients:%u\r\nmaxclients:%u\r\n", atomic_load(&s->clients),
         s->config->max_clients);
}

static void info_stats(client *c, text *t) {
  server *s = server_of_client(c);
  append(t,
         "# Stats\r\ntotal_connections_received:%" PRIu64 "\r\ntotal_commands_processed:%" PRIu64
         "\r\nrejected_connections:%" PRIu64 "\r\ncommands_forwarded:%" PRIu64 "\r\n",
         atomic_load(&s->connections_received), atomic_load(&s->commands_processed),
         atomic_load(&s->connections_rejected), atomic_load(&s->commands_forwarded));
}

static void info_persistence(client *c, text *t) {
  const server_config *config = server_of_client(c)->config;
  append(t,
         "# Persistence\r\nloading:0\r\naof_enabled:1\r\nrdb_changes_since_last_save:0\r\n"
         "wal_fsync:%s\r\nsnapshot_entries:%u\r\n",
         config->fsync_mode == FL_FSYNC_DIRECT ? "direct" : "data", config->snapshot_entries);
}

static void info_raft(client *c, text *t) {
  server *s = server_of_client(c);
  uint32_t shards = fl_engine_shard_count(s->engine);
  append(t, "# Raft\r\nshards:%u\r\ngroups:%u\r\n", shards, cluster_group_count(s->map));
  for (uint32_t i = 0; i < shards; i++) {
    fl_shard_stats st;
    if (fl_shard_stats_get(s->engine, i, &st) != 0) {
      continue;
    }
    append(t,
           "shard%u:groups=%u,active_groups=%u,proposals=%" PRIu64 ",applied=%" PRIu64
           ",wal_batches=%" PRIu64 ",wal_bytes=%" PRIu64 ",wal_syncs=%" PRIu64
           ",wal_entries=%" PRIu64 ",frames_sent=%" PRIu64 ",frames_received=%" PRIu64
           ",messages_sent=%" PRIu64 ",messages_received=%" PRIu64 ",loop_iterations=%" PRIu64
           ",snapshots_received=%" PRIu64 ",snapshots_installed=%" PRIu64 "\r\n",
           i, st.groups, st.active_groups, st.proposals, st.applied, st.wal_batches, st.wal_bytes,
           st.wal_syncs, st.wal_entries, st.frames_sent, st.frames_received, st.messages_sent,
           st.messages_received, st.loop_iterations, st.snapshots_received, st.snapshots_installed);
  }
  for (uint64_t group = 1; group <= cluster_group_count(s->map); group++) {
    fl_group_status st;
    if (!cluster_is_member(s->map, group, s->config->node_id) ||
        fl_group_status_get(s->engine, group, &st) != 0) {
      continue;
    }
    append(t,
           "group%" PRIu64 ":role=%s,term=%" PRIu64 ",leader=%" PRIu64 ",commit=%" PRIu64
           ",applied=%" PRIu64 ",keys=%" PRIu64 "\r\n",
           group, role_name(st.role), st.term, st.leader, st.commit, st.applied, st.keys);
  }
}

static void info_keyspace(client *c, text *t) {
  uint64_t keys = local_key_count(server_of_client(c));
  append(t, "# Keyspace\r\n");
  if (keys > 0) {
    append(t, "db0:keys=%" PRIu64 ",expires=0,avg_ttl=0\r\n", keys);
  }
}

/* Redis Cluster's section: cluster tools (redis-cli --cluster check) look
 * for cluster_enabled:1 before they talk to a node. */
static void info_cluster(client *c, text *t) {
  (void)c;
  append(t, "# Cluster\r\ncluster_enabled:1\r\n");
}

void info_write(client *c, resp_writer *w, const resp_argument *section) {
  static const struct {
    const char *name;
    void (*write)(client *c, text *t);
  } sections[] = {{"server", info_server},    {"clients", info_clients},
                  {"stats", info_stats},      {"persistence", info_persistence},
                  {"raft", info_raft},        {"cluster", info_cluster},
                  {"keyspace", info_keyspace}};
  bool all = section == NULL || argument_is(section, "all") || argument_is(section, "default") ||
             argument_is(section, "everything");
  text t = {0};
  for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++) {
    if (all || argument_is(section, sections[i].name)) {
      if (t.length > 0) {
        append(&t, "\r\n");
      }
      sections[i].write(c, &t);
    }
  }
  resp_write_verbatim(w, "txt", t.data != NULL ? t.data : "", t.length);
  free(t.data);
}
