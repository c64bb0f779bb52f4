// The routes weftd serves besides /debug (handlers/debug.h).
//
//   GET  /hello        "Hello, World!" (13 bytes, text/plain)
//   GET  /json         {"message":"Hello, World!"}, serialized per request
//   POST /echo         the request body, streamed back
//   GET  /sleep?ms=N   waits N ms (0..60000) on a timer, or until the request's context
//                      ends (deadline, client gone): 200, or 503 from the deadline
//   GET  /cpu?n=N      N rounds of xorshift64 from seed N (identical to the Go peer):
//                      deterministic CPU work; answers the final value in decimal
//   GET  /healthz      200 while the process runs
//   GET  /readyz       200, or 503 once a shutdown has begun
#pragma once

#include <atomic>
#include <cstddef>
#include <string_view>

#include "server/serve_mux.h"

namespace weft::handlers {

void register_weftd_routes(http::serve_mux& mux, const std::atomic<bool>* ready);

// The /cpu work, exposed for tests: n rounds of xorshift64 from seed n.
uint64_t cpu_work(uint64_t n);

// Writes s to out as a JSON string literal, quotes included, escaped as RFC 8259 asks
// (quote, backslash and the control characters; other bytes pass through, as nlohmann's
// dump() passes UTF-8). out must have room for json_string_max(s.size()) bytes. Returns
// the end of what was written. /json serializes its message with this, into a buffer
// on the stack, instead of building an nlohmann object and dumping it (eight
// allocations a request).
constexpr size_t json_string_max(size_t n) { return 2 + 6 * n; }
char* write_json_string(char* out, std::string_view s);

}  // namespace weft::handlers
