// weftd: the HTTP/1.1 task-execution server. For now it starts the runtime and logs;
// the HTTP server lands with the server/ package.
#include <spdlog/spdlog.h>

#include <chrono>
#include <csignal>

#include "runtime/runtime.h"

int main() {
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  weft::run([] {
    spdlog::info("weftd starting: {} procs, runtime up (HTTP server not built yet)", weft::max_procs());
    for (;;) weft::sleep_for(std::chrono::hours(1));
  });
  return 0;
}
