// Stack arenas; see runtime/internal/stack.h for the layout and the recycling tiers.
#include "runtime/internal/stack.h"

#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "runtime/internal/lock.h"

#if defined(WEFT_ASAN)
#include <sanitizer/asan_interface.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

namespace weft::detail {
namespace {

constexpr std::size_t kArenaBytes = std::size_t{64} << 20;  // address space per arena
constexpr int kMaxArenas = 1 << 16;

// Arenas are recorded in a fixed, append-only table so that the SIGSEGV handler can
// classify a fault address without taking locks.
struct arena {
  char* base;
  std::size_t bytes;
  std::size_t slot_bytes;  // guard + usable
};
arena g_arenas[kMaxArenas];
std::atomic<int> g_narenas{0};

struct size_class_pool {
  std::size_t usable = 0;
  std::vector<char*> free;  // usable-lo pointers of released slots
};

lock g_pool_lock;
std::vector<size_class_pool>* g_pools = nullptr;  // guarded by g_pool_lock
std::atomic<int64_t> g_in_use{0};
std::atomic<int> g_guard_mode{0};  // 0 unknown, 1 madvise guard, 2 mprotect

void install_guard(char* page) {
  int mode = g_guard_mode.load(std::memory_order_relaxed);
  if (mode != 2) {
    if (madvise(page, kPageSize, MADV_GUARD_INSTALL) == 0) {
      g_guard_mode.store(1, std::memory_order_relaxed);
      return;
    }
    if (g_guard_mode.exchange(2) != 2)
      std::fprintf(stderr,
                   "weft: MADV_GUARD_INSTALL unavailable (%s); falling back to mprotect guard "
                   "pages, which cost a VMA each (vm.max_map_count limits stack count)\n",
                   std::strerror(errno));
  }
  if (mprotect(page, kPageSize, PROT_NONE) != 0) {
    std::fprintf(stderr, "fatal error: runtime: cannot protect stack guard page: %s\n",
                 std::strerror(errno));
    std::_Exit(2);
  }
}

size_class_pool& pool_for_locked(std::size_t usable) {
  if (!g_pools) g_pools = new std::vector<size_class_pool>();
  for (auto& p : *g_pools)
    if (p.usable == usable) return p;
  g_pools->push_back(size_class_pool{usable, {}});
  return g_pools->back();
}

void grow_locked(size_class_pool& pool) {
  std::size_t slot = pool.usable + kPageSize;
  std::size_t n = kArenaBytes / slot;
  if (n < 4) n = 4;
  std::size_t bytes = n * slot;
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    std::fprintf(stderr, "fatal error: runtime: cannot allocate goroutine stacks: %s\n",
                 std::strerror(errno));
    std::_Exit(2);
  }
  int idx = g_narenas.load(std::memory_order_relaxed);
  if (idx >= kMaxArenas) {
    std::fprintf(stderr, "fatal error: runtime: too many stack arenas\n");
    std::_Exit(2);
  }
  g_arenas[idx] = arena{static_cast<char*>(mem), bytes, slot};
  g_narenas.store(idx + 1, std::memory_order_release);
  char* base = static_cast<char*>(mem);
  // Hand out low addresses first (the vector is used as a stack).
  for (std::size_t i = n; i-- > 0;) {
    char* s = base + i * slot;
    install_guard(s);
    pool.free.push_back(s + kPageSize);
  }
}

}  // namespace

std::size_t stack_size_class(std::size_t usable) {
  if (usable < 8 * 1024) usable = 8 * 1024;
  return (usable + kPageSize - 1) / kPageSize * kPageSize;
}

stack_slot stack_get(std::size_t size_class) {
  lock_guard l(g_pool_lock);
  size_class_pool& pool = pool_for_locked(size_class);
  if (pool.free.empty()) grow_locked(pool);
  char* lo = pool.free.back();
  pool.free.pop_back();
  g_in_use.fetch_add(1, std::memory_order_relaxed);
  return stack_slot{lo, size_class};
}

void stack_put(stack_slot s) {
  // Keep the guard page, drop the rest. MADV_DONTNEED gives zeroed pages on next touch.
  madvise(s.lo, s.size, MADV_DONTNEED);
#if defined(WEFT_ASAN)
  __asan_unpoison_memory_region(s.lo, s.size);
#endif
  lock_guard l(g_pool_lock);
  pool_for_locked(s.size).free.push_back(s.lo);
  g_in_use.fetch_sub(1, std::memory_order_relaxed);
}

bool stack_is_guard_address(const void* addr) {
  auto a = reinterpret_cast<uintptr_t>(addr);
  int n = g_narenas.load(std::memory_order_acquire);
  for (int i = 0; i < n; i++) {
    const arena& ar = g_arenas[i];
    auto base = reinterpret_cast<uintptr_t>(ar.base);
    if (a < base || a >= base + ar.bytes) continue;
    return (a - base) % ar.slot_bytes < kPageSize;
  }
  return false;
}

bool stack_guards_are_lightweight() { return g_guard_mode.load() == 1; }

void stack_force_mprotect_guards() { g_guard_mode.store(2); }

int64_t stack_slots_in_use() { return g_in_use.load(std::memory_order_relaxed); }

}  // namespace weft::detail
