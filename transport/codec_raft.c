/*
 * codec_raft.c - FRAME_RAFT payloads: one batch of Raft messages of many
 * groups, from one node to one node (layout in docs/wire-format.md).
 *
 * This is the replication hot path, so the per-entry work is one 16-byte
 * header store plus one memcpy of the data when encoding, and one header
 * load plus a few compares when decoding; entries are never copied on
 * receipt (they point into the payload) and nothing is allocated.
 *
 * One rule set serves both directions (check_message_fields): whatever the
 * encoder accepts the decoder accepts, so a refused frame always means a
 * broken or hostile peer, never two versions of the rules.
 */
#include "transport/codec_internal.h"

#include <assert.h>
#include <string.h>

#define LIMIT FL_RAFT_MAX_TERM_OR_INDEX

static bool type_is_known(uint32_t type) {
  return type >= FL_RAFT_MSG_APPEND && type < FL_RAFT_MSG_TYPE_COUNT;
}

/*
 * The header rules of both directions. Every field is carried for every
 * type (the core ignores the ones a type does not use), but only APPEND
 * carries entries and every term and index stays below the limit the core
 * relies on to never wrap.
 */
static int check_message_fields(const fl_raft_message *message) {
  if (!type_is_known(message->type)) {
    return TRANSPORT_E_TYPE;
  }
  if (message->entry_count > 0 && message->type != FL_RAFT_MSG_APPEND) {
    return TRANSPORT_E_MALFORMED;
  }
  if (message->term > LIMIT || message->log_term > LIMIT || message->commit > LIMIT ||
      message->reject_hint > LIMIT || message->index > LIMIT - message->entry_count) {
    return TRANSPORT_E_MALFORMED;
  }
  return 0;
}

static size_t snapshot_size(const fl_raft_message *message) {
  if (message->type != FL_RAFT_MSG_SNAPSHOT) {
    return 0;
  }
  return CODEC_RAFT_SNAPSHOT_META_BYTES +
         codec_padded_8(fl_raft_conf_encoded_size(&message->snapshot.conf));
}

size_t codec_raft_message_size(const fl_raft_message *message) {
  size_t size = CODEC_RAFT_MESSAGE_HEADER_BYTES + snapshot_size(message);
  uint32_t count = message->entries != NULL ? message->entry_count : 0;
  for (uint32_t i = 0; i < count; i++) {
    size += CODEC_RAFT_ENTRY_HEADER_BYTES + codec_padded_8(message->entries[i].length);
  }
  return size;
}

int codec_raft_encoder_init(codec_raft_encoder *encoder, uint8_t *buffer, size_t capacity) {
  if (capacity < CODEC_RAFT_BATCH_HEADER_BYTES) {
    return TRANSPORT_E_FULL;
  }
  encoder->buffer = buffer;
  encoder->capacity = capacity < UINT32_MAX ? capacity : UINT32_MAX;
  encoder->length = CODEC_RAFT_BATCH_HEADER_BYTES;
  encoder->message_count = 0;
  return 0;
}

/* The indexes are implicit on the wire, so they must be what the receiver
 * will rebuild: consecutive from index + 1. */
static int check_entries(const fl_raft_message *message, size_t *bytes) {
  if (message->entry_count > 0 && message->entries == NULL) {
    return TRANSPORT_E_MALFORMED;
  }
  size_t total = 0;
  uint64_t first_index = message->index + 1;
  for (uint32_t i = 0; i < message->entry_count; i++) {
    const fl_raft_entry *entry = &message->entries[i];
    if (entry->index != first_index + i || entry->term > LIMIT ||
        entry->type > FL_RAFT_ENTRY_CONF_CHANGE || (entry->length > 0 && entry->data == NULL)) {
      return TRANSPORT_E_MALFORMED;
    }
    total += CODEC_RAFT_ENTRY_HEADER_BYTES + codec_padded_8(entry->length);
  }
  *bytes = total;
  return 0;
}

