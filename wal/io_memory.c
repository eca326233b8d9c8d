/*
 * io_memory.c - the in-memory wal_io with fault injection (wal_io.h), for
 * unit tests, crash tests and the simulation. Deterministic: no threads,
 * no clock, the same calls give the same bytes.
 *
 * What a power cut keeps is modelled on Linux with a journaling file
 * system:
 * - file data: each file has a volatile image (what reads return: the page
 *   cache) and a durable image (the disk). A reaped write lands in the
 *   volatile one; a successful sync copies it to the durable one. create
 *   syncs the new (zeroed) file, as the io_uring backend does.
 * - names: a current directory view and a durable one. create, rename and
 *   unlink change the current view; sync_directory copies it to the
 *   durable view. A crash restores the durable view, so a file created and
 *   never directory-synced is gone.
 * - a crash also drops every queued or submitted write (each later reaped
 *   with -EIO so that nobody waits forever, and nobody is told "durable"),
 *   and makes every open handle stale (-EIO): the process that held them
 *   is dead, and a write through them must not land after the reboot.
 *
 * Fault counters: a "write" is a queued unit carrying data (counted when
 * it is reaped, i.e. applied) or a write_sync; a "sync" is a unit's sync, a
 * write_sync's, or sync_directory, and sync_count counts the successful
 * ones. Each armed fault fires once, then disarms (-1).
 *
 * Pending write lifecycle (FIFO, reaped in queue order):
 *   QUEUED --submit--> SUBMITTED --reap--> applied, reported
 *   QUEUED or SUBMITTED --crash--> DROPPED --reap--> reported -EIO
 *
 * Invariants (memory_check_invariants): a file slot is live iff its
 * reference count (directory entries in both views, live handles, pending
 * writes) is positive; used_bytes is the sum of live files' allocated
 * bytes; a durable image is never larger than the volatile one.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "wal/wal_io.h"

/* Bounds of the twin: generous for tests, small enough to stay cheap. */
#define MEMORY_MAX_FILES 1024
#define MEMORY_MAX_HANDLES 1024
#define MEMORY_MAX_ENTRIES 1024
#define MEMORY_MAX_PENDING 1024
#define MEMORY_NAME_BYTES 256
/* One image never grows past this: a runaway offset fails, not the host. */
#define MEMORY_MAX_FILE_BYTES (1ull << 30)

/* Bytes [0, length) are stored; [length, size) read as zeros, so a
 * preallocated segment costs only what was written into it. */
typedef struct byte_image {
  uint8_t *bytes;
  uint64_t length;
  uint64_t capacity;
  uint64_t size;
} byte_image;

/* The newest write a sync made durable and the durable bytes it replaced,
 * so that tear_last_write can put the tail of them back. */
typedef struct remembered_write {
  bool valid;
  uint64_t offset;
  uint64_t length;
  uint8_t *before;
} remembered_write;

typedef struct memory_file {
  int references; /* 0: the slot is free */
  byte_image volatile_image;
  byte_image durable_image;
  uint64_t allocated; /* charged to capacity: size plus queued growth */
  bool dirty;         /* volatile differs from durable in [dirty_low, dirty_high) */
  uint64_t dirty_low;
  uint64_t dirty_high;
  bool has_unsynced_write; /* the newest write applied since the last sync */
  uint64_t unsynced_offset;
  uint64_t unsynced_length;
  remembered_write last_durable_write;
} memory_file;

typedef struct directory_entry {
  char name[MEMORY_NAME_BYTES];
  int file;
} directory_entry;

typedef struct directory_view {
  directory_entry entries[MEMORY_MAX_ENTRIES];
  int count;
} directory_view;

typedef struct memory_handle {
  bool in_use;
  bool writable;
  int file; /* -1: stale, its file was lost in a crash */
} memory_handle;

typedef enum pending_state {
  PENDING_QUEUED = 0,
  PENDING_SUBMITTED = 1,
  PENDING_DROPPED = 2,
} pending_state;

