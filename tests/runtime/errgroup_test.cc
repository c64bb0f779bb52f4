// errgroup: x/sync/errgroup's errgroup_test.go, adapted. The first error wins and cancels
// the group's context, wait() waits for everything and then cancels, set_limit bounds
// concurrency (go() waits, try_go() refuses), exceptions are rethrown by wait(), and the
// zero value works without a context.
//
// Orders are made deterministic without sleeps: later failures wait for the group's
// context (cancelled only after the first error is recorded), or a limit of one makes
// the next goroutine start only after the previous one has been accounted for.
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <utility>
#include <vector>

#include "runtime/chan.h"
#include "runtime/chan_timer.h"
#include "runtime/context.h"
#include "runtime/errgroup.h"
#include "runtime/select.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;
using testing::stress;
using token = std::monostate;

const context_key<std::shared_ptr<int>> kToken{"token"};

std::error_code err1() { return std::make_error_code(std::errc::io_error); }
std::error_code err2() { return std::make_error_code(std::errc::connection_reset); }

bool is_done(const context& c) {
  auto r = c.done().try_recv();
  return r.has_value() && !r->ok;
}

// Waits (bounded) for c to be cancelled; false if it was not within `limit`.
bool wait_done(const context& c, std::chrono::nanoseconds limit = 10s) {
  std::monostate m;
  time_point tp;
  return select(case_recv(c.done(), m), case_recv(after(limit), tp)) == 0;
}

// Go's TestZeroGroup: go() then wait() after each error; wait() keeps the first one.
TEST(ErrGroup, WaitReturnsTheFirstErrorOfAZeroValueGroup) {
  run_checked([] {
    const std::vector<std::vector<std::error_code>> cases = {
        {}, {{}}, {err1()}, {err1(), {}}, {err1(), {}, err2()}, {{}, err2(), err1()},
    };
    for (const auto& errs : cases) {
      errgroup g;
      std::error_code first;
      for (size_t i = 0; i < errs.size(); i++) {
        std::error_code err = errs[i];
        g.go([err] { return err; });
        if (!first && err) first = err;
        EXPECT_EQ(g.wait(), first) << "case of " << errs.size() << " errors, after go #" << i;
      }
      EXPECT_FALSE(g.ctx().err()) << "a zero-value group has no context to cancel";
    }
  });
}

TEST(ErrGroup, WaitReturnsTheFirstErrorEvenWhenLaterGoroutinesFail) {
  run_checked([] {
    errgroup g(background());
    std::atomic<int> late{0};
    const int n = 5;
    // These fail only once the context is cancelled, i.e. after the first error is kept.
    for (int i = 0; i < n; i++)
      g.go([&, i]() -> std::error_code {
        if (!wait_done(g.ctx())) return {};
        late++;
        return std::error_code(100 + i, std::generic_category());
      });
    g.go([] { return err1(); });
    EXPECT_EQ(g.wait(), err1());
    EXPECT_EQ(late.load(), n) << "wait() returned before every goroutine finished";
    EXPECT_EQ(g.ctx().err(), context_errc::canceled);
    EXPECT_EQ(g.ctx().cause(), err1()) << "the group's context is cancelled with the first error as cause";
  });
}

TEST(ErrGroup, WaitReturnsTheFirstErrorWhenALimitOrdersTheFailures) {
  run_checked([] {
    // No context: with a limit of one, the second goroutine starts only after the first
    // has finished (and recorded its error).
    errgroup g;
    g.set_limit(1);
    g.go([] { return err1(); });
    g.go([] { return err2(); });
    g.go([] { return std::error_code{}; });
    EXPECT_EQ(g.wait(), err1());
  });
}

TEST(ErrGroup, TheFirstErrorCancelsTheContextForTheOthers) {
  run_checked([] {
    errgroup g(background());
    const int n = 10;
    std::vector<std::error_code> seen(n);
    wait_group started;
    started.add(n);
    for (int i = 0; i < n; i++)
      g.go([&, i]() -> std::error_code {
        started.done();
        if (!wait_done(g.ctx())) return err2();  // never cancelled: wait() shows err2
        seen[i] = g.ctx().err();
        return {};
      });
    started.wait();
    EXPECT_FALSE(g.ctx().err()) << "cancelled before any error";
    g.go([] { return err1(); });
    EXPECT_EQ(g.wait(), err1());
    for (int i = 0; i < n; i++) EXPECT_EQ(seen[i], context_errc::canceled) << "goroutine " << i;
  });
}

