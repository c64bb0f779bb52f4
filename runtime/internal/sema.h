// sema: the counting semaphore that goroutine-aware sync primitives park on (Go's
// runtime_Semacquire / runtime_Semrelease, one per object instead of Go's global
// address-hashed table).
//
// acquire() takes a unit or parks the goroutine. Waiters queue FIFO; lifo puts one at
// the head instead (a mutex waiter that was woken and lost the race re-queues first, as
// in Go). release() adds units and hands each to the head waiter; with handoff the
// releaser also yields so the woken goroutine runs at once (mutex starvation mode).
//
// Lifetime: everything, the count included, is guarded by one spin lock whose release
// is a plain store. So a releaser's last access to the semaphore is its unlock, and a
// waiter can only take a unit (and then, say, destroy the wait_group or mutex around
// the semaphore) after that unlock. A lock-free fast path would let a waiter grab a unit
// published by a releaser that is still reading the semaphore (Go avoids this by keeping
// its waiter state in a global table; here the primitives above keep their own fast
// paths: the mutex's state word, the wait_group's counter).
//
// No lost wakeups: a waiter checks the count and queues itself under the lock and stays
// holding it until it is fully parked (park's commit releases it).
#pragma once

#include <atomic>
#include <cstdint>

#include "runtime/internal/ilist.h"
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
  bool try_acquire();
  void acquire(wait_reason reason, bool lifo = false);
  // Like acquire, giving up after timeout_ns. Returns false on timeout (no unit taken).
  bool acquire_for(wait_reason reason, int64_t timeout_ns);
  // mutex_profile: record the woken waiter's wait in the mutex profile, with the
  // releaser's stack (Go's mutex profile shows who held the lock).
  void release(uint32_t n = 1, bool handoff = false, bool mutex_profile = false);
  uint32_t waiters() const { return nwait_.load(std::memory_order_relaxed); }

 private:
  friend struct sema_timeout;

  spinlock mu_;
  uint32_t count_ = 0;                 // guarded by mu_
  std::atomic<uint32_t> nwait_{0};     // written under mu_; read racily for stats
  ilist<sema_waiter> q_;               // guarded by mu_
};

}  // namespace weft::detail
