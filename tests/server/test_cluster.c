/*
 * test_cluster.c - the cluster map (server/server.h, cluster.c): placement
 * of groups on nodes, slot ranges, leaders and members changed from other
 * threads, and the CLUSTER SLOTS / SHARDS / NODES / INFO replies parsed
 * back and compared element by element with what Redis 7.0 would send.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/server.h"
#include "server/slot.h"

/* ---- a map from a small configuration ---- */

static server_config make_config(uint32_t node_count, uint32_t groups, uint32_t replicas) {
  server_config config;
  memset(&config, 0, sizeof(config));
  config.node_count = node_count;
  config.groups = groups;
  config.replicas = replicas;
  /* Listed out of id order: the map must sort them. */
  for (uint32_t i = 0; i < node_count; i++) {
    uint64_t id = (uint64_t)(node_count - i) * 10u;
    config.nodes[i].id = id;
    snprintf(config.nodes[i].host, sizeof(config.nodes[i].host), "127.0.0.%u", (unsigned)(id / 10));
    config.nodes[i].client_port = (uint16_t)(7000 + id);
    config.nodes[i].peer_port = (uint16_t)(9000 + id);
  }
  config.node_id = 10;
  return config;
}

static cluster_map *make_map(uint32_t node_count, uint32_t groups, uint32_t replicas) {
  server_config config = make_config(node_count, groups, replicas);
  cluster_map *map = NULL;
  assert_int_equal(cluster_map_create(&config, &map), 0);
  assert_non_null(map);
  return map;
}

/* ---- a RESP2/RESP3 reply parsed into a tree ---- */

typedef struct reply {
  char type; /* '+', '-', ':', '$', '*', '%', '=', '_' (null) */
  long long integer;
  char *text; /* '+', '-', '$', '=' (verbatim: without its "txt:") */
  size_t length;
  size_t count; /* items: arrays, and 2 * pairs for maps */
  struct reply **items;
} reply;

static long long read_number(const char **cursor, const char *end) {
  const char *line_end = memchr(*cursor, '\r', (size_t)(end - *cursor));
  assert_non_null(line_end);
  char *after = NULL;
  long long value = strtoll(*cursor, &after, 10);
  assert_ptr_equal(after, line_end);
  *cursor = line_end + 2;
  return value;
}

static reply *parse_reply(const char **cursor, const char *end) {
  assert_true(*cursor < end);
  reply *r = calloc(1, sizeof(*r));
  assert_non_null(r);
  r->type = *(*cursor)++;
  switch (r->type) {
  case '+':
  case '-': {
    const char *line_end = memchr(*cursor, '\r', (size_t)(end - *cursor));
    assert_non_null(line_end);
    r->length = (size_t)(line_end - *cursor);
    r->text = strndup(*cursor, r->length);
    *cursor = line_end + 2;
    break;
  }
  case ':':
    r->integer = read_number(cursor, end);
    break;
  case '$':
  case '=': {
    long long length = read_number(cursor, end);
    assert_true(length >= 0 && *cursor + length + 2 <= end);
    size_t skip = r->type == '=' ? 4 : 0;
    r->length = (size_t)length - skip;
    r->text = strndup(*cursor + skip, r->length);
    *cursor += length + 2;
    break;
  }
  case '*':
  case '%': {
    long long count = read_number(cursor, end);
    assert_true(count >= 0);
    r->count = (size_t)count * (r->type == '%' ? 2u : 1u);
    r->items = calloc(r->count + 1, sizeof(reply *));
    for (size_t i = 0; i < r->count; i++) {
      r->items[i] = parse_reply(cursor, end);
    }
    break;
  }
  default:
    fail_msg("unexpected reply type '%c'", r->type);
  }
  return r;
}

static void reply_free(reply *r) {
  for (size_t i = 0; i < r->count; i++) {
    reply_free(r->items[i]);
  }
  free(r->items);
  free(r->text);
  free(r);
}

