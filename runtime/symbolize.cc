// Symbolization with libdw's Dwfl over the running process.
#include "runtime/symbolize.h"

#include <cxxabi.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <unistd.h>

#include <cstdlib>
#include <mutex>
#include <unordered_map>

namespace weft {
namespace {

struct symbolizer {
  std::mutex mu;
  Dwfl* dwfl = nullptr;
  Dwfl_Callbacks callbacks{};
  std::unordered_map<uintptr_t, symbol_info> cache;
  std::unordered_map<uintptr_t, std::vector<symbol_info>> frames_cache;
  char* debuginfo_path = nullptr;

  symbolizer() {
    callbacks.find_elf = dwfl_linux_proc_find_elf;
    callbacks.find_debuginfo = dwfl_standard_find_debuginfo;
    callbacks.debuginfo_path = &debuginfo_path;
    refresh();
  }

  // (Re)reads the process's mappings: libraries loaded later are picked up on a miss.
  void refresh() {
    if (dwfl) dwfl_end(dwfl);
    dwfl = dwfl_begin(&callbacks);
    if (!dwfl) return;
    dwfl_report_begin(dwfl);
    dwfl_linux_proc_report(dwfl, getpid());
    dwfl_report_end(dwfl, nullptr, nullptr);
  }

  symbol_info lookup(uintptr_t pc) {
    symbol_info out;
    out.function = "?";
    if (!dwfl) return out;
    Dwfl_Module* mod = dwfl_addrmodule(dwfl, pc);
    if (!mod) {
      refresh();
      mod = dwfl ? dwfl_addrmodule(dwfl, pc) : nullptr;
      if (!mod) return out;
    }
    Dwarf_Addr base = 0;
    const char* modname = dwfl_module_info(mod, nullptr, &base, nullptr, nullptr, nullptr, nullptr, nullptr);
    if (modname) out.module = modname;
    out.module_base = base;
    GElf_Off offset = 0;
    GElf_Sym sym;
    const char* name = dwfl_module_addrinfo(mod, pc, &offset, &sym, nullptr, nullptr, nullptr);
    if (name && (*name == '\0' || GELF_ST_TYPE(sym.st_info) == STT_SECTION)) name = nullptr;
    if (!name) {
      // No usable ELF symbol (none, an empty name or a section symbol): the DWARF
      // subprogram holding pc, if there is debug info, names it.
      Dwarf_Addr bias = 0;
      if (Dwarf_Die* cudie = dwfl_module_addrdie(mod, pc, &bias)) {
        Dwarf_Die* scopes = nullptr;
        int n = dwarf_getscopes(cudie, pc - bias, &scopes);
        for (int i = n - 1; i >= 0; i--) {  // outermost first: the physical function
          if (dwarf_tag(&scopes[i]) != DW_TAG_subprogram) continue;
          out.function = die_name(&scopes[i], &out.mangled);
          Dwarf_Addr lo = 0;
          if (dwarf_lowpc(&scopes[i], &lo) == 0) out.entry = lo + bias;
          break;
        }
        std::free(scopes);
      }
    } else {
      out.mangled = name;
      out.entry = pc - offset;
      int status = 0;
      char* dem = abi::__cxa_demangle(name, nullptr, nullptr, &status);
      out.function = (status == 0 && dem) ? dem : name;
      std::free(dem);
    }
    if (Dwfl_Line* line = dwfl_module_getsrc(mod, pc)) {
      int lineno = 0;
      const char* file = dwfl_lineinfo(line, nullptr, &lineno, nullptr, nullptr, nullptr);
      if (file) {
        out.file = file;
        out.line = lineno;
      }
    }
    return out;
  }

  // Follows DW_AT_abstract_origin / DW_AT_specification to the declaring DIE.
  static Dwarf_Die declaration(Dwarf_Die* die) {
    Dwarf_Die cur = *die;
    for (int i = 0; i < 8; i++) {
      Dwarf_Attribute attr;
      Dwarf_Die next;
      if ((dwarf_attr(&cur, DW_AT_abstract_origin, &attr) || dwarf_attr(&cur, DW_AT_specification, &attr)) &&
          dwarf_formref_die(&attr, &next))
        cur = next;
      else
        break;
    }
    return cur;
  }

