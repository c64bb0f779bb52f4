// Goroutine pprof labels (runtime/labels.h) and the CPU profiler (runtime/cpu_profile.h).
//
// CPU work is measured in the burning thread's own CPU time, never in wall time: the
// machine may be shared, and the profiler samples CPU time. Every wait is a seam (a wait
// group, a channel, an atomic flag), not a sleep.
#include "runtime/cpu_profile.h"

#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <sys/syscall.h>
#include <unordered_map>
#include <vector>

#include "runtime/chan.h"
#include "runtime/heap_profile.h"
#include "runtime/labels.h"
#include "runtime/symbolize.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using testing::run_checked;

// ---------------------------------------------------------------------------------------
// Helpers.

int64_t clock_ns(clockid_t c) {
  timespec ts;
  clock_gettime(c, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// A few hundred microseconds of arithmetic between clock reads, so that almost every
// sample lands in the caller's own code rather than in clock_gettime.
[[gnu::always_inline]] inline uint64_t spin(uint64_t x) {
  for (int i = 0; i < 200000; i++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    asm volatile("" : "+r"(x));
  }
  return x;
}

// Distinctive names the tests look for in symbolized samples. Each burns `cpu_ns` of its
// thread's CPU time; they never park, so they stay on one thread.
[[gnu::noinline]] uint64_t cpu_burner_xyzzy(int64_t cpu_ns) {
  uint64_t x = 1;
  int64_t end = clock_ns(CLOCK_THREAD_CPUTIME_ID) + cpu_ns;
  while (clock_ns(CLOCK_THREAD_CPUTIME_ID) < end) x = spin(x);
  return x;
}
[[gnu::noinline]] uint64_t cpu_burner_alpha(int64_t cpu_ns) {
  uint64_t x = 2;
  int64_t end = clock_ns(CLOCK_THREAD_CPUTIME_ID) + cpu_ns;
  while (clock_ns(CLOCK_THREAD_CPUTIME_ID) < end) x = spin(x);
  return x;
}
[[gnu::noinline]] uint64_t cpu_burner_bravo(int64_t cpu_ns) {
  uint64_t x = 3;
  int64_t end = clock_ns(CLOCK_THREAD_CPUTIME_ID) + cpu_ns;
  while (clock_ns(CLOCK_THREAD_CPUTIME_ID) < end) x = spin(x);
  return x;
}
[[gnu::noinline]] uint64_t cpu_burner_on_new_m(int64_t cpu_ns) {
  uint64_t x = 4;
  int64_t end = clock_ns(CLOCK_THREAD_CPUTIME_ID) + cpu_ns;
  while (clock_ns(CLOCK_THREAD_CPUTIME_ID) < end) x = spin(x);
  return x;
}
std::atomic<uint64_t> g_sink{0};

constexpr int64_t kMs = 1'000'000;

// For each sample, the function names of all its frames (inlined ones included).
std::vector<std::vector<std::string>> symbolize_samples(const profile& p) {
  return blocking([&] {
    std::unordered_map<uintptr_t, std::vector<std::string>> cache;
    std::vector<std::vector<std::string>> out;
    for (const profile_sample& s : p.samples) {
      std::vector<std::string> names;
      for (std::size_t i = 0; i < s.stack.size(); i++) {
        uintptr_t pc = i == 0 && p.leaf_exact ? s.stack[i] : s.stack[i] - 1;
        auto it = cache.find(pc);
        if (it == cache.end()) {
          std::vector<std::string> fs;
          for (const symbol_info& si : symbolize_frames(pc)) fs.push_back(si.function);
          it = cache.emplace(pc, std::move(fs)).first;
        }
        names.insert(names.end(), it->second.begin(), it->second.end());
      }
      out.push_back(std::move(names));
    }
    return out;
  });
}

bool has(const std::vector<std::string>& names, const std::string& fn) {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& n) { return n.find(fn) != std::string::npos; });
}

std::string label_of(const profile_sample& s, const std::string& key) {
  for (const profile_label& l : s.labels)
    if (l.key == key) return l.str;
  return "";
}

