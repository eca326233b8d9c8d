/*
 * reply_scan.h - where one complete RESP reply ends, found without building
 * it: what a forwarder needs to hand each reply of a pipelined connection,
 * whole and unchanged, to the request that asked for it.
 *
 * Types: the RESP2 ones ("+", "-", ":", "$" with "$-1", "*" with "*-1",
 * nested to any depth) and the single-line, bulk-like and aggregate types
 * of RESP3 ("_", ",", "#", "(", "=", "!", "~", "%", ">"); RESP3 attributes
 * ("|") are refused. Nesting needs no stack: a reply is complete when the
 * count of elements still expected falls to zero (an aggregate of n
 * elements replaces one expected element with n).
 *
 * Scanning resumes where it stopped, so a reply arriving in many pieces
 * costs O(its length). A reply is at most max_reply_bytes long; a longer
 * one, a malformed line or a count no reply of that size could hold is a
 * protocol error (-EPROTO), after which the connection must be closed.
 */
#ifndef FLOTILLA_SERVER_REPLY_SCAN_H
#define FLOTILLA_SERVER_REPLY_SCAN_H

#include <stddef.h>
#include <stdint.h>

/* The default bound of one reply: Redis's largest bulk (512 MiB). */
#define REPLY_SCAN_DEFAULT_MAX_BYTES (512u * 1024u * 1024u)

/* Caller-owned; fields are private. */
typedef struct reply_scanner {
  size_t max_reply_bytes;
  size_t position;   /* bytes of the current reply already scanned (whole elements) */
  size_t line_scan;  /* where the search for the current line's end resumes */
  uint64_t expected; /* elements still expected: 1 before the reply's first byte */
  int error;         /* 0, or -EPROTO once seen */
} reply_scanner;

void reply_scanner_init(reply_scanner *scanner, size_t max_reply_bytes);

/*
 * Scans buffer[0 .. length), which starts at the first byte of the current
 * reply and holds the same bytes as on the last call plus any new ones.
 * Returns 1 with *reply_length set when a reply is complete (the scanner is
 * then ready for the next one, which starts at buffer + *reply_length),
 * 0 when more bytes are needed, -EPROTO on a protocol error (sticky until
 * reply_scanner_init()).
 */
int reply_scan(reply_scanner *scanner, const char *buffer, size_t length, size_t *reply_length);

#endif
