// The execution tracer (runtime/trace.h), the scheduler statistics and the threadcreate
// profile (runtime/sched_stats.h).
//
// Traces are parsed back with nlohmann-json and checked the way the viewers read them:
// per track (tid) the events are in time order and the complete ("X") slices nest.
// Synchronisation is by seams: goroutine status, channels, wait groups, the scheduler's
// own counters.
#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <random>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/chan.h"
#include "runtime/internal/trace.h"
#include "runtime/sched_stats.h"
#include "runtime/symbolize.h"
#include "runtime/trace.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using nlohmann::json;
using testing::run_checked;

int64_t ns_of(const json& v) { return std::llround(v.get<double>() * 1000.0); }

// Yields until gp reaches status s (a goroutine status seam).
void wait_status(goroutine_ref gp, detail::gstatus s) {
  while (gp->status.load(std::memory_order_acquire) != s) yield();
}

// Every track is in time order, its slices nest, B/E (if any) balance, and every
// goroutine slice lies inside a proc slice of its P.
void expect_well_formed(const json& doc) {
  ASSERT_TRUE(doc.is_object());
  EXPECT_EQ(doc.value("displayTimeUnit", ""), "ns");
  ASSERT_TRUE(doc.contains("traceEvents") && doc["traceEvents"].is_array());
  std::map<int64_t, std::vector<const json*>> by_tid;
  for (const json& e : doc["traceEvents"]) {
    ASSERT_TRUE(e.contains("ph") && e.contains("pid") && e.contains("tid")) << e.dump();
    if (e["ph"] == "M") continue;
    ASSERT_TRUE(e.contains("ts")) << e.dump();
    by_tid[e["tid"].get<int64_t>()].push_back(&e);
  }
  for (auto& [tid, evs] : by_tid) {
    int64_t last = -1;
    std::vector<int64_t> open;  // ends of the enclosing X slices
    std::vector<std::pair<int64_t, int64_t>> procs;
    int depth = 0;
    for (const json* e : evs) {
      int64_t ts = ns_of((*e)["ts"]);
      EXPECT_GE(ts, last) << "tid " << tid << " goes back in time at " << e->dump();
      last = ts;
      std::string ph = (*e)["ph"];
      if (ph == "X") {
        int64_t end = ts + ns_of((*e)["dur"]);
        EXPECT_GE(end, ts);
        while (!open.empty() && open.back() <= ts) open.pop_back();
        if (!open.empty()) {
          EXPECT_LE(end, open.back()) << "tid " << tid << " overlaps at " << e->dump();
        }
        open.push_back(end);
        if ((*e)["cat"] == "proc") procs.push_back({ts, end});
        if ((*e)["cat"] == "goroutine") {
          bool inside = false;
          for (auto& [s, f] : procs) inside |= s <= ts && end <= f;
          EXPECT_TRUE(inside) << "goroutine slice outside any proc slice: " << e->dump();
        }
      } else if (ph == "B") {
        depth++;
      } else if (ph == "E") {
        EXPECT_GT(depth, 0) << "unbalanced E on tid " << tid;
        depth--;
      } else {
        EXPECT_EQ(ph, "i") << e->dump();
      }
    }
    EXPECT_EQ(depth, 0) << "unbalanced B on tid " << tid;
  }
}

// Events about goroutine id (args.g), in time order.
std::vector<json> events_of(const json& doc, uint64_t id) {
  std::vector<json> out;
  for (const json& e : doc["traceEvents"])
    if (e["ph"] != "M" && e.contains("args") && e["args"].value("g", uint64_t{0}) == id) out.push_back(e);
  std::stable_sort(out.begin(), out.end(), [](const json& a, const json& b) { return ns_of(a["ts"]) < ns_of(b["ts"]); });
  return out;
}

