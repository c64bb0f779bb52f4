// The pprof encoder and Go's legacy text profiles, checked with the real `go tool pprof`.
//
// Profiles are built from real program counters: return addresses captured by walking
// the frame pointers out of [[gnu::noinline]] probe functions with distinctive names
// (weft_pprof_probe::*), so symbolization runs on the real binary. Each profile is
// written to a temporary directory and read back by `go tool pprof` (-raw, -top,
// -traces, -tagfocus, -sample_index). A small proto reader here checks what pprof does
// not show (string table, deduplication), and the text forms are compared byte for byte
// with Go's own text/tabwriter run over the expected cells. Tests skip when `go` is not
// installed.
#include "runtime/pprof_proto.h"

#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <vector>

#include "runtime/runtime.h"
#include "runtime/symbolize.h"
#include "tests/test_util.h"

// ---------------------------------------------------------------------------------------
// Probe functions. Each writes a distinct constant so identical-code folding cannot merge
// two of them, and does something after its call so the call is never a tail call.
namespace weft_pprof_probe {

volatile int sink;

// Return addresses of the caller chain, innermost first: [into caller, into its caller...].
[[gnu::noinline]] std::vector<uintptr_t> capture(int depth) {
  std::vector<uintptr_t> pcs;
  auto* fp = static_cast<uintptr_t*>(__builtin_frame_address(0));
  for (int i = 0; i < depth && fp; i++) {
    pcs.push_back(fp[1]);
    fp = reinterpret_cast<uintptr_t*>(fp[0]);
  }
  sink = depth;
  return pcs;
}

[[gnu::noinline]] std::vector<uintptr_t> leaf_alpha() {
  sink = 1;
  auto v = capture(3);
  sink = 2;
  asm volatile("" ::: "memory");
  return v;
}

[[gnu::noinline]] std::vector<uintptr_t> mid_beta() {
  sink = 3;
  auto v = leaf_alpha();
  sink = 4;
  asm volatile("" ::: "memory");
  return v;
}

[[gnu::noinline]] std::vector<uintptr_t> other_delta() {
  sink = 5;
  auto v = capture(2);
  sink = 6;
  asm volatile("" ::: "memory");
  return v;
}

// [alpha, beta, gamma] or [delta, gamma].
[[gnu::noinline]] std::vector<uintptr_t> root_gamma(bool via_beta) {
  sink = 7;
  std::vector<uintptr_t> v;
  if (via_beta)
    v = mid_beta();
  else
    v = other_delta();
  sink = 8;
  asm volatile("" ::: "memory");
  return v;
}

[[gnu::noinline]] void exact_zeta() {
  sink = 9;
  asm volatile("" ::: "memory");
}

[[gnu::always_inline]] inline std::vector<uintptr_t> inlined_kappa() {
  sink = 10;
  auto v = capture(1);
  sink = 11;
  asm volatile("" ::: "memory");
  return v;
}

// [a return address inside inlined_kappa's body, inlined into outer_sigma].
[[gnu::noinline]] std::vector<uintptr_t> outer_sigma() {
  sink = 12;
  auto v = inlined_kappa();
  sink = 13;
  asm volatile("" ::: "memory");
  return v;
}

[[gnu::noinline]] uintptr_t here() {
  auto pc = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
  sink = 14;
  return pc;
}

// Same body, names one character apart: their frame cells ("name+0xoff") have eight
// consecutive widths, so one of them lands on a tab stop, where tabwriter's padding shows.
#define WEFT_PAD_PROBE(name, k)        \
  [[gnu::noinline]] uintptr_t name() { \
    sink = k;                          \
    uintptr_t pc = here();             \
    sink = k + 100;                    \
    asm volatile("" ::: "memory");     \
    return pc;                         \
  }
WEFT_PAD_PROBE(pad_a, 21)
WEFT_PAD_PROBE(pad_aa, 22)
WEFT_PAD_PROBE(pad_aaa, 23)
WEFT_PAD_PROBE(pad_aaaa, 24)
WEFT_PAD_PROBE(pad_aaaaa, 25)
WEFT_PAD_PROBE(pad_aaaaaa, 26)
WEFT_PAD_PROBE(pad_aaaaaaa, 27)
WEFT_PAD_PROBE(pad_aaaaaaaa, 28)
#undef WEFT_PAD_PROBE

}  // namespace weft_pprof_probe

