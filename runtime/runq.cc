// Run queues; see runtime/internal/runq.h.
#include "runtime/internal/runq.h"

#include <cstdlib>
#include <cstring>
#include <unistd.h>

namespace weft::detail {
namespace {

// The global queue: a ring of pointers, grown by doubling (sched.mu).
struct global_queue {
  g** buf = nullptr;
  uint32_t cap = 0;
  uint32_t head = 0;
  uint32_t size = 0;

  void grow(uint32_t need) {
    uint32_t ncap = cap ? cap : 1024;
    while (ncap < need) ncap *= 2;
    if (ncap == cap) return;
    auto** nb = static_cast<g**>(std::malloc(sizeof(g*) * ncap));
    if (!nb) throw_("global run queue: out of memory");
    for (uint32_t i = 0; i < size; i++) nb[i] = buf[(head + i) & (cap - 1)];
    std::free(buf);
    buf = nb;
    cap = ncap;
    head = 0;
  }
  void push(g* gp) {
    if (size == cap) grow(size + 1);
    buf[(head + size) & (cap - 1)] = gp;
    size++;
  }
  g* pop() {
    g* gp = buf[head];
    head = (head + 1) & (cap - 1);
    size--;
    return gp;
  }
};

global_queue gq;

// Moves half of pp's ring plus gp to the global queue. False if a thief raced us.
bool runqputslow(p* pp, g* gp, uint32_t h, uint32_t t) {
  g* batch[kRunqSize / 2 + 1];
  uint32_t n = (t - h) / 2;
  if (n != kRunqSize / 2) throw_("runqputslow: queue is not full");
  for (uint32_t i = 0; i < n; i++) batch[i] = pp->runq[(h + i) % kRunqSize].load(std::memory_order_relaxed);
  if (!pp->runq_head.compare_exchange_strong(h, h + n, std::memory_order_acq_rel)) return false;
  batch[n] = gp;
  lock_guard l(sched.mu);
  globrunq_put_batch_locked(batch, n + 1);
  return true;
}

}  // namespace

// Takes runnext (owner only; thieves use runq_grab).
g* runnext_take(p* pp) {
  g* next = pp->runnext.load(std::memory_order_relaxed);
  while (next && !pp->runnext.compare_exchange_weak(next, nullptr, std::memory_order_acquire)) {
  }
  return next;
}

void globrunq_put_locked(g* gp) {
  gq.push(gp);
  sched.runqsize.store(static_cast<int32_t>(gq.size), std::memory_order_relaxed);
}

void globrunq_put_batch_locked(g* const* gs, uint32_t n) {
  if (gq.size + n > gq.cap) gq.grow(gq.size + n);
  for (uint32_t i = 0; i < n; i++) gq.buf[(gq.head + gq.size + i) & (gq.cap - 1)] = gs[i];
  gq.size += n;
  sched.runqsize.store(static_cast<int32_t>(gq.size), std::memory_order_relaxed);
}

g* globrunq_get_locked(p* pp, int32_t max) {
  int32_t size = static_cast<int32_t>(gq.size);
  if (size == 0) return nullptr;
  int32_t n = size / sched.nprocs + 1;
  if (n > size) n = size;
  if (max > 0 && n > max) n = max;
  if (n > static_cast<int32_t>(kRunqSize / 2)) n = kRunqSize / 2;
  g* gp = gq.pop();
  for (n--; n > 0; n--) runqput(pp, gq.pop(), false);
  sched.runqsize.store(static_cast<int32_t>(gq.size), std::memory_order_relaxed);
  return gp;
}

void globrunq_clear_locked() {
  gq.head = 0;
  gq.size = 0;
  sched.runqsize.store(0, std::memory_order_relaxed);
}

bool runqput(p* pp, g* gp, bool next) {
  if (next) {
    pp->runnext_puts.store(pp->runnext_puts.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    g* old = pp->runnext.exchange(gp, std::memory_order_acq_rel);
    if (!old) return false;
    gp = old;  // the old runnext goes to the tail
  }
  for (;;) {
    uint32_t h = pp->runq_head.load(std::memory_order_acquire);
    uint32_t t = pp->runq_tail.load(std::memory_order_relaxed);
    if (t - h < kRunqSize) {
      pp->runq[t % kRunqSize].store(gp, std::memory_order_relaxed);
      pp->runq_tail.store(t + 1, std::memory_order_release);
      return false;
    }
    if (runqputslow(pp, gp, h, t)) return true;
  }
}

g* runqget(p* pp, bool* inherit) {
  if (pp->inherit_chain < kInheritCap) {
    if (g* next = runnext_take(pp)) {
      *inherit = true;
      return next;
    }
  }
  for (;;) {
    uint32_t h = pp->runq_head.load(std::memory_order_acquire);
    uint32_t t = pp->runq_tail.load(std::memory_order_relaxed);
    if (t == h) break;
    g* gp = pp->runq[h % kRunqSize].load(std::memory_order_relaxed);
    if (pp->runq_head.compare_exchange_weak(h, h + 1, std::memory_order_release)) {
      *inherit = false;
      return gp;
    }
  }
  // The ring is empty: runnext runs after all, but on a fresh slice.
  *inherit = false;
  return runnext_take(pp);
}

uint32_t runq_grab(p* pp, std::atomic<g*>* batch, uint32_t batch_head, bool steal_runnext, bool* handoff) {
  for (;;) {
    uint32_t h = pp->runq_head.load(std::memory_order_acquire);
    uint32_t t = pp->runq_tail.load(std::memory_order_acquire);
    uint32_t n = t - h;
    n = n - n / 2;
    if (n == 0) {
      if (steal_runnext) {
        g* next = pp->runnext.load(std::memory_order_acquire);
        if (next) {
          if (pp->status.load(std::memory_order_relaxed) == pstatus::running) {
            // The victim is probably about to run it itself (a synchronous hand-off
            // takes ~50ns); give it time before taking it away. Sleep rather than spin,
            // as Go does with usleep(3) (timer slack makes it ~50us): we stay counted as
            // spinning meanwhile, so the readies that keep happening in a ping-pong do
            // not each pay a futex wake for a thread that has nothing to take.
            uint32_t puts = pp->runnext_puts.load(std::memory_order_relaxed);
            usleep(3);
            // runnext was refilled meanwhile: the victim is handing off synchronously
            // (a ping-pong, or a producer waking its consumer batch after batch) and
            // runs each one itself within the sleep. Taking one now would split the
            // pair across Ps, where every hand-off becomes a cross-core wakeup and
            // every channel operation a cache-line transfer. Only a goroutine that sat
            // in runnext the whole sleep is taken.
            uint32_t refills = pp->runnext_puts.load(std::memory_order_relaxed) - puts;
            if (refills != 0) {
              // Refilled over and over (more than one a microsecond): a tight chain of
              // hand-offs that the thief should keep watching rather than sleep on.
              if (handoff && refills >= kHotHandoffSleepRefills) *handoff = true;
              return 0;
            }
            next = pp->runnext.load(std::memory_order_acquire);
            if (!next) continue;
          }
          if (!pp->runnext.compare_exchange_strong(next, nullptr, std::memory_order_acq_rel)) continue;
          batch[batch_head % kRunqSize].store(next, std::memory_order_relaxed);
          return 1;
        }
      }
      return 0;
    }
    if (n > kRunqSize / 2) continue;  // read an inconsistent h and t
    for (uint32_t i = 0; i < n; i++)
      batch[(batch_head + i) % kRunqSize].store(pp->runq[(h + i) % kRunqSize].load(std::memory_order_relaxed),
                                                std::memory_order_relaxed);
    if (pp->runq_head.compare_exchange_strong(h, h + n, std::memory_order_acq_rel)) return n;
  }
}

g* runqsteal(p* pp, p* victim, bool steal_runnext, bool* handoff) {
  uint32_t t = pp->runq_tail.load(std::memory_order_relaxed);
  uint32_t n = runq_grab(victim, pp->runq, t, steal_runnext, handoff);
  if (n == 0) return nullptr;
  n--;
  g* gp = pp->runq[(t + n) % kRunqSize].load(std::memory_order_relaxed);
  if (n == 0) return gp;
  uint32_t h = pp->runq_head.load(std::memory_order_acquire);
  if (t - h + n >= kRunqSize) throw_("runqsteal: runq overflow");
  pp->runq_tail.store(t + n, std::memory_order_release);
  return gp;
}

bool runq_empty(p* pp) {
  // Read head, tail, runnext, then tail again: a runqput that moves runnext to the
  // ring between our reads must not make us report empty.
  for (;;) {
    uint32_t h = pp->runq_head.load(std::memory_order_acquire);
    uint32_t t = pp->runq_tail.load(std::memory_order_acquire);
    g* next = pp->runnext.load(std::memory_order_acquire);
    if (pp->runq_tail.load(std::memory_order_acquire) == t) return h == t && next == nullptr;
  }
}

}  // namespace weft::detail