// The scripted scenario: A is created, parks on a channel receive, B's send readies it,
// A makes a blocking call, yields and exits.
TEST(Trace, ScriptedScenarioRecordsEachTransition) {
  run_checked([] {
    ASSERT_FALSE(start_trace());
    EXPECT_TRUE(trace_running());
    const uint64_t main_id = goroutine_id();
    chan<int> c(0);
    std::atomic<uint64_t> a_id{0}, b_id{0};
    std::atomic<goroutine_ref> a_ref{nullptr}, b_ref{nullptr};
    go([&] {
      a_id = goroutine_id();
      a_ref = current_goroutine();
      c.recv();
      blocking([] {});
      yield();
    });
    while (!a_ref.load()) yield();
    wait_status(a_ref.load(), detail::gstatus::waiting);  // parked in the receive
    go([&] {
      b_id = goroutine_id();
      b_ref = current_goroutine();
      c.send(1);
    });
    while (!b_ref.load()) yield();
    wait_status(a_ref.load(), detail::gstatus::dead);
    wait_status(b_ref.load(), detail::gstatus::dead);
    std::string out = stop_trace();
    EXPECT_FALSE(trace_running());
    json doc = json::parse(out);
    expect_well_formed(doc);

    const uint64_t a = a_id, b = b_id;
    std::vector<std::string> instants, ends;
    json create, park, unpark;
    int blocking_slices = 0;
    std::vector<int64_t> starts;
    int64_t create_ts = -1, unpark_ts = -1, yield_ts = -1, call_ts = -1, call_end = -1;
    for (const json& e : events_of(doc, a)) {
      if (e["ph"] == "i") {
        instants.push_back(e["name"]);
        if (e["name"] == "GoCreate") create = e, create_ts = ns_of(e["ts"]);
        if (e["name"] == "GoPark") park = e;
        if (e["name"] == "GoUnblock") unpark = e, unpark_ts = ns_of(e["ts"]);
        if (e["name"] == "GoYield") yield_ts = ns_of(e["ts"]);
      } else if (e["cat"] == "goroutine") {
        EXPECT_EQ(e["name"], "G" + std::to_string(a));
        EXPECT_TRUE(e["args"].contains("m"));
        ends.push_back(e["args"]["end"]);
        starts.push_back(ns_of(e["ts"]));
      } else if (e["cat"] == "syscall") {
        blocking_slices++;
        call_ts = ns_of(e["ts"]);
        call_end = call_ts + ns_of(e["dur"]);
        EXPECT_EQ(e["name"], "blocking call");
      }
    }
    EXPECT_EQ(instants, (std::vector<std::string>{"GoCreate", "GoPark", "GoUnblock", "GoSysCall", "GoYield",
                                                  "GoDestroy"}));
    EXPECT_EQ(ends, (std::vector<std::string>{"park", "blocking", "yield", "exit"}));
    EXPECT_EQ(blocking_slices, 1);
    // Each stretch starts after what made A runnable again.
    ASSERT_EQ(starts.size(), 4u);
    EXPECT_GT(starts[0], create_ts);
    EXPECT_GT(starts[1], unpark_ts);
    EXPECT_GE(starts[2], call_end);
    EXPECT_GT(starts[3], yield_ts);
    EXPECT_LT(unpark_ts, call_ts);
    EXPECT_LT(call_ts, yield_ts);
    EXPECT_EQ(create["args"]["parent"], main_id);
    EXPECT_NE(create["args"]["site"].get<std::string>().find("trace_test.cc"), std::string::npos)
        << create.dump();
    EXPECT_EQ(park["args"]["reason"], "chan receive");
    EXPECT_EQ(unpark["args"]["by"], "goroutine");
    EXPECT_EQ(unpark["args"]["by_g"], b);

    // B: created by main, never parked (A was waiting), exits.
    std::vector<std::string> b_instants;
    for (const json& e : events_of(doc, b))
      if (e["ph"] == "i") b_instants.push_back(e["name"]);
    EXPECT_EQ(b_instants, (std::vector<std::string>{"GoCreate", "GoDestroy"}));

    // Tracks are named, one per P.
    std::map<int64_t, std::string> names;
    for (const json& e : doc["traceEvents"])
      if (e["ph"] == "M" && e["name"] == "thread_name") names[e["tid"]] = e["args"]["name"];
    for (const json& e : doc["traceEvents"]) {
      if (e["ph"] == "X" && e["cat"] == "goroutine") {
        EXPECT_EQ(names[e["tid"]].rfind("P ", 0), 0u) << e.dump();
      } else if (e["ph"] == "X" && e["cat"] == "syscall") {
        EXPECT_EQ(names[e["tid"]], "M " + std::to_string(e["args"]["m"].get<int>()) + " blocking");
      }
    }
  });
}

