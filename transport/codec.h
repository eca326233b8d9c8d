/*
 * codec.h - the payloads carried inside frames (transport/frame.h): batches
 * of Raft messages, coalesced heartbeats, snapshot chunks and their acks.
 * The byte layouts, validation rules and versioning policy are written out
 * in docs/wire-format.md; this header is the programming interface.
 *
 * Why a codec of its own: every message between two nodes goes through it,
 * millions of entries a second, so it writes straight into the caller's send
 * buffer (entry bytes are copied exactly once), decodes in place (entries
 * point into the received payload) and never allocates. And everything it
 * reads comes from another machine, so the decoder trusts no count, length
 * or number before checking it against the bytes that are really there.
 *
 * Conventions:
 *   - Errors: int, 0 or a negative TRANSPORT_E_* (transport/frame.h).
 *     Decoders return 1 for "one more item", 0 for "cleanly at the end".
 *   - A decoder error is sticky: every later call returns it again. Items
 *     returned before the error were fully checked and are safe to use, but
 *     a connection that sees an error should be closed (the frame checksum
 *     passed, so the peer itself is broken or hostile).
 *   - No payload is assumed aligned: the codec loads and stores with memcpy.
 *   - `from` and `to` are not on the wire: the connection names both nodes,
 *     so the decoders take them as arguments and fill every message with them.
 */
#ifndef FLOTILLA_TRANSPORT_CODEC_H
#define FLOTILLA_TRANSPORT_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"
#include "raft/raft.h"
#include "transport/frame.h"

/*
 * Entries one APPEND may carry on the wire. The receiver decodes a message's
 * entries into a scratch array it owns, so this bound sizes that array
 * (CODEC_MAX_ENTRIES_PER_MESSAGE * sizeof(fl_raft_entry) = 128 KiB per
 * decoder). A sender's fl_raft_options.max_entries_per_message must not be
 * above it (the raft default is 1024); the encoder refuses bigger messages.
 */
#define CODEC_MAX_ENTRIES_PER_MESSAGE 4096
FL_STATIC_ASSERT(CODEC_MAX_ENTRIES_PER_MESSAGE <= FL_RAFT_MAX_UNSTABLE_ENTRIES,
                 "a received append fits in the receiver's unstable log");

/* The fixed parts of a FRAME_RAFT payload (layouts in codec_internal.h). */
#define CODEC_RAFT_BATCH_HEADER_BYTES 8u
#define CODEC_RAFT_MESSAGE_HEADER_BYTES 64u
#define CODEC_RAFT_SNAPSHOT_META_BYTES 24u
#define CODEC_RAFT_ENTRY_HEADER_BYTES 16u
/* The largest encoded configuration: an 8-byte header and every id. */
#define CODEC_MAX_CONF_BYTES (8u + 8u * (2u * FL_RAFT_MAX_VOTERS + FL_RAFT_MAX_LEARNERS))

/* ------------------------------------------------------------------------
 * FRAME_RAFT: a batch of Raft messages of many groups, one node to one node.
 * ------------------------------------------------------------------------ */

/*
 * Writes messages into a caller-owned buffer (typically the connection's
 * send buffer, just past the room kept for the frame header). Add messages,
 * then finish() writes the batch header and gives the payload length.
 */
typedef struct codec_raft_encoder {
  uint8_t *buffer;
  size_t capacity; /* at most UINT32_MAX: the frame's length is 32 bits */
  size_t length;   /* bytes written so far, the batch header included */
  uint32_t message_count;
} codec_raft_encoder;

/*
 * Starts an empty batch in buffer[0, capacity). Returns 0, or
 * TRANSPORT_E_FULL when even the batch header does not fit.
 */
int codec_raft_encoder_init(codec_raft_encoder *encoder, uint8_t *buffer, size_t capacity);

/* Bytes `message` takes in a batch (not validated; see codec_raft_add). */
size_t codec_raft_message_size(const fl_raft_message *message);