/* Runs a CLUSTER writer and parses its one reply, which must fill the buffer. */
static reply *reply_of(cluster_map *map, int (*write)(cluster_map *, resp_writer *), int protocol) {
  resp_writer writer;
  resp_writer_init(&writer, 64u << 20);
  assert_int_equal(resp_writer_set_protocol(&writer, protocol), 0);
  assert_int_equal(write(map, &writer), 0);
  const char *cursor = writer.data;
  reply *r = parse_reply(&cursor, writer.data + writer.length);
  assert_ptr_equal(cursor, writer.data + writer.length);
  resp_writer_destroy(&writer);
  return r;
}

static void assert_integer(const reply *r, long long value) {
  assert_int_equal(r->type, ':');
  assert_int_equal(r->integer, value);
}

static void assert_bulk(const reply *r, const char *text) {
  assert_int_equal(r->type, '$');
  assert_string_equal(r->text, text);
}

static const reply *map_value(const reply *map, char map_type, const char *key) {
  assert_int_equal(map->type, map_type);
  for (size_t i = 0; i + 1 < map->count; i += 2) {
    if (map->items[i]->type == '$' && strcmp(map->items[i]->text, key) == 0) {
      return map->items[i + 1];
    }
  }
  fail_msg("no key %s", key);
  return NULL;
}

static const char *name_of(uint64_t node) {
  static char names[4][41];
  static unsigned next;
  char *name = names[next++ % 4];
  cluster_node_name(node, name);
  return name;
}

/* ---- placement and slots ---- */

static void assert_placement_balanced(uint32_t node_count, uint32_t groups, uint32_t replicas) {
  cluster_map *map = make_map(node_count, groups, replicas);
  uint32_t hosted[SERVER_MAX_NODES + 1] = {0};
  uint32_t first[SERVER_MAX_NODES + 1] = {0};
  for (uint64_t group = 1; group <= groups; group++) {
    uint64_t members[SERVER_MAX_REPLICAS];
    assert_int_equal(cluster_members(map, group, members), replicas);
    /* Sorted by id the nodes are 10, 20, ...: the round-robin start. */
    assert_int_equal(members[0], ((group - 1) % node_count + 1) * 10);
    for (uint32_t i = 0; i < replicas; i++) {
      assert_true(members[i] % 10 == 0 && members[i] >= 10 && members[i] <= node_count * 10u);
      assert_true(cluster_is_member(map, group, members[i]));
      for (uint32_t j = 0; j < i; j++) {
        assert_true(members[i] != members[j]);
      }
      hosted[members[i] / 10]++;
    }
    first[members[0] / 10]++;
  }
  uint32_t low = UINT32_MAX, high = 0, first_low = UINT32_MAX, first_high = 0;
  for (uint32_t node = 1; node <= node_count; node++) {
    low = hosted[node] < low ? hosted[node] : low;
    high = hosted[node] > high ? hosted[node] : high;
    first_low = first[node] < first_low ? first[node] : first_low;
    first_high = first[node] > first_high ? first[node] : first_high;
  }
  assert_true(high - low <= replicas);
  if (groups % node_count == 0) {
    assert_int_equal(high, low);
    assert_int_equal(high, groups / node_count * replicas);
  }
  assert_true(first_high - first_low <= 1);
  assert_false(cluster_is_member(map, 1, 11));
  assert_int_equal(cluster_members(map, 0, (uint64_t[SERVER_MAX_REPLICAS]){0}), 0);
  assert_int_equal(cluster_members(map, groups + 1ull, (uint64_t[SERVER_MAX_REPLICAS]){0}), 0);
  assert_int_equal(cluster_members(map, SERVER_META_GROUP, (uint64_t[SERVER_MAX_REPLICAS]){0}),
                   replicas);
  cluster_map_destroy(map);
}

static void test_placement_three_of_three(void **state) {
  (void)state;
  assert_placement_balanced(3, 64, 3);
  assert_placement_balanced(3, 3, 3);
}

static void test_placement_three_of_five(void **state) {
  (void)state;
  assert_placement_balanced(5, 64, 3);
  assert_placement_balanced(5, 1000, 3);
  assert_placement_balanced(5, 5, 3);
  assert_placement_balanced(1, 16, 1);
  assert_placement_balanced(SERVER_MAX_NODES, 16384, SERVER_MAX_REPLICAS);
}

