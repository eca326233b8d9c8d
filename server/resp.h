/*
 * resp.h - the Redis protocol (RESP) of flotillad: an incremental request
 * parser and a reply writer, so that redis-cli, redis-benchmark and Redis
 * client libraries talk to flotillad unchanged.
 *
 * Requests (RESP2, what every client sends):
 *   multibulk  "*<count>\r\n" then <count> times "$<length>\r\n<bytes>\r\n"
 *   inline     one line of words ending in "\n" (or "\r\n"), split the way
 *              Redis splits them: double quotes with \n \r \t \b \a \xHH
 *              escapes, single quotes with \' only
 * The parser follows Redis 7.0 byte for byte where clients can see it: the
 * same requests are accepted, the same ones ignored ("*0", "*-1", empty
 * lines), and a bad one gets the same error text. Redis looks for line ends
 * with strchr(), so a NUL byte before the end of an inline line or of a
 * "*"/"$" line hides that end: such a request waits for more bytes until it
 * is too big, here as there. Like Redis, the two bytes after a bulk and the
 * byte after a header's '\r' are skipped without being looked at.
 *
 * Limits that differ from Redis, with the reason:
 *   - a bulk is at most max_bulk_bytes (16 MiB unless configured; Redis:
 *     512 MiB): a value travels whole in one Raft entry, one WAL record
 *     and one transport frame, each held in memory at once on every
 *     replica, so one request must not cost hundreds of MiB there;
 *   - a request has at most max_arguments arguments (1 Mi, as Redis before
 *     7.0; Redis 7 allows INT_MAX): the argument array grows only as
 *     arguments arrive, 16 bytes each, so a client can make it cost at most
 *     16 MiB, and only while sending at least 6 bytes per argument;
 *   - a line the parser must search for its end (inline request, "*" and
 *     "$" headers) is at most max_inline_bytes before its terminator (64 KiB
 *     as Redis). Redis decides from what one read() brought in; here the
 *     rule depends on the bytes alone, so a request gives the same result
 *     however it is split into reads.
 * Exceeding any of them is a protocol error, answered with Redis's text for
 * the case ("invalid multibulk length", "invalid bulk length", "too big
 * inline request", ...).
 *
 * Replies are written into a resp_writer, RESP2 or RESP3 per client (HELLO).
 *
 * Errors are negative errno values: -EPROTO (protocol error; the reply text
 * is resp_parser_error_text()), -ENOMEM, -ENOBUFS (output limit), -EINVAL.
 */
#ifndef FLOTILLA_SERVER_RESP_H
#define FLOTILLA_SERVER_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/limits.h"

/* Default arguments per request: Redis's bound before 7.0. */
#define RESP_DEFAULT_MAX_ARGUMENTS (1024u * 1024u)
/* Default bytes of one bulk argument (see above for why below Redis's). */
#define RESP_DEFAULT_MAX_BULK_BYTES (16u * 1024u * 1024u)
/* Default bytes of a line searched for its end: Redis's PROTO_INLINE_MAX_SIZE. */
#define RESP_DEFAULT_MAX_INLINE_BYTES (64u * 1024u)

/* Configured limits may not exceed these: Redis's own ceilings (INT_MAX
 * arguments, 512 MiB proto-max-bulk-len), so nothing Redis refuses is
 * accepted, and offsets plus lengths never overflow a size_t. */
#define RESP_MAX_ARGUMENTS_CEILING 0x7fffffffu
#define RESP_MAX_BULK_BYTES_CEILING (512u * 1024u * 1024u)
#define RESP_MAX_INLINE_BYTES_CEILING (16u * 1024u * 1024u)
/* Smallest line bound: every header of an acceptable request
 * ("*2147483647", "$536870912") fits in a line of this many bytes. */
#define RESP_MIN_INLINE_BYTES 16u

/* Argument slots inside the parser itself: most commands (GET, SET with
 * options, small MSET) never touch the heap. */