// Go's TestWithContext and TestCancelCause: after wait() the context is cancelled, with
// the first error as cause (or canceled if there was none).
TEST(ErrGroup, WaitCancelsTheContextAfterReturning) {
  run_checked([] {
    const std::vector<std::vector<std::error_code>> cases = {{}, {{}}, {err1()}, {err1(), {}}};
    for (const auto& errs : cases) {
      errgroup g(background());
      std::error_code want;
      for (auto err : errs) {
        g.go([err] { return err; });
        if (err) want = err;
      }
      EXPECT_EQ(g.wait(), want);
      EXPECT_TRUE(is_done(g.ctx())) << "ctx.done() was not closed after wait()";
      EXPECT_EQ(g.ctx().err(), context_errc::canceled);
      if (want)
        EXPECT_EQ(g.ctx().cause(), want);
      else
        EXPECT_EQ(g.ctx().cause(), context_errc::canceled);
    }
  });
}

TEST(ErrGroup, AGroupWithoutErrorsLeavesTheContextLiveUntilWait) {
  run_checked([] {
    errgroup g(background());
    const int n = 50;
    wait_group ran;
    ran.add(n);
    std::atomic<int> voids{0};
    for (int i = 0; i < n; i++) {
      if (i % 2)
        g.go([&] {  // void functions are fine too
          voids++;
          ran.done();
        });
      else
        g.go([&]() -> std::error_code {
          ran.done();
          return {};
        });
    }
    ran.wait();
    EXPECT_FALSE(g.ctx().err()) << "successful goroutines cancelled the context";
    EXPECT_FALSE(g.wait());
    EXPECT_EQ(voids.load(), n / 2);
    EXPECT_EQ(g.ctx().err(), context_errc::canceled);
  });
}

TEST(ErrGroup, CancellingTheParentReachesTheGroupContext) {
  run_checked([] {
    cancelable parent = with_cancel(background());
    errgroup g(parent.ctx);
    g.go([&]() -> std::error_code { return wait_done(g.ctx()) ? g.ctx().err() : err2(); });
    parent.cancel();
    EXPECT_EQ(g.wait(), context_errc::canceled);
  });
}

TEST(ErrGroup, DestroyingTheGroupCancelsItsContextAndUnlinksIt) {
  run_checked([] {
    auto tok = std::make_shared<int>(0);
    cancelable parent = with_cancel(background());
    context kept;
    {
      context v = with_value(parent.ctx, kToken, tok);
      errgroup g(v);
      kept = g.ctx();
      EXPECT_FALSE(kept.err());
    }
    EXPECT_EQ(kept.err(), context_errc::canceled);
    kept = context();
    EXPECT_EQ(tok.use_count(), 1) << "the group's context is still linked into its parent";
    parent.cancel();
  });
}

// Go's TestGoLimit, deterministically: with the limit full, further go() calls wait and
// try_go refuses; each finished goroutine lets exactly one more start.
TEST(ErrGroup, SetLimitBoundsConcurrencyAndFurtherGoroutinesWait) {
  run_checked([] {
    const int limit = 3, total = 12;
    errgroup g;
    g.set_limit(limit);
    std::atomic<int> running{0}, max_running{0}, spawned{0};
    chan<int> started(total);  // buffered: a goroutine never blocks reporting its start
    chan<token> gate(0);       // each send lets one goroutine finish
    wait_group spawner;
    spawner.add(1);
    go([&] {
      for (int i = 0; i < total; i++) {
        g.go([&, i, started, gate]() -> std::error_code {
          int now = ++running;
          int m = max_running.load();
          while (now > m && !max_running.compare_exchange_weak(m, now)) {
          }
          started.send(i);
          gate.recv();
          running--;
          return {};
        });
        spawned++;
      }
      spawner.done();
    });
    for (int i = 0; i < limit; i++) started.recv();
    EXPECT_EQ(running.load(), limit);
    EXPECT_LE(spawned.load(), limit) << "go() returned past the limit";
    bool ran = false;
    EXPECT_FALSE(g.try_go([&] { ran = true; })) << "try_go succeeded with the limit full";
    EXPECT_FALSE(started.try_recv().has_value()) << "a goroutine started past the limit";
    for (int i = limit; i < total; i++) {
      gate.send({});
      started.recv();
      EXPECT_LE(running.load(), limit);
    }
    ASSERT_TRUE(spawner.wait_for(10s));
    for (int i = 0; i < limit; i++) gate.send({});
    EXPECT_FALSE(g.wait());
    EXPECT_FALSE(ran);
    EXPECT_EQ(max_running.load(), limit);
    EXPECT_EQ(running.load(), 0);
  });
}

