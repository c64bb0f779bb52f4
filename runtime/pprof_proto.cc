// profile.proto encoding and Go's legacy text profiles.
//
// Encoding. The proto is written by hand: a profile has six message types and a dozen
// scalar fields, so a varint writer, a length-prefixed nested message (encoded into its
// own buffer, then appended with its size) and packed repeated varints cover all of it.
// Strings are interned into one table ("" at index 0, each distinct string once) while
// the messages are built, and the table is written last; field order does not matter to
// a proto reader. The result is gzipped with zlib at the fastest level, as Go does.
//
// Symbolization happens here, so pprof never needs the binary: each distinct address
// becomes one Location whose Lines are the logical frames at that address (inlined
// callees first, the containing function last), each pointing at a Function deduplicated
// by (name, system name, file). Return addresses are looked up at pc - 1, the call
// instruction, and the Location records that address (as Go and pprof's legacy parsers
// do). An address no symbol covers still gets a Location, with the address only.
//
// Mappings are the executable, file-backed regions of /proc/self/maps (the executable
// first, then its shared libraries), each with the GNU build id found in the PT_NOTE
// segments of the loaded object covering it (dl_iterate_phdr: the notes are in memory,
// no file is opened). A mapping claims has_functions (has_filenames, has_line_numbers,
// has_inline_frames) when at least one of its locations got that much from
// symbolization: we read the same symbol tables and DWARF that pprof would, so an
// address we cannot name (a PLT stub, say) it cannot either. Without the flags pprof
// re-symbolizes the whole mapping from the file with its own tools, which for C++
// loses every function name we had.
//
// Text forms. Go writes its debug=1 profiles through text/tabwriter (minwidth 1,
// tabwidth 8, padding 1, tab padding), which aligns the tab-separated frame lines. The
// formatter below builds the same lines and aligns them with the same column-block rule,
// so the output matches Go's byte for byte for the same frames.
#include "runtime/pprof_proto.h"

#include <elf.h>
#include <link.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "runtime/runtime.h"
#include "runtime/symbolize.h"

namespace weft {
namespace {

// ---------------------------------------------------------------------------------------
// Protobuf writer.

enum : int {
  kWireVarint = 0,
  kWireBytes = 2,
};

// profile.proto field numbers.
enum : int {
  kProfileSampleType = 1,
  kProfileSample = 2,
  kProfileMapping = 3,
  kProfileLocation = 4,
  kProfileFunction = 5,
  kProfileStringTable = 6,
  kProfileTimeNanos = 9,
  kProfileDurationNanos = 10,
  kProfilePeriodType = 11,
  kProfilePeriod = 12,
  kProfileComment = 13,
  kProfileDefaultSampleType = 14,

  kValueTypeType = 1,
  kValueTypeUnit = 2,

  kSampleLocationId = 1,
  kSampleValue = 2,
  kSampleLabel = 3,

  kLabelKey = 1,
  kLabelStr = 2,
  kLabelNum = 3,
  kLabelNumUnit = 4,

  kMappingId = 1,
  kMappingStart = 2,
  kMappingLimit = 3,
  kMappingOffset = 4,
  kMappingFilename = 5,
  kMappingBuildId = 6,
  kMappingHasFunctions = 7,
  kMappingHasFilenames = 8,
  kMappingHasLineNumbers = 9,
  kMappingHasInlineFrames = 10,

  kLocationId = 1,
  kLocationMappingId = 2,
  kLocationAddress = 3,
  kLocationLine = 4,

  kLineFunctionId = 1,
  kLineLine = 2,

  kFunctionId = 1,
  kFunctionName = 2,
  kFunctionSystemName = 3,
  kFunctionFilename = 4,
};

class pb_writer {
 public:
  void varint(uint64_t v) {
    while (v >= 0x80) {
      buf_.push_back(static_cast<char>((v & 0x7f) | 0x80));
      v >>= 7;
    }
    buf_.push_back(static_cast<char>(v));
  }
  void key(int field, int wire) { varint((static_cast<uint64_t>(field) << 3) | wire); }

