/*
 * fuzz_raft_messages.c - one Raft node fed arbitrary messages and calls.
 *
 * The core must reject malformed input, never crash on it nor break its own
 * invariants. Messages are decoded from the fuzzer's bytes with every field
 * either relative to the node's state (its term, last index, commit: what
 * makes a message get past the first checks) or raw 64-bit values, entries
 * with arbitrary indexes, terms, types and payloads (conf-change entries with
 * well-formed or garbage configurations), snapshot metadata with arbitrary
 * configurations. Between messages come ticks, proposals, membership
 * changes, transfers, reads, persisted notifications with any write id,
 * compactions, transport reports, campaigns and restarts.
 *
 * Input layout:
 *   byte 0     options: bit 0 pre-vote, bit 1 check-quorum, bit 2 lease
 *              read, bits 3-7 flow-control limits
 *   byte 1     initial configuration (single voter, 3, 5, joiner, joint)
 *   then       actions: one byte (byte % FM_ACTION_COUNT), then arguments
 *
 * The single_node.h driver checks every update against raft.h's contract
 * and runs fl_raft_check_invariants() after every action; ASan and UBSan
 * catch bad reads. Payload bytes point into the input, which outlives the
 * drain that follows each step, as raft.h requires.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_input.h"
#include "fuzz/fuzz_report.h"
#include "fuzz/single_node.h"
#include "raft/raft.h"

/* Entries one fuzzed APPEND or proposal carries. */
#define FM_MAX_ENTRIES 32
/* Actions one input may run: bounds the time of one input. */
#define FM_MAX_ACTIONS 4000
/* Largest payload of one fuzzed entry. */
#define FM_MAX_PAYLOAD 96

enum fm_action {
  M_STEP,
  M_STEP_AGAIN, /* messages are the main course: two codes of three */
  M_STEP_MORE,
  M_TICK,
  M_PROPOSE,
  M_PROPOSE_CHANGE,
  M_LEAVE_JOINT,
  M_TRANSFER,
  M_READ_INDEX,
  M_PERSISTED,
  M_COMPACT,
  M_REPORT,
  M_CAMPAIGN,
  M_RESTART,
  M_SHRINK,
  FM_ACTION_COUNT
};

/* Buffers that one decoded message points into. */
typedef struct fm_message {
  fl_raft_message message;
  fl_raft_entry entries[FM_MAX_ENTRIES];
  uint8_t confs[FM_MAX_ENTRIES][8 + 8 * (2 * FL_RAFT_MAX_VOTERS + FL_RAFT_MAX_LEARNERS)];
} fm_message;

typedef struct fm_state {
  fuzz_input in;
  sn_node node;
} fm_state;

static fl_raft_status status_of(const fm_state *f) {
  fl_raft_status status;
  fl_raft_get_status(f->node.raft, &status);
  return status;
}

/* ---- values: relative to the node's state, or raw ---- */

static uint64_t pick_term(fm_state *f) {
  uint64_t term = status_of(f).term;
  switch (fuzz_u8(&f->in) % 8) {
  case 0:
    return term + 1;
  case 1:
    return term > 0 ? term - 1 : 0;
  case 2:
    return term + 2 + fuzz_u8(&f->in) % 8;
  case 3:
    return fuzz_u64(&f->in);
  case 4:
    return 0;
  case 5:
    return UINT64_MAX - fuzz_u8(&f->in);
  default:
    return term;
  }
}

static uint64_t pick_index(fm_state *f) {
  fl_raft_status s = status_of(f);
  switch (fuzz_u8(&f->in) % 10) {
  case 0:
    return s.commit;
  case 1:
    return s.first_index - 1;
  case 2:
    return s.last_index + 1 + fuzz_u8(&f->in) % 4;
  case 3:
    return s.last_index - (fuzz_u8(&f->in) % (s.last_index + 1));
  case 4:
    return fuzz_u64(&f->in);
  case 5:
    return 0;
  case 6:
    return UINT64_MAX - fuzz_u8(&f->in);
  case 7:
    return s.applied;
  default:
    return s.last_index;
  }
}

/* Mostly small ids (peers 2..7), sometimes 0, ourselves or anything. */
static uint64_t pick_node(fm_state *f) {
  uint8_t pick = fuzz_u8(&f->in);
  switch (pick % 16) {
  case 0:
    return 0;
  case 1:
    return SN_SELF;
  case 2:
    return fuzz_u64(&f->in);
  default:
    return 2 + pick % 6;
  }
}

