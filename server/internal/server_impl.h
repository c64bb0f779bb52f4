// The server's shared state (server.cc) and the per-connection loop (conn.cc).
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "runtime/internal/lock.h"
#include "runtime/mutex.h"
#include "runtime/wait_group.h"
#include "server/http.h"

namespace weft::http {

namespace detail {
struct conn_state;
}

struct server::impl {
  handler h;
  std::atomic<std::shared_ptr<const server_options>> opts;
  server_stats stats;

  weft::mutex mu;                              // guards listeners and conns
  std::vector<net::listener> listeners;
  detail::conn_state* conns = nullptr;         // intrusive list of live connections
  std::atomic<bool> shutting_down{false};
  wait_group live_conns;                       // one per live connection (goroutine or shed)

  std::shared_ptr<const server_options> options() const { return opts.load(std::memory_order_acquire); }
  void serve_conn(net::conn c);                // conn.cc: serves it; uncounts live_conns at the end
};

namespace detail {

// Test seam: called by a connection being shed, between arming its readable watch and
// idle timer and handing itself over, so that tests can make wakeups land in between.
extern std::atomic<void (*)()> shed_arming_hook;

enum class conn_phase : int { fresh, idle, active, closing };

// Connection bookkeeping the server can see (the rest is local to the loop in conn.cc).
struct conn_state {
  server::impl* srv = nullptr;
  net::conn c;
  conn_state* prev = nullptr;  // srv->conns list (srv->mu)
  conn_state* next = nullptr;
  weft::detail::spinlock phase_mu;
  conn_phase phase = conn_phase::fresh;  // phase_mu
  // Set by shutdown after the grace period: cancels the request in progress.
  std::atomic<bool> force_close{false};
  void (*cancel_current)(void*) = nullptr;  // phase_mu
  void* cancel_arg = nullptr;

  // Marks the connection active when a request starts. False if shutdown already
  // closed it as idle.
  bool begin_request();
  void end_request();  // back to idle
  // Shutdown: closes it if idle (or never used). True if it did.
  bool close_if_idle();
  // Shutdown after the grace period: cancel the current request and close.
  void force();
};

}  // namespace detail
}  // namespace weft::http
