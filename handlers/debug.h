// The /debug endpoints and /metrics, as Go's net/http/pprof and expvar serve them, so
// that `go tool pprof`, curl and Prometheus read them unchanged.
//
//   GET  /debug/pprof/                 index: every profile with its count and a link
//   GET  /debug/pprof/cmdline          the command line, NUL-separated
//   GET  /debug/pprof/symbol           PC -> function name, for pprof (GET and POST)
//   POST /debug/pprof/symbol
//   GET  /debug/pprof/profile          CPU profile, ?seconds=N (default 30), 100 Hz
//   GET  /debug/pprof/heap             sampled heap profile (inuse_space default)
//   GET  /debug/pprof/allocs           the same samples, alloc_space default
//   GET  /debug/pprof/goroutine        ?debug=0 proto, 1 grouped text, 2 full dump
//   GET  /debug/pprof/block            blocking events (channels, select, sync waits)
//   GET  /debug/pprof/mutex            contended mutex hand-offs
//   GET  /debug/pprof/threadcreate     stacks that created runtime threads
//   GET  /debug/pprof/trace            scheduler events as Chrome Trace Event JSON,
//                                      ?seconds=N (default 1) (not Go's trace format)
//   GET  /debug/vars                   expvar-style JSON
//   GET  /metrics                      Prometheus text exposition
//
// Profiles take ?debug=N (0: gzipped profile.proto, N > 0: Go's text forms). Bad
// parameters get 400 with a plain-text reason and X-Go-Pprof: 1, which pprof prints.
// ?rate=N on block and mutex sets the sampling rate (Go's SetBlockProfileRate /
// SetMutexProfileFraction) and answers with the previous one.
//
// Access: these expose internals (stacks, names, arguments), so every route answers 403
// unless the client's address is in the allow list (default loopback only). weftd's
// debug.allow and debug.listen settings open them up.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "netpoll/address.h"
#include "server/http.h"
#include "server/serve_mux.h"

namespace weft::handlers {

struct debug_options {
  std::vector<net::ip_prefix> allow;   // clients that may use /debug and /metrics
  std::vector<std::string> cmdline;    // argv, for cmdline and /debug/vars
  std::vector<const http::server*> servers;  // connection gauges on /metrics
  const std::atomic<bool>* shutting_down = nullptr;
};

class debug_endpoints {
 public:
  explicit debug_endpoints(debug_options opts);
  // Registers every route above on mux. The object must outlive the mux's use.
  void register_routes(http::serve_mux& mux);
  // Replaces the allow list (config reload).
  void set_allow(std::vector<net::ip_prefix> allow);

 private:
  bool allowed(const http::request& r) const;
  std::string metrics_text() const;
  std::string vars_json() const;

  std::atomic<std::shared_ptr<const std::vector<net::ip_prefix>>> allow_;
  debug_options opts_;
};

}  // namespace weft::handlers
