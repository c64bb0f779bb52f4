// Runtime-internal locks and notes: the thread-level primitives under the scheduler.
//
// These block the *thread*, never just a goroutine. They guard short critical sections
// inside the runtime (the global run queue, the idle lists, timer heaps) and park Ms.
// A goroutine must never hold one across a park: the thread would stay blocked while
// the goroutine sleeps, and every other goroutine waiting on the lock would stall its M.
// User code wants weft::mutex (goroutine-aware), not these.
//
// `lock` is a three-state futex mutex (0 unlocked, 1 locked, 2 locked with waiters) that
// spins briefly before sleeping, as Go's lock_futex.go does. `note` is Go's one-shot
// notification: exactly one sleeper, woken by exactly one wakeup, reset with clear().
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <ctime>

namespace weft::detail {

inline long futex_wait(std::atomic<uint32_t>* addr, uint32_t val, const timespec* rel) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAIT_PRIVATE, val, rel,
                 nullptr, 0);
}

inline long futex_wake(std::atomic<uint32_t>* addr, int n) {
  return syscall(SYS_futex, reinterpret_cast<uint32_t*>(addr), FUTEX_WAKE_PRIVATE, n, nullptr,
                 nullptr, 0);
}

inline void cpu_relax() { __builtin_ia32_pause(); }

class lock {
 public:
  void acquire() {
    uint32_t c = 0;
    if (state_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
    acquire_slow();
  }
  bool try_acquire() {
    uint32_t c = 0;
    return state_.compare_exchange_strong(c, 1, std::memory_order_acquire);
  }
  void release() {
    if (state_.exchange(0, std::memory_order_release) == 2) futex_wake(&state_, 1);
  }

 private:
  void acquire_slow() {
    for (int i = 0; i < 64; i++) {
      uint32_t c = state_.load(std::memory_order_relaxed);
      if (c == 0 && state_.compare_exchange_weak(c, 1, std::memory_order_acquire)) return;
      cpu_relax();
    }
    // Mark contended; whoever releases a contended lock wakes one sleeper.
    while (state_.exchange(2, std::memory_order_acquire) != 0) futex_wait(&state_, 2, nullptr);
  }
  std::atomic<uint32_t> state_{0};
};

// A spin lock for the tiniest critical sections (a channel operation: a few dozen
// instructions, never a system call). One atomic RMW to acquire and a plain store to
// release, against a CAS and an exchange for `lock`. A waiter that cannot get it after a
// while yields its thread, in case the holder's thread was descheduled.
class spinlock {
 public:
  void acquire() {
    if (!state_.exchange(1, std::memory_order_acquire)) return;
    acquire_slow();
  }
  bool try_acquire() { return !state_.exchange(1, std::memory_order_acquire); }
  void release() { state_.store(0, std::memory_order_release); }

 private:
  void acquire_slow() {
    for (int i = 0;; i++) {
      while (state_.load(std::memory_order_relaxed)) {
        if (++i < 200) {
          cpu_relax();
        } else {
          syscall(SYS_sched_yield);
          i = 0;
        }
      }
      if (!state_.exchange(1, std::memory_order_acquire)) return;
    }
  }
  std::atomic<uint32_t> state_{0};
};

// RAII guard for detail::lock or detail::spinlock.
template <class L>
class basic_lock_guard {
 public:
  explicit basic_lock_guard(L& l) : l_(l) { l_.acquire(); }
  ~basic_lock_guard() { l_.release(); }
  basic_lock_guard(const basic_lock_guard&) = delete;
  basic_lock_guard& operator=(const basic_lock_guard&) = delete;

 private:
  L& l_;
};
using lock_guard = basic_lock_guard<lock>;
using spin_guard = basic_lock_guard<spinlock>;

// One-shot wakeup for a single sleeping thread (Go's note). wakeup() before sleep() makes
// sleep() return at once. clear() re-arms; only the sleeper calls it, after waking.
class note {
 public:
  void clear() { key_.store(0, std::memory_order_relaxed); }
  void wakeup() {
    if (key_.exchange(1, std::memory_order_release) == 0) futex_wake(&key_, 1);
  }
  void sleep() {
    while (key_.load(std::memory_order_acquire) == 0) futex_wait(&key_, 0, nullptr);
  }
  // Sleeps at most ns nanoseconds (ns < 0: forever). Returns true if woken.
  bool sleep_for(int64_t ns);
  bool woken() const { return key_.load(std::memory_order_acquire) != 0; }

 private:
  std::atomic<uint32_t> key_{0};
};

int64_t nanotime();  // CLOCK_MONOTONIC in ns

inline bool note::sleep_for(int64_t ns) {
  if (ns < 0) {
    sleep();
    return true;
  }
  int64_t deadline = nanotime() + ns;
  while (key_.load(std::memory_order_acquire) == 0) {
    int64_t left = deadline - nanotime();
    if (left <= 0) return false;
    timespec ts{static_cast<time_t>(left / 1000000000), static_cast<long>(left % 1000000000)};
    futex_wait(&key_, 0, &ts);
  }
  return true;
}

}  // namespace weft::detail
