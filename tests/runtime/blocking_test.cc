// blocking(): Go's entersyscall/exitsyscall hand-off.
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;

// With one P, a goroutine blocked in a blocking() call must not stop the others: sysmon
// hands the P to another thread. The blocked call waits for a goroutine that can only
// run on that P, so without the hand-off this would wait out the 10 s timeout.
TEST(Blocking, HandsThePToAnotherThreadWithOneP) {
  run_checked([] {
    std::mutex mu;
    std::condition_variable cv;
    bool released = false;
    bool timed_out = false;
    wait_group wg;
    wg.add(2);
    go([&] {
      blocking([&] {
        std::unique_lock<std::mutex> l(mu);
        timed_out = !cv.wait_for(l, 10s, [&] { return released; });
      });
      wg.done();
    });
    go([&] {
      {
        std::lock_guard<std::mutex> l(mu);
        released = true;
      }
      cv.notify_one();
      wg.done();
    });
    wg.wait();
    EXPECT_FALSE(timed_out);
  }, {.max_procs = 1});
}

TEST(Blocking, ManyConcurrentBlockingCallsAllComplete) {
  run_checked([] {
    constexpr int n = 32;
    std::atomic<int> inside{0};
    std::atomic<int> max_inside{0};
    wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; i++)
      go([&] {
        blocking([&] {
          int v = inside.fetch_add(1) + 1;
          int m = max_inside.load();
          while (v > m && !max_inside.compare_exchange_weak(m, v)) {
          }
          std::this_thread::sleep_for(20ms);
          inside.fetch_sub(1);
        });
        wg.done();
      });
    wg.wait();
    // Calls overlap: more threads than Ps are serving them.
    EXPECT_GT(max_inside.load(), 2);
  }, {.max_procs = 2});
}

TEST(Blocking, ReturnsTheValueAndPropagatesExceptions) {
  run_checked([] {
    EXPECT_EQ(blocking([] { return 42; }), 42);
    std::string s = blocking([] { return std::string(1000, 'x'); });
    EXPECT_EQ(s.size(), 1000u);
    EXPECT_THROW(blocking([]() -> int { throw std::runtime_error("io failed"); }), std::runtime_error);
    // The goroutine keeps working after an exception crossed the switch.
    EXPECT_EQ(blocking([] { return 7; }), 7);
  });
}

TEST(Blocking, RunsOnTheThreadStackWithRoomForDeepCalls) {
  run_checked([] {
    blocking([] {
      volatile char buf[1 << 20];  // far beyond a goroutine stack
      buf[0] = 1;
      buf[sizeof(buf) - 1] = 1;
    });
  });
}

TEST(Blocking, NestedCallsRunInPlaceOnTheThreadStack) {
  run_checked([] {
    int depth = blocking([] {
      return blocking([] {
        volatile char buf[1 << 20];  // still on the thread stack
        buf[0] = 1;
        buf[sizeof(buf) - 1] = 2;
        return buf[0] + buf[sizeof(buf) - 1];
      });
    });
    EXPECT_EQ(depth, 3);
    EXPECT_THROW(blocking([] { blocking([] { throw std::runtime_error("inner"); }); }), std::runtime_error);
  });
}

TEST(Blocking, OutsideAGoroutineJustCallsFn) {
  EXPECT_EQ(blocking([] { return 5; }), 5);
}

}  // namespace
}  // namespace weft
