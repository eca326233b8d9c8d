/*
 * fuzz_wal_recovery.c - WAL recovery over damaged segment images.
 *
 * Each input writes a valid WAL into the in-memory io (wal_io_memory):
 * entries of a few groups, suffix rewrites with higher terms, hard states,
 * snapshot markers and compactions over two to four 64 KiB segments. Then
 * the machine crashes (or the WAL closes cleanly), the fuzzer's bytes damage
 * the durable segment images (flip bits, overwrite bytes, zero runs, tear
 * the last write of a file) and the WAL is reopened. That repeats for up to
 * FW_MAX_EPOCHS epochs, each continuing from what the last one recovered.
 *
 * After every open, whatever the damage:
 *   - the open succeeds, or fails with a negative errno (-EUCLEAN with a
 *     non-empty report.error); a WAL never damaged always opens;
 *   - every group is one that was written; first_index <= last_index + 1;
 *   - every entry wal_read returns is byte for byte an entry written at that
 *     (group, index) with that term (entries may be missing, never
 *     different), and wal_term agrees with it;
 *   - hard states and snapshot markers are ones that were written;
 *   - a second open sees exactly what the first one did (idempotence).
 * When the newest segment was not damaged, the recovered state is exactly
 * the one after some batch between the last acknowledged and the last
 * submitted one: damage to older segments or in earlier epochs must make
 * the open fail, never truncate acknowledged records.
 *
 * Input layout:
 *   byte 0       workload seed (which groups, operations, lengths)
 *   per epoch:
 *     byte       batches to write (epoch 0: 4 + b % 28, later 1 + b % 8)
 *     byte       ending: % 3 = 0 drain and close, 1 crash with batches in
 *                flight, 2 crash with batches in flight and records queued
 *     damage     op byte % FW_DAMAGE_COUNT, then its arguments; D_END (0)
 *                ends the list, at most FW_MAX_DAMAGE ops
 *   Damage arguments: segment (byte: 0 the newest, 1 the one before, ...),
 *   offset (u16: bit 15 clear: from the file start; set: (low 15 bits) -
 *   16384 from the end of the written part), then bit, value, or run length
 *   and bytes (D_TEAR: the offset modulo 8192 is the bytes of the last
 *   write to keep).
 *
 * Violations print "fuzz-wal-recovery: violation: ..." and abort.
 * FLOTILLA_FUZZ_TRACE=1 prints the epochs, damage and open results.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_input.h"
#include "fuzz/fuzz_report.h"
#include "wal/format.h"
#include "wal/wal.h"

#define FW_GROUPS 4
#define FW_MAX_INDEX 2048 /* per group; appends stop short of it */
#define FW_MAX_TERM 31    /* terms are bits of a uint32_t mask */
#define FW_MAX_PAYLOAD 200
#define FW_RING 8 /* models kept: batches in flight are at most pipeline + 1 */
#define FW_MAX_REQUESTS 2048
#define FW_MAX_EPOCHS 3
#define FW_MAX_DAMAGE 32
#define FW_MAX_SEGMENTS 16
#define FW_SEGMENT_BYTES (64u * 1024)
#define FW_READ_CHUNK 64

/* Ids are spread out so the group table's hashing and probing take part. */
static const uint64_t group_ids[FW_GROUPS] = {1, 2, 77, (1ull << 40) + 5};

enum fw_damage { D_END, D_FLIP, D_SET_BYTE, D_SET_RUN, D_ZERO_RUN, D_TEAR, FW_DAMAGE_COUNT };

/* One group as the workload queued it (or as recovery rebuilt it). */
typedef struct fw_group {
  bool exists;
  uint64_t first_index;
  uint64_t last_index;
  uint64_t snapshot_index;
  uint64_t snapshot_term;
  wal_hard_state hard_state;
  uint8_t term[FW_MAX_INDEX + 1];
} fw_group;

typedef struct fw_model {
  fw_group groups[FW_GROUPS];
} fw_model;

struct fw_state;

/* A request of one queued record: acknowledges every batch up to its own. */
typedef struct fw_pending {
  wal_request request;
  struct fw_state *state;
  uint32_t batch;
} fw_pending;