/* Validates `message` and gives its encoded size. */
static int check_for_encoding(const fl_raft_message *message, size_t *size) {
  int rc = check_message_fields(message);
  if (rc != 0) {
    return rc;
  }
  if (message->entry_count > CODEC_MAX_ENTRIES_PER_MESSAGE) {
    return TRANSPORT_E_TOO_LARGE;
  }
  if (message->type == FL_RAFT_MSG_SNAPSHOT &&
      (message->snapshot.index > LIMIT || message->snapshot.term > LIMIT ||
       !fl_raft_conf_is_valid(&message->snapshot.conf))) {
    return TRANSPORT_E_MALFORMED;
  }
  size_t entry_bytes = 0;
  rc = check_entries(message, &entry_bytes);
  if (rc != 0) {
    return rc;
  }
  *size = CODEC_RAFT_MESSAGE_HEADER_BYTES + snapshot_size(message) + entry_bytes;
  return 0;
}

static uint8_t *write_header(uint8_t *out, uint64_t group, const fl_raft_message *message) {
  codec_raft_message_wire wire = {
      .group = group,
      .type = (uint8_t)message->type,
      .flags = message->reject ? CODEC_RAFT_FLAG_REJECT : 0,
      .reserved = 0,
      .entry_count = message->entry_count,
      .term = message->term,
      .log_term = message->log_term,
      .index = message->index,
      .commit = message->commit,
      .reject_hint = message->reject_hint,
      .context = message->context,
  };
  memcpy(out, &wire, sizeof(wire));
  return out + sizeof(wire);
}

static uint8_t *write_snapshot_meta(uint8_t *out, const fl_raft_snapshot_meta *meta) {
  size_t conf_length = fl_raft_conf_encoded_size(&meta->conf);
  codec_raft_snapshot_meta_wire wire = {
      .index = meta->index,
      .term = meta->term,
      .conf_length = (uint32_t)conf_length,
      .reserved = 0,
  };
  memcpy(out, &wire, sizeof(wire));
  out += sizeof(wire);
  size_t padded = codec_padded_8(conf_length);
  memset(out + conf_length, 0, padded - conf_length);
  size_t written = fl_raft_conf_encode(&meta->conf, out, conf_length);
  assert(written == conf_length);
  (void)written;
  return out + padded;
}

static uint8_t *write_entries(uint8_t *out, const fl_raft_entry *entries, uint32_t count) {
  for (uint32_t i = 0; i < count; i++) {
    const fl_raft_entry *entry = &entries[i];
    codec_raft_entry_wire wire = {
        .term = entry->term, .type = entry->type, .length = entry->length};
    memcpy(out, &wire, sizeof(wire));
    out += sizeof(wire);
    uint64_t padded = codec_padded_8(entry->length);
    if (padded != 0) {
      /* Zero the last word first: the copy then leaves only padding zero. */
      memset(out + padded - 8, 0, 8);
      memcpy(out, entry->data, entry->length);
      out += padded;
    }
  }
  return out;
}

int codec_raft_add(codec_raft_encoder *encoder, uint64_t group, const fl_raft_message *message) {
  size_t size = 0;
  int rc = check_for_encoding(message, &size);
  if (rc != 0) {
    return rc;
  }
  if (size > encoder->capacity - encoder->length) {
    bool fits_empty = size <= encoder->capacity - CODEC_RAFT_BATCH_HEADER_BYTES;
    return fits_empty ? TRANSPORT_E_FULL : TRANSPORT_E_TOO_LARGE;
  }
  uint8_t *start = encoder->buffer + encoder->length;
  uint8_t *out = write_header(start, group, message);
  if (message->type == FL_RAFT_MSG_SNAPSHOT) {
    out = write_snapshot_meta(out, &message->snapshot);
  }
  out = write_entries(out, message->entries, message->entry_count);
  assert((size_t)(out - start) == size);
  encoder->length += size;
  encoder->message_count++;
  return 0;
}

void codec_raft_finish(codec_raft_encoder *encoder, size_t *payload_length) {
  codec_raft_batch_wire wire = {.message_count = encoder->message_count, .reserved = 0};
  memcpy(encoder->buffer, &wire, sizeof(wire));
  *payload_length = encoder->length;
}

