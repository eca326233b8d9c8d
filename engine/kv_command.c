/*
 * kv_command.c - the commands a Raft entry carries: their encoding (format
 * in kv.h), their validation and their Redis semantics when applied.
 *
 * Apply reads a command twice when it must: a first pass validates every
 * field and length, and only a command that decoded whole is applied, so a
 * malformed one never changes anything. Decoding trusts nothing: each
 * length is checked against its bound and against the bytes left before it
 * is used, varints must be canonical, and trailing bytes are refused.
 *
 * Determinism: the outcome is a function of the store and the command
 * bytes. The only clock is the proposer's now_ms inside the command.
 */
#include <stdlib.h>

#include "engine/kv_internal.h"

#define KV_SET_KNOWN_FLAGS (KV_SET_NX | KV_SET_XX | KV_SET_GET | KV_SET_KEEPTTL)
/* The SET flags whose outcome depends on the entry a SET replaces. */
#define KV_SET_READS_OLD (KV_SET_NX | KV_SET_XX | KV_SET_GET | KV_SET_KEEPTTL)
/* "-9223372036854775808" */
#define INT64_TEXT_MAX_BYTES 20u

/* ---- Writing -------------------------------------------------------------- */

/* Writes into buffer when it is not NULL; counts bytes either way, so the
 * same code measures a command and then writes it. */
typedef struct writer {
  uint8_t *buffer;
  size_t length;
} writer;

static void put_u8(writer *w, uint8_t value) {
  if (w->buffer != NULL) {
    w->buffer[w->length] = value;
  }
  w->length++;
}

static void put_varint(writer *w, uint64_t value) {
  do {
    uint8_t byte = value & 0x7f;
    value >>= 7;
    put_u8(w, value != 0 ? (uint8_t)(byte | 0x80) : byte);
  } while (value != 0);
}

static void put_bytes(writer *w, const uint8_t *bytes, size_t length) {
  put_varint(w, length);
  if (w->buffer != NULL && length > 0) {
    memcpy(w->buffer + w->length, bytes, length);
  }
  w->length += length;
}

static uint64_t zigzag_encode(int64_t value) {
  return ((uint64_t)value << 1) ^ (uint64_t)(value >> 63);
}

static int64_t zigzag_decode(uint64_t value) {
  return (int64_t)((value >> 1) ^ (~(value & 1) + 1));
}

/* ---- Reading -------------------------------------------------------------- */

typedef struct reader {
  const uint8_t *at;
  const uint8_t *end;
  bool failed;
} reader;

static uint8_t get_u8(reader *r) {
  if (r->failed || r->at == r->end) {
    r->failed = true;
    return 0;
  }
  return *r->at++;
}

/* Unsigned LEB128, shortest form only, so each value has one encoding. */
static uint64_t get_varint(reader *r) {
  uint64_t value = 0;
  for (unsigned i = 0; i < KV_VARINT_MAX_BYTES; i++) {
    uint8_t byte = get_u8(r);
    if (r->failed) {
      return 0;
    }
    if (i == KV_VARINT_MAX_BYTES - 1 && byte > 1) {
      break; /* beyond 64 bits */
    }
    value |= (uint64_t)(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) {
      if (byte == 0 && i > 0) {
        break; /* a longer form of a shorter encoding */
      }
      return value;
    }
  }
  r->failed = true;
  return 0;
}

/* A length-prefixed string of at most max_length bytes. */
static const uint8_t *get_bytes(reader *r, size_t max_length, size_t *length) {
  uint64_t declared = get_varint(r);
  if (r->failed || declared > max_length || declared > (uint64_t)(r->end - r->at)) {
    r->failed = true;
    *length = 0;
    return NULL;
  }
  const uint8_t *bytes = r->at;
  r->at += declared;
  *length = (size_t)declared;
  return bytes;
}

static bool reader_done(const reader *r) {
  return !r->failed && r->at == r->end;
}

/* ---- Encoders ------------------------------------------------------------- */

