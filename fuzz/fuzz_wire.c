/*
 * fuzz_wire.c - the wire codec (transport/codec.h) and frame checks
 * (transport/frame.h) on arbitrary bytes.
 *
 * Everything a node decodes came from another machine, so the decoders must
 * refuse any damage without reading outside the payload, and whatever they
 * do return must hold the promises of codec.h. For every decoded item:
 *   - entries (and chunk data) lie inside the payload;
 *   - terms and indexes are at most FL_RAFT_MAX_TERM_OR_INDEX, index plus
 *     entry count too, entry indexes are index + 1 + i;
 *   - entry counts are within the scratch capacity given and the codec
 *     limit, only APPEND carries entries, snapshot configurations are valid;
 *   - from/to are the nodes given to the decoder.
 * Then the decoded items are encoded again (the encoder must accept them)
 * and decoded again, and must be equal field by field and byte by byte. When
 * the whole payload decoded cleanly, the new encoding must be the very same
 * bytes: the encoding is canonical, so nothing a decoder accepts is ignored.
 *
 * Input layout:
 *   byte 0   mode = byte % FW_MODE_COUNT; the rest (byte / FW_MODE_COUNT)
 *            picks the entry scratch capacity: 0 gives
 *            CODEC_MAX_ENTRIES_PER_MESSAGE, n gives n - 1
 *   mode 0   a stream of whole frames (32-byte header, payload) as they
 *            would arrive on a connection: frame_header_check,
 *            frame_payload_check, then the decoder of the frame's type; the
 *            first failing frame ends the stream, as it closes a connection
 *   mode 1   the same, but the harness repairs both checksums of each frame
 *            first, so mutated lengths, types, flags and payloads get past
 *            the checksums
 *   mode 2-5 the rest of the input is one payload handed straight to the
 *            FRAME_RAFT, FRAME_HEARTBEATS, FRAME_SNAPSHOT_CHUNK or
 *            FRAME_SNAPSHOT_ACK decoder
 *
 * Violations print "fuzz-wire: violation: ..." and abort.
 * FLOTILLA_FUZZ_TRACE=1 prints every frame and what each decoder returned.
 * FLOTILLA_FUZZ_WRITE_SEEDS=DIR writes the seed corpus into DIR and exits
 * (fuzz/corpus/fuzz-wire/ holds its output).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "fuzz/fuzz_report.h"
#include "transport/codec.h"
#include "transport/frame.h"

#define LIMIT FL_RAFT_MAX_TERM_OR_INDEX
#define FW_FROM 7
#define FW_TO 9
/* Frame payloads accepted by the stream modes (a connection's limit). */
#define FW_MAX_PAYLOAD (1u << 20)
/* Decoded items kept for the round trip; inputs are a few KiB. */
#define FW_MAX_MESSAGES 4096
#define FW_MAX_ENTRIES 65536

enum fw_mode {
  FW_FRAMES,
  FW_FRAMES_REPAIRED,
  FW_RAFT,
  FW_HEARTBEATS,
  FW_CHUNK,
  FW_ACK,
  FW_MODE_COUNT
};

/* Decoded items, then their re-encoding and its decoding. Static: big. */
typedef struct fw_state {
  uint64_t groups[FW_MAX_MESSAGES];
  fl_raft_message messages[FW_MAX_MESSAGES];
  fl_raft_entry entries[FW_MAX_ENTRIES];
  codec_heartbeat heartbeats[FW_MAX_MESSAGES];
  fl_raft_entry scratch[CODEC_MAX_ENTRIES_PER_MESSAGE];
  uint8_t reencoded[FW_MAX_PAYLOAD + 64];
} fw_state;

static fw_state state;

__attribute__((format(printf, 1, 2), noreturn)) static void violation(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fuzz_report_and_abort("fuzz-wire: violation: ", format, args);
}

