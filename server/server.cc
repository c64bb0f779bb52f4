// server: accepting, tracking connections, graceful shutdown (Go's Server.Serve and
// Server.Shutdown).
//
// Shutdown, in order: mark the server shutting down (responses now carry Connection:
// close and keep-alive ends), close the listeners, close every idle connection, then
// wait for the active ones to finish their request, polling the idle set again as they
// go idle, until the grace period ends. What is still running then has its request
// context cancelled and its connection closed.
#include <spdlog/spdlog.h>

#include "runtime/runtime.h"
#include "server/internal/server_impl.h"

namespace weft::http {

server::server(handler h, server_options opts) : impl_(std::make_unique<impl>()) {
  impl_->h = std::move(h);
  impl_->opts.store(std::make_shared<const server_options>(std::move(opts)));
}

server::~server() = default;

void server::set_options(server_options opts) {
  impl_->opts.store(std::make_shared<const server_options>(std::move(opts)), std::memory_order_release);
}

server_options server::options() const { return *impl_->options(); }

const server_stats& server::stats() const { return impl_->stats; }

bool server::shutting_down() const { return impl_->shutting_down.load(std::memory_order_acquire); }

std::error_code server::serve(net::listener ln) {
  {
    std::lock_guard<weft::mutex> l(impl_->mu);
    if (impl_->shutting_down.load()) return net::errc::closed;
    impl_->listeners.push_back(ln);
  }
  auto backoff = std::chrono::milliseconds(0);
  for (;;) {
    auto [c, err] = ln.accept();
    if (err) {
      if (err == net::errc::closed || impl_->shutting_down.load()) return net::errc::closed;
      // Temporary failures (accept already backs off on EMFILE): log, back off, retry,
      // as Go's Serve does.
      backoff = backoff.count() ? std::min(backoff * 2, std::chrono::milliseconds(1000)) : std::chrono::milliseconds(5);
      if (auto log = impl_->options()->error_log) log->warn("http: accept error: {}; retrying in {}ms", err.message(), backoff.count());
      weft::sleep_for(backoff);
      continue;
    }
    backoff = std::chrono::milliseconds(0);
    impl_->live_conns.add(1);
    weft::go([s = impl_.get(), c]() mutable { s->serve_conn(c); });
  }
}

void server::shutdown(std::chrono::nanoseconds grace) {
  impl* s = impl_.get();
  s->shutting_down.store(true, std::memory_order_seq_cst);
  std::vector<net::listener> lns;
  {
    std::lock_guard<weft::mutex> l(s->mu);
    lns = s->listeners;
  }
  for (auto& ln : lns) ln.close();

  // Close idle connections, again and again as active ones finish (Go polls too).
  auto close_idle = [s] {
    std::vector<detail::conn_state*> idle;
    std::lock_guard<weft::mutex> l(s->mu);
    for (auto* cs = s->conns; cs; cs = cs->next) cs->close_if_idle();
  };
  auto deadline = clock::now() + grace;
  for (;;) {
    close_idle();
    auto left = deadline - clock::now();
    if (left <= clock::duration::zero()) break;
    if (s->live_conns.wait_for(std::min<clock::duration>(left, std::chrono::milliseconds(50)))) return;
  }
  // Grace is over: cancel and close whatever is left.
  {
    std::lock_guard<weft::mutex> l(s->mu);
    for (auto* cs = s->conns; cs; cs = cs->next) cs->force();
  }
  s->live_conns.wait_for(std::chrono::seconds(2));
}

}  // namespace weft::http