int64_t total_samples(const profile& p) {
  int64_t n = 0;
  for (const profile_sample& s : p.samples) n += s.values.at(0);
  return n;
}

// ---------------------------------------------------------------------------------------
// Labels.

TEST(Labels, DoMergesOverCurrentAndRestores) {
  run_checked([] {
    EXPECT_TRUE(goroutine_labels().empty());
    pprof_do({{"b", "2"}, {"a", "1"}, {"b", "3"}}, [] {
      EXPECT_EQ(goroutine_labels(), (label_set{{"a", "1"}, {"b", "3"}}));  // sorted; last b wins
      pprof_do({{"c", "4"}, {"a", "x"}}, [] {
        EXPECT_EQ(goroutine_labels(), (label_set{{"a", "x"}, {"b", "3"}, {"c", "4"}}));
      });
      EXPECT_EQ(goroutine_labels(), (label_set{{"a", "1"}, {"b", "3"}}));
      yield();  // the labels belong to the goroutine, not to the thread
      EXPECT_EQ(goroutine_labels(), (label_set{{"a", "1"}, {"b", "3"}}));
    });
    EXPECT_TRUE(goroutine_labels().empty());
  });
}

TEST(Labels, RestoredWhenFnThrows) {
  run_checked([] {
    pprof_do({{"outer", "1"}}, [] {
      EXPECT_THROW(pprof_do({{"inner", "2"}}, [] { throw std::runtime_error("boom"); }),
                   std::runtime_error);
      EXPECT_EQ(goroutine_labels(), (label_set{{"outer", "1"}}));
    });
    EXPECT_TRUE(goroutine_labels().empty());
  });
}

TEST(Labels, InheritedAtSpawnAndIndependentAfterwards) {
  run_checked([] {
    chan<int> parent_left(1);
    chan<int> child_changed(1);
    label_set child_saw, child_saw_later, grandchild_saw, unlabeled_saw;
    wait_group wg;
    wg.add(2);
    pprof_do({{"req", "42"}}, [&] {
      go([&] {
        child_saw = goroutine_labels();
        parent_left.recv();  // the parent has left pprof_do by now
        child_saw_later = goroutine_labels();
        pprof_do({{"req", "child"}}, [&] {
          wait_group inner;
          inner.add(1);
          go([&] {
            grandchild_saw = goroutine_labels();
            inner.done();
          });
          inner.wait();
          child_changed.send(1);
        });
        wg.done();
      });
    });
    parent_left.send(1);
    child_changed.recv();
    EXPECT_TRUE(goroutine_labels().empty());  // the child's pprof_do did not touch ours
    go([&] {
      unlabeled_saw = goroutine_labels();
      wg.done();
    });
    wg.wait();
    EXPECT_EQ(child_saw, (label_set{{"req", "42"}}));
    EXPECT_EQ(child_saw_later, (label_set{{"req", "42"}}));
    EXPECT_EQ(grandchild_saw, (label_set{{"req", "child"}}));
    EXPECT_TRUE(unlabeled_saw.empty());
  });
}

// References taken at spawn are dropped when the goroutine ends, and a reused G starts
// without labels.
TEST(Labels, ReleasedWhenGoroutinesEnd) {
  run_checked([] {
    detail::label_ref ref = detail::make_label_ref({{"route", "/x"}});
    ASSERT_EQ(ref.use_count(), 1);
    const int n = 100;
    {
      detail::label_scope scope(ref);
      EXPECT_EQ(ref.use_count(), 2);
      chan<int> release(0);
      wait_group started, finished;
      started.add(n);
      finished.add(n);
      for (int i = 0; i < n; i++)
        go([&] {
          started.done();
          release.recv();
          EXPECT_EQ(goroutine_labels(), (label_set{{"route", "/x"}}));
          finished.done();
        });
      started.wait();
      EXPECT_EQ(ref.use_count(), 2 + n);
      release.close();
      finished.wait();
      EXPECT_EQ(testing::settle_goroutines(1), 1);  // every goroutine has gone through exit
      EXPECT_EQ(ref.use_count(), 2);
    }
    EXPECT_EQ(ref.use_count(), 1);
    // The dead Gs are cached per P; new goroutines reuse them and must see no labels.
    std::atomic<int> labeled{0};
    wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; i++)
      go([&] {
        if (!goroutine_labels().empty()) labeled++;
        wg.done();
      });
    wg.wait();
    EXPECT_EQ(labeled.load(), 0);
  });
}

