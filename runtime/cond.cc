// cond: Go's notifyList (runtime/sema.go) on weft's park/ready.
#include "runtime/cond.h"

#include "runtime/internal/profile.h"
#include "runtime/internal/sched.h"
#include "runtime/mutex.h"

namespace weft {

void cond::wait() {
  // Take a ticket before unlocking: a signal that comes after the unlock but before we
  // park finds our ticket and is not lost.
  mu_.acquire();
  uint64_t ticket = wait_++;
  mu_.release();
  m_.unlock();
  int64_t since = detail::block_profiling() ? detail::nanotime() : 0;
  mu_.acquire();
  if (ticket < notify_) {
    mu_.release();  // already notified
  } else {
    waiter w{current_goroutine(), ticket, nullptr};
    if (tail_)
      tail_->next = &w;
    else
      head_ = &w;
    tail_ = &w;
    park(wait_reason::sync_cond_wait, [](goroutine_ref, void* arg) {
      static_cast<detail::lock*>(arg)->release();
      return true;
    }, &mu_);
  }
  if (since) detail::record_block(since, detail::nanotime(), 0);
  m_.lock();
}

void cond::signal() {
  mu_.acquire();
  if (wait_ == notify_) {
    mu_.release();  // nobody waits
    return;
  }
  uint64_t t = notify_++;
  // The waiter with ticket t may not have queued yet; then it sees ticket < notify.
  waiter* prev = nullptr;
  for (waiter* w = head_; w; prev = w, w = w->next) {
    if (w->ticket != t) continue;
    if (prev)
      prev->next = w->next;
    else
      head_ = w->next;
    if (tail_ == w) tail_ = prev;
    goroutine_ref gp = w->gp;
    mu_.release();
    ready(gp);
    return;
  }
  mu_.release();
}

void cond::broadcast() {
  mu_.acquire();
  if (wait_ == notify_) {
    mu_.release();
    return;
  }
  waiter* list = head_;
  head_ = tail_ = nullptr;
  notify_ = wait_;
  mu_.release();
  while (list) {
    waiter* w = list;
    list = w->next;  // read before ready: w lives on the waiter's stack
    ready(w->gp);
  }
}

}  // namespace weft
