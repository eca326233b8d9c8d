/*
 * snapshot.c - snapshots of a replica's state machine: taken in the
 * background of the shard's work, used to compact the log, streamed to
 * followers behind the compacted log, installed, and loaded at restart.
 *
 * A snapshot is a file snapshots/<group>-<index>.snap in the shard's
 * directory:
 *
 *   snapshot_file_header (40 bytes, little-endian), the encoded
 *   configuration (conf_length bytes), then the state machine's stream:
 *   the KV store's own checksummed format (engine/kv.h; header.payload
 *   SNAPSHOT_PAYLOAD_KV), or a user machine's save() bytes followed by a
 *   snapshot_user_trailer (length, XXH3-64; SNAPSHOT_PAYLOAD_USER)
 *
 * Taking one (replica at applied index I):
 *   SAVING --chunks of the pinned version, a budget per iteration--> written
 *   --fsync, rename, directory fsync--> durable --> WAL marker at I (the
 *   WAL drops entries <= I), core compacted to I, older files removed.
 * The KV store's snapshot is copy-on-write: writes go on while it streams.
 * A user machine has none: its save() runs whole, on the shard thread, at
 * the applied index where the snapshot falls due (the shard stalls for the
 * save's duration); publishing and compaction then follow as for KV.
 *
 * Loading a user stream: its length and checksum are verified first, then
 * restore() fills a FRESH state from create(); only when it succeeds does
 * that state replace the replica's (restore() failing leaves the old one).
 *
 * Sending one (the core asks with a SNAPSHOT message for a follower):
 *   the file goes in FRAME_SNAPSHOT_CHUNKs on the transport's bulk class,
 *   as much as the peer's bulk queue takes each iteration (flow control),
 *   with the header's leader_term set to the sender's term; the receiver
 *   acknowledges the whole stream; the core hears report_snapshot().
 * Receiving one: chunks are written in order to a temporary file; the last
 * one is verified by restoring the state machine from it, made durable,
 * and the SNAPSHOT message rebuilt from the header is stepped into the
 * core, which, if it takes it, hands it back as the update's snapshot to
 * install (the state restored at receipt, WAL marker). The shard keeps one
 * such state, the last received, until the end of the loop iteration (the
 * install happens within it); without it the install restores the file.
 */
#include "engine/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "transport/codec.h"
#include "transport/transport.h"

/* Bytes of one read of the pinned version or of a file. */
#define SNAPSHOT_CHUNK_BYTES (256u << 10)

struct snapshot_save {
  kv_snapshot *reader; /* NULL for a user machine: its stream is written */
  int fd;
  uint64_t index;
  uint64_t term;
  fl_raft_conf conf;
};

/* ---- paths ---------------------------------------------------------------- */

static void directory_of(const shard *s, char *out, size_t size) {
  snprintf(out, size, "%s/shard-%u/snapshots", s->engine->data_dir, s->index);
}

void snapshot_path(const shard *s, uint64_t group, uint64_t index, const char *suffix, char *out,
                   size_t size) {
  char directory[4096];
  directory_of(s, directory, sizeof(directory));
  snprintf(out, size, "%s/%016llx-%016llx%s", directory, (unsigned long long)group,
           (unsigned long long)index, suffix);
}

static int sync_directory(const shard *s) {
  char directory[4096];
  directory_of(s, directory, sizeof(directory));
  int fd = open(directory, O_RDONLY | O_DIRECTORY);
  if (fd < 0) {
    return -errno;
  }
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  return rc;
}

void snapshot_remove_files(shard *s, uint64_t group, uint64_t index) {
  static const char *const suffixes[] = {".snap", ".tmp", ".recv"};
  for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
    char path[4200];
    snapshot_path(s, group, index, suffixes[i], path, sizeof(path));
    unlink(path); /* most of them do not exist */
  }
}

int snapshot_prepare_directory(shard *s) {
  char directory[4096];
  directory_of(s, directory, sizeof(directory));
  if (mkdir(directory, 0755) != 0 && errno != EEXIST) {
    return -errno;
  }
  return 0;
}

static int write_all(int fd, const void *bytes, size_t length) {
  const uint8_t *p = bytes;
  while (length > 0) {
    ssize_t n = write(fd, p, length);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return -errno;
    }
    p += n;
    length -= (size_t)n;
  }
  return 0;
}

/* Makes a written temporary file durable under its final name. */
static int publish(shard *s, int fd, const char *temporary, const char *final) {
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  if (rc == 0 && rename(temporary, final) != 0) {
    rc = -errno;
  }
  return rc == 0 ? sync_directory(s) : rc;
}

