/*
 * net.h - a small deterministic network of tnodes for the scenario tests.
 *
 * The tests decide everything: when nodes tick, when messages move, which
 * links are cut, which writes become durable. tnet_deliver() moves every
 * pending message (FIFO per sender, senders in id order) until the network
 * is quiet; by default it also completes every pending write, unless the
 * test holds a node's writes to drive persistence by hand.
 *
 * After every input given to a node the helper checks, with cmocka
 * assertions: fl_raft_check_invariants(), that the tnode saw no driver
 * contract breach, and that no term ever has two leaders.
 *
 * Node ids are 1..TNET_MAX_NODES. Messages to an id without a node (the
 * fake leader of crafted logs, for instance) are dropped.
 *
 * Debugging: TNET_TRACE=1 in the environment prints every message moved.
 */
#ifndef FLOTILLA_TESTS_RAFT_NET_H
#define FLOTILLA_TESTS_RAFT_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "raft/raft.h"
#include "tests/support/node.h"

#define TNET_MAX_NODES 9
/* Read states remembered per node. */
#define TNET_MAX_READS 64
/* Leaders remembered, one per term, for the election-safety check. */
#define TNET_MAX_TERMS 256
/* The sender id of crafted messages: never a member of any test cluster. */
#define TNET_FAKE_LEADER 100

typedef enum tnet_verdict {
  TNET_DELIVER = 0,
  TNET_DROP = 1,
} tnet_verdict;

/* Sees (and may edit) every message about to be delivered over an uncut
 * link; decides whether it arrives. */
typedef tnet_verdict (*tnet_filter)(void *context, tenvelope *envelope);

typedef struct tnet {
  fl_raft_options options; /* the nodes point here: a tnet never moves */
  tnode *nodes[TNET_MAX_NODES + 1];
  tnode_observer observer;
  bool cut[TNET_MAX_NODES + 1][TNET_MAX_NODES + 1]; /* [from][to] */
  bool hold_writes[TNET_MAX_NODES + 1];
  tnet_filter filter;
  void *filter_context;
  uint64_t delivered[FL_RAFT_MSG_TYPE_COUNT];
  uint64_t dropped;
  fl_raft_read_state reads[TNET_MAX_NODES + 1][TNET_MAX_READS];
  uint32_t read_count[TNET_MAX_NODES + 1];
  uint64_t leader_of_term[TNET_MAX_TERMS];
  uint64_t seed;
  uint64_t next_proposal_id;
} tnet;

/* Default options with election 10 ticks, heartbeat 1, and the two switches
 * the scenarios vary. */
fl_raft_options tnet_options(bool pre_vote, bool check_quorum);

/* A network of `voters` bootstrapped nodes (ids 1..voters) using a copy of
 * `options`. Never returns NULL (a failure is a test failure). */
tnet *tnet_create(uint32_t voters, const fl_raft_options *options, uint64_t seed);
/* Adds node `id` with an empty configuration: it learns it from a leader. */
void tnet_add_joiner(tnet *net, uint64_t id);
void tnet_destroy(tnet *net);

tnode *tnet_node(tnet *net, uint64_t id);
fl_raft *tnet_raft(tnet *net, uint64_t id);
fl_raft_status tnet_status(tnet *net, uint64_t id);
/* Asserts the invariants of node `id` (no-op while it is down). */
void tnet_check(tnet *net, uint64_t id);

/* Links. */
void tnet_cut(tnet *net, uint64_t a, uint64_t b);
void tnet_cut_one_way(tnet *net, uint64_t from, uint64_t to);
void tnet_isolate(tnet *net, uint64_t id);
void tnet_heal(tnet *net);

/* Completes every pending write of `id` in order, reporting each to the
 * core. Returns how many writes completed. */
uint32_t tnet_persist(tnet *net, uint64_t id);
/* Delivers one message (cut links, down or unknown targets and the filter
 * may drop it). Takes ownership of `envelope`. */
void tnet_send(tnet *net, tenvelope *envelope);
/* Moves messages (and completes writes not held) until nothing moves.
 * Returns the number of messages delivered. */
uint64_t tnet_deliver(tnet *net);
/* Takes every message in the outbox of `id` without delivering it.
 * Returns the count; the caller owns out[0..count). */
uint32_t tnet_take_all(tnet *net, uint64_t id, tenvelope **out, uint32_t capacity);
/* Of `messages`, how many have `type` and go to `to` (0: anyone). */
uint32_t tnet_count(tenvelope *const *messages, uint32_t count, uint32_t type, uint64_t to);
void tnet_destroy_all(tenvelope **messages, uint32_t count);

/* Time. */
void tnet_tick(tnet *net, uint64_t id);
/* `ticks` rounds of: tick every up node, then deliver. */
void tnet_tick_all(tnet *net, uint32_t ticks);
/* Ticks rounds until some node leads at the highest term; fails after
 * max_ticks. Returns the leader's id. */
uint64_t tnet_wait_leader(tnet *net, uint32_t max_ticks);
/* Makes `id` campaign at once, forced like a leader transfer (no pre-vote,
 * leases overridden), and delivers; asserts it won. Returns its term. */
uint64_t tnet_elect(tnet *net, uint64_t id);
/* The leader at the highest term among up nodes, or 0. */
uint64_t tnet_leader(tnet *net);

/* Proposes one command whose encoding is 32 + padding bytes. Returns the
 * core's result (0 or FL_RAFT_E_*). Does not deliver. */
int tnet_propose(tnet *net, uint64_t id, uint64_t key, uint64_t value, uint32_t padding);

/*
 * Steps into `id` an APPEND from TNET_FAKE_LEADER at `term` that replaces its
 * log by entries 1..count with the given terms (payload: index and term, so
 * equal (index, term) means equal entries), then persists it. Builds the
 * logs of the paper's figures.
 */
void tnet_craft_log(tnet *net, uint64_t id, uint64_t term, const uint64_t *terms, uint32_t count,
                    uint64_t commit);

/* True when the logs of a and b hold the same entries up to the end of a
 * and end at the same index. */
bool tnet_logs_equal(tnet *net, uint64_t a, uint64_t b);
/* True when the state machine of `id` applied exactly its log's prefix. */
bool tnet_state_matches_log(tnet *net, uint64_t id);

#endif