static void pick_conf(fm_state *f, fl_raft_conf *conf) {
  memset(conf, 0, sizeof(*conf));
  uint8_t shape = fuzz_u8(&f->in);
  bool raw_counts = (shape & 0xe0) == 0xe0; /* counts past the bounds */
  conf->voter_count = raw_counts ? fuzz_u8(&f->in) : shape % 6;
  conf->outgoing_count = raw_counts ? fuzz_u8(&f->in) : (shape >> 3) % 4;
  conf->learner_count = raw_counts ? fuzz_u8(&f->in) : (shape >> 5) % 3;
  conf->auto_leave = fuzz_u8(&f->in) % 3;
  for (uint32_t i = 0; i < FL_RAFT_MAX_VOTERS; i++) {
    conf->voters[i] = i < conf->voter_count ? pick_node(f) : 0;
    conf->outgoing[i] = i < conf->outgoing_count ? pick_node(f) : 0;
  }
  for (uint32_t i = 0; i < FL_RAFT_MAX_LEARNERS && i < conf->learner_count; i++) {
    conf->learners[i] = pick_node(f);
  }
}

/* ---- messages ---- */

static void pick_payload(fm_state *f, fm_message *out, uint32_t i, uint8_t mode) {
  fl_raft_entry *e = &out->entries[i];
  size_t got = 0;
  switch (mode) {
  case 0:
    e->length = 0;
    e->data = NULL;
    break;
  case 1: {
    /* A configuration, encoded well (its content may still be invalid). */
    fl_raft_conf conf;
    pick_conf(f, &conf);
    conf.voter_count = conf.voter_count % (FL_RAFT_MAX_VOTERS + 1);
    conf.outgoing_count = conf.outgoing_count % (FL_RAFT_MAX_VOTERS + 1);
    conf.learner_count = conf.learner_count % (FL_RAFT_MAX_LEARNERS + 1);
    e->length = (uint32_t)fl_raft_conf_encode(&conf, out->confs[i], sizeof(out->confs[i]));
    e->data = out->confs[i];
    break;
  }
  case 2:
    e->data = fuzz_bytes(&f->in, fuzz_u8(&f->in) % FM_MAX_PAYLOAD, &got);
    e->length = (uint32_t)got;
    break;
  default:
    /* A length without bytes: the core must refuse, never read. */
    e->data = NULL;
    e->length = 1 + fuzz_u8(&f->in) % 16;
    break;
  }
}

static void pick_entry(fm_state *f, fm_message *out, uint32_t i) {
  fl_raft_message *m = &out->message;
  fl_raft_entry *e = &out->entries[i];
  uint8_t mode = fuzz_u8(&f->in);
  uint64_t previous_term = i == 0 ? m->log_term : out->entries[i - 1].term;
  static const uint64_t index_offsets[4] = {0, 0, 1, 0};
  e->index = (mode & 3) == 3 ? fuzz_u64(&f->in) : m->index + 1 + i + index_offsets[mode & 3];
  switch ((mode >> 2) & 3) {
  case 0:
    e->term = previous_term;
    break;
  case 1:
    e->term = m->term;
    break;
  case 2:
    e->term = previous_term + 1;
    break;
  default:
    e->term = pick_term(f);
    break;
  }
  uint8_t type = (mode >> 4) & 3;
  e->type = type < 2    ? FL_RAFT_ENTRY_NORMAL
            : type == 2 ? FL_RAFT_ENTRY_CONF_CHANGE
                        : fuzz_u32(&f->in);
  uint8_t payload = (mode >> 6) & 3;
  if (e->type == FL_RAFT_ENTRY_CONF_CHANGE && payload == 0) {
    payload = 1;
  } else if (e->type != FL_RAFT_ENTRY_CONF_CHANGE && payload == 1) {
    payload = 2;
  }
  pick_payload(f, out, i, payload);
}

static void pick_message(fm_state *f, fm_message *out) {
  fl_raft_message *m = &out->message;
  memset(m, 0, sizeof(*m));
  uint8_t type = fuzz_u8(&f->in);
  m->type = type < 0xf0 ? type % (FL_RAFT_MSG_TYPE_COUNT + 1) : fuzz_u32(&f->in);
  m->from = pick_node(f);
  uint8_t to = fuzz_u8(&f->in) % 8;
  m->to = to < 5 ? SN_SELF : to == 5 ? 0 : pick_node(f);
  m->term = pick_term(f);
  m->index = pick_index(f);
  uint8_t log_term = fuzz_u8(&f->in) % 4;
  m->log_term = log_term < 2 ? fl_raft_term_at(f->node.raft, m->index) : pick_term(f);
  m->commit = fuzz_u8(&f->in) % 2 ? pick_index(f) : m->index;
  uint8_t flags = fuzz_u8(&f->in);
  m->reject = flags & 1;
  m->reject_hint = flags & 2 ? pick_index(f) : 0;
  m->context = flags & 4 ? fuzz_u64(&f->in) : (flags >> 3) % 3;
  if (flags & 0x80) {
    m->snapshot.index = pick_index(f);
    m->snapshot.term = pick_term(f);
    pick_conf(f, &m->snapshot.conf);
  }
  uint32_t count = fuzz_u8(&f->in) % (FM_MAX_ENTRIES + 1);
  count = count > FM_MAX_ENTRIES / 2 ? 0 : count; /* half of the messages carry none */
  for (uint32_t i = 0; i < count; i++) {
    pick_entry(f, out, i);
  }
  m->entry_count = count;
  m->entries = count > 0 || (flags & 0x40) ? out->entries : NULL;
}