/* ---- taking a snapshot ------------------------------------------------- */

static int write_header(int fd, uint64_t index, uint64_t term, const fl_raft_conf *conf,
                        snapshot_payload payload) {
  uint8_t conf_bytes[SNAPSHOT_MAX_CONF_BYTES];
  size_t conf_length = fl_raft_conf_encode(conf, conf_bytes, sizeof(conf_bytes));
  snapshot_file_header header = {.magic = SNAPSHOT_MAGIC,
                                 .version = SNAPSHOT_VERSION,
                                 .index = index,
                                 .term = term,
                                 .conf_length = (uint32_t)conf_length,
                                 .payload = payload};
  int rc = write_all(fd, &header, sizeof(header));
  return rc == 0 ? write_all(fd, conf_bytes, conf_length) : rc;
}

bool snapshot_supported(const fl_engine *engine) {
  return !engine->custom_machine ||
         (engine->machine.save != NULL && engine->machine.restore != NULL);
}

bool snapshot_due(const replica *r) {
  const fl_engine *e = r->owner->engine;
  uint32_t every = e->options.snapshot_entries;
  uint64_t since =
      r->snapshot_index > r->snapshot_retry_index ? r->snapshot_index : r->snapshot_retry_index;
  return r->saving == NULL && every > 0 && r->applied >= since + every && snapshot_supported(e);
}

/* ---- a user machine's stream ------------------------------------------- */

/* Where save() writes: buffered into the file, hashed on the way. */
typedef struct user_sink {
  int fd;
  uint8_t *buffer;
  size_t used;
  uint64_t length;
  XXH3_state_t *hash;
  int error;
} user_sink;

static int sink_flush(user_sink *sink) {
  if (sink->error == 0 && sink->used > 0) {
    sink->error = write_all(sink->fd, sink->buffer, sink->used);
  }
  sink->used = 0;
  return sink->error;
}

static int sink_write(void *context, const void *bytes, size_t length) {
  user_sink *sink = context;
  if (sink->error == 0 && length > 0 && bytes == NULL) {
    sink->error = -EINVAL; /* the stream is short now: it must not publish */
    return FL_E_INVALID;
  }
  if (sink->error != 0) {
    return FL_E_IO;
  }
  XXH3_64bits_update(sink->hash, bytes, length);
  sink->length += length;
  const uint8_t *p = bytes;
  while (length > 0) {
    size_t n = SNAPSHOT_CHUNK_BYTES - sink->used;
    n = n < length ? n : length;
    memcpy(sink->buffer + sink->used, p, n);
    sink->used += n;
    p += n;
    length -= n;
    if (sink->used == SNAPSHOT_CHUNK_BYTES && sink_flush(sink) != 0) {
      return FL_E_IO;
    }
  }
  return 0;
}

/* Runs save() whole into fd, then the trailer. */
static int save_user_stream(replica *r, int fd) {
  const fl_state_machine *m = &r->owner->engine->machine;
  user_sink sink = {.fd = fd, .buffer = malloc(SNAPSHOT_CHUNK_BYTES), .hash = XXH3_createState()};
  int rc = sink.buffer == NULL || sink.hash == NULL || XXH3_64bits_reset(sink.hash) != XXH_OK
               ? -ENOMEM
               : 0;
  if (rc == 0) {
    int saved = m->save(r->machine, sink_write, &sink);
    rc = sink_flush(&sink);
    if (rc == 0 && saved != 0) {
      shard_log(r->owner, 3, "group %llu: the state machine's save() failed (%d)",
                (unsigned long long)r->group, saved);
      rc = -EIO;
    }
  }
  if (rc == 0) {
    snapshot_user_trailer trailer = {.stream_bytes = sink.length,
                                     .checksum = XXH3_64bits_digest(sink.hash)};
    rc = write_all(fd, &trailer, sizeof(trailer));
  }
  free(sink.buffer);
  XXH3_freeState(sink.hash);
  return rc;
}

/* Starts the file and pins (KV) or writes (user) the machine's state. */
static int begin_stream(replica *r, snapshot_save *save) {
  shard *s = r->owner;
  bool user = s->engine->custom_machine;
  int rc = user ? 0 : kv_snapshot_begin(r->machine, &save->reader);
  if (rc == 0) {
    rc = write_header(save->fd, save->index, save->term, &save->conf,
                      user ? SNAPSHOT_PAYLOAD_USER : SNAPSHOT_PAYLOAD_KV);
  }
  if (rc == 0 && user) {
    rc = save_user_stream(r, save->fd);
  }
  return rc;
}

