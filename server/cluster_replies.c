/*
 * cluster_replies.c - CLUSTER SLOTS, SHARDS, NODES and INFO in Redis 7.0's
 * formats, from one consistent view of the map.
 *
 * The view: every group's slot range with its master (the leader, or when
 * no leader is known the first member, so clients still get a complete map
 * and learn the truth from MOVED/TRYAGAIN) and replicas (the other
 * members), adjacent ranges with the same master and replicas merged.
 * Nodes the configuration does not name cannot be shown (no address), so
 * they are left out; a group none of whose nodes is known leaves its slots
 * unassigned.
 *
 * Each node's config epoch is its position in the id order plus one:
 * stable, distinct (as Redis requires of masters), the same on every node.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/cluster_internal.h"
#include "server/slot.h"

typedef struct slot_range {
  uint32_t first_slot;
  uint32_t last_slot; /* inclusive, as Redis shows ranges */
  uint32_t master;    /* node index */
  uint32_t replica_count;
  uint32_t replicas[SERVER_MAX_REPLICAS]; /* node indexes, members' order */
} slot_range;

typedef struct map_view {
  slot_range *ranges; /* ascending, disjoint */
  uint32_t range_count;
  uint32_t slots_led;                /* slots whose group has a known leader */
  bool leads_some[SERVER_MAX_NODES]; /* by node index */
} map_view;

/* ---- the view ---- */

static uint32_t first_known_member(const cluster_map *map, const uint64_t *members,
                                   uint32_t count) {
  for (uint32_t i = 0; i < count; i++) {
    uint32_t index = cluster_node_index(map, members[i]);
    if (index != CLUSTER_NONE) {
      return index;
    }
  }
  return CLUSTER_NONE;
}

/* The group's master and replicas; false if none of its nodes is known. */
static bool group_range(cluster_map *map, uint64_t group, slot_range *range, bool *led) {
  uint64_t members[SERVER_MAX_REPLICAS];
  uint32_t count = cluster_members(map, group, members);
  uint32_t leader = cluster_node_index(map, cluster_leader(map, group));
  *led = leader != CLUSTER_NONE;
  range->master = *led ? leader : first_known_member(map, members, count);
  if (range->master == CLUSTER_NONE) {
    return false;
  }
  range->replica_count = 0;
  for (uint32_t i = 0; i < count; i++) {
    uint32_t index = cluster_node_index(map, members[i]);
    if (index != CLUSTER_NONE && index != range->master) {
      range->replicas[range->replica_count++] = index;
    }
  }
  cluster_group_slots(map, group, &range->first_slot, &range->last_slot);
  return true;
}

static bool same_nodes(const slot_range *a, const slot_range *b) {
  return a->master == b->master && a->replica_count == b->replica_count &&
         memcmp(a->replicas, b->replicas, a->replica_count * sizeof(a->replicas[0])) == 0;
}

static int view_build(cluster_map *map, map_view *view) {
  memset(view, 0, sizeof(*view));
  view->ranges = malloc(map->group_count * sizeof(slot_range));
  if (view->ranges == NULL) {
    return -ENOMEM;
  }
  for (uint64_t group = 1; group <= map->group_count; group++) {
    slot_range range;
    bool led = false;
    if (!group_range(map, group, &range, &led)) {
      continue;
    }
    if (led) {
      view->slots_led += range.last_slot - range.first_slot + 1;
      view->leads_some[range.master] = true;
    }
    slot_range *previous = view->range_count > 0 ? &view->ranges[view->range_count - 1] : NULL;
    if (previous != NULL && previous->last_slot + 1 == range.first_slot &&
        same_nodes(previous, &range)) {
      previous->last_slot = range.last_slot;
    } else {
      view->ranges[view->range_count++] = range;
    }
  }
  return 0;
}

static void view_free(map_view *view) {
  free(view->ranges);
  view->ranges = NULL;
}

static uint32_t leading_node_count(const cluster_map *map, const map_view *view) {
  uint32_t count = 0;
  for (uint32_t i = 0; i < map->node_count; i++) {
    count += view->leads_some[i] ? 1u : 0u;
  }
  return count;
}

/* ---- CLUSTER SLOTS ---- */

/* [host, port, name, {}] */
static void write_slots_node(const cluster_map *map, uint32_t index, resp_writer *writer) {
  const server_node *node = &map->nodes[index];
  char name[41];
  cluster_node_name(node->id, name);
  resp_write_array_header(writer, 4);
  resp_write_bulk(writer, node->host, strlen(node->host));
  resp_write_integer(writer, node->client_port);
  resp_write_bulk(writer, name, 40);
  resp_write_map_header(writer, 0);
}