typedef struct pending_write {
  int file; /* holds a reference until reported, as the kernel would */
  uint64_t offset;
  struct iovec *iov; /* a copy: the caller's array may be gone by reap */
  int count;
  bool sync;
  uint64_t token;
  pending_state state;
} pending_write;

typedef struct memory_io {
  wal_io base;
  wal_io_memory_faults faults;
  uint64_t used_bytes;
  uint64_t sync_count;
  memory_file files[MEMORY_MAX_FILES];
  memory_handle handles[MEMORY_MAX_HANDLES];
  directory_view current;
  directory_view durable;
  pending_write pending[MEMORY_MAX_PENDING]; /* FIFO ring */
  int pending_head;
  int pending_count;
} memory_io;

static memory_io *memory_of(wal_io *io) {
  return (memory_io *)io;
}

static void memory_crash(memory_io *m);
static void memory_check_invariants(const memory_io *m);

/* ---- byte images ---- */

static int image_reserve(byte_image *image, uint64_t length) {
  if (length <= image->capacity) {
    return 0;
  }
  uint64_t capacity = image->capacity < 4096 ? 4096 : image->capacity;
  while (capacity < length) {
    capacity *= 2;
  }
  uint8_t *bytes = realloc(image->bytes, capacity);
  if (bytes == NULL) {
    return -ENOMEM;
  }
  image->bytes = bytes;
  image->capacity = capacity;
  return 0;
}

static int image_write(byte_image *image, uint64_t offset, const void *data, uint64_t length) {
  uint64_t end = offset + length;
  if (length == 0) {
    return 0;
  }
  if (end > image->length) {
    int rc = image_reserve(image, end);
    if (rc != 0) {
      return rc;
    }
    if (offset > image->length) {
      memset(image->bytes + image->length, 0, offset - image->length);
    }
    image->length = end;
  }
  memcpy(image->bytes + offset, data, length);
  if (end > image->size) {
    image->size = end;
  }
  return 0;
}

static void image_read(const byte_image *image, uint64_t offset, void *out, uint64_t length) {
  uint64_t stored = 0;
  if (offset < image->length) {
    stored = image->length - offset < length ? image->length - offset : length;
    memcpy(out, image->bytes + offset, stored);
  }
  memset((uint8_t *)out + stored, 0, length - stored);
}

static int image_assign(byte_image *target, const byte_image *source) {
  int rc = image_reserve(target, source->length);
  if (rc != 0) {
    return rc;
  }
  if (source->length > 0) {
    memcpy(target->bytes, source->bytes, source->length);
  }
  target->length = source->length;
  target->size = source->size;
  return 0;
}

static void image_free(byte_image *image) {
  free(image->bytes);
  *image = (byte_image){0};
}

/* ---- files and references ---- */

static int file_allocate(memory_io *m) {
  for (int i = 0; i < MEMORY_MAX_FILES; i++) {
    if (m->files[i].references == 0) {
      return i;
    }
  }
  return -ENFILE;
}

static void file_reference(memory_io *m, int file) {
  m->files[file].references++;
}

static void file_release(memory_io *m, int file) {
  memory_file *f = &m->files[file];
  assert(f->references > 0);
  if (--f->references > 0) {
    return;
  }
  m->used_bytes -= f->allocated;
  image_free(&f->volatile_image);
  image_free(&f->durable_image);
  free(f->last_durable_write.before);
  *f = (memory_file){0};
}

/* Charges growth of a file to the capacity before any byte is written. */
static int file_grow(memory_io *m, memory_file *f, uint64_t end) {
  if (end > MEMORY_MAX_FILE_BYTES) {
    return -EFBIG;
  }
  if (end <= f->allocated) {
    return 0;
  }
  uint64_t growth = end - f->allocated;
  if (m->faults.capacity_bytes != 0 && m->used_bytes + growth > m->faults.capacity_bytes) {
    return -ENOSPC;
  }
  f->allocated = end;
  m->used_bytes += growth;
  return 0;
}

/* ---- directory views ---- */

