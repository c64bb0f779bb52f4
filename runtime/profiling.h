// Profiling controls (Go's runtime.SetBlockProfileRate / SetMutexProfileFraction).
// The profiles themselves are served by handlers/ at /debug/pprof/{block,mutex}.
#pragma once

#include <cstdint>

#include "runtime/pprof_proto.h"

namespace weft {

// Records blocking waits: on average one sample per `rate_ns` nanoseconds spent blocked
// (1: every event). 0 turns the block profile off. Returns the previous rate.
int64_t set_block_profile_rate(int64_t rate_ns);

// Records on average 1 in `fraction` contended mutex hand-offs; 0 turns it off. Returns
// the previous fraction.
int64_t set_mutex_profile_fraction(int64_t fraction);

// The current rates (0: off).
int64_t block_profile_rate();
int64_t mutex_profile_fraction();

// The contention profiles as Go writes them: sample types contentions/count and
// delay/nanoseconds, one sample per distinct stack of the waiting goroutine, counts and
// times scaled up to estimated totals.
profile block_profile();
profile mutex_profile();

// Every goroutine's stack (Go's goroutine profile: sample type goroutine/count, one
// sample per distinct stack and label set). A goroutine running on another thread
// cannot be walked without stopping it; it is counted with the one frame of its
// creation site. Every stack ends with the creation site (the go() call), so a leak
// shows where it was started.
profile goroutine_profile();

}  // namespace weft