/* The segment images of the io, to tell whether damage changed anything. */
typedef struct fw_images {
  uint32_t count;
  char names[FW_MAX_SEGMENTS][64];
  uint8_t *bytes[FW_MAX_SEGMENTS];
  uint64_t sizes[FW_MAX_SEGMENTS];
} fw_images;

typedef struct fw_state {
  fuzz_input in;
  uint64_t random;
  wal_io *io;
  wal *w;
  uint32_t epoch;
  fw_model model;         /* everything queued so far */
  fw_model ring[FW_RING]; /* ring[k % FW_RING]: after the first k batches of the epoch */
  uint32_t submitted;     /* batches flushed this epoch */
  uint32_t acknowledged;  /* batches reported durable this epoch */
  fw_pending requests[FW_MAX_REQUESTS];
  uint32_t request_count;
  uint64_t hard_serial;
  /* The oracle: bit t set when an entry (or snapshot marker) of term t was
   * ever queued at that (group, index). Queued is enough: a record may
   * reach the disk without ever being acknowledged. */
  uint32_t written[FW_GROUPS][FW_MAX_INDEX + 1];
  uint32_t snapped[FW_GROUPS][FW_MAX_INDEX + 1];
  bool damaged_newest;  /* this epoch, the newest segment */
  bool damaged_older;   /* this epoch, an older segment */
  bool damaged_earlier; /* an earlier epoch: its damage may still be on disk */
  fw_model recovered;
  wal_entry read_out[FW_READ_CHUNK];
  uint8_t read_buffer[FW_READ_CHUNK * FW_MAX_PAYLOAD];
} fw_state;

/* ---- reporting ---- */

__attribute__((format(printf, 1, 2), noreturn)) static void violation(const char *format, ...) {
  va_list args;
  va_start(args, format);
  fuzz_report_and_abort("fuzz-wal-recovery: violation: ", format, args);
}

/* ---- what was written: every byte is a function of where it went ---- */

static uint64_t next_random(fw_state *f) {
  f->random = f->random * 6364136223846793005ULL + 1442695040888963407ULL;
  return f->random >> 33;
}

static uint32_t payload_of(uint64_t group, uint64_t index, uint64_t term, uint8_t *out) {
  uint32_t length = (uint32_t)((group * 7 + index * 13 + term * 29) % FW_MAX_PAYLOAD);
  for (uint32_t i = 0; i < length; i++) {
    out[i] = (uint8_t)(group * 31 + index * 17 + term * 101 + i * 7);
  }
  return length;
}

static uint32_t entry_type_of(uint64_t index, uint64_t term) {
  return (uint32_t)((index + term) % 3);
}

static uint32_t snapshot_data_of(uint64_t group, uint64_t index, uint64_t term, uint8_t *out) {
  uint32_t length = (uint32_t)(1 + (group + index + term) % 48);
  for (uint32_t i = 0; i < length; i++) {
    out[i] = (uint8_t)(0xa5 ^ (group + index * 3 + term * 5 + i));
  }
  return length;
}

/* Hard states carry a serial as term and a vote and commit derived from it,
 * so a recovered one can be recognised as written. */
static wal_hard_state hard_state_of(uint64_t group, uint64_t serial) {
  return (wal_hard_state){.term = serial, .vote = group, .commit = serial * 3 + group};
}

static bool hard_state_was_written(uint64_t group, const wal_hard_state *h) {
  bool none = h->term == 0 && h->vote == 0 && h->commit == 0;
  return none || (h->vote == group && h->commit == h->term * 3 + group);
}

static int slot_of(uint64_t group) {
  for (int slot = 0; slot < FW_GROUPS; slot++) {
    if (group_ids[slot] == group) {
      return slot;
    }
  }
  return -1;
}

/* ---- the workload ---- */

static wal_options small_options(wal_io *io) {
  wal_options options;
  wal_options_default(&options);
  options.io = io;
  options.shard_id = 3;
  options.segment_bytes = FW_SEGMENT_BYTES;
  options.batch_bytes = 8u * 1024;
  options.pipeline_depth = 2;
  return options;
}

static void on_durable(void *context, int result) {
  fw_pending *p = context;
  if (result == 0 && p->batch + 1 > p->state->acknowledged) {
    p->state->acknowledged = p->batch + 1;
  }
}

/* A request for the next record, or NULL once the pool is used up (then
 * acknowledgements come from later records of the batch). */
