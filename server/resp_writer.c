/*
 * resp_writer.c - replies in RESP2 or RESP3, appended to a bounded output
 * buffer. Numbers are formatted by hand (no printf on the hot path), and
 * every reply is written with one capacity check, so a pipeline of GETs
 * costs a few memcpy() calls per reply.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/resp.h"
#include "server/resp_internal.h"

/* Longest header: a type byte, 20 digits and a sign, "\r\n". */
#define HEADER_BYTES 24
/* Redis formats doubles with "%.17g": at most 24 characters. */
#define DOUBLE_BYTES 32

void resp_writer_init(resp_writer *writer, size_t max_bytes) {
  memset(writer, 0, sizeof(*writer));
  writer->max_bytes = max_bytes;
  writer->protocol = 2;
}

void resp_writer_destroy(resp_writer *writer) {
  free(writer->data);
  writer->data = NULL;
  writer->length = 0;
  writer->capacity = 0;
}

int resp_writer_set_protocol(resp_writer *writer, int version) {
  if (version != 2 && version != 3) {
    return -EINVAL;
  }
  writer->protocol = (uint8_t)version;
  return 0;
}

void resp_writer_discard(resp_writer *writer, size_t bytes) {
  assert(bytes <= writer->length);
  memmove(writer->data, writer->data + bytes, writer->length - bytes);
  writer->length -= bytes;
}

void resp_writer_swap_buffers(resp_writer *a, resp_writer *b) {
  resp_writer held = *a;
  a->data = b->data;
  a->length = b->length;
  a->capacity = b->capacity;
  b->data = held.data;
  b->length = held.length;
  b->capacity = held.capacity;
}

static int grow(resp_writer *writer, size_t extra) {
  if (extra > writer->max_bytes || writer->length > writer->max_bytes - extra) {
    writer->error = -ENOBUFS;
    return writer->error;
  }
  size_t needed = writer->length + extra;
  size_t capacity = writer->capacity < 64 ? 64 : writer->capacity;
  while (capacity < needed) {
    capacity = capacity > SIZE_MAX / 2 ? needed : capacity * 2;
  }
  if (capacity > writer->max_bytes) {
    capacity = writer->max_bytes;
  }
  char *data = realloc(writer->data, capacity);
  if (data == NULL) {
    writer->error = -ENOMEM;
    return writer->error;
  }
  writer->data = data;
  writer->capacity = capacity;
  return 0;
}

/* Makes room for `extra` more bytes: the one check of every reply. */
static inline int reserve(resp_writer *writer, size_t extra) {
  if (writer->error != 0) {
    return writer->error;
  }
  if (extra <= writer->capacity - writer->length) {
    return 0;
  }
  return grow(writer, extra);
}

static inline void put(resp_writer *writer, const void *data, size_t length) {
  memcpy(writer->data + writer->length, data, length);
  writer->length += length;
}

