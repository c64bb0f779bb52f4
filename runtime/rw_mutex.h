// rw_mutex: a reader/writer lock for goroutines (Go's sync.RWMutex).
//
// Any number of readers or one writer. Writer preference, as in Go: once a writer calls
// lock(), new readers block until that writer has had its turn, so a stream of readers
// cannot starve it; the readers already inside finish first. A blocked lock() also keeps
// later writers out (they queue on the writer mutex). Recursive read locking is not
// allowed (a pending writer would deadlock it), as in Go. Everything parks goroutines.
// unlock() / runlock() of an unlocked rw_mutex is fatal.
#pragma once

#include <atomic>
#include <cstdint>

#include "runtime/internal/sema.h"
#include "runtime/mutex.h"

namespace weft {

class rw_mutex {
 public:
  rw_mutex() = default;
  rw_mutex(const rw_mutex&) = delete;
  rw_mutex& operator=(const rw_mutex&) = delete;

  void lock_shared();
  bool try_lock_shared();
  void unlock_shared();
  void lock();
  bool try_lock();
  void unlock();

  // Go's spellings.
  void rlock() { lock_shared(); }
  void runlock() { unlock_shared(); }

 private:
  static constexpr int32_t kMaxReaders = 1 << 30;

  mutex w_;                               // held by the writer, pending or active
  detail::sema writer_sem_;               // the writer waits here for readers to leave
  detail::sema reader_sem_;               // readers wait here for the writer to finish
  std::atomic<int32_t> reader_count_{0};  // negative: a writer is pending
  std::atomic<int32_t> reader_wait_{0};   // readers the pending writer still waits for
};

}  // namespace weft
