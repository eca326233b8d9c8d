/*
 * test_resp.c - the RESP request parser and reply writer (server/resp.h).
 *
 * Most parser tests run an input through a simulated connection three ways
 * (all at once, one byte per read, reads of pseudo-random sizes) and check
 * that each gives the same transcript: the requests returned, the protocol
 * error, the bytes still waiting. The connection's buffer holds exactly its
 * unconsumed bytes and is reallocated on every read, so it moves between
 * calls and ASan sees any read past its end. Expected error texts and
 * edge cases are those of redis-server 7.0.
 *
 * malloc and realloc are wrapped (-Wl,--wrap) to count the parser's
 * allocations and to make one fail on demand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <math.h>

#include "server/resp.h"

/* ---- allocation counting ------------------------------------------------ */

void *__real_malloc(size_t size);
void *__real_realloc(void *pointer, size_t size);
static size_t allocations;
static bool fail_next_allocation;

void *__wrap_malloc(size_t size) {
  allocations++;
  if (fail_next_allocation) {
    fail_next_allocation = false;
    return NULL;
  }
  return __real_malloc(size);
}

void *__wrap_realloc(void *pointer, size_t size) {
  allocations++;
  if (fail_next_allocation) {
    fail_next_allocation = false;
    return NULL;
  }
  return __real_realloc(pointer, size);
}

/* ---- transcripts ---------------------------------------------------------- */

typedef struct text {
  char *data;
  size_t length;
  size_t capacity;
} text;

static void text_append(text *out, const char *data, size_t length) {
  if (out->length + length + 1 > out->capacity) {
    out->capacity = (out->length + length + 1) * 2;
    out->data = realloc(out->data, out->capacity);
    assert_non_null(out->data);
  }
  memcpy(out->data + out->length, data, length);
  out->length += length;
  out->data[out->length] = '\0';
}

static void text_printf(text *out, const char *format, ...) {
  char small[256];
  va_list arguments;
  va_start(arguments, format);
  int length = vsnprintf(small, sizeof(small), format, arguments);
  va_end(arguments);
  assert_true(length >= 0 && (size_t)length < sizeof(small));
  text_append(out, small, (size_t)length);
}

/* "[arg,arg]" with unprintable bytes and the separators as \xHH. */
static void append_command(text *out, const resp_command *command) {
  text_append(out, "[", 1);
  for (uint32_t index = 0; index < command->count; index++) {
    const resp_argument *argument = &command->arguments[index];
    if (index > 0) {
      text_append(out, ",", 1);
    }
    for (size_t at = 0; at < argument->length; at++) {
      unsigned char c = (unsigned char)argument->data[at];
      if (c < 0x20 || c >= 0x7f || c == '\\' || c == ',' || c == '[' || c == ']') {
        text_printf(out, "\\x%02x", c);
      } else {
        text_append(out, (const char *)&c, 1);
      }
    }
  }
  text_append(out, "]", 1);
}

static void expect_invariants(const resp_parser *parser) {
  const char *broken = NULL;
  if (!resp_parser_check_invariants(parser, &broken)) {
    fail_msg("parser invariant broken: %s", broken);
  }
}

/* Read sizes: 0 all at once, 1 one byte per read, else 1 .. mode. */
static size_t next_read(size_t mode, uint64_t *seed, size_t left) {
  size_t size = left;
  if (mode == 1) {
    size = 1;
  } else if (mode > 1) {
    *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
    size = 1 + (size_t)((*seed >> 33) % mode);
  }
  return size < left ? size : left;
}

/* The parser's results on one connection until the input runs out or an
 * error: "[...]" per request, "!<text>" for an error, "~<n>" for n bytes
 * left waiting. Caller frees. */
static char *run(const resp_limits *limits, const char *input, size_t length, size_t mode) {
  resp_parser parser;
  assert_int_equal(resp_parser_init(&parser, limits), 0);
  text out = {0};
  text_append(&out, "", 0);
  char *buffer = malloc(1);
  size_t held = 0;
  size_t fed = 0;
  uint64_t seed = length * 31 + mode;
  for (;;) {
    size_t consumed = 0;
    resp_command command;
    int status = resp_parse(&parser, buffer, held, &consumed, &command);
    expect_invariants(&parser);
    assert_true(consumed <= held);
    if (status == 1) {
      assert_true(command.count >= 1);
      for (uint32_t index = 0; index < command.count; index++) {
        const char *data = command.arguments[index].data;
        assert_true(data >= buffer && data + command.arguments[index].length <= buffer + consumed);
      }
      append_command(&out, &command);
    } else if (status < 0) {
      assert_int_equal(status, -EPROTO);
      text_printf(&out, "!%s", resp_parser_error_text(&parser));
      break;
    }
    memmove(buffer, buffer + consumed, held - consumed);
    held -= consumed;
    if (status == 1) {
      continue;
    }
    if (fed == length) {
      if (held > 0) {
        text_printf(&out, "~%zu", held);
      }
      break;
    }
    size_t size = next_read(mode, &seed, length - fed);
    char *grown = malloc(held + size);
    memcpy(grown, buffer, held);
    memcpy(grown + held, input + fed, size);
    free(buffer);
    buffer = grown;
    held += size;
    fed += size;
  }
  free(buffer);
  resp_parser_destroy(&parser);
  return out.data;
}

/* Checks the transcript of `input` fed all at once, byte by byte and in
 * random reads. */