int snapshot_start(replica *r) {
  shard *s = r->owner;
  if (!s->engine->custom_machine && r->machine == NULL &&
      kv_create((kv_store **)&r->machine) != 0) {
    return -ENOMEM;
  }
  snapshot_save *save = calloc(1, sizeof(*save));
  if (save == NULL) {
    return -ENOMEM;
  }
  fl_raft_status status;
  fl_raft_get_status(r->raft, &status);
  *save = (snapshot_save){.index = r->applied, .term = r->applied_term, .conf = status.conf};
  char temporary[4200];
  snapshot_path(s, r->group, save->index, ".tmp", temporary, sizeof(temporary));
  save->fd = open(temporary, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  int rc = save->fd < 0 ? -errno : begin_stream(r, save);
  if (rc != 0) {
    if (save->reader != NULL) {
      kv_snapshot_end(save->reader);
    }
    if (save->fd >= 0) {
      close(save->fd);
      unlink(temporary);
    }
    free(save);
    /* not again before another snapshot_entries applied: a save that
     * fails must not run again after every apply */
    r->snapshot_retry_index = r->applied;
    return rc < 0 && rc > -2000 ? rc : -EIO;
  }
  r->saving = save;
  return 0;
}

static void remove_older_files(shard *s, uint64_t group, uint64_t keep_index,
                               uint64_t previous_index) {
  if (previous_index == 0 || previous_index == keep_index) {
    return;
  }
  char path[4200];
  snapshot_path(s, group, previous_index, ".snap", path, sizeof(path));
  unlink(path); /* a leftover costs disk, never correctness */
}

/* The file is durable: the WAL marker, then the core forgets the log. */
static int finish_save(replica *r, snapshot_save *save) {
  shard *s = r->owner;
  char temporary[4200];
  char final[4200];
  snapshot_path(s, r->group, save->index, ".tmp", temporary, sizeof(temporary));
  snapshot_path(s, r->group, save->index, ".snap", final, sizeof(final));
  int rc = publish(s, save->fd, temporary, final);
  save->fd = -1;
  if (rc == 0) {
    rc = snapshot_record_marker(r, save->index, save->term, &save->conf);
  }
  if (rc == 0) {
    uint64_t previous = r->snapshot_index;
    r->snapshot_index = save->index;
    r->snapshot_term = save->term;
    fl_raft_compact(r->raft, save->index);
    remove_older_files(s, r->group, save->index, previous);
    s->markers_since_collection++;
  }
  return rc;
}

static int finish_user_save(replica *r, snapshot_save *save) {
  int rc = finish_save(r, save);
  free(save);
  r->saving = NULL;
  return rc == 0 ? 1 : rc;
}

/* Writes up to `budget` bytes of the pinned version; 1 when finished. */
int snapshot_continue(replica *r, uint32_t budget) {
  snapshot_save *save = r->saving;
  if (save->reader == NULL) {
    return finish_user_save(r, save); /* written whole when it started */
  }
  uint8_t *buffer = arena_allocate(&r->owner->scratch, SNAPSHOT_CHUNK_BYTES);
  if (buffer == NULL) {
    return -ENOMEM;
  }
  bool done = false;
  int rc = 0;
  for (uint32_t written = 0; written < budget && !done && rc == 0;) {
    size_t length = 0;
    rc = kv_snapshot_read(save->reader, buffer, SNAPSHOT_CHUNK_BYTES, &length, &done);
    rc = rc == 0 ? write_all(save->fd, buffer, length) : -EIO;
    written += (uint32_t)length;
  }
  if (rc != 0 || !done) {
    return rc;
  }
  kv_snapshot_end(save->reader);
  save->reader = NULL;
  rc = finish_save(r, save);
  free(save);
  r->saving = NULL;
  return rc == 0 ? 1 : rc;
}

void snapshot_abandon_saving(replica *r) {
  if (r->saving != NULL) {
    if (r->saving->reader != NULL) {
      kv_snapshot_end(r->saving->reader);
    }
    if (r->saving->fd >= 0) {
      close(r->saving->fd);
    }
    free(r->saving);
    r->saving = NULL;
  }
}

void snapshot_abandon(replica *r) {
  snapshot_abandon_saving(r);
  snapshot_transfer_abandon(r);
}

int snapshot_record_marker(replica *r, uint64_t index, uint64_t term, const fl_raft_conf *conf) {
  uint8_t bytes[SNAPSHOT_MAX_CONF_BYTES];
  size_t length = fl_raft_conf_encode(conf, bytes, sizeof(bytes));
  wal *w = r->owner->log;
  int rc = wal_save_snapshot(w, r->group, index, term, bytes, (uint32_t)length, NULL);
  if (rc == -ENOBUFS) {
    rc = wal_flush(w);
    rc = rc == 0 ? wal_save_snapshot(w, r->group, index, term, bytes, (uint32_t)length, NULL) : rc;
  }
  return rc;
}

/* ---- loading a snapshot into the state machine -------------------------- */

/* Reads and checks a snapshot file's header: 0 or -EUCLEAN. */
int snapshot_read_header(int fd, uint64_t index, snapshot_file_header *header) {
  if (pread(fd, header, sizeof(*header), 0) != (ssize_t)sizeof(*header)) {
    return -EUCLEAN;
  }
  bool ok = header->magic == SNAPSHOT_MAGIC && header->version == SNAPSHOT_VERSION &&
            header->index == index && header->conf_length <= SNAPSHOT_MAX_CONF_BYTES &&
            (header->payload == SNAPSHOT_PAYLOAD_KV || header->payload == SNAPSHOT_PAYLOAD_USER);
  return ok ? 0 : -EUCLEAN;
}

/* The header's payload is the one this engine's state machine reads. */
static int check_payload_kind(const shard *s, const snapshot_file_header *header) {
  snapshot_payload expected =
      s->engine->custom_machine ? SNAPSHOT_PAYLOAD_USER : SNAPSHOT_PAYLOAD_KV;
  return header->payload == expected ? 0 : -EUCLEAN;
}

/* ---- a user machine's stream, read back --------------------------------- */

/* The byte range [start, end) of the user stream in its file. */
typedef struct user_source {
  int fd;
  uint64_t offset;
  uint64_t end;
} user_source;

static long source_read(void *context, void *bytes, size_t capacity) {
  user_source *source = context;
  uint64_t left = source->end - source->offset;
  size_t n = left < capacity ? (size_t)left : capacity;
  if (n == 0) {
    return 0;
  }
  if (bytes == NULL) {
    return -1;
  }
  ssize_t got = pread(source->fd, bytes, n, (off_t)source->offset);
  if (got <= 0) {
    return -1; /* the file was verified whole: a short read is an I/O error */
  }
  source->offset += (uint64_t)got;
  return (long)got;
}

/* Finds the user stream after the header and checks its trailer's length
 * and checksum against every byte: a damaged stream never reaches
 * restore(). 0 and the range, or -EUCLEAN. */
static int verify_user_stream(int fd, const snapshot_file_header *header, user_source *out) {
  struct stat st;
  uint64_t start = sizeof(*header) + header->conf_length;
  if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < start + sizeof(snapshot_user_trailer)) {
    return -EUCLEAN;
  }
  uint64_t end = (uint64_t)st.st_size - sizeof(snapshot_user_trailer);
  snapshot_user_trailer trailer;
  if (pread(fd, &trailer, sizeof(trailer), (off_t)end) != (ssize_t)sizeof(trailer) ||
      trailer.stream_bytes != end - start) {
    return -EUCLEAN;
  }
  uint8_t *buffer = malloc(SNAPSHOT_CHUNK_BYTES);
  XXH3_state_t *hash = XXH3_createState();
  int rc = buffer == NULL || hash == NULL || XXH3_64bits_reset(hash) != XXH_OK ? -ENOMEM : 0;
  for (uint64_t offset = start; rc == 0 && offset < end;) {
    uint64_t left = end - offset;
    size_t want = left < SNAPSHOT_CHUNK_BYTES ? (size_t)left : SNAPSHOT_CHUNK_BYTES;
    ssize_t n = pread(fd, buffer, want, (off_t)offset);
    if (n <= 0) {
      rc = -EUCLEAN;
      break;
    }
    XXH3_64bits_update(hash, buffer, (size_t)n);
    offset += (uint64_t)n;
  }
  if (rc == 0 && XXH3_64bits_digest(hash) != trailer.checksum) {
    rc = -EUCLEAN;
  }
  free(buffer);
  XXH3_freeState(hash);
  *out = (user_source){.fd = fd, .offset = start, .end = end};
  return rc;
}

