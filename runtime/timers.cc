// Per-P timer heaps, sleep, and callback timers (after_func). The protocol is described
// in runtime/internal/timer.h.
#include <utility>

#include "runtime/internal/sched.h"
#include "runtime/runtime.h"
#include "runtime/timer.h"

namespace weft::detail {

// 4-ary heap: shallower than binary, and the four children's entries share a cache line.
namespace {

using entry = timer_heap::entry;

void place(std::vector<entry>& h, std::size_t i, entry e) {
  h[i] = e;
  e.t->idx = static_cast<int32_t>(i);
}

void sift_up(std::vector<entry>& h, std::size_t i) {
  entry e = h[i];
  while (i > 0) {
    std::size_t parent = (i - 1) / 4;
    if (e.key >= h[parent].key) break;
    place(h, i, h[parent]);
    i = parent;
  }
  place(h, i, e);
}

void sift_down(std::vector<entry>& h, std::size_t i) {
  std::size_t n = h.size();
  entry e = h[i];
  for (;;) {
    std::size_t c = 4 * i + 1;
    if (c >= n) break;
    std::size_t best = c;
    for (std::size_t k = c + 1; k < c + 4 && k < n; k++)
      if (h[k].key < h[best].key) best = k;
    if (h[best].key >= e.key) break;
    place(h, i, h[best]);
    i = best;
  }
  place(h, i, e);
}

// The root's children that are due too: one of them is the next to fire. Their timers
// live in parked goroutines' frames or connection objects, cold by the time they fire;
// asking for them now overlaps those misses with the root's firing instead of paying
// them one after another.
inline void prefetch_due_children(const std::vector<entry>& h, int64_t now) {
  std::size_t n = std::min<std::size_t>(h.size(), 5);
  for (std::size_t k = 1; k < n; k++)
    if (h[k].key <= now) __builtin_prefetch(h[k].t, 1, 3);
}

}  // namespace

void timer_heap::push_locked(timer* t) {
  t->key = t->when;
  heap.push_back({t->key, t});
  sift_up(heap, heap.size() - 1);
  publish_locked();
}

void timer_heap::remove_locked(timer* t) {
  std::size_t i = static_cast<std::size_t>(t->idx);
  std::size_t last = heap.size() - 1;
  if (i != last) place(heap, i, heap[last]);
  heap.pop_back();
  if (i < heap.size()) {
    timer* moved = heap[i].t;
    sift_down(heap, i);
    sift_up(heap, static_cast<std::size_t>(moved->idx));
  }
  t->idx = -1;
  // Release: a stopper that sees no owner, without taking this heap's lock, must also
  // see check_timers' running count for a sync timer, taken before the removal.
  t->owner.store(nullptr, std::memory_order_release);
  publish_locked();
}

void timer_heap::reschedule_head_locked() {
  heap[0].key = heap[0].t->key;
  sift_down(heap, 0);
  publish_locked();
}

timer* timer_heap::pop_locked() {
  timer* t = heap[0].t;
  remove_locked(t);
  return t;
}

namespace {

// Adds t to pp's heap and wakes the poller if t is now the earliest deadline there.
// Does not touch t after the heap lock is released: it may fire at once.
void add_to(p* pp, timer* t, int64_t when, uintptr_t seq) {
  bool first;
  {
    lock_guard l(pp->timers.mu);
    t->when = when;
    t->seq = seq;
    t->owner.store(pp, std::memory_order_relaxed);
    pp->timers.push_locked(t);
    first = pp->timers.heap[0].t == t;
  }
  if (first) wake_net_poller(when);
}

p* current_p() {
  m* mp = getm();
  if (mp && mp->pp && mp->pp->mp.load(std::memory_order_relaxed) == mp) return mp->pp;
  return sched.allp ? &sched.allp[0] : nullptr;
}

// Removes t from whatever heap holds it (t->mu held). True if it was pending.
bool remove_locked_timer(timer* t) {
  for (;;) {
    p* owner = t->owner.load(std::memory_order_acquire);
    if (!owner) return false;
    lock_guard l(owner->timers.mu);
    if (t->owner.load(std::memory_order_relaxed) != owner) continue;  // popped meanwhile
    owner->timers.remove_locked(t);
    return true;
  }
}

}  // namespace

void timer_add(timer* t, int64_t when, uintptr_t seq) {
  lock_guard l(t->mu);
  p* pp = current_p();
  if (!pp) throw_("timer: runtime is not running");
  add_to(pp, t, when, seq);
}

void timer_add_private(timer* t, int64_t when) {
  p* pp = current_p();
  if (!pp) throw_("timer: runtime is not running");
  add_to(pp, t, when, 0);  // touches t only under the heap lock
}

bool timer_stop(timer* t) {
  lock_guard l(t->mu);
  return remove_locked_timer(t);
}

bool timer_reset(timer* t, int64_t when, uintptr_t seq) {
  lock_guard l(t->mu);
  bool pending = false;
  for (;;) {
    p* owner = t->owner.load(std::memory_order_acquire);
    if (!owner) break;
    lock_guard hl(owner->timers.mu);
    if (t->owner.load(std::memory_order_relaxed) != owner) continue;  // popped meanwhile
    // Pending, one-shot, and moved no earlier than its heap key: only `when` changes
    // (see timer::key). Connection deadlines, pushed later on every request, take this.
    if (t->period == 0 && when >= t->key) {
      t->when = when;
      t->seq = seq;
      return true;
    }
    owner->timers.remove_locked(t);
    pending = true;
    break;
  }
  p* pp = current_p();
  if (!pp) throw_("timer: runtime is not running");
  add_to(pp, t, when, seq);
  return pending;
}

bool timer_stop_sync(timer* t) {
  if (!t->sync) throw_("timer_stop_sync: timer is not sync");
  bool pending = timer_stop(t);
  while (t->running.load(std::memory_order_acquire) != 0) cpu_relax();
  return pending;
}

int64_t check_timers(p* pp, int64_t& now, bool* ran) {
  *ran = false;
  int64_t next = pp->timers.first_when.load(std::memory_order_acquire);
  if (next == 0) return 0;
  if (now == 0) now = nanotime();
  if (now < next) return next;
  lock_guard l(pp->timers.mu);
  while (!pp->timers.heap.empty() && pp->timers.heap[0].key <= now) {
    timer* t = pp->timers.heap[0].t;
    if (t->when != t->key) {
      // Reset to later since it was sorted: sort it by its deadline first (even if that
      // is due too: timers due in one pass still fire in deadline order).
      t->key = t->when;
      pp->timers.reschedule_head_locked();
      continue;
    }
    prefetch_due_children(pp->timers.heap, now);  // t fires: the next one is among them
    // Everything we need from t is read, and a sync timer marked running, while t is
    // still in the heap: once it leaves, a stopper may return and t may be gone.
    timer::callback f = t->f;
    void* arg = t->arg;
    uintptr_t seq = t->seq;
    bool sync = t->sync;
    if (sync) t->running.fetch_add(1, std::memory_order_relaxed);
    if (t->period > 0) {
      // Next tick, rescheduled in place so that t never looks stopped; missed ticks are
      // skipped, as Go's ticker drops them.
      t->when += t->period * (1 + (now - t->when) / t->period);
      t->key = t->when;
      pp->timers.reschedule_head_locked();
    } else {
      pp->timers.pop_locked();
    }
    // From here on t belongs to its callback (and to timer_stop_sync's wait).
    pp->timers.mu.release();
    f(t, arg, seq);
    if (sync) t->running.fetch_sub(1, std::memory_order_release);
    *ran = true;
    pp->timers.mu.acquire();
  }
  return pp->timers.heap.empty() ? 0 : pp->timers.heap[0].key;
}

int64_t timers_pending() {
  int64_t n = 0;
  for (int32_t i = 0; i < sched.nprocs; i++) {
    lock_guard l(sched.allp[i].timers.mu);
    n += static_cast<int64_t>(sched.allp[i].timers.heap.size());
  }
  return n;
}

int64_t timer_sleep_until() {
  int64_t next = 0;
  for (int32_t i = 0; i < sched.nprocs; i++) {
    int64_t w = sched.allp[i].timers.first_when.load(std::memory_order_acquire);
    if (w != 0 && (next == 0 || w < next)) next = w;
  }
  return next;
}

// ---------------------------------------------------------------------------------------
// sleep

namespace {

struct sleep_state {
  timer t;
  int64_t when;
};

void sleep_fire(timer*, void* arg, uintptr_t) { ready_g(static_cast<g*>(arg), true); }

bool sleep_commit(g* gp, void* arg) {
  auto* s = static_cast<sleep_state*>(arg);
  s->t.arg = gp;
  // The timer lives in the sleeping goroutine's frame: once armed it may fire, the
  // goroutine may run and the frame be gone. timer_add_private does not touch it after.
  timer_add_private(&s->t, s->when);
  return true;
}

}  // namespace

void sleep_ns(int64_t ns) {
  if (ns <= 0) return;
  if (!getg()) {
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    while (nanosleep(&ts, &ts) != 0) {
    }
    return;
  }
  // The timer is armed by the commit callback, after this goroutine is switched out,
  // so it cannot fire before the goroutine is parked. Nobody stops it: it is popped
  // exactly once, by the firing, before the goroutine can run again.
  sleep_state s{timer(sleep_fire, nullptr), nanotime() + ns};
  park(wait_reason::sleep, sleep_commit, &s);
}

}  // namespace weft::detail