static void check_inside(const uint8_t *data, size_t length, const uint8_t *payload,
                         size_t payload_length, const char *what) {
  if (data < payload || data > payload + payload_length ||
      length > (size_t)(payload + payload_length - data)) {
    violation("%s outside the payload", what);
  }
}

/* ---- FRAME_RAFT ---- */

static void check_entries(const fl_raft_message *m, const uint8_t *payload, size_t length) {
  for (uint32_t i = 0; i < m->entry_count; i++) {
    const fl_raft_entry *e = &m->entries[i];
    if (e->index != m->index + 1 + i || e->term > LIMIT || e->type > FL_RAFT_ENTRY_CONF_CHANGE) {
      violation("entry %u: index %llu term %llu type %u", i, (unsigned long long)e->index,
                (unsigned long long)e->term, e->type);
    }
    check_inside(e->data, e->length, payload, length, "entry data");
  }
}

static void check_raft_message(const fl_raft_message *m, const uint8_t *payload, size_t length,
                               uint32_t capacity) {
  if (m->type == 0 || m->type >= FL_RAFT_MSG_TYPE_COUNT || m->from != FW_FROM || m->to != FW_TO) {
    violation("message type %u from %llu to %llu", m->type, (unsigned long long)m->from,
              (unsigned long long)m->to);
  }
  if (m->term > LIMIT || m->log_term > LIMIT || m->commit > LIMIT || m->reject_hint > LIMIT ||
      m->index > LIMIT - m->entry_count) {
    violation("message numbers past the limit");
  }
  if (m->entry_count > capacity || m->entry_count > CODEC_MAX_ENTRIES_PER_MESSAGE ||
      (m->entry_count > 0 && m->type != FL_RAFT_MSG_APPEND)) {
    violation("%u entries on type %u, scratch %u", m->entry_count, m->type, capacity);
  }
  if (m->type == FL_RAFT_MSG_SNAPSHOT && (m->snapshot.index > LIMIT || m->snapshot.term > LIMIT ||
                                          !fl_raft_conf_is_valid(&m->snapshot.conf))) {
    violation("snapshot meta out of range or invalid conf");
  }
  check_entries(m, payload, length);
}

static void compare_entries(const fl_raft_message *a, const fl_raft_message *b) {
  for (uint32_t i = 0; i < a->entry_count; i++) {
    const fl_raft_entry *x = &a->entries[i];
    const fl_raft_entry *y = &b->entries[i];
    if (x->term != y->term || x->index != y->index || x->type != y->type ||
        x->length != y->length || (x->length > 0 && memcmp(x->data, y->data, x->length) != 0)) {
      violation("entry %u differs after the round trip", i);
    }
  }
}

static void compare_messages(const fl_raft_message *a, const fl_raft_message *b) {
  if (a->type != b->type || a->entry_count != b->entry_count || a->from != b->from ||
      a->to != b->to || a->term != b->term || a->log_term != b->log_term || a->index != b->index ||
      a->commit != b->commit || a->reject_hint != b->reject_hint || a->context != b->context ||
      a->reject != b->reject) {
    violation("message differs after the round trip");
  }
  if (a->snapshot.index != b->snapshot.index || a->snapshot.term != b->snapshot.term ||
      !fl_raft_conf_equal(&a->snapshot.conf, &b->snapshot.conf)) {
    violation("snapshot meta differs after the round trip");
  }
  compare_entries(a, b);
}

