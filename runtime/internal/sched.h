// M, P and the global scheduler state, shared by the runtime's .cc files.
// The design essay is at the top of runtime/proc.cc.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "runtime/internal/g.h"
#include "runtime/internal/lock.h"
#include "runtime/internal/poller.h"
#include "runtime/internal/timer.h"

namespace weft::detail {

inline constexpr uint32_t kRunqSize = 256;
// A G taken from runnext inherits the time slice of the G that readied it. After this
// many inherited runs in a row the P takes the head of its ring first, so a pair of
// goroutines that keep waking each other cannot starve the rest of the queue.
inline constexpr int kInheritCap = 8;
// A victim whose runnext was refilled this many times during a thief's ~50 us grace
// sleep, or during one round of steal_work (well under a microsecond), is handing off
// in a tight chain: the spinning M keeps its P (steal_work).
inline constexpr uint32_t kHotHandoffSleepRefills = 64;
inline constexpr uint32_t kHotHandoffRoundRefills = 8;

// A P whose queues never drain still polls the network once this long has passed since
// anyone last polled (find_runnable, step 1b). Under /sleep with 1,000 connections the
// queues drained only every ~2 ms and readiness waited that long; polling every 50 us
// keeps readiness prompt (sleep10_rps +7-11% in alternating runs) and costs at most
// 20,000 empty epoll_waits a second, process-wide, when the network is idle (an empty
// one costs ~110 ns on the benchmark machine: about 0.2% of a CPU).
inline constexpr int64_t kBusyPollNs = 50'000;
inline constexpr int64_t kForcePreemptNs = 10'000'000;  // Go's forcePreemptNS
// Scheduling latency histogram: bucket k counts waits <= 1 us * 2^k (k < 24, up to
// ~8.4 s); the last bucket is +Inf (trace.cc, weft::sched_stats).
inline constexpr int kLatencyBuckets = 25;
// Frames kept of the code that created an M (threadcreate profile).
inline constexpr int kCreateStackDepth = 32;

enum class pstatus : uint32_t { idle, running, syscall };

struct alignas(64) p {
  int32_t id = 0;
  std::atomic<pstatus> status{pstatus::idle};
  p* link = nullptr;                   // idle list link (sched.mu)
  std::atomic<m*> mp{nullptr};         // M that owns this P
  std::atomic<uint32_t> schedtick{0};  // +1 per non-inherited schedule (sysmon reads)
  std::atomic<uint32_t> syscalltick{0};
  int inherit_chain = 0;               // inherited runs in a row (owner only)

  // Run queue: a single-producer (owner), multi-consumer (owner + thieves) ring.
  alignas(64) std::atomic<uint32_t> runq_head{0};
  std::atomic<uint32_t> runq_tail{0};
  std::atomic<g*> runnext{nullptr};
  std::atomic<uint32_t> runnext_puts{0};  // bumped by every runqput into runnext (owner)
  std::atomic<g*> runq[kRunqSize];

  // Goroutine ids, taken from the global generator 16 at a time.
  uint64_t goid_next = 0;
  uint64_t goid_end = 0;

  // Dead Gs of the default stack class, stacks attached (owner only; gcache.cc).
  g* gfree = nullptr;
  int32_t ngfree = 0;

  // Goroutines created minus goroutines exited on this P (owner writes, anyone sums).
  std::atomic<int64_t> gcount{0};
  std::atomic<uint64_t> nexecuted{0};  // Gs this P has run (stats and tests)
  std::atomic<uint64_t> ndirect{0};    // of those, by a direct switch (direct_park)

  timer_heap timers;

  // sysmon's last observation of this P (sysmon only).
  uint32_t sm_schedtick = 0;
  int64_t sm_schedwhen = 0;
  uint32_t sm_syscalltick = 0;
  int64_t sm_syscallwhen = 0;

  // Statistics (owner writes with load+store, anyone reads; trace.cc sums them).
  alignas(64) std::atomic<uint64_t> ncreated{0};  // goroutines spawned on this P
  std::atomic<int64_t> lat_sum_ns{0};             // sampled scheduling latencies
  std::atomic<uint64_t> lat_count[kLatencyBuckets]{};  // per bucket, not cumulative
};

struct m {
  int64_t id = 0;
  fcontext_t g0ctx = nullptr;      // the scheduler context while a G runs
  std::atomic<g*> curg{nullptr};   // G running on this M
  p* pp = nullptr;                 // attached P
  p* nextp = nullptr;              // P handed over by startm
  bool spinning = false;           // looking for work, counted in sched.nmspinning
  bool is_m0 = false;
  note park;                       // where the M sleeps when idle
  m* schedlink = nullptr;          // idle list link (sched.mu)
  pthread_t thread{};
  uint64_t rand = 0;               // fastrand state

  // g0 stack, for the sanitizers.
  const void* g0_lo = nullptr;
  std::size_t g0_size = 0;
  void* g0_fake_stack = nullptr;
  void* tsan_g0 = nullptr;
  void* altstack = nullptr;

  // Return addresses of whoever created this M, innermost first (written before the
  // M is in allm; read under sched.mu).
  uintptr_t create_stack[kCreateStackDepth] = {};
  int32_t create_depth = 0;
  std::atomic<bool> in_blocking{false};  // inside a blocking() call (stats)
};

struct sched_t {
  lock mu;

  // Length of the global run queue (runq.cc holds the queue itself, under mu).
  std::atomic<int32_t> runqsize{0};

