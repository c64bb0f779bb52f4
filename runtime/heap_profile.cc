// The sampled heap profiler: replacement operator new/delete, the sampler, the per-stack
// records and the heap profile. API and scope in runtime/heap_profile.h.
//
// Design.
//
// Fast paths. operator new allocates with malloc (posix_memalign for the aligned forms)
// and then decrements the calling thread's countdown of bytes to the next sample. The
// countdown lives in a constant-initialized, trivially destructible thread_local, so it
// costs a %fs-relative load and store, needs no TLS guard, works in static constructors
// and in threads that are exiting, and is never destroyed. Next to it sits the rate the
// countdown was drawn for; a rate change (set_mem_profile_rate) shows up as a mismatch
// with the global rate, which sends the thread to the slow path to draw a new countdown:
// the fast path is one relaxed load of the global, a compare, a subtract and a compare.
// (Go keeps the countdown per P; a thread is our closest equivalent, and a goroutine
// that migrates simply continues another thread's countdown, which does not bias the
// sampling: every byte allocated on a thread counts toward that thread's next sample.)
//
// operator delete must learn whether the pointer was sampled without a lock: it hashes
// the address into a counting filter of 2^17 one-byte counters (128 KiB of zeroed BSS)
// and loads one. Zero, the common case, means "not sampled": free() and return. A
// non-zero counter sends it to the pointer table, which can still say "not tracked"
// (another sampled pointer shares the counter). The counters only change under the lock
// of the table shard that owns them (shard = counter index mod 64), so they are plain
// relaxed load/store pairs; a counter that reaches 255 sticks there (its slot always
// takes the slow path, which stays correct). No fence is needed on the delete side: the
// program must order `new` before `delete` of the same pointer anyway (handing it to
// another thread is a synchronization), and the sampled entry and the counter were
// written before operator new returned. The entry is removed before free(), so an
// address that malloc hands out again is never confused with its previous life.
//
// Sampling. The countdown is -ln(u) * rate for u uniform in (0, 1], from a per-thread
// splitmix64 generator seeded from the clock and the thread's TLS address. With a
// memoryless countdown an object of s bytes is sampled with probability
// p(s) = 1 - exp(-s / rate), whatever was allocated before it, so a record of c samples
// totalling b bytes estimates c / p(b / c) objects (Go's scaleHeapSample, applied when a
// profile is read). rate 1 samples every allocation (countdown 0); rate 0 parks the
// countdown at INT64_MAX.
//
// Records. A sampled allocation walks the frame-pointer chain (the build keeps frame
// pointers everywhere), starting from operator new's own frame: its return address is
// the allocating call site, so nothing of the hook appears in the stack. Each frame
// beyond the first is read only if it lies inside the current stack: the goroutine's
// [stack_lo, stack_hi) when the frame is on it, else the thread's own stack (asked once
// per thread from pthread_getattr_np, or __libc_stack_end for the main thread;
// blocking() runs on it) and nothing otherwise, and
// only while its return address lies in the code of a loaded object (code built without
// frame pointers leaves garbage in the chain: without this check every sample through
// such a frame would invent a new stack). Past 65536 distinct stacks, new ones are cut
// to their first frame, so memory stays bounded whatever the stacks look like. The
// stack keys a bucket holding four counters (allocations, bytes, frees, freed bytes).
// Buckets are never freed (the allocs profile is cumulative, as in Go): they live in an
// mmap'd arena and are chained into a fixed hash table that readers walk without a lock
// (entries are published with release stores, the insert takes a lock). The pointer
// table maps each live sampled pointer to its bucket and size: 64 shards, each an
// open-addressing table with linear probing and backward-shift deletion, grown with
// malloc. Pointers are stored complemented, so LeakSanitizer does not see our copy as a
// reference that keeps a leaked object alive.
//
// Recursion and lifetime. The recorder never calls operator new: tables come from malloc
// and mmap, the locks are runtime/internal/lock.h futex locks (constant-initialized). No
// object here has a destructor, so deletes after main returns, in static destructors or
// in thread_local destructors still find every table intact. A thread_local flag keeps a
// recursive allocation (none is expected) from re-entering the recorder. fork() takes
// every lock in a pthread_atfork prepare handler so a child never inherits one held.
//
// Lock order: bucket insert lock and shard locks are leaves (never held together, except
// by the fork handler, which takes the bucket lock then the shards in index order).
#include "runtime/heap_profile.h"

