// Callback timers: Go's time.AfterFunc.
//
//   weft::func_timer t = weft::after_func(50ms, [] { flush(); });
//   if (t.stop()) { /* flush() will not run */ }
//
// fn runs in its own goroutine when the timer fires. The handle is not needed for the
// timer to fire: dropping it leaves the timer armed, as in Go. A stopped or fired timer
// holds no runtime resources.
//
// Return values follow Go:
//   stop()   true if the call stopped the timer; false if it had already fired (fn has
//            been started) or been stopped.
//   reset(d) re-arms the timer to fire d from now. true if it was pending (fn will now run
//            later instead), false if it had fired or been stopped (fn will run again).
// stop and reset may be called concurrently with each other and with the firing.
// The channel-based timers (timer, ticker, after) come with channels.
#pragma once

#include <chrono>
#include <functional>

namespace weft {

namespace detail {
struct func_timer_state;
}

class func_timer {
 public:
  func_timer() = default;
  ~func_timer();
  func_timer(func_timer&& o) noexcept;
  func_timer& operator=(func_timer&& o) noexcept;
  func_timer(const func_timer&) = delete;
  func_timer& operator=(const func_timer&) = delete;

  bool stop();
  bool reset(std::chrono::nanoseconds d);

 private:
  friend func_timer after_func(std::chrono::nanoseconds d, std::function<void()> fn);
  explicit func_timer(detail::func_timer_state* s) : s_(s) {}
  detail::func_timer_state* s_ = nullptr;
};

// Calls fn in a new goroutine after d. Must be called while the runtime runs.
func_timer after_func(std::chrono::nanoseconds d, std::function<void()> fn);

}  // namespace weft
