// echo_bench: the client side of the echo benchmarks (docs/benchmarks.md), the same
// client for weft's echo_server and the Go peer.
//
//   echo_bench --addr 127.0.0.1:9000 [--seconds 5] [--conns 1000] [--streams 4]
//
// (a) ping-pong: --conns connections each send 64 bytes and wait for the echo, in a
//     loop: echo_pingpong_rps, echo_pingpong_p50_us, echo_pingpong_p99_us.
// (b) streaming: --streams connections each write 512-byte messages as fast as the
//     server echoes them (a writer and a reader goroutine per connection):
//     echo_stream_rps (messages echoed per second).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <vector>

#include "netpoll/net.h"
#include "runtime/runtime.h"
#include "runtime/wait_group.h"

namespace {

using clock_type = std::chrono::steady_clock;

double pingpong(const std::string& addr, int conns, double seconds, double* p50, double* p99) {
  std::atomic<bool> stop{false};
  std::atomic<int64_t> total{0};
  std::vector<std::vector<uint32_t>> lat(conns);  // microseconds, one vector per goroutine
  weft::wait_group ready, done;
  ready.add(conns);
  done.add(conns);
  std::atomic<int> failed{0};
  for (int i = 0; i < conns; i++)
    weft::go([&, i] {
      auto [c, err] = weft::net::dial(addr, std::chrono::seconds(10));
      ready.done();
      if (err) {
        failed++;
        done.done();
        return;
      }
      char msg[64], buf[64];
      for (int k = 0; k < 64; k++) msg[k] = static_cast<char>('a' + (i + k) % 26);
      lat[i].reserve(1 << 14);
      int64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        auto t0 = clock_type::now();
        if (c.write(msg, 64).err || c.read_full(buf, 64).err) {
          failed++;
          break;
        }
        n++;
        if ((n & 7) == 0)
          lat[i].push_back(static_cast<uint32_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count()));
      }
      total += n;
      c.close();
      done.done();
    });
  ready.wait();
  auto t0 = clock_type::now();
  int64_t start = total.load();
  weft::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  double elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  done.wait();
  if (failed) std::fprintf(stderr, "echo_bench: %d ping-pong connections failed\n", failed.load());
  std::vector<uint32_t> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  *p50 = all.empty() ? 0 : all[all.size() / 2];
  *p99 = all.empty() ? 0 : all[all.size() * 99 / 100];
  return (total.load() - start) / elapsed;
}

double streaming(const std::string& addr, int streams, double seconds) {
  std::atomic<bool> stop{false};
  std::atomic<int64_t> bytes{0};
  weft::wait_group done;
  done.add(streams * 2);
  for (int i = 0; i < streams; i++) {
    auto [c, err] = weft::net::dial(addr, std::chrono::seconds(10));
    if (err) {
      std::fprintf(stderr, "echo_bench: dial: %s\n", err.message().c_str());
      done.add(-2);
      continue;
    }
    weft::go([&, c]() mutable {  // writer
      char msg[512];
      std::fill(msg, msg + sizeof msg, 'x');
      while (!stop.load(std::memory_order_relaxed))
        if (c.write(msg, sizeof msg).err) break;
      c.close_write();
      done.done();
    });
    weft::go([&, c]() mutable {  // reader
      std::vector<char> buf(64 * 1024);
      for (;;) {
        auto r = c.read(buf.data(), buf.size());
        bytes += static_cast<int64_t>(r.n);
        if (r.err) break;
      }
      c.close();
      done.done();
    });
  }
  weft::sleep_for(std::chrono::milliseconds(200));  // warm up
  int64_t start = bytes.load();
  auto t0 = clock_type::now();
  weft::sleep_for(std::chrono::duration<double>(seconds));
  double elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  int64_t got = bytes.load() - start;
  stop = true;
  done.wait();
  return got / 512.0 / elapsed;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"echo_bench: echo ping-pong and streaming client"};
  std::string addr;
  double seconds = 5;
  int conns = 1000, streams = 4, procs = 2;
  app.add_option("--addr", addr, "server HOST:PORT")->required();
  app.add_option("--seconds", seconds, "seconds per figure")->capture_default_str();
  app.add_option("--conns", conns, "ping-pong connections")->capture_default_str();
  app.add_option("--streams", streams, "streaming connections")->capture_default_str();
  app.add_option("--max-procs", procs, "client Ps")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  weft::run([&] {
    double p50 = 0, p99 = 0;
    double rps = pingpong(addr, conns, seconds, &p50, &p99);
    std::printf("echo_pingpong_rps %.0f req/s\n", rps);
    std::printf("echo_pingpong_p50_us %.0f us\n", p50);
    std::printf("echo_pingpong_p99_us %.0f us\n", p99);
    std::printf("echo_stream_rps %.0f msg/s\n", streaming(addr, streams, seconds));
    std::fflush(stdout);
  }, {.max_procs = procs});
  return 0;
}
