// Environment parsing: cgroup CPU limits, sizes, WEFTDEBUG.
#include <gtest/gtest.h>

#include "runtime/internal/env.h"

namespace weft::detail {
namespace {

TEST(Env, CgroupV2CpuMaxRoundsUp) {
  EXPECT_EQ(parse_cgroup_cpu_max("max 100000\n"), std::nullopt);
  EXPECT_EQ(parse_cgroup_cpu_max("200000 100000\n"), 2);
  EXPECT_EQ(parse_cgroup_cpu_max("150000 100000"), 2);
  EXPECT_EQ(parse_cgroup_cpu_max("50000 100000"), 1);
  EXPECT_EQ(parse_cgroup_cpu_max("garbage"), std::nullopt);
  EXPECT_EQ(parse_cgroup_cpu_max(""), std::nullopt);
}

TEST(Env, CgroupV1QuotaMinusOneIsUnlimited) {
  EXPECT_EQ(cgroup_v1_limit(-1, 100000), std::nullopt);
  EXPECT_EQ(cgroup_v1_limit(300000, 100000), 3);
  EXPECT_EQ(cgroup_v1_limit(100, 0), std::nullopt);
}

TEST(Env, SizesTakeSuffixes) {
  EXPECT_EQ(parse_size("65536"), 65536u);
  EXPECT_EQ(parse_size("64k"), 65536u);
  EXPECT_EQ(parse_size("2m"), 2u << 20);
  EXPECT_EQ(parse_size("1G"), 1u << 30);
  EXPECT_EQ(parse_size("0"), std::nullopt);
  EXPECT_EQ(parse_size("12q"), std::nullopt);
  EXPECT_EQ(parse_size(""), std::nullopt);
}

TEST(Env, DebugVarsAreCommaSeparated) {
  EXPECT_EQ(parse_debug_var("schedtrace=1000", "schedtrace"), 1000);
  EXPECT_EQ(parse_debug_var("foo=1,schedtrace=250", "schedtrace"), 250);
  EXPECT_EQ(parse_debug_var("foo=1", "schedtrace"), std::nullopt);
  EXPECT_EQ(parse_debug_var("schedtrace=x", "schedtrace"), std::nullopt);
}

}  // namespace
}  // namespace weft::detail
