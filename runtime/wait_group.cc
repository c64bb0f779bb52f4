// wait_group, following Go's sync/waitgroup.go state machine.
#include "runtime/wait_group.h"

#include <stdexcept>

namespace weft {

void wait_group::add(int64_t delta) {
  uint64_t state = state_.fetch_add(static_cast<uint64_t>(delta) << 32, std::memory_order_acq_rel) +
                   (static_cast<uint64_t>(delta) << 32);
  auto v = static_cast<int32_t>(state >> 32);
  auto w = static_cast<uint32_t>(state);
  if (v < 0) throw std::logic_error("sync: negative WaitGroup counter");
  if (w != 0 && delta > 0 && v == static_cast<int32_t>(delta))
    throw std::logic_error("sync: WaitGroup misuse: Add called concurrently with Wait");
  if (v > 0 || w == 0) return;
  // Counter is zero and there are waiters: nobody may change the state now.
  if (state_.load(std::memory_order_relaxed) != state)
    throw std::logic_error("sync: WaitGroup misuse: Add called concurrently with Wait");
  state_.store(0, std::memory_order_relaxed);
  sema_.release(w);
}

void wait_group::wait() {
  uint64_t state = state_.load(std::memory_order_acquire);
  for (;;) {
    if ((state >> 32) == 0) return;
    if (state_.compare_exchange_weak(state, state + 1, std::memory_order_acq_rel)) {
      sema_.acquire(wait_reason::sync_wait_group_wait);
      if (state_.load(std::memory_order_acquire) != 0)
        throw std::logic_error("sync: WaitGroup is reused before previous Wait has returned");
      return;
    }
  }
}

}  // namespace weft