static void test_slot_ranges_cover_every_slot_once(void **state) {
  (void)state;
  const uint32_t group_counts[] = {1, 2, 3, 7, 64, 1000, 5461, 16383, 16384};
  for (size_t c = 0; c < sizeof(group_counts) / sizeof(group_counts[0]); c++) {
    uint32_t groups = group_counts[c];
    cluster_map *map = make_map(3, groups, 3);
    assert_int_equal(cluster_group_count(map), groups);
    uint32_t expected_first = 0;
    uint32_t smallest = UINT32_MAX, largest = 0;
    for (uint64_t group = 1; group <= groups; group++) {
      uint32_t first = 0, last = 0;
      cluster_group_slots(map, group, &first, &last);
      assert_int_equal(first, expected_first);
      assert_true(last >= first);
      for (uint32_t slot = first; slot <= last; slot++) {
        assert_int_equal(cluster_group_of_slot(map, slot), group);
      }
      smallest = last - first + 1 < smallest ? last - first + 1 : smallest;
      largest = last - first + 1 > largest ? last - first + 1 : largest;
      expected_first = last + 1;
    }
    assert_int_equal(expected_first, SLOT_COUNT);
    assert_true(largest - smallest <= 1);
    cluster_map_destroy(map);
  }
}

static void test_bad_configurations_are_refused(void **state) {
  (void)state;
  cluster_map *map = (cluster_map *)&map;
  server_config config = make_config(3, 0, 3);
  assert_int_equal(cluster_map_create(&config, &map), -EINVAL);
  assert_null(map);
  config = make_config(3, SLOT_COUNT + 1, 3);
  assert_int_equal(cluster_map_create(&config, &map), -EINVAL);
  config = make_config(3, 64, 4);
  assert_int_equal(cluster_map_create(&config, &map), -EINVAL);
  config = make_config(3, 64, 0);
  assert_int_equal(cluster_map_create(&config, &map), -EINVAL);
  config = make_config(3, 64, 3);
  config.nodes[1].id = config.nodes[0].id;
  assert_int_equal(cluster_map_create(&config, &map), -EINVAL);
  config = make_config(3, 64, 3);
  config.node_id = 11; /* not a configured node */
  assert_int_equal(cluster_map_create(&config, &map), -EINVAL);
  config = make_config(0, 64, 1);
  assert_int_equal(cluster_map_create(&config, &map), -EINVAL);
}

static void test_node_names(void **state) {
  (void)state;
  char name[41];
  cluster_node_name(0x1234abcdull, name);
  assert_string_equal(name, "000000000000000000000000000000001234abcd");
  cluster_node_name(UINT64_MAX, name);
  assert_string_equal(name, "000000000000000000000000ffffffffffffffff");
  assert_string_not_equal(name_of(1), name_of(2));
}

static void test_set_members_overrides_placement(void **state) {
  (void)state;
  cluster_map *map = make_map(5, 8, 3);
  const uint64_t members[] = {50, 40};
  cluster_set_members(map, 3, members, 2);
  uint64_t read[SERVER_MAX_REPLICAS];
  assert_int_equal(cluster_members(map, 3, read), 2);
  assert_int_equal(read[0], 50);
  assert_int_equal(read[1], 40);
  assert_true(cluster_is_member(map, 3, 40));
  assert_false(cluster_is_member(map, 3, 30));
  /* Other groups keep the default placement. */
  assert_int_equal(cluster_members(map, 4, read), 3);
  assert_int_equal(read[0], 40);
  cluster_map_destroy(map);
}

/* ---- leaders and members from several threads ---- */

#define WRITER_THREADS 4
#define ROUNDS 20000

typedef struct race {
  cluster_map *map;
  uint32_t thread;
  _Atomic bool stop;
  _Atomic uint64_t torn;
} race;

/* Thread t writes leaders of the groups g with g % WRITER_THREADS == t,
 * ending with leader t + 1 ... so the final state is known. */
static void *write_leaders(void *argument) {
  race *r = argument;
  for (uint32_t round = 0; round < ROUNDS; round++) {
    for (uint64_t group = r->thread + 1; group <= 64; group += WRITER_THREADS) {
      cluster_set_leader(r->map, group, round + 1 == ROUNDS ? group * 10 : round % 7 + 1);
    }
  }
  return NULL;
}

