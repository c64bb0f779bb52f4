// The scheduler's hooks into the execution tracer and its statistics (runtime/trace.cc).
//
// Every hook is an inline wrapper: one relaxed load of g_trace_on and a branch marked
// unlikely, so that with no trace running a hook costs about one cycle and stays out of
// the way of the code around it. The recording itself (trace.cc) is out of line.
//
// Where the hooks go (docs/HACKING.md, "Tracer hooks"): record an event on a P's track
// only while the calling M owns that P, so that a P's events come from one thread at a
// time in time order; record a goroutine's end of run before its park commit (after it,
// the goroutine may already run elsewhere) and an unpark before the goroutine is queued.
//
// Scheduling latency (Go's /sched/latencies:seconds) is sampled: note_runnable() stamps
// every 8th runnable transition of a goroutine, note_running() records the wait of a
// stamped goroutine when it starts to run. Untracked transitions cost an increment and a
// branch. The stamp is the CPU's time-stamp counter once sysmon has calibrated it
// against nanotime() (x86-64 with the kernel's "tsc" clocksource, so the counter is
// invariant and synchronised across CPUs), else -nanotime(): clock_gettime() costs
// ~60 cycles more than rdtsc, paid twice per sample, and it was most of the sampling's
// cost on the spawn/yield/channel benchmarks.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/internal/sched.h"

namespace weft::detail {

// The recording session's generation while a trace records, 0 otherwise.
extern std::atomic<uint32_t> g_trace_on;

inline bool trace_enabled() { return g_trace_on.load(std::memory_order_relaxed) != 0; }

// Why a goroutine stopped running (the end of its slice on the P's track).
enum class trace_stop : uint8_t { park, yield, preempt, exit, blocking };
// Who made a goroutine runnable.
enum class trace_waker : uint8_t {
  goroutine,  // a goroutine called ready()
  timer,      // the scheduler, on g0 (timers and poller callbacks)
  netpoll,    // the network poller's ready list
  thread,     // a thread outside the runtime (or sysmon)
};

// Out-of-line recorders (trace.cc). mp/pp may be null; pp is passed only when mp owns it.
void trace_go_create_slow(m* mp, p* pp, uint64_t goid, uint64_t parent, uintptr_t pc);
void trace_go_start_slow(m* mp, p* pp, uint64_t goid);
void trace_go_stop_slow(m* mp, p* pp, uint64_t goid, trace_stop why, wait_reason reason);
void trace_go_unpark_slow(m* mp, p* pp, uint64_t goid, bool netpoll);
void trace_syscall_exit_slow(m* mp, uint64_t goid);
void trace_proc_start_slow(m* mp, p* pp);
void trace_proc_stop_slow(m* mp, p* pp);

// gp was spawned (its id, parent_id and create_pc are set).
inline void trace_go_create(m* mp, p* pp, g* gp) {
  if (trace_enabled()) [[unlikely]]
    trace_go_create_slow(mp, pp, gp->id, gp->parent_id, gp->create_pc);
}
// gp starts a stretch on pp (execute, before the switch).
inline void trace_go_start(m* mp, p* pp, g* gp) {
  if (trace_enabled()) [[unlikely]]
    trace_go_start_slow(mp, pp, gp->id);
}
// gp's stretch on pp ended (g0, right after the switch back).
inline void trace_go_stop(m* mp, p* pp, g* gp, trace_stop why) {
  if (trace_enabled()) [[unlikely]]
    trace_go_stop_slow(mp, pp, gp->id, why, gp->reason);
}
// gp became runnable through ready(); the waker is worked out from the calling context
// (the current goroutine; else g0 of an M: a timer; else a thread outside the runtime).
inline void trace_go_ready(m* mp, p* pp, g* gp) {
  if (trace_enabled()) [[unlikely]]
    trace_go_unpark_slow(mp, pp, gp->id, false);
}
// gp came off the network poller's ready list.
inline void trace_go_netpoll_ready(m* mp, p* pp, g* gp) {
  if (trace_enabled()) [[unlikely]]
    trace_go_unpark_slow(mp, pp, gp->id, true);
}
// gp's blocking() function returned (its start is trace_go_stop(..., blocking)).
inline void trace_syscall_exit(m* mp, g* gp) {
  if (trace_enabled()) [[unlikely]]
    trace_syscall_exit_slow(mp, gp->id);
}
// mp took pp (acquirep) / pp stops running (releasep; sysmon's retake with mp null).
inline void trace_proc_start(m* mp, p* pp) {
  if (trace_enabled()) [[unlikely]]
    trace_proc_start_slow(mp, pp);
}
inline void trace_proc_stop(m* mp, p* pp) {
  if (trace_enabled()) [[unlikely]]
    trace_proc_stop_slow(mp, pp);
}

// Scheduling latency sampling.
void record_sched_latency(p* pp, g* gp);

// Nanoseconds per time-stamp counter tick in 32.32 fixed point; 0 until calibrated.
extern std::atomic<uint64_t> g_tick_ns_mult;
void calibrate_ticks();   // sysmon, every tick: a compare once done
bool ticks_calibrated();  // the final multiplier is set (tests)

// A positive counter value, or -nanotime() before calibration (never 0).
inline int64_t sched_stamp() {
#if defined(__x86_64__)
  if (g_tick_ns_mult.load(std::memory_order_relaxed) != 0)
    return static_cast<int64_t>(__builtin_ia32_rdtsc() | 1);
#endif
  return -nanotime();
}

// Call at every transition to runnable, before the goroutine is published.
inline void note_runnable(g* gp) {
  if ((gp->sched_seq++ & 7) == 0) [[unlikely]]
    gp->runnable_since = sched_stamp();
}
// Call when gp starts to run on pp (the calling M owns pp).
inline void note_running(p* pp, g* gp) {
  if (gp->runnable_since != 0) [[unlikely]]
    record_sched_latency(pp, gp);
}

// The recorded form of an event (trace.cc), and the renderer on its own (tests feed it
// event streams with gaps, as dropped events leave them).
enum class ev_type : uint8_t { go_create, go_start, go_stop, go_unpark, syscall_exit, proc_start, proc_stop };

struct trace_ev {
  int64_t ts;   // nanotime()
  uint64_t g;   // goroutine id
  uint64_t a1;  // create: parent id; stop: wait reason; unpark: waker goroutine id
  uint64_t a2;  // create: pc of the go() call
  int32_t m;    // M id, -1 without an M
  int16_t p;    // P id, -1 without a P
  ev_type type;
  uint8_t aux;  // stop: trace_stop; unpark: trace_waker
};

struct render_input {
  std::vector<trace_ev> evs;  // every ts within [start_ns, end_ns]
  int64_t start_ns = 0;
  int64_t end_ns = 0;
  uint64_t dropped = 0;
  uint64_t max_events = 0;
};

// Chrome Trace Event JSON. Symbolizes creation sites: run it on a thread stack.
std::string render_trace(const render_input& in);

// threadcreate: fills mp->create_stack with the caller's stack (newm, before the
// thread starts).
void record_thread_create(m* mp);

}  // namespace weft::detail
