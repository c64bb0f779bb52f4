// weft's runtime: goroutines on an M:N scheduler, in the shape of Go's runtime.
//
//   weft::run([] {                       // starts the runtime; fn is the main goroutine
//     weft::wait_group wg;
//     for (int i = 0; i < 10; i++) {
//       wg.add(1);
//       weft::go([&wg] { weft::sleep_for(10ms); wg.done(); });
//     }
//     wg.wait();
//   });                                  // returns when the main goroutine returns
//
// Goroutines are cheap (a lazily committed stack and no other allocation), scheduled by
// a fixed number of Ps (processors, WEFT_MAXPROCS) onto OS threads (Ms) that are created
// as needed. Scheduling is cooperative: a goroutine gives up its P when it parks (channel,
// mutex, sleep, network I/O), yields, returns, or passes a preempt_check() after sysmon
// asked it to (it has run for 10 ms). Code that may block the thread (file I/O, a
// blocking library call) runs inside blocking(fn), so its P can be handed to another
// thread meanwhile, as Go does for system calls. docs/HACKING.md has the rules.
//
// Misuse that Go panics on (an uncaught exception in a goroutine, a stack overflow, a
// global deadlock) prints Go's message and a goroutine dump and exits with status 2.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <initializer_list>
#include <iosfwd>
#include <new>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "runtime/internal/g.h"
#include "runtime/park.h"