static const uint64_t set_a[] = {10, 20, 30};
static const uint64_t set_b[] = {50, 40, 30, 20, 10};

/* Readers must see one of the two member lists whole, never a mix. */
static void *read_members(void *argument) {
  race *r = argument;
  while (!atomic_load(&r->stop)) {
    uint64_t members[SERVER_MAX_REPLICAS];
    uint32_t count = cluster_members(r->map, 1, members);
    const uint64_t *expected = count == 3 ? set_a : set_b;
    if ((count != 3 && count != 5) || memcmp(members, expected, count * sizeof(uint64_t)) != 0) {
      atomic_fetch_add(&r->torn, 1);
    }
    uint64_t leader = cluster_leader(r->map, 5);
    if (leader > 7 && leader != 50) {
      atomic_fetch_add(&r->torn, 1);
    }
  }
  return NULL;
}

static void test_leaders_and_members_from_threads(void **state) {
  (void)state;
  cluster_map *map = make_map(5, 64, 3);
  cluster_set_members(map, 1, set_a, 3);
  race races[WRITER_THREADS];
  race reader = {.map = map};
  pthread_t threads[WRITER_THREADS + 1];
  assert_int_equal(pthread_create(&threads[WRITER_THREADS], NULL, read_members, &reader), 0);
  for (uint32_t t = 0; t < WRITER_THREADS; t++) {
    races[t] = (race){.map = map, .thread = t};
    assert_int_equal(pthread_create(&threads[t], NULL, write_leaders, &races[t]), 0);
  }
  for (uint32_t round = 0; round < ROUNDS; round++) {
    cluster_set_members(map, 1, round % 2 ? set_a : set_b, round % 2 ? 3 : 5);
  }
  for (uint32_t t = 0; t < WRITER_THREADS; t++) {
    pthread_join(threads[t], NULL);
  }
  atomic_store(&reader.stop, true);
  pthread_join(threads[WRITER_THREADS], NULL);
  assert_int_equal(atomic_load(&reader.torn), 0);
  for (uint64_t group = 1; group <= 64; group++) {
    assert_int_equal(cluster_leader(map, group), group * 10);
  }
  assert_int_equal(cluster_leader(map, SERVER_META_GROUP), 0);
  cluster_set_leader(map, SERVER_META_GROUP, 20);
  assert_int_equal(cluster_leader(map, SERVER_META_GROUP), 20);
  cluster_set_leader(map, 65, 20); /* not a group of this map: ignored */
  assert_int_equal(cluster_leader(map, 65), 0);
  cluster_map_destroy(map);
}

/* ---- the replies ---- */

/*
 * Nodes 10, 20, 30; 4 groups of 4096 slots on all three:
 *   group 1 [10 20 30] leader 10  -> master 10, replicas 20 30
 *   group 2 [20 30 10] leader 10  -> master 10, replicas 20 30 (joins group 1)
 *   group 3 [30 10 20] leader 20  -> master 20, replicas 30 10
 *   group 4 [10 20 30] no leader  -> master 10 (first member), replicas 20 30
 */
static cluster_map *make_reply_map(void) {
  cluster_map *map = make_map(3, 4, 3);
  cluster_set_leader(map, 1, 10);
  cluster_set_leader(map, 2, 10);
  cluster_set_leader(map, 3, 20);
  return map;
}

static void assert_slots_node(const reply *node, uint64_t id, int protocol) {
  assert_int_equal(node->type, '*');
  assert_int_equal(node->count, 4);
  char host[16];
  snprintf(host, sizeof(host), "127.0.0.%u", (unsigned)(id / 10));
  assert_bulk(node->items[0], host);
  assert_integer(node->items[1], 7000 + (long long)id);
  assert_bulk(node->items[2], name_of(id));
  assert_int_equal(node->items[3]->type, protocol == 3 ? '%' : '*');
  assert_int_equal(node->items[3]->count, 0);
}