/* Measures, checks capacity, then writes: a short buffer is never touched. */
#define ENCODE(buffer, capacity, length, write_fields)                                             \
  do {                                                                                             \
    writer w = {NULL, 0};                                                                          \
    write_fields;                                                                                  \
    *(length) = w.length;                                                                          \
    if (w.length > (capacity)) {                                                                   \
      return KV_E_NO_SPACE;                                                                        \
    }                                                                                              \
    w.buffer = (buffer);                                                                           \
    w.length = 0;                                                                                  \
    write_fields;                                                                                  \
    return 0;                                                                                      \
  } while (0)

static void write_set(writer *w, const kv_set_command *command) {
  put_u8(w, KV_COMMAND_SET);
  put_u8(w, (uint8_t)command->flags);
  put_varint(w, command->now_ms);
  put_varint(w, command->expire_at_ms);
  put_bytes(w, command->key, command->key_length);
  put_bytes(w, command->value, command->value_length);
}

static bool set_flags_valid(uint32_t flags, uint64_t expire_at_ms) {
  if ((flags & ~(uint32_t)KV_SET_KNOWN_FLAGS) != 0) {
    return false;
  }
  if ((flags & KV_SET_NX) && (flags & KV_SET_XX)) {
    return false;
  }
  return !((flags & KV_SET_KEEPTTL) && expire_at_ms != 0);
}

int kv_command_encode_set(const kv_set_command *command, uint8_t *buffer, size_t capacity,
                          size_t *length) {
  if (command->key_length > KV_MAX_KEY_BYTES || command->value_length > KV_MAX_VALUE_BYTES ||
      !set_flags_valid(command->flags, command->expire_at_ms)) {
    return KV_E_INVALID;
  }
  ENCODE(buffer, capacity, length, write_set(&w, command));
}

static void write_del(writer *w, uint64_t now_ms, const kv_bytes *keys, size_t key_count) {
  put_u8(w, KV_COMMAND_DEL);
  put_varint(w, now_ms);
  put_varint(w, key_count);
  for (size_t i = 0; i < key_count; i++) {
    put_bytes(w, keys[i].data, keys[i].length);
  }
}

int kv_command_encode_del(uint64_t now_ms, const kv_bytes *keys, size_t key_count, uint8_t *buffer,
                          size_t capacity, size_t *length) {
  if (key_count == 0 || key_count > KV_MAX_COMMAND_KEYS) {
    return KV_E_INVALID;
  }
  for (size_t i = 0; i < key_count; i++) {
    if (keys[i].length > KV_MAX_KEY_BYTES) {
      return KV_E_INVALID;
    }
  }
  ENCODE(buffer, capacity, length, write_del(&w, now_ms, keys, key_count));
}

static void write_incrby(writer *w, uint64_t now_ms, const uint8_t *key, size_t key_length,
                         int64_t delta) {
  put_u8(w, KV_COMMAND_INCRBY);
  put_varint(w, now_ms);
  put_varint(w, zigzag_encode(delta));
  put_bytes(w, key, key_length);
}

int kv_command_encode_incrby(uint64_t now_ms, const uint8_t *key, size_t key_length, int64_t delta,
                             uint8_t *buffer, size_t capacity, size_t *length) {
  if (key_length > KV_MAX_KEY_BYTES) {
    return KV_E_INVALID;
  }
  ENCODE(buffer, capacity, length, write_incrby(&w, now_ms, key, key_length, delta));
}

static void write_append(writer *w, uint64_t now_ms, const uint8_t *key, size_t key_length,
                         const uint8_t *value, size_t value_length) {
  put_u8(w, KV_COMMAND_APPEND);
  put_varint(w, now_ms);
  put_bytes(w, key, key_length);
  put_bytes(w, value, value_length);
}

int kv_command_encode_append(uint64_t now_ms, const uint8_t *key, size_t key_length,
                             const uint8_t *value, size_t value_length, uint8_t *buffer,
                             size_t capacity, size_t *length) {
  if (key_length > KV_MAX_KEY_BYTES || value_length > KV_MAX_VALUE_BYTES) {
    return KV_E_INVALID;
  }
  ENCODE(buffer, capacity, length, write_append(&w, now_ms, key, key_length, value, value_length));
}

