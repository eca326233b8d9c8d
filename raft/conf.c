/*
 * conf.c - group configurations: membership tests, change rules and the
 * encoding carried by conf-change entries.
 *
 * A conf-change entry carries the WHOLE resulting configuration, not a delta:
 * a node that joins late and applies the log from anywhere after its own
 * addition ends with the right membership, and applying is idempotent.
 *
 * Encoding (little-endian): u8 version (1), u8 voter_count, u8 outgoing_count,
 * u8 learner_count, u8 auto_leave, 3 zero bytes, then u64 ids: voters,
 * outgoing, learners.
 */
#include "raft/raft_internal.h"

#include <stdlib.h>
#include <string.h>

#define CONF_ENCODING_VERSION 1
#define CONF_HEADER_BYTES 8

static bool list_contains(const uint64_t *list, uint32_t count, uint64_t node) {
  for (uint32_t i = 0; i < count; i++) {
    if (list[i] == node) {
      return true;
    }
  }
  return false;
}

static bool list_remove(uint64_t *list, uint8_t *count, uint64_t node) {
  for (uint32_t i = 0; i < *count; i++) {
    if (list[i] == node) {
      list[i] = list[*count - 1];
      (*count)--;
      return true;
    }
  }
  return false;
}

static bool list_add(uint64_t *list, uint8_t *count, uint32_t bound, uint64_t node) {
  if (list_contains(list, *count, node)) {
    return true;
  }
  if (*count >= bound) {
    return false;
  }
  list[(*count)++] = node;
  return true;
}

void fl_raft_conf_clear(fl_raft_conf *conf) {
  memset(conf, 0, sizeof(*conf));
}

bool fl_raft_conf_is_joint(const fl_raft_conf *conf) {
  return conf->outgoing_count > 0;
}

bool fl_raft_conf_has_voter(const fl_raft_conf *conf, uint64_t node) {
  return list_contains(conf->voters, conf->voter_count, node) ||
         list_contains(conf->outgoing, conf->outgoing_count, node);
}

bool fl_raft_conf_has_learner(const fl_raft_conf *conf, uint64_t node) {
  return list_contains(conf->learners, conf->learner_count, node);
}

bool fl_raft_conf_is_member(const fl_raft_conf *conf, uint64_t node) {
  return fl_raft_conf_has_voter(conf, node) || fl_raft_conf_has_learner(conf, node);
}

static bool same_set(const uint64_t *a, uint32_t a_count, const uint64_t *b, uint32_t b_count) {
  if (a_count != b_count) {
    return false;
  }
  for (uint32_t i = 0; i < a_count; i++) {
    if (!list_contains(b, b_count, a[i])) {
      return false;
    }
  }
  return true;
}

bool fl_raft_conf_equal(const fl_raft_conf *a, const fl_raft_conf *b) {
  return a->auto_leave == b->auto_leave &&
         same_set(a->voters, a->voter_count, b->voters, b->voter_count) &&
         same_set(a->outgoing, a->outgoing_count, b->outgoing, b->outgoing_count) &&
         same_set(a->learners, a->learner_count, b->learners, b->learner_count);
}

bool fl_raft_is_promotable(const fl_raft *r) {
  return fl_raft_has_voter(r, r->id) && r->pending_snapshot == NULL;
}

/* ---- the group's members ------------------------------------------------ */

static uint32_t member_total(const fl_raft_members *m) {
  return (uint32_t)m->voter_count + m->outgoing_count + m->learner_count;
}

bool fl_raft_has_voter(const fl_raft *r, uint64_t node) {
  uint32_t voting = (uint32_t)r->members->voter_count + r->members->outgoing_count;
  return list_contains(r->members->ids, voting, node);
}

void fl_raft_get_conf(const fl_raft *r, fl_raft_conf *out) {
  const fl_raft_members *m = r->members;
  fl_raft_conf_clear(out);
  out->voter_count = m->voter_count;
  out->outgoing_count = m->outgoing_count;
  out->learner_count = m->learner_count;
  out->auto_leave = m->auto_leave;
  const uint64_t *next = m->ids;
  memcpy(out->voters, next, m->voter_count * sizeof(uint64_t));
  next += m->voter_count;
  memcpy(out->outgoing, next, m->outgoing_count * sizeof(uint64_t));
  next += m->outgoing_count;
  memcpy(out->learners, next, m->learner_count * sizeof(uint64_t));
}

