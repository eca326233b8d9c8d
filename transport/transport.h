/*
 * transport.h - TCP connections between nodes on a caller-owned io_uring:
 * opaque frames (a type and payload bytes, transport/frame.h) of every
 * group, coalesced per peer into large pipelined sends.
 *
 * One transport serves one shard of one node. For every remote peer it
 * dials ONE outgoing connection that carries this node's frames to that
 * peer; the peer's frames to us arrive on the connection the peer dialed,
 * which our listener accepted. Each direction therefore has exactly one
 * owner and two nodes dialing each other at once never race (there is no
 * tie-break to get wrong). docs/transport.md describes the connection
 * model, the handshake, the buffers and the failure handling.
 *
 * Driving: the caller owns the ring and runs, per loop iteration,
 *   transport_tick(t, now_ms);   timeouts, reconnects, delayed frames
 *   ... build and queue frames (transport_reserve/commit, transport_send) ...
 *   transport_flush(t);          one send per peer with pending bytes
 *   fl_dispatch(ring, ...);      submit, wait, handle completions
 * The transport reads no clock: time only moves through transport_tick.
 *
 * Threading: a transport belongs to the thread that owns its ring; no call
 * is thread-safe. Callbacks run on that thread, from transport_tick or from
 * a completion handled by fl_dispatch. Inside a callback the caller may use
 * only the sending calls (reserve, commit, send and their bulk forms,
 * bulk_space, flush), transport_set_fault and the queries; adding or
 * removing peers, ticking, shutting down and destroying are refused there
 * (asserted), so no callback can pull a connection from under the code
 * that called it.
 *
 * Errors: int, 0 or negative: a TRANSPORT_E_* code (frame.h) or -errno.
 */
#ifndef FLOTILLA_TRANSPORT_TRANSPORT_H
#define FLOTILLA_TRANSPORT_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "common/limits.h"
#include "transport/frame.h"

struct io_uring;

typedef struct transport transport;

/* ---- bounds ---- */

/* Peers one transport knows at once: nodes of the cluster. Lookups scan. */
#define TRANSPORT_MAX_PEERS 1024u
/* Accepted connections that have not finished their handshake. Beyond it
 * new connections are closed at once: a flood of idle sockets costs at most
 * this many small buffers. */
#define TRANSPORT_MAX_PENDING_HANDSHAKES 64u
/* Largest max_frame_payload_bytes accepted: sizes stay far from 32 bits. */
#define TRANSPORT_MAX_FRAME_PAYLOAD_LIMIT (256u << 20)
/* Longest host name or address string of a peer or of the listener. */
#define TRANSPORT_MAX_HOST_BYTES 255u

/* ---- the handshake (the payload of FRAME_HANDSHAKE and its ACK) ---- */

/* Version of the connection protocol, checked in the handshake. It moves
 * with FRAME_VERSION: a frame layout change is a protocol change. */
#define TRANSPORT_PROTOCOL_VERSION FRAME_VERSION

/*
 * Sent as is (little-endian, as every frame), 32 bytes. The dialer sends its
 * identity with result 0; the acceptor answers with its own identity and
 * the result of its checks, then closes the connection when the result is
 * not TRANSPORT_HANDSHAKE_ACCEPTED. Layout and rules in docs/transport.md.
 */
typedef struct transport_handshake {
  uint64_t cluster_id;
  uint64_t node_id;
  uint32_t protocol_version;
  uint32_t shard_id;
  uint32_t shard_count;
  int32_t result; /* ACK only: a transport_handshake_result; 0 in FRAME_HANDSHAKE */
} transport_handshake;
FL_STATIC_ASSERT(sizeof(transport_handshake) == 32, "handshake payload layout");
FL_STATIC_ASSERT(offsetof(transport_handshake, node_id) == 8, "handshake payload layout");
FL_STATIC_ASSERT(offsetof(transport_handshake, protocol_version) == 16, "handshake payload layout");
FL_STATIC_ASSERT(offsetof(transport_handshake, shard_id) == 20, "handshake payload layout");
FL_STATIC_ASSERT(offsetof(transport_handshake, shard_count) == 24, "handshake payload layout");
FL_STATIC_ASSERT(offsetof(transport_handshake, result) == 28, "handshake payload layout");

