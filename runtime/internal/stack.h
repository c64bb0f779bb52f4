// Goroutine stacks.
//
// Stacks are carved from large anonymous mappings (arenas) reserved with MAP_NORESERVE:
// a stack costs address space, and RSS only for the pages it touches. Each slot is
//
//   [guard page][usable stack ............................][G descriptor]
//   lo-4096     lo                                  hi=(g*)         slot end
//
// The guard page is installed with MADV_GUARD_INSTALL (Linux >= 6.13), which marks the
// page in the page tables without splitting the mapping: a million stacks cost a thousand
// VMAs, well under the default vm.max_map_count of 65530. Older kernels fall back to
// mprotect(PROT_NONE), which splits the VMA (two per stack): that caps guarded stacks near
// 32K per process, and the fallback logs it once.
//
// Slots are recycled through three tiers: a dead G keeps its stack on its P's free list
// (hot pages, no faults), overflow moves to a global list of dead Gs, and beyond that the
// pages are returned to the kernel (MADV_DONTNEED) and the bare slot goes back here.
#pragma once

#include <cstddef>
#include <cstdint>

namespace weft::detail {

inline constexpr std::size_t kPageSize = 4096;

// Rounds a requested usable stack size up to the slot size class it lives in.
std::size_t stack_size_class(std::size_t usable);

// A slot of the given size class, its pages untouched (zero on first use).
struct stack_slot {
  char* lo;          // lowest usable byte (just above the guard page)
  std::size_t size;  // usable bytes including the descriptor at the top
};
stack_slot stack_get(std::size_t size_class);
// Returns a slot; its pages are released to the kernel.
void stack_put(stack_slot s);

// True if addr lies in the guard page of some stack slot (for the SIGSEGV handler:
// async-signal-safe, lock-free).
bool stack_is_guard_address(const void* addr);

// Whether guard pages are installed without splitting VMAs (MADV_GUARD_INSTALL).
bool stack_guards_are_lightweight();

// Test seam: use the mprotect fallback for arenas created from now on.
void stack_force_mprotect_guards();

// Number of slots currently handed out (for tests).
int64_t stack_slots_in_use();

}  // namespace weft::detail
