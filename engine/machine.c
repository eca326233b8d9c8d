/*
 * machine.c - the state machine behind each replica: the built-in KV store
 * (engine/kv.h), or the embedder's fl_state_machine.
 *
 * The KV store of a group is created on its first command, so an idle group
 * that never stored anything costs no store at all.
 */
#include "engine/engine_internal.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t machine_wall_clock_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u;
}

int machine_create(shard *s, uint64_t group, void **machine) {
  *machine = NULL;
  if (!s->engine->custom_machine) {
    return 0; /* created lazily */
  }
  const fl_state_machine *m = &s->engine->machine;
  *machine = m->create(m->context, group);
  return *machine != NULL ? 0 : -ENOMEM;
}

void machine_destroy(shard *s, void *machine) {
  if (machine == NULL) {
    return;
  }
  if (s->engine->custom_machine) {
    s->engine->machine.destroy(machine);
  } else {
    kv_destroy(machine);
  }
}

/* A kv_result's value lives only until the store's next change, and a batch
 * applies many commands before their callbacks run: values are copied into
 * the shard's arena, which lasts the loop iteration. */
static void kv_to_result(shard *s, const kv_result *in, fl_result *out) {
  *out = (fl_result){.integer = in->integer, .applied = in->status == KV_STATUS_OK};
  if (in->status == KV_STATUS_ERROR) {
    out->status = FL_E_STATE;
    out->bytes = (const uint8_t *)in->message;
    out->length = in->message != NULL ? (uint32_t)strlen(in->message) : 0;
    out->has_bytes = in->message != NULL;
  } else if (in->has_value) {
    uint8_t *copy = arena_allocate(&s->scratch, in->value_length);
    if (copy == NULL) {
      out->status = FL_E_NOMEM;
      return;
    }
    memcpy(copy, in->value, in->value_length);
    out->bytes = copy;
    out->length = (uint32_t)in->value_length;
    out->has_bytes = true;
  }
}

/* A KV error other than a refused command means this replica cannot follow
 * the log any more (out of memory mid-apply): the shard stops. */
static void apply_kv(shard *s, void **machine, const fl_command *commands, uint32_t count,
                     fl_result *results) {
  if (*machine == NULL && kv_create((kv_store **)machine) != 0) {
    shard_fail(s, -ENOMEM, "creating a KV store");
    return;
  }
  for (uint32_t i = 0; i < count; i++) {
    kv_result result;
    int rc = kv_apply(*machine, commands[i].data, commands[i].length, &result);
    if (rc == KV_E_NOMEM) {
      shard_fail(s, -ENOMEM, "applying a command");
      return;
    }
    kv_to_result(s, &result, &results[i]);
  }
}

void machine_apply(shard *s, void **machine, const fl_command *commands, uint32_t count,
                   fl_result *results) {
  if (s->engine->custom_machine) {
    memset(results, 0, count * sizeof(*results));
    s->engine->machine.apply(*machine, commands, count, results);
    return;
  }
  apply_kv(s, machine, commands, count, results);
}

int machine_get(shard *s, void *machine, const uint8_t *key, uint32_t key_length,
                fl_read_callback callback, void *context) {
  if (s->engine->custom_machine) {
    callback(context, FL_E_INVALID, NULL, 0); /* reads are the KV store's */
    return 0;
  }
  kv_entry entry;
  if (machine == NULL || !kv_get(machine, key, key_length, machine_wall_clock_ms(), &entry)) {
    callback(context, FL_E_NOT_FOUND, NULL, 0);
    return 0;
  }
  callback(context, 0, entry.value, (uint32_t)entry.value_length);
  return 0;
}

void machine_query(shard *s, void *machine, const uint8_t *query, uint32_t length,
                   fl_propose_callback callback, void *context) {
  const fl_state_machine *m = &s->engine->machine;
  /* fl_query refuses the KV store and a machine without query() */
  assert(s->engine->custom_machine && m->query != NULL);
  fl_result result = {0};
  m->query(machine, query, length, &result);
  callback(context, result.status, &result);
}
