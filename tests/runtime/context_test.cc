// context: Go's context_test.go, adapted. Background, cancellation and its propagation
// down a tree, children unlinking themselves from their parent, deadlines (firing,
// shortening, already past), values, causes, done() in select, cancellation from other
// threads and under races.
//
// "A child removes itself from its parent" is observed without the private ctx_node: a
// value layer between the parent and the child holds a shared_ptr token, and a child that
// is still linked into its parent keeps that layer (and so the token) alive. The token's
// use_count() is therefore the number of child chains the parent still references.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "runtime/chan.h"
#include "runtime/chan_timer.h"
#include "runtime/context.h"
#include "runtime/select.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;
using testing::stress;
using clk = std::chrono::steady_clock;
using done_chan = chan<std::monostate>;

const context_key<int> kInt{"int"};
const context_key<std::string> kStr{"str"};
const context_key<std::shared_ptr<int>> kToken{"token"};

// True if c is closed: a receive completes at once with ok == false.
bool closed(const done_chan& c) {
  auto r = c.try_recv();
  return r.has_value() && !r->ok;
}

bool is_done(const context& c) { return closed(c.done()); }

// Waits (bounded) for c to be cancelled; false if it was not within `limit`.
bool wait_done(const context& c, std::chrono::nanoseconds limit = 10s) {
  std::monostate m;
  time_point tp;
  return select(case_recv(c.done(), m), case_recv(after(limit), tp)) == 0;
}

// Polls pred (bounded); for effects that complete just after a wakeup, e.g. a deadline
// timer's callback dropping its reference after it closed done().
template <class Pred>
bool eventually(Pred pred, std::chrono::nanoseconds limit = 10s) {
  auto deadline = clk::now() + limit;
  while (!pred()) {
    if (clk::now() > deadline) return false;
    sleep_for(100us);
  }
  return true;
}

std::error_code io_error() { return std::make_error_code(std::errc::io_error); }
std::error_code reset_error() { return std::make_error_code(std::errc::connection_reset); }

// ---------------------------------------------------------------------------------------
// background

TEST(Context, BackgroundIsNeverCancelledAndCarriesNothing) {
  run_checked([] {
    for (const context& bg : {background(), context()}) {
      EXPECT_FALSE(bg.done()) << "background's done() is the nil channel";
      std::monostate m;
      EXPECT_EQ(select(case_recv(bg.done(), m), case_default()), 1) << "a nil channel is never ready";
      EXPECT_FALSE(bg.err());
      EXPECT_FALSE(bg.cause());
      EXPECT_FALSE(bg.deadline().has_value());
      EXPECT_EQ(bg.value(kInt), nullptr);
      EXPECT_EQ(bg.value(kStr), nullptr);
    }
    // A value context over background is not cancelable either.
    context v = with_value(background(), kInt, 3);
    EXPECT_FALSE(v.done());
    EXPECT_FALSE(v.err());
    EXPECT_FALSE(v.deadline().has_value());
  });
}

// ---------------------------------------------------------------------------------------
// with_cancel

TEST(Context, CancelClosesDoneWakesAWaiterAndSetsErrCanceled) {
  run_checked([] {
    cancelable c = with_cancel(background());
    EXPECT_TRUE(c.cancel);
    done_chan d = c.ctx.done();
    ASSERT_TRUE(d);
    EXPECT_TRUE(c.ctx.done() == d) << "done() is the same channel on every call";
    EXPECT_FALSE(closed(d));
    EXPECT_FALSE(c.ctx.err());
    EXPECT_FALSE(c.ctx.cause());
    EXPECT_FALSE(c.ctx.deadline().has_value());

    wait_group wg;
    wg.add(1);
    std::atomic<bool> woke{false};
    bool ok = true;
    go([&] {
      ok = c.ctx.done().recv().ok;
      woke = true;
      wg.done();
    });
    yield();  // one P: the waiter runs and parks on done()
    EXPECT_FALSE(woke.load()) << "woke before cancel";
    c.cancel();
    ASSERT_TRUE(wg.wait_for(10s)) << "a goroutine blocked on done() did not wake";
    EXPECT_TRUE(woke.load());
    EXPECT_FALSE(ok) << "done() is closed, not sent on";
    EXPECT_EQ(c.ctx.err(), context_errc::canceled);
    EXPECT_EQ(c.ctx.cause(), context_errc::canceled);
    EXPECT_TRUE(closed(d));
    EXPECT_TRUE(c.ctx.done() == d);
    EXPECT_EQ(c.ctx.err().message(), "context canceled");
    EXPECT_STREQ(c.ctx.err().category().name(), "context");
  }, {.max_procs = 1});
}

TEST(Context, DoneAskedOnlyAfterCancelIsClosed) {
  run_checked([] {
    cancelable c = with_cancel(background());
    c.cancel();
    EXPECT_TRUE(is_done(c.ctx));
    EXPECT_FALSE(c.ctx.done().recv().ok);
  });
}

TEST(Context, CancelIsIdempotentAndCopiesShareState) {
  run_checked([] {
    cancelable c = with_cancel(background());
    context copy = c.ctx;
    cancel_func f2 = c.cancel;
    done_chan d = copy.done();
    f2();  // a copy of the cancel function cancels the original context
    EXPECT_EQ(c.ctx.err(), context_errc::canceled);
    EXPECT_EQ(copy.err(), context_errc::canceled);
    EXPECT_TRUE(closed(d));
    EXPECT_TRUE(c.ctx.done() == d);

    // Further cancels (plain or with a cause) change nothing and do not re-close done().
    c.cancel();
    f2();
    c.cancel(io_error());
    EXPECT_EQ(c.ctx.err(), context_errc::canceled);
    EXPECT_EQ(c.ctx.cause(), context_errc::canceled) << "the first cancel's cause stays";

    // Moving a context moves the handle, not the state.
    context moved = std::move(copy);
    EXPECT_EQ(moved.err(), context_errc::canceled);

    // An empty cancel function does nothing.
    cancel_func empty;
    EXPECT_FALSE(empty);
    empty();
    empty(io_error());
  });
}

// Builds a tree below `parent`: each node is a cancel or timeout(1h) context, with a
// value layer (holding the token) above every other one.
struct tree_node {
  context ctx;
  cancel_func cancel;
  int depth;
  int parent;  // index in the tree vector, -1 for children of the root
};

