// The epoll backend of the poller contract (netpoll/poller.h). Linux only.
//
// One epoll instance per process. Each descriptor is added once, for both directions,
// edge-triggered; the event data is the poll_desc pointer tagged with its fdseq in the
// top 16 bits (user-space pointers on x86-64 and arm64 fit in 48). An eventfd, added with
// data 0, breaks a blocked epoll_pwait2; wake_sig coalesces redundant wakes and only a
// blocking poll consumes one. epoll_pwait2 takes a timespec, so timers are honoured to
// the nanosecond rather than rounded to milliseconds. Where it is missing (kernels before
// 5.11, seccomp sandboxes, valgrind) epoll_wait takes over, rounding timeouts up to ms.
#if defined(__linux__)

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>

#include "netpoll/poll_desc.h"
#include "netpoll/poller.h"
#include "runtime/internal/poller.h"
#include "runtime/internal/sched.h"

namespace weft::net::detail {
namespace {

int g_epfd = -1;
int g_evfd = -1;
std::atomic<uint32_t> g_wake_sig{0};
std::atomic<bool> g_no_pwait2{false};  // epoll_pwait2 said ENOSYS: epoll_wait instead
std::once_flag g_init_once;

constexpr int kTagShift = 48;
constexpr uint64_t kPtrMask = (uint64_t{1} << kTagShift) - 1;

uint64_t tag(poll_desc* pd, uint32_t seq) {
  return (reinterpret_cast<uint64_t>(pd) & kPtrMask) | (uint64_t{seq & 0xffff} << kTagShift);
}

weft::detail::g* rt_poll(int64_t delay, int32_t* n) { return poller_poll(delay, n); }
void rt_wake() { poller_wake(); }
bool rt_has_waiters() { return poller_waiters() > 0; }
void rt_init() {}

const weft::detail::poller_ops g_ops{rt_init, rt_poll, rt_wake, rt_has_waiters};

}  // namespace

void poller_init() {
  std::call_once(g_init_once, [] {
    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g_epfd < 0) weft::detail::fatal("netpoll: epoll_create1 failed");
    g_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (g_evfd < 0) weft::detail::fatal("netpoll: eventfd failed");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, g_evfd, &ev) != 0) weft::detail::fatal("netpoll: epoll_ctl(eventfd) failed");
    weft::detail::install_poller(&g_ops);
  });
}

int poller_open(int fd, poll_desc* pd) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = tag(pd, pd->fdseq.load(std::memory_order_acquire));
  if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev) != 0) return errno;
  return 0;
}

void poller_close(int fd) {
  epoll_event ev{};
  epoll_ctl(g_epfd, EPOLL_CTL_DEL, fd, &ev);
}

weft::detail::g* poller_poll(int64_t delay, int32_t* n) {
  *n = 0;
  if (g_epfd < 0) return nullptr;
  epoll_event events[128];
  timespec ts{};
  timespec* tsp = nullptr;
  if (delay >= 0) {
    ts.tv_sec = static_cast<time_t>(delay / 1000000000);
    ts.tv_nsec = static_cast<long>(delay % 1000000000);
    tsp = &ts;
  }
  int k;
  for (;;) {
    if (!g_no_pwait2.load(std::memory_order_relaxed)) {
      k = epoll_pwait2(g_epfd, events, 128, tsp, nullptr);
    } else {
      // Milliseconds, rounded up: a timer is never run early, at worst 1 ms late.
      int ms = delay < 0 ? -1 : static_cast<int>(std::min<int64_t>((delay + 999999) / 1000000, INT32_MAX));
      k = epoll_wait(g_epfd, events, 128, ms);
    }
    if (k >= 0) break;
    int e = errno;
    if (e == ENOSYS && !g_no_pwait2.exchange(true)) continue;  // kernel before 5.11, valgrind
    if (e != EINTR)
      weft::detail::fatal(g_no_pwait2.load(std::memory_order_relaxed) ? "netpoll: epoll_wait failed"
                                                                      : "netpoll: epoll_pwait2 failed");
    if (delay > 0) return nullptr;  // let the caller recompute its timeout
  }
  weft::detail::g* list = nullptr;
  for (int i = 0; i < k; i++) {
    const epoll_event& ev = events[i];
    if (ev.data.u64 == 0) {
      if (delay != 0) {
        // Only a blocking poll consumes the wakeup; a non-blocking one leaves it for the
        // M that is (or will be) blocked.
        uint64_t v;
        [[maybe_unused]] ssize_t r = read(g_evfd, &v, sizeof v);
        g_wake_sig.store(0, std::memory_order_release);
      }
      continue;
    }
    auto* pd = reinterpret_cast<poll_desc*>(ev.data.u64 & kPtrMask);
    uint32_t seq = static_cast<uint32_t>(ev.data.u64 >> kTagShift);
    if ((pd->fdseq.load(std::memory_order_acquire) & 0xffff) != seq) continue;  // stale: closed or reused
    int mode = 0;
    if (ev.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) mode += 'r';
    if (ev.events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) mode += 'w';
    bool hangup = ev.events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
    if (mode || hangup) pd_ready(pd, mode, hangup, &list, n);
    if (hangup) pd_hangup(pd);
  }
  return list;
}

void poller_wake() {
  if (g_evfd < 0) return;
  uint32_t expected = 0;
  if (!g_wake_sig.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) return;
  uint64_t one = 1;
  for (;;) {
    ssize_t r = write(g_evfd, &one, sizeof one);
    if (r == sizeof one || errno == EAGAIN) return;
    if (errno != EINTR) weft::detail::fatal("netpoll: eventfd write failed");
  }
}

}  // namespace weft::net::detail

#endif  // __linux__
