// errgroup: goroutines working on subtasks of one task (golang.org/x/sync/errgroup).
//
//   weft::errgroup g(ctx);                 // g.ctx() is cancelled by the first error
//   g.set_limit(4);                        // at most 4 running at once (optional)
//   for (auto& url : urls) g.go([&, url] { return fetch(g.ctx(), url); });
//   if (std::error_code err = g.wait()) ...   // the first error
//
// go(f) runs f in a new goroutine; f returns std::error_code (or void). The first
// non-empty error is kept and cancels the group's context; wait() waits for every
// goroutine and returns it. With a limit, go() parks until a slot frees up and try_go()
// returns false instead. An exception escaping f cancels the context like an error and
// the first one is rethrown by wait() (even after an earlier error), once everything
// has finished. Each f, and what it captured, is destroyed before its goroutine counts
// as done. The context is also cancelled when wait() returns, as in Go.
#pragma once

#include <exception>
#include <functional>
#include <system_error>
#include <type_traits>
#include <utility>
#include <variant>

#include "runtime/chan.h"
#include "runtime/context.h"
#include "runtime/mutex.h"
#include "runtime/runtime.h"
#include "runtime/wait_group.h"

namespace weft {

class errgroup {
 public:
  errgroup() = default;
  explicit errgroup(const context& parent) {
    cancelable c = with_cancel(parent);
    ctx_ = std::move(c.ctx);
    cancel_ = std::move(c.cancel);
  }
  errgroup(const errgroup&) = delete;
  errgroup& operator=(const errgroup&) = delete;
  ~errgroup() {
    if (cancel_) cancel_();
  }

  const context& ctx() const { return ctx_; }

  // n < 0: no limit. Must not change while goroutines of the group are running.
  void set_limit(int n) {
    if (wg_running_ != 0) throw std::logic_error("errgroup: modify limit while goroutines are still active");
    sem_ = n < 0 ? chan<std::monostate>() : chan<std::monostate>(static_cast<std::size_t>(n));
  }

  template <class F>
  void go(F&& f) {
    if (sem_) sem_.send(std::monostate{});
    start(std::forward<F>(f));
  }

  template <class F>
  bool try_go(F&& f) {
    if (sem_ && !sem_.try_send(std::monostate{})) return false;
    start(std::forward<F>(f));
    return true;
  }

  std::error_code wait() {
    wg_.wait();
    if (cancel_) cancel_(err_ ? err_ : std::error_code{});
    if (panic_) std::rethrow_exception(panic_);
    return err_;
  }

 private:
  template <class F>
  void start(F&& f) {
    wg_.add(1);
    wg_running_++;
    weft::go([this, fn = std::forward<F>(f)]() mutable {
      std::error_code err;
      std::exception_ptr ex;
      {
        // The callable (and whatever it captured) is gone before done(): once wait()
        // returns nothing of the group's work is still alive.
        auto body = std::move(fn);
        try {
          if constexpr (std::is_void_v<std::invoke_result_t<decltype(body)&>>)
            body();
          else
            err = body();
        } catch (...) {
          ex = std::current_exception();
        }
      }
      if (err || ex) fail(err, std::move(ex));
      if (sem_) sem_.recv();
      wg_running_--;
      wg_.done();
    });
  }

  // The first error is kept; the first exception is kept too, even after an error,
  // so that wait() always rethrows a panic (as errgroup does since golang/go#53757).
  void fail(std::error_code err, std::exception_ptr ex) {
    bool first = false;
    {
      std::lock_guard<mutex> l(mu_);
      first = !err_ && !panic_;
      if (err && !err_) err_ = err;
      if (ex && !panic_) panic_ = std::move(ex);
    }
    if (first && cancel_) cancel_(err);
  }

  wait_group wg_;
  std::atomic<int> wg_running_{0};
  chan<std::monostate> sem_;  // nil: no limit
  mutex mu_;
  std::error_code err_;
  std::exception_ptr panic_;
  context ctx_;
  cancel_func cancel_;
};

}  // namespace weft
