// sysmon: the runtime's watchdog thread. It runs without a P, so it keeps working when
// every P is busy or stuck.
//
// Each tick it:
//   - polls the network if nobody has for 10 ms (a busy scheduler may not get to it);
//   - starts an M if a timer is overdue (its P may be hogged);
//   - retakes Ps whose M has been in a blocking call for a tick while work waits, and
//     asks a goroutine that has held its P for 10 ms to yield at its next check point,
//     moving that P's other runnable goroutines to where they can run;
//   - frees cached dead goroutines that went unused for a second (gcache.h);
//   - every 50 ms, reads the machine's CPU pressure and sets how many Ps may run at once
//     (runtime/internal/adapt.h);
//   - prints the schedtrace line when WEFTDEBUG=schedtrace=N asks for it.
// Cadence (Go's): sleep 20 us; after 1 ms without anything to do, double the sleep up to
// 10 ms. Once it has backed off to 10 ms and every P is idle, it sleeps on a note until
// a P is taken again (pidleget wakes it) or the nearest timer is due, so an idle process
// costs no CPU.
#include <pthread.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "runtime/internal/adapt.h"
#include "runtime/internal/gcache.h"
#include "runtime/internal/sched.h"
#include "runtime/internal/trace.h"

namespace weft::detail {
namespace {

int retake(int64_t now) {
  int n = 0;
  for (int32_t i = 0; i < sched.nprocs; i++) {
    p* pp = &sched.allp[i];
    pstatus s = pp->status.load(std::memory_order_acquire);
    bool sysretake = false;
    if (s == pstatus::running || s == pstatus::syscall) {
      // Has the P run the same G (or an inherited chain) for a whole slice?
      uint32_t t = pp->schedtick.load(std::memory_order_relaxed);
      if (pp->sm_schedtick != t || pp->sm_schedwhen == 0) {  // changed, or first sight
        pp->sm_schedtick = t;
        pp->sm_schedwhen = now;
      } else if (pp->sm_schedwhen + kForcePreemptNs <= now) {
        preempt_one(pp);
        pp->sm_schedwhen = now;
        sysretake = true;
      }
    }
    if (s == pstatus::syscall) {
      uint32_t t = pp->syscalltick.load(std::memory_order_relaxed);
      if (!sysretake && pp->sm_syscalltick != t) {
        // First sight of this call: give it one tick.
        pp->sm_syscalltick = t;
        pp->sm_syscallwhen = now;
        continue;
      }
      // Leave the P alone if it has no work, other Ms can take new work, and the call
      // is young: handing off would only wake a thread for nothing.
      // (An idle P counts only if the adaptive limit lets it run: adapt.h.)
      bool others = sched.nmspinning.load() > 0 || (sched.npidle.load() > 0 && may_start_p());
      if (runq_empty(pp) && others && pp->sm_syscallwhen + kForcePreemptNs > now)
        continue;
      pstatus expect = pstatus::syscall;
      if (pp->status.compare_exchange_strong(expect, pstatus::idle, std::memory_order_acq_rel)) {
        trace_proc_stop(nullptr, pp);  // before handoffp lets another M take it
        pp->mp.store(nullptr, std::memory_order_relaxed);
        pp->syscalltick.fetch_add(1, std::memory_order_relaxed);
        n++;
        handoffp(pp);
      }
    }
  }
  return n;
}

// ---------------------------------------------------------------------------------------
// Adaptive parallelism, the sampling side (the policy is adapt_step, in adapt.h).

// The machine's CPU pressure so far: the time in ns during which some runnable task
// waited for a CPU (PSI's "some total", in us in /proc/pressure/cpu); -1 if unreadable.
// The file is opened once per run() (run_main), before user code can count descriptors.
int64_t read_cpu_pressure_ns() {
  if (sched.psi_fd < 0) return -1;
  char buf[256];
  ssize_t n = pread(sched.psi_fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return -1;
  buf[n] = '\0';
  // "some avg10=0.00 avg60=0.00 avg300=0.00 total=12345\n..."
  const char* t = std::strstr(buf, "total=");
  if (std::strncmp(buf, "some ", 5) != 0 || !t) return -1;
  char* end = nullptr;
  long long us = std::strtoll(t + 6, &end, 10);
  return end == t + 6 ? -1 : static_cast<int64_t>(us) * 1000;
}

struct adapt_sampler {
  adapt_state st;
  int64_t window_start = 0;  // 0: start a window at the next tick
  int64_t wait_start = 0;
  uint64_t idle_start = 0;
};

void adapt_tick(adapt_sampler& a, int64_t now) {
  if (!sched.adaptive) return;  // also false with one P (run_main)
  if (a.window_start != 0 && now - a.window_start < kAdaptWindowNs) return;
  int64_t wait = read_cpu_pressure_ns();
  if (wait < 0) return;
  uint64_t idle = sched.nidle_events.load(std::memory_order_relaxed);
  if (a.window_start != 0) {
    adapt_sample x{now - a.window_start, wait - a.wait_start, idle - a.idle_start};
    int32_t before = sched.maxactive.load(std::memory_order_relaxed);
    a.st.limit = before;
    int32_t after = adapt_step(a.st, sched.nprocs, x, now);
    sched.nadapt_windows.fetch_add(1, std::memory_order_relaxed);
    if (after != before) {
      sched.maxactive.store(after, std::memory_order_seq_cst);
      if (after < before) sched.nlimit_lowered.fetch_add(1, std::memory_order_relaxed);
      // A P more may run: work already waiting gets it now, not at the next ready.
      else if (sched.runqsize.load() > 0) wakep();
    }
  }
  a.window_start = now;
  a.wait_start = wait;
  a.idle_start = idle;
}

void schedtrace(int64_t start, int64_t now) {
  std::string line;
  int32_t idle_threads;
  int32_t threads;
  {
    lock_guard l(sched.mu);
    idle_threads = sched.nmidle;
    threads = sched.mcount;
  }
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "SCHED %lldms: gomaxprocs=%d idleprocs=%d threads=%d spinningthreads=%d "
                "idlethreads=%d runqueue=%d [",
                static_cast<long long>((now - start) / 1000000), sched.nprocs,
                sched.npidle.load(), threads + 1 /* sysmon */, sched.nmspinning.load(), idle_threads,
                sched.runqsize.load());
  line = buf;
  for (int32_t i = 0; i < sched.nprocs; i++) {
    p* pp = &sched.allp[i];
    uint32_t n = pp->runq_tail.load() - pp->runq_head.load();
    if (pp->runnext.load()) n++;
    line += (i ? " " : "") + std::to_string(n);
  }
  line += "]\n";
  write_stderr(line.data(), line.size());
}

void* sysmon_main(void*) {
  prctl(PR_SET_NAME, "weft-sysmon", 0, 0, 0);
  const int64_t start = nanotime();
  int64_t last_trace = start;
  int idle = 0;
  int64_t delay_us = 0;
  adapt_sampler adapt;
  while (!sched.stopping.load(std::memory_order_acquire)) {
    if (idle == 0)
      delay_us = 20;
    else if (idle > 50)
      delay_us *= 2;
    if (delay_us > 10000) delay_us = 10000;
    sched.sysmonnote.sleep_for(delay_us * 1000);
    sched.sysmonnote.clear();
    if (sched.stopping.load(std::memory_order_acquire)) break;
    int64_t now = nanotime();
    sched.coarse_now.store(now, std::memory_order_relaxed);  // same clock, finer
    calibrate_ticks();  // the scheduling latency clock (trace.cc)

    // Every P idle, and sysmon has backed off all the way (no work for >1 ms): sleep
    // until a P is taken again. Not sooner: an I/O server's Ps go idle between bursts
    // all the time, and waking sysmon on each burst would cost a futex call each.
    if (sched.schedtrace_ms <= 0 && delay_us >= 10000 && sched.npidle.load() == sched.nprocs) {
      bool waited = false;
      {
        lock_guard l(sched.mu);
        if (sched.npidle.load() == sched.nprocs && !sched.stopping.load()) {
          sched.sysmonwait.store(true, std::memory_order_relaxed);
          waited = true;
        }
      }
      if (waited) {
        // Until the next timer, or the scavenger's next pass if idle Gs are still
        // cached: a server that goes quiet after a burst gives their stacks back.
        int64_t next = timer_sleep_until();
        int64_t scav = gcache_scavenge(now);
        if (scav != 0 && (next == 0 || scav < next)) next = scav;
        int64_t sleep = next == 0 ? -1 : (next > now ? next - now : 0);
        sched.sysmonnote.sleep_for(sleep);
        {
          lock_guard l(sched.mu);
          sched.sysmonwait.store(false, std::memory_order_relaxed);
          sched.sysmonnote.clear();
        }
        idle = 0;
        delay_us = 20;
        int64_t slept_from = now;
        now = nanotime();
        // A long sleep is not a window: the program did nothing in it. A short one (the
        // next timer was near) is part of the window: a bursty program's Ps are all
        // idle between bursts, sysmon backs off into this sleep every ~20 ms, and
        // restarting the window each time meant that no window ever lasted the 50 ms
        // it needs, so the limit never moved for exactly the programs it is for.
        if (now - slept_from >= kAdaptWindowNs) adapt.window_start = 0;
        sched.coarse_now.store(now, std::memory_order_relaxed);
      }
    }

    // Poll the network if nobody has for 10 ms.
    int64_t lastpoll = sched.lastpoll.load();
    if (poller()->has_waiters() && lastpoll != 0 && lastpoll + 10'000'000 < now) {
      if (sched.lastpoll.compare_exchange_strong(lastpoll, now)) {
        // What the poll returns is in flight until injected (checkdead must not fire).
        sched.in_flight.fetch_add(1, std::memory_order_seq_cst);
        int32_t n = 0;
        if (g* list = poller()->poll(0, &n)) inject_glist(list, n);
        sched.in_flight.fetch_sub(1, std::memory_order_release);
      }
    }
    // Timers that should already have run: their P may be hogged. While fewer Ps may
    // run than exist, the running ones run every P's timers (find_runnable), so only a
    // timer late by a millisecond says they are hogged.
    int64_t next = timer_sleep_until();
    int64_t late = sched.maxactive.load(std::memory_order_relaxed) < sched.nprocs ? kAdaptTimerLateNs : 0;
    if (next != 0 && next + late < now) startm(nullptr, false, true);

    gcache_scavenge(now);

    if (retake(now) != 0)
      idle = 0;
    else
      idle++;

    if (sched.schedtrace_ms > 0 && now - last_trace >= int64_t{sched.schedtrace_ms} * 1000000) {
      last_trace = now;
      schedtrace(start, now);
    }
    adapt_tick(adapt, now);
  }
  return nullptr;
}

}  // namespace

void sysmon_start() {
  sched.sysmonnote.clear();
  sched.sysmonwait.store(false);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  if (pthread_create(&sched.sysmon_thread, &attr, sysmon_main, nullptr) != 0) fatal("cannot start sysmon");
  pthread_attr_destroy(&attr);
}

void sysmon_stop() {
  sched.sysmonnote.wakeup();
  pthread_join(sched.sysmon_thread, nullptr);
}

}  // namespace weft::detail
