// wait_group: waits for a collection of goroutines to finish (Go's sync.WaitGroup).
//
//   weft::wait_group wg;
//   for (auto& job : jobs) { wg.add(1); weft::go([&] { run(job); wg.done(); }); }
//   wg.wait();
//
// add(n) adjusts the counter; done() is add(-1); wait() parks the calling goroutine (not
// its thread) until the counter is zero. All waiters wake together. As in Go, add with a
// positive delta that starts from zero must happen before wait; the counter going
// negative, or add racing a wait that is returning, is a panic (misuse).
// wait_for(d) gives up after d and reports whether the counter reached zero.
// Fairness: waiters are woken in arrival order, all at once when the counter hits zero.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "runtime/internal/lock.h"
#include "runtime/internal/sema.h"

namespace weft {

class wait_group {
 public:
  wait_group() = default;
  wait_group(const wait_group&) = delete;
  wait_group& operator=(const wait_group&) = delete;

  void add(int64_t delta);
  void done() { add(-1); }
  void wait();
  // Waits at most d; true if the counter reached zero, false on timeout.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) {
    return wait_for_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  }

 private:
  bool wait_for_ns(int64_t ns);
  // High 32 bits: counter. Low 32 bits: number of waiters.
  std::atomic<uint64_t> state_{0};
  detail::sema sema_;
  // Serialises the reset that wakes the waiters with a wait_for registering or giving up,
  // so a timed-out waiter can tell whether the reset counted it. reset_gen_ counts resets
  // and is read and written only under reset_mu_.
  detail::spinlock reset_mu_;
  uint64_t reset_gen_ = 0;
};

}  // namespace weft