// The renderer alone, fed random event streams from several "threads" (as dropped
// events leave them: starts without ends, ends without starts, Ps changing hands
// unannounced, equal timestamps): whatever comes in, every track comes out in time
// order, nested, with goroutine slices inside proc slices.
TEST(Trace, RendererKeepsTracksWellFormedWhateverIsMissing) {
  std::mt19937_64 rng(20240611);
  for (int round = 0; round < 300 && !HasFailure(); round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    detail::render_input in;
    int64_t ts = 1'000'000;
    in.start_ns = ts;
    std::vector<detail::trace_ev> threads[3];
    int n = 1 + static_cast<int>(rng() % 300);
    for (int i = 0; i < n; i++) {
      ts += rng() % 3 == 0 ? 0 : static_cast<int64_t>(rng() % 5000);
      detail::trace_ev e{};
      e.ts = ts;
      e.type = static_cast<detail::ev_type>(rng() % 7);
      e.g = 1 + rng() % 4;
      e.m = static_cast<int32_t>(rng() % 4) - 1;
      e.p = static_cast<int16_t>(static_cast<int>(rng() % 3) - 1);
      if (e.type == detail::ev_type::go_stop) {
        e.aux = static_cast<uint8_t>(rng() % 5);
        e.a1 = rng() % static_cast<uint64_t>(wait_reason::count_);
      } else if (e.type == detail::ev_type::go_unpark) {
        e.aux = static_cast<uint8_t>(rng() % 4);
        e.a1 = rng() % 5;
      }
      threads[rng() % 3].push_back(e);
    }
    for (auto& t : threads) in.evs.insert(in.evs.end(), t.begin(), t.end());
    in.end_ns = ts + static_cast<int64_t>(rng() % 1000);
    expect_well_formed(json::parse(detail::render_trace(in)));
  }
}

// A mixed workload on several Ps: every track stays ordered and nested.
TEST(Trace, EveryTrackIsBalancedAndMonotonic) {
  run_checked([] {
    ASSERT_FALSE(start_trace());
    constexpr int n = 200;
    chan<int> c(4);
    wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; i++)
      go([&, i] {
        if (i % 3 == 0) c.send(i);
        if (i % 3 == 1) c.recv();
        if (i % 5 == 0) blocking([] {});
        if (i % 7 == 0) sleep_for(std::chrono::microseconds(50));
        yield();
        wg.done();
      });
    wg.wait();
    std::string out = stop_trace();
    json doc = json::parse(out);
    expect_well_formed(doc);
    int gslices = 0;
    for (const json& e : doc["traceEvents"]) gslices += e["ph"] == "X" && e["cat"] == "goroutine";
    EXPECT_GE(gslices, n);
    EXPECT_EQ(doc["otherData"]["dropped_events"], 0);
  }, {.max_procs = 3});
}