static int view_find(const directory_view *view, const char *name) {
  for (int i = 0; i < view->count; i++) {
    if (strcmp(view->entries[i].name, name) == 0) {
      return i;
    }
  }
  return -1;
}

static void view_remove_at(memory_io *m, directory_view *view, int index) {
  file_release(m, view->entries[index].file);
  view->entries[index] = view->entries[view->count - 1];
  view->count--;
}

/* Points `name` at `file`, replacing what it named (rename semantics). */
static int view_set(memory_io *m, directory_view *view, const char *name, int file) {
  int index = view_find(view, name);
  if (index < 0) {
    if (view->count == MEMORY_MAX_ENTRIES) {
      return -ENOSPC;
    }
    index = view->count++;
    strcpy(view->entries[index].name, name);
  } else {
    file_release(m, view->entries[index].file);
  }
  file_reference(m, file);
  view->entries[index].file = file;
  return 0;
}

static void view_copy(memory_io *m, directory_view *target, const directory_view *source) {
  /* Reference first, release after: a file in both views never drops to 0. */
  for (int i = 0; i < source->count; i++) {
    file_reference(m, source->entries[i].file);
  }
  for (int i = 0; i < target->count; i++) {
    file_release(m, target->entries[i].file);
  }
  memcpy(target->entries, source->entries, sizeof(source->entries[0]) * (size_t)source->count);
  target->count = source->count;
}

static int check_name(const char *name) {
  size_t length = strlen(name);
  if (length == 0 || strchr(name, '/') != NULL) {
    return -EINVAL;
  }
  return length >= MEMORY_NAME_BYTES ? -ENAMETOOLONG : 0;
}

/* ---- handles ---- */

static int handle_allocate(memory_io *m, int file, bool writable) {
  for (int i = 0; i < MEMORY_MAX_HANDLES; i++) {
    if (!m->handles[i].in_use) {
      m->handles[i] = (memory_handle){.in_use = true, .writable = writable, .file = file};
      file_reference(m, file);
      return i;
    }
  }
  return -EMFILE;
}

/* The file behind a handle: -EBADF for no handle, -EIO for one that died
 * in a crash, -EBADF for writing through a read-only one. */
static int handle_file(memory_io *m, int handle, bool for_writing) {
  if (handle < 0 || handle >= MEMORY_MAX_HANDLES || !m->handles[handle].in_use) {
    return -EBADF;
  }
  const memory_handle *h = &m->handles[handle];
  if (h->file < 0) {
    return -EIO;
  }
  if (for_writing && !h->writable) {
    return -EBADF;
  }
  return h->file;
}

static int memory_open(wal_io *io, const char *name, bool writable) {
  memory_io *m = memory_of(io);
  int index = view_find(&m->current, name);
  if (index < 0) {
    return -ENOENT;
  }
  return handle_allocate(m, m->current.entries[index].file, writable);
}

/* O_TRUNC on an existing file keeps its identity (other names and handles
 * see the truncation); create's fsync makes the zeroed size durable. */
static int truncate_existing(memory_io *m, int file, uint64_t size) {
  memory_file *f = &m->files[file];
  uint64_t allocated = f->allocated;
  m->used_bytes -= allocated;
  f->allocated = 0;
  int rc = file_grow(m, f, size);
  if (rc != 0) {
    f->allocated = allocated;
    m->used_bytes += allocated;
    return rc;
  }
  f->volatile_image.length = f->durable_image.length = 0;
  f->volatile_image.size = f->durable_image.size = size;
  f->dirty = f->has_unsynced_write = false;
  free(f->last_durable_write.before);
  f->last_durable_write = (remembered_write){0}; /* its bytes are gone */
  return handle_allocate(m, file, true);
}