void codec_raft_decoder_init(codec_raft_decoder *decoder, const uint8_t *payload, size_t length,
                             uint64_t from, uint64_t to) {
  memset(decoder, 0, sizeof(*decoder));
  decoder->payload = payload;
  decoder->length = length;
  decoder->from = from;
  decoder->to = to;
}

static int read_batch_header(codec_raft_decoder *decoder) {
  if (decoder->length < CODEC_RAFT_BATCH_HEADER_BYTES) {
    return TRANSPORT_E_TRUNCATED;
  }
  codec_raft_batch_wire wire;
  memcpy(&wire, decoder->payload, sizeof(wire));
  if (wire.reserved != 0) {
    return TRANSPORT_E_MALFORMED;
  }
  /* Every message takes at least its header: bound the count by the bytes. */
  uint64_t minimum = (uint64_t)wire.message_count * CODEC_RAFT_MESSAGE_HEADER_BYTES;
  if (minimum > decoder->length - CODEC_RAFT_BATCH_HEADER_BYTES) {
    return TRANSPORT_E_TRUNCATED;
  }
  decoder->message_count = wire.message_count;
  decoder->position = CODEC_RAFT_BATCH_HEADER_BYTES;
  decoder->started = true;
  return 0;
}

static int read_snapshot_meta(codec_raft_decoder *decoder, fl_raft_snapshot_meta *meta) {
  size_t left = decoder->length - decoder->position;
  if (left < CODEC_RAFT_SNAPSHOT_META_BYTES) {
    return TRANSPORT_E_TRUNCATED;
  }
  codec_raft_snapshot_meta_wire wire;
  memcpy(&wire, decoder->payload + decoder->position, sizeof(wire));
  if (wire.reserved != 0 || wire.index > LIMIT || wire.term > LIMIT ||
      wire.conf_length > CODEC_MAX_CONF_BYTES) {
    return TRANSPORT_E_MALFORMED;
  }
  uint64_t padded = codec_padded_8(wire.conf_length);
  if (padded > left - CODEC_RAFT_SNAPSHOT_META_BYTES) {
    return TRANSPORT_E_TRUNCATED;
  }
  const uint8_t *conf = decoder->payload + decoder->position + CODEC_RAFT_SNAPSHOT_META_BYTES;
  if (!codec_all_zero(conf + wire.conf_length, padded - wire.conf_length) ||
      fl_raft_conf_decode(conf, wire.conf_length, &meta->conf) != 0) {
    return TRANSPORT_E_MALFORMED;
  }
  /* The conf decoder skips its reserved bytes: insist on the one encoding
   * of this configuration, so that every accepted payload is canonical. */
  uint8_t canonical[CODEC_MAX_CONF_BYTES];
  if (fl_raft_conf_encode(&meta->conf, canonical, sizeof(canonical)) != wire.conf_length ||
      memcmp(canonical, conf, wire.conf_length) != 0) {
    return TRANSPORT_E_MALFORMED;
  }
  meta->index = wire.index;
  meta->term = wire.term;
  decoder->position += CODEC_RAFT_SNAPSHOT_META_BYTES + padded;
  return 0;
}

/* The bytes between the end of the data and the next multiple of 8 are 0.
 * They are the high bytes of the last little-endian word. */
static bool padding_is_zero(const uint8_t *data, uint32_t length) {
  uint32_t tail = length & 7u;
  if (tail == 0) {
    return true;
  }
  uint64_t last_word;
  memcpy(&last_word, data + (length - tail), sizeof(last_word));
  return (last_word >> (8 * tail)) == 0;
}