#include <link.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <time.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sys/mman.h>

#include "runtime/internal/lock.h"
#include "runtime/internal/sched.h"

extern "C" void* __libc_stack_end;  // glibc: the top of the main thread's stack

// This file is the allocator: operator delete ends in free() on what operator new got
// from malloc. GCC sees that free() once the delete is inlined here and warns.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace weft::detail {
namespace {

constexpr int kMaxDepth = 64;
constexpr int kFilterBits = 17;
constexpr uint32_t kFilterSize = 1u << kFilterBits;
constexpr uint32_t kShards = 64;
constexpr uint32_t kBucketHashSize = 1u << 16;
constexpr std::size_t kArenaChunk = 256 * 1024;
constexpr int64_t kMaxBuckets = 1 << 16;  // ~40 MiB of buckets at most
constexpr int kMaxTextRanges = 1024;

constinit std::atomic<int64_t> g_rate{kDefaultMemProfileRate};

// ---------------------------------------------------------------------------------------
// Per-thread sampler state.

struct sampler_state {
  int64_t left;  // bytes to allocate before the next sample
  int64_t rate;  // rate `left` was drawn for (-1: not drawn yet)
  uint64_t rng;  // splitmix64 state (0: not seeded)
  uintptr_t stack_lo;
  uintptr_t stack_hi;
  bool stack_known;
  bool busy;  // inside the recorder
};

constinit thread_local sampler_state t_sampler{0, -1, 0, 0, 0, false, false};
constinit std::atomic<uint64_t> g_seed_counter{0};

uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t next_random(sampler_state& t) {
  if (t.rng == 0) {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t.rng = mix64(static_cast<uint64_t>(ts.tv_nsec) ^ (static_cast<uint64_t>(ts.tv_sec) << 32) ^
                  reinterpret_cast<uintptr_t>(&t) ^
                  g_seed_counter.fetch_add(0x9e3779b97f4a7c15ULL, std::memory_order_relaxed)) |
            1;
  }
  t.rng += 0x9e3779b97f4a7c15ULL;
  return mix64(t.rng);
}

// Bytes until the next sample: exponential with mean `rate`.
int64_t next_countdown(sampler_state& t, int64_t rate) {
  if (rate <= 0) return INT64_MAX;
  if (rate == 1) return 0;
  double u = static_cast<double>((next_random(t) >> 11) + 1) * 0x1.0p-53;  // (0, 1]
  double x = -std::log(u) * static_cast<double>(rate);
  if (x >= 0x1.0p62) return int64_t{1} << 62;
  return static_cast<int64_t>(x) + 1;
}

// ---------------------------------------------------------------------------------------
// Buckets: one per allocating stack.

struct bucket {
  std::atomic<int64_t> allocs{0};
  std::atomic<int64_t> alloc_bytes{0};
  std::atomic<int64_t> frees{0};
  std::atomic<int64_t> free_bytes{0};
  bucket* next = nullptr;      // hash chain; immutable once published
  bucket* all_next = nullptr;  // list of every bucket; immutable once published
  uint64_t hash = 0;
  int32_t depth = 0;
  uintptr_t* pcs() { return reinterpret_cast<uintptr_t*>(this + 1); }
};
static_assert(sizeof(bucket) % alignof(uintptr_t) == 0);

constinit lock g_bucket_mu;  // inserts into g_buckets / g_all_buckets, and the arena
constinit std::atomic<bucket*> g_buckets[kBucketHashSize] = {};
constinit std::atomic<bucket*> g_all_buckets{nullptr};
constinit std::atomic<int64_t> g_nbuckets{0};
char* g_arena_cur = nullptr;  // g_bucket_mu
char* g_arena_end = nullptr;

void* arena_alloc(std::size_t n) {
  n = (n + 63) & ~std::size_t{63};
  if (static_cast<std::size_t>(g_arena_end - g_arena_cur) < n) {
    std::size_t chunk = n > kArenaChunk ? n : kArenaChunk;
    void* m = mmap(nullptr, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    g_arena_cur = static_cast<char*>(m);
    g_arena_end = g_arena_cur + chunk;
  }
  void* r = g_arena_cur;
  g_arena_cur += n;
  return r;
}

uint64_t stack_hash(const uintptr_t* pcs, int n) {
  uint64_t h = 0x84222325cbf29ce4ULL ^ static_cast<uint64_t>(n);
  for (int i = 0; i < n; i++) h = mix64(h ^ pcs[i]);
  return h;
}

bucket* find_in_chain(bucket* b, uint64_t h, const uintptr_t* pcs, int n) {
  for (; b; b = b->next)
    if (b->hash == h && b->depth == n && std::memcmp(b->pcs(), pcs, n * sizeof(uintptr_t)) == 0)
      return b;
  return nullptr;
}

bucket* bucket_for(const uintptr_t* pcs, int n) {
  uint64_t h = stack_hash(pcs, n);
  std::atomic<bucket*>& head = g_buckets[h & (kBucketHashSize - 1)];
  if (bucket* b = find_in_chain(head.load(std::memory_order_acquire), h, pcs, n)) return b;
  lock_guard l(g_bucket_mu);
  if (bucket* b = find_in_chain(head.load(std::memory_order_relaxed), h, pcs, n)) return b;
  void* mem = arena_alloc(sizeof(bucket) + n * sizeof(uintptr_t));
  if (mem == nullptr) return nullptr;
  bucket* b = ::new (mem) bucket();
  b->hash = h;
  b->depth = n;
  std::memcpy(b->pcs(), pcs, n * sizeof(uintptr_t));
  b->next = head.load(std::memory_order_relaxed);
  b->all_next = g_all_buckets.load(std::memory_order_relaxed);
  head.store(b, std::memory_order_release);
  g_all_buckets.store(b, std::memory_order_release);
  g_nbuckets.fetch_add(1, std::memory_order_relaxed);
  return b;
}

// ---------------------------------------------------------------------------------------
// The filter and the pointer table.

constinit std::atomic<uint8_t> g_filter[kFilterSize] = {};

inline uint32_t filter_index(const void* p) {
  return static_cast<uint32_t>(((reinterpret_cast<uintptr_t>(p) >> 4) * 0x9e3779b97f4a7c15ULL) >>
                               (64 - kFilterBits));
}

void filter_inc(uint32_t i) {  // under the owning shard's lock
  uint8_t v = g_filter[i].load(std::memory_order_relaxed);
  if (v != 255) g_filter[i].store(v + 1, std::memory_order_relaxed);
}

void filter_dec(uint32_t i) {  // under the owning shard's lock
  uint8_t v = g_filter[i].load(std::memory_order_relaxed);
  if (v != 255 && v != 0) g_filter[i].store(v - 1, std::memory_order_relaxed);
}

struct ptr_entry {
  uintptr_t key;  // ~address; 0: empty
  bucket* b;
  int64_t size;
};

struct alignas(64) ptr_shard {
  lock mu;
  ptr_entry* slots = nullptr;
  uint32_t mask = 0;  // capacity - 1 (capacity 0 before the first insert)
  uint32_t count = 0;
};

constinit ptr_shard g_shards[kShards];

inline uint32_t home_slot(uintptr_t key, uint32_t mask) {
  return static_cast<uint32_t>(mix64(key)) & mask;
}

bool shard_grow(ptr_shard& s) {
  uint32_t cap = s.slots ? (s.mask + 1) * 2 : 64;
  auto* slots = static_cast<ptr_entry*>(std::calloc(cap, sizeof(ptr_entry)));
  if (slots == nullptr) return false;
  uint32_t mask = cap - 1;
  if (s.slots) {
    for (uint32_t i = 0; i <= s.mask; i++) {
      if (s.slots[i].key == 0) continue;
      uint32_t j = home_slot(s.slots[i].key, mask);
      while (slots[j].key != 0) j = (j + 1) & mask;
      slots[j] = s.slots[i];
    }
    std::free(s.slots);
  }
  s.slots = slots;
  s.mask = mask;
  return true;
}

bool shard_insert(ptr_shard& s, uintptr_t key, bucket* b, int64_t size) {
  if (s.slots == nullptr || (s.count + 1) * 2 > s.mask + 1) {
    if (!shard_grow(s)) return false;
  }
  uint32_t j = home_slot(key, s.mask);
  while (s.slots[j].key != 0) j = (j + 1) & s.mask;
  s.slots[j] = ptr_entry{key, b, size};
  s.count++;
  return true;
}

// Removes `key` and returns its entry (key 0 when absent).
ptr_entry shard_remove(ptr_shard& s, uintptr_t key) {
  if (s.slots == nullptr) return ptr_entry{0, nullptr, 0};
  uint32_t i = home_slot(key, s.mask);
  while (s.slots[i].key != key) {
    if (s.slots[i].key == 0) return ptr_entry{0, nullptr, 0};
    i = (i + 1) & s.mask;
  }
  ptr_entry found = s.slots[i];
  // Backward-shift deletion: pull later entries of the probe run into the hole unless
  // their home lies cyclically in (hole, j].
  for (uint32_t j = (i + 1) & s.mask; s.slots[j].key != 0; j = (j + 1) & s.mask) {
    uint32_t h = home_slot(s.slots[j].key, s.mask);
    bool stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
    if (stays) continue;
    s.slots[i] = s.slots[j];
    i = j;
  }
  s.slots[i] = ptr_entry{0, nullptr, 0};
  s.count--;
  return found;
}

// ---------------------------------------------------------------------------------------
// Stack capture.

// Code ranges: the executable PT_LOAD segments of every loaded object, sorted. A frame
// whose return address lies outside them ends the walk: code built without frame
// pointers (libstdc++, libc, the sanitizer runtimes) leaves rbp holding anything, and a
// garbage value that passes the bounds checks would otherwise add made-up frames, a new
// stack (and bucket) per sample. Rebuilt when the loader's adds/subs counters move (a
// dlopen or dlclose); a superseded table is never freed, as a reader may still hold it,
// but stays linked from g_retired (one per dlopen/dlclose), so that leak checkers see it.
struct text_ranges {
  text_ranges* retired_next = nullptr;  // g_retired's list
  uint64_t adds = 0;
  uint64_t subs = 0;
  int n = 0;
  uintptr_t lo[kMaxTextRanges];
  uintptr_t hi[kMaxTextRanges];

  bool contains(uintptr_t pc) const {
    int a = 0, b = n;  // first range with lo > pc is at b
    while (a < b) {
      int mid = (a + b) / 2;
      if (lo[mid] <= pc)
        a = mid + 1;
      else
        b = mid;
    }
    return a > 0 && pc < hi[a - 1];
  }
};

constinit std::atomic<text_ranges*> g_text{nullptr};
constinit std::atomic<text_ranges*> g_retired{nullptr};

int read_loader_counters(dl_phdr_info* info, std::size_t, void* arg) {
  auto* c = static_cast<uint64_t*>(arg);
  c[0] = info->dlpi_adds;
  c[1] = info->dlpi_subs;
  return 1;  // the counters are the same for every object: stop at the first
}

int collect_text(dl_phdr_info* info, std::size_t, void* arg) {
  auto* t = static_cast<text_ranges*>(arg);
  t->adds = info->dlpi_adds;
  t->subs = info->dlpi_subs;
  for (int i = 0; i < info->dlpi_phnum && t->n < kMaxTextRanges; i++) {
    const auto& ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || (ph.p_flags & PF_X) == 0) continue;
    uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
    uintptr_t hi = lo + ph.p_memsz;
    int j = t->n++;
    for (; j > 0 && t->lo[j - 1] > lo; j--) {  // insertion sort: a few dozen ranges
      t->lo[j] = t->lo[j - 1];
      t->hi[j] = t->hi[j - 1];
    }
    t->lo[j] = lo;
    t->hi[j] = hi;
  }
  return 0;
}

bool is_text(uintptr_t pc) {
  text_ranges* t = g_text.load(std::memory_order_acquire);
  if (t && t->contains(pc)) return true;
  uint64_t c[2] = {0, 0};
  dl_iterate_phdr(read_loader_counters, c);
  if (t && t->adds == c[0] && t->subs == c[1]) return false;
  // Rebuild without holding a lock of ours across dl_iterate_phdr (it takes the loader
  // lock, and a thread inside someone's dl_iterate_phdr callback may allocate and come
  // here: a lock of ours around it would be taken in both orders). Racing rebuilders
  // publish with a CAS; the loser frees its copy. A replaced table is never freed (a
  // reader may still hold it): it joins g_retired, one per dlopen/dlclose.
  auto* fresh = static_cast<text_ranges*>(std::calloc(1, sizeof(text_ranges)));
  if (fresh == nullptr) return false;
  dl_iterate_phdr(collect_text, fresh);
  if (g_text.compare_exchange_strong(t, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) {
    if (t) {
      t->retired_next = g_retired.load(std::memory_order_relaxed);
      while (!g_retired.compare_exchange_weak(t->retired_next, t, std::memory_order_release)) {
      }
    }
    return fresh->contains(pc);
  }
  std::free(fresh);
  return t != nullptr && t->contains(pc);
}

void thread_stack(sampler_state& t) {
  t.stack_known = true;
  if (syscall(SYS_gettid) == getpid()) {
    // The main thread: glibc's pthread_getattr_np would open /proc/self/maps, and an
    // allocation hook must not take a descriptor (a process at its descriptor limit
    // would see EMFILE from whatever it does next). Its frames all lie below
    // __libc_stack_end, and everything from the current frame up to there is mapped.
    rlimit rl{};
    uintptr_t hi = reinterpret_cast<uintptr_t>(__libc_stack_end);
    uintptr_t span = uintptr_t{1} << 30;
    if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < span) span = rl.rlim_cur;
    t.stack_hi = hi;
    t.stack_lo = hi > span ? hi - span : 0;
    return;
  }
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) != 0) return;
  void* addr = nullptr;
  std::size_t size = 0;
  if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
    t.stack_lo = reinterpret_cast<uintptr_t>(addr);
    t.stack_hi = t.stack_lo + size;
  }
  pthread_attr_destroy(&attr);
}

