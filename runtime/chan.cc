// Channels and select: the type-erased core. See runtime/internal/chan_core.h for the
// invariants and runtime/chan.h for the semantics.
#include <cstdlib>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

#include "runtime/internal/chan_core.h"
#include "runtime/internal/profile.h"
#include "runtime/internal/sched.h"

namespace weft::detail {

// ---------------------------------------------------------------------------------------
// Wait queues.

sudog* waitq::dequeue_slow() {
  while (sudog* s = q.head) {
    q.remove(s);
    if (s->sel) {
      bool expected = false;
      // Lost: its select already completed elsewhere (or timed out). Drop it; the select
      // goroutine will not find it on this queue, which is fine.
      if (!s->sel->done.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) continue;
      s->sel->winner = s;
    }
    return s;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------------------
// chan_core.

chan_core::chan_core(const elem_ops* o, uint32_t capacity) : ops(o), cap(capacity) {
  if (cap > 0) {
    buf = static_cast<unsigned char*>(
        ::operator new(static_cast<std::size_t>(cap) * ops->size, std::align_val_t{ops->align}));
    owns_buf = true;
  }
}

chan_core::chan_core(const elem_ops* o, uint32_t capacity, unsigned char* inline_buf)
    : ops(o), cap(capacity), buf(inline_buf) {}

chan_core::~chan_core() {
  // Values still buffered when the last handle goes away are destroyed.
  while (count > 0) {
    destroy_elem(ops, slot(recvx));
    recvx = recvx + 1 == cap ? 0 : recvx + 1;
    count--;
  }
  if (owns_buf) ::operator delete(buf, std::align_val_t{ops->align});
}

namespace {

bool unlock_commit(goroutine_ref, void* arg) {
  static_cast<spinlock*>(arg)->release();
  return true;
}

// Moves the head of the buffer into dst (or destroys it when dst is null).
void take_from_buffer(chan_core* c, void* dst) {
  void* s = c->slot(c->recvx);
  if (dst) move_elem(c->ops, dst, s);
  destroy_elem(c->ops, s);
  c->recvx = c->recvx + 1 == c->cap ? 0 : c->recvx + 1;
  c->count--;
}

void put_in_buffer(chan_core* c, void* src) {
  move_elem(c->ops, c->slot(c->sendx), src);
  c->sendx = c->sendx + 1 == c->cap ? 0 : c->sendx + 1;
  c->count++;
}

// Completes a send to a waiting receiver (c->mu held). Returns the goroutine to wake.
goroutine_ref send_to_waiter(chan_core* c, sudog* r, void* value) {
  if (r->elem) move_elem(c->ops, r->elem, value);
  r->success = true;
  return r->gp;
}

// Completes a receive from a waiting sender (c->mu held): an unbuffered channel hands
// the value over directly; a full buffered one gives the receiver its head and moves the
// sender's value to the tail (so FIFO order holds).
goroutine_ref recv_from_waiter(chan_core* c, sudog* s, void* out) {
  if (c->cap == 0) {
    if (out) move_elem(c->ops, out, s->elem);
  } else {
    take_from_buffer(c, out);
    put_in_buffer(c, s->elem);
  }
  s->success = true;
  return s->gp;
}

// A wait that a block profile may record.
inline int64_t block_start() { return block_profiling() ? nanotime() : 0; }

}  // namespace

[[noreturn]] void block_forever(wait_reason reason) {
  park(reason, nullptr, nullptr);
  throw_("unreachable: a nil-channel wait resumed");
}

bool chan_core::send(void* value, bool block) {
  mu.acquire();
  if (closed) {
    mu.release();
    throw std::logic_error("send on closed channel");
  }
  if (sudog* r = recvq.dequeue()) {
    goroutine_ref gp = send_to_waiter(this, r, value);
    mu.release();
    ready(gp);
    return true;
  }
  if (count < cap) {
    put_in_buffer(this, value);
    mu.release();
    return true;
  }
  if (!block) {
    mu.release();
    return false;
  }
  sudog s;
  s.gp = current_goroutine();
  s.elem = value;
  s.c = this;
  s.is_send = true;
  s.since = block_start();
  sendq.enqueue(&s);
  park(wait_reason::chan_send, unlock_commit, &mu);
  if (s.since) record_block(s.since, nanotime(), 0);
  if (!s.success) throw std::logic_error("send on closed channel");
  return true;
}

bool chan_core::offer(void* value) {
  mu.acquire();
  if (closed) {
    mu.release();
    return false;
  }
  if (sudog* r = recvq.dequeue()) {
    goroutine_ref gp = send_to_waiter(this, r, value);
    mu.release();
    ready(gp);
    return true;
  }
  bool ok = count < cap;
  if (ok) put_in_buffer(this, value);
  mu.release();
  return ok;
}

int chan_core::recv(void* out, bool block) {
  mu.acquire();
  if (sudog* s = sendq.dequeue()) {
    goroutine_ref gp = recv_from_waiter(this, s, out);
    mu.release();
    ready(gp);
    return 1;
  }
  if (count > 0) {
    take_from_buffer(this, out);
    mu.release();
    return 1;
  }
  if (closed) {
    mu.release();
    return 2;
  }
  if (!block) {
    mu.release();
    return 0;
  }
  sudog s;
  s.gp = current_goroutine();
  s.elem = out;
  s.c = this;
  s.since = block_start();
  recvq.enqueue(&s);
  park(wait_reason::chan_receive, unlock_commit, &mu);
  if (s.since) record_block(s.since, nanotime(), 0);
  return s.success ? 1 : 2;
}

void chan_core::close() {
  std::vector<goroutine_ref> wake;
  mu.acquire();
  if (closed) {
    mu.release();
    throw std::logic_error("close of closed channel");
  }
  closed = true;
  // Every receiver gets "closed"; every sender will panic when it wakes.
  while (sudog* r = recvq.dequeue()) {
    r->success = false;
    wake.push_back(r->gp);
  }
  while (sudog* s = sendq.dequeue()) {
    s->success = false;
    wake.push_back(s->gp);
  }
  mu.release();
  for (goroutine_ref gp : wake) ready(gp);
}

uint32_t chan_core::len() {
  spin_guard l(mu);
  return count;
}

// ---------------------------------------------------------------------------------------
// select (Go's selectgo).

namespace {

struct select_park {
  chan_core** order;  // locked channels, in address order, distinct
  int n;
};

void lock_all(chan_core** order, int n) {
  for (int i = 0; i < n; i++) order[i]->mu.acquire();
}

void unlock_all(chan_core** order, int n) {
  for (int i = n - 1; i >= 0; i--) order[i]->mu.release();
}

bool unlock_all_commit(goroutine_ref, void* arg) {
  auto* sp = static_cast<select_park*>(arg);
  unlock_all(sp->order, sp->n);
  return true;
}

// A random seed per select, for the poll order. A per-thread xorshift state, constant-
// initialized so reading it needs no TLS guard, seeded on first use. (select_go calls
// this before it may park, so a thread-local address cached across a migration is never
// used.)
uint64_t select_seed() {
  thread_local uint64_t x = 0;
  if (x == 0) [[unlikely]]
    x = (reinterpret_cast<uintptr_t>(&x) ^ static_cast<uint64_t>(nanotime())) | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

}  // namespace

// Completes case sc on its (locked) channel if it can proceed now. Returns the goroutine
// to wake (or null) through *wake; false if the case is not ready. Panics on a send to a
// closed channel (the caller must unlock first: *panic is set instead of throwing).
bool try_case_locked(select_case& sc, bool* recv_ok, goroutine_ref* wake, bool* panic) {
  chan_core* c = sc.c;
  *wake = nullptr;
  if (sc.is_send) {
    if (c->closed) {
      *panic = true;
      return true;
    }
    if (sudog* r = c->recvq.dequeue()) {
      *wake = send_to_waiter(c, r, sc.elem);
      return true;
    }
    if (c->count < c->cap) {
      put_in_buffer(c, sc.elem);
      return true;
    }
    return false;
  }
  if (sudog* s = c->sendq.dequeue()) {
    *wake = recv_from_waiter(c, s, sc.elem);
    if (recv_ok) *recv_ok = true;
    return true;
  }
  if (c->count > 0) {
    take_from_buffer(c, sc.elem);
    if (recv_ok) *recv_ok = true;
    return true;
  }
  if (c->closed) {
    if (recv_ok) *recv_ok = false;
    return true;
  }
  return false;
}

namespace {

// Selects of up to this many cases (the common case) keep their bookkeeping on the stack.
constexpr int kSelectInline = 8;

int select_locked(select_case* cases, int n, const int* poll, int np, bool block, bool* recv_ok);

// The part of select that completes a ready case, with poll[] supplied by the caller
// (on its stack for small selects). Kept small so that a select that finds a case ready
// pays no more than it needs: everything about waiting is in select_locked.
[[gnu::always_inline]] inline int select_fast(select_case* cases, int n, int* poll, bool block, bool* recv_ok) {
  // Poll order: a uniformly random permutation of the non-nil cases (Fisher-Yates), so
  // that among ready cases each is picked with equal probability. One seed per select;
  // each case draws the high half of the next step of a 64-bit LCG from it, scaled to
  // [0, np] by multiply-shift (no division on the hot path).
  uint64_t x = select_seed();
  int np = 0;
  for (int i = 0; i < n; i++) {
    if (!cases[i].c) continue;
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    int j = static_cast<int>(((x >> 32) * static_cast<uint32_t>(np + 1)) >> 32);
    poll[np] = poll[j];
    poll[j] = i;
    np++;
  }
  if (np == 0) {
    if (!block) return -1;
    block_forever(wait_reason::select_no_cases);
  }

  // In poll order, lock one channel at a time and take the first case that can proceed,
  // skipping buffered channels that a peek shows cannot. It avoids locking every channel
  // when one is ready. When none is, select_locked judges all cases again with every
  // channel locked at once, so that "nothing was ready" (the default case, or parking)
  // holds at one instant, as in Go.
  for (int k = 0; k < np; k++) {
    select_case& sc = cases[poll[k]];
    if (sc.c->surely_blocks(sc.is_send)) continue;
    goroutine_ref wake;
    bool panic = false;
    sc.c->mu.acquire();
    bool done = try_case_locked(sc, recv_ok, &wake, &panic);
    sc.c->mu.release();
    if (panic) throw std::logic_error("send on closed channel");
    if (done) {
      if (wake) ready(wake);
      return poll[k];
    }
  }
  return select_locked(cases, n, poll, np, block, recv_ok);
}

}  // namespace

int select_go(select_case* cases, int n, bool block, bool* recv_ok) {
  if (n <= kSelectInline) [[likely]] {
    int poll[kSelectInline];
    return select_fast(cases, n, poll, block, recv_ok);
  }
  std::unique_ptr<int[]> poll(new int[n]);
  return select_fast(cases, n, poll.get(), block, recv_ok);
}

namespace {

// No case was ready on the first look: lock every channel, look again, and if still
// none is ready either return -1 (!block) or wait on all of them at once.
[[gnu::noinline]] int select_locked(select_case* cases, int n, const int* poll, int np, bool block,
                                    bool* recv_ok) {
  chan_core* lock_buf[kSelectInline];
  std::unique_ptr<chan_core*[]> lock_heap;
  chan_core** order = lock_buf;
  if (n > kSelectInline) [[unlikely]] {
    lock_heap.reset(new chan_core*[n]);
    order = lock_heap.get();
  }

  // Lock order: by address, each channel once (several cases may share one).
  int nl = 0;
  for (int k = 0; k < np; k++) {
    chan_core* c = cases[poll[k]].c;
    int pos = nl;
    while (pos > 0 && order[pos - 1] > c) pos--;
    if (pos > 0 && order[pos - 1] == c) continue;
    for (int m = nl; m > pos; m--) order[m] = order[m - 1];
    order[pos] = c;
    nl++;
  }

  lock_all(order, nl);
  // Pass 1 again, all locked: a case may have become ready since the fast path.
  for (int k = 0; k < np; k++) {
    int i = poll[k];
    goroutine_ref wake;
    bool panic = false;
    if (try_case_locked(cases[i], recv_ok, &wake, &panic)) {
      unlock_all(order, nl);
      if (panic) throw std::logic_error("send on closed channel");
      if (wake) ready(wake);
      return i;
    }
  }
  if (!block) {
    unlock_all(order, nl);
    return -1;
  }

  // Pass 2: wait on every case at once.
  std::unique_ptr<sudog[]> sg_heap;
  sudog sg_buf[kSelectInline];
  sudog* sgs = sg_buf;
  if (n > kSelectInline) [[unlikely]] {
    sg_heap.reset(new sudog[n]);
    sgs = sg_heap.get();
  }
  select_state st;
  goroutine_ref self = current_goroutine();
  int64_t since = block_start();
  for (int k = 0; k < np; k++) {
    int i = poll[k];
    sudog& s = sgs[i];
    s.gp = self;
    s.elem = cases[i].elem;
    s.c = cases[i].c;
    s.sel = &st;
    s.case_index = i;
    s.is_send = cases[i].is_send;
    if (s.is_send)
      s.c->sendq.enqueue(&s);
    else
      s.c->recvq.enqueue(&s);
  }
  select_park sp{order, nl};
  park(wait_reason::select, unlock_all_commit, &sp);

  // Woken by the partner that won st.done (it recorded the winning sudog). Take our
  // other sudogs off their queues; ones that a partner already dropped are off.
  lock_all(order, nl);
  sudog* winner = st.winner;
  for (int k = 0; k < np; k++) {
    sudog& s = sgs[poll[k]];
    if (&s == winner) continue;
    (s.is_send ? s.c->sendq : s.c->recvq).remove(&s);
  }
  unlock_all(order, nl);
  if (!winner) throw_("select: woken without a completed case");
  int won = winner->case_index;
  if (since) record_block(since, nanotime(), 0);
  sudog& w = sgs[won];
  if (w.is_send) {
    if (!w.success) throw std::logic_error("send on closed channel");
  } else if (recv_ok) {
    *recv_ok = w.success;
  }
  return won;
}

}  // namespace

}  // namespace weft::detail
