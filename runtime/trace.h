// The execution tracer (Go's runtime/trace, rendered for Perfetto and chrome://tracing).
//
//   if (auto ec = weft::start_trace()) ...;   // fails if a trace is already recording
//   ... run the workload ...
//   std::string json = weft::stop_trace();    // Chrome Trace Event JSON
//
// What is recorded, and how it is shown (one process, "weft"):
//   - a track per P ("P 0", "P 1", ...): a "proc" slice for each stretch an M holds the P
//     (named after the M, args.m), and nested in it a slice per stretch a goroutine runs
//     ("G12", args: g, m, end = park | yield | preempt | exit | blocking, and the wait
//     reason for a park);
//   - instants on the P where it happened: GoCreate (g, parent, site: the symbolized
//     go() call), GoPark (g, reason), GoUnblock (g, by: "goroutine" with by_g, "timer",
//     "netpoll" or "thread"), GoYield, GoPreempt, GoDestroy, GoSysCall;
//   - a track per M that made blocking() calls ("M 3 blocking"): a slice per call (Go's
//     syscall events), args.g;
//   - a track for threads without a P (sysmon, threads outside the runtime).
// Every slice is a complete ("X") event; each track's events are in time order and its
// slices nest, so the viewers take the file as is. A goroutine or P already running
// when the trace starts gets a slice from the start of the trace; one still running at
// the stop is closed there.
//
// Cost. With no trace recording each hook in the scheduler is one relaxed load and a
// not-taken branch. While recording, an event is ~40 bytes written by the calling thread
// into its own buffer (no lock; a store-load handshake with stop_trace), carved from a
// pool reserved at start_trace. When the pool is used up further events are dropped
// and counted: the output's "otherData" has recorded_events, dropped_events and
// max_events, and a "trace dropped events" instant marks the end.
#pragma once

#include <cstddef>
#include <string>
#include <system_error>

namespace weft {

struct trace_options {
  // Events kept (each reserves 40 bytes of address space, committed as it is used).
  std::size_t max_events = std::size_t{1} << 18;
};

// Starts recording. Fails with std::errc::device_or_resource_busy if a trace is
// already recording (that trace goes on undisturbed), not_enough_memory if the event
// pool cannot be reserved. Callable from a goroutine or any thread, with or without
// the runtime running.
std::error_code start_trace(const trace_options& opts = {});

// Stops recording and returns the trace as Chrome Trace Event JSON (object form,
// "displayTimeUnit": "ns"). Returns an empty string if no trace is recording.
// Symbolization and rendering run on a thread stack (inside blocking() when called
// from a goroutine).
std::string stop_trace();

// Whether a trace is recording.
bool trace_running();

}  // namespace weft
