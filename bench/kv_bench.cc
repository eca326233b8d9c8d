// kv_bench.cc - micro-benchmarks of the KV state machine (Google Benchmark).
//
// Every point benchmark runs against one store of 1,000,000 keys shaped like
// redis-benchmark's ("key:000000123456", 16-byte values), probed in a
// pseudo-random order so caches do not flatter the tree.
//
//   BM_Get                 kv_get of a present key
//   BM_GetMissing          kv_get of an absent key
//   BM_PutOverwrite        kv_put replacing a present key's value
//   BM_InsertDelete        a new key put, then deleted (the size stays 1M)
//   BM_ApplySet            a SET command encoded and applied (Redis SET)
//   BM_ApplyIncrby         INCRBY 1 on a counter key (in place)
//   BM_PutUnderSnapshot    kv_put while a snapshot pins an older version:
//                          each write copies the path it changes once
//   BM_Scan/N              kv_scan of N entries from a random key
//   BM_SnapshotStream      a whole snapshot of the 1M keys read in 64 KiB
//                          chunks: bytes/s
//   BM_Restore             that stream restored into a fresh store: bytes/s
//
// Counters: target_ratio is 1 us / the time of one operation, so >= 1 meets
// the target of point operations well under a microsecond.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

extern "C" {
#include "engine/kv.h"
}

namespace {

constexpr uint32_t kKeys = 1000000;
constexpr double kTargetNanoseconds = 1000.0;

struct key_text {
  char bytes[32];
  size_t length;
};

key_text key_of(uint32_t number) {
  key_text key;
  key.length = static_cast<size_t>(
      std::snprintf(key.bytes, sizeof(key.bytes), "key:%012u", static_cast<unsigned>(number)));
  return key;
}

const uint8_t *bytes_of(const key_text &key) {
  return reinterpret_cast<const uint8_t *>(key.bytes);
}

// A permutation step: visits every number below kKeys once per cycle.
uint32_t next_number(uint32_t number) {
  return static_cast<uint32_t>((static_cast<uint64_t>(number) + 618033u) % kKeys);
}

const uint8_t kValue[16] = {'v', 'a', 'l', 'u', 'e', '-', '0', '1',
                            '2', '3', '4', '5', '6', '7', '8', '9'};

kv_store *shared_store() {
  static kv_store *store = [] {
    kv_store *kv = nullptr;
    if (kv_create(&kv) != 0) {
      return static_cast<kv_store *>(nullptr);
    }
    for (uint32_t i = 0, n = 0; i < kKeys; i++, n = next_number(n)) {
      key_text key = key_of(n * 2); // even numbers present, odd ones absent
      if (kv_put(kv, bytes_of(key), key.length, kValue, sizeof(kValue), 0) != 0) {
        return static_cast<kv_store *>(nullptr);
      }
    }
    kv_put(kv, reinterpret_cast<const uint8_t *>("counter"), 7,
           reinterpret_cast<const uint8_t *>("0"), 1, 0);
    return kv;
  }();
  return store;
}

void report(benchmark::State &state, int64_t operations,
            std::chrono::steady_clock::time_point start) {
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double nanoseconds = operations > 0 ? seconds * 1e9 / static_cast<double>(operations) : 0;
  state.counters["target_ratio"] = nanoseconds > 0 ? kTargetNanoseconds / nanoseconds : 0;
  state.SetItemsProcessed(operations);
}

void BM_Get(benchmark::State &state) {
  kv_store *kv = shared_store();
  uint32_t n = 12345;
  int64_t found = 0;
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    key_text key = key_of(n * 2);
    kv_entry entry;
    found += kv_get(kv, bytes_of(key), key.length, 0, &entry) ? 1 : 0;
    n = next_number(n);
  }
  if (found != state.iterations()) {
    state.SkipWithError("a present key was not found");
  }
  report(state, state.iterations(), start);
}

void BM_GetMissing(benchmark::State &state) {
  kv_store *kv = shared_store();
  uint32_t n = 777;
  int64_t found = 0;
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    key_text key = key_of(n * 2 + 1);
    kv_entry entry;
    found += kv_get(kv, bytes_of(key), key.length, 0, &entry) ? 1 : 0;
    n = next_number(n);
  }
  if (found != 0) {
    state.SkipWithError("an absent key was found");
  }
  report(state, state.iterations(), start);
}

void BM_PutOverwrite(benchmark::State &state) {
  kv_store *kv = shared_store();
  uint32_t n = 4242;
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    key_text key = key_of(n * 2);
    if (kv_put(kv, bytes_of(key), key.length, kValue, sizeof(kValue), 0) != 0) {
      state.SkipWithError("put failed");
      break;
    }
    n = next_number(n);
  }
  report(state, state.iterations(), start);
}

void BM_InsertDelete(benchmark::State &state) {
  kv_store *kv = shared_store();
  uint32_t n = 99;
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    key_text key = key_of(n * 2 + 1);
    bool existed = false;
    if (kv_put(kv, bytes_of(key), key.length, kValue, sizeof(kValue), 0) != 0 ||
        kv_delete(kv, bytes_of(key), key.length, &existed) != 0 || !existed) {
      state.SkipWithError("insert or delete failed");
      break;
    }
    n = next_number(n);
  }
  report(state, 2 * state.iterations(), start); // two operations per iteration
}

