// park / ready: the one primitive every blocking operation in weft is built on.
//
// A goroutine that must wait calls park(reason, commit, arg). The runtime saves the
// goroutine's state, switches away (to the scheduler stack, or straight to the goroutine
// in runnext), marks the goroutine waiting and only then runs commit(g, arg) there. commit is where the caller publishes the goroutine (puts
// it on a wait queue, arms a timer) and releases the lock that protected that decision:
// once commit has run, anyone may call ready(g), and the goroutine is already fully
// switched out, so a wakeup can never be lost or arrive "too early". If commit returns
// false the park is abandoned and the goroutine resumes at once.
//
// ready(g) makes a parked goroutine runnable. It goes to the current P's runnext slot, so
// a goroutine that wakes another hands over the rest of its time slice (Go's inheritTime),
// and an idle P is woken if nobody is spinning. Readying a goroutine that is not parked is
// a broken invariant (fatal). ready may be called from a goroutine, from the scheduler (a
// timer callback) or from a thread outside the runtime.
//
// Every park names a wait_reason. It shows up in goroutine dumps
// (`goroutine 7 [chan receive, 3 minutes]:`) and in the goroutine profile. To add one,
// see docs/HACKING.md: add the enumerator before `count_`, and its Go-style text to
// to_string() in park.cc.
#pragma once

#include <cstdint>
#include <string_view>

namespace weft {

namespace detail {
struct g;
}

enum class wait_reason : uint8_t {
  none,
  sleep,
  yield,
  preempted,
  chan_receive,
  chan_send,
  chan_receive_nil,
  chan_send_nil,
  select,
  select_no_cases,
  sync_mutex_lock,
  sync_rwmutex_rlock,
  sync_rwmutex_lock,
  sync_cond_wait,
  sync_wait_group_wait,
  semacquire,
  io_wait,
  park_test,  // used by runtime tests that park with no primitive
  count_,
};

// Go's spelling of the reason, as printed in dumps ("chan receive", "sync.Mutex.Lock").
std::string_view to_string(wait_reason r);

// The goroutine handle that park/ready trade in.
using goroutine_ref = detail::g*;

// Commit callback: runs once the goroutine is switched out, on the scheduler stack or at
// the start of the goroutine switched to. It must not call current_goroutine().
using park_commit = bool (*)(goroutine_ref g, void* arg);

// Parks the calling goroutine until ready() is called on it. Must be called from a
// goroutine. commit may be null (then somebody must already be able to find the goroutine).
void park(wait_reason reason, park_commit commit = nullptr, void* arg = nullptr);

// Makes a parked goroutine runnable.
void ready(goroutine_ref g);

// The calling goroutine, or null on a thread that is not running a goroutine.
goroutine_ref current_goroutine();

// The calling goroutine's id (Go's goid), or 0 outside goroutines.
uint64_t goroutine_id();

}  // namespace weft
