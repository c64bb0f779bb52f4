// The goroutine scheduler.
//
// Concepts (as in Go's proc.go):
//   G  a goroutine: a stack, a saved context and a status (runtime/internal/g.h).
//   M  an OS thread. It runs the scheduler loop on its own stack ("g0") and switches
//      into goroutines from there. A goroutine that parks, yields or exits jumps to g0
//      with a request, and g0 carries it out after the goroutine's context is saved.
//      That ordering is what makes park's commit callback safe (see park.h). One
//      shortcut: a park whose P would next run its runnext goroutine anyway (a
//      synchronous hand-off: a channel ping-pong, a woken waiter) jumps straight to it,
//      and that goroutine carries out the park's commit when it arrives (direct_park).
//      g0 stays suspended meanwhile; whichever goroutine next jumps to g0 resumes it.
//   P  a processor: the right to run Go code. An M must hold a P to run goroutines.
//      There are exactly nprocs Ps. Each has a 256-slot ring run queue plus a runnext
//      slot, a timer heap and a cache of dead Gs with their stacks.
//
// Finding work (find_runnable), in Go's order, each step with its reason:
//   1. run due timers of this P                  (timers readied goroutines)
//   1b. a non-blocking poll of the network if nobody has polled for kBusyPollNs
//                                                (a P whose queues never drain would
//                                                 otherwise leave readiness to sysmon)
//   2. every 61st schedule, one G from the global queue first
//                                                (two Gs respawning each other could
//                                                 otherwise keep the global queue waiting)
//   3. runnext, then the local ring               (locality; runnext inherits the slice,
//                                                 capped by kInheritCap)
//   4. a batch from the global queue
//   5. a non-blocking poll of the network          (cheaper than stealing)
//   6. steal half of a random victim's ring, victims in a random coprime order; on the
//      last pass also run other Ps' due timers and take their runnext (after giving a
//      running victim ~3us to schedule it itself)
//   7. run other Ps' due timers, spinning or not  (their M may be busy, or woken but not
//                                                 on a CPU yet: see the comment there)
//   8. give up the P, recheck every queue, block in the poller until the nearest timer
//      (only one M at a time), or sleep on the M's futex; not while another P is in a
//      tight chain of runnext hand-offs (steal_work): then spin on, a grace sleep a round
//
// Spinning Ms and lost wakeups. An M that holds a P but has an empty queue and is
// looking for work is "spinning", counted in nmspinning; at most half the busy Ps spin.
// The protocol that keeps wakeups from being lost:
//   - a submitter (ready, spawn) puts work on a queue, issues a StoreLoad fence, then
//     wakes an M if there is an idle P and nobody spins (wakep);
//   - a spinning M that finds nothing decrements nmspinning (a full fence), then
//     rechecks every run queue and the timers before it sleeps.
// Either the submitter sees no spinner and wakes one, or the spinner sees the work.
// A spinning M that finds work wakes another spinner if it was the last one, so that a
// burst of work fans out one M at a time (the rejected alternatives, as in Go: waking
// a thread on every ready thrashes futexes; a central dispatcher thread adds a hop).
//
// Blocking calls (blocking()) mark the P "syscall". sysmon hands such a P to another
// M when the call has lasted one sysmon tick and there is work waiting, as Go's retake
// does; the caller, when the call returns, takes its P back if it is still there, else
// any idle P, else queues its goroutine globally and parks its thread.
//
// Lock order: allg_lock -> sched.mu; the G cache's lock is a leaf; a timer's mu -> its
// P heap's mu.
// No runtime lock is held across a context switch or a call into user code.
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <linux/membarrier.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "runtime/internal/gcache.h"
#include "runtime/internal/runq.h"
#include "runtime/internal/sched.h"
#include "runtime/internal/stack.h"
#include "runtime/internal/switch.h"
#include "runtime/internal/trace.h"
#include "runtime/cpu_profile.h"
#include "runtime/labels.h"
#include "runtime/runtime.h"

#if defined(WEFT_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#endif

