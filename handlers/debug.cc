// /debug/pprof, /debug/vars and /metrics; see handlers/debug.h.
//
// The profile handlers follow net/http/pprof's behaviour where pprof depends on it:
// binary profiles are application/octet-stream with a Content-Disposition file name,
// errors are text/plain with X-Go-Pprof: 1 (pprof prints their body), `seconds` on a
// count or contention profile gives a delta profile, and `seconds` with `debug` is a 400.
// The CPU profile and the trace wait on the request's context, so a client that hangs up
// ends them early.
#include "handlers/debug.h"

#include <dirent.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "runtime/chan_timer.h"
#include "runtime/context.h"
#include "runtime/cpu_profile.h"
#include "runtime/heap_profile.h"
#include "runtime/pprof_proto.h"
#include "runtime/profiling.h"
#include "runtime/runtime.h"
#include "runtime/select.h"
#include "runtime/symbolize.h"
#include "runtime/sched_stats.h"
#include "runtime/trace.h"
#include "server/metrics.h"

namespace weft::handlers {
namespace {

using http::request;
using http::response_writer;

void pprof_error(response_writer& w, int status, std::string_view msg) {
  w.set_header("Content-Type", "text/plain; charset=utf-8");
  w.set_header("X-Go-Pprof", "1");
  w.set_header("X-Content-Type-Options", "nosniff");
  w.write_header(status);
  w.write(std::string(msg) + "\n");
}

void send_text(response_writer& w, std::string_view body) {
  w.set_header("Content-Type", "text/plain; charset=utf-8");
  w.set_header("X-Content-Type-Options", "nosniff");
  w.write(body);
}

void send_profile(response_writer& w, std::string_view name, const std::string& bytes) {
  w.set_header("Content-Type", "application/octet-stream");
  w.set_header("Content-Disposition", "attachment; filename=\"" + std::string(name) + "\"");
  w.set_header("X-Content-Type-Options", "nosniff");
  w.write(bytes);
}

// An integer query parameter. Absent: `present` is false and true is returned.
bool int_param(const request& r, std::string_view key, int64_t& out, bool& present) {
  std::string v = r.query(key);
  present = !v.empty();
  if (!present) return true;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  return ec == std::errc() && p == v.data() + v.size();
}

// Longer windows are refused (a profile that long is a mistake, and the deadline
// arithmetic must not overflow).
constexpr int64_t kMaxProfileSeconds = 3600;
constexpr const char* kTooLong = "profile duration exceeds 3600 seconds";

// Waits d or until the request's context ends (client gone, shutdown). True if the
// whole time passed.
bool wait_or_done(request& r, std::chrono::nanoseconds d) {
  auto done = r.ctx().done();
  time_point t;
  std::monostate m;
  return weft::select(weft::case_recv(weft::after(d), t), weft::case_recv(done, m)) == 0;
}

// p1 - p0, sample by sample, as Go's delta profiles (p0 scaled by -1, merged with p1):
// samples match on stack and string labels (numeric ones, like the heap profile's
// average "bytes", drift and are taken from p1); a sample only in p0 stays, negated
// (goroutines that ended in the window); all-zero samples go.
profile delta(const profile& p0, profile p1) {
  auto key = [](const profile_sample& s) {
    std::string k(reinterpret_cast<const char*>(s.stack.data()), s.stack.size() * sizeof(uintptr_t));
    for (const auto& l : s.labels)
      if (!l.is_num) k += "\x01" + l.key + "\x02" + l.str;
    return k;
  };
  std::map<std::string, std::pair<const profile_sample*, bool>> before;  // -> (sample, matched)
  for (const auto& s : p0.samples) {
    auto [it, fresh] = before.try_emplace(key(s), &s, false);
    if (!fresh) it->second.first = nullptr;  // not unique in p0: cannot happen for our profiles
  }
  auto nonzero = [](const profile_sample& s) {
    for (int64_t v : s.values)
      if (v != 0) return true;
    return false;
  };
  std::vector<profile_sample> out;
  for (auto& s : p1.samples) {
    if (auto it = before.find(key(s)); it != before.end() && it->second.first) {
      const profile_sample& b = *it->second.first;
      for (std::size_t i = 0; i < s.values.size() && i < b.values.size(); i++) s.values[i] -= b.values[i];
      it->second.second = true;
    }
    if (nonzero(s)) out.push_back(std::move(s));
  }
  for (const auto& s : p0.samples) {
    auto it = before.find(key(s));
    if (it == before.end() || it->second.second || it->second.first != &s) continue;
    profile_sample neg = s;
    for (int64_t& v : neg.values) v = -v;
    if (nonzero(neg)) out.push_back(std::move(neg));
  }
  p1.samples = std::move(out);
  p1.duration_nanos = p1.time_nanos - p0.time_nanos;
  return p1;
}

struct named_profile {
  const char* name;
  const char* description;
  profile (*collect)();
  // Text form for ?debug=1 (goroutine's debug=2 is the dump, handled separately).
  std::string (*text)(const profile&);
};

const named_profile kProfiles[] = {
    {"allocs", "A sampling of all past memory allocations",
     allocs_profile, [](const profile& p) { return format_heap_profile_text(p, p.period); }},
    {"block", "Stack traces that led to blocking on synchronization primitives",
     block_profile, [](const profile& p) { return format_contention_profile_text("block", p, block_profile_rate()); }},
    {"goroutine", "Stack traces of all current goroutines. Use debug=2 as a query parameter to export in the same format as an unrecovered panic.",
     goroutine_profile, [](const profile& p) { return format_count_profile_text("goroutine", p); }},
    {"heap", "A sampling of memory allocations of live objects.",
     heap_profile, [](const profile& p) { return format_heap_profile_text(p, p.period); }},
    {"mutex", "Stack traces of holders of contended mutexes",
     mutex_profile, [](const profile& p) { return format_contention_profile_text("mutex", p, mutex_profile_fraction()); }},
    {"threadcreate", "Stack traces that led to the creation of new OS threads",
     threadcreate_profile, [](const profile& p) { return format_count_profile_text("threadcreate", p); }},
};

void serve_named(const named_profile& np, response_writer& w, request& r) {
  int64_t debug = 0, seconds = 0;
  bool has_debug = false, has_seconds = false;
  if (!int_param(r, "debug", debug, has_debug)) return pprof_error(w, 400, "Bad debug parameter");
  if (!int_param(r, "seconds", seconds, has_seconds) || (has_seconds && seconds <= 0))
    return pprof_error(w, 400, "invalid value for \"seconds\" - must be a positive integer");
  if (seconds > kMaxProfileSeconds) return pprof_error(w, 400, kTooLong);
  if (has_seconds && debug != 0) return pprof_error(w, 400, "seconds and debug params are incompatible");
  if (std::string_view(np.name) == "block" || std::string_view(np.name) == "mutex") {
    int64_t rate = 0;
    bool has_rate = false;
    if (!int_param(r, "rate", rate, has_rate) || rate < 0) return pprof_error(w, 400, "invalid value for \"rate\"");
    if (has_rate) {
      int64_t prev = std::string_view(np.name) == "block" ? set_block_profile_rate(rate) : set_mutex_profile_fraction(rate);
      return send_text(w, std::string(np.name) + " profile rate was " + std::to_string(prev) + ", now " +
                              std::to_string(rate) + "\n");
    }
  }
  if (std::string_view(np.name) == "goroutine" && debug >= 2) {
    w.set_header("Content-Type", "text/plain; charset=utf-8");
    w.set_header("X-Content-Type-Options", "nosniff");
    w.write(weft::dump_goroutines());
    return;
  }
  // Symbolizing (libdw), encoding and the dumps need far more stack than a goroutine
  // has: the runtime's profile functions move to the thread stack themselves.
  profile p;
  if (has_seconds) {
    if (!r.extend_deadline(http::clock::now() + std::chrono::seconds(seconds) + std::chrono::seconds(10)))
      return pprof_error(w, 400, "profile duration exceeds the request's deadline");
    profile p0 = np.collect();
    if (!wait_or_done(r, std::chrono::seconds(seconds))) {
      // As Go: 408 when the request's deadline ended the window, else 500.
      bool timed_out = r.ctx().err() == context_errc::deadline_exceeded;
      return pprof_error(w, timed_out ? 408 : 500, "profile collection cancelled");
    }
    p = delta(p0, np.collect());
  } else {
    p = np.collect();
  }
  if (debug > 0) return send_text(w, np.text(p));
  send_profile(w, has_seconds ? std::string(np.name) + "-delta" : np.name, encode_pprof(p));
}

void serve_cpu_profile(response_writer& w, request& r) {
  // As Go: a missing, malformed or non-positive value means 30 seconds.
  int64_t seconds = 30;
  bool present = false;
  if (!int_param(r, "seconds", seconds, present) || seconds <= 0) seconds = 30;
  if (seconds > kMaxProfileSeconds) return pprof_error(w, 400, kTooLong);
  // The profile streams for `seconds` by design: move the deadline out of its way.
  if (!r.extend_deadline(http::clock::now() + std::chrono::seconds(seconds) + std::chrono::seconds(10)))
    return pprof_error(w, 400, "profile duration exceeds the request's deadline");
  if (auto err = start_cpu_profile(100))
    return pprof_error(w, 500, "Could not enable CPU profiling: " + err.message());
  bool full = wait_or_done(r, std::chrono::seconds(seconds));
  profile p = stop_cpu_profile();
  if (!full) return;  // the client is gone
  send_profile(w, "profile", encode_pprof(p));
}

void serve_trace(response_writer& w, request& r) {
  double seconds = 1;
  std::string v = r.query("seconds");
  if (!v.empty()) {
    char* end = nullptr;
    seconds = std::strtod(v.c_str(), &end);
    if (end != v.c_str() + v.size() || !(seconds > 0)) seconds = 1;  // as Go: bad means 1
    if (seconds > kMaxProfileSeconds) return pprof_error(w, 400, kTooLong);
  }
  auto d = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::duration<double>(seconds));
  if (!r.extend_deadline(http::clock::now() + d + std::chrono::seconds(10)))
    return pprof_error(w, 400, "profile duration exceeds the request's deadline");
  if (auto err = start_trace()) return pprof_error(w, 500, "Could not enable tracing: " + err.message());
  bool full = wait_or_done(r, d);
  std::string json = stop_trace();
  if (!full) return;
  w.set_header("Content-Type", "application/json");
  w.set_header("Content-Disposition", "attachment; filename=\"trace.json\"");
  w.set_header("X-Content-Type-Options", "nosniff");
  w.write(json);
}

// pprof's remote symbolization: "0xADDR+0xADDR..." in the query (GET) or body (POST).
void serve_symbol(response_writer& w, request& r) {
  std::string in(r.raw_query());
  if (r.method() == "POST") {
    in.clear();
    char buf[4096];
    for (;;) {
      auto [n, err] = r.read_body(buf, sizeof buf);
      in.append(buf, n);
      if (err) break;
      if (in.size() > (1 << 20)) return pprof_error(w, 413, "symbol request too large");
    }
  }
  // One trip to the thread stack for the whole list (libdw needs it).
  std::string out = weft::blocking([&in] {
    std::string o = "num_symbols: 1\n";
    std::size_t i = 0;
    while (i < in.size()) {
      std::size_t j = in.find('+', i);
      if (j == std::string::npos) j = in.size();
      std::string_view tok(in.data() + i, j - i);
      i = j + 1;
      if (tok.size() > 2 && tok[0] == '0' && (tok[1] == 'x' || tok[1] == 'X')) tok.remove_prefix(2);
      uintptr_t pc = 0;
      auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), pc, 16);
      if (tok.empty() || ec != std::errc() || p != tok.data() + tok.size()) continue;
      symbol_info si = symbolize(pc);
      if (si.function.empty() || si.function == "?") continue;
      char hex[32];
      std::snprintf(hex, sizeof hex, "%#zx", static_cast<std::size_t>(pc));
      o += std::string(hex) + " " + si.function + "\n";
    }
    return o;
  });
  send_text(w, out);
}

