// The block and mutex profiles' records: sampling rates, the stacks they keep, and the
// estimated totals.
#include <gtest/gtest.h>

#include <atomic>

#include "runtime/chan.h"
#include "runtime/internal/profile.h"
#include "runtime/mutex.h"
#include "runtime/profiling.h"
#include "runtime/runtime.h"
#include "runtime/symbolize.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using namespace std::chrono_literals;
using testing::run_checked;

// The names of every frame of a stack (inlined frames included), innermost first.
std::string stack_names(const std::vector<uintptr_t>& stack) {
  return weft::blocking([&] {
    std::string out;
    for (uintptr_t pc : stack)
      for (const auto& f : symbolize_frames(pc - 1)) out += f.function + "\n";
    return out;
  });
}

// A barrier after each call keeps it from becoming a tail call (which would drop our
// frame).
#define KEEP_FRAME() asm volatile("" ::: "memory")

[[gnu::noinline]] void receiver_that_blocks(chan<int> c) {
  c.recv();
  KEEP_FRAME();
}

[[gnu::noinline]] void locker_that_waits(mutex& m) {
  m.lock();
  KEEP_FRAME();
  m.unlock();
}

[[gnu::noinline]] void holder_that_unlocks(mutex& m) {
  m.unlock();
  KEEP_FRAME();
}

// Finds the sample whose stack mentions `fn`.
const profile_sample* find(const profile& p, const std::string& fn, std::string* names = nullptr) {
  for (const auto& s : p.samples) {
    std::string n = stack_names(s.stack);
    if (n.find(fn) != std::string::npos) {
      if (names) *names = n;
      return &s;
    }
  }
  return nullptr;
}

TEST(ContentionProfile, BlockingOnAChannelIsRecordedWithTheWaitersStack) {
  run_checked([] {
    detail::reset_contention_records();
    int64_t prev = set_block_profile_rate(1);
    chan<int> c(0);
    wait_group wg;
    wg.add(5);
    for (int i = 0; i < 5; i++)
      go([&] {
        receiver_that_blocks(c);
        wg.done();
      });
    // Every receiver parks before the sends (a status seam, not a sleep).
    while (true) {
      std::string d = dump_goroutines();
      std::size_t n = 0;
      for (std::size_t at = 0; (at = d.find("[chan receive]", at)) != std::string::npos; at++) n++;
      if (n == 5) break;
      yield();
    }
    for (int i = 0; i < 5; i++) c.send(i);
    wg.wait();
    set_block_profile_rate(prev);
    profile p = block_profile();
    ASSERT_EQ(p.sample_types.size(), 2u);
    EXPECT_EQ(p.sample_types[0].type, "contentions");
    EXPECT_EQ(p.sample_types[1].unit, "nanoseconds");
    std::string names;
    const profile_sample* s = find(p, "receiver_that_blocks", &names);
    ASSERT_NE(s, nullptr) << "no sample from the blocked receivers";
    EXPECT_EQ(s->values[0], 5) << names;  // rate 1: every event, exactly
    EXPECT_GT(s->values[1], 0);
    // The leaf is the runtime's receive (as Go's chanrecv), the caller is ours.
    EXPECT_NE(names.find("recv"), std::string::npos) << names;
    EXPECT_LT(names.find("recv"), names.find("receiver_that_blocks")) << names;
  });
}

TEST(ContentionProfile, RateZeroRecordsNothingAndMutexHandOffsNameTheUnlocker) {
  run_checked([] {
    detail::reset_contention_records();
    set_block_profile_rate(0);
    int64_t prev = set_mutex_profile_fraction(1);
    mutex m;
    for (int round = 0; round < 3; round++) {
      m.lock();
      wait_group wg;
      wg.add(1);
      go([&] {
        locker_that_waits(m);
        wg.done();
      });
      while (true) {  // until the locker is parked on the mutex
        std::string d = dump_goroutines();
        if (d.find("sync.Mutex.Lock") != std::string::npos || d.find("[semacquire]") != std::string::npos) break;
        yield();
      }
      holder_that_unlocks(m);
      wg.wait();
    }
    set_mutex_profile_fraction(prev);
    EXPECT_TRUE(block_profile().samples.empty());  // rate 0
    profile p = mutex_profile();
    std::string names;
    const profile_sample* s = find(p, "holder_that_unlocks", &names);
    if (!s) for (const auto& x : p.samples) ADD_FAILURE() << "sample " << x.values[0] << ":\n" << stack_names(x.stack);
    ASSERT_NE(s, nullptr) << "no mutex sample attributed to the unlocker";
    EXPECT_EQ(s->values[0], 3) << names;
    EXPECT_GT(s->values[1], 0);
  });
}

}  // namespace
}  // namespace weft
