/*
 * resp_parser.c - the incremental RESP request parser: request kinds,
 * multibulk headers and bulks, line searches, the argument array.
 * Inline word splitting is in resp_inline.c; the states are drawn in
 * resp_internal.h.
 *
 * Speed: a pipelined "SET key value" is parsed in one pass without
 * allocating or calling a function per byte: a "*" or "$" header made of
 * digits is read in the same loop that finds its end (quick_header), any
 * other line end is found with memchr(), and bulks are skipped by their
 * length, never scanned. Arguments are recorded as offsets and turned into
 * pointers once the request is complete, so the caller may move its buffer
 * in between; a search that stopped for lack of bytes resumes where it
 * stopped, so a request costs O(its length) however it is split into reads.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server/resp.h"
#include "server/resp_internal.h"

/* Outcomes of one step, besides negative errors. */
enum {
  STEP_MORE = 0,     /* more bytes are needed */
  STEP_COMMAND = 1,  /* the request is complete and has arguments */
  STEP_EMPTY = 2,    /* the request is complete and empty: skip it */
  STEP_FOUND = 3,    /* the line end was found */
  STEP_CONTINUE = 4, /* the header was read; go on with what follows */
};

FL_STATIC_ASSERT(sizeof(resp_argument_slot) == sizeof(resp_argument),
                 "a completed slot array is read as an array of resp_argument");
FL_STATIC_ASSERT(offsetof(resp_argument_slot, pending.length) ==
                     offsetof(resp_argument_slot, argument.length),
                 "a pending length is already the argument's length");

resp_limits resp_limits_default(void) {
  return (resp_limits){
      .max_arguments = RESP_DEFAULT_MAX_ARGUMENTS,
      .max_inline_bytes = RESP_DEFAULT_MAX_INLINE_BYTES,
      .max_bulk_bytes = RESP_DEFAULT_MAX_BULK_BYTES,
  };
}

static bool limits_valid(const resp_limits *limits) {
  return limits->max_arguments >= 1 && limits->max_arguments <= RESP_MAX_ARGUMENTS_CEILING &&
         limits->max_inline_bytes >= RESP_MIN_INLINE_BYTES &&
         limits->max_inline_bytes <= RESP_MAX_INLINE_BYTES_CEILING &&
         limits->max_bulk_bytes <= RESP_MAX_BULK_BYTES_CEILING;
}

static void reset_request(resp_parser *parser) {
  parser->state = RESP_STATE_REQUEST;
  parser->line_has_nul = false;
  parser->argument_count = 0;
  parser->arguments_expected = 0;
  parser->position = 0;
  parser->scan_position = 0;
  parser->bulk_length = 0;
}

int resp_parser_init(resp_parser *parser, const resp_limits *limits) {
  memset(parser, 0, sizeof(*parser));
  parser->limits = limits != NULL ? *limits : resp_limits_default();
  if (!limits_valid(&parser->limits)) {
    return -EINVAL;
  }
  parser->argument_capacity = RESP_EMBEDDED_ARGUMENTS;
  reset_request(parser);
  return 0;
}

void resp_parser_destroy(resp_parser *parser) {
  free(parser->heap_arguments);
  parser->heap_arguments = NULL;
  parser->argument_capacity = RESP_EMBEDDED_ARGUMENTS;
}

static resp_argument_slot *argument_slots(resp_parser *parser) {
  return parser->heap_arguments != NULL ? parser->heap_arguments : parser->embedded_arguments;
}

/* Gives back a large argument array once nothing points into it. */
static void release_large_arguments(resp_parser *parser) {
  if (parser->argument_capacity > RESP_RETAINED_ARGUMENTS) {
    resp_parser_destroy(parser);
  }
}

