#include "handlers/weftd_handlers.h"

#include <algorithm>
#include <charconv>
#include <string>

#include "runtime/context.h"
#include "runtime/runtime.h"

namespace weft::handlers {

uint64_t cpu_work(uint64_t n) {
  uint64_t x = n | 1;
  for (uint64_t i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if ((i & 4095) == 0) weft::preempt_check();
  }
  return x;
}

namespace {

bool parse_u64(std::string_view s, uint64_t& v) {
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return !s.empty() && ec == std::errc() && p == s.data() + s.size();
}

// The object /json serializes: a new one per request, as TechEmpower's json test asks.
struct hello_message {
  std::string_view message;
};

// {"message":<string>}, into out (room for json_max(message.size()) bytes); returns
// the length.
constexpr size_t json_max(size_t message_size) {
  return sizeof R"({"message":})" - 1 + json_string_max(message_size);
}
size_t to_json(const hello_message& m, char* out) {
  static constexpr std::string_view open = R"({"message":)";
  char* p = std::copy(open.begin(), open.end(), out);
  p = write_json_string(p, m.message);
  *p++ = '}';
  return p - out;
}

void bad_request(http::response_writer& w, std::string_view why) {
  w.write_header(400);
  w.write(std::string(why) + "\n");
}

}  // namespace

char* write_json_string(char* out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  *out++ = '"';
  for (unsigned char c : s) {
    if (c >= 0x20 && c != '"' && c != '\\') {
      *out++ = static_cast<char>(c);
      continue;
    }
    *out++ = '\\';
    switch (c) {
      case '"': *out++ = '"'; break;
      case '\\': *out++ = '\\'; break;
      case '\b': *out++ = 'b'; break;
      case '\f': *out++ = 'f'; break;
      case '\n': *out++ = 'n'; break;
      case '\r': *out++ = 'r'; break;
      case '\t': *out++ = 't'; break;
      default:
        out = std::copy_n("u00", 3, out);
        *out++ = hex[c >> 4];
        *out++ = hex[c & 15];
    }
  }
  *out++ = '"';
  return out;
}

void register_weftd_routes(http::serve_mux& mux, const std::atomic<bool>* ready) {
  mux.handle("GET /hello", [](http::response_writer& w, http::request&) {
    w.set_header("Content-Type", "text/plain");
    w.write("Hello, World!");
  });

  mux.handle("GET /json", [](http::response_writer& w, http::request&) {
    static constexpr std::string_view hello = "Hello, World!";
    hello_message m{hello};
    char buf[json_max(hello.size())];
    size_t n = to_json(m, buf);
    w.set_header("Content-Type", "application/json");
    w.write(buf, n);
  });

  mux.handle("POST /echo", [](http::response_writer& w, http::request& r) {
    std::string_view ct = r.header("Content-Type");
    w.set_header("Content-Type", ct.empty() ? "application/octet-stream" : ct);
    if (auto cl = r.content_length()) w.set_header("Content-Length", std::to_string(*cl));
    char buf[16384];
    for (;;) {
      auto [n, err] = r.read_body(buf, sizeof buf);
      if (n && w.write(buf, n)) return;
      if (err) return;  // eof, or a body error the server answers (413) if nothing went out
    }
  });

  mux.handle("GET /sleep", [](http::response_writer& w, http::request& r) {
    uint64_t ms = 0;
    if (!parse_u64(r.query("ms"), ms) || ms > 60000) return bad_request(w, "ms must be 0..60000");
    // Go's select on time.After and ctx.Done(), without the two channels.
    if (weft::sleep_for(r.ctx(), std::chrono::milliseconds(ms)))
      return;  // deadline (the server answers 503) or the client went away
    char out[32] = "slept ";
    char* e = std::to_chars(out + 6, out + sizeof out - 3, ms).ptr;
    e = std::copy_n("ms\n", 3, e);
    w.set_header("Content-Type", "text/plain");
    w.write(std::string_view(out, e - out));
  });

  mux.handle("GET /cpu", [](http::response_writer& w, http::request& r) {
    uint64_t n = 0;
    if (!parse_u64(r.query("n"), n) || n > 1'000'000'000) return bad_request(w, "n must be 0..1000000000");
    w.set_header("Content-Type", "text/plain");
    w.write(std::to_string(cpu_work(n)) + "\n");
  });

  mux.handle("GET /healthz", [](http::response_writer& w, http::request&) {
    w.set_header("Content-Type", "text/plain");
    w.write("ok\n");
  });

  mux.handle("GET /readyz", [ready](http::response_writer& w, http::request&) {
    w.set_header("Content-Type", "text/plain");
    if (ready && !ready->load(std::memory_order_acquire)) {
      w.write_header(503);
      w.write("shutting down\n");
      return;
    }
    w.write("ready\n");
  });
}

}  // namespace weft::handlers