namespace weft {

struct options {
  // Number of Ps. 0: WEFT_MAXPROCS if set, else the CPU count limited by the cgroup CPU
  // quota.
  int max_procs = 0;
  // Usable stack bytes per goroutine. 0: WEFT_STACK_SIZE if set, else 64 KiB (256 KiB
  // under ASan). Stacks are reserved, not committed: only touched pages cost memory.
  std::size_t stack_size = 0;
  // Maximum number of OS threads (Go's debug.SetMaxThreads). 0: 10000. Exceeding it is
  // fatal, as in Go.
  int max_threads = 0;
  // Let sysmon run fewer Ps at once while the machine has no CPU to spare and the Ps
  // keep running out of work (runtime/internal/adapt.h). WEFTDEBUG=adaptprocs=0 turns
  // it off too. max_procs() still reports every P.
  bool adaptive_procs = true;
};

struct spawn_options {
  std::size_t stack_size = 0;  // 0: the process default
};

namespace detail {

template <class Fn>
struct task_impl {
  static void invoke(void* f) { (*static_cast<Fn*>(f))(); }
  static void destroy(void* f) { static_cast<Fn*>(f)->~Fn(); }
  static constexpr task_ops ops{&invoke, &destroy};
};

struct spawn_slot {
  g* gp;
  void* storage;  // where the callable must be constructed
};
spawn_slot prepare_g(std::size_t stack_size, std::size_t fn_size, std::size_t fn_align);
void discard_g(g* gp);                        // construction of the callable threw
// create_pc: a return address in the function that called go() ("created by").
void start_g(g* gp, const task_ops* ops, uintptr_t create_pc);
void configure(const options& opts);          // applies options before the main G is built
void run_main(g* gp, const options& opts);    // blocks until the main goroutine returns
bool runtime_active();
void blocking_call(void (*fn)(void*), void* arg);
void sleep_ns(int64_t ns);
void preempt_check_slow();
extern std::atomic<int> preempt_requests;

// See go(): a temporary whose destructor is an (empty) barrier after the call.
struct spawn_site {
  [[gnu::always_inline]] ~spawn_site() { asm volatile(""); }
};

template <class F>
[[gnu::always_inline]] inline g* construct_g(std::size_t stack_size, F&& f) {
  using Fn = std::decay_t<F>;
  spawn_slot s = prepare_g(stack_size, sizeof(Fn), alignof(Fn));
  try {
    ::new (s.storage) Fn(std::forward<F>(f));
  } catch (...) {
    discard_g(s.gp);
    throw;
  }
  return s.gp;
}

}  // namespace detail

// Starts the runtime on the calling thread, runs fn as the main goroutine (id 1) and
// returns when fn returns. Goroutines still parked at that point are abandoned without
// unwinding, as a Go program's are when main returns. Not reentrant.
template <class F>
void run(F&& fn, const options& opts = {}) {
  detail::configure(opts);
  detail::g* gp = detail::construct_g(opts.stack_size, std::forward<F>(fn));
  gp->ops = &detail::task_impl<std::decay_t<F>>::ops;
  detail::run_main(gp, opts);
}

// Spawns a goroutine running fn. Must be called while the runtime runs (from a goroutine
// or a runtime callback). An exception escaping fn is a panic: the process exits 2.
//
// go() is a real call, never inlined, so that its return address is in the caller on
// the line of the go() call: that is the "created by" site of dumps, profiles and
// traces (an address inside an inlined go() maps to this header in some builds). The
// defaulted `site` argument's destructor runs in the caller after the call, which keeps
// the compiler from turning a final go() into a jump (the caller's caller would be
// named); it costs no instruction.
template <class F>
[[gnu::noinline]] void go(F&& fn, detail::spawn_site = {}) {
  detail::g* gp = detail::construct_g(0, std::forward<F>(fn));
  detail::start_g(gp, &detail::task_impl<std::decay_t<F>>::ops,
                  reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}

template <class F>
[[gnu::noinline]] void go(const spawn_options& so, F&& fn, detail::spawn_site = {}) {
  detail::g* gp = detail::construct_g(so.stack_size, std::forward<F>(fn));
  detail::start_g(gp, &detail::task_impl<std::decay_t<F>>::ops,
                  reinterpret_cast<uintptr_t>(__builtin_return_address(0)));
}

// Gives up the P: the caller goes to the back of its P's run queue (Go's Gosched).
void yield();

// Parks the calling goroutine for at least d (Go's time.Sleep). d <= 0 returns at once.
template <class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> d) {
  detail::sleep_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
}
template <class Duration>
void sleep_until(std::chrono::time_point<std::chrono::steady_clock, Duration> t) {
  sleep_for(t - std::chrono::steady_clock::now());
}

// Resume hints: up to six address ranges the calling goroutine will touch first when it
// next runs after blocking (a connection's state, its socket's descriptor). When the
// goroutine is readied, the scheduler prefetches them with the top of its stack, so
// that the misses of memory that went cold during a long wait overlap instead of
// coming one after another, pointer by pointer. Purely a hint: the ranges are never
// dereferenced, a stale one costs a useless prefetch, and each is capped at 1 KB. Each
// call replaces the previous hints; a goroutine's hints end with it. Outside a
// goroutine, a no-op.
void set_resume_hints(std::initializer_list<std::pair<const void*, std::size_t>> ranges);

// Number of goroutines that exist (running, runnable, waiting or in blocking calls).
int64_t num_goroutine();

// Number of Ps of the running runtime (0 when it is not running).
int max_procs();

// Runs fn, which may block the OS thread, while its P serves other goroutines
// (Go's entersyscall/exitsyscall). fn runs on the thread's own stack, so deep C
// libraries are safe there. Exceptions propagate to the caller. Outside a goroutine,
// or inside another blocking() call, fn is simply called. fn must not park (no channel
// operations, no weft::mutex): it runs without a P.
template <class F>
auto blocking(F&& fn) -> std::invoke_result_t<F&> {
  using R = std::invoke_result_t<F&>;
  if constexpr (std::is_void_v<R>) {
    detail::blocking_call([](void* f) { (*static_cast<std::remove_reference_t<F>*>(f))(); },
                          static_cast<void*>(&fn));
  } else {
    struct frame {
      std::remove_reference_t<F>* f;
      std::optional<R> r;
    } fr{&fn, std::nullopt};
    detail::blocking_call([](void* a) {
      auto* x = static_cast<frame*>(a);
      x->r.emplace((*x->f)());
    }, &fr);
    return std::move(*fr.r);
  }
}

// A cheap, inline check point: yields if sysmon has asked the calling goroutine to
// (it has held its P for 10 ms). Call it in long loops that do not otherwise park.
inline void preempt_check() {
  if (detail::preempt_requests.load(std::memory_order_relaxed) != 0) [[unlikely]]
    detail::preempt_check_slow();
}

// Writes every goroutine in Go's traceback format:
//   goroutine 18 [chan receive, 5 minutes]:
//   my::handler(...)
//   	/src/server/conn.cc:88
//   created by my::serve in goroutine 1
//   	/src/server/server.cc:40
void dump_goroutines(std::ostream& out);
std::string dump_goroutines();

}  // namespace weft
