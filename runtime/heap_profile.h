// The sampled heap profiler behind /debug/pprof/heap and /debug/pprof/allocs (Go's
// runtime.MemProfile and MemProfileRate).
//
// What is covered. weft replaces the global operator new / operator delete family (every
// replaceable form: plain, array, nothrow, sized, aligned, aligned+sized, aligned+nothrow)
// and allocates with malloc / posix_memalign underneath. These are weft's "own allocation
// hooks". Memory that C code gets from malloc directly (libc, zlib, libdw, llhttp) is not
// seen:
//   - glibc removed __malloc_hook and friends in 2.34, so there is no supported way to
//     observe malloc from inside the process short of replacing it;
//   - interposing malloc/free/realloc/memalign ourselves fights the sanitizers, whose
//     runtimes intercept exactly those symbols (and would make us a malloc
//     implementation, with dlsym(RTLD_NEXT) bootstrapping and all).
// The alternative was gperftools' tcmalloc sampler (MallocExtension::GetHeapSample): it
// covers malloc too, but gives only in-use samples (the cumulative allocs profile needs
// its heavyweight heap profiler, which intercepts every allocation), replaces the
// allocator of the whole process and is a new dependency. C++ code in weft allocates
// through operator new almost everywhere, so the hooks see what matters.
//
// Linking. The hooks live in weft_runtime, a static library: an archive member is only
// linked when something references it, and a replacement operator new that is not linked
// silently does nothing. runtime/CMakeLists.txt therefore passes
// `-Wl,--undefined=weft_heap_profile_link_anchor` to every binary that links
// weft_runtime, which always pulls this object file in (tests/runtime/heap_profile_test.cc
// checks it with a program that references nothing here).
//
// Sampling, as Go's MemProfileRate: on average one sample every `rate` bytes allocated.
// Each thread counts down bytes to its next sample; the countdown is drawn from an
// exponential distribution with mean `rate`, so an object of s bytes is sampled with
// probability 1 - exp(-s / rate). The unsampled path costs a thread-local decrement and
// compare. A sample records the allocating stack (frame pointers, up to 64 frames) and
// the size; delete finds out whether a pointer was sampled with one load from a fixed
// counting filter, and takes a lock only on a hit. Profiles report estimated totals:
// each stack's counts are divided by the probability of sampling an object of its
// average size (Go's scaleHeapSample).
//
// Sanitizers: ASan and TSan provide their own operator new; the definition in the program
// takes precedence over theirs (checked by the tests under both), and our malloc/free
// calls go through their interceptors as usual. What is lost is ASan's
// new-delete-type-mismatch and alloc-dealloc-mismatch checks for operator new/delete.
#pragma once

#include <cstdint>

#include "runtime/pprof_proto.h"

namespace weft {

inline constexpr int64_t kDefaultMemProfileRate = 512 * 1024;

// Sets the sampling rate in bytes and returns the previous one. 0 turns sampling off, 1
// samples every allocation; negative values are taken as 0. Samples already taken are
// kept, and profiles are scaled with the rate in force when they are read (as Go does),
// so change it once, early, or accept estimates that mix rates.
int64_t set_mem_profile_rate(int64_t bytes);
int64_t mem_profile_rate();

// The heap profile as Go writes it: sample types alloc_objects/count, alloc_space/bytes,
// inuse_objects/count, inuse_space/bytes (the last, inuse_space, is pprof's default);
// period_type space/bytes, period = the current rate; one sample per allocating stack
// with unsampled (estimated) values and a numeric label "bytes" (unit "bytes") holding the
// average object size. Stacks are return addresses, innermost first, starting at the
// caller of operator new.
profile heap_profile();

// The same data for /debug/pprof/allocs: default_sample_type "alloc_space".
profile allocs_profile();

// Totals over the whole profile, for /metrics and /debug/vars. All four are estimates
// from the samples (the same numbers pprof's totals show); they cover operator new only.
struct heap_stats {
  int64_t inuse_bytes = 0;
  int64_t inuse_objects = 0;
  int64_t alloc_bytes = 0;    // cumulative since start
  int64_t alloc_objects = 0;  // cumulative since start
  int64_t sample_rate = 0;    // the rate used for the estimates
};
heap_stats read_heap_stats();

}  // namespace weft

namespace weft::detail {

// Tests only: forgets every sample (live pointers are no longer tracked; their deletes
// become unsampled). Not safe against concurrent allocation; set the rate to 0 first.
void reset_heap_profile();

// Tests only: reseeds the calling thread's sampler and restarts its countdown, so that a
// test allocating on one thread sees the same samples every run.
void seed_heap_sampler(uint64_t seed);

// Tests only: the raw bookkeeping. live_entries is the number of sampled pointers that
// are tracked; sampled_inuse the sum over stacks of sampled allocations minus sampled
// frees. They are equal whenever no new/delete is in flight.
struct heap_profile_counts {
  int64_t live_entries = 0;
  int64_t sampled_inuse = 0;
  int64_t buckets = 0;
};
heap_profile_counts heap_profile_debug_counts();

}  // namespace weft::detail

// Referenced by the linker flag above; does nothing.
extern "C" void weft_heap_profile_link_anchor();
