// The scheduler's side of the network poller contract.
//
// The runtime never includes netpoll headers. A poller registers itself here (netpoll/
// does so for epoll or kqueue); until one does, a built-in "timer sleeper" stands in:
// its poll() just sleeps on a futex until the timeout or a wake(). That keeps one code
// path in the scheduler: exactly one M at a time blocks in poll(), bounded by the
// nearest timer, whether or not any socket exists.
//
//   init()          called once when installed.
//   poll(delay_ns)  blocks up to delay_ns (< 0: forever, 0: don't block) and returns the
//                   goroutines made runnable by I/O, linked through g::sched_link, with
//                   their count in *n. Must return early when wake() is called.
//   wake()          breaks a blocked poll() (an eventfd write for epoll).
//   has_waiters()   true if any goroutine is parked on I/O: such goroutines can still be
//                   woken, so the deadlock detector must not fire, and an M must block in
//                   poll() instead of sleeping.
#pragma once

#include <cstdint>

namespace weft::detail {

struct g;

struct poller_ops {
  void (*init)();
  g* (*poll)(int64_t delay_ns, int32_t* n);
  void (*wake)();
  bool (*has_waiters)();
};

// Installs a poller. Call before weft::run or from the first goroutine.
void install_poller(const poller_ops* ops);

}  // namespace weft::detail