static void write_expire_sweep(writer *w, uint64_t now_ms, uint32_t max_keys) {
  put_u8(w, KV_COMMAND_EXPIRE_SWEEP);
  put_varint(w, now_ms);
  put_varint(w, max_keys);
}

int kv_command_encode_expire_sweep(uint64_t now_ms, uint32_t max_keys, uint8_t *buffer,
                                   size_t capacity, size_t *length) {
  if (max_keys == 0 || max_keys > KV_MAX_SWEEP_KEYS) {
    return KV_E_INVALID;
  }
  ENCODE(buffer, capacity, length, write_expire_sweep(&w, now_ms, max_keys));
}

static void write_mset(writer *w, uint64_t now_ms, const kv_bytes *keys, const kv_bytes *values,
                       size_t count) {
  put_u8(w, KV_COMMAND_MSET);
  put_varint(w, now_ms);
  put_varint(w, count);
  for (size_t i = 0; i < count; i++) {
    put_bytes(w, keys[i].data, keys[i].length);
    put_bytes(w, values[i].data, values[i].length);
  }
}

int kv_command_encode_mset(uint64_t now_ms, const kv_bytes *keys, const kv_bytes *values,
                           size_t count, uint8_t *buffer, size_t capacity, size_t *length) {
  if (count == 0 || count > KV_MAX_COMMAND_KEYS) {
    return KV_E_INVALID;
  }
  for (size_t i = 0; i < count; i++) {
    if (keys[i].length > KV_MAX_KEY_BYTES || values[i].length > KV_MAX_VALUE_BYTES) {
      return KV_E_INVALID;
    }
  }
  ENCODE(buffer, capacity, length, write_mset(&w, now_ms, keys, values, count));
}

/* ---- Decoding ------------------------------------------------------------- */

typedef struct set_fields {
  uint8_t flags;
  uint64_t now_ms;
  uint64_t expire_at_ms;
  const uint8_t *key;
  size_t key_length;
  const uint8_t *value;
  size_t value_length;
} set_fields;

static bool decode_set(reader *r, set_fields *set) {
  set->flags = get_u8(r);
  set->now_ms = get_varint(r);
  set->expire_at_ms = get_varint(r);
  set->key = get_bytes(r, KV_MAX_KEY_BYTES, &set->key_length);
  set->value = get_bytes(r, KV_MAX_VALUE_BYTES, &set->value_length);
  return reader_done(r) && set_flags_valid(set->flags, set->expire_at_ms);
}

/* Reads the keys of a DEL after its count; false unless exactly `count`
 * keys end the command. */
static bool decode_del_keys(reader *r, uint64_t count) {
  for (uint64_t i = 0; i < count && !r->failed; i++) {
    size_t length;
    (void)get_bytes(r, KV_MAX_KEY_BYTES, &length);
  }
  return reader_done(r);
}

/* Reads the pairs of an MSET after its count; false unless exactly
 * `count` pairs end the command. */
static bool decode_mset_pairs(reader *r, uint64_t count) {
  for (uint64_t i = 0; i < count && !r->failed; i++) {
    size_t length;
    (void)get_bytes(r, KV_MAX_KEY_BYTES, &length);
    (void)get_bytes(r, KV_MAX_VALUE_BYTES, &length);
  }
  return reader_done(r);
}

/* ---- Results -------------------------------------------------------------- */

static int fail(kv_result *result, int error) {
  result->status = KV_STATUS_ERROR;
  result->error = error;
  result->has_value = false;
  result->value = NULL;
  result->value_length = 0;
  result->message = kv_strerror(error);
  return error;
}

/* Hands out item's value until the next change: the store keeps a
 * reference, so replacing or removing the entry does not free it. */
static void return_value(kv_store *kv, kv_result *result, kv_item *item) {
  assert(kv->retained == NULL);
  kv_item_retain(item);
  kv->retained = item;
  result->has_value = true;
  result->value = kv_item_value(item);
  result->value_length = item->value_length;
}

