/*
 * main.c - flotillad: configuration -> log -> engine -> this node's
 * replicas (first boot) -> io threads -> wait for SIGTERM/SIGINT ->
 * graceful shutdown -> exit 0.
 *
 * First boot: a node creates its replica of every group whose placement
 * includes it (the meta group, which holds the cluster map, included: see
 * meta.c), then writes the marker file `flotillad.bootstrapped` in the
 * data directory (fsync'd with its directory). Later boots rely on the
 * groups the engine recovers, so membership changes made since are not
 * undone by the initial placement.
 *
 * Signals are blocked in every thread and taken synchronously by the main
 * thread (sigwaitinfo), so no handler runs inside the io threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/server.h"
#include "server/server_internal.h"

#define BOOTSTRAP_MARKER "flotillad.bootstrapped"

static void on_leader(void *context, uint64_t group, uint64_t leader, uint64_t term) {
  (void)term;
  cluster_set_leader(context, group, leader);
}

static int open_engine(const server_config *config, cluster_map *map, fl_engine **engine) {
  static fl_node_address nodes[SERVER_MAX_NODES];
  for (uint32_t i = 0; i < config->node_count; i++) {
    nodes[i].node_id = config->nodes[i].id;
    snprintf(nodes[i].host, sizeof(nodes[i].host), "%s", config->nodes[i].host);
    nodes[i].port = config->nodes[i].peer_port;
  }
  fl_options options;
  fl_options_default(&options);
  options.cluster_id = config->cluster_id;
  options.node_id = config->node_id;
  options.data_dir = config->data_dir;
  options.listen_host = config->bind;
  options.nodes = nodes;
  options.node_count = config->node_count;
  options.shard_count = config->shards;
  options.tick_ms = config->tick_ms;
  options.election_ticks = config->election_ticks;
  options.heartbeat_ticks = config->heartbeat_ticks;
  options.lease_read = config->lease_read;
  options.fsync_mode = config->fsync_mode;
  options.snapshot_entries = config->snapshot_entries;
  options.max_command_bytes =
      (uint32_t)(config->max_value_bytes + SERVER_MAX_KEY_BYTES + SERVER_COMMAND_OVERHEAD_BYTES);
  options.log_level = config->log_level;
  options.log = server_log_engine;
  options.on_leader = on_leader;
  options.on_leader_context = map;
  return fl_engine_open(&options, engine);
}

static int sync_directory(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return -errno;
  }
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

static int write_marker(const char *data_dir) {
  char path[PATH_MAX + 32];
  snprintf(path, sizeof(path), "%s/%s", data_dir, BOOTSTRAP_MARKER);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return -errno;
  }
  static const char text[] = "the initial replicas of this node were created\n";
  int rc = write(fd, text, sizeof(text) - 1) == (ssize_t)(sizeof(text) - 1) && fsync(fd) == 0
               ? 0
               : -errno;
  close(fd);
  return rc != 0 ? rc : sync_directory(data_dir);
}

static bool bootstrapped(const char *data_dir) {
  char path[PATH_MAX + 32];
  snprintf(path, sizeof(path), "%s/%s", data_dir, BOOTSTRAP_MARKER);
  return access(path, F_OK) == 0;
}

/* Creates this node's replica of every group placed on it. */
static int bootstrap(const server_config *config, cluster_map *map, fl_engine *engine) {
  uint32_t created = 0;
  for (uint64_t g = 0; g <= config->groups; g++) {
    uint64_t group = g == 0 ? SERVER_META_GROUP : g;
    uint64_t members[SERVER_MAX_REPLICAS];
    uint32_t count = cluster_members(map, group, members);
    if (!cluster_is_member(map, group, config->node_id)) {
      continue;
    }
    int rc = fl_group_create(engine, group, members, count);
    if (rc != 0 && rc != FL_E_EXISTS) {
      server_log(3, "creating group %" PRIu64 ": %s", group, fl_strerror(rc));
      return rc;
    }
    created++;
  }
  int rc = write_marker(config->data_dir);
  if (rc != 0) {
    server_log(3, "writing %s/%s: %s", config->data_dir, BOOTSTRAP_MARKER, strerror(-rc));
    return rc;
  }
  server_log(1, "first boot: created %u replicas of %u groups", created, config->groups);
  return 0;
}

/* Waits for SIGTERM or SIGINT; a SIGHUP meanwhile reopens the log file
 * (log rotation) and the wait goes on. */
static int wait_for_signal(const server_config *config) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  for (;;) {
    int signal_number = sigwaitinfo(&set, NULL);
    if (signal_number == SIGHUP) {
      int rc = server_log_reopen(config->log_file);
      server_log(rc == 0 ? 1 : 3, "SIGHUP: log file reopened%s%s", rc == 0 ? "" : ": ",
                 rc == 0 ? "" : strerror(-rc));
    } else if (signal_number >= 0 || errno != EINTR) {
      return signal_number;
    }
  }
}

static void block_signals(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
}

static int run(const server_config *config) {
  server s = {.config = config, .self = server_config_node(config, config->node_id)};
  int rc = cluster_map_create(config, &s.map);
  if (rc != 0) {
    server_log(3, "cluster map: %s", strerror(rc < 0 ? -rc : rc));
    return 1;
  }
  block_signals(); /* before any thread starts: they inherit the mask */
  rc = open_engine(config, s.map, &s.engine);
  if (rc != 0) {
    server_log(3, "opening the engine in %s: %s", config->data_dir, fl_strerror(rc));
    cluster_map_destroy(s.map);
    return 1;
  }
  if (!bootstrapped(config->data_dir) && bootstrap(config, s.map, s.engine) != 0) {
    fl_engine_close(s.engine);
    cluster_map_destroy(s.map);
    return 1;
  }
  if (server_start(&s) != 0) {
    fl_engine_close(s.engine);
    cluster_map_destroy(s.map);
    return 1;
  }
  rc = meta_start(&s);
  if (rc != 0) {
    server_log(3, "starting the cluster map's thread: %s", strerror(-rc));
    server_stop(&s);
    fl_engine_close(s.engine);
    cluster_map_destroy(s.map);
    return 1;
  }
  server_log(1,
             "flotillad %s started: node %" PRIu64 ", clients on %s:%u, peers on port %u, %u "
             "groups, %u replicas, %u shards, %u io threads",
             SERVER_VERSION, config->node_id, config->bind, s.self->client_port, s.self->peer_port,
             config->groups, config->replicas, fl_engine_shard_count(s.engine), config->io_threads);
  int signal_number = wait_for_signal(config);
  server_log(1, "signal %d: shutting down", signal_number);
  meta_stop(&s); /* first: its operations need the io threads */
  server_stop(&s);
  rc = fl_engine_close(s.engine);
  cluster_map_destroy(s.map);
  server_log(1, "flotillad stopped%s%s", rc != 0 ? ": " : "", rc != 0 ? fl_strerror(rc) : "");
  return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  static server_config config;
  char error[1024];
  int rc = server_config_load(argc, argv, &config, error, sizeof(error));
  if (rc == 1) {
    return 0;
  }
  if (rc != 0) {
    fprintf(stderr, "flotillad: %s\n", error);
    return 2;
  }
  rc = server_log_open(config.log_level, config.log_file);
  if (rc != 0) {
    fprintf(stderr, "flotillad: log-file: cannot open %s: %s\n", config.log_file, strerror(-rc));
    return 2;
  }
  rc = run(&config);
  server_log_close();
  return rc;
}
