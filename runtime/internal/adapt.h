// Adaptive parallelism: how many of the nprocs Ps may run goroutines at once.
//
// max_procs Ps exist, and Go runs as many of them as have work. weft does the same until
// two things hold together over one sysmon window (kAdaptWindowNs):
//   - contended: for more than a tenth of the window some runnable thread on the machine
//     waited for a CPU (the kernel's CPU pressure, PSI's "some" line in
//     /proc/pressure/cpu), so the machine has no CPU to spare;
//   - bursty: Ps kept running out of work (at least kAdaptIdleEventsPerSec a second), so
//     the program is not CPU-bound, and an extra P only spreads each burst over more
//     CPUs, where it takes the CPU away from whoever the burst is for.
// Then one P fewer may run (down to one). This is the case of a server and its load
// generator on one small machine: with both cores taken by weft's bursts, the client
// reads the answers only afterwards (docs/design.md, "What a second P costs"). A
// CPU-bound program never lowers the limit (its Ps do not go idle), so it keeps its
// share of a machine shared with other work. Go's runtime has no such limit; OpenMP's
// dynamic threads are the precedent.
//
// After lowering, the limit holds for hold_ns and then one more P is tried (a probe). A
// probe that is lowered again within kAdaptProbeWindows windows doubles the hold (up to
// kAdaptMaxHoldNs), so a steady state costs one window at the higher limit every 8 s;
// any other lowering starts from kAdaptMinHoldNs.
//
// What the limit does (proc.cc): wakep, inject_glist, an M back from a blocking poll or
// a blocking call, and a spinner's last look take no idle P beyond it (checked under
// sched.mu, so the limit is never exceeded by them). What guarantees progress ignores
// it: sysmon's retake of a P hogged for 10 ms, and its start of an M for timers late
// by more than kAdaptTimerLateNs. A P that runs while others may not also runs the due
// timers of idle Ps first thing in find_runnable, because no other M comes for them.
//
// Off with options::adaptive_procs = false or WEFTDEBUG=adaptprocs=0, and on a kernel
// without PSI. WEFTDEBUG=activeprocs=N pins the limit at N (tests, experiments).
//
// adapt_step is a pure function of its inputs so that the policy is tested apart from
// the clock and the kernel (tests/runtime/adapt_test.cc).
#pragma once

#include <cstdint>

namespace weft::detail {

inline constexpr int64_t kAdaptWindowNs = 50'000'000;
inline constexpr int64_t kAdaptMinHoldNs = 500'000'000;
inline constexpr int64_t kAdaptMaxHoldNs = 8'000'000'000;
inline constexpr int kAdaptProbeWindows = 4;
inline constexpr int64_t kAdaptIdleEventsPerSec = 400;
inline constexpr int64_t kAdaptTimerLateNs = 1'000'000;

// One window's observation.
struct adapt_sample {
  int64_t window_ns = 0;     // how long it lasted
  int64_t wait_ns = 0;       // CPU pressure in it: time some thread waited for a CPU
  uint64_t idle_events = 0;  // Ps that ran out of work and went idle in it
};

struct adapt_state {
  int32_t limit = 0;      // Ps that may run at once
  int64_t hold_ns = 0;    // how long the last lowering holds
  int64_t probe_at = 0;   // when one more P may be tried
  int64_t raised_at = 0;  // when the last probe raised the limit (0: none since)
};

inline bool adapt_contended(const adapt_sample& x) { return x.wait_ns * 10 > x.window_ns; }

inline bool adapt_bursty(const adapt_sample& x) {
  return x.window_ns > 0 &&
         static_cast<int64_t>(x.idle_events) * 1'000'000'000 >= kAdaptIdleEventsPerSec * x.window_ns;
}

// Moves s by one window ending at now and returns the new limit (1..nprocs).
inline int32_t adapt_step(adapt_state& s, int32_t nprocs, const adapt_sample& x, int64_t now) {
  if (s.limit < 1 || s.limit > nprocs) s.limit = nprocs;
  if (s.limit > 1 && adapt_contended(x) && adapt_bursty(x)) {
    bool failed_probe = s.raised_at != 0 && now - s.raised_at <= kAdaptProbeWindows * kAdaptWindowNs;
    s.hold_ns = failed_probe ? (s.hold_ns * 2 > kAdaptMaxHoldNs ? kAdaptMaxHoldNs : s.hold_ns * 2)
                             : kAdaptMinHoldNs;
    s.limit--;
    s.probe_at = now + s.hold_ns;
    s.raised_at = 0;
  } else if (s.limit < nprocs && now >= s.probe_at) {
    s.limit++;
    s.raised_at = now;
    s.probe_at = now + s.hold_ns;
  }
  return s.limit;
}

}  // namespace weft::detail