void grow(std::vector<tree_node>& out, const context& parent, int parent_idx, int depth, int max_depth,
          int fanout, const std::shared_ptr<int>& token) {
  if (depth > max_depth) return;
  for (int i = 0; i < fanout; i++) {
    context base = parent;
    if ((depth + i) % 2 == 0) base = with_value(parent, kToken, token);
    cancelable c = (i % 2 == 0) ? with_cancel(base) : with_timeout(base, 1h);
    int idx = static_cast<int>(out.size());
    out.push_back({c.ctx, c.cancel, depth, parent_idx});
    grow(out, c.ctx, idx, depth + 1, max_depth, fanout, token);
  }
}

TEST(Context, CancellingAParentCancelsEveryDescendantOnce) {
  run_checked([] {
    auto token = std::make_shared<int>(0);
    {
      cancelable root = with_cancel_cause(background());
      std::vector<tree_node> tree;
      grow(tree, root.ctx, -1, 1, 4, 3, token);
      ASSERT_EQ(tree.size(), 3u + 9 + 27 + 81);
      for (auto& n : tree) EXPECT_FALSE(n.ctx.err());

      // One waiter per node; each counts its wakeup.
      const int n = static_cast<int>(tree.size());
      std::vector<std::atomic<int>> wakeups(n);
      wait_group started, finished;
      started.add(n);
      finished.add(n);
      for (int i = 0; i < n; i++)
        go([&, i] {
          done_chan d = tree[i].ctx.done();
          started.done();
          if (!d.recv().ok) wakeups[i]++;
          finished.done();
        });
      started.wait();
      for (int i = 0; i < n; i++) EXPECT_EQ(wakeups[i].load(), 0) << "node " << i << " woke before cancel";

      root.cancel(reset_error());
      ASSERT_TRUE(finished.wait_for(10s)) << "not every descendant's done() closed";
      for (int i = 0; i < n; i++) {
        EXPECT_EQ(wakeups[i].load(), 1) << "node " << i;
        EXPECT_EQ(tree[i].ctx.err(), context_errc::canceled) << "node " << i;
        EXPECT_EQ(tree[i].ctx.cause(), reset_error()) << "node " << i << ": descendants get the root's cause";
      }

      // Cancelling again, from anywhere in the tree, changes nothing (nothing is
      // cancelled twice: a second close of done() would throw).
      root.cancel();
      for (auto& node : tree) node.cancel(io_error());
      for (int i = 0; i < n; i++) {
        EXPECT_EQ(tree[i].ctx.err(), context_errc::canceled);
        EXPECT_EQ(tree[i].ctx.cause(), reset_error());
        EXPECT_TRUE(is_done(tree[i].ctx));
      }
    }
    EXPECT_EQ(token.use_count(), 1) << "the tree was not freed";
  });
}

TEST(Context, CancellingAChildLeavesItsParentAndSiblingsAlone) {
  run_checked([] {
    cancelable root = with_cancel_cause(background());
    cancelable a = with_cancel_cause(root.ctx);
    cancelable a1 = with_cancel(a.ctx);
    context a2v = with_value(a.ctx, kInt, 2);
    cancelable a2 = with_timeout(a2v, 1h);
    context bv = with_value(root.ctx, kInt, 1);
    cancelable b = with_cancel(bv);
    cancelable b1 = with_cancel(b.ctx);

    a.cancel(io_error());
    for (const context* c : {&a.ctx, &a1.ctx, &a2v, &a2.ctx}) {
      EXPECT_EQ(c->err(), context_errc::canceled);
      EXPECT_EQ(c->cause(), io_error());
      EXPECT_TRUE(is_done(*c));
    }
    for (const context* c : {&root.ctx, &bv, &b.ctx, &b1.ctx}) {
      EXPECT_FALSE(c->err());
      EXPECT_FALSE(is_done(*c));
    }

    // A leaf's cancel affects only the leaf.
    b1.cancel();
    EXPECT_EQ(b1.ctx.err(), context_errc::canceled);
    EXPECT_FALSE(b.ctx.err());
    EXPECT_FALSE(root.ctx.err());

    root.cancel(reset_error());
    EXPECT_EQ(b.ctx.cause(), reset_error());
    EXPECT_EQ(bv.cause(), reset_error());
    EXPECT_EQ(a1.ctx.cause(), io_error()) << "an already cancelled subtree keeps its cause";
    EXPECT_EQ(b1.ctx.cause(), context_errc::canceled);

    for (auto* f : {&a1.cancel, &a2.cancel, &b.cancel}) (*f)();
  });
}

TEST(Context, AChildOfACancelledParentIsBornCancelled) {
  run_checked([] {
    cancelable parent = with_cancel_cause(background());
    parent.cancel(io_error());

    cancelable c = with_cancel(parent.ctx);
    EXPECT_EQ(c.ctx.err(), context_errc::canceled);
    EXPECT_EQ(c.ctx.cause(), io_error());
    EXPECT_TRUE(is_done(c.ctx));

    cancelable t = with_timeout(parent.ctx, 1h);
    EXPECT_EQ(t.ctx.err(), context_errc::canceled) << "the parent's error, not a deadline";
    EXPECT_TRUE(is_done(t.ctx));

    // Already cancelled by the parent, so the past deadline does not change the error.
    cancelable p = with_deadline(parent.ctx, clk::now() - 1s);
    EXPECT_EQ(p.ctx.err(), context_errc::canceled);

    context v = with_value(parent.ctx, kInt, 1);
    EXPECT_EQ(v.err(), context_errc::canceled);
    cancelable vc = with_cancel_cause(v);
    EXPECT_EQ(vc.ctx.err(), context_errc::canceled);
    EXPECT_EQ(vc.ctx.cause(), io_error());
    vc.cancel(reset_error());
    EXPECT_EQ(vc.ctx.cause(), io_error()) << "born cancelled: its own cancel changes nothing";

    // A parent that timed out passes deadline_exceeded on.
    cancelable dead = with_timeout(background(), -1ms);
    cancelable dc = with_cancel(dead.ctx);
    EXPECT_EQ(dc.ctx.err(), context_errc::deadline_exceeded);

    for (auto* f : {&c.cancel, &t.cancel, &p.cancel, &vc.cancel, &dead.cancel, &dc.cancel}) (*f)();
  });
}

