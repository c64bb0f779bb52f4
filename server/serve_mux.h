// serve_mux: request routing with Go 1.22's ServeMux patterns.
//
//   [METHOD ][HOST]/PATH
//
//   "GET /tasks/{id}"       GET (and HEAD) of /tasks/<one segment>; r.path_value("id")
//   "/files/{path...}"      any method, /files/ and everything below it
//   "/static/"              the same without a name: a trailing slash means a subtree
//   "/exact/{$}"            only /exact/ itself
//   "example.com/"          only requests for that host
//
// The most specific matching pattern wins: a literal segment beats {name}, which beats
// {name...} or a subtree; a pattern with a method beats one without. Registering two
// patterns that could both match some request with neither more specific is an error
// (std::invalid_argument at handle()), as is a duplicate. For compatibility, as in Go, a
// pattern with a host wins over one without, whatever their paths.
//
// Requests that match a path only with other methods get 405 with an Allow header. A
// path that is not clean (//, /./, /../) is redirected (301) to its clean form; a path
// whose subtree pattern exists only with a trailing slash is redirected to it. Anything
// else is 404.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "server/http.h"
#include "runtime/labels.h"
#include "server/metrics.h"

namespace weft::http {

struct route_options {
  // The request's deadline is shortened to this (from when the route is chosen).
  std::optional<std::chrono::nanoseconds> timeout;
};

class serve_mux {
 public:
  void handle(std::string_view pattern, handler h, route_options opts = {});
  // Changes the timeout of a registered pattern (config reload). False if unknown.
  bool set_route_timeout(std::string_view pattern, std::optional<std::chrono::nanoseconds> timeout);
  // Dispatches r; usable as the server's handler through handler().
  void serve(response_writer& w, request& r) const;
  handler as_handler() const {
    return [this](response_writer& w, request& r) { serve(w, r); };
  }
  std::vector<std::string> patterns() const;

  struct segment {
    enum kind_t { literal, wild, multi } kind;
    std::string text;  // literal text, or the wildcard's name
  };
  struct route {
    std::string pattern;
    std::string method;  // "" for any
    std::string host;    // "" for any
    std::vector<segment> segs;
    handler h;
    std::atomic<int64_t> timeout_ns{-1};  // -1: none; changed by config reloads
    std::unique_ptr<route_metrics> metrics;  // label route="<pattern>" on /metrics
    weft::detail::label_ref labels;          // pprof label route=<pattern> while it runs
  };

 private:
  struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  void index_routes();
  // The route r matches, its path values set on r; or null once it has answered r
  // itself (400, a redirect, 405, 404). Out of line: its frame (the path's segments,
  // the Allow list) is gone before the handler runs on the goroutine's stack.
  [[gnu::noinline]] const route* route_for(response_writer& w, request& r) const;

  std::vector<std::unique_ptr<route>> routes_;
  // Routing candidates by the request path's first segment: the routes whose first
  // segment is that literal, plus those that match any first segment (any_first_), in
  // registration order. Most requests then look at one or two routes, not all of them.
  std::unordered_map<std::string, std::vector<const route*>, string_hash, std::equal_to<>> by_first_;
  std::vector<const route*> any_first_;
  // Routes whose path is all literal segments and clean, and that name no host, by
  // that path. A request for exactly such a path takes its route from here by one
  // lookup: a literal path is more specific than any wildcard pattern that also matches
  // it, and a pattern that beat it on method instead would have conflicted at handle().
  // Not used while any route names a host (a host beats every path).
  std::unordered_map<std::string, std::vector<const route*>, string_hash, std::equal_to<>> exact_;
  bool any_host_ = false;
};

// Go's path.Clean for URL paths (keeps a trailing slash).
std::string clean_path(std::string_view p);

// Helper handlers, as net/http ships them.
handler not_found_handler();
handler redirect_handler(std::string url, int code);
// Serves files under `root`: directories through index.html (else 403), Range (one
// range), If-Modified-Since, Last-Modified, Content-Type by extension. File I/O runs
// in blocking().
handler file_server(std::string root);
handler strip_prefix(std::string prefix, handler h);
// Limits the request body to n bytes (reading more fails; the server answers 413).
handler max_bytes_handler(handler h, uint64_t n);
// Gives the handler at most d: its context is cancelled then and, if it has written
// nothing, the client gets 503 (the server does it, as Go's TimeoutHandler).
handler timeout_handler(handler h, std::chrono::nanoseconds d);

}  // namespace weft::http
