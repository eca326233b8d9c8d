/*
 * fuzz_resp.c - the RESP request parser (server/resp.h) on arbitrary bytes.
 *
 * Each input is a client's byte stream, parsed twice:
 *   - all at once, from a buffer exactly as long as the stream;
 *   - as a server reads it: in reads whose sizes come from the input, with
 *     a buffer holding exactly the unconsumed bytes, reallocated on every
 *     read (so it moves between calls and ASan sees any read past its end).
 * Both must give the same transcript: the same requests with the same
 * arguments, the same protocol error text at the same point, the same
 * bytes left waiting.
 *
 * After every call: resp_parser_check_invariants(); consumed <= held; a
 * request has 1 .. max_arguments arguments, each inside the consumed bytes
 * and no longer than a bulk or a line may be; a protocol error has a
 * non-empty "ERR Protocol error: " text and stays. Then every request is
 * written back as a multibulk array (resp_writer) and parsed again: it must
 * come back identical. Its unknown-command error reply must be one line.
 *
 * Input layout:
 *   byte 0   limits: bit 7 set = the defaults; else max_arguments
 *            1 + (b & 7), max_inline_bytes 16 + 8 * ((b >> 3) & 15)
 *   byte 1   limits (when small): max_bulk_bytes b % 80
 *   byte 2   reads: sizes 1 .. 2^(b & 7), from a generator seeded by b
 *   rest     the stream
 *
 * Violations print "fuzz-resp: violation: ..." and abort.
 * FLOTILLA_FUZZ_TRACE=1 prints both transcripts.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_report.h"
#include "server/resp.h"

#define PREFIX_BYTES 3

__attribute__((format(printf, 1, 2), noreturn)) static void violation(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fuzz_report_and_abort("fuzz-resp: violation: ", format, args);
}

/* A transcript: 'C' count {length bytes}..., 'E' text, 'W' held. */
typedef struct transcript {
  uint8_t *data;
  size_t length;
  size_t capacity;
} transcript;

static void transcript_append(transcript *out, const void *data, size_t length) {
  if (out->length + length > out->capacity) {
    size_t capacity = (out->length + length) * 2 + 64;
    uint8_t *grown = realloc(out->data, capacity);
    if (grown == NULL) {
      violation("out of memory for a transcript of %zu bytes", capacity);
    }
    out->data = grown;
    out->capacity = capacity;
  }
  memcpy(out->data + out->length, data, length);
  out->length += length;
}

static void transcript_number(transcript *out, char tag, uint64_t value) {
  transcript_append(out, &tag, 1);
  transcript_append(out, &value, sizeof(value));
}

static void record_command(transcript *out, const resp_command *command) {
  transcript_number(out, 'C', command->count);
  for (uint32_t index = 0; index < command->count; index++) {
    transcript_number(out, 'L', command->arguments[index].length);
    transcript_append(out, command->arguments[index].data, command->arguments[index].length);
  }
}

/* What any returned request must satisfy, wherever it came from. */
static void check_command(const resp_limits *limits, const resp_command *command,
                          const char *buffer, size_t consumed) {
  if (command->count < 1 || command->count > limits->max_arguments) {
    violation("request with %u arguments (limit %u)", command->count, limits->max_arguments);
  }
  uint64_t longest = limits->max_bulk_bytes > limits->max_inline_bytes ? limits->max_bulk_bytes
                                                                       : limits->max_inline_bytes;
  for (uint32_t index = 0; index < command->count; index++) {
    const resp_argument *argument = &command->arguments[index];
    if (argument->length > longest) {
      violation("argument %u of %zu bytes (longest allowed %llu)", index, argument->length,
                (unsigned long long)longest);
    }
    if (argument->data < buffer || argument->length > consumed ||
        argument->data > buffer + consumed - argument->length) {
      violation("argument %u lies outside the %zu consumed bytes", index, consumed);
    }
  }
}

static void check_error(const resp_parser *parser, int status) {
  if (status != -EPROTO) {
    violation("resp_parse returned %d", status);
  }
  if (strncmp(resp_parser_error_text(parser), "ERR Protocol error: ", 20) != 0) {
    violation("protocol error text \"%s\"", resp_parser_error_text(parser));
  }
}

/* A simulated connection: `held` unconsumed bytes in an exact-size buffer. */
typedef struct connection {
  resp_parser parser;
  char *buffer;
  size_t held;
} connection;

/* Parses what the connection holds; false once a protocol error ended it. */
static bool drain(connection *client, transcript *out) {
  for (;;) {
    size_t consumed = 0;
    resp_command command;
    int status = resp_parse(&client->parser, client->buffer, client->held, &consumed, &command);
    const char *broken = NULL;
    if (!resp_parser_check_invariants(&client->parser, &broken)) {
      violation("parser invariant broken: %s", broken);
    }
    if (consumed > client->held) {
      violation("consumed %zu of %zu bytes", consumed, client->held);
    }
    if (status < 0) {
      check_error(&client->parser, status);
      const char *text = resp_parser_error_text(&client->parser);
      transcript_append(out, "E", 1);
      transcript_append(out, text, strlen(text));
      if (resp_parse(&client->parser, client->buffer, client->held, &consumed, &command) !=
          status) {
        violation("a protocol error did not stay");
      }
      return false;
    }
    if (status == 1) {
      check_command(&client->parser.limits, &command, client->buffer, consumed);
      record_command(out, &command);
    }
    memmove(client->buffer, client->buffer + consumed, client->held - consumed);
    client->held -= consumed;
    if (status == 0) {
      return true;
    }
  }
}