// Go's TestInterlockedCancels: a goroutine cancels a child when the parent is done.
TEST(Context, ACancelTriggeredByAParentsDoneCompletes) {
  run_checked([] {
    cancelable parent = with_cancel(background());
    cancelable child = with_cancel(background());
    wait_group wg;
    wg.add(1);
    go([&] {
      parent.ctx.done().recv();
      child.cancel();
      wg.done();
    });
    parent.cancel();
    EXPECT_TRUE(wait_done(child.ctx)) << "the child was not cancelled";
    EXPECT_TRUE(wg.wait_for(10s));
  });
}

// ---------------------------------------------------------------------------------------
// children unlink themselves

TEST(Context, ACancelledChildRemovesItselfFromItsParent) {
  run_checked([] {
    cancelable parent = with_cancel(background());
    auto token = std::make_shared<int>(7);
    const int n = stress(100'000, 10'000);
    for (int i = 0; i < n; i++) {
      context v = with_value(parent.ctx, kToken, token);
      cancelable c = with_cancel(v);
      if (i % 2) c.ctx.done();  // with and without a done channel
      c.cancel();
    }
    EXPECT_EQ(token.use_count(), 1) << "cancelled children are still referenced by their parent";

    // A deadline child cancelled before it fires: its timer's reference goes too.
    for (int i = 0; i < 1000; i++) {
      context v = with_value(parent.ctx, kToken, token);
      cancelable c = with_timeout(v, 1h);
      c.cancel();
    }
    EXPECT_EQ(token.use_count(), 1) << "cancelled deadline children are still referenced";

    // Go's "lost cancel": a child whose cancel is never called stays linked until the
    // parent is cancelled, which then frees it.
    {
      context v = with_value(parent.ctx, kToken, token);
      cancelable c = with_cancel(v);
      cancelable grandchild = with_cancel(c.ctx);
    }
    EXPECT_EQ(token.use_count(), 2) << "an uncancelled child is linked into its parent";
    parent.cancel();
    EXPECT_EQ(token.use_count(), 1) << "cancelling the parent did not free its children";
    EXPECT_EQ(parent.ctx.err(), context_errc::canceled);
  });
}

TEST(Context, ADeadlineChildThatFiresRemovesItselfFromItsParent) {
  run_checked([] {
    cancelable parent = with_cancel(background());
    auto token = std::make_shared<int>(7);
    {
      std::vector<context> children;
      for (int i = 0; i < 100; i++) {
        context v = with_value(parent.ctx, kToken, token);
        cancelable c = with_timeout(v, std::chrono::microseconds(100 * (i % 10)));
        children.push_back(c.ctx);
        // The cancel function is dropped uncalled: the firing alone must unlink.
      }
      for (auto& c : children) {
        ASSERT_TRUE(wait_done(c));
        EXPECT_EQ(c.err(), context_errc::deadline_exceeded);
      }
      EXPECT_FALSE(parent.ctx.err()) << "a child's deadline reached its parent";
    }
    // The timer callback drops its reference just after closing done().
    EXPECT_TRUE(eventually([&] { return token.use_count() == 1; }))
        << "fired deadline children are still referenced: use_count " << token.use_count();
    parent.cancel();
  });
}