// Return addresses from `frame` (operator new's frame) outward, innermost first.
[[gnu::no_sanitize("address", "thread")]] int capture(uintptr_t frame, uintptr_t* pcs) {
  const auto* f = reinterpret_cast<const uintptr_t*>(frame);
  int n = 0;
  pcs[n++] = f[1];  // the call site of operator new: always readable
  uintptr_t fp = f[0];
  if (fp <= frame) return n;
  uintptr_t lo = 0, hi = 0;
  g* gp = getg();
  if (gp && frame >= reinterpret_cast<uintptr_t>(gp->stack_lo) &&
      frame < reinterpret_cast<uintptr_t>(gp->stack_hi)) {
    lo = reinterpret_cast<uintptr_t>(gp->stack_lo);
    hi = reinterpret_cast<uintptr_t>(gp->stack_hi);
  } else {
    sampler_state& t = t_sampler;
    if (!t.stack_known) thread_stack(t);
    if (frame >= t.stack_lo && frame < t.stack_hi) {
      lo = t.stack_lo;
      hi = t.stack_hi;
    }
  }
  while (n < kMaxDepth && fp >= lo && fp + 16 <= hi && (fp & 7) == 0) {
    f = reinterpret_cast<const uintptr_t*>(fp);
    uintptr_t ret = f[1];
    if (!is_text(ret)) break;
    pcs[n++] = ret;
    if (f[0] <= fp) break;
    fp = f[0];
  }
  return n;
}

