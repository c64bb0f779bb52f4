// Channel timers: Go's time.After, time.Timer and time.Ticker.
//
//   select(case_recv(results, r), case_recv(weft::after(2s), tp));   // a timeout
//
//   weft::timer t(100ms);                 // fires once: t.c() receives the time
//   weft::ticker k(1s);                   // fires every second until stopped
//   for (;;) { auto [now, ok] = k.c().recv(); ... }
//
// The channel has a buffer of one; a tick that finds it full is dropped, as in Go.
// Since Go 1.23, and here, nothing leaks and nothing is stale:
//   - a timer whose every channel handle is gone is stopped and freed at once, so
//     `select` on after(1h) inside a loop keeps memory flat (the seeds' time.After leak
//     cannot be written);
//   - after stop() or reset() returns, the channel holds no value from before the call.
//
// Return values (Go's):
//   timer::stop()     true if the call stopped the timer, false if it had already fired
//                     or been stopped.
//   timer::reset(d)   true if the timer had been active (it now fires d from now).
//   ticker::reset(d)  changes the period; the next tick comes d from now.
#pragma once

#include <chrono>

#include "runtime/chan.h"

namespace weft {

using time_point = std::chrono::steady_clock::time_point;

namespace detail {
struct timer_chan;
}

// A channel that receives the time once, d from now (Go's time.After).
chan<time_point> after(std::chrono::nanoseconds d);

class timer {
 public:
  explicit timer(std::chrono::nanoseconds d);
  timer(timer&&) noexcept = default;
  timer& operator=(timer&&) noexcept = default;

  const chan<time_point>& c() const { return c_; }
  bool stop();
  bool reset(std::chrono::nanoseconds d);

 private:
  chan<time_point> c_;
  detail::timer_chan* t_;
};

class ticker {
 public:
  explicit ticker(std::chrono::nanoseconds period);  // period must be > 0
  ticker(ticker&&) noexcept = default;
  ticker& operator=(ticker&&) noexcept = default;

  const chan<time_point>& c() const { return c_; }
  void stop();
  void reset(std::chrono::nanoseconds period);

 private:
  chan<time_point> c_;
  detail::timer_chan* t_;
};

}  // namespace weft
