// Layered configuration; see config/config.h.
#include "config/config.h"

#include <charconv>
#include <cstdlib>
#include <sstream>
#include <toml++/toml.h>

#include "netpoll/address.h"

namespace weft::config {

bool weftd_config::needs_restart_to_become(const weftd_config& n) const {
  return listen != n.listen || max_procs != n.max_procs || reuse_port != n.reuse_port ||
         access_log != n.access_log || access_log_format != n.access_log_format || debug_listen != n.debug_listen;
}

std::optional<duration> parse_duration(std::string_view s) {
  if (s == "0") return duration{0};
  if (s.empty()) return std::nullopt;
  double total = 0;
  bool any = false;
  while (!s.empty()) {
    std::size_t i = 0;
    while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) i++;
    if (i == 0) return std::nullopt;
    double v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + i, v);
    if (ec != std::errc() || p != s.data() + i) return std::nullopt;
    s.remove_prefix(i);
    std::size_t u = 0;
    while (u < s.size() && std::isalpha(static_cast<unsigned char>(s[u]))) u++;
    std::string_view unit = s.substr(0, u);
    s.remove_prefix(u);
    double mult;
    if (unit == "ns") mult = 1;
    else if (unit == "us" || unit == "µs") mult = 1e3;
    else if (unit == "ms") mult = 1e6;
    else if (unit == "s") mult = 1e9;
    else if (unit == "m") mult = 60e9;
    else if (unit == "h") mult = 3600e9;
    else return std::nullopt;
    total += v * mult;
    any = true;
  }
  if (!any || total < 0 || total > 9e18) return std::nullopt;
  return duration(static_cast<int64_t>(total));
}

std::string format_duration(duration d) {
  int64_t ns = d.count();
  if (ns == 0) return "0";
  if (ns % 3'600'000'000'000 == 0) return std::to_string(ns / 3'600'000'000'000) + "h";
  if (ns % 60'000'000'000 == 0) return std::to_string(ns / 60'000'000'000) + "m";
  if (ns % 1'000'000'000 == 0) return std::to_string(ns / 1'000'000'000) + "s";
  if (ns % 1'000'000 == 0) return std::to_string(ns / 1'000'000) + "ms";
  if (ns % 1'000 == 0) return std::to_string(ns / 1'000) + "us";
  return std::to_string(ns) + "ns";
}

namespace {

// One setting, applied from text by any layer.
struct applier {
  weftd_config& c;
  std::optional<load_error> err;

