// mutex: the state machine of Go's sync/mutex.go (locked, woken, starving bits and a
// waiter count in one word), on weft's sema.
#include "runtime/mutex.h"

#include "runtime/internal/sched.h"

namespace weft {
namespace {

constexpr int64_t kStarvationThresholdNs = 1'000'000;

// Go's runtime_canSpin: spinning helps only if another P may be about to unlock.
bool can_spin(int iter) {
  if (iter >= 4) return false;
  using namespace detail;
  if (sched.nprocs <= 1) return false;
  if (sched.nprocs <= sched.npidle.load(std::memory_order_relaxed) + sched.nmspinning.load(std::memory_order_relaxed) + 1)
    return false;
  m* mp = getm();
  return mp && mp->pp && runq_empty(mp->pp);
}

void do_spin() {
  for (int i = 0; i < 30; i++) detail::cpu_relax();
}

}  // namespace

void mutex::lock_slow() {
  int64_t wait_start = 0;
  bool starving = false;
  bool awoke = false;
  int iter = 0;
  int32_t old = state_.load(std::memory_order_relaxed);
  for (;;) {
    // Spin while locked (not starving) and it can help. Unlike Go, not once goroutines
    // are parked on the mutex: then the holder re-takes it, or a woken waiter does, long
    // before a spinner on another P wins it, and the spinner's traffic on the state word
    // only slows the holder down (mutex_contended_ns, 8 goroutines on 2 Ps: 10.4-11.6 ns
    // with such spinning, 9.5-9.6 ns without). With nobody parked there is no waiter
    // for unlock to wake, so a spinner needs no `woken` flag (Go sets one).
    if ((old & (kLocked | kStarving)) == kLocked && (old >> kWaiterShift) == 0 && can_spin(iter)) {
      do_spin();
      iter++;
      old = state_.load(std::memory_order_relaxed);
      continue;
    }
    int32_t next = old;
    if ((old & kStarving) == 0) next |= kLocked;  // a starving mutex goes to the queue head
    if (old & (kLocked | kStarving)) next += 1 << kWaiterShift;
    if (starving && (old & kLocked)) next |= kStarving;
    if (awoke) {
      if ((next & kWoken) == 0) detail::fatal("sync: inconsistent mutex state");
      next &= ~kWoken;
    }
    if (state_.compare_exchange_strong(old, next, std::memory_order_acquire)) {
      if ((old & (kLocked | kStarving)) == 0) return;  // took it
      bool lifo = wait_start != 0;                     // waited before: back to the front
      if (wait_start == 0) wait_start = detail::nanotime();
      sema_.acquire(wait_reason::sync_mutex_lock, lifo);
      starving = starving || detail::nanotime() - wait_start > kStarvationThresholdNs;
      old = state_.load(std::memory_order_relaxed);
      if (old & kStarving) {
        // Handed to us directly: the state says locked=0, woken=0 and counts us waiting.
        if ((old & (kLocked | kWoken)) != 0 || (old >> kWaiterShift) == 0)
          detail::fatal("sync: inconsistent mutex state");
        int32_t delta = kLocked - (1 << kWaiterShift);
        if (!starving || (old >> kWaiterShift) == 1) delta -= kStarving;  // leave starvation
        state_.fetch_add(delta, std::memory_order_acquire);
        return;
      }
      awoke = true;
      iter = 0;
    } else {
      old = state_.load(std::memory_order_relaxed);
    }
  }
}

void mutex::unlock_slow(int32_t now) {
  if (((now + kLocked) & kLocked) == 0) detail::fatal("sync: unlock of unlocked mutex");
  if ((now & kStarving) == 0) {
    int32_t old = now;
    for (;;) {
      // Nobody to wake, or someone is already awake / took it / it is starving.
      if ((old >> kWaiterShift) == 0 || (old & (kLocked | kWoken | kStarving)) != 0) return;
      int32_t next = (old - (1 << kWaiterShift)) | kWoken;
      if (state_.compare_exchange_strong(old, next, std::memory_order_release)) {
        sema_.release(1, false, true);
        return;
      }
    }
  }
  // Starving: hand ownership to the front waiter and let it run now. `locked` stays
  // clear; the waiter sets it. New arrivals see `starving` and queue.
  sema_.release(1, true, true);
}

}  // namespace weft
