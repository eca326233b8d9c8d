/*
 * checker.h - the global safety checks of the simulator.
 *
 * The checker sees every node's events (roles, appended entries, commit
 * indexes, applies, snapshots, reads) and keeps just enough global history
 * to check the Raft safety properties incrementally, in O(1) per event:
 *
 *   Election Safety     at most one leader per term;
 *   Log Matching        an (index, term) pair ever seen in any log has one
 *                       prefix hash (hash.h): the entries up to it agree;
 *   Leader Completeness a new leader of term T holds every entry whose
 *                       commit was reported in a term below T;
 *   State Machine Safety every apply and every snapshot at an index has the
 *                       prefix hash the committed log has there;
 *   Durability          a commit is durable on a majority; a restarted node's
 *                       durable log agrees with the committed log up to its
 *                       durable commit index;
 *   Linearizable reads  a read index covers every write acknowledged before
 *                       the read was requested;
 *   Acknowledged writes every acknowledged proposal sits in the committed log
 *                       at one index only.
 *
 * The first violation is kept as text; later ones are counted only, as they
 * usually follow from the first.
 */
#ifndef FLOTILLA_SIM_CHECKER_H
#define FLOTILLA_SIM_CHECKER_H

#include <stdbool.h>
#include <stdint.h>

#include "raft/raft.h"
#include "tests/support/log.h"
#include "tests/support/state_machine.h"

typedef struct checker checker;

checker *checker_create(void);
void checker_destroy(checker *c);

bool checker_failed(const checker *c);
const char *checker_violation(const checker *c);
/* Records a violation found outside the checker (printf-style). */
void checker_fail(checker *c, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* Election Safety. */
void checker_note_leader(checker *c, uint64_t term, uint64_t node);
/* Log Matching: an entry appended to a node's volatile log. */
void checker_note_entry(checker *c, uint64_t node, uint64_t index, uint64_t term,
                        uint64_t prefix_hash);
/*
 * A node at `term` reports commit index `commit` with `log` as its log.
 * Extends the committed history or checks the log against it. Returns true
 * when the reported commit extended the global committed index.
 */
bool checker_note_commit(checker *c, uint64_t node, uint64_t term, const tlog *log,
                         uint64_t commit);
/* Leader Completeness, for a node that just became leader of `term`. */
void checker_check_leader_log(checker *c, uint64_t node, uint64_t term, const tlog *log);
/* State Machine Safety: `state` is the node's state after applying `entry`. */
void checker_note_apply(checker *c, uint64_t node, const fl_raft_entry *entry, const tstate *state);
/* A snapshot installed from a peer (state describes its index). */
void checker_note_snapshot(checker *c, uint64_t node, const tstate *state);
/*
 * Durability of a commit at `index`: true when the voters of `conf` holding
 * the committed entry at `index` durably (in durable_logs[node id], NULL for
 * unknown nodes) form a majority of the incoming voters and of the outgoing
 * ones.
 */
bool checker_quorum_durable(const checker *c, uint64_t index, const fl_raft_conf *conf,
                            const tlog *const *durable_logs, uint64_t node_limit);
uint64_t checker_committed_index(const checker *c);
/* A restarting node's durable state against the committed history. */
void checker_check_durable(checker *c, uint64_t node, const tlog *durable,
                           const fl_raft_hard_state *hard_state);
/* The highest index acknowledged to a client so far. */
uint64_t checker_acknowledged_index(const checker *c);
/* Linearizable reads: `required` is checker_acknowledged_index() when the
 * request was made. */
void checker_note_read_request(checker *c, uint64_t context, uint64_t required);
void checker_note_read_state(checker *c, uint64_t node, uint64_t context, uint64_t index);
/* End of run: every acknowledged write is applied by every node in
 * `applied_by_member` (the applied indexes of the final members). */
void checker_finish(checker *c, const uint64_t *applied_by_member, uint32_t member_count);

/* Counters for the summary line. */
uint64_t checker_acknowledged_count(const checker *c);
uint64_t checker_leader_count(const checker *c);
uint64_t checker_read_count(const checker *c);

#endif
