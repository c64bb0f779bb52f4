// wait_group.
#include <atomic>
#include <stdexcept>

#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using testing::run_checked;

TEST(WaitGroup, WaitReturnsAtOnceWhenCounterIsZero) {
  run_checked([] {
    wait_group wg;
    wg.wait();
    wg.add(2);
    wg.done();
    wg.done();
    wg.wait();
  });
}

TEST(WaitGroup, AllWaitersWakeWhenCounterReachesZero) {
  run_checked([] {
    wait_group wg, waiters_done;
    wg.add(1);
    constexpr int n = 50;
    waiters_done.add(n);
    std::atomic<int> woke{0};
    for (int i = 0; i < n; i++)
      go([&] {
        wg.wait();
        woke++;
        waiters_done.done();
      });
    yield();
    EXPECT_EQ(woke.load(), 0);
    wg.done();
    waiters_done.wait();
    EXPECT_EQ(woke.load(), n);
  });
}

TEST(WaitGroup, CanBeReusedAfterWaitReturns) {
  run_checked([] {
    wait_group wg;
    for (int round = 0; round < 100; round++) {
      wg.add(3);
      for (int i = 0; i < 3; i++) go([&] { wg.done(); });
      wg.wait();
    }
  });
}

TEST(WaitGroup, NegativeCounterThrows) {
  wait_group wg;
  EXPECT_THROW(wg.add(-1), std::logic_error);
}

}  // namespace
}  // namespace weft