std::string html_escape(std::string_view s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '&': o += "&amp;"; break;
      case '"': o += "&quot;"; break;
      default: o += c;
    }
  }
  return o;
}

void serve_index(response_writer& w, request&) {
  struct row {
    std::string name, count, desc;
  };
  std::vector<row> rows;
  for (const auto& np : kProfiles) {
    int64_t n;
    if (std::string_view(np.name) == "goroutine") n = num_goroutine();
    else n = static_cast<int64_t>(np.collect().samples.size());
    rows.push_back({np.name, std::to_string(n), np.description});
  }
  rows.push_back({"cmdline", "", "The command line invocation of the current program"});
  rows.push_back({"profile", "", "CPU profile. You can specify the duration in the seconds GET parameter. After you get the profile file, use the go tool pprof command to investigate the profile."});
  rows.push_back({"symbol", "", "Maps program counters to function names (GET ?0xADDR+0xADDR or POST), for pprof"});
  rows.push_back({"trace", "", "Scheduler events (goroutines, Ps, Ms, blocking calls) as Chrome Trace Event JSON for Perfetto; seconds=N (default 1). Not Go's execution trace format."});
  std::sort(rows.begin(), rows.end(), [](const row& a, const row& b) { return a.name < b.name; });
  std::string o =
      "<html>\n<head>\n<title>/debug/pprof/</title>\n<style>\n.profile-name{\n\tdisplay:inline-block;\n\twidth:6rem;\n}\n"
      "</style>\n</head>\n<body>\n/debug/pprof/\n<br>\n<p>Set debug=1 as a query parameter to export in legacy text "
      "format</p>\n<br>\nTypes of profiles available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n";
  for (const auto& rw : rows) {
    std::string link = rw.name;
    if (rw.name != "cmdline" && rw.name != "profile" && rw.name != "symbol" && rw.name != "trace") link += "?debug=1";
    o += "<tr><td>" + rw.count + "</td><td><a href='" + html_escape(link) + "'>" + html_escape(rw.name) + "</a></td></tr>\n";
  }
  o += "</table>\n<a href=\"goroutine?debug=2\">full goroutine stack dump</a>\n<br>\n<p>\nProfile Descriptions:\n<ul>\n";
  for (const auto& rw : rows)
    o += "<li><div class=profile-name>" + html_escape(rw.name) + ": </div> " + html_escape(rw.desc) + "</li>\n";
  o += "</ul>\n</p>\n</body>\n</html>\n";
  w.set_header("Content-Type", "text/html; charset=utf-8");
  w.set_header("X-Content-Type-Options", "nosniff");
  w.write(o);
}