int cluster_write_slots(cluster_map *map, resp_writer *writer) {
  map_view view;
  int rc = view_build(map, &view);
  if (rc != 0) {
    return rc;
  }
  resp_write_array_header(writer, view.range_count);
  for (uint32_t r = 0; r < view.range_count; r++) {
    const slot_range *range = &view.ranges[r];
    resp_write_array_header(writer, 3u + range->replica_count);
    resp_write_integer(writer, range->first_slot);
    resp_write_integer(writer, range->last_slot);
    write_slots_node(map, range->master, writer);
    for (uint32_t i = 0; i < range->replica_count; i++) {
      write_slots_node(map, range->replicas[i], writer);
    }
  }
  view_free(&view);
  return writer->error;
}

/* ---- CLUSTER SHARDS ---- */

/* Shards are sets of ranges with the same master and replicas: sort the
 * ranges by their nodes (then by slot) so each shard's ranges are adjacent. */
static int compare_ranges_by_nodes(const void *left, const void *right) {
  const slot_range *a = left;
  const slot_range *b = right;
  if (a->master != b->master) {
    return a->master < b->master ? -1 : 1;
  }
  if (a->replica_count != b->replica_count) {
    return a->replica_count < b->replica_count ? -1 : 1;
  }
  int order = memcmp(a->replicas, b->replicas, a->replica_count * sizeof(a->replicas[0]));
  if (order != 0) {
    return order;
  }
  return (a->first_slot > b->first_slot) - (a->first_slot < b->first_slot);
}

static void write_bulk_text(resp_writer *writer, const char *text) {
  resp_write_bulk(writer, text, strlen(text));
}

static void write_shard_node(const cluster_map *map, uint32_t index, bool master,
                             resp_writer *writer) {
  const server_node *node = &map->nodes[index];
  char name[41];
  cluster_node_name(node->id, name);
  resp_write_map_header(writer, 7);
  write_bulk_text(writer, "id");
  resp_write_bulk(writer, name, 40);
  write_bulk_text(writer, "port");
  resp_write_integer(writer, node->client_port);
  write_bulk_text(writer, "ip");
  write_bulk_text(writer, node->host);
  write_bulk_text(writer, "endpoint");
  write_bulk_text(writer, node->host);
  write_bulk_text(writer, "role");
  write_bulk_text(writer, master ? "master" : "replica");
  write_bulk_text(writer, "replication-offset");
  resp_write_integer(writer, 0);
  write_bulk_text(writer, "health");
  write_bulk_text(writer, "online");
}

/* One shard: ranges[0 .. count) share their nodes. */
static void write_shard(const cluster_map *map, const slot_range *ranges, uint32_t count,
                        resp_writer *writer) {
  resp_write_map_header(writer, 2);
  write_bulk_text(writer, "slots");
  resp_write_array_header(writer, 2u * count);
  for (uint32_t r = 0; r < count; r++) {
    resp_write_integer(writer, ranges[r].first_slot);
    resp_write_integer(writer, ranges[r].last_slot);
  }
  write_bulk_text(writer, "nodes");
  resp_write_array_header(writer, 1u + ranges[0].replica_count);
  write_shard_node(map, ranges[0].master, true, writer);
  for (uint32_t i = 0; i < ranges[0].replica_count; i++) {
    write_shard_node(map, ranges[0].replicas[i], false, writer);
  }
}

int cluster_write_shards(cluster_map *map, resp_writer *writer) {
  map_view view;
  int rc = view_build(map, &view);
  if (rc != 0) {
    return rc;
  }
  qsort(view.ranges, view.range_count, sizeof(slot_range), compare_ranges_by_nodes);
  uint32_t shard_count = 0;
  for (uint32_t r = 0; r < view.range_count; r++) {
    shard_count += r == 0 || !same_nodes(&view.ranges[r - 1], &view.ranges[r]) ? 1u : 0u;
  }
  resp_write_array_header(writer, shard_count);
  uint32_t start = 0;
  for (uint32_t r = 1; r <= view.range_count; r++) {
    if (r == view.range_count || !same_nodes(&view.ranges[start], &view.ranges[r])) {
      write_shard(map, &view.ranges[start], r - start, writer);
      start = r;
    }
  }
  view_free(&view);
  return writer->error;
}

/* ---- text replies (NODES, INFO) ---- */

/* A growing text; sized by what the map holds (at most one line per node,
 * one range per group), so no bound beyond the map's own is needed. */
typedef struct text_buffer {
  char *data;
  size_t length;
  size_t capacity;
  int error;
} text_buffer;

