// poll_desc: the rg/wg state machine; see netpoll/poll_desc.h.
#include "netpoll/poll_desc.h"

#include <atomic>

#include "netpoll/poller.h"
#include "runtime/internal/profile.h"
#include "runtime/internal/sched.h"

namespace weft::net::detail {

using weft::detail::g;
using weft::detail::lock_guard;
using weft::detail::nanotime;

namespace {

std::atomic<int64_t> g_waiters{0};    // goroutines parked on some poll_desc
std::atomic<int64_t> g_watchers{0};   // armed readable watches: wakeable work too
std::atomic<int64_t> g_registered{0};

// The poll_desc cache: descriptors are never freed, so a late poller event can always
// dereference its pointer (its tag tells whether it is still meant for it).
weft::detail::lock g_cache_mu;
poll_desc* g_free = nullptr;

std::atomic<uintptr_t>& word(poll_desc* pd, int mode) { return mode == 'r' ? pd->rg : pd->wg; }

// Readiness (ioready) or a timeout/close (!ioready) for one direction. Returns the
// goroutine to wake, or null.
g* unblock(poll_desc* pd, int mode, bool ioready) {
  std::atomic<uintptr_t>& w = word(pd, mode);
  for (;;) {
    uintptr_t old = w.load(std::memory_order_acquire);
    if (old == poll_desc::kReady) return nullptr;
    if (old == poll_desc::kNil && !ioready) return nullptr;  // only readiness is remembered
    uintptr_t next = ioready ? poll_desc::kReady : poll_desc::kNil;
    if (w.compare_exchange_weak(old, next, std::memory_order_acq_rel)) {
      if (old == poll_desc::kWait) return nullptr;  // not parked yet: its commit will fail
      if (old == poll_desc::kNil) return nullptr;
      g_waiters.fetch_sub(1, std::memory_order_relaxed);
      return reinterpret_cast<g*>(old);
    }
  }
}

void fire_readable(poll_desc* pd);

wait_result check_err(poll_desc* pd, int mode) {
  if (pd->closed_flag.load(std::memory_order_acquire)) return wait_result::closed;
  if (mode == 'r' ? pd->rd_expired.load(std::memory_order_acquire)
                  : pd->wd_expired.load(std::memory_order_acquire))
    return wait_result::timeout;
  return wait_result::ok;
}

bool commit_park(goroutine_ref gp, void* arg) {
  auto* w = static_cast<std::atomic<uintptr_t>*>(arg);
  uintptr_t expected = poll_desc::kWait;
  // Readiness, a deadline or close may have changed the word since we set kWait: then
  // do not park (Go's netpollblockcommit).
  if (!w->compare_exchange_strong(expected, reinterpret_cast<uintptr_t>(gp), std::memory_order_acq_rel))
    return false;
  g_waiters.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Returns true if the direction is ready (a notification was consumed), false if the
// wait ended for another reason (deadline, close), which the caller then checks.
bool block(poll_desc* pd, int mode) {
  std::atomic<uintptr_t>& w = word(pd, mode);
  for (;;) {
    uintptr_t old = poll_desc::kReady;
    if (w.compare_exchange_strong(old, poll_desc::kNil, std::memory_order_acq_rel)) return true;
    old = poll_desc::kNil;
    if (w.compare_exchange_strong(old, poll_desc::kWait, std::memory_order_acq_rel)) break;
    if (old != poll_desc::kReady && old != poll_desc::kNil)
      weft::detail::throw_("netpoll: two goroutines wait on one descriptor direction");
  }
  // A close or deadline that ran before kWait was set saw kNil and woke nobody: check.
  if (check_err(pd, mode) == wait_result::ok) park(wait_reason::io_wait, commit_park, &w);
  // Do not lose a readiness notification that raced the wakeup.
  return w.exchange(poll_desc::kNil, std::memory_order_acq_rel) == poll_desc::kReady;
}

// Deadline timers: arg is the poll_desc, seq the direction's sequence number when armed.
template <int Mode>
void deadline_fire(weft::detail::timer*, void* arg, uintptr_t seq) {
  auto* pd = static_cast<poll_desc*>(arg);
  g* gp = nullptr;
  {
    lock_guard l(pd->mu);
    uint32_t cur = Mode == 'r' ? pd->rseq : pd->wseq;
    if (pd->closing || cur != static_cast<uint32_t>(seq)) return;  // stale
    if (Mode == 'r') {
      pd->rd = -1;
      pd->rd_expired.store(true, std::memory_order_release);
    } else {
      pd->wd = -1;
      pd->wd_expired.store(true, std::memory_order_release);
    }
    gp = unblock(pd, Mode, false);
  }
  if (gp) weft::ready(gp);
}

}  // namespace

poll_desc* pd_open(int fd, std::error_code* err) {
  poll_desc* pd;
  {
    lock_guard l(g_cache_mu);
    pd = g_free;
    if (pd) g_free = pd->next_free;
  }
  if (!pd) {
    pd = new poll_desc();
    pd->rt.f = &deadline_fire<'r'>;
    pd->rt.arg = pd;
    pd->rt.sync = true;
    pd->wt.f = &deadline_fire<'w'>;
    pd->wt.arg = pd;
    pd->wt.sync = true;
  }
  {
    lock_guard l(pd->mu);
    pd->fd = fd;
    pd->closing = false;
    pd->rd = pd->wd = 0;
    pd->rseq++;
    pd->wseq++;
    pd->rd_expired.store(false, std::memory_order_relaxed);
    pd->wd_expired.store(false, std::memory_order_relaxed);
    pd->closed_flag.store(false, std::memory_order_relaxed);
    pd->hup_seen.store(false, std::memory_order_relaxed);
    {
      weft::detail::spin_guard hl(pd->hup_mu);
      pd->on_hup = nullptr;
      pd->hup_arg = nullptr;
      if (pd->on_readable) g_watchers.fetch_sub(1, std::memory_order_relaxed);
      pd->on_readable = nullptr;
      pd->readable_arg = nullptr;
    }
    pd->rg.store(poll_desc::kNil, std::memory_order_relaxed);
    pd->wg.store(poll_desc::kNil, std::memory_order_relaxed);
    pd->fdseq.fetch_add(1, std::memory_order_release);
  }
  poller_init();
  if (int e = poller_open(fd, pd)) {
    *err = std::error_code(e, std::system_category());
    lock_guard l(g_cache_mu);
    pd->next_free = g_free;
    g_free = pd;
    return nullptr;
  }
  g_registered.fetch_add(1, std::memory_order_relaxed);
  return pd;
}

void pd_evict(poll_desc* pd) {
  g* rg = nullptr;
  g* wg = nullptr;
  {
    lock_guard l(pd->mu);
    if (pd->closing) return;
    pd->closing = true;
    pd->closed_flag.store(true, std::memory_order_release);
    pd->rseq++;  // in-flight deadline firings are now stale
    pd->wseq++;
    rg = unblock(pd, 'r', false);
    wg = unblock(pd, 'w', false);
  }
  if (rg) weft::ready(rg);
  if (wg) weft::ready(wg);
  fire_readable(pd);  // a connection held by no goroutine learns that it is closed
}

void pd_close(poll_desc* pd) {
  if (!pd->closing) weft::detail::throw_("netpoll: close of a descriptor that was not evicted");
  // Unregister before the fd number can be reused; events already read by a poller carry
  // the old fdseq and are dropped.
  poller_close(pd->fd);
  g_registered.fetch_sub(1, std::memory_order_relaxed);
  weft::detail::timer_stop_sync(&pd->rt);
  weft::detail::timer_stop_sync(&pd->wt);
  {
    lock_guard l(pd->mu);
    pd->fdseq.fetch_add(1, std::memory_order_release);
    pd->fd = -1;
  }
  lock_guard l(g_cache_mu);
  pd->next_free = g_free;
  g_free = pd;
}

wait_result pd_wait(poll_desc* pd, int mode) {
  wait_result r = check_err(pd, mode);
  if (r != wait_result::ok) return r;
  while (!block(pd, mode)) {
    r = check_err(pd, mode);
    if (r != wait_result::ok) return r;
    // Woken for nothing (a deadline was extended under us): wait again.
  }
  return wait_result::ok;
}

wait_result pd_reset(poll_desc* pd, int mode) { return check_err(pd, mode); }

void pd_set_deadline(poll_desc* pd, int64_t deadline, int mode) {
  g* rg = nullptr;
  g* wg = nullptr;
  int64_t now = deadline == 0 ? 0 : nanotime();  // clearing needs no clock (per request)
  {
    lock_guard l(pd->mu);
    if (pd->closing) return;
    auto apply = [&](int m, int64_t& d, uint32_t& seq, weft::detail::timer& t, std::atomic<bool>& expired) {
      // The new seq makes an armed timer stale: it may stay in the heap and fire for
      // nothing, which costs less than taking it out now. A server clears its read
      // deadline on every request and sets a later one for the next, and a pending
      // timer moved later is only re-dated (timer_reset), so that pattern touches the
      // heap about once per timer key's lifetime instead of twice per request.
      seq++;
      if (deadline == 0) {
        d = 0;
        expired.store(false, std::memory_order_release);
      } else if (deadline <= now) {
        d = -1;
        expired.store(true, std::memory_order_release);
      } else {
        d = deadline;
        expired.store(false, std::memory_order_release);
        weft::detail::timer_reset(&t, deadline, seq);
      }
      (void)m;
    };
    if (mode == 'r' || mode == 'r' + 'w') apply('r', pd->rd, pd->rseq, pd->rt, pd->rd_expired);
    if (mode == 'w' || mode == 'r' + 'w') apply('w', pd->wd, pd->wseq, pd->wt, pd->wd_expired);
    if (pd->rd < 0) rg = unblock(pd, 'r', false);
    if (pd->wd < 0) wg = unblock(pd, 'w', false);
  }
  if (rg) weft::ready(rg);
  if (wg) weft::ready(wg);
}

namespace {

// Fires the readable watch, if one is armed and the read side has a pending
// notification (or the descriptor is closing): the notification is consumed by it.
void fire_readable(poll_desc* pd) {
  weft::detail::spin_guard l(pd->hup_mu);  // held across cb: unwatch waits for it
  if (!pd->on_readable) return;
  uintptr_t expected = poll_desc::kReady;
  bool ready = pd->rg.compare_exchange_strong(expected, poll_desc::kNil, std::memory_order_acq_rel);
  if (!ready && !pd->closed_flag.load(std::memory_order_acquire)) return;
  void (*cb)(void*) = pd->on_readable;
  void* arg = pd->readable_arg;
  pd->on_readable = nullptr;
  pd->readable_arg = nullptr;
  g_watchers.fetch_sub(1, std::memory_order_relaxed);
  cb(arg);
}

}  // namespace

bool pd_watch_readable(poll_desc* pd, void (*cb)(void*), void* arg) {
  {
    weft::detail::spin_guard l(pd->hup_mu);
    if (pd->on_readable) return false;
    pd->on_readable = cb;
    pd->readable_arg = arg;
    g_watchers.fetch_add(1, std::memory_order_relaxed);
  }
  // No wakeup needed: the goroutine arming this is running, and its M will find the
  // watch counted in poller_waiters() when it next looks for work, and poll.
  fire_readable(pd);  // already readable (or closed): at once
  return true;
}

void pd_unwatch_readable(poll_desc* pd) {
  weft::detail::spin_guard l(pd->hup_mu);
  if (pd->on_readable) g_watchers.fetch_sub(1, std::memory_order_relaxed);
  pd->on_readable = nullptr;
  pd->readable_arg = nullptr;
}

void pd_ready(poll_desc* pd, int mode, bool hangup, g** list, int32_t* n) {
  if (hangup) pd->hup_seen.store(true, std::memory_order_seq_cst);
  auto push = [&](g* gp) {
    if (!gp) return;
    gp->sched_link = *list;
    *list = gp;
    (*n)++;
  };
  if (mode == 'r' || mode == 'r' + 'w') {
    pd->rgen.fetch_add(1, std::memory_order_acq_rel);  // before the wakeup it explains
    push(unblock(pd, 'r', true));
    fire_readable(pd);
  }
  if (mode == 'w' || mode == 'r' + 'w') push(unblock(pd, 'w', true));
}

void pd_hangup(poll_desc* pd) {
  // hup_seen was set by pd_ready(hangup), before this (seq_cst: watch_hangup's Dekker).
  weft::detail::spin_guard l(pd->hup_mu);
  if (pd->on_hup) pd->on_hup(pd->hup_arg);
}

void pd_watch_hangup(poll_desc* pd, void (*cb)(void*), void* arg) {
  bool seen;
  {
    weft::detail::spin_guard l(pd->hup_mu);
    pd->on_hup = cb;
    pd->hup_arg = arg;
    seen = pd->hup_seen.load(std::memory_order_seq_cst);
  }
  if (seen) {
    weft::detail::spin_guard l(pd->hup_mu);
    if (pd->on_hup == cb && pd->hup_arg == arg) cb(arg);
  }
}

void pd_unwatch_hangup(poll_desc* pd) {
  weft::detail::spin_guard l(pd->hup_mu);
  pd->on_hup = nullptr;
  pd->hup_arg = nullptr;
}

int64_t poller_waiters() {
  return g_waiters.load(std::memory_order_relaxed) + g_watchers.load(std::memory_order_relaxed);
}
int64_t poller_registered() { return g_registered.load(std::memory_order_relaxed); }

}  // namespace weft::net::detail