  // proto3 scalars: the default (0, false) is not written.
  void u64(int field, uint64_t v) {
    if (v == 0) return;
    key(field, kWireVarint);
    varint(v);
  }
  // Negative int64s are ten-byte varints of their two's complement, as proto specifies.
  void i64(int field, int64_t v) { u64(field, static_cast<uint64_t>(v)); }
  void boolean(int field, bool v) { u64(field, v ? 1 : 0); }

  void bytes(int field, std::string_view s) {
    key(field, kWireBytes);
    varint(s.size());
    buf_.append(s);
  }
  void message(int field, const pb_writer& m) { bytes(field, m.buf_); }

  template <class T>
  void packed(int field, const std::vector<T>& vs) {
    if (vs.empty()) return;
    pb_writer body;
    for (T v : vs) body.varint(static_cast<uint64_t>(v));
    message(field, body);
  }

  void clear() { buf_.clear(); }
  const std::string& data() const { return buf_; }

 private:
  std::string buf_;
};

class string_table {
 public:
  string_table() { intern(""); }
  int64_t intern(const std::string& s) {
    auto [it, added] = index_.try_emplace(s, static_cast<int64_t>(strings_.size()));
    if (added) strings_.push_back(s);
    return it->second;
  }
  const std::vector<std::string>& strings() const { return strings_; }

 private:
  std::unordered_map<std::string, int64_t> index_;
  std::vector<std::string> strings_;
};

std::string gzip(const std::string& in) {
  z_stream zs{};
  // windowBits 15 + 16: a gzip header and trailer instead of zlib's.
  if (deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("encode_pprof: deflateInit2 failed");
  std::string out(deflateBound(&zs, in.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&zs, Z_FINISH);
  size_t n = zs.total_out;
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw std::runtime_error("encode_pprof: deflate failed");
  out.resize(n);
  return out;
}

// ---------------------------------------------------------------------------------------
// Mappings.

struct mapping {
  uint64_t start = 0, limit = 0, offset = 0;
  std::string file;
  std::string build_id;
  // Symbolization results over the locations in this mapping.
  int locations = 0;
  int with_functions = 0, with_lines = 0;  // locations symbolized that far
};

struct loaded_object {
  std::vector<std::pair<uintptr_t, uintptr_t>> segments;  // PT_LOAD [start, end)
  std::string build_id;
};

std::string hex(const unsigned char* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) {
    s.push_back(digits[p[i] >> 4]);
    s.push_back(digits[p[i] & 15]);
  }
  return s;
}

std::string find_build_id(const dl_phdr_info* info, const ElfW(Phdr) & ph) {
  size_t align = ph.p_align >= 8 ? 8 : 4;
  auto pad = [align](size_t n) { return (n + align - 1) & ~(align - 1); };
  auto* p = reinterpret_cast<const unsigned char*>(info->dlpi_addr + ph.p_vaddr);
  const unsigned char* end = p + ph.p_memsz;
  while (p + sizeof(ElfW(Nhdr)) <= end) {
    ElfW(Nhdr) nh;
    std::memcpy(&nh, p, sizeof nh);
    const unsigned char* name = p + sizeof nh;
    const unsigned char* desc = name + pad(nh.n_namesz);
    const unsigned char* next = desc + pad(nh.n_descsz);
    if (next > end || next <= p) break;
    if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && std::memcmp(name, "GNU", 4) == 0)
      return hex(desc, nh.n_descsz);
    p = next;
  }
  return "";
}

int collect_object(dl_phdr_info* info, size_t, void* arg) {
  auto* out = static_cast<std::vector<loaded_object>*>(arg);
  loaded_object obj;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD) {
      uintptr_t start = info->dlpi_addr + ph.p_vaddr;
      obj.segments.emplace_back(start, start + ph.p_memsz);
    } else if (ph.p_type == PT_NOTE && obj.build_id.empty()) {
      obj.build_id = find_build_id(info, ph);
    }
  }
  out->push_back(std::move(obj));
  return 0;
}