/* A new entry, or the replacement of any stored one, without a result. */
static int store_new(kv_store *kv, const uint8_t *key, size_t key_length, const uint8_t *value,
                     size_t value_length, uint64_t expire_at_ms) {
  kv_item *item =
      kv_item_create(&kv->heap, key, key_length, value, value_length, value_length, expire_at_ms);
  if (item == NULL) {
    return KV_E_NOMEM;
  }
  kv_item *old = NULL;
  int rc = kv_store_put_item(kv, item, &old);
  if (old != NULL) {
    kv_item_release(&kv->heap, old);
  }
  return rc;
}

static int remove_key(kv_store *kv, const uint8_t *key, size_t key_length) {
  kv_item *removed = NULL;
  int rc = kv_store_remove(kv, key, key_length, &removed);
  if (removed != NULL) {
    kv_item_release(&kv->heap, removed);
  }
  return rc;
}

/* ---- SET ------------------------------------------------------------------ */

/* The write of a SET that passed its conditions: the entry with its new
 * value and expiry, or no entry when that expiry is already past. */
static int store_set(kv_store *kv, const set_fields *set, uint64_t expire_at_ms,
                     kv_result *result) {
  int rc;
  if (expire_at_ms != 0 && expire_at_ms <= set->now_ms) {
    /* Already expired when applied: the key ends absent (as Redis does). */
    rc = remove_key(kv, set->key, set->key_length);
  } else {
    rc = store_new(kv, set->key, set->key_length, set->value, set->value_length, expire_at_ms);
  }
  if (rc != 0) {
    return fail(result, rc);
  }
  result->status = KV_STATUS_OK;
  return 0;
}

static int apply_set(kv_store *kv, reader *r, kv_result *result) {
  set_fields set;
  if (!decode_set(r, &set)) {
    return fail(result, KV_E_MALFORMED);
  }
  if ((set.flags & KV_SET_READS_OLD) == 0) {
    /* Nothing depends on the old entry, present, expired or absent: the
     * tree is descended once, by the insert that replaces or adds it. */
    return store_set(kv, &set, set.expire_at_ms, result);
  }
  kv_item *old = kv_tree_find(&kv->main, set.key, set.key_length);
  bool present = old != NULL && !kv_item_expired(old, set.now_ms);
  bool wants_old = (set.flags & KV_SET_GET) != 0;
  if (((set.flags & KV_SET_NX) && present) || ((set.flags & KV_SET_XX) && !present)) {
    result->status = KV_STATUS_NOT_APPLIED;
    if (wants_old && present) {
      return_value(kv, result, old);
    }
    return 0;
  }
  uint64_t expire_at_ms = set.expire_at_ms;
  if ((set.flags & KV_SET_KEEPTTL) && present) {
    expire_at_ms = old->expire_at_ms;
  }
  if (wants_old && present) {
    return_value(kv, result, old);
  }
  return store_set(kv, &set, expire_at_ms, result);
}

/* ---- DEL ------------------------------------------------------------------ */

static int apply_del(kv_store *kv, reader *r, kv_result *result) {
  const uint64_t now_ms = get_varint(r);
  const uint64_t count = get_varint(r);
  reader keys = *r;
  if (r->failed || count == 0 || count > KV_MAX_COMMAND_KEYS || !decode_del_keys(r, count)) {
    return fail(result, KV_E_MALFORMED);
  }
  int64_t deleted = 0;
  for (uint64_t i = 0; i < count; i++) {
    size_t length;
    const uint8_t *key = get_bytes(&keys, KV_MAX_KEY_BYTES, &length);
    kv_item *removed = NULL;
    int rc = kv_store_remove(kv, key, length, &removed);
    if (rc != 0) {
      return fail(result, rc);
    }
    if (removed != NULL) {
      /* An expired entry goes too, but reads as absent: not counted. */
      deleted += kv_item_expired(removed, now_ms) ? 0 : 1;
      kv_item_release(&kv->heap, removed);
    }
  }
  result->status = KV_STATUS_OK;
  result->integer = deleted;
  return 0;
}

/* ---- MSET ----------------------------------------------------------------- */

