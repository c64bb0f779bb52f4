// See runtime/internal/sema.h.
#include "runtime/internal/sema.h"

namespace weft::detail {

void sema::acquire(wait_reason reason) {
  if (try_acquire()) return;
  sema_waiter w{current_goroutine(), nullptr};
  mu_.acquire();
  nwait_.fetch_add(1, std::memory_order_seq_cst);
  if (try_acquire()) {
    nwait_.fetch_sub(1, std::memory_order_relaxed);
    mu_.release();
    return;
  }
  if (tail_)
    tail_->next = &w;
  else
    head_ = &w;
  tail_ = &w;
  park(reason, [](goroutine_ref, void* arg) {
    static_cast<lock*>(arg)->release();
    return true;
  }, &mu_);
  // The releaser dequeued us and handed us its unit.
}

void sema::release(uint32_t n) {
  count_.fetch_add(n, std::memory_order_seq_cst);
  if (nwait_.load(std::memory_order_seq_cst) == 0) return;
  for (uint32_t i = 0; i < n; i++) {
    mu_.acquire();
    if (!head_ || !try_acquire()) {
      mu_.release();
      return;
    }
    sema_waiter* w = head_;
    head_ = w->next;
    if (!head_) tail_ = nullptr;
    nwait_.fetch_sub(1, std::memory_order_relaxed);
    goroutine_ref gp = w->gp;  // w lives on gp's stack: read it before waking gp
    mu_.release();
    ready(gp);
  }
}

}  // namespace weft::detail