static wal_request *next_request(fw_state *f) {
  if (f->request_count == FW_MAX_REQUESTS) {
    return NULL;
  }
  fw_pending *p = &f->requests[f->request_count];
  *p = (fw_pending){
      .request = {.callback = on_durable, .context = p}, .state = f, .batch = f->submitted};
  return &p->request;
}

/* The request was queued with its record: keep it. */
static void keep_request(fw_state *f, int rc) {
  if (rc == 0 && f->request_count < FW_MAX_REQUESTS) {
    f->request_count++;
  }
}

/* Submits the filling batch; an empty one is not a batch. */
static void flush_batch(fw_state *f) {
  wal_stats before;
  wal_stats after;
  wal_get_stats(f->w, &before);
  int rc = wal_flush(f->w);
  if (rc != 0) {
    violation("epoch %u: wal_flush failed with %d and no fault armed", f->epoch, rc);
  }
  wal_get_stats(f->w, &after);
  if (after.batches == before.batches) {
    return;
  }
  f->submitted++;
  f->ring[f->submitted % FW_RING] = f->model;
}

/* A group appears with its first record, empty as the WAL makes it. */
static fw_group *touch_group(fw_state *f, int slot) {
  fw_group *g = &f->model.groups[slot];
  if (!g->exists) {
    *g = (fw_group){.exists = true, .first_index = 1, .last_index = 0};
  }
  return g;
}

static int append_entries(fw_state *f, int slot, uint64_t first, uint32_t count, uint64_t term) {
  uint8_t data[8][FW_MAX_PAYLOAD];
  wal_entry entries[8];
  for (uint32_t i = 0; i < count; i++) {
    uint64_t index = first + i;
    entries[i] = (wal_entry){.index = index, .term = term, .type = entry_type_of(index, term)};
    entries[i].length = payload_of(group_ids[slot], index, term, data[i]);
    entries[i].data = data[i];
  }
  int rc = wal_append(f->w, group_ids[slot], entries, count, next_request(f));
  keep_request(f, rc);
  if (rc != 0) {
    return rc;
  }
  fw_group *g = touch_group(f, slot);
  if (g->last_index < g->first_index) {
    g->first_index = first;
  }
  for (uint32_t i = 0; i < count; i++) {
    g->term[first + i] = (uint8_t)term;
    f->written[slot][first + i] |= 1u << term;
  }
  g->last_index = first + count - 1;
  return 0;
}

static uint64_t current_term(const fw_group *g) {
  uint64_t term = g->last_index >= g->first_index ? g->term[g->last_index] : g->snapshot_term;
  return term > 0 ? term : 1;
}

static int op_append(fw_state *f, int slot) {
  fw_group *g = &f->model.groups[slot];
  uint32_t count = 1 + (uint32_t)(next_random(f) % 8);
  if (g->last_index + count >= FW_MAX_INDEX) {
    return 0;
  }
  return append_entries(f, slot, g->last_index + 1, count, current_term(g));
}

/* Replaces a few entries at the end with a newer term, as a new leader does. */
static int op_rewrite(fw_state *f, int slot) {
  fw_group *g = &f->model.groups[slot];
  uint64_t term = current_term(g) + 1;
  uint64_t floor = g->first_index > g->snapshot_index ? g->first_index : g->snapshot_index + 1;
  if (term > FW_MAX_TERM || g->last_index < floor || g->last_index + 8 >= FW_MAX_INDEX) {
    return op_append(f, slot);
  }
  uint64_t back = next_random(f) % (g->last_index - floor + 1);
  uint32_t count = 1 + (uint32_t)(next_random(f) % 4);
  return append_entries(f, slot, g->last_index - back, count, term);
}

static int op_hard_state(fw_state *f, int slot) {
  wal_hard_state state = hard_state_of(group_ids[slot], f->hard_serial + 1);
  int rc = wal_save_hard_state(f->w, group_ids[slot], &state, next_request(f));
  keep_request(f, rc);
  if (rc == 0) {
    f->hard_serial++;
    touch_group(f, slot)->hard_state = state;
  }
  return rc;
}