/* Why a handshake was refused; the field that did not match. */
typedef enum transport_handshake_result {
  TRANSPORT_HANDSHAKE_ACCEPTED = 0,
  TRANSPORT_HANDSHAKE_CLUSTER = 1,        /* cluster id differs */
  TRANSPORT_HANDSHAKE_VERSION = 2,        /* protocol version differs */
  TRANSPORT_HANDSHAKE_SHARD_ID = 3,       /* dialed the wrong shard */
  TRANSPORT_HANDSHAKE_SHARD_COUNT = 4,    /* shard counts differ */
  TRANSPORT_HANDSHAKE_NODE_UNKNOWN = 5,   /* not one of our peers */
  TRANSPORT_HANDSHAKE_NODE_DUPLICATE = 6, /* our own id, or already connected */
  TRANSPORT_HANDSHAKE_WRONG_NODE = 7,     /* dialer: the acceptor is not the node dialed */
  TRANSPORT_HANDSHAKE_RESULT_COUNT = 8,
} transport_handshake_result;

/* A static string naming the field ("cluster id", "shard count", ...). */
const char *transport_handshake_result_name(int result);

/* ---- why connections close on bad input ---- */

typedef enum transport_reason {
  TRANSPORT_REASON_BAD_MAGIC = 0,         /* not a Flotilla frame */
  TRANSPORT_REASON_BAD_VERSION = 1,       /* frame header version */
  TRANSPORT_REASON_BAD_TYPE = 2,          /* unknown frame type or reserved bits set */
  TRANSPORT_REASON_TOO_LARGE = 3,         /* length above max_frame_payload_bytes */
  TRANSPORT_REASON_HEADER_CHECKSUM = 4,   /* header damaged */
  TRANSPORT_REASON_PAYLOAD_CHECKSUM = 5,  /* payload damaged */
  TRANSPORT_REASON_TRUNCATED = 6,         /* the peer closed inside a frame */
  TRANSPORT_REASON_UNEXPECTED_FRAME = 7,  /* a valid frame that this connection must not carry */
  TRANSPORT_REASON_BAD_HANDSHAKE = 8,     /* first frame not a well-formed handshake */
  TRANSPORT_REASON_HANDSHAKE_TIMEOUT = 9, /* dial to acknowledged handshake took too long */
  TRANSPORT_REASON_FRAME_TIMEOUT = 10,    /* a started frame did not complete in time */
  TRANSPORT_REASON_SOCKET_ERROR = 11,     /* send or receive failed (reset, ...) */
  TRANSPORT_REASON_COUNT = 12,
} transport_reason;

/* A static string ("bad magic", "frame timeout", ...). */
const char *transport_reason_name(int reason);

/* ---- options ---- */

typedef enum transport_log_level {
  TRANSPORT_LOG_DEBUG = 0,
  TRANSPORT_LOG_INFO = 1,
  TRANSPORT_LOG_WARN = 2,
  TRANSPORT_LOG_ERROR = 3,
} transport_log_level;

/* Where a peer listens for this shard's connection (the engine decides
 * which port each shard uses; the transport dials exactly this). */
typedef struct transport_peer_address {
  uint64_t node_id;
  const char *host; /* numeric address or name, resolved once when added */
  uint16_t port;
} transport_peer_address;

/* payload is valid only during the call (it points into the receive
 * buffer); its checksum was verified. */
typedef void (*transport_frame_fn)(void *context, uint64_t from_node, frame_type type,
                                   const uint8_t *payload, uint32_t length);
/* up: our outgoing connection to node finished its handshake; down: it was
 * lost. Called once per transition, never twice in a row with one value. */
typedef void (*transport_peer_fn)(void *context, uint64_t node, bool up);
/* message is valid only during the call. */
typedef void (*transport_log_fn)(void *context, transport_log_level level, const char *message);

typedef struct transport_options {
  uint64_t cluster_id;
  uint64_t node_id; /* not 0 */
  uint32_t shard_id;
  uint32_t shard_count; /* > shard_id */

  const char *listen_host; /* default "0.0.0.0"; copied */
  uint16_t listen_port;    /* 0: an ephemeral port, see transport_listen_port() */
  bool no_listener;        /* dial only; nobody can send to this transport */

  const transport_peer_address *peers; /* initial peers, copied; may be NULL */
  uint32_t peer_count;

  uint32_t max_frame_payload_bytes; /* largest frame accepted or sent (default 4 MiB) */
  uint32_t max_queue_bytes;         /* normal frames queued per peer, headers included (16 MiB) */
  uint32_t max_bulk_bytes;          /* bulk frames queued per peer (default 8 MiB) */
  uint32_t bulk_quantum_bytes;      /* bulk bytes per send, at least one frame (1 MiB) */
  uint32_t backoff_min_ms;          /* first reconnect delay (default 50) */
  uint32_t backoff_max_ms;          /* the delay doubles up to this (default 5000) */
  uint32_t handshake_timeout_ms;    /* dial or accept to handshake done (default 5000) */
  uint32_t frame_timeout_ms;        /* first byte to last byte of one frame (default 10000) */
  uint64_t seed;                    /* reconnect jitter and fault decisions */

  transport_frame_fn on_frame; /* required */
  transport_peer_fn on_peer;   /* may be NULL */
  transport_log_fn log;        /* may be NULL */
  void *context;               /* passed to the three callbacks */
} transport_options;