// Interned nodes: one per distinct set, shared, and never counted (installing one on a
// hot path writes nothing to the shared node).
TEST(Labels, InternedNodesAreSharedAndNotCounted) {
  run_checked([] {
    detail::label_ref a = detail::interned_label_ref({{"route", "GET /interned"}});
    detail::label_ref b = detail::interned_label_ref({{"route", "GET /interned"}});
    detail::label_ref c = detail::interned_label_ref({{"route", "GET /other"}});
    EXPECT_EQ(a.get(), b.get());
    EXPECT_NE(a.get(), c.get());
    EXPECT_FALSE(detail::interned_label_ref({}));
    const int64_t refs = a.use_count();
    int64_t live = detail::label_nodes_live();
    wait_group wg;
    label_set child_saw;
    {
      detail::label_scope scope(a);
      EXPECT_EQ(goroutine_labels(), (label_set{{"route", "GET /interned"}}));
      wg.add(1);
      weft::go([&] {  // inherits the interned node
        child_saw = goroutine_labels();
        wg.done();
      });
      wg.wait();
      EXPECT_EQ(a.use_count(), refs);
    }
    EXPECT_EQ(child_saw, (label_set{{"route", "GET /interned"}}));
    EXPECT_EQ(a.use_count(), refs);
    EXPECT_EQ(detail::label_nodes_live(), live);  // no counted node was made or freed
  });
}

TEST(Labels, ScopeAndSetInstallWithoutAllocating) {
  run_checked([] {
    detail::label_ref route = detail::make_label_ref({{"route", "/api"}, {"method", "GET"}});
    detail::label_ref other = detail::make_label_ref({{"x", "y"}});
    pprof_do({{"outer", "1"}}, [&] {
      int64_t before = detail::label_nodes_live();
      {
        detail::label_scope scope(route);
        detail::set_goroutine_labels(other);  // replaces, does not merge
        detail::set_goroutine_labels(route);
        EXPECT_EQ(detail::label_nodes_live(), before);
      }
      EXPECT_EQ(detail::label_nodes_live(), before);
      EXPECT_EQ(goroutine_labels(), (label_set{{"outer", "1"}}));
      {
        detail::label_scope scope(route);
        EXPECT_EQ(goroutine_labels(), (label_set{{"method", "GET"}, {"route", "/api"}}));
        detail::set_goroutine_labels(other);
        EXPECT_EQ(goroutine_labels(), (label_set{{"x", "y"}}));
      }
      EXPECT_EQ(goroutine_labels(), (label_set{{"outer", "1"}}));
    });
    EXPECT_EQ(route.use_count(), 1);
    EXPECT_EQ(other.use_count(), 1);
    EXPECT_FALSE(detail::make_label_ref({}));  // no labels: no node

    // With the heap profiler sampling every operator new, no allocation has the install
    // paths on its stack; making a ref does (the control shows the method sees them).
    int64_t old_rate = set_mem_profile_rate(1);
    detail::label_ref control = detail::make_label_ref({{"control", "1"}});
    {
      detail::label_scope scope(route);
      detail::set_goroutine_labels(other);
      detail::set_goroutine_labels(route);
    }
    set_mem_profile_rate(old_rate);
    profile heap = blocking([] { return heap_profile(); });
    auto names = symbolize_samples(heap);
    bool saw_make = false, saw_install = false;
    for (const auto& n : names) {
      if (has(n, "make_label_ref")) saw_make = true;
      if (has(n, "label_scope") || has(n, "set_goroutine_labels")) saw_install = true;
    }
    EXPECT_TRUE(saw_make);
    EXPECT_FALSE(saw_install);
  });
}

// ---------------------------------------------------------------------------------------
// CPU profiles.

