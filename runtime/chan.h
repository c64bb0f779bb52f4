// Channels: Go's `chan T`.
//
//   weft::chan<int> c(16);            // make(chan int, 16); chan<int>(0) is unbuffered
//   weft::go([c] { for (int i = 0; i < 3; i++) c.send(i); c.close(); });
//   for (int v : c) use(v);           // receives until closed and drained
//   auto [v, ok] = c.recv();          // v, ok := <-c
//
// A chan<T> is a cheap handle (one pointer, reference counted); copies name the same
// channel. A default-constructed handle is the nil channel. Semantics are Go's table:
//
//   operation     nil channel        closed channel                 otherwise
//   send          blocks forever     panics                         blocks until received
//                                                                   (or buffered)
//   recv          blocks forever     drains the buffer, then        blocks until a value
//                                    returns {T{}, false}
//   close         panics             panics                         wakes every waiter
//
// "Panics" throws std::logic_error with Go's message ("send on closed channel", "close
// of closed channel", "close of nil channel"); uncaught, that is a panic (exit 2). A
// sender blocked when the channel is closed panics when it wakes, as in Go.
//
// Blocking parks the goroutine, never the thread. Waiters are served FIFO. T may be
// move-only; recv() needs T to be default-constructible (the closed case returns T{}).
// The invariants the implementation keeps are at the top of
// runtime/internal/chan_core.h; select is in runtime/select.h.
#pragma once

#include <cstddef>
#include <new>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "runtime/internal/chan_core.h"

namespace weft {

template <class T>
struct received {
  T value;
  bool ok;  // false: the channel is closed and drained
};

namespace detail {

template <class T>
struct typed_ops {
  static void move_construct(void* dst, void* src) { ::new (dst) T(std::move(*static_cast<T*>(src))); }
  static void destroy(void* p) { static_cast<T*>(p)->~T(); }
  static constexpr elem_ops ops{sizeof(T), alignof(T), &move_construct, &destroy,
                                std::is_trivially_copyable_v<T> && std::is_trivially_destructible_v<T>};
};

// Uninitialized storage for one T received from a channel.
template <class T>
struct recv_slot {
  alignas(T) unsigned char bytes[sizeof(T)];
  void* get() { return bytes; }
  T take() {
    T* p = std::launder(reinterpret_cast<T*>(bytes));
    T v(std::move(*p));
    p->~T();
    return v;
  }
};

}  // namespace detail

template <class T>
class chan {
 public:
  using value_type = T;

  chan() = default;  // the nil channel
  explicit chan(std::size_t capacity)
      : c_(new detail::chan_core(&detail::typed_ops<T>::ops, check_cap(capacity))) {}

  chan(const chan& o) : c_(o.c_) {
    if (c_) c_->retain();
  }
  chan(chan&& o) noexcept : c_(std::exchange(o.c_, nullptr)) {}
  chan& operator=(chan o) noexcept {
    std::swap(c_, o.c_);
    return *this;
  }
  ~chan() {
    if (c_) c_->release();
  }

  // Sends v, blocking until a receiver takes it or buffer space frees up.
  void send(T v) const {
    if (!c_) detail::block_forever(wait_reason::chan_send_nil);
    c_->send(&v, true);
  }

  // Receives a value, blocking until one arrives; {T{}, false} once closed and drained.
  received<T> recv() const {
    static_assert(std::is_default_constructible_v<T>, "recv() returns T{} when closed");
    if (!c_) detail::block_forever(wait_reason::chan_receive_nil);
    detail::recv_slot<T> slot;
    if (c_->recv(slot.get(), true) == 1) return {slot.take(), true};
    return {T{}, false};
  }

  // Non-blocking send: true if sent. On false, v is left as it was.
  bool try_send(T&& v) const { return c_ && c_->send(&v, false); }
  bool try_send(const T& v) const {
    T copy(v);
    return try_send(std::move(copy));
  }

  // Non-blocking receive: nullopt if it would block; otherwise the value, or ok == false
  // when the channel is closed and drained.
  std::optional<received<T>> try_recv() const {
    if (!c_) return std::nullopt;
    detail::recv_slot<T> slot;
    int r = c_->recv(slot.get(), false);
    if (r == 0) return std::nullopt;
    if (r == 1) return received<T>{slot.take(), true};
    return received<T>{T{}, false};
  }

  // Closes the channel: receivers drain what is buffered, then see ok == false.
  void close() const {
    if (!c_) throw std::logic_error("close of nil channel");
    c_->close();
  }

  std::size_t len() const { return c_ ? c_->len() : 0; }
  std::size_t cap() const { return c_ ? c_->cap : 0; }

  explicit operator bool() const { return c_ != nullptr; }  // false for the nil channel
  friend bool operator==(const chan& a, const chan& b) { return a.c_ == b.c_; }

  // Range-for: receives until the channel is closed and drained.
  class iterator {
   public:
    explicit iterator(const chan* ch) : ch_(ch) { advance(); }
    iterator() = default;
    T& operator*() { return *cur_; }
    iterator& operator++() {
      advance();
      return *this;
    }
    friend bool operator==(const iterator& a, const iterator& b) { return a.ch_ == b.ch_; }

   private:
    void advance() {
      auto r = ch_->recv();
      if (r.ok)
        cur_.emplace(std::move(r.value));
      else
        ch_ = nullptr;
    }
    const chan* ch_ = nullptr;
    std::optional<T> cur_;
  };
  iterator begin() const { return iterator(this); }
  iterator end() const { return iterator(); }

  detail::chan_core* core() const { return c_; }
  // Adopts one reference to an existing core (runtime-internal: timer channels).
  static chan adopt(detail::chan_core* c) {
    chan h;
    h.c_ = c;
    return h;
  }

 private:
  static uint32_t check_cap(std::size_t n) {
    if (n > (1u << 30)) throw std::length_error("makechan: size out of range");
    return static_cast<uint32_t>(n);
  }
  detail::chan_core* c_ = nullptr;
};

// make(chan T, capacity)
template <class T>
chan<T> make_chan(std::size_t capacity = 0) {
  return chan<T>(capacity);
}

}  // namespace weft
