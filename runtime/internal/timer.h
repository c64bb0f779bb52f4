// Runtime timers: per-P 4-ary heaps, as in Go's time.go.
//
// A timer sits in at most one P's heap (`owner`). Adding puts it in the heap of the P
// the caller runs on; the heap's earliest deadline is published in `first_when`, which
// the scheduler reads without the lock to decide how long the poller may block and
// whether another P's timers are due (idle Ps' timers are run by whichever M is looking
// for work, in steal order).
//
// Callbacks run on a scheduler stack with a P held and no runtime lock held; they must
// not block. They may ready goroutines and spawn new ones.
//
// Protocol and Go's return values:
//   - `mu` serializes add/stop/reset of one timer; `owner` and `idx` change only under the
//     owner heap's lock.
//   - The runner pops a due timer under the heap lock (owner becomes null) and calls f
//     after unlocking. stop() that finds the timer out of every heap returns false: it
//     already fired or was stopped (Go: "Stop returns false if the timer has already
//     expired or been stopped"). reset() returns whether the timer was pending.
//   - Once popped, the runner does not touch the timer again except through f and the
//     `running` count around it (only for `sync` timers). An owner that frees a timer
//     must know f has finished: timer_stop_sync waits for that. Sleep's timer is not
//     sync: it lives on the sleeping goroutine's stack, and once f readies the goroutine
//     the frame may be gone; it is only popped, never stopped, so it needs no wait.
//   - A periodic timer is pushed back (when += period) before its f runs, so stop()
//     always finds it pending and a stopped ticker never fires again.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "runtime/internal/lock.h"

namespace weft::detail {

struct p;

struct timer {
  // seq: the value the timer was armed with (timer_add/timer_reset), so that a firing
  // that raced a re-arming can tell it is stale.
  using callback = void (*)(timer* t, void* arg, uintptr_t seq);

  timer() = default;
  timer(callback fn, void* a) : f(fn), arg(a) {}

  int64_t when = 0;     // nanotime deadline; guarded by the owner heap's lock
  // The heap orders timers by key, which is `when` as of the last heap insertion or
  // re-sort: a reset that moves a pending deadline later only raises `when` (Go's
  // timerModifiedLater). key <= when while pending; a timer whose key comes due
  // while key != when is re-sorted by its deadline before it may fire (check_timers).
  // The heap entry holds a copy for sifting; this one is read beside `when` on resets.
  int64_t key = 0;
  int64_t period = 0;   // > 0: re-armed every period (before f runs), as a ticker
  uintptr_t seq = 0;    // passed to f; set when armed (owner heap's lock)
  callback f = nullptr;
  void* arg = nullptr;
  callback drop = nullptr;  // called instead of f if the runtime shuts down first
  std::atomic<p*> owner{nullptr};
  int32_t idx = -1;     // position in the owner heap
  bool sync = false;    // counts callbacks in `running`; required for timer_stop_sync
  std::atomic<int32_t> running{0};  // callbacks in progress (only when sync)
  lock mu;
};

struct timer_heap {
  // Each entry carries its timer's key, so that sifting compares within this array and
  // touches a timer only to record its new position: with thousands of timers (one
  // per connection and request) reading each candidate's key from the timer itself was
  // a cache miss per comparison (Go's timers keep `when` beside the pointer too).
  struct entry {
    int64_t key;
    timer* t;
  };
  lock mu;
  std::vector<entry> heap;             // guarded by mu
  std::atomic<int64_t> first_when{0};  // earliest key (<= earliest deadline), 0 when empty

  void push_locked(timer* t);
  void remove_locked(timer* t);
  timer* pop_locked();
  // heap[0]'s when has grown: restores the heap order.
  void reschedule_head_locked();
  void publish_locked() {
    first_when.store(heap.empty() ? 0 : heap[0].key, std::memory_order_release);
  }
};

// Arms t to fire at `when` (nanotime) on the current P (or P 0 outside the scheduler).
// t must not be pending.
void timer_add(timer* t, int64_t when, uintptr_t seq = 0);
// Arms a timer no other thread can see yet, without taking t->mu. Once it returns, t
// may already have fired (and its owner freed it): the caller must not touch t again.
void timer_add_private(timer* t, int64_t when);
// Disarms t. Returns true if it was pending.
bool timer_stop(timer* t);
// Re-arms t for `when`, pending or not. Returns true if it was pending. Moving a
// pending one-shot timer later costs no heap operation.
bool timer_reset(timer* t, int64_t when, uintptr_t seq = 0);
// timer_stop, then waits until no callback of t is running: afterwards f will not touch
// its argument again and t may be freed. Needs t->sync (set before first arming). Not
// from inside t's own callback.
bool timer_stop_sync(timer* t);

// Timers armed across all Ps (tests: nothing must accumulate).
int64_t timers_pending();

// Runs the due timers of pp. Returns the next deadline (0: none); *ran tells whether any
// fired. `now` 0 means "read the clock if needed".
int64_t check_timers(p* pp, int64_t& now, bool* ran);

}  // namespace weft::detail