TEST(Context, CreatingAndCancellingManyChildrenKeepsMemoryFlat) {
  if (testing::kSanitized) GTEST_SKIP() << "sanitizer allocators quarantine freed memory";
  run_checked([] {
    cancelable parent = with_cancel(background());
    auto round = [&](int n) {
      for (int i = 0; i < n; i++) {
        context v = with_value(parent.ctx, kInt, i);
        cancelable c = with_cancel(v);
        c.ctx.done();
        c.cancel();
      }
    };
    round(2000);  // warm the allocator up
    long before = blocking([] { return testing::rss_bytes(); });
    round(100'000);
    long after = blocking([] { return testing::rss_bytes(); });
    // Leaking both nodes and the channel would cost well over 30 MiB here.
    EXPECT_LT(after - before, 8l << 20) << "RSS grew by " << (after - before) / 1024 << " KiB";
    parent.cancel();
  });
}

// ---------------------------------------------------------------------------------------
// deadlines

TEST(Context, WithTimeoutFiresWithDeadlineExceeded) {
  run_checked([] {
    auto t0 = clk::now();
    cancelable c = with_timeout(background(), 20ms);
    auto t1 = clk::now();
    ASSERT_TRUE(c.ctx.deadline().has_value());
    clk::time_point d = *c.ctx.deadline();
    EXPECT_GE(d, t0 + 20ms);
    EXPECT_LE(d, t1 + 20ms);
    EXPECT_FALSE(c.ctx.err());

    wait_group wg;
    wg.add(1);
    clk::time_point woke{};
    go([&] {
      c.ctx.done().recv();
      woke = clk::now();
      wg.done();
    });
    ASSERT_TRUE(wg.wait_for(10s)) << "the deadline did not fire";
    EXPECT_GE(woke, d) << "fired early";
    EXPECT_LT(woke - d, 2s) << "fired absurdly late";
    EXPECT_EQ(c.ctx.err(), context_errc::deadline_exceeded);
    EXPECT_EQ(c.ctx.cause(), context_errc::deadline_exceeded);
    EXPECT_EQ(c.ctx.err().message(), "context deadline exceeded");
    c.cancel();
    EXPECT_EQ(c.ctx.err(), context_errc::deadline_exceeded) << "err never changes once set";
  });
}

TEST(Context, AChildDeadlineIsNeverLaterThanItsParents) {
  run_checked([] {
    cancelable parent = with_timeout(background(), 50ms);
    ASSERT_TRUE(parent.ctx.deadline().has_value());
    clk::time_point pd = *parent.ctx.deadline();

    cancelable child = with_deadline(parent.ctx, clk::now() + 1h);
    ASSERT_TRUE(child.ctx.deadline().has_value());
    EXPECT_EQ(*child.ctx.deadline(), pd);

    context v = with_value(parent.ctx, kInt, 1);
    ASSERT_TRUE(v.deadline().has_value());
    EXPECT_EQ(*v.deadline(), pd) << "a value context reports its parent's deadline";
    cancelable grandchild = with_timeout(v, 1h);
    ASSERT_TRUE(grandchild.ctx.deadline().has_value());
    EXPECT_EQ(*grandchild.ctx.deadline(), pd);
    cancelable plain = with_cancel(v);
    ASSERT_TRUE(plain.ctx.deadline().has_value());
    EXPECT_EQ(*plain.ctx.deadline(), pd) << "with_cancel inherits the deadline";

    ASSERT_TRUE(wait_done(child.ctx)) << "the child did not fire with its parent";
    EXPECT_GE(clk::now(), pd);
    EXPECT_EQ(child.ctx.err(), context_errc::deadline_exceeded);
    EXPECT_EQ(parent.ctx.err(), context_errc::deadline_exceeded);
    EXPECT_TRUE(wait_done(grandchild.ctx));
    EXPECT_EQ(grandchild.ctx.err(), context_errc::deadline_exceeded);
    EXPECT_EQ(plain.ctx.err(), context_errc::deadline_exceeded);

    for (auto* f : {&parent.cancel, &child.cancel, &grandchild.cancel, &plain.cancel}) (*f)();
  });
}

TEST(Context, AnEarlierChildDeadlineFiresFirstWhileTheParentStaysLive) {
  run_checked([] {
    cancelable parent = with_timeout(background(), 1h);
    cancelable child = with_timeout(parent.ctx, 10ms);
    ASSERT_TRUE(child.ctx.deadline() && parent.ctx.deadline());
    EXPECT_LT(*child.ctx.deadline(), *parent.ctx.deadline());
    cancelable sibling = with_cancel(parent.ctx);

    ASSERT_TRUE(wait_done(child.ctx));
    EXPECT_GE(clk::now(), *child.ctx.deadline());
    EXPECT_EQ(child.ctx.err(), context_errc::deadline_exceeded);
    EXPECT_FALSE(parent.ctx.err());
    EXPECT_FALSE(is_done(parent.ctx));
    EXPECT_FALSE(sibling.ctx.err());

    parent.cancel();
    EXPECT_EQ(sibling.ctx.err(), context_errc::canceled);
    EXPECT_EQ(child.ctx.err(), context_errc::deadline_exceeded);
    child.cancel();
    sibling.cancel();
  });
}

TEST(Context, ADeadlineInThePastCancelsAtOnce) {
  run_checked([] {
    auto past = clk::now() - 1s;
    cancelable d = with_deadline(background(), past);
    EXPECT_EQ(d.ctx.err(), context_errc::deadline_exceeded);
    EXPECT_TRUE(is_done(d.ctx));
    ASSERT_TRUE(d.ctx.deadline().has_value());
    EXPECT_EQ(*d.ctx.deadline(), past);
    context v = with_value(d.ctx, kInt, 1);
    EXPECT_EQ(v.err(), context_errc::deadline_exceeded);
    cancelable zero = with_timeout(background(), 0ns);
    EXPECT_EQ(zero.ctx.err(), context_errc::deadline_exceeded);
    cancelable negative = with_timeout(background(), -5ms);
    EXPECT_EQ(negative.ctx.err(), context_errc::deadline_exceeded);
    d.cancel();
    EXPECT_EQ(d.ctx.err(), context_errc::deadline_exceeded);
    zero.cancel();
    negative.cancel();
  });
}

// detail::with_deadline_untimed: the deadline without a timer of its own (the HTTP
// server expires it from the timer it already runs). It reports its deadline, is not
// cancelled when it passes until expire() is called, then ends with deadline_exceeded,
// as do its children; a past deadline still cancels at once, and expire() after a
// cancel changes nothing.
TEST(Context, AnUntimedDeadlineEndsOnlyWhenItsOwnerExpiresIt) {
  run_checked([] {
    auto when = clk::now() + 1ms;
    cancelable u = detail::with_deadline_untimed(background(), when);
    cancelable child = with_cancel(u.ctx);
    ASSERT_TRUE(u.ctx.deadline().has_value());
    EXPECT_EQ(*u.ctx.deadline(), when);
    cancelable witness = with_deadline(background(), when + 20ms);  // a timed one, later
    ASSERT_TRUE(wait_done(witness.ctx));
    EXPECT_FALSE(u.ctx.err()) << "an untimed deadline fired by itself";
    detail::expire(u.ctx);
    EXPECT_EQ(u.ctx.err(), context_errc::deadline_exceeded);
    EXPECT_TRUE(is_done(u.ctx));
    EXPECT_EQ(child.ctx.err(), context_errc::deadline_exceeded);
    u.cancel();
    EXPECT_EQ(u.ctx.err(), context_errc::deadline_exceeded);

    cancelable past = detail::with_deadline_untimed(background(), clk::now() - 1s);
    EXPECT_EQ(past.ctx.err(), context_errc::deadline_exceeded);
    cancelable c = detail::with_deadline_untimed(background(), clk::now() + 1h);
    EXPECT_EQ(detail::timers_pending(), 0) << "an untimed deadline armed a timer";
    c.cancel();
    detail::expire(c.ctx);
    EXPECT_EQ(c.ctx.err(), context_errc::canceled);
    child.cancel();
    past.cancel();
    witness.cancel();
  });
}

TEST(Context, CancelBeforeTheDeadlineWinsForGood) {
  run_checked([] {
    // 200 ms: long enough that the cancel certainly comes first on a loaded machine.
    cancelable c = with_timeout(background(), 200ms);
    cancelable witness = with_timeout(background(), 400ms);  // a later deadline
    c.cancel();
    EXPECT_EQ(c.ctx.err(), context_errc::canceled);
    ASSERT_TRUE(wait_done(witness.ctx));  // c's deadline has long passed
    EXPECT_EQ(c.ctx.err(), context_errc::canceled) << "the stopped timer fired anyway";
    EXPECT_EQ(c.ctx.cause(), context_errc::canceled);
    witness.cancel();
  });
}

// Go: WithTimeout(ctx, math.MaxInt64) never fires (time.Time.Add drops the monotonic
// reading instead of overflowing).
TEST(Context, AnEnormousTimeoutNeverFires) {
  run_checked([] {
    cancelable c = with_timeout(background(), std::chrono::nanoseconds::max());
    EXPECT_FALSE(c.ctx.err()) << "cancelled at once with " << c.ctx.err().message();
    ASSERT_TRUE(c.ctx.deadline().has_value());
    EXPECT_GT(*c.ctx.deadline(), clk::now() + 24h * 365);
    cancelable far = with_deadline(background(), clk::time_point::max());
    EXPECT_FALSE(far.ctx.err());
    c.cancel();
    far.cancel();
  });
}

// ---------------------------------------------------------------------------------------
// values

TEST(Context, ValuesAreFoundThroughTheChainAndNearerOnesShadow) {
  run_checked([] {
    const context_key<int> k3{"k3"};
    context c1 = with_value(background(), kInt, 1);
    cancelable cc = with_cancel(c1);
    context c2 = with_value(cc.ctx, kStr, "two");
    cancelable tc = with_timeout(c2, 1h);
    context c3 = with_value(tc.ctx, kInt, 11);  // the same key object: shadows
    context c4 = with_value(c3, k3, 3);

    ASSERT_NE(c1.value(kInt), nullptr);
    EXPECT_EQ(*c1.value(kInt), 1);
    EXPECT_EQ(c1.value(kStr), nullptr);
    EXPECT_EQ(*cc.ctx.value(kInt), 1);
    ASSERT_NE(c2.value(kStr), nullptr);
    EXPECT_EQ(*c2.value(kStr), "two");
    EXPECT_EQ(*c2.value(kInt), 1);
    EXPECT_EQ(*tc.ctx.value(kStr), "two");
    EXPECT_EQ(*c3.value(kInt), 11);
    EXPECT_EQ(*c3.value(kStr), "two");
    EXPECT_EQ(c3.value(k3), nullptr);
    EXPECT_EQ(*c4.value(kInt), 11);
    EXPECT_EQ(*c4.value(k3), 3);
    EXPECT_EQ(*tc.ctx.value(kInt), 1) << "shadowing does not change the parent";

    // Cancellation does not touch values.
    cc.cancel();
    EXPECT_EQ(*c4.value(kInt), 11);
    EXPECT_EQ(*c4.value(kStr), "two");
    EXPECT_EQ(c4.err(), context_errc::canceled);
    tc.cancel();
  });
}

TEST(Context, KeysAreComparedByIdentity) {
  run_checked([] {
    const context_key<int> a{"same"};
    const context_key<int> b{"same"};
    context ca = with_value(background(), a, 1);
    ASSERT_NE(ca.value(a), nullptr);
    EXPECT_EQ(*ca.value(a), 1);
    EXPECT_EQ(ca.value(b), nullptr) << "a key with the same type and name is another key";
    context cb = with_value(ca, b, 2);
    EXPECT_EQ(*cb.value(a), 1);
    EXPECT_EQ(*cb.value(b), 2);
    // Copies of a key are other keys too.
    context_key<int> copy = a;
    EXPECT_EQ(cb.value(copy), nullptr);
  });
}

// Go's TestLayersCancel / TestLayersTimeout: random stacks of value, cancel and timeout
// layers; values stay visible, and cancelling one layer cancels exactly the layers below.
TEST(Context, RandomLayersKeepValuesAndCancelExactlyTheLayersBelow) {
  run_checked([] {
    const context_key<int> keys[3] = {{"k0"}, {"k1"}, {"k2"}};
    std::mt19937 rng(1234);
    for (int trial = 0; trial < 200; trial++) {
      struct layer {
        context ctx;
        cancel_func cancel;  // empty for value layers
        int expect[3];       // value visible per key, -1 none
      };
      std::vector<layer> layers;
      context cur = background();
      int vis[3] = {-1, -1, -1};
      const int depth = 2 + static_cast<int>(rng() % 12);
      for (int i = 0; i < depth; i++) {
        switch (rng() % 3) {
          case 0: {
            int k = static_cast<int>(rng() % 3);
            cur = with_value(cur, keys[k], i);
            vis[k] = i;
            layers.push_back({cur, {}, {vis[0], vis[1], vis[2]}});
            break;
          }
          case 1: {
            cancelable c = with_cancel(cur);
            cur = c.ctx;
            layers.push_back({cur, c.cancel, {vis[0], vis[1], vis[2]}});
            break;
          }
          default: {
            cancelable c = with_timeout(cur, 1h);
            cur = c.ctx;
            layers.push_back({cur, c.cancel, {vis[0], vis[1], vis[2]}});
          }
        }
      }
      for (auto& l : layers)
        for (int k = 0; k < 3; k++) {
          const int* v = l.ctx.value(keys[k]);
          if (l.expect[k] < 0) {
            EXPECT_EQ(v, nullptr);
          } else {
            EXPECT_NE(v, nullptr);
            if (v) {
              EXPECT_EQ(*v, l.expect[k]);
            }
          }
        }
      std::vector<int> cancelables;
      for (int i = 0; i < depth; i++)
        if (layers[i].cancel) cancelables.push_back(i);
      if (cancelables.empty()) continue;
      int at = cancelables[rng() % cancelables.size()];
      layers[at].cancel();
      for (int i = 0; i < depth; i++) {
        bool expect = i >= at;
        EXPECT_EQ(static_cast<bool>(layers[i].ctx.err()), expect)
            << "trial " << trial << " layer " << i << " of " << depth << ", cancelled " << at;
        EXPECT_EQ(is_done(layers[i].ctx), expect) << "trial " << trial << " layer " << i;
      }
      for (auto& l : layers)
        if (l.cancel) l.cancel();
    }
  });
}

// ---------------------------------------------------------------------------------------
// cause

TEST(Context, CauseIsTheErrorPassedToCancel) {
  run_checked([] {
    // with_cancel_cause: cause() is the cancel argument, err() stays canceled; children
    // created before and after inherit the cause.
    cancelable c = with_cancel_cause(background());
    cancelable before = with_cancel(c.ctx);
    context v = with_value(c.ctx, kInt, 1);
    c.cancel(reset_error());
    EXPECT_EQ(c.ctx.err(), context_errc::canceled);
    EXPECT_EQ(c.ctx.cause(), reset_error());
    EXPECT_EQ(before.ctx.err(), context_errc::canceled);
    EXPECT_EQ(before.ctx.cause(), reset_error());
    EXPECT_EQ(v.cause(), reset_error());
    cancelable later = with_cancel(c.ctx);
    EXPECT_EQ(later.ctx.cause(), reset_error());
    c.cancel(io_error());
    EXPECT_EQ(c.ctx.cause(), reset_error()) << "the first cause stays";

    // A plain cancel: cause() == err().
    cancelable p = with_cancel(background());
    p.cancel();
    EXPECT_EQ(p.ctx.cause(), p.ctx.err());
    EXPECT_EQ(p.ctx.cause(), context_errc::canceled);

    // An empty cause is canceled (Go: cancel(nil)).
    cancelable e = with_cancel_cause(background());
    e.cancel(std::error_code{});
    EXPECT_EQ(e.ctx.err(), context_errc::canceled);
    EXPECT_EQ(e.ctx.cause(), context_errc::canceled);

    // A child cancelled with its own cause keeps it when the parent goes later.
    cancelable parent = with_cancel_cause(background());
    cancelable child = with_cancel_cause(parent.ctx);
    child.cancel(io_error());
    parent.cancel(reset_error());
    EXPECT_EQ(child.ctx.cause(), io_error());
    EXPECT_EQ(parent.ctx.cause(), reset_error());

    // A deadline's cause is deadline_exceeded, also for children.
    cancelable d = with_timeout(background(), -1ns);
    cancelable dc = with_cancel_cause(d.ctx);
    EXPECT_EQ(d.ctx.cause(), context_errc::deadline_exceeded);
    EXPECT_EQ(dc.ctx.cause(), context_errc::deadline_exceeded);

    // Uncancelled: no cause.
    cancelable live = with_cancel_cause(background());
    EXPECT_FALSE(live.ctx.cause());

    for (auto* f : {&before.cancel, &later.cancel, &d.cancel, &dc.cancel, &live.cancel}) (*f)();
  });
}

// Go's TestCauseRace: cause() read concurrently with the cancel that sets it.
TEST(Context, CauseReadRacingTheCancelSeesNothingOrTheCause) {
  run_checked([] {
    const int rounds = stress(500, 100);
    for (int r = 0; r < rounds; r++) {
      cancelable c = with_cancel_cause(background());
      wait_group wg;
      wg.add(2);
      std::atomic<bool> bad{false};
      go([&] {
        c.cancel(io_error());
        wg.done();
      });
      go([&] {
        for (;;) {
          std::error_code cause = c.ctx.cause();
          std::error_code err = c.ctx.err();
          if (cause && cause != io_error()) bad = true;
          if (err && err != context_errc::canceled) bad = true;
          if (cause) break;
          yield();
        }
        wg.done();
      });
      ASSERT_TRUE(wg.wait_for(10s));
      EXPECT_FALSE(bad.load()) << "round " << r;
    }
  });
}

// ---------------------------------------------------------------------------------------
// done() in select

TEST(Context, DoneWorksAsASelectCase) {
  run_checked([] {
    chan<int> results(0);
    // A live context's done() is not ready.
    cancelable live = with_cancel(background());
    std::monostate m;
    EXPECT_EQ(select(case_recv(live.ctx.done(), m), case_default()), 1);

    // Callback form: a goroutine blocked in select on results and done() wakes on cancel.
    cancelable c = with_cancel(background());
    wait_group wg;
    wg.add(1);
    int chosen = -1;
    bool ok = true;
    std::error_code seen;
    go([&] {
      chosen = select(on_recv(results, [&](int, bool) {}), on_recv(c.ctx.done(), [&](std::monostate, bool o) {
                        ok = o;
                        seen = c.ctx.err();
                      }));
      wg.done();
    });
    c.cancel();
    ASSERT_TRUE(wg.wait_for(10s));
    EXPECT_EQ(chosen, 1);
    EXPECT_FALSE(ok);
    EXPECT_EQ(seen, context_errc::canceled);

    // case_recv form, on a value child of a deadline context.
    cancelable t = with_timeout(background(), 5ms);
    context v = with_value(t.ctx, kInt, 1);
    EXPECT_TRUE(v.done() == t.ctx.done()) << "a value context shares its parent's done()";
    int r = 0;
    bool rok = true;
    time_point tp;
    int i = select(case_recv(results, r), case_recv(v.done(), m, &rok), case_recv(after(10s), tp));
    EXPECT_EQ(i, 1);
    EXPECT_FALSE(rok);
    EXPECT_EQ(v.err(), context_errc::deadline_exceeded);

    // A cancelled context's done() is always ready.
    EXPECT_EQ(select(case_recv(c.ctx.done(), m), case_default()), 0);
    live.cancel();
    t.cancel();
  });
}

// ---------------------------------------------------------------------------------------
// sleep_for(ctx, d): a sleep that a context ends early

TEST(Context, SleepForRunsItsFullDurationWhenNothingCancels) {
  run_checked([] {
    cancelable c = with_cancel(background());
    context v = with_value(c.ctx, kInt, 1);
    for (const context* ctx : {&c.ctx, &v}) {
      auto t0 = clk::now();
      EXPECT_FALSE(sleep_for(*ctx, 20ms));
      EXPECT_GE(clk::now() - t0, 20ms);
    }
    auto t0 = clk::now();
    EXPECT_FALSE(sleep_for(background(), 5ms)) << "background is never cancelled";
    EXPECT_GE(clk::now() - t0, 5ms);
    EXPECT_FALSE(sleep_for(c.ctx, 0ms));
    EXPECT_FALSE(sleep_for(c.ctx, -1ms));
    c.cancel();
    EXPECT_EQ(detail::timers_pending(), 0) << "the sleep's timer is gone";
  });
}

TEST(Context, SleepForOnAnEndedContextReturnsItsErrorAtOnce) {
  run_checked([] {
    cancelable c = with_cancel(background());
    c.cancel();
    cancelable past = with_deadline(background(), clk::now() - 1s);
    auto t0 = clk::now();
    EXPECT_EQ(sleep_for(c.ctx, 10s), context_errc::canceled);
    EXPECT_EQ(sleep_for(with_value(c.ctx, kInt, 1), 10s), context_errc::canceled);
    EXPECT_EQ(sleep_for(past.ctx, 10s), context_errc::deadline_exceeded);
    EXPECT_EQ(sleep_for(c.ctx, 0ms), context_errc::canceled);
    EXPECT_LT(clk::now() - t0, 5s);
    EXPECT_EQ(detail::timers_pending(), 0);
  });
}

TEST(Context, CancelWakesAGoroutineInSleepForWithCanceled) {
  run_checked([] {
    cancelable root = with_cancel(background());
    context leaf = with_value(with_cancel(root.ctx).ctx, kInt, 7);  // its cancel dropped: root ends it
    wait_group wg;
    wg.add(2);
    std::error_code got_root, got_leaf;
    go([&] {
      got_root = sleep_for(root.ctx, 1h);
      wg.done();
    });
    go([&] {
      got_leaf = sleep_for(leaf, 1h);
      wg.done();
    });
    yield();  // one P: both run and park in sleep_for
    std::string dump = dump_goroutines();
    EXPECT_NE(dump.find("[sleep]"), std::string::npos) << dump;
    EXPECT_EQ(detail::timers_pending(), 2);
    auto t0 = clk::now();
    root.cancel();
    ASSERT_TRUE(wg.wait_for(10s)) << "a goroutine in sleep_for did not wake on cancel";
    EXPECT_LT(clk::now() - t0, 10s);
    EXPECT_EQ(got_root, context_errc::canceled);
    EXPECT_EQ(got_leaf, context_errc::canceled);
    EXPECT_EQ(detail::timers_pending(), 0) << "the woken sleeps stopped their timers";
  }, {.max_procs = 1});
}

TEST(Context, ADeadlineEndsSleepForWithDeadlineExceeded) {
  run_checked([] {
    auto t0 = clk::now();  // before the deadline is set: it counts from then
    cancelable t = with_timeout(background(), 20ms);
    EXPECT_EQ(sleep_for(t.ctx, 1h), context_errc::deadline_exceeded);
    EXPECT_GE(clk::now() - t0, 20ms);
    // An untimed deadline (the HTTP server's) ends it when its owner expires it.
    cancelable u = detail::with_deadline_untimed(background(), clk::now() + 1h);
    wait_group wg;
    wg.add(1);
    std::error_code got;
    go([&] {
      got = sleep_for(u.ctx, 1h);
      wg.done();
    });
    yield();
    detail::expire(u.ctx);
    ASSERT_TRUE(wg.wait_for(10s));
    EXPECT_EQ(got, context_errc::deadline_exceeded);
    t.cancel();
    u.cancel();
  }, {.max_procs = 1});
}

// Timers and cancels racing on every P: each sleep ends exactly once, by the one that
// won, and nothing is left armed or linked (ASan would see a frame touched after return).
TEST(Context, SleepForRacingCancelsEndsEachSleepOnceAndLeavesNothing) {
  run_checked([] {
    const int rounds = stress(200, 40), per_round = 50;
    std::atomic<int> slept{0}, canceled{0}, wrong{0};
    std::mt19937 rng(42);
    for (int r = 0; r < rounds; r++) {
      cancelable c = with_cancel(background());
      wait_group wg;
      wg.add(per_round);
      for (int i = 0; i < per_round; i++) {
        auto d = std::chrono::microseconds(rng() % 400);
        context ctx = i % 3 ? c.ctx : with_value(c.ctx, kInt, i);
        go([&, d, ctx] {
          auto t0 = clk::now();
          std::error_code e = sleep_for(ctx, d);
          if (!e && clk::now() - t0 >= d)
            slept++;
          else if (e == context_errc::canceled)
            canceled++;
          else
            wrong++;
          wg.done();
        });
      }
      sleep_for(std::chrono::microseconds(rng() % 300));
      c.cancel();
      ASSERT_TRUE(wg.wait_for(10s)) << "round " << r;
    }
    EXPECT_EQ(wrong.load(), 0) << "a sleep ended early without its context, or with another error";
    EXPECT_EQ(slept.load() + canceled.load(), rounds * per_round);
    EXPECT_GT(canceled.load(), 0);
    EXPECT_GT(slept.load(), 0);
    EXPECT_EQ(detail::timers_pending(), 0);
  });
}

// ---------------------------------------------------------------------------------------
// threads, fan-out, races

TEST(Context, CancellationFromAnotherThreadWakesGoroutines) {
  run_checked([] {
    auto token = std::make_shared<int>(0);
    cancelable root = with_cancel(background());
    const int n = 64;
    std::vector<cancelable> children;
    for (int i = 0; i < n; i++) children.push_back(with_cancel(with_value(root.ctx, kToken, token)));
    wait_group started, finished;
    started.add(n);
    finished.add(n);
    std::atomic<int> woke{0};
    for (int i = 0; i < n; i++)
      go([&, d = children[i].ctx.done()] {
        started.done();
        d.recv();
        woke++;
        finished.done();
      });
    started.wait();
    // Threads 0-2 cancel children (some racing the root's cancel); thread 3 the root.
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; t++)
      threads.emplace_back([&, t] {
        for (int i = t; i < n; i += 3)
          if (i % 2) children[i].cancel();
      });
    threads.emplace_back([&] { root.cancel(); });
    ASSERT_TRUE(finished.wait_for(10s)) << "woke " << woke.load() << " of " << n;
    blocking([&] {
      for (auto& t : threads) t.join();
    });
    EXPECT_EQ(woke.load(), n);
    for (auto& c : children) EXPECT_EQ(c.ctx.err(), context_errc::canceled);
    children.clear();
    EXPECT_EQ(token.use_count(), 1);
  });
}

