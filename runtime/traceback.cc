// Goroutine dumps in Go's traceback format, fatal errors and panics.
//
// A parked goroutine's stack is walked from the frame pointer saved in its fcontext
// record (Boost's x86-64 layout: rbp at +0x30, the return address at +0x38), following
// the rbp chain while it stays inside the goroutine's stack and grows upward. This needs
// frame pointers (the build uses -fno-omit-frame-pointer everywhere); a frame from a
// library built without them is skipped or ends the walk, never read out of bounds.
//
// Walking a stack while its goroutine runs would read garbage, so the dumper and the
// scheduler agree through g::tracing, Dekker-style: the dumper sets it, then reads the
// status; execute() publishes `running`, then waits while tracing is set. Either the
// dumper sees `running` and skips the stack, or the goroutine waits for the walk. The
// StoreLoad ordering on the dumper's side is a membarrier(PRIVATE_EXPEDITED), which
// forces a full barrier on every running thread, so the scheduler's side (taken on every
// switch) needs none; without membarrier both sides use seq_cst operations. The walk only
// copies return addresses; symbolization happens after every flag is clear.
#include <cxxabi.h>
#include <unistd.h>
#include <unwind.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <ostream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/internal/sched.h"
#include "runtime/labels.h"
#include "runtime/profiling.h"
#include "runtime/runtime.h"
#include "runtime/symbolize.h"

