// echo_bench: the client side of the echo benchmarks (docs/benchmarks.md), the same
// client for weft's echo_server and the Go peer.
//
//   echo_bench --addr 127.0.0.1:9000 [--seconds 5] [--conns 1000] [--streams 4]
//              [--only pingpong|stream] [--server-pid PID]
//
// (a) ping-pong: --conns connections each send 64 bytes and wait for the echo, in a
//     loop: echo_pingpong_rps, echo_pingpong_p50_us, echo_pingpong_p99_us.
// (b) streaming: --streams connections each write 512-byte messages as fast as the
//     server echoes them (a writer and a reader goroutine per connection):
//     echo_stream_rps (messages echoed per second).
// With --server-pid (a server on this machine), also the server's CPU time over each
// measured window, as work per server core: echo_pingpong_rps_per_core and
// echo_stream_rps_per_core (requests or messages per second of server CPU). The client
// shares the machine's cores with the server, so the rps figures also carry the
// client's cost; these do not. The client's own figures (*_client_rps_per_core) show
// how much of the machine the client takes.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <fstream>
#include <sstream>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <vector>

#include "netpoll/net.h"
#include "runtime/runtime.h"
#include "runtime/wait_group.h"

namespace {

using clock_type = std::chrono::steady_clock;

// A process's user + system CPU seconds so far (/proc/PID/stat fields 14 and 15); -1
// without a pid or when it cannot be read.
double process_cpu_seconds(int pid) {
  if (pid <= 0) return -1;
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return -1;
  auto close = line.rfind(')');  // the command name may hold spaces
  if (close == std::string::npos) return -1;
  std::istringstream in(line.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; i <= 15 && in >> field; i++)
    if (i >= 14) ticks += std::stod(field);
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// Work per server CPU-second over a window: count / (cpu1 - cpu0); 0 if unmeasured.
double per_core(double count, double cpu0, double cpu1) {
  return cpu0 < 0 || cpu1 <= cpu0 ? 0 : count / (cpu1 - cpu0);
}

double pingpong(const std::string& addr, int conns, double seconds, int server_pid, double* p50, double* p99,
                double* rps_per_core, double* client_per_core) {
  std::atomic<bool> stop{false};
  // Round trips so far, per connection (each written only by its goroutine), summed at
  // both ends of the window: connections already pinging while others still dial do not
  // count, nor do round trips after it.
  struct alignas(64) counter {
    std::atomic<int64_t> n{0};
  };
  std::vector<counter> count(conns);
  auto sum = [&] {
    int64_t s = 0;
    for (auto& c : count) s += c.n.load(std::memory_order_relaxed);
    return s;
  };
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
        count[i].n.store(++n, std::memory_order_relaxed);
        if ((n & 7) == 0)
          lat[i].push_back(static_cast<uint32_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count()));
      }
      c.close();
      done.done();
    });
  ready.wait();
  double cpu0 = process_cpu_seconds(server_pid), self0 = process_cpu_seconds(getpid());
  auto t0 = clock_type::now();
  int64_t start = sum();
  weft::sleep_for(std::chrono::duration<double>(seconds));
  int64_t end = sum();
  double elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  double cpu1 = process_cpu_seconds(server_pid), self1 = process_cpu_seconds(getpid());
  stop = true;
  done.wait();
  if (failed) std::fprintf(stderr, "echo_bench: %d ping-pong connections failed\n", failed.load());
  std::vector<uint32_t> all;
  for (auto& v : lat) all.insert(all.end(), v.begin(), v.end());
  std::sort(all.begin(), all.end());
  *p50 = all.empty() ? 0 : all[all.size() / 2];
  *p99 = all.empty() ? 0 : all[all.size() * 99 / 100];
  *rps_per_core = per_core(static_cast<double>(end - start), cpu0, cpu1);
  *client_per_core = per_core(static_cast<double>(end - start), self0, self1);
  return (end - start) / elapsed;
}

double streaming(const std::string& addr, int streams, double seconds, int server_pid, double* rps_per_core,
                 double* client_per_core) {
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
  double cpu0 = process_cpu_seconds(server_pid), self0 = process_cpu_seconds(getpid());
  int64_t start = bytes.load();
  auto t0 = clock_type::now();
  weft::sleep_for(std::chrono::duration<double>(seconds));
  double elapsed = std::chrono::duration<double>(clock_type::now() - t0).count();
  int64_t got = bytes.load() - start;
  double cpu1 = process_cpu_seconds(server_pid), self1 = process_cpu_seconds(getpid());
  stop = true;
  done.wait();
  *rps_per_core = per_core(got / 512.0, cpu0, cpu1);
  *client_per_core = per_core(got / 512.0, self0, self1);
  return got / 512.0 / elapsed;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"echo_bench: echo ping-pong and streaming client"};
  std::string addr;
  double seconds = 5;
  int conns = 1000, streams = 4, procs = 2, server_pid = 0;
  std::string only;
  app.add_option("--addr", addr, "server HOST:PORT")->required();
  app.add_option("--seconds", seconds, "seconds per figure")->capture_default_str();
  app.add_option("--conns", conns, "ping-pong connections")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--streams", streams, "streaming connections")->capture_default_str()->check(CLI::Range(1, 1000));
  app.add_option("--max-procs", procs, "client Ps")->capture_default_str();
  app.add_option("--only", only, "run one workload")->check(CLI::IsMember({"pingpong", "stream"}));
  app.add_option("--server-pid", server_pid, "the server's pid: also report work per server CPU-second");
  CLI11_PARSE(app, argc, argv);
  weft::run([&] {
    if (only != "stream") {
      double p50 = 0, p99 = 0, per_core = 0, client = 0;
      double rps = pingpong(addr, conns, seconds, server_pid, &p50, &p99, &per_core, &client);
      std::printf("echo_pingpong_rps %.0f req/s\n", rps);
      std::printf("echo_pingpong_p50_us %.0f us\n", p50);
      std::printf("echo_pingpong_p99_us %.0f us\n", p99);
      if (server_pid) std::printf("echo_pingpong_rps_per_core %.0f req/cpu-s\n", per_core);
      std::printf("echo_pingpong_client_rps_per_core %.0f req/cpu-s\n", client);
    }
    if (only != "pingpong") {
      double per_core = 0, client = 0;
      double rps = streaming(addr, streams, seconds, server_pid, &per_core, &client);
      std::printf("echo_stream_rps %.0f msg/s\n", rps);
      if (server_pid) std::printf("echo_stream_rps_per_core %.0f msg/cpu-s\n", per_core);
      std::printf("echo_stream_client_rps_per_core %.0f msg/cpu-s\n", client);
    }
    std::fflush(stdout);
  }, {.max_procs = procs});
  return 0;
}