// /proc/self/statm's resident pages, in bytes.
int64_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  long total = 0, rss = 0;
  f >> total >> rss;
  return static_cast<int64_t>(rss) * sysconf(_SC_PAGESIZE);
}

int64_t open_fds() {
  int64_t n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') n++;
    closedir(d);
    n--;  // the directory stream's own descriptor
  }
  return n;
}

// utime + stime from /proc/self/stat, and the start time, in seconds.
void process_times(double& cpu, double& start) {
  cpu = start = 0;
  std::ifstream f("/proc/self/stat");
  std::string s((std::istreambuf_iterator<char>(f)), {});
  auto close = s.rfind(')');
  if (close == std::string::npos) return;
  std::istringstream in(s.substr(close + 2));
  std::vector<std::string> fields;
  for (std::string t; in >> t;) fields.push_back(t);
  // Fields after the command: state is #3 overall, utime #14, stime #15, starttime #22.
  if (fields.size() < 20) return;
  double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  cpu = (std::stod(fields[11]) + std::stod(fields[12])) / hz;
  std::ifstream up("/proc/uptime");
  double uptime = 0;
  up >> uptime;
  double started_ago = uptime - std::stod(fields[19]) / hz;
  start = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count() - started_ago;
}

std::string label_escape(std::string_view v) {
  std::string o;
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string fmt_double(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // The shortest form that reads back as the same double ("0.005", not 0.00500...01).
  char b[64];
  for (int prec = 1; prec <= 17; prec++) {
    std::snprintf(b, sizeof b, "%.*g", prec, v);
    if (std::strtod(b, nullptr) == v) break;
  }
  return b;
}

// Counters summed over the servers /debug reports on.
struct server_totals {
  int64_t open = 0, active = 0, requests = 0;
};
server_totals totals(const std::vector<const http::server*>& servers) {
  server_totals t;
  for (const http::server* s : servers) {
    t.open += s->stats().open_conns.load();
    t.active += s->stats().active_conns.load();
    t.requests += s->stats().requests.load();
  }
  return t;
}

}  // namespace

