// raft_bench.cc - micro-benchmarks of the Raft core (Google Benchmark).
//
//   BM_CommitThreeReplicas/B  the whole in-memory loop of one group: leader
//                             and two followers on this thread, B entries of
//                             16 bytes per proposal, until committed and
//                             applied everywhere. Target: >= 10 M entries/s
//                             at B = 256 on one core.
//   BM_CommitLeaderOnly/B     the same with the followers simulated (instant
//                             acknowledgements): the leader-side cost alone.
//   BM_IdleFollowerGroups     bytes per idle follower group after
//                             fl_raft_shrink(). Target: <= 512 bytes.
//
// Counters: entries_per_second is a rate; *_ratio is figure / target (or
// target / figure where lower is better), so >= 1 meets the target.
#include <benchmark/benchmark.h>

#include <chrono>

extern "C" {
#include "bench/idle_groups.h"
#include "bench/lean_cluster.h"
}

namespace {

constexpr double kTargetEntriesPerSecond = 10e6;
constexpr uint64_t kIdleGroups = 100000;

void run_commit_loop(benchmark::State &state, lean_shape shape) {
  fl_raft_options options;
  lean_options_default(&options);
  lean_group *group = lean_group_create(shape, 1, &options);
  if (group == nullptr) {
    state.SkipWithError("no leader elected");
    return;
  }
  const uint32_t batch = static_cast<uint32_t>(state.range(0));
  int64_t committed = 0;
  auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    int64_t done = lean_group_propose(group, batch);
    if (done < 0 || lean_group_error(group) != nullptr) {
      state.SkipWithError(lean_group_error(group) ? lean_group_error(group) : "propose refused");
      break;
    }
    committed += done;
  }
  const lean_stats *stats = lean_group_stats(group);
  double entries = static_cast<double>(committed);
  state.counters["entries_per_second"] = benchmark::Counter(entries, benchmark::Counter::kIsRate);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  state.counters["target_ratio"] =
      seconds > 0 ? entries / seconds / kTargetEntriesPerSecond : 0; // vs 10 M entries/s
  state.counters["messages_per_entry"] =
      entries > 0 ? static_cast<double>(stats->messages) / entries : 0;
  state.SetItemsProcessed(committed);
  lean_group_destroy(group);
}

void BM_CommitThreeReplicas(benchmark::State &state) {
  run_commit_loop(state, LEAN_THREE_REPLICAS);
}

void BM_CommitLeaderOnly(benchmark::State &state) {
  run_commit_loop(state, LEAN_SYNTHETIC_PEERS);
}

void BM_IdleFollowerGroups(benchmark::State &state) {
  idle_groups_result result{};
  for (auto _ : state) {
    if (idle_groups_measure(kIdleGroups, &result) != 0) {
      state.SkipWithError("a group did not become an idle follower");
      return;
    }
  }
  state.counters["groups"] = static_cast<double>(result.groups);
  state.counters["core_bytes_per_group"] = result.core_bytes_per_group;
  state.counters["heap_bytes_per_group"] = result.heap_bytes_per_group;
  state.counters["groups_per_GiB"] = result.groups_per_gib;
  state.counters["bytes_target_ratio"] = IDLE_GROUP_TARGET_BYTES / result.heap_bytes_per_group;
}

} // namespace

BENCHMARK(BM_CommitThreeReplicas)->Arg(1)->Arg(16)->Arg(256);
BENCHMARK(BM_CommitLeaderOnly)->Arg(1)->Arg(16)->Arg(256);
// One pass creates 100,000 groups: a single iteration is the measurement.
BENCHMARK(BM_IdleFollowerGroups)->Iterations(1)->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
