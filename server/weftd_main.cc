// weftd: the HTTP/1.1 task-execution server.
//
// The HTTP server lands with server/'s request loop; until then weftd starts the runtime,
// logs through spdlog and idles, so that `make run` exercises the whole toolchain.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>

#include "runtime/runtime.h"

int main(int argc, char** argv) {
  CLI::App app{"weftd: HTTP/1.1 task-execution server on the weft runtime"};
  std::string listen = "127.0.0.1:8080";
  int max_procs = 0;
  std::string log_level = "info";
  app.add_option("--listen", listen, "HOST:PORT to serve on")->capture_default_str();
  app.add_option("--max-procs", max_procs, "number of Ps (0: WEFT_MAXPROCS, else CPUs and cgroup quota)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error"}))
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(log_level));
  weft::run([&] {
    spdlog::info("weftd: runtime up with {} procs; the HTTP server for {} is not built yet", weft::max_procs(),
                 listen);
    for (;;) weft::sleep_for(std::chrono::hours(1));
  }, {.max_procs = max_procs});
  return 0;
}