/* Fills the defaults; the caller then sets ids, peers and callbacks. */
void transport_options_default(transport_options *options);

/* ---- lifecycle ---- */

/*
 * Validates the options (-EINVAL, with nothing logged but the reason
 * returned), binds and listens (unless no_listener; -errno when that fails),
 * resolves the peers, and prepares the first accept on ring. The ring is
 * borrowed: it must outlive the transport, and its owner must submit and
 * dispatch it (fl_dispatch). Strings in options are copied. Connections are
 * dialed from the first transport_tick on.
 */
int transport_create(const transport_options *options, struct io_uring *ring, transport **out);

/* The bound port (useful with listen_port 0), or 0 without a listener. */
uint16_t transport_listen_port(const transport *t);

/*
 * Starts closing everything: every connection is shut down and its
 * operations cancelled on the ring, the listener's accept too; queued
 * frames are dropped and no on_peer(down) is reported. The caller keeps
 * dispatching completions until transport_is_idle(), then destroys. Sends
 * return TRANSPORT_E_CLOSED from now on. Idempotent.
 */
void transport_shutdown(transport *t);

/* True when no operation of this transport is outstanding on the ring and
 * every socket is closed (only possible after transport_shutdown). */
bool transport_is_idle(const transport *t);

/* Frees the transport. Requires transport_is_idle() (asserted): the kernel
 * may still write into a buffer of an operation in flight. */
void transport_destroy(transport *t);

/* ---- time ---- */

/*
 * Advances the transport's clock to now_ms (never backwards): closes
 * connections whose handshake or current frame is overdue, dials peers whose
 * backoff expired, releases frames held by a delay fault, re-arms a failed
 * accept. Call it every loop iteration, before queueing and flushing.
 * Returns 0, or -EINVAL if now_ms went backwards.
 */
int transport_tick(transport *t, uint64_t now_ms);

/* ---- peers (membership changes) ---- */

/*
 * Adds a peer and dials it at the next tick. The host is resolved here, once
 * (getaddrinfo: pass numeric addresses from a latency-sensitive loop).
 * -EEXIST if known, -EINVAL for our own id, 0 or a bad address, -ENOSPC
 * beyond TRANSPORT_MAX_PEERS.
 */
int transport_add_peer(transport *t, const transport_peer_address *address);

/*
 * Forgets a peer: closes both its connections, drops what is queued for it
 * and refuses its future handshakes. No on_peer(down) is reported: the
 * caller asked for it. -ENOENT if unknown.
 */
int transport_remove_peer(transport *t, uint64_t node);

/* ---- sending ---- */

/*
 * The zero-copy path for an encoder. transport_reserve() returns in *payload
 * room for payload_bytes in the send buffer of node, right after room for
 * the frame header; the encoder writes the payload there once, then
 * transport_commit() seals the header (checksums computed over the bytes in
 * place) and queues the frame. payload_bytes at commit may be smaller than
 * reserved (an encoder may reserve its maximum). Each peer may have one
 * reservation open: reservations on different peers do not disturb each
 * other, so an encoder can keep a batch open per peer; a second reserve on
 * the same peer abandons the first. Completions may be dispatched while a
 * reservation is open (if its connection closes, the commit returns
 * TRANSPORT_E_CLOSED), but no tick, flush or peer change may come between
 * the two calls: a flush abandons every reservation not committed.
 *
 * Normal frames: order is kept among them. Errors of reserve:
 * TRANSPORT_E_CLOSED (node down, unknown or shutting down; the frame is
 * lost, Raft retries), TRANSPORT_E_FULL (max_queue_bytes reached: drop it),
 * TRANSPORT_E_TOO_LARGE (above max_frame_payload_bytes), TRANSPORT_E_NOMEM.
 * commit returns 0, -EINVAL without a matching reservation, or
 * TRANSPORT_E_CLOSED. A frame discarded by a fault (transport_set_fault)
 * still returns 0.
 */
int transport_reserve(transport *t, uint64_t node, uint32_t payload_bytes, void **payload);
int transport_commit(transport *t, uint64_t node, frame_type type, uint32_t payload_bytes);

/* Copies a payload given as iovecs into a frame (reserve + copy + commit). */
int transport_send(transport *t, uint64_t node, frame_type type, const struct iovec *payload,
                   int count);

