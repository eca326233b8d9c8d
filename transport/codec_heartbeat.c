/*
 * codec_heartbeat.c - FRAME_HEARTBEATS payloads: the heartbeats of every
 * group between two nodes in one tick, coalesced into one frame (layout in
 * docs/wire-format.md).
 *
 * With 100,000 groups on a node, a 64-byte message header per heartbeat
 * would make idle groups cost bandwidth and CPU. Sorted by group, the ids
 * are sent as gaps from the previous id and every number as a LEB128 varint,
 * so a heartbeat of a dense group range with small terms takes about 5-8
 * bytes. Sorting happens in place in the caller's array, without allocation.
 *
 * Varints are canonical (shortest form only) and at most 10 bytes, so one
 * value has exactly one encoding and a decoded payload re-encodes to the
 * same bytes.
 */
#include "transport/codec_internal.h"

#include <string.h>

#define LIMIT FL_RAFT_MAX_TERM_OR_INDEX
#define VARINT_MAX_BYTES 10u
/* Fewest bytes of one item: a one-byte varint per field. */
#define HEARTBEAT_MIN_BYTES 5u
#define RESPONSE_MIN_BYTES 4u

static size_t varint_size(uint64_t value) {
  unsigned bits = 64u - (unsigned)__builtin_clzll(value | 1u);
  return (bits + 6u) / 7u;
}

static uint8_t *varint_write(uint8_t *out, uint64_t value) {
  while (value >= 0x80u) {
    *out++ = (uint8_t)(value | 0x80u);
    value >>= 7;
  }
  *out++ = (uint8_t)value;
  return out;
}

/* Refuses more than 10 bytes, bits past 64 and non-shortest forms. */
static int varint_read(const uint8_t *payload, size_t length, size_t *position, uint64_t *value) {
  size_t at = *position;
  uint64_t result = 0;
  for (unsigned i = 0; i < VARINT_MAX_BYTES; i++) {
    if (at + i >= length) {
      return TRANSPORT_E_TRUNCATED;
    }
    uint8_t byte = payload[at + i];
    if (i == VARINT_MAX_BYTES - 1 && byte > 1) {
      return TRANSPORT_E_MALFORMED; /* overflow, or an 11th byte announced */
    }
    result |= (uint64_t)(byte & 0x7fu) << (7 * i);
    if (byte < 0x80u) {
      if (byte == 0 && i > 0) {
        return TRANSPORT_E_MALFORMED; /* a trailing zero group: not shortest */
      }
      *value = result;
      *position = at + i + 1;
      return 0;
    }
  }
  return TRANSPORT_E_MALFORMED; /* unreachable: the tenth byte ends it */
}

bool codec_heartbeat_is_coalescible(const fl_raft_message *message) {
  bool response = message->type == FL_RAFT_MSG_HEARTBEAT_RESP;
  if (message->type != FL_RAFT_MSG_HEARTBEAT && !response) {
    return false;
  }
  if (message->entry_count != 0 || message->log_term != 0 || message->reject_hint != 0 ||
      message->reject || (response && message->commit != 0)) {
    return false;
  }
  return message->term <= LIMIT && message->index <= LIMIT && message->commit <= LIMIT;
}

size_t codec_heartbeats_max_size(uint32_t count) {
  return CODEC_HEARTBEATS_HEADER_BYTES + (size_t)count * CODEC_HEARTBEAT_MAX_BYTES;
}

/* Heartbeats first, then responses; each kind by group. */
static bool item_before(const codec_heartbeat *a, const codec_heartbeat *b) {
  bool a_response = a->message->type == FL_RAFT_MSG_HEARTBEAT_RESP;
  bool b_response = b->message->type == FL_RAFT_MSG_HEARTBEAT_RESP;
  if (a_response != b_response) {
    return b_response;
  }
  return a->group < b->group;
}

static bool items_strictly_sorted(const codec_heartbeat *items, uint32_t count) {
  for (uint32_t i = 1; i < count; i++) {
    if (!item_before(&items[i - 1], &items[i])) {
      return false;
    }
  }
  return true;
}

/* The frame's order, then the messages' addresses: a total order, so
 * items of one array that share a group and kind keep the array's order. */
