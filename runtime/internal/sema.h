// sema: the counting semaphore that goroutine-aware sync primitives park on (Go's
// runtime_Semacquire / runtime_Semrelease, one per object instead of Go's global
// address-hashed table).
//
// acquire() takes a unit or parks the goroutine, FIFO. release() adds a unit and, if
// anyone waits, hands it to the longest waiter. A goroutine arriving while others wait
// may still take a released unit first (barging): the woken waiter then stays queued.
//
// No lost wakeups: a releaser adds the unit, then looks at nwait (both seq_cst); a
// waiter counts itself in nwait under mu, then retries the unit before queueing, and mu
// stays held until it is fully parked (park's commit releases it).
#pragma once

#include <atomic>
#include <cstdint>

#include "runtime/internal/lock.h"
#include "runtime/park.h"

namespace weft::detail {

struct sema_waiter {
  goroutine_ref gp = nullptr;
  sema_waiter* next = nullptr;
};

class sema {
 public:
  bool try_acquire() {
    uint32_t c = count_.load(std::memory_order_relaxed);
    while (c > 0)
      if (count_.compare_exchange_weak(c, c - 1, std::memory_order_acquire)) return true;
    return false;
  }
  void acquire(wait_reason reason);
  void release(uint32_t n = 1);
  uint32_t waiters() const { return nwait_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint32_t> count_{0};
  std::atomic<uint32_t> nwait_{0};
  lock mu_;
  sema_waiter* head_ = nullptr;  // guarded by mu_
  sema_waiter* tail_ = nullptr;
};

}  // namespace weft::detail