void BM_ApplySet(benchmark::State &state) {
  kv_store *kv = shared_store();
  uint32_t n = 31337;
  uint8_t command[128];
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    key_text key = key_of(n * 2);
    kv_set_command set{};
    set.key = bytes_of(key);
    set.key_length = key.length;
    set.value = kValue;
    set.value_length = sizeof(kValue);
    set.now_ms = 1700000000000ull;
    size_t length = 0;
    kv_result result;
    if (kv_command_encode_set(&set, command, sizeof(command), &length) != 0 ||
        kv_apply(kv, command, length, &result) != 0) {
      state.SkipWithError("SET failed");
      break;
    }
    n = next_number(n);
  }
  report(state, state.iterations(), start);
}

void BM_ApplyIncrby(benchmark::State &state) {
  kv_store *kv = shared_store();
  uint8_t command[64];
  size_t length = 0;
  kv_command_encode_incrby(0, reinterpret_cast<const uint8_t *>("counter"), 7, 1, command,
                           sizeof(command), &length);
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    kv_result result;
    if (kv_apply(kv, command, length, &result) != 0) {
      state.SkipWithError("INCRBY failed");
      break;
    }
  }
  report(state, state.iterations(), start);
}

void BM_PutUnderSnapshot(benchmark::State &state) {
  kv_store *kv = shared_store();
  kv_snapshot *snapshot = nullptr;
  if (kv_snapshot_begin(kv, &snapshot) != 0) {
    state.SkipWithError("no snapshot");
    return;
  }
  uint32_t n = 5;
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    key_text key = key_of(n * 2);
    if (kv_put(kv, bytes_of(key), key.length, kValue, sizeof(kValue), 0) != 0) {
      state.SkipWithError("put failed");
      break;
    }
    n = next_number(n);
  }
  report(state, state.iterations(), start);
  kv_snapshot_end(snapshot);
  state.counters["memory_MiB_after"] = static_cast<double>(kv_memory_bytes(kv)) / (1 << 20);
}

void BM_Scan(benchmark::State &state) {
  kv_store *kv = shared_store();
  const size_t count = static_cast<size_t>(state.range(0));
  std::vector<kv_entry> entries(count);
  uint32_t n = 1;
  int64_t returned = 0;
  for (auto _ : state) {
    key_text key = key_of(n * 2 + 1);
    returned +=
        static_cast<int64_t>(kv_scan(kv, bytes_of(key), key.length, 0, entries.data(), count));
    n = next_number(n);
  }
  state.SetItemsProcessed(returned);
}

std::vector<uint8_t> &stream_bytes() {
  static std::vector<uint8_t> stream;
  return stream;
}

void BM_SnapshotStream(benchmark::State &state) {
  kv_store *kv = shared_store();
  std::vector<uint8_t> chunk(64 * 1024);
  int64_t bytes = 0;
  for (auto _ : state) {
    kv_snapshot *snapshot = nullptr;
    if (kv_snapshot_begin(kv, &snapshot) != 0) {
      state.SkipWithError("no snapshot");
      break;
    }
    std::vector<uint8_t> &stream = stream_bytes();
    stream.clear();
    bool done = false;
    while (!done) {
      size_t length = 0;
      kv_snapshot_read(snapshot, chunk.data(), chunk.size(), &length, &done);
      stream.insert(stream.end(), chunk.begin(), chunk.begin() + static_cast<long>(length));
    }
    bytes += static_cast<int64_t>(stream.size());
    kv_snapshot_end(snapshot);
  }
  state.SetBytesProcessed(bytes);
}

void BM_Restore(benchmark::State &state) {
  const std::vector<uint8_t> &stream = stream_bytes();
  if (stream.empty()) {
    state.SkipWithError("run BM_SnapshotStream first");
    return;
  }
  int64_t bytes = 0;
  for (auto _ : state) {
    kv_store *kv = nullptr;
    kv_restore *restore = nullptr;
    if (kv_create(&kv) != 0 || kv_restore_begin(kv, &restore) != 0) {
      state.SkipWithError("no store");
      break;
    }
    int rc = 0;
    for (size_t at = 0; at < stream.size() && rc == 0; at += 64 * 1024) {
      size_t length = stream.size() - at < 64 * 1024 ? stream.size() - at : 64 * 1024;
      rc = kv_restore_feed(restore, stream.data() + at, length);
    }
    rc = rc != 0 ? rc : kv_restore_finish(restore);
    if (rc != 0) {
      state.SkipWithError(kv_strerror(rc));
    }
    bytes += static_cast<int64_t>(stream.size());
    state.PauseTiming();
    kv_destroy(kv);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(bytes);
}

} // namespace

BENCHMARK(BM_Get);
BENCHMARK(BM_GetMissing);
BENCHMARK(BM_PutOverwrite);
BENCHMARK(BM_InsertDelete);
BENCHMARK(BM_ApplySet);
BENCHMARK(BM_ApplyIncrby);
BENCHMARK(BM_PutUnderSnapshot);
BENCHMARK(BM_Scan)->Arg(10)->Arg(100);
BENCHMARK(BM_SnapshotStream)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Restore)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