static void assert_slots_entry(const reply *entry, long long first, long long last,
                               const uint64_t *nodes, size_t node_count, int protocol) {
  assert_int_equal(entry->type, '*');
  assert_int_equal(entry->count, 2 + node_count);
  assert_integer(entry->items[0], first);
  assert_integer(entry->items[1], last);
  for (size_t i = 0; i < node_count; i++) {
    assert_slots_node(entry->items[2 + i], nodes[i], protocol);
  }
}

static void test_cluster_slots(void **state) {
  (void)state;
  cluster_map *map = make_reply_map();
  for (int protocol = 2; protocol <= 3; protocol++) {
    reply *r = reply_of(map, cluster_write_slots, protocol);
    assert_int_equal(r->type, '*');
    assert_int_equal(r->count, 3);
    assert_slots_entry(r->items[0], 0, 8191, (uint64_t[]){10, 20, 30}, 3, protocol);
    assert_slots_entry(r->items[1], 8192, 12287, (uint64_t[]){20, 30, 10}, 3, protocol);
    assert_slots_entry(r->items[2], 12288, 16383, (uint64_t[]){10, 20, 30}, 3, protocol);
    reply_free(r);
  }
  /* Once group 4 is led by 10 too, its range joins the others. */
  cluster_set_leader(map, 3, 10);
  cluster_set_leader(map, 4, 10);
  reply *r = reply_of(map, cluster_write_slots, 2);
  assert_int_equal(r->count, 3); /* group 3's replicas are 30, 20: not the same */
  assert_slots_entry(r->items[1], 8192, 12287, (uint64_t[]){10, 30, 20}, 3, 2);
  reply_free(r);
  cluster_map_destroy(map);
}

static void test_cluster_slots_single_node_merges_everything(void **state) {
  (void)state;
  cluster_map *map = make_map(1, 16384, 1);
  reply *r = reply_of(map, cluster_write_slots, 2);
  assert_int_equal(r->count, 1);
  assert_slots_entry(r->items[0], 0, 16383, (uint64_t[]){10}, 1, 2);
  reply_free(r);
  cluster_map_destroy(map);
}

static void assert_shard_node(const reply *node, char map_type, uint64_t id, const char *role) {
  char host[16];
  snprintf(host, sizeof(host), "127.0.0.%u", (unsigned)(id / 10));
  assert_int_equal(node->count, 14);
  assert_bulk(map_value(node, map_type, "id"), name_of(id));
  assert_integer(map_value(node, map_type, "port"), 7000 + (long long)id);
  assert_bulk(map_value(node, map_type, "ip"), host);
  assert_bulk(map_value(node, map_type, "endpoint"), host);
  assert_bulk(map_value(node, map_type, "role"), role);
  assert_integer(map_value(node, map_type, "replication-offset"), 0);
  assert_bulk(map_value(node, map_type, "health"), "online");
}

static void assert_shard(const reply *shard, char map_type, const long long *slots,
                         size_t slot_count, const uint64_t *nodes) {
  assert_int_equal(shard->count, 4);
  const reply *slot_list = map_value(shard, map_type, "slots");
  assert_int_equal(slot_list->type, '*');
  assert_int_equal(slot_list->count, slot_count);
  for (size_t i = 0; i < slot_count; i++) {
    assert_integer(slot_list->items[i], slots[i]);
  }
  const reply *node_list = map_value(shard, map_type, "nodes");
  assert_int_equal(node_list->type, '*');
  assert_int_equal(node_list->count, 3);
  for (size_t i = 0; i < 3; i++) {
    assert_shard_node(node_list->items[i], map_type, nodes[i], i == 0 ? "master" : "replica");
  }
}

static void test_cluster_shards(void **state) {
  (void)state;
  cluster_map *map = make_reply_map();
  for (int protocol = 2; protocol <= 3; protocol++) {
    char map_type = protocol == 3 ? '%' : '*';
    reply *r = reply_of(map, cluster_write_shards, protocol);
    assert_int_equal(r->type, '*');
    assert_int_equal(r->count, 2);
    assert_shard(r->items[0], map_type, (long long[]){0, 8191, 12288, 16383}, 4,
                 (uint64_t[]){10, 20, 30});
    assert_shard(r->items[1], map_type, (long long[]){8192, 12287}, 2, (uint64_t[]){20, 30, 10});
    reply_free(r);
  }
  cluster_map_destroy(map);
}