/* Encodes the decoded messages again, decodes that, compares. */
static void raft_round_trip(uint32_t count, const uint8_t *payload, size_t length, bool whole) {
  codec_raft_encoder encoder;
  if (codec_raft_encoder_init(&encoder, state.reencoded, sizeof(state.reencoded)) != 0) {
    violation("encoder init");
  }
  for (uint32_t i = 0; i < count; i++) {
    int rc = codec_raft_add(&encoder, state.groups[i], &state.messages[i]);
    if (rc != 0) {
      violation("re-encoding decoded message %u: %s", i, transport_strerror(rc));
    }
  }
  size_t reencoded_length = 0;
  codec_raft_finish(&encoder, &reencoded_length);
  if (whole && (reencoded_length != length || memcmp(payload, state.reencoded, length) != 0)) {
    violation("a payload decoded whole re-encodes differently (%zu bytes, %zu again)", length,
              reencoded_length);
  }
  codec_raft_decoder decoder;
  codec_raft_decoder_init(&decoder, state.reencoded, reencoded_length, FW_FROM, FW_TO);
  for (uint32_t i = 0; i < count; i++) {
    uint64_t group = 0;
    fl_raft_message again;
    int rc =
        codec_raft_next(&decoder, &group, &again, state.scratch, CODEC_MAX_ENTRIES_PER_MESSAGE);
    if (rc != 1 || group != state.groups[i]) {
      violation("re-encoded message %u: %d, group differs", i, rc);
    }
    compare_messages(&state.messages[i], &again);
  }
  uint64_t group;
  fl_raft_message end;
  if (codec_raft_next(&decoder, &group, &end, state.scratch, 1) != 0) {
    violation("re-encoded batch does not end cleanly");
  }
}

static void fuzz_raft(const uint8_t *payload, size_t length, uint32_t capacity) {
  codec_raft_decoder decoder;
  codec_raft_decoder_init(&decoder, payload, length, FW_FROM, FW_TO);
  uint32_t count = 0;
  uint32_t used = 0;
  int rc = 0;
  while (count < FW_MAX_MESSAGES) {
    uint32_t room = FW_MAX_ENTRIES - used;
    uint32_t given = capacity < room ? capacity : room;
    rc = codec_raft_next(&decoder, &state.groups[count], &state.messages[count],
                         state.entries + used, given);
    if (rc != 1) {
      break;
    }
    check_raft_message(&state.messages[count], payload, length, given);
    used += state.messages[count].entry_count;
    count++;
  }
  if (rc > 1 || (rc < 0 && rc != TRANSPORT_E_TRUNCATED && rc != TRANSPORT_E_MALFORMED &&
                 rc != TRANSPORT_E_TYPE)) {
    violation("raft decoder returned %d", rc);
  }
  if (rc < 0 && codec_raft_next(&decoder, &state.groups[0], &state.messages[0], state.scratch,
                                CODEC_MAX_ENTRIES_PER_MESSAGE) != rc) {
    violation("raft decoder error is not sticky");
  }
  trace("raft payload of %zu bytes: %u messages, %u entries, then %s\n", length, count, used,
        transport_strerror(rc));
  raft_round_trip(count, payload, length, rc == 0);
}

/* ---- FRAME_HEARTBEATS ---- */

static void check_heartbeat(const fl_raft_message *m) {
  bool response = m->type == FL_RAFT_MSG_HEARTBEAT_RESP;
  if ((m->type != FL_RAFT_MSG_HEARTBEAT && !response) || m->from != FW_FROM || m->to != FW_TO ||
      m->term > LIMIT || m->index > LIMIT || m->commit > LIMIT || (response && m->commit != 0) ||
      m->entry_count != 0 || m->entries != NULL || m->log_term != 0 || m->reject_hint != 0 ||
      m->reject) {
    violation("decoded heartbeat out of its bounds");
  }
}

