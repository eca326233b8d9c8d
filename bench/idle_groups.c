/*
 * idle_groups.c - the idle-group memory measurement (see idle_groups.h).
 *
 * The storage of an idle group here is a stand-in for the WAL's per-group
 * index: it remembers the last index and its term, and serves entries as
 * empty ones of that term (all a bootstrap entry is).
 */
#include "bench/idle_groups.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "raft/raft.h"

typedef struct idle_slot {
  fl_raft *raft;
  fl_raft_storage storage;
  uint64_t last_index;
  uint64_t last_term;
} idle_slot;

/* Every group has the same members: one configuration serves all. */
static fl_raft_conf shared_conf;

static int idle_entries(void *context, uint64_t lo, uint64_t hi, uint64_t max_bytes,
                        fl_raft_entry *out, uint32_t out_capacity, uint32_t *out_count) {
  const idle_slot *slot = context;
  (void)max_bytes; /* empty entries: never over a byte budget */
  *out_count = 0;
  if (lo < 1) {
    return FL_RAFT_E_COMPACTED;
  }
  if (hi > slot->last_index + 1) {
    return FL_RAFT_E_UNAVAILABLE;
  }
  for (uint64_t index = lo; index < hi && *out_count < out_capacity; index++) {
    out[(*out_count)++] = (fl_raft_entry){.term = slot->last_term, .index = index};
  }
  return 0;
}

static int idle_snapshot(void *context, fl_raft_snapshot_meta *out) {
  (void)context;
  memset(out, 0, sizeof(*out));
  out->conf = shared_conf;
  return 0;
}

static void drain(idle_slot *slot) {
  while (fl_raft_has_update(slot->raft)) {
    fl_raft_update update;
    fl_raft_get_update(slot->raft, &update);
    if (update.entry_count > 0) {
      slot->last_index = update.entries[update.entry_count - 1].index;
      slot->last_term = update.entries[update.entry_count - 1].term;
    }
    /* Messages go to an imaginary leader: nothing to send. */
    fl_raft_advance(slot->raft, &update);
    if (update.has_write) {
      fl_raft_persisted(slot->raft, update.write_id);
    }
  }
}

/* Replica 2 of a new group, caught up with leader 1 and then left alone. */
static int make_idle_follower(idle_slot *slot, const fl_raft_options *options, uint64_t group) {
  slot->storage =
      (fl_raft_storage){.context = slot, .entries = idle_entries, .snapshot = idle_snapshot};
  fl_raft_restore restore;
  memset(&restore, 0, sizeof(restore));
  restore.snapshot.conf = shared_conf;
  slot->raft = fl_raft_create(2, options, &slot->storage, &restore, group);
  if (slot->raft == NULL) {
    return -1;
  }
  fl_raft_entry first = {.term = 1, .index = 1, .type = FL_RAFT_ENTRY_NORMAL};
  fl_raft_message append = {.type = FL_RAFT_MSG_APPEND,
                            .from = 1,
                            .to = 2,
                            .term = 1,
                            .commit = 1,
                            .entry_count = 1,
                            .entries = &first};
  if (fl_raft_step(slot->raft, &append) != 0) {
    return -1;
  }
  drain(slot);
  fl_raft_shrink(slot->raft);
  fl_raft_status status;
  fl_raft_get_status(slot->raft, &status);
  bool idle = status.role == FL_RAFT_FOLLOWER && status.leader == 1 && status.applied == 1;
  return idle ? 0 : -1;
}

static void destroy_all(idle_slot *slots, uint64_t count) {
  for (uint64_t i = 0; i < count; i++) {
    fl_raft_destroy(slots[i].raft);
  }
  free(slots);
}

int idle_groups_measure(uint64_t count, idle_groups_result *result) {
  memset(result, 0, sizeof(*result));
  memset(&shared_conf, 0, sizeof(shared_conf));
  shared_conf.voter_count = 3;
  for (uint32_t i = 0; i < 3; i++) {
    shared_conf.voters[i] = i + 1;
  }
  fl_raft_options options;
  fl_raft_options_default(&options);
  idle_slot *slots = calloc(count ? count : 1, sizeof(*slots));
  if (slots == NULL) {
    return -1;
  }
  struct mallinfo2 before = mallinfo2();
  uint64_t core_bytes = 0;
  for (uint64_t i = 0; i < count; i++) {
    if (make_idle_follower(&slots[i], &options, i + 1) != 0) {
      destroy_all(slots, count);
      return -1;
    }
    core_bytes += fl_raft_memory_bytes(slots[i].raft);
  }
  struct mallinfo2 after = mallinfo2();
  double heap = (double)(after.uordblks - before.uordblks);
  result->groups = count;
  result->core_bytes_per_group = count ? (double)core_bytes / (double)count : 0;
  result->heap_bytes_per_group = count ? heap / (double)count : 0;
  result->groups_per_gib =
      result->heap_bytes_per_group > 0 ? (double)(1ull << 30) / result->heap_bytes_per_group : 0;
  result->driver_slot_bytes = sizeof(idle_slot);
  destroy_all(slots, count);
  return 0;
}
