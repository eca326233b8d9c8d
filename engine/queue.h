/*
 * queue.h - the bounded hand-off from any thread to a shard.
 *
 * Many producers (client threads calling the API, other shards), one
 * consumer (the shard thread). A fixed ring of cells, each with a sequence
 * number that says whose turn it is (Vyukov's bounded queue): a producer
 * claims a slot with one compare-and-swap, the consumer takes it with plain
 * loads and stores; no lock, no allocation. When full, the push fails and
 * the caller gets FL_E_BUSY: backpressure instead of unbounded memory.
 *
 * Waking: the shard sleeps in io_uring, reading an eventfd. A producer
 * writes the eventfd only when no wake-up is already pending, so a busy
 * shard costs its producers no system call at all.
 *
 * Ownership: items are pointers the queue never dereferences; whoever pops
 * one owns it. The queue owns its cells and its eventfd.
 */
#ifndef FLOTILLA_ENGINE_QUEUE_H
#define FLOTILLA_ENGINE_QUEUE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct queue_cell {
  _Atomic uint64_t sequence;
  void *item;
} queue_cell;

typedef struct fl_queue {
  /* producers and the consumer touch different lines */
  _Alignas(64) _Atomic uint64_t enqueue_position;
  _Alignas(64) uint64_t dequeue_position;
  _Alignas(64) _Atomic uint32_t wake_pending;
  int event_fd;
  uint64_t mask;
  queue_cell *cells;
} fl_queue;

/* capacity: a power of two >= 2. Returns 0 or a negative errno. */
int fl_queue_init(fl_queue *queue, uint32_t capacity);
void fl_queue_destroy(fl_queue *queue);
/* Any thread. false when full (nothing queued). Wakes the consumer. */
bool fl_queue_push(fl_queue *queue, void *item);
/* Consumer thread only. NULL when empty. */
void *fl_queue_pop(fl_queue *queue);
/* Consumer thread only: items pushed and not yet popped (a push racing
 * with the call may or may not be counted). */
uint64_t fl_queue_length(const fl_queue *queue);
uint32_t fl_queue_capacity(const fl_queue *queue);
/* Consumer: call after reading the eventfd, before draining, so a push
 * racing with the drain wakes it again rather than being missed. */
void fl_queue_rearm(fl_queue *queue);
/* The eventfd the consumer waits on (readable when woken). */
int fl_queue_event_fd(const fl_queue *queue);

#endif