// Go's TestGoLimit as written: many goroutines, none ever sees more than `limit` active.
TEST(ErrGroup, ConcurrencyNeverExceedsTheLimitUnderLoad) {
  run_checked([] {
    const int limit = 10;
    const int n = stress(1 << 12, 1 << 9);
    errgroup g;
    g.set_limit(limit);
    std::atomic<int> active{0}, max_active{0};
    for (int i = 0; i <= n; i++)
      g.go([&]() -> std::error_code {
        int now = ++active;
        int m = max_active.load();
        while (now > m && !max_active.compare_exchange_weak(m, now)) {
        }
        if (now > limit) return std::error_code(now, std::generic_category());
        yield();  // give the others a chance to overlap
        active--;
        return {};
      });
    std::error_code err = g.wait();
    EXPECT_FALSE(err) << "saw " << err.value() << " active goroutines, limit " << limit;
    EXPECT_LE(max_active.load(), limit);
  });
}

// Go's TestTryGo.
TEST(ErrGroup, TryGoFailsWhileTheLimitIsFull) {
  run_checked([] {
    errgroup g;
    const int n = 42;
    g.set_limit(n);
    chan<token> ch(0);
    auto fn = [ch]() -> std::error_code {
      ch.send({});
      return {};
    };
    auto drain = [ch](int k) {
      go([ch, k] {
        for (int i = 0; i < k; i++) ch.recv();
      });
    };
    std::atomic<int> refused_ran{0};
    auto refused = [&] { refused_ran++; };

    for (int i = 0; i < n; i++) ASSERT_TRUE(g.try_go(fn)) << "try_go #" << i << " failed below the limit";
    EXPECT_FALSE(g.try_go(refused)) << "try_go succeeded with the limit full";
    drain(n);
    EXPECT_FALSE(g.wait());

    EXPECT_TRUE(g.try_go(fn)) << "try_go failed after wait()";
    drain(1);
    EXPECT_FALSE(g.wait());

    // Switch the limit.
    g.set_limit(1);
    EXPECT_TRUE(g.try_go(fn));
    EXPECT_FALSE(g.try_go(refused)) << "try_go succeeded past the new limit of 1";
    drain(1);
    EXPECT_FALSE(g.wait());

    // No limit.
    g.set_limit(-1);
    for (int i = 0; i < n; i++) ASSERT_TRUE(g.try_go(fn)) << "try_go #" << i << " failed without a limit";
    drain(n);
    EXPECT_FALSE(g.wait());
    EXPECT_EQ(refused_ran.load(), 0) << "a refused function ran";
  });
}

TEST(ErrGroup, ChangingTheLimitWhileGoroutinesRunThrows) {
  run_checked([] {
    errgroup g;
    chan<token> gate(0);
    g.go([gate] { gate.recv(); });
    EXPECT_THROW(g.set_limit(2), std::logic_error);
    gate.close();
    EXPECT_FALSE(g.wait());
    EXPECT_NO_THROW(g.set_limit(2)) << "no goroutine is running any more";
  });
}

TEST(ErrGroup, AnExceptionIsRethrownByWaitAfterEveryGoroutineFinished) {
  run_checked([] {
    errgroup g(background());
    std::atomic<bool> other_finished{false};
    std::error_code seen;
    g.go([&]() -> std::error_code {
      if (!wait_done(g.ctx())) return err2();  // the exception cancels the context
      seen = g.ctx().err();
      for (int i = 0; i < 10; i++) yield();  // still running well after the throw
      other_finished = true;
      return {};
    });
    g.go([]() -> std::error_code { throw std::runtime_error("boom"); });
    try {
      g.wait();
      ADD_FAILURE() << "wait() did not rethrow";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "boom");
    }
    EXPECT_TRUE(other_finished.load()) << "wait() rethrew before every goroutine finished";
    EXPECT_EQ(seen, context_errc::canceled);
    EXPECT_EQ(g.ctx().err(), context_errc::canceled);
  });
}