static void heartbeats_round_trip(uint32_t count, const uint8_t *payload, size_t length,
                                  bool whole) {
  for (uint32_t i = 0; i < count; i++) {
    state.heartbeats[i] =
        (codec_heartbeat){.group = state.groups[i], .message = &state.messages[i]};
  }
  size_t reencoded_length = 0;
  int rc = codec_heartbeats_encode(state.heartbeats, count, state.reencoded,
                                   sizeof(state.reencoded), &reencoded_length);
  if (rc != 0) {
    violation("re-encoding decoded heartbeats: %s", transport_strerror(rc));
  }
  if (whole && (reencoded_length != length || memcmp(payload, state.reencoded, length) != 0)) {
    violation("heartbeats decoded whole re-encode differently");
  }
  codec_heartbeats_decoder decoder;
  codec_heartbeats_decoder_init(&decoder, state.reencoded, reencoded_length, FW_FROM, FW_TO);
  for (uint32_t i = 0; i < count; i++) {
    /* Decoded in sorted order, so re-encoding kept the order. */
    uint64_t group = 0;
    fl_raft_message again;
    if (codec_heartbeats_next(&decoder, &group, &again) != 1 ||
        group != state.heartbeats[i].group) {
      violation("re-encoded heartbeat %u missing or moved", i);
    }
    compare_messages(state.heartbeats[i].message, &again);
  }
  uint64_t group;
  fl_raft_message end;
  if (codec_heartbeats_next(&decoder, &group, &end) != 0) {
    violation("re-encoded heartbeats do not end cleanly");
  }
}

static void fuzz_heartbeats(const uint8_t *payload, size_t length) {
  codec_heartbeats_decoder decoder;
  codec_heartbeats_decoder_init(&decoder, payload, length, FW_FROM, FW_TO);
  uint32_t count = 0;
  int rc = 0;
  while (count < FW_MAX_MESSAGES) {
    rc = codec_heartbeats_next(&decoder, &state.groups[count], &state.messages[count]);
    if (rc != 1) {
      break;
    }
    check_heartbeat(&state.messages[count]);
    count++;
  }
  if (rc > 1 || (rc < 0 && rc != TRANSPORT_E_TRUNCATED && rc != TRANSPORT_E_MALFORMED)) {
    violation("heartbeats decoder returned %d", rc);
  }
  if (rc < 0 && codec_heartbeats_next(&decoder, &state.groups[0], &state.messages[0]) != rc) {
    violation("heartbeats decoder error is not sticky");
  }
  trace("heartbeats payload of %zu bytes: %u items, then %s\n", length, count,
        transport_strerror(rc));
  heartbeats_round_trip(count, payload, length, rc == 0);
}

/* ---- snapshot chunks and acks ---- */

static void fuzz_chunk(const uint8_t *payload, size_t length) {
  codec_snapshot_chunk chunk;
  int rc = codec_snapshot_chunk_decode(payload, length, &chunk);
  trace("chunk payload of %zu bytes: %s\n", length, transport_strerror(rc));
  if (rc != 0) {
    return;
  }
  check_inside(chunk.data, chunk.length, payload, length, "chunk data");
  if (chunk.offset > chunk.total_bytes || chunk.length > chunk.total_bytes - chunk.offset ||
      chunk.last != (chunk.offset + chunk.length == chunk.total_bytes) ||
      chunk.snapshot_index > LIMIT || chunk.snapshot_term > LIMIT ||
      length != CODEC_SNAPSHOT_CHUNK_HEADER_BYTES + (size_t)chunk.length) {
    violation("decoded chunk out of its bounds");
  }
  size_t reencoded_length = 0;
  if (codec_snapshot_chunk_encode(&chunk, state.reencoded, sizeof(state.reencoded),
                                  &reencoded_length) != 0 ||
      reencoded_length != length || memcmp(payload, state.reencoded, length) != 0) {
    violation("a decoded chunk re-encodes differently");
  }
}

static void fuzz_ack(const uint8_t *payload, size_t length) {
  codec_snapshot_ack ack;
  int rc = codec_snapshot_ack_decode(payload, length, &ack);
  trace("ack payload of %zu bytes: %s\n", length, transport_strerror(rc));
  if (rc != 0) {
    return;
  }
  if (ack.status >= CODEC_SNAPSHOT_STATUS_COUNT ||
      (ack.status != CODEC_SNAPSHOT_OK && ack.next_offset != 0)) {
    violation("decoded ack out of its bounds");
  }
  size_t reencoded_length = 0;
  if (codec_snapshot_ack_encode(&ack, state.reencoded, sizeof(state.reencoded),
                                &reencoded_length) != 0 ||
      reencoded_length != length || memcmp(payload, state.reencoded, length) != 0) {
    violation("a decoded ack re-encodes differently");
  }
}