static int resize_members(fl_raft *r, uint32_t capacity) {
  assert(capacity <= FL_RAFT_MAX_MEMBERS);
  fl_raft_members *resized =
      realloc(r->members, sizeof(fl_raft_members) + (size_t)capacity * sizeof(uint64_t));
  if (resized == NULL) {
    return FL_RAFT_E_NOMEM;
  }
  if (r->members == NULL) {
    memset(resized, 0, sizeof(*resized));
  }
  resized->capacity = (uint8_t)capacity;
  r->members = resized;
  return 0;
}

int fl_raft_members_reserve(fl_raft *r, uint32_t capacity) {
  if (r->members != NULL && r->members->capacity >= capacity) {
    return 0;
  }
  return resize_members(r, capacity);
}

void fl_raft_set_conf(fl_raft *r, const fl_raft_conf *conf) {
  fl_raft_members *m = r->members;
  assert(fl_raft_conf_is_valid(conf));
  assert((uint32_t)conf->voter_count + conf->outgoing_count + conf->learner_count <= m->capacity);
  m->voter_count = conf->voter_count;
  m->outgoing_count = conf->outgoing_count;
  m->learner_count = conf->learner_count;
  m->auto_leave = conf->auto_leave;
  uint64_t *next = m->ids;
  memcpy(next, conf->voters, conf->voter_count * sizeof(uint64_t));
  next += conf->voter_count;
  memcpy(next, conf->outgoing, conf->outgoing_count * sizeof(uint64_t));
  next += conf->outgoing_count;
  memcpy(next, conf->learners, conf->learner_count * sizeof(uint64_t));
}

void fl_raft_members_fit(fl_raft *r) {
  uint32_t total = member_total(r->members);
  if (total < r->members->capacity) {
    (void)resize_members(r, total); /* keeping the larger one is harmless */
  }
}

size_t fl_raft_conf_encoded_size(const fl_raft_conf *conf) {
  return CONF_HEADER_BYTES +
         8u * ((size_t)conf->voter_count + conf->outgoing_count + conf->learner_count);
}

static uint8_t *put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) {
    p[i] = (uint8_t)(v >> (8 * i));
  }
  return p + 8;
}

static uint64_t get_u64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    v |= (uint64_t)p[i] << (8 * i);
  }
  return v;
}

size_t fl_raft_conf_encode(const fl_raft_conf *conf, uint8_t *buffer, size_t capacity) {
  size_t size = fl_raft_conf_encoded_size(conf);
  if (capacity < size) {
    return 0;
  }
  memset(buffer, 0, CONF_HEADER_BYTES);
  buffer[0] = CONF_ENCODING_VERSION;
  buffer[1] = conf->voter_count;
  buffer[2] = conf->outgoing_count;
  buffer[3] = conf->learner_count;
  buffer[4] = conf->auto_leave ? 1 : 0;
  uint8_t *p = buffer + CONF_HEADER_BYTES;
  for (uint32_t i = 0; i < conf->voter_count; i++) {
    p = put_u64(p, conf->voters[i]);
  }
  for (uint32_t i = 0; i < conf->outgoing_count; i++) {
    p = put_u64(p, conf->outgoing[i]);
  }
  for (uint32_t i = 0; i < conf->learner_count; i++) {
    p = put_u64(p, conf->learners[i]);
  }
  return size;
}

/* Rejects duplicates, zero ids and a learner that is also a voter. */
static bool conf_is_well_formed(const fl_raft_conf *conf) {
  if (conf->voter_count > FL_RAFT_MAX_VOTERS || conf->outgoing_count > FL_RAFT_MAX_VOTERS ||
      conf->learner_count > FL_RAFT_MAX_LEARNERS || conf->auto_leave > 1) {
    return false;
  }
  for (uint32_t i = 0; i < conf->voter_count; i++) {
    if (conf->voters[i] == 0 || list_contains(conf->voters, i, conf->voters[i])) {
      return false;
    }
  }
  for (uint32_t i = 0; i < conf->outgoing_count; i++) {
    if (conf->outgoing[i] == 0 || list_contains(conf->outgoing, i, conf->outgoing[i])) {
      return false;
    }
  }
  for (uint32_t i = 0; i < conf->learner_count; i++) {
    uint64_t node = conf->learners[i];
    if (node == 0 || list_contains(conf->learners, i, node) || fl_raft_conf_has_voter(conf, node)) {
      return false;
    }
  }
  return true;
}

bool fl_raft_conf_is_valid(const fl_raft_conf *conf) {
  return conf_is_well_formed(conf);
}

