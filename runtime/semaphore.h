// semaphore: a weighted semaphore (golang.org/x/sync/semaphore).
//
//   weft::semaphore sem(8);                       // 8 units
//   if (auto err = sem.acquire(ctx, 2)) return err;   // gave up: ctx was cancelled
//   ...; sem.release(2);
//
// acquire(n) takes n units, parking the goroutine until they are available. Waiters are
// served strictly FIFO: a large request at the head is not overtaken by smaller ones
// behind it, so it cannot starve (and nobody barges past waiters). acquire(ctx, n)
// also gives up when ctx is done and returns ctx.err(); if the units arrive at the same
// moment, it gives them back. Requesting more than the size blocks until ctx is done.
// release() of more than is held is a panic (std::logic_error).
#pragma once

#include <cstdint>
#include <system_error>

#include "runtime/context.h"
#include "runtime/internal/ilist.h"
#include "runtime/internal/lock.h"

namespace weft {

class semaphore {
 public:
  explicit semaphore(int64_t size) : size_(size) {}
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;

  std::error_code acquire(const context& ctx, int64_t n = 1);
  void acquire(int64_t n = 1) { acquire(context(), n); }
  bool try_acquire(int64_t n = 1);
  void release(int64_t n = 1);

 private:
  struct waiter {
    int64_t n;
    chan<std::monostate> ready;  // closed when the units are granted
    waiter* next = nullptr;
    waiter* prev = nullptr;
  };
  void notify_waiters_locked();

  const int64_t size_;
  detail::lock mu_;
  int64_t cur_ = 0;
  detail::ilist<waiter> q_;
};

}  // namespace weft
