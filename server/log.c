/*
 * log.c - levelled log lines, from any thread, to standard error or a file
 * opened for appending. Each line is formatted whole and written with one
 * write(), so lines of different threads never interleave; no lock.
 *
 *   2026-11-23T23:59:01.123Z I flotillad started: node 1, ...
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"

/* Longer messages are cut. */
#define LOG_LINE_BYTES 2048

static int log_fd = STDERR_FILENO;
static int log_level = 1;

int server_log_open(int level, const char *path) {
  log_level = level;
  if (path == NULL || path[0] == '\0') {
    log_fd = STDERR_FILENO;
    return 0;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    return -errno;
  }
  log_fd = fd;
  return 0;
}

/* After a rotation (SIGHUP): the same path opened anew takes the place of
 * the old descriptor with dup2, which is atomic, so a thread writing a
 * line meanwhile writes it whole to one file or the other. */
int server_log_reopen(const char *path) {
  if (path == NULL || path[0] == '\0' || log_fd == STDERR_FILENO) {
    return 0;
  }
  int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    return -errno;
  }
  int rc = dup3(fd, log_fd, O_CLOEXEC) < 0 ? -errno : 0;
  close(fd);
  return rc;
}

void server_log_close(void) {
  if (log_fd != STDERR_FILENO) {
    close(log_fd);
    log_fd = STDERR_FILENO;
  }
}

static void write_line(int level, const char *message) {
  static const char letters[] = "DIWE";
  char line[LOG_LINE_BYTES];
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct tm utc;
  gmtime_r(&now.tv_sec, &utc);
  size_t length = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &utc);
  int written =
      snprintf(line + length, sizeof(line) - length, ".%03ldZ %c %s\n", now.tv_nsec / 1000000,
               letters[level < 0   ? 0
                       : level > 3 ? 3
                                   : level],
               message);
  if (written < 0) {
    return;
  }
  length += (size_t)written;
  if (length >= sizeof(line)) {
    length = sizeof(line) - 1;
    line[length - 1] = '\n';
  }
  ssize_t ignored = write(log_fd, line, length);
  (void)ignored; /* nowhere to report a failed log write */
}

void server_log(int level, const char *format, ...) {
  if (level < log_level) {
    return;
  }
  char message[LOG_LINE_BYTES];
  va_list arguments;
  va_start(arguments, format);
  vsnprintf(message, sizeof(message), format, arguments);
  va_end(arguments);
  write_line(level, message);
}

void server_log_engine(void *context, int level, const char *message) {
  (void)context;
  if (level >= log_level) {
    char line[LOG_LINE_BYTES];
    snprintf(line, sizeof(line), "engine: %s", message);
    write_line(level, line);
  }
}
