// innerq/base/huge_pages.h — anonymous memory in 2 MiB pages for the big
// buffers a decode step streams through: the weights and the KV block pool
// (docs/architecture.md, "Weight memory"). With 4 KiB pages every page read
// costs a TLB miss that prefetching does not hide.
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdio>
#include <string_view>

namespace innerq {

inline constexpr size_t kHugePageBytes = size_t{2} << 20;

// Whether madvise(MADV_HUGEPAGE) can give this process 2 MiB pages: the
// kernel's transparent huge page policy is "always" or "madvise" (not
// "never", not absent). Read once.
inline bool huge_pages_available() {
  static const bool available = [] {
    std::FILE* f = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (f == nullptr) return false;
    char policy[128] = {};
    const size_t n = std::fread(policy, 1, sizeof(policy) - 1, f);
    std::fclose(f);
    const std::string_view p(policy, n);
    return p.find("[always]") != std::string_view::npos ||
           p.find("[madvise]") != std::string_view::npos;
  }();
  return available;
}

// MemAvailable from /proc/meminfo in bytes (0 when unreadable): what the
// kernel estimates can be allocated without swapping.
inline size_t available_memory_bytes() {
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return 0;
  char line[256];
  unsigned long long kib = 0;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "MemAvailable: %llu kB", &kib) == 1) break;
  }
  std::fclose(f);
  return static_cast<size_t>(kib) * 1024;
}

// `bytes` of zeroed, read-write anonymous memory advised for huge pages, or
// nullptr when the mapping fails. The kernel backs each 2 MiB-aligned range
// that lies inside the mapping with one huge page as it is first touched;
// the edges stay in 4 KiB pages, so nothing beyond `bytes` (rounded to 4 KiB)
// becomes resident. Free with unmap_pages(p, bytes).
inline void* map_huge_page_advised(size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  ::madvise(p, bytes, MADV_HUGEPAGE);  // advice: refused, it leaves 4 KiB pages
  return p;
}

inline void unmap_pages(void* p, size_t bytes) {
  if (p != nullptr) ::munmap(p, bytes);
}

}  // namespace innerq