/* A fresh state of the user machine restored from the verified file, in
 * *out; the caller owns it. restore() failing destroys it. */
static int restore_user(shard *s, uint64_t group, int fd, const snapshot_file_header *header,
                        void **out) {
  *out = NULL;
  user_source source;
  int rc = verify_user_stream(fd, header, &source);
  if (rc != 0) {
    shard_log(s, 3, "group %llu: snapshot %llu: the state machine's stream does not verify",
              (unsigned long long)group, (unsigned long long)header->index);
    return rc;
  }
  const fl_state_machine *m = &s->engine->machine;
  void *fresh = m->create(m->context, group);
  if (fresh == NULL) {
    return -ENOMEM;
  }
  int restored = m->restore(fresh, source_read, &source);
  if (restored != 0) {
    shard_log(s, 3, "group %llu: snapshot %llu: the state machine's restore() failed (%d)",
              (unsigned long long)group, (unsigned long long)header->index, restored);
    m->destroy(fresh);
    return -EUCLEAN;
  }
  *out = fresh;
  return 0;
}

/* Feeds the state machine's stream after the header into `into`, which is
 * replaced only when the whole stream verified. */
static int restore_from_file(int fd, const snapshot_file_header *header, kv_store *into) {
  kv_restore *restore = NULL;
  uint8_t *buffer = malloc(SNAPSHOT_CHUNK_BYTES);
  if (buffer == NULL || kv_restore_begin(into, &restore) != 0) {
    free(buffer);
    return -ENOMEM;
  }
  int rc = 0;
  off_t offset = (off_t)(sizeof(*header) + header->conf_length);
  for (;;) {
    ssize_t n = pread(fd, buffer, SNAPSHOT_CHUNK_BYTES, offset);
    if (n <= 0) {
      rc = n < 0 ? -errno : 0;
      break;
    }
    if (kv_restore_feed(restore, buffer, (size_t)n) != 0) {
      rc = -EUCLEAN;
      break;
    }
    offset += n;
  }
  free(buffer);
  if (rc != 0) {
    kv_restore_abort(restore);
    return rc;
  }
  return kv_restore_finish(restore) == 0 ? 0 : -EUCLEAN;
}

