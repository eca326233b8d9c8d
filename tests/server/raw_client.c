/*
 * raw_client.c - raw-client: exact bytes to a RESP server and exact bytes
 * back, for the tests that check replies byte for byte and send hostile
 * input. BYTES arguments take C escapes: \r \n \t \\ \0 and \xHH.
 *
 *   raw-client exchange PORT SEND EXPECT [--trickle-ms N] [--until-close|--prefix]
 *       sends SEND (one byte every N ms with --trickle-ms), then reads
 *       until EXPECT's length arrived, the server closed, or 5 s passed;
 *       with --until-close also waits (5 s at most) for the server to close
 *       the connection, and anything more that arrives is a mismatch; with
 *       --prefix the reply only has to start with EXPECT (for error texts
 *       that quote the input). Exits 0 when the bytes match EXPECT, 1
 *       printing both when not.
 *   raw-client flood PORT SEND SECONDS
 *       sends SEND again and again and never reads: a client that does not
 *       read its replies. Exits 0 once the server drops the connection
 *       (printing the bytes sent), 1 if it is still connected after
 *       SECONDS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/server/client.h"

#define MAX_BYTES (1024u * 1024u)
#define READ_DEADLINE_MS 5000u

typedef struct byte_string {
  char *data;
  size_t length;
} byte_string;

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

/* The escape at text[0] (after the backslash); sets *used to its length. */
static int unescape_one(const char *text, size_t *used) {
  *used = 1;
  switch (text[0]) {
  case 'r':
    return '\r';
  case 'n':
    return '\n';
  case 't':
    return '\t';
  case '0':
    return '\0';
  case '\\':
    return '\\';
  case 'x':
    if (hex_digit(text[1]) >= 0 && hex_digit(text[2]) >= 0) {
      *used = 3;
      return hex_digit(text[1]) * 16 + hex_digit(text[2]);
    }
    return -1;
  default:
    return -1;
  }
}

static byte_string unescape(const char *text) {
  size_t capacity = strlen(text) + 1;
  byte_string out = {malloc(capacity), 0};
  if (out.data == NULL) {
    fprintf(stderr, "raw-client: out of memory\n");
    exit(2);
  }
  for (const char *p = text; *p != '\0';) {
    if (*p != '\\') {
      out.data[out.length++] = *p++;
      continue;
    }
    size_t used;
    int byte = unescape_one(p + 1, &used);
    if (byte < 0) {
      fprintf(stderr, "raw-client: bad escape in '%s'\n", text);
      exit(2);
    }
    out.data[out.length++] = (char)byte;
    p += 1 + used;
  }
  return out;
}

static void print_escaped(FILE *out, const char *data, size_t length) {
  for (size_t i = 0; i < length; i++) {
    unsigned char c = (unsigned char)data[i];
    if (c == '\r') {
      fputs("\\r", out);
    } else if (c == '\n') {
      fputs("\\n", out);
    } else if (c == '\\') {
      fputs("\\\\", out);
    } else if (c < 0x20 || c >= 0x7f) {
      fprintf(out, "\\x%02x", c);
    } else {
      fputc(c, out);
    }
  }
}

static int connect_port(uint16_t port) {
  client_connection c;
  client_connection_init(&c, port);
  int status = client_connection_connect(&c);
  if (status != 0) {
    fprintf(stderr, "raw-client: connect to port %u: %s\n", port, strerror(-status));
    exit(1);
  }
  return c.fd; /* non-blocking */
}

/* Sends everything (or until the peer is gone); false if it went away. */
static bool send_all(int fd, const char *data, size_t length, uint32_t trickle_ms) {
  size_t sent = 0;
  while (sent < length) {
    size_t chunk = trickle_ms > 0 ? 1 : length - sent;
    ssize_t n = send(fd, data + sent, chunk, MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, 100);
      continue;
    }
    if (n < 0) {
      return false;
    }
    sent += (size_t)n;
    if (trickle_ms > 0) {
      client_pause_ms(trickle_ms);
    }
  }
  return true;
}

/* Reads into `got` until `want` bytes (or, with until_close, the end of
 * the stream), the end of the stream, or the deadline; *closed tells
 * whether the server ended the stream. */
