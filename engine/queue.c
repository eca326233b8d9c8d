/*
 * queue.c - bounded multi-producer, single-consumer hand-off (queue.h).
 *
 * Cell sequence protocol, for a ring of N cells and a position p:
 *   sequence == p          the cell is free for the producer of position p
 *   sequence == p + 1      the producer of p has stored its item
 *   after the pop of p:    sequence = p + N, free for the producer of p + N
 * Positions only grow (64 bits never wrap in practice).
 */
#include "engine/queue.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

int fl_queue_init(fl_queue *queue, uint32_t capacity) {
  if (capacity < 2 || (capacity & (capacity - 1)) != 0) {
    return -EINVAL;
  }
  queue->cells = calloc(capacity, sizeof(queue_cell));
  if (queue->cells == NULL) {
    return -ENOMEM;
  }
  queue->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (queue->event_fd < 0) {
    free(queue->cells);
    return -errno;
  }
  for (uint32_t i = 0; i < capacity; i++) {
    atomic_init(&queue->cells[i].sequence, i);
  }
  queue->mask = capacity - 1;
  atomic_init(&queue->enqueue_position, 0);
  queue->dequeue_position = 0;
  atomic_init(&queue->wake_pending, 0);
  return 0;
}

void fl_queue_destroy(fl_queue *queue) {
  if (queue->cells != NULL) {
    close(queue->event_fd);
    free(queue->cells);
    queue->cells = NULL;
  }
}

static void wake(fl_queue *queue) {
  if (atomic_exchange_explicit(&queue->wake_pending, 1, memory_order_acq_rel) != 0) {
    return; /* a wake-up is already on its way */
  }
  uint64_t one = 1;
  /* Cannot fail short of a bad fd; EAGAIN (counter full) still wakes. */
  ssize_t written = write(queue->event_fd, &one, sizeof(one));
  (void)written;
}

bool fl_queue_push(fl_queue *queue, void *item) {
  uint64_t position = atomic_load_explicit(&queue->enqueue_position, memory_order_relaxed);
  for (;;) {
    queue_cell *cell = &queue->cells[position & queue->mask];
    uint64_t sequence = atomic_load_explicit(&cell->sequence, memory_order_acquire);
    int64_t difference = (int64_t)(sequence - position);
    if (difference == 0) {
      if (atomic_compare_exchange_weak_explicit(&queue->enqueue_position, &position, position + 1,
                                                memory_order_relaxed, memory_order_relaxed)) {
        cell->item = item;
        atomic_store_explicit(&cell->sequence, position + 1, memory_order_release);
        wake(queue);
        return true;
      }
    } else if (difference < 0) {
      return false; /* the consumer has not freed this cell: full */
    } else {
      position = atomic_load_explicit(&queue->enqueue_position, memory_order_relaxed);
    }
  }
}

void *fl_queue_pop(fl_queue *queue) {
  uint64_t position = queue->dequeue_position;
  queue_cell *cell = &queue->cells[position & queue->mask];
  uint64_t sequence = atomic_load_explicit(&cell->sequence, memory_order_acquire);
  if (sequence != position + 1) {
    return NULL;
  }
  void *item = cell->item;
  atomic_store_explicit(&cell->sequence, position + queue->mask + 1, memory_order_release);
  queue->dequeue_position = position + 1;
  return item;
}

/* An exchange, not a store: reading the flag the producers' exchanges
 * wrote makes their items (stored before) visible to the drain after it. */
void fl_queue_rearm(fl_queue *queue) {
  (void)atomic_exchange_explicit(&queue->wake_pending, 0, memory_order_acq_rel);
}

uint64_t fl_queue_length(const fl_queue *queue) {
  uint64_t enqueued = atomic_load_explicit(&queue->enqueue_position, memory_order_relaxed);
  return enqueued - queue->dequeue_position;
}

uint32_t fl_queue_capacity(const fl_queue *queue) {
  return (uint32_t)queue->mask + 1;
}

int fl_queue_event_fd(const fl_queue *queue) {
  return queue->event_fd;
}
