// weftd: the HTTP/1.1 task-execution server.
//
//   weftd [--config weftd.toml] [--listen HOST:PORT] [--max-procs N] [--access-log off|stdout|PATH]
//         [--log-level L] [--shutdown-grace D] [--read-header-timeout D] [--print-config]
//
// Lifecycle:
//   - configuration: defaults < --config file < WEFTD_* environment < flags
//     (config/config.h); a bad setting names its key and exits 2;
//   - SIGHUP reloads the file and the environment and swaps in what may change at run
//     time (log level, timeouts, limits, route timeouts); a reload that fails keeps the
//     old configuration and logs why;
//   - SIGTERM or SIGINT drains like Go's Server.Shutdown: /readyz turns 503, listeners
//     close, idle connections close, active requests get shutdown_grace to finish, then
//     whatever is left is cancelled and closed, and weftd exits 0. A second signal exits
//     at once (status 1);
//   - SIGQUIT dumps every goroutine and exits 2 (the runtime's).
// Signals are read from a signalfd by a goroutine, through the netpoller.
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>

#include "config/config.h"
#include "handlers/debug.h"
#include "handlers/weftd_handlers.h"
#include "netpoll/fd.h"
#include "netpoll/net.h"
#include "runtime/chan.h"
#include "runtime/wait_group.h"
#include "runtime/heap_profile.h"
#include "runtime/runtime.h"
#include "server/http.h"
#include "server/serve_mux.h"

namespace {

using namespace weft;

std::shared_ptr<spdlog::logger> make_access_log(const config::weftd_config& c) {
  if (c.access_log == "off") return nullptr;
  std::shared_ptr<spdlog::logger> l;
  if (c.access_log == "stdout")
    l = std::make_shared<spdlog::logger>("access", std::make_shared<spdlog::sinks::stdout_sink_mt>());
  else
    l = std::make_shared<spdlog::logger>("access", std::make_shared<spdlog::sinks::basic_file_sink_mt>(c.access_log));
  l->set_pattern(c.access_log_format == "json" ? "%v" : "%Y-%m-%dT%H:%M:%S.%e %v");
  l->flush_on(spdlog::level::info);
  return l;
}

http::server_options server_options_from(const config::weftd_config& c, std::shared_ptr<spdlog::logger> access) {
  http::server_options o;
  o.read_header_timeout = c.read_header_timeout;
  o.read_timeout = c.read_timeout;
  o.write_timeout = c.write_timeout;
  o.idle_timeout = c.idle_timeout;
  o.handler_timeout = c.handler_timeout;
  o.max_header_bytes = c.max_header_bytes;
  o.max_body_bytes = c.max_body_bytes;
  o.access_log = std::move(access);
  o.access_log_json = c.access_log_format == "json";
  o.error_log = spdlog::default_logger();
  return o;
}

// Applies route timeouts; an unknown pattern is an error naming it.
std::optional<config::load_error> apply_route_timeouts(http::serve_mux& mux, const config::weftd_config& c) {
  for (const auto& p : mux.patterns()) mux.set_route_timeout(p, std::nullopt);
  for (const auto& [pattern, d] : c.route_timeouts)
    if (!mux.set_route_timeout(pattern, d))
      return config::load_error{"route_timeouts.\"" + pattern + "\"", "no such route"};
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"weftd: HTTP/1.1 task-execution server on the weft runtime"};
  std::string config_file;
  bool print_config = false;
  bool reuse_port = false;
  config::flag_values flags;  // a flag left out stays unset: the file and environment decide
  app.add_option("--config", config_file, "TOML configuration file")->check(CLI::ExistingFile);
  app.add_option("--listen", flags.listen, "HOST:PORT to serve on (default 127.0.0.1:8080)");
  app.add_option("--max-procs", flags.max_procs, "number of Ps (0: WEFT_MAXPROCS, else CPUs within the cgroup quota)");
  app.add_option("--access-log", flags.access_log, "off, stdout, or a file path (default off)");
  app.add_option("--access-log-format", flags.access_log_format, "text or json (default text)");
  app.add_option("--log-level", flags.log_level, "trace, debug, info, warn, error, off (default info)");
  app.add_option("--shutdown-grace", flags.shutdown_grace, "time active requests get on SIGTERM (default 25s)");
  app.add_option("--read-header-timeout", flags.read_header_timeout, "time to read request headers (default 10s)");
  app.add_option("--idle-timeout", flags.idle_timeout, "keep-alive idle timeout (default 120s)");
  app.add_option("--handler-timeout", flags.handler_timeout, "request deadline (default 30s)");
  app.add_flag("--reuse-port", reuse_port, "SO_REUSEPORT: several weftd processes share the port");
  app.add_option("--debug-listen", flags.debug_listen, "separate HOST:PORT for /debug endpoints");
  app.add_option("--debug-allow", flags.debug_allow, "CIDRs allowed to reach /debug (default loopback)");
  app.add_option("--mem-profile-rate", flags.mem_profile_rate,
                 "heap profile: one sample per N bytes allocated, 0 off (default 524288)");
  app.add_flag("--print-config", print_config, "print the effective configuration (TOML) and exit");
  CLI11_PARSE(app, argc, argv);
  const std::vector<std::string> argv_copy(argv, argv + argc);
  if (app.count("--reuse-port")) flags.reuse_port = reuse_port;