debug_endpoints::debug_endpoints(debug_options opts) : opts_(std::move(opts)) {
  allow_.store(std::make_shared<const std::vector<net::ip_prefix>>(opts_.allow));
}

void debug_endpoints::set_allow(std::vector<net::ip_prefix> allow) {
  allow_.store(std::make_shared<const std::vector<net::ip_prefix>>(std::move(allow)));
}

bool debug_endpoints::allowed(const request& r) const {
  auto list = allow_.load();
  return list && net::prefix_list_contains(*list, r.remote_address());
}

void debug_endpoints::register_routes(http::serve_mux& mux) {
  auto guard = [this](http::handler h) -> http::handler {
    return [this, h = std::move(h)](response_writer& w, request& r) {
      if (!allowed(r)) {
        w.set_header("Content-Type", "text/plain; charset=utf-8");
        w.write_header(403);
        w.write("403 Forbidden: /debug and /metrics answer only the addresses in debug.allow\n");
        return;
      }
      h(w, r);
    };
  };
  mux.handle("GET /debug/pprof/{$}", guard(serve_index));
  mux.handle("GET /debug/pprof/cmdline", guard([this](response_writer& w, request&) {
    std::string out;
    for (std::size_t i = 0; i < opts_.cmdline.size(); i++) {
      if (i) out.push_back('\0');
      out += opts_.cmdline[i];
    }
    send_text(w, out);
  }));
  mux.handle("GET /debug/pprof/symbol", guard(serve_symbol));
  mux.handle("POST /debug/pprof/symbol", guard(serve_symbol));
  mux.handle("GET /debug/pprof/profile", guard(serve_cpu_profile));
  mux.handle("GET /debug/pprof/trace", guard(serve_trace));
  for (const auto& np : kProfiles) {
    const named_profile* p = &np;
    mux.handle("GET /debug/pprof/" + std::string(np.name),
               guard([p](response_writer& w, request& r) { serve_named(*p, w, r); }));
  }
  // Any other name: Go answers 404 "Unknown profile".
  mux.handle("GET /debug/pprof/{name}", guard([](response_writer& w, request&) { pprof_error(w, 404, "Unknown profile"); }));
  mux.handle("GET /debug/vars", guard([this](response_writer& w, request&) {
    w.set_header("Content-Type", "application/json; charset=utf-8");
    w.write(vars_json());
  }));
  mux.handle("GET /metrics", guard([this](response_writer& w, request&) {
    w.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
    w.write(metrics_text());
  }));
}