static void receive(connection *client, const uint8_t *data, size_t size) {
  char *grown = malloc(client->held + size + 1);
  if (grown == NULL) {
    violation("out of memory for a %zu-byte buffer", client->held + size);
  }
  memcpy(grown, client->buffer, client->held);
  memcpy(grown + client->held, data, size);
  free(client->buffer);
  client->buffer = grown;
  client->held += size;
}

static uint64_t next_random(uint64_t *state) {
  *state = *state * 6364136223846793005ull + 1442695040888963407ull;
  return *state >> 33;
}

/* Feeds the stream in reads of 1 .. max_read bytes (everything if 0). */
static void parse_stream(const resp_limits *limits, const uint8_t *data, size_t size,
                         size_t max_read, uint64_t seed, transcript *out) {
  connection client = {.buffer = malloc(1), .held = 0};
  if (resp_parser_init(&client.parser, limits) != 0) {
    violation("limits refused");
  }
  size_t fed = 0;
  bool open = true;
  while (open && fed < size) {
    size_t read = max_read == 0 ? size - fed : 1 + (size_t)(next_random(&seed) % max_read);
    if (read > size - fed) {
      read = size - fed;
    }
    receive(&client, data + fed, read);
    fed += read;
    open = drain(&client, out);
  }
  if (open) {
    transcript_number(out, 'W', client.held);
  }
  free(client.buffer);
  resp_parser_destroy(&client.parser);
}

static resp_limits limits_from(uint8_t first, uint8_t second) {
  if (first & 0x80) {
    return resp_limits_default();
  }
  return (resp_limits){
      .max_arguments = 1u + (first & 7u),
      .max_inline_bytes = 16u + 8u * ((first >> 3) & 15u),
      .max_bulk_bytes = second % 80u,
  };
}

/* Every request of a transcript, written back as a multibulk array, must
 * parse to itself; its unknown-command reply must be a single line. */
static void check_round_trip(const resp_limits *limits, const transcript *original) {
  resp_writer writer;
  resp_writer_init(&writer, 1u << 26);
  size_t at = 0;
  while (at < original->length && original->data[at] == 'C') {
    uint64_t count = 0;
    memcpy(&count, original->data + at + 1, sizeof(count));
    at += 9;
    resp_write_array_header(&writer, count);
    resp_argument arguments[8];
    uint32_t kept = 0;
    for (uint64_t index = 0; index < count; index++) {
      uint64_t length = 0;
      memcpy(&length, original->data + at + 1, sizeof(length));
      const char *bytes = (const char *)original->data + at + 9;
      resp_write_bulk(&writer, bytes, length);
      if (kept < 8) {
        arguments[kept++] = (resp_argument){.data = bytes, .length = length};
      }
      at += 9 + length;
    }
    resp_writer error;
    resp_writer_init(&error, 1u << 16);
    resp_write_unknown_command_error(&error, arguments, kept);
    char *line_end = memchr(error.data, '\r', error.length);
    if (error.error != 0 || line_end != error.data + error.length - 2 ||
        memchr(error.data, '\n', error.length) != error.data + error.length - 1) {
      violation("unknown-command reply is not one line");
    }
    resp_writer_destroy(&error);
  }
  if (writer.error != 0) {
    violation("writer failed: %d", writer.error);
  }
  /* Arguments longer than a bulk may be (inline ones) cannot go back. */
  resp_limits relaxed = *limits;
  relaxed.max_bulk_bytes = RESP_MAX_BULK_BYTES_CEILING;
  transcript again = {0};
  parse_stream(&relaxed, (const uint8_t *)writer.data, writer.length, 0, 0, &again);
  if (again.length < 9 || again.length - 9 != at || memcmp(again.data, original->data, at) != 0) {
    violation("requests written back as multibulk parse differently");
  }
  free(again.data);
  resp_writer_destroy(&writer);
}

static void trace_transcript(const char *name, const transcript *out) {
  if (!tracing()) {
    return;
  }
  fprintf(stderr, "%s (%zu bytes): ", name, out->length);
  for (size_t index = 0; index < out->length; index++) {
    unsigned char c = out->data[index];
    fprintf(stderr, c >= 0x20 && c < 0x7f ? "%c" : "\\x%02x", c);
  }
  fputc('\n', stderr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < PREFIX_BYTES) {
    return 0;
  }
  resp_limits limits = limits_from(data[0], data[1]);
  size_t max_read = (size_t)1 << (data[2] & 7);
  const uint8_t *stream = data + PREFIX_BYTES;
  size_t stream_size = size - PREFIX_BYTES;
  transcript whole = {0};
  transcript pieces = {0};
  parse_stream(&limits, stream, stream_size, 0, 0, &whole);
  parse_stream(&limits, stream, stream_size, max_read, data[2], &pieces);
  trace_transcript("at once", &whole);
  trace_transcript("in reads", &pieces);
  if (whole.length != pieces.length || memcmp(whole.data, pieces.data, whole.length) != 0) {
    violation("reads of up to %zu bytes give another transcript than one read", max_read);
  }
  check_round_trip(&limits, &whole);
  free(whole.data);
  free(pieces.data);
  return 0;
}