TEST(Context, CancellationFansOutToManyWaitingGoroutines) {
  run_checked([] {
    const int n = stress(10'000, 1'000);
    const int mids = 100;
    cancelable root = with_cancel(background());
    std::vector<cancelable> mid;
    for (int i = 0; i < mids; i++) mid.push_back(with_cancel(with_value(root.ctx, kInt, i)));
    std::vector<cancelable> leaves;
    leaves.reserve(n);
    for (int i = 0; i < n; i++) leaves.push_back(with_cancel(mid[i % mids].ctx));

    wait_group started, finished;
    started.add(n);
    finished.add(n);
    std::atomic<int> woke{0};
    for (int i = 0; i < n; i++)
      go([&, c = leaves[i].ctx] {
        done_chan d = c.done();
        started.done();
        if (!d.recv().ok && c.err() == context_errc::canceled) woke++;
        finished.done();
      });
    started.wait();
    EXPECT_EQ(woke.load(), 0);
    root.cancel();
    ASSERT_TRUE(finished.wait_for(30s)) << "woke " << woke.load() << " of " << n;
    EXPECT_EQ(woke.load(), n);
    for (auto& l : leaves) l.cancel();
    for (auto& m : mid) m.cancel();
  });
}

// Go's TestSimultaneousCancels: every node of a tree is cancelled by its own goroutine,
// all at once.
TEST(Context, SimultaneousCancelsOfATreeAllComplete) {
  run_checked([] {
    auto token = std::make_shared<int>(0);
    const int rounds = stress(20, 5);
    for (int r = 0; r < rounds; r++) {
      cancelable root = with_cancel(background());
      std::vector<tree_node> tree;
      grow(tree, root.ctx, -1, 1, 3, 4, token);  // 4 + 16 + 64 nodes
      const int n = static_cast<int>(tree.size());
      done_chan start(0);
      wait_group wg;
      wg.add(n + 1);
      for (int i = 0; i < n; i++)
        go([&, i] {
          start.recv();
          tree[i].cancel();
          wg.done();
        });
      go([&] {
        start.recv();
        root.cancel();
        wg.done();
      });
      start.close();
      ASSERT_TRUE(wg.wait_for(10s));
      for (auto& node : tree) EXPECT_TRUE(wait_done(node.ctx));
      tree.clear();
    }
    EXPECT_EQ(token.use_count(), 1) << "a node leaked";
  });
}