/* A snapshot at a live entry with its term: the log after it stays. */
static int op_snapshot(fw_state *f, int slot) {
  fw_group *g = &f->model.groups[slot];
  if (!g->exists || g->last_index < g->first_index) {
    return op_append(f, slot);
  }
  uint64_t index = g->first_index + next_random(f) % (g->last_index - g->first_index + 1);
  uint64_t term = g->term[index];
  uint8_t data[64];
  uint32_t length = snapshot_data_of(group_ids[slot], index, term, data);
  int rc = wal_save_snapshot(f->w, group_ids[slot], index, term, data, length, next_request(f));
  keep_request(f, rc);
  if (rc == 0) {
    f->snapped[slot][index] |= 1u << term;
    g->snapshot_index = index;
    g->snapshot_term = term;
    g->first_index = index + 1;
  }
  return rc;
}

static int op_compact(fw_state *f, int slot) {
  fw_group *g = &f->model.groups[slot];
  if (!g->exists || g->last_index < g->first_index) {
    return op_append(f, slot);
  }
  uint64_t index = g->first_index + next_random(f) % (g->last_index - g->first_index + 1);
  int rc = wal_compact(f->w, group_ids[slot], index);
  if (rc == 0) {
    g->first_index = index + 1;
  }
  return rc;
}

static int run_operation(fw_state *f) {
  int slot = (int)(next_random(f) % FW_GROUPS);
  switch (next_random(f) % 16) {
  case 0:
  case 1:
    return op_hard_state(f, slot);
  case 2:
    return op_snapshot(f, slot);
  case 3:
    return op_compact(f, slot);
  case 4:
  case 5:
    return op_rewrite(f, slot);
  default:
    return op_append(f, slot);
  }
}

/* One operation; a full batch is flushed and the operation redone with the
 * same random choices. */
static void queue_operation(fw_state *f) {
  uint64_t random = f->random;
  int rc = run_operation(f);
  if (rc == -ENOBUFS) {
    flush_batch(f);
    f->random = random;
    rc = run_operation(f);
  }
  if (rc != 0) {
    violation("epoch %u: a valid operation failed with %d", f->epoch, rc);
  }
}

static void write_batches(fw_state *f, uint32_t batches) {
  for (uint32_t batch = 0; batch < batches; batch++) {
    uint32_t operations = 1 + (uint32_t)(next_random(f) % 24);
    for (uint32_t i = 0; i < operations; i++) {
      queue_operation(f);
    }
    flush_batch(f);
    if (next_random(f) % 2 == 0 && wal_poll(f->w, false) < 0) {
      violation("epoch %u: wal_poll failed and no fault armed", f->epoch);
    }
  }
}

static void drain(fw_state *f) {
  flush_batch(f);
  while (wal_in_flight(f->w) > 0) {
    if (wal_poll(f->w, true) < 0) {
      violation("epoch %u: wal_poll failed while draining", f->epoch);
    }
  }
}

/* Ends the epoch's process: cleanly, or by a crash with writes in flight. */
static void end_epoch(fw_state *f, uint8_t ending) {
  switch (ending % 3) {
  case 0:
    drain(f);
    break;
  case 1:
    break; /* the last batches stay in flight */
  default:
    queue_operation(f); /* and one more never flushed */
    queue_operation(f);
    break;
  }
  trace("epoch %u: ending %u, submitted %u acknowledged %u\n", f->epoch, ending % 3, f->submitted,
        f->acknowledged);
  wal_io_memory_crash(f->io);
  wal_close(f->w); /* the process is gone: closing only frees its memory */
  f->w = NULL;
}

/* ---- damage ---- */

static int collect_name(void *context, const char *name) {
  fw_images *images = context;
  uint64_t sequence = 0;
  if (wal_segment_parse_name(name, &sequence) && images->count < FW_MAX_SEGMENTS) {
    snprintf(images->names[images->count++], sizeof(images->names[0]), "%s", name);
  }
  return 0;
}

static int compare_names(const void *a, const void *b) {
  return strcmp(a, b); /* fixed-width hex: name order is sequence order */
}

static int read_image(wal_io *io, const char *name, uint8_t **bytes, uint64_t *size) {
  int file = io->ops->open(io, name, false);
  if (file < 0) {
    return file;
  }
  int rc = io->ops->size(io, file, size);
  *bytes = rc == 0 ? malloc(*size ? *size : 1) : NULL;
  if (rc == 0) {
    rc = *bytes == NULL ? -ENOMEM : io->ops->read(io, file, 0, *bytes, *size);
  }
  io->ops->close(io, file);
  return rc;
}