static int grow_arguments(resp_parser *parser) {
  uint64_t wanted = (uint64_t)parser->argument_capacity * 2;
  if (wanted > parser->limits.max_arguments) {
    wanted = parser->limits.max_arguments;
  }
  assert(wanted > parser->argument_capacity);
  resp_argument_slot *grown = malloc((size_t)wanted * sizeof(*grown));
  if (grown == NULL) {
    return -ENOMEM;
  }
  memcpy(grown, argument_slots(parser), parser->argument_count * sizeof(*grown));
  free(parser->heap_arguments);
  parser->heap_arguments = grown;
  parser->argument_capacity = (uint32_t)wanted;
  return 0;
}

int resp_append_argument(resp_parser *parser, size_t offset, size_t length) {
  assert(parser->argument_count < parser->limits.max_arguments);
  if (parser->argument_count == parser->argument_capacity) {
    int status = grow_arguments(parser);
    if (status != 0) {
      return status;
    }
  }
  resp_argument_slot *slot = &argument_slots(parser)[parser->argument_count++];
  slot->pending.offset = offset;
  slot->pending.length = length;
  return 0;
}

int resp_protocol_error(resp_parser *parser, const char *text) {
  size_t length = strlen(text);
  assert(length < sizeof(parser->error_text));
  memcpy(parser->error_text, text, length + 1);
  parser->error = -EPROTO;
  return -EPROTO;
}

/* Redis prints the unexpected byte with %c, then turns a line end into a
 * space; a NUL (which Redis never reaches, see line_unparsable) too. */
static int expected_dollar_error(resp_parser *parser, char got) {
  static const char prefix[] = "ERR Protocol error: expected '$', got '";
  FL_STATIC_ASSERT(sizeof(prefix) + 2 <= RESP_ERROR_TEXT_BYTES, "error text fits");
  char *text = parser->error_text;
  memcpy(text, prefix, sizeof(prefix) - 1);
  text[sizeof(prefix) - 1] = (got == '\r' || got == '\n' || got == '\0') ? ' ' : got;
  text[sizeof(prefix)] = '\'';
  text[sizeof(prefix) + 1] = '\0';
  parser->error = -EPROTO;
  return -EPROTO;
}

/*
 * Parses a length the way Redis's string2ll() does: an optional '-', then
 * digits with no leading zero ("0" alone is fine, "-0" is not), nothing
 * else, within int64_t.
 */
static bool parse_integer(const char *text, size_t length, int64_t *value) {
  if (length == 0 || length > 20) {
    return false;
  }
  if (length == 1 && text[0] == '0') {
    *value = 0;
    return true;
  }
  bool negative = text[0] == '-';
  size_t index = negative ? 1 : 0;
  if (index == length || text[index] < '1' || text[index] > '9') {
    return false;
  }
  uint64_t magnitude = 0;
  for (; index < length; index++) {
    uint64_t digit = (uint64_t)((unsigned char)text[index] - '0');
    if (digit > 9 || magnitude > (UINT64_MAX - digit) / 10) {
      return false;
    }
    magnitude = magnitude * 10 + digit;
  }
  if (magnitude > (uint64_t)INT64_MAX + (negative ? 1 : 0)) {
    return false;
  }
  *value = negative ? (int64_t)(0 - magnitude) : (int64_t)magnitude;
  return true;
}

/* The line starting at parser->position is hidden by a NUL (or was found
 * to be): it cannot end, and is an error once it is longer than a line may be. */
static int unterminated_line(resp_parser *parser, size_t length, const char *too_big) {
  if (length - parser->position > parser->limits.max_inline_bytes) {
    return resp_protocol_error(parser, too_big);
  }
  return STEP_MORE;
}

/*
 * Searches the end of the line that starts at parser->position: the first
 * `terminator` among its first max_inline_bytes + 1 bytes, resuming where
 * the last search stopped. For inline lines (check_nul) a NUL before the
 * terminator hides it, as Redis's strchr() would; "*" and "$" lines check
 * that only when they fail to parse (see line_unparsable), so well-formed
 * headers are scanned once. Returns STEP_FOUND with *end set, STEP_MORE,
 * or -EPROTO with `too_big`.
 */