TEST(Trace, StartingTwiceFailsAndKeepsTheFirstTrace) {
  run_checked([] {
    EXPECT_EQ(stop_trace(), "");  // nothing recording
    ASSERT_FALSE(start_trace());
    EXPECT_EQ(start_trace(), std::make_error_code(std::errc::device_or_resource_busy));
    std::atomic<goroutine_ref> ref{nullptr};
    std::atomic<uint64_t> id{0};
    go([&] {
      id = goroutine_id();
      ref = current_goroutine();
    });
    while (!ref.load()) yield();
    wait_status(ref.load(), detail::gstatus::dead);
    EXPECT_EQ(start_trace(), std::make_error_code(std::errc::device_or_resource_busy));
    json doc = json::parse(stop_trace());
    expect_well_formed(doc);
    std::vector<std::string> names;
    for (const json& e : events_of(doc, id))
      if (e["ph"] == "i") names.push_back(e["name"]);
    EXPECT_EQ(names, (std::vector<std::string>{"GoCreate", "GoDestroy"}));
    EXPECT_EQ(stop_trace(), "");
    // And a new one can start once it stopped.
    ASSERT_FALSE(start_trace());
    expect_well_formed(json::parse(stop_trace()));
  });
}

TEST(Trace, StaysBoundedUnderAFloodAndReportsDrops) {
  run_checked([] {
    constexpr std::size_t cap = 1000;
    ASSERT_FALSE(start_trace({.max_events = cap}));
    wait_group wg;
    wg.add(4);
    for (int k = 0; k < 4; k++)
      go([&] {
        for (int i = 0; i < 5000; i++) yield();
        wg.done();
      });
    wg.wait();
    std::string out = stop_trace();
    EXPECT_LT(out.size(), 2 * cap * 400);
    json doc = json::parse(out);
    expect_well_formed(doc);
    EXPECT_LE(doc["otherData"]["recorded_events"].get<uint64_t>(), cap);
    EXPECT_LE(doc["otherData"]["max_events"].get<uint64_t>(), cap);
    EXPECT_GT(doc["otherData"]["dropped_events"].get<uint64_t>(), 10000u);
    std::size_t n = 0;
    bool marked = false;
    for (const json& e : doc["traceEvents"]) {
      n += e["ph"] != "M";
      marked |= e["name"] == "trace dropped events";
    }
    // At most a slice and an instant per recorded event, plus the closing of what is
    // open at the stop.
    EXPECT_LE(n, 2 * cap + 32);
    EXPECT_TRUE(marked);
  });
}

// With one P nothing else runs the queue: a goroutine that spawns n goroutines sees them
// all on its P (ring + runnext) until it gives up the P.
TEST(SchedStats, ReflectsAKnownState) {
  run_checked([] {
    constexpr int n = 10;
    sched_stats s0, s1;
    wait_group wg;
    // A thread stalled for 10 ms lets sysmon preempt main inside go(), and the new
    // goroutines run before s1 is read: that round shows a switch-in, and is redone.
    for (int attempt = 0;; attempt++) {
      s0 = read_sched_stats();
      wg.add(n);
      for (int i = 0; i < n; i++) go([&] { wg.done(); });
      s1 = read_sched_stats();
      if (s1.context_switches == s0.context_switches || attempt == 4) break;
      wg.wait();
      ASSERT_EQ(testing::settle_goroutines(1), 1);
    }
    EXPECT_EQ(s0.procs, 1);
    ASSERT_EQ(s1.local_runq.size(), 1u);
    EXPECT_EQ(s1.local_runq[0], n);
    EXPECT_EQ(s1.global_runq, 0);
    EXPECT_EQ(s1.procs, 1);
    EXPECT_EQ(s1.idle_procs, 0);
    EXPECT_EQ(s1.goroutines, n + 1);
    EXPECT_EQ(s1.goroutines, num_goroutine());
    EXPECT_EQ(s1.goroutines_created - s0.goroutines_created, static_cast<uint64_t>(n));
    EXPECT_GE(s1.threads, 1);
    EXPECT_EQ(s1.blocking_threads, 0);
    wg.wait();
    sched_stats s2 = read_sched_stats();
    EXPECT_EQ(s2.local_runq[0], 0);
    EXPECT_GE(s2.context_switches - s1.context_switches, static_cast<uint64_t>(n));
    EXPECT_EQ(testing::settle_goroutines(1), 1);
    EXPECT_EQ(read_sched_stats().goroutines, 1);
  }, {.max_procs = 1});
  // Outside a run everything reads as zero.
  sched_stats idle = read_sched_stats();
  EXPECT_EQ(idle.procs, 0);
  EXPECT_EQ(idle.goroutines, 0);
  EXPECT_TRUE(idle.local_runq.empty());
}

