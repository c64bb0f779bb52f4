// Goroutine pprof labels; the design is at the top of runtime/labels.h.
//
// g->labels is written only by the goroutine itself (set_goroutine_labels, label_scope),
// by the spawner before the new G is published (start_g), and on g0 after the G stopped
// for good (gdestroy, teardown). It is read by the goroutine and by a SIGPROF handler
// interrupting it on the same thread, so the accesses are atomic (std::atomic_ref) and
// every swap stores the new pointer before it drops the old reference: the handler sees
// either node while the goroutine still owns it.
#include "runtime/labels.h"

#include <algorithm>
#include <map>
#include <mutex>

#include "runtime/internal/sched.h"

namespace weft::detail {

namespace {

std::atomic<int64_t> g_nodes_live{0};

std::atomic_ref<void*> slot(g* gp) {
  return std::atomic_ref<void*>(gp->labels);
}

// Sorts by key; for equal keys the later entry wins.
void normalize(label_set& s) {
  std::stable_sort(s.begin(), s.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  label_set out;
  out.reserve(s.size());
  for (auto& kv : s) {
    if (!out.empty() && out.back().first == kv.first)
      out.back().second = std::move(kv.second);
    else
      out.push_back(std::move(kv));
  }
  s.swap(out);
}

label_ref from_set(label_set s) {
  if (s.empty()) return {};
  normalize(s);
  auto* n = new label_node();
  n->labels = std::move(s);
  g_nodes_live.fetch_add(1, std::memory_order_relaxed);
  return label_ref::adopt(n);
}

// Stores `owned` (a reference the caller gives away) as gp's labels and returns the
// reference gp held before (the caller now owns it).
void* swap_labels(g* gp, void* owned) {
  void* prev = slot(gp).load(std::memory_order_relaxed);
  slot(gp).store(owned, std::memory_order_relaxed);
  // The handler runs on this thread: keep the store before whatever the caller does
  // with prev (release included).
  std::atomic_signal_fence(std::memory_order_seq_cst);
  return prev;
}

}  // namespace

void label_release(void* node) {
  auto* n = static_cast<label_node*>(node);
  if (!n || n->interned) return;
  if (n->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    delete n;
    g_nodes_live.fetch_sub(1, std::memory_order_relaxed);
  }
}

int64_t label_nodes_live() {
  return g_nodes_live.load(std::memory_order_relaxed);
}

const label_set& label_ref::labels() const {
  static const label_set empty;
  return node_ ? node_->labels : empty;
}

label_ref make_label_ref(const label_set& labels) {
  return from_set(labels);
}

label_ref interned_label_ref(const label_set& labels) {
  if (labels.empty()) return {};
  label_set s = labels;
  normalize(s);
  static std::mutex mu;
  static std::map<label_set, label_node*>* table = new std::map<label_set, label_node*>;  // never freed
  std::lock_guard<std::mutex> l(mu);
  auto [it, fresh] = table->try_emplace(s, nullptr);
  if (fresh) {
    it->second = new label_node();
    it->second->labels = std::move(s);
    it->second->interned = true;
  }
  return label_ref::adopt(it->second);
}

label_ref current_label_ref() {
  g* gp = getg();
  if (!gp) return {};
  return label_ref::adopt(
      static_cast<label_node*>(label_acquire(slot(gp).load(std::memory_order_relaxed))));
}

void set_goroutine_labels(const label_ref& r) {
  g* gp = getg();
  if (!gp) return;
  label_release(swap_labels(gp, label_acquire(r.get())));
}

label_scope::label_scope(const label_ref& r) {
  install(static_cast<label_node*>(label_acquire(r.get())));
}

label_scope::label_scope(label_ref&& r) {
  label_node* n = r.get();
  label_acquire(n);
  r = label_ref();  // drops the ref's own reference; ours keeps n alive
  install(n);
}

void label_scope::install(label_node* owned) {
  g* gp = getg();
  if (!gp) {
    label_release(owned);
    return;
  }
  prev_ = swap_labels(gp, owned);
  active_ = true;
}

label_scope::~label_scope() {
  if (!active_) return;
  g* gp = getg();  // re-read: the goroutine may have moved to another thread
  label_release(swap_labels(gp, prev_));
}

label_ref merge_with_current(const label_set& labels) {
  label_ref cur = current_label_ref();
  if (labels.empty()) return cur;
  label_set merged = cur.labels();
  merged.insert(merged.end(), labels.begin(), labels.end());  // later entries win
  return from_set(std::move(merged));
}

}  // namespace weft::detail

namespace weft {

label_set goroutine_labels() {
  return detail::current_label_ref().labels();
}

}  // namespace weft