static bool sort_before(const codec_heartbeat *a, const codec_heartbeat *b) {
  if (item_before(a, b) || item_before(b, a)) {
    return item_before(a, b);
  }
  return (uintptr_t)a->message < (uintptr_t)b->message;
}

static void sift_down(codec_heartbeat *items, size_t root, size_t count) {
  for (;;) {
    size_t child = 2 * root + 1;
    if (child >= count) {
      return;
    }
    if (child + 1 < count && sort_before(&items[child], &items[child + 1])) {
      child++;
    }
    if (!sort_before(&items[root], &items[child])) {
      return;
    }
    codec_heartbeat swap = items[root];
    items[root] = items[child];
    items[child] = swap;
    root = child;
  }
}

/* Heapsort: O(n log n) worst case, in place (qsort may allocate). */
void codec_heartbeats_sort(codec_heartbeat *items, uint32_t count) {
  for (size_t start = count / 2; start-- > 0;) {
    sift_down(items, start, count);
  }
  for (size_t end = count; end-- > 1;) {
    codec_heartbeat swap = items[0];
    items[0] = items[end];
    items[end] = swap;
    sift_down(items, 0, end);
  }
}

/* Checks and sorts the items; counts the responses (they sort last). */
static int prepare_items(codec_heartbeat *items, uint32_t count, uint32_t *response_count) {
  uint32_t responses = 0;
  for (uint32_t i = 0; i < count; i++) {
    uint32_t type = items[i].message->type;
    if (type != FL_RAFT_MSG_HEARTBEAT && type != FL_RAFT_MSG_HEARTBEAT_RESP) {
      return TRANSPORT_E_TYPE;
    }
    if (!codec_heartbeat_is_coalescible(items[i].message)) {
      return TRANSPORT_E_MALFORMED;
    }
    responses += type == FL_RAFT_MSG_HEARTBEAT_RESP;
  }
  if (!items_strictly_sorted(items, count)) {
    codec_heartbeats_sort(items, count);
    if (!items_strictly_sorted(items, count)) {
      return TRANSPORT_E_MALFORMED; /* one group twice in one kind */
    }
  }
  *response_count = responses;
  return 0;
}

/* The gap to the previous group of the same kind (the id itself first). */
static uint64_t group_delta(const codec_heartbeat *items, uint32_t i) {
  if (i == 0 || items[i - 1].message->type != items[i].message->type) {
    return items[i].group;
  }
  return items[i].group - items[i - 1].group;
}

static size_t item_size(const codec_heartbeat *item, uint64_t delta) {
  const fl_raft_message *message = item->message;
  size_t size = varint_size(delta) + varint_size(message->term) + varint_size(message->index) +
                varint_size(message->context);
  if (message->type == FL_RAFT_MSG_HEARTBEAT) {
    size += varint_size(message->commit);
  }
  return size;
}

static uint8_t *item_write(uint8_t *out, const codec_heartbeat *item, uint64_t delta) {
  const fl_raft_message *message = item->message;
  out = varint_write(out, delta);
  out = varint_write(out, message->term);
  out = varint_write(out, message->index);
  if (message->type == FL_RAFT_MSG_HEARTBEAT) {
    out = varint_write(out, message->commit);
  }
  return varint_write(out, message->context);
}

int codec_heartbeats_encode(codec_heartbeat *items, uint32_t count, uint8_t *buffer,
                            size_t capacity, size_t *payload_length) {
  uint32_t responses = 0;
  int rc = prepare_items(items, count, &responses);
  if (rc != 0) {
    return rc;
  }
  size_t size = CODEC_HEARTBEATS_HEADER_BYTES;
  for (uint32_t i = 0; i < count; i++) {
    size += item_size(&items[i], group_delta(items, i));
  }
  if (size > capacity || size > UINT32_MAX) {
    return TRANSPORT_E_FULL;
  }
  codec_heartbeats_wire wire = {.heartbeat_count = count - responses, .response_count = responses};
  memcpy(buffer, &wire, sizeof(wire));
  uint8_t *out = buffer + sizeof(wire);
  for (uint32_t i = 0; i < count; i++) {
    out = item_write(out, &items[i], group_delta(items, i));
  }
  *payload_length = (size_t)(out - buffer);
  return 0;
}

