// The execution tracer, the scheduler's statistics and the threadcreate profile.
//
// Recording. The scheduler calls the hooks of runtime/internal/trace.h at each
// transition; with no trace running they stop at one relaxed load of g_trace_on. While
// a trace records, every thread that reports an event owns a trace_buf (found through a
// thread_local, registered on its first event of the session under g_bufs_mu, a leaf
// lock) and appends 40-byte events to chunks carved with one fetch_add from a pool that
// start_trace reserved with mmap (committed page by page as it fills). A P's events all
// come from the M owning it at the time (docs/HACKING.md), so merging the per-thread
// buffers by timestamp gives each P's history in order. When the pool is used up a
// thread drops its events and counts them.
//
// Stopping without locks on the writers' side. A writer raises its buffer's busy flag
// (seq_cst), re-reads g_trace_on (seq_cst), writes only if the session is still on, then
// lowers the flag. stop_trace clears g_trace_on (seq_cst) and then waits for each busy
// flag to drop: either the writer sees the trace off, or the stopper sees it busy and
// waits (Dekker). Buffers are never freed (a thread's buffer is reused across sessions
// and passed on when its thread exits), so a writer that lost the race never touches
// freed memory; chunks live in the pool, which is unmapped only after that handshake.
//
// Rendering (stop_trace, on a thread stack: symbolization recurses). Events go to
// tracks: P tracks (everything recorded with a P), M tracks (blocking calls, and events
// of an M without a P) and one track for threads without an M. Each track's events are
// sorted by time and fed to a small state machine that emits complete ("X") events: a
// proc slice per stretch an M holds the P, a goroutine slice per stretch it runs
// (always inside a proc slice), a slice per blocking call. The state machine is what
// keeps the output balanced whatever was dropped: an end without its start gets a start
// at the track's last boundary (or the start of the trace), a start while something is
// open closes it, and whatever is open at the stop is closed there.
//
// Statistics (read_sched_stats, threadcreate_profile) read the scheduler's counters
// under sched.mu, which run_teardown also holds while it retires the Ms and Ps.
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "runtime/internal/trace.h"
#include "runtime/runtime.h"
#include "runtime/sched_stats.h"
#include "runtime/symbolize.h"
#include "runtime/trace.h"