void record(void* p, std::size_t size, uintptr_t frame) {
  uintptr_t pcs[kMaxDepth];
  int n = capture(frame, pcs);
  // Past the cap, new stacks keep only the allocation's call site: memory stays bounded
  // by the number of call sites even if stacks were to come out unbounded.
  if (n > 1 && g_nbuckets.load(std::memory_order_relaxed) >= kMaxBuckets) n = 1;
  bucket* b = bucket_for(pcs, n);
  if (b == nullptr) return;
  auto sz = static_cast<int64_t>(size);
  b->allocs.fetch_add(1, std::memory_order_relaxed);
  b->alloc_bytes.fetch_add(sz, std::memory_order_relaxed);
  uint32_t fi = filter_index(p);
  ptr_shard& s = g_shards[fi % kShards];
  bool tracked;
  {
    lock_guard l(s.mu);
    tracked = shard_insert(s, ~reinterpret_cast<uintptr_t>(p), b, sz);
    if (tracked) filter_inc(fi);
  }
  if (!tracked) {  // out of memory for the table: count it as freed at once
    b->free_bytes.fetch_add(sz, std::memory_order_relaxed);
    b->frees.fetch_add(1, std::memory_order_release);
  }
}

// ---------------------------------------------------------------------------------------
// The hooks.