/*
 * The bulk class, for snapshot chunks: a second queue per peer bounded by
 * max_bulk_bytes. Each flush sends every normal frame first and at most
 * bulk_quantum_bytes of bulk frames (whole frames, at least one), so a
 * snapshot stream never starves log traffic. Order is kept among bulk
 * frames, not between the classes. Same errors as the normal class.
 */
int transport_reserve_bulk(transport *t, uint64_t node, uint32_t payload_bytes, void **payload);
int transport_commit_bulk(transport *t, uint64_t node, frame_type type, uint32_t payload_bytes);
int transport_send_bulk(transport *t, uint64_t node, frame_type type, const struct iovec *payload,
                        int count);

/* Largest payload transport_reserve_bulk() would accept right now for node
 * (0 when down or full): the snapshot sender's flow control. */
uint32_t transport_bulk_space(const transport *t, uint64_t node);

/*
 * Prepares, for every peer that is up, has pending frames and no send in
 * flight, one sendmsg with everything queued (plus the bulk quantum). The
 * caller submits the ring. Frames queued meanwhile go into the other buffer
 * and leave with the next flush after the send completed (double
 * buffering; a short send is continued by the completion itself).
 * Returns the number of sends prepared (0 after shutdown).
 */
int transport_flush(transport *t);

/* ---- faults (tests) ---- */

typedef struct transport_fault {
  bool drop;               /* every frame to or from the node discarded */
  double drop_probability; /* each frame to the node discarded with it, 0..1 */
  uint32_t delay_ms;       /* frames to the node held until now_ms + delay_ms */
} transport_fault;

/*
 * Sets (replaces) the fault on the link to node; a zeroed fault clears it.
 * A partition between two nodes is both sides setting drop. Connections
 * stay up: only frames are lost or held. Frames already held keep their
 * release time. -ENOENT if node is unknown, -EINVAL for a probability
 * outside [0, 1].
 */
int transport_set_fault(transport *t, uint64_t node, const transport_fault *fault);

/* ---- queries ---- */

typedef struct transport_stats {
  uint64_t frames_sent;     /* frames whose last byte the kernel took */
  uint64_t bytes_sent;      /* wire bytes, headers and handshakes included */
  uint64_t sends;           /* sendmsg operations completed */
  uint64_t frames_received; /* delivered to on_frame */
  uint64_t bytes_received;  /* wire bytes received */
  uint64_t connections_dialed;
  uint64_t connections_accepted;
  uint64_t connections_refused;  /* accepted and closed at once: too many pending handshakes */
  uint64_t connect_failures;     /* dials that did not connect */
  uint64_t connections_lost;     /* ready connections closed (by the peer or on error) */
  uint64_t connections_replaced; /* silent incoming connections a new handshake replaced */
  uint64_t handshake_rejects;    /* handshakes we refused, by field below */
  uint64_t handshake_rejects_by_result[TRANSPORT_HANDSHAKE_RESULT_COUNT];
  uint64_t handshakes_refused;             /* our handshakes the peer refused */
  uint64_t errors[TRANSPORT_REASON_COUNT]; /* connections closed, per reason */
  uint64_t frames_dropped_full;            /* queue full at reserve */
  uint64_t frames_dropped_down;            /* peer down at reserve, or queued when it went down */
  uint64_t frames_dropped_fault;           /* discarded by a drop fault, either direction */
  uint64_t frames_delayed;                 /* held by a delay fault */
} transport_stats;

/* Copies the counters (monotonic from create). */
void transport_get_stats(const transport *t, transport_stats *out);

typedef struct transport_peer_info {
  bool up;                    /* outgoing connection ready */
  bool connected_in;          /* the peer's connection to us is ready */
  uint32_t queued_bytes;      /* normal frames waiting for a flush */
  uint32_t in_flight_bytes;   /* normal and bulk bytes of the send in flight */
  uint32_t bulk_queued_bytes; /* bulk frames queued, in flight included */
  uint32_t backoff_ms;        /* delay of the next failure */
  uint64_t next_dial_ms;      /* when the next dial may start (while down) */
  uint64_t dials;             /* connections dialed to it */
} transport_peer_info;

/* -ENOENT if node is unknown. */
int transport_peer_info_get(const transport *t, uint64_t node, transport_peer_info *out);

/* Checks every internal invariant (queues, buffers, states, counts, the
 * links between peers and connections); returns false and names the broken
 * one in *broken (may be NULL). The hot paths assert their own share. */
bool transport_check_invariants(const transport *t, const char **broken);

#endif