// The executable, file-backed regions of the process, the executable's first.
std::vector<mapping> read_mappings() {
  std::vector<loaded_object> objects;
  dl_iterate_phdr(collect_object, &objects);

  std::string exe;
  {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n > 0) exe.assign(buf, static_cast<size_t>(n));
  }

  std::vector<mapping> out;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    // start-end perms offset dev inode path
    unsigned long long start = 0, end = 0, offset = 0;
    char perms[8] = {};
    int path_at = -1;
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %*s %*s %n", &start, &end, perms, &offset,
                    &path_at) < 4 ||
        path_at < 0)
      continue;
    if (std::strlen(perms) < 3 || perms[2] != 'x') continue;
    std::string path = line.substr(static_cast<size_t>(path_at));
    if (path.empty() || path[0] != '/') continue;  // anonymous, [vdso], [stack]...
    constexpr std::string_view deleted = " (deleted)";
    if (path.size() > deleted.size() && path.ends_with(deleted))
      path.resize(path.size() - deleted.size());
    mapping m;
    m.start = start;
    m.limit = end;
    m.offset = offset;
    m.file = path;
    for (const loaded_object& obj : objects) {
      bool covers = std::any_of(obj.segments.begin(), obj.segments.end(),
                                [&](auto seg) { return start >= seg.first && start < seg.second; });
      if (covers) {
        m.build_id = obj.build_id;
        break;
      }
    }
    out.push_back(std::move(m));
  }
  std::stable_partition(out.begin(), out.end(), [&](const mapping& m) { return m.file == exe; });
  return out;
}

// ---------------------------------------------------------------------------------------
// Symbols shared by the encoder and the text forms.

bool known(const symbol_info& f) {
  return !f.function.empty() && f.function != "?";
}

// The address to symbolize for stack[i]: the call instruction for return addresses.
uintptr_t lookup_pc(const profile& p, size_t i, uintptr_t pc) {
  if (i == 0 && p.leaf_exact) return pc;
  return pc == 0 ? 0 : pc - 1;
}

bool is_numeric(const profile_label& l) {
  return l.is_num || !l.num_unit.empty() || (l.str.empty() && l.num != 0);
}

void check_values(const profile& p) {
  if (!p.samples.empty() && p.sample_types.empty())
    throw std::invalid_argument("encode_pprof: samples without sample types");
  for (size_t i = 0; i < p.samples.size(); i++) {
    if (p.samples[i].values.size() != p.sample_types.size())
      throw std::invalid_argument("encode_pprof: sample " + std::to_string(i) + " has " +
                                  std::to_string(p.samples[i].values.size()) + " values for " +
                                  std::to_string(p.sample_types.size()) + " sample types");
  }
}

// ---------------------------------------------------------------------------------------
// Text forms.

std::string hex_addr(uint64_t v) {  // Go's %#x
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

// Go's %q (strconv.Quote): printable runes as they are, the rest escaped. Printability
// outside ASCII is approximated: C1 controls, non-ASCII spaces and the common format
// characters are escaped, everything else valid is kept.
bool go_printable(uint32_t r) {
  if (r < 0x20 || r == 0x7f) return false;
  if (r >= 0x80 && r <= 0xa0) return false;
  if (r == 0xad || r == 0x1680 || r == 0x3000 || r == 0xfeff) return false;
  if (r >= 0x2000 && r <= 0x200f) return false;
  if (r >= 0x2028 && r <= 0x202f) return false;
  if (r >= 0x205f && r <= 0x2064) return false;
  if (r >= 0xfff9 && r <= 0xfffb) return false;
  if (r == 0xfffe || r == 0xffff) return false;
  return true;
}

std::string go_quote(std::string_view s) {
  std::string out = "\"";
  char buf[16];
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      i++;
      switch (c) {
        case '"':
          out += "\\\"";
          continue;
        case '\\':
          out += "\\\\";
          continue;
        case '\a':
          out += "\\a";
          continue;
        case '\b':
          out += "\\b";
          continue;
        case '\f':
          out += "\\f";
          continue;
        case '\n':
          out += "\\n";
          continue;
        case '\r':
          out += "\\r";
          continue;
        case '\t':
          out += "\\t";
          continue;
        case '\v':
          out += "\\v";
          continue;
        default:
          break;
      }
      if (c < 0x20 || c == 0x7f) {
        std::snprintf(buf, sizeof buf, "\\x%02x", c);
        out += buf;
      } else {
        out.push_back(static_cast<char>(c));
      }
      continue;
    }
    // A UTF-8 sequence; an invalid byte is escaped alone.
    size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
    uint32_t r = n == 4 ? c & 0x07 : n == 3 ? c & 0x0f : c & 0x1f;
    bool ok = n != 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; k++) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) ok = false;
      r = (r << 6) | (cc & 0x3f);
    }
    if (ok) {
      static const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
      if (r < min_for_len[n] || r > 0x10ffff || (r >= 0xd800 && r <= 0xdfff)) ok = false;
    }
    if (!ok) {
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
      i++;
      continue;
    }
    if (go_printable(r)) {
      out.append(s.substr(i, n));
    } else {
      std::snprintf(buf, sizeof buf, r < 0x10000 ? "\\u%04x" : "\\U%08x", r);
      out += buf;
    }
    i += n;
  }
  out += "\"";
  return out;
}