  // Ms (mu).
  m* midle = nullptr;
  int32_t nmidle = 0;
  int32_t mcount = 0;              // live Ms, including M0
  int64_t mnext = 0;
  std::vector<m*> allm;            // every M of this run (for joins)

  // Ps.
  p* pidle = nullptr;              // (mu)
  std::atomic<int32_t> npidle{0};
  std::atomic<int32_t> nmspinning{0};
  int32_t nprocs = 0;
  // Ps that may run goroutines at once (adapt.h): nprocs unless sysmon lowered it.
  std::atomic<int32_t> maxactive{0};
  bool adaptive = true;                      // sysmon may lower maxactive
  int psi_fd = -1;                           // /proc/pressure/cpu (sysmon reads it)
  std::atomic<uint64_t> nidle_events{0};     // Ps that went idle (pidleput), ever
  std::atomic<uint64_t> nlimit_lowered{0};   // times sysmon lowered maxactive (stats)
  std::atomic<uint64_t> nadapt_windows{0};   // windows sysmon sampled (tests)
  p* allp = nullptr;

  // Poller coordination: lastpoll == 0 while an M is blocked in poll().
  std::atomic<int64_t> lastpoll{1};
  std::atomic<int64_t> poll_until{0};

  // sysmon.
  std::atomic<bool> sysmonwait{false};
  // The monotonic clock as of sysmon's last tick (at most ~10 ms old while any P runs:
  // whoever wakes sysmon from its idle sleep refreshes it). The park stamp for dumps'
  // "[chan receive, 3 minutes]", which a clock read on every park would cost ~3 ns.
  std::atomic<int64_t> coarse_now{0};
  note sysmonnote;
  pthread_t sysmon_thread{};

  // Goroutines taken off one queue and not yet on another by a thread that is not a
  // running M (sysmon moving a hogged P's queue or polling, a foreign thread readying):
  // checkdead must not declare a deadlock while any are in flight.
  std::atomic<int32_t> in_flight{0};

  std::atomic<bool> running{false};
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> goidgen{1};
  std::atomic<int64_t> foreign_gcount{0};  // spawned/exited with no P
  std::atomic<uint64_t> foreign_created{0}; // goroutines spawned with no P (stats)
  int max_threads = 10000;
  std::size_t stack_class = 0;             // default stack size class
  int schedtrace_ms = 0;
};

extern sched_t sched;
// The installed poller (the built-in timer sleeper until netpoll installs itself).
extern std::atomic<const poller_ops*> g_poller;
inline const poller_ops* poller() { return g_poller.load(std::memory_order_acquire); }

// Current M / G. Never inlined: a goroutine can move to another thread at every switch,
// and a cached thread-local address would then name the old thread's state.
[[gnu::noipa]] m* getm();
[[gnu::noipa]] g* getg();

int64_t nanotime();
int64_t nanotime_coarse();

// Scheduler entry points used across files.
void ready_g(g* gp, bool next);
void wakep();
// pp null: take an idle P, within the adaptive limit unless force (adapt.h).
void startm(p* pp, bool spinning, bool force = false);
void handoffp(p* pp);
void inject_glist(g* head, int32_t n);
void wake_net_poller(int64_t when);
bool runq_empty(p* pp);
uint32_t runq_grab(p* pp, std::atomic<g*>* batch, uint32_t batch_head, bool steal_runnext,
                   bool* handoff = nullptr);
void preempt_one(p* pp);
int64_t timer_sleep_until();

// True if one more P may start running (the adaptive limit, adapt.h). Reads npidle
// afresh: callers that queued work first and then ask close the race with an M that
// gives up its P meanwhile (it looks at the queues under sched.mu before it does).
// The form with idle takes an npidle the caller has just read.
inline bool may_start_p(int32_t idle) {
  return sched.nprocs - idle < sched.maxactive.load(std::memory_order_relaxed);
}
inline bool may_start_p() { return may_start_p(sched.npidle.load(std::memory_order_seq_cst)); }

uintptr_t g_entry_address();  // bottom frame of every goroutine

// The goroutine-dump handshake: when membarrier() works, the scheduler publishes a G's
// `running` status without a fence and the dumper pays with asymmetric_fence().
extern std::atomic<int> g_asym_fence;  // membarrier(PRIVATE_EXPEDITED) registered: 1
inline bool asymmetric_fence_available() {
#if defined(WEFT_TSAN)
  return false;  // TSan does not model membarrier; use the seq_cst handshake
#else
  return g_asym_fence.load(std::memory_order_relaxed) == 1;
#endif
}
void asymmetric_fence();

// Introspection for tests and stats.
int32_t current_p_id();           // P of the calling goroutine (-1 outside)
int64_t abandoned_goroutines();   // goroutines the last run() left behind

// Goroutine registry.
extern lock allg_lock;
extern g* allg_head;
int64_t count_goroutines();

// Fatal errors: print Go's "fatal error: ..." and exit 2.
[[noreturn]] void fatal(const char* msg, bool dump = true);
[[noreturn]] void throw_(const char* msg);

// Pieces living in other files.
void sysmon_start();
void sysmon_stop();
void signals_init();
void signals_thread_init(m* mp);
void signals_thread_fini(m* mp);
void write_goroutine_dump(std::string& out, g* first, bool all);
void write_stderr(const char* s, std::size_t n);
int env_max_procs();
std::size_t env_stack_size();
int env_schedtrace_ms();
bool env_adaptive_procs();
int env_active_procs();

}  // namespace weft::detail
