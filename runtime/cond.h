// cond: a condition variable for goroutines (Go's sync.Cond).
//
//   weft::mutex mu; weft::cond c(mu);
//   std::unique_lock l(mu); while (!ready) c.wait();   // waiter
//   { std::lock_guard l(mu); ready = true; } c.broadcast();   // notifier
//
// wait() atomically unlocks the mutex and parks; it relocks before returning. signal()
// wakes the longest-waiting goroutine, broadcast() all of them; either may be called
// with or without the mutex held. A wakeup is never lost: a wait that has begun (its
// unlock happened) is counted before the mutex is released. Waiters are woken in FIFO
// order. As with any condition variable, check the predicate in a loop.
#pragma once

#include <cstdint>

#include "runtime/internal/lock.h"
#include "runtime/park.h"

namespace weft {

class mutex;

class cond {
 public:
  explicit cond(mutex& m) : m_(m) {}
  cond(const cond&) = delete;
  cond& operator=(const cond&) = delete;

  void wait();
  void signal();
  void broadcast();

 private:
  struct waiter {
    goroutine_ref gp;
    uint64_t ticket;
    waiter* next;
  };
  // Go's notifyList: tickets in arrival order; `notify` is the next ticket to wake.
  mutex& m_;
  detail::lock mu_;
  uint64_t wait_ = 0;     // next ticket to hand out (mu_)
  uint64_t notify_ = 0;   // tickets below this have been notified (mu_)
  waiter* head_ = nullptr;
  waiter* tail_ = nullptr;
};

}  // namespace weft
