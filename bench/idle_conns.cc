// idle_conns: opens N keep-alive connections to a server, makes one request on each,
// leaves them idle, and reports the server's RSS growth per connection
// (docs/benchmarks.md: idle_conn_bytes).
//
//   idle_conns --addr 127.0.0.1:8080 --pids PID[,PID...] [--conns 10000] [--path /hello]
//
// With several pids (nginx's workers) the RSS of all of them is summed.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "netpoll/net.h"
#include "runtime/runtime.h"
#include "runtime/wait_group.h"

namespace {

long rss_of(const std::string& pids) {
  long sum = 0;
  std::size_t start = 0;
  while (start < pids.size()) {
    std::size_t comma = pids.find(',', start);
    std::string pid = pids.substr(start, comma - start);
    std::ifstream f("/proc/" + pid + "/statm");
    long total = 0, rss = 0;
    f >> total >> rss;
    sum += rss * sysconf(_SC_PAGESIZE);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"idle_conns: server RSS per idle keep-alive connection"};
  std::string addr, path = "/hello", pid;
  int conns = 10000;
  // Idle means idle: the runtime returns the stacks of exited goroutines after they have
  // stayed unused for a full scavenger period (1 s), as Go returns freed spans over time.
  int settle_ms = 3000, hold_ms = 0;
  app.add_option("--addr", addr)->required();
  app.add_option("--pids", pid)->required();
  app.add_option("--conns", conns);
  app.add_option("--path", path);
  app.add_option("--settle-ms", settle_ms, "wait before measuring");
  app.add_option("--hold-ms", hold_ms, "keep the connections open this long after measuring");
  CLI11_PARSE(app, argc, argv);
  int rc = 0;
  weft::run([&] {
    std::vector<weft::net::conn> open(conns);
    std::atomic<int> failed{0};
    weft::sleep_for(std::chrono::milliseconds(300));
    long before = rss_of(pid);
    weft::wait_group wg;
    wg.add(conns);
    std::string req = "GET " + path + " HTTP/1.1\r\nHost: bench\r\n\r\n";
    for (int i = 0; i < conns; i++)
      weft::go([&, i] {
        auto [c, err] = weft::net::dial(addr, std::chrono::seconds(20));
        if (err || c.write(req).err) {
          failed++;
        } else {
          char buf[1024];
          std::string got;
          while (got.find("\r\n\r\n") == std::string::npos || got.size() < got.find("\r\n\r\n") + 4) {
            auto r = c.read(buf, sizeof buf);
            if (r.err) break;
            got.append(buf, r.n);
            if (got.find("Hello") != std::string::npos || got.find("}") != std::string::npos) break;
          }
          open[i] = c;
        }
        wg.done();
      });
    wg.wait();
    weft::sleep_for(std::chrono::milliseconds(settle_ms));  // let the server settle into idling
    long after = rss_of(pid);
    if (failed) std::fprintf(stderr, "idle_conns: %d connections failed\n", failed.load());
    int ok = conns - failed.load();
    std::printf("idle_conn_bytes %.0f B\n", ok ? double(after - before) / ok : 0.0);
    if (hold_ms) weft::sleep_for(std::chrono::milliseconds(hold_ms));
    for (auto& c : open) c.close();
    rc = failed ? 1 : 0;
  }, {.max_procs = 1});
  return rc;
}
