/*
 * progress.c - the leader's view of each member and its flow control.
 *
 *              reject / unreachable            snapshot needed
 *   +-------+ <------------------ +-----------+ -------------> +----------+
 *   | PROBE |                     | REPLICATE |                | SNAPSHOT |
 *   +-------+ ------------------> +-----------+                +----------+
 *       ^        accepted append                                    |
 *       +-----------------------------------------------------------+
 *                 snapshot reported (success or failure), or
 *                 an append response at/after the snapshot index
 *
 * PROBE sends one append and waits (probe_sent) until an answer or a
 * heartbeat response. REPLICATE sends optimistically (next advances on send)
 * while the inflight window has room in messages AND bytes. SNAPSHOT sends
 * nothing until the snapshot outcome is known.
 *
 * Invariants: match < next; in REPLICATE, inflight last indexes ascend and
 * are all < next; inflight bytes equal the sum of the ring.
 */
#include "raft/raft_internal.h"

#include <stdlib.h>
#include <string.h>

static uint32_t member_count(const fl_raft_conf *conf, uint64_t *members) {
  uint32_t count = 0;
  const uint64_t *lists[3] = {conf->voters, conf->outgoing, conf->learners};
  const uint32_t counts[3] = {conf->voter_count, conf->outgoing_count, conf->learner_count};
  for (int l = 0; l < 3; l++) {
    for (uint32_t i = 0; i < counts[l]; i++) {
      bool seen = false;
      for (uint32_t j = 0; j < count; j++) {
        seen = seen || members[j] == lists[l][i];
      }
      if (!seen) {
        members[count++] = lists[l][i];
      }
    }
  }
  return count;
}

static void progress_init(fl_raft *r, fl_raft_progress *p, uint64_t node) {
  memset(p, 0, sizeof(*p));
  p->node = node;
  p->next = r->last_index + 1;
  p->state = FL_PROGRESS_PROBE;
  /* A new member gets a full election timeout before check-quorum counts it. */
  p->recent_active = true;
}

static void inflights_release(fl_raft_inflights *in) {
  free(in->ring);
  memset(in, 0, sizeof(*in));
}

/* An idle leader gives back its followers' inflight rings (a few KiB each):
 * a follower that matched everything goes back to probe, and the ring is
 * allocated again when it next enters replicate. */
void fl_raft_progress_shrink(fl_raft *r) {
  for (uint32_t i = 0; i < r->progress_count; i++) {
    fl_raft_progress *p = &r->progress[i];
    if (p->inflights.ring == NULL || p->inflights.count != 0 || p->match != r->last_index) {
      continue;
    }
    if (p->state == FL_PROGRESS_REPLICATE) {
      fl_raft_progress_become_probe(p);
    }
    if (p->state == FL_PROGRESS_PROBE) {
      inflights_release(&p->inflights);
    }
  }
}

void fl_raft_progress_release(fl_raft *r) {
  for (uint32_t i = 0; i < r->progress_count; i++) {
    inflights_release(&r->progress[i].inflights);
  }
  free(r->progress);
  r->progress = NULL;
  r->progress_count = 0;
}

/* Rebuilds the member list from the configuration, keeping known progress. */
int fl_raft_progress_sync_conf(fl_raft *r) {
  uint64_t members[FL_RAFT_MAX_MEMBERS];
  fl_raft_conf conf;
  fl_raft_get_conf(r, &conf);
  uint32_t count = member_count(&conf, members);
  fl_raft_progress *fresh = calloc(count ? count : 1, sizeof(*fresh));
  if (fresh == NULL) {
    return FL_RAFT_E_NOMEM;
  }
  for (uint32_t i = 0; i < count; i++) {
    fl_raft_progress *old = fl_raft_progress_find(r, members[i]);
    if (old != NULL) {
      fresh[i] = *old;
      memset(&old->inflights, 0, sizeof(old->inflights)); /* moved */
    } else {
      progress_init(r, &fresh[i], members[i]);
    }
  }
  fl_raft_progress_release(r);
  r->progress = fresh;
  r->progress_count = count;
  return 0;
}

int fl_raft_progress_reset(fl_raft *r) {
  fl_raft_progress_release(r);
  int rc = fl_raft_progress_sync_conf(r);
  if (rc != 0) {
    return rc;
  }
  fl_raft_progress *self = fl_raft_progress_find(r, r->id);
  if (self != NULL) {
    self->match = r->stable_index;
    self->state = FL_PROGRESS_REPLICATE;
  }
  return 0;
}

