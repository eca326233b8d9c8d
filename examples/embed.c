/*
 * embed.c - the smallest useful embedding of Flotilla: one node, one group,
 * a write and a linearizable read through the built-in KV store.
 *
 *   cc embed.c $(pkg-config --cflags --libs flotilla) -o embed
 *   ./embed /tmp/embed-data 17100        (data directory, peer port)
 *
 * A real deployment lists every node of the cluster in options.nodes and
 * creates each group on every member; the calls are the same. Run it twice
 * on the same directory: the second run finds the group in the WAL.
 */
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <flotilla.h>

/* What a callback hands back to the thread that waits for it. */
typedef struct outcome {
  sem_t done;
  int status;
  char value[64];
} outcome;

/* Callbacks run on a shard thread: record the result, wake the caller and
 * return at once. */
static void on_written(void *context, int status, const fl_result *result) {
  (void)result;
  outcome *o = context;
  o->status = status;
  sem_post(&o->done);
}

static void on_read(void *context, int status, const uint8_t *value, uint32_t length) {
  outcome *o = context;
  o->status = status;
  if (status == 0) {
    /* value is valid only during the callback: copy it out */
    snprintf(o->value, sizeof(o->value), "%.*s", (int)length, (const char *)value);
  }
  sem_post(&o->done);
}

/* An asynchronous call either fails at once (no callback) or calls back
 * exactly once: wait only in the second case. */
static int wait_for(int submitted, outcome *o) {
  if (submitted != 0) {
    return submitted;
  }
  sem_wait(&o->done);
  return o->status;
}

/* Waits until this node leads the group (a single member elects itself
 * after one election timeout, 1-2 s with the default options). */
static int wait_leader(fl_engine *engine, uint64_t group) {
  for (int attempt = 0; attempt < 1000; attempt++) {
    fl_group_status status;
    if (fl_group_status_get(engine, group, &status) == 0 && status.role == FL_LEADER) {
      return 0;
    }
    struct timespec pause = {.tv_nsec = 10 * 1000 * 1000};
    nanosleep(&pause, NULL);
  }
  return FL_E_TIMEOUT;
}

int main(int argc, char **argv) {
  const char *directory = argc > 1 ? argv[1] : "/tmp/flotilla-embed";
  int port = argc > 2 ? atoi(argv[2]) : 17100;
  if (port <= 0 || port > 65535) {
    fprintf(stderr, "usage: embed [DATA_DIR [PORT]]\n");
    return 2;
  }
  fl_node_address self = {.node_id = 1, .host = "127.0.0.1", .port = (uint16_t)port};
  fl_options options;
  fl_options_default(&options);
  options.node_id = 1;
  options.data_dir = directory;
  options.nodes = &self;
  options.node_count = 1;
  options.shard_count = 1;
  fl_engine *engine = NULL;
  int rc = fl_engine_open(&options, &engine);
  if (rc != 0) {
    fprintf(stderr, "open: %s\n", fl_strerror(rc));
    return 1;
  }
  const uint64_t group = 1;
  const uint64_t members[] = {1};
  rc = fl_group_create(engine, group, members, 1);
  if (rc == FL_E_EXISTS) {
    rc = 0; /* recovered from an earlier run */
  }
  if (rc == 0) {
    rc = wait_leader(engine, group);
  }
  outcome o = {.status = 0};
  sem_init(&o.done, 0, 0);
  if (rc == 0) {
    rc = wait_for(fl_kv_put(engine, group, "greeting", 8, "hello", 5, on_written, &o), &o);
  }
  if (rc == 0) {
    rc = wait_for(fl_kv_get(engine, group, "greeting", 8, FL_READ_LINEARIZABLE, on_read, &o), &o);
  }
  if (rc == 0) {
    printf("greeting = %s\n", o.value);
  } else {
    fprintf(stderr, "embed: %s\n", fl_strerror(rc));
  }
  sem_destroy(&o.done);
  fl_engine_close(engine);
  return rc == 0 && strcmp(o.value, "hello") == 0 ? 0 : 1;
}
