// Profiles in the shape `go tool pprof` reads: the in-memory form every profiler in the
// runtime produces (CPU, heap, goroutine, block, mutex, threadcreate), its encoding as
// gzipped profile.proto (github.com/google/pprof proto/profile.proto), and Go's legacy
// text forms (the `debug=1` pages of /debug/pprof).
//
// A profile is a list of samples. Each sample is a stack of program counters (innermost
// first) with one value per sample type and optional labels. The encoder symbolizes the
// PCs itself (names, files, lines, inlined frames) and emits one mapping for the
// executable with its GNU build id and has_functions set, so pprof never needs the binary
// or the /symbol endpoint for our own profiles.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace weft {

struct profile_value_type {
  std::string type;  // e.g. "cpu", "inuse_space", "goroutine"
  std::string unit;  // e.g. "nanoseconds", "bytes", "count"
};

struct profile_label {
  std::string key;
  std::string str;       // string label (when num_unit is empty and str is not)
  int64_t num = 0;       // numeric label (Go's heap profile: key "bytes")
  std::string num_unit;  // "" or e.g. "bytes"
  bool is_num = false;
};

struct profile_sample {
  // Innermost first. Return addresses (the encoder looks up pc - 1 for the line of the
  // call), except stack[0] when profile::leaf_exact is set.
  std::vector<uintptr_t> stack;
  std::vector<int64_t> values;  // exactly one per profile::sample_types entry
  std::vector<profile_label> labels;
};

struct profile {
  std::vector<profile_value_type> sample_types;
  profile_value_type period_type;
  int64_t period = 0;
  int64_t time_nanos = 0;      // wall clock (unix ns) when collection started
  int64_t duration_nanos = 0;  // 0 for instantaneous profiles
  std::string default_sample_type;
  bool leaf_exact = false;     // CPU samples: stack[0] is the interrupted PC itself
  std::vector<profile_sample> samples;
  std::vector<std::string> comments;
};

// profile.proto, gzip-compressed. Throws std::invalid_argument when a sample's value
// count does not match sample_types (pprof would reject the profile). This and the text
// formatters below symbolize (libdw) and compress: called on a goroutine, they move to
// the thread stack through blocking().
std::string encode_pprof(const profile& p);
//
// Mappings: every executable, file-backed region of /proc/self/maps (the executable
// first), with the GNU build id of the loaded object; has_functions/has_filenames/
// has_line_numbers/has_inline_frames are set on a mapping only when locations fall in it
// and all of them were symbolized that far. Locations are deduplicated by looked-up
// address (pc - 1 for return addresses) and keep that address; a PC that no symbol
// covers gets a Location with its address only. String labels are those with is_num
// false, an empty num_unit and (str non-empty or num zero); the others are numeric.
//
// All four functions symbolize with libdw (deep stacks, a lock, file reads): from a
// goroutine call them inside weft::blocking().

// Go's debug=1 text forms (runtime/pprof's printCountProfile, writeHeapInternal and
// writeProfileInternal), which `go tool pprof` also parses:
//   count profiles (goroutine, threadcreate): "<name> profile: total N", then one group
//     per distinct stack (and label set) with its count, "# labels: {...}" and frames;
//   heap: "heap profile: ..." records, values from the four heap sample types;
//   contention (block, mutex): "--- contention:" / "--- mutex:" with cycles/second.
std::string format_count_profile_text(std::string_view name, const profile& p);
std::string format_heap_profile_text(const profile& p, int64_t sample_rate);
std::string format_contention_profile_text(std::string_view name, const profile& p, int64_t sampling_period);
//
// The text forms take the same profile the encoder gets and print what Go prints:
//   - frame lines are aligned as Go's text/tabwriter aligns them; "# labels:" shows the
//     string labels only; a count group's count is the sum of its samples' values[0].
//   - heap: values are looked up by type name (alloc_objects, alloc_space,
//     inuse_objects, inuse_space; else by position) and, as in Go's proto, are unsampled
//     estimates (Go's scaleHeapSample at sample_rate). The text prints sampled records,
//     as Go does, chosen so that pprof, scaling them back with the header's rate, gets
//     exactly the profile's values; the "bytes" label (average size) helps find them.
//     Records are sorted by in-use bytes. No "# runtime.MemStats" block: callers may
//     append one.
//   - contention: name "block" (or "contention") prints "--- contention:", "mutex"
//     prints "--- mutex:" and "sampling period=<sampling_period>". Values are looked up
//     as contentions/count and delay/nanoseconds. Delays are printed as cycles with
//     cycles/second=1000000000, so cycles are nanoseconds; for mutex the values (already
//     multiplied by the sampling period, as in the proto) are divided by it, since pprof
//     multiplies them again. Records are sorted by delay.

}  // namespace weft
