// tests/cuda/append_cases.h — the cache configs that the quantize-on-append
// tests check, on the GPU (append_cuda_test) and under the block emulator
// (emulated_append_test): one list, so both cover the same formats.
#pragma once

#include <ostream>

namespace innerq::test {

struct AppendCase {
  const char* spec;
  int n_kv_heads, head_dim, n_tokens;
};

inline void PrintTo(const AppendCase& c, std::ostream* os) {
  *os << c.spec << " heads " << c.n_kv_heads << " head_dim " << c.head_dim << " tokens "
      << c.n_tokens;
}

inline constexpr AppendCase kAppendCases[] = {
    {"innerq-paper", 8, 128, 600},
    {"innerq:rot=off,kcenter=off", 8, 128, 700},
    {"innerq-paper:k=2,v=2,kmode=hybrid,vmode=hybrid", 2, 128, 500},
    {"innerq-paper:k=4,v=4,kmode=asym,vmode=sym,g=64", 3, 64, 700},
    {"innerq-paper:k=8,v=8,kmode=hybrid,vmode=asym,g=128,knorm=rms", 2, 128, 900},
    {"innerq-paper:k=3,v=3,kmode=asym,vmode=hybrid,sink=0,recent=0,knorm=off", 4, 64, 333},
};

}  // namespace innerq::test