namespace weft::detail {

sched_t sched;
lock allg_lock;
g* allg_head = nullptr;
std::atomic<int> preempt_requests{0};

namespace {

thread_local m* tls_m = nullptr;

enum class req_kind : uint8_t { park, yield, preempt, exit, blocking };

// What a goroutine asks g0 to do when it switches out. Lives on the goroutine's stack.
struct switch_req {
  req_kind kind;
  park_commit commit = nullptr;
  void* arg = nullptr;
  void (*fn)(void*) = nullptr;      // blocking call
  std::exception_ptr* error = nullptr;
};
// execute() hands r->kind to the tracer as is.
static_assert(static_cast<int>(req_kind::park) == static_cast<int>(trace_stop::park) &&
              static_cast<int>(req_kind::yield) == static_cast<int>(trace_stop::yield) &&
              static_cast<int>(req_kind::preempt) == static_cast<int>(trace_stop::preempt) &&
              static_cast<int>(req_kind::exit) == static_cast<int>(trace_stop::exit) &&
              static_cast<int>(req_kind::blocking) == static_cast<int>(trace_stop::blocking));

// ---------------------------------------------------------------------------------------
// Small helpers.

inline void store_load_fence() {
#if defined(__x86_64__) && !defined(WEFT_TSAN)
  asm volatile("lock; orl $0, (%%rsp)" ::: "memory", "cc");
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

inline uint32_t fastrand(m* mp) {
  // xorshift64*
  uint64_t x = mp->rand;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  mp->rand = x;
  return static_cast<uint32_t>((x * 0x2545F4914F6CDD1DULL) >> 32);
}

uint32_t gcd(uint32_t a, uint32_t b) {
  while (b) {
    uint32_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

void set_status(g* gp, gstatus s) { gp->status.store(s, std::memory_order_release); }

// ---------------------------------------------------------------------------------------
// Ps and Ms.

void acquirep(m* mp, p* pp) {
  if (pp->mp.load(std::memory_order_relaxed) != nullptr ||
      pp->status.load(std::memory_order_relaxed) != pstatus::idle)
    throw_("acquirep: invalid p state");
  mp->pp = pp;
  pp->mp.store(mp, std::memory_order_relaxed);
  pp->status.store(pstatus::running, std::memory_order_release);
  trace_proc_start(mp, pp);
}

p* releasep(m* mp) {
  p* pp = mp->pp;
  if (!pp || pp->mp.load(std::memory_order_relaxed) != mp ||
      pp->status.load(std::memory_order_relaxed) != pstatus::running)
    throw_("releasep: invalid p state");
  trace_proc_stop(mp, pp);
  mp->pp = nullptr;
  pp->mp.store(nullptr, std::memory_order_relaxed);
  pp->status.store(pstatus::idle, std::memory_order_release);
  return pp;
}

void pidleput_locked(p* pp) {
  if (!runq_empty(pp)) throw_("pidleput: P has non-empty run queue");
  pp->link = sched.pidle;
  sched.pidle = pp;
  sched.npidle.fetch_add(1, std::memory_order_seq_cst);
  sched.nidle_events.fetch_add(1, std::memory_order_relaxed);
}

p* pidleget_locked() {
  p* pp = sched.pidle;
  if (!pp) return nullptr;
  sched.pidle = pp->link;
  pp->link = nullptr;
  sched.npidle.fetch_sub(1, std::memory_order_seq_cst);
  // sysmon sleeps while every P is idle; a P coming back to work needs it watching.
  if (sched.sysmonwait.load(std::memory_order_relaxed)) {
    sched.sysmonwait.store(false, std::memory_order_relaxed);
    sched.coarse_now.store(nanotime_coarse(), std::memory_order_relaxed);
    sched.sysmonnote.wakeup();
  }
  return pp;
}

// An idle P, if the adaptive limit lets one more run (adapt.h). Checked under
// sched.mu, where every P is taken, so that the limit is never exceeded.
p* pidleget_limited_locked() { return may_start_p() ? pidleget_locked() : nullptr; }

p* pidleget_limited() {
  lock_guard l(sched.mu);
  return pidleget_limited_locked();
}

void checkdead_locked();

void mput_locked(m* mp) {
  mp->schedlink = sched.midle;
  sched.midle = mp;
  sched.nmidle++;
  checkdead_locked();
}

m* mget_locked() {
  m* mp = sched.midle;
  if (mp) {
    sched.midle = mp->schedlink;
    mp->schedlink = nullptr;
    sched.nmidle--;
  }
  return mp;
}

void schedule_loop(m* mp);

void* m_thread_main(void* arg) {
  m* mp = static_cast<m*>(arg);
  tls_m = mp;  // mp->thread is set by newm, under sched.mu
  prctl(PR_SET_NAME, "weft-m", 0, 0, 0);
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* addr;
    std::size_t size;
    pthread_attr_getstack(&attr, &addr, &size);
    mp->g0_lo = addr;
    mp->g0_size = size;
    pthread_attr_destroy(&attr);
  }
  mp->tsan_g0 = tsan_current_fiber();
  signals_thread_init(mp);
  cpu_profile_thread_start();  // arms this thread's SIGPROF timer if a profile runs
  p* pp = mp->nextp;
  mp->nextp = nullptr;
  acquirep(mp, pp);
  schedule_loop(mp);
  cpu_profile_thread_exit();
  signals_thread_fini(mp);
  tls_m = nullptr;
  return nullptr;
}

// Creates an M (thread) that starts by owning pp. id was reserved under sched.mu.
void newm(p* pp, bool spinning) {
  m* mp = new m();
  record_thread_create(mp);  // the threadcreate profile's stack
  mp->nextp = pp;
  mp->spinning = spinning;
  int rc = 0;
  bool exhausted = false;
  {
    // Under sched.mu, so that an M is never in allm without its thread id (teardown
    // joins every M in allm).
    lock_guard l(sched.mu);
    exhausted = sched.mcount >= sched.max_threads;
    if (!exhausted) {
      mp->id = sched.mnext++;
      mp->rand = static_cast<uint64_t>(nanotime()) * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(mp->id);
      pthread_attr_t attr;
      pthread_attr_init(&attr);
      pthread_attr_setstacksize(&attr, 8u << 20);  // g0 runs blocking() calls: give them room
      rc = pthread_create(&mp->thread, &attr, m_thread_main, mp);
      pthread_attr_destroy(&attr);
      if (rc == 0) {
        sched.mcount++;
        sched.allm.push_back(mp);
      }
    }
  }
  if (exhausted) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "runtime: program exceeds %d-thread limit\n", sched.max_threads);
    write_stderr(buf, std::strlen(buf));
    fatal("thread exhaustion");
  }
  if (rc != 0) {
    std::fprintf(stderr, "runtime: failed to create new OS thread (%s)\n", std::strerror(rc));
    fatal("newosproc");
  }
}

// Parks the M until startm hands it a P. Returns false if the runtime is stopping.
bool stopm(m* mp) {
  if (mp->pp) throw_("stopm: holding p");
  if (mp->spinning) throw_("stopm: spinning");
  {
    lock_guard l(sched.mu);
    mput_locked(mp);
  }
  mp->park.sleep();
  mp->park.clear();
  if (sched.stopping.load(std::memory_order_acquire)) {
    if (mp->nextp) {
      // Give the P back so the run's teardown sees every P idle.
      lock_guard l(sched.mu);
      pidleput_locked(mp->nextp);
      mp->nextp = nullptr;
    }
    return false;
  }
  acquirep(mp, mp->nextp);
  mp->nextp = nullptr;
  return true;
}

void become_spinning(m* mp) {
  mp->spinning = true;
  sched.nmspinning.fetch_add(1, std::memory_order_seq_cst);
}

void reset_spinning(m* mp) {
  mp->spinning = false;
  int32_t n = sched.nmspinning.fetch_sub(1, std::memory_order_seq_cst) - 1;
  if (n < 0) throw_("findrunnable: negative nmspinning");
  // We found work as the last spinner: make sure there is another one looking, so
  // that a burst of new work keeps fanning out.
  if (n == 0) wakep();
}

// ---------------------------------------------------------------------------------------
// Deadlock detection.

int64_t count_goroutines_locked_free() {
  int64_t n = sched.foreign_gcount.load(std::memory_order_relaxed);
  for (int32_t i = 0; i < sched.nprocs; i++) n += sched.allp[i].gcount.load(std::memory_order_relaxed);
  return n;
}

// Called with sched.mu held whenever an M goes idle. If no M is running code, none is
// blocked in the poller or in a blocking call, and no timer can fire, nothing can ever
// wake any goroutine again.
void checkdead_locked() {
  if (sched.stopping.load(std::memory_order_relaxed)) return;
  int32_t run = sched.mcount - sched.nmidle;
  if (run > 0) return;
  if (run < 0) throw_("checkdead: inconsistent counts");
  // Someone is carrying runnable goroutines to a queue; it will start an M.
  if (sched.in_flight.load(std::memory_order_acquire) != 0) return;
  for (int32_t i = 0; i < sched.nprocs; i++)
    if (sched.allp[i].timers.first_when.load(std::memory_order_acquire) != 0) return;
  if (poller()->has_waiters()) return;
  if (count_goroutines_locked_free() == 0) return;
  sched.mu.release();  // the dump takes allg_lock, which orders before sched.mu
  fatal("all goroutines are asleep - deadlock!");
}

// ---------------------------------------------------------------------------------------
// Goroutine creation and exit.

uint64_t next_goid(p* pp) {
  if (pp) {
    if (pp->goid_next == pp->goid_end) {
      pp->goid_next = sched.goidgen.fetch_add(16, std::memory_order_relaxed);
      pp->goid_end = pp->goid_next + 16;
    }
    return pp->goid_next++;
  }
  return sched.goidgen.fetch_add(1, std::memory_order_relaxed);
}

void gcount_add(p* pp, int64_t d) {
  if (pp)
    pp->gcount.store(pp->gcount.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
  else
    sched.foreign_gcount.fetch_add(d, std::memory_order_relaxed);
}

void g_entry(transfer_t t);

// Runs on g0 after gp's function returned.
void gdestroy(m* mp, g* gp) {
  gp->mp.store(nullptr, std::memory_order_relaxed);
  mp->curg.store(nullptr, std::memory_order_relaxed);
  bool was_main = gp->is_main;
  gp->is_main = false;
  // After curg is cleared: a SIGPROF on this thread no longer looks at gp's labels.
  label_release(std::atomic_ref<void*>(gp->labels).exchange(nullptr, std::memory_order_relaxed));
  gp->param = nullptr;
  gp->reason = wait_reason::none;
  gp->ops = nullptr;
  std::fill(std::begin(gp->resume_hints), std::end(gp->resume_hints), resume_hint{});
  set_status(gp, gstatus::dead);
  gcount_add(mp->pp, -1);
#if defined(WEFT_ASAN)
  // Frames that never returned (the entry and switch frames) leave shadow poison.
  __asan_unpoison_memory_region(gp->stack_lo, gp->stack_hi - gp->stack_lo);
#endif
  gfput(mp->pp, gp);
  if (was_main) {
    sched.stopping.store(true, std::memory_order_seq_cst);
    // Wake everyone so they notice.
    {
      lock_guard l(sched.mu);
      for (m* x : sched.allm) x->park.wakeup();
    }
    poller()->wake();
    sched.sysmonnote.wakeup();
    {
      lock_guard l(allg_lock);
      for (g* x = allg_head; x; x = x->all_next)
        if (x->status.load(std::memory_order_relaxed) == gstatus::running &&
            !x->preempt.exchange(true))
          preempt_requests.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// ---------------------------------------------------------------------------------------
// The goroutine side of a switch.

void clear_preempt(g* gp) {
  if (gp->preempt.exchange(false, std::memory_order_relaxed))
    preempt_requests.fetch_sub(1, std::memory_order_relaxed);
}

// What a jump into a goroutine hands it: the M it now runs on and, after a direct
// switch (direct_park), the goroutine that parked to make room and its request. from is
// null when the jump came from g0, whose context the arriving goroutine then saves.
struct handover {
  m* mp;
  g* from;
  switch_req* req;
};

// Warms the cache for the goroutine most likely to run after the one starting now on
// pp: runnext, else the head of the local queue. A goroutine that waited 10 ms for a
// timer or a socket finds its g and the top of its stack, where its suspended frames
// are, out of the cache (a thousand connections' stacks do not fit a core's L2), and
// would take those misses one at a time as it unwinds. Prefetched now, they overlap
// the current goroutine's work. Only a hint: that goroutine may be stolen, run, even
// freed meanwhile, so ctx is read without ordering (an aligned pointer). The read
// cannot fault: a g lives at the top of its stack slot, and slots are never unmapped
// (stack_put only drops their pages). A stale address costs nothing either: prefetches
// never fault. Not under TSan, which would report that read.
constexpr int kPrefetchStackBytes = 2048;  // sleep10's request goroutine: 2.7 KB deep at its sleep

inline void prefetch_stack(g* gp) {
  if (auto* sp = static_cast<const char*>(__atomic_load_n(&gp->ctx, __ATOMIC_RELAXED)))
    for (int i = 0; i < kPrefetchStackBytes; i += 64) __builtin_prefetch(sp + i, 1, 3);
}

// The top of a readied goroutine's stack, where it resumes, and its resume hints
// (set_resume_hints): ready_g's, so that the misses of what went cold while it waited
// (a timer's 10 ms among a thousand connections) overlap each other and the scheduling
// before it runs. Not for goroutines the poller readies: their wait was short (a
// keep-alive connection's next request) and what they touch is still in cache, where
// the extra prefetches for a batch of them cost more than they save.
inline void prefetch_resume(g* gp) {
#if !defined(WEFT_TSAN)
  prefetch_stack(gp);
  for (const resume_hint& h : gp->resume_hints) {
    auto* a = static_cast<const char*>(__atomic_load_n(&h.addr, __ATOMIC_RELAXED));
    if (!a) break;
    uint32_t n = __atomic_load_n(&h.bytes, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < n; i += 64) __builtin_prefetch(a + i, 1, 3);
  }
#else
  (void)gp;
#endif
}

inline void prefetch_next(p* pp) {
#if !defined(WEFT_TSAN)
  g* next = pp->runnext.load(std::memory_order_relaxed);
  uint32_t h = pp->runq_head.load(std::memory_order_relaxed);
  uint32_t t = pp->runq_tail.load(std::memory_order_relaxed);
  if (!next) {
    if (h == t) return;
    next = pp->runq[h % kRunqSize].load(std::memory_order_relaxed);
    if (!next) return;
    h++;
  }
  // The one after: its descriptor now, so that the next call finds its ctx in cache and
  // its stack prefetch does not wait on a miss first.
  if (h != t) {
    if (g* after = pp->runq[h % kRunqSize].load(std::memory_order_relaxed)) __builtin_prefetch(after, 1, 3);
  }
  prefetch_stack(next);
#else
  (void)pp;
#endif
}

// The bookkeeping before gp runs on mp/pp (g0's execute, or a direct switch).
inline void begin_running(m* mp, p* pp, g* gp, bool inherit) {
  prefetch_next(pp);
  if (inherit) {
    pp->inherit_chain++;
  } else {
    pp->inherit_chain = 0;
    pp->schedtick.store(pp->schedtick.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  pp->nexecuted.store(pp->nexecuted.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  gp->mp.store(mp, std::memory_order_relaxed);
  mp->curg.store(gp, std::memory_order_relaxed);
  // Dekker with the dumper (traceback.cc): publish `running`, then look at `tracing`.
  // Either the dumper sees `running` and leaves the stack alone, or we wait for it to
  // finish. The dumper issues membarrier() so that this side needs no fence.
  if (asymmetric_fence_available()) {
    gp->status.store(gstatus::running, std::memory_order_relaxed);
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    gp->status.exchange(gstatus::running, std::memory_order_seq_cst);
  }
  while (gp->tracing.load(std::memory_order_acquire)) cpu_relax();
  note_running(pp, gp);
  trace_go_start(mp, pp, gp);
}

// The first thing a goroutine does when it is switched to (at its entry, or when a
// switch away from it returns).
inline void arrived(transfer_t t) {
  auto* h = static_cast<const handover*>(t.data);
  if (!h->from) [[likely]] {
    h->mp->g0ctx = t.fctx;
    return;
  }
  // The second half of a direct park: `from` is switched out now, so its park is
  // committed here, exactly as execute() would have done on g0. Read everything from h
  // first: once the commit has run, from may be running elsewhere and h is gone.
  g* from = h->from;
  park_commit commit = h->req->commit;
  void* arg = h->req->arg;
  from->ctx = t.fctx;
  from->mp.store(nullptr, std::memory_order_relaxed);
  set_status(from, gstatus::waiting);
  // An abandoned park resumes as soon as this goroutine stops: runnext.
  if (commit && !commit(from, arg)) ready_g(from, true);
}

// The goroutine a park may switch to without passing through g0, claimed from runnext,
// or null. Only when find_runnable would pick that same goroutine: no timers wait on
// this P, this is not the schedule that looks at the global queue first, and runnext
// either inherits the slice or, its inheritance used up, the local ring is empty (then
// runqget hands out runnext on a fresh slice, *inherit = false).
inline g* take_direct_next(p* pp, bool* inherit) {
  g* next = pp->runnext.load(std::memory_order_relaxed);
  if (!next || pp->timers.first_when.load(std::memory_order_acquire) != 0) return nullptr;
  if (pp->schedtick.load(std::memory_order_relaxed) % 61 == 0 &&
      sched.runqsize.load(std::memory_order_relaxed) > 0)
    return nullptr;
  if (sched.stopping.load(std::memory_order_relaxed)) return nullptr;
  *inherit = pp->inherit_chain < kInheritCap;
  if (!*inherit && pp->runq_head.load(std::memory_order_acquire) != pp->runq_tail.load(std::memory_order_relaxed))
    return nullptr;
  return runnext_take(pp);
}

// Parks gp and runs next on the same M, one jump instead of two: g0 stays where it is
// (suspended in execute), and next finishes gp's park when it arrives (arrived()).
// A synchronous hand-off (a channel ping-pong, a mutex passed between goroutines of one
// P) is the case this is for.
[[gnu::always_inline]] inline void direct_park(m* mp, g* gp, g* next, bool inherit, switch_req* r) {
  p* pp = mp->pp;
  trace_go_stop(mp, pp, gp, trace_stop::park);
  pp->ndirect.store(pp->ndirect.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  begin_running(mp, pp, next, inherit);
  handover h{mp, gp, r};
  transfer_t t = switch_to(next->ctx, &h, &gp->asan_fake_stack,
                           fiber_target{next->stack_lo, static_cast<std::size_t>(next->stack_hi - next->stack_lo),
                                        next->tsan_fiber});
  arrived(t);
}

// Switches from goroutine gp to its M's g0 with request r (or, for a park, straight to
// the goroutine g0 would run next). Returns when gp is resumed, possibly on another M.
[[gnu::noinline]] void mcall(g* gp, switch_req* r) {
  m* mp = gp->mp.load(std::memory_order_relaxed);
  if (gp->preempt.load(std::memory_order_relaxed)) {
    // Honour a pending preemption at every switch: the slice ends here.
    clear_preempt(gp);
    mp->pp->inherit_chain = kInheritCap;
  } else if (r->kind == req_kind::park) {
    bool inherit;
    if (g* next = take_direct_next(mp->pp, &inherit)) {
      direct_park(mp, gp, next, inherit, r);
      return;
    }
  }
  void** fake = &gp->asan_fake_stack;
  if (r->kind == req_kind::exit) {
    fake = nullptr;
    exit_frames_done();
  }
  transfer_t t = switch_to(mp->g0ctx, r, fake, fiber_target{mp->g0_lo, mp->g0_size, mp->tsan_g0});
  arrived(t);
}

}  // namespace

uintptr_t g_entry_address() { return reinterpret_cast<uintptr_t>(&g_entry); }

namespace {

void g_entry(transfer_t t) {
  fiber_entered();
  m* mp = static_cast<const handover*>(t.data)->mp;
  arrived(t);
  g* gp = mp->curg.load(std::memory_order_relaxed);
  // No try/catch here on purpose: an escaping exception finds no handler, so the
  // unwinder calls std::terminate with the throwing frames still on the stack, and the
  // panic handler prints them (Go prints the panicking goroutine's stack too).
  gp->ops->invoke(gp->fn);
  gp->ops->destroy(gp->fn);
  if (gp->fn != gp->fn_buf) ::operator delete(gp->fn, std::align_val_t{alignof(std::max_align_t)});
  gp->fn = nullptr;
  switch_req r{req_kind::exit};
  mcall(gp, &r);
  __builtin_unreachable();
}

// ---------------------------------------------------------------------------------------
// The g0 side: running a goroutine and carrying out its request.

void run_blocking(m* mp, g* gp, switch_req* r);

// Runs gp until it switches out, then carries out what it asked for.
void execute(m* mp, g* gp, bool inherit) {
  for (;;) {
    p* pp = mp->pp;
    begin_running(mp, pp, gp, inherit);
    handover h{mp, nullptr, nullptr};
    transfer_t t = switch_to(gp->ctx, &h, &mp->g0_fake_stack,
                             fiber_target{gp->stack_lo, static_cast<std::size_t>(gp->stack_hi - gp->stack_lo),
                                          gp->tsan_fiber});
    // Not necessarily the goroutine we switched to: parks may have switched directly
    // from one goroutine to the next meanwhile (direct_park). curg is who came back.
    gp = mp->curg.load(std::memory_order_relaxed);
    gp->ctx = t.fctx;
    auto* r = static_cast<switch_req*>(t.data);
    trace_go_stop(mp, pp, gp, static_cast<trace_stop>(r->kind));
    switch (r->kind) {
      case req_kind::park: {
        gp->mp.store(nullptr, std::memory_order_relaxed);
        mp->curg.store(nullptr, std::memory_order_relaxed);
        set_status(gp, gstatus::waiting);
        if (r->commit && !r->commit(gp, r->arg)) {
          inherit = true;  // park abandoned: resume at once
          continue;
        }
        return;  // gp may already be running elsewhere: do not touch it
      }
      case req_kind::yield:
        gp->mp.store(nullptr, std::memory_order_relaxed);
        mp->curg.store(nullptr, std::memory_order_relaxed);
        set_status(gp, gstatus::runnable);
        note_runnable(gp);
        runqput(pp, gp, false);
        return;
      case req_kind::preempt: {
        gp->mp.store(nullptr, std::memory_order_relaxed);
        mp->curg.store(nullptr, std::memory_order_relaxed);
        set_status(gp, gstatus::runnable);
        note_runnable(gp);
        {
          lock_guard l(sched.mu);
          globrunq_put_locked(gp);
        }
        store_load_fence();
        wakep();
        return;
      }
      case req_kind::exit:
        gdestroy(mp, gp);
        return;
      case req_kind::blocking:
        run_blocking(mp, gp, r);
        if (mp->curg.load(std::memory_order_relaxed) == gp) {
          inherit = true;
          continue;  // got a P back: resume the caller
        }
        return;
    }
  }
}

// entersyscall; fn(); exitsyscall (Go's names), on g0 with gp's state saved.
void run_blocking(m* mp, g* gp, switch_req* r) {
  p* pp = mp->pp;
  set_status(gp, gstatus::syscall);
  pp->syscalltick.fetch_add(1, std::memory_order_relaxed);
  pp->status.store(pstatus::syscall, std::memory_order_seq_cst);
  if (sched.sysmonwait.load(std::memory_order_relaxed)) {
    lock_guard l(sched.mu);
    if (sched.sysmonwait.load(std::memory_order_relaxed)) {
      sched.sysmonwait.store(false, std::memory_order_relaxed);
      sched.coarse_now.store(nanotime_coarse(), std::memory_order_relaxed);
      sched.sysmonnote.wakeup();
    }
  }
  mp->in_blocking.store(true, std::memory_order_relaxed);
  try {
    r->fn(r->arg);
  } catch (...) {
    *r->error = std::current_exception();
  }
  mp->in_blocking.store(false, std::memory_order_relaxed);
  trace_syscall_exit(mp, gp);
  // Fast path: a P in the syscall state, ours, is free to take. It may even have been
  // retaken, handed to another M and be in *that* M's blocking call now (ABA); taking it
  // is still legal, as in Go: that M will find it gone when its call returns. So the
  // CAS decides, and the P is wired to us again whatever it saw in between.
  pstatus expect = pstatus::syscall;
  if (pp->status.compare_exchange_strong(expect, pstatus::running, std::memory_order_acq_rel)) {
    pp->mp.store(mp, std::memory_order_relaxed);
    mp->pp = pp;
    pp->syscalltick.fetch_add(1, std::memory_order_relaxed);
    return;  // curg still gp: execute() resumes it
  }
  // sysmon handed our P to someone else. Any idle P will do, within the limit. The
  // look for one and the global queuing are one critical section (Go's exitsyscall0):
  // apart, the last running M could give up its P in between, after finding the global
  // queue empty, and every M would park with gp queued (checkdead reported a deadlock
  // with gp runnable, under TSan in CI).
  mp->pp = nullptr;
  p* np;
  {
    lock_guard l(sched.mu);
    np = pidleget_limited_locked();
    if (!np) {
      // No P: queue gp globally and park this thread.
      gp->mp.store(nullptr, std::memory_order_relaxed);
      mp->curg.store(nullptr, std::memory_order_relaxed);
      set_status(gp, gstatus::runnable);
      note_runnable(gp);
      globrunq_put_locked(gp);
    }
  }
  if (np) {
    acquirep(mp, np);
    return;
  }
  if (stopm(mp)) return;
  // Stopping: leave the loop with no P; the caller sees curg != gp.
}

// ---------------------------------------------------------------------------------------
// find_runnable.

// Returns the earliest timer deadline over all Ps (0: none).
int64_t earliest_timer() {
  int64_t next = 0;
  for (int32_t i = 0; i < sched.nprocs; i++) {
    int64_t w = sched.allp[i].timers.first_when.load(std::memory_order_acquire);
    if (w != 0 && (next == 0 || w < next)) next = w;
  }
  return next;
}

// How many goroutines the other running Ps have put into their runnext so far.
uint32_t runnext_puts_sum(p* self) {
  uint32_t sum = 0;
  for (int32_t i = 0; i < sched.nprocs; i++) {
    p* p2 = &sched.allp[i];
    if (p2 != self && p2->status.load(std::memory_order_relaxed) == pstatus::running)
      sum += p2->runnext_puts.load(std::memory_order_relaxed);
  }
  return sum;
}

g* steal_work(m* mp, int64_t& now, int64_t& poll_until, bool* inherit, bool* new_work) {
  p* pp = mp->pp;
  *new_work = false;
  bool handoff = false;
  const uint32_t puts_before = runnext_puts_sum(pp);
  const uint32_t n = static_cast<uint32_t>(sched.nprocs);
  constexpr int kStealTries = 4;
  for (int i = 0; i < kStealTries; i++) {
    bool last = i == kStealTries - 1;
    // Random start and a stride coprime with n visit every P once, in random order.
    uint32_t start = fastrand(mp) % n;
    uint32_t stride = 1;
    if (n > 1) {
      stride = fastrand(mp) % n;
      if (stride == 0) stride = 1;
      while (gcd(stride, n) != 1) stride = stride % (n - 1) + 1;
    }
    for (uint32_t k = 0, idx = start; k < n; k++, idx = (idx + stride) % n) {
      if (sched.stopping.load(std::memory_order_relaxed)) return nullptr;
      p* p2 = &sched.allp[idx];
      if (p2 == pp) continue;
      if (last && p2->timers.first_when.load(std::memory_order_acquire) != 0) {
        bool ran = false;
        int64_t w = check_timers(p2, now, &ran);
        if (w != 0 && (poll_until == 0 || w < poll_until)) poll_until = w;
        if (ran) {
          // Timers readied goroutines onto our queue.
          if (g* gp = runqget(pp, inherit)) return gp;
          *new_work = true;
        }
      }
      if (p2->status.load(std::memory_order_acquire) != pstatus::idle || !runq_empty(p2)) {
        if (g* gp = runqsteal(pp, p2, last, &handoff)) {
          *inherit = false;
          return gp;
        }
      }
    }
  }
  // A tight chain of synchronous hand-offs on another P (a channel ping-pong): seen by
  // runq_grab as a runnext refilled again and again during its grace sleep, or here as
  // several refills during these rounds (well under a microsecond, so look once more
  // after a short pause). Keep spinning, one grace sleep a round, instead of giving up
  // the P: a spinner that gives up its P makes the victim's next ready() wake an M, a
  // futex call on the hand-off's own thread (~2,000 per million ping-pong round trips,
  // ~6% of chan_pingpong_ns). A server's occasional hand-offs stay below the rates and
  // its spinners still park (no extra CPU under the HTTP benchmarks).
  if (!handoff) {
    uint32_t after = runnext_puts_sum(pp);
    if (after - puts_before < kHotHandoffRoundRefills) {
      for (int i = 0; i < 30; i++) cpu_relax();
      after = runnext_puts_sum(pp);
    }
    if (after - puts_before >= kHotHandoffRoundRefills) {
      handoff = true;
      usleep(3);
    }
  }
  if (handoff) *new_work = true;
  return nullptr;
}

// Runs the timers due on Ps other than pp (their callbacks ready goroutines onto pp).
// True if any ran. now: 0 or the current nanotime; read only if some P has a timer.
bool run_due_timers_elsewhere(p* pp, int64_t& now) {
  bool any = false;
  for (int32_t i = 0; i < sched.nprocs; i++) {
    p* p2 = &sched.allp[i];
    int64_t w = p2->timers.first_when.load(std::memory_order_acquire);
    if (p2 == pp || w == 0) continue;
    if (now == 0) now = nanotime();
    if (w > now) continue;
    bool ran = false;
    check_timers(p2, now, &ran);
    any |= ran;
  }
  return any;
}

// Takes a non-empty list the poller returned: the rest go to the queues (inject_glist)
// and the first is returned, runnable, for pp to run now.
g* take_polled(m* mp, p* pp, g* list, int32_t n) {
  g* gp = list;
  inject_glist(list->sched_link, n - 1);
  set_status(gp, gstatus::runnable);
  note_runnable(gp);
  trace_go_netpoll_ready(mp, pp, gp);
  return gp;
}

// A non-blocking poll, if goroutines wait on the network, no M is blocked in the poller
// and nobody has polled for more than min_gap ns: the CAS on lastpoll elects one M and
// records the poll, so that step 1b and sysmon count every poll. Returns a goroutine to
// run or null; *polled says whether this M polled. now: 0 or the current nanotime.
g* poll_nonblocking(m* mp, p* pp, int64_t& now, int64_t min_gap, bool* polled) {
  *polled = false;
  if (!poller()->has_waiters()) return nullptr;
  int64_t last = sched.lastpoll.load(std::memory_order_relaxed);
  if (last == 0) return nullptr;
  if (now == 0) now = nanotime();
  if (now - last <= min_gap || !sched.lastpoll.compare_exchange_strong(last, now)) return nullptr;
  *polled = true;
  int32_t n = 0;
  g* list = poller()->poll(0, &n);
  return list ? take_polled(mp, pp, list, n) : nullptr;
}

// Finds a runnable goroutine; blocks the M if there is none. Returns null when the
// runtime is stopping. On return mp holds a P.
g* find_runnable(m* mp, bool* inherit) {
top:
  if (sched.stopping.load(std::memory_order_acquire)) return nullptr;
  p* pp = mp->pp;
  int64_t now = 0;
  bool ran = false;
  // No timers on this P (the common case of a hand-off): skip the call.
  int64_t poll_until = pp->timers.first_when.load(std::memory_order_acquire) == 0 ? 0 : check_timers(pp, now, &ran);
  // While fewer Ps may run than exist (adapt.h), no M comes for an idle P's timers:
  // run the due ones here, before they are late.
  if (sched.maxactive.load(std::memory_order_relaxed) < sched.nprocs) [[unlikely]]
    run_due_timers_elsewhere(pp, now);

  // A busy P polls the network too, at most every kBusyPollNs across all Ps: while run
  // queues never drain, step 5 never comes and readiness would wait for sysmon (10 ms).
  bool polled = false;
  if (g* gp = poll_nonblocking(mp, pp, now, kBusyPollNs, &polled)) {
    *inherit = false;
    return gp;
  }
  // Fairness: every 61st schedule look at the global queue first.
  if (pp->schedtick.load(std::memory_order_relaxed) % 61 == 0 &&
      sched.runqsize.load(std::memory_order_relaxed) > 0) {
    lock_guard l(sched.mu);
    if (g* gp = globrunq_get_locked(pp, 1)) {
      *inherit = false;
      return gp;
    }
  }
  if (g* gp = runqget(pp, inherit)) return gp;
  if (sched.runqsize.load(std::memory_order_relaxed) > 0) {
    lock_guard l(sched.mu);
    if (g* gp = globrunq_get_locked(pp, 0)) {
      *inherit = false;
      return gp;
    }
  }
  // Non-blocking poll: an optimization before stealing.
  if (g* gp = poll_nonblocking(mp, pp, now, 0, &polled)) {
    *inherit = false;
    return gp;
  }
  // Poller callbacks (readable watches) may have started goroutines on our queue.
  if (polled && !runq_empty(pp)) goto top;
  // Steal, unless enough Ms are already spinning (at most half the busy Ps).
  int32_t busy = sched.nprocs - sched.npidle.load(std::memory_order_relaxed);
  if (mp->spinning || 2 * sched.nmspinning.load(std::memory_order_relaxed) < busy) {
    if (!mp->spinning) become_spinning(mp);
    bool new_work = false;
    if (g* gp = steal_work(mp, now, poll_until, inherit, &new_work)) return gp;
    if (new_work) goto top;
  }
  // Timers that are due on another P run here, spinning or not. That P's M may be busy,
  // or woken but not yet on a CPU: if we gave up the P instead, the poller's timeout
  // would be zero and this M would take a P back and loop, burning the CPU that M is
  // waiting for while the timers stay late (seen under /sleep with 1,000 connections:
  // a million empty polls in 3 s and timers up to 3 ms late).
  now = 0;  // the steal may have slept: read the clock afresh if any P has timers
  if (run_due_timers_elsewhere(pp, now)) goto top;

  // Nothing to do: give up the P.
  {
    lock_guard l(sched.mu);
    if (sched.stopping.load(std::memory_order_relaxed)) return nullptr;
    if (sched.runqsize.load(std::memory_order_relaxed) != 0) {
      g* gp = globrunq_get_locked(pp, 0);
      *inherit = false;
      return gp;
    }
    releasep(mp);
    pidleput_locked(pp);
  }
  bool was_spinning = mp->spinning;
  if (mp->spinning) {
    mp->spinning = false;
    if (sched.nmspinning.fetch_sub(1, std::memory_order_seq_cst) - 1 < 0)
      throw_("findrunnable: negative nmspinning");
    // The other half of the lost-wakeup protocol: work submitted while we were
    // spinning saw us spinning and did not wake anyone. Look once more: the global queue
    // (readies from threads without a P go there), then every P's queue.
    bool work = sched.runqsize.load(std::memory_order_seq_cst) != 0;
    for (int32_t i = 0; i < sched.nprocs && !work; i++) work = !runq_empty(&sched.allp[i]);
    if (work) {
      if (p* np = pidleget_limited()) {
        acquirep(mp, np);
        become_spinning(mp);
        goto top;
      }
    }
  }
  {
    int64_t w = earliest_timer();
    if (w != 0 && (poll_until == 0 || w < poll_until)) poll_until = w;
  }

  // Block in the poller until the nearest timer, if nobody else is.
  if ((poller()->has_waiters() || poll_until != 0) &&
      sched.lastpoll.exchange(0, std::memory_order_seq_cst) != 0) {
    sched.poll_until.store(poll_until, std::memory_order_seq_cst);
    if (mp->pp) throw_("findrunnable: netpoll with p");
    if (mp->spinning) throw_("findrunnable: netpoll with spinning");
    now = nanotime();
    int64_t delay = -1;
    if (poll_until != 0) delay = poll_until > now ? poll_until - now : 0;
    int32_t n = 0;
    g* list = poller()->poll(delay, &n);
    now = nanotime();
    sched.poll_until.store(0, std::memory_order_relaxed);
    sched.lastpoll.store(now, std::memory_order_seq_cst);
    p* np;
    {
      // Beyond the adaptive limit the list goes to the global queue, where the running
      // Ps find it (inject_glist starts an M if they have all gone idle meanwhile).
      lock_guard l(sched.mu);
      np = sched.stopping.load(std::memory_order_relaxed) ? nullptr : pidleget_limited_locked();
    }
    if (!np) {
      inject_glist(list, n);
    } else {
      acquirep(mp, np);
      if (list) {
        *inherit = false;
        return take_polled(mp, np, list, n);
      }
      if (was_spinning) become_spinning(mp);
      goto top;
    }
  } else if (poll_until != 0) {
    int64_t pu = sched.poll_until.load(std::memory_order_seq_cst);
    if (pu == 0 || pu > poll_until) poller()->wake();
  }
  if (!stopm(mp)) return nullptr;
  goto top;
}

void schedule_loop(m* mp) {
  for (;;) {
    bool inherit = false;
    g* gp = find_runnable(mp, &inherit);
    if (!gp) break;
    if (mp->spinning) reset_spinning(mp);
    execute(mp, gp, inherit);
  }
  if (mp->spinning) {
    mp->spinning = false;
    sched.nmspinning.fetch_sub(1, std::memory_order_seq_cst);
  }
  if (mp->pp) {
    p* pp = releasep(mp);
    lock_guard l(sched.mu);
    // Teardown drains queues itself; don't trip pidleput's emptiness check.
    pp->link = sched.pidle;
    sched.pidle = pp;
    sched.npidle.fetch_add(1, std::memory_order_relaxed);
  }
}

// ---------------------------------------------------------------------------------------
// The built-in poller: sleeps until the nearest timer, or until woken.

std::atomic<uint32_t> g_sleeper_key{0};

void sleeper_init() {}
g* sleeper_poll(int64_t delay, int32_t* n) {
  *n = 0;
  if (delay == 0) return nullptr;
  if (g_sleeper_key.exchange(0, std::memory_order_acquire) != 0) return nullptr;
  if (delay < 0) {
    futex_wait(&g_sleeper_key, 0, nullptr);
  } else {
    timespec ts{static_cast<time_t>(delay / 1000000000), static_cast<long>(delay % 1000000000)};
    futex_wait(&g_sleeper_key, 0, &ts);
  }
  g_sleeper_key.store(0, std::memory_order_relaxed);
  return nullptr;
}
void sleeper_wake() {
  if (g_sleeper_key.exchange(1, std::memory_order_release) == 0) futex_wake(&g_sleeper_key, 1);
}
bool sleeper_has_waiters() { return false; }

const poller_ops g_sleeper{sleeper_init, sleeper_poll, sleeper_wake, sleeper_has_waiters};

m* g_m0 = nullptr;
std::atomic<int64_t> g_abandoned{0};  // goroutines left behind by the last run()

}  // namespace

std::atomic<const poller_ops*> g_poller{&g_sleeper};

void install_poller(const poller_ops* ops) {
  ops->init();
  const poller_ops* old = g_poller.exchange(ops, std::memory_order_acq_rel);
  // An M may be blocked in the old poller with the old one's timeout: kick it so that
  // it comes back through find_runnable and blocks in the new one.
  if (old != ops) old->wake();
}

// ---------------------------------------------------------------------------------------
// Shared entry points.

m* getm() { return tls_m; }
g* getg() {
  m* mp = tls_m;
  return mp ? mp->curg.load(std::memory_order_relaxed) : nullptr;
}

int64_t nanotime() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int64_t nanotime_coarse() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void wakep() {
  // An idle P, and one the adaptive limit lets run (one load of npidle for both).
  int32_t idle = sched.npidle.load(std::memory_order_seq_cst);
  if (idle == 0 || !may_start_p(idle)) return;
  int32_t zero = 0;
  if (sched.nmspinning.load(std::memory_order_seq_cst) != 0 ||
      !sched.nmspinning.compare_exchange_strong(zero, 1, std::memory_order_seq_cst))
    return;
  startm(nullptr, true);
}

void startm(p* pp, bool spinning, bool force) {
  m* nmp;
  {
    lock_guard l(sched.mu);
    if (pp && sched.stopping.load(std::memory_order_relaxed)) {
      // No new work starts while run() tears down: park the P.
      pp->link = sched.pidle;
      sched.pidle = pp;
      sched.npidle.fetch_add(1, std::memory_order_relaxed);
      if (spinning) sched.nmspinning.fetch_sub(1, std::memory_order_seq_cst);
      return;
    }
    if (!pp) {
      if (!sched.stopping.load(std::memory_order_relaxed)) pp = force ? pidleget_locked() : pidleget_limited_locked();
      if (!pp) {
        if (spinning) sched.nmspinning.fetch_sub(1, std::memory_order_seq_cst);
        return;
      }
    }
    nmp = mget_locked();
    if (nmp) {
      nmp->spinning = spinning;
      nmp->nextp = pp;
    }
  }
  if (!nmp) {
    newm(pp, spinning);
    return;
  }
  nmp->park.wakeup();
}

void handoffp(p* pp) {
  if (!runq_empty(pp) || sched.runqsize.load(std::memory_order_relaxed) != 0) {
    startm(pp, false);
    return;
  }
  // No local work. If nobody spins or idles, start a spinner so the P is not wasted.
  int32_t zero = 0;
  if (sched.nmspinning.load() + sched.npidle.load() == 0 &&
      sched.nmspinning.compare_exchange_strong(zero, 1)) {
    startm(pp, true);
    return;
  }
  int64_t when = 0;
  bool keep_running = false;
  {
    lock_guard l(sched.mu);
    // Global work, or this is the last P and nobody polls: keep it running.
    keep_running = sched.runqsize.load(std::memory_order_relaxed) != 0 ||
                   (sched.npidle.load() == sched.nprocs - 1 && sched.lastpoll.load() != 0);
    if (!keep_running) {
      when = pp->timers.first_when.load(std::memory_order_acquire);
      pidleput_locked(pp);
    }
  }
  if (keep_running) {
    startm(pp, false);
    return;
  }
  if (when != 0) wake_net_poller(when);
}

// Makes a list of goroutines runnable (from the poller or sysmon): as many go to the
// global queue as there are idle Ps, each with an M started; the rest go to our P.
void inject_glist(g* head, int32_t n) {
  if (!head || n <= 0) return;
  // The list came out of the poller: until it is queued, it is in flight.
  sched.in_flight.fetch_add(1, std::memory_order_seq_cst);
  struct done_flight {
    ~done_flight() { sched.in_flight.fetch_sub(1, std::memory_order_release); }
  } flight;
  m* mp = getm();
  p* pp = mp ? mp->pp : nullptr;
  if (sched.stopping.load(std::memory_order_relaxed)) pp = nullptr;
  int32_t idle = sched.npidle.load();
  // The first min(idle, n) (all of them without a P) go global, an M each.
  int32_t k = pp ? (idle < n ? idle : n) : n;
  if (k > 0) {
    lock_guard l(sched.mu);
    for (int32_t i = 0; i < k && head; i++) {
      g* x = head;
      head = x->sched_link;
      x->sched_link = nullptr;
      set_status(x, gstatus::runnable);
      note_runnable(x);
      trace_go_netpoll_ready(mp, pp, x);
      globrunq_put_locked(x);
    }
  }
  // Count the idle Ps again, now that the batch is queued: an M that gave up its P
  // before the batch arrived is idle by now (Go's startIdle), and one that gives it up
  // later looks at the global queue first, under sched.mu.
  if (k > 0) {
    idle = sched.npidle.load(std::memory_order_seq_cst);
    for (int32_t i = 0; i < k && i < idle && may_start_p(); i++) startm(nullptr, false);
  }
  while (head) {
    g* x = head;
    head = head->sched_link;
    x->sched_link = nullptr;
    set_status(x, gstatus::runnable);
    note_runnable(x);
    trace_go_netpoll_ready(mp, pp, x);
    runqput(pp, x, false);
  }
}

void wake_net_poller(int64_t when) {
  if (sched.lastpoll.load(std::memory_order_seq_cst) == 0) {
    int64_t pu = sched.poll_until.load(std::memory_order_seq_cst);
    if (pu == 0 || pu > when) poller()->wake();
  } else {
    wakep();
  }
}

namespace {

// ready_g from a thread without a running P of its own (a foreign thread, sysmon, an M
// in a blocking call): the goroutine goes to the global queue, and is "in flight" until
// it is there, which keeps checkdead off.
[[gnu::noinline]] void ready_global(m* mp, g* gp) {
  sched.in_flight.fetch_add(1, std::memory_order_seq_cst);
  gstatus expect = gstatus::waiting;
  if (!gp->status.compare_exchange_strong(expect, gstatus::runnable, std::memory_order_acq_rel))
    throw_("ready: goroutine is not waiting");
  note_runnable(gp);
  trace_go_ready(mp, nullptr, gp);
  {
    lock_guard l(sched.mu);  // the lock's release/acquire pair orders the publish
    globrunq_put_locked(gp);
  }
  sched.in_flight.fetch_sub(1, std::memory_order_release);
  wakep();
}

}  // namespace

void ready_g(g* gp, bool next) {
  m* mp = getm();
  p* pp = mp ? mp->pp : nullptr;
  if (!pp || pp->mp.load(std::memory_order_relaxed) != mp ||
      pp->status.load(std::memory_order_relaxed) != pstatus::running) [[unlikely]] {
    ready_global(mp, gp);
    return;
  }
  gstatus expect = gstatus::waiting;
  if (!gp->status.compare_exchange_strong(expect, gstatus::runnable, std::memory_order_acq_rel))
    [[unlikely]] throw_("ready: goroutine is not waiting");
  note_runnable(gp);
  trace_go_ready(mp, pp, gp);
  prefetch_resume(gp);
  runqput(pp, gp, next);
  // The StoreLoad fence of the wakeup protocol: with next, runqput published gp with a
  // locked exchange on runnext, which already is one.
  if (!next) store_load_fence();
  wakep();
}

void preempt_one(p* pp) {
  m* mp = pp->mp.load(std::memory_order_acquire);
  if (mp) {
    g* gp = mp->curg.load(std::memory_order_acquire);
    if (gp && gp->status.load(std::memory_order_acquire) == gstatus::running &&
        !gp->preempt.exchange(true))
      preempt_requests.fetch_add(1, std::memory_order_relaxed);
  }
  if (pp->status.load(std::memory_order_acquire) != pstatus::running) return;
  // The P is hogged: move its other runnable goroutines where they can run.
  std::atomic<g*> tmp[kRunqSize];
  g* batch[kRunqSize];
  int32_t moved = 0;
  for (;;) {
    sched.in_flight.fetch_add(1, std::memory_order_seq_cst);
    uint32_t n = runq_grab(pp, tmp, 0, true);
    if (n == 0) {
      sched.in_flight.fetch_sub(1, std::memory_order_release);
      break;
    }
    for (uint32_t i = 0; i < n; i++) batch[i] = tmp[i].load(std::memory_order_relaxed);
    {
      lock_guard l(sched.mu);
      globrunq_put_batch_locked(batch, n);
    }
    sched.in_flight.fetch_sub(1, std::memory_order_release);
    moved += static_cast<int32_t>(n);
  }
  // Not limited by maxactive (adapt.h): this is the guarantee that a hogged P's
  // goroutines, and the global queue's, get a CPU within a slice.
  for (int32_t i = 0; i < moved && sched.npidle.load() > 0; i++) startm(nullptr, false, true);
  if (moved == 0 && sched.runqsize.load() > 0 && sched.npidle.load() > 0) startm(nullptr, false, true);
}

int32_t current_p_id() {
  m* mp = getm();
  return mp && mp->pp ? mp->pp->id : -1;
}

int64_t abandoned_goroutines() { return g_abandoned.load(std::memory_order_relaxed); }

int64_t count_goroutines() {
  if (!sched.running.load(std::memory_order_acquire)) return 0;
  return count_goroutines_locked_free();
}

// ---------------------------------------------------------------------------------------
// Public API.

spawn_slot prepare_g(std::size_t stack_size, std::size_t fn_size, std::size_t fn_align) {
  if (sched.stack_class == 0) configure(options{});
  std::size_t cls = stack_size != 0 ? stack_size_class(stack_size + sizeof(g)) : sched.stack_class;
  m* mp = getm();
  p* pp = mp ? mp->pp : nullptr;
  g* gp = cls == sched.stack_class ? gfget(pp) : nullptr;
  if (!gp) gp = new_g(cls);
  void* storage;
  if (fn_size <= kInlineTaskBytes && fn_align <= 16) {
    storage = gp->fn_buf;
  } else {
    storage = ::operator new(fn_size, std::align_val_t{alignof(std::max_align_t)});
    if (fn_align > alignof(std::max_align_t)) throw_("go: callable is over-aligned");
  }
  gp->fn = storage;
  return spawn_slot{gp, storage};
}

void discard_g(g* gp) {
  if (gp->fn != gp->fn_buf) ::operator delete(gp->fn, std::align_val_t{alignof(std::max_align_t)});
  gp->fn = nullptr;
  m* mp = getm();
  gfput(mp ? mp->pp : nullptr, gp);
}

void start_g(g* gp, const task_ops* ops, uintptr_t create_pc) {
  // id, parent_id and create_pc are stored atomically: a goroutine dump (snapshot_all)
  // may read them from this G's previous life while we reuse it.
  std::atomic_ref<uintptr_t>(gp->create_pc).store(create_pc, std::memory_order_relaxed);
  if (!sched.running.load(std::memory_order_acquire)) throw_("go: runtime is not running");
  gp->ops = ops;
  g* cur = getg();
  // pprof labels are inherited at spawn (released in gdestroy).
  std::atomic_ref<void*>(gp->labels)
      .store(cur ? label_acquire(std::atomic_ref<void*>(cur->labels).load(std::memory_order_relaxed)) : nullptr,
             std::memory_order_relaxed);
  std::atomic_ref<uint64_t>(gp->parent_id).store(cur ? cur->id : 0, std::memory_order_relaxed);
  m* mp = getm();
  p* pp = mp ? mp->pp : nullptr;
  if (pp && pp->mp.load(std::memory_order_relaxed) != mp) pp = nullptr;
  std::atomic_ref<uint64_t>(gp->id).store(next_goid(pp), std::memory_order_relaxed);
  gp->ctx = boost::context::detail::make_fcontext(gp->stack_hi, gp->stack_hi - gp->stack_lo, g_entry);
  set_status(gp, gstatus::runnable);
  gcount_add(pp, 1);
  if (pp)
    pp->ncreated.store(pp->ncreated.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  else
    sched.foreign_created.fetch_add(1, std::memory_order_relaxed);
  note_runnable(gp);
  trace_go_create(mp, pp, gp);
  bool overflowed = false;
  if (pp) {
    overflowed = runqput(pp, gp, true);  // the CAS on runnext is the StoreLoad fence
  } else {
    lock_guard l(sched.mu);
    globrunq_put_locked(gp);
  }
  wakep();
  if (!cur) return;
  if (overflowed) {
    // Backpressure: a goroutine that spawns faster than its P runs what it spawns has
    // filled the ring (half of it just went to the global queue). Step aside behind
    // that half, as a preemption does, so the backlog and the fresh stacks it would
    // need stay small. (Behind the local ring instead, the global half would pile up:
    // it is only looked at every 61st schedule while local work lasts.)
    switch_req r{req_kind::preempt};
    mcall(cur, &r);
    return;
  }
  weft::preempt_check();
}

void preempt_check_slow() {
  g* gp = getg();
  if (!gp || !gp->preempt.load(std::memory_order_relaxed)) return;
  switch_req r{req_kind::preempt};
  mcall(gp, &r);
}

bool runtime_active() { return sched.running.load(std::memory_order_acquire); }

void blocking_call(void (*fn)(void*), void* arg) {
  g* gp = getg();
  // Outside a goroutine, or nested in a blocking call (already on g0 without a P
  // held for us): just call.
  m* mp = getm();
  if (!gp || (mp && mp->in_blocking.load(std::memory_order_relaxed))) {
    fn(arg);
    return;
  }
  std::exception_ptr err;
  switch_req r{req_kind::blocking};
  r.fn = fn;
  r.arg = arg;
  r.error = &err;
  mcall(gp, &r);
  if (err) std::rethrow_exception(err);
}

namespace {

void run_teardown();

}  // namespace

std::atomic<int> g_asym_fence{-1};

void asymmetric_fence() {
  syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0);
}

void configure(const options& opts) {
  if (g_asym_fence.load() < 0)
    g_asym_fence.store(syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 ? 1 : 0);
  if (sched.running.load()) throw_("run: the runtime is already running");
  if (getm()) throw_("run: called from a goroutine");
  std::size_t usable = opts.stack_size != 0 ? opts.stack_size : env_stack_size();
  sched.stack_class = stack_size_class(usable + sizeof(g));
  sched.max_threads = opts.max_threads > 0 ? opts.max_threads : 10000;
  sched.schedtrace_ms = env_schedtrace_ms();
}

void run_main(g* gp, const options& opts) {
  if (sched.running.load()) throw_("run: the runtime is already running");
  if (getm()) throw_("run: called from a goroutine");
  int nprocs = opts.max_procs > 0 ? opts.max_procs : env_max_procs();
  sched.nprocs = nprocs;
  // WEFTDEBUG=activeprocs=N pins the adaptive limit (adapt.h), for tests and
  // experiments; adaptprocs=0 or options::adaptive_procs = false leave it at nprocs.
  int pinned = env_active_procs();
  sched.maxactive.store(pinned > 0 ? std::min(pinned, nprocs) : nprocs);
  sched.adaptive = pinned == 0 && opts.adaptive_procs && env_adaptive_procs() && nprocs > 1;
  // Opened now, before any user code runs, so that the descriptor is there from the
  // start (a program that counts its descriptors sees no stranger appear later).
  // Without it (a kernel without PSI) the limit stays at nprocs.
  sched.psi_fd = sched.adaptive ? open("/proc/pressure/cpu", O_RDONLY | O_CLOEXEC) : -1;
  if (sched.psi_fd < 0) sched.adaptive = false;
  sched.nidle_events.store(0);
  sched.nlimit_lowered.store(0);
  sched.nadapt_windows.store(0);
  sched.allp = new p[nprocs];
  sched.stopping.store(false);
  sched.goidgen.store(2);
  sched.foreign_gcount.store(0);
  sched.foreign_created.store(0);
  sched.lastpoll.store(nanotime());
  sched.coarse_now.store(nanotime_coarse());
  sched.poll_until.store(0);
  sched.mcount = 0;
  sched.midle = nullptr;
  sched.nmidle = 0;
  sched.mnext = 0;
  sched.allm.clear();
  sched.nmspinning.store(0);
  sched.npidle.store(0);
  sched.pidle = nullptr;
  preempt_requests.store(0);
  for (int i = nprocs - 1; i >= 0; i--) {
    sched.allp[i].id = i;
    lock_guard l(sched.mu);
    pidleput_locked(&sched.allp[i]);
  }
  signals_init();

  // M0 is the calling thread.
  m* m0 = new m();
  g_m0 = m0;
  m0->is_m0 = true;
  m0->id = sched.mnext++;
  m0->rand = static_cast<uint64_t>(nanotime()) | 1;
  m0->thread = pthread_self();
  m0->tsan_g0 = tsan_current_fiber();
  {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      void* addr;
      std::size_t size;
      pthread_attr_getstack(&attr, &addr, &size);
      m0->g0_lo = addr;
      m0->g0_size = size;
      pthread_attr_destroy(&attr);
    }
  }
  sched.mcount = 1;
  sched.allm.push_back(m0);
  tls_m = m0;
  signals_thread_init(m0);
  cpu_profile_thread_start();

  p* p0;
  {
    lock_guard l(sched.mu);
    p0 = pidleget_locked();
  }
  acquirep(m0, p0);

  gp->id = 1;
  gp->is_main = true;
  gp->parent_id = 0;
  gp->create_pc = 0;
  gp->ctx = boost::context::detail::make_fcontext(gp->stack_hi, gp->stack_hi - gp->stack_lo, g_entry);
  set_status(gp, gstatus::runnable);
  p0->gcount.store(1);
  runqput(p0, gp, true);
  sched.running.store(true, std::memory_order_release);
  sysmon_start();

  schedule_loop(m0);
  cpu_profile_thread_exit();
  signals_thread_fini(m0);
  tls_m = nullptr;
  run_teardown();  // frees every M, m0 included
}

namespace {

void run_teardown() {
  // sysmon first: it is the one thread that starts Ms without being asked to.
  sysmon_stop();
  if (sched.psi_fd >= 0) close(sched.psi_fd);  // sysmon read it
  sched.psi_fd = -1;
  // Wait for the other Ms. They leave their loops once they reach the scheduler; an M
  // inside a blocking call or a goroutine that never passes a check point delays this.
  // Loop until no new M appears (one may be starting as we look).
  std::vector<m*> joined;
  for (;;) {
    std::vector<m*> ms;
    {
      lock_guard l(sched.mu);
      for (m* x : sched.allm)
        if (!x->is_m0 && std::find(joined.begin(), joined.end(), x) == joined.end()) ms.push_back(x);
    }
    if (ms.empty()) break;
    for (m* x : ms) {
      x->park.wakeup();
      pthread_join(x->thread, nullptr);
      joined.push_back(x);
    }
  }
  std::vector<m*> ms;
  {
    lock_guard l(sched.mu);
    ms = sched.allm;
  }
  sched.running.store(false, std::memory_order_release);

  // Drop pending timers (they belong to goroutines that will never run again).
  for (int32_t i = 0; i < sched.nprocs; i++) {
    timer_heap& th = sched.allp[i].timers;
    lock_guard l(th.mu);
    std::vector<timer_heap::entry> dropped;
    dropped.swap(th.heap);
    th.publish_locked();
    th.mu.release();
    for (const timer_heap::entry& e : dropped) {
      timer* t = e.t;
      t->owner.store(nullptr, std::memory_order_relaxed);
      t->idx = -1;
      if (t->drop) t->drop(t, t->arg, t->seq);
    }
    th.mu.acquire();
  }
  for (int32_t i = 0; i < sched.nprocs; i++) gcache_flush_p(&sched.allp[i]);
  // Goroutines still alive are abandoned, as at the exit of a Go program: their
  // stacks are released without unwinding.
  std::vector<g*> abandoned;
  {
    lock_guard l(allg_lock);
    for (g* x = allg_head; x; x = x->all_next) {
      gstatus s = x->status.load();
      if (s != gstatus::dead && s != gstatus::idle) abandoned.push_back(x);
    }
  }
  g_abandoned.store(static_cast<int64_t>(abandoned.size()), std::memory_order_relaxed);
  for (g* x : abandoned) {
    set_status(x, gstatus::dead);
    if (x->fn && x->fn != x->fn_buf) ::operator delete(x->fn, std::align_val_t{alignof(std::max_align_t)});
    x->fn = nullptr;
    x->asan_fake_stack = nullptr;
    label_release(x->labels);
    x->labels = nullptr;
    free_g(x);
  }
  {
    lock_guard l(sched.mu);
    globrunq_clear_locked();
  }
  // The next run() may pick another default stack size: start from an empty cache.
  gcache_release_all();
  sched.stack_class = 0;
  p* allp;
  {
    // Under sched.mu: read_sched_stats and threadcreate_profile (trace.cc) may be
    // looking at the Ms and Ps from another thread.
    lock_guard l(sched.mu);
    sched.allm.clear();
    allp = sched.allp;
    sched.allp = nullptr;
    sched.nprocs = 0;
  }
  for (m* x : ms) delete x;
  delete[] allp;
  g_m0 = nullptr;
}

}  // namespace

}  // namespace weft::detail

namespace weft {

using namespace detail;

void park(wait_reason reason, park_commit commit, void* arg) {
  g* gp = getg();
  if (!gp) throw_("park: not on a goroutine");
  gp->reason = reason;
  gp->wait_since.store(sched.coarse_now.load(std::memory_order_relaxed), std::memory_order_relaxed);
  switch_req r{req_kind::park};
  r.commit = commit;
  r.arg = arg;
  mcall(gp, &r);
}

void ready(goroutine_ref gp) { ready_g(gp, true); }

goroutine_ref current_goroutine() { return getg(); }

void set_resume_hints(std::initializer_list<std::pair<const void*, std::size_t>> ranges) {
  g* gp = getg();
  if (!gp) return;
  int i = 0;
  for (const auto& [addr, bytes] : ranges) {
    if (i == kResumeHints) break;
    if (!addr || !bytes) continue;
    gp->resume_hints[i++] = {addr, static_cast<uint32_t>(std::min<std::size_t>(bytes, 1024))};
  }
  for (; i < kResumeHints; i++) gp->resume_hints[i] = {};
}

uint64_t goroutine_id() {
  g* gp = getg();
  return gp ? gp->id : 0;
}

void yield() {
  g* gp = getg();
  if (!gp) {
    sched_yield();
    return;
  }
  switch_req r{req_kind::yield};
  mcall(gp, &r);
}

int64_t num_goroutine() { return count_goroutines(); }

int max_procs() { return sched.running.load() ? sched.nprocs : 0; }

}  // namespace weft