int fl_raft_conf_decode(const uint8_t *data, size_t length, fl_raft_conf *out) {
  if (length < CONF_HEADER_BYTES || data[0] != CONF_ENCODING_VERSION) {
    return FL_RAFT_E_INVALID;
  }
  fl_raft_conf_clear(out);
  if (data[1] > FL_RAFT_MAX_VOTERS || data[2] > FL_RAFT_MAX_VOTERS ||
      data[3] > FL_RAFT_MAX_LEARNERS || data[4] > 1) {
    return FL_RAFT_E_INVALID;
  }
  out->voter_count = data[1];
  out->outgoing_count = data[2];
  out->learner_count = data[3];
  out->auto_leave = data[4];
  if (length != fl_raft_conf_encoded_size(out)) {
    return FL_RAFT_E_INVALID;
  }
  const uint8_t *p = data + CONF_HEADER_BYTES;
  for (uint32_t i = 0; i < out->voter_count; i++, p += 8) {
    out->voters[i] = get_u64(p);
  }
  for (uint32_t i = 0; i < out->outgoing_count; i++, p += 8) {
    out->outgoing[i] = get_u64(p);
  }
  for (uint32_t i = 0; i < out->learner_count; i++, p += 8) {
    out->learners[i] = get_u64(p);
  }
  return conf_is_well_formed(out) ? 0 : FL_RAFT_E_INVALID;
}

static int apply_one_change(fl_raft_conf *conf, const fl_raft_change *change) {
  switch (change->op) {
  case FL_RAFT_ADD_VOTER:
    list_remove(conf->learners, &conf->learner_count, change->node);
    return list_add(conf->voters, &conf->voter_count, FL_RAFT_MAX_VOTERS, change->node)
               ? 0
               : FL_RAFT_E_INVALID;
  case FL_RAFT_ADD_LEARNER:
    /* Demoting a voter needs a removal first: keeps the rules simple. */
    if (fl_raft_conf_has_voter(conf, change->node)) {
      return FL_RAFT_E_INVALID;
    }
    return list_add(conf->learners, &conf->learner_count, FL_RAFT_MAX_LEARNERS, change->node)
               ? 0
               : FL_RAFT_E_INVALID;
  case FL_RAFT_REMOVE:
    if (!list_remove(conf->voters, &conf->voter_count, change->node) &&
        !list_remove(conf->learners, &conf->learner_count, change->node)) {
      return FL_RAFT_E_INVALID;
    }
    return 0;
  default:
    return FL_RAFT_E_INVALID;
  }
}

/* Voters that differ between the two sets. */
static uint32_t voter_difference(const fl_raft_conf *a, const fl_raft_conf *b) {
  uint32_t differ = 0;
  for (uint32_t i = 0; i < a->voter_count; i++) {
    differ += !list_contains(b->voters, b->voter_count, a->voters[i]);
  }
  for (uint32_t i = 0; i < b->voter_count; i++) {
    differ += !list_contains(a->voters, a->voter_count, b->voters[i]);
  }
  return differ;
}

/*
 * A change of at most one voter is applied directly (any two majorities of
 * the old and new sets intersect); anything larger goes through a joint
 * configuration whose outgoing half is the current voter set.
 */
int fl_raft_conf_apply_changes(const fl_raft_conf *current, const fl_raft_change *changes,
                               uint32_t count, bool auto_leave, fl_raft_conf *out) {
  if (count == 0 || fl_raft_conf_is_joint(current)) {
    return FL_RAFT_E_INVALID;
  }
  *out = *current;
  out->auto_leave = 0;
  for (uint32_t i = 0; i < count; i++) {
    if (changes[i].node == 0) {
      return FL_RAFT_E_INVALID;
    }
    int rc = apply_one_change(out, &changes[i]);
    if (rc != 0) {
      return rc;
    }
  }
  if (out->voter_count == 0) {
    return FL_RAFT_E_INVALID;
  }
  bool joint = count > 1 || voter_difference(current, out) > 1;
  if (joint && voter_difference(current, out) > 0) {
    memcpy(out->outgoing, current->voters, sizeof(current->voters));
    out->outgoing_count = current->voter_count;
    out->auto_leave = auto_leave ? 1 : 0;
  }
  return conf_is_well_formed(out) ? 0 : FL_RAFT_E_INVALID;
}

void fl_raft_conf_leave_joint(const fl_raft_conf *current, fl_raft_conf *out) {
  *out = *current;
  out->outgoing_count = 0;
  out->auto_leave = 0;
  memset(out->outgoing, 0, sizeof(out->outgoing));
}
