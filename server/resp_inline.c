/*
 * resp_inline.c - splitting an inline request ("SET key value\r\n") into
 * words the way Redis 7.0 does (its sdssplitargs()), so that what a person
 * types into telnet means the same here:
 *
 *   - words are separated by whitespace (space, \t, \r, \n, \v, \f); a
 *     plain word ends at space, \t, \r or \n only, so \v and \f inside a
 *     word belong to it;
 *   - "double quotes" take \xHH (two hex digits) and \n \r \t \b \a; any
 *     other escaped character stands for itself;
 *   - 'single quotes' take \' only;
 *   - a quote may start in the middle of a word (a"b c" is "ab c"), but a
 *     closing quote must be followed by whitespace or the end of the line;
 *     otherwise, or if a quote is never closed, the request is refused with
 *     "unbalanced quotes in request".
 *
 * Words are unescaped in place: a word's bytes never outgrow its source,
 * so each is rewritten from its own first byte and the arguments still
 * point into the caller's buffer. The line holds no NUL: a NUL hides the
 * end of an inline line (see resp.h), so such a line never gets here.
 */
#include <assert.h>
#include <stdbool.h>
#include <string.h>

#include "server/resp_internal.h"

static bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool ends_plain_word(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int hex_value(char c) {
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

static char escaped_character(char c) {
  switch (c) {
  case 'n':
    return '\n';
  case 'r':
    return '\r';
  case 't':
    return '\t';
  case 'b':
    return '\b';
  case 'a':
    return '\a';
  default:
    return c;
  }
}

/* A word being rewritten in place: bytes are read at `read`, written at
 * `write` (never ahead of `read`); `end` is the end of the line. */
typedef struct word_cursor {
  char *buffer;
  size_t read;
  size_t write;
  size_t end;
} word_cursor;

/* A closing quote at cursor->read must be followed by whitespace or the
 * end of the line. Consumes the quote. */
static bool close_quote(word_cursor *cursor) {
  size_t next = cursor->read + 1;
  cursor->read = next;
  return next == cursor->end || is_space(cursor->buffer[next]);
}

/* The inside of "double quotes", from after the opening quote through the
 * closing one. Returns false if the quotes are unbalanced. */
static bool read_double_quoted(word_cursor *cursor) {
  char *buffer = cursor->buffer;
  for (;;) {
    if (cursor->read == cursor->end) {
      return false;
    }
    char c = buffer[cursor->read];
    size_t left = cursor->end - cursor->read;
    if (c == '\\' && left >= 4 && buffer[cursor->read + 1] == 'x' &&
        hex_value(buffer[cursor->read + 2]) >= 0 && hex_value(buffer[cursor->read + 3]) >= 0) {
      int value = hex_value(buffer[cursor->read + 2]) * 16 + hex_value(buffer[cursor->read + 3]);
      buffer[cursor->write++] = (char)value;
      cursor->read += 4;
    } else if (c == '\\' && left >= 2) {
      buffer[cursor->write++] = escaped_character(buffer[cursor->read + 1]);
      cursor->read += 2;
    } else if (c == '"') {
      return close_quote(cursor);
    } else {
      buffer[cursor->write++] = c;
      cursor->read++;
    }
  }
}

/* The inside of 'single quotes', likewise. */
static bool read_single_quoted(word_cursor *cursor) {
  char *buffer = cursor->buffer;
  for (;;) {
    if (cursor->read == cursor->end) {
      return false;
    }
    char c = buffer[cursor->read];
    if (c == '\\' && cursor->end - cursor->read >= 2 && buffer[cursor->read + 1] == '\'') {
      buffer[cursor->write++] = '\'';
      cursor->read += 2;
    } else if (c == '\'') {
      return close_quote(cursor);
    } else {
      buffer[cursor->write++] = c;
      cursor->read++;
    }
  }
}

/* One word starting at cursor->read (not whitespace). On return the word is
 * [start, cursor->write) and cursor->read is past it. */
static bool read_word(word_cursor *cursor) {
  char *buffer = cursor->buffer;
  while (cursor->read < cursor->end) {
    char c = buffer[cursor->read];
    if (ends_plain_word(c)) {
      return true;
    }
    if (c == '"' || c == '\'') {
      cursor->read++;
      bool balanced = c == '"' ? read_double_quoted(cursor) : read_single_quoted(cursor);
      if (!balanced) {
        return false;
      }
      /* After a closing quote comes whitespace or the end: the word is over. */
      return true;
    }
    buffer[cursor->write++] = c;
    cursor->read++;
  }
  return true;
}

int resp_split_inline(resp_parser *parser, char *buffer, size_t start, size_t end) {
  assert(memchr(buffer + start, '\0', end - start) == NULL);
  word_cursor cursor = {.buffer = buffer, .read = start, .write = start, .end = end};
  for (;;) {
    while (cursor.read < end && is_space(buffer[cursor.read])) {
      cursor.read++;
    }
    if (cursor.read == end) {
      return 0;
    }
    size_t word_start = cursor.read;
    cursor.write = word_start;
    if (!read_word(&cursor)) {
      return resp_protocol_error(parser, RESP_TEXT_UNBALANCED);
    }
    if (parser->argument_count == parser->limits.max_arguments) {
      return resp_protocol_error(parser, RESP_TEXT_INLINE_ARGUMENTS);
    }
    int status = resp_append_argument(parser, word_start, cursor.write - word_start);
    if (status != 0) {
      return status;
    }
  }
}