// runtime/pprof's labelMap.String(): {"k":"v", ...}, sorted. String labels only.
std::string labels_text(const std::vector<profile_label>& labels) {
  std::vector<std::string> kv;
  for (const profile_label& l : labels)
    if (!is_numeric(l)) kv.push_back(go_quote(l.key) + ":" + go_quote(l.str));
  if (kv.empty()) return "";
  std::sort(kv.begin(), kv.end());
  std::string s = "{";
  for (size_t i = 0; i < kv.size(); i++) s += (i ? ", " : "") + kv[i];
  return s + "}";
}

std::string pcs_text(const std::vector<uintptr_t>& stack) {
  std::string s = "@";
  for (uintptr_t pc : stack) s += " " + hex_addr(pc);
  return s;
}

// runtime/pprof's printStackRecord: one "#\tpc\tfunc+off\tfile:line" line per logical
// frame (pc being the looked-up address), "#\tpc" for unknown ones, then a blank line.
// Go hides leading runtime.* frames and runtime.goexit; C++ frames have no such names,
// so every frame is printed (the producer trims its own frames when it captures).
void stack_record_text(const profile& p, const std::vector<uintptr_t>& stack, std::string& out) {
  for (size_t i = 0; i < stack.size(); i++) {
    uintptr_t pc = lookup_pc(p, i, stack[i]);
    std::vector<symbol_info> frames = symbolize_frames(pc);
    for (const symbol_info& f : frames) {
      if (!known(f)) {
        out += "#\t" + hex_addr(pc) + "\n";
        continue;
      }
      uint64_t off = f.entry != 0 && pc >= f.entry ? pc - f.entry : 0;
      out += "#\t" + hex_addr(pc) + "\t" + f.function + "+" + hex_addr(off) + "\t" +
             (f.file.empty() ? "?" : f.file) + ":" + std::to_string(f.line) + "\n";
    }
  }
  out += "\n";
}

// Go's text/tabwriter with minwidth 1, tabwidth 8, padding 1, padchar '\t', no flags.
// Cells are tab-terminated; the text after a line's last tab is not part of any column.
// A column block is a run of consecutive lines that all have a cell in that column; its
// width is the widest cell plus padding, and each cell is followed by as many tabs as
// reach the next multiple of 8 at or past that width.
class tab_aligner {
 public:
  explicit tab_aligner(std::string_view text) {
    size_t pos = 0;
    while (true) {
      size_t nl = text.find('\n', pos);
      std::string_view line = text.substr(pos, nl == std::string_view::npos ? text.npos : nl - pos);
      std::vector<std::string_view> cells;
      size_t c = 0;
      while (true) {
        size_t tab = line.find('\t', c);
        if (tab == std::string_view::npos) break;
        cells.push_back(line.substr(c, tab - c));
        c = tab + 1;
      }
      cells.push_back(line.substr(c));
      lines_.push_back(std::move(cells));
      if (nl == std::string_view::npos) break;
      pos = nl + 1;
    }
  }

  std::string str() {
    std::vector<size_t> widths;
    format(0, lines_.size(), widths);
    return std::move(out_);
  }

 private:
  static constexpr size_t kMinWidth = 1, kTabWidth = 8, kPadding = 1;

