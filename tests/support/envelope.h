/*
 * envelope.h - a message deep-copied out of an update, ready to travel.
 *
 * Pointers inside an update die at fl_raft_advance(), while a simulated
 * network holds messages for a while, duplicates and reorders them. An
 * envelope is one allocation holding the message, its entries, their payload
 * bytes and, for FL_RAFT_MSG_SNAPSHOT, the state machine data the message
 * stands for (the core only sends snapshot metadata; the driver ships the
 * data out of band).
 */
#ifndef FLOTILLA_TESTS_ENVELOPE_H
#define FLOTILLA_TESTS_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "raft/raft.h"
#include "tests/support/state_machine.h"

typedef struct tenvelope {
  fl_raft_message message;      /* entries and payloads point into this envelope */
  const tstate *snapshot_state; /* SNAPSHOT only, NULL otherwise */
  uint64_t sender_incarnation;  /* which run of the sender produced it */
  size_t allocation_bytes;
} tenvelope;

/* Copies `message` (and `snapshot_state`, which may be NULL). Aborts when
 * out of memory. The caller owns the result. */
tenvelope *tenvelope_create(const fl_raft_message *message, const tstate *snapshot_state);
/* An independent copy: the network's duplication fault. */
tenvelope *tenvelope_clone(const tenvelope *envelope);
void tenvelope_destroy(tenvelope *envelope);

#endif