static void images_load(wal_io *io, fw_images *images) {
  memset(images, 0, sizeof(*images));
  if (io->ops->list(io, collect_name, images) != 0) {
    violation("listing the segments failed");
  }
  qsort(images->names, images->count, sizeof(images->names[0]), compare_names);
  for (uint32_t i = 0; i < images->count; i++) {
    if (read_image(io, images->names[i], &images->bytes[i], &images->sizes[i]) != 0) {
      violation("reading segment %s failed", images->names[i]);
    }
  }
}

static void images_free(fw_images *images) {
  for (uint32_t i = 0; i < images->count; i++) {
    free(images->bytes[i]);
  }
}

static uint64_t written_end(const fw_images *images, uint32_t segment) {
  uint64_t end = images->sizes[segment];
  while (end > 0 && images->bytes[segment][end - 1] == 0) {
    end--;
  }
  return end;
}

/* Offset argument: bit 15 clear, from the file start; set, relative to the
 * end of the written part (-16384..16383), to reach the tail and the zeros
 * after it wherever the workload left them. */
static uint64_t pick_offset(fw_state *f, const fw_images *images, uint32_t segment) {
  uint16_t raw = fuzz_u16(&f->in);
  uint64_t size = images->sizes[segment];
  int64_t offset = raw;
  if (raw & 0x8000u) {
    offset = (int64_t)written_end(images, segment) + (int64_t)(raw & 0x7fffu) - 16384;
  }
  offset = offset < 0 ? 0 : offset;
  return size > 0 ? (uint64_t)offset % size : 0;
}

/* Sets durable bytes through bit flips, the only write the twin offers. */
static void set_byte(fw_state *f, const fw_images *images, uint32_t segment, uint64_t offset,
                     uint8_t value) {
  uint8_t differs = images->bytes[segment][offset] ^ value;
  for (unsigned bit = 0; bit < 8; bit++) {
    if ((differs >> bit & 1u) &&
        wal_io_memory_flip_bit(f->io, images->names[segment], offset, bit) != 0) {
      violation("flip_bit %s offset %llu failed", images->names[segment],
                (unsigned long long)offset);
    }
  }
}

static void damage_run(fw_state *f, fw_images *images, uint32_t segment, uint64_t offset,
                       bool zero) {
  uint32_t length = 1 + fuzz_u8(&f->in) % 64;
  for (uint32_t i = 0; i < length && offset + i < images->sizes[segment]; i++) {
    uint8_t value = zero ? 0 : fuzz_u8(&f->in);
    set_byte(f, images, segment, offset + i, value);
    images->bytes[segment][offset + i] = value;
  }
}

static void damage_one(fw_state *f, fw_images *images, uint8_t op) {
  uint32_t segment = images->count - 1 - fuzz_u8(&f->in) % images->count;
  uint64_t offset = pick_offset(f, images, segment);
  const char *name = images->names[segment];
  trace("  damage %u on %s at %llu\n", op, name, (unsigned long long)offset);
  switch (op) {
  case D_FLIP: {
    uint8_t bit = fuzz_u8(&f->in) % 8;
    set_byte(f, images, segment, offset, images->bytes[segment][offset] ^ (uint8_t)(1u << bit));
    images->bytes[segment][offset] ^= (uint8_t)(1u << bit);
    break;
  }
  case D_SET_BYTE: {
    uint8_t value = fuzz_u8(&f->in);
    set_byte(f, images, segment, offset, value);
    images->bytes[segment][offset] = value;
    break;
  }
  case D_SET_RUN:
  case D_ZERO_RUN:
    damage_run(f, images, segment, offset, op == D_ZERO_RUN);
    break;
  default: {
    /* The offset's low bits say how much of the newest write survives. */
    int rc = wal_io_memory_tear_last_write(f->io, name, (size_t)(offset % 8192));
    if (rc != 0 && rc != -ENODATA) {
      violation("tear_last_write %s failed with %d", name, rc);
    }
    break;
  }
  }
}

