// mutex: a goroutine-aware mutual exclusion lock (Go's sync.Mutex).
//
// lock() parks the goroutine (never the thread) when the mutex is held. Fairness, as in
// Go, has two modes:
//   normal:     waiters queue FIFO, but a woken waiter competes with goroutines that are
//               just arriving (and already running on a CPU), and usually loses; it then
//               re-queues at the front. Good throughput: the lock goes to whoever is hot.
//   starvation: entered when a waiter has waited more than 1 ms. Unlock hands the mutex
//               directly to the front waiter, arrivals queue at the back and do not spin.
//               Left when the waiter that takes it is the last one or waited under 1 ms.
// A goroutine spins briefly before parking only when that can help: more than one P,
// another P running (so the holder may be about to release), nothing else runnable on
// its own P, and no goroutine parked on the mutex yet (with waiters queued, a spinner
// rarely wins and only slows the holder); at most 4 rounds of ~30 pause instructions.
//
// Misuse: unlocking an unlocked mutex is fatal ("sync: unlock of unlocked mutex"), as in
// Go. A mutex is not tied to a goroutine: one may lock and another unlock. Not
// recursive. Meets the standard Lockable requirements (std::lock_guard, std::unique_lock).
// Contended hand-offs are recorded for the mutex profile, waits for the block profile.
#pragma once

#include <atomic>
#include <cstdint>

#include "runtime/internal/sema.h"

namespace weft {

class mutex {
 public:
  mutex() = default;
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  void lock() {
    // Unlocked and not starving: take it, whatever the waiter count says. (Comparing
    // against 0 instead would send every lock to the slow path, and a second CAS, while
    // goroutines are parked on the mutex.)
    int32_t old = state_.load(std::memory_order_relaxed);
    if ((old & (kLocked | kStarving)) == 0 &&
        state_.compare_exchange_strong(old, old | kLocked, std::memory_order_acquire))
      return;
    lock_slow();
  }
  bool try_lock() {
    int32_t old = state_.load(std::memory_order_relaxed);
    if (old & (kLocked | kStarving)) return false;
    return state_.compare_exchange_strong(old, old | kLocked, std::memory_order_acquire);
  }
  void unlock() {
    int32_t now = state_.fetch_sub(kLocked, std::memory_order_release) - kLocked;
    if (now != 0) unlock_slow(now);
  }

 private:
  static constexpr int32_t kLocked = 1;
  static constexpr int32_t kWoken = 2;    // a waiter is awake: Unlock need not wake another
  static constexpr int32_t kStarving = 4;
  static constexpr int kWaiterShift = 3;  // state >> 3: number of waiters

  void lock_slow();
  void unlock_slow(int32_t now);

  std::atomic<int32_t> state_{0};
  detail::sema sema_;
};

}  // namespace weft
