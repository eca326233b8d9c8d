/*
 * test_config.c - flotillad's configuration (server/config.c): defaults,
 * INI file plus flags that override it, sizes, the nodes list, and that
 * every refused value names its option (and file:line for the INI).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/server.h"

#define NODES "1@127.0.0.1:7001:8001,2@127.0.0.1:7002:8002,3@10.0.0.3:7003:8003"
#define MAX_ARGUMENTS 32

static server_config config;
static char error[1024];

/* Loads from a NULL-terminated list of arguments (program name added). */
static int load(const char *first, ...) {
  char *argv[MAX_ARGUMENTS] = {"flotillad"};
  int argc = 1;
  va_list arguments;
  va_start(arguments, first);
  for (const char *a = first; a != NULL; a = va_arg(arguments, const char *)) {
    assert_true(argc < MAX_ARGUMENTS);
    argv[argc++] = (char *)a;
  }
  va_end(arguments);
  error[0] = '\0';
  return server_config_load(argc, argv, &config, error, sizeof(error));
}

/* The required options plus one more flag and value. */
static int load_with(const char *flag, const char *value) {
  return load("--node-id", "1", "--data-dir", "/tmp/data", "--nodes", NODES, flag, value, NULL);
}

static char ini_path[64];

static void write_ini(const char *text) {
  snprintf(ini_path, sizeof(ini_path), "/tmp/test_config_%d.ini", (int)getpid());
  FILE *file = fopen(ini_path, "w");
  assert_non_null(file);
  fputs(text, file);
  fclose(file);
}

static int teardown_ini(void **state) {
  (void)state;
  if (ini_path[0] != '\0') {
    unlink(ini_path);
  }
  return 0;
}

static void test_defaults(void **state) {
  (void)state;
  assert_int_equal(load("--node-id", "2", "--data-dir", "/tmp/data", "--nodes", NODES, NULL), 0);
  assert_int_equal(config.node_id, 2);
  assert_int_equal(config.cluster_id, 1);
  assert_string_equal(config.data_dir, "/tmp/data");
  assert_string_equal(config.bind, "127.0.0.1"); /* node 2's host */
  assert_int_equal(config.io_threads, 1);
  assert_int_equal(config.redirect, SERVER_REDIRECT_AUTO);
  assert_int_equal(config.node_count, 3);
  assert_int_equal(config.nodes[2].id, 3);
  assert_string_equal(config.nodes[2].host, "10.0.0.3");
  assert_int_equal(config.nodes[2].client_port, 7003);
  assert_int_equal(config.nodes[2].peer_port, 8003);
  assert_int_equal(config.groups, 64);
  assert_int_equal(config.replicas, 3);
  assert_int_equal(config.shards, 0);
  assert_int_equal(config.tick_ms, 10);
  assert_int_equal(config.election_ticks, 100);
  assert_int_equal(config.heartbeat_ticks, 10);
  assert_false(config.lease_read);
  assert_int_equal(config.fsync_mode, FL_FSYNC_DATA);
  assert_int_equal(config.snapshot_entries, 100000);
  assert_int_equal(config.max_clients, 10000);
  assert_int_equal(config.max_value_bytes, 2097152);
  assert_int_equal(config.max_arguments, RESP_DEFAULT_MAX_ARGUMENTS);
  assert_int_equal(config.max_inline_bytes, 65536);
  assert_int_equal(config.max_bulk_bytes, 2 * 2097152);
  assert_int_equal(config.client_output_limit, 64ull << 20);
  assert_int_equal(config.log_level, 1);
  assert_string_equal(config.log_file, "");
  assert_ptr_equal(server_config_node(&config, 3), &config.nodes[2]);
  assert_null(server_config_node(&config, 4));
}

static void test_file_and_flag_override(void **state) {
  (void)state;
  write_ini("; flotillad\n"
            "[server]\n"
            "node-id = 3\n"
            "data-dir = /var/lib/flotilla\n"
            "io-threads = 2\n"
            "redirect = moved\n"
            "[cluster]\n"
            "nodes = " NODES "\n"
            "groups = 16\n"
            "[engine]\n"
            "shards = 2\n"
            "lease-read = yes\n"
            "fsync = direct\n"
            "[limits]\n"
            "max-value-bytes = 1mb\n"
            "client-output-limit = 1gb\n"
            "[log]\n"
            "log-level = warning\n");
  assert_int_equal(load("--config", ini_path, "--io-threads", "4", "--groups=32", NULL), 0);
  assert_int_equal(config.node_id, 3);
  assert_string_equal(config.bind, "10.0.0.3");
  assert_int_equal(config.io_threads, 4); /* the flag wins */
  assert_int_equal(config.groups, 32);
  assert_int_equal(config.redirect, SERVER_REDIRECT_MOVED);
  assert_int_equal(config.shards, 2);
  assert_true(config.lease_read);
  assert_int_equal(config.fsync_mode, FL_FSYNC_DIRECT);
  assert_int_equal(config.max_value_bytes, 1u << 20);
  assert_int_equal(config.max_bulk_bytes, 2u << 20);
  assert_int_equal(config.client_output_limit, 1ull << 30);
  assert_int_equal(config.log_level, 2);
  /* --config=FILE works the same */
  assert_int_equal(load("--config=", NULL), -1);
  assert_int_equal(load(NULL), -1);
}