static void expect_with(const resp_limits *limits, const char *input, size_t length,
                        const char *expected) {
  static const size_t modes[] = {0, 1, 2, 3, 7, 64};
  for (size_t index = 0; index < sizeof(modes) / sizeof(modes[0]); index++) {
    char *got = run(limits, input, length, modes[index]);
    if (strcmp(got, expected) != 0) {
      fail_msg("read mode %zu: expected \"%s\", got \"%s\"", modes[index], expected, got);
    }
    free(got);
  }
}

#define EXPECT(input, expected) expect_with(NULL, input, sizeof(input) - 1, expected)
#define EXPECT_LIMITS(limits, input, expected)                                                     \
  expect_with(limits, input, sizeof(input) - 1, expected)

/* A string of `count` copies of `c` after `prefix` and before `suffix`. */
static char *repeated(const char *prefix, char c, size_t count, const char *suffix,
                      size_t *length) {
  size_t prefix_length = strlen(prefix);
  size_t suffix_length = strlen(suffix);
  *length = prefix_length + count + suffix_length;
  char *out = malloc(*length + 1);
  memcpy(out, prefix, prefix_length);
  memset(out + prefix_length, c, count);
  memcpy(out + prefix_length + count, suffix, suffix_length + 1);
  return out;
}

static void expect_repeated(const resp_limits *limits, const char *prefix, char c, size_t count,
                            const char *suffix, const char *expected) {
  size_t length = 0;
  char *input = repeated(prefix, c, count, suffix, &length);
  /* Byte by byte over 64 KiB lines is slow under sanitizers and adds
   * nothing the short cases do not show: one shot and random reads. */
  char *got = run(limits, input, length, 0);
  assert_string_equal(got, expected);
  free(got);
  got = run(limits, input, length, 4096);
  assert_string_equal(got, expected);
  free(got);
  free(input);
}

/* ---- requests --------------------------------------------------------------- */

static void test_multibulk(void **state) {
  (void)state;
  EXPECT("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n", "[SET,key,value]");
  EXPECT("*1\r\n$4\r\nPING\r\n", "[PING]");
  EXPECT("*2\r\n$3\r\nGET\r\n$0\r\n\r\n", "[GET,]");
  /* Lengths are decimal; a 12-byte bulk. */
  EXPECT("*2\r\n$4\r\nECHO\r\n$12\r\nhello world!\r\n", "[ECHO,hello world!]");
  /* Incomplete at every point: the bytes wait. */
  EXPECT("*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nval", "~29");
  EXPECT("*3", "~2");
  EXPECT("*3\r", "~3");
  EXPECT("*1\r\n$4\r\nPING\r", "~13");
}

static void test_pipeline(void **state) {
  (void)state;
  EXPECT("*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n"
         "*2\r\n$3\r\nGET\r\n$1\r\na\r\n"
         "PING\r\n"
         "*1\r\n$4\r\nPING\r\n"
         "GET b\n",
         "[SET,a,1][GET,a][PING][PING][GET,b]");
  /* Requests before an error are returned first. */
  EXPECT("*1\r\n$4\r\nPING\r\n*x\r\n*1\r\n$4\r\nPING\r\n",
         "[PING]!ERR Protocol error: invalid multibulk length");
  /* A long pipeline, built here. */
  text input = {0};
  text expected = {0};
  text_append(&expected, "", 0);
  for (int index = 0; index < 500; index++) {
    char key[32];
    int key_length = snprintf(key, sizeof(key), "key:%d", index);
    text_printf(&input, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\nv%d\r\n", key_length, key,
                (int)strlen("v") + (index >= 100  ? 3
                                    : index >= 10 ? 2
                                                  : 1),
                index);
    text_printf(&expected, "[SET,%s,v%d]", key, index);
  }
  expect_with(NULL, input.data, input.length, expected.data);
  free(input.data);
  free(expected.data);
}

static void test_empty_requests_are_skipped(void **state) {
  (void)state;
  EXPECT("*0\r\n*-1\r\n*-9223372036854775808\r\nPING\r\n", "[PING]");
  EXPECT("\r\n\r\n\n   \r\n\t\r\nPING\r\n", "[PING]");
  EXPECT("\r\n", "");
  EXPECT("*0\r\n", "");
  /* Skipped requests are reported consumed even when nothing follows. */
  resp_parser parser;
  assert_int_equal(resp_parser_init(&parser, NULL), 0);
  char input[] = "\r\n*0\r\n  \n*1\r\n$4\r\nPI";
  size_t consumed = 0;
  resp_command command;
  assert_int_equal(resp_parse(&parser, input, sizeof(input) - 1, &consumed, &command), 0);
  assert_int_equal(consumed, 9);
  resp_parser_destroy(&parser);
}

static void test_binary_safe_arguments(void **state) {
  (void)state;
  EXPECT("*2\r\n$3\r\nSET\r\n$6\r\na\0\r\nb\0\r\n", "[SET,a\\x00\\x0d\\x0ab\\x00]");
  EXPECT("*1\r\n$4\r\n\r\n\r\n\r\n", "[\\x0d\\x0a\\x0d\\x0a]");
  EXPECT("*1\r\n$2\r\n$1\r\n", "[$1]");
  EXPECT("*1\r\n$3\r\n\xff\x80*\r\n", "[\\xff\\x80*]");
}

/* Redis skips the two bytes after a bulk and the byte after a header's
 * '\r' without looking at them; so do we. */
static void test_redis_leniency(void **state) {
  (void)state;
  EXPECT("*1\rX$4\r\nPINGxx", "[PING]");
  EXPECT("*1\r\n$4\r\nPINGxxPING\r\n", "[PING][PING]");
  EXPECT("*1\r\n$4\rxPING\r\n", "[PING]");
}

