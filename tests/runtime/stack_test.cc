// Stacks: guard pages, lazy commit, a million parked goroutines under max_map_count.
#include <fstream>

#include "runtime/internal/sema.h"
#include "runtime/internal/stack.h"
#include "runtime/wait_group.h"
#include "tests/test_util.h"

namespace weft {
namespace {

using testing::run_checked;
using testing::stress;

TEST(Stack, GuardPageSitsBelowEveryStack) {
  run_checked([] {
    detail::g* gp = current_goroutine();
    EXPECT_TRUE(detail::stack_is_guard_address(gp->stack_lo - 1));
    EXPECT_TRUE(detail::stack_is_guard_address(gp->stack_lo - detail::kPageSize));
    EXPECT_FALSE(detail::stack_is_guard_address(gp->stack_lo));
    EXPECT_FALSE(detail::stack_is_guard_address(gp->stack_hi - 1));
  });
}

TEST(Stack, GuardsAreInstalledWithoutSplittingMappings) {
  run_checked([] {});
  // This kernel has MADV_GUARD_INSTALL (Linux >= 6.13); older ones fall back to mprotect.
  EXPECT_TRUE(detail::stack_guards_are_lightweight());
}

TEST(Stack, MprotectFallbackStillGuardsEveryStack) {
  detail::stack_force_mprotect_guards();  // this process only (ctest runs each test alone)
  run_checked([] {
    int maps_before = testing::count_maps();
    constexpr int n = 64;
    detail::sema gate;
    wait_group done;
    done.add(n);
    for (int i = 0; i < n; i++)
      go(spawn_options{.stack_size = 200 * 1024}, [&] {  // a size class no earlier arena has
        gate.acquire(wait_reason::semacquire);
        done.done();
      });
    while (gate.waiters() < n) yield();
    detail::g* self = current_goroutine();
    EXPECT_TRUE(detail::stack_is_guard_address(self->stack_lo - 1));
    // mprotect splits the arena: a mapping per guard page and one per stack between.
    EXPECT_GT(testing::count_maps(), maps_before + n);
    EXPECT_FALSE(detail::stack_guards_are_lightweight());
    gate.release(n);
    done.wait();
  });
}

// One million goroutines parked at once must fit under the default vm.max_map_count
// (65530): guard pages may not cost a mapping each.
TEST(Stack, AMillionParkedGoroutinesFitUnderMaxMapCount) {
  const int n = stress(1'000'000, 4'000);  // TSan caps live threads+fibers at 8128
  run_checked([n] {
    detail::sema gate;
    wait_group finished;
    finished.add(n);
    long rss0 = testing::rss_bytes();
    for (int i = 0; i < n; i++)
      go([&] {
        gate.acquire(wait_reason::semacquire);
        finished.done();
      });
    while (gate.waiters() < static_cast<uint32_t>(n)) sleep_for(std::chrono::milliseconds(1));
    int maps = testing::count_maps();
    long rss = testing::rss_bytes() - rss0;
    std::printf("%d parked: %d mappings, %.0f bytes RSS each\n", n, maps, double(rss) / n);
    EXPECT_LT(maps, 65530 / 4);
    EXPECT_EQ(num_goroutine(), n + 1);
    gate.release(n);
    finished.wait();
  });
}

}  // namespace
}  // namespace weft
