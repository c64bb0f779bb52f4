// Helpers shared by the runtime tests.
//
// run_checked() runs a test body as weft's main goroutine and then checks that nothing
// leaked: every goroutine the body started has exited (waiting a bounded time for ones
// that are finishing), and the run left no goroutine behind.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <string>

#include "runtime/internal/sched.h"
#include "runtime/runtime.h"

namespace weft::testing {

#if defined(WEFT_ASAN) || defined(WEFT_TSAN)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

// Runs cmd with sh and returns what it wrote to stdout; *status gets its exit code (-1
// if it did not exit). run_cmd also captures stderr. Call them on a thread stack (inside
// blocking() from a goroutine): popen is deep C.
inline std::string run_cmd_stdout(const std::string& cmd, int* status = nullptr) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = pclose(p);
  if (status) *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}
inline std::string run_cmd(const std::string& cmd, int* status = nullptr) {
  return run_cmd_stdout(cmd + " 2>&1", status);
}

// Scales a stress count down under the sanitizers, which cost 5-20x per operation.
inline int stress(int n, int sanitized) { return kSanitized ? sanitized : n; }

// Waits (bounded) until only `expected` goroutines exist; returns the final count.
inline int64_t settle_goroutines(int64_t expected, std::chrono::seconds limit = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (weft::num_goroutine() > expected && std::chrono::steady_clock::now() < deadline)
    weft::sleep_for(std::chrono::microseconds(200));
  return weft::num_goroutine();
}

template <class F>
void run_checked(F&& body, weft::options opts = {}) {
  weft::run([&] {
    body();
    EXPECT_EQ(settle_goroutines(1), 1) << "goroutines leaked:\n" << weft::dump_goroutines();
  }, opts);
  EXPECT_EQ(weft::detail::abandoned_goroutines(), 0);
}

// std::regex recurses per input character: on a goroutine's 64 KiB stack it overflows.
// Run it on the thread stack, through blocking().
inline bool matches(const std::string& text, const std::string& pattern) {
  return weft::blocking([&] { return std::regex_search(text, std::regex(pattern)); });
}

inline long rss_bytes() {
  std::ifstream f("/proc/self/statm");
  long pages_total = 0, pages_rss = 0;
  f >> pages_total >> pages_rss;
  return pages_rss * 4096;
}

inline int count_maps() {
  std::ifstream f("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(f, line)) n++;
  return n;
}

}  // namespace weft::testing