TEST(CpuProfile, BurnerDominatesItsSamples) {
  run_checked([] {
    int64_t wall0 = clock_ns(CLOCK_REALTIME);
    ASSERT_FALSE(start_cpu_profile());
    wait_group wg;
    wg.add(1);
    go([&] {
      g_sink += cpu_burner_xyzzy(1000 * kMs);
      wg.done();
    });
    wg.wait();
    profile p = stop_cpu_profile();
    int64_t wall1 = clock_ns(CLOCK_REALTIME);

    EXPECT_EQ(p.period, 10'000'000);
    ASSERT_EQ(p.sample_types.size(), 2u);
    EXPECT_EQ(p.sample_types[0].type, "samples");
    EXPECT_EQ(p.sample_types[0].unit, "count");
    EXPECT_EQ(p.sample_types[1].type, "cpu");
    EXPECT_EQ(p.sample_types[1].unit, "nanoseconds");
    EXPECT_EQ(p.period_type.type, "cpu");
    EXPECT_EQ(p.period_type.unit, "nanoseconds");
    EXPECT_TRUE(p.leaf_exact);
    EXPECT_GE(p.time_nanos, wall0);
    EXPECT_LE(p.time_nanos, wall1);
    EXPECT_GT(p.duration_nanos, 0);
    EXPECT_LE(p.duration_nanos, wall1 - wall0);

    auto names = symbolize_samples(p);
    int64_t total = 0, burner = 0;
    for (std::size_t i = 0; i < p.samples.size(); i++) {
      total += p.samples[i].values[0];
      if (has(names[i], "cpu_burner_xyzzy")) burner += p.samples[i].values[0];
    }
    // 1 s of CPU at 100 Hz is about 100 samples.
    EXPECT_GE(total, 40);
    EXPECT_GT(burner * 10, total * 7) << burner << " of " << total << " samples in the burner";
    // The stacks go past the burner: its caller (the goroutine body) is there too.
    int64_t deep = 0;
    for (std::size_t i = 0; i < p.samples.size(); i++)
      if (has(names[i], "cpu_burner_xyzzy") && has(names[i], "BurnerDominatesItsSamples"))
        deep += p.samples[i].values[0];
    EXPECT_GT(deep * 10, burner * 9) << deep << " of " << burner;
  });
}

TEST(CpuProfile, ValuesAreSamplesTimesPeriod) {
  run_checked([] {
    ASSERT_FALSE(start_cpu_profile(250));
    wait_group wg;
    wg.add(2);
    for (int i = 0; i < 2; i++)
      go([&] {
        g_sink += cpu_burner_xyzzy(200 * kMs);
        wg.done();
      });
    wg.wait();
    profile p = stop_cpu_profile();
    EXPECT_EQ(p.period, 4'000'000);
    ASSERT_FALSE(p.samples.empty());
    for (const profile_sample& s : p.samples) {
      ASSERT_EQ(s.values.size(), 2u);
      EXPECT_GE(s.values[0], 1);
      EXPECT_EQ(s.values[1], s.values[0] * p.period);
      EXPECT_FALSE(s.stack.empty());
      EXPECT_LE(s.stack.size(), 64u);
    }
  });
}

TEST(CpuProfile, SamplesCarryTheGoroutinesLabels) {
  run_checked([] {
    const int64_t nodes0 = detail::label_nodes_live();
    ASSERT_FALSE(start_cpu_profile());
    wait_group wg;
    wg.add(2);
    go([&] {
      pprof_do({{"worker", "alpha"}, {"shard", "1"}},
               [] { g_sink += cpu_burner_alpha(400 * kMs); });
      wg.done();
    });
    go([&] {
      pprof_do({{"worker", "bravo"}}, [] { g_sink += cpu_burner_bravo(400 * kMs); });
      wg.done();
    });
    wg.wait();
    profile p = stop_cpu_profile();
    auto names = symbolize_samples(p);
    int64_t alpha = 0, bravo = 0, wrong = 0;
    for (std::size_t i = 0; i < p.samples.size(); i++) {
      const profile_sample& s = p.samples[i];
      if (has(names[i], "cpu_burner_alpha")) {
        alpha += s.values[0];
        if (label_of(s, "worker") != "alpha" || label_of(s, "shard") != "1") wrong += s.values[0];
      }
      if (has(names[i], "cpu_burner_bravo")) {
        bravo += s.values[0];
        if (label_of(s, "worker") != "bravo" || s.labels.size() != 1) wrong += s.values[0];
      }
    }
    EXPECT_GE(alpha, 10);
    EXPECT_GE(bravo, 10);
    EXPECT_EQ(wrong, 0);
    // The profile let go of the label nodes its samples referenced.
    EXPECT_EQ(testing::settle_goroutines(1), 1);
    EXPECT_EQ(detail::label_nodes_live(), nodes0);
  });
}

