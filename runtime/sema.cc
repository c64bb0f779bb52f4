// See runtime/internal/sema.h.
#include "runtime/internal/sema.h"

#include "runtime/internal/profile.h"
#include "runtime/internal/sched.h"
#include "runtime/internal/timer.h"
#include "runtime/runtime.h"

namespace weft::detail {

namespace {

bool unlock_commit(goroutine_ref, void* arg) {
  static_cast<spinlock*>(arg)->release();
  return true;
}

inline int64_t wait_start() { return block_profiling() || mutex_profiling() ? nanotime() : 0; }

}  // namespace

bool sema::try_acquire() {
  spin_guard l(mu_);
  if (count_ == 0) return false;
  count_--;
  return true;
}

void sema::acquire(wait_reason reason, bool lifo) {
  mu_.acquire();
  if (count_ > 0) {
    count_--;
    mu_.release();
    return;
  }
  sema_waiter w;
  w.gp = current_goroutine();
  w.since = wait_start();
  if (lifo)
    q_.push_front(&w);
  else
    q_.push_back(&w);
  nwait_.fetch_add(1, std::memory_order_relaxed);
  park(reason, unlock_commit, &mu_);
  // The releaser dequeued us and handed us its unit.
  if (w.since) record_block(w.since, nanotime(), 0);
}

// The timer side of acquire_for: takes the waiter off the queue if a releaser has not.
struct sema_timeout {
  sema* s;
  sema_waiter* w;
  static void fire(timer*, void* arg, uintptr_t) {
    auto* st = static_cast<sema_timeout*>(arg);
    st->s->mu_.acquire();
    bool mine = st->s->q_.remove(st->w);
    if (mine) {
      st->s->nwait_.fetch_sub(1, std::memory_order_relaxed);
      st->w->timed_out = true;
    }
    goroutine_ref gp = st->w->gp;
    st->s->mu_.release();
    if (mine) ready(gp);
  }
};

bool sema::acquire_for(wait_reason reason, int64_t timeout_ns) {
  mu_.acquire();
  if (count_ > 0) {
    count_--;
    mu_.release();
    return true;
  }
  if (timeout_ns <= 0) {
    mu_.release();
    return false;
  }
  sema_waiter w;
  w.gp = current_goroutine();
  w.since = wait_start();
  sema_timeout st{this, &w};
  timer t(&sema_timeout::fire, &st);
  t.sync = true;
  q_.push_back(&w);
  nwait_.fetch_add(1, std::memory_order_relaxed);
  struct arm {
    spinlock* mu;
    timer* t;
    int64_t when;
  } a{&mu_, &t, nanotime() + timeout_ns};
  park(reason, [](goroutine_ref, void* arg) {
    auto* x = static_cast<arm*>(arg);
    timer_add(x->t, x->when);  // armed only once we are parked
    x->mu->release();
    return true;
  }, &a);
  // Whoever woke us, the timer must be gone before this frame is.
  timer_stop_sync(&t);
  if (w.since) record_block(w.since, nanotime(), 0);
  return !w.timed_out;
}

void sema::release(uint32_t n, bool handoff, bool mutex_profile) {
  // Under one lock hold: take up to n waiters off the queue into a private list (through
  // their `next` links); units nobody waits for stay in count_.
  sema_waiter* woken = nullptr;
  sema_waiter** tail = &woken;
  uint32_t k = 0;
  mu_.acquire();
  while (k < n && !q_.empty()) {
    sema_waiter* w = q_.head;
    q_.remove(w);
    *tail = w;
    tail = &w->next;
    k++;
  }
  *tail = nullptr;
  count_ += n - k;
  if (k) nwait_.fetch_sub(k, std::memory_order_relaxed);
  mu_.release();  // the last access to *this: a waiter may now take a unit and free us
  while (woken) {
    sema_waiter* w = woken;
    // w lives on its goroutine's stack: read everything before readying it.
    woken = w->next;
    goroutine_ref gp = w->gp;
    int64_t since = w->since;
    if (mutex_profile && since) record_mutex(nanotime() - since, 0);
    ready(gp);
  }
  if (handoff && k && current_goroutine()) weft::yield();  // let the waiter run now
}

}  // namespace weft::detail
