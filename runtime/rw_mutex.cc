// rw_mutex: Go's sync/rwmutex.go algorithm on weft's mutex and sema.
#include "runtime/rw_mutex.h"

#include "runtime/internal/sched.h"

namespace weft {

void rw_mutex::lock_shared() {
  if (reader_count_.fetch_add(1, std::memory_order_acquire) + 1 < 0)
    reader_sem_.acquire(wait_reason::sync_rwmutex_rlock);  // a writer is pending
}

bool rw_mutex::try_lock_shared() {
  int32_t c = reader_count_.load(std::memory_order_relaxed);
  while (c >= 0)
    if (reader_count_.compare_exchange_weak(c, c + 1, std::memory_order_acquire)) return true;
  return false;
}

void rw_mutex::unlock_shared() {
  int32_t r = reader_count_.fetch_sub(1, std::memory_order_release) - 1;
  if (r >= 0) return;
  if (r + 1 == 0 || r + 1 == -kMaxReaders) detail::fatal("sync: RUnlock of unlocked RWMutex");
  // A writer is pending: the last reader it waits for wakes it.
  if (reader_wait_.fetch_sub(1, std::memory_order_acq_rel) - 1 == 0) writer_sem_.release();
}

void rw_mutex::lock() {
  w_.lock();  // first, resolve competition with other writers
  // Announce the writer: new readers now block.
  int32_t r = reader_count_.fetch_sub(kMaxReaders, std::memory_order_acq_rel);
  if (r != 0 && reader_wait_.fetch_add(r, std::memory_order_acq_rel) + r != 0)
    writer_sem_.acquire(wait_reason::sync_rwmutex_lock);
}

bool rw_mutex::try_lock() {
  if (!w_.try_lock()) return false;
  int32_t zero = 0;
  if (!reader_count_.compare_exchange_strong(zero, -kMaxReaders, std::memory_order_acquire)) {
    w_.unlock();
    return false;
  }
  return true;
}

void rw_mutex::unlock() {
  int32_t r = reader_count_.fetch_add(kMaxReaders, std::memory_order_release) + kMaxReaders;
  if (r >= kMaxReaders) detail::fatal("sync: Unlock of unlocked RWMutex");
  // Let the readers that arrived while we held it in.
  if (r > 0) reader_sem_.release(static_cast<uint32_t>(r));
  w_.unlock();
}

}  // namespace weft