static int find_line_end(resp_parser *parser, const char *buffer, size_t length, char terminator,
                         bool check_nul, const char *too_big, size_t *end) {
  if (!parser->line_has_nul) {
    size_t window_end = parser->position + (size_t)parser->limits.max_inline_bytes + 1;
    size_t scan_end = length < window_end ? length : window_end;
    size_t scan = parser->scan_position;
    if (scan < scan_end) {
      const char *found = memchr(buffer + scan, terminator, scan_end - scan);
      size_t stop = found != NULL ? (size_t)(found - buffer) : scan_end;
      if (check_nul && memchr(buffer + scan, '\0', stop - scan) != NULL) {
        parser->line_has_nul = true;
      } else if (found != NULL) {
        parser->scan_position = stop;
        *end = stop;
        return STEP_FOUND;
      }
      parser->scan_position = stop;
    }
  }
  return unterminated_line(parser, length, too_big);
}

/* A "*" or "$" line ending at `end` did not parse. If a NUL hides its end
 * from Redis, Redis would still be waiting: so do we. Otherwise `text`. */
static int line_unparsable(resp_parser *parser, const char *buffer, size_t length, size_t end,
                           const char *text, const char *too_big) {
  size_t start = parser->position;
  if (memchr(buffer + start, '\0', end - start) != NULL) {
    parser->line_has_nul = true;
    return unterminated_line(parser, length, too_big);
  }
  return resp_protocol_error(parser, text);
}

/*
 * The common case of a "*" or "$" header: `type`, up to 18 digits without a
 * leading zero, '\r', and one more byte, all in the buffer and within the
 * line window. Numbers are read as the bytes are scanned, in one pass.
 * Anything else (negative, malformed, incomplete, too long) returns false
 * and goes the general way, which decides exactly as for these.
 */
static inline bool quick_header(const resp_parser *parser, const char *buffer, size_t length,
                                char type, int64_t *value, size_t *end) {
  size_t start = parser->position;
  size_t digits = start + 1;
  if (digits >= length || buffer[start] != type) {
    return false;
  }
  size_t limit = length - digits > 18 ? digits + 18 : length;
  uint64_t number = 0;
  size_t index = digits;
  for (; index < limit; index++) {
    uint64_t digit = (uint64_t)((unsigned char)buffer[index] - '0');
    if (digit > 9) {
      break;
    }
    number = number * 10 + digit;
  }
  if (index == digits || index + 1 >= length || buffer[index] != '\r' ||
      (buffer[digits] == '0' && index > digits + 1) ||
      index - start > parser->limits.max_inline_bytes) {
    return false;
  }
  *value = (int64_t)number;
  *end = index;
  return true;
}

/*
 * A "*" or "$" header the general way, as Redis reads it: find the '\r' in
 * the line window, wait for the byte after it, check the type byte, parse
 * the number. Returns STEP_FOUND with *value and *end, STEP_MORE or -EPROTO.
 */
static int read_header(resp_parser *parser, const char *buffer, size_t length, char type,
                       int64_t *value, size_t *end) {
  const char *too_big = type == '*' ? RESP_TEXT_BIG_MULTIBULK : RESP_TEXT_BIG_BULK;
  const char *invalid = type == '*' ? RESP_TEXT_INVALID_MULTIBULK : RESP_TEXT_INVALID_BULK;
  int status = find_line_end(parser, buffer, length, '\r', false, too_big, end);
  if (status != STEP_FOUND) {
    return status;
  }
  if (*end + 1 >= length) {
    return STEP_MORE; /* Redis wants the byte after '\r' before reading the line */
  }
  size_t start = parser->position;
  if (buffer[start] != type) {
    if (memchr(buffer + start, '\0', *end - start) != NULL) {
      parser->line_has_nul = true;
      return unterminated_line(parser, length, too_big);
    }
    return expected_dollar_error(parser, buffer[start]);
  }
  if (!parse_integer(buffer + start + 1, *end - start - 1, value)) {
    return line_unparsable(parser, buffer, length, *end, invalid, too_big);
  }
  return STEP_FOUND;
}