static void test_inline_plain(void **state) {
  (void)state;
  EXPECT("PING\r\n", "[PING]");
  EXPECT("PING\n", "[PING]");
  EXPECT("SET  key \t value\r\n", "[SET,key,value]");
  EXPECT("  PING  \r\n", "[PING]");
  EXPECT("\vPING\r\n", "[PING]");
  EXPECT("ECHO\ta\r\n", "[ECHO,a]");
  /* \v and \f end no plain word; \r does. */
  EXPECT("ECHO\va\r\n", "[ECHO\\x0ba]");
  EXPECT("ECHO a\rb\r\n", "[ECHO,a,b]");
  EXPECT("PING\r\r\n", "[PING]");
  EXPECT("GET $3\r\n", "[GET,$3]");
  EXPECT("PING", "~4");
  EXPECT("PING\r", "~5");
}

static void test_inline_quotes(void **state) {
  (void)state;
  EXPECT("ECHO \"a\\x41\\n\" x\r\n", "[ECHO,aA\\x0a,x]");
  EXPECT("ECHO \"\\r\\t\\b\\a\\\\\\\"\"\r\n", "[ECHO,\\x0d\\x09\\x08\\x07\\x5c\"]");
  EXPECT("ECHO 'a\\'b'\r\n", "[ECHO,a'b]");
  EXPECT("ECHO 'a\\nb'\r\n", "[ECHO,a\\x5cnb]");
  EXPECT("ECHO a\"b c\"\r\n", "[ECHO,ab c]");
  EXPECT("ECHO \"\"\r\n", "[ECHO,]");
  EXPECT("ECHO ''\r\n", "[ECHO,]");
  EXPECT("ECHO \"a\"\v\r\n", "[ECHO,a]");
  EXPECT("ECHO \"\\x4g\"\r\n", "[ECHO,x4g]");
  EXPECT("ECHO \"\\x\"\r\n", "[ECHO,x]");
  EXPECT("ECHO \"\\q\"\r\n", "[ECHO,q]");
  EXPECT("ECHO \"\\xfF\"\r\n", "[ECHO,\\xff]");
  EXPECT("ECHO \"a\rb\"\r\n", "[ECHO,a\\x0db]");
  EXPECT("ECHO \"a b\"\"c\"\r\n", "!ERR Protocol error: unbalanced quotes in request");
  EXPECT("ECHO \"abc\r\n", "!ERR Protocol error: unbalanced quotes in request");
  EXPECT("ECHO \"abc\"def\r\n", "!ERR Protocol error: unbalanced quotes in request");
  EXPECT("ECHO 'abc\r\n", "!ERR Protocol error: unbalanced quotes in request");
  EXPECT("ECHO \"abc\\\"\r\n", "!ERR Protocol error: unbalanced quotes in request");
  EXPECT("ECHO \"abc\\\r\n", "!ERR Protocol error: unbalanced quotes in request");
  /* The request after an unescaped one is untouched by the rewriting. */
  EXPECT("SET \"k\\x31\" 'v\\'' \r\n*1\r\n$4\r\nPING\r\n", "[SET,k1,v'][PING]");
}

static void test_multibulk_count_errors(void **state) {
  (void)state;
  static const char *const invalid[] = {"*abc\r\n",
                                        "*\r\n",
                                        "*-0\r\n",
                                        "*01\r\n",
                                        "*+1\r\n",
                                        "*1 \r\n",
                                        "* 1\r\n",
                                        "*1a\r\n",
                                        "*99999999999999999999\r\n",
                                        "*-9223372036854775809\r\n",
                                        "*2147483648\r\n"};
  for (size_t index = 0; index < sizeof(invalid) / sizeof(invalid[0]); index++) {
    expect_with(NULL, invalid[index], strlen(invalid[index]),
                "!ERR Protocol error: invalid multibulk length");
  }
}

static void test_bulk_errors(void **state) {
  (void)state;
  static const char *const invalid[] = {"*1\r\n$-1\r\n",
                                        "*1\r\n$01\r\n",
                                        "*1\r\n$a\r\n",
                                        "*1\r\n$\r\n",
                                        "*1\r\n$-0\r\n",
                                        "*1\r\n$3abc\r\n",
                                        "*1\r\n$536870913\r\n",
                                        "*1\r\n$000000000000000001\r\n",
                                        "*1\r\n$123456789012345678\r\n",
                                        "*1\r\n$1234567890123456789\r\n",
                                        "*1\r\n$00\r\n"};
  for (size_t index = 0; index < sizeof(invalid) / sizeof(invalid[0]); index++) {
    expect_with(NULL, invalid[index], strlen(invalid[index]),
                "!ERR Protocol error: invalid bulk length");
  }
  EXPECT("*1\r\nx\r\n", "!ERR Protocol error: expected '$', got 'x'");
  EXPECT("*2\r\n$1\r\na\r\n:1\r\n", "!ERR Protocol error: expected '$', got ':'");
  EXPECT("*1\r\n\r\n", "!ERR Protocol error: expected '$', got ' '");
  EXPECT("*1\r\n\n\r\n", "!ERR Protocol error: expected '$', got ' '");
  EXPECT("*1\r\n\xfe\r\n", "!ERR Protocol error: expected '$', got '\xfe'");
}

/* Redis finds line ends with strchr(): a NUL before the end hides it, and
 * the request waits until it is too big. */