namespace weft::detail {

std::atomic<uint32_t> g_trace_on{0};

namespace {

static_assert(kLatencyBuckets == weft::kSchedLatencyBuckets);
static_assert(sizeof(trace_ev) == 40);

struct trace_chunk {
  trace_chunk* next;
  uint32_t n;
  uint32_t unused;
  trace_ev* events() { return reinterpret_cast<trace_ev*>(this + 1); }
};
static_assert(sizeof(trace_chunk) % alignof(trace_ev) == 0);

// One per thread that has recorded; never freed.
struct trace_buf {
  std::atomic<bool> busy{false};
  std::atomic<bool> owned{true};  // false once its thread has exited
  uint32_t gen = 0;               // session the chunks belong to (owner writes, g_bufs_mu)
  trace_chunk* head = nullptr;    // owner writes; stop_trace reads after the handshake
  trace_chunk* tail = nullptr;
  uint64_t dropped = 0;
  trace_buf* all_next = nullptr;  // g_bufs_mu
};

enum session_state : int { kIdle, kStarting, kRecording, kStopping };

// Written by whoever moved state to kStarting, before g_trace_on publishes the session.
struct session_t {
  std::atomic<int> state{kIdle};
  uint32_t gen = 0;
  char* pool = nullptr;
  std::size_t pool_bytes = 0;
  std::size_t chunk_bytes = 0;
  uint32_t chunk_events = 0;
  uint32_t nchunks = 0;
  uint64_t max_events = 0;
  int64_t start_ns = 0;
  std::atomic<uint32_t> next_chunk{0};
  std::atomic<bool> full{false};
};

session_t g_session;
uint32_t g_last_gen = 0;  // the starter's (kStarting is exclusive)

std::mutex g_bufs_mu;  // leaf: nothing is taken under it
trace_buf* g_bufs = nullptr;

struct tls_slot {
  trace_buf* buf = nullptr;
  ~tls_slot() {
    if (buf) buf->owned.store(false, std::memory_order_release);
  }
};
thread_local tls_slot t_slot;

trace_buf* register_buf(uint32_t gen) {
  std::lock_guard<std::mutex> l(g_bufs_mu);
  // stop_trace clears g_trace_on before it takes the lock to collect: a buffer
  // registered after that must not be written.
  if (g_trace_on.load(std::memory_order_relaxed) != gen) return nullptr;
  trace_buf* b = t_slot.buf;
  if (!b) {
    for (trace_buf* x = g_bufs; x && !b; x = x->all_next) {
      bool expect = false;
      if (!x->owned.load(std::memory_order_acquire) &&
          x->owned.compare_exchange_strong(expect, true, std::memory_order_acquire))
        b = x;
    }
    if (!b) {
      b = new trace_buf();
      b->all_next = g_bufs;
      g_bufs = b;
    }
    t_slot.buf = b;
  }
  if (b->gen != gen) {
    b->gen = gen;
    b->head = b->tail = nullptr;
    b->dropped = 0;
  }
  return b;
}

trace_chunk* take_chunk() {
  if (g_session.full.load(std::memory_order_relaxed)) return nullptr;
  uint32_t i = g_session.next_chunk.fetch_add(1, std::memory_order_relaxed);
  if (i >= g_session.nchunks) {
    g_session.full.store(true, std::memory_order_relaxed);
    return nullptr;
  }
  auto* c = reinterpret_cast<trace_chunk*>(g_session.pool + std::size_t{i} * g_session.chunk_bytes);
  c->next = nullptr;
  c->n = 0;
  return c;
}

void emit(trace_ev e) {
  uint32_t gen = g_trace_on.load(std::memory_order_relaxed);
  if (gen == 0) return;
  trace_buf* b = t_slot.buf;
  if (!b || b->gen != gen) {
    b = register_buf(gen);
    if (!b) return;
  }
  b->busy.store(true, std::memory_order_seq_cst);
  if (g_trace_on.load(std::memory_order_seq_cst) != gen) {
    b->busy.store(false, std::memory_order_release);
    return;
  }
  trace_chunk* c = b->tail;
  if (!c || c->n == g_session.chunk_events) {
    c = take_chunk();
    if (!c) {
      b->dropped++;
      b->busy.store(false, std::memory_order_release);
      return;
    }
    if (b->tail)
      b->tail->next = c;
    else
      b->head = c;
    b->tail = c;
  }
  e.ts = nanotime();
  c->events()[c->n++] = e;
  b->busy.store(false, std::memory_order_release);
}

int32_t m_id(m* mp) { return mp ? static_cast<int32_t>(mp->id) : -1; }
int16_t p_id(p* pp) { return pp ? static_cast<int16_t>(pp->id) : -1; }

}  // namespace

// ---------------------------------------------------------------------------------------
// Hooks (slow paths).

void trace_go_create_slow(m* mp, p* pp, uint64_t goid, uint64_t parent, uintptr_t pc) {
  emit({0, goid, parent, pc, m_id(mp), p_id(pp), ev_type::go_create, 0});
}

void trace_go_start_slow(m* mp, p* pp, uint64_t goid) {
  emit({0, goid, 0, 0, m_id(mp), p_id(pp), ev_type::go_start, 0});
}

void trace_go_stop_slow(m* mp, p* pp, uint64_t goid, trace_stop why, wait_reason reason) {
  emit({0, goid, static_cast<uint64_t>(reason), 0, m_id(mp), p_id(pp), ev_type::go_stop,
        static_cast<uint8_t>(why)});
}

void trace_go_unpark_slow(m* mp, p* pp, uint64_t goid, bool netpoll) {
  trace_waker by = trace_waker::thread;
  uint64_t waker = 0;
  if (netpoll) {
    by = trace_waker::netpoll;
  } else if (g* cur = getg()) {
    by = trace_waker::goroutine;
    waker = cur->id;
  } else if (mp) {
    by = trace_waker::timer;  // g0: timers and poller callbacks
  }
  emit({0, goid, waker, 0, m_id(mp), p_id(pp), ev_type::go_unpark, static_cast<uint8_t>(by)});
}

void trace_syscall_exit_slow(m* mp, uint64_t goid) {
  emit({0, goid, 0, 0, m_id(mp), -1, ev_type::syscall_exit, 0});
}

void trace_proc_start_slow(m* mp, p* pp) {
  emit({0, 0, 0, 0, m_id(mp), p_id(pp), ev_type::proc_start, 0});
}

void trace_proc_stop_slow(m* mp, p* pp) {
  emit({0, 0, 0, 0, m_id(mp), p_id(pp), ev_type::proc_stop, 0});
}

// ---------------------------------------------------------------------------------------
// Scheduling latency.

std::atomic<uint64_t> g_tick_ns_mult{0};

namespace {

// sysmon's calibration state (one sysmon at a time; runs are joined one after another).
// Two passes: a rough multiplier after 1 ms, so that short programs get the cheap clock
// too, and the final one after 100 ms.
int g_calib_stage = 0;  // 0: not started, 1: rough pass, 2: final pass, 3: done, -1: unusable
int64_t g_calib_ns = 0;
uint64_t g_calib_ticks = 0;
std::atomic<bool> g_calib_done{false};

bool tsc_is_clocksource() {
  std::FILE* f = std::fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
  if (!f) return false;
  char buf[32] = {};
  bool ok = std::fgets(buf, sizeof buf, f) && std::string_view(buf).substr(0, 4) == "tsc\n";
  std::fclose(f);
  return ok;
}

#if defined(__x86_64__)
// nanotime() and the counter at the same instant, within ~1 us; false if the thread was
// interrupted in between.
bool read_clock_pair(int64_t* ns, uint64_t* ticks) {
  uint64_t t1 = __builtin_ia32_rdtsc();
  *ns = nanotime();
  uint64_t t2 = __builtin_ia32_rdtsc();
  if (t2 < t1 || t2 - t1 > 3000) return false;
  *ticks = t1 + (t2 - t1) / 2;
  return true;
}
#endif

}  // namespace

bool ticks_calibrated() { return g_calib_done.load(std::memory_order_acquire); }

void calibrate_ticks() {
#if defined(__x86_64__)
  if (g_calib_stage < 0 || g_calib_stage > 2) return;
  int64_t ns;
  uint64_t ticks;
  if (!read_clock_pair(&ns, &ticks)) return;  // next tick
  if (g_calib_stage == 0) {
    if (!tsc_is_clocksource()) {
      g_calib_stage = -1;
      return;
    }
    g_calib_stage = 1;
    g_calib_ns = ns;
    g_calib_ticks = ticks;
    return;
  }
  // 1 ms with both ends within 1 us: 0.1% at worst; 100 ms: 1e-5.
  if (ns - g_calib_ns < (g_calib_stage == 1 ? 1'000'000 : 100'000'000) || ticks <= g_calib_ticks) return;
  unsigned __int128 mult = (static_cast<unsigned __int128>(ns - g_calib_ns) << 32) / (ticks - g_calib_ticks);
  if (mult == 0 || mult > (uint64_t{1} << 40)) {  // below 4 MHz: something is off
    g_tick_ns_mult.store(0, std::memory_order_relaxed);
    g_calib_stage = -1;
    return;
  }
  g_tick_ns_mult.store(static_cast<uint64_t>(mult), std::memory_order_relaxed);
  if (++g_calib_stage == 3) g_calib_done.store(true, std::memory_order_release);
#endif
}

void record_sched_latency(p* pp, g* gp) {
  int64_t since = gp->runnable_since;
  gp->runnable_since = 0;
  int64_t d;
  if (since < 0) {
    d = nanotime() + since;
  } else {
#if defined(__x86_64__)
    // A counter stamp implies the multiplier was set, and it never changes after.
    int64_t dt = static_cast<int64_t>(__builtin_ia32_rdtsc()) - since;
    uint64_t mult = g_tick_ns_mult.load(std::memory_order_relaxed);
    d = dt <= 0 ? 0 : static_cast<int64_t>((static_cast<unsigned __int128>(dt) * mult) >> 32);
#else
    d = 0;
#endif
  }
  if (d < 0) d = 0;
  // Bucket k holds (1 us * 2^(k-1), 1 us * 2^k]; bucket 0 everything up to 1 us.
  int k = d <= 1000 ? 0 : static_cast<int>(std::bit_width(static_cast<uint64_t>(d - 1) / 1000));
  if (k > kLatencyBuckets - 1) k = kLatencyBuckets - 1;
  // pp's owner is the only writer.
  pp->lat_count[k].store(pp->lat_count[k].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  pp->lat_sum_ns.store(pp->lat_sum_ns.load(std::memory_order_relaxed) + d, std::memory_order_relaxed);
}

// ---------------------------------------------------------------------------------------
// threadcreate.

namespace {

// The stack holding fp: the current goroutine's, the M's g0 stack, or the thread's.
void stack_bounds(uintptr_t fp, uintptr_t* lo, uintptr_t* hi) {
  if (g* gp = getg()) {
    auto l = reinterpret_cast<uintptr_t>(gp->stack_lo), h = reinterpret_cast<uintptr_t>(gp->stack_hi);
    if (fp >= l && fp < h) {
      *lo = l;
      *hi = h;
      return;
    }
  }
  if (m* mp = getm(); mp && mp->g0_lo) {
    auto l = reinterpret_cast<uintptr_t>(mp->g0_lo);
    if (fp >= l && fp < l + mp->g0_size) {
      *lo = l;
      *hi = l + mp->g0_size;
      return;
    }
  }
  *lo = fp;
  *hi = fp + (64 << 10);
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* addr;
    std::size_t size;
    if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
      auto l = reinterpret_cast<uintptr_t>(addr);
      if (fp >= l && fp < l + size) {
        *lo = l;
        *hi = l + size;
      }
    }
    pthread_attr_destroy(&attr);
  }
}

}  // namespace

