// park / ready and the goroutine dump.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <regex>
#include <string>

#include "runtime/chan.h"
#include "runtime/internal/sema.h"
#include "runtime/sched_stats.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;

struct slot {
  std::atomic<goroutine_ref> g{nullptr};
};

bool publish(goroutine_ref g, void* arg) {
  static_cast<slot*>(arg)->g.store(g, std::memory_order_release);
  return true;
}

TEST(Park, ReadyWakesAParkedGoroutine) {
  run_checked([] {
    slot s;
    std::atomic<bool> woke{false};
    wait_group wg;
    wg.add(1);
    go([&] {
      park(wait_reason::park_test, publish, &s);
      woke = true;
      wg.done();
    });
    // The commit callback publishes the goroutine only once it is switched out.
    while (!s.g.load(std::memory_order_acquire)) yield();
    EXPECT_EQ(s.g.load()->status.load(), detail::gstatus::waiting);
    EXPECT_FALSE(woke.load());
    ready(s.g.load());
    wg.wait();
    EXPECT_TRUE(woke.load());
  });
}

TEST(Park, CommitReturningFalseResumesAtOnce) {
  run_checked([] {
    int calls = 0;
    park(wait_reason::park_test, [](goroutine_ref, void* arg) {
      ++*static_cast<int*>(arg);
      return false;
    }, &calls);
    EXPECT_EQ(calls, 1);
  });
}

// A park whose P would run its runnext goroutine next switches straight to it, and that
// goroutine runs the park's commit when it arrives (direct_park in proc.cc).
TEST(Park, HandOffsSwitchDirectlyAndCommitOnTheArrivingGoroutine) {
  run_checked([] {
    chan<int> ping(0), pong(0);
    constexpr int n = 10'000;
    wait_group wg;
    wg.add(1);
    go([&] {
      for (int i = 0; i < n; i++) pong.send(ping.recv().value + 1);
      wg.done();
    });
    sched_stats s0 = read_sched_stats();
    for (int i = 0; i < n; i++) {
      ping.send(i);
      EXPECT_EQ(pong.recv().value, i + 1);
    }
    sched_stats s1 = read_sched_stats();
    wg.wait();
    // Each hand-off parks one side with the other in runnext: nearly all go direct (a
    // stray timer or global-queue turn sends one through g0 now and then).
    EXPECT_GT(s1.direct_switches - s0.direct_switches, uint64_t{n});
  }, {.max_procs = 1});
}

// A commit that fails after a direct switch: the parked goroutine is made runnable
// again (it resumes once the goroutine it switched to parks), never lost.
TEST(Park, AbandonedParkAfterADirectSwitchResumes) {
  run_checked([] {
    slot s;
    std::atomic<int> b_ran{0};
    wait_group wg;
    wg.add(1);
    go([&] {
      for (int round = 0; round < 100; round++) {
        park(wait_reason::park_test, publish, &s);
        b_ran++;
      }
      wg.done();
    });
    for (int round = 0; round < 100; round++) {
      goroutine_ref b;
      while (!(b = s.g.exchange(nullptr, std::memory_order_acq_rel))) yield();
      ready(b);  // b goes to runnext: the park below switches straight to it
      sched_stats s0 = read_sched_stats();
      int calls = 0;
      park(wait_reason::park_test, [](goroutine_ref, void* arg) {
        ++*static_cast<int*>(arg);
        return false;  // abandon
      }, &calls);
      sched_stats s1 = read_sched_stats();
      EXPECT_EQ(calls, 1);
      EXPECT_EQ(b_ran.load(), round + 1);  // b ran before we resumed
      EXPECT_GE(s1.direct_switches - s0.direct_switches, uint64_t{1});
    }
    wg.wait();
  }, {.max_procs = 1});
}

TEST(Park, ReadyFromAnotherThreadWorks) {
  run_checked([] {
    slot s;
    wait_group wg;
    wg.add(1);
    go([&] {
      park(wait_reason::park_test, publish, &s);
      wg.done();
    });
    while (!s.g.load(std::memory_order_acquire)) yield();
    std::thread t([&] { ready(s.g.load()); });
    t.join();
    wg.wait();
  });
}

[[gnu::noinline]] void parked_in_a_named_function(detail::sema& gate) {
  gate.acquire(wait_reason::semacquire);
  asm volatile("");
}

// set_resume_hints: what a goroutine asks to have prefetched when it is readied.
TEST(ResumeHints, AreKeptCappedAndReplacedByTheNextCall) {
  run_checked([] {
    detail::g* gp = current_goroutine();
    char a[100], c[4096];
    int b = 0;
    set_resume_hints({{a, sizeof a}, {nullptr, 64}, {&b, 0}, {c, sizeof c}});
    EXPECT_EQ(gp->resume_hints[0].addr, a);
    EXPECT_EQ(gp->resume_hints[0].bytes, sizeof a);
    EXPECT_EQ(gp->resume_hints[1].addr, c);  // empty ranges are dropped
    EXPECT_EQ(gp->resume_hints[1].bytes, 1024u);  // capped
    EXPECT_EQ(gp->resume_hints[2].addr, nullptr);

    char many[detail::kResumeHints + 2][8];
    set_resume_hints({{many[0], 8}, {many[1], 8}, {many[2], 8}, {many[3], 8},
                      {many[4], 8}, {many[5], 8}, {many[6], 8}, {many[7], 8}});
    static_assert(detail::kResumeHints == 6, "the list above has kResumeHints + 2 ranges");
    for (int i = 0; i < detail::kResumeHints; i++) EXPECT_EQ(gp->resume_hints[i].addr, many[i]);

    set_resume_hints({});
    for (const auto& h : gp->resume_hints) EXPECT_EQ(h.addr, nullptr);
  });
}