/* Which segments the damage really changed: the newest or older ones. */
static void note_changes(fw_state *f, const fw_images *before) {
  fw_images after;
  images_load(f->io, &after);
  for (uint32_t i = 0; i < before->count && i < after.count; i++) {
    if (before->sizes[i] != after.sizes[i] ||
        memcmp(before->bytes[i], after.bytes[i], before->sizes[i]) != 0) {
      bool newest = i + 1 == before->count;
      f->damaged_newest |= newest;
      f->damaged_older |= !newest;
    }
  }
  images_free(&after);
}

static void apply_damage(fw_state *f) {
  fw_images before;
  fw_images working;
  images_load(f->io, &before);
  images_load(f->io, &working);
  f->damaged_earlier |= f->damaged_newest || f->damaged_older;
  f->damaged_newest = f->damaged_older = false;
  for (uint32_t i = 0; i < FW_MAX_DAMAGE && working.count > 0; i++) {
    uint8_t op = fuzz_u8(&f->in) % FW_DAMAGE_COUNT;
    if (op == D_END) {
      break;
    }
    damage_one(f, &working, op);
    if (op == D_TEAR) {
      images_free(&working); /* the tear changed bytes behind our copy */
      images_load(f->io, &working);
    }
  }
  note_changes(f, &before);
  images_free(&before);
  images_free(&working);
}

/* ---- what recovery gives back ---- */

static void load_group(fw_state *f, int slot, fw_group *g) {
  wal_group_state state;
  memset(g, 0, sizeof(*g));
  if (wal_group(f->w, group_ids[slot], &state) != 0) {
    return;
  }
  bool inverted = state.first_index > state.last_index + 1;
  if (inverted || state.last_index >= FW_MAX_INDEX || state.first_index == 0) {
    violation("group %llu: range %llu..%llu", (unsigned long long)group_ids[slot],
              (unsigned long long)state.first_index, (unsigned long long)state.last_index);
  }
  *g = (fw_group){.exists = true,
                  .first_index = state.first_index,
                  .last_index = state.last_index,
                  .snapshot_index = state.snapshot_index,
                  .snapshot_term = state.snapshot_term,
                  .hard_state = state.hard_state};
  for (uint64_t index = g->first_index; index <= g->last_index; index++) {
    uint64_t term = 0;
    if (wal_term(f->w, group_ids[slot], index, &term) != 0 || term == 0 || term > FW_MAX_TERM) {
      violation("group %llu index %llu: no term or term %llu never written",
                (unsigned long long)group_ids[slot], (unsigned long long)index,
                (unsigned long long)term);
    }
    g->term[index] = (uint8_t)term;
  }
}

static void check_known_group(void *context, uint64_t group) {
  (void)context;
  if (slot_of(group) < 0) {
    violation("recovery invented group %llu", (unsigned long long)group);
  }
}

static void load_recovered(fw_state *f, fw_model *out) {
  wal_groups(f->w, check_known_group, NULL);
  for (int slot = 0; slot < FW_GROUPS; slot++) {
    load_group(f, slot, &out->groups[slot]);
  }
}

static void check_entry(fw_state *f, int slot, const wal_entry *e, uint64_t index,
                        uint64_t term_of_index) {
  uint64_t group = group_ids[slot];
  uint8_t expected[FW_MAX_PAYLOAD];
  if (e->index != index || e->term != term_of_index) {
    violation("group %llu: read index %llu term %llu where %llu term %llu",
              (unsigned long long)group, (unsigned long long)e->index, (unsigned long long)e->term,
              (unsigned long long)index, (unsigned long long)term_of_index);
  }
  if (e->term > FW_MAX_TERM || !(f->written[slot][index] >> e->term & 1u)) {
    violation("group %llu index %llu: term %llu was never written there", (unsigned long long)group,
              (unsigned long long)index, (unsigned long long)e->term);
  }
  uint32_t length = payload_of(group, index, e->term, expected);
  if (e->length != length || e->type != entry_type_of(index, e->term) ||
      (length > 0 && memcmp(e->data, expected, length) != 0)) {
    violation("group %llu index %llu term %llu: bytes differ from what was written",
              (unsigned long long)group, (unsigned long long)index, (unsigned long long)e->term);
  }
}

