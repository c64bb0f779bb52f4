// The G registry (allgs) and the cache of dead Gs.
//
// A dead G keeps its stack, whose top pages are already committed, so the next spawn
// costs no page fault and no system call. Dead Gs of the default stack class are cached
// per P in chains of up to kGBatch; a full chain moves to the global cache as one unit
// (O(1), no G touched), and a P with none takes a whole chain back. Nothing on these paths
// returns memory to the kernel: sysmon's scavenger frees chains that sat unused in the
// global cache for a whole scavenge period (Go frees stacks only at GC, for the same
// reason). Gs with a non-default stack size are not cached.
#pragma once

#include <cstdint>

#include "runtime/internal/sched.h"

namespace weft::detail {

inline constexpr int32_t kGBatch = 32;

g* new_g(std::size_t size_class);    // fresh G on a fresh stack slot, registered in allgs
void free_g(g* gp);                   // unregisters it and returns the slot (madvise)
void gfput(p* pp, g* gp);             // caches a dead G (pp may be null)
g* gfget(p* pp);                      // a cached dead G of the default class, or null
// sysmon: frees chains idle for a period. Returns when it next has work (chains above
// the floor stay cached), or 0.
int64_t gcache_scavenge(int64_t now);
void gcache_flush_p(p* pp);           // moves pp's cache to the global cache
void gcache_release_all();            // frees every cached G (end of run())
int64_t gcache_size();                // cached Gs (global + per P), for tests

}  // namespace weft::detail