// A deadline firing races an explicit cancel: exactly one wins, the error never changes,
// and every reference (list, timer, handles) is dropped.
TEST(Context, CancelRacingTheDeadlineKeepsOneOutcomeAndLeaksNothing) {
  run_checked([] {
    auto token = std::make_shared<int>(0);
    cancelable parent = with_cancel(background());
    const int n = stress(2000, 300);
    std::mt19937 rng(99);
    int canceled = 0, exceeded = 0;
    for (int i = 0; i < n; i++) {
      auto timeout = std::chrono::microseconds(rng() % 200);
      auto cancel_at = clk::now() + std::chrono::microseconds(rng() % 200);
      cancelable c = with_timeout(with_value(parent.ctx, kToken, token), timeout);
      wait_group wg;
      wg.add(1);
      go([&wg, f = c.cancel, cancel_at] {
        while (clk::now() < cancel_at) preempt_check();  // at most 200us
        f();
        wg.done();
      });
      ASSERT_TRUE(wait_done(c.ctx));
      std::error_code e1 = c.ctx.err();
      ASSERT_TRUE(wg.wait_for(10s));
      std::error_code e2 = c.ctx.err();
      EXPECT_EQ(e1, e2) << "err changed after it was set";
      if (e1 == context_errc::canceled)
        canceled++;
      else if (e1 == context_errc::deadline_exceeded)
        exceeded++;
      else
        ADD_FAILURE() << "unexpected error " << e1.message();
    }
    EXPECT_EQ(canceled + exceeded, n);
    EXPECT_TRUE(eventually([&] { return token.use_count() == 1; }))
        << "contexts leaked: use_count " << token.use_count();
    parent.cancel();
  });
}

