// context: Go's cancelCtx / timerCtx / valueCtx, as one node type.
//
// Every node has a parent (strong reference). A cancelable node is linked into its
// nearest cancelable ancestor's children list, which holds a strong reference to it;
// the link is cut when either side is cancelled. A deadline node's runtime timer holds
// one more reference while it is armed, so the node outlives a firing that races a
// cancel.
#include "runtime/context.h"

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/internal/lock.h"
#include "runtime/internal/profile.h"
#include "runtime/internal/sched.h"
#include "runtime/internal/timer.h"
#include "runtime/runtime.h"

namespace weft {

namespace {

class context_category_impl : public std::error_category {
 public:
  const char* name() const noexcept override { return "context"; }
  std::string message(int c) const override {
    switch (static_cast<context_errc>(c)) {
      case context_errc::canceled: return "context canceled";
      case context_errc::deadline_exceeded: return "context deadline exceeded";
    }
    return "context error";
  }
};

}  // namespace

const std::error_category& context_category() {
  static context_category_impl c;
  return c;
}

namespace detail {

struct ctx_sleeper;

struct ctx_node {
  enum class kind : uint8_t { value, cancel };

  std::atomic<int32_t> refs{1};
  kind k;
  ctx_node* parent = nullptr;             // strong
  ctx_node* cancel_parent = nullptr;      // nearest cancelable ancestor (we are its child)
  int64_t deadline_ns = 0;                // nanotime; 0: none (inherited down the chain)

  // value nodes
  const void* key = nullptr;
  std::any value;

  // cancel nodes (mu)
  lock mu;
  bool canceled = false;
  std::error_code err;
  std::error_code cause;
  chan<std::monostate> done;              // created on first done(); unmade if cancelled first
  ctx_node* first_child = nullptr;        // strong references
  ctx_node* prev_sibling = nullptr;       // links in cancel_parent's list (its mu)
  ctx_node* next_sibling = nullptr;
  bool linked = false;
  timer deadline_timer;                   // armed for deadline nodes
  bool has_timer = false;
  ctx_sleeper* sleepers = nullptr;        // sleep_for calls waiting on this node (mu)

  explicit ctx_node(kind kk) : k(kk) {}

  void retain() { refs.fetch_add(1, std::memory_order_relaxed); }
  void release();

  void link_child_locked(ctx_node* c) {
    c->retain();
    c->prev_sibling = nullptr;
    c->next_sibling = first_child;
    if (first_child) first_child->prev_sibling = c;
    first_child = c;
    c->linked = true;
  }
  // Returns true if c was linked here (its reference is now the caller's to drop).
  bool unlink_child_locked(ctx_node* c) {
    if (!c->linked) return false;
    if (c->prev_sibling)
      c->prev_sibling->next_sibling = c->next_sibling;
    else
      first_child = c->next_sibling;
    if (c->next_sibling) c->next_sibling->prev_sibling = c->prev_sibling;
    c->prev_sibling = c->next_sibling = nullptr;
    c->linked = false;
    return true;
  }

  void cancel(bool remove_from_parent, std::error_code e, std::error_code why);
  static void on_deadline(timer*, void* arg, uintptr_t);
};

namespace {

// A channel closed once, shared by contexts cancelled before anyone asked for done().
const chan<std::monostate>& closed_chan() {
  static const chan<std::monostate> c = [] {
    chan<std::monostate> x(0);
    x.close();
    return x;
  }();
  return c;
}

ctx_node* nearest_cancelable(ctx_node* n) {
  while (n && n->k != ctx_node::kind::cancel) n = n->parent;
  return n;
}

}  // namespace

void ctx_node::release() {
  // Iterative, so that dropping a long chain does not recurse.
  ctx_node* n = this;
  while (n && n->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    ctx_node* p = n->parent;
    delete n;
    n = p;
  }
}

// One sleep_for(ctx, d) call, in its goroutine's frame.
struct ctx_sleeper {
  static constexpr int kWaiting = 0, kTimer = 1, kCanceled = 2;

  ctx_sleeper(ctx_node* node, int64_t w) : n(node), when(w) { t.sync = true; }

  timer t{&fire, this};
  ctx_node* n;
  int64_t when;
  g* gp = nullptr;                   // set by a commit that went through (parked)
  std::atomic<int> woken{kWaiting};  // who readied the goroutine
  ctx_sleeper* prev = nullptr;       // in n->sleepers (n->mu)
  ctx_sleeper* next = nullptr;
  bool linked = false;

  void wake(int by) {
    g* w = gp;  // once readied, the goroutine may return and the frame be gone
    int expect = kWaiting;
    if (woken.compare_exchange_strong(expect, by, std::memory_order_acq_rel)) ready_g(w, true);
  }
  static void fire(timer*, void* arg, uintptr_t) { static_cast<ctx_sleeper*>(arg)->wake(kTimer); }

