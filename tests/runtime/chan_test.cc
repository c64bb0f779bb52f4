// Channels: Go's table of behaviours (chan_test.go), close semantics, move-only values,
// many producers and consumers.
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/chan.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;
using testing::stress;

TEST(Chan, UnbufferedSendWaitsForAReceiver) {
  run_checked([] {
    chan<int> c(0);
    std::atomic<bool> sent{false};
    wait_group wg;
    wg.add(1);
    go([&] {
      c.send(7);
      sent = true;
      wg.done();
    });
    for (int i = 0; i < 100; i++) yield();
    EXPECT_FALSE(sent.load()) << "an unbuffered send completed with no receiver";
    auto [v, ok] = c.recv();
    EXPECT_EQ(v, 7);
    EXPECT_TRUE(ok);
    wg.wait();
    EXPECT_TRUE(sent.load());
  }, {.max_procs = 2});
}

TEST(Chan, BufferedChannelIsFifoAndReportsLenAndCap) {
  run_checked([] {
    chan<int> c(4);
    EXPECT_EQ(c.cap(), 4u);
    for (int i = 0; i < 4; i++) c.send(i);
    EXPECT_EQ(c.len(), 4u);
    EXPECT_FALSE(c.try_send(99)) << "full buffer";
    for (int i = 0; i < 4; i++) EXPECT_EQ(c.recv().value, i);
    EXPECT_EQ(c.len(), 0u);
    EXPECT_FALSE(c.try_recv().has_value()) << "empty buffer";
  });
}

TEST(Chan, ReceiveOnClosedDrainsThenReportsClosed) {
  run_checked([] {
    chan<std::string> c(3);
    c.send("a");
    c.send("b");
    c.close();
    auto r1 = c.recv();
    auto r2 = c.recv();
    auto r3 = c.recv();
    EXPECT_EQ(r1.value, "a");
    EXPECT_TRUE(r1.ok);
    EXPECT_EQ(r2.value, "b");
    EXPECT_TRUE(r2.ok);
    EXPECT_EQ(r3.value, "") << "the zero value";
    EXPECT_FALSE(r3.ok);
    auto t = c.try_recv();
    ASSERT_TRUE(t.has_value()) << "a closed channel never blocks";
    EXPECT_FALSE(t->ok);
  });
}

TEST(Chan, SendOnClosedChannelPanics) {
  run_checked([] {
    chan<int> c(1);
    c.close();
    try {
      c.send(1);
      ADD_FAILURE() << "send on a closed channel returned";
    } catch (const std::logic_error& e) {
      EXPECT_STREQ(e.what(), "send on closed channel");
    }
    EXPECT_THROW(c.try_send(1), std::logic_error);
  });
}

TEST(Chan, CloseOfClosedOrNilChannelPanics) {
  run_checked([] {
    chan<int> c(0);
    c.close();
    try {
      c.close();
      ADD_FAILURE();
    } catch (const std::logic_error& e) {
      EXPECT_STREQ(e.what(), "close of closed channel");
    }
    chan<int> nil;
    try {
      nil.close();
      ADD_FAILURE();
    } catch (const std::logic_error& e) {
      EXPECT_STREQ(e.what(), "close of nil channel");
    }
  });
}

TEST(Chan, CloseWakesEveryBlockedReceiver) {
  run_checked([] {
    const int n = 50;
    chan<int> c(0);
    std::atomic<int> closed_seen{0};
    wait_group done;
    done.add(n);
    for (int i = 0; i < n; i++)
      go([&] {
        auto r = c.recv();
        if (!r.ok) closed_seen++;
        done.done();
      });
    // One P: yielding puts us behind every receiver, and each runs until it blocks.
    yield();
    EXPECT_EQ(closed_seen.load(), 0);
    c.close();
    done.wait();
    EXPECT_EQ(closed_seen.load(), n);
  }, {.max_procs = 1});
}

TEST(Chan, CloseMakesBlockedSendersPanic) {
  run_checked([] {
    const int n = 20;
    chan<int> c(0);
    std::atomic<int> panicked{0};
    wait_group done;
    done.add(n);
    for (int i = 0; i < n; i++)
      go([&] {
        try {
          c.send(1);
        } catch (const std::logic_error&) {
          panicked++;
        }
        done.done();
      });
    // One P: yielding puts us behind every sender, and each runs until it blocks.
    yield();
    EXPECT_EQ(panicked.load(), 0);
    c.close();
    done.wait();
    EXPECT_EQ(panicked.load(), n);
  }, {.max_procs = 1});
}

TEST(Chan, NilChannelIsNeverReadyForTryOperations) {
  run_checked([] {
    chan<int> nil;
    EXPECT_FALSE(static_cast<bool>(nil));
    EXPECT_FALSE(nil.try_send(1));
    EXPECT_FALSE(nil.try_recv().has_value());
    EXPECT_EQ(nil.len(), 0u);
    EXPECT_EQ(nil.cap(), 0u);
  });
}