/* Reads the whole live log in chunks, so reads cross record boundaries. */
static void check_entries(fw_state *f, int slot, const fw_group *g) {
  uint64_t group = group_ids[slot];
  for (uint64_t lo = g->first_index; lo <= g->last_index;) {
    uint32_t count = 0;
    int rc = wal_read(f->w, group, lo, g->last_index + 1, 4096, f->read_out, FW_READ_CHUNK, &count,
                      f->read_buffer, sizeof(f->read_buffer));
    if (rc != 0 || count == 0) {
      violation("group %llu: wal_read at %llu failed (%d, %u entries) inside %llu..%llu",
                (unsigned long long)group, (unsigned long long)lo, rc, count,
                (unsigned long long)g->first_index, (unsigned long long)g->last_index);
    }
    for (uint32_t i = 0; i < count; i++) {
      check_entry(f, slot, &f->read_out[i], lo + i, g->term[lo + i]);
    }
    lo += count;
  }
  uint32_t count = 0;
  if (wal_read(f->w, group, g->last_index + 1, g->last_index + 2, 4096, f->read_out, 1, &count,
               f->read_buffer, sizeof(f->read_buffer)) != -ENOENT) {
    violation("group %llu: read past the last index did not fail", (unsigned long long)group);
  }
}

static void check_markers(fw_state *f, int slot, const fw_group *g) {
  uint64_t group = group_ids[slot];
  if (!hard_state_was_written(group, &g->hard_state)) {
    violation("group %llu: hard state term %llu vote %llu commit %llu never written",
              (unsigned long long)group, (unsigned long long)g->hard_state.term,
              (unsigned long long)g->hard_state.vote, (unsigned long long)g->hard_state.commit);
  }
  if (g->snapshot_index == 0) {
    return;
  }
  if (g->snapshot_index > FW_MAX_INDEX || g->snapshot_term > FW_MAX_TERM ||
      !(f->snapped[slot][g->snapshot_index] >> g->snapshot_term & 1u) ||
      g->first_index <= g->snapshot_index) {
    violation("group %llu: snapshot marker %llu term %llu never written or inside the log",
              (unsigned long long)group, (unsigned long long)g->snapshot_index,
              (unsigned long long)g->snapshot_term);
  }
  uint8_t data[64];
  uint8_t expected[64];
  uint32_t length = 0;
  uint32_t expected_length = snapshot_data_of(group, g->snapshot_index, g->snapshot_term, expected);
  int rc = wal_snapshot_data(f->w, group, data, sizeof(data), &length);
  if (rc != 0 || length != expected_length || memcmp(data, expected, length) != 0) {
    violation("group %llu: snapshot data differs (%d)", (unsigned long long)group, rc);
  }
}

static bool groups_equal(const fw_group *a, const fw_group *b) {
  if (a->exists != b->exists) {
    return false;
  }
  if (!a->exists) {
    return true;
  }
  if (a->first_index != b->first_index || a->last_index != b->last_index ||
      a->snapshot_index != b->snapshot_index || a->snapshot_term != b->snapshot_term ||
      memcmp(&a->hard_state, &b->hard_state, sizeof(a->hard_state)) != 0) {
    return false;
  }
  for (uint64_t index = a->first_index; index <= a->last_index; index++) {
    if (a->term[index] != b->term[index]) {
      return false;
    }
  }
  return true;
}

static bool models_equal(const fw_model *a, const fw_model *b) {
  for (int slot = 0; slot < FW_GROUPS; slot++) {
    if (!groups_equal(&a->groups[slot], &b->groups[slot])) {
      return false;
    }
  }
  return true;
}

static void describe_mismatch(const fw_model *want, const fw_model *got) {
  for (int slot = 0; slot < FW_GROUPS; slot++) {
    const fw_group *a = &want->groups[slot];
    const fw_group *b = &got->groups[slot];
    fprintf(stderr,
            "  group %llu: acknowledged exists %d log %llu..%llu snap %llu hs %llu; "
            "recovered exists %d log %llu..%llu snap %llu hs %llu\n",
            (unsigned long long)group_ids[slot], a->exists, (unsigned long long)a->first_index,
            (unsigned long long)a->last_index, (unsigned long long)a->snapshot_index,
            (unsigned long long)a->hard_state.term, b->exists, (unsigned long long)b->first_index,
            (unsigned long long)b->last_index, (unsigned long long)b->snapshot_index,
            (unsigned long long)b->hard_state.term);
  }
}

/* Undamaged (or damaged only where recovery must refuse to go on): exactly
 * the state after some batch between the acknowledged and the submitted. */
