/*
 * completion.h - how one io_uring is shared by the modules of a shard.
 *
 * Every SQE a module submits on a shared ring carries, as user_data, a
 * pointer to an fl_completion embedded in that module's own state. The
 * ring's owner reaps each CQE and calls completion->handle(completion,
 * result, flags); user_data 0 marks SQEs nobody needs to hear about. The
 * module recovers its struct with container_of-style pointer arithmetic.
 * A completion must stay alive until its last CQE was handled (multishot
 * operations produce several; IORING_CQE_F_MORE says more will come).
 */
#ifndef FLOTILLA_COMMON_COMPLETION_H
#define FLOTILLA_COMMON_COMPLETION_H

#include <stddef.h>
#include <stdint.h>

typedef struct fl_completion fl_completion;
typedef void (*fl_completion_fn)(fl_completion *completion, int result, uint32_t flags);

struct fl_completion {
  fl_completion_fn handle;
};

#define FL_CONTAINER_OF(pointer, type, member)                                                     \
  ((type *)(void *)((char *)(pointer)-offsetof(type, member)))

#endif