TEST(ResumeHints, EndWithTheGoroutine) {
  run_checked([] {
    slot s;
    wait_group wg;
    wg.add(1);
    static char data[64];
    go([&] {
      set_resume_hints({{data, sizeof data}});
      s.g.store(current_goroutine(), std::memory_order_release);
      wg.done();
    });
    wg.wait();
    detail::g* gp = s.g.load(std::memory_order_acquire);
    // Gs are never freed: once it is dead its hints are gone (nothing here spawns, so
    // nothing reuses it meanwhile).
    while (gp->status.load(std::memory_order_acquire) != detail::gstatus::dead) yield();
    EXPECT_EQ(gp->resume_hints[0].addr, nullptr);
  });
}

// The ranges are only prefetched: unmapped memory and a stale range cost nothing, on
// every way a goroutine is readied (ready(), a timer, a channel).
TEST(ResumeHints, UnmappedRangesAreHarmlessOnEveryWakeup) {
  run_checked([] {
    long page = sysconf(_SC_PAGESIZE);
    void* gone = mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(gone, MAP_FAILED);
    ASSERT_EQ(munmap(gone, page), 0);
    slot s;
    chan<int> ch(0);
    wait_group wg;
    wg.add(1);
    int got = 0;
    go([&] {
      set_resume_hints({{gone, 1024}, {reinterpret_cast<const void*>(uintptr_t{64}), 1024}});
      park(wait_reason::park_test, publish, &s);
      sleep_for(1ms);
      got = ch.recv().value;
      wg.done();
    });
    while (!s.g.load(std::memory_order_acquire)) yield();
    ready(s.g.load());
    ch.send(7);
    wg.wait();
    EXPECT_EQ(got, 7);
  });
}

TEST(Dump, ShowsEveryGoroutineWithStateFramesAndCreator) {
  run_checked([] {
    detail::sema gate;
    wait_group started;
    started.add(1);
    go([&] {
      started.done();
      parked_in_a_named_function(gate);
    });
    started.wait();
    while (gate.waiters() == 0) yield();
    std::string dump = dump_goroutines();
    // The caller comes first, running, with its own frames.
    EXPECT_TRUE(testing::matches(dump, "^goroutine 1 \\[running\\]:\n")) << dump;
    // The parked goroutine: header, the frame it parked in with file:line, creator.
    ASSERT_TRUE(testing::matches(dump, "goroutine [0-9]+ \\[semacquire\\]:\n")) << dump;
    EXPECT_NE(dump.find("parked_in_a_named_function"), std::string::npos) << dump;
    EXPECT_NE(dump.find("park_test.cc:"), std::string::npos) << dump;
    EXPECT_TRUE(testing::matches(dump, "created by .*ShowsEveryGoroutine.* in goroutine 1\n\t.*park_test.cc:[0-9]+")) << dump;
    gate.release();
  });
}

// go() as a function's last statement: still named as the creator (not its caller).
[[gnu::noinline]] void spawn_as_the_last_thing(detail::sema& gate) {
  go([&gate] { parked_in_a_named_function(gate); });
}

TEST(Dump, CreatorIsTheFunctionWhoseLastStatementIsGo) {
  run_checked([] {
    detail::sema gate;
    spawn_as_the_last_thing(gate);
    while (gate.waiters() == 0) yield();
    std::string dump = dump_goroutines();
    EXPECT_TRUE(testing::matches(dump, "created by .*spawn_as_the_last_thing.* in goroutine 1\n\t.*park_test.cc:[0-9]+"))
        << dump;
    gate.release();
  });
}

TEST(Dump, ReportsLongWaitsInMinutes) {
  run_checked([] {
    slot s;
    wait_group wg;
    wg.add(1);
    go([&] {
      park(wait_reason::chan_receive, publish, &s);
      wg.done();
    });
    while (!s.g.load(std::memory_order_acquire)) yield();
    // Seam: pretend it parked five minutes ago.
    s.g.load()->wait_since.store(detail::nanotime_coarse() - 5 * 60'000'000'000LL - 1'000'000'000);
    std::string dump = dump_goroutines();
    EXPECT_TRUE(testing::matches(dump, "goroutine [0-9]+ \\[chan receive, 5 minutes\\]:")) << dump;
    ready(s.g.load());
    wg.wait();
  });
}

TEST(Dump, WaitReasonsHaveGoSpelling) {
  EXPECT_EQ(to_string(wait_reason::chan_receive), "chan receive");
  EXPECT_EQ(to_string(wait_reason::sync_mutex_lock), "sync.Mutex.Lock");
  EXPECT_EQ(to_string(wait_reason::io_wait), "IO wait");
  for (int r = 0; r < static_cast<int>(wait_reason::count_); r++)
    EXPECT_FALSE(to_string(static_cast<wait_reason>(r)).empty());
}

}  // namespace
}  // namespace weft
