// once: runs a function exactly once (Go's sync.Once).
//
//   static weft::once init;
//   init.call([] { load_config(); });
//
// The first call runs fn; concurrent callers park (not spin) until it returns; later
// calls return at once after one atomic load (the fast path). If fn throws, the
// exception propagates to that caller and, as in Go, the once still counts as done.
// Calling call() again from inside fn deadlocks, as in Go.
#pragma once

#include <atomic>
#include <mutex>
#include <utility>

#include "runtime/mutex.h"

namespace weft {

class once {
 public:
  template <class F>
  void call(F&& fn) {
    if (done_.load(std::memory_order_acquire)) return;
    call_slow(std::forward<F>(fn));
  }
  bool done() const { return done_.load(std::memory_order_acquire); }

 private:
  template <class F>
  void call_slow(F&& fn) {
    std::lock_guard<mutex> l(m_);
    if (done_.load(std::memory_order_relaxed)) return;
    struct mark {
      std::atomic<bool>& d;
      ~mark() { d.store(true, std::memory_order_release); }
    } m{done_};
    std::forward<F>(fn)();
  }

  std::atomic<bool> done_{false};
  mutex m_;
};

}  // namespace weft
