// Request metrics for /metrics: per route, counts by method and status code and a
// duration histogram, kept with relaxed atomics in per-thread stripes so that a request
// pays a few uncontended increments and no lock.
//
// A serve_mux route owns one route_metrics (label route="<pattern>"); requests no route
// matched (404, 405, redirects) count under a server's own "unmatched" object. Every
// live route_metrics is in a process-wide registry that /metrics walks.
//
// Counts by (method, status) live in a small open-addressed table whose slots are
// claimed once with a CAS on the key: the set of pairs a route sees is small (GET 200,
// GET 404, ...), so the table never needs to grow; pairs beyond its capacity are counted
// under status 0 ("other") rather than lost. Each stripe (see striped_counter) has its
// own table and histogram; read() merges them.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace weft::http {

// Counters and gauges that every request touches are striped: each thread adds to its
// own cache line (threads take stripes round-robin), and a read sums the stripes. One
// shared atomic would bounce its line between cores on every request.
inline constexpr int kStripes = 16;
inline int this_thread_stripe() {
  static std::atomic<int> next{0};
  thread_local int mine = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
  return mine;
}

class striped_counter {
 public:
  void add(int64_t d) { cells_[this_thread_stripe()].v.fetch_add(d, std::memory_order_relaxed); }
  int64_t load() const {
    int64_t t = 0;
    for (const auto& c : cells_) t += c.v.load(std::memory_order_relaxed);
    return t;
  }

 private:
  struct alignas(64) cell {
    std::atomic<int64_t> v{0};
  };
  std::array<cell, kStripes> cells_{};
};

class route_metrics {
 public:
  // Upper bounds in seconds (Prometheus' default buckets), then +Inf.
  static constexpr std::array<double, 11> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

  explicit route_metrics(std::string route);  // registers itself
  ~route_metrics();                           // unregisters
  route_metrics(const route_metrics&) = delete;
  route_metrics& operator=(const route_metrics&) = delete;

  const std::string& route() const { return route_; }
  void observe(std::string_view method, int status, std::chrono::nanoseconds took);

  struct count {
    std::string method;
    int status;  // 0: pairs that did not fit the table
    int64_t n;
  };
  struct snapshot {
    std::vector<count> counts;
    std::array<int64_t, kBounds.size() + 1> buckets{};  // cumulative; last is +Inf
    double sum_seconds = 0;
    int64_t total = 0;
  };
  snapshot read() const;

 private:
  static constexpr int kSlots = 64;
  struct slot {
    std::atomic<uint32_t> key{0};  // method index << 16 | status; 0: free
    std::atomic<int64_t> n{0};
  };
  struct alignas(64) stripe {
    slot slots[kSlots];
    std::atomic<int64_t> overflow{0};
    std::array<std::atomic<int64_t>, kBounds.size() + 1> buckets{};  // not cumulative
    std::atomic<int64_t> sum_ns{0};
  };
  std::string route_;
  std::unique_ptr<stripe[]> stripes_;
};

// Requests no route matched, in every server of the process (route="unmatched").
route_metrics& unmatched_route_metrics();

// Calls f for every live route_metrics (under the registry's lock: f must not create or
// destroy one).
void for_each_route_metrics(const std::function<void(const route_metrics&)>& f);

}  // namespace weft::http