/*
 * Appends one message of `group`. Its entries' bytes are copied into the
 * buffer here, once; nothing else of the message is kept. Returns:
 *   0                      added;
 *   TRANSPORT_E_FULL       it does not fit in what is left: the buffer and
 *                          the encoder are unchanged; finish, send, start a
 *                          new batch and add it again;
 *   TRANSPORT_E_TOO_LARGE  it would not fit even in an empty batch of this
 *                          capacity, or carries more than
 *                          CODEC_MAX_ENTRIES_PER_MESSAGE entries;
 *   TRANSPORT_E_TYPE       unknown message type;
 *   TRANSPORT_E_MALFORMED  a message the decoder would refuse (numbers past
 *                          FL_RAFT_MAX_TERM_OR_INDEX, entries on a type
 *                          other than APPEND, entry indexes not consecutive
 *                          from index + 1, bad entry type, invalid conf).
 * On any error the buffer and the encoder are unchanged.
 */
int codec_raft_add(codec_raft_encoder *encoder, uint64_t group, const fl_raft_message *message);

/* Writes the batch header; *payload_length = bytes of the payload. */
void codec_raft_finish(codec_raft_encoder *encoder, size_t *payload_length);

typedef struct codec_raft_decoder {
  const uint8_t *payload;
  size_t length;
  size_t position;
  uint64_t from;
  uint64_t to;
  uint32_t message_count;
  uint32_t messages_read;
  bool started;
  int error;
} codec_raft_decoder;

/* Reads `payload` (borrowed; any alignment) sent by node `from` to `to`. */
void codec_raft_decoder_init(codec_raft_decoder *decoder, const uint8_t *payload, size_t length,
                             uint64_t from, uint64_t to);

/*
 * Decodes the next message into *group and *message. Its entries are written
 * to entries_scratch and their data points INTO the payload: both stay valid
 * while the payload and the scratch array do (the next call overwrites the
 * scratch). Returns 1 (a message), 0 (end of a well-formed batch) or
 * TRANSPORT_E_TRUNCATED (bytes missing), TRANSPORT_E_MALFORMED (an invalid
 * field, entry_count > scratch_capacity or > CODEC_MAX_ENTRIES_PER_MESSAGE,
 * bytes past the last message) or TRANSPORT_E_TYPE (unknown message type).
 */
int codec_raft_next(codec_raft_decoder *decoder, uint64_t *group, fl_raft_message *message,
                    fl_raft_entry *entries_scratch, uint32_t scratch_capacity);

/* ------------------------------------------------------------------------
 * FRAME_HEARTBEATS: every group's heartbeat (and response) of one tick
 * between two nodes, sorted by group, as LEB128 varints.
 * ------------------------------------------------------------------------ */

/* One heartbeat to coalesce: the group and the core's message (borrowed). */
typedef struct codec_heartbeat {
  uint64_t group;
  const fl_raft_message *message;
} codec_heartbeat;

/* The most bytes one coalesced heartbeat takes: five varints (group delta
 * and context up to 10 bytes; term, index and commit are < 2^63: 9 bytes). */
#define CODEC_HEARTBEAT_MAX_BYTES (10u + 9u + 9u + 9u + 10u)
#define CODEC_HEARTBEATS_HEADER_BYTES 8u

/*
 * True when a message can travel in a heartbeats frame without losing
 * anything: a HEARTBEAT or HEARTBEAT_RESP whose numbers are in range and
 * whose fields other than term, index, commit (HEARTBEAT only) and context
 * are zero. Other messages go in a FRAME_RAFT batch, which carries all.
 */
bool codec_heartbeat_is_coalescible(const fl_raft_message *message);

/* Sorts `items` in place into the frame's order (heartbeats, then
 * responses; each kind by group), items of one group and kind in the order
 * of their messages' addresses: for messages in one array, the array's
 * order. No allocation, O(n log n). */
void codec_heartbeats_sort(codec_heartbeat *items, uint32_t count);

/* An upper bound of the payload for `count` heartbeats: size the buffer. */
size_t codec_heartbeats_max_size(uint32_t count);

/*
 * Encodes `count` heartbeats into one payload. Sorts `items` in place (by
 * kind, then group; no allocation). Returns 0 and *payload_length, or
 * TRANSPORT_E_TYPE (not a heartbeat type), TRANSPORT_E_MALFORMED (not
 * coalescible, or one group twice in the same kind), TRANSPORT_E_FULL (does
 * not fit in capacity; nothing written). The order of `items` may have
 * changed even on error.
 */
int codec_heartbeats_encode(codec_heartbeat *items, uint32_t count, uint8_t *buffer,
                            size_t capacity, size_t *payload_length);