[[gnu::noinline]] void record_thread_create(m* mp) {
  auto fp = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  uintptr_t lo, hi;
  stack_bounds(fp, &lo, &hi);
  int n = 0;
  // The first return address is in our caller, newm.
  while (n < kCreateStackDepth && fp >= lo && fp + 16 <= hi && (fp & 7) == 0) {
    auto* frame = reinterpret_cast<const uintptr_t*>(fp);
    uintptr_t ret = frame[1];
    if (ret == 0) break;
    mp->create_stack[n++] = ret;
    if (frame[0] <= fp) break;
    fp = frame[0];
  }
  mp->create_depth = n;
}

// ---------------------------------------------------------------------------------------
// Rendering.

namespace {

constexpr int kPidOut = 1;
constexpr int64_t kTidOther = 100000;
constexpr int64_t kTidMBase = 200000;

std::string_view stop_name(uint8_t why) {
  switch (static_cast<trace_stop>(why)) {
    case trace_stop::park: return "park";
    case trace_stop::yield: return "yield";
    case trace_stop::preempt: return "preempt";
    case trace_stop::exit: return "exit";
    case trace_stop::blocking: return "blocking";
  }
  return "unknown";
}

std::string_view stop_instant(uint8_t why) {
  switch (static_cast<trace_stop>(why)) {
    case trace_stop::park: return "GoPark";
    case trace_stop::yield: return "GoYield";
    case trace_stop::preempt: return "GoPreempt";
    case trace_stop::exit: return "GoDestroy";
    case trace_stop::blocking: return "GoSysCall";
  }
  return "GoStop";
}

std::string_view waker_name(uint8_t by) {
  switch (static_cast<trace_waker>(by)) {
    case trace_waker::goroutine: return "goroutine";
    case trace_waker::timer: return "timer";
    case trace_waker::netpoll: return "netpoll";
    case trace_waker::thread: return "thread";
  }
  return "unknown";
}

void put_str(std::string& out, std::string_view s) {
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  out += '"';
}

// Microseconds with nanosecond digits: exact, and what the format expects.
void put_us(std::string& out, int64_t ns) {
  if (ns < 0) ns = 0;
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%lld.%03lld", static_cast<long long>(ns / 1000),
                        static_cast<long long>(ns % 1000));
  out.append(buf, static_cast<std::size_t>(n));
}

