#include "server/metrics.h"

#include <algorithm>
#include <map>

#include "runtime/internal/lock.h"

namespace weft::http {
namespace {

// Methods are counted by index; anything unusual is "OTHER", so that a client cannot
// create label values (and memory) at will.
constexpr std::string_view kMethods[] = {"", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER"};
constexpr uint32_t kOtherMethod = 10;

uint32_t method_index(std::string_view m) {
  for (uint32_t i = 1; i < kOtherMethod; i++)
    if (kMethods[i] == m) return i;
  return kOtherMethod;
}

struct registry {
  weft::detail::spinlock mu;
  std::vector<const route_metrics*> all;
};

registry& reg() {
  static registry* r = new registry();  // never destroyed: routes may outlive main's statics
  return *r;
}

}  // namespace

route_metrics::route_metrics(std::string route)
    : route_(std::move(route)), stripes_(std::make_unique<stripe[]>(kStripes)) {
  weft::detail::spin_guard l(reg().mu);
  reg().all.push_back(this);
}

route_metrics::~route_metrics() {
  weft::detail::spin_guard l(reg().mu);
  auto& v = reg().all;
  v.erase(std::remove(v.begin(), v.end(), this), v.end());
}

void route_metrics::observe(std::string_view method, int status, std::chrono::nanoseconds took) {
  stripe& st = stripes_[static_cast<std::size_t>(this_thread_stripe())];
  if (status < 100 || status > 999) status = 0;
  uint32_t key = method_index(method) << 16 | static_cast<uint32_t>(status);
  uint32_t start = (key * 2654435761u) % kSlots;
  bool counted = false;
  for (int i = 0; i < kSlots && !counted; i++) {
    slot& s = st.slots[(start + static_cast<uint32_t>(i)) % kSlots];
    uint32_t k = s.key.load(std::memory_order_acquire);
    if (k == 0) {
      uint32_t expected = 0;
      if (s.key.compare_exchange_strong(expected, key, std::memory_order_acq_rel)) k = key;
      else k = expected;
    }
    if (k == key) {
      s.n.fetch_add(1, std::memory_order_relaxed);
      counted = true;
    }
  }
  if (!counted) st.overflow.fetch_add(1, std::memory_order_relaxed);

  double secs = std::chrono::duration<double>(took).count();
  std::size_t b = 0;
  while (b < kBounds.size() && secs > kBounds[b]) b++;
  st.buckets[b].fetch_add(1, std::memory_order_relaxed);
  st.sum_ns.fetch_add(took.count(), std::memory_order_relaxed);
}

route_metrics::snapshot route_metrics::read() const {
  snapshot s;
  std::map<uint32_t, int64_t> by_key;
  int64_t overflow = 0, sum_ns = 0;
  std::array<int64_t, kBounds.size() + 1> buckets{};
  for (int x = 0; x < kStripes; x++) {
    const stripe& st = stripes_[static_cast<std::size_t>(x)];
    for (const slot& sl : st.slots) {
      uint32_t k = sl.key.load(std::memory_order_acquire);
      if (k == 0) continue;
      if (int64_t n = sl.n.load(std::memory_order_relaxed)) by_key[k] += n;  // 0: claimed, not yet counted
    }
    overflow += st.overflow.load(std::memory_order_relaxed);
    for (std::size_t i = 0; i < buckets.size(); i++) buckets[i] += st.buckets[i].load(std::memory_order_relaxed);
    sum_ns += st.sum_ns.load(std::memory_order_relaxed);
  }
  for (const auto& [k, n] : by_key) s.counts.push_back({std::string(kMethods[k >> 16]), static_cast<int>(k & 0xffff), n});
  if (overflow) s.counts.push_back({"OTHER", 0, overflow});
  std::sort(s.counts.begin(), s.counts.end(), [](const count& a, const count& b) {
    return a.method != b.method ? a.method < b.method : a.status < b.status;
  });
  int64_t running = 0;
  for (std::size_t i = 0; i < s.buckets.size(); i++) {
    running += buckets[i];
    s.buckets[i] = running;
  }
  s.total = running;
  s.sum_seconds = static_cast<double>(sum_ns) / 1e9;
  return s;
}

route_metrics& unmatched_route_metrics() {
  static route_metrics* m = new route_metrics("unmatched");
  return *m;
}

void for_each_route_metrics(const std::function<void(const route_metrics&)>& f) {
  weft::detail::spin_guard l(reg().mu);
  for (const route_metrics* m : reg().all) f(*m);
}

}  // namespace weft::http
