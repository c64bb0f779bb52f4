// Scheduler statistics (for /metrics and tests) and the threadcreate profile.
//
// read_sched_stats() is a snapshot of the scheduler: Ms, Ps, run queues, counters and
// the scheduling latency histogram (Go's /sched/latencies:seconds: the time from a
// goroutine becoming runnable until it runs). The histogram is sampled as Go samples
// it: one runnable->running transition in 8 per goroutine is timed, so counts are
// samples, not all transitions. Bucket bounds are fixed: 1 us * 2^k for k = 0..23
// (1 us ... ~8.4 s) and +Inf; counts are cumulative (Prometheus "le"). Everything is
// summed from per-P counters under the scheduler lock, so reading is safe from any
// goroutine or thread and costs a few hundred nanoseconds plus one pass over the Ps
// and Ms. Values are per run(): zero when the runtime is not running.
//
// threadcreate_profile() is Go's threadcreate profile: one count per M the runtime
// created, keyed by the stack that created it (walked with frame pointers in newm);
// M0, the thread that called run(), has an empty stack.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "runtime/pprof_proto.h"

namespace weft {

inline constexpr int kSchedLatencyBuckets = 25;

struct sched_latency_histogram {
  // Inclusive upper bounds in nanoseconds; the last is +Inf (INT64_MAX).
  std::array<int64_t, kSchedLatencyBuckets> bounds_ns{};
  // cumulative[i]: samples <= bounds_ns[i]; cumulative.back() == count.
  std::array<uint64_t, kSchedLatencyBuckets> cumulative{};
  uint64_t count = 0;
  int64_t sum_ns = 0;
};

struct sched_stats {
  int64_t goroutines = 0;        // as num_goroutine()
  int32_t threads = 0;           // Ms, M0 included (sysmon is not an M)
  int32_t idle_threads = 0;      // Ms parked with nothing to do
  int32_t spinning_threads = 0;  // Ms looking for work
  int32_t blocking_threads = 0;  // Ms inside a blocking() call
  int32_t procs = 0;
  int32_t idle_procs = 0;
  int32_t active_procs_limit = 0;   // Ps that may run at once (adaptive; procs if not lowered)
  uint64_t procs_limit_lowered = 0; // times the runtime lowered that limit
  int32_t global_runq = 0;
  std::vector<int32_t> local_runq;  // per P: ring + runnext
  uint64_t goroutines_created = 0;
  uint64_t context_switches = 0;    // goroutine switch-ins
  uint64_t direct_switches = 0;     // of those, parks that switched straight to runnext
  sched_latency_histogram latency;
};

sched_stats read_sched_stats();

// The fixed bucket bounds (the same as every sched_stats carries).
std::array<int64_t, kSchedLatencyBuckets> sched_latency_bounds_ns();

// Sample type threadcreate/count, period type threadcreate/count, period 1.
profile threadcreate_profile();

}  // namespace weft