// Children created while their parent is being cancelled end up cancelled: either born
// cancelled or reached by the propagation, never missed.
TEST(Context, ChildrenCreatedRacingTheParentsCancelAreAllCancelled) {
  run_checked([] {
    auto token = std::make_shared<int>(0);
    const int rounds = stress(50, 10);
    for (int r = 0; r < rounds; r++) {
      cancelable parent = with_cancel(background());
      std::vector<cancelable> kids;
      chan<int> halfway(1);
      wait_group wg;
      wg.add(2);
      go([&] {
        for (int i = 0; i < 400; i++) {
          if (i == 100) halfway.send(i);
          context base = (i % 2) ? with_value(parent.ctx, kToken, token) : parent.ctx;
          kids.push_back(i % 3 ? with_cancel(base) : with_timeout(base, 1h));
        }
        wg.done();
      });
      go([&] {
        halfway.recv();
        parent.cancel();
        wg.done();
      });
      ASSERT_TRUE(wg.wait_for(10s));
      for (size_t i = 0; i < kids.size(); i++)
        ASSERT_EQ(kids[i].ctx.err(), context_errc::canceled) << "round " << r << " child " << i;
    }
    EXPECT_EQ(token.use_count(), 1);
  });
}

// Cancellation and release are iterative: a very deep chain neither overflows the
// goroutine's stack when cancelled nor when freed.
TEST(Context, DeepChainsCancelAndFreeWithoutRecursion) {
  run_checked([] {
    const int depth = stress(100'000, 20'000);
    {
      cancelable root = with_cancel(background());
      std::vector<cancelable> chain;
      chain.reserve(depth);
      context cur = with_value(root.ctx, kInt, -1);
      for (int i = 0; i < depth; i++) {
        chain.push_back(i % 2 ? with_cancel(cur) : with_timeout(cur, 1h));
        cur = (i % 5 == 0) ? with_value(chain.back().ctx, kStr, "deep") : chain.back().ctx;
      }
      ASSERT_NE(cur.value(kInt), nullptr);
      EXPECT_EQ(*cur.value(kInt), -1) << "lookup walks the whole chain";
      root.cancel();
      EXPECT_EQ(cur.err(), context_errc::canceled);
      EXPECT_EQ(chain.back().ctx.err(), context_errc::canceled);
      // Dropped front to back: the last handle frees the whole chain.
    }
    {
      // Never cancelled: the leaf handle owns the chain through parent references.
      context cur = background();
      for (int i = 0; i < depth; i++) cur = with_value(cur, kInt, i);
      EXPECT_EQ(*cur.value(kInt), depth - 1);
    }
  });
}

}  // namespace
}  // namespace weft
