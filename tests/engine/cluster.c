/*
 * cluster.c - in-process clusters of engines for tests (cluster.h).
 */
#define _GNU_SOURCE
#include "tests/engine/cluster.h"

#include <errno.h>
#include <netinet/in.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t cluster_now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

void cluster_pause_ms(uint32_t ms) {
  struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&pause, NULL);
}

/* A base port with `span` consecutive free ports after it: bind tests them. */
static bool port_free(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in address = {
      .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool ok = bind(fd, (struct sockaddr *)&address, sizeof(address)) == 0;
  close(fd);
  return ok;
}

static uint16_t find_ports(uint32_t span) {
  uint32_t start = 20000u + (uint32_t)(getpid() * 37u % 20000u);
  for (uint32_t base = start; base + span < 60000u; base += span) {
    bool all = true;
    for (uint32_t i = 0; i < span && all; i++) {
      all = port_free((uint16_t)(base + i));
    }
    if (all) {
      return (uint16_t)base;
    }
  }
  return 0;
}

static fl_options node_options(cluster *c, uint64_t node, char *directory, size_t size) {
  snprintf(directory, size, "%s/node-%llu", c->directory, (unsigned long long)node);
  fl_options options;
  fl_options_default(&options);
  options.cluster_id = 7;
  options.node_id = node;
  options.data_dir = directory;
  options.nodes = c->nodes;
  options.node_count = c->node_count;
  options.shard_count = c->shard_count;
  options.tick_ms = 10;
  options.election_ticks = 20;
  options.heartbeat_ticks = 2;
  options.wal_segment_bytes = 4u << 20;
  return options;
}

int cluster_start_node(cluster *c, uint64_t node) {
  char directory[256];
  fl_options options = node_options(c, node, directory, sizeof(directory));
  return fl_engine_open(&options, &c->engines[node - 1]);
}

void cluster_stop_node(cluster *c, uint64_t node) {
  fl_engine_close(c->engines[node - 1]);
  c->engines[node - 1] = NULL;
}

int cluster_start(cluster *c, uint32_t node_count, uint32_t shard_count) {
  memset(c, 0, sizeof(*c));
  c->node_count = node_count;
  c->shard_count = shard_count;
  snprintf(c->directory, sizeof(c->directory), "/tmp/flotilla-engine-XXXXXX");
  if (mkdtemp(c->directory) == NULL) {
    return FL_E_IO;
  }
  uint16_t base = find_ports(node_count * shard_count);
  if (base == 0) {
    return FL_E_IO;
  }
  for (uint32_t i = 0; i < node_count; i++) {
    c->nodes[i] = (fl_node_address){.node_id = i + 1, .port = (uint16_t)(base + i * shard_count)};
    snprintf(c->nodes[i].host, sizeof(c->nodes[i].host), "127.0.0.1");
  }
  for (uint32_t i = 0; i < node_count; i++) {
    int rc = cluster_start_node(c, i + 1);
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

void cluster_destroy(cluster *c) {
  for (uint32_t i = 0; i < c->node_count; i++) {
    if (c->engines[i] != NULL) {
      cluster_stop_node(c, i + 1);
    }
  }
  char command[256];
  snprintf(command, sizeof(command), "rm -rf '%s'", c->directory);
  if (system(command) != 0) {
    fprintf(stderr, "cluster: could not remove %s\n", c->directory);
  }
}

int cluster_create_group(cluster *c, uint64_t group) {
  uint64_t members[CLUSTER_MAX_NODES];
  for (uint32_t i = 0; i < c->node_count; i++) {
    members[i] = i + 1;
  }
  for (uint32_t i = 0; i < c->node_count; i++) {
    if (c->engines[i] != NULL) {
      int rc = fl_group_create(c->engines[i], group, members, c->node_count);
      if (rc != 0) {
        return rc;
      }
    }
  }
  return 0;
}

uint64_t cluster_wait_leader(cluster *c, uint64_t group, uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  while (cluster_now_ms() < deadline) {
    uint64_t leader = 0;
    bool agreed = true;
    for (uint32_t i = 0; i < c->node_count && agreed; i++) {
      fl_group_status status;
      if (c->engines[i] == NULL) {
        continue;
      }
      if (fl_group_status_get(c->engines[i], group, &status) != 0 || status.leader == 0 ||
          (leader != 0 && status.leader != leader)) {
        agreed = false;
      }
      leader = status.leader;
    }
    if (agreed && leader != 0 && c->engines[leader - 1] != NULL) {
      fl_group_status status;
      if (fl_group_status_get(c->engines[leader - 1], group, &status) == 0 &&
          status.role == FL_LEADER) {
        return leader;
      }
    }
    cluster_pause_ms(5);
  }
  return 0;
}

bool cluster_wait_applied(cluster *c, uint64_t group, uint64_t index, uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  while (cluster_now_ms() < deadline) {
    bool all = true;
    for (uint32_t i = 0; i < c->node_count && all; i++) {
      fl_group_status status;
      if (c->engines[i] != NULL) {
        all = fl_group_status_get(c->engines[i], group, &status) == 0 && status.applied >= index;
      }
    }
    if (all) {
      return true;
    }
    cluster_pause_ms(5);
  }
  return false;
}

typedef struct waiter {
  sem_t done;
  int status;
  char value[256];
  uint32_t length;
} waiter;

static void on_proposed(void *context, int status, const fl_result *result) {
  (void)result;
  waiter *w = context;
  w->status = status;
  sem_post(&w->done);
}

static void on_read(void *context, int status, const uint8_t *value, uint32_t length) {
  waiter *w = context;
  w->status = status;
  w->length = length < sizeof(w->value) - 1 ? length : (uint32_t)sizeof(w->value) - 1;
  if (value != NULL) {
    memcpy(w->value, value, w->length);
  }
  w->value[w->length] = '\0';
  sem_post(&w->done);
}

int cluster_put(cluster *c, uint64_t node, uint64_t group, const char *key, const char *value,
                uint64_t *index) {
  (void)index;
  waiter w = {0};
  sem_init(&w.done, 0, 0);
  int rc = fl_kv_put(c->engines[node - 1], group, key, (uint32_t)strlen(key), value,
                     (uint32_t)strlen(value), on_proposed, &w);
  if (rc == 0) {
    sem_wait(&w.done);
    rc = w.status;
  }
  sem_destroy(&w.done);
  return rc;
}

int cluster_get(cluster *c, uint64_t node, uint64_t group, const char *key, fl_read_mode mode,
                char *value, uint32_t capacity) {
  waiter w = {0};
  sem_init(&w.done, 0, 0);
  int rc = fl_kv_get(c->engines[node - 1], group, key, (uint32_t)strlen(key), mode, on_read, &w);
  if (rc == 0) {
    sem_wait(&w.done);
    rc = w.status;
    snprintf(value, capacity, "%s", w.value);
  }
  sem_destroy(&w.done);
  return rc;
}

int cluster_put_retry(cluster *c, uint64_t group, const char *key, const char *value,
                      uint32_t timeout_ms) {
  uint64_t deadline = cluster_now_ms() + timeout_ms;
  int rc = FL_E_TIMEOUT;
  while (cluster_now_ms() < deadline) {
    uint64_t leader = cluster_wait_leader(c, group, (uint32_t)(deadline - cluster_now_ms()));
    if (leader == 0) {
      return FL_E_TIMEOUT;
    }
    rc = cluster_put(c, leader, group, key, value, NULL);
    if (rc == 0) {
      return 0;
    }
    cluster_pause_ms(10);
  }
  return rc;
}
