// The type-erased channel core (Go's hchan) and the waiters that park on channels.
//
// chan<T> (runtime/chan.h) is a typed handle around a chan_core; select works on the
// cores of channels of any element types. Element values move between goroutines
// through raw pointers: a sender's sudog points at the value to move from, a receiver's
// at uninitialized storage to move-construct into. chan_core::ops knows how.
//
// Invariants (Go's chan.go, restated; all under `mu`):
//   - at least one of sendq and recvq is empty, except for an unbuffered channel with a
//     single goroutine blocked in select on both its send and receive (its own sudogs
//     cannot match each other);
//   - buffered: count > 0 implies recvq is empty; count < cap implies sendq is empty;
//   - a closed channel has an empty sendq (close woke them all) and never gets values;
//   - a sudog is in at most one wait queue, and only while its goroutine is parked (or
//     about to park: it is published under mu and mu is released by park's commit).
//
// A select puts one sudog per case on the channels' queues, all pointing at one
// select_state. Whoever dequeues such a sudog must first win `done` (false -> true); a
// sudog whose select was already won is skipped (the select goroutine removes its
// leftovers when it wakes). That claim is what lets a goroutine wait on many channels
// at once without being woken twice.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "runtime/internal/ilist.h"
#include "runtime/internal/lock.h"
#include "runtime/park.h"

namespace weft::detail {

struct chan_core;

struct sudog;

struct select_state {
  std::atomic<bool> done{false};
  sudog* winner = nullptr;  // written by whoever won `done`, before it readies the select
};

struct sudog {  // one goroutine waiting on one channel (Go's sudog)
  goroutine_ref gp = nullptr;
  sudog* next = nullptr;
  sudog* prev = nullptr;
  void* elem = nullptr;          // send: value to move from; recv: storage to construct in
  chan_core* c = nullptr;
  select_state* sel = nullptr;   // non-null for select cases
  int case_index = -1;
  bool is_send = false;
  bool success = false;          // completed by a partner (false: woken by close)
  int64_t since = 0;             // nanotime when it started waiting (block profile), or 0
};

struct waitq {
  ilist<sudog> q;

  bool empty() const { return q.empty(); }
  void enqueue(sudog* s) { q.push_back(s); }
  void remove(sudog* s) { q.remove(s); }  // no-op if s is not queued here
  // The first waiter that can be completed: plain waiters, or select waiters whose
  // select this call wins. Select waiters that already lost are dropped.
  sudog* dequeue() { return q.empty() ? nullptr : dequeue_slow(); }
  sudog* dequeue_slow();
};

struct elem_ops {
  std::size_t size;
  std::size_t align;
  void (*move_construct)(void* dst, void* src);  // dst uninitialized; src stays valid
  void (*destroy)(void* p);
  // Trivially copyable and destructible: a move is a byte copy and destroy does
  // nothing, so the channel skips both indirect calls (move_elem / destroy_elem).
  bool trivial = false;
};

inline void move_elem(const elem_ops* ops, void* dst, void* src) {
  if (ops->trivial) [[likely]] {
    switch (ops->size) {  // constant sizes: an inline load and store
      case 1: std::memcpy(dst, src, 1); return;
      case 2: std::memcpy(dst, src, 2); return;
      case 4: std::memcpy(dst, src, 4); return;
      case 8: std::memcpy(dst, src, 8); return;
      case 16: std::memcpy(dst, src, 16); return;
      default: std::memcpy(dst, src, ops->size); return;
    }
  }
  ops->move_construct(dst, src);
}

inline void destroy_elem(const elem_ops* ops, void* p) {
  if (!ops->trivial) ops->destroy(p);
}

// A word written only under chan_core::mu but also read without it (select's peek):
// relaxed atomic accesses, which compile to plain moves.
template <class T>
class locked_word {
 public:
  explicit locked_word(T v) : v_(v) {}
  operator T() const { return v_.load(std::memory_order_relaxed); }
  locked_word& operator=(T v) {
    v_.store(v, std::memory_order_relaxed);
    return *this;
  }
  void operator++(int) { v_.store(v_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
  void operator--(int) { v_.store(v_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed); }

 private:
  std::atomic<T> v_;
};

struct chan_core {
  chan_core(const elem_ops* o, uint32_t capacity);
  // A buffer the caller owns (a member of a derived class, as the timer channel's one
  // slot): one allocation less. It must outlive the channel's last value.
  chan_core(const elem_ops* o, uint32_t capacity, unsigned char* inline_buf);
  virtual ~chan_core();  // timer channels stop their timer first (chan_timer.cc)
  chan_core(const chan_core&) = delete;
  chan_core& operator=(const chan_core&) = delete;

  const elem_ops* ops;
  const uint32_t cap;
  std::atomic<int32_t> refs{1};  // handles sharing this channel

  spinlock mu;                   // held for a few dozen instructions, never across a park
  locked_word<uint32_t> count{0};  // values in buf
  uint32_t sendx = 0;            // next slot to fill
  uint32_t recvx = 0;            // next slot to drain
  locked_word<bool> closed{false};
  waitq recvq;
  waitq sendq;
  unsigned char* buf = nullptr;
  bool owns_buf = false;

  // Without the lock: true if a buffered channel is surely not ready for this operation
  // right now (empty for a receive, full for a send, and not closed). Invariants: an empty
  // buffer has no waiting sender, a full one no waiting receiver. A hint: it may change
  // the moment after.
  bool surely_blocks(bool is_send) const {
    if (cap == 0 || closed) return false;
    return is_send ? count == cap : count == 0;
  }

  void* slot(uint32_t i) { return buf + static_cast<std::size_t>(i) * ops->size; }

  void retain() { refs.fetch_add(1, std::memory_order_relaxed); }
  void release() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Blocking operations park when block is true and the operation cannot complete.
  // send: returns false if !block and it would block. Panics (throws) on closed.
  bool send(void* value, bool block);
  // Non-blocking send that reports a closed channel as false instead of panicking
  // (for runtime senders: timer channels).
  bool offer(void* value);
  // recv: returns 0 if !block and it would block, 1 received, 2 closed and drained
  // (out left uninitialized).
  int recv(void* out, bool block);
  void close();
  uint32_t len();
};

// Nil-channel operations: block forever (they never complete).
[[noreturn]] void block_forever(wait_reason reason);

// select over n cases. cases[i].c == nullptr: a nil channel, never ready.
struct select_case {
  chan_core* c;
  bool is_send;
  void* elem;  // send: value to move from; recv: storage (may be null to discard)
};
// Returns the index of the completed case, or -1 if !block and none was ready.
// *recv_ok: for a receive, true if a value was received, false if closed.
int select_go(select_case* cases, int n, bool block, bool* recv_ok);

}  // namespace weft::detail
