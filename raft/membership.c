/*
 * membership.c - configuration changes and leader transfer.
 *
 *   simple (<= 1 voter differs):  C_old --(entry applied)--> C_new
 *   joint:  C_old --(enter applied)--> C_old,new --(leave applied)--> C_new
 *
 * A configuration takes effect when its entry is APPLIED (not appended), and
 * a leader proposes a new change only once the previous one is applied
 * (pending_conf_index <= applied), so every change starts from the applied
 * configuration. With auto_leave the leader proposes the leave entry itself
 * as soon as the joint entry is applied. A leader that is no longer a voter
 * after a change steps down, and so does a candidate: it cannot win.
 *
 * Leader transfer: the leader stops taking proposals, brings the target up
 * to date, then sends TIMEOUT_NOW; the target campaigns at once, skipping
 * pre-vote and overriding the followers' leader lease. The transfer is
 * abandoned after an election timeout.
 */
#include "raft/raft_internal.h"

#include <stdlib.h>

static int propose_conf(fl_raft *r, const fl_raft_conf *conf) {
  size_t size = fl_raft_conf_encoded_size(conf);
  /* The previous buffer's entry is applied, hence stored: safe to reuse. */
  uint8_t *buffer = realloc(r->conf_buffer, size);
  if (buffer == NULL) {
    return FL_RAFT_E_NOMEM;
  }
  r->conf_buffer = buffer;
  fl_raft_conf_encode(conf, buffer, size);
  const uint8_t *data = buffer;
  uint32_t length = (uint32_t)size;
  uint32_t type = FL_RAFT_ENTRY_CONF_CHANGE;
  int rc = fl_raft_append_own(r, &data, &length, &type, 1);
  if (rc != 0) {
    return rc;
  }
  r->pending_conf_index = r->last_index;
  fl_raft_broadcast_append(r);
  return 0;
}

static int check_can_change(const fl_raft *r) {
  if (r->role != FL_RAFT_LEADER) {
    return FL_RAFT_E_NOT_LEADER;
  }
  if (r->lead_transferee != 0) {
    return FL_RAFT_E_TRANSFERRING;
  }
  if (r->pending_conf_index > r->applied) {
    return FL_RAFT_E_CONF_PENDING;
  }
  return 0;
}

int fl_raft_propose_change(fl_raft *r, const fl_raft_change *changes, uint32_t count,
                           bool auto_leave) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return FL_RAFT_E_NOMEM;
  }
  int rc = check_can_change(r);
  if (rc != 0) {
    return rc;
  }
  if (fl_raft_is_joint(r)) {
    return FL_RAFT_E_CONF_PENDING; /* leave the joint configuration first */
  }
  fl_raft_conf current;
  fl_raft_get_conf(r, &current);
  fl_raft_conf next;
  rc = fl_raft_conf_apply_changes(&current, changes, count, auto_leave, &next);
  if (rc != 0) {
    return rc;
  }
  return propose_conf(r, &next);
}

int fl_raft_propose_leave_joint(fl_raft *r) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return FL_RAFT_E_NOMEM;
  }
  int rc = check_can_change(r);
  if (rc != 0) {
    return rc;
  }
  if (!fl_raft_is_joint(r)) {
    return FL_RAFT_E_INVALID;
  }
  fl_raft_conf current;
  fl_raft_get_conf(r, &current);
  fl_raft_conf next;
  fl_raft_conf_leave_joint(&current, &next);
  return propose_conf(r, &next);
}

/*
 * Checked at every advance rather than only when the joint entry is applied:
 * a leader elected in the middle of a joint change inherits the duty.
 */
void fl_raft_maybe_auto_leave(fl_raft *r) {
  if (r->role == FL_RAFT_LEADER && fl_raft_is_joint(r) && r->members->auto_leave &&
      r->pending_conf_index <= r->applied) {
    fl_raft_conf current;
    fl_raft_get_conf(r, &current);
    fl_raft_conf next;
    fl_raft_conf_leave_joint(&current, &next);
    propose_conf(r, &next); /* on failure, retried at the next advance */
  }
}

/* Called at advance for each applied conf-change entry, in log order. */
void fl_raft_apply_conf_entry(fl_raft *r, const fl_raft_entry *entry) {
  fl_raft_conf next;
  if (fl_raft_conf_decode(entry->data, entry->length, &next) != 0) {
    return; /* only a corrupt log gets here; the entry stays inert */
  }
  fl_raft_set_conf(r, &next);
  if (r->role == FL_RAFT_CANDIDATE || r->role == FL_RAFT_PRE_CANDIDATE) {
    /* Votes already granted would count towards the new configuration's
     * quorum: a campaigner it removed must not win with them. */
    if (!fl_raft_is_promotable(r)) {
      fl_raft_become_follower(r, r->term, 0);
    }
    return;
  }
  if (r->role != FL_RAFT_LEADER) {
    return;
  }
  if (!fl_raft_has_voter(r, r->id)) {
    fl_raft_become_follower(r, r->term, 0);
    return;
  }
  if (fl_raft_progress_sync_conf(r) != 0) {
    fl_raft_become_follower(r, r->term, 0);
    return;
  }
  if (r->lead_transferee != 0 && !fl_raft_has_voter(r, r->lead_transferee)) {
    fl_raft_abort_transfer(r);
  }
  if (fl_raft_maybe_commit(r)) {
    fl_raft_broadcast_append(r);
  }
}

void fl_raft_abort_transfer(fl_raft *r) {
  r->lead_transferee = 0;
}

static void send_timeout_now(fl_raft *r, uint64_t node) {
  if (fl_raft_new_message(r, FL_RAFT_MSG_TIMEOUT_NOW, node) != NULL) {
    r->lease_revoked = true;
  }
}

int fl_raft_transfer_leader(fl_raft *r, uint64_t target) {
  assert(!r->update_outstanding);
  if (fl_raft_outbox_ensure(r) != 0) {
    return FL_RAFT_E_NOMEM;
  }
  if (r->role != FL_RAFT_LEADER) {
    return FL_RAFT_E_NOT_LEADER;
  }
  if (target == r->id) {
    fl_raft_abort_transfer(r);
    return 0;
  }
  bool incoming_voter = false;
  for (uint32_t i = 0; i < r->members->voter_count; i++) {
    incoming_voter = incoming_voter || fl_raft_voters(r)[i] == target;
  }
  fl_raft_progress *p = fl_raft_progress_find(r, target);
  if (!incoming_voter || p == NULL) {
    return FL_RAFT_E_NOT_MEMBER;
  }
  if (r->lead_transferee == target) {
    return 0;
  }
  r->lead_transferee = target;
  r->election_elapsed = 0; /* the transfer gets one election timeout */
  if (p->match == r->last_index) {
    send_timeout_now(r, target);
  } else {
    fl_raft_send_append(r, p, true);
  }
  return 0;
}

void fl_raft_check_transfer(fl_raft *r, const fl_raft_progress *p) {
  if (p->node == r->lead_transferee && p->match == r->last_index) {
    send_timeout_now(r, p->node);
  }
}

void fl_raft_handle_timeout_now(fl_raft *r, const fl_raft_message *m) {
  (void)m;
  if (r->role != FL_RAFT_LEADER) {
    fl_raft_start_campaign(r, false, true);
  }
}