/* Writes `value` in decimal at `out` (room for 21 bytes); returns its length. */
static size_t format_integer(char *out, int64_t value) {
  char digits[20];
  size_t count = 0;
  uint64_t magnitude = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
  do {
    digits[count++] = (char)('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude != 0);
  size_t length = 0;
  if (value < 0) {
    out[length++] = '-';
  }
  while (count > 0) {
    out[length++] = digits[--count];
  }
  return length;
}

/* "<type><number>\r\n" into `out` (HEADER_BYTES); returns its length. */
static size_t format_header(char *out, char type, int64_t number) {
  out[0] = type;
  size_t length = 1 + format_integer(out + 1, number);
  out[length++] = '\r';
  out[length++] = '\n';
  return length;
}

static int write_header(resp_writer *writer, char type, int64_t number) {
  char header[HEADER_BYTES];
  size_t length = format_header(header, type, number);
  int status = reserve(writer, length);
  if (status != 0) {
    return status;
  }
  put(writer, header, length);
  return 0;
}

static int64_t count_number(size_t count) {
  return count > (size_t)INT64_MAX ? INT64_MAX : (int64_t)count;
}

/* "<type><text>\r\n" where a line end in the text becomes a space. */
static int write_line(resp_writer *writer, char type, const char *text, size_t length) {
  int status = reserve(writer, length + 3);
  if (status != 0) {
    return status;
  }
  char *out = writer->data + writer->length;
  out[0] = type;
  memcpy(out + 1, text, length);
  for (size_t index = 1; index <= length; index++) {
    if (out[index] == '\r' || out[index] == '\n') {
      out[index] = ' ';
    }
  }
  out[length + 1] = '\r';
  out[length + 2] = '\n';
  writer->length += length + 3;
  return 0;
}

int resp_write_simple_string(resp_writer *writer, const char *text, size_t length) {
  return write_line(writer, '+', text, length);
}

int resp_write_ok(resp_writer *writer) {
  return resp_write_raw(writer, "+OK\r\n", 5);
}

int resp_write_error(resp_writer *writer, const char *text) {
  return write_line(writer, '-', text, strlen(text));
}

int resp_write_error_format(resp_writer *writer, const char *format, ...) {
  char small[256];
  va_list arguments;
  va_start(arguments, format);
  int length = vsnprintf(small, sizeof(small), format, arguments);
  va_end(arguments);
  if (length < 0) {
    return write_line(writer, '-', "ERR", 3);
  }
  if ((size_t)length < sizeof(small)) {
    return write_line(writer, '-', small, (size_t)length);
  }
  char *large = malloc((size_t)length + 1);
  if (large == NULL) {
    writer->error = writer->error != 0 ? writer->error : -ENOMEM;
    return writer->error;
  }
  va_start(arguments, format);
  vsnprintf(large, (size_t)length + 1, format, arguments);
  va_end(arguments);
  int status = write_line(writer, '-', large, (size_t)length);
  free(large);
  return status;
}

int resp_write_integer(resp_writer *writer, int64_t value) {
  return write_header(writer, ':', value);
}

int resp_write_bulk(resp_writer *writer, const void *data, size_t length) {
  char header[HEADER_BYTES];
  size_t header_length = format_header(header, '$', count_number(length));
  if (length > SIZE_MAX - header_length - 2) {
    writer->error = writer->error != 0 ? writer->error : -ENOBUFS;
    return writer->error;
  }
  int status = reserve(writer, header_length + length + 2);
  if (status != 0) {
    return status;
  }
  put(writer, header, header_length);
  put(writer, data, length);
  put(writer, "\r\n", 2);
  return 0;
}

int resp_write_bulk_header(resp_writer *writer, size_t length) {
  return write_header(writer, '$', count_number(length));
}

int resp_write_raw(resp_writer *writer, const void *data, size_t length) {
  int status = reserve(writer, length);
  if (status != 0) {
    return status;
  }
  put(writer, data, length);
  return 0;
}

int resp_write_null(resp_writer *writer) {
  return writer->protocol == 3 ? resp_write_raw(writer, "_\r\n", 3)
                               : resp_write_raw(writer, "$-1\r\n", 5);
}

int resp_write_null_array(resp_writer *writer) {
  return writer->protocol == 3 ? resp_write_raw(writer, "_\r\n", 3)
                               : resp_write_raw(writer, "*-1\r\n", 5);
}

int resp_write_array_header(resp_writer *writer, size_t count) {
  return write_header(writer, '*', count_number(count));
}

int resp_write_map_header(resp_writer *writer, size_t pairs) {
  if (writer->protocol == 3) {
    return write_header(writer, '%', count_number(pairs));
  }
  return write_header(writer, '*', count_number(pairs > SIZE_MAX / 2 ? SIZE_MAX : pairs * 2));
}

int resp_write_set_header(resp_writer *writer, size_t count) {
  return write_header(writer, writer->protocol == 3 ? '~' : '*', count_number(count));
}

/* The text Redis 7.0 gives a double: "%.17g", with inf and nan spelled
 * out the same on every libc. */
static size_t format_double(char *out, double value) {
  if (isinf(value)) {
    const char *text = value > 0 ? "inf" : "-inf";
    size_t length = strlen(text);
    memcpy(out, text, length);
    return length;
  }
  if (isnan(value)) {
    memcpy(out, "nan", 3);
    return 3;
  }
  int length = snprintf(out, DOUBLE_BYTES, "%.17g", value);
  assert(length > 0 && length < DOUBLE_BYTES);
  return (size_t)length;
}

int resp_write_double(resp_writer *writer, double value) {
  char text[DOUBLE_BYTES];
  size_t length = format_double(text, value);
  if (writer->protocol != 3) {
    return resp_write_bulk(writer, text, length);
  }
  return write_line(writer, ',', text, length);
}

int resp_write_boolean(resp_writer *writer, bool value) {
  if (writer->protocol == 3) {
    return resp_write_raw(writer, value ? "#t\r\n" : "#f\r\n", 4);
  }
  return resp_write_raw(writer, value ? ":1\r\n" : ":0\r\n", 4);
}

int resp_write_verbatim(resp_writer *writer, const char *format, const void *data, size_t length) {
  assert(strlen(format) == 3);
  if (writer->protocol != 3) {
    return resp_write_bulk(writer, data, length);
  }
  char header[HEADER_BYTES];
  size_t header_length = format_header(header, '=', count_number(length + 4));
  if (length > SIZE_MAX - header_length - 6) {
    writer->error = writer->error != 0 ? writer->error : -ENOBUFS;
    return writer->error;
  }
  int status = reserve(writer, header_length + length + 6);
  if (status != 0) {
    return status;
  }
  put(writer, header, header_length);
  put(writer, format, 3);
  put(writer, ":", 1);
  put(writer, data, length);
  put(writer, "\r\n", 2);
  return 0;
}

int resp_write_error_parts(resp_writer *writer, const resp_argument *parts, size_t count) {
  size_t total = 3;
  for (size_t index = 0; index < count; index++) {
    if (parts[index].length > SIZE_MAX / 2 - total) {
      writer->error = writer->error != 0 ? writer->error : -ENOBUFS;
      return writer->error;
    }
    total += parts[index].length;
  }
  int status = reserve(writer, total);
  if (status != 0) {
    return status;
  }
  size_t start = writer->length;
  put(writer, "-", 1);
  for (size_t index = 0; index < count; index++) {
    put(writer, parts[index].data, parts[index].length);
  }
  for (size_t index = start + 1; index < writer->length; index++) {
    if (writer->data[index] == '\r' || writer->data[index] == '\n') {
      writer->data[index] = ' ';
    }
  }
  put(writer, "\r\n", 2);
  return 0;
}