static int memory_create(wal_io *io, const char *name, uint64_t size) {
  memory_io *m = memory_of(io);
  int rc = check_name(name);
  if (rc != 0) {
    return rc;
  }
  int index = view_find(&m->current, name);
  if (index >= 0) {
    return truncate_existing(m, m->current.entries[index].file, size);
  }
  int file = file_allocate(m);
  if (file < 0) {
    return file;
  }
  memory_file *f = &m->files[file];
  file_reference(m, file); /* held while being set up */
  rc = file_grow(m, f, size);
  if (rc == 0) {
    f->volatile_image.size = f->durable_image.size = size;
    rc = view_set(m, &m->current, name, file);
  }
  if (rc == 0) {
    rc = handle_allocate(m, file, true);
  }
  file_release(m, file);
  return rc;
}

static int memory_close(wal_io *io, int handle) {
  memory_io *m = memory_of(io);
  if (handle < 0 || handle >= MEMORY_MAX_HANDLES || !m->handles[handle].in_use) {
    return -EBADF;
  }
  if (m->handles[handle].file >= 0) {
    file_release(m, m->handles[handle].file);
  }
  m->handles[handle] = (memory_handle){0};
  return 0;
}

static int memory_rename(wal_io *io, const char *from, const char *to) {
  memory_io *m = memory_of(io);
  int rc = check_name(to);
  int index = view_find(&m->current, from);
  if (rc != 0 || index < 0) {
    return rc != 0 ? rc : -ENOENT;
  }
  int file = m->current.entries[index].file;
  if (strcmp(from, to) == 0) {
    return 0;
  }
  file_reference(m, file); /* keep it alive between unlinking and linking */
  view_remove_at(m, &m->current, index);
  rc = view_set(m, &m->current, to, file);
  file_release(m, file);
  memory_check_invariants(m);
  return rc;
}

static int memory_unlink(wal_io *io, const char *name) {
  memory_io *m = memory_of(io);
  int index = view_find(&m->current, name);
  if (index < 0) {
    return -ENOENT;
  }
  view_remove_at(m, &m->current, index);
  memory_check_invariants(m);
  return 0;
}

/* Counts a sync down to its injected failure; true when this one fails. */
static bool sync_fails(memory_io *m) {
  if (m->faults.fail_sync_after < 0) {
    return false;
  }
  if (m->faults.fail_sync_after-- == 0) {
    m->faults.fail_sync_after = -1; /* one failure per arming */
    return true;
  }
  return false;
}

static int memory_sync_directory(wal_io *io) {
  memory_io *m = memory_of(io);
  if (sync_fails(m)) {
    return -EIO; /* and nothing became durable */
  }
  view_copy(m, &m->durable, &m->current);
  m->sync_count++;
  memory_check_invariants(m);
  return 0;
}