  auto loaded = config::load(config_file, flags);
  if (loaded.err) {
    std::fprintf(stderr, "weftd: config: %s\n", loaded.err->message().c_str());
    return 2;
  }
  config::weftd_config cfg = loaded.cfg;
  if (print_config) {
    std::fputs(config::to_toml(cfg).c_str(), stdout);
    return 0;
  }

  // The operational log goes to stderr (unbuffered), as Go's log package does; the
  // access log has its own sink.
  spdlog::set_default_logger(spdlog::stderr_color_mt("weftd"));
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(cfg.log_level));
  std::shared_ptr<spdlog::logger> access;
  try {
    access = make_access_log(cfg);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "weftd: config: access_log.output: %s\n", e.what());
    return 2;
  }

  // Signals are read from a signalfd, so block them in every thread first.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  int rc = 0;
  weft::set_mem_profile_rate(static_cast<int64_t>(cfg.mem_profile_rate));
  weft::run([&] {
    std::atomic<bool> ready{false};
    http::serve_mux mux;
    handlers::register_weftd_routes(mux, &ready);
    if (auto err = apply_route_timeouts(mux, cfg)) {
      std::fprintf(stderr, "weftd: config: %s\n", err->message().c_str());
      rc = 2;
      return;
    }
    http::server srv(mux.as_handler(), server_options_from(cfg, access));

    // /debug and /metrics: on the main listener, or on debug.listen with a mux of their own.
    std::atomic<bool> shutting_down{false};
    handlers::debug_options dopts;
    net::parse_prefix_list(cfg.debug_allow, dopts.allow, nullptr);  // validated by config::load
    dopts.cmdline = argv_copy;
    dopts.shutting_down = &shutting_down;
    dopts.servers.push_back(&srv);
    http::serve_mux debug_mux;
    std::unique_ptr<http::server> debug_srv;
    if (!cfg.debug_listen.empty()) {
      debug_srv = std::make_unique<http::server>(debug_mux.as_handler(), server_options_from(cfg, access));
      dopts.servers.push_back(debug_srv.get());
    }
    handlers::debug_endpoints debug(std::move(dopts));
    debug.register_routes(debug_srv ? debug_mux : mux);

    auto [ln, lerr] = net::listen(cfg.listen, net::listen_options{.reuse_port = cfg.reuse_port});
    if (lerr) {
      spdlog::error("weftd: listen {}: {}", cfg.listen, lerr.message());
      rc = 1;
      return;
    }
    net::listener debug_ln;
    if (debug_srv) {
      auto [dl, derr] = net::listen(cfg.debug_listen);
      if (derr) {
        spdlog::error("weftd: listen {} (debug.listen): {}", cfg.debug_listen, derr.message());
        ln.close();
        rc = 1;
        return;
      }
      debug_ln = dl;
    }
    std::error_code serr;
    int sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    auto sigs = net::detail::netfd::open(sfd, serr);
    if (!sigs) {
      spdlog::error("weftd: signalfd: {}", serr.message());
      rc = 1;
      return;
    }

    wait_group serving;
    serving.add(1);
    weft::go([&srv, &serving, ln = ln]() {
      srv.serve(ln);
      serving.done();
    });
    if (debug_srv) {
      serving.add(1);
      weft::go([&debug_srv, &serving, ln = debug_ln]() {
        debug_srv->serve(ln);
        serving.done();
      });
      spdlog::info("weftd: /debug and /metrics on {}", debug_ln.address());
    }
    ready.store(true, std::memory_order_release);
    spdlog::info("weftd: serving on {} with {} procs", ln.address(), weft::max_procs());

    chan<std::monostate> drained(0);
    bool draining = false;
    for (;;) {
      signalfd_siginfo si;
      auto r = sigs->read(&si, sizeof si);
      if (r.err) break;
      int sig = static_cast<int>(si.ssi_signo);
      if (sig == SIGHUP) {
        auto next = config::load(config_file, flags);
        if (next.err) {
          spdlog::error("weftd: reload failed, keeping the current configuration: {}", next.err->message());
          continue;
        }
        if (auto err = apply_route_timeouts(mux, next.cfg)) {
          apply_route_timeouts(mux, cfg);
          spdlog::error("weftd: reload failed, keeping the current configuration: {}", err->message());
          continue;
        }
        if (cfg.needs_restart_to_become(next.cfg))
          spdlog::warn("weftd: reload: listen, max_procs, reuse_port, access_log and debug.listen need a restart; kept");
        config::weftd_config applied = cfg;
        applied.log_level = next.cfg.log_level;
        applied.shutdown_grace = next.cfg.shutdown_grace;
        applied.read_header_timeout = next.cfg.read_header_timeout;
        applied.read_timeout = next.cfg.read_timeout;
        applied.write_timeout = next.cfg.write_timeout;
        applied.idle_timeout = next.cfg.idle_timeout;
        applied.handler_timeout = next.cfg.handler_timeout;
        applied.max_header_bytes = next.cfg.max_header_bytes;
        applied.max_body_bytes = next.cfg.max_body_bytes;
        applied.route_timeouts = next.cfg.route_timeouts;
        applied.debug_allow = next.cfg.debug_allow;
        applied.mem_profile_rate = next.cfg.mem_profile_rate;
        cfg = applied;
        weft::set_mem_profile_rate(static_cast<int64_t>(cfg.mem_profile_rate));
        spdlog::set_level(spdlog::level::from_str(cfg.log_level));
        srv.set_options(server_options_from(cfg, access));  // an atomic swap, like Go's atomic.Value
        if (debug_srv) debug_srv->set_options(server_options_from(cfg, access));
        std::vector<net::ip_prefix> allow;
        net::parse_prefix_list(cfg.debug_allow, allow, nullptr);
        debug.set_allow(std::move(allow));
        spdlog::info("weftd: configuration reloaded");
        continue;
      }
      if (draining) {
        spdlog::warn("weftd: second signal: exiting now");
        std::fflush(nullptr);
        std::_Exit(1);
      }
      draining = true;
      ready.store(false, std::memory_order_release);
      shutting_down.store(true, std::memory_order_release);
      spdlog::info("weftd: {} received: draining (grace {})", strsignal(sig), config::format_duration(cfg.shutdown_grace));
      weft::go([&srv, &debug_srv, &drained, &sigs, grace = cfg.shutdown_grace] {
        wait_group both;
        if (debug_srv) {
          // The debug listener drains alongside (a running CPU profile ends with it).
          both.add(1);
          weft::go([&debug_srv, &both, grace] {
            debug_srv->shutdown(grace);
            both.done();
          });
        }
        srv.shutdown(grace);
        both.wait();
        sigs->close();  // ends the signal loop
        // Last: once drained is closed, main may return and free everything this
        // goroutine refers to (sigs too, so it must be closed before).
        drained.close();
      });
    }
    if (draining) drained.recv();
    serving.wait();
    spdlog::info("weftd: stopped");
  }, {.max_procs = cfg.max_procs});
  return rc;
}