static void test_sizes(void **state) {
  (void)state;
  static const struct {
    const char *text;
    uint64_t bytes;
  } sizes[] = {{"4096", 4096},  {"2k", 2000},      {"2kb", 2048},         {"2KB", 2048},
               {"3m", 3000000}, {"3mb", 3u << 20}, {"1g", 1000000000ull}, {"1gb", 1ull << 30}};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    assert_int_equal(load_with("--client-output-limit", sizes[i].text), 0);
    assert_int_equal(config.client_output_limit, sizes[i].bytes);
  }
  assert_int_equal(load_with("--max-bulk-bytes", "16mb"), 0);
  assert_int_equal(config.max_bulk_bytes, 16u << 20);
  assert_int_equal(load_with("--max-value-bytes", "100"), 0);
  assert_int_equal(config.max_bulk_bytes, 200);
}

/* Every refused value gives an error that names its option. */
static void test_bad_values_name_their_option(void **state) {
  (void)state;
  static const struct {
    const char *flag;
    const char *value;
  } bad[] = {
      {"--node-id", "0"},
      {"--node-id", "x"},
      {"--cluster-id", "0"},
      {"--cluster-id", "-1"},
      {"--data-dir", ""},
      {"--bind", ""},
      {"--io-threads", "0"},
      {"--io-threads", "65"},
      {"--redirect", "sometimes"},
      {"--groups", "0"},
      {"--groups", "16385"},
      {"--replicas", "0"},
      {"--replicas", "4"}, /* more than the 3 nodes */
      {"--shards", "1000"},
      {"--tick-ms", "0"},
      {"--election-ticks", "1"},
      {"--heartbeat-ticks", "100"}, /* not below election-ticks */
      {"--heartbeat-ticks", "0"},
      {"--lease-read", "maybe"},
      {"--fsync", "always"},
      {"--snapshot-entries", "0"},
      {"--max-clients", "0"},
      {"--max-value-bytes", "3mb"},
      {"--max-value-bytes", "0"},
      {"--max-value-bytes", "1xb"},
      {"--max-arguments", "0"},
      {"--max-inline-bytes", "8"},
      {"--max-bulk-bytes", "1gb"},
      {"--max-bulk-bytes", "100"}, /* below max-value-bytes */
      {"--client-output-limit", "10"},
      {"--client-output-limit", "99999999999999999999"},
      {"--log-level", "verbose"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(load_with(bad[i].flag, bad[i].value), -1);
    const char *name = bad[i].flag + 2;
    if (strstr(error, name) == NULL) {
      fail_msg("%s %s: error '%s' does not name the option", bad[i].flag, bad[i].value, error);
    }
  }
}

static void test_required_and_unknown(void **state) {
  (void)state;
  assert_int_equal(load("--data-dir", "/tmp/d", "--nodes", NODES, NULL), -1);
  assert_non_null(strstr(error, "node-id"));
  assert_int_equal(load("--node-id", "1", "--nodes", NODES, NULL), -1);
  assert_non_null(strstr(error, "data-dir"));
  assert_int_equal(load("--node-id", "1", "--data-dir", "/tmp/d", NULL), -1);
  assert_non_null(strstr(error, "nodes"));
  assert_int_equal(load_with("--no-such-option", "1"), -1);
  assert_non_null(strstr(error, "no-such-option"));
  assert_int_equal(
      load("--node-id", "1", "--data-dir", "/tmp/d", "--nodes", NODES, "--groups", NULL), -1);
  assert_non_null(strstr(error, "groups"));
  assert_int_equal(load_with("stray", "1"), -1);
  assert_non_null(strstr(error, "stray"));
}

static void test_nodes_errors(void **state) {
  (void)state;
  static const char *const bad[] = {
      "1@127.0.0.1:7001",                            /* no peer port */
      "127.0.0.1:7001:8001",                         /* no id */
      "0@127.0.0.1:7001:8001",                       /* id 0 */
      "1@:7001:8001",                                /* no host */
      "1@127.0.0.1:0:8001",                          /* port 0 */
      "1@127.0.0.1:7001:70000",                      /* port too large */
      "1@127.0.0.1:7001:7001",                       /* client = peer */
      "1@127.0.0.1:7001:8001,1@127.0.0.2:7002:8002", /* duplicate id */
      "1@127.0.0.1:7001:8001,2@127.0.0.1:7001:8002", /* shared port */
      "1@127.0.0.1:7001:8001,2@127.0.0.1:8001:8002", /* shared port */
      "",
      "2@127.0.0.1:7002:8002", /* node-id 1 is not listed */
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rc =
        load("--node-id", "1", "--data-dir", "/tmp/d", "--replicas", "1", "--nodes", bad[i], NULL);
    if (rc != -1 || (strstr(error, "nodes") == NULL && strstr(error, "node-id") == NULL)) {
      fail_msg("nodes '%s': rc %d, error '%s'", bad[i], rc, error);
    }
  }
  /* Spaces around entries are fine; the same port on two hosts too. */
  assert_int_equal(load("--node-id", "2", "--data-dir", "/tmp/d", "--replicas", "2", "--nodes",
                        " 1@10.0.0.1:7001:8001 , 2@10.0.0.2:7001:8001 ", NULL),
                   0);
  assert_int_equal(config.node_count, 2);
  assert_string_equal(config.bind, "10.0.0.2");
}

static void test_ini_errors_name_file_and_line(void **state) {
  (void)state;
  char expected[128];
  write_ini("[server]\nnode-id = 1\ndata-dir = /tmp/d\nio-threads = lots\n");
  assert_int_equal(load("--config", ini_path, "--nodes", NODES, NULL), -1);
  snprintf(expected, sizeof(expected), "%s:4:", ini_path);
  assert_non_null(strstr(error, expected));
  assert_non_null(strstr(error, "io-threads"));

  write_ini("[server]\nnode-id = 1\n[cluster]\nio-threads = 2\n"); /* wrong section */
  assert_int_equal(load("--config", ini_path, NULL), -1);
  snprintf(expected, sizeof(expected), "%s:4:", ini_path);
  assert_non_null(strstr(error, expected));
  assert_non_null(strstr(error, "io-threads"));

  write_ini("[server]\nnode-id = 1\nthis line is not an option\n");
  assert_int_equal(load("--config", ini_path, NULL), -1);
  snprintf(expected, sizeof(expected), "%s:3:", ini_path);
  assert_non_null(strstr(error, expected));

  assert_int_equal(load("--config", "/nonexistent/flotillad.ini", NULL), -1);
  assert_non_null(strstr(error, "/nonexistent/flotillad.ini"));
}

/* A nodes line longer than a default INI line (64 nodes) is read whole. */
static void test_long_nodes_line(void **state) {
  (void)state;
  char text[8192] = "[cluster]\nnodes = ";
  for (int i = 1; i <= SERVER_MAX_NODES; i++) {
    char node[64];
    snprintf(node, sizeof(node), "%s%d@192.168.100.%d:%d:%d", i > 1 ? "," : "", i, i, 7000 + i,
             9000 + i);
    strcat(text, node);
  }
  strcat(text, "\nreplicas = 7\n");
  write_ini(text);
  assert_int_equal(load("--config", ini_path, "--node-id", "64", "--data-dir", "/tmp/d", NULL), 0);
  assert_int_equal(config.node_count, SERVER_MAX_NODES);
  assert_int_equal(config.nodes[63].client_port, 7064);
  assert_string_equal(config.bind, "192.168.100.64");
}

static void test_help_lists_every_option(void **state) {
  (void)state;
  char *text = NULL;
  size_t length = 0;
  FILE *out = open_memstream(&text, &length);
  assert_non_null(out);
  server_config_usage(out);
  fclose(out);
  static const char *const names[] = {"node-id",         "cluster-id",
                                      "data-dir",        "bind",
                                      "io-threads",      "redirect",
                                      "nodes",           "groups",
                                      "replicas",        "shards",
                                      "tick-ms",         "election-ticks",
                                      "heartbeat-ticks", "lease-read",
                                      "fsync",           "snapshot-entries",
                                      "max-clients",     "max-value-bytes",
                                      "max-arguments",   "max-inline-bytes",
                                      "max-bulk-bytes",  "client-output-limit",
                                      "log-level",       "log-file",
                                      "[server]",        "[cluster]",
                                      "[engine]",        "[limits]",
                                      "[log]",           "default 64",
                                      "default 10000"};
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    if (strstr(text, names[i]) == NULL) {
      fail_msg("--help does not mention %s", names[i]);
    }
  }
  free(text);
  /* --help and --version ask the caller to exit 0, whatever else is given. */
  assert_non_null(freopen("/dev/null", "w", stdout));
  assert_int_equal(load("--help", NULL), 1);
  assert_int_equal(load("--version", "--no-such-option", NULL), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_defaults),
      cmocka_unit_test_teardown(test_file_and_flag_override, teardown_ini),
      cmocka_unit_test(test_sizes),
      cmocka_unit_test(test_bad_values_name_their_option),
      cmocka_unit_test(test_required_and_unknown),
      cmocka_unit_test(test_nodes_errors),
      cmocka_unit_test_teardown(test_ini_errors_name_file_and_line, teardown_ini),
      cmocka_unit_test_teardown(test_long_nodes_line, teardown_ini),
      cmocka_unit_test(test_help_lists_every_option),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