  static size_t width(std::string_view s) {  // in runes, as Go counts
    size_t n = 0;
    for (char c : s)
      if ((static_cast<unsigned char>(c) & 0xc0) != 0x80) n++;
    return n;
  }

  // Number of tab-terminated cells (the trailing text is not one).
  size_t columns(size_t line) const { return lines_[line].size() - 1; }

  void write_lines(size_t l0, size_t l1, const std::vector<size_t>& widths) {
    for (size_t i = l0; i < l1; i++) {
      const auto& cells = lines_[i];
      for (size_t j = 0; j < cells.size(); j++) {
        out_.append(cells[j]);
        if (j < widths.size()) {
          size_t cellw = (widths[j] + kTabWidth - 1) / kTabWidth * kTabWidth;
          size_t pad = cellw - width(cells[j]);
          out_.append((pad + kTabWidth - 1) / kTabWidth, '\t');
        }
      }
      if (i + 1 < lines_.size()) out_.push_back('\n');
    }
  }

  void format(size_t l0, size_t l1, std::vector<size_t>& widths) {
    size_t column = widths.size();
    for (size_t at = l0; at < l1; at++) {
      if (column >= columns(at)) continue;
      // A block for this column starts here: lines before it are complete.
      write_lines(l0, at, widths);
      l0 = at;
      size_t w = kMinWidth;
      for (; at < l1 && column < columns(at); at++)
        w = std::max(w, width(lines_[at][column]) + kPadding);
      widths.push_back(w);
      format(l0, at, widths);
      widths.pop_back();
      l0 = at;
      if (at == l1) break;
    }
    write_lines(l0, l1, widths);
  }

  std::vector<std::vector<std::string_view>> lines_;
  std::string out_;
};

int find_type(const profile& p, std::string_view type, int fallback) {
  for (size_t i = 0; i < p.sample_types.size(); i++)
    if (p.sample_types[i].type == type) return static_cast<int>(i);
  return fallback < static_cast<int>(p.sample_types.size()) ? fallback : -1;
}

int64_t value_at(const profile_sample& s, int i) {
  return i >= 0 && static_cast<size_t>(i) < s.values.size() ? s.values[static_cast<size_t>(i)] : 0;
}

// Go's scaleHeapSample (runtime/pprof/protomem.go), which pprof's legacy heap parser
// also applies: the estimate of a sampled (count, bytes) record at `rate`.
std::pair<int64_t, int64_t> scale_heap(int64_t count, int64_t size, int64_t rate) {
  if (count == 0 || size == 0) return {0, 0};
  if (rate <= 1) return {count, size};
  double avg = static_cast<double>(size) / static_cast<double>(count);
  double scale = 1 / (1 - std::exp(-avg / static_cast<double>(rate)));
  return {static_cast<int64_t>(static_cast<double>(count) * scale),
          static_cast<int64_t>(static_cast<double>(size) * scale)};
}

// Its inverse: a sampled record that scale_heap maps back to exactly (count, size), so
// that pprof, reading the text, recovers the profile's values. Given the scale, a record
// value r is the integer in [v / scale, (v + 1) / scale); the scale depends on the
// record's average size, so iterate from a first guess (the "bytes" label when the
// sample has one, else the estimate's own average), then look around the fixed point:
// truncation can leave it one or two units off, and several records can share an
// estimate (any of them will do).
std::pair<int64_t, int64_t> unscale_heap(int64_t count, int64_t size, int64_t rate,
                                         int64_t avg_hint) {
  if (count <= 0 || size <= 0 || rate <= 1) return {count, size};
  auto back = [](int64_t v, double s) {
    double x = static_cast<double>(v) / s;
    return std::max<int64_t>(1, static_cast<int64_t>(std::ceil(x - 1e-9 * std::max(1.0, x))));
  };
  double avg = avg_hint > 0 ? static_cast<double>(avg_hint)
                            : static_cast<double>(size) / static_cast<double>(count);
  int64_t c = 0, b = 0;
  for (int i = 0; i < 64; i++) {
    double s = 1 / (1 - std::exp(-avg / static_cast<double>(rate)));
    int64_t nc = back(count, s), nb = back(size, s);
    if (nc == c && nb == b) break;
    c = nc;
    b = nb;
    avg = static_cast<double>(b) / static_cast<double>(c);
  }
  std::pair<int64_t, int64_t> want{count, size};
  for (int64_t dist = 0; dist <= 6; dist++) {
    for (int64_t dc = -2; dc <= 2; dc++) {
      for (int64_t db = -6; db <= 6; db++) {
        if (std::abs(dc) + std::abs(db) != dist || c + dc < 1 || b + db < 1) continue;
        if (scale_heap(c + dc, b + db, rate) == want) return {c + dc, b + db};
      }
    }
  }
  return {c, b};
}

