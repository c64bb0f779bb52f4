// select: Go's select tests (select fairness, self-select, default, nil cases, close).
#include <array>
#include <atomic>
#include <cmath>
#include <stdexcept>

#include "runtime/chan.h"
#include "runtime/select.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;
using testing::stress;

TEST(Select, DefaultRunsWhenNothingIsReady) {
  run_checked([] {
    chan<int> a(0), b(0);
    int v = 0;
    int i = select(case_recv(a, v), case_send(b, 1), case_default());
    EXPECT_EQ(i, 2);
    bool ran = false;
    select(on_recv(a, [](int, bool) { ADD_FAILURE(); }), on_default([&] { ran = true; }));
    EXPECT_TRUE(ran);
  });
}

TEST(Select, ReturnsTheReadyCaseAndMovesItsValue) {
  run_checked([] {
    chan<int> a(1), b(1);
    b.send(9);
    int v = 0;
    bool ok = false;
    EXPECT_EQ(select(case_recv(a, v), case_recv(b, v, &ok)), 1);
    EXPECT_EQ(v, 9);
    EXPECT_TRUE(ok);
    // A send case: the value goes in only if chosen.
    chan<std::string> full(1), room(1);
    full.send("x");
    EXPECT_EQ(select(case_send(full, std::string("lost?")), case_send(room, std::string("y"))), 1);
    EXPECT_EQ(full.recv().value, "x");
    EXPECT_EQ(room.recv().value, "y");
  });
}

TEST(Select, CallbackFormRunsOnlyTheChosenCase) {
  run_checked([] {
    chan<int> a(1), b(1);
    a.send(3);
    int got = 0, other = 0;
    int i = select(on_recv(a, [&](int v, bool ok) { got = ok ? v : -1; }),
                   on_send(b, 4, [&] { other++; }), on_default([&] { other++; }));
    // a is ready and b has room: either may be chosen; exactly one callback runs.
    if (i == 0)
      EXPECT_EQ(got, 3);
    else
      EXPECT_EQ(i, 1);
    EXPECT_EQ((got != 0) + other, 1);
  });
}

TEST(Select, ParksOnAllCasesAndWakesOnAny) {
  run_checked([] {
    chan<int> a(0), b(0), c(0);
    for (int which = 0; which < 3; which++) {
      wait_group wg;
      wg.add(1);
      int chosen = -1, v = 0;
      go([&] {
        chosen = select(case_recv(a, v), case_recv(b, v), case_recv(c, v));
        wg.done();
      });
      yield();  // one P: the select goroutine runs and parks on all three
      (which == 0 ? a : which == 1 ? b : c).send(100 + which);
      wg.wait();
      EXPECT_EQ(chosen, which);
      EXPECT_EQ(v, 100 + which);
    }
    // The losing cases were taken off their channels: nothing is left waiting.
    EXPECT_FALSE(a.try_send(1));
    EXPECT_FALSE(b.try_send(1));
  }, {.max_procs = 1});
}

TEST(Select, CloseWakesAReceiveCaseWithOkFalse) {
  run_checked([] {
    chan<int> a(0), b(0);
    wait_group wg;
    wg.add(1);
    int chosen = -1, v = 5;
    bool ok = true;
    go([&] {
      chosen = select(case_recv(a, v), case_recv(b, v, &ok));
      wg.done();
    });
    yield();
    b.close();
    wg.wait();
    EXPECT_EQ(chosen, 1);
    EXPECT_FALSE(ok);
    EXPECT_EQ(v, 0) << "the zero value";
  }, {.max_procs = 1});
}

TEST(Select, SendCaseOnClosedChannelPanics) {
  run_checked([] {
    chan<int> c(1);
    c.close();
    EXPECT_THROW(select(case_send(c, 1), case_default()), std::logic_error);
  });
}

TEST(Select, NilChannelCasesAreNeverReady) {
  run_checked([] {
    chan<int> nil, ready(1);
    ready.send(1);
    int v = 0;
    for (int i = 0; i < 100; i++) {
      EXPECT_EQ(select(case_recv(nil, v), case_send(nil, 2), case_default()), 2);
    }
    EXPECT_EQ(select(case_recv(nil, v), case_recv(ready, v)), 1);
  });
}

// Go's TestSelectFairness: with every case ready, each is chosen uniformly. A chi-square
// test over 4 cases, 3 degrees of freedom; 21.1 is the 0.9999 quantile.
TEST(Select, PicksUniformlyAmongReadyCases) {
  run_checked([] {
    std::array<chan<int>, 4> cs{chan<int>(1), chan<int>(1), chan<int>(1), chan<int>(1)};
    for (auto& c : cs) c.send(0);
    const int n = stress(40000, 8000);
    std::array<int, 4> hits{};
    int v;
    for (int i = 0; i < n; i++) {
      int k = select(case_recv(cs[0], v), case_recv(cs[1], v), case_recv(cs[2], v), case_recv(cs[3], v));
      hits[k]++;
      cs[k].send(0);
    }
    double expected = n / 4.0, chi2 = 0;
    for (int h : hits) chi2 += (h - expected) * (h - expected) / expected;
    EXPECT_LT(chi2, 21.1) << hits[0] << " " << hits[1] << " " << hits[2] << " " << hits[3];
  });
}

// Go's TestSelfSelect: goroutines select to send and receive on one channel; a select's
// own send and receive cases never match each other.
TEST(Select, GoroutinesSelectingBothWaysOnOneChannelMakeProgress) {
  for (int cap : {0, 1}) {
    run_checked([cap] {
      chan<int> c(cap);
      const int n = stress(2000, 200);
      wait_group wg;
      wg.add(2);
      for (int p = 0; p < 2; p++)
        go([&, p] {
          for (int i = 0; i < n; i++) {
            int v = 0;
            if (p == 0 && i % 2 == 0) {
              select(case_send(c, p), case_recv(c, v));
            } else {
              int k = select(case_recv(c, v), case_send(c, p));
              if (k == 0 && cap == 0) EXPECT_NE(v, p) << "a select received its own send";
            }
          }
          wg.done();
        });
      wg.wait();
    }, {.max_procs = 2});
  }
}

// Many goroutines selecting over shared channels: every value sent is received once.
TEST(Select, StressManySelectorsLoseNothing) {
  run_checked([] {
    chan<int> a(0), b(4), done(0);
    const int senders = 4, per = stress(5000, 500);
    std::atomic<int64_t> sum{0};
    wait_group sent, recvd;
    sent.add(senders);
    recvd.add(4);
    for (int s = 0; s < senders; s++)
      go([&, s] {
        for (int i = 1; i <= per; i++) select(case_send(a, i), case_send(b, i));
        sent.done();
      });
    for (int r = 0; r < 4; r++)
      go([&] {
        for (;;) {
          int v = 0;
          bool ok = true;
          int k = select(case_recv(a, v), case_recv(b, v), case_recv(done, v, &ok));
          if (k == 2) break;
          sum += v;
        }
        recvd.done();
      });
    sent.wait();
    // Drain: b may still hold values, then stop the receivers.
    done.close();
    recvd.wait();
    int v;
    while (auto r = b.try_recv()) {
      if (!r->ok) break;
      v = r->value;
      sum += v;
    }
    EXPECT_EQ(sum.load(), int64_t{senders} * per * (per + 1) / 2);
  }, {.max_procs = 2});
}

}  // namespace
}  // namespace weft
