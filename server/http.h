// weft::http: an HTTP/1.1 server on goroutines, in the shape of Go's net/http.
//
//   weft::http::serve_mux mux;
//   mux.handle("GET /hello/{name}", [](weft::http::response_writer& w, weft::http::request& r) {
//     w.set_header("Content-Type", "text/plain");
//     w.write("hello, " + std::string(r.path_value("name")));
//   });
//   weft::http::server srv(mux.handler(), {});
//   srv.serve(listener);                      // returns when the listener closes
//
// Every connection is served by one goroutine, which reads its requests in order
// (pipelined ones included), parses them with llhttp in strict mode and runs the handler
// in place. Each request has a context (req.ctx()) whose deadline is the smallest of the
// server's handler timeout, the route's timeout and the client's Request-Timeout header;
// it is cancelled when the deadline passes or the client disconnects. A handler still
// running at its deadline has its context cancelled, and if it has written nothing the
// client gets 503 at once, as with Go's TimeoutHandler.
//
// Where net/http has no limits by default, this server has safe ones (server_options):
// read-header timeout 10 s, idle timeout 120 s, 1 MiB of headers (431 beyond), a body
// limit (413 beyond). Bad input gets the status Go gives (400, 417, 431, 501, 505) and,
// where the connection cannot be trusted any more, Connection: close. An exception from
// a handler is logged with its route and goroutine; the client gets 500 if nothing was
// written yet, else the connection is closed. The server keeps serving.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "netpoll/net.h"
#include "runtime/context.h"
#include "server/metrics.h"

namespace spdlog {
class logger;
}

namespace weft::http {

class route_metrics;  // server/metrics.h

using clock = std::chrono::steady_clock;

struct header_field {
  std::string name;
  std::string value;
};

// Case-insensitive ASCII comparison of header names.
bool iequals(std::string_view a, std::string_view b);

// Header lists keep insertion order; lookups are case-insensitive.
//
// The first n_ entries of f_ are the list; the ones after are spares whose strings keep
// their capacity. add() assigns into a spare, and del() swaps removed fields past n_, so
// a list handed from request to request (conn_loop) stops allocating once it has seen a
// request's headers: values longer than the string's inline 15 bytes (a User-Agent, an
// Accept, "application/json") cost an allocation each otherwise.
namespace detail {
struct conn_loop;
}  // namespace detail

class headers {
 public:
  headers() = default;
  // A copy takes the live fields only; a moved-from list is empty.
  headers(const headers& o) : f_(o.f_.begin(), o.f_.begin() + static_cast<std::ptrdiff_t>(o.n_)), n_(o.n_) {}
  headers(headers&& o) noexcept : f_(std::move(o.f_)), n_(std::exchange(o.n_, 0)) {}
  headers& operator=(const headers& o) {
    if (this != &o) *this = headers(o);
    return *this;
  }
  headers& operator=(headers&& o) noexcept {
    f_ = std::move(o.f_);
    o.f_.clear();
    n_ = std::exchange(o.n_, 0);
    return *this;
  }

  std::string_view get(std::string_view name) const;  // first value, "" if absent
  bool has(std::string_view name) const;
  void set(std::string_view name, std::string_view value);  // replaces every value
  void add(std::string_view name, std::string_view value);
  void del(std::string_view name);
  std::span<const header_field> fields() const { return {f_.data(), n_}; }
  void clear() { n_ = 0; }

 private:
  friend struct detail::conn_loop;  // hands one list's storage from request to request
  const header_field* find(std::string_view name) const;  // first live match
  std::vector<header_field> f_;
  std::size_t n_ = 0;
};

std::string_view status_text(int code);

namespace detail {
struct conn_state;
struct conn_loop;
struct request_state;
}  // namespace detail

class request {
 public:
  request() = default;
  // Not copied or moved: pattern() may view pattern_owned_, and handlers get a reference.
  request(const request&) = delete;
  request& operator=(const request&) = delete;

  std::string_view method() const { return method_; }
  // The request target as sent ("/a/b?x=1", "*", or an absolute URL).
  std::string_view target() const { return target_; }
  std::string_view path() const { return path_; }         // decoded target path
  std::string_view raw_query() const { return query_; }
  std::string query(std::string_view key) const;           // first value, decoded
  std::string_view host() const { return host_; }
  int proto_major() const { return major_; }
  int proto_minor() const { return minor_; }
  const http::headers& headers() const { return headers_; }
  std::string_view header(std::string_view name) const { return headers_.get(name); }
  std::optional<uint64_t> content_length() const { return content_length_; }
  std::string_view remote_address() const;

  // The request's context: its deadline, cancelled when the client disconnects. Made on
  // first use (a handler that never asks pays nothing for it).
  const context& ctx();

  // The body, streamed: reads as it arrives (chunked or Content-Length). Expect:
  // 100-continue is answered on the first read. Ends with net::errc::eof. Over the body
  // limit it fails with errc::body_too_large (the server then answers 413 if nothing was
  // written).
  net::io_result read_body(void* buf, std::size_t n);
  // The whole body (up to the server's body limit).
  std::pair<std::string, std::error_code> read_all_body();

