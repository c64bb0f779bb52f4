// The scheduler: run/go, stealing, runnext fairness, preemption, yield, accounting.
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "runtime/chan.h"
#include "runtime/internal/sema.h"
#include "runtime/internal/timer.h"
#include "runtime/sched_stats.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;
using testing::stress;

int64_t now_ns() { return detail::nanotime(); }

TEST(Scheduler, RunReturnsAfterMainGoroutineReturns) {
  bool ran = false;
  run_checked([&] {
    EXPECT_EQ(goroutine_id(), 1u);
    EXPECT_EQ(num_goroutine(), 1);
    ran = true;
  });
  EXPECT_TRUE(ran);
  EXPECT_EQ(num_goroutine(), 0);
  EXPECT_EQ(max_procs(), 0);
}

TEST(Scheduler, RunCanBeCalledAgainAfterReturning) {
  for (int i = 0; i < 3; i++) {
    int n = 0;
    run_checked([&] {
      wait_group wg;
      wg.add(10);
      for (int k = 0; k < 10; k++) go([&] { __atomic_add_fetch(&n, 1, __ATOMIC_RELAXED); wg.done(); });
      wg.wait();
    });
    EXPECT_EQ(n, 10);
  }
}

// A G runs goroutine after goroutine on one TSan fiber. Each life must leave TSan's
// shadow call stack as it found it (exit_frames_done in switch.h): 70,000 lives on one G
// are more than twice what overflowed it when the exit path's frames were left behind.
// Checks the G reuse too: with one P and one goroutine at a time, a handful of Gs serve
// every spawn.
TEST(Scheduler, ManyLivesOnOneGStayWithinTsansShadowStack) {
  run_checked([] {
    constexpr int n = 70'000;
    chan<int> c(0);
    int64_t sum = 0;
    for (int i = 0; i < n; i++) {
      go([c, i] { c.send(i); });
      sum += c.recv().value;
    }
    EXPECT_EQ(sum, int64_t{n} * (n - 1) / 2);
  }, {.max_procs = 1});
}

TEST(Scheduler, MaxProcsComesFromOptions) {
  run_checked([] { EXPECT_EQ(max_procs(), 3); }, {.max_procs = 3});
  run_checked([] { EXPECT_EQ(max_procs(), 1); }, {.max_procs = 1});
}

TEST(Scheduler, GoroutineIdsAreUniqueAndCreatorIsRecorded) {
  run_checked([] {
    constexpr int n = 500;
    std::vector<uint64_t> ids(n);
    wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; i++)
      go([&, i] {
        ids[i] = goroutine_id();
        EXPECT_EQ(current_goroutine()->parent_id, 1u);
        wg.done();
      });
    wg.wait();
    std::set<uint64_t> unique(ids.begin(), ids.end());
    EXPECT_EQ(unique.size(), static_cast<size_t>(n));
    EXPECT_EQ(unique.count(1), 0u);
    EXPECT_EQ(unique.count(0), 0u);
  });
}

TEST(Scheduler, NumGoroutineCountsLiveGoroutines) {
  run_checked([] {
    detail::sema gate;
    wait_group started, finished;
    constexpr int n = 100;
    started.add(n);
    finished.add(n);
    for (int i = 0; i < n; i++)
      go([&] {
        started.done();
        gate.acquire(wait_reason::semacquire);
        finished.done();
      });
    started.wait();
    EXPECT_EQ(num_goroutine(), n + 1);
    gate.release(n);
    finished.wait();
  });
}

TEST(Scheduler, SpawnsAMillionGoroutines) {
  const int n = stress(1'000'000, 20'000);
  std::atomic<int64_t> sum{0};
  run_checked([&] {
    wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; i++)
      go([&sum, &wg, i] {
        sum.fetch_add(i, std::memory_order_relaxed);
        wg.done();
      });
    wg.wait();
  });
  EXPECT_EQ(sum.load(), int64_t{n} * (n - 1) / 2);
}

TEST(Scheduler, StealingKeepsBothPsBusy) {
  run_checked([] {
    constexpr int n = 200;
    std::atomic<int> per_p[2] = {0, 0};
    wait_group wg;
    wg.add(n);
    // All spawned from one goroutine onto one P: only stealing spreads them. Each one
    // notes the P it started on and then waits (bounded) until both Ps have started
    // one, so a share does not depend on how long the OS leaves each P's thread alone.
    for (int i = 0; i < n; i++)
      go([&] {
        per_p[detail::current_p_id()].fetch_add(1);
        int64_t give_up = now_ns() + 10'000'000'000;
        while ((per_p[0].load() == 0 || per_p[1].load() == 0) && now_ns() < give_up) preempt_check();
        wg.done();
      });
    wg.wait();
    EXPECT_EQ(per_p[0] + per_p[1], n);
    EXPECT_GT(per_p[0].load(), 0) << "P0 ran " << per_p[0] << ", P1 ran " << per_p[1];
    EXPECT_GT(per_p[1].load(), 0) << "P0 ran " << per_p[0] << ", P1 ran " << per_p[1];
  }, {.max_procs = 2});
}

