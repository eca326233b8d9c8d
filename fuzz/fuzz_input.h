/*
 * fuzz_input.h - reading a fuzzer's bytes as a stream of small decisions.
 *
 * Past the end every read returns zeros, so any prefix of an input is itself
 * a valid input and libFuzzer's mutations (truncation, insertion) keep
 * meaning something. Payload bytes are borrowed from the input, which lives
 * for the whole LLVMFuzzerTestOneInput() call.
 */
#ifndef FLOTILLA_FUZZ_INPUT_H
#define FLOTILLA_FUZZ_INPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fuzz_input {
  const uint8_t *data;
  size_t size;
  size_t position;
} fuzz_input;

static inline bool fuzz_input_done(const fuzz_input *in) {
  return in->position >= in->size;
}

static inline uint8_t fuzz_u8(fuzz_input *in) {
  return in->position < in->size ? in->data[in->position++] : 0;
}

static inline uint16_t fuzz_u16(fuzz_input *in) {
  uint16_t low = fuzz_u8(in);
  return (uint16_t)(low | (uint16_t)fuzz_u8(in) << 8);
}

static inline uint32_t fuzz_u32(fuzz_input *in) {
  uint32_t low = fuzz_u16(in);
  return low | (uint32_t)fuzz_u16(in) << 16;
}

static inline uint64_t fuzz_u64(fuzz_input *in) {
  uint64_t low = fuzz_u32(in);
  return low | (uint64_t)fuzz_u32(in) << 32;
}

/* Up to `want` bytes of the input itself (not copied); *got says how many. */
static inline const uint8_t *fuzz_bytes(fuzz_input *in, size_t want, size_t *got) {
  size_t left = in->size - (in->position < in->size ? in->position : in->size);
  *got = want < left ? want : left;
  const uint8_t *bytes = *got > 0 ? in->data + in->position : NULL;
  in->position += *got;
  return bytes;
}

#endif