typedef struct codec_heartbeats_decoder {
  const uint8_t *payload;
  size_t length;
  size_t position;
  uint64_t from;
  uint64_t to;
  uint32_t heartbeats_left;
  uint32_t responses_left;
  uint64_t previous_group; /* of the current kind */
  bool in_responses;       /* the heartbeats are read, responses follow */
  bool section_started;    /* an item of the current kind was read */
  bool started;
  int error;
} codec_heartbeats_decoder;

void codec_heartbeats_decoder_init(codec_heartbeats_decoder *decoder, const uint8_t *payload,
                                   size_t length, uint64_t from, uint64_t to);

/*
 * Decodes the next heartbeat or response as a full fl_raft_message (fields
 * not carried are zero). Returns 1, 0 (end) or TRANSPORT_E_TRUNCATED /
 * TRANSPORT_E_MALFORMED (bad varint, groups not increasing, numbers out of
 * range, bytes past the end).
 */
int codec_heartbeats_next(codec_heartbeats_decoder *decoder, uint64_t *group,
                          fl_raft_message *message);

/* ------------------------------------------------------------------------
 * FRAME_SNAPSHOT_CHUNK / FRAME_SNAPSHOT_ACK: a snapshot's data streamed in
 * chunks beside the log traffic, with the receiver pacing the sender.
 * ------------------------------------------------------------------------ */

#define CODEC_SNAPSHOT_CHUNK_HEADER_BYTES 56u
#define CODEC_SNAPSHOT_ACK_BYTES 32u

typedef struct codec_snapshot_chunk {
  uint64_t group;
  uint64_t stream_id;      /* chosen by the sender, one per transfer attempt */
  uint64_t snapshot_index; /* the snapshot this data belongs to */
  uint64_t snapshot_term;
  uint64_t offset;      /* of data[0] within the snapshot */
  uint64_t total_bytes; /* of the whole snapshot */
  uint32_t length;      /* bytes of data */
  bool last;            /* offset + length == total_bytes */
  const uint8_t *data;  /* encode: borrowed; decode: points INTO the payload */
} codec_snapshot_chunk;

typedef enum codec_snapshot_status {
  CODEC_SNAPSHOT_OK = 0,      /* send on from next_offset */
  CODEC_SNAPSHOT_RESTART = 1, /* lost the stream's state: send again from 0 */
  CODEC_SNAPSHOT_ABORT = 2,   /* stop this stream (snapshot refused or stale) */
  CODEC_SNAPSHOT_STATUS_COUNT = 3,
} codec_snapshot_status;

typedef struct codec_snapshot_ack {
  uint64_t group;
  uint64_t stream_id;
  uint64_t next_offset;  /* every byte before it is received; 0 unless OK */
  uint32_t window_bytes; /* may send up to next_offset + window; 0: sender's default */
  uint32_t status;       /* codec_snapshot_status */
} codec_snapshot_ack;

/* 0 when the chunk's fields are consistent (docs/wire-format.md). */
int codec_snapshot_chunk_check(const codec_snapshot_chunk *chunk);

/*
 * Writes only the 56-byte header, so the data can follow from where it lies
 * (a second iovec) without a copy. 0 or TRANSPORT_E_MALFORMED.
 */
int codec_snapshot_chunk_encode_header(const codec_snapshot_chunk *chunk,
                                       uint8_t header[CODEC_SNAPSHOT_CHUNK_HEADER_BYTES]);
/* Header and data in one buffer. 0, TRANSPORT_E_MALFORMED or TRANSPORT_E_FULL. */
int codec_snapshot_chunk_encode(const codec_snapshot_chunk *chunk, uint8_t *buffer, size_t capacity,
                                size_t *payload_length);
/* 0, TRANSPORT_E_TRUNCATED or TRANSPORT_E_MALFORMED. */
int codec_snapshot_chunk_decode(const uint8_t *payload, size_t length, codec_snapshot_chunk *chunk);

/* 0, TRANSPORT_E_MALFORMED or TRANSPORT_E_FULL. */
int codec_snapshot_ack_encode(const codec_snapshot_ack *ack, uint8_t *buffer, size_t capacity,
                              size_t *payload_length);
/* 0, TRANSPORT_E_TRUNCATED or TRANSPORT_E_MALFORMED. */
int codec_snapshot_ack_decode(const uint8_t *payload, size_t length, codec_snapshot_ack *ack);

#endif