// Two goroutines that keep readying each other hand the time slice back and forth
// through runnext. A third runnable goroutine must still run soon (kInheritCap), not
// when the pair is done or sysmon steps in 10 ms later.
TEST(Scheduler, RunnextPingPongDoesNotStarveAThirdGoroutine) {
  run_checked([] {
    constexpr int rounds = 100'000;
    detail::sema to_a, to_b;
    std::atomic<int> round{0};
    std::atomic<int> third_ran_at{-1};
    int spawned_at = -1;
    wait_group wg;
    wg.add(3);
    go([&] {  // A
      for (int i = 0; i < rounds; i++) {
        if (i == 100) {
          spawned_at = round.load();
          go([&] {
            third_ran_at = round.load();
            wg.done();
          });
        }
        to_b.release();
        to_a.acquire(wait_reason::semacquire);
        round.fetch_add(1, std::memory_order_relaxed);
      }
      wg.done();
    });
    go([&] {  // B
      for (int i = 0; i < rounds; i++) {
        to_b.acquire(wait_reason::semacquire);
        to_a.release();
      }
      wg.done();
    });
    wg.wait();
    ASSERT_GE(third_ran_at.load(), 0);
    EXPECT_LT(third_ran_at.load() - spawned_at, 50)
        << "third goroutine waited " << third_ran_at - spawned_at << " ping-pong rounds";
  }, {.max_procs = 1});
}

// With two Ps each held by a goroutine in a tight loop that only calls preempt_check(),
// a goroutine queued behind one of them runs once sysmon asks that loop to yield.
TEST(Scheduler, PreemptCheckLetsOthersOnThePRunWithinAbout20ms) {
  run_checked([] {
    std::atomic<bool> stop{false};
    std::atomic<int64_t> queued_at{0}, ran_at{0};
    std::atomic<int> hogging{0};
    wait_group wg;
    wg.add(3);
    auto hog = [&](bool spawn_victim) {
      hogging.fetch_add(1);
      while (hogging.load() < 2 && !stop.load()) preempt_check();  // both Ps held
      if (spawn_victim) {
        queued_at = now_ns();
        go([&] {  // lands in this P's runnext; the other P is busy too
          ran_at = now_ns();
          stop = true;
          wg.done();
        });
      }
      int64_t give_up = now_ns() + 2'000'000'000;
      while (!stop.load() && now_ns() < give_up) preempt_check();
      stop = true;
      wg.done();
    };
    go([&] { hog(true); });
    go([&] { hog(false); });
    wg.wait();
    ASSERT_NE(ran_at.load(), 0);
    double ms = (ran_at - queued_at) / 1e6;
    std::printf("preemption latency: %.2f ms\n", ms);
    EXPECT_LT(ms, 500.0);  // sysmon preempts after 10 ms; without preemption, 2 s
  }, {.max_procs = 2});
}

TEST(Scheduler, YieldAlternatesGoroutinesOnOneP) {
  run_checked([] {
    std::vector<int> order;
    wait_group wg;
    wg.add(2);
    for (int who = 0; who < 2; who++)
      go([&, who] {
        for (int i = 0; i < 5; i++) {
          order.push_back(who);
          yield();
        }
        wg.done();
      });
    wg.wait();
    ASSERT_EQ(order.size(), 10u);
    for (size_t i = 1; i < order.size(); i++) EXPECT_NE(order[i], order[i - 1]) << "at " << i;
  }, {.max_procs = 1});
}

TEST(Scheduler, PerSpawnStackSizeIsHonoured) {
  run_checked([] {
    wait_group wg;
    wg.add(1);
    go(spawn_options{.stack_size = 1 << 20}, [&] {
      detail::g* gp = current_goroutine();
      EXPECT_GE(gp->stack_hi - gp->stack_lo, 1 << 20);
      volatile char big[768 * 1024];  // would overflow the 64 KiB default
      big[0] = 1;
      big[sizeof(big) - 1] = 2;
      EXPECT_EQ(big[0] + big[sizeof(big) - 1], 3);
      wg.done();
    });
    wg.wait();
    detail::g* self = current_goroutine();
    EXPECT_LT(self->stack_hi - self->stack_lo, 1 << 20);
  });
}

