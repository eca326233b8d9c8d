/*
 * snapshot.c - snapshots of a replica's state machine: taken in the
 * background of the shard's work, used to compact the log, streamed to
 * followers behind the compacted log, installed, and loaded at restart.
 *
 * A snapshot is a file snapshots/<group>-<index>.snap in the shard's
 * directory:
 *
 *   snapshot_file_header (40 bytes, little-endian), the encoded
 *   configuration (conf_length bytes), then the state machine's stream
 *   (the KV store's own checksummed format, engine/kv.h)
 *
 * Taking one (replica at applied index I):
 *   SAVING --chunks of the pinned version, a budget per iteration--> written
 *   --fsync, rename, directory fsync--> durable --> WAL marker at I (the
 *   WAL drops entries <= I), core compacted to I, older files removed.
 * The KV store's snapshot is copy-on-write: writes go on while it streams.
 *
 * Sending one (the core asks with a SNAPSHOT message for a follower):
 *   the file goes in FRAME_SNAPSHOT_CHUNKs on the transport's bulk class,
 *   as much as the peer's bulk queue takes each iteration (flow control),
 *   with the header's leader_term set to the sender's term; the receiver
 *   acknowledges the whole stream; the core hears report_snapshot().
 * Receiving one: chunks are written in order to a temporary file; the last
 * one makes it durable and steps the SNAPSHOT message rebuilt from the
 * header into the core, which, if it takes it, hands it back as the
 * update's snapshot to install (restore the state machine from the file,
 * WAL marker).
 */
#include "engine/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport/codec.h"
#include "transport/transport.h"

/* Bytes of one read of the pinned version or of a file. */
#define SNAPSHOT_CHUNK_BYTES (256u << 10)

struct snapshot_save {
  kv_snapshot *reader;
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

static int write_header(int fd, uint64_t index, uint64_t term, const fl_raft_conf *conf) {
  uint8_t conf_bytes[SNAPSHOT_MAX_CONF_BYTES];
  size_t conf_length = fl_raft_conf_encode(conf, conf_bytes, sizeof(conf_bytes));
  snapshot_file_header header = {.magic = SNAPSHOT_MAGIC,
                                 .version = SNAPSHOT_VERSION,
                                 .index = index,
                                 .term = term,
                                 .conf_length = (uint32_t)conf_length};
  int rc = write_all(fd, &header, sizeof(header));
  return rc == 0 ? write_all(fd, conf_bytes, conf_length) : rc;
}

bool snapshot_due(const replica *r) {
  uint32_t every = r->owner->engine->options.snapshot_entries;
  return r->saving == NULL && every > 0 && r->applied >= r->snapshot.index + every &&
         !r->owner->engine->custom_machine;
}

int snapshot_start(replica *r) {
  shard *s = r->owner;
  if (r->machine == NULL && kv_create((kv_store **)&r->machine) != 0) {
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
  int rc = save->fd < 0 ? -errno : kv_snapshot_begin(r->machine, &save->reader);
  if (rc == 0) {
    rc = write_header(save->fd, save->index, save->term, &save->conf);
  }
  if (rc != 0) {
    if (save->reader != NULL) {
      kv_snapshot_end(save->reader);
    }
    if (save->fd >= 0) {
      close(save->fd);
    }
    free(save);
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
    uint64_t previous = r->snapshot.index;
    r->snapshot =
        (fl_raft_snapshot_meta){.index = save->index, .term = save->term, .conf = save->conf};
    fl_raft_compact(r->raft, save->index);
    remove_older_files(s, r->group, save->index, previous);
    s->markers_since_collection++;
  }
  return rc;
}

/* Writes up to `budget` bytes of the pinned version; 1 when finished. */
int snapshot_continue(replica *r, uint32_t budget) {
  snapshot_save *save = r->saving;
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
            header->index == index && header->conf_length <= SNAPSHOT_MAX_CONF_BYTES;
  return ok ? 0 : -EUCLEAN;
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

int snapshot_check_file(int fd, uint64_t index) {
  snapshot_file_header header;
  kv_store *scratch = NULL;
  int rc = snapshot_read_header(fd, index, &header);
  if (rc == 0 && kv_create(&scratch) != 0) {
    rc = -ENOMEM;
  }
  if (rc == 0) {
    rc = restore_from_file(fd, &header, scratch);
  }
  kv_destroy(scratch);
  return rc;
}

/* Restores the replica's KV store from the file of (group, index). */
int snapshot_load(replica *r, uint64_t index) {
  char path[4200];
  snapshot_path(r->owner, r->group, index, ".snap", path, sizeof(path));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    shard_log(r->owner, 3, "group %llu: snapshot %s missing", (unsigned long long)r->group, path);
    return -EUCLEAN;
  }
  snapshot_file_header header;
  int rc = snapshot_read_header(fd, index, &header);
  if (rc == 0 && r->machine == NULL && kv_create((kv_store **)&r->machine) != 0) {
    rc = -ENOMEM;
  }
  if (rc == 0) {
    rc = restore_from_file(fd, &header, r->machine);
  }
  close(fd);
  if (rc != 0) {
    shard_log(r->owner, 3, "group %llu: snapshot %s does not restore", (unsigned long long)r->group,
              path);
  }
  return rc;
}
