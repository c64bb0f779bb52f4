// The G registry and the dead-G cache; see runtime/internal/gcache.h.
#include "runtime/internal/gcache.h"

#include <new>
#include <vector>

#include "runtime/internal/stack.h"
#include "runtime/internal/switch.h"

namespace weft::detail {
namespace {

struct gchain {
  g* head;
  int32_t n;
};

lock g_cache_mu;
std::vector<gchain> g_chains;       // guarded by g_cache_mu
std::size_t g_low_water = 0;        // fewest chains seen since the last scavenge
int64_t g_last_scavenge = 0;
std::atomic<int64_t> g_cached{0};   // Gs in global chains

constexpr int64_t kScavengePeriodNs = 1'000'000'000;
constexpr std::size_t kKeepChains = 8;  // never scavenge below this many chains

void allg_add(g* gp) {
  lock_guard l(allg_lock);
  gp->all_prev = nullptr;
  gp->all_next = allg_head;
  if (allg_head) allg_head->all_prev = gp;
  allg_head = gp;
}

void allg_remove(g* gp) {
  lock_guard l(allg_lock);
  if (gp->all_prev)
    gp->all_prev->all_next = gp->all_next;
  else
    allg_head = gp->all_next;
  if (gp->all_next) gp->all_next->all_prev = gp->all_prev;
  gp->all_next = gp->all_prev = nullptr;
}

void free_chain(g* head) {
  while (head) {
    g* x = head;
    head = x->sched_link;
    free_g(x);
  }
}

}  // namespace

g* new_g(std::size_t size_class) {
  stack_slot s = stack_get(size_class);
  char* top = s.lo + s.size;
  auto* gp = ::new (static_cast<void*>(top - sizeof(g))) g();
  gp->stack_lo = s.lo;
  gp->stack_hi = reinterpret_cast<char*>(gp);
  gp->slot_size = s.size;
  gp->tsan_fiber = tsan_create_fiber();
  gp->status.store(gstatus::dead, std::memory_order_relaxed);
  allg_add(gp);
  return gp;
}

void free_g(g* gp) {
  allg_remove(gp);
  tsan_destroy_fiber(gp->tsan_fiber);
  stack_slot s{gp->stack_lo, gp->slot_size};
  gp->~g();
  stack_put(s);
}

void gfput(p* pp, g* gp) {
  if (gp->slot_size != sched.stack_class) {
    free_g(gp);
    return;
  }
  if (!pp) {
    gp->sched_link = nullptr;
    lock_guard l(g_cache_mu);
    g_chains.push_back(gchain{gp, 1});
    g_cached.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  gp->sched_link = pp->gfree;
  pp->gfree = gp;
  if (++pp->ngfree < kGBatch) return;
  gchain c{pp->gfree, pp->ngfree};
  pp->gfree = nullptr;
  pp->ngfree = 0;
  lock_guard l(g_cache_mu);
  g_chains.push_back(c);
  g_cached.fetch_add(c.n, std::memory_order_relaxed);
}

g* gfget(p* pp) {
  if (pp && !pp->gfree) {
    if (g_cached.load(std::memory_order_relaxed) == 0) return nullptr;
    lock_guard l(g_cache_mu);
    if (g_chains.empty()) return nullptr;
    gchain c = g_chains.back();
    g_chains.pop_back();
    if (g_chains.size() < g_low_water) g_low_water = g_chains.size();
    g_cached.fetch_sub(c.n, std::memory_order_relaxed);
    pp->gfree = c.head;
    pp->ngfree = c.n;
  }
  if (pp) {
    g* gp = pp->gfree;
    if (!gp) return nullptr;
    pp->gfree = gp->sched_link;
    pp->ngfree--;
    gp->sched_link = nullptr;
    return gp;
  }
  // No P (a foreign thread): take one G out of a chain.
  lock_guard l(g_cache_mu);
  if (g_chains.empty()) return nullptr;
  gchain& c = g_chains.back();
  g* gp = c.head;
  c.head = gp->sched_link;
  if (--c.n == 0) g_chains.pop_back();
  if (g_chains.size() < g_low_water) g_low_water = g_chains.size();
  g_cached.fetch_sub(1, std::memory_order_relaxed);
  gp->sched_link = nullptr;
  return gp;
}

int64_t gcache_scavenge(int64_t now) {
  std::vector<gchain> victims;
  int64_t next;
  {
    lock_guard l(g_cache_mu);
    if (now - g_last_scavenge < kScavengePeriodNs)
      return g_chains.size() > kKeepChains ? g_last_scavenge + kScavengePeriodNs : 0;
    g_last_scavenge = now;
    // Chains that stayed in the cache the whole period were not needed: free them,
    // oldest first (the front of the vector is touched least).
    std::size_t idle = g_low_water > kKeepChains ? g_low_water - kKeepChains : 0;
    for (std::size_t i = 0; i < idle; i++) {
      victims.push_back(g_chains[i]);
      g_cached.fetch_sub(g_chains[i].n, std::memory_order_relaxed);
    }
    g_chains.erase(g_chains.begin(), g_chains.begin() + static_cast<std::ptrdiff_t>(idle));
    g_low_water = g_chains.size();
    next = g_chains.size() > kKeepChains ? now + kScavengePeriodNs : 0;
  }
  for (const gchain& c : victims) free_chain(c.head);
  return next;
}

void gcache_flush_p(p* pp) {
  if (!pp->gfree) return;
  gchain c{pp->gfree, pp->ngfree};
  pp->gfree = nullptr;
  pp->ngfree = 0;
  lock_guard l(g_cache_mu);
  g_chains.push_back(c);
  g_cached.fetch_add(c.n, std::memory_order_relaxed);
}

void gcache_release_all() {
  std::vector<gchain> all;
  {
    lock_guard l(g_cache_mu);
    all.swap(g_chains);
    g_low_water = 0;
    g_cached.store(0, std::memory_order_relaxed);
  }
  for (const gchain& c : all) free_chain(c.head);
}

int64_t gcache_size() {
  int64_t n = g_cached.load(std::memory_order_relaxed);
  for (int32_t i = 0; i < sched.nprocs; i++) n += sched.allp[i].ngfree;
  return n;
}

}  // namespace weft::detail