// Samples of G waiting for the only P, which main keeps for 2 ms after each channel
// operation: every wake-up of G waits that long, and of 8 or more in a row one is
// sampled. Returns how many samples landed in (1.024 ms, ~1.05 s].
uint64_t sample_long_waits() {
  sched_stats s0 = read_sched_stats();
  constexpr int rounds = 8;
  chan<int> ping(0), pong(0);
  wait_group wg;
  wg.add(1);
  go([&] {
    for (int i = 0; i < rounds; i++) {
      ping.recv();
      pong.send(i);
    }
    wg.done();
  });
  auto hold_the_p = [] {
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
    while (std::chrono::steady_clock::now() < until) {
    }
  };
  for (int i = 0; i < rounds; i++) {
    ping.send(i);
    hold_the_p();
    pong.recv();
    hold_the_p();
  }
  wg.wait();
  sched_stats s1 = read_sched_stats();
  auto in_range = [](const sched_latency_histogram& h) { return h.cumulative[20] - h.cumulative[10]; };
  EXPECT_GE(s1.latency.sum_ns - s0.latency.sum_ns, 2'000'000);
  return in_range(s1.latency) - in_range(s0.latency);
}

TEST(SchedStats, LatencyHistogramCountsSampledWaitsCumulatively) {
  run_checked([] {
    sched_stats s0 = read_sched_stats();
    const auto& bounds = s0.latency.bounds_ns;
    EXPECT_EQ(bounds.front(), 1000);
    EXPECT_EQ(bounds[10], 1'024'000);
    EXPECT_EQ(bounds[kSchedLatencyBuckets - 2], int64_t{1000} << 23);
    EXPECT_EQ(bounds.back(), INT64_MAX);
    for (int i = 1; i < kSchedLatencyBuckets; i++) EXPECT_GT(bounds[i], bounds[i - 1]);

    // Stamped with nanotime() (as before the counter is calibrated)...
    uint64_t mult = detail::g_tick_ns_mult.exchange(0);
    EXPECT_GE(sample_long_waits(), 1u);
    // Put it back unless sysmon set it meanwhile: a calibration that finished during the
    // sampling (a stalled host makes that take over 100 ms) would otherwise be undone by
    // a 0 saved mid-calibration, and never redone (seen: 20 s waiting below).
    uint64_t zero = 0;
    detail::g_tick_ns_mult.compare_exchange_strong(zero, mult);
    // ...and with the calibrated time-stamp counter, where there is one.
    std::ifstream cs("/sys/devices/system/clocksource/clocksource0/current_clocksource");
    std::string source;
    cs >> source;
#if defined(__x86_64__)
    if (source == "tsc") {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (detail::g_tick_ns_mult.load() == 0 && std::chrono::steady_clock::now() < deadline)
        sleep_for(std::chrono::milliseconds(1));  // sysmon calibrates over 100 ms
      ASSERT_NE(detail::g_tick_ns_mult.load(), 0u);
      EXPECT_GE(sample_long_waits(), 1u);
    }
#endif

    // Plenty of short ones.
    sched_stats s1 = read_sched_stats();
    for (int i = 0; i < 800; i++) yield();
    sched_stats s2 = read_sched_stats();
    const auto& h1 = s1.latency;
    const auto& h2 = s2.latency;
    EXPECT_GE(h2.count - h1.count, 100u);
    EXPECT_LE(h2.count - h1.count, 800u);
    EXPECT_GE(h2.cumulative[10] - h1.cumulative[10], 90u);  // yields wait far less than 1 ms
    EXPECT_EQ(h2.cumulative.back(), h2.count);
    for (int i = 1; i < kSchedLatencyBuckets; i++) EXPECT_GE(h2.cumulative[i], h2.cumulative[i - 1]);
    EXPECT_GE(h2.sum_ns, h1.sum_ns);
  }, {.max_procs = 1});
}

