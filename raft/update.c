/*
 * update.c - what the core hands to the driver, and taking it back.
 *
 *   inputs --> (has_update) --get_update--> OUTSTANDING --advance--> inputs
 *
 * While an update is outstanding no input may be given to the group: the
 * update's arrays point into the group's buffers and into unstable entries.
 * Messages that promise durable state (APPEND_RESP, VOTE_RESP) go in
 * messages_after_write. When such messages exist but nothing new must be
 * persisted, an empty write is still issued if earlier writes are in flight:
 * it completes once they do, which is when those messages become true. With
 * no write in flight (has_write false) they may be sent at once.
 */
#include "raft/raft_internal.h"

#include <stdlib.h>
#include <string.h>

static fl_raft_hard_state current_hard_state(const fl_raft *r) {
  return (fl_raft_hard_state){.term = r->term, .vote = r->vote, .commit = r->commit};
}

static bool hard_state_changed(const fl_raft *r) {
  fl_raft_hard_state hs = current_hard_state(r);
  return memcmp(&hs, &r->last_written, sizeof(hs)) != 0;
}

static uint64_t apply_limit(const fl_raft *r) {
  return fl_min_u64(r->commit, r->stable_index);
}

bool fl_raft_has_update(const fl_raft *r) {
  const fl_raft_outbox *outbox = r->outbox;
  bool outbox_busy =
      outbox != NULL && (outbox->messages.count > 0 || outbox->after_write.count > 0 ||
                         outbox->read_states.count > 0);
  return r->soft_state_dirty || hard_state_changed(r) || r->unstable.count > 0 ||
         r->pending_snapshot != NULL || outbox_busy || r->applied < apply_limit(r);
}

static void record_write(fl_raft *r, fl_raft_update *u) {
  u->write_id = ++r->write_sequence;
  uint64_t end = 0;
  if (u->entry_count > 0) {
    end = r->last_index;
  } else if (u->snapshot != NULL) {
    end = u->snapshot->index;
  }
  fl_raft_write w = {.id = u->write_id, .end_index = end, .term = r->term, .vote = r->vote};
  fl_raft_vector *writes = &r->outbox->writes;
  fl_raft_write *slot = fl_raft_vector_push(writes, sizeof(w), FL_RAFT_MAX_WRITES_IN_FLIGHT);
  if (slot == NULL) {
    /* Full: fold into the newest write; both then complete together. */
    slot = &FL_VECTOR_AT(writes, fl_raft_write, writes->count - 1);
    w.end_index = end != 0 ? end : slot->end_index;
  }
  *slot = w;
  r->last_written = current_hard_state(r);
}

static void fill_write(fl_raft *r, fl_raft_update *u) {
  u->hard_state = current_hard_state(r);
  u->hard_state_changed = hard_state_changed(r);
  u->snapshot = r->pending_snapshot;
  u->entries = r->unstable.items;
  u->entry_count = r->unstable.count;
  u->has_write = u->hard_state_changed || u->snapshot != NULL || u->entry_count > 0;
  if (!u->has_write && r->outbox->after_write.count > 0 && r->outbox->writes.count > 0) {
    u->has_write = true; /* an ordering barrier behind the writes in flight */
  }
  if (u->has_write) {
    record_write(r, u);
  }
}

static void link_entries(fl_raft *r, fl_raft_vector *list, const fl_raft_vector *firsts) {
  fl_raft_message *messages = list->items;
  const uint32_t *first = firsts->items;
  fl_raft_entry *pool = r->outbox->entry_pool.items;
  for (uint32_t i = 0; i < list->count; i++) {
    messages[i].entries = first[i] == UINT32_MAX ? NULL : pool + first[i];
  }
}

/* Committed entries the local disk also holds, bounded in count and bytes. */
static void fill_committed(fl_raft *r) {
  uint64_t limit = apply_limit(r);
  r->outbox->committed.count = 0;
  if (r->pending_snapshot != NULL || r->applied >= limit) {
    return;
  }
  uint32_t capacity = (uint32_t)fl_min_u64(limit - r->applied, FL_RAFT_MAX_APPLY_ENTRIES);
  if (fl_raft_vector_reserve(&r->outbox->committed, sizeof(fl_raft_entry), capacity) != 0) {
    return; /* out of memory: retried at the next update */
  }
  uint32_t count = 0;
  if (fl_raft_log_entries(r, r->applied + 1, limit + 1, r->options->max_apply_bytes,
                          r->outbox->committed.items, capacity, &count) == 0) {
    r->outbox->committed.count = count;
  }
}

void fl_raft_get_update(fl_raft *r, fl_raft_update *u) {
  assert(!r->update_outstanding);
  memset(u, 0, sizeof(*u));
  if (fl_raft_outbox_ensure(r) != 0) {
    r->update_outstanding = true; /* out of memory: an empty update */
    return;
  }
  u->role = (fl_raft_role)r->role;
  u->leader = r->leader;
  u->term = r->term;
  r->soft_state_dirty = false;
  fill_write(r, u);
  link_entries(r, &r->outbox->messages, &r->outbox->message_firsts);
  link_entries(r, &r->outbox->after_write, &r->outbox->after_write_firsts);
  u->messages = r->outbox->messages.items;
  u->message_count = r->outbox->messages.count;
  u->messages_after_write = r->outbox->after_write.items;
  u->message_after_write_count = r->outbox->after_write.count;
  fill_committed(r);
  u->committed = r->outbox->committed.items;
  u->committed_count = r->outbox->committed.count;
  u->read_states = r->outbox->read_states.items;
  u->read_state_count = r->outbox->read_states.count;
  r->update_outstanding = true;
}

static void apply_committed(fl_raft *r) {
  const fl_raft_entry *entries = r->outbox->committed.items;
  uint64_t bytes = 0;
  for (uint32_t i = 0; i < r->outbox->committed.count; i++) {
    const fl_raft_entry *e = &entries[i];
    assert(e->index == r->applied + 1);
    r->applied = e->index;
    bytes += e->length;
    if (e->type == FL_RAFT_ENTRY_CONF_CHANGE) {
      fl_raft_apply_conf_entry(r, e);
    }
  }
  if (r->role == FL_RAFT_LEADER) {
    r->uncommitted_bytes -= fl_min_u64(bytes, r->uncommitted_bytes);
  }
}

static void clear_outbox(fl_raft *r) {
  r->outbox->messages.count = 0;
  r->outbox->message_firsts.count = 0;
  r->outbox->after_write.count = 0;
  r->outbox->after_write_firsts.count = 0;
  r->outbox->entry_pool.count = 0;
  r->outbox->read_states.count = 0;
}

void fl_raft_advance(fl_raft *r, const fl_raft_update *u) {
  assert(r->update_outstanding);
  r->update_outstanding = false;
  if (r->outbox == NULL) {
    return; /* the empty update of an allocation failure */
  }
  if (u->snapshot != NULL) {
    r->applied = u->snapshot->index;
    free(r->pending_snapshot);
    r->pending_snapshot = NULL;
  }
  if (u->entry_count > 0) {
    /* The driver stored them: storage serves them from now on. */
    r->unstable.count = 0;
    r->unstable_first = r->last_index + 1;
  }
  clear_outbox(r);
  /* Conf changes may emit messages: they go into the cleared outbox. */
  apply_committed(r);
  r->outbox->committed.count = 0;
  fl_raft_maybe_auto_leave(r);
}
