// The cost of the goroutine profile with 100,000 goroutines (docs/benchmarks.md style;
// the Go peer is bench/peers/go_pprof, with the same workload and figure names).
//
// 100,000 goroutines park on one channel at call depths 1 to 4 (4 distinct stacks),
// then the three forms of /debug/pprof/goroutine are produced, as the handler does:
//   goroutine_dump_ms        debug=2, the full dump (weft::dump_goroutines)
//   goroutine_dump_bytes     its size
//   goroutine_text_ms        debug=1, grouped text (goroutine_profile + text)
//   goroutine_proto_ms       debug=0, gzipped profile.proto (goroutine_profile + encode)
//   goroutine_dump_stall_ms  the longest a running goroutine (yielding in a loop on
//                            another P) went without being scheduled during the dumps:
//                            what the dump costs the rest of the process
// Each time is the median of ROUNDS (default 5) runs.
//
//   WEFT_MAXPROCS=2 pprof_bench [N]      (N goroutines, default 100000)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "runtime/chan.h"
#include "runtime/pprof_proto.h"
#include "runtime/profiling.h"
#include "runtime/runtime.h"
#include "runtime/wait_group.h"

namespace {

using clock_type = std::chrono::steady_clock;

double ms_since(clock_type::time_point t0) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
}

[[gnu::noinline]] void park_at_depth(int depth, weft::chan<int> c, weft::wait_group& parked) {
  if (depth > 1) {
    park_at_depth(depth - 1, c, parked);
    asm volatile("" ::: "memory");  // not a tail call: keep the frame
    return;
  }
  parked.done();
  c.recv();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 100000;
  const int rounds = std::getenv("ROUNDS") ? std::max(1, std::atoi(std::getenv("ROUNDS"))) : 5;
  weft::run([&] {
    std::printf("procs %d\n", weft::max_procs());
    weft::chan<int> c(0);  // unbuffered, never sent on: closed at the end
    weft::wait_group parked, done;
    parked.add(n);
    done.add(n);
    for (int i = 0; i < n; i++)
      weft::go([c, &parked, &done, i] {
        park_at_depth(i % 4 + 1, c, parked);
        done.done();
      });
    parked.wait();

    // The ticker: a goroutine that keeps running (yielding) and notes its longest gap.
    std::atomic<bool> measuring{false}, stop{false};
    std::atomic<int64_t> max_gap_ns{0};
    weft::wait_group ticker;
    ticker.add(1);
    weft::go([&] {
      auto last = clock_type::now();
      while (!stop.load(std::memory_order_relaxed)) {
        weft::yield();
        auto now = clock_type::now();
        int64_t gap = std::chrono::duration_cast<std::chrono::nanoseconds>(now - last).count();
        if (measuring.load(std::memory_order_relaxed) && gap > max_gap_ns.load(std::memory_order_relaxed))
          max_gap_ns.store(gap, std::memory_order_relaxed);
        last = now;
      }
      ticker.done();
    });

    std::vector<double> dump_ms, text_ms, proto_ms;
    std::size_t dump_bytes = 0, proto_bytes = 0;
    measuring = true;
    for (int r = 0; r < rounds; r++) {
      auto t0 = clock_type::now();
      std::string d = weft::blocking([] { return weft::dump_goroutines(); });
      dump_ms.push_back(ms_since(t0));
      dump_bytes = d.size();

      t0 = clock_type::now();
      std::string t = weft::blocking([] {
        return weft::format_count_profile_text("goroutine", weft::goroutine_profile());
      });
      text_ms.push_back(ms_since(t0));
      if (t.find("goroutine profile: total") == std::string::npos) {
        std::fprintf(stderr, "pprof_bench: unexpected debug=1 output\n");
        std::exit(1);
      }

      t0 = clock_type::now();
      std::string p = weft::blocking([] { return weft::encode_pprof(weft::goroutine_profile()); });
      proto_ms.push_back(ms_since(t0));
      proto_bytes = p.size();
    }
    measuring = false;
    stop = true;
    ticker.wait();

    std::printf("goroutines %d count\n", n);
    std::printf("goroutine_dump_ms %.1f ms\n", median(dump_ms));
    std::printf("goroutine_dump_bytes %zu B\n", dump_bytes);
    std::printf("goroutine_text_ms %.1f ms\n", median(text_ms));
    std::printf("goroutine_proto_ms %.1f ms\n", median(proto_ms));
    std::printf("goroutine_proto_bytes %zu B\n", proto_bytes);
    std::printf("goroutine_dump_stall_ms %.2f ms\n", static_cast<double>(max_gap_ns.load()) / 1e6);

    c.close();
    done.wait();
  });
  return 0;
}
