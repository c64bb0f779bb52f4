// select: wait on several channel operations at once (Go's select statement).
//
// Two forms. The first returns the index (in argument order) of the case that ran:
//
//   int v; bool ok;
//   switch (weft::select(weft::case_recv(in, v, &ok), weft::case_send(out, 42), weft::case_default())) {
//     case 0: ...  // received v (ok == false: `in` is closed)
//     case 1: ...  // sent 42
//     case 2: ...  // nothing was ready
//   }
//
// The second runs the chosen case's callback (and also returns its index):
//
//   weft::select(
//       weft::on_recv(in, [](int v, bool ok) { ... }),
//       weft::on_recv(ctx.done(), [](auto, bool) { ... }),
//       weft::on_send(out, 42, [] { ... }),
//       weft::on_default([] { ... }));
//
// Semantics (Go's):
//   - If several cases are ready, one is chosen uniformly at random.
//   - If none is ready: with a default case, the default runs; without one, the goroutine
//     parks on all the channels at once (no polling) until one case can proceed.
//   - A case on a nil channel is never ready. select() with only nil channels and no
//     default blocks forever ("select (no cases)").
//   - A send case on a closed channel panics when it is chosen.
//   - A send case's value is moved into the channel only if that case is chosen.
#pragma once

#include <array>
#include <tuple>
#include <type_traits>
#include <utility>

#include "runtime/chan.h"

namespace weft {

namespace detail {

struct no_callback {};

// A case names its channel by core pointer. A case built from a temporary handle
// (`case_recv(ctx.done(), ...)`) also keeps that handle, moved in, so the channel lives
// as long as the case; one built from a named handle copies nothing (a copy would cost
// two atomic reference-count updates per case per select).
template <class T, class F>
struct recv_case {
  chan_core* c;
  chan<T> keep;
  T* out;
  bool* ok;
  F fn;
  recv_slot<T> slot;

  select_case core() { return {c, false, slot.get()}; }
  void complete(bool received) {
    if constexpr (std::is_same_v<F, no_callback>) {
      if (received)
        *out = slot.take();
      else
        *out = T{};
      if (ok) *ok = received;
    } else {
      if (received)
        fn(slot.take(), true);
      else
        fn(T{}, false);
    }
  }
};

template <class T, class F>
struct send_case {
  chan_core* c;
  chan<T> keep;
  T value;
  F fn;

  select_case core() { return {c, true, &value}; }
  void complete(bool) {
    if constexpr (!std::is_same_v<F, no_callback>) fn();
  }
};

template <class F>
struct default_case_t {
  F fn;
  void complete(bool) {
    if constexpr (!std::is_same_v<F, no_callback>) fn();
  }
};

template <class C>
struct is_default : std::false_type {};
template <class F>
struct is_default<default_case_t<F>> : std::true_type {};

}  // namespace detail

namespace detail {
// What a case keeps of the handle it was given: nothing for a named handle, the handle
// itself (moved) for a temporary.
template <class T>
chan<T> keep_if_temporary(const chan<T>&) { return {}; }
template <class T>
chan<T> keep_if_temporary(chan<T>&& c) { return std::move(c); }
template <class Ch>
using chan_elem = typename std::remove_cvref_t<Ch>::value_type;
}  // namespace detail

// Receive into `out` (and `*ok`: false if the channel is closed).
template <class Ch, class T = detail::chan_elem<Ch>>
detail::recv_case<T, detail::no_callback> case_recv(Ch&& c, T& out, bool* ok = nullptr) {
  return {c.core(), detail::keep_if_temporary(std::forward<Ch>(c)), &out, ok, {}, {}};
}
// Send `value` (moved into the channel only if this case is chosen).
template <class Ch, class U, class T = detail::chan_elem<Ch>>
detail::send_case<T, detail::no_callback> case_send(Ch&& c, U&& value) {
  return {c.core(), detail::keep_if_temporary(std::forward<Ch>(c)), T(std::forward<U>(value)), {}};
}
inline detail::default_case_t<detail::no_callback> case_default() { return {{}}; }

// Callback forms: fn(T value, bool ok) for receives, fn() for sends and default.
template <class Ch, class F, class T = detail::chan_elem<Ch>>
detail::recv_case<T, std::decay_t<F>> on_recv(Ch&& c, F&& fn) {
  return {c.core(), detail::keep_if_temporary(std::forward<Ch>(c)), nullptr, nullptr, std::forward<F>(fn), {}};
}
template <class Ch, class U, class F, class T = detail::chan_elem<Ch>>
detail::send_case<T, std::decay_t<F>> on_send(Ch&& c, U&& value, F&& fn) {
  return {c.core(), detail::keep_if_temporary(std::forward<Ch>(c)), T(std::forward<U>(value)), std::forward<F>(fn)};
}
template <class F>
detail::default_case_t<std::decay_t<F>> on_default(F&& fn) {
  return {std::forward<F>(fn)};
}

template <class... Cases>
int select(Cases&&... cases) {
  constexpr int n = sizeof...(Cases);
  constexpr int ndefault = (0 + ... + (detail::is_default<std::decay_t<Cases>>::value ? 1 : 0));
  static_assert(ndefault <= 1, "select: at most one default case");
  auto refs = std::forward_as_tuple(cases...);
  std::array<detail::select_case, n> core{};
  int default_index = -1;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (
        [&] {
          auto& c = std::get<I>(refs);
          if constexpr (detail::is_default<std::decay_t<decltype(c)>>::value) {
            default_index = static_cast<int>(I);
            core[I] = detail::select_case{nullptr, false, nullptr};
          } else {
            core[I] = c.core();
          }
        }(),
        ...);
  }(std::make_index_sequence<n>{});
  bool ok = true;
  int chosen = detail::select_go(core.data(), n, default_index < 0, &ok);
  if (chosen < 0) chosen = default_index;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    ((static_cast<int>(I) == chosen ? (std::get<I>(refs).complete(ok), 0) : 0), ...);
  }(std::make_index_sequence<n>{});
  return chosen;
}

}  // namespace weft
