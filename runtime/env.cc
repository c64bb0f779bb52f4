// Environment settings; see runtime/internal/env.h.
#include "runtime/internal/env.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "runtime/internal/sched.h"

namespace weft::detail {

std::optional<int> parse_cgroup_cpu_max(std::string_view content) {
  std::istringstream in{std::string(content)};
  std::string quota;
  long long period = 0;
  if (!(in >> quota >> period)) return std::nullopt;
  if (quota == "max") return std::nullopt;
  long long q = 0;
  auto [ptr, ec] = std::from_chars(quota.data(), quota.data() + quota.size(), q);
  if (ec != std::errc() || ptr != quota.data() + quota.size()) return std::nullopt;
  return cgroup_v1_limit(q, period);
}

std::optional<int> cgroup_v1_limit(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return std::nullopt;
  long long n = (quota + period - 1) / period;
  return static_cast<int>(n < 1 ? 1 : n);
}

namespace {

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return std::nullopt;
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

std::optional<int> cgroup_cpu_limit(const std::string& root) {
  auto cg = read_file("/proc/self/cgroup");
  if (!cg) return std::nullopt;
  std::optional<int> best;
  auto consider = [&](std::optional<int> v) {
    if (v && (!best || *v < *best)) best = v;
  };
  std::istringstream lines(*cg);
  std::string line;
  while (std::getline(lines, line)) {
    // v2: "0::/path"; v1: "N:cpu,cpuacct:/path".
    auto a = line.find(':');
    auto b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string ctrl = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    if (ctrl.empty()) {
      // Walk from the process's cgroup up to the root: the tightest limit applies.
      for (std::string p = path;; p = p.substr(0, p.rfind('/'))) {
        if (auto c = read_file(root + p + "/cpu.max")) consider(parse_cgroup_cpu_max(*c));
        if (p.empty() || p == "/") break;
      }
    } else if (ctrl.find("cpu") != std::string::npos && ctrl.find("cpuset") == std::string::npos) {
      for (const char* dir : {"/cpu,cpuacct", "/cpu"}) {
        auto q = read_file(root + dir + path + "/cpu.cfs_quota_us");
        auto per = read_file(root + dir + path + "/cpu.cfs_period_us");
        if (q && per) consider(cgroup_v1_limit(std::atoll(q->c_str()), std::atoll(per->c_str())));
      }
    }
  }
  return best;
}

std::optional<std::size_t> parse_size(std::string_view s) {
  std::size_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr == s.data()) return std::nullopt;
  std::string_view rest(ptr, s.data() + s.size() - ptr);
  std::size_t mult = 1;
  if (rest == "k" || rest == "K" || rest == "KiB" || rest == "kb") mult = 1024;
  else if (rest == "m" || rest == "M" || rest == "MiB" || rest == "mb") mult = 1024 * 1024;
  else if (rest == "g" || rest == "G" || rest == "GiB") mult = 1024ull * 1024 * 1024;
  else if (!rest.empty()) return std::nullopt;
  if (v == 0) return std::nullopt;
  return v * mult;
}

std::optional<int> parse_debug_var(std::string_view list, std::string_view key) {
  while (!list.empty()) {
    auto comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    auto eq = item.find('=');
    if (eq != std::string_view::npos && item.substr(0, eq) == key) {
      int v = 0;
      auto val = item.substr(eq + 1);
      auto [ptr, ec] = std::from_chars(val.data(), val.data() + val.size(), v);
      if (ec == std::errc() && ptr == val.data() + val.size()) return v;
      return std::nullopt;
    }
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return std::nullopt;
}

int env_max_procs() {
  if (const char* s = std::getenv("WEFT_MAXPROCS")) {
    int n = std::atoi(s);
    if (n > 0) return n;
    std::fprintf(stderr, "weft: ignoring invalid WEFT_MAXPROCS=%s\n", s);
  }
  cpu_set_t set;
  int ncpu = 0;
  if (sched_getaffinity(0, sizeof set, &set) == 0) ncpu = CPU_COUNT(&set);
  if (ncpu <= 0) ncpu = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  if (ncpu <= 0) ncpu = 1;
  if (auto lim = cgroup_cpu_limit(); lim && *lim < ncpu) ncpu = *lim;
  return ncpu;
}

std::size_t env_stack_size() {
  if (const char* s = std::getenv("WEFT_STACK_SIZE")) {
    if (auto v = parse_size(s)) return *v;
    std::fprintf(stderr, "weft: ignoring invalid WEFT_STACK_SIZE=%s\n", s);
  }
#if defined(WEFT_ASAN)
  return 256 * 1024;  // ASan frames carry redzones
#elif defined(WEFT_TSAN)
  return 128 * 1024;
#else
  return 64 * 1024;
#endif
}

namespace {

std::optional<int> weftdebug(std::string_view key) {
  const char* s = std::getenv("WEFTDEBUG");
  return s ? parse_debug_var(s, key) : std::nullopt;
}

}  // namespace

int env_schedtrace_ms() { return weftdebug("schedtrace").value_or(0); }

bool env_adaptive_procs() { return weftdebug("adaptprocs").value_or(1) != 0; }

int env_active_procs() { return std::max(weftdebug("activeprocs").value_or(0), 0); }

}  // namespace weft::detail