int64_t avg_size_label(const profile_sample& s) {
  for (const profile_label& l : s.labels)
    if (l.key == "bytes" && is_numeric(l) && l.num > 0) return l.num;
  return 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------

static std::string encode_pprof_here(const profile& p) {
  check_values(p);

  string_table strings;
  pb_writer out;
  pb_writer msg, sub;

  auto value_type = [&](int field, const profile_value_type& vt) {
    msg.clear();
    msg.i64(kValueTypeType, strings.intern(vt.type));
    msg.i64(kValueTypeUnit, strings.intern(vt.unit));
    out.message(field, msg);
  };
  for (const profile_value_type& vt : p.sample_types) value_type(kProfileSampleType, vt);

  std::vector<mapping> mappings = read_mappings();
  auto mapping_of = [&](uintptr_t addr) -> int {
    for (size_t i = 0; i < mappings.size(); i++)
      if (addr >= mappings[i].start && addr < mappings[i].limit) return static_cast<int>(i);
    return -1;
  };

  // Locations and functions, numbered from 1 in order of first use.
  std::unordered_map<uintptr_t, uint64_t> location_ids;
  std::map<std::tuple<std::string, std::string, std::string>, uint64_t> function_ids;
  pb_writer locations, functions;

  auto function_id = [&](const symbol_info& f) {
    std::string system_name = f.mangled.empty() ? f.function : f.mangled;
    auto key = std::make_tuple(f.function, system_name, f.file);
    auto [it, added] = function_ids.try_emplace(key, function_ids.size() + 1);
    if (added) {
      msg.clear();
      msg.u64(kFunctionId, it->second);
      msg.i64(kFunctionName, strings.intern(f.function));
      msg.i64(kFunctionSystemName, strings.intern(system_name));
      msg.i64(kFunctionFilename, strings.intern(f.file));
      functions.message(kProfileFunction, msg);
    }
    return it->second;
  };

  auto location_id = [&](uintptr_t addr) {
    auto [it, added] = location_ids.try_emplace(addr, location_ids.size() + 1);
    if (!added) return it->second;
    std::vector<symbol_info> frames = symbolize_frames(addr);
    bool symbolized = !frames.empty() && std::all_of(frames.begin(), frames.end(), known);
    int m = mapping_of(addr);
    if (m >= 0) {
      mapping& mp = mappings[static_cast<size_t>(m)];
      mp.locations++;
      if (symbolized) {
        mp.with_functions++;
        if (std::all_of(frames.begin(), frames.end(), [](const symbol_info& f) { return !f.file.empty() && f.line > 0; }))
          mp.with_lines++;
      }
    }
    // Lines first (their functions are interned as they come), then the location.
    pb_writer lines;
    if (symbolized) {
      for (const symbol_info& f : frames) {  // innermost (callee) first
        sub.clear();
        sub.u64(kLineFunctionId, function_id(f));
        sub.i64(kLineLine, f.line);
        lines.message(kLocationLine, sub);
      }
    }
    msg.clear();
    msg.u64(kLocationId, it->second);
    if (m >= 0) msg.u64(kLocationMappingId, static_cast<uint64_t>(m) + 1);
    msg.u64(kLocationAddress, addr);
    std::string body = msg.data() + lines.data();
    locations.bytes(kProfileLocation, body);
    return it->second;
  };

  std::vector<uint64_t> ids;
  for (const profile_sample& s : p.samples) {
    ids.clear();
    for (size_t i = 0; i < s.stack.size(); i++)
      ids.push_back(location_id(lookup_pc(p, i, s.stack[i])));
    pb_writer sample;
    sample.packed(kSampleLocationId, ids);
    sample.packed(kSampleValue, s.values);
    for (const profile_label& l : s.labels) {
      sub.clear();
      sub.i64(kLabelKey, strings.intern(l.key));
      if (is_numeric(l)) {
        sub.i64(kLabelNum, l.num);
        if (!l.num_unit.empty()) sub.i64(kLabelNumUnit, strings.intern(l.num_unit));
      } else {
        sub.i64(kLabelStr, strings.intern(l.str));
      }
      sample.message(kSampleLabel, sub);
    }
    out.message(kProfileSample, sample);
  }

  for (size_t i = 0; i < mappings.size(); i++) {
    const mapping& m = mappings[i];
    bool fn = m.with_functions > 0;
    msg.clear();
    msg.u64(kMappingId, i + 1);
    msg.u64(kMappingStart, m.start);
    msg.u64(kMappingLimit, m.limit);
    msg.u64(kMappingOffset, m.offset);
    msg.i64(kMappingFilename, strings.intern(m.file));
    msg.i64(kMappingBuildId, strings.intern(m.build_id));
    msg.boolean(kMappingHasFunctions, fn);
    msg.boolean(kMappingHasFilenames, fn && m.with_lines > 0);
    msg.boolean(kMappingHasLineNumbers, fn && m.with_lines > 0);
    // Inline frames come from the same DWARF as the line numbers.
    msg.boolean(kMappingHasInlineFrames, fn && m.with_lines > 0);
    out.message(kProfileMapping, msg);
  }
  std::string body = out.data();
  body += locations.data();
  body += functions.data();

  pb_writer tail;
  tail.i64(kProfileTimeNanos, p.time_nanos);
  tail.i64(kProfileDurationNanos, p.duration_nanos);
  if (!p.period_type.type.empty() || !p.period_type.unit.empty()) {
    msg.clear();
    msg.i64(kValueTypeType, strings.intern(p.period_type.type));
    msg.i64(kValueTypeUnit, strings.intern(p.period_type.unit));
    tail.message(kProfilePeriodType, msg);
  }
  tail.i64(kProfilePeriod, p.period);
  std::vector<int64_t> comments;
  for (const std::string& c : p.comments) comments.push_back(strings.intern(c));
  tail.packed(kProfileComment, comments);
  if (!p.default_sample_type.empty())
    tail.i64(kProfileDefaultSampleType, strings.intern(p.default_sample_type));
  for (const std::string& s : strings.strings()) tail.bytes(kProfileStringTable, s);

  return gzip(body + tail.data());
}

static std::string format_count_profile_text_here(std::string_view name, const profile& p) {
  // Group by stack and labels, as the key Go builds: "@ 0x.. 0x..[\n# labels: {...}]".
  struct group {
    int64_t count = 0;
    size_t first = 0;
  };
  std::unordered_map<std::string, group> groups;
  std::vector<std::string> keys;
  int64_t total = 0;
  for (size_t i = 0; i < p.samples.size(); i++) {
    const profile_sample& s = p.samples[i];
    std::string key = pcs_text(s.stack);
    std::string labels = labels_text(s.labels);
    if (!labels.empty()) key += "\n# labels: " + labels;
    int64_t n = s.values.empty() ? 1 : s.values[0];
    auto [it, added] = groups.try_emplace(key, group{0, i});
    if (added) keys.push_back(key);
    it->second.count += n;
    total += n;
  }
  std::sort(keys.begin(), keys.end(), [&](const std::string& a, const std::string& b) {
    int64_t ca = groups[a].count, cb = groups[b].count;
    return ca != cb ? ca > cb : a < b;
  });

  std::string text = std::string(name) + " profile: total " + std::to_string(total) + "\n";
  for (const std::string& k : keys) {
    const group& g = groups[k];
    text += std::to_string(g.count) + " " + k + "\n";
    stack_record_text(p, p.samples[g.first].stack, text);
  }
  return tab_aligner(text).str();
}

static std::string format_heap_profile_text_here(const profile& p, int64_t sample_rate) {
  int alloc_objects = find_type(p, "alloc_objects", 0),
      alloc_space = find_type(p, "alloc_space", 1);
  int inuse_objects = find_type(p, "inuse_objects", 2),
      inuse_space = find_type(p, "inuse_space", 3);
  struct record {
    int64_t inuse_n, inuse_b, alloc_n, alloc_b;
    const profile_sample* s;
  };
  std::vector<record> records;
  int64_t total[4] = {0, 0, 0, 0};
  for (const profile_sample& s : p.samples) {
    int64_t avg = avg_size_label(s);
    auto [an, ab] =
        unscale_heap(value_at(s, alloc_objects), value_at(s, alloc_space), sample_rate, avg);
    auto [in, ib] =
        unscale_heap(value_at(s, inuse_objects), value_at(s, inuse_space), sample_rate, avg);
    records.push_back({in, ib, an, ab, &s});
    total[0] += in;
    total[1] += ib;
    total[2] += an;
    total[3] += ab;
  }
  std::stable_sort(records.begin(), records.end(),
                   [](const record& a, const record& b) { return a.inuse_b > b.inuse_b; });

  auto counts = [](int64_t in, int64_t ib, int64_t an, int64_t ab) {
    return std::to_string(in) + ": " + std::to_string(ib) + " [" + std::to_string(an) + ": " +
           std::to_string(ab) + "]";
  };
  // Go prints 2*MemProfileRate: old C++ pprof expected it, and pprof halves it back.
  std::string text = "heap profile: " + counts(total[0], total[1], total[2], total[3]) +
                     " @ heap/" + std::to_string(2 * sample_rate) + "\n";
  for (const record& r : records) {
    text += counts(r.inuse_n, r.inuse_b, r.alloc_n, r.alloc_b) + " " + pcs_text(r.s->stack) + "\n";
    stack_record_text(p, r.s->stack, text);
  }
  return tab_aligner(text).str();
}

static std::string format_contention_profile_text_here(std::string_view name, const profile& p,
                                           int64_t sampling_period) {
  // Nanoseconds are printed as cycles at 1 GHz, so pprof's cycles-to-ns conversion is
  // the identity. pprof multiplies mutex records by the sampling period; the profile's
  // values already include it, so they are divided back.
  bool mutex = name == "mutex";
  int64_t divisor = mutex && sampling_period > 1 ? sampling_period : 1;
  int count_i = find_type(p, "contentions", 0), delay_i = find_type(p, "delay", 1);
  std::vector<std::pair<int64_t, int64_t>> values;  // (cycles, count) per sample
  std::vector<size_t> order;
  for (size_t i = 0; i < p.samples.size(); i++) {
    values.emplace_back(value_at(p.samples[i], delay_i) / divisor,
                        value_at(p.samples[i], count_i) / divisor);
    order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return values[a].first > values[b].first; });

  std::string header = name == "block" ? "contention" : std::string(name);
  std::string text = "--- " + header + ":\ncycles/second=1000000000\n";
  if (mutex) text += "sampling period=" + std::to_string(sampling_period) + "\n";
  for (size_t i : order) {
    text += std::to_string(values[i].first) + " " + std::to_string(values[i].second) + " " +
            pcs_text(p.samples[i].stack) + "\n";
    stack_record_text(p, p.samples[i].stack, text);
  }
  return tab_aligner(text).str();
}

// The public entry points run on the thread stack (symbolization and zlib recurse
// deeply): inside blocking() when called on a goroutine.
std::string encode_pprof(const profile& p) {
  return blocking([&] { return encode_pprof_here(p); });
}

std::string format_count_profile_text(std::string_view name, const profile& p) {
  return blocking([&] { return format_count_profile_text_here(name, p); });
}

std::string format_heap_profile_text(const profile& p, int64_t sample_rate) {
  return blocking([&] { return format_heap_profile_text_here(p, sample_rate); });
}

std::string format_contention_profile_text(std::string_view name, const profile& p,
                                           int64_t sampling_period) {
  return blocking([&] { return format_contention_profile_text_here(name, p, sampling_period); });
}

}  // namespace weft
