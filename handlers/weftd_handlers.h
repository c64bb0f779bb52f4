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

#include "server/serve_mux.h"

namespace weft::handlers {

void register_weftd_routes(http::serve_mux& mux, const std::atomic<bool>* ready);

// The /cpu work, exposed for tests: n rounds of xorshift64 from seed n.
uint64_t cpu_work(uint64_t n);

}  // namespace weft::handlers