static void test_cluster_nodes(void **state) {
  (void)state;
  cluster_map *map = make_reply_map();
  char expected[1024];
  snprintf(expected, sizeof(expected),
           "%s 127.0.0.1:7010@9010 myself,master - 0 0 1 connected 0-8191 12288-16383\n"
           "%s 127.0.0.2:7020@9020 master - 0 0 2 connected 8192-12287\n"
           "%s 127.0.0.3:7030@9030 master - 0 0 3 connected\n",
           name_of(10), name_of(20), name_of(30));
  reply *r = reply_of(map, cluster_write_nodes, 2);
  assert_bulk(r, expected);
  reply_free(r);
  r = reply_of(map, cluster_write_nodes, 3);
  assert_int_equal(r->type, '=');
  assert_string_equal(r->text, expected);
  reply_free(r);
  /* Leading every other single-slot group: ranges are not joined across gaps. */
  cluster_map_destroy(map);
  map = make_map(2, 16384, 1);
  r = reply_of(map, cluster_write_nodes, 2);
  assert_non_null(strstr(r->text, " connected 0 2 4 6 8 "));
  assert_non_null(strstr(r->text, " 16380 16382\n"));
  assert_non_null(strstr(r->text, " connected 1 3 5 "));
  reply_free(r);
  cluster_map_destroy(map);
}

static void test_cluster_info(void **state) {
  (void)state;
  cluster_map *map = make_reply_map();
  const char *expected_format = "cluster_state:%s\r\n"
                                "cluster_slots_assigned:16384\r\n"
                                "cluster_slots_ok:%u\r\n"
                                "cluster_slots_pfail:0\r\n"
                                "cluster_slots_fail:%u\r\n"
                                "cluster_known_nodes:3\r\n"
                                "cluster_size:%u\r\n"
                                "cluster_current_epoch:3\r\n"
                                "cluster_my_epoch:1\r\n"
                                "cluster_stats_messages_sent:0\r\n"
                                "cluster_stats_messages_received:0\r\n"
                                "total_cluster_links_buffer_limit_exceeded:0\r\n";
  char expected[1024];
  snprintf(expected, sizeof(expected), expected_format, "fail", 12288u, 4096u, 2u);
  reply *r = reply_of(map, cluster_write_info, 2);
  assert_bulk(r, expected);
  reply_free(r);
  cluster_set_leader(map, 4, 30);
  snprintf(expected, sizeof(expected), expected_format, "ok", 16384u, 0u, 3u);
  r = reply_of(map, cluster_write_info, 3);
  assert_int_equal(r->type, '=');
  assert_string_equal(r->text, expected);
  reply_free(r);
  /* A leader the configuration does not know counts as no leader. */
  cluster_set_leader(map, 4, 99);
  r = reply_of(map, cluster_write_info, 2);
  assert_non_null(strstr(r->text, "cluster_state:fail\r\n"));
  reply_free(r);
  cluster_map_destroy(map);
}

static void test_writer_limit_is_reported(void **state) {
  (void)state;
  cluster_map *map = make_map(5, 1000, 3);
  resp_writer writer;
  resp_writer_init(&writer, 256);
  assert_int_equal(cluster_write_slots(map, &writer), -ENOBUFS);
  resp_writer_destroy(&writer);
  cluster_map_destroy(map);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_placement_three_of_three),
      cmocka_unit_test(test_placement_three_of_five),
      cmocka_unit_test(test_slot_ranges_cover_every_slot_once),
      cmocka_unit_test(test_bad_configurations_are_refused),
      cmocka_unit_test(test_node_names),
      cmocka_unit_test(test_set_members_overrides_placement),
      cmocka_unit_test(test_leaders_and_members_from_threads),
      cmocka_unit_test(test_cluster_slots),
      cmocka_unit_test(test_cluster_slots_single_node_merges_everything),
      cmocka_unit_test(test_cluster_shards),
      cmocka_unit_test(test_cluster_nodes),
      cmocka_unit_test(test_cluster_info),
      cmocka_unit_test(test_writer_limit_is_reported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
