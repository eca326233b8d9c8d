/*
 * state_machine.h - the deterministic state machine the test nodes apply.
 *
 * Commands are small records (proposal id, proposer, key, value) followed by
 * padding of varying length, so byte limits of the core get exercised. The
 * state is a fixed-size struct: a snapshot is a plain copy of it, cheap enough
 * to take and ship often. chain_hash folds every applied entry with
 * thash_chain(), so it equals the prefix hash of the log at applied_index.
 */
#ifndef FLOTILLA_TESTS_STATE_MACHINE_H
#define FLOTILLA_TESTS_STATE_MACHINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"

#define TSTATE_KEYS 16
/* Encoded command header; padding follows it. */
#define TCOMMAND_HEADER_BYTES 32
/* Largest encoded command: header plus the largest padding. */
#define TCOMMAND_MAX_BYTES 128

typedef struct tcommand {
  uint64_t proposal_id; /* unique per run: identifies the client request */
  uint64_t proposer;    /* node that accepted the proposal */
  uint64_t key;         /* < TSTATE_KEYS */
  uint64_t value;
} tcommand;

/* Encodes with `padding` extra bytes; returns the length, or 0 when it does
 * not fit in `capacity`. */
size_t tcommand_encode(const tcommand *command, uint32_t padding, uint8_t *buffer, size_t capacity);
/* False when `data` is not a command (an empty entry, for instance). */
bool tcommand_decode(const uint8_t *data, size_t length, tcommand *out);

typedef struct tstate {
  uint64_t applied_index;
  uint64_t applied_term;
  uint64_t chain_hash;    /* prefix hash of the log at applied_index */
  uint64_t command_count; /* commands applied (empty entries excluded) */
  uint64_t values[TSTATE_KEYS];
  fl_raft_conf conf; /* latest configuration applied, or the initial one */
} tstate;

/* The state at index 0 with configuration `conf` (NULL: empty, a joiner). */
void tstate_init(tstate *state, const fl_raft_conf *conf);
/*
 * Applies the entry that must follow applied_index. Returns 0, or -1 with a
 * reason in *error when the entry is out of order or a configuration entry
 * does not decode: both are core bugs the caller reports.
 */
int tstate_apply(tstate *state, const fl_raft_entry *entry, const char **error);

#endif
