// Channel timers; see runtime/chan_timer.h.
#include "runtime/chan_timer.h"

#include <stdexcept>
#include <type_traits>

#include "runtime/internal/sched.h"
#include "runtime/internal/timer.h"

namespace weft {
namespace detail {

// The channel, its one-value buffer and its runtime timer in one object: the timer
// holds no reference, and the destructor (run when the last handle goes) stops it and
// waits out a firing. A value still buffered then needs no destructor: chan_core's runs
// after the slot's storage is done with, which only a trivial type allows.
static_assert(std::is_trivially_destructible_v<time_point>);

struct timer_chan final : chan_core {
  timer t;
  alignas(time_point) unsigned char slot_storage[sizeof(time_point)];

  explicit timer_chan(int64_t period) : chan_core(&typed_ops<time_point>::ops, 1, slot_storage) {
    t.f = &fire;
    t.arg = this;
    t.period = period;
    t.sync = true;
  }
  ~timer_chan() override { timer_stop_sync(&t); }

  static void fire(timer*, void* arg, uintptr_t) {
    time_point now = std::chrono::steady_clock::now();
    static_cast<timer_chan*>(arg)->offer(&now);  // full buffer: the tick is dropped
  }

  // Empties the buffer so no value from before a stop/reset can be received.
  void drain() {
    recv_slot<time_point> slot;
    while (recv(slot.get(), false) == 1) slot.take();
  }
};

namespace {

int64_t deadline(std::chrono::nanoseconds d) { return nanotime() + (d.count() > 0 ? d.count() : 0); }

}  // namespace
}  // namespace detail

chan<time_point> after(std::chrono::nanoseconds d) {
  auto* tc = new detail::timer_chan(0);
  chan<time_point> c = chan<time_point>::adopt(tc);
  detail::timer_add(&tc->t, detail::deadline(d));
  return c;
}

timer::timer(std::chrono::nanoseconds d) : t_(new detail::timer_chan(0)) {
  c_ = chan<time_point>::adopt(t_);
  detail::timer_add(&t_->t, detail::deadline(d));
}

bool timer::stop() {
  bool pending = detail::timer_stop_sync(&t_->t);
  t_->drain();
  return pending;
}

bool timer::reset(std::chrono::nanoseconds d) {
  bool pending = detail::timer_stop_sync(&t_->t);
  t_->drain();
  detail::timer_add(&t_->t, detail::deadline(d));
  return pending;
}

ticker::ticker(std::chrono::nanoseconds period) {
  if (period.count() <= 0) throw std::invalid_argument("non-positive interval for ticker");
  t_ = new detail::timer_chan(period.count());
  c_ = chan<time_point>::adopt(t_);
  detail::timer_add(&t_->t, detail::deadline(period));
}

void ticker::stop() {
  detail::timer_stop_sync(&t_->t);
  t_->drain();
}

void ticker::reset(std::chrono::nanoseconds period) {
  if (period.count() <= 0) throw std::invalid_argument("non-positive interval for ticker");
  detail::timer_stop_sync(&t_->t);
  t_->drain();
  t_->t.period = period.count();
  detail::timer_add(&t_->t, detail::deadline(period));
}

}  // namespace weft