struct out_rec {
  int64_t ts;
  int depth;  // proc 0, goroutine 1, instants 2: parents first at equal times
  std::string json;
};

struct track {
  enum kind_t { kP, kM, kOther } kind;
  int64_t id;
  std::vector<const trace_ev*> evs;
  std::vector<out_rec> out;
  int64_t tid() const { return kind == kP ? id + 1 : kind == kM ? kTidMBase + id : kTidOther; }
  std::string name() const {
    if (kind == kP) return "P " + std::to_string(id);
    if (kind == kM) return "M " + std::to_string(id) + " blocking";
    return "threads without a P";
  }
};


class renderer {
 public:
  explicit renderer(const render_input& in) : in_(in) {}

  std::string run() {
    for (const trace_ev& e : in_.evs) route(e);
    for (auto& [key, t] : tracks_) {
      std::stable_sort(t.evs.begin(), t.evs.end(),
                       [](const trace_ev* a, const trace_ev* b) { return a->ts < b->ts; });
      if (t.kind == track::kP)
        render_p(t);
      else
        render_m(t);
    }
    if (in_.dropped) {
      track& t = get(track::kOther, 0);
      std::string args = "\"dropped\":" + std::to_string(in_.dropped);
      t.out.push_back({in_.end_ns, 2, instant(t, "trace dropped events", "trace", in_.end_ns, args)});
    }
    return assemble();
  }

