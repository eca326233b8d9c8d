/*
 * transport_internal.h - the state shared by the files of the transport:
 *   transport.c   lifecycle, tick, statistics, logging, invariants
 *   listener.c    the listening socket and its accept
 *   connection.c  one TCP connection's state machine, receive and send
 *   handshake.c   the handshake payload: building and checking it
 *   peer.c        the peer table, the per-peer queues and flush
 *   fault.c       the test seam: drop, drop probability, delay
 */
#ifndef FLOTILLA_TRANSPORT_INTERNAL_H
#define FLOTILLA_TRANSPORT_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/completion.h"
#include "transport/transport.h"

/* A handshake frame, header included: the whole receive buffer of a
 * connection until its handshake is done (nothing larger is awaited). */
#define TRANSPORT_CONTROL_BYTES (FRAME_HEADER_BYTES + sizeof(transport_handshake))
/* First receive buffer of a ready incoming connection: room for many small
 * frames per receive; it grows to one whole frame when one needs more. */
#define TRANSPORT_RECEIVE_INITIAL_BYTES (64u << 10)
/* First size of a send buffer; it doubles up to max_queue_bytes. */
#define TRANSPORT_SEND_INITIAL_BYTES (64u << 10)
/* Pending connections the kernel keeps before we accept them. */
#define TRANSPORT_LISTEN_BACKLOG 128
/* A silent peer (machine gone, cable cut) is found by TCP keepalive: first
 * probe after this idle time, then every interval, dead after the count. */
#define TRANSPORT_KEEPALIVE_IDLE_SECONDS 5
#define TRANSPORT_KEEPALIVE_INTERVAL_SECONDS 2
#define TRANSPORT_KEEPALIVE_PROBES 3
/* Sent data unacknowledged this long closes the connection. */
#define TRANSPORT_USER_TIMEOUT_MS 15000u
/* Text of "host:port" (IPv6 in brackets) in log lines. */
#define TRANSPORT_ADDRESS_TEXT_BYTES (TRANSPORT_MAX_HOST_BYTES + 16u)
/* Bit of a log_once mask: reasons first, then handshake results, then these. */
#define TRANSPORT_LOG_BIT_HANDSHAKE(result) (TRANSPORT_REASON_COUNT + (unsigned)(result))
#define TRANSPORT_LOG_BIT_CONNECT (TRANSPORT_REASON_COUNT + TRANSPORT_HANDSHAKE_RESULT_COUNT)
#define TRANSPORT_LOG_BIT_ACCEPT (TRANSPORT_LOG_BIT_CONNECT + 1)
#define TRANSPORT_LOG_BIT_REFUSED (TRANSPORT_LOG_BIT_CONNECT + 2)
FL_STATIC_ASSERT(TRANSPORT_LOG_BIT_REFUSED < 32, "log_once masks are 32 bits");

typedef struct transport_peer transport_peer;
typedef struct transport_connection transport_connection;

typedef enum connection_direction {
  CONNECTION_OUTGOING, /* dialed by us: our frames to the peer */
  CONNECTION_INCOMING, /* accepted: the peer's frames to us */
} connection_direction;

/* The diagram is at the top of connection.c. */
typedef enum connection_state {
  CONNECTION_DIALING,     /* outgoing: connect in flight */
  CONNECTION_HANDSHAKING, /* outgoing: waiting for the ACK; incoming: for the handshake */
  CONNECTION_READY,       /* frames flow */
  CONNECTION_REJECTING,   /* incoming: a refusing ACK is being sent, then close */
  CONNECTION_CLOSING,     /* detached; freed once its last operation completed */
} connection_state;

/* Frames of one class, back to back, each a header and its payload. */
typedef struct send_buffer {
  uint8_t *bytes;
  uint32_t length;
  uint32_t capacity;
  uint32_t frames;
} send_buffer;

/* The bulk class: frames in [head, tail); [head, head + in_flight_bytes)
 * is being sent. The buffer never moves while a send is in flight. */
