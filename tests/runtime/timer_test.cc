// Timers: sleep, per-P heap ordering, after_func with Go's stop/reset return values.
#include <algorithm>
#include <atomic>
#include <random>
#include <vector>

#include "runtime/internal/timer.h"
#include "runtime/timer.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;
using testing::stress;

TEST(Timer, SleepForWaitsAtLeastTheDuration) {
  run_checked([] {
    for (auto d : {1ms, 5ms, 20ms}) {
      auto t0 = std::chrono::steady_clock::now();
      sleep_for(d);
      EXPECT_GE(std::chrono::steady_clock::now() - t0, d);
    }
    // A negative or zero duration returns at once. -10 s, not -5 ms: a sleep that took
    // the magnitude would show against a bound that a loaded CI machine cannot break.
    auto t0 = std::chrono::steady_clock::now();
    sleep_for(-10s);
    sleep_for(0ms);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  });
}

TEST(Timer, SleepUntilWakesAfterTheDeadline) {
  run_checked([] {
    auto deadline = std::chrono::steady_clock::now() + 10ms;
    sleep_until(deadline);
    EXPECT_GE(std::chrono::steady_clock::now(), deadline);
  });
}

TEST(Timer, ManySleepersAllWake) {
  run_checked([] {
    const int n = stress(10'000, 1'000);
    wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; i++)
      go([&, i] {
        sleep_for(std::chrono::microseconds(i % 5000));
        wg.done();
      });
    wg.wait();
  });
}

// Timers on one P's heap fire in deadline order.
TEST(Timer, HeapFiresInDeadlineOrder) {
  run_checked([] {
    constexpr int n = 500;
    struct rec {
      detail::timer t;
      int64_t when;
      std::atomic<int>* seq;
      int fired_seq = -1;
    };
    std::vector<rec> recs(n);
    std::atomic<int> seq{0};
    std::mt19937 rng(42);
    int64_t base = detail::nanotime() + 5'000'000;
    std::vector<int64_t> whens(n);
    for (int i = 0; i < n; i++) whens[i] = base + static_cast<int64_t>(rng() % 20'000'000);
    wait_group wg;
    wg.add(n);
    struct ctx {
      rec* r;
      wait_group* wg;
    };
    std::vector<ctx> ctxs(n);
    for (int i = 0; i < n; i++) {
      recs[i].when = whens[i];
      recs[i].seq = &seq;
      ctxs[i] = ctx{&recs[i], &wg};
      recs[i].t.f = [](detail::timer*, void* arg, uintptr_t) {
        auto* c = static_cast<ctx*>(arg);
        c->r->fired_seq = c->r->seq->fetch_add(1);
        c->wg->done();
      };
      recs[i].t.arg = &ctxs[i];
      detail::timer_add(&recs[i].t, whens[i]);
    }
    wg.wait();
    std::vector<int> by_when(n);
    for (int i = 0; i < n; i++) by_when[i] = i;
    std::sort(by_when.begin(), by_when.end(), [&](int a, int b) { return whens[a] < whens[b]; });
    for (int k = 1; k < n; k++) {
      if (whens[by_when[k]] == whens[by_when[k - 1]]) continue;
      EXPECT_LT(recs[by_when[k - 1]].fired_seq, recs[by_when[k]].fired_seq);
    }
  }, {.max_procs = 1});
}

// n timers whose callbacks record when and in which order they fired, for the
// heap-order tests below; each test arms them itself, keeping `when` at the deadline
// it armed last.
struct recording_timers {
  struct rec {
    detail::timer t;
    int64_t when = 0;
    int64_t fired_at = 0;
    int fired_seq = -1;
    int fires = 0;
    recording_timers* owner = nullptr;
  };
  std::vector<rec> recs;
  std::atomic<int> seq{0};
  wait_group wg;

  explicit recording_timers(int n) : recs(static_cast<std::size_t>(n)) {
    for (rec& r : recs) {
      r.owner = this;
      r.t.f = [](detail::timer*, void* arg, uintptr_t) {
        auto* r = static_cast<rec*>(arg);
        r->fired_at = detail::nanotime();
        r->fired_seq = r->owner->seq.fetch_add(1);
        r->fires++;
        r->owner->wg.done();
      };
      r.t.arg = &r;
    }
  }

  // The timers in `which` fired in the order of their deadlines (ties in any order).
  void expect_deadline_order(std::vector<int> which) const {
    std::sort(which.begin(), which.end(), [&](int a, int b) { return recs[a].when < recs[b].when; });
    for (std::size_t k = 1; k < which.size(); k++) {
      if (recs[which[k]].when == recs[which[k - 1]].when) continue;
      EXPECT_LT(recs[which[k - 1]].fired_seq, recs[which[k]].fired_seq);
    }
  }
};