TEST(CpuProfile, SecondStartFailsAndTheFirstProfileCompletes) {
  run_checked([] {
    EXPECT_FALSE(cpu_profile_running());
    EXPECT_EQ(start_cpu_profile(0), cpu_profile_errc::invalid_rate);
    EXPECT_FALSE(cpu_profile_running());
    ASSERT_FALSE(start_cpu_profile());
    std::error_code ec = start_cpu_profile(500);
    EXPECT_EQ(ec, cpu_profile_errc::already_in_use);
    EXPECT_EQ(ec.message(), "cpu profiling already in use");
    EXPECT_TRUE(cpu_profile_running());
    wait_group wg;
    wg.add(1);
    go([&] {
      g_sink += cpu_burner_xyzzy(300 * kMs);
      wg.done();
    });
    wg.wait();
    profile p = stop_cpu_profile();
    EXPECT_FALSE(cpu_profile_running());
    EXPECT_EQ(p.period, 10'000'000);  // the first profile's rate, not the failed 500 Hz
    auto names = symbolize_samples(p);
    int64_t burner = 0;
    for (std::size_t i = 0; i < p.samples.size(); i++)
      if (has(names[i], "cpu_burner_xyzzy")) burner += p.samples[i].values[0];
    EXPECT_GE(burner, 10);
    // Stopping again: nothing runs, an empty profile.
    profile empty = stop_cpu_profile();
    EXPECT_TRUE(empty.samples.empty());
    // And a new profile can start, also from inside a blocking() call.
    blocking([] { EXPECT_FALSE(start_cpu_profile()); });
    EXPECT_TRUE(cpu_profile_running());
    blocking([] { stop_cpu_profile(); });
    EXPECT_FALSE(cpu_profile_running());
  });
}

// The total is CPU time: compare with the process's CPU clock over the same interval.
// Threads that are not Ms (sysmon, the collector) are not sampled; margins are wide.
TEST(CpuProfile, SampleCountMatchesCpuTimeBurned) {
  run_checked([] {
    int64_t cpu0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    ASSERT_FALSE(start_cpu_profile());
    wait_group wg;
    wg.add(2);
    for (int i = 0; i < 2; i++)
      go([&] {
        g_sink += cpu_burner_xyzzy(600 * kMs);
        wg.done();
      });
    wg.wait();
    profile p = stop_cpu_profile();
    int64_t cpu = clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    int64_t expected = cpu / p.period;
    int64_t got = total_samples(p);
    EXPECT_GE(got * 2, expected) << got << " samples for " << cpu / kMs << " ms of CPU";
    EXPECT_LE(got * 10, expected * 12 + 50) << got << " samples for " << cpu / kMs << " ms of CPU";
    detail::cpu_profile_stats st = detail::cpu_profile_last_stats();
    EXPECT_EQ(st.lost, 0);
    EXPECT_EQ(st.samples, got);
  });
}