static void test_nul_hides_line_ends(void **state) {
  (void)state;
  EXPECT("*1\r\n\0\r\n", "~7");
  EXPECT("*1\0\r\n", "~5");
  EXPECT("*1\r\n$\0\r\n", "~8");
  EXPECT("ECHO a\0b\r\nPING\r\n", "~16");
  EXPECT("ECHO \"a\0b\"\r\n", "~12");
  /* A NUL after the line end is just data. */
  EXPECT("*1\r\n$1\r\n\0\r\n", "[\\x00]");
  resp_limits limits = {.max_arguments = 8, .max_inline_bytes = 16, .max_bulk_bytes = 8};
  EXPECT_LIMITS(&limits, "ECHO\0abcdefghijk", "~16");
  EXPECT_LIMITS(&limits, "ECHO\0abcdefghijkl", "!ERR Protocol error: too big inline request");
  EXPECT_LIMITS(&limits, "ECHO\0abc\r\nPING\r\nPING\r\n",
                "!ERR Protocol error: too big inline request");
  EXPECT_LIMITS(&limits, "*1\0\r\n\r\n\r\n\r\n\r\n\r\nx", "~16");
  EXPECT_LIMITS(&limits, "*1\0\r\n\r\n\r\n\r\n\r\n\r\nxy",
                "!ERR Protocol error: too big mbulk count string");
  EXPECT_LIMITS(&limits, "*1\r\n\0\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
                "!ERR Protocol error: too big bulk count string");
  EXPECT_LIMITS(&limits, "*1\r\n$\0\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n",
                "!ERR Protocol error: too big bulk count string");
}

static void test_line_limits_default(void **state) {
  (void)state;
  const size_t max = RESP_DEFAULT_MAX_INLINE_BYTES;
  expect_repeated(NULL, "", 'x', max, "", "~65536");
  expect_repeated(NULL, "", 'x', max + 1, "", "!ERR Protocol error: too big inline request");
  /* The '\n' may be the 65537th byte (Redis accepts this line too). */
  size_t expected_length = 0;
  char *expected = repeated("[ECHO,", 'x', max - 6, "]", &expected_length);
  expect_repeated(NULL, "ECHO ", 'x', max - 6, "\r\n", expected);
  free(expected);
  expect_repeated(NULL, "*", '1', max, "", "!ERR Protocol error: too big mbulk count string");
  expect_repeated(NULL, "*", '1', max - 1, "", "~65536");
  expect_repeated(NULL, "*1\r\n$", '1', max, "", "!ERR Protocol error: too big bulk count string");
  expect_repeated(NULL, "*1\r\n$", '1', max - 1, "", "~65540");
  /* A terminator inside the window: the line parses (and fails as a number). */
  expect_repeated(NULL, "*", '1', max - 1, "\r\n", "!ERR Protocol error: invalid multibulk length");
}

static void test_line_limits_custom(void **state) {
  (void)state;
  resp_limits limits = {.max_arguments = 3, .max_inline_bytes = 16, .max_bulk_bytes = 5};
  /* Inline: the '\n' may be byte 17, not 18. */
  EXPECT_LIMITS(&limits, "SET aaaaa bbbbb\r\n", "[SET,aaaaa,bbbbb]");
  EXPECT_LIMITS(&limits, "SET aaaaa bbbbbb\r\n", "!ERR Protocol error: too big inline request");
  EXPECT_LIMITS(&limits, "SET aaaaa bbbbbbb", "!ERR Protocol error: too big inline request");
  EXPECT_LIMITS(&limits, "SET aaaaa bbbbbb", "~16");
  EXPECT_LIMITS(&limits, "A B C\r\n", "[A,B,C]");
  EXPECT_LIMITS(&limits, "A B C D\r\n",
                "!ERR Protocol error: too many arguments in inline request");
  /* Multibulk: counts and bulk lengths at and over their bounds. */
  EXPECT("*3\r\n", "~4");
  EXPECT_LIMITS(&limits, "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", "[a,b,c]");
  EXPECT_LIMITS(&limits, "*4\r\n", "!ERR Protocol error: invalid multibulk length");
  EXPECT_LIMITS(&limits, "*1\r\n$5\r\nabcde\r\n", "[abcde]");
  EXPECT_LIMITS(&limits, "*1\r\n$6\r\n", "!ERR Protocol error: invalid bulk length");
  /* Header lines are searched over max_inline_bytes + 1 bytes. */
  EXPECT_LIMITS(&limits, "*000000000000003\r\n", "!ERR Protocol error: invalid multibulk length");
  EXPECT_LIMITS(&limits, "*0000000000000003\r\n",
                "!ERR Protocol error: too big mbulk count string");
  limits.max_bulk_bytes = 0;
  EXPECT_LIMITS(&limits, "*1\r\n$0\r\n\r\n", "[]");
  EXPECT_LIMITS(&limits, "*1\r\n$1\r\n", "!ERR Protocol error: invalid bulk length");
}

static void test_argument_count_limit_default(void **state) {
  (void)state;
  EXPECT("*1048576\r\n", "~10");
  EXPECT("*1048577\r\n", "!ERR Protocol error: invalid multibulk length");
  /* Many arguments: the array grows only as they arrive, and is released
   * once the request is done. */
  const uint32_t count = 5000;
  text input = {0};
  text_printf(&input, "*%u\r\n", count);
  for (uint32_t index = 0; index < count; index++) {
    text_append(&input, "$1\r\nx\r\n", 7);
  }
  text_append(&input, "*1\r\n$4\r\nPING\r\n", 14);
  resp_parser parser;
  assert_int_equal(resp_parser_init(&parser, NULL), 0);
  size_t consumed = 0;
  resp_command command;
  assert_int_equal(resp_parse(&parser, input.data, input.length, &consumed, &command), 1);
  assert_int_equal(command.count, count);
  assert_non_null(parser.heap_arguments);
  for (uint32_t index = 0; index < count; index++) {
    assert_int_equal(command.arguments[index].length, 1);
    assert_int_equal(command.arguments[index].data[0], 'x');
  }
  assert_int_equal(
      resp_parse(&parser, input.data + consumed, input.length - consumed, &consumed, &command), 1);
  assert_int_equal(command.count, 1);
  assert_null(parser.heap_arguments);
  resp_parser_destroy(&parser);
  free(input.data);
}

