// The kqueue backend of the poller contract (netpoll/poller.h), for BSD and macOS.
// Compiled there only; CI runs on Linux, so this file is not exercised (see README).
//
// Same design as epoll.cc: each descriptor is added once with EVFILT_READ and
// EVFILT_WRITE, EV_CLEAR (edge-triggered); udata carries the poll_desc pointer with its
// fdseq packed into the top 16 bits, as on Linux. A non-blocking pipe replaces the
// eventfd for wakeups.
#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) || defined(__OpenBSD__) || \
    defined(__DragonFly__)

#include <fcntl.h>
#include <sys/event.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>

#include "netpoll/poll_desc.h"
#include "netpoll/poller.h"
#include "runtime/internal/poller.h"
#include "runtime/internal/sched.h"

namespace weft::net::detail {
namespace {

int g_kq = -1;
int g_wake_r = -1;
int g_wake_w = -1;
std::atomic<uint32_t> g_wake_sig{0};
std::once_flag g_init_once;

constexpr int kTagShift = 48;
constexpr uint64_t kPtrMask = (uint64_t{1} << kTagShift) - 1;

void* tag(poll_desc* pd, uint32_t seq) {
  return reinterpret_cast<void*>((reinterpret_cast<uint64_t>(pd) & kPtrMask) | (uint64_t{seq & 0xffff} << kTagShift));
}

weft::detail::g* rt_poll(int64_t delay, int32_t* n) { return poller_poll(delay, n); }
void rt_wake() { poller_wake(); }
bool rt_has_waiters() { return poller_waiters() > 0; }
void rt_init() {}
const weft::detail::poller_ops g_ops{rt_init, rt_poll, rt_wake, rt_has_waiters};

}  // namespace

void poller_init() {
  std::call_once(g_init_once, [] {
    g_kq = kqueue();
    if (g_kq < 0) weft::detail::fatal("netpoll: kqueue failed");
    fcntl(g_kq, F_SETFD, FD_CLOEXEC);
    int p[2];
    if (pipe(p) != 0) weft::detail::fatal("netpoll: pipe failed");
    for (int fd : p) {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
      fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    g_wake_r = p[0];
    g_wake_w = p[1];
    struct kevent ev;
    EV_SET(&ev, g_wake_r, EVFILT_READ, EV_ADD, 0, 0, nullptr);
    if (kevent(g_kq, &ev, 1, nullptr, 0, nullptr) < 0) weft::detail::fatal("netpoll: kevent(wake) failed");
    weft::detail::install_poller(&g_ops);
  });
}

int poller_open(int fd, poll_desc* pd) {
  struct kevent ev[2];
  void* udata = tag(pd, pd->fdseq.load(std::memory_order_acquire));
  EV_SET(&ev[0], fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, udata);
  EV_SET(&ev[1], fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, udata);
  if (kevent(g_kq, ev, 2, nullptr, 0, nullptr) < 0) return errno;
  return 0;
}

void poller_close(int fd) {
  // Closing the fd removes its kevents; nothing to do (Go does the same).
  (void)fd;
}

weft::detail::g* poller_poll(int64_t delay, int32_t* n) {
  *n = 0;
  if (g_kq < 0) return nullptr;
  struct kevent events[64];
  timespec ts{};
  timespec* tsp = nullptr;
  if (delay >= 0) {
    ts.tv_sec = static_cast<time_t>(delay / 1000000000);
    ts.tv_nsec = static_cast<long>(delay % 1000000000);
    tsp = &ts;
  }
  int k = kevent(g_kq, nullptr, 0, events, 64, tsp);
  if (k < 0) {
    if (errno != EINTR) weft::detail::fatal("netpoll: kevent wait failed");
    return nullptr;
  }
  weft::detail::g* list = nullptr;
  for (int i = 0; i < k; i++) {
    const struct kevent& ev = events[i];
    if (static_cast<int>(ev.ident) == g_wake_r && ev.filter == EVFILT_READ) {
      if (delay != 0) {
        char buf[16];
        while (read(g_wake_r, buf, sizeof buf) > 0) {
        }
        g_wake_sig.store(0, std::memory_order_release);
      }
      continue;
    }
    auto raw = reinterpret_cast<uint64_t>(ev.udata);
    auto* pd = reinterpret_cast<poll_desc*>(raw & kPtrMask);
    uint32_t seq = static_cast<uint32_t>(raw >> kTagShift);
    if ((pd->fdseq.load(std::memory_order_acquire) & 0xffff) != seq) continue;
    int mode = 0;
    if (ev.filter == EVFILT_READ) mode += 'r';
    if (ev.filter == EVFILT_WRITE) mode += 'w';
    if (ev.flags & EV_EOF) mode = 'r' + 'w';
    bool hangup = ev.flags & (EV_EOF | EV_ERROR);
    if (mode || hangup) pd_ready(pd, mode, hangup, &list, n);
    if (hangup) pd_hangup(pd);
  }
  return list;
}

void poller_wake() {
  if (g_wake_w < 0) return;
  uint32_t expected = 0;
  if (!g_wake_sig.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) return;
  char c = 0;
  for (;;) {
    ssize_t r = write(g_wake_w, &c, 1);
    if (r == 1 || errno == EAGAIN) return;
    if (errno != EINTR) weft::detail::fatal("netpoll: wake pipe write failed");
  }
}

}  // namespace weft::net::detail

#endif