 private:
  const render_input& in_;
  std::map<std::pair<int, int64_t>, track> tracks_;
  std::unordered_map<uintptr_t, std::string> sites_;

  track& get(track::kind_t k, int64_t id) {
    auto [it, fresh] = tracks_.try_emplace({k, id});
    if (fresh) {
      it->second.kind = k;
      it->second.id = id;
    }
    return it->second;
  }

  track& instant_track(const trace_ev& e) {
    if (e.p >= 0) return get(track::kP, e.p);
    if (e.m >= 0) return get(track::kM, e.m);
    return get(track::kOther, 0);
  }

  void route(const trace_ev& e) {
    switch (e.type) {
      case ev_type::go_create:
      case ev_type::go_unpark:
        instant_track(e).evs.push_back(&e);
        break;
      case ev_type::go_start:
      case ev_type::proc_start:
      case ev_type::proc_stop:
        if (e.p >= 0) get(track::kP, e.p).evs.push_back(&e);
        break;
      case ev_type::go_stop:
        if (e.p >= 0) get(track::kP, e.p).evs.push_back(&e);
        if (static_cast<trace_stop>(e.aux) == trace_stop::blocking && e.m >= 0)
          get(track::kM, e.m).evs.push_back(&e);
        break;
      case ev_type::syscall_exit:
        if (e.m >= 0) get(track::kM, e.m).evs.push_back(&e);
        break;
    }
  }

  const std::string& site(uintptr_t pc) {
    auto [it, fresh] = sites_.try_emplace(pc);
    if (!fresh || pc == 0) return it->second;
    // go() is inlined into its caller: skip the runtime's inlined frames.
    std::vector<symbol_info> frames = symbolize_frames(pc - 1);
    if (frames.empty()) return it->second = "?";
    std::size_t i = 0;
    while (i + 1 < frames.size() && (frames[i].function.rfind("weft::go<", 0) == 0 ||
                                     frames[i].function.rfind("weft::detail::", 0) == 0))
      i++;
    const symbol_info& si = frames[i];
    std::string s = si.function;
    // A lambda inlined into the entry plumbing: name the callable type.
    const std::string_view plumbing = "weft::detail::task_impl<";
    if (std::size_t end = s.rfind(">::invoke"); s.rfind(plumbing, 0) == 0 && end != std::string::npos)
      s = s.substr(plumbing.size(), end - plumbing.size());
    if (!si.file.empty()) s += " " + si.file + (si.line ? ":" + std::to_string(si.line) : "");
    return it->second = std::move(s);
  }

  std::string head(const track& t, std::string_view name, std::string_view cat, char ph, int64_t ts) {
    std::string s = "{\"name\":";
    put_str(s, name);
    s += ",\"cat\":";
    put_str(s, cat);
    s += ",\"ph\":\"";
    s += ph;
    s += "\",\"pid\":" + std::to_string(kPidOut) + ",\"tid\":" + std::to_string(t.tid()) + ",\"ts\":";
    put_us(s, ts - in_.start_ns);
    return s;
  }

  std::string slice(const track& t, std::string_view name, std::string_view cat, int64_t ts, int64_t end,
                    const std::string& args) {
    std::string s = head(t, name, cat, 'X', ts);
    s += ",\"dur\":";
    put_us(s, end - ts);
    s += ",\"args\":{" + args + "}}";
    return s;
  }

  std::string instant(const track& t, std::string_view name, std::string_view cat, int64_t ts,
                      const std::string& args) {
    std::string s = head(t, name, cat, 'i', ts);
    s += ",\"s\":\"t\",\"args\":{" + args + "}}";
    return s;
  }

  // Instants shared by every kind of track.
  void render_instant(track& t, const trace_ev& e) {
    std::string args = "\"g\":" + std::to_string(e.g);
    if (e.type == ev_type::go_create) {
      args += ",\"parent\":" + std::to_string(e.a1) + ",\"site\":";
      put_str(args, site(e.a2));
      t.out.push_back({e.ts, 2, instant(t, "GoCreate", "goroutine", e.ts, args)});
    } else if (e.type == ev_type::go_unpark) {
      args += ",\"by\":";
      put_str(args, waker_name(e.aux));
      if (static_cast<trace_waker>(e.aux) == trace_waker::goroutine) args += ",\"by_g\":" + std::to_string(e.a1);
      t.out.push_back({e.ts, 2, instant(t, "GoUnblock", "goroutine", e.ts, args)});
    }
  }