std::string debug_endpoints::vars_json() const {
  // expvar: one object, keys sorted, each value valid JSON.
  nlohmann::json cmd = opts_.cmdline;
  sched_stats st = read_sched_stats();
  struct mallinfo2 mi = mallinfo2();
  heap_stats hs = read_heap_stats();
  nlohmann::json mem = {
      {"rss_bytes", rss_bytes()},
      {"malloc_in_use_bytes", static_cast<int64_t>(mi.uordblks + mi.hblkhd)},
      {"malloc_system_bytes", static_cast<int64_t>(mi.arena + mi.hblkhd)},
      {"heap_sampled_in_use_bytes", hs.inuse_bytes},
      {"heap_sampled_in_use_objects", hs.inuse_objects},
      {"heap_sampled_alloc_bytes", hs.alloc_bytes},
      {"heap_sampled_alloc_objects", hs.alloc_objects},
      {"heap_sample_rate_bytes", hs.sample_rate},
  };
  nlohmann::json local = st.local_runq;
  nlohmann::json rt = {
      {"goroutines", st.goroutines},
      {"goroutines_created", st.goroutines_created},
      {"threads", st.threads},
      {"threads_idle", st.idle_threads},
      {"threads_spinning", st.spinning_threads},
      {"threads_in_blocking_calls", st.blocking_threads},
      {"procs", st.procs},
      {"procs_idle", st.idle_procs},
      {"procs_active_limit", st.active_procs_limit},
      {"procs_limit_lowered", st.procs_limit_lowered},
      {"context_switches", st.context_switches},
      {"cpu_profile_running", cpu_profile_running()},
      {"trace_running", trace_running()},
      {"global_run_queue", st.global_runq},
      {"local_run_queues", local},
  };
  server_totals t = totals(opts_.servers);
  nlohmann::json srv = {
      {"requests", t.requests},
      {"connections_open", t.open},
      {"connections_active", t.active},
      {"connections_idle", t.open - t.active},
      {"shutting_down", opts_.shutting_down && opts_.shutting_down->load()},
  };
  std::map<std::string, std::string> vars = {
      {"cmdline", cmd.dump()}, {"memstats", mem.dump()}, {"runtime", rt.dump()}, {"server", srv.dump()}};
  std::string o = "{\n";
  bool first = true;
  for (const auto& [k, v] : vars) {
    if (!first) o += ",\n";
    first = false;
    o += nlohmann::json(k).dump() + ": " + v;
  }
  o += "\n}\n";
  return o;
}