int snapshot_restore_file(shard *s, uint64_t group, int fd, uint64_t index, void **restored) {
  *restored = NULL;
  snapshot_file_header header;
  int rc = snapshot_read_header(fd, index, &header);
  rc = rc == 0 ? check_payload_kind(s, &header) : rc;
  if (rc != 0) {
    return rc;
  }
  if (s->engine->custom_machine) {
    return restore_user(s, group, fd, &header, restored);
  }
  kv_store *fresh = NULL;
  if (kv_create(&fresh) != 0) {
    return -ENOMEM;
  }
  rc = restore_from_file(fd, &header, fresh);
  if (rc != 0) {
    kv_destroy(fresh);
    return rc;
  }
  *restored = fresh;
  return 0;
}

/* The replica's state machine becomes the one in the file of (group,
 * index); it stays as it was when the file does not restore. */
static int load_into_replica(replica *r, int fd, const snapshot_file_header *header) {
  shard *s = r->owner;
  if (s->engine->custom_machine) {
    void *fresh = NULL;
    int rc = restore_user(s, r->group, fd, header, &fresh);
    if (rc == 0) {
      machine_destroy(s, r->machine);
      r->machine = fresh;
    }
    return rc;
  }
  if (r->machine == NULL && kv_create((kv_store **)&r->machine) != 0) {
    return -ENOMEM;
  }
  return restore_from_file(fd, header, r->machine);
}

/* Restores the replica's state machine from the file of (group, index),
 * or takes the state its transfer already restored from that file. */
int snapshot_load(replica *r, uint64_t index) {
  void *verified = snapshot_take_verified(r->owner, r->group, index);
  if (verified != NULL) {
    machine_destroy(r->owner, r->machine);
    r->machine = verified;
    return 0;
  }
  char path[4200];
  snapshot_path(r->owner, r->group, index, ".snap", path, sizeof(path));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    shard_log(r->owner, 3, "group %llu: snapshot %s missing", (unsigned long long)r->group, path);
    return -EUCLEAN;
  }
  snapshot_file_header header;
  int rc = snapshot_read_header(fd, index, &header);
  rc = rc == 0 ? check_payload_kind(r->owner, &header) : rc;
  if (rc == 0) {
    rc = load_into_replica(r, fd, &header);
  }
  close(fd);
  if (rc != 0) {
    shard_log(r->owner, 3, "group %llu: snapshot %s does not restore", (unsigned long long)r->group,
              path);
  }
  return rc;
}