  void render_p(track& t) {
    bool proc_open = false, g_open = false;
    int64_t proc_ts = 0, g_ts = 0, last_close = in_.start_ns;
    int32_t proc_m = -1, g_m = -1;
    uint64_t g_id = 0;

    auto close_g = [&](int64_t ts, std::string_view end, const trace_ev* stop) {
      std::string args = "\"g\":" + std::to_string(g_id) + ",\"m\":" + std::to_string(g_m) + ",\"end\":";
      put_str(args, end);
      if (stop && static_cast<trace_stop>(stop->aux) == trace_stop::park) {
        args += ",\"reason\":";
        put_str(args, to_string(static_cast<wait_reason>(stop->a1)));
      }
      t.out.push_back({g_ts, 1, slice(t, "G" + std::to_string(g_id), "goroutine", g_ts, ts, args)});
      g_open = false;
      last_close = ts;
    };
    auto close_proc = [&](int64_t ts) {
      if (g_open) close_g(ts, "proc stop", nullptr);
      std::string name = proc_m >= 0 ? "M " + std::to_string(proc_m) : std::string("proc");
      t.out.push_back({proc_ts, 0, slice(t, name, "proc", proc_ts, ts, "\"m\":" + std::to_string(proc_m))});
      proc_open = false;
      last_close = ts;
    };
    auto open_proc = [&](int64_t ts, int32_t m) {
      proc_open = true;
      proc_ts = ts;
      proc_m = m;
    };
    // A goroutine runs inside a proc slice of the M running it.
    auto ensure_proc = [&](int64_t ts, int32_t m) {
      if (!proc_open) {
        open_proc(last_close, m);
      } else if (m >= 0 && proc_m != m) {
        close_proc(ts);
        open_proc(ts, m);
      }
    };

    for (const trace_ev* e : t.evs) {
      switch (e->type) {
        case ev_type::proc_start:
          if (proc_open) close_proc(e->ts);
          open_proc(e->ts, e->m);
          break;
        case ev_type::proc_stop:
          if (!proc_open) open_proc(last_close, e->m);
          close_proc(e->ts);
          break;
        case ev_type::go_start:
          if (g_open) close_g(e->ts, "unknown", nullptr);
          ensure_proc(e->ts, e->m);
          g_open = true;
          g_ts = e->ts;
          g_id = e->g;
          g_m = e->m;
          break;
        case ev_type::go_stop: {
          if (g_open && g_id != e->g) close_g(e->ts, "unknown", nullptr);
          if (!g_open) {  // it was running before the trace started, or its start was dropped
            ensure_proc(e->ts, e->m);
            g_open = true;
            g_ts = std::max(last_close, proc_ts);
            g_id = e->g;
            g_m = e->m;
          }
          close_g(e->ts, stop_name(e->aux), e);
          std::string args = "\"g\":" + std::to_string(e->g);
          if (static_cast<trace_stop>(e->aux) == trace_stop::park) {
            args += ",\"reason\":";
            put_str(args, to_string(static_cast<wait_reason>(e->a1)));
          }
          t.out.push_back({e->ts, 2, instant(t, stop_instant(e->aux), "goroutine", e->ts, args)});
          break;
        }
        case ev_type::go_create:
        case ev_type::go_unpark:
          render_instant(t, *e);
          break;
        case ev_type::syscall_exit:
          break;
      }
    }
    if (g_open) close_g(in_.end_ns, "running", nullptr);
    if (proc_open) close_proc(in_.end_ns);
  }

  // M tracks (blocking calls) and the track of threads without an M.
  void render_m(track& t) {
    bool open = false;
    int64_t open_ts = 0, last_close = in_.start_ns;
    uint64_t open_g = 0;
    auto close = [&](int64_t ts) {
      std::string args = "\"g\":" + std::to_string(open_g) + ",\"m\":" + std::to_string(t.id);
      t.out.push_back({open_ts, 0, slice(t, "blocking call", "syscall", open_ts, ts, args)});
      open = false;
      last_close = ts;
    };
    for (const trace_ev* e : t.evs) {
      switch (e->type) {
        case ev_type::go_stop:  // a blocking call starts
          if (open) close(e->ts);
          open = true;
          open_ts = e->ts;
          open_g = e->g;
          break;
        case ev_type::syscall_exit:
          if (!open) {
            open = true;
            open_ts = last_close;
            open_g = e->g;
          }
          close(e->ts);
          break;
        case ev_type::go_create:
        case ev_type::go_unpark:
          render_instant(t, *e);
          break;
        default:
          break;
      }
    }
    if (open) close(in_.end_ns);
  }