[[gnu::always_inline]] inline void* raw_alloc(std::size_t n, std::size_t align) {
  if (n == 0) n = 1;
  if (align == 0) return std::malloc(n);
  void* p = nullptr;
  if (align < sizeof(void*)) align = sizeof(void*);
  return posix_memalign(&p, align, n) == 0 ? p : nullptr;
}

// Out of memory: run the new_handler until it gives up (the standard's loop).
[[gnu::noinline, gnu::cold]] void* alloc_retry(std::size_t n, std::size_t align, bool nothrow) {
  for (;;) {
    std::new_handler h = std::get_new_handler();
    if (h == nullptr) {
      if (nothrow) return nullptr;
      throw std::bad_alloc();
    }
    if (nothrow) {
      try {
        h();
      } catch (const std::bad_alloc&) {
        return nullptr;
      }
    } else {
      h();
    }
    if (void* p = raw_alloc(n, align)) return p;
  }
}

[[gnu::noinline]] void sample_slow(void* p, std::size_t size, uintptr_t frame) {
  sampler_state& t = t_sampler;
  int64_t rate = g_rate.load(std::memory_order_relaxed);
  int64_t left;
  if (t.rate != rate) {
    t.rate = rate;
    left = next_countdown(t, rate) - static_cast<int64_t>(size);
  } else {
    left = t.left - static_cast<int64_t>(size);
  }
  if (left > 0) {
    t.left = left;
    return;
  }
  t.left = next_countdown(t, rate);
  if (t.busy) return;
  t.busy = true;
  record(p, size, frame);
  t.busy = false;
}

