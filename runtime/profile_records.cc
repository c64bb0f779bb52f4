// Block and mutex contention records; see runtime/internal/profile.h.
#include <chrono>
#include <mutex>
#include <random>
#include <unordered_map>

#include "runtime/internal/profile.h"
#include "runtime/internal/sched.h"
#include "runtime/profiling.h"

namespace weft::detail {

std::atomic<int64_t> g_block_rate{0};
std::atomic<int64_t> g_mutex_fraction{0};

namespace {

constexpr int kMaxDepth = 32;

struct stack_key {
  uintptr_t pcs[kMaxDepth];
  int n;
  bool operator==(const stack_key& o) const {
    if (n != o.n) return false;
    for (int i = 0; i < n; i++)
      if (pcs[i] != o.pcs[i]) return false;
    return true;
  }
};

struct stack_hash {
  std::size_t operator()(const stack_key& k) const {
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < k.n; i++) h = (h ^ k.pcs[i]) * 1099511628211ULL;
    return static_cast<std::size_t>(h);
  }
};

struct bucket {
  int64_t count = 0;
  int64_t total_ns = 0;
};

struct table {
  std::mutex mu;  // thread lock: held for a map update, never across a park
  std::unordered_map<stack_key, bucket, stack_hash> map;
};

table g_block;
table g_mutex;

// Return addresses of the calling goroutine (or thread), innermost first.
[[gnu::noinline]] void capture(stack_key& k, int skip) {
  k.n = 0;
  g* gp = getg();
  auto fp = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  uintptr_t lo = gp ? reinterpret_cast<uintptr_t>(gp->stack_lo) : fp;
  uintptr_t hi = gp ? reinterpret_cast<uintptr_t>(gp->stack_hi) : fp + (1 << 20);
  // The first return address read is already our caller's (add's) location.
  while (k.n < kMaxDepth && fp >= lo && fp + 16 <= hi && (fp & 7) == 0) {
    auto* frame = reinterpret_cast<const uintptr_t*>(fp);
    uintptr_t ret = frame[1];
    if (ret == 0) break;
    if (skip > 0)
      skip--;
    else
      k.pcs[k.n++] = ret;
    if (frame[0] <= fp) break;
    fp = frame[0];
  }
}

// The recording path keeps its own frames (no inlining, no sibling calls), so that
// the number of frames to drop above the caller is fixed: add and record_*.
#define WEFT_PROFILE_FRAME [[gnu::noinline, gnu::optimize("no-optimize-sibling-calls")]]

WEFT_PROFILE_FRAME void add(table& t, int skip, int64_t ns) {
  stack_key k;
  capture(k, skip + 1);
  std::lock_guard<std::mutex> l(t.mu);
  bucket& b = t.map[k];
  b.count++;
  b.total_ns += ns;
}

bool sample(int64_t d, int64_t rate) {
  if (d >= rate) return true;
  thread_local std::minstd_rand rng(static_cast<unsigned>(nanotime()));
  return static_cast<int64_t>(rng() % static_cast<uint64_t>(rate)) < d;
}

std::vector<contention_record> snapshot(table& t, int64_t scale_num, bool by_rate) {
  std::vector<contention_record> out;
  std::lock_guard<std::mutex> l(t.mu);
  for (auto& [k, b] : t.map) {
    contention_record r;
    r.stack.assign(k.pcs, k.pcs + k.n);
    r.count = b.count;
    r.total_ns = b.total_ns;
    if (!by_rate && scale_num > 1) {
      r.count *= scale_num;
      r.total_ns *= scale_num;
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

WEFT_PROFILE_FRAME void record_block(int64_t start_ns, int64_t end_ns, int skip) {
  int64_t rate = g_block_rate.load(std::memory_order_relaxed);
  if (rate <= 0) return;
  int64_t d = end_ns - start_ns;
  if (d < 0) d = 0;
  if (!sample(d, rate)) return;
  // A short event sampled with probability d/rate stands for rate/d events' worth of
  // time: Go reports it as one event of `rate` ns. Keep the same estimator.
  add(g_block, skip + 1, d >= rate ? d : rate);
}

WEFT_PROFILE_FRAME void record_mutex(int64_t wait_ns, int skip) {
  int64_t f = g_mutex_fraction.load(std::memory_order_relaxed);
  if (f <= 0) return;
  thread_local std::minstd_rand rng(static_cast<unsigned>(nanotime()) ^ 0x5bd1e995u);
  if (f > 1 && rng() % static_cast<uint64_t>(f) != 0) return;
  add(g_mutex, skip + 1, wait_ns);
}

std::vector<contention_record> block_records() { return snapshot(g_block, 1, true); }

std::vector<contention_record> mutex_records() {
  return snapshot(g_mutex, g_mutex_fraction.load(std::memory_order_relaxed), false);
}

void reset_contention_records() {
  {
    std::lock_guard<std::mutex> l(g_block.mu);
    g_block.map.clear();
  }
  std::lock_guard<std::mutex> l(g_mutex.mu);
  g_mutex.map.clear();
}

}  // namespace weft::detail

namespace weft {

int64_t set_block_profile_rate(int64_t rate_ns) {
  return detail::g_block_rate.exchange(rate_ns < 0 ? 0 : rate_ns);
}

int64_t set_mutex_profile_fraction(int64_t fraction) {
  return detail::g_mutex_fraction.exchange(fraction < 0 ? 0 : fraction);
}

int64_t block_profile_rate() { return detail::g_block_rate.load(std::memory_order_relaxed); }
int64_t mutex_profile_fraction() { return detail::g_mutex_fraction.load(std::memory_order_relaxed); }

namespace {

profile contention_profile(const std::vector<detail::contention_record>& recs) {
  profile p;
  p.sample_types = {{"contentions", "count"}, {"delay", "nanoseconds"}};
  p.period_type = {"contentions", "count"};
  p.period = 1;
  p.time_nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
  for (const auto& r : recs) {
    profile_sample s;
    s.stack = r.stack;
    s.values = {r.count, r.total_ns};
    p.samples.push_back(std::move(s));
  }
  return p;
}

}  // namespace

profile block_profile() { return contention_profile(detail::block_records()); }
profile mutex_profile() { return contention_profile(detail::mutex_records()); }

}  // namespace weft