// Stops take timers out of the middle of the heap, and the adds that follow fill it
// again (a stopped timer re-armed among them): every other timer's position must stay
// right through it. The timers left fire once each, in deadline order, and none that
// was stopped fires.
TEST(Timer, StopsFromTheMiddleAndReAddsKeepTheHeapInOrder) {
  run_checked([] {
    constexpr int n = 600;
    recording_timers tm(n);
    auto& recs = tm.recs;
    std::vector<bool> armed(n);
    std::mt19937 rng(11);
    int64_t base = detail::nanotime() + 200'000'000;  // the stops and adds come first, even under TSan
    auto arm = [&](int i) {
      recs[i].when = base + static_cast<int64_t>(rng() % 20'000'000);
      armed[i] = true;
      detail::timer_add(&recs[i].t, recs[i].when);
    };
    for (int i = 0; i < n / 2; i++) arm(i);
    // Three rounds: stop a random third of the armed timers, then arm as many others
    // (fresh ones first, then some of those just stopped).
    for (int round = 0; round < 3; round++) {
      std::vector<int> stopped;
      for (int i = 0; i < n; i++)
        if (armed[i] && rng() % 3 == 0) {
          EXPECT_TRUE(detail::timer_stop(&recs[i].t));
          armed[i] = false;
          stopped.push_back(i);
        }
      std::size_t want = stopped.size();
      for (int i = 0; i < n && want > 0; i++)
        if (!armed[i] && recs[i].when == 0) {
          arm(i);
          want--;
        }
      for (int i : stopped)
        if (want > 0 && rng() % 2 == 0) {
          arm(i);
          want--;
        }
    }
    int narmed = static_cast<int>(std::count(armed.begin(), armed.end(), true));
    EXPECT_EQ(detail::timers_pending(), narmed);
    tm.wg.add(narmed);
    // Hold the only P until every deadline has passed, so that they all come due in one
    // pass of the heap: the order then rests on the heap alone.
    while (detail::nanotime() < base + 21'000'000) {
    }
    tm.wg.wait();
    std::vector<int> fired;
    for (int i = 0; i < n; i++) {
      EXPECT_EQ(recs[i].fires, armed[i] ? 1 : 0) << "timer " << i;
      if (armed[i]) fired.push_back(i);
    }
    tm.expect_deadline_order(fired);
    EXPECT_EQ(detail::timers_pending(), 0);
  }, {.max_procs = 1});
}

TEST(Timer, AfterFuncRunsFnInItsOwnGoroutine) {
  run_checked([] {
    wait_group wg;
    wg.add(1);
    uint64_t fn_goid = 0;
    auto t0 = std::chrono::steady_clock::now();
    std::chrono::steady_clock::duration elapsed{};
    func_timer t = after_func(10ms, [&] {
      fn_goid = goroutine_id();
      elapsed = std::chrono::steady_clock::now() - t0;
      wg.done();
    });
    wg.wait();
    EXPECT_NE(fn_goid, 0u);
    EXPECT_NE(fn_goid, 1u);
    EXPECT_GE(elapsed, 10ms);
    EXPECT_FALSE(t.stop()) << "stop after the timer fired reports false";
  });
}

TEST(Timer, AfterFuncFiresWithoutTheHandle) {
  run_checked([] {
    wait_group wg;
    wg.add(1);
    { after_func(1ms, [&] { wg.done(); }); }
    wg.wait();
  });
}

TEST(Timer, StopBeforeFiringReturnsTrueAndFnNeverRuns) {
  run_checked([] {
    std::atomic<int> ran{0};
    func_timer t = after_func(300ms, [&] { ran++; });  // long enough to be stopped first
    EXPECT_TRUE(t.stop());
    EXPECT_FALSE(t.stop()) << "second stop";
    sleep_for(400ms);
    EXPECT_EQ(ran.load(), 0);
  });
}