  void unlink_locked() {
    if (!linked) return;
    if (prev)
      prev->next = next;
    else
      n->sleepers = next;
    if (next) next->prev = prev;
    prev = next = nullptr;
    linked = false;
  }

  // Runs once the goroutine is switched out: publishes the entry unless n is cancelled.
  static bool commit(g* gp, void* arg) {
    auto* s = static_cast<ctx_sleeper*>(arg);
    ctx_node* n = s->n;
    lock_guard l(n->mu);
    if (n->canceled) return false;
    s->gp = gp;
    timer_add(&s->t, s->when);
    s->next = n->sleepers;
    if (s->next) s->next->prev = s;
    n->sleepers = s;
    s->linked = true;
    return true;
  }
};

namespace {

// Marks n cancelled (if it was not) and moves its children, with their references, to
// `work`. Returns whether n's timer (if any) still holds a reference to drop.
bool cancel_one(ctx_node* n, std::error_code e, std::error_code why, std::vector<ctx_node*>& work) {
  lock_guard l(n->mu);
  if (n->canceled) return false;
  n->canceled = true;
  n->err = e;
  n->cause = why ? why : e;
  // Nobody asked for done() yet: leave it unmade; done() hands out the shared closed
  // channel from now on (taking a reference to it here would be an atomic on one cache
  // line that every core cancelling a context writes).
  if (n->done) n->done.close();
  while (ctx_sleeper* s = n->sleepers) {
    s->unlink_locked();
    s->wake(ctx_sleeper::kCanceled);
  }
  while (ctx_node* c = n->first_child) {
    n->unlink_child_locked(c);
    work.push_back(c);
  }
  return n->has_timer;
}

}  // namespace

void ctx_node::cancel(bool remove_from_parent, std::error_code e, std::error_code why) {
  // Depth-first without recursion: each cancelled node hands its children to `work`.
  std::vector<ctx_node*> work;
  bool was_canceled;
  {
    lock_guard l(mu);
    was_canceled = canceled;
  }
  if (was_canceled) return;
  bool timed = cancel_one(this, e, why, work);
  if (timed && timer_stop(&deadline_timer)) release();  // the armed timer's reference
  if (remove_from_parent && cancel_parent) {
    ctx_node* p = cancel_parent;
    p->mu.acquire();
    bool was = p->unlink_child_locked(this);
    p->mu.release();
    if (was) release();  // the parent's reference; our caller still holds one
  }
  while (!work.empty()) {
    ctx_node* n = work.back();
    work.pop_back();
    if (cancel_one(n, e, why, work) && timer_stop(&n->deadline_timer)) n->release();
    n->release();  // the reference its parent's list held
  }
}

void ctx_node::on_deadline(timer*, void* arg, uintptr_t) {
  auto* n = static_cast<ctx_node*>(arg);
  n->cancel(true, context_errc::deadline_exceeded, {});
  n->release();  // the timer's reference (it fired, so cancel's stop found nothing)
}

namespace {

// A new cancelable child of parent, linked (or cancelled at once if parent is).
ctx_node* new_cancel_node(const context& parent) {
  auto* n = new ctx_node(ctx_node::kind::cancel);
  n->parent = parent.node();
  if (n->parent) {
    n->parent->retain();
    n->deadline_ns = n->parent->deadline_ns;
  }
  n->cancel_parent = nearest_cancelable(n->parent);
  if (ctx_node* p = n->cancel_parent) {
    p->mu.acquire();
    if (p->canceled) {
      std::error_code e = p->err, c = p->cause;
      p->mu.release();
      n->cancel(false, e, c);
    } else {
      p->link_child_locked(n);
      p->mu.release();
    }
  }
  return n;
}

}  // namespace

context make_value_ctx(const context& parent, const void* key, std::any value) {
  auto* n = new ctx_node(ctx_node::kind::value);
  n->parent = parent.node();
  if (n->parent) {
    n->parent->retain();
    n->deadline_ns = n->parent->deadline_ns;
  }
  n->key = key;
  n->value = std::move(value);
  return context(n);
}

}  // namespace detail

using detail::ctx_node;

context::context(const context& o) : n_(o.n_) {
  if (n_) n_->retain();
}

context::~context() {
  if (n_) n_->release();
}

chan<std::monostate> context::done() const {
  ctx_node* n = detail::nearest_cancelable(n_);
  if (!n) return {};
  detail::lock_guard l(n->mu);
  if (!n->done) {
    if (n->canceled) return detail::closed_chan();
    n->done = chan<std::monostate>(0);
  }
  return n->done;
}

std::error_code context::err() const {
  ctx_node* n = detail::nearest_cancelable(n_);
  if (!n) return {};
  detail::lock_guard l(n->mu);
  return n->err;
}

std::error_code context::cause() const {
  ctx_node* n = detail::nearest_cancelable(n_);
  if (!n) return {};
  detail::lock_guard l(n->mu);
  return n->cause;
}

std::optional<context::time_point> context::deadline() const {
  if (!n_ || n_->deadline_ns == 0) return std::nullopt;
  return time_point(std::chrono::nanoseconds(n_->deadline_ns));
}

const std::any* context::lookup(const void* key) const {
  for (ctx_node* n = n_; n; n = n->parent)
    if (n->k == ctx_node::kind::value && n->key == key) return &n->value;
  return nullptr;
}

void cancel_func::operator()() const {
  if (ctx_node* n = ctx_.node()) n->cancel(true, context_errc::canceled, {});
}

void cancel_func::operator()(std::error_code cause) const {
  if (ctx_node* n = ctx_.node()) n->cancel(true, context_errc::canceled, cause);
}

context background() { return {}; }

std::error_code sleep_for(const context& ctx, std::chrono::nanoseconds d) {
  ctx_node* n = detail::nearest_cancelable(ctx.node());
  if (!n) {  // never cancelled: a plain sleep
    detail::sleep_ns(d.count());
    return {};
  }
  if (d.count() <= 0) return ctx.err();
  int64_t now = detail::nanotime();
  int64_t when = d.count() > INT64_MAX - now ? INT64_MAX : now + d.count();
  detail::ctx_sleeper s(n, when);
  // In the block profile, as the select it replaces would be (time.Sleep is not).
  int64_t since = detail::block_profiling() ? now : 0;
  park(wait_reason::sleep, &detail::ctx_sleeper::commit, &s);
  if (!s.gp) return ctx.err();  // cancelled before the commit
  {
    detail::lock_guard l(n->mu);
    s.unlink_locked();
  }
  detail::timer_stop_sync(&s.t);
  if (since) detail::record_block(since, detail::nanotime(), 0);
  return s.woken.load(std::memory_order_acquire) == detail::ctx_sleeper::kCanceled ? ctx.err() : std::error_code();
}

namespace detail {
// cancel_func's constructor is private; this is its friend.
struct cancel_factory {
  static cancel_func make(const context& c);
};

// Wraps a new node: the context adopts its creation reference, the cancel function
// shares it.
cancelable make_cancelable(ctx_node* n) {
  context ctx(n);
  cancel_func f = cancel_factory::make(ctx);
  return {std::move(ctx), std::move(f)};
}
}  // namespace detail

cancelable with_cancel(const context& parent) { return detail::make_cancelable(detail::new_cancel_node(parent)); }

cancelable with_cancel_cause(const context& parent) { return with_cancel(parent); }

namespace {

// with_deadline without the timer: the node, cancelled at once if d has passed. Null
// node (then r is with_cancel's) if the parent's deadline comes first anyway.
ctx_node* new_deadline_node(const context& parent, int64_t d, cancelable& r) {
  if (parent.node() && parent.node()->deadline_ns != 0 && parent.node()->deadline_ns <= d) {
    r = with_cancel(parent);  // the parent's deadline comes first anyway
    return nullptr;
  }
  ctx_node* n = detail::new_cancel_node(parent);
  n->deadline_ns = d;
  r = detail::make_cancelable(n);
  if (d <= detail::nanotime()) {
    n->cancel(true, context_errc::deadline_exceeded, {});
    return nullptr;
  }
  return n;
}

}  // namespace

cancelable with_deadline(const context& parent, context::time_point deadline) {
  int64_t d = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  cancelable r;
  ctx_node* n = new_deadline_node(parent, d, r);
  if (!n) return r;
  n->mu.acquire();
  if (!n->canceled) {
    n->has_timer = true;
    n->deadline_timer.f = &ctx_node::on_deadline;
    n->deadline_timer.arg = n;
    n->retain();  // the armed timer's reference
    detail::timer_add(&n->deadline_timer, d);
  }
  n->mu.release();
  return r;
}

namespace detail {

cancelable with_deadline_untimed(const context& parent, context::time_point deadline) {
  int64_t d = std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch()).count();
  cancelable r;
  new_deadline_node(parent, d, r);
  return r;
}

void expire(const context& c) {
  if (ctx_node* n = c.node(); n && n->k == ctx_node::kind::cancel) n->cancel(true, context_errc::deadline_exceeded, {});
}

}  // namespace detail

cancelable with_timeout(const context& parent, std::chrono::nanoseconds timeout) {
  auto now = std::chrono::steady_clock::now();
  // Saturate: now + a huge timeout must not overflow into the past (Go's
  // WithTimeout(ctx, math.MaxInt64) never fires).
  if (timeout > context::time_point::max() - now) return with_deadline(parent, context::time_point::max());
  return with_deadline(parent, now + timeout);
}

namespace detail {
cancel_func cancel_factory::make(const context& c) { return cancel_func(c); }
}  // namespace detail

}  // namespace weft
