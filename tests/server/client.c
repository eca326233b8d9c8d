/*
 * client.c - the RESP2 client of the integration test tools (client.h).
 */
#define _GNU_SOURCE
#include "tests/server/client.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t client_now_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

void client_pause_ms(uint32_t ms) {
  struct timespec pause = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
  nanosleep(&pause, NULL);
}

void client_connection_init(client_connection *c, uint16_t port) {
  c->port = port;
  c->fd = -1;
  c->input_start = c->input_end = 0;
  c->output_start = c->output_end = 0;
}

bool client_connection_open(const client_connection *c) {
  return c->fd >= 0;
}

int client_connection_connect(client_connection *c) {
  assert(c->fd < 0);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -errno;
  }
  struct sockaddr_in address = {
      .sin_family = AF_INET, .sin_port = htons(c->port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  /* Loopback connects complete (or are refused) at once, so a blocking
   * connect costs nothing and keeps this simple. */
  if (connect(fd, (struct sockaddr *)&address, sizeof(address)) != 0) {
    int error = errno;
    close(fd);
    return -error;
  }
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  client_connection_init(c, c->port);
  c->fd = fd;
  return 0;
}

void client_connection_close(client_connection *c) {
  if (c->fd >= 0) {
    close(c->fd);
  }
  client_connection_init(c, c->port);
}

static int append(client_connection *c, const void *bytes, size_t length) {
  if (c->output_start > 0 && c->output_end + length > CLIENT_OUTPUT_BYTES) {
    memmove(c->output, c->output + c->output_start, c->output_end - c->output_start);
    c->output_end -= c->output_start;
    c->output_start = 0;
  }
  if (c->output_end + length > CLIENT_OUTPUT_BYTES) {
    return -ENOBUFS;
  }
  memcpy(c->output + c->output_end, bytes, length);
  c->output_end += length;
  return 0;
}

int client_connection_queue(client_connection *c, const client_argument *arguments,
                            uint32_t count) {
  size_t mark = c->output_end, mark_start = c->output_start;
  char header[32];
  int length = snprintf(header, sizeof(header), "*%u\r\n", count);
  int status = append(c, header, (size_t)length);
  for (uint32_t i = 0; i < count && status == 0; i++) {
    length = snprintf(header, sizeof(header), "$%zu\r\n", arguments[i].length);
    status = append(c, header, (size_t)length);
    if (status == 0) {
      status = append(c, arguments[i].data, arguments[i].length);
    }
    if (status == 0) {
      status = append(c, "\r\n", 2);
    }
  }
  if (status != 0 && c->output_start == mark_start) {
    c->output_end = mark; /* never send half a command */
  } else if (status != 0) {
    c->output_end = mark - mark_start; /* compacted meanwhile */
  }
  return status;
}

bool client_connection_pending(const client_connection *c) {
  return c->output_end > c->output_start;
}

int client_connection_write(client_connection *c) {
  while (client_connection_pending(c)) {
    ssize_t sent =
        send(c->fd, c->output + c->output_start, c->output_end - c->output_start, MSG_NOSIGNAL);
    if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
      return 0;
    }
    if (sent < 0) {
      return -errno;
    }
    c->output_start += (size_t)sent;
  }
  c->output_start = c->output_end = 0;
  return 0;
}

int client_connection_read(client_connection *c) {
  if (c->input_start > 0) {
    memmove(c->input, c->input + c->input_start, c->input_end - c->input_start);
    c->input_end -= c->input_start;
    c->input_start = 0;
  }
  while (c->input_end < CLIENT_INPUT_BYTES) {
    ssize_t got = recv(c->fd, c->input + c->input_end, CLIENT_INPUT_BYTES - c->input_end, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR)) {
      return 0;
    }
    if (got <= 0) {
      return -ECONNRESET;
    }
    c->input_end += (size_t)got;
  }
  return 0;
}

/* The position of the "\r\n" ending the line at `from`, or NULL. */
static const char *line_end(const client_connection *c, size_t from) {
  const char *start = c->input + from, *end = c->input + c->input_end;
  for (const char *p = start; p + 1 < end; p++) {
    if (p[0] == '\r' && p[1] == '\n') {
      return p;
    }
  }
  return NULL;
}

static int take_bulk(client_connection *c, const char *line, const char *end, client_reply *reply) {
  char *number_end = NULL;
  long long length = strtoll(line + 1, &number_end, 10);
  if (number_end != end || length < -1 || length > (long long)CLIENT_INPUT_BYTES) {
    return -1;
  }
  size_t body = (size_t)(end + 2 - c->input);
  if (length == -1) {
    reply->is_null = true;
    reply->data = "";
    reply->length = 0;
    c->input_start = body;
    return 1;
  }
  if (body + (size_t)length + 2 > c->input_end) {
    return body + (size_t)length + 2 > CLIENT_INPUT_BYTES + c->input_start ? -1 : 0;
  }
  reply->data = c->input + body;
  reply->length = (size_t)length;
  c->input_start = body + (size_t)length + 2;
  return 1;
}

int client_connection_reply(client_connection *c, client_reply *reply) {
  if (c->input_start == c->input_end) {
    return 0;
  }
  const char *line = c->input + c->input_start, *end = line_end(c, c->input_start);
  if (end == NULL) {
    return c->input_end - c->input_start == CLIENT_INPUT_BYTES ? -1 : 0;
  }
  reply->type = line[0];
  reply->is_null = false;
  switch (line[0]) {
  case '+':
  case '-':
  case ':':
    reply->data = line + 1;
    reply->length = (size_t)(end - line - 1);
    c->input_start = (size_t)(end + 2 - c->input);
    return 1;
  case '$':
    return take_bulk(c, line, end, reply);
  default:
    return -1;
  }
}

int client_connection_exchange(client_connection *c, client_reply *reply, uint32_t timeout_ms) {
  uint64_t deadline = client_now_ms() + timeout_ms;
  for (;;) {
    int status = client_connection_reply(c, reply);
    if (status != 0) {
      return status > 0 ? 0 : -EPROTO;
    }
    status = client_connection_write(c);
    if (status != 0) {
      return status;
    }
    uint64_t now = client_now_ms();
    if (now >= deadline) {
      return -ETIMEDOUT;
    }
    struct pollfd fd = {.fd = c->fd,
                        .events = (short)(POLLIN | (client_connection_pending(c) ? POLLOUT : 0))};
    if (poll(&fd, 1, (int)(deadline - now)) > 0 && (fd.revents & (POLLIN | POLLHUP | POLLERR))) {
      status = client_connection_read(c);
      if (status != 0) {
        return status;
      }
    }
  }
}