[[gnu::noinline]] void free_sampled(void* p, uint32_t fi) {
  ptr_shard& s = g_shards[fi % kShards];
  ptr_entry e;
  {
    lock_guard l(s.mu);
    e = shard_remove(s, ~reinterpret_cast<uintptr_t>(p));
    if (e.key != 0) filter_dec(fi);
  }
  if (e.key == 0) return;  // a false positive of the filter
  e.b->free_bytes.fetch_add(e.size, std::memory_order_relaxed);
  e.b->frees.fetch_add(1, std::memory_order_release);
}

[[gnu::always_inline]] inline void* hooked_alloc(std::size_t n, std::size_t align, bool nothrow,
                                                 void* frame) {
  void* p = raw_alloc(n, align);
  if (p == nullptr) [[unlikely]] {
    p = alloc_retry(n, align, nothrow);
    if (p == nullptr) return nullptr;
  }
  int64_t rate = g_rate.load(std::memory_order_relaxed);
  sampler_state& t = t_sampler;
  int64_t left = t.left - static_cast<int64_t>(n);
  if (rate == t.rate && left > 0) [[likely]] {
    t.left = left;
    return p;
  }
  sample_slow(p, n, reinterpret_cast<uintptr_t>(frame));
  return p;
}

[[gnu::always_inline]] inline void hooked_free(void* p) {
  if (p == nullptr) return;
  uint32_t fi = filter_index(p);
  if (g_filter[fi].load(std::memory_order_relaxed) != 0) [[unlikely]]
    free_sampled(p, fi);
  std::free(p);
}

