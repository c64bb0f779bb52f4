// Runtime micro-benchmarks, as defined in docs/benchmarks.md (shared with the Go peer in
// bench/peers/go_runtime). Prints one `name value unit` line per figure.
//
// Run with WEFT_MAXPROCS=2 (bench/run_benchmarks.sh does) so that weft and Go get the
// same number of processors.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "runtime/internal/sema.h"
#include "runtime/runtime.h"
#include "runtime/wait_group.h"

namespace {

using clock_type = std::chrono::steady_clock;

double elapsed_ns(clock_type::time_point t0) {
  return std::chrono::duration<double, std::nano>(clock_type::now() - t0).count();
}

long rss_bytes() {
  std::ifstream f("/proc/self/statm");
  long total = 0, rss = 0;
  f >> total >> rss;
  return rss * sysconf(_SC_PAGESIZE);
}

void print(const char* name, double v, const char* unit) { std::printf("%s %.1f %s\n", name, v, unit); }

// spawn 1,000,000 goroutines that each call wait_group::done(); the spawner waits.
double spawn_join(int n) {
  weft::wait_group wg;
  auto t0 = clock_type::now();
  for (int i = 0; i < n; i++) {
    wg.add(1);
    weft::go([&wg] { wg.done(); });
  }
  wg.wait();
  return elapsed_ns(t0) / n;
}

// one goroutine calls yield() 10,000,000 times.
double yield_loop(int n) {
  double ns = 0;
  weft::wait_group wg;
  wg.add(1);
  weft::go([&] {
    auto t0 = clock_type::now();
    for (int i = 0; i < n; i++) weft::yield();
    ns = elapsed_ns(t0) / n;
    wg.done();
  });
  wg.wait();
  return ns;
}

// RSS growth / n after n goroutines have parked on one object.
double parked_bytes(int n) {
  weft::detail::sema gate;
  weft::wait_group done;
  done.add(n);
  long before = rss_bytes();
  for (int i = 0; i < n; i++)
    weft::go([&] {
      gate.acquire(weft::wait_reason::semacquire);
      done.done();
    });
  while (gate.waiters() < static_cast<uint32_t>(n)) weft::sleep_for(std::chrono::milliseconds(1));
  double per = double(rss_bytes() - before) / n;
  gate.release(n);
  done.wait();
  return per;
}

}  // namespace

// Usage: runtime_bench [NAME...]   (no names: every figure)
int main(int argc, char** argv) {
  auto want = [&](const char* name) {
    if (argc < 2) return true;
    for (int i = 1; i < argc; i++)
      if (std::strcmp(argv[i], name) == 0) return true;
    return false;
  };
  weft::run([&] {
    std::printf("procs %d\n", weft::max_procs());
    if (want("spawn_join_ns")) {
      spawn_join(100'000);  // warm the stack caches, as Go's heap is warm after its init
      print("spawn_join_ns", spawn_join(1'000'000), "ns");
    }
    if (want("yield_ns")) print("yield_ns", yield_loop(10'000'000), "ns");
    if (want("parked_goroutine_bytes")) print("parked_goroutine_bytes", parked_bytes(1'000'000), "B");
    std::fflush(stdout);
  });
  return 0;
}
