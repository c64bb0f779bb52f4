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
  // Counter is zero and there are waiters: nobody may change the state now, except a
  // wait_for giving up, which does so only under reset_mu_ and only while the counter is
  // above zero.
  {
    detail::spin_guard l(reset_mu_);
    if (state_.load(std::memory_order_relaxed) != state)
      throw std::logic_error("sync: WaitGroup misuse: Add called concurrently with Wait");
    state_.store(0, std::memory_order_relaxed);
    reset_gen_++;
  }
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

bool wait_group::wait_for_ns(int64_t ns) {
  uint64_t gen;
  {
    // Registering under reset_mu_ ties our waiter count to a reset generation: the reset
    // that counts us cannot happen until we have read gen.
    detail::spin_guard l(reset_mu_);
    uint64_t state = state_.load(std::memory_order_acquire);
    for (;;) {
      if ((state >> 32) == 0) return true;
      if (state_.compare_exchange_weak(state, state + 1, std::memory_order_acq_rel)) break;
    }
    gen = reset_gen_;
  }
  if (sema_.acquire_for(wait_reason::sync_wait_group_wait, ns)) return true;
  // Timed out, and our sema waiter is gone. Either a reset has counted us (it happened,
  // or the counter is zero and done() is on its way to it) and a unit is coming to us,
  // which we take, reporting success; or we take our waiter count back.
  {
    detail::spin_guard l(reset_mu_);
    if (reset_gen_ == gen) {
      for (uint64_t s = state_.load(std::memory_order_acquire);;) {
        if ((s >> 32) == 0) break;
        if (state_.compare_exchange_weak(s, s - 1, std::memory_order_acq_rel)) return false;
      }
    }
  }
  sema_.acquire(wait_reason::sync_wait_group_wait);
  return true;
}

}  // namespace weft
