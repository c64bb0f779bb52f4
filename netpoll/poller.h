// The network poller: readiness of file descriptors, integrated into the scheduler.
//
// Goroutines do blocking-style I/O on non-blocking sockets. A goroutine whose read or
// write would block parks on the descriptor's poll_desc (netpoll/poll_desc.h); the
// scheduler polls the OS for readiness and readies the goroutines that can proceed.
// This is Go's netpoll.go design; each backend implements the same small contract:
//
//   poller_init()               creates the OS poller (epoll or kqueue) and the wakeup
//                               descriptor (an eventfd; a pipe on kqueue). Idempotent.
//   poller_open(fd, pd)         registers fd once, for both directions, edge-triggered:
//                               epoll EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET, kqueue
//                               EVFILT_READ and EVFILT_WRITE with EV_CLEAR. The event
//                               carries pd tagged with pd's sequence number.
//   poller_close(fd)            unregisters fd (before it is closed).
//   poller_poll(delay_ns, &n)   waits up to delay_ns (< 0 forever, 0 not at all) and
//                               returns the goroutines made runnable, linked through
//                               g::sched_link. Events whose tag no longer matches their
//                               poll_desc (the fd was closed, maybe reused) are dropped.
//   poller_wake()               breaks a blocked poller_poll. Redundant wakes coalesce.
//
// The scheduler (runtime/internal/poller.h) calls these: a non-blocking poll before
// stealing, exactly one M blocked in poll with the nearest timer as its timeout, sysmon
// polling when nobody has for 10 ms. Only the epoll backend is built and tested here;
// the kqueue one (netpoll/kqueue.cc) is compiled on BSD and macOS and not exercised in CI.
#pragma once

#include <cstdint>

namespace weft::detail {
struct g;
}

namespace weft::net::detail {

struct poll_desc;

void poller_init();
int poller_open(int fd, poll_desc* pd);  // 0 or an errno
void poller_close(int fd);
weft::detail::g* poller_poll(int64_t delay_ns, int32_t* n);
void poller_wake();

// Goroutines parked on any poll_desc (the deadlock detector counts them as wakeable).
int64_t poller_waiters();
// Descriptors currently registered (tests: nothing may stay registered).
int64_t poller_registered();

}  // namespace weft::net::detail