/* FLOTILLA_FUZZ_TRACE=1 prints every action: for reading a crash input. */
static void trace_message(const fl_raft_message *m) {
  fprintf(stderr,
          "  step %s (%u) %llu->%llu term=%llu index=%llu log_term=%llu commit=%llu reject=%d "
          "hint=%llu context=%llu entries=%u snapshot=(%llu, term %llu)\n",
          fl_raft_message_type_name(m->type), m->type, (unsigned long long)m->from,
          (unsigned long long)m->to, (unsigned long long)m->term, (unsigned long long)m->index,
          (unsigned long long)m->log_term, (unsigned long long)m->commit, m->reject,
          (unsigned long long)m->reject_hint, (unsigned long long)m->context, m->entry_count,
          (unsigned long long)m->snapshot.index, (unsigned long long)m->snapshot.term);
  for (uint32_t i = 0; i < m->entry_count; i++) {
    fprintf(stderr, "    entry index=%llu term=%llu type=%u length=%u\n",
            (unsigned long long)m->entries[i].index, (unsigned long long)m->entries[i].term,
            m->entries[i].type, m->entries[i].length);
  }
}

static void step(fm_state *f) {
  fm_message *message = malloc(sizeof(*message));
  if (message == NULL) {
    abort();
  }
  pick_message(f, message);
  if (tracing()) {
    trace_message(&message->message);
  }
  fl_raft_step(f->node.raft, &message->message);
  /* The entries stay alive until the advance inside this drain. */
  sn_drain(&f->node);
  free(message);
}

/* ---- the other inputs ---- */

static void propose(fm_state *f) {
  const uint8_t *data[FM_MAX_ENTRIES];
  uint32_t lengths[FM_MAX_ENTRIES];
  uint32_t count = 1 + fuzz_u8(&f->in) % 16;
  for (uint32_t i = 0; i < count; i++) {
    uint8_t mode = fuzz_u8(&f->in);
    size_t got = 0;
    data[i] = fuzz_bytes(&f->in, mode % FM_MAX_PAYLOAD, &got);
    lengths[i] = (uint32_t)got;
    if (mode == 0xff) {
      data[i] = NULL; /* a length without bytes: refused */
      lengths[i] = 8;
    }
  }
  fl_raft_propose(f->node.raft, data, lengths, count);
}

static void propose_change(fm_state *f) {
  fl_raft_change changes[4];
  uint8_t shape = fuzz_u8(&f->in);
  uint32_t count = shape % 4;
  for (uint32_t i = 0; i < count; i++) {
    uint8_t op = fuzz_u8(&f->in);
    changes[i] = (fl_raft_change){.op = op < 0xf0 ? op % 3 : op, .node = pick_node(f)};
  }
  fl_raft_propose_change(f->node.raft, count > 0 ? changes : NULL, count, (shape & 4) != 0);
}

static void persisted(fm_state *f) {
  uint64_t last = f->node.last_write_id;
  uint8_t mode = fuzz_u8(&f->in);
  uint64_t id = last;
  if (mode % 4 == 1) {
    id = last - fuzz_u8(&f->in) % (last + 1); /* late, or a duplicate */
  } else if (mode % 4 == 2) {
    id = fuzz_u64(&f->in);
  } else if (mode % 4 == 3) {
    id = 0;
  }
  fl_raft_persisted(f->node.raft, id);
}

static void compact(fm_state *f) {
  fl_raft_status s = status_of(f);
  uint8_t mode = fuzz_u8(&f->in);
  uint64_t index = s.applied;
  if (mode % 4 == 1) {
    index = s.applied - fuzz_u8(&f->in) % (s.applied + 1);
  } else if (mode % 4 == 2) {
    index = pick_index(f);
  }
  sn_compact(&f->node, index);
}

static void report(fm_state *f) {
  uint8_t mode = fuzz_u8(&f->in);
  uint64_t node = pick_node(f);
  if (mode & 1) {
    fl_raft_report_unreachable(f->node.raft, node);
  } else {
    fl_raft_report_snapshot(f->node.raft, node, (mode & 2) != 0);
  }
}