namespace weft::detail {
namespace {

constexpr int kMaxFrames = 64;

struct g_snapshot {
  uint64_t id;
  gstatus status;
  wait_reason reason;
  int64_t wait_since;
  uint64_t parent_id;
  uintptr_t create_pc;
  bool walked;
  bool current;
  std::vector<uintptr_t> pcs;  // return addresses, innermost first
  void* labels = nullptr;      // a reference to the pprof labels (walked or current only)
};

// Follows the rbp chain within [lo, hi).
void walk_frames(uintptr_t pc, uintptr_t fp, uintptr_t lo, uintptr_t hi, std::vector<uintptr_t>& out) {
  if (pc) out.push_back(pc);
  while (out.size() < kMaxFrames) {
    if (fp < lo || fp + 16 > hi || (fp & 7) != 0) break;
    auto* frame = reinterpret_cast<const uintptr_t*>(fp);
    uintptr_t next = frame[0];
    uintptr_t ret = frame[1];
    if (ret == 0) break;
    out.push_back(ret);
    if (next <= fp) break;
    fp = next;
  }
}

void walk_parked(const g* gp, std::vector<uintptr_t>& out) {
  auto* ctx = static_cast<const uintptr_t*>(gp->ctx);
  auto lo = reinterpret_cast<uintptr_t>(gp->stack_lo);
  auto hi = reinterpret_cast<uintptr_t>(gp->stack_hi);
  auto c = reinterpret_cast<uintptr_t>(ctx);
  if (!ctx || c < lo || c + 0x40 > hi) return;
  walk_frames(ctx[7], ctx[6], lo, hi, out);
  // The innermost frame is the switch itself (mcall): not interesting.
  if (!out.empty()) out.erase(out.begin());
}

void walk_current(const g* gp, std::vector<uintptr_t>& out) {
  auto fp = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
  walk_frames(0, fp, reinterpret_cast<uintptr_t>(gp->stack_lo), reinterpret_cast<uintptr_t>(gp->stack_hi), out);
}

const char* status_text(gstatus s) {
  switch (s) {
    case gstatus::runnable: return "runnable";
    case gstatus::running: return "running";
    case gstatus::syscall: return "syscall";
    case gstatus::waiting: return "waiting";
    default: return "dead";
  }
}

void append_location(std::string& out, const symbol_info& si, uintptr_t pc, bool offset) {
  out += "\t";
  out += si.file.empty() ? (si.module.empty() ? "?" : si.module) : si.file;
  if (si.line) out += ":" + std::to_string(si.line);
  if (offset && si.entry) {
    char buf[32];
    std::snprintf(buf, sizeof buf, " +0x%llx", static_cast<unsigned long long>(pc - si.entry));
    out += buf;
  }
  out += "\n";
}

// Runtime plumbing between g_entry and the goroutine's function; not shown.
bool is_plumbing(const std::string& fn) { return fn.rfind("weft::detail::task_impl<", 0) == 0; }

// One physical frame, expanded into its inlined calls (Go prints those as frames too,
// with "(...)" and no offset).
void append_frame(std::string& out, uintptr_t ret, bool is_return) {
  uintptr_t pc = is_return ? ret - 1 : ret;
  std::vector<symbol_info> frames = symbolize_frames(pc);
  for (std::size_t i = 0; i < frames.size(); i++) {
    const symbol_info& si = frames[i];
    if (is_plumbing(si.function)) continue;
    bool outermost = i + 1 == frames.size();
    out += si.function;
    if (!outermost || si.function.find('(') == std::string::npos) out += "(...)";
    out += "\n";
    append_location(out, si, ret, outermost);
  }
}

bool is_goroutine_entry(uintptr_t ret) {
  symbol_info si = symbolize(ret - 1);
  return si.entry != 0 && si.entry == g_entry_address();
}

// "created by F in goroutine N": create_pc is go()'s return address, so F is the
// function holding the go() call (innermost, when it was itself inlined) and the line is
// the call's.
void append_created_by(std::string& out, uintptr_t create_pc, uint64_t parent_id) {
  if (!create_pc) return;
  std::vector<symbol_info> frames = symbolize_frames(create_pc - 1);
  std::size_t i = 0;
  while (i + 1 < frames.size() && (frames[i].function.rfind("weft::go<", 0) == 0 ||
                                   frames[i].function.rfind("weft::detail::", 0) == 0))
    i++;
  const symbol_info& si = frames[i];
  std::string fn = si.function;
  // Not inlined into the entry plumbing? Name the goroutine's callable type instead.
  const std::string plumbing = "weft::detail::task_impl<";
  if (fn.rfind(plumbing, 0) == 0 && fn.size() > plumbing.size() + 10)
    fn = fn.substr(plumbing.size(), fn.rfind(">::invoke") - plumbing.size());
  out += "created by " + fn;
  if (parent_id) out += " in goroutine " + std::to_string(parent_id);
  out += "\n";
  append_location(out, si, create_pc, i + 1 == frames.size());
}

void format(std::string& out, const g_snapshot& s) {
  out += "goroutine " + std::to_string(s.id) + " [";
  if (s.status == gstatus::waiting)
    out += to_string(s.reason);
  else
    out += status_text(s.status);
  if (s.status == gstatus::waiting && s.wait_since > 0) {
    int64_t mins = (nanotime_coarse() - s.wait_since) / 60'000'000'000;
    if (mins >= 1) out += ", " + std::to_string(mins) + (mins == 1 ? " minute" : " minutes");
  }
  out += "]:\n";
  if (!s.walked) {
    out += "\tgoroutine running on other thread; stack unavailable\n";
  } else {
    for (uintptr_t pc : s.pcs) {
      if (is_goroutine_entry(pc)) break;
      append_frame(out, pc, true);
    }
  }
  append_created_by(out, s.create_pc, s.parent_id);
}

// Takes snapshots of goroutines. lock_tries >= 0: give up on the registry lock after
// that many tries (fatal paths may run while it is held).
bool snapshot_all(std::vector<g_snapshot>& out, g* self, int lock_tries, bool want_labels = false) {
  int tries = 0;
  while (!allg_lock.try_acquire()) {
    if (lock_tries >= 0 && ++tries > lock_tries) return false;
    usleep(100);
  }
  // Raise every tracing flag first, then one fence for all of them (see the top).
  for (g* x = allg_head; x; x = x->all_next)
    if (x != self) x->tracing.store(true, std::memory_order_seq_cst);
  if (asymmetric_fence_available()) asymmetric_fence();
  for (g* x = allg_head; x; x = x->all_next) {
    g_snapshot s{};
    // A live G may exit and be reused by start_g meanwhile, which rewrites these three
    // while we read them; a stale or fresh value is fine, a torn one is not.
    s.id = std::atomic_ref<uint64_t>(x->id).load(std::memory_order_relaxed);
    s.current = x == self;
    s.parent_id = std::atomic_ref<uint64_t>(x->parent_id).load(std::memory_order_relaxed);
    s.create_pc = std::atomic_ref<uintptr_t>(x->create_pc).load(std::memory_order_relaxed);
    if (x == self) {
      s.status = gstatus::running;
      s.walked = true;
      if (want_labels) s.labels = label_acquire(std::atomic_ref<void*>(x->labels).load(std::memory_order_relaxed));
      auto here = reinterpret_cast<char*>(__builtin_frame_address(0));
      if (here >= x->stack_lo && here < x->stack_hi)
        walk_current(x, s.pcs);
      else
        walk_parked(x, s.pcs);  // we run on g0 for it (blocking()): its context is saved
      out.push_back(std::move(s));
      continue;
    }
    s.status = x->status.load(std::memory_order_seq_cst);
    if (s.status != gstatus::dead && s.status != gstatus::idle) {
      // A parked goroutine's reason and stack are stable (`tracing` keeps it parked);
      // a running one is writing them.
      if (s.status == gstatus::waiting) {
        s.reason = x->reason;
        s.wait_since = x->wait_since.load(std::memory_order_relaxed);
      }
      s.walked = s.status != gstatus::running;
      if (s.walked) {
        walk_parked(x, s.pcs);
        // Parked or queued (and kept so by `tracing`): its labels cannot change under
        // us. One in a blocking() call is still running its function, which may set
        // labels: it is counted without them.
        if (want_labels && s.status != gstatus::syscall)
          s.labels = label_acquire(std::atomic_ref<void*>(x->labels).load(std::memory_order_relaxed));
      }
    }
    x->tracing.store(false, std::memory_order_release);
    if (s.status != gstatus::dead && s.status != gstatus::idle) out.push_back(std::move(s));
  }
  allg_lock.release();
  std::sort(out.begin(), out.end(), [](const g_snapshot& a, const g_snapshot& b) {
    if (a.current != b.current) return a.current;
    return a.id < b.id;
  });
  return true;
}

// Symbolization (libdw) needs far more stack than a goroutine (or sysmon) has.
// Snapshots are taken where the caller runs (they only copy PCs); rendering runs on a
// big thread stack.
template <class F>
void on_thread_stack(F&& f) {
  // An M's g0 runs on an 8 MiB thread stack; anywhere else (a goroutine, sysmon, a
  // foreign thread) a helper thread with a default-sized stack does the work.
  m* mp = getm();
  auto here = reinterpret_cast<const char*>(__builtin_frame_address(0));
  auto lo = mp ? static_cast<const char*>(mp->g0_lo) : nullptr;
  bool on_g0 = mp && here >= lo && here < lo + mp->g0_size;
  if (on_g0) {
    f();
  } else {
    std::thread t(std::forward<F>(f));
    t.join();
  }
}

std::string render(const std::vector<g_snapshot>& snaps, bool skip_current) {
  std::string out;
  on_thread_stack([&] {
    bool sep = false;
    for (const auto& s : snaps) {
      if (skip_current && s.current) continue;
      if (sep) out += "\n";
      format(out, s);
      sep = true;
    }
  });
  return out;
}

[[noreturn]] void die() {
  std::fflush(stdout);
  _exit(2);
}

}  // namespace

void write_stderr(const char* s, std::size_t n) {
  while (n > 0) {
    ssize_t w = ::write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

void write_goroutine_dump(std::string& out, g* first, bool all) {
  std::vector<g_snapshot> snaps;
  if (!snapshot_all(snaps, first, all ? -1 : 2000)) {
    out += "(goroutine registry busy; dump unavailable)\n";
    return;
  }
  out += render(snaps, false);
}

void fatal(const char* msg, bool dump) {
  std::string out = "fatal error: ";
  out += msg;
  out += "\n";
  if (dump) {
    out += "\n";
    std::vector<g_snapshot> snaps;
    if (snapshot_all(snaps, getg(), 2000)) out += render(snaps, false);
  }
  write_stderr(out.data(), out.size());
  die();
}

void throw_(const char* msg) {
  std::string m = "runtime: ";
  m += msg;
  fatal(m.c_str(), true);
}

namespace {

struct unwind_state {
  std::vector<uintptr_t>* pcs;
};

_Unwind_Reason_Code unwind_cb(struct _Unwind_Context* ctx, void* arg) {
  auto* st = static_cast<unwind_state*>(arg);
  uintptr_t pc = _Unwind_GetIP(ctx);
  if (pc == 0) return _URC_END_OF_STACK;
  st->pcs->push_back(pc);
  return st->pcs->size() >= 128 ? _URC_END_OF_STACK : _URC_NO_REASON;
}

// std::terminate handler: an exception escaped a goroutine (or std::terminate was
// called). The throwing frames are still on the stack: no handler was found, so nothing
// was unwound.
[[noreturn]] void on_terminate() {
  std::string what = "std::terminate called";
  if (std::exception_ptr ep = std::current_exception()) {
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
      what = "unknown exception";
      if (auto* t = abi::__cxa_current_exception_type()) {
        int status = 0;
        char* dem = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
        what = std::string("exception of type ") + (status == 0 && dem ? dem : t->name());
        std::free(dem);
      }
    }
  }
  std::vector<uintptr_t> pcs;
  unwind_state st{&pcs};
  _Unwind_Backtrace(unwind_cb, &st);
  g* gp = getg();
  std::vector<g_snapshot> snaps;
  bool have_snaps = gp && snapshot_all(snaps, gp, 2000);
  std::string out = "panic: " + what + "\n\n";
  on_thread_stack([&] {
    // Start at the frame that threw.
    std::size_t start = 0;
    for (std::size_t i = 0; i < pcs.size(); i++) {
      symbol_info si = symbolize(pcs[i] - 1);
      if (si.mangled.find("__cxa_throw") != std::string::npos ||
          si.mangled.find("__cxa_rethrow") != std::string::npos ||
          si.mangled.find("rethrow_exception") != std::string::npos)
        start = i + 1;
    }
    out += gp ? "goroutine " + std::to_string(gp->id) + " [running]:\n" : "thread [running]:\n";
    for (std::size_t i = start; i < pcs.size(); i++) {
      if (gp && is_goroutine_entry(pcs[i])) break;
      append_frame(out, pcs[i], true);
    }
    if (gp) append_created_by(out, gp->create_pc, gp->parent_id);
  });
  // Then every other goroutine, as GOTRACEBACK=all would.
  if (have_snaps) {
    std::string rest = render(snaps, true);
    if (!rest.empty()) out += "\n" + rest;
  }
  write_stderr(out.data(), out.size());
  die();
}

}  // namespace

void install_panic_handler() { std::set_terminate(on_terminate); }

}  // namespace weft::detail

namespace weft {

std::string dump_goroutines() {
  std::string out;
  detail::write_goroutine_dump(out, detail::getg(), true);
  return out;
}


void dump_goroutines(std::ostream& out) { out << dump_goroutines(); }

namespace detail {
profile goroutine_profile_here() {
  profile p;
  p.sample_types = {{"goroutine", "count"}};
  p.period_type = {"goroutine", "count"};
  p.period = 1;
  p.time_nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch()).count();
  std::vector<detail::g_snapshot> snaps;
  if (!detail::snapshot_all(snaps, detail::getg(), -1, /*want_labels=*/true)) return p;
  // One sample per distinct stack (the encoder and the text writer group them further).
  std::map<std::pair<std::vector<uintptr_t>, label_set>, int64_t> counts;
  std::unordered_map<uintptr_t, bool> entry_frame;  // pc -> is the goroutine's entry plumbing
  for (auto& s : snaps) {
    std::vector<uintptr_t> stack = std::move(s.pcs);
    // As in the dump: the stack ends below the entry plumbing (g_entry, make_fcontext);
    // where it was started (go()'s return address) stands in for it, as Go's profiles
    // end in the creating function.
    for (std::size_t i = 0; i < stack.size(); i++) {
      auto [it, fresh] = entry_frame.try_emplace(stack[i]);
      if (fresh) it->second = detail::is_goroutine_entry(stack[i]);
      if (it->second) {
        stack.resize(i);
        break;
      }
    }
    if (s.create_pc) stack.push_back(s.create_pc);
    label_set labels;
    if (s.labels) {
      labels = static_cast<detail::label_node*>(s.labels)->labels;
      detail::label_release(s.labels);
      s.labels = nullptr;
    }
    counts[{std::move(stack), std::move(labels)}]++;
  }
  for (auto& [key, n] : counts) {
    profile_sample smp;
    smp.stack = key.first;
    smp.values = {n};
    for (const auto& [k, v] : key.second) {
      profile_label l;
      l.key = k;
      l.str = v;
      smp.labels.push_back(std::move(l));
    }
    p.samples.push_back(std::move(smp));
  }
  return p;
}
}  // namespace detail

profile goroutine_profile() {
  // Symbolizes (to find the entry frames): on the thread stack.
  return blocking([] { return detail::goroutine_profile_here(); });
}

}  // namespace weft