static int memory_list(wal_io *io, wal_io_list_fn callback, void *context) {
  memory_io *m = memory_of(io);
  for (int i = 0; i < m->current.count; i++) {
    int rc = callback(context, m->current.entries[i].name);
    if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

static int memory_size(wal_io *io, int handle, uint64_t *size) {
  memory_io *m = memory_of(io);
  int file = handle_file(m, handle, false);
  if (file < 0) {
    return file;
  }
  *size = m->files[file].volatile_image.size;
  return 0;
}

static int memory_read(wal_io *io, int handle, uint64_t offset, void *buffer, size_t length) {
  memory_io *m = memory_of(io);
  int file = handle_file(m, handle, false);
  if (file < 0) {
    return file;
  }
  const byte_image *image = &m->files[file].volatile_image;
  if (offset > image->size || length > image->size - offset) {
    return -EIO;
  }
  image_read(image, offset, buffer, length);
  return 0;
}

/* ---- writes and syncs ---- */

/* The fault counters of one write about to land: 0 to go on, -EIO when it
 * fails or the machine crashes first (then nothing of it lands). */
static int write_faults(memory_io *m) {
  if (m->faults.crash_after_writes >= 0 && m->faults.crash_after_writes-- == 0) {
    m->faults.crash_after_writes = -1;
    memory_crash(m);
    return -EIO;
  }
  if (m->faults.fail_write_after >= 0 && m->faults.fail_write_after-- == 0) {
    m->faults.fail_write_after = -1; /* one failure per arming */
    return -EIO;
  }
  return 0;
}

static void note_write(memory_file *f, uint64_t offset, uint64_t length) {
  uint64_t end = offset + length;
  if (!f->dirty) {
    f->dirty_low = offset;
    f->dirty_high = end;
  }
  f->dirty_low = offset < f->dirty_low ? offset : f->dirty_low;
  f->dirty_high = end > f->dirty_high ? end : f->dirty_high;
  f->dirty = true;
  f->has_unsynced_write = true;
  f->unsynced_offset = offset;
  f->unsynced_length = length;
}

static int apply_iovecs(memory_file *f, uint64_t offset, const struct iovec *iov, int count) {
  uint64_t start = offset;
  for (int i = 0; i < count; i++) {
    int rc = image_write(&f->volatile_image, offset, iov[i].iov_base, iov[i].iov_len);
    if (rc != 0) {
      return rc;
    }
    offset += iov[i].iov_len;
  }
  if (offset > start) {
    note_write(f, start, offset - start);
  }
  return 0;
}

/* Remembers the newest write this sync makes durable, with the durable
 * bytes it is about to replace. */
static int remember_durable_write(memory_file *f) {
  remembered_write *last = &f->last_durable_write;
  uint8_t *before = malloc(f->unsynced_length);
  if (before == NULL) {
    return -ENOMEM;
  }
  image_read(&f->durable_image, f->unsynced_offset, before, f->unsynced_length);
  free(last->before);
  *last = (remembered_write){
      .valid = true, .offset = f->unsynced_offset, .length = f->unsynced_length, .before = before};
  return 0;
}

static int sync_file(memory_io *m, memory_file *f) {
  if (sync_fails(m)) {
    return -EIO; /* a failed sync must not make anything durable */
  }
  int rc = f->has_unsynced_write ? remember_durable_write(f) : 0;
  if (rc == 0 && f->dirty) {
    const byte_image *source = &f->volatile_image;
    rc = image_write(&f->durable_image, f->dirty_low, source->bytes + f->dirty_low,
                     f->dirty_high - f->dirty_low);
  }
  if (rc != 0) {
    return rc;
  }
  f->durable_image.size = f->volatile_image.size;
  f->dirty = f->has_unsynced_write = false;
  m->sync_count++;
  return 0;
}

static int memory_write_sync(wal_io *io, int handle, uint64_t offset, const void *buffer,
                             size_t length) {
  memory_io *m = memory_of(io);
  int file = handle_file(m, handle, true);
  if (file < 0) {
    return file;
  }
  memory_file *f = &m->files[file];
  int rc = file_grow(m, f, offset + length);
  if (rc == 0) {
    rc = write_faults(m);
  }
  if (rc != 0) {
    return rc;
  }
  struct iovec iov = {.iov_base = (void *)buffer, .iov_len = length};
  rc = apply_iovecs(f, offset, &iov, 1);
  return rc != 0 ? rc : sync_file(m, f);
}

static int queue_reserve(memory_io *m, memory_file *f, uint64_t offset, const struct iovec *iov,
                         int count) {
  if (count < 0) {
    return -EINVAL;
  }
  if (m->pending_count == MEMORY_MAX_PENDING) {
    return -EBUSY;
  }
  uint64_t end = offset;
  for (int i = 0; i < count; i++) {
    end += iov[i].iov_len;
  }
  return file_grow(m, f, end);
}

static int memory_queue_write(wal_io *io, int handle, uint64_t offset, const struct iovec *iov,
                              int count, bool sync, uint64_t token) {
  memory_io *m = memory_of(io);
  int file = handle_file(m, handle, true);
  if (file < 0) {
    return file;
  }
  int rc = queue_reserve(m, &m->files[file], offset, iov, count);
  if (rc != 0) {
    return rc;
  }
  struct iovec *copy = NULL;
  if (count > 0) {
    copy = malloc(sizeof(*copy) * (size_t)count);
    if (copy == NULL) {
      return -ENOMEM;
    }
    memcpy(copy, iov, sizeof(*copy) * (size_t)count);
  }
  int slot = (m->pending_head + m->pending_count) % MEMORY_MAX_PENDING;
  m->pending[slot] = (pending_write){.file = file,
                                     .offset = offset,
                                     .iov = copy,
                                     .count = count,
                                     .sync = sync,
                                     .token = token,
                                     .state = PENDING_QUEUED};
  file_reference(m, file);
  m->pending_count++;
  return 0;
}

static int memory_submit(wal_io *io) {
  memory_io *m = memory_of(io);
  for (int i = 0; i < m->pending_count; i++) {
    pending_write *p = &m->pending[(m->pending_head + i) % MEMORY_MAX_PENDING];
    if (p->state == PENDING_QUEUED) {
      p->state = PENDING_SUBMITTED;
    }
  }
  return 0;
}

/* Runs one submitted unit: the write (if any), then the sync (if asked);
 * a failed write cancels the sync, as a broken io_uring link does. */
static int apply_pending(memory_io *m, const pending_write *p) {
  memory_file *f = &m->files[p->file];
  if (p->count > 0) {
    int rc = write_faults(m);
    if (rc == 0) {
      rc = apply_iovecs(f, p->offset, p->iov, p->count);
    }
    if (rc != 0) {
      return rc;
    }
  }
  return p->sync ? sync_file(m, f) : 0;
}

static int memory_reap(wal_io *io, wal_io_completion *out, int capacity, bool wait) {
  memory_io *m = memory_of(io);
  (void)wait; /* submitted writes finish at once: never anything to wait for */
  int count = 0;
  while (count < capacity && m->pending_count > 0) {
    pending_write *p = &m->pending[m->pending_head];
    if (p->state == PENDING_QUEUED) {
      break;
    }
    /* A crash inside apply_pending drops the rest, this one included. */
    int result = p->state == PENDING_DROPPED ? -EIO : apply_pending(m, p);
    out[count++] = (wal_io_completion){.token = p->token, .result = result};
    free(p->iov);
    file_release(m, p->file);
    *p = (pending_write){0};
    m->pending_head = (m->pending_head + 1) % MEMORY_MAX_PENDING;
    m->pending_count--;
  }
  return count;
}

/* ---- crash, faults and inspection ---- */

static void memory_crash(memory_io *m) {
  for (int i = 0; i < m->pending_count; i++) {
    m->pending[(m->pending_head + i) % MEMORY_MAX_PENDING].state = PENDING_DROPPED;
  }
  for (int i = 0; i < MEMORY_MAX_HANDLES; i++) {
    if (m->handles[i].in_use && m->handles[i].file >= 0) {
      file_release(m, m->handles[i].file);
      m->handles[i].file = -1;
    }
  }
  view_copy(m, &m->current, &m->durable);
  m->used_bytes = 0;
  for (int i = 0; i < MEMORY_MAX_FILES; i++) {
    memory_file *f = &m->files[i];
    if (f->references == 0) {
      continue;
    }
    if (image_assign(&f->volatile_image, &f->durable_image) != 0) {
      abort(); /* a crash cannot fail halfway; out of memory in a test twin */
    }
    f->dirty = f->has_unsynced_write = false;
    f->allocated = f->durable_image.size;
    m->used_bytes += f->allocated;
  }
}

static void count_view_references(const directory_view *view, int *references) {
  for (int i = 0; i < view->count; i++) {
    references[view->entries[i].file]++;
  }
}

/* Recounts every reference and byte; cheap enough to run after each
 * directory change and crash, never on the write path. */
static void memory_check_invariants(const memory_io *m) {
  int references[MEMORY_MAX_FILES] = {0};
  count_view_references(&m->current, references);
  count_view_references(&m->durable, references);
  for (int i = 0; i < MEMORY_MAX_HANDLES; i++) {
    if (m->handles[i].in_use && m->handles[i].file >= 0) {
      references[m->handles[i].file]++;
    }
  }
  for (int i = 0; i < m->pending_count; i++) {
    references[m->pending[(m->pending_head + i) % MEMORY_MAX_PENDING].file]++;
  }
  uint64_t used = 0;
  for (int i = 0; i < MEMORY_MAX_FILES; i++) {
    const memory_file *f = &m->files[i];
    assert(f->references == references[i]);
    assert(f->durable_image.size <= f->volatile_image.size);
    used += f->allocated;
  }
  assert(used == m->used_bytes);
  (void)used;
}

void wal_io_memory_crash(wal_io *io) {
  memory_crash(memory_of(io));
  memory_check_invariants(memory_of(io));
}

void wal_io_memory_set_faults(wal_io *io, const wal_io_memory_faults *faults) {
  memory_of(io)->faults = *faults;
}

uint64_t wal_io_memory_sync_count(const wal_io *io) {
  return ((const memory_io *)io)->sync_count;
}

static memory_file *file_named(memory_io *m, const char *name) {
  int index = view_find(&m->current, name);
  return index < 0 ? NULL : &m->files[m->current.entries[index].file];
}

/* Damage is done to the durable image and to what reads return, so a test
 * may inflict it before or after wal_io_memory_crash. */
static int damage(memory_file *f, uint64_t offset, const void *bytes, uint64_t length) {
  int rc = image_write(&f->durable_image, offset, bytes, length);
  if (rc == 0 && offset < f->volatile_image.size) {
    uint64_t room = f->volatile_image.size - offset;
    rc = image_write(&f->volatile_image, offset, bytes, length < room ? length : room);
  }
  return rc;
}

int wal_io_memory_tear_last_write(wal_io *io, const char *name, size_t keep_bytes) {
  memory_file *f = file_named(memory_of(io), name);
  if (f == NULL) {
    return -ENOENT;
  }
  const remembered_write *last = &f->last_durable_write;
  if (!last->valid) {
    return -ENODATA;
  }
  if (keep_bytes >= last->length) {
    return 0;
  }
  return damage(f, last->offset + keep_bytes, last->before + keep_bytes, last->length - keep_bytes);
}

int wal_io_memory_flip_bit(wal_io *io, const char *name, uint64_t offset, unsigned bit) {
  memory_file *f = file_named(memory_of(io), name);
  if (f == NULL) {
    return -ENOENT;
  }
  if (bit > 7) {
    return -EINVAL;
  }
  if (offset >= f->durable_image.size) {
    return -ERANGE;
  }
  uint8_t byte;
  image_read(&f->durable_image, offset, &byte, 1);
  byte ^= (uint8_t)(1u << bit);
  return damage(f, offset, &byte, 1);
}

static void memory_destroy(wal_io *io) {
  memory_io *m = memory_of(io);
  for (int i = 0; i < MEMORY_MAX_PENDING; i++) {
    free(m->pending[i].iov);
  }
  for (int i = 0; i < MEMORY_MAX_FILES; i++) {
    image_free(&m->files[i].volatile_image);
    image_free(&m->files[i].durable_image);
    free(m->files[i].last_durable_write.before);
  }
  free(m);
}

static const wal_io_ops memory_ops = {
    .open = memory_open,
    .create = memory_create,
    .close = memory_close,
    .rename = memory_rename,
    .unlink = memory_unlink,
    .sync_directory = memory_sync_directory,
    .list = memory_list,
    .size = memory_size,
    .read = memory_read,
    .write_sync = memory_write_sync,
    .queue_write = memory_queue_write,
    .submit = memory_submit,
    .reap = memory_reap,
    .destroy = memory_destroy,
};

wal_io *wal_io_memory_create(void) {
  memory_io *m = calloc(1, sizeof(*m));
  if (m == NULL) {
    return NULL;
  }
  m->base.ops = &memory_ops;
  m->faults = (wal_io_memory_faults){
      .fail_sync_after = -1, .fail_write_after = -1, .crash_after_writes = -1, .capacity_bytes = 0};
  return &m->base;
}