// A reset that moves a pending deadline later keeps the timer's place in the heap and
// only records the new deadline (Go's timerModifiedLater); the heap re-sorts it when its
// old place comes due. Mixed with resets to earlier deadlines (real heap moves), every
// timer must still fire once, in final-deadline order, and never before that deadline.
TEST(Timer, ResetsLaterAndEarlierFireInFinalDeadlineOrder) {
  run_checked([] {
    constexpr int n = 400;
    recording_timers tm(n);
    auto& recs = tm.recs;
    tm.wg.add(n);
    std::mt19937 rng(7);
    int64_t base = detail::nanotime() + 50'000'000;  // the resets are done before it
    for (int i = 0; i < n; i++) detail::timer_add(&recs[i].t, base + static_cast<int64_t>(rng() % 10'000'000));
    // Three rounds of resets: mostly later (no heap move), some earlier.
    for (int round = 0; round < 3; round++) {
      for (int i = 0; i < n; i++) {
        int64_t w = base + static_cast<int64_t>(rng() % 30'000'000);
        recs[i].when = w;
        EXPECT_TRUE(detail::timer_reset(&recs[i].t, w));
      }
    }
    // Hold the only P until every deadline has passed, so that they all come due in one
    // pass of the timer heap: the order then rests on the re-sorting alone.
    while (detail::nanotime() < base + 31'000'000) {
    }
    tm.wg.wait();
    std::vector<int> all(n);
    for (int i = 0; i < n; i++) {
      all[i] = i;
      EXPECT_EQ(recs[i].fires, 1);
      EXPECT_GE(recs[i].fired_at, recs[i].when);
    }
    tm.expect_deadline_order(all);
    EXPECT_EQ(detail::timers_pending(), 0);
  }, {.max_procs = 1});
}

TEST(Timer, ResetOfPendingTimerReturnsTrueAndDelaysIt) {
  run_checked([] {
    wait_group wg;
    wg.add(1);
    std::atomic<int> ran{0};
    auto t0 = std::chrono::steady_clock::now();
    std::chrono::steady_clock::duration at{};
    // Armed for an hour, so that it is certainly pending when reset (a thread stalled for
    // 5 ms once let a 5 ms timer fire first).
    func_timer t = after_func(1h, [&] {
      ran++;
      at = std::chrono::steady_clock::now() - t0;
      wg.done();
    });
    EXPECT_TRUE(t.reset(40ms));
    wg.wait();
    EXPECT_EQ(ran.load(), 1);
    EXPECT_GE(at, 40ms);
  });
}

TEST(Timer, ResetAfterFiringReturnsFalseAndRunsFnAgain) {
  run_checked([] {
    wait_group wg;
    wg.add(1);
    std::atomic<int> ran{0};
    func_timer t = after_func(1ms, [&] {
      ran++;
      wg.done();
    });
    wg.wait();
    wg.add(1);
    EXPECT_FALSE(t.reset(1ms));
    wg.wait();
    EXPECT_EQ(ran.load(), 2);
    EXPECT_FALSE(t.reset(1h)) << "it had fired again";
    EXPECT_TRUE(t.stop()) << "the 1h timer was pending";
  });
}

// stop() races the firing from another goroutine: stop true <=> fn never runs.
TEST(Timer, StopRacingTheFiringKeepsGoSemantics) {
  run_checked([] {
    const int n = stress(2000, 300);
    std::vector<std::atomic<int>> fired(n);
    std::vector<int> stopped(n);
    wait_group wg;
    wg.add(n);
    std::mt19937 rng(7);
    std::vector<func_timer> timers;
    timers.reserve(n);
    for (int i = 0; i < n; i++)
      timers.push_back(after_func(std::chrono::microseconds(rng() % 300), [&, i] {
        fired[i]++;
        wg.done();
      }));
    wait_group stoppers;
    stoppers.add(2);
    for (int half = 0; half < 2; half++)
      go([&, half] {
        for (int i = half; i < n; i += 2) {
          stopped[i] = timers[i].stop();
          if (stopped[i]) wg.done();
          if (i % 16 == 0) yield();
        }
        stoppers.done();
      });
    stoppers.wait();
    wg.wait();
    int nstopped = 0;
    for (int i = 0; i < n; i++) {
      EXPECT_EQ(fired[i].load(), stopped[i] ? 0 : 1) << "timer " << i;
      nstopped += stopped[i];
    }
    std::printf("stopped %d of %d before firing\n", nstopped, n);
  });
}

// reset() races the firing: true => fn runs once in total; false => it ran and runs
// again.
TEST(Timer, ResetRacingTheFiringKeepsGoSemantics) {
  run_checked([] {
    const int n = stress(2000, 300);
    std::vector<std::atomic<int>> fired(n);
    std::vector<int> pending(n);
    wait_group wg;
    wg.add(n);
    std::mt19937 rng(9);
    std::vector<func_timer> timers;
    timers.reserve(n);
    for (int i = 0; i < n; i++)
      timers.push_back(after_func(std::chrono::microseconds(rng() % 300), [&, i] {
        fired[i]++;
        wg.done();
      }));
    for (int i = 0; i < n; i++) {
      // Count the second run before re-arming: it may happen at once.
      wg.add(1);
      pending[i] = timers[i].reset(std::chrono::microseconds(rng() % 300));
      if (pending[i]) wg.done();
    }
    wg.wait();
    for (int i = 0; i < n; i++) EXPECT_EQ(fired[i].load(), pending[i] ? 1 : 2) << "timer " << i;
  });
}

}  // namespace
}  // namespace weft
