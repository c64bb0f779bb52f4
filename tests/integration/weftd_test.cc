// weftd as users run it: a real process on loopback, driven with curl, raw sockets and
// wrk; configuration precedence, validation and reload; SIGTERM draining.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/integration/weftd_process.h"

namespace {

using namespace std::chrono_literals;
using namespace weft::testing;

TEST(Weftd, ServesEveryRouteToCurl) {
  weftd w({});
  ASSERT_FALSE(w.addr.empty()) << w.read_log();
  EXPECT_EQ(run_cmd("curl -s " + w.url("/hello")), "Hello, World!");
  EXPECT_EQ(run_cmd("curl -s " + w.url("/json")), R"({"message":"Hello, World!"})");
  EXPECT_EQ(run_cmd("curl -s -X POST --data-binary 'some body' " + w.url("/echo")), "some body");
  EXPECT_EQ(run_cmd("curl -s " + w.url("/healthz")), "ok\n");
  EXPECT_EQ(run_cmd("curl -s " + w.url("/readyz")), "ready\n");
  EXPECT_EQ(run_cmd("curl -s '" + w.url("/sleep?ms=10") + "'"), "slept 10ms\n");
  EXPECT_EQ(run_cmd("curl -s '" + w.url("/cpu?n=1000") + "'"), "3367238957596308553\n");
  std::string head = run_cmd("curl -s -I " + w.url("/hello"));
  EXPECT_NE(head.find("Content-Length: 13"), std::string::npos) << head;
  EXPECT_NE(head.find("Server: weftd"), std::string::npos) << head;
  EXPECT_NE(head.find("Date: "), std::string::npos) << head;
  EXPECT_NE(run_cmd("curl -s -i " + w.url("/nope")).find("404 Not Found"), std::string::npos);
  std::string m = run_cmd("curl -s -i -X DELETE " + w.url("/hello"));
  EXPECT_NE(m.find("405 Method Not Allowed"), std::string::npos) << m;
  EXPECT_NE(m.find("Allow: GET, HEAD"), std::string::npos) << m;
  // A chunked upload through curl, echoed back.
  std::string big(100000, 'q');
  std::string out = run_cmd("printf '%s' " + big + " | curl -s -H 'Transfer-Encoding: chunked' --data-binary @- " + w.url("/echo"));
  EXPECT_EQ(out, big);
  // Expect: 100-continue, as curl sends for large bodies.
  out = run_cmd("head -c 2000000 /dev/zero | curl -s -H 'Expect: 100-continue' --data-binary @- -o /dev/null -w '%{http_code} %{size_download}' " + w.url("/echo"));
  EXPECT_EQ(out, "200 2000000");
  EXPECT_EQ(w.stop(), 0);
}

TEST(Weftd, PipelinedRawRequestsAndBadInputKeepItServing) {
  weftd w({});
  ASSERT_FALSE(w.addr.empty());
  {
    sock s(w.addr);
    std::string batch;
    for (int i = 0; i < 10; i++) batch += "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    batch += "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    s.send(batch);
    std::string resp = s.recv_all();
    std::size_t count = 0;
    for (std::size_t p = 0; (p = resp.find("Hello, World!", p)) != std::string::npos; p++) count++;
    EXPECT_EQ(count, 11u);
  }
  for (std::string bad : {"GET / HTTP/1.1\r\n\r\n", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                          "GET /hello HTTP/9.9\r\nHost: x\r\n\r\n", "\x01\x02garbage\r\n\r\n"}) {
    sock s(w.addr);
    s.send(bad);
    std::string r = s.recv_all();
    EXPECT_TRUE(r.rfind("HTTP/1.1 4", 0) == 0 || r.rfind("HTTP/1.1 5", 0) == 0) << r;
    EXPECT_EQ(run_cmd("curl -s " + w.url("/healthz")), "ok\n");
  }
  EXPECT_EQ(w.stop(), 0);
}

TEST(Weftd, WrkSmokeRunHasNoErrors) {
  weftd w({});
  ASSERT_FALSE(w.addr.empty());
  // --timeout 10s: wrk counts a request slower than its default 2 s as a socket error,
  // and a sanitized weftd on a loaded machine can be that slow without losing anything.
  std::string out = run_cmd("wrk -t1 -c20 -d1s --timeout 10s " + w.url("/hello"));
  EXPECT_NE(out.find("Requests/sec"), std::string::npos) << out;
  EXPECT_EQ(out.find("Socket errors"), std::string::npos) << out;
  EXPECT_EQ(out.find("Non-2xx"), std::string::npos) << out;
  EXPECT_EQ(w.stop(), 0);
}

TEST(Weftd, SlowlorisConnectionsAreClosedWhileOthersAreServed) {
  weftd w({"--read-header-timeout", "300ms"});
  ASSERT_FALSE(w.addr.empty());
  std::vector<std::unique_ptr<sock>> slow;
  for (int i = 0; i < 50; i++) {
    slow.push_back(std::make_unique<sock>(w.addr));
    slow.back()->send("GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ");
  }
  for (int i = 0; i < 5; i++) EXPECT_EQ(run_cmd("curl -s " + w.url("/hello")), "Hello, World!");
  auto t0 = std::chrono::steady_clock::now();
  int closed = 0;
  for (auto& s : slow) {
    s->recv_all(3000ms);
    char b;
    closed += ::recv(s->fd, &b, 1, MSG_DONTWAIT) == 0;
  }
  EXPECT_EQ(closed, 50);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(w.stop(), 0);
}

TEST(Weftd, RequestTimeoutHeaderGets503AndDisconnectsCancel) {
  weftd w({"--access-log", "stdout", "--access-log-format", "json"});
  ASSERT_FALSE(w.addr.empty());
  std::string out = run_cmd("curl -s -o /dev/null -w '%{http_code}' -H 'Request-Timeout: 100' '" + w.url("/sleep?ms=5000") + "'");
  EXPECT_EQ(out, "503");
  // A client that gives up after 1 s: the handler's context is cancelled and it returns
  // at once (the access log records its duration: well under the 5 s it would sleep).
  run_cmd("curl -s -m 1 '" + w.url("/sleep?ms=5000") + "'");
  // The second entry is written when that handler returns.
  const std::regex entry(R"re("path":"/sleep","status":(\d+),"bytes":\d+,"duration_ms":([0-9.]+))re");
  std::string log, last;
  poll_for([&] {
    log = w.read_log(".out");
    int entries = 0;
    for (auto it = std::sregex_iterator(log.begin(), log.end(), entry); it != std::sregex_iterator(); ++it, entries++)
      last = (*it)[2];
    if (entries >= 2) return true;
    last.clear();
    return false;
  });
  ASSERT_FALSE(last.empty()) << log;
  EXPECT_LT(std::stod(last), 3000.0) << log;
  EXPECT_EQ(w.stop(), 0);
}

// Whether weftd's log shows `needle` within 10 s.
bool log_shows(const weftd& w, const std::string& needle) {
  return poll_for([&] { return w.read_log().find(needle) != std::string::npos; });
}

// The address of weftd's debug listener (--debug-listen); its log line comes before
// the serving line.
std::string debug_address(const weftd& w) {
  std::smatch m;
  std::string log = w.read_log();
  return std::regex_search(log, m, std::regex(R"(/debug and /metrics on (\S+))")) ? m[1].str() : "";
}

// weft_http_connections{state="active"} from /metrics on a debug listener.
int active_connections(const std::string& debug_addr) {
  sock s(debug_addr);
  s.send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string body = s.recv_all(5000ms);
  std::smatch m;
  if (!std::regex_search(body, m, std::regex(R"re(weft_http_connections\{state="active"\} (\d+))re"))) return -1;
  return std::stoi(m[1]);
}

TEST(Weftd, SigtermWhile200RequestsAreInFlightAnswersThemAllAndExitsZero) {
  weftd w({"--shutdown-grace", "60s", "--debug-listen", "127.0.0.1:0"});
  ASSERT_FALSE(w.addr.empty()) << w.read_log();
  const std::string dbg = debug_address(w);
  ASSERT_FALSE(dbg.empty()) << w.read_log();
  constexpr int n = 200;
  // Each handler sleeps 6 s: dispatching 200 requests in a sanitized weftd, the /metrics
  // polls, the signal and the refusal probes must all fit before the first answer.
  std::vector<std::unique_ptr<sock>> socks;
  for (int i = 0; i < n; i++) {
    socks.push_back(std::make_unique<sock>(w.addr));
    ASSERT_GE(socks.back()->fd, 0);
    socks.back()->send("GET /sleep?ms=6000 HTTP/1.1\r\nHost: x\r\n\r\n");
  }
  // All 200 are in their handlers: the count includes the /metrics request's own
  // connection.
  int active = 0;
  poll_for([&] { return (active = active_connections(dbg)) >= n + 1; });
  ASSERT_GE(active, n + 1) << w.read_log();
  kill(w.pid, SIGTERM);
  // New connections are refused while the 200 are still in their handlers.
  bool refused = poll_for([&] { return sock(w.addr).fd < 0; });
  EXPECT_TRUE(refused) << "the listener stayed open during the drain";
  char b;
  EXPECT_EQ(::recv(socks.front()->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT), -1)
      << "the drain had ended before the listener closed";
  int ok = 0;
  for (auto& s : socks) ok += s->recv_all(20000ms).rfind("HTTP/1.1 200 OK", 0) == 0;
  EXPECT_EQ(ok, n);
  // The drain ends by itself once the last one is answered (a second signal would mean
  // "exit now", with status 1).
  EXPECT_EQ(w.wait_exit(60s), 0);
}

TEST(Weftd, ASecondSignalExitsAtOnce) {
  weftd w({"--shutdown-grace", "30s", "--debug-listen", "127.0.0.1:0"});
  ASSERT_FALSE(w.addr.empty());
  const std::string dbg = debug_address(w);
  ASSERT_FALSE(dbg.empty()) << w.read_log();
  sock s(w.addr);
  s.send("GET /sleep?ms=20000 HTTP/1.1\r\nHost: x\r\n\r\n");
  int active = 0;  // counting the /metrics request's own connection
  poll_for([&] { return (active = active_connections(dbg)) >= 2; });
  ASSERT_GE(active, 2) << w.read_log();
  kill(w.pid, SIGTERM);
  // The second signal must find the drain under way.
  ASSERT_TRUE(log_shows(w, "draining")) << w.read_log();
  // At once: far sooner than the 20 s handler or the 30 s grace would end the drain.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(w.stop(SIGINT, 15s), 1);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 8s);
}

TEST(Weftd, ConfigPrecedenceIsFlagsThenEnvironmentThenFile) {
  std::string file = "/tmp/weftd-cfg-" + std::to_string(getpid()) + ".toml";
  {
    std::ofstream f(file);
    f << "log_level = \"warn\"\nshutdown_grace = \"7s\"\n[http]\nidle_timeout = \"11s\"\nhandler_timeout = \"12s\"\n";
  }
  std::string cmd = std::string("WEFTD_SHUTDOWN_GRACE=8s WEFTD_IDLE_TIMEOUT=21s WEFTD_DEBUG_MEM_PROFILE_RATE=4096 ") +
                    WEFTD_BIN + " --config " + file +
                    " --idle-timeout 31s --print-config";
  int status = -1;
  std::string out = run_cmd(cmd, &status);
  EXPECT_EQ(status, 0);
  EXPECT_NE(out.find("log_level = \"warn\""), std::string::npos) << out;        // file
  EXPECT_NE(out.find("shutdown_grace = \"8s\""), std::string::npos) << out;     // env over file
  EXPECT_NE(out.find("idle_timeout = \"31s\""), std::string::npos) << out;      // flag over env
  EXPECT_NE(out.find("handler_timeout = \"12s\""), std::string::npos) << out;   // file
  EXPECT_NE(out.find("listen = \"127.0.0.1:8080\""), std::string::npos) << out; // default
  EXPECT_NE(out.find("mem_profile_rate = 4096"), std::string::npos) << out;     // env
  unlink(file.c_str());
}

TEST(Weftd, InvalidSettingsNameTheKeyAndExitTwo) {
  struct bad {
    std::string cmd;
    std::string key;
  };
  std::string file = "/tmp/weftd-bad-" + std::to_string(getpid()) + ".toml";
  {
    std::ofstream f(file);
    f << "[http]\nidle_timeout = \"forever\"\n";
  }
  std::vector<bad> cases = {
      {std::string(WEFTD_BIN) + " --listen nowhere --print-config", "--listen"},
      {std::string("WEFTD_MAX_PROCS=lots ") + WEFTD_BIN + " --print-config", "WEFTD_MAX_PROCS"},
      {std::string(WEFTD_BIN) + " --config " + file + " --print-config", "http.idle_timeout"},
      {std::string(WEFTD_BIN) + " --log-level loud --print-config", "--log-level"},
      {std::string("WEFTD_DEBUG_MEM_PROFILE_RATE=lots ") + WEFTD_BIN + " --print-config", "WEFTD_DEBUG_MEM_PROFILE_RATE"},
  };
  for (const auto& c : cases) {
    int status = -1;
    std::string out = run_cmd(c.cmd, &status);
    EXPECT_EQ(status, 2) << c.cmd << "\n" << out;
    EXPECT_NE(out.find(c.key), std::string::npos) << out;
  }
  unlink(file.c_str());
}

TEST(Weftd, SighupReloadsTimeoutsAndABadReloadKeepsTheOldConfig) {
  std::string file = "/tmp/weftd-reload-" + std::to_string(getpid()) + ".toml";
  {
    std::ofstream f(file);
    f << "[http]\nhandler_timeout = \"10s\"\n";
  }
  weftd w({"--config", file});
  ASSERT_FALSE(w.addr.empty());
  EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' '" + w.url("/sleep?ms=300") + "'"), "200");
  {
    std::ofstream f(file);
    f << "[http]\nhandler_timeout = \"100ms\"\n[route_timeouts]\n\"GET /cpu\" = \"5s\"\n";
  }
  kill(w.pid, SIGHUP);
  ASSERT_TRUE(log_shows(w, "configuration reloaded")) << w.read_log();
  // 100 ms against a 3 s handler: the deadline certainly comes first.
  EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' '" + w.url("/sleep?ms=3000") + "'"), "503");
  {
    std::ofstream f(file);
    f << "[http]\nhandler_timeout = \"not a duration\"\n";
  }
  kill(w.pid, SIGHUP);
  ASSERT_TRUE(log_shows(w, "reload failed")) << w.read_log();
  EXPECT_NE(w.read_log().find("http.handler_timeout"), std::string::npos) << w.read_log();
  // Still the 100ms from the good reload.
  EXPECT_EQ(run_cmd("curl -s -o /dev/null -w '%{http_code}' '" + w.url("/sleep?ms=3000") + "'"), "503");
  EXPECT_EQ(w.stop(), 0);
  unlink(file.c_str());
}

TEST(Weftd, ReusePortLetsTwoProcessesShareAPort) {
  weftd a({"--reuse-port"});
  ASSERT_FALSE(a.addr.empty());
  weftd b({"--reuse-port", "--listen", a.addr});
  ASSERT_FALSE(b.addr.empty()) << b.read_log();
  EXPECT_EQ(run_cmd("curl -s " + a.url("/hello")), "Hello, World!");
  EXPECT_EQ(a.stop(), 0);
  EXPECT_EQ(run_cmd("curl -s " + b.url("/hello")), "Hello, World!");
  EXPECT_EQ(b.stop(), 0);
}

}  // namespace