static void test_bad_limits(void **state) {
  (void)state;
  resp_parser parser;
  resp_limits limits = resp_limits_default();
  limits.max_arguments = 0;
  assert_int_equal(resp_parser_init(&parser, &limits), -EINVAL);
  limits = resp_limits_default();
  limits.max_inline_bytes = RESP_MIN_INLINE_BYTES - 1;
  assert_int_equal(resp_parser_init(&parser, &limits), -EINVAL);
  limits = resp_limits_default();
  limits.max_bulk_bytes = RESP_MAX_BULK_BYTES_CEILING + 1ull;
  assert_int_equal(resp_parser_init(&parser, &limits), -EINVAL);
  limits.max_bulk_bytes = RESP_MAX_BULK_BYTES_CEILING;
  assert_int_equal(resp_parser_init(&parser, &limits), 0);
  resp_parser_destroy(&parser);
}

static void test_error_is_sticky(void **state) {
  (void)state;
  resp_parser parser;
  assert_int_equal(resp_parser_init(&parser, NULL), 0);
  assert_string_equal(resp_parser_error_text(&parser), "");
  char bad[] = "*x\r\n";
  size_t consumed = 0;
  resp_command command;
  assert_int_equal(resp_parse(&parser, bad, 4, &consumed, &command), -EPROTO);
  char good[] = "PING\r\n";
  assert_int_equal(resp_parse(&parser, good, 6, &consumed, &command), -EPROTO);
  assert_int_equal(consumed, 0);
  assert_string_equal(resp_parser_error_text(&parser),
                      "ERR Protocol error: invalid multibulk length");
  resp_parser_destroy(&parser);
}

/* A value of the largest declared length is awaited without allocating
 * and without the parser needing more than that value plus its header. */
static void test_huge_bulk_never_allocates(void **state) {
  (void)state;
  resp_parser parser;
  assert_int_equal(resp_parser_init(&parser, NULL), 0);
  char header[] = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777216\r\n";
  size_t header_length = sizeof(header) - 1;
  size_t consumed = 0;
  resp_command command;
  size_t before = allocations;
  assert_int_equal(resp_parse(&parser, header, header_length, &consumed, &command), 0);
  assert_int_equal(allocations, before);
  assert_int_equal(resp_parser_bytes_needed(&parser), header_length + 16777216 + 2);
  /* The whole value arrives; still nothing allocated by the parser. */
  size_t total = header_length + 16777216 + 2;
  char *request = malloc(total);
  memcpy(request, header, header_length);
  memset(request + header_length, 'v', 16777216);
  memcpy(request + total - 2, "\r\n", 2);
  before = allocations;
  assert_int_equal(resp_parse(&parser, request, total - 1, &consumed, &command), 0);
  assert_int_equal(resp_parse(&parser, request, total, &consumed, &command), 1);
  assert_int_equal(allocations, before);
  assert_int_equal(consumed, total);
  assert_int_equal(command.count, 3);
  assert_ptr_equal(command.arguments[2].data, request + header_length);
  assert_int_equal(command.arguments[2].length, 16777216);
  free(request);
  /* A huge declared count allocates nothing either. */
  char count[] = "*1000000\r\n$1\r\na\r\n";
  before = allocations;
  assert_int_equal(resp_parse(&parser, count, sizeof(count) - 1, &consumed, &command), 0);
  assert_int_equal(allocations, before);
  resp_parser_destroy(&parser);
}

/* Parsing resumes where it stopped: a line arriving byte by byte is never
 * searched again from its start, a bulk is never scanned. */
static void test_resumes_without_rescanning(void **state) {
  (void)state;
  resp_parser parser;
  assert_int_equal(resp_parser_init(&parser, NULL), 0);
  char line[1000];
  memset(line, 'a', sizeof(line));
  size_t consumed = 0;
  resp_command command;
  for (size_t length = 1; length <= sizeof(line); length++) {
    assert_int_equal(resp_parse(&parser, line, length, &consumed, &command), 0);
    assert_int_equal(consumed, 0);
    assert_int_equal(parser.scan_position, length);
    assert_int_equal(resp_parser_bytes_needed(&parser), length + 1);
  }
  resp_parser_destroy(&parser);
  /* A bulk of 1 MiB fed one byte per call takes linear time. */
  assert_int_equal(resp_parser_init(&parser, NULL), 0);
  size_t value = 1 << 20;
  char *request = malloc(value + 32);
  int header = snprintf(request, 32, "*1\r\n$%zu\r\n", value);
  memset(request + header, 'b', value);
  memcpy(request + header + value, "\r\n", 2);
  size_t total = (size_t)header + value + 2;
  for (size_t length = 1; length < total; length++) {
    assert_int_equal(resp_parse(&parser, request, length, &consumed, &command), 0);
  }
  assert_int_equal(resp_parse(&parser, request, total, &consumed, &command), 1);
  assert_int_equal(command.arguments[0].length, value);
  free(request);
  resp_parser_destroy(&parser);
}

