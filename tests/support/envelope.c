/*
 * envelope.c - deep-copied messages.
 *
 * Layout of one allocation: the envelope, the entry array, the snapshot
 * state (when present), then the payload bytes of every entry.
 */
#include "tests/support/envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t align8(size_t bytes) {
  return (bytes + 7) & ~(size_t)7;
}

static size_t payload_bytes(const fl_raft_message *message) {
  size_t total = 0;
  for (uint32_t i = 0; i < message->entry_count; i++) {
    total += message->entries[i].length;
  }
  return total;
}

/* Points message.entries, snapshot_state and the payloads into `envelope`
 * and copies the source bytes there. */
static void fill(tenvelope *envelope, const fl_raft_message *message, const tstate *state) {
  uint8_t *cursor = (uint8_t *)envelope + align8(sizeof(*envelope));
  fl_raft_entry *entries = (fl_raft_entry *)cursor;
  cursor += align8(message->entry_count * sizeof(fl_raft_entry));
  envelope->message = *message;
  envelope->message.entries = message->entry_count > 0 ? entries : NULL;
  envelope->snapshot_state = NULL;
  if (state != NULL) {
    memcpy(cursor, state, sizeof(*state));
    envelope->snapshot_state = (const tstate *)cursor;
    cursor += align8(sizeof(*state));
  }
  for (uint32_t i = 0; i < message->entry_count; i++) {
    entries[i] = message->entries[i];
    if (entries[i].length == 0) {
      entries[i].data = NULL;
      continue;
    }
    memcpy(cursor, message->entries[i].data, entries[i].length);
    entries[i].data = cursor;
    cursor += entries[i].length;
  }
}

tenvelope *tenvelope_create(const fl_raft_message *message, const tstate *snapshot_state) {
  size_t bytes = align8(sizeof(tenvelope)) + align8(message->entry_count * sizeof(fl_raft_entry)) +
                 (snapshot_state != NULL ? align8(sizeof(tstate)) : 0) + payload_bytes(message);
  tenvelope *envelope = malloc(bytes);
  if (envelope == NULL) {
    fprintf(stderr, "tests: out of memory (%zu bytes)\n", bytes);
    abort();
  }
  fill(envelope, message, snapshot_state);
  envelope->sender_incarnation = 0;
  envelope->allocation_bytes = bytes;
  return envelope;
}

tenvelope *tenvelope_clone(const tenvelope *envelope) {
  tenvelope *copy = tenvelope_create(&envelope->message, envelope->snapshot_state);
  copy->sender_incarnation = envelope->sender_incarnation;
  return copy;
}

void tenvelope_destroy(tenvelope *envelope) {
  free(envelope);
}