  void fail(const std::string& key, const std::string& problem) {
    if (!err) err = load_error{key, problem};
  }
  void dur(const std::string& key, std::string_view v, duration& out) {
    if (auto d = parse_duration(v)) out = *d;
    else fail(key, "invalid duration \"" + std::string(v) + "\" (use e.g. 250ms, 10s, 2m)");
  }
  void u64(const std::string& key, std::string_view v, uint64_t& out, uint64_t lo, uint64_t hi) {
    uint64_t x = 0;
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (ec != std::errc() || p != v.data() + v.size()) return fail(key, "not a number: \"" + std::string(v) + "\"");
    if (x < lo || x > hi) return fail(key, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
    out = x;
  }
  void procs(const std::string& key, std::string_view v) {
    uint64_t x = 0;
    u64(key, v, x, 0, 4096);
    if (!err) c.max_procs = static_cast<int>(x);
  }
  void boolean(const std::string& key, std::string_view v, bool& out) {
    if (v == "true" || v == "1") out = true;
    else if (v == "false" || v == "0") out = false;
    else fail(key, "expected true or false, got \"" + std::string(v) + "\"");
  }
  void listen(const std::string& key, std::string_view v) {
    std::error_code ec;
    net::parse_address(v, ec);
    if (ec) return fail(key, "invalid address \"" + std::string(v) + "\" (use HOST:PORT)");
    c.listen = std::string(v);
  }
  void level(const std::string& key, std::string_view v) {
    if (v == "trace" || v == "debug" || v == "info" || v == "warn" || v == "error" || v == "off") c.log_level = std::string(v);
    else fail(key, "unknown level \"" + std::string(v) + "\" (trace, debug, info, warn, error, off)");
  }
  void format(const std::string& key, std::string_view v) {
    if (v == "text" || v == "json") c.access_log_format = std::string(v);
    else fail(key, "unknown format \"" + std::string(v) + "\" (text or json)");
  }
  void access(const std::string& key, std::string_view v) {
    if (v.empty()) return fail(key, "empty (use off, stdout or a file path)");
    c.access_log = std::string(v);
  }
};

std::string node_text(const toml::node& n) {
  if (auto s = n.value<std::string>()) return *s;
  if (auto i = n.value<int64_t>()) return std::to_string(*i);
  if (auto b = n.value<bool>()) return *b ? "true" : "false";
  if (auto d = n.value<double>()) {
    std::ostringstream o;
    o << *d;
    return o.str();
  }
  return "";
}

void apply_file(applier& a, const std::string& path) {
  toml::table t;
  try {
    t = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream o;
    o << e.description() << " (line " << e.source().begin.line << ")";
    a.fail(path, o.str());
    return;
  } catch (const std::exception& e) {
    a.fail(path, e.what());
    return;
  }
  auto known = [&](const std::string& key, const toml::node& n) {
    std::string v = node_text(n);
    if (key == "listen") a.listen(key, v);
    else if (key == "max_procs") a.procs(key, v);
    else if (key == "log_level") a.level(key, v);
    else if (key == "shutdown_grace") a.dur(key, v, a.c.shutdown_grace);
    else if (key == "reuse_port") a.boolean(key, v, a.c.reuse_port);
    else if (key == "http.read_header_timeout") a.dur(key, v, a.c.read_header_timeout);
    else if (key == "http.read_timeout") a.dur(key, v, a.c.read_timeout);
    else if (key == "http.write_timeout") a.dur(key, v, a.c.write_timeout);
    else if (key == "http.idle_timeout") a.dur(key, v, a.c.idle_timeout);
    else if (key == "http.handler_timeout") a.dur(key, v, a.c.handler_timeout);
    else if (key == "http.max_header_bytes") a.u64(key, v, a.c.max_header_bytes, 1024, 64ull << 20);
    else if (key == "http.max_body_bytes") a.u64(key, v, a.c.max_body_bytes, 0, 1ull << 40);
    else if (key == "access_log.output") a.access(key, v);
    else if (key == "access_log.format") a.format(key, v);
    else if (key == "debug.listen") a.c.debug_listen = v;
    else if (key == "debug.allow") a.c.debug_allow = v;
    else if (key == "debug.mem_profile_rate") a.u64(key, v, a.c.mem_profile_rate, 0, 1ull << 40);
    else a.fail(key, "unknown setting");
  };
  for (auto&& [k, n] : t) {
    std::string key(k.str());
    if (auto* sub = n.as_table()) {
      for (auto&& [k2, n2] : *sub) {
        std::string full = key + "." + std::string(k2.str());
        if (key == "route_timeouts") {
          duration d{};
          a.dur(full, node_text(n2), d);
          a.c.route_timeouts[std::string(k2.str())] = d;
        } else {
          known(full, n2);
        }
      }
    } else {
      known(key, n);
    }
  }
}

void apply_env(applier& a, const char* (*env)(const char*)) {
  auto get = [&](const char* name) -> std::optional<std::string> {
    const char* v = env(name);
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
  if (auto v = get("WEFTD_LISTEN")) a.listen("WEFTD_LISTEN", *v);
  if (auto v = get("WEFTD_MAX_PROCS")) a.procs("WEFTD_MAX_PROCS", *v);
  if (auto v = get("WEFTD_LOG_LEVEL")) a.level("WEFTD_LOG_LEVEL", *v);
  if (auto v = get("WEFTD_SHUTDOWN_GRACE")) a.dur("WEFTD_SHUTDOWN_GRACE", *v, a.c.shutdown_grace);
  if (auto v = get("WEFTD_REUSE_PORT")) a.boolean("WEFTD_REUSE_PORT", *v, a.c.reuse_port);
  if (auto v = get("WEFTD_READ_HEADER_TIMEOUT")) a.dur("WEFTD_READ_HEADER_TIMEOUT", *v, a.c.read_header_timeout);
  if (auto v = get("WEFTD_READ_TIMEOUT")) a.dur("WEFTD_READ_TIMEOUT", *v, a.c.read_timeout);
  if (auto v = get("WEFTD_WRITE_TIMEOUT")) a.dur("WEFTD_WRITE_TIMEOUT", *v, a.c.write_timeout);
  if (auto v = get("WEFTD_IDLE_TIMEOUT")) a.dur("WEFTD_IDLE_TIMEOUT", *v, a.c.idle_timeout);
  if (auto v = get("WEFTD_HANDLER_TIMEOUT")) a.dur("WEFTD_HANDLER_TIMEOUT", *v, a.c.handler_timeout);
  if (auto v = get("WEFTD_MAX_HEADER_BYTES")) a.u64("WEFTD_MAX_HEADER_BYTES", *v, a.c.max_header_bytes, 1024, 64ull << 20);
  if (auto v = get("WEFTD_MAX_BODY_BYTES")) a.u64("WEFTD_MAX_BODY_BYTES", *v, a.c.max_body_bytes, 0, 1ull << 40);
  if (auto v = get("WEFTD_ACCESS_LOG")) a.access("WEFTD_ACCESS_LOG", *v);
  if (auto v = get("WEFTD_ACCESS_LOG_FORMAT")) a.format("WEFTD_ACCESS_LOG_FORMAT", *v);
  if (auto v = get("WEFTD_DEBUG_LISTEN")) a.c.debug_listen = *v;
  if (auto v = get("WEFTD_DEBUG_ALLOW")) a.c.debug_allow = *v;
  if (auto v = get("WEFTD_DEBUG_MEM_PROFILE_RATE"))
    a.u64("WEFTD_DEBUG_MEM_PROFILE_RATE", *v, a.c.mem_profile_rate, 0, 1ull << 40);
}

void apply_flags(applier& a, const flag_values& f) {
  if (f.listen) a.listen("--listen", *f.listen);
  if (f.max_procs) {
    if (*f.max_procs < 0 || *f.max_procs > 4096) a.fail("--max-procs", "must be between 0 and 4096");
    else a.c.max_procs = *f.max_procs;
  }
  if (f.log_level) a.level("--log-level", *f.log_level);
  if (f.access_log) a.access("--access-log", *f.access_log);
  if (f.access_log_format) a.format("--access-log-format", *f.access_log_format);
  if (f.shutdown_grace) a.dur("--shutdown-grace", *f.shutdown_grace, a.c.shutdown_grace);
  if (f.read_header_timeout) a.dur("--read-header-timeout", *f.read_header_timeout, a.c.read_header_timeout);
  if (f.idle_timeout) a.dur("--idle-timeout", *f.idle_timeout, a.c.idle_timeout);
  if (f.handler_timeout) a.dur("--handler-timeout", *f.handler_timeout, a.c.handler_timeout);
  if (f.reuse_port) a.c.reuse_port = *f.reuse_port;
  if (f.debug_listen) a.c.debug_listen = *f.debug_listen;
  if (f.debug_allow) a.c.debug_allow = *f.debug_allow;
  if (f.mem_profile_rate) {
    if (*f.mem_profile_rate > (1ull << 40)) a.fail("--mem-profile-rate", "must be between 0 and 1099511627776");
    else a.c.mem_profile_rate = *f.mem_profile_rate;
  }
}

const char* real_env(const char* name) { return std::getenv(name); }

}  // namespace

load_result load(const std::string& file, const flag_values& flags, const char* (*env)(const char*)) {
  load_result r;
  applier a{r.cfg, std::nullopt};
  if (!file.empty()) apply_file(a, file);
  if (!a.err) apply_env(a, env ? env : real_env);
  if (!a.err) apply_flags(a, flags);
  if (!a.err && !r.cfg.debug_listen.empty()) {
    std::error_code ec;
    net::parse_address(r.cfg.debug_listen, ec);
    if (ec) a.fail("debug.listen", "invalid address \"" + r.cfg.debug_listen + "\"");
  }
  if (!a.err) {
    std::vector<net::ip_prefix> prefixes;
    std::string why;
    if (!net::parse_prefix_list(r.cfg.debug_allow, prefixes, &why)) a.fail("debug.allow", why);
  }
  r.err = a.err;
  return r;
}

std::string to_toml(const weftd_config& c) {
  std::ostringstream o;
  auto q = [](const std::string& s) {
    std::string r = "\"";
    for (char ch : s) {
      if (ch == '"' || ch == '\\') r += '\\';
      r += ch;
    }
    return r + "\"";
  };
  o << "listen = " << q(c.listen) << "\n";
  o << "max_procs = " << c.max_procs << "\n";
  o << "log_level = " << q(c.log_level) << "\n";
  o << "shutdown_grace = " << q(format_duration(c.shutdown_grace)) << "\n";
  o << "reuse_port = " << (c.reuse_port ? "true" : "false") << "\n\n";
  o << "[http]\n";
  o << "read_header_timeout = " << q(format_duration(c.read_header_timeout)) << "\n";
  o << "read_timeout = " << q(format_duration(c.read_timeout)) << "\n";
  o << "write_timeout = " << q(format_duration(c.write_timeout)) << "\n";
  o << "idle_timeout = " << q(format_duration(c.idle_timeout)) << "\n";
  o << "handler_timeout = " << q(format_duration(c.handler_timeout)) << "\n";
  o << "max_header_bytes = " << c.max_header_bytes << "\n";
  o << "max_body_bytes = " << c.max_body_bytes << "\n\n";
  o << "[access_log]\n";
  o << "output = " << q(c.access_log) << "\n";
  o << "format = " << q(c.access_log_format) << "\n\n";
  o << "[debug]\n";
  o << "listen = " << q(c.debug_listen) << "\n";
  o << "allow = " << q(c.debug_allow) << "\n";
  o << "mem_profile_rate = " << c.mem_profile_rate << "\n\n";
  o << "[route_timeouts]\n";
  for (const auto& [k, v] : c.route_timeouts) o << q(k) << " = " << q(format_duration(v)) << "\n";
  return o.str();
}

}  // namespace weft::config
