// buffer_pool: the 16 KiB read buffers of HTTP connections.
//
// A connection needs its read buffer only while it has a goroutine; a shed (idle)
// connection gives it back. Taking these buffers from malloc fragments its heap: a burst
// of new connections leaves their small long-lived objects scattered between freed
// buffers, and the heap keeps the pages (measured: ~2.5 KB of RSS per idle connection
// after a 10,000-connection burst). So they come from page-aligned chunks of their own.
// Up to kHot released buffers stay warm for reuse; beyond that a released buffer's pages
// go back to the kernel at once (MADV_DONTNEED, one system call per release, paid when a
// connection goes idle or closes, never per request). Address space is kept, like Go's
// heap keeps its spans.
#pragma once

#include <cstddef>
#include <vector>

#include "runtime/internal/lock.h"

namespace weft::http::detail {

class buffer_pool {
 public:
  static constexpr std::size_t kBufBytes = 16 * 1024;
  static constexpr std::size_t kChunkBufs = 64;  // one mmap per 1 MiB
  static constexpr std::size_t kHot = 64;

  // The process-wide pool.
  static buffer_pool& get();

  char* acquire();          // never null: throws std::bad_alloc when mmap fails
  void release(char* buf);  // buf came from acquire()

  std::size_t hot() const;   // for tests: warm free buffers
  std::size_t cold() const;  // free buffers holding no memory

 private:
  mutable weft::detail::spinlock mu_;
  std::vector<char*> hot_;   // mu_
  std::vector<char*> cold_;  // mu_
};

// Owning handle.
class pooled_buffer {
 public:
  pooled_buffer() = default;
  ~pooled_buffer() { reset(); }
  pooled_buffer(const pooled_buffer&) = delete;
  pooled_buffer& operator=(const pooled_buffer&) = delete;
  char* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }
  void acquire() {
    if (!p_) p_ = buffer_pool::get().acquire();
  }
  void reset() {
    if (p_) buffer_pool::get().release(p_);
    p_ = nullptr;
  }

 private:
  char* p_ = nullptr;
};

}  // namespace weft::http::detail