__attribute__((format(printf, 2, 3))) static void text_append(text_buffer *text, const char *format,
                                                              ...) {
  if (text->error != 0) {
    return;
  }
  for (;;) {
    va_list arguments;
    va_start(arguments, format);
    size_t room = text->capacity - text->length;
    int written =
        vsnprintf(text->data == NULL ? NULL : text->data + text->length, room, format, arguments);
    va_end(arguments);
    assert(written >= 0);
    if ((size_t)written < room) {
      text->length += (size_t)written;
      return;
    }
    size_t capacity = text->capacity < 256 ? 256 : text->capacity;
    while (capacity - text->length <= (size_t)written) {
      capacity *= 2;
    }
    char *data = realloc(text->data, capacity);
    if (data == NULL) {
      text->error = -ENOMEM;
      return;
    }
    text->data = data;
    text->capacity = capacity;
  }
}

static int write_text(text_buffer *text, resp_writer *writer) {
  int rc =
      text->error != 0 ? text->error : resp_write_verbatim(writer, "txt", text->data, text->length);
  free(text->data);
  return rc;
}

/* ---- CLUSTER NODES ---- */

/* The slot ranges `index` masters, adjacent ranges joined as Redis shows them. */
static void append_node_slots(const map_view *view, uint32_t index, text_buffer *text) {
  uint32_t first = 0;
  uint32_t last = 0;
  bool open = false;
  for (uint32_t r = 0; r < view->range_count; r++) {
    const slot_range *range = &view->ranges[r];
    if (range->master != index) {
      continue;
    }
    if (open && last + 1 == range->first_slot) {
      last = range->last_slot;
      continue;
    }
    if (open) {
      text_append(text, first == last ? " %u" : " %u-%u", first, last);
    }
    first = range->first_slot;
    last = range->last_slot;
    open = true;
  }
  if (open) {
    text_append(text, first == last ? " %u" : " %u-%u", first, last);
  }
}

/* <id> <ip:port@cport> <flags> <master> <ping-sent> <pong-recv> <config-epoch>
 * <link-state> <slot> ... */
static void append_node_line(const cluster_map *map, const map_view *view, uint32_t index,
                             text_buffer *text) {
  const server_node *node = &map->nodes[index];
  char name[41];
  cluster_node_name(node->id, name);
  bool myself = node->id == map->local_node;
  text_append(text, "%s %s:%u@%u %s - 0 0 %u connected", name, node->host, node->client_port,
              node->peer_port, myself ? "myself,master" : "master", index + 1);
  append_node_slots(view, index, text);
  text_append(text, "\n");
}

int cluster_write_nodes(cluster_map *map, resp_writer *writer) {
  map_view view;
  int rc = view_build(map, &view);
  if (rc != 0) {
    return rc;
  }
  text_buffer text = {0};
  for (uint32_t i = 0; i < map->node_count; i++) {
    append_node_line(map, &view, i, &text);
  }
  view_free(&view);
  return write_text(&text, writer);
}

/* ---- CLUSTER INFO ---- */

int cluster_write_info(cluster_map *map, resp_writer *writer) {
  map_view view;
  int rc = view_build(map, &view);
  if (rc != 0) {
    return rc;
  }
  uint32_t assigned = 0;
  for (uint32_t r = 0; r < view.range_count; r++) {
    assigned += view.ranges[r].last_slot - view.ranges[r].first_slot + 1;
  }
  text_buffer text = {0};
  text_append(&text, "cluster_state:%s\r\n", view.slots_led == SLOT_COUNT ? "ok" : "fail");
  text_append(&text, "cluster_slots_assigned:%u\r\n", assigned);
  text_append(&text, "cluster_slots_ok:%u\r\n", view.slots_led);
  text_append(&text, "cluster_slots_pfail:0\r\n");
  text_append(&text, "cluster_slots_fail:%u\r\n", assigned - view.slots_led);
  text_append(&text, "cluster_known_nodes:%u\r\n", map->node_count);
  text_append(&text, "cluster_size:%u\r\n", leading_node_count(map, &view));
  text_append(&text, "cluster_current_epoch:%u\r\n", map->node_count);
  text_append(&text, "cluster_my_epoch:%u\r\n", cluster_node_index(map, map->local_node) + 1);
  text_append(&text, "cluster_stats_messages_sent:0\r\n");
  text_append(&text, "cluster_stats_messages_received:0\r\n");
  text_append(&text, "total_cluster_links_buffer_limit_exceeded:0\r\n");
  view_free(&view);
  return write_text(&text, writer);
}