static size_t read_reply(int fd, char *got, size_t want, bool until_close, bool *closed) {
  *closed = false;
  size_t length = 0;
  uint64_t deadline = client_now_ms() + READ_DEADLINE_MS;
  while (until_close || length < want) {
    uint64_t now = client_now_ms();
    if (now >= deadline || length == MAX_BYTES) {
      break;
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, (int)(deadline - now)) <= 0) {
      continue;
    }
    ssize_t n = recv(fd, got + length, MAX_BYTES - length, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      continue;
    }
    if (n <= 0) {
      *closed = true; /* closed (or reset) by the server */
      break;
    }
    length += (size_t)n;
  }
  return length;
}

typedef struct exchange_options {
  uint32_t trickle_ms;
  bool until_close;
  bool prefix;
} exchange_options;

static int run_exchange(uint16_t port, const char *send_text, const char *expect_text,
                        exchange_options options) {
  byte_string request = unescape(send_text), expected = unescape(expect_text);
  int fd = connect_port(port);
  bool sent = send_all(fd, request.data, request.length, options.trickle_ms);
  char *got = malloc(MAX_BYTES);
  if (got == NULL) {
    return 2;
  }
  bool closed = false;
  size_t length = read_reply(fd, got, expected.length, options.until_close, &closed);
  close(fd);
  bool same = (options.prefix ? length >= expected.length : length == expected.length) &&
              memcmp(got, expected.data, expected.length) == 0 && (!options.until_close || closed);
  if (!sent && !options.until_close) {
    fprintf(stderr, "raw-client: port %u: the request could not be sent whole\n", port);
    same = false;
  }
  if (!same) {
    fprintf(stderr, "raw-client: port %u, sent '%s'\n  expected '", port, send_text);
    print_escaped(stderr, expected.data, expected.length);
    fprintf(stderr, "'\n  got      '");
    print_escaped(stderr, got, length);
    fprintf(stderr, "'%s\n",
            options.until_close ? (closed ? " (then the connection closed)"
                                          : " (then the connection was to close, and did not)")
                                : "");
  }
  free(got);
  free(request.data);
  free(expected.data);
  return same ? 0 : 1;
}

static int run_flood(uint16_t port, const char *send_text, uint32_t seconds) {
  byte_string request = unescape(send_text);
  int fd = connect_port(port);
  uint64_t deadline = client_now_ms() + (uint64_t)seconds * 1000u, sent = 0;
  while (client_now_ms() < deadline) {
    ssize_t n = send(fd, request.data, request.length, MSG_NOSIGNAL);
    if (n > 0) {
      sent += (uint64_t)n; /* a partial send just shifts the next command */
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      struct pollfd p = {.fd = fd, .events = POLLOUT};
      poll(&p, 1, 50);
    } else {
      printf("raw-client: disconnected by the server after %llu bytes sent (%s)\n",
             (unsigned long long)sent, n < 0 ? strerror(errno) : "closed");
      close(fd);
      free(request.data);
      return 0;
    }
  }
  fprintf(stderr, "raw-client: still connected after %u s without reading; %llu bytes sent\n",
          seconds, (unsigned long long)sent);
  close(fd);
  free(request.data);
  return 1;
}

static int usage(void) {
  fprintf(stderr, "usage: raw-client exchange PORT SEND EXPECT [--trickle-ms N] "
                  "[--until-close|--prefix]\n"
                  "       raw-client flood PORT SEND SECONDS\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    return usage();
  }
  long port = strtol(argv[2], NULL, 10);
  if (port <= 0 || port > 65535) {
    return usage();
  }
  if (strcmp(argv[1], "flood") == 0 && argc == 5) {
    return run_flood((uint16_t)port, argv[3], (uint32_t)strtoul(argv[4], NULL, 10));
  }
  if (strcmp(argv[1], "exchange") != 0) {
    return usage();
  }
  exchange_options options = {0};
  for (int i = 5; i < argc; i++) {
    if (strcmp(argv[i], "--until-close") == 0) {
      options.until_close = true;
    } else if (strcmp(argv[i], "--prefix") == 0) {
      options.prefix = true;
    } else if (strcmp(argv[i], "--trickle-ms") == 0 && i + 1 < argc) {
      options.trickle_ms = (uint32_t)strtoul(argv[++i], NULL, 10);
    } else {
      return usage();
    }
  }
  if (options.prefix && options.until_close) {
    return usage();
  }
  return run_exchange((uint16_t)port, argv[3], argv[4], options);
}
