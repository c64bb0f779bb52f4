// weftd's configuration: defaults, a TOML file, WEFTD_* environment variables and
// command-line flags, in increasing order of precedence (a flag beats the environment,
// which beats the file, which beats the defaults). No file is needed.
//
//   # weftd.toml
//   listen = "0.0.0.0:8080"
//   max_procs = 0                  # 0: WEFT_MAXPROCS, else CPUs and cgroup quota
//   log_level = "info"             # trace debug info warn error
//   shutdown_grace = "25s"
//   reuse_port = false
//   [http]
//   read_header_timeout = "10s"    # durations: "250ms", "10s", "2m", "1h"; "0" is none
//   read_timeout = "0"
//   write_timeout = "0"
//   idle_timeout = "120s"
//   handler_timeout = "30s"
//   max_header_bytes = 1048576
//   max_body_bytes = 33554432
//   [access_log]
//   output = "off"                 # off, stdout, or a file path
//   format = "text"                # text or json
//   [route_timeouts]
//   "GET /sleep" = "2s"            # per route (serve_mux pattern), shortens the deadline
//   [debug]
//   listen = ""                    # own HOST:PORT for /debug and /metrics ("": the main one)
//   allow = "127.0.0.0/8,::1/128"  # CIDRs that may reach them (others get 403)
//   mem_profile_rate = 524288      # heap profile: a sample per this many bytes; 0 is off
//
// Environment: WEFTD_LISTEN, WEFTD_MAX_PROCS, WEFTD_LOG_LEVEL, WEFTD_SHUTDOWN_GRACE,
// WEFTD_REUSE_PORT, WEFTD_READ_HEADER_TIMEOUT, WEFTD_READ_TIMEOUT, WEFTD_WRITE_TIMEOUT,
// WEFTD_IDLE_TIMEOUT, WEFTD_HANDLER_TIMEOUT, WEFTD_MAX_HEADER_BYTES, WEFTD_MAX_BODY_BYTES,
// WEFTD_ACCESS_LOG, WEFTD_ACCESS_LOG_FORMAT, WEFTD_DEBUG_LISTEN, WEFTD_DEBUG_ALLOW,
// WEFTD_DEBUG_MEM_PROFILE_RATE.
//
// Every layer is validated; an error names the key as its source spells it ("http.
// idle_timeout", "WEFTD_LISTEN", "--max-procs") and what is wrong with it.
// On SIGHUP weftd reloads the file and the environment (flags still win) and applies what
// can change at run time: the log level, the timeouts and limits, the route timeouts,
// debug.allow and debug.mem_profile_rate.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace weft::config {

using duration = std::chrono::nanoseconds;

struct weftd_config {
  std::string listen = "127.0.0.1:8080";
  int max_procs = 0;
  std::string log_level = "info";
  duration shutdown_grace = std::chrono::seconds(25);
  bool reuse_port = false;

  duration read_header_timeout = std::chrono::seconds(10);
  duration read_timeout{0};
  duration write_timeout{0};
  duration idle_timeout = std::chrono::seconds(120);
  duration handler_timeout = std::chrono::seconds(30);
  uint64_t max_header_bytes = 1 << 20;
  uint64_t max_body_bytes = 32ull << 20;

  std::string access_log = "off";  // off, stdout or a path
  std::string access_log_format = "text";

  std::map<std::string, duration> route_timeouts;

  // Debug endpoints (/debug/*): who may reach them.
  std::string debug_listen;               // "" : served on the main listener
  std::string debug_allow = "127.0.0.0/8,::1/128";  // CIDRs, comma separated
  uint64_t mem_profile_rate = 512 * 1024;  // bytes per heap-profile sample; 0: off

  // True if the two differ in a setting that only a restart can change.
  bool needs_restart_to_become(const weftd_config& next) const;
};

// Flag values given on the command line (unset: not given).
struct flag_values {
  std::optional<std::string> listen;
  std::optional<int> max_procs;
  std::optional<std::string> access_log;
  std::optional<std::string> access_log_format;
  std::optional<std::string> log_level;
  std::optional<std::string> shutdown_grace;
  std::optional<std::string> read_header_timeout;
  std::optional<std::string> idle_timeout;
  std::optional<std::string> handler_timeout;
  std::optional<bool> reuse_port;
  std::optional<std::string> debug_listen;
  std::optional<std::string> debug_allow;
  std::optional<uint64_t> mem_profile_rate;
};

struct load_error {
  std::string key;      // as its source spells it
  std::string problem;
  std::string message() const { return key + ": " + problem; }
};

// Builds the effective configuration. file: a TOML path, or empty for none. env: a
// lookup (normally getenv).
struct load_result {
  weftd_config cfg;
  std::optional<load_error> err;
};
load_result load(const std::string& file, const flag_values& flags,
                 const char* (*env)(const char*) = nullptr);

// The configuration as TOML (--print-config), loadable again.
std::string to_toml(const weftd_config& c);

// "250ms", "10s", "1.5s", "2m", "1h", "100us", "0". nullopt if malformed or negative.
std::optional<duration> parse_duration(std::string_view s);
std::string format_duration(duration d);

}  // namespace weft::config