std::string debug_endpoints::metrics_text() const {
  std::string o;
  auto head = [&](const char* name, const char* type, const char* help) {
    o += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto line = [&](const std::string& name, const std::string& labels, const std::string& v) {
    o += name;
    if (!labels.empty()) o += "{" + labels + "}";
    o += " " + v + "\n";
  };
  auto num = [](int64_t v) { return std::to_string(v); };

  sched_stats st = read_sched_stats();
  head("weft_goroutines", "gauge", "Number of goroutines that currently exist.");
  line("weft_goroutines", "", num(st.goroutines));
  head("weft_goroutines_created_total", "counter", "Goroutines started since the process began.");
  line("weft_goroutines_created_total", "", num(static_cast<int64_t>(st.goroutines_created)));
  head("weft_context_switches_total", "counter", "Times a goroutine was switched in.");
  line("weft_context_switches_total", "", num(static_cast<int64_t>(st.context_switches)));
  head("weft_threads", "gauge", "Runtime threads (Ms) by state.");
  line("weft_threads", "state=\"total\"", num(st.threads));
  line("weft_threads", "state=\"idle\"", num(st.idle_threads));
  line("weft_threads", "state=\"spinning\"", num(st.spinning_threads));
  line("weft_threads", "state=\"blocking\"", num(st.blocking_threads));
  head("weft_procs", "gauge", "Processors (Ps): the goroutine parallelism.");
  line("weft_procs", "", num(st.procs));
  head("weft_procs_active_limit", "gauge",
       "Ps that may run at once: weft_procs, or fewer while the machine has no CPU to spare (adaptive).");
  line("weft_procs_active_limit", "", num(st.active_procs_limit));
  head("weft_procs_limit_lowered_total", "counter", "Times the runtime lowered weft_procs_active_limit.");
  line("weft_procs_limit_lowered_total", "", num(static_cast<int64_t>(st.procs_limit_lowered)));
  head("weft_run_queue_length", "gauge", "Runnable goroutines waiting in a run queue.");
  line("weft_run_queue_length", "queue=\"global\"", num(st.global_runq));
  for (std::size_t i = 0; i < st.local_runq.size(); i++)
    line("weft_run_queue_length", "queue=\"p" + std::to_string(i) + "\"", num(st.local_runq[i]));
  head("weft_sched_latency_seconds", "histogram",
       "Time goroutines spent runnable before running (sampled, as Go's /sched/latencies:seconds).");
  for (std::size_t i = 0; i + 1 < st.latency.bounds_ns.size(); i++)
    line("weft_sched_latency_seconds_bucket", "le=\"" + fmt_double(static_cast<double>(st.latency.bounds_ns[i]) / 1e9) + "\"",
         num(static_cast<int64_t>(st.latency.cumulative[i])));
  line("weft_sched_latency_seconds_bucket", "le=\"+Inf\"", num(static_cast<int64_t>(st.latency.count)));
  line("weft_sched_latency_seconds_sum", "", fmt_double(static_cast<double>(st.latency.sum_ns) / 1e9));
  line("weft_sched_latency_seconds_count", "", num(static_cast<int64_t>(st.latency.count)));

  // HTTP, merged by route (a pattern served by two muxes is one series).
  struct merged {
    std::map<std::pair<std::string, int>, int64_t> counts;
    std::array<int64_t, http::route_metrics::kBounds.size() + 1> buckets{};
    double sum = 0;
    int64_t total = 0;
  };
  std::map<std::string, merged> routes;
  http::for_each_route_metrics([&](const http::route_metrics& m) {
    auto s = m.read();
    merged& x = routes[m.route()];
    for (const auto& c : s.counts) x.counts[{c.method, c.status}] += c.n;
    for (std::size_t i = 0; i < s.buckets.size(); i++) x.buckets[i] += s.buckets[i];
    x.sum += s.sum_seconds;
    x.total += s.total;
  });
  head("weft_http_requests_total", "counter", "HTTP requests answered, by route pattern, method and status code.");
  for (const auto& [route, x] : routes)
    for (const auto& [mc, n] : x.counts)
      line("weft_http_requests_total",
           "route=\"" + label_escape(route) + "\",method=\"" + mc.first + "\",code=\"" +
               (mc.second ? std::to_string(mc.second) : std::string("other")) + "\"",
           num(n));
  head("weft_http_request_duration_seconds", "histogram", "Time from the start of a request to the end of its response.");
  for (const auto& [route, x] : routes) {
    if (x.total == 0) continue;
    std::string rl = "route=\"" + label_escape(route) + "\"";
    for (std::size_t i = 0; i < http::route_metrics::kBounds.size(); i++)
      line("weft_http_request_duration_seconds_bucket", rl + ",le=\"" + fmt_double(http::route_metrics::kBounds[i]) + "\"",
           num(x.buckets[i]));
    line("weft_http_request_duration_seconds_bucket", rl + ",le=\"+Inf\"", num(x.total));
    line("weft_http_request_duration_seconds_sum", rl, fmt_double(x.sum));
    line("weft_http_request_duration_seconds_count", rl, num(x.total));
  }
  server_totals t = totals(opts_.servers);
  head("weft_http_connections", "gauge", "HTTP connections by state (idle: open, between requests).");
  line("weft_http_connections", "state=\"open\"", num(t.open));
  line("weft_http_connections", "state=\"active\"", num(t.active));
  line("weft_http_connections", "state=\"idle\"", num(t.open - t.active));
  head("weft_http_shutting_down", "gauge", "1 once a graceful shutdown has begun.");
  line("weft_http_shutting_down", "", num(opts_.shutting_down && opts_.shutting_down->load() ? 1 : 0));

  double cpu = 0, start = 0;
  process_times(cpu, start);
  head("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
  line("process_cpu_seconds_total", "", fmt_double(cpu));
  head("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  line("process_resident_memory_bytes", "", num(rss_bytes()));
  head("process_open_fds", "gauge", "Number of open file descriptors.");
  line("process_open_fds", "", num(open_fds()));
  head("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
  line("process_start_time_seconds", "", fmt_double(std::floor(start)));
  return o;
}

}  // namespace weft::handlers