// ---------------------------------------------------------------------------------------
// Reading.

struct raw_counts {
  int64_t allocs, alloc_bytes, inuse, inuse_bytes;
};

raw_counts read_counts(const bucket* b) {
  // frees first: seeing a free implies seeing its allocation (release/acquire chain
  // through the shard lock).
  int64_t frees = b->frees.load(std::memory_order_acquire);
  int64_t free_bytes = b->free_bytes.load(std::memory_order_relaxed);
  int64_t allocs = b->allocs.load(std::memory_order_relaxed);
  int64_t alloc_bytes = b->alloc_bytes.load(std::memory_order_relaxed);
  raw_counts c{allocs, alloc_bytes, allocs - frees, alloc_bytes - free_bytes};
  if (c.inuse < 0) c.inuse = 0;
  if (c.inuse_bytes < 0) c.inuse_bytes = 0;
  return c;
}

// Go's scaleHeapSample: divide by the probability of sampling an object of the
// record's average size.
void unsample(int64_t count, int64_t bytes, int64_t rate, int64_t& out_count, int64_t& out_bytes) {
  if (count == 0 || bytes == 0) {
    out_count = out_bytes = 0;
    return;
  }
  if (rate <= 1) {
    out_count = count;
    out_bytes = bytes;
    return;
  }
  double avg = static_cast<double>(bytes) / static_cast<double>(count);
  double scale = 1.0 / (1.0 - std::exp(-avg / static_cast<double>(rate)));
  out_count = static_cast<int64_t>(static_cast<double>(count) * scale);
  out_bytes = static_cast<int64_t>(static_cast<double>(bytes) * scale);
}

int64_t wall_nanos() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

void atfork_prepare() {
  g_bucket_mu.acquire();
  for (auto& s : g_shards) s.mu.acquire();
}

void atfork_release() {
  for (auto& s : g_shards) s.mu.release();
  g_bucket_mu.release();
}

[[maybe_unused]] const int g_atfork_registered =
    pthread_atfork(atfork_prepare, atfork_release, atfork_release);

}  // namespace

void reset_heap_profile() {
  for (uint32_t si = 0; si < kShards; si++) {
    ptr_shard& s = g_shards[si];
    lock_guard l(s.mu);
    if (s.slots == nullptr) continue;
    for (uint32_t i = 0; i <= s.mask; i++) {
      if (s.slots[i].key == 0) continue;
      filter_dec(filter_index(reinterpret_cast<void*>(~s.slots[i].key)));
      s.slots[i] = ptr_entry{0, nullptr, 0};
    }
    s.count = 0;
  }
  for (bucket* b = g_all_buckets.load(std::memory_order_acquire); b; b = b->all_next) {
    b->allocs.store(0, std::memory_order_relaxed);
    b->alloc_bytes.store(0, std::memory_order_relaxed);
    b->frees.store(0, std::memory_order_relaxed);
    b->free_bytes.store(0, std::memory_order_relaxed);
  }
}

void seed_heap_sampler(uint64_t seed) {
  sampler_state& t = t_sampler;
  t.rng = mix64(seed) | 1;
  t.rate = -1;  // the next allocation draws a new countdown from the new state
}

heap_profile_counts heap_profile_debug_counts() {
  heap_profile_counts c;
  for (auto& s : g_shards) {
    lock_guard l(s.mu);
    c.live_entries += s.count;
  }
  for (bucket* b = g_all_buckets.load(std::memory_order_acquire); b; b = b->all_next) {
    c.sampled_inuse +=
        b->allocs.load(std::memory_order_relaxed) - b->frees.load(std::memory_order_relaxed);
  }
  c.buckets = g_nbuckets.load(std::memory_order_relaxed);
  return c;
}

}  // namespace weft::detail

