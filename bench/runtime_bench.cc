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

#include "runtime/chan.h"
#include "runtime/context.h"
#include "runtime/mutex.h"
#include "runtime/select.h"
#include "runtime/runtime.h"
#include "runtime/sched_stats.h"
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

// RSS growth / n after n goroutines have parked on one channel (all parked when measured).
double parked_bytes(int n) {
  weft::chan<int> gate(0);
  weft::wait_group done;
  std::atomic<int> started{0};
  done.add(n);
  long before = rss_bytes();
  for (int i = 0; i < n; i++)
    weft::go([&] {
      started.fetch_add(1, std::memory_order_relaxed);
      gate.recv();
      done.done();
    });
  // Every goroutine has run to its receive once nothing is queued to run; the few that
  // are between the count and the park get a moment more (as the Go peer does).
  auto queued = [] {
    auto st = weft::read_sched_stats();
    int64_t q = st.global_runq;
    for (int32_t l : st.local_runq) q += l;
    return q;
  };
  while (started.load() < n || queued() > 0) weft::sleep_for(std::chrono::milliseconds(1));
  weft::sleep_for(std::chrono::milliseconds(50));
  double per = double(rss_bytes() - before) / n;
  gate.close();
  done.wait();
  return per;
}

// two goroutines bounce an int over two unbuffered channels n times.
double chan_pingpong(int n) {
  weft::chan<int> ping(0), pong(0);
  weft::wait_group wg;
  wg.add(1);
  weft::go([&] {
    for (int i = 0; i < n; i++) pong.send(ping.recv().value + 1);
    wg.done();
  });
  auto t0 = clock_type::now();
  for (int i = 0; i < n; i++) {
    ping.send(i);
    pong.recv();
  }
  double ns = elapsed_ns(t0) / n;
  wg.wait();
  return ns;
}

// one producer sends n ints through a channel of capacity 1024 to one consumer.
double chan_buffered(int n) {
  weft::chan<int> c(1024);
  weft::wait_group wg;
  wg.add(1);
  int64_t sum = 0;
  auto t0 = clock_type::now();
  weft::go([&] {
    for (int v : c) sum += v;
    wg.done();
  });
  for (int i = 0; i < n; i++) c.send(i);
  c.close();
  wg.wait();
  double secs = elapsed_ns(t0) / 1e9;
  if (sum != int64_t{n} * (n - 1) / 2) std::printf("# chan_buffered: bad sum\n");
  return n / secs;
}

// loop n times: send into one of two 1-buffered channels (alternating), then select
// receiving from both.
double select_2case(int n) {
  weft::chan<int> a(1), b(1);
  int v = 0;
  auto t0 = clock_type::now();
  for (int i = 0; i < n; i++) {
    (i & 1 ? b : a).send(i);
    weft::select(weft::case_recv(a, v), weft::case_recv(b, v));
  }
  return elapsed_ns(t0) / n;
}

// 8 goroutines each lock, increment a shared counter, unlock, n times.
double mutex_contended(int n) {
  weft::mutex mu;
  int64_t counter = 0;
  weft::wait_group wg;
  wg.add(8);
  auto t0 = clock_type::now();
  for (int g = 0; g < 8; g++)
    weft::go([&] {
      for (int i = 0; i < n; i++) {
        mu.lock();
        counter++;
        mu.unlock();
      }
      wg.done();
    });
  wg.wait();
  double ns = elapsed_ns(t0) / (8.0 * n);
  if (counter != 8LL * n) std::printf("# mutex_contended: bad count\n");
  return ns;
}

// n goroutines each wait on done() of a with_timeout(parent, 1h) child; time from
// cancelling the parent until all have returned.
double ctx_cancel_fanout(int n) {
  auto [parent, cancel] = weft::with_cancel(weft::background());
  weft::wait_group ready, finished;
  ready.add(n);
  finished.add(n);
  for (int i = 0; i < n; i++)
    weft::go([&, p = parent] {
      auto [child, child_cancel] = weft::with_timeout(p, std::chrono::hours(1));
      auto done = child.done();
      ready.done();
      done.recv();
      child_cancel();
      finished.done();
    });
  ready.wait();
  // Every goroutine has its channel; let the last ones reach recv.
  weft::sleep_for(std::chrono::milliseconds(20));
  auto t0 = clock_type::now();
  cancel();
  finished.wait();
  return elapsed_ns(t0) / n;
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
    if (want("chan_pingpong_ns")) print("chan_pingpong_ns", chan_pingpong(1'000'000), "ns");
    if (want("chan_buffered_msgs_per_s")) print("chan_buffered_msgs_per_s", chan_buffered(10'000'000), "msg/s");
    if (want("select_2case_ns")) print("select_2case_ns", select_2case(10'000'000), "ns");
    if (want("mutex_contended_ns")) print("mutex_contended_ns", mutex_contended(1'000'000), "ns");
    if (want("ctx_cancel_fanout_ns")) print("ctx_cancel_fanout_ns", ctx_cancel_fanout(100'000), "ns");
    if (want("parked_goroutine_bytes")) print("parked_goroutine_bytes", parked_bytes(1'000'000), "B");
    std::fflush(stdout);
  });
  return 0;
}
