// semaphore: FIFO weighted semaphore, after golang.org/x/sync/semaphore.
#include "runtime/semaphore.h"

#include <stdexcept>

#include "runtime/select.h"

namespace weft {

void semaphore::notify_waiters_locked() {
  // Strict FIFO: stop at the first waiter that does not fit, so that a big request is
  // not starved by a stream of small ones.
  while (waiter* w = q_.head) {
    if (size_ - cur_ < w->n) break;
    cur_ += w->n;
    q_.remove(w);
    w->ready.close();
  }
}

bool semaphore::try_acquire(int64_t n) {
  detail::lock_guard l(mu_);
  if (size_ - cur_ >= n && q_.empty()) {
    cur_ += n;
    return true;
  }
  return false;
}

std::error_code semaphore::acquire(const context& ctx, int64_t n) {
  chan<std::monostate> done = ctx.done();
  mu_.acquire();
  if (size_ - cur_ >= n && q_.empty()) {
    cur_ += n;
    mu_.release();
    return {};
  }
  if (n > size_) {
    // Can never be satisfied: wait for the context, as x/sync does.
    mu_.release();
    done.recv();
    return ctx.err();
  }
  waiter w{n, chan<std::monostate>(0)};
  q_.push_back(&w);
  mu_.release();

  std::monostate tok;
  bool got = false;
  int which = select(case_recv(w.ready, tok, &got), case_recv(done, tok));
  if (which == 0) {
    // Granted. If the context ended at the same time, prefer reporting it and give the
    // units back (x/sync does the same).
    if (ctx.err()) {
      release(n);
      return ctx.err();
    }
    return {};
  }
  detail::lock_guard l(mu_);
  if (w.ready.try_recv()) {
    // Granted just as we gave up: put the units back.
    cur_ -= n;
    notify_waiters_locked();
  } else {
    bool front = q_.head == &w;
    q_.remove(&w);
    // Leaving the front may let the next waiters fit.
    if (front && size_ > cur_) notify_waiters_locked();
  }
  return ctx.err();
}

void semaphore::release(int64_t n) {
  detail::lock_guard l(mu_);
  cur_ -= n;
  if (cur_ < 0) {
    cur_ += n;
    throw std::logic_error("semaphore: released more than held");
  }
  notify_waiters_locked();
}

}  // namespace weft
