/*
 * fuzz_report.h - how every fuzz target reports a broken property: one line
 * on stderr, then abort() so libFuzzer keeps the input that did it.
 */
#ifndef FLOTILLA_FUZZ_REPORT_H
#define FLOTILLA_FUZZ_REPORT_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

__attribute__((format(printf, 2, 0), noreturn)) static inline void
fuzz_report_and_abort(const char *prefix, const char *format, va_list arguments) {
  fputs(prefix, stderr);
  vfprintf(stderr, format, arguments);
  fputc('\n', stderr);
  abort();
}

#endif
