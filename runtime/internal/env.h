// Runtime settings read from the environment, with the parsers split out for tests.
//
//   WEFT_MAXPROCS=N        number of Ps (else: CPUs allowed by affinity, capped by the
//                          cgroup CPU quota, rounded up)
//   WEFT_STACK_SIZE=N[k|m] default usable goroutine stack (default 64k; ASan 256k)
//   WEFTDEBUG=schedtrace=MS[,...]   print a scheduler line every MS milliseconds
//   WEFTDEBUG=adaptprocs=0          no adaptive limit on running Ps (adapt.h)
//   WEFTDEBUG=activeprocs=N         pin that limit at N
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace weft::detail {

// Parses cgroup v2 "cpu.max" ("max 100000" or "150000 100000"): the CPU limit rounded
// up, or nullopt when unlimited or malformed.
std::optional<int> parse_cgroup_cpu_max(std::string_view content);
// cgroup v1 quota and period (quota -1: unlimited).
std::optional<int> cgroup_v1_limit(long long quota, long long period);
// The cgroup CPU limit of this process, if any (reads /proc/self/cgroup and the files it
// points at under `root`, normally /sys/fs/cgroup).
std::optional<int> cgroup_cpu_limit(const std::string& root = "/sys/fs/cgroup");
// Parses a size with an optional k/m/g suffix; nullopt if malformed or zero.
std::optional<std::size_t> parse_size(std::string_view s);
// Reads key=value from a WEFTDEBUG-style comma list.
std::optional<int> parse_debug_var(std::string_view list, std::string_view key);

}  // namespace weft::detail