/* ---- frames ---- */

static void fuzz_payload(uint32_t type, const uint8_t *payload, size_t length, uint32_t capacity) {
  switch (type) {
  case FRAME_RAFT:
    fuzz_raft(payload, length, capacity);
    break;
  case FRAME_HEARTBEATS:
    fuzz_heartbeats(payload, length);
    break;
  case FRAME_SNAPSHOT_CHUNK:
    fuzz_chunk(payload, length);
    break;
  case FRAME_SNAPSHOT_ACK:
    fuzz_ack(payload, length);
    break;
  default:
    break; /* handshakes belong to the connection layer */
  }
}

/* Recomputes both checksums of the frame at `bytes` when its payload is
 * all there, so the rest of the header is what gets tested. */
static void repair_checksums(uint8_t *bytes, size_t available) {
  frame_header header;
  memcpy(&header, bytes, sizeof(header));
  if (header.payload_length > available - FRAME_HEADER_BYTES) {
    return;
  }
  header.payload_checksum = XXH3_64bits(bytes + FRAME_HEADER_BYTES, header.payload_length);
  header.header_checksum = XXH3_64bits(&header, offsetof(frame_header, header_checksum));
  memcpy(bytes, &header, sizeof(header));
}

static void fuzz_frames(uint8_t *bytes, size_t size, bool repair, uint32_t capacity) {
  size_t position = 0;
  while (size - position >= FRAME_HEADER_BYTES) {
    if (repair) {
      repair_checksums(bytes + position, size - position);
    }
    frame_header header;
    memcpy(&header, bytes + position, sizeof(header));
    int rc = frame_header_check(&header, FW_MAX_PAYLOAD);
    trace("frame at %zu: type %u, %u bytes: %s\n", position, header.type, header.payload_length,
          transport_strerror(rc));
    if (rc != 0) {
      return;
    }
    if (header.type == 0 || header.type >= FRAME_TYPE_COUNT ||
        header.payload_length > FW_MAX_PAYLOAD || header.version != FRAME_VERSION) {
      violation("frame_header_check passed a bad header");
    }
    const uint8_t *payload = bytes + position + FRAME_HEADER_BYTES;
    if (header.payload_length > size - position - FRAME_HEADER_BYTES) {
      return; /* a connection would wait for the rest */
    }
    if (frame_payload_check(&header, payload) != 0) {
      trace("payload checksum mismatch\n");
      return;
    }
    fuzz_payload(header.type, payload, header.payload_length, capacity);
    position += FRAME_HEADER_BYTES + header.payload_length;
  }
}

/* ---- seeds ---- */

static void write_seed(const char *directory, const char *name, uint8_t mode, const uint8_t *bytes,
                       size_t length) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", directory, name);
  FILE *file = fopen(path, "wb");
  if (file == NULL || fwrite(&mode, 1, 1, file) != 1 || fwrite(bytes, 1, length, file) != length ||
      fclose(file) != 0) {
    fprintf(stderr, "fuzz-wire: cannot write %s\n", path);
    exit(1);
  }
}

static const uint8_t seed_data[] = "set key:0001 value-0001 set key:0002 value-0002 ...";