#define RESP_EMBEDDED_ARGUMENTS 16
/* A heap argument array up to this many slots (16 KiB) is kept for the
 * next request; a larger one is freed once its request is done, so one huge
 * MSET does not pin memory for the life of the connection. */
#define RESP_RETAINED_ARGUMENTS 1024
/* Longest protocol error text, with room to spare. */
#define RESP_ERROR_TEXT_BYTES 64

FL_STATIC_ASSERT(RESP_DEFAULT_MAX_ARGUMENTS <= RESP_MAX_ARGUMENTS_CEILING, "default arguments");
FL_STATIC_ASSERT(RESP_DEFAULT_MAX_BULK_BYTES <= RESP_MAX_BULK_BYTES_CEILING, "default bulk bytes");
FL_STATIC_ASSERT(RESP_DEFAULT_MAX_INLINE_BYTES <= RESP_MAX_INLINE_BYTES_CEILING, "default inline");
FL_STATIC_ASSERT(RESP_DEFAULT_MAX_INLINE_BYTES / 2 + 1 <= RESP_DEFAULT_MAX_ARGUMENTS,
                 "with the defaults an inline line never holds too many words, as in Redis");
FL_STATIC_ASSERT(RESP_EMBEDDED_ARGUMENTS <= RESP_RETAINED_ARGUMENTS, "retained covers embedded");

/* Common error replies (full text, code included), as Redis 7 words them. */
#define RESP_ERROR_SYNTAX "ERR syntax error"
#define RESP_ERROR_NOT_INTEGER "ERR value is not an integer or out of range"
#define RESP_ERROR_NOT_FLOAT "ERR value is not a valid float"
#define RESP_ERROR_OVERFLOW "ERR increment or decrement would overflow"
#define RESP_ERROR_WRONG_TYPE "WRONGTYPE Operation against a key holding the wrong kind of value"
#define RESP_ERROR_NO_PROTOCOL "NOPROTO unsupported protocol version"

typedef struct resp_limits {
  uint32_t max_arguments;    /* per request, 1 .. RESP_MAX_ARGUMENTS_CEILING */
  uint32_t max_inline_bytes; /* per searched line, RESP_MIN_INLINE_BYTES .. _CEILING */
  uint64_t max_bulk_bytes;   /* per bulk argument, 0 .. RESP_MAX_BULK_BYTES_CEILING */
} resp_limits;

/* The defaults above. */
resp_limits resp_limits_default(void);

/* One argument of a parsed request: bytes inside the caller's buffer. */
typedef struct resp_argument {
  const char *data;
  size_t length;
} resp_argument;

/* A parsed request. `arguments` points into the parser; each argument's
 * data into the caller's buffer. Valid until the next resp_parse() or
 * resp_parser_destroy() and while the caller leaves those bytes in place. */
typedef struct resp_command {
  const resp_argument *arguments;
  uint32_t count; /* >= 1: empty requests are skipped, never returned */
} resp_command;

/* Private: an argument of an unfinished request is kept as an offset, since
 * the caller may move its buffer (grow, compact) between two calls. */
typedef union resp_argument_slot {
  resp_argument argument;
  struct {
    size_t offset;
    size_t length;
  } pending;
} resp_argument_slot;

/* The parser of one connection. Caller-owned (embed it in the client); all
 * fields are private. May be moved with memcpy between calls, once done
 * with the last command returned (its argument array may be inside). */
typedef struct resp_parser {
  resp_limits limits;
  int error;                          /* 0, or the sticky error returned ever after */
  uint8_t state;                      /* what the next bytes of the request are */
  bool line_has_nul;                  /* the current line's end is hidden by a NUL */
  uint32_t argument_count;            /* arguments of the request parsed so far */
  uint32_t arguments_expected;        /* multibulk count being read */
  uint32_t argument_capacity;         /* slots available (embedded or heap) */
  size_t position;                    /* bytes of the request consumed by the parser */
  size_t scan_position;               /* where the search for the line end resumes */
  size_t bulk_length;                 /* length of the bulk being read */
  resp_argument_slot *heap_arguments; /* NULL: embedded_arguments in use */
  resp_argument_slot embedded_arguments[RESP_EMBEDDED_ARGUMENTS];
  char error_text[RESP_ERROR_TEXT_BYTES];
} resp_parser;

