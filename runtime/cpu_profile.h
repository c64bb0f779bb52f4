// The CPU profiler (Go's pprof.StartCPUProfile / StopCPUProfile).
//
//   if (auto ec = weft::start_cpu_profile(); ec) return ec;  // "cpu profiling already in use"
//   ... run the workload ...
//   weft::profile p = weft::stop_cpu_profile();
//   std::string pb = weft::encode_pprof(p);
//
// Which threads are profiled. Every M (the thread that called run() included) has a
// POSIX timer on its own CPU-time clock (timer_create(CLOCK_THREAD_CPUTIME_ID) with
// SIGEV_THREAD_ID), which sends SIGPROF to that thread each 1/hz seconds of CPU it burns.
// Ms register themselves when their thread starts and leave when it ends, so an M created
// while a profile runs is armed at once. Threads that are not Ms (sysmon, the SIGQUIT
// watcher, the application's own threads) are not profiled. Samples therefore measure
// CPU time, not wall time: an idle or blocked thread produces none.
//
// The SIGPROF handler is async-signal-safe: it saves errno, reads the interrupted PC,
// stack and frame pointers from the ucontext, walks the frame-pointer chain (at most 64
// frames, each frame pointer checked to lie above the previous one and inside the stack
// the interrupted SP is on: the running goroutine's [stack_lo, stack_hi) or the M's
// thread stack; anything else truncates the stack, so a sample taken in the middle of a
// context switch or in code without frame pointers is short, never a fault), takes a
// reference to the goroutine's label node (one atomic increment) and publishes the
// record in a preallocated lock-free ring (a bounded multi-producer queue: a CAS to claim
// a slot, a release store to publish). It never allocates, locks or blocks. When the ring
// is full the sample is dropped and counted; stop_cpu_profile reports lost samples as
// samples of the function weft::detail::cpu_profile_lost_samples, like Go's
// runtime._LostSIGPROF, and in a comment. A collector thread drains the ring every 50 ms
// and aggregates samples by (stack, labels); stop drains the rest.
//
// SIGPROF disposition. The handler is installed by the first start (SA_ONSTACK, so it runs
// on the M's alternate signal stack, not on a possibly nearly full goroutine stack) and
// stays installed afterwards: a timer signal can still be pending on some thread when
// the profile stops, and the default action of SIGPROF is to kill the process. A SIGPROF
// that did not come from our timers (another profiler's setitimer, kill) goes to the
// disposition found at install time if that was a handler; one found as SIG_DFL or SIG_IGN
// is ignored, as in a Go program. If something replaced our handler in between, the next
// start installs it again (and chains to that one).
#pragma once

#include <cstdint>
#include <system_error>

#include "runtime/pprof_proto.h"

namespace weft {

enum class cpu_profile_errc {
  already_in_use = 1,  // "cpu profiling already in use"
  invalid_rate,        // hz outside [1, 10000]
};
const std::error_category& cpu_profile_category();
inline std::error_code make_error_code(cpu_profile_errc e) {
  return {static_cast<int>(e), cpu_profile_category()};
}

// Starts sampling every runtime thread at hz samples per second of CPU time. Fails with
// cpu_profile_errc::already_in_use while a profile runs (that profile is not touched),
// with invalid_rate for a bad hz, or with the system error of a failed timer or sigaction
// call. Callable from a goroutine (the work runs in blocking()), from inside a blocking()
// call, or from any thread.
std::error_code start_cpu_profile(int hz = 100);

// Stops the running profile and returns it: sample types samples/count and
// cpu/nanoseconds, period 1e9/hz cpu/nanoseconds, leaf_exact stacks, one sample per
// distinct (stack, goroutine labels). With no profile running, returns an empty profile.
// Callable from the same places as start_cpu_profile. (Encoding the result symbolizes
// with libdw, which needs a thread stack: do that in blocking() too.)
profile stop_cpu_profile();

// Whether a profile is running.
bool cpu_profile_running();

namespace detail {

// Hooks for runtime/proc.cc: called on every M thread when it starts (after its
// alternate signal stack exists) and before it ends.
void cpu_profile_thread_start();
void cpu_profile_thread_exit();

// Statistics of the running or last profile (tests).
struct cpu_profile_stats {
  int64_t samples = 0;    // records taken by the handler
  int64_t lost = 0;       // dropped because the ring was full
  int threads_armed = 0;  // threads with a timer (running profile), peak over the profile
};
cpu_profile_stats cpu_profile_last_stats();

// Test seam: the ring size (slots) for profiles started from now on; 0 restores the
// default (about a second of samples from every CPU).
void cpu_profile_set_ring_capacity(uint64_t slots);

// The PC that stands for lost samples in a profile.
[[gnu::noinline]] void cpu_profile_lost_samples();

}  // namespace detail

}  // namespace weft

template <>
struct std::is_error_code_enum<weft::cpu_profile_errc> : std::true_type {};
