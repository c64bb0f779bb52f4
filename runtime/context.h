// context: cancellation, deadlines and request-scoped values (Go's context package).
//
//   auto [ctx, cancel] = weft::with_timeout(parent, 2s);
//   weft::select(weft::on_recv(ctx.done(), [&](auto, bool) { fail(ctx.err()); }),
//                weft::on_recv(results, [&](auto r, bool) { use(r); }));
//   cancel();                      // always, as Go's vet insists: it releases the child
//
// A context is an immutable, cheap handle (one reference-counted pointer); copies share
// state. background() (and a default-constructed context) is never cancelled, has no
// deadline and no values; its done() is the nil channel, which is never ready.
//
// Guarantees (Go's):
//   - Cancelling a context cancels every descendant, each exactly once, and closes its
//     done() channel. err() is then context_errc::canceled or ::deadline_exceeded, and
//     never changes again.
//   - A child's deadline is never later than its parent's: with_deadline past the
//     parent's deadline is just with_cancel.
//   - A child that is cancelled (by its cancel function or its deadline) removes itself
//     from its parent, so long-lived parents do not accumulate children. A child whose
//     cancel is never called stays linked until the parent is cancelled (Go's "lost
//     cancel" leak): always call cancel.
//   - cause() is the error passed to a with_cancel_cause cancel function, else err().
// Cancellation runs without recursion (deep chains are fine) and is safe from any
// goroutine, thread, or timer callback.
#pragma once

#include <any>
#include <chrono>
#include <functional>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "runtime/chan.h"

namespace weft {

enum class context_errc { canceled = 1, deadline_exceeded = 2 };
const std::error_category& context_category();
inline std::error_code make_error_code(context_errc e) { return {static_cast<int>(e), context_category()}; }

}  // namespace weft

template <>
struct std::is_error_code_enum<weft::context_errc> : std::true_type {};

namespace weft {

namespace detail {
struct ctx_node;
struct cancel_factory;
}

// The key for with_value / value(): compared by identity (the address of the key object).
template <class T>
struct context_key {
  const char* name = "";
};

class context {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  context() = default;  // background
  context(const context& o);
  context(context&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
  context& operator=(context o) noexcept {
    std::swap(n_, o.n_);
    return *this;
  }
  ~context();

  // Closed when the context is cancelled; the nil channel for background.
  chan<std::monostate> done() const;
  // Empty until cancelled, then canceled or deadline_exceeded.
  std::error_code err() const;
  std::error_code cause() const;
  std::optional<time_point> deadline() const;

  template <class T>
  const T* value(const context_key<T>& key) const {
    const std::any* v = lookup(&key);
    return v ? std::any_cast<T>(v) : nullptr;
  }

  detail::ctx_node* node() const { return n_; }
  explicit context(detail::ctx_node* n) : n_(n) {}  // adopts a reference

 private:
  const std::any* lookup(const void* key) const;
  detail::ctx_node* n_ = nullptr;
};

// Cancels its context (once; later calls do nothing). Copyable; safe from any thread.
class cancel_func {
 public:
  cancel_func() = default;
  void operator()() const;
  void operator()(std::error_code cause) const;  // with_cancel_cause
  explicit operator bool() const { return static_cast<bool>(ctx_.node()); }

 private:
  friend struct detail::cancel_factory;
  explicit cancel_func(context c) : ctx_(std::move(c)) {}
  context ctx_;
};

struct cancelable {
  context ctx;
  cancel_func cancel;
};

context background();
cancelable with_cancel(const context& parent);
cancelable with_cancel_cause(const context& parent);  // cancel(cause) sets cause()
cancelable with_deadline(const context& parent, context::time_point deadline);
cancelable with_timeout(const context& parent, std::chrono::nanoseconds timeout);

template <class T, class V>
context with_value(const context& parent, const context_key<T>& key, V&& value);

// Sleeps for d, or until ctx is done, whichever comes first: Go's
//   select { case <-time.After(d): case <-ctx.Done(): }
// without the channels (no allocation; one timer in the goroutine's frame). Returns
// ctx.err() if the context ended the sleep or had ended before it, else no error. From
// a goroutine only; a goroutine dump shows it as [sleep], and the block profile records
// it as it would the select.
std::error_code sleep_for(const context& ctx, std::chrono::nanoseconds d);

namespace detail {
context make_value_ctx(const context& parent, const void* key, std::any value);

// A deadline context without a timer of its own, for an owner that already runs a timer
// for the same deadline (the HTTP server's handler deadline): the owner calls expire()
// when the deadline passes. Otherwise as with_deadline: deadline() reports it, and a
// deadline already past cancels the context at once.
cancelable with_deadline_untimed(const context& parent, context::time_point deadline);
// Cancels c, a context with_deadline_untimed returned, with deadline_exceeded (if it
// is not cancelled already); its children end with it. Does nothing to a value layer.
void expire(const context& c);
}

template <class T, class V>
context with_value(const context& parent, const context_key<T>& key, V&& value) {
  return detail::make_value_ctx(parent, &key, std::any(T(std::forward<V>(value))));
}

}  // namespace weft