namespace weft {

int64_t set_mem_profile_rate(int64_t bytes) {
  return detail::g_rate.exchange(bytes < 0 ? 0 : bytes, std::memory_order_relaxed);
}

int64_t mem_profile_rate() {
  return detail::g_rate.load(std::memory_order_relaxed);
}

profile heap_profile() {
  profile p;
  p.sample_types = {{"alloc_objects", "count"},
                    {"alloc_space", "bytes"},
                    {"inuse_objects", "count"},
                    {"inuse_space", "bytes"}};
  p.period_type = {"space", "bytes"};
  int64_t rate = mem_profile_rate();
  p.period = rate;
  p.time_nanos = detail::wall_nanos();
  for (detail::bucket* b = detail::g_all_buckets.load(std::memory_order_acquire); b;
       b = b->all_next) {
    detail::raw_counts c = detail::read_counts(b);
    if (c.allocs == 0) continue;
    profile_sample s;
    s.stack.assign(b->pcs(), b->pcs() + b->depth);
    s.values.resize(4);
    detail::unsample(c.allocs, c.alloc_bytes, rate, s.values[0], s.values[1]);
    detail::unsample(c.inuse, c.inuse_bytes, rate, s.values[2], s.values[3]);
    if (int64_t avg = c.alloc_bytes / c.allocs; avg != 0) {
      profile_label l;
      l.key = "bytes";
      l.num = avg;
      l.num_unit = "bytes";
      l.is_num = true;
      s.labels.push_back(std::move(l));
    }
    p.samples.push_back(std::move(s));
  }
  return p;
}

profile allocs_profile() {
  profile p = heap_profile();
  p.default_sample_type = "alloc_space";
  return p;
}

heap_stats read_heap_stats() {
  heap_stats st;
  int64_t rate = mem_profile_rate();
  st.sample_rate = rate;
  for (detail::bucket* b = detail::g_all_buckets.load(std::memory_order_acquire); b;
       b = b->all_next) {
    detail::raw_counts c = detail::read_counts(b);
    if (c.allocs == 0) continue;
    int64_t objs, bytes;
    detail::unsample(c.allocs, c.alloc_bytes, rate, objs, bytes);
    st.alloc_objects += objs;
    st.alloc_bytes += bytes;
    detail::unsample(c.inuse, c.inuse_bytes, rate, objs, bytes);
    st.inuse_objects += objs;
    st.inuse_bytes += bytes;
  }
  return st;
}

}  // namespace weft

extern "C" void weft_heap_profile_link_anchor() {}

// ---------------------------------------------------------------------------------------
// The replaceable global allocation functions. Each passes its own frame, so the recorded
// stack starts at its caller.

#define WEFT_FRAME __builtin_frame_address(0)

void* operator new(std::size_t n) {
  return weft::detail::hooked_alloc(n, 0, false, WEFT_FRAME);
}
void* operator new[](std::size_t n) {
  return weft::detail::hooked_alloc(n, 0, false, WEFT_FRAME);
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return weft::detail::hooked_alloc(n, 0, true, WEFT_FRAME);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return weft::detail::hooked_alloc(n, 0, true, WEFT_FRAME);
}
void* operator new(std::size_t n, std::align_val_t a) {
  return weft::detail::hooked_alloc(n, static_cast<std::size_t>(a), false, WEFT_FRAME);
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return weft::detail::hooked_alloc(n, static_cast<std::size_t>(a), false, WEFT_FRAME);
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return weft::detail::hooked_alloc(n, static_cast<std::size_t>(a), true, WEFT_FRAME);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return weft::detail::hooked_alloc(n, static_cast<std::size_t>(a), true, WEFT_FRAME);
}

void operator delete(void* p) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete[](void* p) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  weft::detail::hooked_free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  weft::detail::hooked_free(p);
}
