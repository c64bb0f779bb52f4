// sema: the counting semaphore that goroutine-aware sync primitives park on (Go's
// runtime_Semacquire / runtime_Semrelease, one per object instead of Go's global
// address-hashed table).
//
// acquire() takes a unit or parks the goroutine. Waiters queue FIFO; lifo puts one at
// the head instead (a mutex waiter that was woken and lost the race re-queues first, as
// in Go). release() adds units and hands each to the head waiter; with handoff the
// releaser also yields so the woken goroutine runs at once (mutex starvation mode). A
// goroutine arriving while others wait may still take a released unit first (barging).
//
// No lost wakeups: a releaser adds the unit, then looks at nwait (both seq_cst); a
// waiter counts itself in nwait under mu, then retries the unit before queueing, and mu
// stays held until it is fully parked (park's commit releases it). Whoever takes a
// waiter off the queue (under mu) is the one that wakes it: a releaser, or the timer of
// acquire_for.
#pragma once

#include <atomic>
#include <cstdint>

#include "runtime/internal/lock.h"
#include "runtime/park.h"

namespace weft::detail {

struct sema_waiter {
  goroutine_ref gp = nullptr;
  sema_waiter* next = nullptr;
  sema_waiter* prev = nullptr;
  int64_t since = 0;       // nanotime when it started waiting, if profiling
  bool timed_out = false;  // acquire_for: the timer, not a releaser, woke it
};

class sema {
 public:
  bool try_acquire() {
    uint32_t c = count_.load(std::memory_order_relaxed);
    while (c > 0)
      if (count_.compare_exchange_weak(c, c - 1, std::memory_order_acquire)) return true;
    return false;
  }
  void acquire(wait_reason reason, bool lifo = false);
  // Like acquire, giving up after timeout_ns. Returns false on timeout (no unit taken).
  bool acquire_for(wait_reason reason, int64_t timeout_ns);
  // mutex_profile: record the woken waiter's wait in the mutex profile, with the
  // releaser's stack (Go's mutex profile shows who held the lock).
  void release(uint32_t n = 1, bool handoff = false, bool mutex_profile = false);
  uint32_t waiters() const { return nwait_.load(std::memory_order_relaxed); }

 private:
  void enqueue_locked(sema_waiter* w, bool lifo);
  bool remove_locked(sema_waiter* w);  // false if w is not queued
  friend struct sema_timeout;

  std::atomic<uint32_t> count_{0};
  std::atomic<uint32_t> nwait_{0};
  lock mu_;
  sema_waiter* head_ = nullptr;  // guarded by mu_
  sema_waiter* tail_ = nullptr;
};

}  // namespace weft::detail