  std::string assemble() {
    std::size_t n = 0;
    for (auto& [key, t] : tracks_) n += t.out.size();
    std::string s;
    s.reserve(256 + n * 160);
    s += "{\"displayTimeUnit\":\"ns\",\"otherData\":{\"clock\":\"CLOCK_MONOTONIC\",\"start_ns\":";
    s += std::to_string(in_.start_ns) + ",\"recorded_events\":" + std::to_string(in_.evs.size()) +
         ",\"dropped_events\":" + std::to_string(in_.dropped) +
         ",\"max_events\":" + std::to_string(in_.max_events) + "},\"traceEvents\":[\n";
    s += "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":" + std::to_string(kPidOut) +
         ",\"tid\":0,\"args\":{\"name\":\"weft\"}}";
    int sort = 0;
    for (auto& [key, t] : tracks_) {
      std::string tid = std::to_string(t.tid());
      s += ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":" + std::to_string(kPidOut) + ",\"tid\":" + tid +
           ",\"args\":{\"name\":";
      put_str(s, t.name());
      s += "}},\n{\"name\":\"thread_sort_index\",\"ph\":\"M\",\"pid\":" + std::to_string(kPidOut) +
           ",\"tid\":" + tid + ",\"args\":{\"sort_index\":" + std::to_string(sort++) + "}}";
    }
    for (auto& [key, t] : tracks_) {
      std::stable_sort(t.out.begin(), t.out.end(), [](const out_rec& a, const out_rec& b) {
        return a.ts != b.ts ? a.ts < b.ts : a.depth < b.depth;
      });
      for (const out_rec& r : t.out) {
        s += ",\n";
        s += r.json;
      }
    }
    s += "\n]}\n";
    return s;
  }
};

}  // namespace

std::string render_trace(const render_input& in) { return renderer(in).run(); }

}  // namespace weft::detail

