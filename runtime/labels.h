// Goroutine pprof labels (Go's runtime/pprof Do, Labels, SetGoroutineLabels).
//
//   weft::pprof_do({{"route", "/api"}}, [&] { handle(req); });
//
// A goroutine's labels are an immutable, reference-counted node in g->labels (null: no
// labels). Changing them builds a new node (or reuses one made earlier) and swaps the
// pointer; nothing ever mutates a node that a goroutine has published. That is what lets
// the CPU profiler's SIGPROF handler, which interrupts the goroutine on its own thread,
// take a reference with a single atomic increment: the interrupted goroutine holds a
// reference to its current node, so the node is alive while the handler looks at it,
// and the goroutine only drops its reference after it has stored the new pointer.
// The handler never allocates and never releases (the last release deletes the node,
// and that happens on ordinary threads: the goroutine's, the profile collector's).
//
// Goroutines started with weft::go inherit the spawner's node at spawn time (one
// increment); the reference is dropped when the goroutine ends. Labels of code outside
// any goroutine (a plain thread) are always empty, and setting them there is a no-op.
//
// The node path for hot code (an HTTP server's per-route labels): make an interned
// label_ref once, install it per request with label_scope. That costs no allocation and
// no atomic read-modify-write; pprof_do allocates one node per call (it merges over the
// current labels).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace weft {

using label_set = std::vector<std::pair<std::string, std::string>>;

namespace detail {

struct label_node {
  std::atomic<int64_t> refs{1};
  label_set labels;  // sorted by key, keys unique; never changed after creation
  bool interned = false;  // made by interned_label_ref: not counted, never freed
};

// Reference counting on g->labels values (null is a valid, empty node). acquire is
// async-signal-safe (one atomic increment); release may delete the node.
inline void* label_acquire(void* node) {
  auto* n = static_cast<label_node*>(node);
  if (n && !n->interned) n->refs.fetch_add(1, std::memory_order_relaxed);
  return node;
}
void label_release(void* node);

// An owning handle on a label node (null: no labels). Copying adds a reference.
class label_ref {
 public:
  label_ref() = default;
  label_ref(const label_ref& o) : node_(static_cast<label_node*>(label_acquire(o.node_))) {}
  label_ref(label_ref&& o) noexcept : node_(std::exchange(o.node_, nullptr)) {}
  label_ref& operator=(label_ref o) noexcept {
    std::swap(node_, o.node_);
    return *this;
  }
  ~label_ref() { label_release(node_); }

  // Adopts a reference the caller already owns.
  static label_ref adopt(label_node* n) {
    label_ref r;
    r.node_ = n;
    return r;
  }
  label_node* get() const { return node_; }
  const label_set& labels() const;  // empty set for a null ref
  int64_t use_count() const { return node_ ? node_->refs.load(std::memory_order_relaxed) : 0; }
  explicit operator bool() const { return node_ != nullptr; }

 private:
  label_node* node_ = nullptr;
};

// A node holding `labels` sorted by key; for a repeated key the last value wins.
// An empty set gives a null ref.
label_ref make_label_ref(const label_set& labels);

// The one node for `labels`, shared by every caller asking for the same set and never
// freed (a process-wide table): its references are not counted, so installing it costs
// no atomic read-modify-write on a line that every core would fight over. For label
// sets installed on a hot path from a small, fixed vocabulary (an HTTP route pattern).
label_ref interned_label_ref(const label_set& labels);

// The calling goroutine's current node (a new reference; null outside a goroutine).
label_ref current_label_ref();

// Replaces the calling goroutine's labels with r (Go's SetGoroutineLabels). No
// allocation. No-op outside a goroutine.
void set_goroutine_labels(const label_ref& r);

// Installs r as the calling goroutine's labels for the guard's lifetime, then restores
// the previous ones (whatever the body set meanwhile is dropped). No allocation. Must be
// destroyed on the goroutine that created it.
class label_scope {
 public:
  explicit label_scope(const label_ref& r);
  explicit label_scope(label_ref&& r);
  ~label_scope();
  label_scope(const label_scope&) = delete;
  label_scope& operator=(const label_scope&) = delete;

 private:
  void install(label_node* owned);
  void* prev_ = nullptr;  // the reference the goroutine held before us
  bool active_ = false;
};

// labels merged over the calling goroutine's current ones (same key: labels wins).
label_ref merge_with_current(const label_set& labels);

// Label nodes alive in the process (tests: the install paths create none, and every
// node is freed once its last goroutine, scope and profile sample let go of it).
int64_t label_nodes_live();

}  // namespace detail

// Runs fn with `labels` merged over the calling goroutine's labels (a key already present
// takes the new value); goroutines fn spawns inherit them. The previous labels are
// restored when fn returns or throws.
template <class F>
void pprof_do(const label_set& labels, F&& fn) {
  detail::label_scope scope(detail::merge_with_current(labels));
  std::forward<F>(fn)();
}

// The calling goroutine's labels, sorted by key (empty outside a goroutine).
label_set goroutine_labels();

}  // namespace weft
