// Adaptive parallelism (runtime/internal/adapt.h): the policy on its own, then the
// runtime lowering its limit under CPU contention, raising it again afterwards, and
// keeping Go's guarantees while the limit is pinned at one P of two.
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <thread>
#include <vector>

#include "runtime/internal/adapt.h"
#include "runtime/chan.h"
#include "runtime/sched_stats.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using detail::adapt_sample;
using detail::adapt_state;
using detail::adapt_step;
using detail::kAdaptMaxHoldNs;
using detail::kAdaptMinHoldNs;
using detail::kAdaptWindowNs;
using testing::run_checked;

constexpr int64_t kW = kAdaptWindowNs;

// One window: wait is the share of a CPU the Ms spent waiting, idle the idle Ps a second.
adapt_sample window(double wait_cpus, int64_t idle_per_sec) {
  return adapt_sample{kW, static_cast<int64_t>(wait_cpus * static_cast<double>(kW)),
                      static_cast<uint64_t>(idle_per_sec * kW / 1'000'000'000)};
}

TEST(AdaptPolicy, KeepsEveryPWithoutContention) {
  adapt_state s;
  int64_t now = 1'000'000'000;
  for (int i = 0; i < 100; i++, now += kW) EXPECT_EQ(adapt_step(s, 4, window(0.05, 50'000), now), 4);
}

TEST(AdaptPolicy, KeepsEveryPWhenCpuBound) {
  // Waiting for a CPU, but the Ps never run dry: a CPU-bound program keeps its share.
  adapt_state s;
  int64_t now = 1'000'000'000;
  for (int i = 0; i < 100; i++, now += kW) EXPECT_EQ(adapt_step(s, 4, window(1.5, 100), now), 4);
}

TEST(AdaptPolicy, LowersOneStepAWindowDownToOne) {
  adapt_state s;
  int64_t now = 1'000'000'000;
  EXPECT_EQ(adapt_step(s, 4, window(0.4, 8'000), now), 3);
  EXPECT_EQ(s.probe_at, now + kAdaptMinHoldNs);
  EXPECT_EQ(adapt_step(s, 4, window(0.4, 8'000), now += kW), 2);
  EXPECT_EQ(adapt_step(s, 4, window(0.4, 8'000), now += kW), 1);
  EXPECT_EQ(adapt_step(s, 4, window(0.4, 8'000), now += kW), 1);
  // Quiet windows before the hold is over change nothing.
  EXPECT_EQ(adapt_step(s, 4, window(0.0, 0), now += kW), 1);
}

TEST(AdaptPolicy, ProbesAfterTheHoldAndBacksOffWhenTheProbeFails) {
  adapt_state s;
  int64_t now = 1'000'000'000;
  EXPECT_EQ(adapt_step(s, 2, window(0.4, 8'000), now), 1);
  int64_t hold = kAdaptMinHoldNs;
  for (int round = 0; round < 6; round++) {
    // Still contended at one P: no change until the hold ends.
    now = s.probe_at - kW;
    EXPECT_EQ(adapt_step(s, 2, window(0.02, 2'000), now), 1);
    now = s.probe_at;
    EXPECT_EQ(adapt_step(s, 2, window(0.02, 2'000), now), 2) << "round " << round;
    // The probe brings the contention back: lower again, and hold twice as long.
    now += kW;
    EXPECT_EQ(adapt_step(s, 2, window(0.4, 8'000), now), 1);
    hold = std::min(hold * 2, kAdaptMaxHoldNs);
    EXPECT_EQ(s.hold_ns, hold) << "round " << round;
    EXPECT_EQ(s.probe_at, now + hold);
  }
  EXPECT_EQ(s.hold_ns, kAdaptMaxHoldNs);
  // A probe that holds: the limit stays up, and a later lowering starts the backoff over.
  now = s.probe_at;
  EXPECT_EQ(adapt_step(s, 2, window(0.0, 100), now), 2);
  for (int i = 0; i < 20; i++) EXPECT_EQ(adapt_step(s, 2, window(0.01, 100), now += kW), 2);
  EXPECT_EQ(adapt_step(s, 2, window(0.4, 8'000), now += kW), 1);
  EXPECT_EQ(s.hold_ns, kAdaptMinHoldNs);
}

TEST(AdaptPolicy, ThresholdsAreATenthOfACpuAndFourHundredIdlesASecond) {
  EXPECT_FALSE(detail::adapt_contended(window(0.09, 0)));
  EXPECT_TRUE(detail::adapt_contended(window(0.11, 0)));
  EXPECT_FALSE(detail::adapt_bursty(window(0, 380)));
  EXPECT_TRUE(detail::adapt_bursty(window(0, 400)));
  EXPECT_FALSE(detail::adapt_bursty(adapt_sample{0, 0, 5}));
  adapt_state s;
  EXPECT_EQ(adapt_step(s, 1, window(5.0, 100'000), 1), 1);  // one P: nothing to lower
}

// The runtime, for real.

bool cpu_pressure_readable() {
  std::ifstream f("/proc/pressure/cpu");
  std::string some;
  return static_cast<bool>(f >> some) && some == "some";
}

// Busy threads outside the runtime, more than there are CPUs: one of them always waits
// for a CPU, so the machine has nothing to spare. They run at nice 19, so that the
// runtime's threads still get a CPU as soon as they wake and the Ps keep running dry:
// with hogs at the default priority, a debug count here saw 110 to 1,400 idle
// transitions a second, mostly below the policy's threshold of 400, so the test
// measured the kernel's scheduler as much as the runtime's policy (about 6,800 a
// second at nice 19).
struct cpu_hogs {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  explicit cpu_hogs(int n) {
    for (int i = 0; i < n; i++)
      threads.emplace_back([this] {
        setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), 19);  // this thread only
        while (!stop.load(std::memory_order_relaxed)) {
        }
      });
  }
  void join() {
    stop = true;
    for (auto& t : threads) t.join();
    threads.clear();
  }
  ~cpu_hogs() { join(); }
};

// n goroutines that each run step() over and over until stop(): a test's load. stop()
// (or the destructor) waits for all of them to return.
class goroutine_load {
 public:
  goroutine_load(int n, std::function<void()> step) : step_(std::move(step)) {
    wg_.add(n);
    for (int i = 0; i < n; i++)
      go([this] {
        while (!stop_.load(std::memory_order_relaxed)) step_();
        wg_.done();
      });
  }
  void stop() {
    if (stop_.exchange(true)) return;
    wg_.wait();
  }
  ~goroutine_load() { stop(); }

 private:
  std::function<void()> step_;
  std::atomic<bool> stop_{false};
  wait_group wg_;
};

// Sets WEFTDEBUG (read by run()) for a scope, null to unset it, and puts it back after.
class scoped_weftdebug {
 public:
  scoped_weftdebug() {
    const char* old = getenv("WEFTDEBUG");
    had_ = old != nullptr;
    if (had_) saved_ = old;
  }
  explicit scoped_weftdebug(const char* v) : scoped_weftdebug() { set(v); }
  ~scoped_weftdebug() {
    if (had_)
      setenv("WEFTDEBUG", saved_.c_str(), 1);
    else
      unsetenv("WEFTDEBUG");
  }
  void set(const char* v) {
    if (v)
      setenv("WEFTDEBUG", v, 1);
    else
      unsetenv("WEFTDEBUG");
  }

 private:
  std::string saved_;
  bool had_ = false;
};

// Waits (bounded) for the active limit to become want; returns the last value seen.
int32_t wait_for_limit(int32_t want, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  int32_t v = read_sched_stats().active_procs_limit;
  while (v != want && std::chrono::steady_clock::now() < deadline) {
    sleep_for(5ms);
    v = read_sched_stats().active_procs_limit;
  }
  return v;
}

TEST(AdaptRuntime, LowersTheLimitUnderContentionAndRaisesItAfterwards) {
  if (!cpu_pressure_readable()) GTEST_SKIP() << "no /proc/pressure/cpu (PSI) on this kernel";
  scoped_weftdebug env(nullptr);
  run_checked([] {
    ASSERT_EQ(max_procs(), 2);
    EXPECT_EQ(read_sched_stats().active_procs_limit, 2);
    uint64_t lowered_before = read_sched_stats().procs_limit_lowered;
    {
      // Bursty work: a few goroutines that each work briefly and sleep 1 ms, so Ps keep
      // running dry, however slow the build (TSan): the bursts are short next to the
      // sleeps. Meanwhile three busy threads on two CPUs keep some thread waiting for a
      // CPU.
      goroutine_load bursts(4, [] {
        volatile int x = 0;
        for (int k = 0; k < 200; k++) x = x + k;
        sleep_for(1ms);
      });
      cpu_hogs hogs(3);
      EXPECT_EQ(wait_for_limit(1, 20s), 1) << "the limit did not come down under contention";
      hogs.join();
      bursts.stop();
    }
    EXPECT_GT(read_sched_stats().procs_limit_lowered, lowered_before);
    // The machine is free again, and the work is CPU-bound (its Ps never run dry): a
    // probe raises the limit and it stays up. Holds back off to at most 8 s.
    goroutine_load busy(2, [] {
      volatile int x = 0;
      for (int k = 0; k < 2000; k++) x = x + k;
      yield();
    });
    EXPECT_EQ(wait_for_limit(2, 30s), 2) << "the limit did not come back up";
    busy.stop();
  }, {.max_procs = 2});
}

// A bursty program leaves every P idle between its bursts, and sysmon, backed off, sleeps
// until the next timer each time. Those short sleeps belong to the window: when each
// one restarted it, no window ever lasted the 50 ms it needs and the limit never moved
// (CI saw the test above fail that way: 20 s under contention without a single sample).
TEST(AdaptRuntime, WindowsCompleteWhileEveryPIsIdleBetweenBursts) {
  if (!cpu_pressure_readable()) GTEST_SKIP() << "no /proc/pressure/cpu (PSI) on this kernel";
  scoped_weftdebug env(nullptr);
  run_checked([] {
    goroutine_load bursts(2, [] { sleep_for(2ms); });
    // A window ends at sysmon's first tick 50 ms after it began, and sysmon ticks at
    // least every 10 ms, so a second holds about 16 windows; five leave room for a slow,
    // shared machine. Restarted windows completed about one a second (or none) here.
    uint64_t before = detail::sched.nadapt_windows.load();
    sleep_for(1s);
    EXPECT_GE(detail::sched.nadapt_windows.load() - before, 5u) << "sysmon kept restarting its window";
    bursts.stop();
  }, {.max_procs = 2});
}

// With the limit pinned at one of two Ps, Go's guarantees still hold.
class PinnedToOneP : public ::testing::Test {
 protected:
  void SetUp() override { env_.set("activeprocs=1"); }
  scoped_weftdebug env_;
};

TEST_F(PinnedToOneP, TheLimitIsReportedAndHolds) {
  run_checked([] {
    sched_stats s = read_sched_stats();
    EXPECT_EQ(s.procs, 2);
    EXPECT_EQ(s.active_procs_limit, 1);
    // Plenty of runnable work: with the limit, at most one P runs at a time.
    std::atomic<int> running{0}, most{0};
    wait_group wg;
    constexpr int kN = 64;
    wg.add(kN);
    for (int i = 0; i < kN; i++)
      go([&] {
        for (int r = 0; r < 50; r++) {
          int now = running.fetch_add(1) + 1;
          int m = most.load();
          while (now > m && !most.compare_exchange_weak(m, now)) {
          }
          volatile int x = 0;
          for (int k = 0; k < 200; k++) x = x + k;
          running.fetch_sub(1);
          yield();
        }
        wg.done();
      });
    wg.wait();
    // sysmon starts a P beyond the limit when the running P's thread has not scheduled
    // for 10 ms (its progress guarantee). On a loaded machine that happens when the
    // kernel keeps that thread off its CPU, and under the sanitizers this test runs long
    // enough for it to happen (seen once under TSan with ctest -j2): check it only in
    // the plain build, where the whole test takes about 2 ms.
    if (!testing::kSanitized) EXPECT_EQ(most.load(), 1);
    EXPECT_EQ(read_sched_stats().active_procs_limit, 1);
  }, {.max_procs = 2});
}

TEST_F(PinnedToOneP, AGoroutineThatNeverYieldsDoesNotStarveTheOthers) {
  // The spinner has no check point and holds the one P that may run, with main queued
  // behind it. Only another P can run main and the setter: sysmon's retake of the
  // hogged P starts one beyond the limit.
  run_checked([] {
    std::atomic<bool> started{false}, flag{false};
    wait_group wg;
    wg.add(2);
    go([&] {
      started.store(true);
      while (!flag.load(std::memory_order_acquire)) {
      }
      wg.done();
    });
    while (!started.load()) yield();
    go([&] {
      flag.store(true, std::memory_order_release);
      wg.done();
    });
    wg.wait();
    EXPECT_TRUE(flag.load());
  }, {.max_procs = 2});
}

// Timers live on the P that armed them. Once the limit drops, an idle P's timers have
// no M of their own: the running P runs them first thing in find_runnable, even while
// its own queue never drains. Without that, only sysmon would get to them, once they
// are a millisecond late (kAdaptTimerLateNs).
class LimitDropsUnderTimers : public PinnedToOneP {
  void SetUp() override {
    env_.set("activeprocs=2");  // pinned (sysmon leaves it alone), at 2 for now
  }
};

// One run of the scenario: sleepers arm timers while both Ps run, then the limit drops
// to one and the busy goroutines pin the running P. Returns, for the timers armed on the
// P that went idle and due after it did, how many of their goroutines woke up on the
// running P and how late they were. Leaves the limit at one.
struct idle_p_timers {
  int on_idle = 0;     // timers armed on the P that went idle, due after it went idle
  int on_active = 0;   // timers armed on the running P
  int woke_active = 0; // idle-P sleepers that woke up on the running P
  int64_t late_p90 = 0;
};

idle_p_timers run_idle_p_timers_scenario() {
  constexpr int kSleepers = 200;
  constexpr int kBusy = 4;
  detail::sched.maxactive.store(2);
  std::atomic<bool> pause{false}, stop{false};
  std::atomic<int> armed{0}, paused{0};
  chan<int> resume(0);
  struct result {
    int32_t p;     // where the timer was armed
    int32_t woke;  // where the sleeper ran after it fired
    int64_t due;
    int64_t late;
  };
  std::vector<result> results(kSleepers);
  wait_group busy, sleepers;
  busy.add(kBusy);
  sleepers.add(kSleepers);
  // Busy goroutines keep a P's run queue from draining, except while paused.
  for (int i = 0; i < kBusy; i++)
    go([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        if (pause.load()) {
          paused++;
          resume.recv();
        }
        volatile int x = 0;
        for (int k = 0; k < 300; k++) x = x + k;
        yield();
      }
      busy.done();
    });
  // Both Ps run: each sleeper arms a 40-60 ms timer on whichever P it runs on.
  for (int i = 0; i < kSleepers; i++)
    go([&, i] {
      auto d = std::chrono::microseconds(40'000 + (i * 97) % 20'000);
      // Half of them try to arm on each P (yields let the Ps steal them around).
      for (int k = 0; k < 1000 && detail::current_p_id() != i % 2; k++) yield();
      results[i].p = detail::current_p_id();
      armed++;
      int64_t t0 = detail::nanotime();
      results[i].due = t0 + std::chrono::nanoseconds(d).count();
      sleep_for(d);
      results[i].late = detail::nanotime() - t0 - std::chrono::nanoseconds(d).count();
      results[i].woke = detail::current_p_id();
      sleepers.done();
    });
  while (armed.load() < kSleepers) yield();
  // Drop the limit and let both Ps drain, then resume the busy goroutines: they all
  // land on main's P, the one that may run, and the other P stays idle with its timers.
  detail::sched.maxactive.store(1);
  pause = true;
  while (paused.load() < kBusy) yield();
  while (detail::sched.npidle.load() < 1) yield();  // the other P has drained
  int64_t idle_since = detail::nanotime();
  int32_t active = detail::current_p_id();
  pause = false;
  for (int i = 0; i < kBusy; i++) resume.send(1);
  sleepers.wait();
  stop = true;
  busy.wait();
  idle_p_timers out;
  std::vector<int64_t> late;
  for (const result& r : results) {
    if (r.due <= idle_since) continue;  // fired, or was due, while both Ps could run
    if (r.p != active) {
      out.on_idle++;
      late.push_back(r.late);
      if (r.woke == active) out.woke_active++;
    } else {
      out.on_active++;
    }
  }
  if (!late.empty()) {
    std::sort(late.begin(), late.end());
    out.late_p90 = late[late.size() * 9 / 10];
  }
  return out;
}

TEST_F(LimitDropsUnderTimers, AnIdlePsTimersAreRunByTheRunningP) {
  run_checked([] {
    // The scenario needs timers on the P that goes idle, due after it has gone idle. On
    // a loaded machine the kernel can keep that P's thread off its CPU while the
    // sleepers arm, and then they all arm on main's P (seen in CI, and in 3 of 40 runs
    // here next to two CPU hogs); or the arming takes so long that the timers are due
    // before the limit drops (1 in 80 runs). It can also keep the running P's thread
    // off its CPU for the whole 20 ms in which the timers fall due, and then sysmon
    // runs them all, as it should (2 in 150 runs next to two hogs). So a run that
    // shows nothing is run again, up to five times. With find_runnable's step removed,
    // every run shows nothing (0 woke on the running P in 8 of 8 runs), so the test
    // still fails then.
    idle_p_timers r;
    int attempts = 0;
    while (attempts < 5 && (r.on_idle == 0 || r.woke_active == 0)) {
      r = run_idle_p_timers_scenario();
      attempts++;
    }
    ASSERT_GT(r.on_idle, 0) << "in " << attempts << " attempts no sleeper armed a timer on the P that went idle, due after it had";
    // The running P ran the idle P's timers: their goroutines woke up on it. Without
    // that, sysmon starts an M for the idle P once a timer is a millisecond late, and
    // every such goroutine wakes up there (0 of them on the running P in 8 of 8 runs
    // with find_runnable's step disabled; 8-100% of them with it, on a loaded machine).
    // The share is not asserted higher: a loaded machine can keep the running P's
    // thread off its CPU for a millisecond, and then sysmon steps in, as it should.
    EXPECT_GT(r.woke_active, 0) << "none of the " << r.on_idle << " timers on the idle P (" << r.on_active
                                << " on the running one) was run by the running P; 90th percentile lateness "
                                << r.late_p90 << " ns";
  }, {.max_procs = 2});
}

TEST(AdaptRuntime, OffByOptionOrWeftdebug) {
  scoped_weftdebug env(nullptr);
  run_checked([] { EXPECT_EQ(read_sched_stats().active_procs_limit, 3); }, {.max_procs = 3, .adaptive_procs = false});
  EXPECT_FALSE(detail::sched.adaptive);
  env.set("adaptprocs=0");
  run_checked([] {}, {.max_procs = 2});
  EXPECT_FALSE(detail::sched.adaptive);
  env.set("activeprocs=5");  // pinned: clamped to max_procs, and sysmon leaves it
  run_checked([] { EXPECT_EQ(read_sched_stats().active_procs_limit, 2); }, {.max_procs = 2});
  EXPECT_FALSE(detail::sched.adaptive);
  env.set(nullptr);
  run_checked([] {}, {.max_procs = 1});
  EXPECT_FALSE(detail::sched.adaptive);  // one P: nothing to adapt
  run_checked([] {}, {.max_procs = 2});
  EXPECT_EQ(detail::sched.adaptive, cpu_pressure_readable());
}

}  // namespace
}  // namespace weft
