// Cost of operator new + delete with the heap profiler's hooks (runtime/heap_profile.cc).
//
// Built twice: alloc_bench links weft_runtime (the hooks replace operator new) and
// measures the default rate (512 KiB), sampling off (rate 0) and every allocation
// sampled (rate 1); alloc_bench_nohook does not link weft and measures libstdc++'s
// operator new (glibc malloc) as the baseline. Prints `name value unit` lines
// (docs/benchmarks.md); each value is the best of 7 runs, to shed the noise of a shared
// machine.
//
//   pair_<size>       new then delete of one object (the same address comes back)
//   batch_<size>      new 1000 objects, then delete them (1000 addresses: a cold filter)
//   pair2t_<size>     pair_<size> on 2 threads at once (ns per pair per thread)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <thread>
#include <vector>

#if defined(WEFT_ALLOC_BENCH_HOOKED)
#include "runtime/heap_profile.h"
#endif

namespace {

inline void escape(void* p) {
  asm volatile("" : : "g"(p) : "memory");
}

double now_ns() {
  return std::chrono::duration<double, std::nano>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

double pair_ns(std::size_t size, long iters) {
  double t0 = now_ns();
  for (long i = 0; i < iters; i++) {
    void* p = ::operator new(size);
    escape(p);
    ::operator delete(p, size);
  }
  return (now_ns() - t0) / static_cast<double>(iters);
}

double batch_ns(std::size_t size, long iters) {
  constexpr int kBatch = 1000;
  static void* ptrs[kBatch];
  long rounds = iters / kBatch;
  double t0 = now_ns();
  for (long r = 0; r < rounds; r++) {
    for (int i = 0; i < kBatch; i++) {
      ptrs[i] = ::operator new(size);
      escape(ptrs[i]);
    }
    for (int i = 0; i < kBatch; i++) ::operator delete(ptrs[i], size);
  }
  return (now_ns() - t0) / static_cast<double>(rounds * kBatch);
}

double pair_2threads_ns(std::size_t size, long iters) {
  double r[2];
  std::thread t([&] { r[1] = pair_ns(size, iters); });
  r[0] = pair_ns(size, iters);
  t.join();
  return (r[0] + r[1]) / 2;
}

template <class F>
double best_of(F f) {
  double best = 1e30;
  for (int i = 0; i < 7; i++) {
    double v = f();
    if (v < best) best = v;
  }
  return best;
}

void run(const char* suffix, long iters) {
  for (std::size_t size : {16, 256, 4096}) {
    std::printf("pair_%zuB_%s %.2f ns\n", size, suffix,
                best_of([&] { return pair_ns(size, iters); }));
  }
  for (std::size_t size : {16, 256}) {
    std::printf("batch_%zuB_%s %.2f ns\n", size, suffix,
                best_of([&] { return batch_ns(size, iters); }));
  }
  std::printf("pair2t_64B_%s %.2f ns\n", suffix,
              best_of([&] { return pair_2threads_ns(64, iters / 2); }));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  long iters = argc > 1 ? std::atol(argv[1]) : 2'000'000;
#if defined(WEFT_ALLOC_BENCH_HOOKED)
  weft::set_mem_profile_rate(weft::kDefaultMemProfileRate);
  run("rate512k", iters);
  weft::set_mem_profile_rate(0);
  run("rate0", iters);
  weft::set_mem_profile_rate(1);
  run("rate1", iters / 10);
#else
  run("nohook", iters);
#endif
  return 0;
}
