// innerq/tools/bench_attention.h — `innerq bench attention`, shared between
// the CPU runner (cmd_bench.cc) and the CUDA runner (cmd_bench_cuda.cc).
#pragma once

#include <string>
#include <vector>

#include "innerq/kv/cache_spec.h"

namespace innerq::tools {

struct AttentionShape {
  std::string name;  // "llama3-8b", "smollm2-135m", "mha-32", or "HQ:HKV:D"
  int n_heads;
  int n_kv_heads;
  int head_dim;
};

// "llama3-8b" = 32/8/128, "smollm2-135m" = 9/3/64, "mha" = 32/32/128, or
// "HQ:HKV:D". Throws innerq::Error on anything else.
AttentionShape parse_attention_shape(const std::string& text);

struct BenchAttentionArgs {
  AttentionShape shape;
  std::vector<int> contexts;         // tokens
  std::vector<kv::CacheSpec> specs;  // caches to compare
  int n_threads = 2;                 // CPU threads
  std::vector<int> n_seqs = {1};     // sequences per call (CUDA), each count timed
  int reps = 0;                      // 0 = automatic
  int chunk = 0;                     // > 0: time chunked extend of this many tokens (CPU)
  bool json = false;
};

// Synthetic keys/values with realistic outlier channels: gaussian, a few key
// channels scaled ×20 (as in real post-RoPE keys), a larger attention sink.
// k, v: [n_tokens, n_kv_heads, head_dim]; deterministic in `seed`.
void fill_synthetic_kv(int n_tokens, int n_kv_heads, int head_dim, unsigned seed,
                       std::vector<float>& k, std::vector<float>& v);

// ‖got − want‖ / ‖want‖ of two attention outputs.
double relative_error(const std::vector<float>& got, const std::vector<float>& want);

// CUDA runner; returns the process exit code. Without a CUDA build or
// without a device it prints why and returns 2.
int run_bench_attention_cuda(const BenchAttentionArgs& args);

}  // namespace innerq::tools
