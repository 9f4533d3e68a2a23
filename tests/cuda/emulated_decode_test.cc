// The decode kernels' device code (split kernel + merge, every layout) run on
// the CPU through block_emulator.h, against decode_attention_reference with
// the GPU test's tolerance. Needs no GPU: it checks the kernels' indexing,
// shared memory, barriers and shuffles wherever the CUDA backend is built.
// The caches are packed into the same per-region layout the upload builds,
// in host memory.
#include "block_emulator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "innerq/attn/decode_attention.h"
#include "innerq/kernels/cuda/f16_layout.cuh"
#include "innerq/kernels/cuda/innerq_layout.cuh"
#include "innerq/kernels/cuda/kivi_layout.cuh"
#include "innerq/kv/layer_caches.h"
#include "attention_tolerance.h"
#include "cuda_test_util.h"

namespace innerq::cuda {
namespace {

// Host storage for the regions: all KV heads of a region in one buffer, head
// h at h·stride (stride rounded up to 16 bytes), as attn/cuda uploads them.
struct Storage {
  std::vector<std::unique_ptr<uint4[]>> buffers;

  template <typename T, typename HeadSpan>
  std::pair<const T*, size_t> region(int n_heads, HeadSpan head_span) {
    constexpr size_t kAlign = 16 / sizeof(T);
    size_t stride = kAlign;
    for (int h = 0; h < n_heads; ++h) stride = std::max(stride, head_span(h).second);
    stride = (stride + kAlign - 1) / kAlign * kAlign;
    const size_t bytes = stride * sizeof(T) * static_cast<size_t>(n_heads);
    buffers.emplace_back(new uint4[bytes / 16]());
    auto* base = reinterpret_cast<T*>(buffers.back().get());
    for (int h = 0; h < n_heads; ++h) {
      const auto [ptr, count] = head_span(h);
      if (count > 0) std::memcpy(base + stride * h, ptr, count * sizeof(T));
    }
    return {base, stride};
  }
};

std::pair<const f16_bits*, size_t> rows(const kv::F16Rows& r, int head_dim) {
  return {r.size() > 0 ? r.row(0) : nullptr, static_cast<size_t>(r.size()) * head_dim};
}

F16SeqView pack(Storage& st, const kv::F16LayerCache& c) {
  const int H = c.n_kv_heads(), D = c.head_dim(), n = c.n_tokens();
  const size_t tiles = static_cast<size_t>(n + kTileRows - 1) / kTileRows;
  const auto k = st.region<f16_bits>(
      H, [&, keep = std::make_shared<std::vector<decltype(c.k_tiles(0))>>()](int h) {
        keep->push_back(c.k_tiles(h));
        return std::pair{keep->back().data(), tiles * D * kTileRows};
      });
  const auto v = st.region<f16_bits>(
      H, [&, keep = std::make_shared<std::vector<decltype(c.v_rows(0))>>()](int h) {
        keep->push_back(c.v_rows(h));
        return std::pair{keep->back().data(), static_cast<size_t>(n) * D};
      });
  return {k.first, v.first, k.second, v.second, n};
}

KiviSeqView pack(Storage& st, const kv::KiviLayerCache& c) {
  const int H = c.n_kv_heads(), D = c.head_dim();
  const size_t k_bytes = static_cast<size_t>(c.k_quant_tokens() / c.group()) * c.k_block_bytes();
  const size_t v_bytes = static_cast<size_t>(c.v_quant_tokens()) * c.v_row_bytes();
  const auto kb = st.region<uint8_t>(
      H, [&, keep = std::make_shared<std::vector<decltype(c.k_blocks(0))>>()](int h) {
        keep->push_back(c.k_blocks(h));
        return std::pair{keep->back().data(), k_bytes};
      });
  const auto vr = st.region<uint8_t>(
      H, [&, keep = std::make_shared<std::vector<decltype(c.v_rows(0))>>()](int h) {
        keep->push_back(c.v_rows(h));
        return std::pair{keep->back().data(), v_bytes};
      });
  const auto kr = st.region<f16_bits>(H, [&](int h) { return rows(c.k_residual(h), D); });
  const auto vres = st.region<f16_bits>(H, [&](int h) { return rows(c.v_residual(h), D); });
  return {kb.first,  vr.first,    kr.first,     vres.first,         kb.second,         vr.second,
          kr.second, vres.second, c.n_tokens(), c.k_quant_tokens(), c.v_quant_tokens()};
}

InnerQSeqView pack(Storage& st, const kv::InnerQLayerCache& c) {
  const int H = c.n_kv_heads(), D = c.head_dim();
  const size_t k_bytes =
      static_cast<size_t>(c.k_middle_tokens() + kTileRows - 1) / kTileRows * c.k_format().bytes();
  const size_t v_bytes = static_cast<size_t>(c.v_middle_tokens() / c.config().group) *
                         (D / kTileRows) * c.v_format().bytes();
  const auto ks = st.region<f16_bits>(H, [&](int h) { return rows(c.k_sink(h), D); });
  const auto vs = st.region<f16_bits>(H, [&](int h) { return rows(c.v_sink(h), D); });
  const auto kt = st.region<uint8_t>(
      H, [&, keep = std::make_shared<std::vector<decltype(c.k_tiles(0))>>()](int h) {
        keep->push_back(c.k_tiles(h));
        return std::pair{keep->back().data(), k_bytes};
      });
  const auto vb = st.region<uint8_t>(
      H, [&, keep = std::make_shared<std::vector<decltype(c.v_blocks(0))>>()](int h) {
        keep->push_back(c.v_blocks(h));
        return std::pair{keep->back().data(), v_bytes};
      });
  const auto kr = st.region<f16_bits>(H, [&](int h) { return rows(c.k_recent(h), D); });
  const auto vr = st.region<f16_bits>(H, [&](int h) { return rows(c.v_recent(h), D); });
  const auto f = st.region<float>(H, [&](int h) {
    return std::pair{c.key_norm(h), static_cast<size_t>(D)};
  });
  return {ks.first,           vs.first,  kt.first,     vb.first,        kr.first,
          vr.first,           f.first,   ks.second,    kt.second,       vb.second,
          kr.second,          vr.second, c.n_tokens(), c.sink_tokens(), c.k_middle_tokens(),
          c.v_middle_tokens()};
}

// Every block of the split grid, then the merge, on the CPU.
template <class Layout, int D, int NQ>
std::vector<float> emulate(const typename Layout::Params& p) {
  const DecodeShape& s = p.shape;
  emulator::Block block(kDecodeThreads);
  for (int seq = 0; seq < s.n_seqs; ++seq) {
    for (int kv = 0; kv < s.n_kv_heads; ++kv) {
      for (int split = 0; split < p.work.max_splits; ++split) {
        blockIdx = {static_cast<unsigned>(split), static_cast<unsigned>(kv),
                    static_cast<unsigned>(seq)};
        block.run([&] { decode_split_kernel<Layout, D, NQ>(p); });
      }
    }
  }
  std::vector<float> out(static_cast<size_t>(s.n_seqs) * s.n_heads * s.head_dim);
  for (int seq = 0; seq < s.n_seqs; ++seq) {
    for (int h = 0; h < s.n_heads; ++h) {
      for (int c = 0; c < s.head_dim; ++c) {
        out[(static_cast<size_t>(seq) * s.n_heads + h) * s.head_dim + c] =
            merge_splits(p.work, s.n_heads, s.head_dim, seq, h, c);
      }
    }
  }
  return out;
}

template <class Layout>
std::vector<float> emulate_dispatch(const typename Layout::Params& p, int nq) {
  const int padded = nq == 1 ? 1 : nq <= 4 ? 4 : 8;
  auto with_d = [&](auto d) -> std::vector<float> {
    constexpr int D = decltype(d)::value;
    if (padded == 1) return emulate<Layout, D, 1>(p);
    if (padded == 4) return emulate<Layout, D, 4>(p);
    return emulate<Layout, D, 8>(p);
  };
  if (p.shape.head_dim == 64) return with_d(std::integral_constant<int, 64>{});
  return with_d(std::integral_constant<int, 128>{});
}

struct Case {
  const char* spec;
  int n_heads, n_kv_heads, head_dim;
  std::vector<int> tokens;
  int chunk;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.spec << " " << c.n_heads << "/" << c.n_kv_heads << "/" << c.head_dim << " chunk "
      << c.chunk << " tokens";
  for (const int n : c.tokens) *os << " " << n;
}

class EmulatedDecode : public ::testing::TestWithParam<Case> {};

TEST_P(EmulatedDecode, MatchesCpuReference) {
  const Case& c = GetParam();
  const kv::CacheSpec spec = kv::parse_cache_spec(c.spec);
  std::vector<std::unique_ptr<kv::KvCache>> caches;
  for (size_t s = 0; s < c.tokens.size(); ++s) {
    const int n = c.tokens[s];
    caches.push_back(
        std::make_unique<kv::KvCache>(kv::CacheShape{1, c.n_kv_heads, c.head_dim, n}, spec.layer));
    std::vector<float> k, v;
    test::synthetic_kv(n, c.n_kv_heads, c.head_dim, 1234u + static_cast<unsigned>(s), k, v);
    caches.back()->append(0, k.data(), v.data(), n);
  }
  const int n_seqs = static_cast<int>(caches.size());
  const size_t per_seq = static_cast<size_t>(c.n_heads) * c.head_dim;
  const std::vector<float> q = test::random_queries(per_seq * n_seqs, 99u);

  Storage st;
  std::vector<F16SeqView> f16;
  std::vector<KiviSeqView> kivi;
  std::vector<InnerQSeqView> innerq;
  int max_splits = 1;
  const kv::LayerConfig& cfg = spec.layer;
  for (const auto& cache : caches) {
    const kv::LayerCache& layer = cache->layer(0);
    if (cfg.kind == kv::CacheKind::kF16) {
      f16.push_back(pack(st, static_cast<const kv::F16LayerCache&>(layer)));
      max_splits = std::max(max_splits, plan_of(f16.back(), c.chunk).splits());
    } else if (cfg.kind == kv::CacheKind::kKivi) {
      kivi.push_back(pack(st, static_cast<const kv::KiviLayerCache&>(layer)));
      max_splits = std::max(max_splits, plan_of(kivi.back(), c.chunk, cfg.group).splits());
    } else {
      innerq.push_back(pack(st, static_cast<const kv::InnerQLayerCache&>(layer)));
      max_splits = std::max(max_splits, plan_of(innerq.back(), c.chunk, cfg.group).splits());
    }
  }
  const DecodeShape shape{n_seqs, c.n_kv_heads, c.n_heads, c.head_dim};
  std::vector<float> partial_o(partial_o_floats(shape, max_splits), -1.0f);
  std::vector<float> partial_ml(partial_ml_floats(shape, max_splits), -1.0f);
  const DecodeWork work{q.data(),          nullptr, partial_o.data(),
                        partial_ml.data(), c.chunk, max_splits};
  const int nq = c.n_heads / c.n_kv_heads;
  std::vector<float> got;
  if (cfg.kind == kv::CacheKind::kF16) {
    got = emulate_dispatch<F16Layout>({f16.data(), shape, work}, nq);
  } else if (cfg.kind == kv::CacheKind::kKivi) {
    got = emulate_dispatch<KiviLayout>({kivi.data(), shape, work, cfg.k_bits, cfg.group}, nq);
  } else {
    got = emulate_dispatch<InnerQLayout>(
        {innerq.data(), shape, work, cfg.k_bits, cfg.v_bits, cfg.group, mode_has_zero(cfg.k_mode),
         mode_has_zero(cfg.v_mode), cfg.key_group()},
        nq);
  }

  const bool quantized_paths = cfg.kind == kv::CacheKind::kInnerQ;
  for (int s = 0; s < n_seqs; ++s) {
    const kv::LayerCache& layer = caches[static_cast<size_t>(s)]->layer(0);
    std::vector<float> want(per_seq);
    attn::decode_attention_reference(layer, q.data() + s * per_seq, c.n_heads, want.data());
    const std::vector<double> tol = attn::cuda::tolerance(
        layer, q.data() + s * per_seq, c.n_heads, {quantized_paths, quantized_paths, false});
    int failures = 0;
    for (size_t i = 0; i < per_seq && failures < 5; ++i) {
      const double err = std::fabs(static_cast<double>(got[s * per_seq + i]) - want[i]);
      if (!(err <= tol[i])) {
        ++failures;
        ADD_FAILURE() << c.spec << " seq " << s << " (" << c.tokens[static_cast<size_t>(s)]
                      << " tokens) head " << i / c.head_dim << " channel " << i % c.head_dim
                      << ": got " << got[s * per_seq + i] << " want " << want[i] << " tolerance "
                      << tol[i];
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, EmulatedDecode,
    ::testing::Values(Case{"f16", 32, 8, 128, {600, 333}, 128}, Case{"f16", 8, 8, 64, {517}, 256},
                      Case{"kivi", 16, 2, 128, {700, 200}, 128},
                      Case{"kivi4", 8, 8, 64, {450}, 256},
                      Case{"kivi:g=64,recent=64", 16, 2, 128, {600}, 128},
                      Case{"kivi:g=128,recent=128", 8, 2, 128, {1300}, 512},
                      Case{"f16", 8, 2, 128, {1100}, 512},
                      Case{"innerq-paper", 32, 8, 128, {900, 100}, 128},
                      Case{"innerq-paper:k=2,v=2", 8, 8, 128, {700}, 256},
                      Case{"innerq-paper:k=4,v=4,g=128", 16, 4, 128, {800}, 128},
                      Case{"innerq-paper:k=3,v=2,g=64,sink=0,recent=0", 9, 3, 64, {600, 250}, 128},
                      Case{"innerq-paper:k=8,v=8,sink=0,recent=0,knorm=off", 8, 8, 64, {500}, 512},
                      Case{"innerq-paper:k=3,v=3,kmode=hybrid,vmode=asym,g=32,sink=4,recent=40",
                           16,
                           2,
                           128,
                           {700},
                           128}));

// As the GPU test: every layout at every split length, a ragged batch (one
// long sequence beside short ones: splits the short ones leave unused), and
// kivi4 at 8 query heads per KV head and chunk 512 (64 KB of shared memory).
INSTANTIATE_TEST_SUITE_P(Chunks, EmulatedDecode,
                         ::testing::Values(Case{"innerq-paper", 16, 4, 128, {1500, 700}, 128},
                                           Case{"innerq-paper", 16, 4, 128, {1500, 700}, 256},
                                           Case{"innerq-paper", 16, 4, 128, {1500, 700}, 512},
                                           Case{"kivi", 16, 4, 128, {1500, 700}, 128},
                                           Case{"kivi", 16, 4, 128, {1500, 700}, 256},
                                           Case{"kivi", 16, 4, 128, {1500, 700}, 512},
                                           Case{"f16", 16, 4, 128, {1500, 700}, 128},
                                           Case{"f16", 16, 4, 128, {1500, 700}, 256},
                                           Case{"f16", 16, 4, 128, {1500, 700}, 512},
                                           Case{"kivi4", 64, 8, 128, {1100}, 512}));

// The project's default without its rotation (the CUDA path refuses rotated
// caches): K 3-bit sym in 64-channel groups, centered; V 3-bit hybrid, G = 128.
INSTANTIATE_TEST_SUITE_P(Default, EmulatedDecode,
                         ::testing::Values(Case{"innerq:rot=off", 16, 4, 128, {1500, 700}, 256},
                                           Case{"innerq:rot=off", 16, 4, 128, {1100}, 512}));

INSTANTIATE_TEST_SUITE_P(
    Ragged, EmulatedDecode,
    ::testing::Values(Case{"innerq-paper", 16, 4, 128, {3000, 100, 700, 33}, 256},
                      Case{"kivi", 16, 4, 128, {3000, 100, 700, 33}, 256},
                      Case{"f16", 16, 4, 128, {3000, 100, 700, 33}, 256}));

}  // namespace
}  // namespace innerq::cuda
