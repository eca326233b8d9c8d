/*
 * node.h - an in-memory Raft node for scenario tests, fuzzers and the
 * simulator: one fl_raft plus everything a driver keeps around it.
 *
 * A tnode owns:
 *   - the volatile log the core reads through fl_raft_storage, the hard
 *     state, the state machine and the latest snapshot (what a process has
 *     in memory);
 *   - the durable log, durable hard state and durable snapshot (what a
 *     crash keeps);
 *   - a FIFO of pending writes: each update's write becomes durable only
 *     when the caller completes it with tnode_complete_write(), in order;
 *   - an outbox of deep-copied messages for the caller's network.
 *
 * It does not decide time: the caller (a test or the simulator) chooses
 * when writes complete, when fl_raft_persisted() is delivered, when
 * messages arrive and when the node crashes. Every input function drives
 * the core until it has no update left (tnode_drain), so after any call the
 * node is quiescent and its outbox holds what it sent.
 *
 * Ownership: a tnode owns everything reachable from it. Pointers returned
 * by accessors stay valid until the next call that changes the node.
 * Messages taken from the outbox belong to the caller. Not thread-safe.
 *
 * Errors: a driver-contract breach by the core (an update the driver
 * cannot apply, such as a gap in committed entries) is recorded as the
 * node's error text; input functions then return -1. The core's own
 * refusals (FL_RAFT_E_*) are returned as they are.
 */
#ifndef FLOTILLA_TESTS_NODE_H
#define FLOTILLA_TESTS_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"
#include "tests/support/envelope.h"
#include "tests/support/log.h"
#include "tests/support/state_machine.h"

typedef struct tnode tnode;

/* Commands one tnode_propose() call may carry. */
#define TNODE_MAX_PROPOSAL_BATCH 64

/*
 * Callbacks that let a checker see each step of the driving loop; every
 * field may be NULL. They run inside tnode_drain() and must not call back
 * into the same node, except the read-only accessors.
 */
typedef struct tnode_observer {
  void *context;
  /* An update was stored in the volatile log (snapshot, entries, hard
   * state), before its entries are applied. */
  void (*on_update)(void *context, tnode *node, const fl_raft_update *update);
  /* One entry was appended to the volatile log. */
  void (*on_append)(void *context, tnode *node, uint64_t index, const tlog_entry *entry);
  /* A snapshot received from a peer was installed in the volatile state. */
  void (*on_snapshot)(void *context, tnode *node, const tstate *state);
  /* One committed entry was applied; `state` is the state after it. */
  void (*on_apply)(void *context, tnode *node, const fl_raft_entry *entry, const tstate *state);
  /* A write was queued: the caller decides when it completes. */
  void (*on_write)(void *context, tnode *node, uint64_t write_id);
} tnode_observer;

typedef struct tnode_config {
  uint64_t id;                      /* never 0 */
  const fl_raft_options *options;   /* borrowed for the node's lifetime */
  uint64_t seed;                    /* mixed with id and incarnation for the core */
  const fl_raft_conf *initial_conf; /* NULL: a joiner that learns its configuration */
  const tnode_observer *observer;   /* borrowed, may be NULL */
} tnode_config;

/* A node at index 0 (bootstrapped with initial_conf, or an empty joiner),
 * running. NULL when the core refuses the configuration. */
tnode *tnode_create(const tnode_config *config);
void tnode_destroy(tnode *node);

/*
 * Creates `count` bootstrapped nodes with ids 1..count whose initial
 * configuration has them all as voters. Fills nodes[0..count). Returns 0,
 * or -1 (and creates none) when count is 0, above FL_RAFT_MAX_VOTERS or a
 * node cannot be created.
 */
int tnode_create_cluster(tnode **nodes, uint32_t count, const fl_raft_options *options,
                         uint64_t seed, const tnode_observer *observer);

/* Crash: the core, volatile state, pending writes and the outbox are lost;
 * the durable state stays. The node is down until tnode_restart(). */
void tnode_crash(tnode *node);
/*
 * Restarts a down node from its durable state: fl_raft_restore is built
 * from the durable snapshot, the term runs of the durable log and the
 * durable hard state; applied = snapshot index, so the core replays the
 * committed entries into the state machine. Returns 0 or -1 (error text).
 */
int tnode_restart(tnode *node);

/* Inputs. Each drives the core until it has no update left. */
int tnode_tick(tnode *node);
/* Delivers a message; takes ownership of `envelope` (it stays alive until
 * the core's next advance, as fl_raft_step() requires). */
int tnode_step(tnode *node, tenvelope *envelope);
/* Proposes at most TNODE_MAX_PROPOSAL_BATCH commands; the payloads are
 * copied. Returns the core's result (0 or FL_RAFT_E_*). */
int tnode_propose(tnode *node, const uint8_t *const *data, const uint32_t *lengths, uint32_t count);
/* Completes the oldest pending write: its content becomes durable and its
 * messages_after_write move to the outbox. *write_id names it for
 * tnode_persisted(). Returns 0, or -1 when no write is pending. */
int tnode_complete_write(tnode *node, uint64_t *write_id);
/* Delivers the core's fl_raft_persisted(write_id). */
int tnode_persisted(tnode *node, uint64_t write_id);
/*
 * Takes a snapshot of the state machine at the applied index, makes it
 * durable at once (as a snapshot file written before compaction would be)
 * and compacts the core and both logs up to it. Returns 0, 1 when there is
 * nothing new to snapshot, or the core's error from fl_raft_compact().
 */
int tnode_take_snapshot(tnode *node);
/* Drives the core after the caller used tnode_raft() directly. */
int tnode_drain(tnode *node);

/* Outbox: the oldest message not yet taken, or NULL. The caller owns it. */
tenvelope *tnode_take_message(tnode *node);

/* Accessors. */
uint64_t tnode_id(const tnode *node);
bool tnode_is_up(const tnode *node);
/* The core, for the calls this API does not wrap; NULL while down. */
fl_raft *tnode_raft(tnode *node);
uint64_t tnode_incarnation(const tnode *node);
const tlog *tnode_log(const tnode *node);
const tlog *tnode_durable_log(const tnode *node);
const tstate *tnode_state(const tnode *node);
const tstate *tnode_durable_snapshot(const tnode *node);
const fl_raft_hard_state *tnode_hard_state(const tnode *node);
const fl_raft_hard_state *tnode_durable_hard_state(const tnode *node);
size_t tnode_pending_writes(const tnode *node);
/* The first contract breach seen, or NULL. */
const char *tnode_error(const tnode *node);

#endif