/*
 * Prepares a parser with `limits` (copied; NULL: the defaults). Returns 0,
 * or -EINVAL if a limit is outside its range. Allocates nothing; pair with
 * resp_parser_destroy() all the same.
 */
int resp_parser_init(resp_parser *parser, const resp_limits *limits);

/* Frees the parser's argument array if it grew onto the heap. */
void resp_parser_destroy(resp_parser *parser);

/*
 * Parses the next request. `buffer` holds the connection's unconsumed input:
 * on every call it must start at the first byte not yet reported as
 * consumed and hold the same bytes as the last time, followed by any new
 * ones (the buffer itself may move). Parsing resumes where the last call
 * stopped, so a request arriving one byte at a time costs O(its length).
 *
 * Returns:
 *   1        a request is in *command; *consumed covers it and any empty
 *            requests before it: drop those bytes before the next call,
 *            but only once done with the command, which points into them;
 *   0        more bytes are needed; *consumed covers empty requests that
 *            were skipped (drop them), the rest must be kept;
 *   -EPROTO  protocol error: reply with "-" resp_parser_error_text() "\r\n"
 *            after the replies to the requests before it, then close the
 *            connection as Redis does; the parser returns -EPROTO from now on;
 *   -ENOMEM  the argument array could not grow: close the connection.
 * The buffer must be writable: quoted inline words are unescaped in place,
 * inside the bytes of their own request.
 */
int resp_parse(resp_parser *parser, char *buffer, size_t length, size_t *consumed,
               resp_command *command);

/* The error reply of the last -EPROTO, e.g. "ERR Protocol error: invalid
 * bulk length" (no "-", no "\r\n"); "" before any error. Owned by the parser. */
const char *resp_parser_error_text(const resp_parser *parser);

/* A lower bound on the bytes of the unfinished request (counted from its
 * start) that the buffer must hold before resp_parse() can progress. While
 * a bulk is read it is exact: the caller can size its buffer once for a
 * large value instead of growing it read by read. */
size_t resp_parser_bytes_needed(const resp_parser *parser);

/* Checks the parser's internal consistency (tests and fuzzing), in every
 * build: true, or false with *broken naming the condition that failed. */
bool resp_parser_check_invariants(const resp_parser *parser, const char **broken);

/*
 * The reply buffer of one connection: replies are appended, the caller
 * sends data[0 .. length) and drops what was sent. It grows by doubling up
 * to max_bytes; a write that would pass max_bytes (the client's output
 * limit) or cannot allocate writes nothing and fails with -ENOBUFS or
 * -ENOMEM. The error is sticky: every later write fails the same way,
 * since the buffer may end in a partial reply: close the connection.
 * Fields may be read; change them only through the functions below.
 */
typedef struct resp_writer {
  char *data;       /* owned; NULL until the first write */
  size_t length;    /* bytes of replies not yet sent */
  size_t capacity;  /* bytes allocated */
  size_t max_bytes; /* the output limit */
  int error;        /* 0, -ENOBUFS or -ENOMEM */
  uint8_t protocol; /* 2 or 3 */
} resp_writer;

/* An empty writer speaking RESP2, holding at most max_bytes unsent bytes.
 * Allocates nothing until the first write. */
void resp_writer_init(resp_writer *writer, size_t max_bytes);
/* Frees the buffer. */
void resp_writer_destroy(resp_writer *writer);
/* Chooses RESP2 or RESP3 for the replies that follow (HELLO). Returns 0,
 * or -EINVAL for another version (the caller answers RESP_ERROR_NO_PROTOCOL). */