/* The buffer may move between calls (the connection grows or compacts it). */
static void test_buffer_moves_between_calls(void **state) {
  (void)state;
  resp_parser parser;
  assert_int_equal(resp_parser_init(&parser, NULL), 0);
  const char request[] = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
  char first[64];
  char second[64];
  memcpy(first, request, 20);
  size_t consumed = 0;
  resp_command command;
  assert_int_equal(resp_parse(&parser, first, 20, &consumed, &command), 0);
  memset(first, '#', sizeof(first));
  memcpy(second, request, sizeof(request) - 1);
  assert_int_equal(resp_parse(&parser, second, sizeof(request) - 1, &consumed, &command), 1);
  assert_ptr_equal(command.arguments[0].data, second + 8);
  assert_ptr_equal(command.arguments[1].data, second + 17);
  assert_ptr_equal(command.arguments[2].data, second + 26);
  resp_parser_destroy(&parser);
}

static void test_bytes_needed(void **state) {
  (void)state;
  resp_parser parser;
  assert_int_equal(resp_parser_init(&parser, NULL), 0);
  assert_int_equal(resp_parser_bytes_needed(&parser), 1);
  char request[] = "*2\r\n$3\r\nGET\r\n$100\r\n";
  size_t consumed = 0;
  resp_command command;
  assert_int_equal(resp_parse(&parser, request, sizeof(request) - 1, &consumed, &command), 0);
  assert_int_equal(resp_parser_bytes_needed(&parser), sizeof(request) - 1 + 102);
  resp_parser_destroy(&parser);
}

static void test_out_of_memory(void **state) {
  (void)state;
  resp_parser parser;
  assert_int_equal(resp_parser_init(&parser, NULL), 0);
  text input = {0};
  text_printf(&input, "*%d\r\n", RESP_EMBEDDED_ARGUMENTS + 1);
  for (int index = 0; index <= RESP_EMBEDDED_ARGUMENTS; index++) {
    text_append(&input, "$1\r\nx\r\n", 7);
  }
  size_t consumed = 0;
  resp_command command;
  fail_next_allocation = true;
  assert_int_equal(resp_parse(&parser, input.data, input.length, &consumed, &command), -ENOMEM);
  assert_false(fail_next_allocation);
  assert_int_equal(resp_parse(&parser, input.data, input.length, &consumed, &command), -ENOMEM);
  expect_invariants(&parser);
  resp_parser_destroy(&parser);
  free(input.data);
}

/* ---- replies -------------------------------------------------------------- */

static void expect_reply(resp_writer *writer, const char *expected, size_t length) {
  assert_int_equal(writer->error, 0);
  if (writer->length != length || memcmp(writer->data, expected, length) != 0) {
    fail_msg("expected \"%.*s\", got \"%.*s\"", (int)length, expected, (int)writer->length,
             writer->data);
  }
  writer->length = 0;
}

#define EXPECT_REPLY(writer, expected) expect_reply(writer, expected, sizeof(expected) - 1)

static void test_replies_resp2(void **state) {
  (void)state;
  resp_writer writer;
  resp_writer_init(&writer, 1 << 20);
  assert_int_equal(resp_write_ok(&writer), 0);
  EXPECT_REPLY(&writer, "+OK\r\n");
  assert_int_equal(resp_write_simple_string(&writer, "PONG", 4), 0);
  EXPECT_REPLY(&writer, "+PONG\r\n");
  assert_int_equal(resp_write_error(&writer, "ERR syntax error"), 0);
  EXPECT_REPLY(&writer, "-ERR syntax error\r\n");
  resp_write_integer(&writer, 0);
  resp_write_integer(&writer, -1);
  resp_write_integer(&writer, INT64_MAX);
  resp_write_integer(&writer, INT64_MIN);
  EXPECT_REPLY(&writer, ":0\r\n:-1\r\n:9223372036854775807\r\n:-9223372036854775808\r\n");
  resp_write_bulk(&writer, "bar", 3);
  resp_write_bulk(&writer, "", 0);
  resp_write_bulk(&writer, "a\0\r\n", 4);
  EXPECT_REPLY(&writer, "$3\r\nbar\r\n$0\r\n\r\n$4\r\na\0\r\n\r\n");
  resp_write_null(&writer);
  resp_write_null_array(&writer);
  EXPECT_REPLY(&writer, "$-1\r\n*-1\r\n");
  resp_write_array_header(&writer, 2);
  resp_write_map_header(&writer, 2);
  resp_write_set_header(&writer, 3);
  resp_write_array_header(&writer, 0);
  EXPECT_REPLY(&writer, "*2\r\n*4\r\n*3\r\n*0\r\n");
  resp_write_boolean(&writer, true);
  resp_write_boolean(&writer, false);
  EXPECT_REPLY(&writer, ":1\r\n:0\r\n");
  resp_write_double(&writer, 1.5);
  resp_write_double(&writer, 0.1);
  EXPECT_REPLY(&writer, "$3\r\n1.5\r\n$19\r\n0.10000000000000001\r\n");
  resp_write_double(&writer, INFINITY);
  resp_write_double(&writer, -INFINITY);
  resp_write_double(&writer, NAN);
  EXPECT_REPLY(&writer, "$3\r\ninf\r\n$4\r\n-inf\r\n$3\r\nnan\r\n");
  resp_write_verbatim(&writer, "txt", "# Server", 8);
  EXPECT_REPLY(&writer, "$8\r\n# Server\r\n");
  resp_write_bulk_header(&writer, 5);
  resp_write_raw(&writer, "hello", 5);
  resp_write_raw(&writer, "\r\n", 2);
  EXPECT_REPLY(&writer, "$5\r\nhello\r\n");
  resp_writer_destroy(&writer);
}