namespace weft {

using namespace detail;

std::error_code start_trace(const trace_options& opts) {
  int expect = kIdle;
  if (!g_session.state.compare_exchange_strong(expect, kStarting, std::memory_order_acq_rel))
    return std::make_error_code(std::errc::device_or_resource_busy);
  uint64_t max = opts.max_events ? opts.max_events : trace_options{}.max_events;
  max = std::min<uint64_t>(max, uint64_t{1} << 26);
  uint32_t per_chunk = static_cast<uint32_t>(std::min<uint64_t>(max, 256));
  uint32_t nchunks = static_cast<uint32_t>(max / per_chunk);
  std::size_t chunk_bytes = sizeof(trace_chunk) + std::size_t{per_chunk} * sizeof(trace_ev);
  std::size_t bytes = std::size_t{nchunks} * chunk_bytes;
  void* pool = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (pool == MAP_FAILED) {
    g_session.state.store(kIdle, std::memory_order_release);
    return std::make_error_code(std::errc::not_enough_memory);
  }
  if (++g_last_gen == 0) ++g_last_gen;
  g_session.gen = g_last_gen;
  g_session.pool = static_cast<char*>(pool);
  g_session.pool_bytes = bytes;
  g_session.chunk_bytes = chunk_bytes;
  g_session.chunk_events = per_chunk;
  g_session.nchunks = nchunks;
  g_session.max_events = uint64_t{nchunks} * per_chunk;
  g_session.next_chunk.store(0, std::memory_order_relaxed);
  g_session.full.store(false, std::memory_order_relaxed);
  g_session.start_ns = nanotime();
  g_trace_on.store(g_session.gen, std::memory_order_seq_cst);
  g_session.state.store(kRecording, std::memory_order_release);
  return {};
}

bool trace_running() { return g_session.state.load(std::memory_order_acquire) == kRecording; }

std::string stop_trace() {
  int expect = kRecording;
  if (!g_session.state.compare_exchange_strong(expect, kStopping, std::memory_order_acq_rel)) return {};
  const uint32_t gen = g_session.gen;
  g_trace_on.store(0, std::memory_order_seq_cst);
  render_input in;
  {
    std::lock_guard<std::mutex> l(g_bufs_mu);
    std::size_t n = 0;
    for (trace_buf* b = g_bufs; b; b = b->all_next) {
      if (b->gen != gen) continue;
      while (b->busy.load(std::memory_order_seq_cst)) sched_yield();  // a writer mid-event
      for (trace_chunk* c = b->head; c; c = c->next) n += c->n;
    }
    in.evs.reserve(n);
    for (trace_buf* b = g_bufs; b; b = b->all_next) {
      if (b->gen != gen) continue;
      for (trace_chunk* c = b->head; c; c = c->next) in.evs.insert(in.evs.end(), c->events(), c->events() + c->n);
      in.dropped += b->dropped;
    }
  }
  in.start_ns = g_session.start_ns;
  in.end_ns = nanotime();
  in.max_events = g_session.max_events;
  munmap(g_session.pool, g_session.pool_bytes);
  g_session.pool = nullptr;
  g_session.state.store(kIdle, std::memory_order_release);

  // Symbolization recurses deeper than a goroutine stack allows: on the thread stack.
  return blocking([&] { return render_trace(in); });
}

std::array<int64_t, kSchedLatencyBuckets> sched_latency_bounds_ns() {
  std::array<int64_t, kSchedLatencyBuckets> b{};
  for (int k = 0; k + 1 < kSchedLatencyBuckets; k++) b[k] = int64_t{1000} << k;
  b[kSchedLatencyBuckets - 1] = INT64_MAX;
  return b;
}

sched_stats read_sched_stats() {
  sched_stats s;
  s.latency.bounds_ns = sched_latency_bounds_ns();
  std::array<uint64_t, kSchedLatencyBuckets> counts{};
  {
    lock_guard l(sched.mu);
    if (!sched.running.load(std::memory_order_acquire) || !sched.allp) return s;
    s.threads = sched.mcount;
    s.idle_threads = sched.nmidle;
    for (m* x : sched.allm)
      if (x->in_blocking.load(std::memory_order_relaxed)) s.blocking_threads++;
    s.spinning_threads = sched.nmspinning.load(std::memory_order_relaxed);
    s.procs = sched.nprocs;
    s.idle_procs = sched.npidle.load(std::memory_order_relaxed);
    s.active_procs_limit = sched.maxactive.load(std::memory_order_relaxed);
    s.procs_limit_lowered = sched.nlimit_lowered.load(std::memory_order_relaxed);
    s.global_runq = sched.runqsize.load(std::memory_order_relaxed);
    s.goroutines = sched.foreign_gcount.load(std::memory_order_relaxed);
    s.goroutines_created = sched.foreign_created.load(std::memory_order_relaxed);
    s.local_runq.resize(static_cast<std::size_t>(sched.nprocs));
    for (int32_t i = 0; i < sched.nprocs; i++) {
      p* pp = &sched.allp[i];
      s.goroutines += pp->gcount.load(std::memory_order_relaxed);
      s.goroutines_created += pp->ncreated.load(std::memory_order_relaxed);
      s.context_switches += pp->nexecuted.load(std::memory_order_relaxed);
      s.direct_switches += pp->ndirect.load(std::memory_order_relaxed);
      uint32_t h = pp->runq_head.load(std::memory_order_acquire);
      uint32_t t = pp->runq_tail.load(std::memory_order_acquire);
      auto n = static_cast<int32_t>(t - h);
      n = std::clamp<int32_t>(n, 0, static_cast<int32_t>(kRunqSize));
      if (pp->runnext.load(std::memory_order_relaxed)) n++;
      s.local_runq[static_cast<std::size_t>(i)] = n;
      for (int k = 0; k < kLatencyBuckets; k++) counts[k] += pp->lat_count[k].load(std::memory_order_relaxed);
      s.latency.sum_ns += pp->lat_sum_ns.load(std::memory_order_relaxed);
    }
  }
  uint64_t run = 0;
  for (int k = 0; k < kSchedLatencyBuckets; k++) s.latency.cumulative[k] = run += counts[k];
  s.latency.count = run;
  return s;
}

profile threadcreate_profile() {
  profile pr;
  pr.sample_types = {{"threadcreate", "count"}};
  pr.period_type = {"threadcreate", "count"};
  pr.period = 1;
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  pr.time_nanos = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  std::vector<std::vector<uintptr_t>> stacks;
  {
    lock_guard l(sched.mu);
    if (sched.running.load(std::memory_order_acquire) && sched.allp) {
      stacks.reserve(sched.allm.size());
      for (m* x : sched.allm) stacks.emplace_back(x->create_stack, x->create_stack + x->create_depth);
    }
  }
  std::map<std::vector<uintptr_t>, int64_t> counts;
  for (auto& st : stacks) counts[std::move(st)]++;
  for (auto& [st, n] : counts) pr.samples.push_back(profile_sample{st, {n}, {}});
  return pr;
}

}  // namespace weft
