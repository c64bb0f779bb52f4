// Channel timers: after, timer, ticker; Go 1.23's no-stale-values and no-leak rules.
#include <atomic>
#include <random>
#include <vector>

#include "runtime/chan_timer.h"
#include "runtime/internal/timer.h"
#include "runtime/select.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;
using testing::stress;

TEST(ChanTimer, AfterDeliversTheTimeOnce) {
  run_checked([] {
    auto t0 = std::chrono::steady_clock::now();
    chan<time_point> c = after(10ms);
    auto [when, ok] = c.recv();
    EXPECT_TRUE(ok);
    EXPECT_GE(when - t0, 10ms);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 10ms);
    EXPECT_FALSE(c.try_recv().has_value()) << "fires once";
  });
}

TEST(ChanTimer, AfterWorksAsASelectTimeout) {
  run_checked([] {
    chan<int> never(0);
    int v;
    time_point tp;
    EXPECT_EQ(select(case_recv(never, v), case_recv(after(5ms), tp)), 1);
  });
}

// The seeds' time.After leak: a loop that selects on after(1h) and something that is
// always ready would keep a million armed timers in Go before 1.23. Here a timer whose
// channel is dropped is stopped and freed at once.
TEST(ChanTimer, AfterInALoopOfAMillionSelectsKeepsMemoryFlat) {
  run_checked([] {
    chan<int> ready(1);
    const int n = stress(1'000'000, 50'000);
    long rss0 = 0;
    int v;
    time_point tp;
    for (int i = 0; i < n; i++) {
      ready.send(i);
      EXPECT_EQ(select(case_recv(ready, v), case_recv(after(1h), tp)), 0);
      if (i == 1000) rss0 = testing::rss_bytes();
    }
    long grown = testing::rss_bytes() - rss0;
    std::printf("after(1h) x %d: %ld KB RSS growth, %lld timers pending\n", n, grown / 1024,
                static_cast<long long>(detail::timers_pending()));
    EXPECT_EQ(detail::timers_pending(), 0);
    // ASan's quarantine keeps freed memory on purpose: RSS says nothing there.
    if (!testing::kSanitized) EXPECT_LT(grown, 8L << 20);
  });
}

TEST(ChanTimer, StopBeforeFiringReturnsTrueAndNothingIsEverReceived) {
  run_checked([] {
    timer t(300ms);  // long enough to be stopped first on a loaded machine
    EXPECT_TRUE(t.stop());
    EXPECT_FALSE(t.stop());
    // Wait past the deadline on another timer: nothing arrives on the stopped one.
    after(400ms).recv();
    EXPECT_FALSE(t.c().try_recv().has_value());
  });
}

TEST(ChanTimer, StopAfterFiringReturnsFalseAndDrainsTheStaleValue) {
  run_checked([] {
    timer t(1ms);
    after(20ms).recv();  // t has fired into its buffer by now
    EXPECT_FALSE(t.stop());
    EXPECT_FALSE(t.c().try_recv().has_value()) << "no stale value after stop (Go 1.23)";
  });
}

TEST(ChanTimer, ResetReportsWhetherTheTimerWasActive) {
  run_checked([] {
    timer t(1h);
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_TRUE(t.reset(10ms));
    t.c().recv();
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 10ms);
    EXPECT_FALSE(t.reset(5ms)) << "it had fired";
    t.c().recv();
    // Reset after firing without receiving: the stale value is gone.
    after(20ms).recv();
    EXPECT_FALSE(t.reset(1h));
    EXPECT_FALSE(t.c().try_recv().has_value());
    EXPECT_TRUE(t.stop());
  });
}

TEST(ChanTimer, TickerTicksUntilStopped) {
  run_checked([] {
    auto t0 = std::chrono::steady_clock::now();
    ticker k(5ms);
    for (int i = 0; i < 4; i++) EXPECT_TRUE(k.c().recv().ok);
    EXPECT_GE(std::chrono::steady_clock::now() - t0, 20ms);
    k.stop();
    after(30ms).recv();
    EXPECT_FALSE(k.c().try_recv().has_value()) << "a stopped ticker never ticks again";
    k.reset(2ms);
    EXPECT_TRUE(k.c().recv().ok);
    k.stop();
  });
}

TEST(ChanTimer, TickerDropsTicksForASlowReader) {
  run_checked([] {
    ticker k(1ms);
    after(30ms).recv();            // ~30 ticks happen; the buffer holds one
    auto drained_from = std::chrono::steady_clock::now();
    EXPECT_TRUE(k.c().try_recv().has_value());
    // The ticker runs on: a fresh tick may land between the two receives on a slow
    // machine. A second value is only right if it is that fresh tick, not an old one
    // kept in the buffer (which would date from about 28 ms before the first receive).
    // 10 ms of slack: a tick's time is read just before it is offered.
    if (auto second = k.c().try_recv())
      EXPECT_GE(second->value, drained_from - 10ms) << "a second, stale tick was buffered";
    k.stop();
  });
}

TEST(ChanTimer, NonPositiveTickerPeriodThrows) {
  run_checked([] { EXPECT_THROW(ticker(0ms), std::invalid_argument); });
}

// stop() races the firing: true => no value ever arrives; false => the timer fired
// (and stop drained it).
TEST(ChanTimer, StopRacingTheFiringNeverLeavesAStaleValue) {
  run_checked([] {
    const int n = stress(2000, 200);
    std::mt19937 rng(3);
    int stopped = 0;
    for (int i = 0; i < n; i++) {
      // Stop somewhere around the deadline: before it, during the firing, or after.
      timer t(std::chrono::microseconds(rng() % 200));
      sleep_for(std::chrono::microseconds(rng() % 300));
      stopped += t.stop();
      EXPECT_FALSE(t.c().try_recv().has_value()) << "iteration " << i;
    }
    std::printf("stopped %d of %d before firing\n", stopped, n);
    EXPECT_EQ(detail::timers_pending(), 0);
  }, {.max_procs = 2});
}

TEST(ChanTimer, DroppingATimerHandleStopsIt) {
  run_checked([] {
    for (int i = 0; i < 1000; i++) {
      timer t(1h);
      ticker k(1h);
    }
    EXPECT_EQ(detail::timers_pending(), 0);
  });
}

}  // namespace
}  // namespace weft