static void test_replies_resp3(void **state) {
  (void)state;
  resp_writer writer;
  resp_writer_init(&writer, 1 << 20);
  assert_int_equal(resp_writer_set_protocol(&writer, 4), -EINVAL);
  assert_int_equal(resp_writer_set_protocol(&writer, 3), 0);
  resp_write_null(&writer);
  resp_write_null_array(&writer);
  EXPECT_REPLY(&writer, "_\r\n_\r\n");
  resp_write_map_header(&writer, 2);
  resp_write_set_header(&writer, 3);
  resp_write_array_header(&writer, 1);
  EXPECT_REPLY(&writer, "%2\r\n~3\r\n*1\r\n");
  resp_write_boolean(&writer, true);
  resp_write_boolean(&writer, false);
  EXPECT_REPLY(&writer, "#t\r\n#f\r\n");
  resp_write_double(&writer, 1.5);
  resp_write_double(&writer, -0.25);
  resp_write_double(&writer, 1e300);
  resp_write_double(&writer, INFINITY);
  resp_write_double(&writer, -INFINITY);
  EXPECT_REPLY(&writer, ",1.5\r\n,-0.25\r\n,1.0000000000000001e+300\r\n,inf\r\n,-inf\r\n");
  resp_write_verbatim(&writer, "txt", "# Server", 8);
  EXPECT_REPLY(&writer, "=12\r\ntxt:# Server\r\n");
  /* The rest is the same in both. */
  resp_write_integer(&writer, 42);
  resp_write_bulk(&writer, "x", 1);
  resp_write_ok(&writer);
  EXPECT_REPLY(&writer, ":42\r\n$1\r\nx\r\n+OK\r\n");
  assert_int_equal(resp_writer_set_protocol(&writer, 2), 0);
  resp_write_null(&writer);
  EXPECT_REPLY(&writer, "$-1\r\n");
  resp_writer_destroy(&writer);
}

static void test_line_ends_in_texts_become_spaces(void **state) {
  (void)state;
  resp_writer writer;
  resp_writer_init(&writer, 1 << 20);
  resp_write_error(&writer, "ERR bad\r\nthing\n");
  resp_write_simple_string(&writer, "a\rb", 3);
  EXPECT_REPLY(&writer, "-ERR bad  thing \r\n+a b\r\n");
  resp_write_error_format(&writer, "ERR value %d of '%s'", 7, "x\ny");
  EXPECT_REPLY(&writer, "-ERR value 7 of 'x y'\r\n");
  char long_text[600];
  memset(long_text, 'z', sizeof(long_text) - 1);
  long_text[sizeof(long_text) - 1] = '\0';
  resp_write_error_format(&writer, "ERR %s", long_text);
  assert_int_equal(writer.length, 1 + 4 + 599 + 2);
  assert_memory_equal(writer.data + writer.length - 4, "zz\r\n", 4);
  resp_writer_destroy(&writer);
}

static void test_redis_error_replies(void **state) {
  (void)state;
  resp_writer writer;
  resp_writer_init(&writer, 1 << 20);
  const resp_argument foo[] = {{"FOO", 3}, {"a", 1}, {"b\r\nc", 4}};
  resp_write_unknown_command_error(&writer, foo, 3);
  EXPECT_REPLY(&writer, "-ERR unknown command 'FOO', with args beginning with: 'a' 'b  c' \r\n");
  const resp_argument nul[] = {{"f\0o", 3}};
  resp_write_unknown_command_error(&writer, nul, 1);
  EXPECT_REPLY(&writer, "-ERR unknown command 'f', with args beginning with: \r\n");
  /* Quotes are cut once 128 bytes of them are written. */
  char a[100];
  char b[100];
  char y[200];
  memset(a, 'a', sizeof(a));
  memset(b, 'b', sizeof(b));
  memset(y, 'y', sizeof(y));
  const resp_argument long_arguments[] = {{"FOO", 3}, {a, 100}, {b, 100}, {"c", 1}};
  resp_write_unknown_command_error(&writer, long_arguments, 4);
  text expected = {0};
  text_printf(&expected,
              "-ERR unknown command 'FOO', with args beginning with: '%.100s' '%.25s' \r\n", a, b);
  expect_reply(&writer, expected.data, expected.length);
  expected.length = 0;
  const resp_argument long_argument[] = {{"foo", 3}, {y, 200}};
  resp_write_unknown_command_error(&writer, long_argument, 2);
  text_printf(&expected, "-ERR unknown command 'foo', with args beginning with: '%.128s' \r\n", y);
  expect_reply(&writer, expected.data, expected.length);
  free(expected.data);
  const resp_argument client = {"client", 6};
  const resp_argument sub = {"foo", 3};
  resp_write_unknown_subcommand_error(&writer, &client, &sub);
  EXPECT_REPLY(&writer, "-ERR unknown subcommand 'foo'. Try CLIENT HELP.\r\n");
  resp_write_arity_error(&writer, "get");
  EXPECT_REPLY(&writer, "-ERR wrong number of arguments for 'get' command\r\n");
  resp_write_moved_error(&writer, 3999, "127.0.0.1", 6381);
  EXPECT_REPLY(&writer, "-MOVED 3999 127.0.0.1:6381\r\n");
  resp_writer_destroy(&writer);
}

