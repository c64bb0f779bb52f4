// echo_server: a TCP echo server on weft, a goroutine per connection.
//
//   echo_server --listen 127.0.0.1:9000 [--max-procs N]
//
// Prints "listening on ADDR" once it accepts connections (tests and bench/echo_bench
// read that line to learn the port when given port 0). Exits on SIGTERM or SIGINT.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "bench/stop_signals.h"
#include "netpoll/net.h"
#include "runtime/runtime.h"

int main(int argc, char** argv) {
  CLI::App app{"echo_server: TCP echo on the weft runtime"};
  std::string listen_addr = "127.0.0.1:9000";
  int max_procs = 0;
  app.add_option("--listen", listen_addr, "HOST:PORT (port 0: any)")->capture_default_str();
  app.add_option("--max-procs", max_procs, "number of Ps (0: default)")->check(CLI::Range(0, 4096));
  CLI11_PARSE(app, argc, argv);

  // Stop on SIGTERM/SIGINT: the main goroutine waits for a signal in blocking().
  weft::bench::stop_signals stop;

  int rc = 0;
  weft::run([&] {
    auto [ln, err] = weft::net::listen(listen_addr);
    if (err) {
      std::fprintf(stderr, "echo_server: listen %s: %s\n", listen_addr.c_str(), err.message().c_str());
      rc = 1;
      return;
    }
    std::printf("listening on %s\n", ln.address().c_str());
    std::fflush(stdout);
    weft::go([ln]() mutable {
      for (;;) {
        auto [c, err] = ln.accept();
        if (err) return;
        weft::go([c]() mutable {
          char buf[16384];
          for (;;) {
            auto [n, err] = c.read(buf, sizeof buf);
            if (err || c.write(buf, n).err) break;
          }
          c.close();
        });
      }
    });
    stop.wait();
    ln.close();
  }, {.max_procs = max_procs});
  return rc;
}