void codec_heartbeats_decoder_init(codec_heartbeats_decoder *decoder, const uint8_t *payload,
                                   size_t length, uint64_t from, uint64_t to) {
  memset(decoder, 0, sizeof(*decoder));
  decoder->payload = payload;
  decoder->length = length;
  decoder->from = from;
  decoder->to = to;
}

static int read_header(codec_heartbeats_decoder *decoder) {
  if (decoder->length < CODEC_HEARTBEATS_HEADER_BYTES) {
    return TRANSPORT_E_TRUNCATED;
  }
  codec_heartbeats_wire wire;
  memcpy(&wire, decoder->payload, sizeof(wire));
  uint64_t minimum = (uint64_t)wire.heartbeat_count * HEARTBEAT_MIN_BYTES +
                     (uint64_t)wire.response_count * RESPONSE_MIN_BYTES;
  if (minimum > decoder->length - CODEC_HEARTBEATS_HEADER_BYTES) {
    return TRANSPORT_E_TRUNCATED;
  }
  decoder->heartbeats_left = wire.heartbeat_count;
  decoder->responses_left = wire.response_count;
  decoder->position = CODEC_HEARTBEATS_HEADER_BYTES;
  decoder->started = true;
  return 0;
}

/* Reads the varint fields of one item: delta, term, index, [commit,] context. */
static int read_fields(codec_heartbeats_decoder *decoder, bool response, uint64_t fields[5]) {
  unsigned count = response ? 4 : 5;
  for (unsigned i = 0; i < count; i++) {
    int rc = varint_read(decoder->payload, decoder->length, &decoder->position, &fields[i]);
    if (rc != 0) {
      return rc;
    }
  }
  if (response) {
    fields[4] = fields[3]; /* context */
    fields[3] = 0;         /* commit: not carried */
  }
  return 0;
}

static int read_item(codec_heartbeats_decoder *decoder, bool response, uint64_t *group,
                     fl_raft_message *message) {
  uint64_t fields[5];
  int rc = read_fields(decoder, response, fields);
  if (rc != 0) {
    return rc;
  }
  uint64_t delta = fields[0];
  if (decoder->section_started && (delta == 0 || delta > UINT64_MAX - decoder->previous_group)) {
    return TRANSPORT_E_MALFORMED; /* groups not strictly increasing */
  }
  if (fields[1] > LIMIT || fields[2] > LIMIT || fields[3] > LIMIT) {
    return TRANSPORT_E_MALFORMED;
  }
  decoder->previous_group += delta;
  decoder->section_started = true;
  memset(message, 0, sizeof(*message));
  message->type = response ? FL_RAFT_MSG_HEARTBEAT_RESP : FL_RAFT_MSG_HEARTBEAT;
  message->from = decoder->from;
  message->to = decoder->to;
  message->term = fields[1];
  message->index = fields[2];
  message->commit = fields[3];
  message->context = fields[4];
  *group = decoder->previous_group;
  return 0;
}

static int decoder_fail(codec_heartbeats_decoder *decoder, int error) {
  decoder->error = error;
  return error;
}

int codec_heartbeats_next(codec_heartbeats_decoder *decoder, uint64_t *group,
                          fl_raft_message *message) {
  if (decoder->error != 0) {
    return decoder->error;
  }
  if (!decoder->started) {
    int rc = read_header(decoder);
    if (rc != 0) {
      return decoder_fail(decoder, rc);
    }
  }
  if (decoder->heartbeats_left == 0 && !decoder->in_responses) {
    /* Responses are a second sorted list: their gaps restart from 0. */
    decoder->in_responses = true;
    decoder->section_started = false;
    decoder->previous_group = 0;
  }
  uint32_t *left = decoder->in_responses ? &decoder->responses_left : &decoder->heartbeats_left;
  if (*left == 0) {
    return decoder->position == decoder->length ? 0 : decoder_fail(decoder, TRANSPORT_E_MALFORMED);
  }
  int rc = read_item(decoder, decoder->in_responses, group, message);
  if (rc != 0) {
    return decoder_fail(decoder, rc);
  }
  (*left)--;
  return 1;
}
