/*
 * test_queue.c - the shard's bounded multi-producer queue: order per
 * producer, nothing lost or duplicated under contention, full is refused,
 * and the eventfd wakes the consumer without a write per push.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/queue.h"

#define PRODUCERS 4
#define ITEMS_PER_PRODUCER 200000

static void test_capacity_must_be_a_power_of_two(void **state) {
  (void)state;
  fl_queue queue;
  assert_int_equal(fl_queue_init(&queue, 0), -EINVAL);
  assert_int_equal(fl_queue_init(&queue, 1), -EINVAL);
  assert_int_equal(fl_queue_init(&queue, 12), -EINVAL);
  assert_int_equal(fl_queue_init(&queue, 16), 0);
  fl_queue_destroy(&queue);
}

static void test_full_queue_refuses(void **state) {
  (void)state;
  fl_queue queue;
  assert_int_equal(fl_queue_init(&queue, 4), 0);
  uintptr_t items[5] = {1, 2, 3, 4, 5};
  for (int i = 0; i < 4; i++) {
    assert_true(fl_queue_push(&queue, (void *)items[i]));
  }
  assert_false(fl_queue_push(&queue, (void *)items[4]));
  assert_true((uintptr_t)fl_queue_pop(&queue) == 1);
  assert_true(fl_queue_push(&queue, (void *)items[4])); /* room again */
  for (uintptr_t expected = 2; expected <= 5; expected++) {
    assert_true((uintptr_t)fl_queue_pop(&queue) == expected);
  }
  assert_null(fl_queue_pop(&queue));
  fl_queue_destroy(&queue);
}

/* The shard holds requests only while the queue is short of a quarter of
 * its capacity: the length must count pushes and pops exactly. */
static void test_length_counts_what_waits(void **state) {
  (void)state;
  fl_queue queue;
  assert_int_equal(fl_queue_init(&queue, 8), 0);
  assert_int_equal(fl_queue_capacity(&queue), 8);
  assert_int_equal(fl_queue_length(&queue), 0);
  for (uintptr_t i = 1; i <= 8; i++) {
    assert_true(fl_queue_push(&queue, (void *)i));
    assert_int_equal(fl_queue_length(&queue), i);
  }
  assert_false(fl_queue_push(&queue, (void *)9));
  assert_int_equal(fl_queue_length(&queue), 8);
  for (uintptr_t i = 1; i <= 8; i++) {
    assert_ptr_equal(fl_queue_pop(&queue), (void *)i);
    assert_int_equal(fl_queue_length(&queue), 8 - i);
  }
  fl_queue_destroy(&queue);
}

/* One eventfd write per wake-up cycle, not per push. */
static void test_wakes_once_until_rearmed(void **state) {
  (void)state;
  fl_queue queue;
  assert_int_equal(fl_queue_init(&queue, 64), 0);
  struct pollfd idle = {.fd = fl_queue_event_fd(&queue), .events = POLLIN};
  assert_int_equal(poll(&idle, 1, 0), 0);
  for (uintptr_t i = 1; i <= 10; i++) {
    assert_true(fl_queue_push(&queue, (void *)i));
  }
  uint64_t count = 0;
  assert_int_equal(read(fl_queue_event_fd(&queue), &count, sizeof(count)), sizeof(count));
  assert_int_equal(count, 1);
  fl_queue_rearm(&queue);
  while (fl_queue_pop(&queue) != NULL) {
  }
  assert_true(fl_queue_push(&queue, (void *)11));
  struct pollfd woken = {.fd = fl_queue_event_fd(&queue), .events = POLLIN};
  assert_int_equal(poll(&woken, 1, 0), 1);
  fl_queue_destroy(&queue);
}

typedef struct producer {
  fl_queue *queue;
  uint32_t id;
  uint64_t refused;
} producer;

/* Items encode (producer, sequence) so the consumer can check order. */
static void *produce(void *argument) {
  producer *p = argument;
  for (uint64_t n = 1; n <= ITEMS_PER_PRODUCER; n++) {
    uintptr_t item = ((uintptr_t)p->id << 32) | n;
    while (!fl_queue_push(p->queue, (void *)item)) {
      p->refused++; /* full: the consumer is behind; try again */
      sched_yield();
    }
  }
  return NULL;
}

static void test_many_producers_lose_nothing(void **state) {
  (void)state;
  fl_queue queue;
  assert_int_equal(fl_queue_init(&queue, 1024), 0);
  pthread_t threads[PRODUCERS];
  producer producers[PRODUCERS];
  for (uint32_t i = 0; i < PRODUCERS; i++) {
    producers[i] = (producer){.queue = &queue, .id = i};
    assert_int_equal(pthread_create(&threads[i], NULL, produce, &producers[i]), 0);
  }
  uint64_t next[PRODUCERS];
  for (uint32_t i = 0; i < PRODUCERS; i++) {
    next[i] = 1;
  }
  uint64_t received = 0;
  while (received < (uint64_t)PRODUCERS * ITEMS_PER_PRODUCER) {
    struct pollfd wait = {.fd = fl_queue_event_fd(&queue), .events = POLLIN};
    assert_true(poll(&wait, 1, 10000) == 1); /* a push always wakes the consumer */
    uint64_t count = 0;
    assert_int_equal(read(fl_queue_event_fd(&queue), &count, sizeof(count)), sizeof(count));
    fl_queue_rearm(&queue);
    for (void *item; (item = fl_queue_pop(&queue)) != NULL; received++) {
      uint32_t id = (uint32_t)((uintptr_t)item >> 32);
      uint64_t sequence = (uintptr_t)item & 0xffffffffu;
      assert_true(id < PRODUCERS);
      assert_true(sequence == next[id]); /* per-producer order, no loss, no duplicate */
      next[id]++;
    }
  }
  for (uint32_t i = 0; i < PRODUCERS; i++) {
    assert_int_equal(pthread_join(threads[i], NULL), 0);
  }
  assert_null(fl_queue_pop(&queue));
  fl_queue_destroy(&queue);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_capacity_must_be_a_power_of_two),
      cmocka_unit_test(test_full_queue_refuses),
      cmocka_unit_test(test_length_counts_what_waits),
      cmocka_unit_test(test_wakes_once_until_rearmed),
      cmocka_unit_test(test_many_producers_lose_nothing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
