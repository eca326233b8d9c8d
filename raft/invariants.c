/*
 * invariants.c - introspection and the self-check of one group.
 */
#include "raft/raft_internal.h"

#include <string.h>

void fl_raft_get_status(const fl_raft *r, fl_raft_status *status) {
  memset(status, 0, sizeof(*status));
  status->id = r->id;
  status->role = (fl_raft_role)r->role;
  status->term = r->term;
  status->vote = r->vote;
  status->leader = r->leader;
  status->commit = r->commit;
  status->applied = r->applied;
  status->first_index = r->first_index;
  status->last_index = r->last_index;
  status->stable_index = r->stable_index;
  status->lead_transferee = r->lead_transferee;
  fl_raft_get_conf(r, &status->conf);
}

bool fl_raft_peer_match(const fl_raft *r, uint64_t node, uint64_t *match, uint64_t *next) {
  for (uint32_t i = 0; i < r->progress_count; i++) {
    if (r->progress[i].node == node) {
      *match = r->progress[i].match;
      *next = r->progress[i].next;
      return true;
    }
  }
  return false;
}

#define CHECK(condition)                                                                           \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      *broken = #condition;                                                                        \
      return false;                                                                                \
    }                                                                                              \
  } while (0)

static bool check_log(const fl_raft *r, const char **broken) {
  CHECK(r->first_index >= 1);
  CHECK(r->first_index <= r->last_index + 1);
  CHECK(r->commit <= r->last_index);
  CHECK(r->applied <= r->commit);
  CHECK(r->stable_index <= r->last_index);
  CHECK(r->unstable_first >= r->first_index);
  CHECK(r->unstable_first + r->unstable.count == r->last_index + 1);
  CHECK((r->term_run_count > 0) == (r->last_index >= r->first_index));
  for (uint32_t i = 0; i < r->term_run_count; i++) {
    const fl_raft_term_run *run = &r->term_runs[i];
    CHECK(run->first_index >= r->first_index && run->first_index <= r->last_index);
    CHECK(i > 0 || run->first_index == r->first_index);
    CHECK(i == 0 || (run->first_index > run[-1].first_index && run->term > run[-1].term));
    CHECK(run->term >= r->snapshot_term);
  }
  CHECK(fl_raft_last_term(r) <= r->term);
  const fl_raft_entry *unstable = r->unstable.items;
  for (uint32_t i = 0; i < r->unstable.count; i++) {
    CHECK(unstable[i].index == r->unstable_first + i);
    CHECK(unstable[i].term == fl_raft_term_at(r, unstable[i].index));
  }
  return true;
}

static bool check_progress(const fl_raft *r, const char **broken) {
  for (uint32_t i = 0; i < r->progress_count; i++) {
    const fl_raft_progress *p = &r->progress[i];
    CHECK(p->node != r->id || p->next >= 1);
    CHECK(p->match < p->next);
    if (p->state == FL_PROGRESS_REPLICATE && p->node != r->id) {
      CHECK(p->inflights.count <= r->options->max_inflight_messages);
      uint64_t bytes = 0;
      uint64_t previous = 0;
      for (uint32_t k = 0; k < p->inflights.count; k++) {
        const fl_raft_inflight *f =
            &p->inflights.ring[(p->inflights.start + k) % r->options->max_inflight_messages];
        CHECK(f->last_index >= previous && f->last_index < p->next);
        previous = f->last_index;
        bytes += f->bytes;
      }
      CHECK(bytes == p->inflights.bytes);
    }
  }
  return true;
}

static bool check_role(const fl_raft *r, const char **broken) {
  CHECK(r->role <= FL_RAFT_LEADER);
  if (r->role == FL_RAFT_LEADER) {
    CHECK(r->leader == r->id);
    CHECK(r->vote == r->id);
    CHECK(r->progress != NULL);
    CHECK(fl_raft_has_voter(r, r->id));
  } else {
    CHECK(r->progress == NULL);
    CHECK(r->lead_transferee == 0);
    CHECK(r->outbox == NULL || r->outbox->reads.count == 0);
  }
  if (r->role == FL_RAFT_CANDIDATE) {
    CHECK(r->vote == r->id);
  }
  CHECK((r->votes != NULL) == (r->role == FL_RAFT_CANDIDATE || r->role == FL_RAFT_PRE_CANDIDATE));
  CHECK(r->leader != r->id || r->role == FL_RAFT_LEADER);
  CHECK(r->durable_term <= r->term);
  const fl_raft_vector none = {0};
  const fl_raft_vector *in_flight = r->outbox != NULL ? &r->outbox->writes : &none;
  const fl_raft_write *writes = in_flight->items;
  for (uint32_t i = 0; i < in_flight->count; i++) {
    CHECK(i == 0 || writes[i].id > writes[i - 1].id);
    CHECK(writes[i].end_index <= r->last_index || writes[i].end_index == 0);
  }
  return true;
}

bool fl_raft_check_invariants(const fl_raft *r, const char **broken) {
  const char *ignored = NULL;
  if (broken == NULL) {
    broken = &ignored;
  }
  *broken = NULL;
  return check_log(r, broken) && check_progress(r, broken) && check_role(r, broken);
}
