// Context switches with the sanitizer fiber annotations.
//
// Every jump between stacks in weft goes through switch_to(): ASan must be told which
// stack is about to become current (or its stack-use-after-return and shadow checks
// misfire), and TSan must switch its fiber (or it sees every goroutine as one thread and
// reports nonsense). A goroutine that exits passes a null fake-stack slot so that ASan
// frees that fiber's fake frames.
#pragma once

#include <boost/context/detail/fcontext.hpp>

#include <cstddef>

#if defined(WEFT_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(WEFT_TSAN)
extern "C" {
void* __tsan_get_current_fiber(void);
void* __tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void* fiber);
void __tsan_switch_to_fiber(void* fiber, unsigned flags);
void __tsan_func_exit(void);
}
#endif

namespace weft::detail {

using boost::context::detail::transfer_t;

struct fiber_target {
  const void* stack_lo;    // lowest address of the target stack
  std::size_t stack_size;  // its size
  void* tsan_fiber;        // its TSan fiber
};

// Jumps to `to`, handing it `data`. Returns when somebody jumps back here.
// `fake_stack_slot` keeps the current fiber's ASan fake stack; null when the current
// fiber will never run again.
[[gnu::always_inline]] inline transfer_t switch_to(boost::context::detail::fcontext_t to,
                                                   void* data, void** fake_stack_slot,
                                                   const fiber_target& target) {
#if defined(WEFT_ASAN)
  __sanitizer_start_switch_fiber(fake_stack_slot, target.stack_lo, target.stack_size);
#endif
#if defined(WEFT_TSAN)
  __tsan_switch_to_fiber(target.tsan_fiber, 0);
#endif
  transfer_t t = boost::context::detail::jump_fcontext(to, data);
#if defined(WEFT_ASAN)
  __sanitizer_finish_switch_fiber(fake_stack_slot ? *fake_stack_slot : nullptr, nullptr, nullptr);
#endif
  (void)fake_stack_slot;
  (void)target;
  return t;
}

// A goroutine's last switch (it exited; its fiber will run the next goroutine spawned on
// this G from a fresh entry). TSan keeps a shadow call stack per fiber, and the two
// frames of the exit path never return: g_entry and mcall, which calls this. Pop them,
// or every goroutine run on a reused G leaves two entries behind and after ~32,000 of
// them the shadow stack overflows into TSan's own thread state (a SIGSEGV inside
// libtsan, in AcquireReleaseImpl, on the next atomic).
[[gnu::always_inline]] inline void exit_frames_done() {
#if defined(WEFT_TSAN)
  __tsan_func_exit();  // mcall
  __tsan_func_exit();  // g_entry
#endif
}

// Called first thing on a brand-new stack.
[[gnu::always_inline]] inline void fiber_entered() {
#if defined(WEFT_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
}

inline void* tsan_current_fiber() {
#if defined(WEFT_TSAN)
  return __tsan_get_current_fiber();
#else
  return nullptr;
#endif
}
inline void* tsan_create_fiber() {
#if defined(WEFT_TSAN)
  return __tsan_create_fiber(0);
#else
  return nullptr;
#endif
}
inline void tsan_destroy_fiber(void* f) {
#if defined(WEFT_TSAN)
  if (f) __tsan_destroy_fiber(f);
#else
  (void)f;
#endif
}

}  // namespace weft::detail