static void check_exact(fw_state *f) {
  if (f->submitted - f->acknowledged >= FW_RING) {
    violation("epoch %u: %u batches unacknowledged, more than the pipeline allows", f->epoch,
              f->submitted - f->acknowledged);
  }
  for (uint32_t k = f->acknowledged; k <= f->submitted; k++) {
    if (models_equal(&f->ring[k % FW_RING], &f->recovered)) {
      return;
    }
  }
  describe_mismatch(&f->ring[f->acknowledged % FW_RING], &f->recovered);
  violation("epoch %u: recovered state is none of batches %u..%u (damage: newest %d, older %d)",
            f->epoch, f->acknowledged, f->submitted, f->damaged_newest, f->damaged_older);
}

static void check_recovered(fw_state *f) {
  load_recovered(f, &f->recovered);
  for (int slot = 0; slot < FW_GROUPS; slot++) {
    const fw_group *g = &f->recovered.groups[slot];
    if (g->exists) {
      check_entries(f, slot, g);
      check_markers(f, slot, g);
    }
  }
  if (!f->damaged_newest) {
    check_exact(f);
  }
}

/* ---- reopening ---- */

static int open_wal(fw_state *f, wal_recovery_report *report) {
  wal_options options = small_options(f->io);
  int rc = wal_open(&options, &f->w, report);
  trace("epoch %u: open %d (segments %u records %llu torn %llu) %s\n", f->epoch, rc,
        report->segments, (unsigned long long)report->records,
        (unsigned long long)report->torn_tail_bytes, report->error);
  if (rc == 0) {
    return 0;
  }
  f->w = NULL;
  if (rc > 0 || (rc == -EUCLEAN && report->error[0] == '\0')) {
    violation("epoch %u: wal_open returned %d with error \"%s\"", f->epoch, rc, report->error);
  }
  if (!f->damaged_newest && !f->damaged_older && !f->damaged_earlier) {
    violation("epoch %u: an undamaged WAL failed to open: %d %s", f->epoch, rc, report->error);
  }
  return rc;
}

/* A second open must find what the first one did (it truncated any torn
 * tail already, so it has nothing left to cut). */
static int check_idempotent(fw_state *f) {
  wal_recovery_report report;
  wal_close(f->w);
  f->w = NULL;
  int rc = open_wal(f, &report);
  if (rc != 0) {
    violation("epoch %u: the second open failed (%d %s)", f->epoch, rc, report.error);
  }
  fw_model again;
  load_recovered(f, &again);
  if (!models_equal(&again, &f->recovered)) {
    describe_mismatch(&f->recovered, &again);
    violation("epoch %u: the second open recovered something else", f->epoch);
  }
  return 0;
}

/* Reopens and checks; true when the WAL opened and the next epoch can go on. */
static bool reopen(fw_state *f) {
  wal_recovery_report report;
  if (open_wal(f, &report) != 0) {
    return false;
  }
  check_recovered(f);
  check_idempotent(f);
  f->model = f->recovered;
  return true;
}

static void start_epoch(fw_state *f) {
  f->submitted = f->acknowledged = 0;
  f->request_count = 0;
  f->ring[0] = f->model;
  f->random ^= (uint64_t)f->epoch * 0x9e3779b97f4a7c15ULL;
}

static void run_epochs(fw_state *f) {
  wal_recovery_report report;
  if (open_wal(f, &report) != 0) {
    violation("the first open of an empty io failed");
  }
  for (f->epoch = 0; f->epoch < FW_MAX_EPOCHS; f->epoch++) {
    start_epoch(f);
    uint8_t batches = fuzz_u8(&f->in);
    write_batches(f, f->epoch == 0 ? 4 + batches % 28 : 1 + batches % 8);
    end_epoch(f, fuzz_u8(&f->in));
    apply_damage(f);
    if (!reopen(f)) {
      return;
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fw_state *f = calloc(1, sizeof(*f));
  if (f == NULL) {
    return 0;
  }
  f->in = (fuzz_input){.data = data, .size = size};
  f->random = 0x5eed0000u + fuzz_u8(&f->in);
  f->io = wal_io_memory_create();
  if (f->io != NULL) {
    run_epochs(f);
    wal_close(f->w);
    f->io->ops->destroy(f->io);
  }
  free(f);
  return 0;
}