typedef struct bulk_queue {
  uint8_t *bytes;
  uint32_t head;
  uint32_t tail;
  uint32_t capacity;
  uint32_t frames; /* in [head, tail) */
  uint32_t in_flight_bytes;
  uint32_t in_flight_frames;
} bulk_queue;

struct transport_connection {
  transport *t;
  transport_connection *next; /* in t->connections */
  transport_connection *previous;
  transport_peer *peer; /* NULL before an incoming handshake and once closing */
  uint64_t node_id;     /* remote node: dialed, or claimed by the handshake */
  int fd;
  connection_direction direction;
  connection_state state;
  bool counted_pending; /* counted in t->pending_handshakes */
  uint64_t deadline_ms; /* the handshake must be done by then */
  bool frame_started;   /* bytes of an incomplete frame are buffered */
  uint64_t frame_started_ms;
  uint64_t last_receive_ms; /* last bytes received, or the handshake: liveness */

  /* Operations on the ring: at most one of each kind at a time. */
  bool connect_pending, receive_pending, send_pending, cancel_pending;
  fl_completion connect_completion, receive_completion, send_completion, cancel_completion;

  /* Received bytes not yet parsed are [receive_start, receive_end). */
  uint8_t *receive_bytes; /* small_receive until the buffer grows */
  uint32_t receive_start, receive_end, receive_capacity, receive_limit;
  uint32_t receive_frame_bytes; /* size of the incomplete frame, 0 until its header is in */

  /* The send in flight: up to two segments (control or normal, bulk). */
  struct msghdr message;
  struct iovec segments[2];
  struct iovec iov[2];
  uint32_t segment_count;
  uint64_t send_total, send_done;
  uint32_t send_frames;
  bool send_is_control;

  /* Outgoing only: the double-buffered normal class and the bulk class. */
  send_buffer filling, in_flight;
  bulk_queue bulk;
  /* An open reservation (transport_reserve .. commit) at the end of
   * `filling` or of the bulk queue: one per connection at most. */
  bool reserved;
  bool reserved_bulk;
  uint32_t reserved_bytes;

  struct sockaddr_storage address;
  socklen_t address_length;
  char address_text[TRANSPORT_ADDRESS_TEXT_BYTES];
  uint8_t control[TRANSPORT_CONTROL_BYTES];
  uint8_t small_receive[TRANSPORT_CONTROL_BYTES];
};

/* Frames held by a delay fault, in release order (one fixed delay each). */
typedef struct delayed_frame {
  struct delayed_frame *next;
  uint64_t release_ms;
  uint32_t length; /* header and payload */
  bool bulk;
  uint8_t bytes[];
} delayed_frame;

struct transport_peer {
  uint64_t node_id;
  struct sockaddr_storage address;
  socklen_t address_length;
  char address_text[TRANSPORT_ADDRESS_TEXT_BYTES];
  transport_connection *outgoing; /* never CLOSING */
  transport_connection *incoming; /* READY only */
  bool up;                        /* as last reported through on_peer */
  uint32_t backoff_ms;
  uint64_t next_dial_ms;
  uint64_t dials;
  uint32_t logged; /* log_once bits */
  transport_fault fault;
  delayed_frame *delayed_head, *delayed_tail;
  uint64_t delayed_bytes; /* bounded by max_queue_bytes + max_bulk_bytes */
};

struct transport {
  transport_options options; /* strings and peers not kept */
  struct io_uring *ring;
  uint64_t now_ms;
  uint64_t random_state;
  bool shut_down;
  unsigned in_callback; /* > 0 while a user callback runs */

  int listen_fd; /* -1: none or closed */
  uint16_t listen_port;
  bool accept_pending, accept_cancel_pending, accept_retry;
  fl_completion accept_completion, accept_cancel_completion;
  struct sockaddr_storage accept_address;
  socklen_t accept_address_length;

  transport_peer **peers;
  uint32_t peer_count, peer_capacity;

  transport_connection *connections;
  uint32_t connection_count;
  uint32_t pending_handshakes;
  uint32_t logged; /* log_once bits for connections of no known peer */

