/*
 * reply_scan.c - finds the end of one RESP reply (reply_scan.h).
 *
 * Invariants between calls: line_scan >= position; every byte before
 * position belongs to whole elements of the current reply; expected >= 1
 * while the reply is incomplete, and every expected element still needs
 * at least MIN_ELEMENT_BYTES, so expected * MIN_ELEMENT_BYTES never passes
 * max_reply_bytes - position (which also keeps the count from overflowing).
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "server/reply_scan.h"

/* The shortest element: a type byte and "\r\n" ("+\r\n", "_\r\n"). */
#define MIN_ELEMENT_BYTES 3u
/* "-" and 19 digits: every int64 fits, and no more digits are read. */
#define MAX_NUMBER_CHARACTERS 20u

void reply_scanner_init(reply_scanner *scanner, size_t max_reply_bytes) {
  memset(scanner, 0, sizeof(*scanner));
  scanner->max_reply_bytes = max_reply_bytes;
  scanner->expected = 1;
}

static int fail(reply_scanner *scanner) {
  scanner->error = -EPROTO;
  return scanner->error;
}

/* A signed decimal filling text[0 .. length) exactly. */
static bool parse_number(const char *text, size_t length, int64_t *value) {
  bool negative = length > 0 && text[0] == '-';
  size_t index = negative ? 1 : 0;
  if (length <= index || length > MAX_NUMBER_CHARACTERS) {
    return false;
  }
  uint64_t magnitude = 0;
  for (; index < length; index++) {
    if (text[index] < '0' || text[index] > '9') {
      return false;
    }
    uint64_t digit = (uint64_t)(text[index] - '0');
    if (magnitude > (UINT64_MAX - digit) / 10) {
      return false;
    }
    magnitude = magnitude * 10 + digit;
  }
  if (magnitude > (uint64_t)INT64_MAX + (negative ? 1u : 0u)) {
    return false;
  }
  *value = negative ? (int64_t)(0 - magnitude) : (int64_t)magnitude;
  return true;
}

/* Elements an aggregate header announces, or -1 for a malformed one. */
static int64_t aggregate_elements(char type, int64_t count) {
  if (count == -1 && type == '*') {
    return 0; /* the RESP2 null array */
  }
  if (count < 0) {
    return -1;
  }
  return type == '%' ? count * 2 : count;
}

/* Bytes of a bulk-like element after its line, or -1 for a malformed one;
 * 0 for the RESP2 null bulk, which has no body. */
static int64_t bulk_body_bytes(char type, int64_t length) {
  if (length == -1 && type == '$') {
    return 0;
  }
  return length < 0 ? -1 : length + 2;
}

/* Consumes the element at `position` whose line ends ("\r") at line_end:
 * 1 done, 0 more bytes needed, -EPROTO. */
static int consume_element(reply_scanner *scanner, const char *buffer, size_t length,
                           size_t line_end) {
  size_t start = scanner->position;
  char type = buffer[start];
  const char *text = buffer + start + 1;
  size_t text_length = line_end - start - 1;
  size_t next = line_end + 2;
  int64_t number = 0;
  uint64_t added = 0;
  switch (type) {
  case '+':
  case '-':
  case ',':
  case '#':
  case '(':
    break;
  case '_':
    if (text_length != 0) {
      return fail(scanner);
    }
    break;
  case ':':
    if (!parse_number(text, text_length, &number)) {
      return fail(scanner);
    }
    break;
  case '$':
  case '=':
  case '!': {
    int64_t body = parse_number(text, text_length, &number) ? bulk_body_bytes(type, number) : -1;
    if (body < 0 || (uint64_t)body > scanner->max_reply_bytes - next) {
      return fail(scanner);
    }
    if (next + (size_t)body > length) {
      scanner->line_scan = line_end; /* the header is found again at once */
      return 0;
    }
    if (body > 0 && memcmp(buffer + next + body - 2, "\r\n", 2) != 0) {
      return fail(scanner);
    }
    next += (size_t)body;
    break;
  }
  case '*':
  case '~':
  case '>':
  case '%': {
    int64_t elements =
        parse_number(text, text_length, &number) ? aggregate_elements(type, number) : -1;
    if (elements < 0 ||
        (uint64_t)elements > (scanner->max_reply_bytes - next) / MIN_ELEMENT_BYTES) {
      return fail(scanner);
    }
    added = (uint64_t)elements;
    break;
  }
  default:
    return fail(scanner);
  }
  scanner->expected = scanner->expected - 1 + added;
  if (scanner->expected > (scanner->max_reply_bytes - next) / MIN_ELEMENT_BYTES) {
    return fail(scanner);
  }
  scanner->position = next;
  scanner->line_scan = next;
  return 1;
}

static bool is_known_type(char type) {
  return type != '\0' && strchr("+-:_,#($=!*~>%", type) != NULL;
}

/* 1 an element was consumed, 0 more bytes needed, -EPROTO. */
static int scan_element(reply_scanner *scanner, const char *buffer, size_t length) {
  size_t start = scanner->position;
  if (!is_known_type(buffer[start])) {
    return fail(scanner); /* at once: no need to wait for a line end */
  }
  if (scanner->line_scan < start + 1) {
    scanner->line_scan = start + 1;
  }
  const char *newline = NULL;
  if (scanner->line_scan < length) {
    newline = memchr(buffer + scanner->line_scan, '\n', length - scanner->line_scan);
  }
  if (newline == NULL) {
    scanner->line_scan = length > scanner->line_scan ? length : scanner->line_scan;
    return scanner->line_scan > scanner->max_reply_bytes ? fail(scanner) : 0;
  }
  size_t line_feed = (size_t)(newline - buffer);
  if (line_feed + 1 > scanner->max_reply_bytes || buffer[line_feed - 1] != '\r' ||
      line_feed - 1 < start + 1) {
    return fail(scanner);
  }
  return consume_element(scanner, buffer, length, line_feed - 1);
}

int reply_scan(reply_scanner *scanner, const char *buffer, size_t length, size_t *reply_length) {
  if (scanner->error != 0) {
    return scanner->error;
  }
  assert(scanner->expected >= 1 && scanner->line_scan >= scanner->position);
  while (scanner->expected > 0) {
    if (scanner->position >= length) {
      return 0;
    }
    int rc = scan_element(scanner, buffer, length);
    if (rc <= 0) {
      return rc;
    }
  }
  *reply_length = scanner->position;
  reply_scanner_init(scanner, scanner->max_reply_bytes);
  return 1;
}