namespace weft {
namespace {

namespace probe = weft_pprof_probe;

// ---------------------------------------------------------------------------------------
// Helpers.

std::string sh_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct command_result {
  int status = -1;
  std::string out;
  std::string err;
};

command_result run_command(const std::string& dir, const std::string& cmd) {
  std::string err_path = dir + "/stderr.txt";
  std::string full = "cd " + sh_quote(dir) + " && " + cmd + " 2>" + sh_quote(err_path);
  command_result r;
  r.out = testing::run_cmd_stdout(full, &r.status);
  r.err = read_file(err_path);
  return r;
}

bool have_go() {
  return std::system("command -v go >/dev/null 2>&1") == 0;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string line;
  while (std::getline(ss, line)) out.push_back(line);
  return out;
}

std::string collapse_tabs(const std::string& s) {
  std::string out;
  for (char c : s)
    if (c != '\t' || out.empty() || out.back() != '\t') out.push_back(c);
  return out;
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

class PprofTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_go()) GTEST_SKIP() << "go is not installed: `go tool pprof` is the oracle here";
    std::string tmpl = (std::filesystem::temp_directory_path() / "weft-pprof-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Writes `data` and runs `go tool pprof <args> <file>` on it, with HOME and
  // PPROF_TMPDIR in the test's own directory.
  command_result pprof(const std::string& args, const std::string& data,
                       const std::string& name = "prof.pb.gz") {
    std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << data;
    std::string env = "HOME=" + sh_quote(dir_) + " PPROF_TMPDIR=" + sh_quote(dir_) +
                      " GOCACHE=" + sh_quote(dir_ + "/gocache") + " ";
    command_result r = run_command(dir_, env + "go tool pprof " + args + " " + sh_quote(path));
    EXPECT_EQ(r.status, 0) << "go tool pprof " << args << "\nstdout:\n"
                           << r.out << "\nstderr:\n"
                           << r.err;
    return r;
  }

  // Go's text/tabwriter as runtime/pprof configures it, applied to `raw` (cells
  // separated by single tabs): what Go prints for those cells.
  std::string go_tabwriter(const std::string& raw) {
    static const char kSource[] = R"(package main

import (
	"io"
	"os"
	"text/tabwriter"
)

func main() {
	in, _ := io.ReadAll(os.Stdin)
	tw := tabwriter.NewWriter(os.Stdout, 1, 8, 1, '\t', 0)
	tw.Write(in)
	tw.Flush()
}
)";
    std::string env = "HOME=" + sh_quote(dir_) + " GOCACHE=" + sh_quote(dir_ + "/gocache") + " ";
    if (!std::filesystem::exists(dir_ + "/tw")) {
      std::ofstream(dir_ + "/tw.go") << kSource;
      command_result b = run_command(dir_, env + "go build -o tw tw.go");
      EXPECT_EQ(b.status, 0) << b.out << b.err;
    }
    std::ofstream(dir_ + "/tw_in.txt", std::ios::binary) << raw;
    return run_command(dir_, "./tw < tw_in.txt").out;
  }