/* "*<count>\r\n": the number of bulks, or an empty request when <= 0. */
static int parse_count(resp_parser *parser, const char *buffer, size_t length) {
  int64_t count = 0;
  size_t end = 0;
  if (!quick_header(parser, buffer, length, '*', &count, &end)) {
    int status = read_header(parser, buffer, length, '*', &count, &end);
    if (status != STEP_FOUND) {
      return status;
    }
  }
  if (count > (int64_t)parser->limits.max_arguments) {
    return resp_protocol_error(parser, RESP_TEXT_INVALID_MULTIBULK);
  }
  parser->position = end + 2;
  if (count <= 0) {
    return STEP_EMPTY;
  }
  parser->arguments_expected = (uint32_t)count;
  parser->state = RESP_STATE_BULK_LENGTH;
  parser->scan_position = parser->position;
  return STEP_CONTINUE;
}

/* "$<length>\r\n": the length of the next bulk. */
static int parse_bulk_length(resp_parser *parser, const char *buffer, size_t length) {
  int64_t bulk_length = 0;
  size_t end = 0;
  if (!quick_header(parser, buffer, length, '$', &bulk_length, &end)) {
    int status = read_header(parser, buffer, length, '$', &bulk_length, &end);
    if (status != STEP_FOUND) {
      return status;
    }
  }
  if (bulk_length < 0 || (uint64_t)bulk_length > parser->limits.max_bulk_bytes) {
    return resp_protocol_error(parser, RESP_TEXT_INVALID_BULK);
  }
  parser->bulk_length = (size_t)bulk_length;
  parser->position = end + 2;
  parser->state = RESP_STATE_BULK_DATA;
  return STEP_CONTINUE;
}

/* The bulks of a multibulk request, from wherever the last call stopped. */
static int parse_bulks(resp_parser *parser, const char *buffer, size_t length) {
  while (parser->argument_count < parser->arguments_expected) {
    if (parser->state == RESP_STATE_BULK_LENGTH) {
      int status = parse_bulk_length(parser, buffer, length);
      if (status != STEP_CONTINUE) {
        return status;
      }
    }
    assert(parser->state == RESP_STATE_BULK_DATA && parser->position <= length);
    /* Like Redis, the two bytes after the bulk are skipped unread. */
    size_t needed = parser->bulk_length + 2;
    if (length - parser->position < needed) {
      return STEP_MORE;
    }
    int status = resp_append_argument(parser, parser->position, parser->bulk_length);
    if (status != 0) {
      return status;
    }
    parser->position += needed;
    parser->scan_position = parser->position;
    parser->state = RESP_STATE_BULK_LENGTH;
  }
  return STEP_COMMAND;
}

/* An inline request: one line, split into words. */
static int parse_inline(resp_parser *parser, char *buffer, size_t length) {
  size_t newline = 0;
  int status = find_line_end(parser, buffer, length, '\n', true, RESP_TEXT_BIG_INLINE, &newline);
  if (status != STEP_FOUND) {
    return status;
  }
  size_t end = newline;
  if (end > parser->position && buffer[end - 1] == '\r') {
    end--;
  }
  status = resp_split_inline(parser, buffer, parser->position, end);
  if (status != 0) {
    return status;
  }
  parser->position = newline + 1;
  return parser->argument_count == 0 ? STEP_EMPTY : STEP_COMMAND;
}

/* One request from its start (or from where it stopped): a STEP_* or an error. */
static int parse_request(resp_parser *parser, char *buffer, size_t length) {
  if (parser->state == RESP_STATE_REQUEST) {
    if (length == 0) {
      return STEP_MORE;
    }
    parser->state = buffer[0] == '*' ? RESP_STATE_COUNT : RESP_STATE_INLINE;
  }
  if (parser->state == RESP_STATE_INLINE) {
    return parse_inline(parser, buffer, length);
  }
  if (parser->state == RESP_STATE_COUNT) {
    int status = parse_count(parser, buffer, length);
    if (status != STEP_CONTINUE) {
      return status;
    }
  }
  return parse_bulks(parser, buffer, length);
}

