/*
 * state_machine.c - a deterministic key-value state machine for tests.
 */
#include "tests/support/state_machine.h"

#include <string.h>

#include "tests/support/hash.h"

static void put_u64(uint8_t *buffer, uint64_t value) {
  for (int i = 0; i < 8; i++) {
    buffer[i] = (uint8_t)(value >> (8 * i));
  }
}

static uint64_t get_u64(const uint8_t *buffer) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; i--) {
    value = (value << 8) | buffer[i];
  }
  return value;
}

size_t tcommand_encode(const tcommand *command, uint32_t padding, uint8_t *buffer,
                       size_t capacity) {
  size_t length = TCOMMAND_HEADER_BYTES + padding;
  if (length > capacity || length > TCOMMAND_MAX_BYTES) {
    return 0;
  }
  put_u64(buffer, command->proposal_id);
  put_u64(buffer + 8, command->proposer);
  put_u64(buffer + 16, command->key);
  put_u64(buffer + 24, command->value);
  /* Padding derived from the id: payload comparisons then see every byte. */
  for (uint32_t i = 0; i < padding; i++) {
    buffer[TCOMMAND_HEADER_BYTES + i] = (uint8_t)(command->proposal_id * 31 + i);
  }
  return length;
}

bool tcommand_decode(const uint8_t *data, size_t length, tcommand *out) {
  if (data == NULL || length < TCOMMAND_HEADER_BYTES) {
    return false;
  }
  out->proposal_id = get_u64(data);
  out->proposer = get_u64(data + 8);
  out->key = get_u64(data + 16);
  out->value = get_u64(data + 24);
  return out->key < TSTATE_KEYS;
}

void tstate_init(tstate *state, const fl_raft_conf *conf) {
  memset(state, 0, sizeof(*state));
  state->chain_hash = THASH_EMPTY_LOG;
  if (conf != NULL) {
    state->conf = *conf;
  }
}

int tstate_apply(tstate *state, const fl_raft_entry *entry, const char **error) {
  if (entry->index != state->applied_index + 1) {
    *error = "committed entry does not follow the applied index";
    return -1;
  }
  if (entry->term < state->applied_term) {
    *error = "committed entry has a lower term than the one before it";
    return -1;
  }
  if (entry->type == FL_RAFT_ENTRY_CONF_CHANGE) {
    fl_raft_conf conf;
    if (fl_raft_conf_decode(entry->data, entry->length, &conf) != 0) {
      *error = "committed configuration entry does not decode";
      return -1;
    }
    state->conf = conf;
  } else {
    tcommand command;
    if (tcommand_decode(entry->data, entry->length, &command)) {
      state->values[command.key] = thash_mix(state->values[command.key] ^ command.value);
      state->command_count++;
    }
  }
  uint64_t payload_hash = thash_bytes(entry->data, entry->length);
  state->chain_hash = thash_chain(state->chain_hash, entry->term, entry->type, payload_hash);
  state->applied_index = entry->index;
  state->applied_term = entry->term;
  return 0;
}
