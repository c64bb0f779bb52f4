// Run queues: each P's lock-free ring plus runnext, and the global queue.
//
// The local ring has one producer (the P's owner) and many consumers (the owner and
// thieves). head and tail only grow; slots are read before the CAS on head that claims
// them, so a thief that loses the race never uses what it read (Go's runq protocol).
//
// The global queue holds pointers in a growable ring under sched.mu. Moving goroutines
// in and out copies pointers only: it never touches the G descriptors, which live one per
// stack slot and would cost a TLB miss each.
#pragma once

#include <atomic>
#include <cstdint>

#include "runtime/internal/sched.h"

namespace weft::detail {

// Local queue (owner only, except runq_grab/runq_steal/runq_empty).
// Returns true if the ring was full and half of it moved to the global queue.
bool runqput(p* pp, g* gp, bool next);
g* runqget(p* pp, bool* inherit);
g* runnext_take(p* pp);  // runnext or null, emptied (owner only)
// *handoff is set when the victim's runnext was left alone because the victim refilled
// it again and again during the grace sleep: a tight chain of synchronous hand-offs.
g* runqsteal(p* pp, p* victim, bool steal_runnext, bool* handoff);

// Global queue; sched.mu held.
void globrunq_put_locked(g* gp);
void globrunq_put_batch_locked(g* const* gs, uint32_t n);
g* globrunq_get_locked(p* pp, int32_t max);  // one to run, up to a batch onto pp's ring
void globrunq_clear_locked();

}  // namespace weft::detail