/* Stores every pair the reader holds (already validated), in order. */
static int store_pairs(kv_store *kv, reader *pairs, uint64_t count) {
  for (uint64_t i = 0; i < count; i++) {
    size_t key_length;
    const uint8_t *key = get_bytes(pairs, KV_MAX_KEY_BYTES, &key_length);
    size_t value_length;
    const uint8_t *value = get_bytes(pairs, KV_MAX_VALUE_BYTES, &value_length);
    int rc = store_new(kv, key, key_length, value, value_length, 0);
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

/*
 * All or nothing. One pair is a single-key change, which is all or nothing
 * by itself. Several cannot have everything allocated first (the node
 * reserve covers one change, and a thousand new items would be held at
 * once for nothing in the common case), so the version before the command
 * stays pinned while the pairs are stored: a failure halfway puts it back.
 * The price is that the change copies the nodes on its paths once, as a
 * write under an open snapshot does, and frees the old ones after.
 */
static int apply_mset(kv_store *kv, reader *r, kv_result *result) {
  (void)get_varint(r); /* now_ms: MSET has no condition and sets no expiry */
  const uint64_t count = get_varint(r);
  reader pairs = *r;
  if (r->failed || count == 0 || count > KV_MAX_COMMAND_KEYS || !decode_mset_pairs(r, count)) {
    return fail(result, KV_E_MALFORMED);
  }
  int rc;
  if (count == 1) {
    rc = store_pairs(kv, &pairs, count);
  } else {
    kv_version before;
    kv_store_pin(kv, &before);
    rc = store_pairs(kv, &pairs, count);
    if (rc == 0) {
      kv_store_unpin(kv, &before);
    } else {
      kv_store_roll_back(kv, &before);
    }
  }
  if (rc != 0) {
    return fail(result, rc);
  }
  result->status = KV_STATUS_OK;
  result->integer = (int64_t)count;
  return 0;
}

/* ---- INCRBY --------------------------------------------------------------- */

/* Redis's rule: optional '-', no leading zeros or '+', no spaces, within
 * int64. */
static bool parse_int64(const uint8_t *text, size_t length, int64_t *value) {
  if (length == 0 || length > INT64_TEXT_MAX_BYTES) {
    return false;
  }
  if (length == 1 && text[0] == '0') {
    *value = 0;
    return true;
  }
  bool negative = text[0] == '-';
  size_t i = negative ? 1 : 0;
  if (i == length || text[i] < '1' || text[i] > '9') {
    return false;
  }
  uint64_t magnitude = 0;
  for (; i < length; i++) {
    if (text[i] < '0' || text[i] > '9') {
      return false;
    }
    uint64_t digit = (uint64_t)(text[i] - '0');
    if (magnitude > (UINT64_MAX - digit) / 10) {
      return false;
    }
    magnitude = magnitude * 10 + digit;
  }
  if (negative) {
    if (magnitude > (uint64_t)INT64_MAX + 1) {
      return false;
    }
    *value = (int64_t)(0 - magnitude);
    return true;
  }
  if (magnitude > (uint64_t)INT64_MAX) {
    return false;
  }
  *value = (int64_t)magnitude;
  return true;
}

static size_t format_int64(int64_t value, uint8_t text[INT64_TEXT_MAX_BYTES]) {
  uint8_t reversed[INT64_TEXT_MAX_BYTES];
  uint64_t magnitude = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
  size_t digits = 0;
  do {
    reversed[digits++] = (uint8_t)('0' + magnitude % 10);
    magnitude /= 10;
  } while (magnitude != 0);
  size_t length = 0;
  if (value < 0) {
    text[length++] = '-';
  }
  while (digits > 0) {
    text[length++] = reversed[--digits];
  }
  return length;
}

static int apply_incrby(kv_store *kv, reader *r, kv_result *result) {
  const uint64_t now_ms = get_varint(r);
  const int64_t delta = zigzag_decode(get_varint(r));
  size_t key_length;
  const uint8_t *key = get_bytes(r, KV_MAX_KEY_BYTES, &key_length);
  if (!reader_done(r)) {
    return fail(result, KV_E_MALFORMED);
  }
  const kv_item *old = kv_tree_find(&kv->main, key, key_length);
  bool present = old != NULL && !kv_item_expired(old, now_ms);
  int64_t current = 0;
  if (present && !parse_int64(kv_item_value_const(old), old->value_length, &current)) {
    return fail(result, KV_E_NOT_INTEGER);
  }
  if ((delta < 0 && current < 0 && delta < INT64_MIN - current) ||
      (delta > 0 && current > 0 && delta > INT64_MAX - current)) {
    return fail(result, KV_E_OVERFLOW);
  }
  const int64_t sum = current + delta;
  uint8_t text[INT64_TEXT_MAX_BYTES];
  size_t length = format_int64(sum, text);
  /* A present entry keeps its expiry (as in Redis); an absent or expired
   * one is created without. */
  int rc = present ? kv_store_rewrite_value(kv, key, key_length, 0, text, length)
                   : store_new(kv, key, key_length, text, length, 0);
  if (rc != 0) {
    return fail(result, rc);
  }
  result->status = KV_STATUS_OK;
  result->integer = sum;
  return 0;
}

/* ---- APPEND --------------------------------------------------------------- */

static int apply_append(kv_store *kv, reader *r, kv_result *result) {
  const uint64_t now_ms = get_varint(r);
  size_t key_length;
  const uint8_t *key = get_bytes(r, KV_MAX_KEY_BYTES, &key_length);
  size_t tail_length;
  const uint8_t *tail = get_bytes(r, KV_MAX_VALUE_BYTES, &tail_length);
  if (!reader_done(r)) {
    return fail(result, KV_E_MALFORMED);
  }
  const kv_item *old = kv_tree_find(&kv->main, key, key_length);
  bool present = old != NULL && !kv_item_expired(old, now_ms);
  size_t kept = present ? old->value_length : 0;
  if (kept + tail_length > KV_MAX_VALUE_BYTES) {
    return fail(result, KV_E_TOO_LARGE);
  }
  int rc = present ? kv_store_rewrite_value(kv, key, key_length, kept, tail, tail_length)
                   : store_new(kv, key, key_length, tail, tail_length, 0);
  if (rc != 0) {
    return fail(result, rc);
  }
  result->status = KV_STATUS_OK;
  result->integer = (int64_t)(kept + tail_length);
  return 0;
}

/* ---- EXPIRE_SWEEP --------------------------------------------------------- */

static int apply_expire_sweep(kv_store *kv, reader *r, kv_result *result) {
  const uint64_t now_ms = get_varint(r);
  const uint64_t max_keys = get_varint(r);
  if (!reader_done(r) || max_keys == 0 || max_keys > KV_MAX_SWEEP_KEYS) {
    return fail(result, KV_E_MALFORMED);
  }
  uint32_t removed = 0;
  int rc = kv_store_expire(kv, now_ms, (uint32_t)max_keys, &removed);
  if (rc != 0) {
    return fail(result, rc);
  }
  result->status = KV_STATUS_OK;
  result->integer = removed;
  return 0;
}

int kv_apply(kv_store *kv, const uint8_t *command, size_t length, kv_result *result) {
  memset(result, 0, sizeof(*result));
  kv_store_begin_change(kv);
  if (command == NULL || length == 0) {
    return fail(result, KV_E_MALFORMED);
  }
  reader r = {command + 1, command + length, false};
  switch (command[0]) {
  case KV_COMMAND_SET:
    return apply_set(kv, &r, result);
  case KV_COMMAND_DEL:
    return apply_del(kv, &r, result);
  case KV_COMMAND_INCRBY:
    return apply_incrby(kv, &r, result);
  case KV_COMMAND_APPEND:
    return apply_append(kv, &r, result);
  case KV_COMMAND_EXPIRE_SWEEP:
    return apply_expire_sweep(kv, &r, result);
  case KV_COMMAND_MSET:
    return apply_mset(kv, &r, result);
  default:
    return fail(result, KV_E_MALFORMED);
  }
}