TEST(Chan, HandlesAreCheapCopiesOfOneChannel) {
  run_checked([] {
    chan<int> a(1);
    chan<int> b = a;
    EXPECT_TRUE(a == b);
    b.send(5);
    EXPECT_EQ(a.recv().value, 5);
    chan<int> other(1);
    EXPECT_FALSE(a == other);
  });
}

TEST(Chan, MoveOnlyValuesPassThrough) {
  run_checked([] {
    chan<std::unique_ptr<int>> c(2);
    c.send(std::make_unique<int>(1));
    auto p = std::make_unique<int>(2);
    EXPECT_TRUE(c.try_send(std::move(p)));
    EXPECT_EQ(*c.recv().value, 1);
    EXPECT_EQ(*c.recv().value, 2);
    // Unbuffered, between goroutines.
    chan<std::unique_ptr<int>> u(0);
    wait_group wg;
    wg.add(1);
    go([&] {
      u.send(std::make_unique<int>(42));
      wg.done();
    });
    EXPECT_EQ(*u.recv().value, 42);
    wg.wait();
    // A failed try_send leaves the value with the caller.
    chan<std::unique_ptr<int>> full(0);
    auto keep = std::make_unique<int>(3);
    EXPECT_FALSE(full.try_send(std::move(keep)));
    ASSERT_NE(keep, nullptr);
    EXPECT_EQ(*keep, 3);
  });
}

TEST(Chan, ValuesStillBufferedWhenTheLastHandleGoesAreDestroyed) {
  auto counter = std::make_shared<int>(0);
  run_checked([&] {
    chan<std::shared_ptr<int>> c(3);
    c.send(counter);
    c.send(counter);
    EXPECT_EQ(counter.use_count(), 3);
  });
  EXPECT_EQ(counter.use_count(), 1);
}

TEST(Chan, RangeReceivesUntilClosed) {
  run_checked([] {
    chan<int> c(0);
    go([c] {
      for (int i = 1; i <= 100; i++) c.send(i);
      c.close();
    });
    int sum = 0, n = 0;
    for (int v : c) {
      sum += v;
      n++;
    }
    EXPECT_EQ(n, 100);
    EXPECT_EQ(sum, 5050);
  });
}

// Go's TestMultiConsumer: many producers and consumers, every value delivered once.
TEST(Chan, ManyProducersAndConsumersDeliverEveryValueOnce) {
  for (int cap : {0, 1, 64}) {
    run_checked([cap] {
      const int producers = 8, consumers = 8, per = stress(20000, 1000);
      chan<int> c(cap);
      std::atomic<int64_t> sum{0};
      std::atomic<int> count{0};
      wait_group prod, cons;
      prod.add(producers);
      cons.add(consumers);
      for (int p = 0; p < producers; p++)
        go([&, p] {
          for (int i = 0; i < per; i++) c.send(p * per + i);
          prod.done();
        });
      for (int k = 0; k < consumers; k++)
        go([&] {
          for (int v : c) {
            sum += v;
            count++;
          }
          cons.done();
        });
      prod.wait();
      c.close();
      cons.wait();
      int64_t total = int64_t{producers} * per;
      EXPECT_EQ(count.load(), total) << "cap " << cap;
      EXPECT_EQ(sum.load(), total * (total - 1) / 2) << "cap " << cap;
    }, {.max_procs = 2});
  }
}

// Go's TestNonblockRecvRace: a try_recv racing a close sees either the value or closed,
// never "would block" once a value was buffered.
TEST(Chan, TryRecvRacingCloseNeverReportsWouldBlock) {
  run_checked([] {
    const int n = stress(2000, 200);
    for (int i = 0; i < n; i++) {
      chan<int> c(1);
      c.send(1);
      wait_group wg;
      wg.add(1);
      go([&] {
        c.close();
        wg.done();
      });
      auto r = c.try_recv();
      EXPECT_TRUE(r.has_value()) << "iteration " << i;
      wg.wait();
    }
  }, {.max_procs = 2});
}

TEST(Chan, FifoAmongBlockedReceivers) {
  run_checked([] {
    chan<int> c(0);
    const int n = 10;
    std::vector<int> got(n, -1);
    wait_group done;
    done.add(n);
    for (int i = 0; i < n; i++) {
      go([&, i] {
        got[i] = c.recv().value;
        done.done();
      });
      // Let receiver i block before receiver i+1 starts (one P: it runs until it parks).
      yield();
    }
    for (int i = 0; i < n; i++) c.send(i);
    done.wait();
    for (int i = 0; i < n; i++) EXPECT_EQ(got[i], i);
  }, {.max_procs = 1});
}

}  // namespace
}  // namespace weft
