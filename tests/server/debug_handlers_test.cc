// The /debug handlers in-process: an injected goroutine leak is visible with its creation
// site, access control, delta profiles, and the allow-list parser.
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <regex>

#include "handlers/debug.h"
#include "netpoll/net.h"
#include "runtime/chan.h"
#include "runtime/profiling.h"
#include "runtime/wait_group.h"
#include "server/http.h"
#include "server/serve_mux.h"
#include "tests/server/http_client.h"
#include "tests/test_util.h"

namespace weft::handlers {
namespace {

using namespace std::chrono_literals;
using testing::raw_client;
using testing::run_checked;

struct debug_server {
  http::serve_mux mux;
  std::unique_ptr<debug_endpoints> dbg;
  std::unique_ptr<http::server> srv;
  net::listener ln;
  wait_group done;
  std::string addr;

  explicit debug_server(std::string allow = "127.0.0.0/8,::1/128") {
    debug_options o;
    std::string err;
    EXPECT_TRUE(net::parse_prefix_list(allow, o.allow, &err)) << err;
    o.cmdline = {"weftd", "--flag"};
    srv = std::make_unique<http::server>(mux.as_handler(), http::server_options{});
    o.servers.push_back(srv.get());
    dbg = std::make_unique<debug_endpoints>(std::move(o));
    dbg->register_routes(mux);
    auto r = net::listen("127.0.0.1:0");
    EXPECT_FALSE(r.err);
    ln = r.ln;
    addr = ln.address();
    done.add(1);
    weft::go([this] {
      srv->serve(ln);
      done.done();
    });
  }
  ~debug_server() {
    srv->shutdown(2s);
    done.wait();
    EXPECT_EQ(net::registered_descriptors(), 0) << "descriptors leaked";
  }
  testing::http_response get(const std::string& target) {
    raw_client c(addr);
    c.send("GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    return c.read_response();
  }
};

// The leak: goroutines started here that never end (until the test lets them go).
[[gnu::noinline]] void start_leaky_workers(chan<int> never, int n, wait_group& exited) {
  for (int i = 0; i < n; i++)
    weft::go([never, &exited] {
      never.recv();
      exited.done();
    });
}

TEST(DebugHandlers, AnInjectedGoroutineLeakShowsWithItsCreationSite) {
  run_checked([] {
    debug_server s;
    chan<int> never(0);
    wait_group exited;
    exited.add(7);
    start_leaky_workers(never, 7, exited);
    // Once all seven are parked, they form one group of 7 with the same stack.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    std::string body;
    while (std::chrono::steady_clock::now() < deadline) {
      body = s.get("/debug/pprof/goroutine?debug=1").body;
      if (body.find("\n7 @ ") != std::string::npos) break;
      weft::yield();
    }
    auto at = body.find("\n7 @ ");
    ASSERT_NE(at, std::string::npos) << body;
    std::string group = body.substr(at, body.find("\n\n", at + 1) - at);
    EXPECT_NE(group.find("start_leaky_workers"), std::string::npos) << group;  // where they were started
    EXPECT_NE(group.find("chan"), std::string::npos) << group;                 // where they wait
    EXPECT_NE(body.rfind("goroutine profile: total ", 0), std::string::npos) << body;
    never.close();
    exited.wait();
  });
}

TEST(DebugHandlers, OnlyAllowedClientsGetIn) {
  run_checked([] {
    {
      debug_server s("10.0.0.0/8");  // loopback is not in it
      for (const char* t : {"/debug/pprof/", "/debug/pprof/goroutine?debug=2", "/debug/vars", "/metrics",
                            "/debug/pprof/cmdline"}) {
        auto r = s.get(t);
        EXPECT_EQ(r.status, 403) << t;
        EXPECT_EQ(r.body.find("goroutine"), std::string::npos) << t;  // nothing leaks out
      }
    }
    {
      debug_server s;
      EXPECT_EQ(s.get("/debug/pprof/cmdline").body, std::string("weftd") + '\0' + "--flag");
      EXPECT_EQ(s.get("/debug/vars").status, 200);
    }
  });
}

// `go tool pprof -top` of a block profile, counting contentions.
std::string pprof_top(const std::string& proto) {
  return weft::blocking([&] {
    char dir[] = "/tmp/weft-delta-XXXXXX";
    std::string d = mkdtemp(dir);
    std::string file = d + "/block.pb.gz";
    std::ofstream(file, std::ios::binary) << proto;
    std::string out = testing::run_cmd("HOME=" + d + " PPROF_TMPDIR=" + d +
                                       " go tool pprof -sample_index=contentions -nodefraction=0 -nodecount=100000 -top " + file);
    std::system(("rm -rf " + d).c_str());
    return out;
  });
}

// Block once on an unbuffered channel, from two call sites pprof tells apart (noipa:
// identical bodies would otherwise be folded into one function).
void block_on(chan<int> c) {
  weft::go([c] { c.send(1); });
  c.recv();
}
[[gnu::noipa]] void block_before_window(chan<int> c) {
  block_on(c);
  asm volatile("" ::: "memory");  // keep this frame (no tail call)
}
[[gnu::noipa]] void block_during_window(chan<int> c) {
  block_on(c);
  asm volatile("" ::: "memory");
}

TEST(DebugHandlers, DeltaProfilesCountOnlyWhatHappenedDuringTheWindow) {
  run_checked([] {
    debug_server s;
    int64_t prev = set_block_profile_rate(1);
    chan<int> c(0);
    // Blocking before the window: in the full profile, absent from the delta.
    for (int i = 0; i < 50; i++) block_before_window(c);
    // During the window (and a little after): keep blocking until the delta is back.
    std::atomic<bool> stop{false};
    wait_group blocker;
    blocker.add(1);
    weft::go([&] {
      while (!stop.load()) block_during_window(c);
      blocker.done();
    });
    auto delta = s.get("/debug/pprof/block?seconds=1");
    stop = true;
    blocker.wait();
    auto full = s.get("/debug/pprof/block");
    set_block_profile_rate(prev);
    ASSERT_EQ(delta.status, 200) << delta.body;
    ASSERT_EQ(full.status, 200);
    std::string d = pprof_top(delta.body), f = pprof_top(full.body);
    EXPECT_NE(f.find("block_before_window"), std::string::npos) << f;
    EXPECT_NE(f.find("block_during_window"), std::string::npos) << f;
    EXPECT_NE(d.find("block_during_window"), std::string::npos) << d;
    EXPECT_EQ(d.find("block_before_window"), std::string::npos) << "the delta counts blocking from before its window\n" << d;
  });
}

TEST(NetPrefix, ParsesCidrsAndMatchesAddressesWithPorts) {
  std::vector<net::ip_prefix> l;
  std::string err;
  ASSERT_TRUE(net::parse_prefix_list("127.0.0.0/8, ::1/128,10.1.2.3", l, &err)) << err;
  ASSERT_EQ(l.size(), 3u);
  EXPECT_TRUE(net::prefix_list_contains(l, "127.0.0.1:5555"));
  EXPECT_TRUE(net::prefix_list_contains(l, "127.255.1.1"));
  EXPECT_TRUE(net::prefix_list_contains(l, "[::1]:80"));
  EXPECT_TRUE(net::prefix_list_contains(l, "[::ffff:127.0.0.1]:80"));  // IPv4-mapped
  EXPECT_TRUE(net::prefix_list_contains(l, "10.1.2.3:1"));
  EXPECT_FALSE(net::prefix_list_contains(l, "10.1.2.4:1"));
  EXPECT_FALSE(net::prefix_list_contains(l, "128.0.0.1:1"));
  EXPECT_FALSE(net::prefix_list_contains(l, "[::2]:80"));
  EXPECT_FALSE(net::prefix_list_contains(l, "garbage"));
  ASSERT_TRUE(net::parse_prefix_list("192.168.0.0/17", l, &err));
  EXPECT_TRUE(net::prefix_list_contains(l, "192.168.127.255:1"));
  EXPECT_FALSE(net::prefix_list_contains(l, "192.168.128.0:1"));
  for (const char* bad : {"10.0.0.0/33", "::1/129", "10.0.0.0/x", "nonsense", "10.0.0.0/"}) {
    err.clear();
    EXPECT_FALSE(net::parse_prefix_list(bad, l, &err)) << bad;
    EXPECT_FALSE(err.empty()) << bad;
  }
}

}  // namespace
}  // namespace weft::handlers