// "Finished" includes the function object: whatever a goroutine's function captured
// (RAII handles, references into the waiter's frame) is destroyed before wait() returns,
// as joining a std::jthread guarantees.
TEST(ErrGroup, WaitReturnsOnlyAfterEveryFunctionIsDestroyed) {
  run_checked([] {
    // Counted when destroyed; the destructor parks (yields) first, so a wait() that
    // returns before the function object is gone gets to run in between.
    struct slow_capture {
      std::shared_ptr<std::atomic<int>> destroyed;
      bool armed = true;
      explicit slow_capture(std::shared_ptr<std::atomic<int>> d) : destroyed(std::move(d)) {}
      slow_capture(slow_capture&& o) noexcept : destroyed(o.destroyed), armed(std::exchange(o.armed, false)) {}
      slow_capture(const slow_capture&) = delete;
      ~slow_capture() {
        if (!armed) return;
        for (int i = 0; i < 20; i++) yield();
        ++*destroyed;
      }
    };
    auto destroyed = std::make_shared<std::atomic<int>>(0);
    const int n = 4;
    errgroup g(background());
    for (int i = 0; i < n; i++) g.go([c = slow_capture(destroyed)] { return std::error_code{}; });
    EXPECT_FALSE(g.wait());
    EXPECT_EQ(destroyed->load(), n) << "wait() returned while goroutines still held their functions";
  });
}

TEST(ErrGroup, AnExceptionInAZeroValueGroupIsRethrown) {
  run_checked([] {
    errgroup g;
    g.go([] { throw std::logic_error("void"); });
    EXPECT_THROW(g.wait(), std::logic_error);
  });
}

// An error that came first must not swallow a later exception: Go's design for errgroup
// panics (golang/go#53757) records the panic apart from the error, and Wait re-panics.
TEST(ErrGroup, AnExceptionAfterAnErrorIsStillRethrown) {
  run_checked([] {
    errgroup g;
    g.set_limit(1);  // the exception comes strictly after the error is recorded
    g.go([] { return err1(); });
    g.go([]() -> std::error_code { throw std::runtime_error("later"); });
    std::error_code err;
    EXPECT_THROW(err = g.wait(), std::runtime_error) << "the exception was swallowed; wait() returned "
                                                     << err.message();
  });
}

TEST(ErrGroup, AZeroValueGroupWorksWithoutAContext) {
  run_checked([] {
    errgroup g;
    EXPECT_FALSE(g.ctx().done()) << "a zero-value group's context is background";
    EXPECT_FALSE(g.ctx().err());
    std::atomic<int> ran{0};
    for (int i = 0; i < 20; i++) g.go([&] { ran++; });
    g.go([&] {
      ran++;
      return err2();
    });
    EXPECT_EQ(g.wait(), err2());
    EXPECT_EQ(ran.load(), 21);
    EXPECT_FALSE(g.ctx().err());
    // It stays usable.
    g.go([&] { ran++; });
    EXPECT_EQ(g.wait(), err2());
    EXPECT_EQ(ran.load(), 22);
  });
}

TEST(ErrGroup, ManyConcurrentFailuresKeepExactlyOneOfThem) {
  run_checked([] {
    const int n = stress(1000, 200);
    const int rounds = stress(10, 3);
    for (int r = 0; r < rounds; r++) {
      errgroup g(background());
      chan<token> start(0);
      for (int i = 0; i < n; i++)
        g.go([i, start]() -> std::error_code {
          start.recv();
          return std::error_code(i + 1, std::generic_category());
        });
      start.close();
      std::error_code err = g.wait();
      ASSERT_TRUE(err);
      EXPECT_GE(err.value(), 1);
      EXPECT_LE(err.value(), n);
      EXPECT_EQ(g.ctx().cause(), err) << "the kept error is the one that cancelled the context";
      EXPECT_EQ(g.wait(), err) << "the kept error does not change";
    }
  });
}

}  // namespace
}  // namespace weft
