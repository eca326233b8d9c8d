/*
 * dispatch.c - submit, wait with a time limit, and route every completion of
 * a shared ring to the module that owns it (see dispatch.h).
 *
 * CQEs are copied out in small batches and the ring's head is advanced
 * before any handler runs, so a handler may submit (and so may the kernel
 * post new completions) without invalidating what is being handled.
 */
#include "common/dispatch.h"

#include <errno.h>
#include <liburing.h>
#include <stdbool.h>

#include "common/completion.h"

/* CQEs copied out of the ring at a time: one cache-friendly batch. */
#define FL_DISPATCH_BATCH 32u

#define NANOSECONDS_PER_SECOND 1000000000ll

static int submit_and_wait(struct io_uring *ring, unsigned wait_count, int64_t timeout_ns) {
  if (wait_count == 0 || timeout_ns == 0) {
    return io_uring_submit(ring);
  }
  if (timeout_ns < 0) {
    return io_uring_submit_and_wait(ring, wait_count);
  }
  struct __kernel_timespec timeout = {
      .tv_sec = timeout_ns / NANOSECONDS_PER_SECOND,
      .tv_nsec = timeout_ns % NANOSECONDS_PER_SECOND,
  };
  struct io_uring_cqe *cqe = NULL;
  return io_uring_submit_and_wait_timeout(ring, &cqe, wait_count, &timeout, NULL);
}

/* A failed wait is not an error when it only means "nothing came in time"
 * or "interrupted": the caller's loop simply runs again. -EBUSY means the
 * completion queue is full, which reaping right below resolves. */
static bool is_benign_wait_error(int error) {
  return error == -ETIME || error == -EINTR || error == -EAGAIN || error == -EBUSY;
}

typedef struct copied_completion {
  uint64_t user_data;
  int result;
  uint32_t flags;
} copied_completion;

static unsigned copy_batch(struct io_uring *ring, copied_completion *batch) {
  struct io_uring_cqe *cqes[FL_DISPATCH_BATCH];
  unsigned count = io_uring_peek_batch_cqe(ring, cqes, FL_DISPATCH_BATCH);
  for (unsigned i = 0; i < count; i++) {
    batch[i] = (copied_completion){
        .user_data = cqes[i]->user_data,
        .result = cqes[i]->res,
        .flags = cqes[i]->flags,
    };
  }
  io_uring_cq_advance(ring, count);
  return count;
}

static int handle_ready(struct io_uring *ring) {
  unsigned limit = ring->cq.ring_entries;
  unsigned seen = 0;
  int handled = 0;
  while (seen < limit) {
    copied_completion batch[FL_DISPATCH_BATCH];
    unsigned count = copy_batch(ring, batch);
    if (count == 0) {
      break;
    }
    seen += count;
    for (unsigned i = 0; i < count; i++) {
      /* 0: nobody listens; LIBURING_UDATA_TIMEOUT: liburing's own timeout
       * SQE on kernels without IORING_FEAT_EXT_ARG. */
      if (batch[i].user_data == 0 || batch[i].user_data == LIBURING_UDATA_TIMEOUT) {
        continue;
      }
      fl_completion *completion = (fl_completion *)(uintptr_t)batch[i].user_data;
      completion->handle(completion, batch[i].result, batch[i].flags);
      handled++;
    }
  }
  return handled;
}

int fl_dispatch(struct io_uring *ring, unsigned wait_count, int64_t timeout_ns) {
  int rc = submit_and_wait(ring, wait_count, timeout_ns);
  if (rc < 0 && !is_benign_wait_error(rc)) {
    return rc;
  }
  return handle_ready(ring);
}
