// sleep_runtime: the sleep10 workload on the weft runtime with no HTTP layer, to tell
// what the runtime costs there from what weftd's server code costs.
//
// bench/sleep_floor answers sleep10 with no runtime at all (epoll and a FIFO of
// deadlines per thread); weftd answers it with the runtime and the whole HTTP server.
// This program sits between them: a goroutine per connection reads a request, sleeps
// 10 ms with sleep_for(ctx, d) as weftd's /sleep does, and writes an answer as long as
// weftd's. It uses the runtime's poller, timers, scheduler and stacks, and none of the
// parsing, routing, contexts per request, deadlines or response building. So with the
// three side by side (bench/sleep10_anatomy.sh), floor -> runtime is the runtime's price
// and runtime -> weftd the HTTP layer's.
//
// It serves exactly that workload: one GET without a body per read, one in flight per
// connection (wrk without a pipelining script). Anything else is not its job.
//
//   sleep_runtime [--port N] [--procs N] [--delay-ms N]     (18084, 2, 10)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>

#include "bench/stop_signals.h"
#include "netpoll/net.h"
#include "runtime/context.h"
#include "runtime/runtime.h"

namespace {

int g_delay_ms = 10;

// weftd's /sleep?ms=N answer, byte for byte. As weftd does with its Date, each thread
// formats it once a second and a request copies it out: the write may park and resume
// on another thread, whose copy may change meanwhile.
struct answer_cache {
  std::time_t second = -1;
  std::string text;
};
thread_local answer_cache t_answer;

void answer_into(std::string& out) {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  answer_cache& a = t_answer;
  if (ts.tv_sec != a.second) {
    a.second = ts.tv_sec;
    char date[64];
    std::tm tm;
    gmtime_r(&a.second, &tm);
    std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    std::string body = "slept " + std::to_string(g_delay_ms) + "ms\n";
    a.text = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
             "\r\nDate: " + date + "\r\nServer: weftd\r\n\r\n" + body;
  }
  out.assign(a.text);
}

void serve(weft::net::conn c) {
  auto buf = std::make_unique<char[]>(4096);
  std::string out;
  for (;;) {
    auto [n, err] = c.read(buf.get(), 4096);
    if (err || n == 0) break;
    if (weft::sleep_for(weft::background(), std::chrono::milliseconds(g_delay_ms))) break;
    answer_into(out);
    if (c.write(out.data(), out.size()).err) break;
  }
  c.close();
}

int usage() {
  std::fprintf(stderr, "usage: sleep_runtime [--port N] [--procs N] [--delay-ms N]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int port = 18084, procs = 2, delay_ms = g_delay_ms;
  if (argc % 2 == 0) return usage();
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string_view k = argv[i];
    char* end = nullptr;
    long v = std::strtol(argv[i + 1], &end, 10);
    if (*end != '\0') return usage();
    if (k == "--port") port = static_cast<int>(v);
    else if (k == "--procs") procs = static_cast<int>(v);
    else if (k == "--delay-ms") delay_ms = static_cast<int>(v);
    else return usage();
  }
  if (port <= 0 || port > 65535 || procs <= 0 || delay_ms < 0) return usage();
  g_delay_ms = delay_ms;

  weft::bench::stop_signals stop;

  int rc = 0;
  weft::run([&] {
    std::string addr = "127.0.0.1:" + std::to_string(port);
    auto [ln, err] = weft::net::listen(addr);
    if (err) {
      std::fprintf(stderr, "sleep_runtime: listen %s: %s\n", addr.c_str(), err.message().c_str());
      rc = 1;
      return;
    }
    weft::go([ln]() mutable {
      for (;;) {
        auto [c, err] = ln.accept();
        if (err) return;
        weft::go([c]() mutable { serve(std::move(c)); });
      }
    });
    stop.wait();
    ln.close();
  }, {.max_procs = procs});
  return rc;
}
