// poll_desc: the per-descriptor state goroutines park on (Go's pollDesc).
//
// Each direction (read, write) has a semaphore word, rg or wg, in one of four states:
//
//   kReady   an I/O readiness notification is pending: the next wait consumes it
//            (ready -> nil) and returns at once.
//   kWait    a goroutine is preparing to park but has not parked yet. It commits by
//            swapping in its G pointer (in park's commit callback, after it is switched
//            out); if readiness arrives first the word becomes kReady, if a timeout or
//            close arrives first it becomes kNil, and the commit fails, so the goroutine
//            does not park.
//   G ptr    the goroutine is parked. Readiness (-> kReady) or a timeout/close (-> kNil)
//            swaps it out and readies the goroutine.
//   kNil     none of the above.
//
// All transitions are CASes on the word, so readiness, deadlines and close race safely
// with a parking goroutine, and no notification is lost: readiness that arrives while
// nobody waits is remembered as kReady (the poller is edge-triggered: it will not tell
// us again).
//
// Deadlines (set_deadline) arm runtime timers; a deadline in the past fails waits at
// once. Each change bumps the direction's sequence number, and a timer that fires with
// an old sequence number does nothing, so clearing a deadline leaves its timer armed
// (stale) and extending one only re-dates it: the hot path takes no timer out of the
// heap. close() marks the descriptor closing, bumps
// the sequence numbers, wakes both waiters (their waits then report `closed`) and stops
// the timers. The descriptor's identity as seen by the OS poller is (pointer, fdseq):
// fdseq changes on every open, so a late event for a closed descriptor, or for the next
// descriptor that reuses this memory, is recognised and dropped.
//
// Wait results: ok, timeout (deadline passed: Go's os.ErrDeadlineExceeded) or closed.
#pragma once

#include <atomic>
#include <cstdint>
#include <system_error>

#include "runtime/internal/lock.h"
#include "runtime/internal/timer.h"

namespace weft::detail {
struct g;
}

namespace weft::net::detail {

struct poll_desc {
  static constexpr uintptr_t kNil = 0;
  static constexpr uintptr_t kReady = 1;
  static constexpr uintptr_t kWait = 2;

  int fd = -1;
  std::atomic<uintptr_t> rg{kNil};
  std::atomic<uintptr_t> wg{kNil};
  std::atomic<uint32_t> fdseq{0};      // tag carried in poller events
  std::atomic<uint32_t> rgen{0};       // bumped by every read-side readiness report

  weft::detail::lock mu;               // guards everything below
  bool closing = false;
  uint32_t rseq = 0;                   // bumped on every read-deadline change and close
  uint32_t wseq = 0;
  int64_t rd = 0;                      // read deadline: 0 none, < 0 expired, else nanotime
  int64_t wd = 0;
  weft::detail::timer rt;              // read deadline timer (arg: this)
  weft::detail::timer wt;
  uint32_t rt_seq = 0;                 // seq the armed timer was armed with
  uint32_t wt_seq = 0;
  std::atomic<bool> rd_expired{false}; // lock-free copies for the wait fast path
  std::atomic<bool> wd_expired{false};
  std::atomic<bool> closed_flag{false};

  // Hang-up and readable watches: called from the poller. hup_mu is held while a
  // callback runs, so unwatching waits for a callback in progress.
  weft::detail::spinlock hup_mu;
  void (*on_hup)(void*) = nullptr;     // hup_mu
  void* hup_arg = nullptr;             // hup_mu
  std::atomic<bool> hup_seen{false};
  // One-shot readable watch (pd_watch_readable), also under hup_mu.
  void (*on_readable)(void*) = nullptr;
  void* readable_arg = nullptr;

  poll_desc* next_free = nullptr;      // the poll_desc cache
};

enum class wait_result { ok, timeout, closed };

// Registers fd with the poller and returns its poll_desc (from a cache).
poll_desc* pd_open(int fd, std::error_code* err);
// Unregisters, wakes waiters with `closed`, stops timers, returns pd to the cache.
// pd_evict first (close() of a conn does both), then the fd is closed, then pd_close.
void pd_evict(poll_desc* pd);
void pd_close(poll_desc* pd);
// Clears a pending readiness notification before a new operation (Go's pollReset).
wait_result pd_reset(poll_desc* pd, int mode);
// Parks until fd is ready for `mode` ('r' or 'w'), the deadline passes, or pd closes.
wait_result pd_wait(poll_desc* pd, int mode);
// deadline: nanotime; 0 clears; in the past expires at once. mode 'r', 'w' or 'r'+'w'.
void pd_set_deadline(poll_desc* pd, int64_t deadline, int mode);

// Moves whenever the poller reports the read side ready (netfd's drained reads).
inline uint32_t pd_read_gen(const poll_desc* pd) { return pd->rgen.load(std::memory_order_acquire); }
// The peer shut down or the socket failed: a read may return EOF or an error at once.
inline bool pd_hung_up(const poll_desc* pd) { return pd->hup_seen.load(std::memory_order_acquire); }

// The poller reports readiness (mode 'r', 'w' or 'r'+'w') and collects goroutines.
// hangup: the same event says the peer shut down or the socket failed (recorded before
// the read side moves, so a drained read never waits for an EOF already queued).
void pd_ready(poll_desc* pd, int mode, bool hangup, weft::detail::g** list, int32_t* n);
// The poller saw the peer shut down or an error, and told pd_ready so first: runs the
// hang-up watch, if any.
void pd_hangup(poll_desc* pd);
// Calls cb(arg) from the poller when the connection hangs up (at once if it already
// has). cb runs on a scheduler thread: it must not block. Unwatching waits for a call in
// progress.
void pd_watch_hangup(poll_desc* pd, void (*cb)(void*), void* arg);
void pd_unwatch_hangup(poll_desc* pd);
// Calls cb(arg) once, from the poller, when fd becomes readable (or hangs up, or is
// evicted), instead of a goroutine parking in a read: lets an idle connection be held
// by no goroutine at all. At once if it already is readable. cb must not block.
// Returns false if the watch was not armed (another is pending).
bool pd_watch_readable(poll_desc* pd, void (*cb)(void*), void* arg);
// Disarms it; waits for a call in progress (callbacks run under hup_mu).
void pd_unwatch_readable(poll_desc* pd);

}  // namespace weft::net::detail