// Thousands of goroutines yield and park on channels while SIGPROF arrives at the
// highest useful rate: samples land in the middle of context switches, on g0 and on
// goroutine stacks. Nothing may crash, and the stacks stay within bounds.
TEST(CpuProfile, SurvivesHeavyContextSwitching) {
  run_checked([] {
    const int pairs = testing::stress(1500, 150);
    const int rounds = testing::stress(1000, 600);
    const int64_t nodes0 = detail::label_nodes_live();
    ASSERT_FALSE(start_cpu_profile(1000));
    wait_group wg;
    wg.add(2 * pairs);
    for (int i = 0; i < pairs; i++) {
      chan<int> ping(0), pong(0);
      go([&wg, ping, pong, rounds] {
        pprof_do({{"side", "ping"}}, [&] {
          for (int r = 0; r < rounds; r++) {
            ping.send(r);
            pong.recv();
            yield();
          }
        });
        wg.done();
      });
      go([&wg, ping, pong, rounds] {
        for (int r = 0; r < rounds; r++) {
          ping.recv();
          yield();
          pong.send(r);
        }
        wg.done();
      });
    }
    wg.wait();
    profile p = stop_cpu_profile();
    EXPECT_GT(total_samples(p), 0);
    bool labeled = false;
    for (const profile_sample& s : p.samples) {
      EXPECT_LE(s.stack.size(), 64u);
      if (label_of(s, "side") == "ping") labeled = true;
    }
    EXPECT_TRUE(labeled);
    EXPECT_EQ(testing::settle_goroutines(1), 1);
    EXPECT_EQ(detail::label_nodes_live(), nodes0);
  });
}

// An M that starts while the profile runs gets its timer. Every M that exists before the
// profile is kept busy in a blocking() call, so one more goroutine in a blocking() call
// needs a new M; only a new M burns CPU, in a function of its own.
TEST(CpuProfile, SamplesAnMCreatedDuringTheProfile) {
  run_checked([] {
    std::vector<detail::m*> old;
    {
      detail::lock_guard l(detail::sched.mu);
      old = detail::sched.allm;
    }
    ASSERT_FALSE(start_cpu_profile());
    std::atomic<bool> done{false};
    std::atomic<int> on_new{0};
    const int n = static_cast<int>(old.size()) + 1;
    wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; i++)
      go([&] {
        blocking([&] {
          detail::m* me = detail::getm();
          if (std::find(old.begin(), old.end(), me) == old.end()) {
            on_new++;
            g_sink += cpu_burner_on_new_m(300 * kMs);
            done.store(true);
            done.notify_all();
          } else {
            done.wait(false);
          }
        });
        wg.done();
      });
    wg.wait();
    profile p = stop_cpu_profile();
    EXPECT_GE(on_new.load(), 1);
    auto names = symbolize_samples(p);
    int64_t burner = 0;
    for (std::size_t i = 0; i < p.samples.size(); i++)
      if (has(names[i], "cpu_burner_on_new_m")) burner += p.samples[i].values[0];
    EXPECT_GE(burner, 10);
    EXPECT_GT(detail::cpu_profile_last_stats().threads_armed, static_cast<int>(old.size()));
  });
}

// A full ring drops samples without blocking the handler; the profile accounts for them
// as samples of cpu_profile_lost_samples and says so in a comment.
TEST(CpuProfile, OverflowIsCountedNotBlocking) {
  run_checked([] {
    detail::cpu_profile_set_ring_capacity(2);
    ASSERT_FALSE(start_cpu_profile(1000));
    detail::cpu_profile_set_ring_capacity(0);
    wait_group wg;
    wg.add(2);
    for (int i = 0; i < 2; i++)
      go([&] {
        g_sink += cpu_burner_xyzzy(300 * kMs);
        wg.done();
      });
    wg.wait();
    profile p = stop_cpu_profile();
    detail::cpu_profile_stats st = detail::cpu_profile_last_stats();
    EXPECT_GT(st.lost, 0);
    auto names = symbolize_samples(p);
    int64_t lost = 0;
    for (std::size_t i = 0; i < p.samples.size(); i++)
      if (has(names[i], "cpu_profile_lost_samples")) lost += p.samples[i].values[0];
    EXPECT_EQ(lost, st.lost);
    EXPECT_EQ(total_samples(p), st.samples + st.lost);
    ASSERT_EQ(p.comments.size(), 1u);
    EXPECT_NE(p.comments[0].find("samples lost"), std::string::npos);
  });
}

