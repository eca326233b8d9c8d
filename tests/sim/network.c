/*
 * network.c - the event queue of the simulator: messages in flight, write
 * completions, persisted notifications and transport reports.
 *
 * Faults of the network (drop, duplicate, delay, partitions) are decided
 * when a message is sent; a partition also stops messages already in
 * flight when they arrive. Reordering needs no rule of its own: latencies
 * are random, so later messages often overtake earlier ones.
 */
#include <stdlib.h>
#include <string.h>

#include "tests/sim/sim_internal.h"

static bool event_before(const sim_event *a, const sim_event *b) {
  return a->moment != b->moment ? a->moment < b->moment : a->order < b->order;
}

static void swap_events(sim_event *a, sim_event *b) {
  sim_event t = *a;
  *a = *b;
  *b = t;
}

void sim_events_init(sim *s) {
  s->event_capacity = 1024;
  s->event_count = 0;
  s->events = malloc(s->event_capacity * sizeof(*s->events));
  if (s->events == NULL) {
    abort();
  }
}

void sim_events_destroy(sim *s) {
  for (size_t i = 0; i < s->event_count; i++) {
    tenvelope_destroy(s->events[i].envelope);
  }
  free(s->events);
  s->events = NULL;
  s->event_count = 0;
}

void sim_event_push(sim *s, sim_event event) {
  if (s->event_count == s->event_capacity) {
    s->event_capacity *= 2;
    s->events = realloc(s->events, s->event_capacity * sizeof(*s->events));
    if (s->events == NULL) {
      abort();
    }
  }
  event.order = trandom_next(&s->random);
  size_t i = s->event_count++;
  s->events[i] = event;
  while (i > 0 && event_before(&s->events[i], &s->events[(i - 1) / 2])) {
    swap_events(&s->events[i], &s->events[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
}

static sim_event pop_event(sim *s) {
  sim_event top = s->events[0];
  s->events[0] = s->events[--s->event_count];
  size_t i = 0;
  for (;;) {
    size_t smallest = i;
    size_t left = 2 * i + 1;
    size_t right = left + 1;
    if (left < s->event_count && event_before(&s->events[left], &s->events[smallest])) {
      smallest = left;
    }
    if (right < s->event_count && event_before(&s->events[right], &s->events[smallest])) {
      smallest = right;
    }
    if (smallest == i) {
      return top;
    }
    swap_events(&s->events[i], &s->events[smallest]);
    i = smallest;
  }
}

bool sim_is_blocked(const sim *s, uint32_t from, uint32_t to) {
  return from <= SIM_MAX_NODES && to <= SIM_MAX_NODES && s->blocked[from][to];
}

void sim_heal(sim *s) {
  memset(s->blocked, 0, sizeof(s->blocked));
  if (s->partitioned) {
    sim_trace(s, "heal: every partition is gone");
  }
  s->partitioned = false;
}

/* ---- sending ---- */

static uint64_t message_latency(sim *s) {
  uint64_t latency = trandom_range(&s->random, 1, s->faults.latency_moments);
  if (s->chaos && trandom_chance(&s->random, s->faults.delay)) {
    latency += trandom_below(&s->random, s->faults.delay_moments + 1);
  }
  return latency;
}

static void trace_message(sim *s, const char *what, const fl_raft_message *m) {
  if (s->config.trace == NULL) {
    return;
  }
  sim_trace(s,
            "%s %s %llu->%llu term=%llu index=%llu log_term=%llu commit=%llu entries=%u "
            "reject=%d context=%llu",
            what, fl_raft_message_type_name(m->type), (unsigned long long)m->from,
            (unsigned long long)m->to, (unsigned long long)m->term, (unsigned long long)m->index,
            (unsigned long long)m->log_term, (unsigned long long)m->commit, m->entry_count,
            m->reject, (unsigned long long)m->context);
}

static void drop_message(sim *s, tenvelope *envelope, const char *why) {
  const fl_raft_message *m = &envelope->message;
  s->result->stats.dropped++;
  trace_message(s, why, m);
  /* The transport would notice a snapshot it could not stream. */
  if (m->type == FL_RAFT_MSG_SNAPSHOT) {
    sim_event_push(s, (sim_event){.moment = s->moment + 1,
                                  .kind = SIM_EVENT_SNAPSHOT_REPORT,
                                  .node = (uint32_t)m->from,
                                  .incarnation = envelope->sender_incarnation,
                                  .peer = m->to,
                                  .value = 0});
  }
  tenvelope_destroy(envelope);
}

static void enqueue_message(sim *s, tenvelope *envelope) {
  s->in_flight++;
  sim_event_push(s, (sim_event){.moment = s->moment + message_latency(s),
                                .kind = SIM_EVENT_MESSAGE,
                                .node = (uint32_t)envelope->message.to,
                                .envelope = envelope});
}

static void maybe_report_unreachable(sim *s, const fl_raft_message *m, uint64_t incarnation) {
  if (trandom_chance(&s->random, s->faults.unreachable)) {
    sim_event_push(s, (sim_event){.moment = s->moment + 1,
                                  .kind = SIM_EVENT_UNREACHABLE,
                                  .node = (uint32_t)m->from,
                                  .incarnation = incarnation,
                                  .peer = m->to});
  }
}

static void send_message(sim *s, tenvelope *envelope) {
  const fl_raft_message *m = &envelope->message;
  if (m->to == 0 || m->to > s->slot_count || s->slots[m->to].node == NULL) {
    drop_message(s, envelope, "drop (no such node)");
    return;
  }
  if (sim_is_blocked(s, (uint32_t)m->from, (uint32_t)m->to)) {
    maybe_report_unreachable(s, m, envelope->sender_incarnation);
    drop_message(s, envelope, "drop (partition)");
    return;
  }
  if ((s->chaos && trandom_chance(&s->random, s->faults.drop)) ||
      s->in_flight >= SIM_MAX_IN_FLIGHT) {
    drop_message(s, envelope, "drop");
    return;
  }
  if (s->chaos && trandom_chance(&s->random, s->faults.duplicate) &&
      s->in_flight + 1 < SIM_MAX_IN_FLIGHT) {
    s->result->stats.duplicated++;
    enqueue_message(s, tenvelope_clone(envelope));
  }
  if (m->type == FL_RAFT_MSG_SNAPSHOT) {
    s->result->stats.snapshots_sent++;
  }
  enqueue_message(s, envelope);
}

void sim_send_outbox(sim *s, uint32_t id) {
  tnode *node = s->slots[id].node;
  for (tenvelope *e = tnode_take_message(node); e != NULL; e = tnode_take_message(node)) {
    send_message(s, e);
  }
}

void sim_schedule_write(sim *s, tnode *node, uint64_t write_id) {
  uint32_t id = (uint32_t)tnode_id(node);
  sim_slot *slot = &s->slots[id];
  uint64_t latency = trandom_range(&s->random, 1, s->faults.write_moments);
  if (s->chaos && trandom_chance(&s->random, s->faults.write_delay)) {
    latency += trandom_below(&s->random, s->faults.slow_moments + 1);
  }
  uint64_t moment = s->moment + latency;
  /* A disk completes writes in the order they were queued. */
  if (moment < slot->last_write_moment) {
    moment = slot->last_write_moment;
  }
  slot->last_write_moment = moment;
  sim_event_push(s, (sim_event){.moment = moment,
                                .kind = SIM_EVENT_WRITE,
                                .node = id,
                                .incarnation = tnode_incarnation(node),
                                .value = write_id});
}

/* ---- delivery ---- */

static void deliver_message(sim *s, tenvelope *envelope) {
  const fl_raft_message *m = &envelope->message;
  uint32_t to = (uint32_t)m->to;
  s->in_flight--;
  if (!sim_is_live(s, to)) {
    /* A transport notices a peer that refuses connections. */
    maybe_report_unreachable(s, m, envelope->sender_incarnation);
    drop_message(s, envelope, "drop (node down)");
    return;
  }
  if (sim_is_blocked(s, (uint32_t)m->from, to)) {
    drop_message(s, envelope, "drop (partition)");
    return;
  }
  s->result->stats.delivered++;
  trace_message(s, "deliver", m);
  if (m->type == FL_RAFT_MSG_SNAPSHOT) {
    sim_event_push(s, (sim_event){.moment = s->moment + 1,
                                  .kind = SIM_EVENT_SNAPSHOT_REPORT,
                                  .node = (uint32_t)m->from,
                                  .incarnation = envelope->sender_incarnation,
                                  .peer = to,
                                  .value = 1});
  }
  sim_after_input(s, to, tnode_step(s->slots[to].node, envelope));
}

/* Completes the node's oldest write: writes due at the same moment run in
 * any order, but the disk finishes them in queue order. */
static void complete_write(sim *s, const sim_event *event) {
  tnode *node = s->slots[event->node].node;
  uint64_t write_id = 0;
  int result = tnode_complete_write(node, &write_id);
  if (write_id == 0) {
    sim_violation(s, "node %u: a write was due but none was pending", event->node);
    return;
  }
  sim_trace(s, "durable node %u write %llu", event->node, (unsigned long long)write_id);
  uint64_t delay = trandom_below(&s->random, SIM_MOMENTS_PER_TICK);
  if (s->chaos && trandom_chance(&s->random, s->faults.notify_delay)) {
    delay += trandom_below(&s->random, s->faults.slow_moments + 1);
  }
  sim_event_push(s, (sim_event){.moment = s->moment + delay,
                                .kind = SIM_EVENT_PERSISTED,
                                .node = event->node,
                                .incarnation = event->incarnation,
                                .value = write_id});
  sim_after_input(s, event->node, result);
}

/* Events addressed to an earlier run of a node died with it. */
static bool same_run(const sim *s, const sim_event *event) {
  return sim_is_live(s, event->node) &&
         tnode_incarnation(s->slots[event->node].node) == event->incarnation;
}

static void run_event(sim *s, sim_event *event) {
  tnode *node = event->node <= s->slot_count ? s->slots[event->node].node : NULL;
  switch (event->kind) {
  case SIM_EVENT_MESSAGE:
    deliver_message(s, event->envelope);
    break;
  case SIM_EVENT_WRITE:
    if (same_run(s, event)) {
      complete_write(s, event);
    }
    break;
  case SIM_EVENT_PERSISTED:
    if (same_run(s, event)) {
      sim_trace(s, "persisted node %u write %llu", event->node, (unsigned long long)event->value);
      sim_after_input(s, event->node, tnode_persisted(node, event->value));
    }
    break;
  case SIM_EVENT_SNAPSHOT_REPORT:
    if (same_run(s, event)) {
      fl_raft_report_snapshot(tnode_raft(node), event->peer, event->value != 0);
      sim_after_input(s, event->node, tnode_drain(node));
    }
    break;
  case SIM_EVENT_UNREACHABLE:
    if (same_run(s, event)) {
      fl_raft_report_unreachable(tnode_raft(node), event->peer);
      sim_after_input(s, event->node, tnode_drain(node));
    }
    break;
  }
}

void sim_run_due_events(sim *s) {
  while (!s->failed && s->event_count > 0 && s->events[0].moment <= s->moment) {
    sim_event event = pop_event(s);
    run_event(s, &event);
  }
}