TEST(Scheduler, DefaultStackSizeComesFromOptions) {
  run_checked([] {
    detail::g* self = current_goroutine();
    EXPECT_GE(self->stack_hi - self->stack_lo, 300 * 1024);
  }, {.stack_size = 300 * 1024});
}

TEST(Scheduler, GoFromAForeignThreadRunsTheGoroutine) {
  run_checked([] {
    wait_group wg;
    wg.add(1);
    std::atomic<uint64_t> id{0};
    std::thread t([&] {
      go([&] {
        id = goroutine_id();
        wg.done();
      });
    });
    t.join();
    wg.wait();
    EXPECT_GT(id.load(), 1u);
  });
}

double cpu_seconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// A timer due on a P whose goroutine never yields is run by another M, even while some
// M counts as spinning. Seam: the spinner is a count with no thread behind it, as when a
// woken M has not got a CPU yet. The idle M then skips stealing (enough spinners); it
// must still run the due timer, not give up its P, poll with a zero timeout and loop.
TEST(Scheduler, AnIdleMRunsTimersDueOnABusyPWhileAnotherMCountsAsSpinning) {
  run_checked([] {
    std::atomic<int64_t> fired{0};
    detail::timer t;
    t.f = [](detail::timer*, void* arg, uintptr_t) {
      static_cast<std::atomic<int64_t>*>(arg)->store(detail::nanotime());
    };
    t.arg = &fired;
    detail::sched.nmspinning.fetch_add(1);
    int64_t when = now_ns() + 5'000'000;
    detail::timer_add(&t, when);  // on this goroutine's P, which it now holds
    int64_t limit = when + 2'000'000'000;
    while (fired.load() == 0 && now_ns() < limit) {
    }
    detail::sched.nmspinning.fetch_sub(1);
    detail::timer_stop(&t);
    ASSERT_NE(fired.load(), 0) << "the due timer did not run while its P was busy";
    EXPECT_LT(fired.load() - when, 1'500'000'000) << "the due timer ran late";
  }, {.max_procs = 2});
}

// CPU ticks (user + system) of each of this process's threads, by "tid name".
std::map<std::string, long> thread_ticks() {
  std::map<std::string, long> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    std::FILE* f = std::fopen((e.path() / "stat").c_str(), "r");
    if (!f) continue;
    char buf[1024];
    std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    std::string line(buf, n);
    auto open = line.find('('), close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    long utime = 0, stime = 0;
    // After ") ": state is field 3; utime and stime are fields 14 and 15.
    if (std::sscanf(line.c_str() + close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %ld %ld", &utime,
                    &stime) != 2)
      continue;
    out[e.path().filename().string() + " " + line.substr(open + 1, close - open - 1)] = utime + stime;
  }
  return out;
}

// An idle process (goroutines parked, one sleeping) must not burn CPU: Ms sleep on
// futexes, one M sleeps in the poller until the timer, sysmon sleeps while all Ps idle.
TEST(Scheduler, IdleProcessUsesAboutZeroCpu) {
  run_checked([] {
    detail::sema gate;
    constexpr int n = 100;
    wait_group done, started;
    done.add(n);
    started.add(n);
    for (int i = 0; i < n; i++)
      go([&] {
        started.done();
        gate.acquire(wait_reason::semacquire);
        done.done();
      });
    started.wait();
    sleep_for(50ms);  // each goroutine is a few instructions from parking: let them
    auto threads_before = thread_ticks();
    double before = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    sleep_for(1s);
    double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double used = cpu_seconds() - before;
    std::printf("idle: %.2f ms CPU over %.2f s wall (%.3f%% of one core)\n", used * 1e3, wall,
                100 * used / wall);
    // Which thread burned it (weft-m, weft-sysmon, or one of the sanitizer's own): seen
    // once in CI under TSan (92% of a core), and at 6-12% in 2 of 275 runs next to other
    // TSan tests.
    std::string busiest;
    for (const auto& [name, ticks] : thread_ticks()) {
      long d = ticks - (threads_before.count(name) ? threads_before[name] : 0);
      if (d > 0) busiest += " " + name + ":" + std::to_string(d) + "t";
    }
    sched_stats st = read_sched_stats();
    EXPECT_LT(used / wall, 0.02) << "threads that ran (clock ticks):" << busiest << "; procs " << st.procs
                                 << ", active limit " << st.active_procs_limit << " (lowered "
                                 << st.procs_limit_lowered << " times), Ms " << st.threads << " ("
                                 << st.idle_threads << " idle, " << st.spinning_threads << " spinning)";
    gate.release(n);
    done.wait();
  }, {.max_procs = 2});
}

}  // namespace
}  // namespace weft