static int read_entries(codec_raft_decoder *decoder, fl_raft_message *message,
                        fl_raft_entry *scratch) {
  const uint8_t *payload = decoder->payload;
  const size_t end = decoder->length;
  size_t position = decoder->position;
  uint32_t count = message->entry_count;
  if ((uint64_t)count * CODEC_RAFT_ENTRY_HEADER_BYTES > end - position) {
    return TRANSPORT_E_TRUNCATED;
  }
  uint64_t first_index = message->index + 1;
  for (uint32_t i = 0; i < count; i++) {
    if (end - position < CODEC_RAFT_ENTRY_HEADER_BYTES) {
      return TRANSPORT_E_TRUNCATED;
    }
    codec_raft_entry_wire wire;
    memcpy(&wire, payload + position, sizeof(wire));
    position += sizeof(wire);
    uint64_t padded = codec_padded_8(wire.length);
    if (padded > end - position) {
      return TRANSPORT_E_TRUNCATED;
    }
    if (wire.term > LIMIT || wire.type > FL_RAFT_ENTRY_CONF_CHANGE ||
        !padding_is_zero(payload + position, wire.length)) {
      return TRANSPORT_E_MALFORMED;
    }
    scratch[i] = (fl_raft_entry){
        .term = wire.term,
        .index = first_index + i,
        .type = wire.type,
        .length = wire.length,
        .data = payload + position,
    };
    position += padded;
  }
  message->entries = count > 0 ? scratch : NULL;
  decoder->position = position;
  return 0;
}

static void fill_message(const codec_raft_decoder *decoder, const codec_raft_message_wire *wire,
                         fl_raft_message *message) {
  memset(message, 0, sizeof(*message));
  message->type = wire->type;
  message->entry_count = wire->entry_count;
  message->from = decoder->from;
  message->to = decoder->to;
  message->term = wire->term;
  message->log_term = wire->log_term;
  message->index = wire->index;
  message->commit = wire->commit;
  message->reject_hint = wire->reject_hint;
  message->context = wire->context;
  message->reject = (wire->flags & CODEC_RAFT_FLAG_REJECT) != 0;
}

static int read_message(codec_raft_decoder *decoder, uint64_t *group, fl_raft_message *message,
                        fl_raft_entry *scratch, uint32_t scratch_capacity) {
  if (decoder->length - decoder->position < CODEC_RAFT_MESSAGE_HEADER_BYTES) {
    return TRANSPORT_E_TRUNCATED;
  }
  codec_raft_message_wire wire;
  memcpy(&wire, decoder->payload + decoder->position, sizeof(wire));
  fill_message(decoder, &wire, message);
  int rc = check_message_fields(message);
  if (rc != 0) {
    return rc;
  }
  if ((wire.flags & ~CODEC_RAFT_FLAG_REJECT) != 0 || wire.reserved != 0 ||
      wire.entry_count > scratch_capacity || wire.entry_count > CODEC_MAX_ENTRIES_PER_MESSAGE) {
    return TRANSPORT_E_MALFORMED;
  }
  decoder->position += CODEC_RAFT_MESSAGE_HEADER_BYTES;
  if (message->type == FL_RAFT_MSG_SNAPSHOT) {
    rc = read_snapshot_meta(decoder, &message->snapshot);
    if (rc != 0) {
      return rc;
    }
  }
  rc = read_entries(decoder, message, scratch);
  if (rc != 0) {
    return rc;
  }
  *group = wire.group;
  return 0;
}

static int decoder_fail(codec_raft_decoder *decoder, int error) {
  decoder->error = error;
  return error;
}

int codec_raft_next(codec_raft_decoder *decoder, uint64_t *group, fl_raft_message *message,
                    fl_raft_entry *entries_scratch, uint32_t scratch_capacity) {
  if (decoder->error != 0) {
    return decoder->error;
  }
  if (!decoder->started) {
    int rc = read_batch_header(decoder);
    if (rc != 0) {
      return decoder_fail(decoder, rc);
    }
  }
  if (decoder->messages_read == decoder->message_count) {
    /* Bytes past the last message mean the count and the length disagree. */
    return decoder->position == decoder->length ? 0 : decoder_fail(decoder, TRANSPORT_E_MALFORMED);
  }
  int rc = read_message(decoder, group, message, entries_scratch, scratch_capacity);
  if (rc != 0) {
    return decoder_fail(decoder, rc);
  }
  decoder->messages_read++;
  return 1;
}
