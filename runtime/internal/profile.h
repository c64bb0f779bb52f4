// Contention records behind the block and mutex profiles (Go's blockevent /
// mutexevent in mprof.go).
//
// Blocking waits (channels, select, sleep_for(ctx, d), wait_group, cond, semaphore,
// mutex) call record_block() with when they started and ended; mutex hand-offs call
// record_mutex() with how long the woken waiter waited. Both sample as Go does:
//   block:  rate R ns (set_block_profile_rate): a wait of d >= R is always recorded,
//           a shorter one with probability d/R; 0 disables.
//   mutex:  fraction F (set_mutex_profile_fraction): on average 1 in F events; 0
//           disables.
// Each record is keyed by the stack of the goroutine that calls (walked from frame
// pointers, a few hundred ns) and accumulates a count and total nanoseconds. The fast
// path when profiling is off is one relaxed load.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace weft::detail {

extern std::atomic<int64_t> g_block_rate;     // ns, 0: off
extern std::atomic<int64_t> g_mutex_fraction; // 1 in N, 0: off

inline bool block_profiling() { return g_block_rate.load(std::memory_order_relaxed) > 0; }
inline bool mutex_profiling() { return g_mutex_fraction.load(std::memory_order_relaxed) > 0; }

// skip: frames of the runtime to leave out above the caller.
void record_block(int64_t start_ns, int64_t end_ns, int skip);
void record_mutex(int64_t wait_ns, int skip);

struct contention_record {
  std::vector<uintptr_t> stack;  // return addresses, innermost first
  int64_t count = 0;
  int64_t total_ns = 0;
};

// Snapshots for the profile endpoints. Counts and times are scaled up by the sampling
// rate, as Go's profiles report estimated totals.
std::vector<contention_record> block_records();
std::vector<contention_record> mutex_records();
void reset_contention_records();  // tests

}  // namespace weft::detail