/* One message of each type; APPEND of group 1 with entries of 0-40 bytes. */
static size_t seed_raft_every_type(uint8_t *buffer, size_t capacity) {
  static fl_raft_entry entries[5];
  codec_raft_encoder encoder;
  codec_raft_encoder_init(&encoder, buffer, capacity);
  for (uint32_t type = 1; type < FL_RAFT_MSG_TYPE_COUNT; type++) {
    fl_raft_message m = {.type = type, .term = 3, .log_term = 2, .index = 10 * type, .commit = 9};
    m.reject = type == FL_RAFT_MSG_APPEND_RESP;
    m.reject_hint = m.reject ? 7 : 0;
    m.context = type == FL_RAFT_MSG_READ_INDEX ? 0x1234 : 0;
    if (type == FL_RAFT_MSG_APPEND) {
      for (uint32_t i = 0; i < 5; i++) {
        entries[i] = (fl_raft_entry){.term = 3,
                                     .index = m.index + 1 + i,
                                     .type = i == 4,
                                     .length = 10 * i,
                                     .data = seed_data};
      }
      m.entries = entries;
      m.entry_count = 5;
    }
    if (type == FL_RAFT_MSG_SNAPSHOT) {
      m.snapshot = (fl_raft_snapshot_meta){.index = 80, .term = 2};
      m.snapshot.conf = (fl_raft_conf){
          .voter_count = 3, .voters = {1, 2, 3}, .learner_count = 1, .learners = {4}};
    }
    codec_raft_add(&encoder, type, &m);
  }
  size_t length = 0;
  codec_raft_finish(&encoder, &length);
  return length;
}

/* 8 groups replicating 16-byte entries: the hot path's shape. */
static size_t seed_raft_appends(uint8_t *buffer, size_t capacity) {
  static fl_raft_entry entries[8];
  codec_raft_encoder encoder;
  codec_raft_encoder_init(&encoder, buffer, capacity);
  for (uint64_t group = 100; group < 108; group++) {
    fl_raft_message m = {.type = FL_RAFT_MSG_APPEND, .term = 5, .log_term = 5, .index = group};
    m.commit = group - 1;
    m.entry_count = (uint32_t)(group % 4) + 1;
    for (uint32_t i = 0; i < m.entry_count; i++) {
      entries[i] =
          (fl_raft_entry){.term = 5, .index = group + 1 + i, .length = 16, .data = seed_data + i};
    }
    m.entries = entries;
    codec_raft_add(&encoder, group, &m);
  }
  size_t length = 0;
  codec_raft_finish(&encoder, &length);
  return length;
}

static size_t seed_heartbeats(uint8_t *buffer, size_t capacity) {
  static fl_raft_message messages[8];
  codec_heartbeat items[8];
  const uint64_t groups[8] = {1, 2, 3, 1000, 1ull << 40, UINT64_MAX, 2, 77};
  for (uint32_t i = 0; i < 8; i++) {
    bool response = i >= 6;
    messages[i] =
        (fl_raft_message){.type = response ? FL_RAFT_MSG_HEARTBEAT_RESP : FL_RAFT_MSG_HEARTBEAT,
                          .term = 4 + i,
                          .index = 300 + i,
                          .commit = response ? 0 : 1000 * i,
                          .context = i};
    items[i] = (codec_heartbeat){.group = groups[i], .message = &messages[i]};
  }
  size_t length = 0;
  codec_heartbeats_encode(items, 8, buffer, capacity, &length);
  return length;
}

static size_t seed_chunk(uint8_t *buffer, size_t capacity) {
  codec_snapshot_chunk chunk = {.group = 3,
                                .stream_id = 1,
                                .snapshot_index = 80,
                                .snapshot_term = 2,
                                .offset = 64,
                                .total_bytes = 100,
                                .length = 36,
                                .last = true,
                                .data = seed_data};
  size_t length = 0;
  codec_snapshot_chunk_encode(&chunk, buffer, capacity, &length);
  return length;
}

static size_t seed_ack(uint8_t *buffer, size_t capacity) {
  codec_snapshot_ack ack = {.group = 3,
                            .stream_id = 1,
                            .next_offset = 100,
                            .window_bytes = 1 << 20,
                            .status = CODEC_SNAPSHOT_OK};
  size_t length = 0;
  codec_snapshot_ack_encode(&ack, buffer, capacity, &length);
  return length;
}