// Blocking calls that wait for each other force the runtime to make Ms: sysmon hands the
// only P on, and a new M is created for it.
TEST(ThreadCreate, CountsTheMsAndSymbolizesTheCreationPath) {
  run_checked([] {
    constexpr int k = 3;
    std::mutex mu;
    std::condition_variable cv;
    bool release = false;
    wait_group wg;
    wg.add(k);
    for (int i = 0; i < k; i++)
      go([&] {
        blocking([&] {
          std::unique_lock<std::mutex> l(mu);
          cv.wait(l, [&] { return release; });
        });
        wg.done();
      });
    // Bounded, so that a broken count fails instead of hanging.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (read_sched_stats().blocking_threads < k && std::chrono::steady_clock::now() < deadline) yield();
    sched_stats st = read_sched_stats();
    profile pr = threadcreate_profile();
    {
      std::lock_guard<std::mutex> l(mu);
      release = true;
    }
    cv.notify_all();
    wg.wait();
    EXPECT_EQ(st.blocking_threads, k);

    ASSERT_EQ(pr.sample_types.size(), 1u);
    EXPECT_EQ(pr.sample_types[0].type, "threadcreate");
    EXPECT_EQ(pr.sample_types[0].unit, "count");
    EXPECT_EQ(pr.period_type.type, "threadcreate");
    EXPECT_EQ(pr.period_type.unit, "count");
    EXPECT_EQ(pr.period, 1);
    int64_t total = 0, empty = 0;
    for (const profile_sample& s : pr.samples) {
      ASSERT_EQ(s.values.size(), 1u);
      total += s.values[0];
      if (s.stack.empty()) empty += s.values[0];
    }
    EXPECT_GE(total, k + 1);  // k Ms in calls, one running this goroutine
    EXPECT_GE(st.threads, k + 1);
    EXPECT_EQ(total, st.threads);
    EXPECT_EQ(empty, 1);  // M0
    // Every other M's stack starts in newm, called from startm.
    std::vector<std::string> paths = blocking([&] {
      std::vector<std::string> out;
      for (const profile_sample& s : pr.samples) {
        if (s.stack.empty()) continue;
        std::string path;
        for (uintptr_t pc : s.stack)
          for (const symbol_info& si : symbolize_frames(pc - 1)) path += si.function + "\n";
        out.push_back(path);
      }
      return out;
    });
    ASSERT_FALSE(paths.empty());
    auto frames_of = [](const std::string& path) {
      std::vector<std::string> out;
      for (std::size_t at = 0, nl; at < path.size(); at = nl + 1) {
        nl = path.find('\n', at);
        out.push_back(path.substr(at, nl - at));
      }
      return out;
    };
    // "ns::f" or "ns::f(args)" (inlined frames come without their parameters).
    auto is_fn = [](const std::string& frame, std::string_view name) {
      std::string tail = "::" + std::string(name);
      std::size_t at = frame.find(tail);
      return at != std::string::npos &&
             (at + tail.size() == frame.size() || frame[at + tail.size()] == '(');
    };
    for (const std::string& path : paths) {
      std::vector<std::string> frames = frames_of(path);
      ASSERT_GE(frames.size(), 2u) << path;
      EXPECT_TRUE(is_fn(frames[0], "newm")) << "the innermost frame is newm:\n" << path;
      EXPECT_TRUE(is_fn(frames[1], "startm")) << path;
    }
  }, {.max_procs = 1});
}

}  // namespace
}  // namespace weft
