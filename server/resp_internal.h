/*
 * resp_internal.h - what the files of the RESP parser share: its states,
 * the argument array and how a protocol error is recorded. Not for users of
 * server/resp.h.
 */
#ifndef FLOTILLA_SERVER_RESP_INTERNAL_H
#define FLOTILLA_SERVER_RESP_INTERNAL_H

#include "server/resp.h"

/*
 * States of the request being parsed (parser->state):
 *
 *   REQUEST --'*'--> COUNT --count>0--> BULK_LENGTH <--> BULK_DATA --last--> REQUEST
 *      |                |--count<=0 (ignored)----------------------------> REQUEST
 *      '--other--> INLINE --line end-------------------------------------> REQUEST
 *
 * Any state may end in a protocol error, which is final (parser->error).
 * Invariants: position <= scan_position in the line states; arguments
 * counted are < arguments_expected until the request completes; every
 * pending argument lies inside [0, position).
 */
enum resp_parser_state {
  RESP_STATE_REQUEST,     /* nothing of the request seen: its first byte picks the kind */
  RESP_STATE_INLINE,      /* searching the '\n' that ends an inline request */
  RESP_STATE_COUNT,       /* searching the '\r' that ends "*<count>" */
  RESP_STATE_BULK_LENGTH, /* searching the '\r' that ends "$<length>" */
  RESP_STATE_BULK_DATA,   /* waiting for <length> bytes and the two after them */
};

/* Redis's protocol error texts, plus one for a limit Redis does not have. */
#define RESP_TEXT_INVALID_MULTIBULK "ERR Protocol error: invalid multibulk length"
#define RESP_TEXT_INVALID_BULK "ERR Protocol error: invalid bulk length"
#define RESP_TEXT_BIG_INLINE "ERR Protocol error: too big inline request"
#define RESP_TEXT_BIG_MULTIBULK "ERR Protocol error: too big mbulk count string"
#define RESP_TEXT_BIG_BULK "ERR Protocol error: too big bulk count string"
#define RESP_TEXT_UNBALANCED "ERR Protocol error: unbalanced quotes in request"
#define RESP_TEXT_INLINE_ARGUMENTS "ERR Protocol error: too many arguments in inline request"

/* Records a protocol error with `text` and returns -EPROTO. */
int resp_protocol_error(resp_parser *parser, const char *text);

/* Appends an argument at [offset, offset + length) of the request. Returns
 * 0 or -ENOMEM. The caller has checked the count against the limits. */
int resp_append_argument(resp_parser *parser, size_t offset, size_t length);

/* Splits the inline line [start, end) of `buffer` into arguments, unescaping
 * quoted words in place. Returns 0, -EPROTO (unbalanced quotes, too many
 * words) or -ENOMEM. */
int resp_split_inline(resp_parser *parser, char *buffer, size_t start, size_t end);

/* "-<parts...>\r\n" written with one capacity check; line ends inside the
 * parts become spaces. Returns 0 or the writer's sticky error. */
int resp_write_error_parts(resp_writer *writer, const resp_argument *parts, size_t count);

#endif
