// G: the goroutine descriptor.
//
// A G lives in the top bytes of its own stack slot (see stack.h): one mapping holds the
// descriptor, the stack below it and a guard page under that, so a parked goroutine
// costs the pages its stack touched and nothing else (no separate heap object).
// Gs are never freed while they are in allgs; a dead G keeps its stack and is reused by
// the next spawn on the same P (Go's gFree lists).
//
// Status transitions (all through `status`, which other threads read for dumps):
//   idle -> runnable (spawn) -> running -> waiting (park) -> runnable (ready) -> ...
//   running -> syscall (blocking()) -> running | runnable
//   running -> dead (fn returned) -> runnable (reused by the next spawn)
#pragma once

#include <boost/context/detail/fcontext.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "runtime/park.h"

namespace weft::detail {

struct m;
struct p;

using fcontext_t = boost::context::detail::fcontext_t;

enum class gstatus : uint32_t { idle, runnable, running, waiting, syscall, dead };

// Type-erased goroutine body; the callable lives in g::fn_buf when it fits.
struct task_ops {
  void (*invoke)(void* fn);
  void (*destroy)(void* fn);
};

inline constexpr std::size_t kInlineTaskBytes = 96;
inline constexpr int kResumeHints = 6;

// An address range the goroutine touches first when it runs again (set_resume_hints).
struct resume_hint {
  const void* addr = nullptr;
  uint32_t bytes = 0;
};

struct alignas(64) g {
  fcontext_t ctx = nullptr;          // saved context while not running
  std::atomic<m*> mp{nullptr};       // M running this G (null when not running)
  std::atomic<gstatus> status{gstatus::idle};
  std::atomic<bool> preempt{false};  // sysmon asked this G to yield at a check point
  std::atomic<bool> tracing{false};  // a dumper is walking this G's stack; don't resume
  wait_reason reason = wait_reason::none;
  bool is_main = false;
  uint64_t id = 0;
  uint64_t parent_id = 0;            // goroutine that spawned this one (0: runtime)
  uintptr_t create_pc = 0;           // return address of the spawn call
  std::atomic<int64_t> wait_since{0};  // nanotime when it parked (for dumps)
  g* sched_link = nullptr;           // run queue / free list link (owner-protected)
  g* all_next = nullptr;             // allgs registry, guarded by allg_lock
  g* all_prev = nullptr;
  // Scheduling latency sampling (trace.cc): every 8th runnable transition stamps
  // runnable_since; execute() records the wait and clears it. Owner-protected, like
  // sched_link: the run queue's publication orders the stamp before the read.
  int64_t runnable_since = 0;
  uint8_t sched_seq = 0;

  // Stack: usable range [stack_lo, stack_hi); stack_hi is this G's address.
  char* stack_lo = nullptr;
  char* stack_hi = nullptr;
  std::size_t slot_size = 0;         // stack pool size class

  // Body.
  const task_ops* ops = nullptr;
  void* fn = nullptr;                // points at fn_buf or a heap block
  alignas(16) unsigned char fn_buf[kInlineTaskBytes];

  void* labels = nullptr;            // pprof labels (set by the profiler layer)
  void* param = nullptr;             // value handed over by the waker (Go's gp.param)

  // Sanitizer fiber state.
  void* asan_fake_stack = nullptr;
  void* tsan_fiber = nullptr;

  // Set by the goroutine itself (set_resume_hints), read when it is readied: only ever
  // prefetched, never dereferenced. Owner-written, read racily (a stale range costs a
  // useless prefetch); cleared when the goroutine exits.
  resume_hint resume_hints[kResumeHints];
};

}  // namespace weft::detail