static void trace_action(const fm_state *f, uint32_t action) {
  static const char *const names[FM_ACTION_COUNT] = {
      "step",           "step",        "step",     "tick",       "propose",
      "propose-change", "leave-joint", "transfer", "read-index", "persisted",
      "compact",        "report",      "campaign", "restart",    "shrink"};
  fl_raft_status s = status_of(f);
  fprintf(stderr,
          "action %s: node %s term=%llu vote=%llu commit=%llu applied=%llu log=[%llu, %llu]\n",
          names[action], fl_raft_role_name(s.role), (unsigned long long)s.term,
          (unsigned long long)s.vote, (unsigned long long)s.commit, (unsigned long long)s.applied,
          (unsigned long long)s.first_index, (unsigned long long)s.last_index);
}

static void run_action(fm_state *f, uint32_t action) {
  fl_raft *raft = f->node.raft;
  if (tracing()) {
    trace_action(f, action);
  }
  switch (action) {
  case M_STEP:
  case M_STEP_AGAIN:
  case M_STEP_MORE:
    step(f);
    break;
  case M_TICK:
    for (uint32_t ticks = 1 + fuzz_u8(&f->in) % 16; ticks > 0; ticks--) {
      fl_raft_tick(raft);
      sn_drain(&f->node);
    }
    break;
  case M_PROPOSE:
    propose(f);
    break;
  case M_PROPOSE_CHANGE:
    propose_change(f);
    break;
  case M_LEAVE_JOINT:
    fl_raft_propose_leave_joint(raft);
    break;
  case M_TRANSFER:
    fl_raft_transfer_leader(raft, pick_node(f));
    break;
  case M_READ_INDEX:
    fl_raft_read_index(raft, fuzz_u64(&f->in));
    break;
  case M_PERSISTED:
    persisted(f);
    break;
  case M_COMPACT:
    compact(f);
    break;
  case M_REPORT:
    report(f);
    break;
  case M_CAMPAIGN:
    fl_raft_campaign(raft);
    break;
  case M_RESTART:
    sn_restart(&f->node);
    break;
  default: /* M_SHRINK */
    fl_raft_shrink(raft);
    break;
  }
  sn_drain(&f->node);
  sn_check(&f->node);
}

/* ---- set-up ---- */

static void pick_options(fm_state *f, fl_raft_options *options) {
  uint8_t bits = fuzz_u8(&f->in);
  fl_raft_options_default(options);
  options->election_ticks = 3;
  options->heartbeat_ticks = 1;
  options->pre_vote = bits & 1;
  options->check_quorum = (bits & 2) != 0;
  options->lease_read = (bits & 6) == 6;
  static const uint32_t entries[4] = {1, 3, 16, 1024};
  static const uint32_t inflight[2] = {1, 256};
  static const uint64_t bytes[4] = {1, 100, 4096, 1u << 20};
  options->max_entries_per_message = entries[(bits >> 3) & 3];
  options->max_inflight_messages = inflight[(bits >> 5) & 1];
  options->max_bytes_per_message = bytes[(bits >> 6) & 3];
  options->max_inflight_bytes = bytes[(bits >> 6) & 3] * 8;
  options->max_uncommitted_bytes = (bits & 0x80) ? 256 : 1u << 20;
  options->max_apply_bytes = (bits & 0x40) ? 1 : 1u << 20;
}

static void pick_initial_conf(fm_state *f, fl_raft_conf *conf) {
  memset(conf, 0, sizeof(*conf));
  uint8_t shape = fuzz_u8(&f->in) % 6;
  static const uint8_t voters[6] = {1, 3, 5, 0, 3, 2};
  conf->voter_count = voters[shape];
  for (uint32_t i = 0; i < conf->voter_count; i++) {
    conf->voters[i] = i + 1;
  }
  if (shape == 4) { /* joint: {1,2,3} and {1,4,5} */
    conf->outgoing_count = 3;
    conf->outgoing[0] = 1;
    conf->outgoing[1] = 4;
    conf->outgoing[2] = 5;
  } else if (shape == 5) { /* a learner of {2,3} */
    conf->voters[0] = 2;
    conf->voters[1] = 3;
    conf->learner_count = 1;
    conf->learners[0] = SN_SELF;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fm_state *f = calloc(1, sizeof(*f));
  if (f == NULL) {
    return 0;
  }
  f->in = (fuzz_input){.data = data, .size = size};
  fl_raft_options options;
  pick_options(f, &options);
  fl_raft_conf conf;
  pick_initial_conf(f, &conf);
  sn_init(&f->node, &options, &conf);
  sn_check(&f->node);
  for (uint32_t actions = 0; actions < FM_MAX_ACTIONS && !fuzz_input_done(&f->in); actions++) {
    run_action(f, fuzz_u8(&f->in) % FM_ACTION_COUNT);
  }
  sn_destroy(&f->node);
  free(f);
  return 0;
}