int resp_writer_set_protocol(resp_writer *writer, int version);
/* Drops the first `bytes` bytes (they were sent); keeps the rest in order. */
void resp_writer_discard(resp_writer *writer, size_t bytes);
/* Exchanges the buffers (data, length, capacity) of two writers; each
 * keeps its limit, protocol and error. No byte is copied. */
void resp_writer_swap_buffers(resp_writer *a, resp_writer *b);

/*
 * Writers of single replies. Each returns 0, or the writer's sticky error.
 * Texts of simple strings and errors cannot carry a line end: '\r' and '\n'
 * in them are written as spaces, as Redis does.
 */
/* "+<text>\r\n" */
int resp_write_simple_string(resp_writer *writer, const char *text, size_t length);
/* "+OK\r\n" */
int resp_write_ok(resp_writer *writer);
/* "-<text>\r\n"; `text` (NUL-terminated) starts with the code: "ERR ...". */
int resp_write_error(resp_writer *writer, const char *text);
/* The same with printf formatting of the text. */
__attribute__((format(printf, 2, 3))) int resp_write_error_format(resp_writer *writer,
                                                                  const char *format, ...);
/* ":<value>\r\n" */
int resp_write_integer(resp_writer *writer, int64_t value);
/* "$<length>\r\n<bytes>\r\n" */
int resp_write_bulk(resp_writer *writer, const void *data, size_t length);
/* "$<length>\r\n" alone: the caller then writes the bytes with
 * resp_write_raw() and ends with resp_write_raw(writer, "\r\n", 2). */
int resp_write_bulk_header(resp_writer *writer, size_t length);
/* Bytes already encoded as RESP. */
int resp_write_raw(resp_writer *writer, const void *data, size_t length);
/* The missing value: "$-1\r\n" in RESP2, "_\r\n" in RESP3. */
int resp_write_null(resp_writer *writer);
/* The missing array: "*-1\r\n" in RESP2, "_\r\n" in RESP3. */
int resp_write_null_array(resp_writer *writer);
/* "*<count>\r\n"; `count` replies follow. */
int resp_write_array_header(resp_writer *writer, size_t count);
/* "%<pairs>\r\n" in RESP3, "*<2 * pairs>\r\n" in RESP2; key, value, ... follow. */
int resp_write_map_header(resp_writer *writer, size_t pairs);
/* "~<count>\r\n" in RESP3, "*<count>\r\n" in RESP2. */
int resp_write_set_header(resp_writer *writer, size_t count);
/* ",<value>\r\n" in RESP3, a bulk string in RESP2; written like Redis 7.0
 * ("%.17g", "inf", "-inf", "nan"). */
int resp_write_double(resp_writer *writer, double value);
/* "#t\r\n" / "#f\r\n" in RESP3, ":1\r\n" / ":0\r\n" in RESP2. */
int resp_write_boolean(resp_writer *writer, bool value);
/* "=<length + 4>\r\n<format>:<bytes>\r\n" in RESP3 (`format` is three
 * characters, "txt" or "mkd"), a plain bulk string in RESP2 (INFO). */
int resp_write_verbatim(resp_writer *writer, const char *format, const void *data, size_t length);

/*
 * Redis's error replies that quote the request, built the way Redis 7.0
 * builds them (quoted words cut at 128 bytes and at a NUL byte).
 */
/* "ERR unknown command '<name>', with args beginning with: '<arg>' ... " */
int resp_write_unknown_command_error(resp_writer *writer, const resp_argument *arguments,
                                     uint32_t count);
/* "ERR unknown subcommand '<sub>'. Try <COMMAND> HELP." */
int resp_write_unknown_subcommand_error(resp_writer *writer, const resp_argument *command,
                                        const resp_argument *subcommand);
/* "ERR wrong number of arguments for '<name>' command"; `name` is the
 * command's canonical lower-case name ("get", "client|kill"). */
int resp_write_arity_error(resp_writer *writer, const char *name);
/* "MOVED <slot> <host>:<port>": the key's slot is served at host:port. */
int resp_write_moved_error(resp_writer *writer, uint32_t slot, const char *host, uint16_t port);

#endif
