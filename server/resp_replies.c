/*
 * resp_replies.c - Redis's error replies that quote the request back
 * (unknown command, unknown subcommand, wrong arity) and MOVED, worded and
 * cut exactly as Redis 7.0 does, since client libraries and people match on
 * these texts.
 *
 * Redis quotes arguments with printf("%.128s") on NUL-terminated strings:
 * a quoted argument ends at 128 bytes or at its first NUL, whichever comes
 * first. The unknown-command reply quotes the arguments after the name
 * until 128 bytes of quotes have been written, the last one cut to fit.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "server/resp.h"
#include "server/resp_internal.h"

/* Redis quotes at most this much of one argument, and of all arguments. */
#define QUOTE_BYTES 128

/* `argument` as "%.*s" with precision `limit` prints it. */
static resp_argument quoted(const resp_argument *argument, size_t limit) {
  size_t length = argument->length < limit ? argument->length : limit;
  const char *nul = memchr(argument->data, '\0', length);
  if (nul != NULL) {
    length = (size_t)(nul - argument->data);
  }
  return (resp_argument){.data = argument->data, .length = length};
}

static resp_argument text_part(const char *text) {
  return (resp_argument){.data = text, .length = strlen(text)};
}

/* "'<arg>' '<arg>' " for arguments[1 ..], at most QUOTE_BYTES plus the last
 * quote's three bytes; returns its length. */
static size_t quote_arguments(char *out, const resp_argument *arguments, uint32_t count) {
  size_t length = 0;
  for (uint32_t index = 1; index < count && length < QUOTE_BYTES; index++) {
    resp_argument part = quoted(&arguments[index], QUOTE_BYTES - length);
    out[length++] = '\'';
    memcpy(out + length, part.data, part.length);
    length += part.length;
    out[length++] = '\'';
    out[length++] = ' ';
  }
  return length;
}

int resp_write_unknown_command_error(resp_writer *writer, const resp_argument *arguments,
                                     uint32_t count) {
  char quotes[QUOTE_BYTES + 4];
  size_t quotes_length = quote_arguments(quotes, arguments, count);
  resp_argument name = {.data = "", .length = 0};
  if (count > 0) {
    name = quoted(&arguments[0], QUOTE_BYTES);
  }
  const resp_argument parts[] = {
      text_part("ERR unknown command '"),
      name,
      text_part("', with args beginning with: "),
      {.data = quotes, .length = quotes_length},
  };
  return resp_write_error_parts(writer, parts, sizeof(parts) / sizeof(parts[0]));
}

int resp_write_unknown_subcommand_error(resp_writer *writer, const resp_argument *command,
                                        const resp_argument *subcommand) {
  /* Redis upper-cases the whole command name (as typed) in the hint. */
  char upper[QUOTE_BYTES];
  resp_argument name = quoted(command, sizeof(upper));
  for (size_t index = 0; index < name.length; index++) {
    upper[index] = (char)toupper((unsigned char)name.data[index]);
  }
  const resp_argument parts[] = {
      text_part("ERR unknown subcommand '"),
      quoted(subcommand, QUOTE_BYTES),
      text_part("'. Try "),
      {.data = upper, .length = name.length},
      text_part(" HELP."),
  };
  return resp_write_error_parts(writer, parts, sizeof(parts) / sizeof(parts[0]));
}

int resp_write_arity_error(resp_writer *writer, const char *name) {
  const resp_argument parts[] = {
      text_part("ERR wrong number of arguments for '"),
      text_part(name),
      text_part("' command"),
  };
  return resp_write_error_parts(writer, parts, sizeof(parts) / sizeof(parts[0]));
}

int resp_write_moved_error(resp_writer *writer, uint32_t slot, const char *host, uint16_t port) {
  char slot_text[16];
  char port_text[8];
  int slot_length = snprintf(slot_text, sizeof(slot_text), "%u", (unsigned)slot);
  int port_length = snprintf(port_text, sizeof(port_text), "%u", (unsigned)port);
  const resp_argument parts[] = {
      text_part("MOVED "), {.data = slot_text, .length = (size_t)slot_length},
      text_part(" "),      text_part(host),
      text_part(":"),      {.data = port_text, .length = (size_t)port_length},
  };
  return resp_write_error_parts(writer, parts, sizeof(parts) / sizeof(parts[0]));
}
