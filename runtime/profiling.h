// Profiling controls (Go's runtime.SetBlockProfileRate / SetMutexProfileFraction).
// The profiles themselves are served by handlers/ at /debug/pprof/{block,mutex}.
#pragma once

#include <cstdint>

namespace weft {

// Records blocking waits: on average one sample per `rate_ns` nanoseconds spent blocked
// (1: every event). 0 turns the block profile off. Returns the previous rate.
int64_t set_block_profile_rate(int64_t rate_ns);

// Records on average 1 in `fraction` contended mutex hand-offs; 0 turns it off. Returns
// the previous fraction.
int64_t set_mutex_profile_fraction(int64_t fraction);

}  // namespace weft