// The handler leaves errno as it found it.
TEST(CpuProfile, HandlerPreservesErrno) {
  run_checked([] {
    ASSERT_FALSE(start_cpu_profile(1000));
    std::atomic<int64_t> clobbered{0};
    wait_group wg;
    wg.add(1);
    go([&] {
      int64_t end = clock_ns(CLOCK_THREAD_CPUTIME_ID) + 300 * kMs;
      uint64_t x = 5;
      while (clock_ns(CLOCK_THREAD_CPUTIME_ID) < end) {
        errno = EDOM;
        x = spin(x);
        asm volatile("" ::: "memory");  // read errno from memory, as code after a syscall does
        if (errno != EDOM) clobbered++;
      }
      g_sink += x;
      wg.done();
    });
    wg.wait();
    profile p = stop_cpu_profile();
    EXPECT_GE(total_samples(p), 30);
    EXPECT_EQ(clobbered.load(), 0);
  });
}

// A SIGPROF that our timers did not send goes to the handler installed before ours,
// while profiling and after.
std::atomic<int> g_foreign_sigprofs{0};
void count_sigprof(int) {
  g_foreign_sigprofs++;
}

TEST(CpuProfile, ForeignSigprofGoesToThePreviousHandler) {
  run_checked([] {
    g_foreign_sigprofs = 0;
    struct sigaction sa {};
    sa.sa_handler = count_sigprof;
    sigemptyset(&sa.sa_mask);
    ASSERT_EQ(sigaction(SIGPROF, &sa, nullptr), 0);
    ASSERT_FALSE(start_cpu_profile());
    wait_group wg;
    wg.add(1);
    go([&] {
      g_sink += cpu_burner_xyzzy(200 * kMs);
      wg.done();
    });
    blocking([] { syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGPROF); });
    EXPECT_EQ(g_foreign_sigprofs.load(), 1);
    wg.wait();
    profile p = stop_cpu_profile();
    EXPECT_GT(total_samples(p), 0);
    EXPECT_EQ(g_foreign_sigprofs.load(), 1);  // our timer's signals did not leak to it
    blocking([] { syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGPROF); });
    EXPECT_EQ(g_foreign_sigprofs.load(), 2);
    // Leave SIGPROF ignored rather than counted (the next start installs ours again).
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPROF, &sa, nullptr);
  });
}

// The encoded profile as `go tool pprof` sees it: the burners by name, and -tagfocus on a
// label keeps one goroutine's samples and drops the other's.
std::string run_pprof(const std::string& dir, const std::string& args) {
  return testing::run_cmd("HOME=" + dir + " PPROF_TMPDIR=" + dir + " GOCACHE=" + dir + "/gocache go tool pprof " + args);
}

TEST(CpuProfile, GoToolPprofReadsTheEncodedProfile) {
  if (std::system("go version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no go toolchain";
  run_checked([] {
    ASSERT_FALSE(start_cpu_profile());
    wait_group wg;
    wg.add(2);
    go([&] {
      pprof_do({{"worker", "alpha"}}, [] { g_sink += cpu_burner_alpha(300 * kMs); });
      wg.done();
    });
    go([&] {
      pprof_do({{"worker", "bravo"}}, [] { g_sink += cpu_burner_bravo(300 * kMs); });
      wg.done();
    });
    wg.wait();
    profile p = stop_cpu_profile();
    blocking([&] {
      std::string pb = encode_pprof(p);  // symbolizes with libdw: not on a goroutine stack
      char tmpl[] = "/tmp/weft-cpu-profile-XXXXXX";
      ASSERT_NE(mkdtemp(tmpl), nullptr);
      std::string dir = tmpl;
      std::string file = dir + "/cpu.pb.gz";
      std::ofstream(file, std::ios::binary) << pb;

      std::string all = run_pprof(dir, "-top " + file);
      EXPECT_NE(all.find("Type: cpu"), std::string::npos) << all;
      EXPECT_NE(all.find("cpu_burner_alpha"), std::string::npos) << all;
      EXPECT_NE(all.find("cpu_burner_bravo"), std::string::npos) << all;

      std::string alpha = run_pprof(dir, "-top -tagfocus=worker=alpha " + file);
      EXPECT_NE(alpha.find("cpu_burner_alpha"), std::string::npos) << alpha;
      EXPECT_EQ(alpha.find("cpu_burner_bravo"), std::string::npos) << alpha;

      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    });
  });
}

}  // namespace
}  // namespace weft