static void test_output_limit(void **state) {
  (void)state;
  resp_writer writer;
  resp_writer_init(&writer, 10);
  assert_int_equal(resp_write_bulk(&writer, "abc", 3), 0); /* 9 bytes */
  assert_int_equal(resp_write_raw(&writer, "x", 1), 0);    /* 10: exactly the limit */
  assert_int_equal(resp_write_raw(&writer, "y", 1), -ENOBUFS);
  assert_int_equal(writer.length, 10);
  /* Sticky: even a write that would fit again after a discard fails. */
  resp_writer_discard(&writer, 4);
  assert_int_equal(writer.length, 6);
  assert_memory_equal(writer.data, "abc\r\nx", 6);
  assert_int_equal(resp_write_ok(&writer), -ENOBUFS);
  assert_int_equal(writer.error, -ENOBUFS);
  resp_writer_destroy(&writer);
  /* A large reply grows the buffer by doubling. */
  resp_writer_init(&writer, 1 << 24);
  char *value = calloc(1, 1 << 20);
  assert_int_equal(resp_write_bulk(&writer, value, 1 << 20), 0);
  assert_int_equal(writer.length, (1 << 20) + 10 + 2);
  free(value);
  resp_writer_destroy(&writer);
  /* Allocation failure is sticky too. */
  resp_writer_init(&writer, 1 << 20);
  fail_next_allocation = true;
  assert_int_equal(resp_write_ok(&writer), -ENOMEM);
  assert_int_equal(resp_write_ok(&writer), -ENOMEM);
  resp_writer_destroy(&writer);
}

/* Swapping moves the bytes without copying them; each writer keeps its
 * own limit, protocol and error. */
static void test_swap_buffers(void **state) {
  (void)state;
  resp_writer output;
  resp_writer reply;
  resp_writer_init(&output, 100);
  resp_writer_init(&reply, 1000);
  assert_int_equal(resp_writer_set_protocol(&reply, 3), 0);
  assert_int_equal(resp_write_ok(&reply), 0);
  const char *bytes = reply.data;
  resp_writer_swap_buffers(&output, &reply);
  assert_ptr_equal(output.data, bytes);
  assert_int_equal(output.length, 5);
  assert_memory_equal(output.data, "+OK\r\n", 5);
  assert_int_equal(output.max_bytes, 100);
  assert_int_equal(output.protocol, 2);
  assert_null(reply.data);
  assert_int_equal(reply.length, 0);
  assert_int_equal(reply.capacity, 0);
  assert_int_equal(reply.max_bytes, 1000);
  assert_int_equal(reply.protocol, 3);
  /* Both stay usable: the output appends after what it took over. */
  assert_int_equal(resp_write_integer(&output, 7), 0);
  assert_memory_equal(output.data, "+OK\r\n:7\r\n", 9);
  assert_int_equal(resp_write_null(&reply), 0);
  assert_memory_equal(reply.data, "_\r\n", 3);
  /* A sticky error stays with its writer. */
  reply.error = -ENOBUFS;
  resp_writer_swap_buffers(&output, &reply);
  assert_int_equal(output.error, 0);
  assert_int_equal(reply.error, -ENOBUFS);
  assert_int_equal(output.length, 3);
  assert_int_equal(reply.length, 9);
  resp_writer_destroy(&output);
  resp_writer_destroy(&reply);
}

/* Replies of every kind, parsed back by a minimal RESP reader... of our own
 * requests: a command written as a bulk array parses back to itself. */
static void test_request_round_trip(void **state) {
  (void)state;
  resp_writer writer;
  resp_writer_init(&writer, 1 << 20);
  const resp_argument arguments[] = {{"SET", 3}, {"k\0\r\n", 4}, {"", 0}, {"\"'", 2}};
  resp_write_array_header(&writer, 4);
  for (int index = 0; index < 4; index++) {
    resp_write_bulk(&writer, arguments[index].data, arguments[index].length);
  }
  char *got = run(NULL, writer.data, writer.length, 1);
  assert_string_equal(got, "[SET,k\\x00\\x0d\\x0a,,\"']");
  free(got);
  resp_writer_destroy(&writer);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_multibulk),
      cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_empty_requests_are_skipped),
      cmocka_unit_test(test_binary_safe_arguments),
      cmocka_unit_test(test_redis_leniency),
      cmocka_unit_test(test_inline_plain),
      cmocka_unit_test(test_inline_quotes),
      cmocka_unit_test(test_multibulk_count_errors),
      cmocka_unit_test(test_bulk_errors),
      cmocka_unit_test(test_nul_hides_line_ends),
      cmocka_unit_test(test_line_limits_default),
      cmocka_unit_test(test_line_limits_custom),
      cmocka_unit_test(test_argument_count_limit_default),
      cmocka_unit_test(test_bad_limits),
      cmocka_unit_test(test_error_is_sticky),
      cmocka_unit_test(test_huge_bulk_never_allocates),
      cmocka_unit_test(test_resumes_without_rescanning),
      cmocka_unit_test(test_buffer_moves_between_calls),
      cmocka_unit_test(test_bytes_needed),
      cmocka_unit_test(test_out_of_memory),
      cmocka_unit_test(test_replies_resp2),
      cmocka_unit_test(test_replies_resp3),
      cmocka_unit_test(test_line_ends_in_texts_become_spaces),
      cmocka_unit_test(test_redis_error_replies),
      cmocka_unit_test(test_output_limit),
      cmocka_unit_test(test_swap_buffers),
      cmocka_unit_test(test_request_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