  std::string dir_;
};

profile_sample sample(std::vector<uintptr_t> stack, std::vector<int64_t> values,
                      std::vector<profile_label> labels = {}) {
  profile_sample s;
  s.stack = std::move(stack);
  s.values = std::move(values);
  s.labels = std::move(labels);
  return s;
}

profile_label str_label(std::string key, std::string value) {
  profile_label l;
  l.key = std::move(key);
  l.str = std::move(value);
  return l;
}

profile_label num_label(std::string key, int64_t value, std::string unit = "") {
  profile_label l;
  l.key = std::move(key);
  l.num = value;
  l.num_unit = std::move(unit);
  l.is_num = true;
  return l;
}

// A CPU-shaped profile: alpha<-beta<-gamma 30 ms (3 samples), delta<-gamma 10 ms.
profile cpu_profile() {
  profile p;
  p.sample_types = {{"samples", "count"}, {"cpu", "nanoseconds"}};
  p.period_type = {"cpu", "nanoseconds"};
  p.period = 10'000'000;
  p.time_nanos = 1'700'000'000'000'000'000;
  p.duration_nanos = 2'000'000'000;
  p.samples.push_back(sample(probe::root_gamma(true), {3, 30'000'000}));
  p.samples.push_back(sample(probe::root_gamma(false), {1, 10'000'000}));
  return p;
}

// The line of `-top` output naming `fn`.
std::string top_line(const std::string& top, const std::string& fn) {
  for (const std::string& l : lines_of(top))
    if (l.find(fn) != std::string::npos) return l;
  return "";
}

// The "flat" column of a -top line.
std::string flat(const std::string& line) {
  std::stringstream ss(line);
  std::string v;
  ss >> v;
  return v;
}

// `-raw` sample lines: the values of each sample, in order.
std::vector<std::vector<int64_t>> raw_samples(const std::string& raw) {
  std::vector<std::vector<int64_t>> out;
  bool in = false;
  for (const std::string& l : lines_of(raw)) {
    if (l == "Samples:") {
      in = true;
      continue;
    }
    if (l.rfind("Locations", 0) == 0) break;
    if (!in) continue;
    auto colon = l.find(':');
    if (colon == std::string::npos || l.find('/') != std::string::npos) continue;
    if (l.find_first_not_of(" 0123456789-") < colon) continue;  // label lines
    std::stringstream ss(l.substr(0, colon));
    std::vector<int64_t> vals;
    int64_t v;
    while (ss >> v) vals.push_back(v);
    if (!vals.empty()) out.push_back(vals);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// A minimal profile.proto reader for what pprof's output does not show.

std::string gunzip(const std::string& in) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  char buf[16384];
  int rc;
  do {
    zs.next_out = reinterpret_cast<Bytef*>(buf);
    zs.avail_out = sizeof buf;
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf, sizeof buf - zs.avail_out);
  } while (rc == Z_OK);
  inflateEnd(&zs);
  EXPECT_EQ(rc, Z_STREAM_END) << "not a complete gzip stream";
  return out;
}

struct pb_field {
  int number = 0;
  uint64_t varint = 0;
  std::string bytes;
};

std::vector<pb_field> parse_message(const std::string& m) {
  std::vector<pb_field> out;
  size_t i = 0;
  auto varint = [&]() {
    uint64_t v = 0;
    for (int shift = 0; i < m.size(); shift += 7) {
      auto b = static_cast<unsigned char>(m[i++]);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
    }
    return v;
  };
  while (i < m.size()) {
    uint64_t key = varint();
    pb_field f;
    f.number = static_cast<int>(key >> 3);
    if ((key & 7) == 0) {
      f.varint = varint();
    } else if ((key & 7) == 2) {
      uint64_t n = varint();
      f.bytes = m.substr(i, n);
      i += n;
    } else {
      ADD_FAILURE() << "unexpected wire type " << (key & 7);
      break;
    }
    out.push_back(f);
  }
  return out;
}

std::vector<uint64_t> packed(const std::string& b) {
  std::vector<uint64_t> out;
  size_t i = 0;
  while (i < b.size()) {
    uint64_t v = 0;
    for (int shift = 0; i < b.size(); shift += 7) {
      auto c = static_cast<unsigned char>(b[i++]);
      v |= static_cast<uint64_t>(c & 0x7f) << shift;
      if (!(c & 0x80)) break;
    }
    out.push_back(v);
  }
  return out;
}

uint64_t field(const std::vector<pb_field>& fs, int n) {
  for (const pb_field& f : fs)
    if (f.number == n) return f.varint;
  return 0;
}

// ---------------------------------------------------------------------------------------
// Proto tests.

TEST_F(PprofTest, TopShowsFunctionNamesAndValues) {
  profile p = cpu_profile();
  command_result r = pprof("-top", encode_pprof(p));
  EXPECT_NE(r.out.find("of 40ms total"), std::string::npos) << r.out;
  EXPECT_EQ(flat(top_line(r.out, "weft_pprof_probe::leaf_alpha")), "30ms") << r.out;
  EXPECT_EQ(flat(top_line(r.out, "weft_pprof_probe::other_delta")), "10ms") << r.out;
  // Callers have no flat time but are there, cumulative.
  EXPECT_EQ(flat(top_line(r.out, "weft_pprof_probe::mid_beta")), "0") << r.out;
  std::string gamma = top_line(r.out, "weft_pprof_probe::root_gamma");
  EXPECT_NE(gamma.find("40ms"), std::string::npos) << r.out;
  // Names are embedded: pprof neither asks for the binary nor complains.
  EXPECT_EQ(r.err.find("symbolization"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("not available"), std::string::npos) << r.err;
}

TEST_F(PprofTest, RawShowsSampleTypesValuesAndMetadata) {
  profile p = cpu_profile();
  p.comments = {"weft test comment", "second comment"};
  command_result r = pprof("-raw", encode_pprof(p));
  EXPECT_NE(r.out.find("PeriodType: cpu nanoseconds"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Period: 10000000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Duration: 2s"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Time: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Comment: weft test comment"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Comment: second comment"), std::string::npos) << r.out;
  // No default: pprof marks none and uses the last type.
  EXPECT_NE(r.out.find("\nsamples/count cpu/nanoseconds\n"), std::string::npos) << r.out;
  std::vector<std::vector<int64_t>> vals = raw_samples(r.out);
  ASSERT_EQ(vals.size(), 2u) << r.out;
  EXPECT_EQ(vals[0], (std::vector<int64_t>{3, 30'000'000}));
  EXPECT_EQ(vals[1], (std::vector<int64_t>{1, 10'000'000}));
}

TEST_F(PprofTest, DefaultSampleTypeIsHonouredAndSampleIndexOverridesIt) {
  profile p = cpu_profile();
  p.default_sample_type = "samples";
  std::string data = encode_pprof(p);
  command_result raw = pprof("-raw", data);
  EXPECT_NE(raw.out.find("samples/count[dflt] cpu/nanoseconds"), std::string::npos) << raw.out;
  command_result top = pprof("-top", data);
  EXPECT_NE(top.out.find("of 4 total"), std::string::npos) << top.out;
  EXPECT_EQ(flat(top_line(top.out, "leaf_alpha")), "3") << top.out;
  command_result cpu = pprof("-top -sample_index=cpu", data);
  EXPECT_EQ(flat(top_line(cpu.out, "leaf_alpha")), "30ms") << cpu.out;
  command_result by_number = pprof("-top -sample_index=0", data);
  EXPECT_EQ(flat(top_line(by_number.out, "other_delta")), "1") << by_number.out;
}

TEST_F(PprofTest, StringAndNumericLabelsShowAndFilter) {
  profile p = cpu_profile();
  p.samples[0].labels = {str_label("handler", "/api"), num_label("bytes", 1024, "bytes")};
  p.samples[1].labels = {str_label("handler", "/static"), num_label("request_ms", 7)};
  std::string data = encode_pprof(p);
  command_result raw = pprof("-raw", data);
  EXPECT_NE(raw.out.find("handler:[/api]"), std::string::npos) << raw.out;
  EXPECT_NE(raw.out.find("handler:[/static]"), std::string::npos) << raw.out;
  EXPECT_NE(raw.out.find("bytes:[1024 bytes]"), std::string::npos) << raw.out;
  EXPECT_NE(raw.out.find("request_ms:[7]"), std::string::npos) << raw.out;

  command_result api = pprof("-top -tagfocus=handler=/api", data);
  EXPECT_NE(api.out.find("accounting for 30ms, 75.00% of 40ms total"), std::string::npos)
      << api.out;
  EXPECT_EQ(top_line(api.out, "other_delta"), "") << api.out;
  command_result stat = pprof("-top -tagfocus=handler=/static", data);
  EXPECT_NE(stat.out.find("accounting for 10ms, 25.00% of 40ms total"), std::string::npos)
      << stat.out;
  EXPECT_EQ(top_line(stat.out, "leaf_alpha"), "") << stat.out;
  // Numeric label with its unit: 1KB..2KB selects the 1024-byte sample only.
  command_result kb = pprof("-top -tagfocus=bytes=1kB:2kB", data);
  EXPECT_NE(kb.out.find("accounting for 30ms, 75.00% of 40ms total"), std::string::npos) << kb.out;
  command_result tags = pprof("-tags", data);
  EXPECT_NE(tags.out.find("1kB"), std::string::npos) << tags.out;
}

std::string readelf_build_id(const std::string& path) {
  command_result r = run_command("/", "readelf -n " + sh_quote(path));
  auto at = r.out.find("Build ID: ");
  if (at == std::string::npos) return "";
  std::stringstream ss(r.out.substr(at + 10));
  std::string id;
  ss >> id;
  return id;
}

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

TEST_F(PprofTest, MainMappingCarriesBuildIdAndSymbolizedFlags) {
  std::string exe = self_exe();
  std::string want = readelf_build_id(exe);
  if (want.empty()) GTEST_SKIP() << "readelf missing or the binary has no build id";
  std::string data = encode_pprof(cpu_profile());
  command_result r = pprof("-raw", data);
  auto at = r.out.find("\nMappings\n");
  ASSERT_NE(at, std::string::npos) << r.out;
  std::vector<std::string> maps = lines_of(r.out.substr(at + 10));
  ASSERT_FALSE(maps.empty());
  // The first mapping is the executable, with its build id and every has_* flag.
  EXPECT_EQ(maps[0].rfind("1: 0x", 0), 0u) << maps[0];
  EXPECT_NE(maps[0].find(" " + exe + " " + want + " [FN][FL][LN][IN]"), std::string::npos)
      << maps[0] << "\nwant build id " << want;

  // pprof keeps only the mappings its locations use; the proto lists the shared
  // libraries too, each with its build id, claiming nothing since no sample is there.
  std::vector<pb_field> top = parse_message(gunzip(data));
  std::vector<std::string> strings;
  for (const pb_field& f : top)
    if (f.number == 6) strings.push_back(f.bytes);
  std::vector<std::vector<pb_field>> mappings;
  for (const pb_field& f : top)
    if (f.number == 3) mappings.push_back(parse_message(f.bytes));
  ASSERT_GE(mappings.size(), 2u);
  EXPECT_EQ(strings.at(field(mappings[0], 5)), exe);
  EXPECT_EQ(strings.at(field(mappings[0], 6)), want);
  bool saw_libc = false;
  for (size_t i = 1; i < mappings.size(); i++) {
    const std::string& file = strings.at(field(mappings[i], 5));
    EXPECT_EQ(field(mappings[i], 1), i + 1);
    EXPECT_LT(field(mappings[i], 2), field(mappings[i], 3)) << file;
    EXPECT_EQ(field(mappings[i], 7), 0u) << file << " claims has_functions";
    EXPECT_EQ(field(mappings[i], 9), 0u) << file << " claims has_line_numbers";
    if (file.find("/libc.so") == std::string::npos) continue;
    saw_libc = true;
    EXPECT_EQ(strings.at(field(mappings[i], 6)), readelf_build_id(file)) << file;
  }
  EXPECT_TRUE(saw_libc);
}

// One address in the executable that nothing names (found by scanning its text for a
// gap, a PLT stub say) must not cost the mapping its flags: without them pprof would
// re-symbolize the whole executable itself, and lose the C++ names we gave.
TEST_F(PprofTest, AnUnnamedAddressKeepsTheMappingsFlagsAndOurNames) {
  profile p = cpu_profile();
  uintptr_t known_pc = p.samples[0].stack[0];
  // The executable's text mapping holding known_pc, from /proc/self/maps.
  uintptr_t lo = 0, hi = 0;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    uintptr_t a = 0, b = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx", &a, &b) == 2 && known_pc >= a && known_pc < b) {
      lo = a;
      hi = b;
    }
  }
  ASSERT_NE(lo, 0u);
  uintptr_t unnamed = 0;
  for (uintptr_t a = lo; a < hi && a < lo + (1 << 20) && !unnamed; a += 4) {
    auto frames = symbolize_frames(a);
    if (!frames.empty() && frames.back().function == "?") unnamed = a;
  }
  if (!unnamed) GTEST_SKIP() << "every address of the executable's text has a name";
  profile_sample odd;
  odd.stack = {unnamed};
  odd.values = {1, 10'000'000};
  p.samples.push_back(odd);
  p.leaf_exact = true;
  std::string data = encode_pprof(p);
  command_result raw = pprof("-raw", data);
  auto at = raw.out.find("\nMappings\n");
  ASSERT_NE(at, std::string::npos) << raw.out;
  EXPECT_NE(lines_of(raw.out.substr(at + 10)).at(0).find("[FN][FL][LN][IN]"), std::string::npos) << raw.out;
  command_result top = pprof("-top", data);
  EXPECT_NE(top.out.find("probe::root_gamma"), std::string::npos) << top.out;
}

TEST_F(PprofTest, InlinedFramesAreCalleeFirst) {
  std::vector<uintptr_t> stack = probe::outer_sigma();
  ASSERT_EQ(stack.size(), 1u);
  std::vector<symbol_info> frames = symbolize_frames(stack[0] - 1);
  if (frames.size() < 2) GTEST_SKIP() << "no inline debug info for the probe";
  profile p;
  p.sample_types = {{"goroutine", "count"}};
  p.samples.push_back(sample(stack, {1}));
  std::string data = encode_pprof(p);

  command_result traces = pprof("-traces", data);
  auto kappa = traces.out.find("weft_pprof_probe::inlined_kappa");
  auto sigma = traces.out.find("weft_pprof_probe::outer_sigma");
  ASSERT_NE(kappa, std::string::npos) << traces.out;
  ASSERT_NE(sigma, std::string::npos) << traces.out;
  EXPECT_LT(kappa, sigma) << "the inlined callee must come first:\n" << traces.out;

  // One location, two lines; the leaf (flat) function is the inlined one.
  command_result raw = pprof("-raw", data);
  auto loc = raw.out.find("\nLocations\n");
  ASSERT_NE(loc, std::string::npos);
  std::string locs = raw.out.substr(loc);
  EXPECT_LT(locs.find("inlined_kappa"), locs.find("outer_sigma")) << raw.out;
  EXPECT_NE(locs.find(hex(stack[0] - 1) + " M=1 "), std::string::npos) << raw.out;
  command_result top = pprof("-top", data);
  EXPECT_EQ(flat(top_line(top.out, "inlined_kappa")), "1") << top.out;
  EXPECT_EQ(flat(top_line(top.out, "outer_sigma")), "0") << top.out;
}

TEST_F(PprofTest, LeafExactLooksUpTheLeafPcItself) {
  auto zeta = reinterpret_cast<uintptr_t>(&probe::exact_zeta);
  std::vector<uintptr_t> callers = probe::root_gamma(false);  // [delta, gamma]
  profile p = cpu_profile();
  p.leaf_exact = true;
  p.samples.clear();
  std::vector<uintptr_t> stack = {zeta};
  stack.insert(stack.end(), callers.begin(), callers.end());
  p.samples.push_back(sample(stack, {5, 50'000'000}));
  std::string data = encode_pprof(p);
  command_result top = pprof("-top", data);
  EXPECT_EQ(flat(top_line(top.out, "weft_pprof_probe::exact_zeta")), "50ms") << top.out;
  command_result raw = pprof("-raw", data);
  // The leaf keeps its own address; the callers' return addresses become pc - 1.
  EXPECT_NE(raw.out.find(hex(zeta) + " M=1 weft_pprof_probe::exact_zeta"), std::string::npos)
      << raw.out;
  EXPECT_NE(raw.out.find(hex(callers[0] - 1) + " M=1 weft_pprof_probe::other_delta"),
            std::string::npos)
      << raw.out;

  // Without leaf_exact the same stack's first PC is treated as a return address.
  p.leaf_exact = false;
  command_result shifted = pprof("-raw", encode_pprof(p));
  EXPECT_EQ(shifted.out.find(hex(zeta) + " M=1"), std::string::npos) << shifted.out;
  EXPECT_NE(shifted.out.find(hex(zeta - 1) + " "), std::string::npos) << shifted.out;
}

TEST_F(PprofTest, UnknownPcsKeepTheProfileUsable) {
  profile p = cpu_profile();
  constexpr uintptr_t kNowhere = 0x10;  // in no mapping, no symbol
  p.samples[0].stack.insert(p.samples[0].stack.begin(), kNowhere);
  p.samples.push_back(sample({kNowhere}, {2, 20'000'000}));
  std::string data = encode_pprof(p);
  command_result raw = pprof("-raw", data);
  // A location with the address only, no mapping, no lines.
  auto loc = raw.out.find(hex(kNowhere - 1) + " \n");
  EXPECT_NE(loc, std::string::npos) << raw.out;
  // It does not cost the executable's mapping its flags.
  auto maps = raw.out.find("\nMappings\n1: ");
  ASSERT_NE(maps, std::string::npos) << raw.out;
  EXPECT_NE(raw.out.find("[FN][FL][LN][IN]", maps), std::string::npos) << raw.out;
  command_result top = pprof("-top", data);
  EXPECT_NE(top.out.find("of 60ms total"), std::string::npos) << top.out;
  EXPECT_EQ(flat(top_line(top.out, "other_delta")), "10ms") << top.out;
  EXPECT_NE(top.out.find("mid_beta"), std::string::npos) << top.out;
}

TEST(PprofEncode, MismatchedValueCountsThrow) {
  profile p;
  p.sample_types = {{"samples", "count"}, {"cpu", "nanoseconds"}};
  p.samples.push_back(sample({0x1000}, {1, 2}));
  EXPECT_NO_THROW(encode_pprof(p));
  p.samples.push_back(sample({0x1000}, {1}));
  EXPECT_THROW(encode_pprof(p), std::invalid_argument);
  p.samples.back().values = {1, 2, 3};
  EXPECT_THROW(encode_pprof(p), std::invalid_argument);
  p.sample_types.clear();
  p.samples = {sample({0x1000}, {})};
  EXPECT_THROW(encode_pprof(p), std::invalid_argument);  // samples need sample types
  p.samples.clear();
  EXPECT_NO_THROW(encode_pprof(p));  // an empty profile is fine
}

TEST(PprofEncode, StringTableAndDeduplication) {
  profile p = cpu_profile();
  // The same stacks again (same locations) and one sharing only gamma's function.
  p.samples.push_back(sample(probe::root_gamma(true), {1, 10'000'000}));
  p.samples[2].labels = {str_label("handler", "/api")};
  p.samples[0].labels = {str_label("handler", "/api")};
  p.comments = {"/api"};
  std::vector<pb_field> top = parse_message(gunzip(encode_pprof(p)));

  std::vector<std::string> strings;
  std::map<uint64_t, uint64_t> location_address;
  std::set<uint64_t> function_ids, mapping_ids;
  std::set<std::vector<uint64_t>> function_keys;
  std::vector<std::vector<uint64_t>> line_functions;  // per location
  std::vector<std::vector<uint64_t>> sample_locations;
  for (const pb_field& f : top) {
    if (f.number == 6) strings.push_back(f.bytes);
    if (f.number == 3) {
      EXPECT_TRUE(mapping_ids.insert(field(parse_message(f.bytes), 1)).second);
    }
    if (f.number == 5) {
      auto fn = parse_message(f.bytes);
      EXPECT_TRUE(function_ids.insert(field(fn, 1)).second) << "duplicate function id";
      EXPECT_TRUE(function_keys.insert({field(fn, 2), field(fn, 3), field(fn, 4)}).second)
          << "the same function twice";
    }
    if (f.number == 4) {
      auto loc = parse_message(f.bytes);
      uint64_t id = field(loc, 1);
      EXPECT_NE(id, 0u);
      EXPECT_TRUE(location_address.emplace(id, field(loc, 3)).second) << "duplicate location id";
      std::vector<uint64_t> fns;
      for (const pb_field& l : loc)
        if (l.number == 4) fns.push_back(field(parse_message(l.bytes), 1));
      line_functions.push_back(fns);
    }
    if (f.number == 2) {
      for (const pb_field& s : parse_message(f.bytes))
        if (s.number == 1) sample_locations.push_back(packed(s.bytes));
    }
  }
  ASSERT_FALSE(strings.empty());
  EXPECT_EQ(strings[0], "");
  EXPECT_EQ(std::set<std::string>(strings.begin(), strings.end()).size(), strings.size())
      << "a string appears twice in the table";

  // Locations: one per distinct address, shared by samples with the same stack.
  std::set<uint64_t> addresses;
  for (auto& [id, addr] : location_address) EXPECT_TRUE(addresses.insert(addr).second);
  EXPECT_EQ(location_address.size(), 5u);  // alpha, beta, gamma(->beta), delta, gamma(->delta)
  ASSERT_EQ(sample_locations.size(), 3u);
  EXPECT_EQ(sample_locations[0], sample_locations[2]);
  EXPECT_EQ(sample_locations[0].back() == sample_locations[1].back(), false);
  // Functions: gamma's two call sites share one function.
  EXPECT_EQ(function_ids.size(), 4u);
  for (const auto& fns : line_functions)
    for (uint64_t id : fns) EXPECT_TRUE(function_ids.count(id)) << "line names function " << id;
  for (const auto& locs : sample_locations)
    for (uint64_t id : locs)
      EXPECT_TRUE(location_address.count(id)) << "sample names location " << id;
  EXPECT_EQ(line_functions[2], line_functions[4]) << "both gamma locations name one function";
}

TEST(PprofEncode, EncodesFromAGoroutineInsideBlocking) {
  std::string data;
  testing::run_checked([&] {
    profile p = cpu_profile();
    data = weft::blocking([&] { return encode_pprof(p); });
  });
  ASSERT_GE(data.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(data[0]), 0x1f);
  EXPECT_EQ(static_cast<unsigned char>(data[1]), 0x8b);
  EXPECT_FALSE(gunzip(data).empty());
}

// ---------------------------------------------------------------------------------------
// Text forms.

// Go's frame lines for one stack (cells separated by single tabs), from the symbolizer.
std::vector<std::string> expected_frames(const std::vector<uintptr_t>& stack) {
  std::vector<std::string> out;
  for (uintptr_t pc : stack) {
    for (const symbol_info& f : symbolize_frames(pc - 1)) {
      if (f.function == "?") {
        out.push_back("#\t" + hex(pc - 1));
        continue;
      }
      out.push_back("#\t" + hex(pc - 1) + "\t" + f.function + "+" + hex(pc - 1 - f.entry) + "\t" +
                    f.file + ":" + std::to_string(f.line));
    }
  }
  return out;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string s;
  for (const std::string& l : lines) s += l + "\n";
  return s;
}

std::string pcs(const std::vector<uintptr_t>& stack) {
  std::string s = "@";
  for (uintptr_t pc : stack) s += " " + hex(pc);
  return s;
}

TEST_F(PprofTest, CountProfileTextIsGosFormat) {
  std::vector<uintptr_t> a = probe::root_gamma(true), b = probe::root_gamma(false);
  profile p;
  p.sample_types = {{"goroutine", "count"}};
  p.period_type = {"goroutine", "count"};
  p.period = 1;
  // a twice (one sample counting 2, one counting 1), b once labelled, b once without.
  p.samples.push_back(sample(b, {1}, {str_label("user", "x\"y"), str_label("a", "1")}));
  p.samples.push_back(sample(a, {2}));
  p.samples.push_back(sample(b, {1}));
  p.samples.push_back(sample(a, {1}));
  std::string text = format_count_profile_text("goroutine", p);
  std::vector<std::string> lines = lines_of(text);

  std::vector<std::string> want = {"goroutine profile: total 5", "3 " + pcs(a)};
  for (const std::string& f : expected_frames(a)) want.push_back(f);
  want.push_back("");
  // Equal counts: ordered by key, and "@ ..." sorts before "@ ...\n# labels".
  want.push_back("1 " + pcs(b));
  for (const std::string& f : expected_frames(b)) want.push_back(f);
  want.push_back("");
  want.push_back("1 " + pcs(b));
  want.push_back("# labels: {\"a\":\"1\", \"user\":\"x\\\"y\"}");
  for (const std::string& f : expected_frames(b)) want.push_back(f);
  want.push_back("");
  std::vector<std::string> got;
  for (const std::string& l : lines) got.push_back(collapse_tabs(l));
  EXPECT_EQ(got, want) << text;

  // Aligned exactly as Go's tabwriter aligns the same cells.
  EXPECT_EQ(text, go_tabwriter(join_lines(want)));

  // pprof's legacy parser reads it. It ignores the labels, so the two groups of b merge.
  command_result raw = pprof("-raw", text, "goroutine.txt");
  EXPECT_NE(raw.out.find("PeriodType: goroutine count"), std::string::npos) << raw.out;
  std::vector<std::vector<int64_t>> vals = raw_samples(raw.out);
  EXPECT_EQ(vals, (std::vector<std::vector<int64_t>>{{3}, {2}})) << raw.out;
  // Addresses are the return addresses minus one, as our own proto has them.
  EXPECT_NE(raw.out.find(hex(a[0] - 1)), std::string::npos) << raw.out;
}

TEST_F(PprofTest, FrameLinesAlignLikeGosTabwriter) {
  std::vector<uintptr_t> pads = {probe::pad_a(),       probe::pad_aa(),      probe::pad_aaa(),
                                 probe::pad_aaaa(),    probe::pad_aaaaa(),   probe::pad_aaaaaa(),
                                 probe::pad_aaaaaaa(), probe::pad_aaaaaaaa()};
  std::vector<uintptr_t> a = probe::root_gamma(true), b = probe::root_gamma(false);
  // One single-frame block per width, then blocks of mixed widths split by unknown
  // frames. Distinct counts, so the order is known: biggest first.
  std::vector<std::pair<int64_t, std::vector<uintptr_t>>> stacks;
  for (size_t i = 0; i < pads.size(); i++) stacks.push_back({30 - int64_t(i), {pads[i]}});
  stacks.push_back({3, {pads[7], pads[0], a[0], 0x10, b[0], pads[3], 0x20, a[2]}});
  stacks.push_back({2, {a[0], a[1], a[2]}});
  profile p;
  p.sample_types = {{"goroutine", "count"}};
  int64_t total = 0;
  for (auto& [n, st] : stacks) {
    p.samples.push_back(sample(st, {n}));
    total += n;
  }
  std::vector<std::string> want = {"goroutine profile: total " + std::to_string(total)};
  for (auto& [n, st] : stacks) {
    want.push_back(std::to_string(n) + " " + pcs(st));
    for (const std::string& f : expected_frames(st)) want.push_back(f);
    want.push_back("");
  }
  EXPECT_EQ(format_count_profile_text("goroutine", p), go_tabwriter(join_lines(want)));

  // The contention form prints the same frames under its own record lines.
  p.sample_types = {{"contentions", "count"}, {"delay", "nanoseconds"}};
  for (profile_sample& s : p.samples) s.values = {s.values[0], s.values[0] * 1000};
  want = {"--- contention:", "cycles/second=1000000000"};
  for (auto& [n, st] : stacks) {
    want.push_back(std::to_string(n * 1000) + " " + std::to_string(n) + " " + pcs(st));
    for (const std::string& f : expected_frames(st)) want.push_back(f);
    want.push_back("");
  }
  EXPECT_EQ(format_contention_profile_text("block", p, 0), go_tabwriter(join_lines(want)));
}

TEST_F(PprofTest, CountProfileTextPrintsUnknownFramesBare) {
  profile p;
  p.sample_types = {{"threadcreate", "count"}};
  p.samples.push_back(sample({0x10, 0x20}, {4}));
  std::string text = format_count_profile_text("threadcreate", p);
  EXPECT_EQ(text, "threadcreate profile: total 4\n4 @ 0x10 0x20\n#\t0xf\n#\t0x1f\n\n");
  command_result raw = pprof("-raw", text, "threadcreate.txt");
  EXPECT_EQ(raw_samples(raw.out), (std::vector<std::vector<int64_t>>{{4}})) << raw.out;
}

TEST_F(PprofTest, ContentionTextReadsBackAsNanoseconds) {
  std::vector<uintptr_t> a = probe::root_gamma(true), b = probe::root_gamma(false);
  profile p;
  p.sample_types = {{"contentions", "count"}, {"delay", "nanoseconds"}};
  p.period_type = {"contentions", "count"};
  p.period = 1;
  p.samples.push_back(sample(b, {7, 9'000}));  // more events, less delay
  p.samples.push_back(sample(a, {5, 1'234'567}));
  std::string text = format_contention_profile_text("block", p, 1);
  std::vector<std::string> lines = lines_of(text);
  ASSERT_GE(lines.size(), 4u);
  EXPECT_EQ(lines[0], "--- contention:");
  EXPECT_EQ(lines[1], "cycles/second=1000000000");
  EXPECT_EQ(lines[2], "1234567 5 " + pcs(a));  // sorted by delay
  std::vector<std::string> want = {lines[0], lines[1], lines[2]};
  for (const std::string& f : expected_frames(a)) want.push_back(f);
  want.push_back("");
  want.push_back("9000 7 " + pcs(b));
  for (const std::string& f : expected_frames(b)) want.push_back(f);
  want.push_back("");
  EXPECT_EQ(text, go_tabwriter(join_lines(want)));

  command_result raw = pprof("-raw", text, "block.txt");
  EXPECT_NE(raw.out.find("contentions/count delay/nanoseconds"), std::string::npos) << raw.out;
  EXPECT_EQ(raw_samples(raw.out), (std::vector<std::vector<int64_t>>{{5, 1'234'567}, {7, 9'000}}))
      << raw.out;
}

TEST_F(PprofTest, MutexTextCarriesTheSamplingPeriod) {
  std::vector<uintptr_t> a = probe::root_gamma(true);
  profile p;
  p.sample_types = {{"contentions", "count"}, {"delay", "nanoseconds"}};
  // As the proto holds them: 3 sampled events of 1000 ns in total, times period 10.
  p.samples.push_back(sample(a, {30, 10'000}));
  std::string text = format_contention_profile_text("mutex", p, 10);
  EXPECT_EQ(
      text.rfind(
          "--- mutex:\ncycles/second=1000000000\nsampling period=10\n1000 3 " + pcs(a) + "\n", 0),
      0u)
      << text;
  command_result raw = pprof("-raw", text, "mutex.txt");
  EXPECT_EQ(raw_samples(raw.out), (std::vector<std::vector<int64_t>>{{30, 10'000}})) << raw.out;

  // With mutex profiling off Go prints period 0, and pprof scales nothing.
  p.samples[0].values = {3, 1'000};
  std::string off = format_contention_profile_text("mutex", p, 0);
  EXPECT_NE(off.find("sampling period=0\n1000 3 @"), std::string::npos) << off;
  command_result raw0 = pprof("-raw", off, "mutex0.txt");
  EXPECT_EQ(raw_samples(raw0.out), (std::vector<std::vector<int64_t>>{{3, 1'000}})) << raw0.out;
}

// Go's scaleHeapSample (runtime/pprof/protomem.go).
std::pair<int64_t, int64_t> go_unsample(int64_t count, int64_t size, int64_t rate) {
  if (count == 0 || size == 0) return {0, 0};
  double avg = static_cast<double>(size) / static_cast<double>(count);
  double scale = 1 / (1 - std::exp(-avg / static_cast<double>(rate)));
  return {static_cast<int64_t>(static_cast<double>(count) * scale),
          static_cast<int64_t>(static_cast<double>(size) * scale)};
}

TEST_F(PprofTest, HeapTextIsGosFormatAndReadsBack) {
  constexpr int64_t kRate = 512 * 1024;
  std::vector<uintptr_t> a = probe::root_gamma(true), b = probe::root_gamma(false);
  std::vector<uintptr_t> c = probe::outer_sigma(), d = {probe::pad_aa(), b[1]};
  // Sampled records as Go's MemProfile would hold them.
  struct raw_record {
    int64_t alloc_n, alloc_b, inuse_n, inuse_b;
    std::vector<uintptr_t> stack;
    bool label;
  };
  std::vector<raw_record> recs = {
      {1000, 1000 * 4096, 4, 4 * 4096, b, true},                  // small: scale ~128
      {3, 3 * 1'000'000, 2, 2 * 1'000'000, a, true},              // large: scale ~1.17
      {7, 7 * 300'000 + 12'345, 5, 5 * 300'000 + 999, c, false},  // mixed sizes, no label
      {1, 10 << 20, 1, 10 << 20, d, true},                        // huge: scale ~1
  };
  profile p;
  p.sample_types = {{"alloc_objects", "count"},
                    {"alloc_space", "bytes"},
                    {"inuse_objects", "count"},
                    {"inuse_space", "bytes"}};
  p.period_type = {"space", "bytes"};
  p.period = kRate;
  for (const raw_record& r : recs) {
    auto [an, ab] = go_unsample(r.alloc_n, r.alloc_b, kRate);
    auto [in, ib] = go_unsample(r.inuse_n, r.inuse_b, kRate);
    p.samples.push_back(sample(r.stack, {an, ab, in, ib}));
    if (r.label) p.samples.back().labels = {num_label("bytes", r.alloc_b / r.alloc_n, "bytes")};
  }
  std::string text = format_heap_profile_text(p, kRate);
  std::vector<size_t> order = {3, 1, 2, 0};  // by in-use bytes

  // With mixed sizes several records have the same estimate (Go truncates), so the text
  // may print another of them than the one sampled: any whose estimate is exactly the
  // profile's values, close to the original.
  {
    std::vector<std::string> lines = lines_of(text);
    auto at = std::find_if(lines.begin(), lines.end(),
                           [&](const std::string& l) { return l.find(pcs(c)) != l.npos; });
    ASSERT_NE(at, lines.end()) << text;
    raw_record& r = recs[2];
    int64_t in = 0, ib = 0, an = 0, ab = 0;
    ASSERT_EQ(std::sscanf(at->c_str(), "%" SCNd64 ": %" SCNd64 " [%" SCNd64 ": %" SCNd64 "]", &in,
                          &ib, &an, &ab),
              4)
        << *at;
    EXPECT_EQ(go_unsample(an, ab, kRate), go_unsample(r.alloc_n, r.alloc_b, kRate)) << *at;
    EXPECT_EQ(go_unsample(in, ib, kRate), go_unsample(r.inuse_n, r.inuse_b, kRate)) << *at;
    EXPECT_EQ(an, r.alloc_n);
    EXPECT_EQ(in, r.inuse_n);
    EXPECT_NEAR(static_cast<double>(ab), static_cast<double>(r.alloc_b), 4);
    EXPECT_NEAR(static_cast<double>(ib), static_cast<double>(r.inuse_b), 4);
    r = {an, ab, in, ib, r.stack, r.label};
  }

  // Otherwise, what Go prints for those records: the sampled counts, biggest in-use
  // first, the rate doubled.
  int64_t t[4] = {0, 0, 0, 0};
  for (const raw_record& r : recs) {
    t[0] += r.inuse_n;
    t[1] += r.inuse_b;
    t[2] += r.alloc_n;
    t[3] += r.alloc_b;
  }
  auto counts = [](int64_t a, int64_t b, int64_t c, int64_t d) {
    return std::to_string(a) + ": " + std::to_string(b) + " [" + std::to_string(c) + ": " +
           std::to_string(d) + "]";
  };
  std::vector<std::string> want = {"heap profile: " + counts(t[0], t[1], t[2], t[3]) +
                                   " @ heap/1048576"};
  for (size_t i : order) {
    const raw_record& r = recs[i];
    want.push_back(counts(r.inuse_n, r.inuse_b, r.alloc_n, r.alloc_b) + " " + pcs(r.stack));
    for (const std::string& f : expected_frames(r.stack)) want.push_back(f);
    want.push_back("");
  }
  EXPECT_EQ(text, go_tabwriter(join_lines(want)));

  // pprof unsamples the records with Go's formula: exactly the profile's values again.
  command_result raw = pprof("-raw", text, "heap.txt");
  EXPECT_NE(
      raw.out.find("alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes"),
      std::string::npos)
      << raw.out;
  std::vector<std::vector<int64_t>> vals = raw_samples(raw.out);
  ASSERT_EQ(vals.size(), 4u) << raw.out;
  for (size_t k = 0; k < order.size(); k++) EXPECT_EQ(vals[k], p.samples[order[k]].values) << k;
}

}  // namespace
}  // namespace weft
