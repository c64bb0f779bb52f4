// /debug/pprof, /debug/vars and /metrics of a real weftd process, read by the real tools:
// `go tool pprof` (Debian's golang-go) and curl, with wrk putting the server under load.
#include <nlohmann/json.hpp>

#include "tests/integration/weftd_process.h"

namespace {

using namespace std::chrono_literals;
using namespace weft::testing;

// A scratch directory for pprof (it saves fetched profiles under $PPROF_TMPDIR).
struct pprof_env {
  std::string dir;
  pprof_env() {
    char tmpl[] = "/tmp/weft-pprof-XXXXXX";
    dir = mkdtemp(tmpl);
  }
  ~pprof_env() { run_cmd("rm -rf '" + dir + "'"); }
  std::string run(const std::string& args, int* status = nullptr) const {
    return run_cmd("HOME='" + dir + "' PPROF_TMPDIR='" + dir + "' go tool pprof " + args, status);
  }
};

// wrk load in the background for `secs`: the destructor waits for wrk to finish, stop()
// ends it early (a test that needs load throughout asks for plenty, then stops it, so a
// slow sanitizer build still has load for the whole test).
struct load {
  pid_t pid = -1;
  load(const std::string& url, int secs) {
    std::string d = std::to_string(secs) + "s";
    pid = fork();
    if (pid == 0) {
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      execlp("wrk", "wrk", "-t1", "-c8", ("-d" + d).c_str(), url.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  void stop() {
    if (pid > 0) kill(pid, SIGTERM);
  }
  ~load() {
    if (pid <= 0) return;
    int st = 0;
    waitpid(pid, &st, 0);
  }
};

TEST(Debug, CpuProfileUnderLoadShowsWeftAndHandlerFunctionsInPprofTop) {
  weftd w({});
  ASSERT_FALSE(w.addr.empty()) << w.read_log();
  pprof_env env;
  load l(w.url("/cpu?n=200000"), 60);
  int st = 0;
  std::string top = env.run("-top -nodecount=200 '" + w.url("/debug/pprof/profile?seconds=2") + "'", &st);
  EXPECT_EQ(st, 0) << top;
  EXPECT_NE(top.find("Type: cpu"), std::string::npos) << top;
  EXPECT_NE(top.find("cpu_work"), std::string::npos) << top;  // the /cpu handler's work
  EXPECT_NE(top.find("weft::"), std::string::npos) << top;    // the runtime and server
  // Every request goroutine carries its route as a label: focus on it.
  std::string tagged = env.run("-top -tagfocus='route=GET /cpu' '" + w.url("/debug/pprof/profile?seconds=1") + "'", &st);
  EXPECT_EQ(st, 0) << tagged;
  EXPECT_NE(tagged.find("cpu_work"), std::string::npos) << tagged;
  std::string tags = env.run("-tags '" + w.url("/debug/pprof/profile?seconds=1") + "'", &st);
  EXPECT_NE(tags.find("GET /cpu"), std::string::npos) << tags;
  l.stop();
  EXPECT_EQ(w.stop(), 0);
}

TEST(Debug, HeapGoroutineMutexAndBlockProfilesAreReadByPprof) {
  weftd w({});
  ASSERT_FALSE(w.addr.empty()) << w.read_log();
  pprof_env env;
  // Turn the contention profiles on (Go's SetBlockProfileRate(1) and
  // SetMutexProfileFraction(1)), then make some blocking: /sleep waits in
  // sleep_for(ctx, d), which the block profile records as Go's does the select on
  // time.After and ctx.Done() that it replaces.
  EXPECT_NE(run_cmd("curl -s '" + w.url("/debug/pprof/block?rate=1") + "'").find("now 1"), std::string::npos);
  EXPECT_NE(run_cmd("curl -s '" + w.url("/debug/pprof/mutex?rate=1") + "'").find("now 1"), std::string::npos);
  { load l(w.url("/sleep?ms=2"), 1); }
  int st = 0;
  std::string heap = env.run("-sample_index=inuse_space -top '" + w.url("/debug/pprof/heap") + "'", &st);
  EXPECT_EQ(st, 0) << heap;
  EXPECT_NE(heap.find("Type: inuse_space"), std::string::npos) << heap;
  std::string allocs = env.run("-top '" + w.url("/debug/pprof/allocs") + "'", &st);
  EXPECT_EQ(st, 0) << allocs;
  EXPECT_NE(allocs.find("Type: alloc_space"), std::string::npos) << allocs;
  std::string traces = env.run("-traces '" + w.url("/debug/pprof/goroutine") + "'", &st);
  EXPECT_EQ(st, 0) << traces;
  EXPECT_NE(traces.find("Type: goroutine"), std::string::npos) << traces;
  EXPECT_NE(traces.find("weft::"), std::string::npos) << traces;
  std::string block = env.run("-top '" + w.url("/debug/pprof/block") + "'", &st);
  EXPECT_EQ(st, 0) << block;
  EXPECT_NE(block.find("Type: delay"), std::string::npos) << block;
  EXPECT_NE(block.find("sleep_for"), std::string::npos) << block;  // the /sleep handler's wait
  std::string mutex = env.run("-top '" + w.url("/debug/pprof/mutex") + "'", &st);
  EXPECT_EQ(st, 0) << mutex;
  EXPECT_NE(mutex.find("Type: delay"), std::string::npos) << mutex;
  std::string threads = env.run("-top '" + w.url("/debug/pprof/threadcreate") + "'", &st);
  EXPECT_EQ(st, 0) << threads;
  EXPECT_NE(threads.find("Type: threadcreate"), std::string::npos) << threads;
  EXPECT_EQ(w.stop(), 0);
}

TEST(Debug, MemProfileRateIsConfigurable) {
  {
    // Every allocation sampled: the profile shows the rate (Go writes 2 * rate) and the
    // requests' allocations.
    weftd w({"--mem-profile-rate", "1"});
    ASSERT_FALSE(w.addr.empty()) << w.read_log();
    { load l(w.url("/json"), 1); }
    std::string heap = run_cmd("curl -s '" + w.url("/debug/pprof/heap?debug=1") + "'");
    EXPECT_NE(heap.find(" @ heap/2\n"), std::string::npos) << heap.substr(0, 300);
    EXPECT_NE(heap.find("weft::http"), std::string::npos) << heap.substr(0, 2000);
    EXPECT_EQ(w.stop(), 0);
  }
  {
    // 0 turns sampling off: nothing new is recorded (the cumulative "[objects: bytes]"
    // stays; startup may have been sampled at the default rate before the flag applied).
    weftd w({"--mem-profile-rate", "0"});
    ASSERT_FALSE(w.addr.empty()) << w.read_log();
    auto header = [&] {
      std::string h = run_cmd("curl -s '" + w.url("/debug/pprof/heap?debug=1") + "'");
      return h.substr(0, h.find('\n'));
    };
    std::string before = header();
    { load l(w.url("/json"), 1); }
    std::string after = header();
    EXPECT_NE(after.find(" @ heap/0"), std::string::npos) << after;
    EXPECT_EQ(before.substr(before.find('[')), after.substr(after.find('['))) << before << "\n" << after;
    EXPECT_EQ(w.stop(), 0);
  }
}

TEST(Debug, GoroutineTextFormsHaveGosStructure) {
  weftd w({});
  ASSERT_FALSE(w.addr.empty()) << w.read_log();
  std::string d1 = run_cmd("curl -s '" + w.url("/debug/pprof/goroutine?debug=1") + "'");
  EXPECT_TRUE(std::regex_search(d1, std::regex(R"(^goroutine profile: total \d+\n)"))) << d1;
  EXPECT_TRUE(std::regex_search(d1, std::regex(R"(\n\d+ @( 0x[0-9a-f]+)+\n)"))) << d1;
  EXPECT_TRUE(std::regex_search(d1, std::regex(R"(\n#\t0x[0-9a-f]+\t\S.*\+0x[0-9a-f]+\t\S+:\d+\n)"))) << d1;
  std::string d2 = run_cmd("curl -s '" + w.url("/debug/pprof/goroutine?debug=2") + "'");
  EXPECT_TRUE(std::regex_search(d2, std::regex(R"(^goroutine \d+ \[running\]:\n)"))) << d2;
  EXPECT_TRUE(std::regex_search(d2, std::regex(R"(\ngoroutine \d+ \[IO wait\]:\n)"))) << d2;
  EXPECT_TRUE(std::regex_search(d2, std::regex(R"(\ncreated by .* in goroutine \d+\n\t\S+:\d+ \+0x[0-9a-f]+\n)"))) << d2;
  // pprof parses the grouped text too.
  pprof_env env;
  std::string path = env.dir + "/g.txt";
  std::ofstream(path) << d1;
  int st = 0;
  std::string raw = env.run("-raw '" + path + "'", &st);
  EXPECT_EQ(st, 0) << raw;
  EXPECT_EQ(w.stop(), 0);
}

TEST(Debug, IndexCmdlineSymbolVarsAndMetrics) {
  weftd w({"--access-log", "off"});
  ASSERT_FALSE(w.addr.empty()) << w.read_log();
  std::string index = run_cmd("curl -s '" + w.url("/debug/pprof/") + "'");
  for (const char* name : {"allocs", "block", "cmdline", "goroutine", "heap", "mutex", "profile", "threadcreate", "trace"})
    EXPECT_NE(index.find(std::string(">") + name + "</a>"), std::string::npos) << name << "\n" << index;
  EXPECT_NE(index.find("full goroutine stack dump"), std::string::npos);
  std::string cmd = run_cmd("curl -s '" + w.url("/debug/pprof/cmdline") + "'");
  EXPECT_NE(cmd.find(std::string("--access-log") + '\0' + "off"), std::string::npos);
  // symbol: pprof POSTs "0xADDR+0xADDR"; GET works too. Take addresses from the goroutine
  // profile's text form.
  std::string d1 = run_cmd("curl -s '" + w.url("/debug/pprof/goroutine?debug=1") + "'");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(d1, m, std::regex(R"(#\t(0x[0-9a-f]+)\t(\S+))")));
  std::string addr = m[1];
  std::string sym = run_cmd("curl -s -X POST --data-binary '" + addr + "+0x1' '" + w.url("/debug/pprof/symbol") + "'");
  EXPECT_EQ(sym.rfind("num_symbols: 1\n", 0), 0u) << sym;
  EXPECT_NE(sym.find(addr + " "), std::string::npos) << sym;
  EXPECT_EQ(sym.find("0x1 "), std::string::npos) << sym;  // unknown addresses are left out
  std::string gsym = run_cmd("curl -s '" + w.url("/debug/pprof/symbol?" + addr) + "'");
  EXPECT_NE(gsym.find(addr + " "), std::string::npos) << gsym;

  for (int i = 0; i < 5; i++) run_cmd("curl -s '" + w.url("/hello") + "'");
  run_cmd("curl -s '" + w.url("/nope") + "'");
  auto vars = nlohmann::json::parse(run_cmd("curl -s '" + w.url("/debug/vars") + "'"), nullptr, false);
  ASSERT_FALSE(vars.is_discarded());
  for (const char* k : {"cmdline", "memstats", "runtime", "server"}) EXPECT_TRUE(vars.contains(k)) << k;
  EXPECT_GT(vars["memstats"]["rss_bytes"].get<int64_t>(), 0);
  EXPECT_GE(vars["runtime"]["goroutines"].get<int64_t>(), 2);
  EXPECT_EQ(vars["runtime"]["procs"].get<int64_t>(), 2);

  // A request is counted after its response went out, and a connection stops being open
  // when the server sees the client's close: read /metrics until the earlier curls show.
  const char* settled[] = {
      "weft_http_requests_total{route=\"GET /hello\",method=\"GET\",code=\"200\"} 5\n",
      "weft_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"404\"} 1\n",
      "weft_http_request_duration_seconds_count{route=\"GET /hello\"} 5\n",
      "weft_http_connections{state=\"open\"} 1\n",
  };
  std::string metrics;
  poll_for([&] {
    metrics = run_cmd("curl -s -i '" + w.url("/metrics") + "'");
    bool all = true;
    for (const char* line : settled) all = all && metrics.find(line) != std::string::npos;
    return all;
  });
  EXPECT_NE(metrics.find("Content-Type: text/plain; version=0.0.4"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("# TYPE weft_goroutines gauge\nweft_goroutines "), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("weft_http_requests_total{route=\"GET /hello\",method=\"GET\",code=\"200\"} 5\n"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("weft_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"404\"} 1\n"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("weft_http_request_duration_seconds_count{route=\"GET /hello\"} 5\n"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("weft_http_request_duration_seconds_bucket{route=\"GET /hello\",le=\"+Inf\"} 5\n"), std::string::npos);
  EXPECT_NE(metrics.find("# TYPE weft_sched_latency_seconds histogram"), std::string::npos);
  EXPECT_NE(metrics.find("weft_run_queue_length{queue=\"global\"}"), std::string::npos);
  EXPECT_NE(metrics.find("weft_http_connections{state=\"open\"} 1\n"), std::string::npos) << metrics;  // curl's own
  EXPECT_NE(metrics.find("weft_http_shutting_down 0\n"), std::string::npos);
  // Every sample line is "name{labels} value" or "name value" with a parsable number.
  std::istringstream in(metrics.substr(metrics.find("\r\n\r\n") + 4));
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    static const std::regex sample(
        R"([a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eInf]+)");
    EXPECT_TRUE(std::regex_match(line, sample)) << line;
  }
  EXPECT_EQ(w.stop(), 0);
}

TEST(Debug, TraceIsChromeTraceJson) {
  weftd w({});
  ASSERT_FALSE(w.addr.empty()) << w.read_log();
  load l(w.url("/sleep?ms=1"), 1);
  std::string body = run_cmd("curl -s '" + w.url("/debug/pprof/trace?seconds=0.5") + "'");
  auto j = nlohmann::json::parse(body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << body.substr(0, 500);
  ASSERT_TRUE(j.contains("traceEvents"));
  EXPECT_GT(j["traceEvents"].size(), 10u);
  EXPECT_EQ(w.stop(), 0);
}

TEST(Debug, BadParametersGet400WithXGoPprofAndASecondCpuProfileFails) {
  weftd w({});
  ASSERT_FALSE(w.addr.empty()) << w.read_log();
  std::string r = run_cmd("curl -s -i '" + w.url("/debug/pprof/heap?debug=1&seconds=1") + "'");
  EXPECT_NE(r.find("HTTP/1.1 400"), std::string::npos) << r;
  EXPECT_NE(r.find("X-Go-Pprof: 1"), std::string::npos) << r;
  EXPECT_NE(r.find("seconds and debug params are incompatible"), std::string::npos) << r;
  r = run_cmd("curl -s -i '" + w.url("/debug/pprof/goroutine?debug=x") + "'");
  EXPECT_NE(r.find("HTTP/1.1 400"), std::string::npos) << r;
  r = run_cmd("curl -s -i '" + w.url("/debug/pprof/heap?seconds=3601") + "'");
  EXPECT_NE(r.find("HTTP/1.1 400"), std::string::npos) << r;
  EXPECT_NE(r.find("profile duration exceeds 3600 seconds"), std::string::npos) << r;
  r = run_cmd("curl -s -i '" + w.url("/debug/pprof/profile?seconds=100000") + "'");
  EXPECT_NE(r.find("HTTP/1.1 400"), std::string::npos) << r;
  EXPECT_NE(r.find("X-Go-Pprof: 1"), std::string::npos) << r;
  r = run_cmd("curl -s -i '" + w.url("/debug/pprof/nosuch") + "'");
  EXPECT_NE(r.find("HTTP/1.1 404"), std::string::npos) << r;
  EXPECT_NE(r.find("Unknown profile"), std::string::npos) << r;

  // Two CPU profiles at once: the second is refused, the first completes intact.
  pprof_env env;
  load l(w.url("/cpu?n=100000"), 60);
  int st1 = 0;
  std::string first;
  // 4 s: the second request must arrive while the first runs, after the polling below.
  std::thread t([&] { first = env.run("-top '" + w.url("/debug/pprof/profile?seconds=4") + "'", &st1); });
  // /debug/vars says when the first one is running (bounded wait).
  bool running = false;
  for (int i = 0; i < 500 && !running; i++) {
    auto v = nlohmann::json::parse(run_cmd("curl -s '" + w.url("/debug/vars") + "'"), nullptr, false);
    running = !v.is_discarded() && v["runtime"]["cpu_profile_running"].get<bool>();
    if (!running) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(running);
  std::string second = run_cmd("curl -s -i '" + w.url("/debug/pprof/profile?seconds=1") + "'");
  t.join();
  EXPECT_NE(second.find("HTTP/1.1 500"), std::string::npos) << second;
  EXPECT_NE(second.find("X-Go-Pprof: 1"), std::string::npos) << second;
  EXPECT_NE(second.find("Could not enable CPU profiling"), std::string::npos) << second;
  EXPECT_EQ(st1, 0) << first;
  EXPECT_NE(first.find("cpu_work"), std::string::npos) << first;
  l.stop();
  EXPECT_EQ(w.stop(), 0);
}

// The first non-loopback IPv4 address of this machine, if it has one.
std::string non_loopback_ipv4() {
  std::string out = run_cmd("hostname -I");
  std::istringstream in(out);
  for (std::string a; in >> a;)
    if (a.find('.') != std::string::npos && a.rfind("127.", 0) != 0) return a;
  return "";
}

TEST(Debug, ClientsOutsideDebugAllowGet403) {
  {
    // Loopback is allowed by default, anything else is not: reach the server through
    // this machine's own non-loopback address, so the client is not loopback.
    std::string ip = non_loopback_ipv4();
    if (ip.empty()) GTEST_SKIP() << "no non-loopback IPv4 address to test from";
    weftd w({"--listen", "0.0.0.0:0"});
    ASSERT_FALSE(w.addr.empty()) << w.read_log();
    std::string port = w.addr.substr(w.addr.rfind(':') + 1);
    std::string url = "http://" + ip + ":" + port;
    EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' " + url + "/debug/pprof/goroutine?debug=1"), "403");
    EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' " + url + "/metrics"), "403");
    EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' " + url + "/hello"), "200");
    EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:" + port + "/debug/pprof/goroutine?debug=1"), "200");
    EXPECT_EQ(w.stop(), 0);
  }
  {
    // An allow list without loopback refuses loopback clients.
    weftd w({"--debug-allow", "10.0.0.0/8"});
    ASSERT_FALSE(w.addr.empty()) << w.read_log();
    EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' '" + w.url("/debug/pprof/") + "'"), "403");
    EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' '" + w.url("/debug/vars") + "'"), "403");
    EXPECT_EQ(w.stop(), 0);
  }
  {
    // debug.listen: /debug moves to its own listener; the main one no longer has it.
    weftd w({"--debug-listen", "127.0.0.1:0"});
    ASSERT_FALSE(w.addr.empty()) << w.read_log();
    std::smatch m;
    std::string log = w.read_log();
    for (int i = 0; i < 100 && !std::regex_search(log, m, std::regex(R"(/debug and /metrics on (\S+))")); i++) {
      std::this_thread::sleep_for(10ms);
      log = w.read_log();
    }
    ASSERT_TRUE(std::regex_search(log, m, std::regex(R"(/debug and /metrics on (\S+))"))) << log;
    std::string dbg = m[1];
    EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' http://" + dbg + "/debug/pprof/goroutine?debug=1"), "200");
    EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' '" + w.url("/debug/pprof/goroutine?debug=1") + "'"), "404");
    EXPECT_EQ(w.stop(), 0);
  }
  // A bad allow list is a configuration error naming the key.
  int st = 0;
  std::string out = run_cmd(std::string(WEFTD_BIN) + " --debug-allow 10.0.0.0/99", &st);
  EXPECT_EQ(st, 2);
  EXPECT_NE(out.find("debug.allow"), std::string::npos) << out;
}

}  // namespace