/* Turns the offsets of a complete request into pointers into `buffer`. */
static void complete_command(resp_parser *parser, const char *buffer, resp_command *command) {
  resp_argument_slot *slots = argument_slots(parser);
  for (uint32_t index = 0; index < parser->argument_count; index++) {
    size_t offset = slots[index].pending.offset;
    slots[index].argument.data = buffer + offset;
  }
  command->arguments = &slots[0].argument;
  command->count = parser->argument_count;
}

int resp_parse(resp_parser *parser, char *buffer, size_t length, size_t *consumed,
               resp_command *command) {
  *consumed = 0;
  if (parser->error != 0) {
    return parser->error;
  }
  if (parser->state == RESP_STATE_REQUEST) {
    release_large_arguments(parser);
  }
  for (;;) {
    int status = parse_request(parser, buffer, length);
    if (status < 0) {
      parser->error = status; /* -ENOMEM is final too: the request is lost */
      return status;
    }
    if (status == STEP_MORE) {
      return 0;
    }
    size_t request_bytes = parser->position;
    assert(request_bytes > 0 && request_bytes <= length);
    *consumed += request_bytes;
    if (status == STEP_COMMAND) {
      complete_command(parser, buffer, command);
      reset_request(parser);
      return 1;
    }
    reset_request(parser);
    release_large_arguments(parser);
    buffer += request_bytes;
    length -= request_bytes;
  }
}

const char *resp_parser_error_text(const resp_parser *parser) {
  return parser->error_text;
}

size_t resp_parser_bytes_needed(const resp_parser *parser) {
  switch (parser->state) {
  case RESP_STATE_REQUEST:
    return 1;
  case RESP_STATE_BULK_DATA:
    return parser->position + parser->bulk_length + 2;
  default:
    return parser->scan_position + 1;
  }
}

#define CHECK(condition)                                                                           \
  do {                                                                                             \
    if (!(condition)) {                                                                            \
      *broken = #condition;                                                                        \
      return false;                                                                                \
    }                                                                                              \
  } while (0)

/* The arguments of the unfinished request lie in its consumed bytes. */
static bool arguments_in_request(const resp_parser *parser, const char **broken) {
  const resp_argument_slot *slots =
      parser->heap_arguments != NULL ? parser->heap_arguments : parser->embedded_arguments;
  for (uint32_t index = 0; index < parser->argument_count; index++) {
    CHECK(slots[index].pending.offset + slots[index].pending.length <= parser->position);
  }
  return true;
}

bool resp_parser_check_invariants(const resp_parser *parser, const char **broken) {
  CHECK(limits_valid(&parser->limits));
  CHECK(parser->state <= RESP_STATE_BULK_DATA);
  CHECK(parser->argument_capacity >= RESP_EMBEDDED_ARGUMENTS);
  CHECK((parser->heap_arguments == NULL) == (parser->argument_capacity == RESP_EMBEDDED_ARGUMENTS));
  CHECK(parser->argument_count <= parser->argument_capacity);
  CHECK(parser->argument_count <= parser->limits.max_arguments);
  CHECK(parser->error == 0 || parser->error == -EPROTO || parser->error == -ENOMEM);
  CHECK((parser->error == -EPROTO) == (parser->error_text[0] != '\0'));
  if (parser->error != 0) {
    return true; /* a failed request may stop anywhere: nothing more holds */
  }
  if (parser->state == RESP_STATE_REQUEST) {
    CHECK(parser->position == 0 && parser->argument_count == 0 && !parser->line_has_nul);
    return true;
  }
  if (parser->state != RESP_STATE_BULK_DATA) {
    CHECK(parser->scan_position >= parser->position);
  }
  if (parser->state == RESP_STATE_BULK_LENGTH || parser->state == RESP_STATE_BULK_DATA) {
    CHECK(parser->argument_count < parser->arguments_expected);
    CHECK(parser->arguments_expected <= parser->limits.max_arguments);
    CHECK(parser->bulk_length <= parser->limits.max_bulk_bytes);
  }
  return arguments_in_request(parser, broken);
}
