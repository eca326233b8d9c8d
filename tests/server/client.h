/*
 * client.h - a small RESP2 client over loopback TCP for the integration
 * test tools (ack-client): commands queued as multibulks, replies parsed
 * from a bounded input buffer, non-blocking sockets for poll loops and a
 * blocking exchange with a deadline for simple request/reply use.
 */
#ifndef FLOTILLA_TESTS_SERVER_CLIENT_H
#define FLOTILLA_TESTS_SERVER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bounds of one connection's buffers: a reply larger than the input
 * buffer is treated as malformed (the tools only read small values). */
#define CLIENT_INPUT_BYTES (256u * 1024u)
#define CLIENT_OUTPUT_BYTES (64u * 1024u)

typedef struct client_argument {
  const char *data;
  size_t length;
} client_argument;

/* One parsed reply; `data` points into the connection's input buffer and
 * stays valid until the next client_connection_read or _exchange. */
typedef struct client_reply {
  char type; /* '+', '-', ':' or '$' */
  bool is_null;
  const char *data; /* the line after the type, or the bulk's bytes */
  size_t length;
} client_reply;

typedef struct client_connection {
  uint16_t port;
  int fd; /* -1: closed */
  size_t input_start, input_end;
  size_t output_start, output_end;
  char input[CLIENT_INPUT_BYTES];
  char output[CLIENT_OUTPUT_BYTES];
} client_connection;

uint64_t client_now_ms(void);
void client_pause_ms(uint32_t ms);

void client_connection_init(client_connection *c, uint16_t port);
bool client_connection_open(const client_connection *c);
/* Connects to 127.0.0.1:port (non-blocking afterwards): 0 or -errno. */
int client_connection_connect(client_connection *c);
/* Closes the socket and forgets everything buffered. */
void client_connection_close(client_connection *c);
/* Appends one command; -ENOBUFS when the output buffer lacks room. */
int client_connection_queue(client_connection *c, const client_argument *arguments, uint32_t count);
bool client_connection_pending(const client_connection *c);
/* Writes what the socket takes now: 0, or -errno when the connection broke. */
int client_connection_write(client_connection *c);
/* Reads what arrived: 0, or -ECONNRESET on end of stream or error. */
int client_connection_read(client_connection *c);
/* 1: a complete reply was taken; 0: none complete yet; -1: malformed. */
int client_connection_reply(client_connection *c, client_reply *reply);
/* Sends everything queued and waits for the next reply: 0, -ETIMEDOUT,
 * -EPROTO (malformed) or another -errno (connection broke). */
int client_connection_exchange(client_connection *c, client_reply *reply, uint32_t timeout_ms);

#endif