  // Wildcard values of the matched serve_mux pattern ("{id}", "{rest...}").
  std::string_view path_value(std::string_view name) const;
  void set_path_value(std::string name, std::string value);
  // The serve_mux pattern that matched ("" if none): for logs, metrics and profiles.
  std::string_view pattern() const { return pattern_; }
  void set_pattern(std::string p) {
    pattern_owned_ = std::move(p);
    pattern_ = pattern_owned_;
  }
  // Where this request is counted on /metrics (set with the pattern; null: "unmatched").
  route_metrics* metrics() const { return metrics_; }
  void set_route_metrics(route_metrics* m) { metrics_ = m; }
  // Moves the deadline earlier (never later): per-route timeouts.
  void shorten_deadline(clock::time_point t);
  // Moves the deadline later, for handlers that stream for a long time by design (the
  // CPU profile: Go's ResponseController.SetWriteDeadline). False once ctx() has been
  // called: a context's deadline never moves later.
  bool extend_deadline(clock::time_point t);
  // Lowers the body limit for this request (never raises it): max_bytes_handler.
  void set_body_limit(uint64_t n);
  void set_path(std::string p) { path_ = std::move(p); }

 private:
  friend struct detail::conn_loop;
  friend struct detail::request_state;
  friend class serve_mux;  // points pattern_ at the matched route's (no copy per request)
  std::string method_, target_, path_, query_, host_;
  std::string_view pattern_;
  std::string pattern_owned_;
  route_metrics* metrics_ = nullptr;
  int major_ = 1, minor_ = 1;
  http::headers headers_;
  std::optional<uint64_t> content_length_;
  std::vector<std::pair<std::string, std::string>> path_values_;
  detail::request_state* st_ = nullptr;
};

class response_writer {
 public:
  http::headers& header() { return headers_; }
  void set_header(std::string_view name, std::string_view value) { headers_.set(name, value); }
  // Sends the status line and headers (once; later calls are ignored, as in Go).
  void write_header(int status);
  // Writes body bytes (write_header(200) first if needed). Fails once the client is
  // gone, the write deadline passed, or the handler's deadline sent a 503.
  std::error_code write(std::string_view data);
  std::error_code write(const void* data, std::size_t n) { return write(std::string_view(static_cast<const char*>(data), n)); }
  // Pushes what is buffered to the client (chunked encoding if no Content-Length).
  std::error_code flush();

  int status() const { return status_; }
  bool wrote_header() const { return wrote_header_; }
  uint64_t bytes_written() const { return body_bytes_; }

 private:
  friend struct detail::conn_loop;
  friend struct detail::request_state;
  http::headers headers_;
  int status_ = 0;
  bool wrote_header_ = false;
  uint64_t body_bytes_ = 0;
  detail::request_state* st_ = nullptr;
};

using handler = std::function<void(response_writer&, request&)>;

enum class errc { body_too_large = 1, handler_timeout, header_too_large };
const std::error_category& http_category();
inline std::error_code make_error_code(errc e) { return {static_cast<int>(e), http_category()}; }

struct server_options {
  std::chrono::nanoseconds read_header_timeout = std::chrono::seconds(10);
  std::chrono::nanoseconds read_timeout{0};    // whole request incl. body; 0: none
  std::chrono::nanoseconds write_timeout{0};   // from the end of the headers; 0: none
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(120);
  std::chrono::nanoseconds handler_timeout = std::chrono::seconds(30);
  std::size_t max_header_bytes = 1 << 20;
  uint64_t max_body_bytes = 32ull << 20;
  std::string server_name = "weftd";
  std::shared_ptr<spdlog::logger> access_log;  // null: no access log
  bool access_log_json = false;
  std::shared_ptr<spdlog::logger> error_log;   // handler exceptions, protocol errors
};

// Counted per thread stripe (server/metrics.h): every request updates them.
struct server_stats {
  striped_counter requests;
  striped_counter open_conns;
  striped_counter active_conns;
};

class server {
 public:
  server(handler h, server_options opts);
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Accepts and serves connections until the listener is closed (by shutdown()).
  // Returns errc::closed (net) after a shutdown.
  std::error_code serve(net::listener ln);

  // Go's Server.Shutdown: stop accepting, close idle connections, wait for active ones
  // until `grace` passes, then cancel the contexts of what is left and close it. Returns
  // when every connection goroutine has finished.
  void shutdown(std::chrono::nanoseconds grace);
  bool shutting_down() const;

  // Replaces the options that may change at run time (timeouts, limits, logs).
  void set_options(server_options opts);
  server_options options() const;

  const server_stats& stats() const;

  struct impl;  // server/internal/server_impl.h

 private:
  std::unique_ptr<impl> impl_;
};

}  // namespace weft::http

template <>
struct std::is_error_code_enum<weft::http::errc> : std::true_type {};