fl_raft_progress *fl_raft_progress_find(fl_raft *r, uint64_t node) {
  for (uint32_t i = 0; i < r->progress_count; i++) {
    if (r->progress[i].node == node) {
      return &r->progress[i];
    }
  }
  return NULL;
}

static void inflights_reset(fl_raft_inflights *in) {
  in->start = 0;
  in->count = 0;
  in->bytes = 0;
}

void fl_raft_progress_become_probe(fl_raft_progress *p) {
  /* After a snapshot, resume right after it. */
  if (p->state == FL_PROGRESS_SNAPSHOT) {
    p->next = fl_max_u64(p->match + 1, p->pending_snapshot + 1);
  } else {
    p->next = p->match + 1;
  }
  p->state = FL_PROGRESS_PROBE;
  p->probe_sent = false;
  p->pending_snapshot = 0;
  inflights_reset(&p->inflights);
}

int fl_raft_progress_become_replicate(fl_raft *r, fl_raft_progress *p) {
  if (p->inflights.ring == NULL) {
    p->inflights.ring = calloc(r->options->max_inflight_messages, sizeof(fl_raft_inflight));
    if (p->inflights.ring == NULL) {
      return FL_RAFT_E_NOMEM;
    }
  }
  p->state = FL_PROGRESS_REPLICATE;
  p->next = p->match + 1;
  p->probe_sent = false;
  p->pending_snapshot = 0;
  inflights_reset(&p->inflights);
  return 0;
}

void fl_raft_progress_become_snapshot(fl_raft_progress *p, uint64_t snapshot_index) {
  p->state = FL_PROGRESS_SNAPSHOT;
  p->pending_snapshot = snapshot_index;
  p->probe_sent = false;
  inflights_reset(&p->inflights);
}

/* An accepted append up to `index`; false when it tells nothing new. */
bool fl_raft_progress_maybe_update(fl_raft_progress *p, uint64_t index) {
  bool updated = false;
  if (p->match < index) {
    p->match = index;
    updated = true;
    p->probe_sent = false;
  }
  p->next = fl_max_u64(p->next, index + 1);
  return updated;
}

/*
 * A rejection of the append after `rejected`; `hint` is the highest index
 * that may still match. False when the rejection is stale (out of order).
 */
bool fl_raft_progress_maybe_decrease(fl_raft_progress *p, uint64_t rejected, uint64_t hint) {
  if (p->state == FL_PROGRESS_REPLICATE) {
    if (rejected <= p->match) {
      return false;
    }
    p->next = p->match + 1;
    return true;
  }
  if (p->next - 1 != rejected) {
    return false;
  }
  p->next = fl_max_u64(fl_min_u64(rejected, hint + 1), p->match + 1);
  p->probe_sent = false;
  return true;
}

bool fl_raft_progress_is_paused(const fl_raft *r, const fl_raft_progress *p) {
  switch (p->state) {
  case FL_PROGRESS_PROBE:
    return p->probe_sent;
  case FL_PROGRESS_REPLICATE:
    return p->inflights.count >= r->options->max_inflight_messages ||
           p->inflights.bytes >= r->options->max_inflight_bytes;
  default:
    return true;
  }
}

void fl_raft_progress_sent(fl_raft *r, fl_raft_progress *p, uint64_t last_index, uint64_t bytes) {
  if (p->state == FL_PROGRESS_PROBE) {
    p->probe_sent = true;
    return;
  }
  assert(p->state == FL_PROGRESS_REPLICATE);
  if (last_index < p->next) {
    return; /* an empty append carries the commit index only */
  }
  p->next = last_index + 1;
  fl_raft_inflights *in = &p->inflights;
  uint32_t capacity = r->options->max_inflight_messages;
  assert(in->count < capacity);
  uint32_t slot = (in->start + in->count) % capacity;
  in->ring[slot] = (fl_raft_inflight){.last_index = last_index, .bytes = bytes};
  in->count++;
  in->bytes += bytes;
}

/* Frees every inflight message acknowledged by a response up to `index`. */
void fl_raft_inflights_free_to(fl_raft_inflights *in, uint32_t capacity, uint64_t index) {
  while (in->count > 0 && in->ring[in->start].last_index <= index) {
    in->bytes -= in->ring[in->start].bytes;
    in->start = (in->start + 1) % capacity;
    in->count--;
  }
}

void fl_raft_inflights_free_first(fl_raft_inflights *in, uint32_t capacity) {
  if (in->count > 0) {
    fl_raft_inflights_free_to(in, capacity, in->ring[in->start].last_index);
  }
}