/* Appends one sealed frame around a payload written by `write`. */
static size_t seed_frame(uint8_t *buffer, size_t capacity, frame_type type,
                         size_t (*write)(uint8_t *, size_t)) {
  size_t length = write(buffer + FRAME_HEADER_BYTES, capacity - FRAME_HEADER_BYTES);
  struct iovec payload = {.iov_base = buffer + FRAME_HEADER_BYTES, .iov_len = length};
  frame_header header;
  frame_seal(&header, type, &payload, 1);
  memcpy(buffer, &header, sizeof(header));
  return FRAME_HEADER_BYTES + length;
}

static size_t seed_frames(uint8_t *buffer, size_t capacity) {
  size_t length = seed_frame(buffer, capacity, FRAME_RAFT, seed_raft_every_type);
  length += seed_frame(buffer + length, capacity - length, FRAME_HEARTBEATS, seed_heartbeats);
  length += seed_frame(buffer + length, capacity - length, FRAME_SNAPSHOT_CHUNK, seed_chunk);
  length += seed_frame(buffer + length, capacity - length, FRAME_SNAPSHOT_ACK, seed_ack);
  return length + seed_frame(buffer + length, capacity - length, FRAME_RAFT, seed_raft_appends);
}

static void write_seeds(const char *directory) {
  static uint8_t buffer[16384];
  write_seed(directory, "seed-frames", FW_FRAMES, buffer, seed_frames(buffer, sizeof(buffer)));
  write_seed(directory, "seed-frames-repaired", FW_FRAMES_REPAIRED, buffer,
             seed_frames(buffer, sizeof(buffer)));
  size_t length = seed_raft_every_type(buffer, sizeof(buffer));
  write_seed(directory, "seed-raft-every-type", FW_RAFT, buffer, length);
  /* Scratch capacity 2 (selector 3): the 5-entry APPEND is refused. */
  write_seed(directory, "seed-raft-small-scratch", FW_RAFT + 3 * FW_MODE_COUNT, buffer, length);
  write_seed(directory, "seed-raft-appends", FW_RAFT, buffer,
             seed_raft_appends(buffer, sizeof(buffer)));
  write_seed(directory, "seed-heartbeats", FW_HEARTBEATS, buffer,
             seed_heartbeats(buffer, sizeof(buffer)));
  write_seed(directory, "seed-chunk", FW_CHUNK, buffer, seed_chunk(buffer, sizeof(buffer)));
  write_seed(directory, "seed-ack", FW_ACK, buffer, seed_ack(buffer, sizeof(buffer)));
}

/* ---- entry points ---- */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *directory = getenv("FLOTILLA_FUZZ_WRITE_SEEDS");
  if (directory != NULL && directory[0] != '\0') {
    write_seeds(directory);
    exit(0);
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) {
    return 0;
  }
  uint32_t mode = data[0] % FW_MODE_COUNT;
  uint32_t selector = data[0] / FW_MODE_COUNT;
  uint32_t capacity = selector == 0 ? CODEC_MAX_ENTRIES_PER_MESSAGE : selector - 1;
  /* An exact-size copy: ASan sees a read one byte past the end. It starts
   * at an odd address, as a payload in a receive buffer may. */
  size_t length = size - 1;
  uint8_t *block = malloc(length + 1);
  if (block == NULL) {
    return 0;
  }
  uint8_t *bytes = block + 1;
  memcpy(bytes, data + 1, length);
  if (mode == FW_FRAMES || mode == FW_FRAMES_REPAIRED) {
    fuzz_frames(bytes, length, mode == FW_FRAMES_REPAIRED, capacity);
  } else {
    fuzz_payload(FRAME_RAFT + (mode - FW_RAFT), bytes, length, capacity);
  }
  free(block);
  return 0;
}
