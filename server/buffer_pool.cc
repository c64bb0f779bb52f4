#include "server/internal/buffer_pool.h"

#include <sys/mman.h>

#include <new>

namespace weft::http::detail {

buffer_pool& buffer_pool::get() {
  static buffer_pool* pool = new buffer_pool();  // never destroyed: conns may outlive main
  return *pool;
}

char* buffer_pool::acquire() {
  {
    weft::detail::spin_guard l(mu_);
    if (!hot_.empty()) {
      char* b = hot_.back();
      hot_.pop_back();
      return b;
    }
    if (!cold_.empty()) {
      char* b = cold_.back();
      cold_.pop_back();
      return b;
    }
  }
  void* mem = mmap(nullptr, kBufBytes * kChunkBufs, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) throw std::bad_alloc();
  auto* base = static_cast<char*>(mem);
  weft::detail::spin_guard l(mu_);
  for (std::size_t i = kChunkBufs - 1; i >= 1; i--) cold_.push_back(base + i * kBufBytes);
  return base;
}

void buffer_pool::release(char* buf) {
  {
    weft::detail::spin_guard l(mu_);
    if (hot_.size() < kHot) {
      hot_.push_back(buf);
      return;
    }
  }
  madvise(buf, kBufBytes, MADV_DONTNEED);  // zero pages on next touch; no RSS until then
  weft::detail::spin_guard l(mu_);
  cold_.push_back(buf);
}

std::size_t buffer_pool::hot() const {
  weft::detail::spin_guard l(mu_);
  return hot_.size();
}

std::size_t buffer_pool::cold() const {
  weft::detail::spin_guard l(mu_);
  return cold_.size();
}

}  // namespace weft::http::detail