// ---------------------------------------------------------------------------------------
// after_func

namespace weft {

namespace detail {

struct func_timer_state {
  timer t;
  std::function<void()> fn;
  std::atomic<int32_t> refs{1};

  void retain() { refs.fetch_add(1, std::memory_order_relaxed); }
  void release() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
};

namespace {

// The heap holds one reference while the timer is pending; firing hands it to the
// goroutine that runs fn.
void func_timer_fire(timer*, void* arg, uintptr_t) {
  auto* s = static_cast<func_timer_state*>(arg);
  weft::go([s] {
    s->fn();
    s->release();
  });
}

}  // namespace

}  // namespace detail

func_timer after_func(std::chrono::nanoseconds d, std::function<void()> fn) {
  auto* s = new detail::func_timer_state();
  s->fn = std::move(fn);
  s->t.f = detail::func_timer_fire;
  s->t.drop = [](detail::timer*, void* arg, uintptr_t) { static_cast<detail::func_timer_state*>(arg)->release(); };
  s->t.arg = s;
  s->retain();  // the heap's reference
  detail::timer_add(&s->t, detail::nanotime() + std::max<int64_t>(d.count(), 0));
  return func_timer(s);
}

func_timer::~func_timer() {
  if (s_) s_->release();
}

func_timer::func_timer(func_timer&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}

func_timer& func_timer::operator=(func_timer&& o) noexcept {
  if (this != &o) {
    if (s_) s_->release();
    s_ = std::exchange(o.s_, nullptr);
  }
  return *this;
}

bool func_timer::stop() {
  if (!s_) return false;
  bool pending = detail::timer_stop(&s_->t);
  if (pending) s_->release();  // the heap's reference
  return pending;
}

bool func_timer::reset(std::chrono::nanoseconds d) {
  if (!s_) return false;
  // Take the heap's reference first: once re-armed the timer may fire at once. If it
  // was still pending, the heap already held one and the extra goes back.
  s_->retain();
  bool pending = detail::timer_reset(&s_->t, detail::nanotime() + std::max<int64_t>(d.count(), 0));
  if (pending) s_->release();
  return pending;
}

}  // namespace weft
