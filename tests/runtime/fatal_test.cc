// Fatal paths, each in a child process: deadlock detection, panics, stack overflow,
// SIGQUIT dumps, the thread cap and schedtrace.
#include <signal.h>

#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include "runtime/internal/sema.h"
#include "runtime/internal/stack.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;

class Fatal : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(Fatal, AllGoroutinesAsleepIsADeadlock) {
  EXPECT_EXIT(run([] {
                wait_group wg;
                wg.add(1);
                go([&] { wg.wait(); });
                wg.wait();
              }),
              ::testing::ExitedWithCode(2),
              "fatal error: all goroutines are asleep - deadlock!\n\ngoroutine 1 \\[sync.WaitGroup.Wait\\]:"
              "(.|\n)*goroutine [0-9]+ \\[sync.WaitGroup.Wait\\]:(.|\n)*created by");
}

TEST_F(Fatal, APendingTimerIsNotADeadlock) {
  EXPECT_EXIT(
      {
        run([] { sleep_for(50ms); });
        std::exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

[[gnu::noinline]] void throw_from_here() { throw std::runtime_error("boom"); }

TEST_F(Fatal, UncaughtExceptionInAGoroutineIsAPanic) {
  // One P: the main goroutine parks in sleep_for before the thrower runs.
  EXPECT_EXIT(run([] {
                go([] { throw_from_here(); });
                sleep_for(10s);
              }, {.max_procs = 1}),
              ::testing::ExitedWithCode(2),
              "^panic: boom\n\ngoroutine [0-9]+ \\[running\\]:\n(.|\n)*throw_from_here(.|\n)*fatal_test.cc:[0-9]+"
              "(.|\n)*created by .* in goroutine 1\n(.|\n)*goroutine 1 \\[sleep\\]:");
}

TEST_F(Fatal, NegativeWaitGroupCounterPanics) {
  EXPECT_EXIT(run([] {
                wait_group wg;
                wg.done();
              }),
              ::testing::ExitedWithCode(2), "panic: sync: negative WaitGroup counter");
}

[[gnu::noinline]] int recurse(int depth) {
  volatile char pad[512];
  pad[0] = static_cast<char>(depth);
  return recurse(depth + 1) + pad[0];
}

TEST_F(Fatal, StackOverflowIsReported) {
  EXPECT_EXIT(run([] {
                wait_group wg;
                wg.add(1);
                go([&] {
                  recurse(0);
                  wg.done();
                });
                wg.wait();
              }),
              ::testing::ExitedWithCode(2), "goroutine [0-9]+ stack overflow");
}

TEST_F(Fatal, StackOverflowIsReportedWithMprotectGuards) {
  EXPECT_EXIT(
      {
        detail::stack_force_mprotect_guards();
        run([] {
          wait_group wg;
          wg.add(1);
          go(spawn_options{.stack_size = 96 * 1024}, [&] {
            recurse(0);
            wg.done();
          });
          wg.wait();
        });
      },
      ::testing::ExitedWithCode(2), "goroutine [0-9]+ stack overflow");
}

TEST_F(Fatal, SigquitDumpsGoroutinesAndExits2) {
  EXPECT_EXIT(run([] {
                detail::sema gate;
                go([&] { gate.acquire(wait_reason::semacquire); });
                while (gate.waiters() == 0) yield();  // parked for sure
                raise(SIGQUIT);
                sleep_for(10s);
              }),
              ::testing::ExitedWithCode(2),
              "SIGQUIT: quit\n\n(.|\n)*goroutine [0-9]+ \\[semacquire\\]:\n(.|\n)*sema::acquire");
}

TEST_F(Fatal, ExceedingTheThreadCapIsFatal) {
  EXPECT_EXIT(run([] {
                std::mutex mu;
                std::condition_variable cv;
                for (int i = 0; i < 8; i++)
                  go([&] {
                    blocking([&] {
                      std::unique_lock<std::mutex> l(mu);
                      cv.wait_for(l, 10s);
                    });
                  });
                sleep_for(10s);
              }, {.max_procs = 1, .max_threads = 3}),
              ::testing::ExitedWithCode(2),
              "runtime: program exceeds 3-thread limit\nfatal error: thread exhaustion");
}

TEST_F(Fatal, SchedtracePrintsGoStyleLines) {
  EXPECT_EXIT(
      {
        setenv("WEFTDEBUG", "schedtrace=20", 1);
        run([] { sleep_for(500ms); });  // many 20 ms periods, even on a loaded machine
        std::exit(0);
      },
      ::testing::ExitedWithCode(0),
      "SCHED [0-9]+ms: gomaxprocs=[0-9]+ idleprocs=[0-9]+ threads=[0-9]+ spinningthreads=[0-9]+ "
      "idlethreads=[0-9]+ runqueue=[0-9]+ \\[[0-9 ]+\\]");
}

}  // namespace
}  // namespace weft
