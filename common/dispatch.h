/*
 * dispatch.h - the loop step of a shard's shared io_uring: submit what the
 * modules prepared, wait a bounded time, and hand every completion to its
 * owner through the fl_completion it points to (common/completion.h).
 *
 * Why a helper: the WAL, the transport and the engine all put SQEs on one
 * ring per shard, and exactly one place must reap it, or completions would
 * reach the wrong module. Modules only prepare SQEs; the ring's owner calls
 * fl_dispatch() once per loop iteration.
 *
 * Threading: a ring belongs to one thread; call this from that thread only.
 */
#ifndef FLOTILLA_COMMON_DISPATCH_H
#define FLOTILLA_COMMON_DISPATCH_H

#include <stdint.h>

struct io_uring;

/*
 * Submits every prepared SQE, then waits until wait_count completions are
 * ready or timeout_ns passed (timeout_ns < 0: no time limit; wait_count 0 or
 * timeout_ns 0: no waiting), then handles the completions that are ready:
 * for each CQE whose user_data is not 0, calls completion->handle(completion,
 * res, flags). A handler may prepare new SQEs; they go out at the next call.
 * Handles at most the completion ring's size per call so that handlers that
 * keep producing completions cannot hold the caller forever.
 *
 * Returns the number of completions handled (user_data 0 not counted), or a
 * negative errno when submitting or waiting failed for a reason other than
 * the timeout or a signal.
 */
int fl_dispatch(struct io_uring *ring, unsigned wait_count, int64_t timeout_ns);

#endif
