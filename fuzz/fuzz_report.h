/*
 * fuzz_report.h - how every fuzz target reports a broken property: one line
 * on stderr, then abort() so libFuzzer keeps the input that did it.
 */
#ifndef FLOTILLA_FUZZ_REPORT_H
#define FLOTILLA_FUZZ_REPORT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

/* FLOTILLA_FUZZ_TRACE=1 makes a target narrate what it does with an input
 * (replaying a crash); read once. */
static inline bool tracing(void) {
  static int enabled = -1;
  if (enabled < 0) {
    const char *value = getenv("FLOTILLA_FUZZ_TRACE");
    enabled = value != NULL && value[0] == '1';
  }
  return enabled != 0;
}

__attribute__((format(printf, 1, 2), unused)) static inline void trace(const char *format, ...) {
  if (!tracing()) {
    return;
  }
  va_list args;
  va_start(args, format);
  vfprintf(stderr, format, args);
  va_end(args);
}

__attribute__((format(printf, 2, 0), noreturn)) static inline void
fuzz_report_and_abort(const char *prefix, const char *format, va_list arguments) {
  fputs(prefix, stderr);
  vfprintf(stderr, format, arguments);
  fputc('\n', stderr);
  abort();
}

#endif