  // "ns::cls::fn" built from the enclosing scopes when there is no linkage name
  // (DWARF's inlined-call records name only the bare function: "go<...>", "operator()").
  static std::string qualified_name(Dwarf_Die* die) {
    Dwarf_Die decl = declaration(die);
    const char* base = dwarf_diename(&decl);
    std::string name = base ? base : "?";
    Dwarf_Die* scopes = nullptr;
    int n = dwarf_getscopes_die(&decl, &scopes);
    // Innermost enclosing scope first. A function scope (a lambda's class sits inside
    // one) is qualified through its own declaration, which covers everything outside.
    std::string prefix;
    for (int i = 1; i < n; i++) {
      Dwarf_Die* sc = &scopes[i];
      const char* sn = dwarf_diename(sc);
      std::string part;
      bool stop = false;
      switch (dwarf_tag(sc)) {
        case DW_TAG_namespace: part = sn ? sn : "(anonymous namespace)"; break;
        case DW_TAG_class_type:
        case DW_TAG_structure_type:
        case DW_TAG_union_type: part = sn ? sn : "{lambda()}"; break;
        case DW_TAG_subprogram:
          part = qualified_name(sc) + "()";
          stop = true;
          break;
        default: continue;
      }
      prefix = part + "::" + prefix;
      if (stop) break;
    }
    std::free(scopes);
    return prefix + name;
  }

  static std::string die_name(Dwarf_Die* die, std::string* mangled) {
    Dwarf_Attribute attr;
    const char* linkage = nullptr;
    if (dwarf_attr_integrate(die, DW_AT_linkage_name, &attr) ||
        dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attr))
      linkage = dwarf_formstring(&attr);
    if (linkage) {
      *mangled = linkage;
      int status = 0;
      char* dem = abi::__cxa_demangle(linkage, nullptr, nullptr, &status);
      std::string r = (status == 0 && dem) ? dem : linkage;
      std::free(dem);
      return r;
    }
    return qualified_name(die);
  }

  std::vector<symbol_info> lookup_frames(uintptr_t pc) {
    symbol_info outer = lookup(pc);
    std::vector<symbol_info> frames;
    Dwfl_Module* mod = dwfl ? dwfl_addrmodule(dwfl, pc) : nullptr;
    Dwarf_Addr bias = 0;
    Dwarf_Die* cudie = mod ? dwfl_module_addrdie(mod, pc, &bias) : nullptr;
    Dwarf_Die* scopes = nullptr;
    int n = cudie ? dwarf_getscopes(cudie, pc - bias, &scopes) : 0;
    Dwarf_Files* files = nullptr;
    std::size_t nfiles = 0;
    if (cudie) dwarf_getsrcfiles(cudie, &files, &nfiles);
    // Innermost first. The line of each frame is where it is now: for the innermost
    // the instruction's own line, for the others the call site of the frame inside.
    std::string file = outer.file;
    int line = outer.line;
    for (int i = 0; i < n; i++) {
      int tag = dwarf_tag(&scopes[i]);
      if (tag != DW_TAG_inlined_subroutine) continue;
      symbol_info f = outer;
      f.mangled.clear();
      f.function = die_name(&scopes[i], &f.mangled);
      f.file = file;
      f.line = line;
      frames.push_back(f);
      Dwarf_Attribute attr;
      Dwarf_Word v = 0;
      if (dwarf_attr(&scopes[i], DW_AT_call_file, &attr) && dwarf_formudata(&attr, &v) == 0 && files) {
        const char* cf = dwarf_filesrc(files, v, nullptr, nullptr);
        file = cf ? cf : "";
      }
      if (dwarf_attr(&scopes[i], DW_AT_call_line, &attr) && dwarf_formudata(&attr, &v) == 0)
        line = static_cast<int>(v);
    }
    std::free(scopes);
    outer.file = file;
    outer.line = line;
    frames.push_back(outer);
    return frames;
  }
};

symbolizer& instance() {
  static symbolizer* s = new symbolizer();  // never destroyed: used from exit paths
  return *s;
}

}  // namespace

symbol_info symbolize(uintptr_t pc) {
  symbolizer& s = instance();
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.cache.find(pc);
  if (it != s.cache.end()) return it->second;
  symbol_info info = s.lookup(pc);
  s.cache.emplace(pc, info);
  return info;
}

std::vector<symbol_info> symbolize_frames(uintptr_t pc) {
  symbolizer& s = instance();
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.frames_cache.find(pc);
  if (it != s.frames_cache.end()) return it->second;
  std::vector<symbol_info> frames = s.lookup_frames(pc);
  s.frames_cache.emplace(pc, frames);
  return frames;
}

}  // namespace weft
