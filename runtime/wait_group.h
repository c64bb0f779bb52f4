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
// Fairness: waiters are woken in arrival order, all at once when the counter hits zero.
#pragma once

#include <atomic>
#include <cstdint>

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

 private:
  // High 32 bits: counter. Low 32 bits: number of waiters.
  std::atomic<uint64_t> state_{0};
  detail::sema sema_;
};

}  // namespace weft
