// Program-counter symbolization for goroutine dumps and profiles.
//
// Names come from the ELF symbol tables of the executable and its shared libraries
// (demangled), files and lines from their DWARF line tables, inlined calls from the
// DWARF scopes (DW_TAG_inlined_subroutine), all read with elfutils' libdw. Results are cached per address. Not async-signal-safe: signal paths record
// raw PCs and symbolize later, on a normal thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace weft {

struct symbol_info {
  std::string function;  // demangled name, or "?" when unknown
  std::string mangled;   // the symbol table's name ("" when unknown)
  std::string file;      // source file, "" without debug info
  int line = 0;
  uintptr_t entry = 0;   // address of the function's first instruction (0 if unknown)
  std::string module;    // path of the binary or library holding pc
  uintptr_t module_base = 0;
};

// Looks up pc. For a return address pass pc - 1 to get the line of the call.
symbol_info symbolize(uintptr_t pc);

// The logical frames at pc, innermost first: functions inlined at pc come before the
// function that contains it, each with the line it is at (the call site of the next
// inner frame). Without inline debug info this is just { symbolize(pc) }.
std::vector<symbol_info> symbolize_frames(uintptr_t pc);

}  // namespace weft