  transport_stats stats;
};

/* ---- transport.c ---- */
void transport_log(transport *t, transport_log_level level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/* Logs once per peer (or once for connections of no known peer) and bit. */
void transport_log_once(transport *t, transport_peer *peer, unsigned bit, transport_log_level level,
                        const char *format, ...) __attribute__((format(printf, 5, 6)));
/* An SQE, submitting the ring once to make room; NULL if even that fails. */
struct io_uring_sqe *transport_get_sqe(transport *t);
void transport_report_peer(transport *t, transport_peer *peer, bool up);
int transport_address_text(const struct sockaddr *address, socklen_t length, char *text,
                           size_t capacity);

/* ---- listener.c ---- */
int listener_open(transport *t, const char *host, uint16_t port);
void listener_arm(transport *t);
void listener_shutdown(transport *t);

/* ---- connection.c ---- */
/* Takes fd over (closes it on failure). */
transport_connection *connection_create(transport *t, connection_direction direction, int fd);
void connection_dial(transport *t, transport_peer *peer);
void connection_start_incoming(transport_connection *c);
/* Detaches from the peer, cancels operations; the struct lives on until
 * connection_release_if_done() sees no operation left. */
void connection_close(transport_connection *c);
/* Counts reason, logs it once for the peer, closes. */
void connection_fail(transport_connection *c, transport_reason reason, const char *detail);
bool connection_release_if_done(transport_connection *c);
/* Checks the handshake and frame deadlines. */
void connection_tick(transport_connection *c, uint64_t now_ms);
/* Starts a send of one or two segments (a control frame, or the normal
 * and bulk frames of a flush); a short send continues by itself. */
void connection_start_send(transport_connection *c, const struct iovec *segments, uint32_t count,
                           uint32_t frames, bool control);
void connection_set_socket_options(int fd);

/* ---- handshake.c ---- */
/* Writes a sealed handshake frame (with our identity) into out. */
void handshake_build(const transport *t, frame_type type, int32_t result,
                     uint8_t out[TRANSPORT_CONTROL_BYTES]);
/* Decodes a handshake payload; false if it is malformed for its type. */
bool handshake_decode(frame_type type, const uint8_t *payload, uint32_t length,
                      transport_handshake *out);
/* The acceptor's checks of a dialer's handshake; *peer set when accepted.
 * *stale set when the peer's current incoming connection must make way. */
int handshake_check_dialer(transport *t, const transport_handshake *hello, transport_peer **peer,
                           transport_connection **stale);
/* The dialer's checks of the acceptor's identity in an ACK. */
int handshake_check_acceptor(const transport *t, const transport_handshake *ack, uint64_t node);
void handshake_describe(const transport *t, const transport_handshake *remote, int result,
                        char *text, size_t capacity);

/* ---- peer.c ---- */
transport_peer *peer_find(const transport *t, uint64_t node);
void peer_schedule_dial(transport *t, transport_peer *peer);
/* Appends a finished frame (header and payload) to a class, as from a
 * delay fault's hold; false when it does not fit. */
bool peer_enqueue_frame(transport_connection *c, const uint8_t *frame, uint32_t length, bool bulk);
void send_buffer_free(send_buffer *buffer);
void bulk_queue_free(bulk_queue *queue);
uint32_t bulk_frame_length(const uint8_t *frame);

/* ---- fault.c ---- */
uint64_t fault_random(transport *t);
/* A jittered delay in [backoff / 2, backoff]. */
uint32_t fault_jitter_ms(transport *t, uint32_t backoff_ms);
/* Decides the fate of a frame committed for peer: true when the caller
 * must not queue it (dropped, or copied into the delay queue). */
bool fault_divert_outgoing(transport *t, transport_peer *peer, const uint8_t *frame,
                           uint32_t length, bool bulk);
bool fault_drops_incoming(transport *t, transport_peer *peer);
void fault_release_due(transport *t, transport_peer *peer);
void fault_discard_delayed(transport *t, transport_peer *peer, bool count_as_down);

#endif
