// tests/proc_maps.h — the /proc/self/smaps entry of the mapping that holds
// an address: its header line (range, permissions, path) and its VmFlags
// line ("hg": advised for huge pages), for tests of where memory comes from.
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>

namespace innerq::testing_env {

inline std::pair<std::string, std::string> mapping_of(const void* p) {
  const auto at = reinterpret_cast<uintptr_t>(p);
  std::ifstream in("/proc/self/smaps");
  std::string line, header, flags;
  bool inside = false;
  while (std::getline(in, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' ')) {
      inside = at >= lo && at < hi;
      if (inside) header = line;
    } else if (inside && line.starts_with("VmFlags:")) {
      flags = line + " ";
    }
  }
  return {header, flags};
}

}  // namespace innerq::testing_env
