// The block pool and the sequence operations (kv/kv_cache.h, kv/block_pool.h)
// seen through what attention reads: dequantized rows and decode outputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "innerq/attn/decode_attention.h"
#include "innerq/attn/window_attention.h"
#include "innerq/base/error.h"
#include "innerq/base/huge_pages.h"
#include "innerq/kv/block_pool.h"
#include "innerq/kv/key_factors.h"
#include "innerq/kv/kv_cache.h"
#include "innerq/kv/segments.h"
#include "proc_maps.h"
#include "sanitized.h"

namespace innerq::attn {
namespace {

constexpr int kHeads = 2, kDim = 64, kQHeads = 4, kMax = 2048;

const char* const kSpecs[] = {"f32",
                              "f16",
                              "q8_0",
                              "q4_0",
                              "kivi",
                              "kivi4",
                              "innerq-paper",
                              "innerq:rot=kv",
                              "innerq",
                              "kivi:rot=kv",
                              "innerq-paper:ksort=on,kcenter=on"};

// Rows of tokens [first, first + n), [n][heads][D]; `salt` picks another text.
void rows(int first, int n, int salt, std::vector<float>& k, std::vector<float>& v) {
  k.resize(static_cast<size_t>(n) * kHeads * kDim);
  v.resize(k.size());
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < kHeads * kDim; ++i) {
      const size_t at = static_cast<size_t>(t) * kHeads * kDim + i;
      const double x = (first + t) * 0.37 + i * 1.3 + salt * 7.1;
      k[at] = static_cast<float>(std::sin(x) * (i % kDim == 3 ? 9.0 : 1.5));
      v[at] = static_cast<float>(std::cos(1.7 * x));
    }
}

void append(kv::KvCache& c, int n, int salt, bool one_by_one = false) {
  std::vector<float> k, v;
  const int first = c.n_tokens();
  rows(first, n, salt, k, v);
  const size_t row = static_cast<size_t>(kHeads) * kDim;
  if (one_by_one) {
    for (int t = 0; t < n; ++t) c.append(0, &k[t * row], &v[t * row], 1);
  } else {
    c.append(0, k.data(), v.data(), n);
  }
}

kv::KvCache make(const char* spec) {
  return kv::KvCache(kv::CacheShape{1, kHeads, kDim, kMax}, kv::parse_cache_spec(spec).layer);
}

// Everything attention reads, bit for bit.
void expect_same(const kv::KvCache& a, const kv::KvCache& b) {
  ASSERT_EQ(a.n_tokens(), b.n_tokens());
  for (int h = 0; h < kHeads; ++h) {
    EXPECT_EQ(dequantized_keys(a.layer(0), h), dequantized_keys(b.layer(0), h)) << "head " << h;
    EXPECT_EQ(dequantized_values(a.layer(0), h), dequantized_values(b.layer(0), h)) << "head " << h;
  }
  std::vector<float> q(kQHeads * kDim), oa(q.size()), ob(q.size());
  for (size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>(std::sin(i * 0.7));
  decode_attention(a.layer(0), q.data(), kQHeads, oa.data());
  decode_attention(b.layer(0), q.data(), kQHeads, ob.data());
  EXPECT_EQ(oa, ob);
  EXPECT_EQ(a.memory().total(), b.memory().total());
}

// Tokens at the end that are still in f16 windows (residual, recent): the
// positions after the last quantized segment of K and of V.
int f16_tail(const kv::KvCache& c) {
  kv::HeadSegments s;
  c.layer(0).segments(0, s);
  int end = 0;
  for (const auto* list : {&s.k, &s.v}) {
    for (const kv::Segment& g : *list) {
      const bool window = g.form == kv::SegmentForm::kRowsF16 && g.start > 0;
      if (!window && g.length > 0) end = std::max(end, g.start + g.length);
    }
  }
  const bool plain =
      c.layer(0).kind() == kv::CacheKind::kF32 || c.layer(0).kind() == kv::CacheKind::kF16 ||
      c.layer(0).kind() == kv::CacheKind::kQ8_0 || c.layer(0).kind() == kv::CacheKind::kQ4_0;
  return plain ? c.n_tokens() : c.n_tokens() - end;
}

// A slab of at least one 2 MiB page is mapped for huge pages where the
// kernel offers them, a smaller one comes from the heap; both start zeroed
// and hold what is written to every block.
TEST(BlockPool, LargeSlabsAreAdvisedForHugePages) {
  for (const size_t block_bytes : {size_t{1} << 20, size_t{4096}}) {
    SCOPED_TRACE(block_bytes);
    kv::BlockPool pool("test pool", block_bytes, 4, false);
    std::vector<int> ids(4);
    pool.acquire_n(ids);
    for (const int id : ids) {
      uint8_t* b = pool.data(id);
      for (size_t i = 0; i < block_bytes; i += 4096) ASSERT_EQ(b[i], 0) << "block " << id;
      std::memset(b, id + 1, block_bytes);
    }
    for (const int id : ids) {
      EXPECT_EQ(pool.data(id)[block_bytes - 1], id + 1);
      EXPECT_EQ(pool.data(id)[0], id + 1);
    }
    const std::string flags = testing_env::mapping_of(pool.data(ids[0])).second;
    const bool large = 4 * block_bytes >= kHugePageBytes;
    EXPECT_EQ(flags.find(" hg ") != std::string::npos, large && huge_pages_available()) << flags;
    for (const int id : ids) pool.release(id);
  }
}

TEST(BlockPool, AppendingNeverMovesStoredBytes) {
  for (const char* spec : kSpecs) {
    SCOPED_TRACE(spec);
    kv::KvCache c = make(spec);
    append(c, 700, 0);
    kv::HeadSegments before;
    c.layer(0).segments(1, before);
    append(c, 600, 0, true);
    kv::HeadSegments after;
    c.layer(0).segments(1, after);
    // Every quantized/plain segment that existed keeps its address.
    for (size_t i = 0; i + 1 < before.k.size(); ++i) {
      if (before.k[i].form == kv::SegmentForm::kRowsF16) continue;
      EXPECT_EQ(before.k[i].data, after.k[i].data) << "K segment " << i;
    }
    EXPECT_LE(c.layer(0).n_blocks_held(), (1300 + 255) / 256);
  }
}

// A sequence that grew alone got consecutive blocks of one slab, whose
// regions are adjacent: attention reads its middle as one long segment (one
// kernel call per chunk, not per block). Two sequences growing in turn
// interleave their blocks and are read block by block — the same results.
TEST(BlockPool, ConsecutiveBlocksAreReadAsOneSegment) {
  const kv::CacheShape shape{1, kHeads, kDim, kMax};
  for (const char* spec : {"f16", "q8_0", "innerq", "innerq-paper"}) {
    SCOPED_TRACE(spec);
    const std::vector<kv::LayerConfig> configs{kv::parse_cache_spec(spec).layer};
    auto pool = std::make_shared<kv::KvPool>(shape, configs, 16);
    kv::KvCache alone(pool);
    append(alone, 1100, 0);
    kv::HeadSegments s;
    alone.layer(0).segments(1, s);
    int quantized = 0;
    for (const kv::Segment& g : s.k) quantized += g.form != kv::SegmentForm::kRowsF16 ? 1 : 0;
    EXPECT_EQ(quantized, 1);
    kv::KvCache a(pool), b(pool);
    for (int i = 0; i < 4; ++i) {  // 4 x 300 tokens each, in turn
      append(a, 300, 0, false);
      append(b, 300, 0, false);
    }
    a.layer(0).segments(1, s);
    quantized = 0;
    for (const kv::Segment& g : s.k) quantized += g.form != kv::SegmentForm::kRowsF16 ? 1 : 0;
    EXPECT_GT(quantized, 1);
    kv::KvCache same = make(spec);  // private pool: consecutive blocks
    for (int i = 0; i < 4; ++i) append(same, 300, 0, false);
    expect_same(a, same);
  }
}

TEST(BlockPool, ForkSharesBlocksAndCopiesOnWrite) {
  for (const char* spec : kSpecs) {
    SCOPED_TRACE(spec);
    kv::KvCache parent = make(spec);
    append(parent, 900, 0);
    const kv::KvCache reference = [&] {
      kv::KvCache r = make(spec);
      append(r, 900, 0);
      return r;
    }();
    std::unique_ptr<kv::KvCache> child = parent.fork();
    expect_same(*child, parent);
    // Shared: the same pool blocks, two references each.
    for (int j = 0; j < parent.layer(0).n_blocks_held(); ++j) {
      EXPECT_EQ(parent.layer(0).block_id(j), child->layer(0).block_id(j));
    }
    append(*child, 300, 5, true);  // different tokens into the child
    append(parent, 300, 9);
    kv::KvCache alone_child = make(spec), alone_parent = make(spec);
    append(alone_child, 900, 0);
    append(alone_child, 300, 5, true);
    append(alone_parent, 900, 0);
    append(alone_parent, 300, 9);
    expect_same(*child, alone_child);
    expect_same(parent, alone_parent);
    child.reset();  // its blocks go back; the parent is untouched
    expect_same(parent, alone_parent);
  }
}

// A fixed pool that cannot give an append the blocks it needs refuses it
// before anything is stored, for every kind: token counts, memory, segments
// and attention are those of a cache that never saw the append (a
// reference on a private pool), a truncate afterwards is exact, and the same
// append goes through once a block is free.
TEST(BlockPool, FullPoolRefusesAnAppendAndLeavesEveryKindAsItWas) {
  const kv::CacheShape shape{1, kHeads, kDim, kMax};
  for (const char* spec : kSpecs) {
    for (const int chunk : {1, 200}) {  // token by token, and one append across blocks
      SCOPED_TRACE(::testing::Message() << spec << ", appends of " << chunk);
      const std::vector<kv::LayerConfig> configs{kv::parse_cache_spec(spec).layer};
      auto pool = std::make_shared<kv::KvPool>(shape, configs, 6);
      auto hog = std::make_unique<kv::KvCache>(pool);
      append(*hog, 600, 7);  // holds one to three blocks
      kv::KvCache a(pool), reference = make(spec);
      bool refused = false;
      for (int step = 0; step < kMax / chunk && !refused; ++step) {
        try {
          append(a, chunk, 0);
        } catch (const Error& e) {
          refused = true;
          EXPECT_NE(std::string(e.what()).find("KV pool (layer 0): all 6 blocks"),
                    std::string::npos)
              << e.what();
          break;
        }
        append(reference, chunk, 0);
      }
      ASSERT_TRUE(refused) << "a pool of 6 blocks took every append";
      ASSERT_GT(a.n_tokens(), 0);
      expect_same(a, reference);
      EXPECT_EQ(a.reserved_bytes(), reference.reserved_bytes());
      // Exact truncation of what the refused append left: nothing.
      for (kv::KvCache* c : {&a, &reference}) c->truncate(1);
      expect_same(a, reference);
      hog.reset();  // its blocks go back: the same append now fits
      append(a, chunk, 0);
      append(reference, chunk, 0);
      expect_same(a, reference);
    }
  }
}

// Appending into blocks a sequence already holds alone takes no lock: the
// pool's mutex is taken only to hand out (or take back) blocks, not on each
// write. After a fork, the first write to the shared last block copies it
// (one acquire); later writes are lock-free again.
TEST(BlockPool, AppendingIntoHeldBlocksTakesNoLock) {
  const kv::CacheShape shape{1, kHeads, kDim, kMax};
  for (const char* spec : kSpecs) {
    SCOPED_TRACE(spec);
    const std::vector<kv::LayerConfig> configs{kv::parse_cache_spec(spec).layer};
    auto pool = std::make_shared<kv::KvPool>(shape, configs, 8);
    const kv::BlockPool& blocks = *pool->layer(0);
    kv::KvCache a(pool);
    append(a, 300, 0);  // the middle has started a block
    ASSERT_GT(a.layer(0).n_blocks_held(), 0);
    const auto writes_in_held_blocks = [&](kv::KvCache& c) {
      // Tokens whose flushes stay in the blocks c holds: up to the end of
      // its last block (windows only delay when they get there).
      const int held = c.layer(0).n_blocks_held();
      int n = 0;
      for (; n < 40; ++n) {
        kv::KvCache probe(shape, configs);  // what the next token would need
        append(probe, c.n_tokens() + 1, 0);
        if (probe.layer(0).n_blocks_held() > held) break;
        append(c, 1, 0, true);
      }
      return n;
    };
    const uint64_t before = blocks.lock_count();
    EXPECT_GT(writes_in_held_blocks(a), 0);
    EXPECT_EQ(blocks.lock_count(), before) << "appends into a held block took the pool's lock";

    std::unique_ptr<kv::KvCache> child = a.fork();
    const uint64_t forked = blocks.lock_count();
    append(*child, 1, 5);  // copies the shared block it writes (one acquire_n)
    const uint64_t copied = blocks.lock_count();
    EXPECT_LE(copied - forked, 1u);
    writes_in_held_blocks(*child);
    EXPECT_EQ(blocks.lock_count(), copied) << "writes after the copy took the pool's lock";
  }
}

TEST(SequenceOps, TruncateThenAppendEqualsNeverHavingAppended) {
  for (const char* spec : kSpecs) {
    int checked = 0;  // cases where the dropped tokens were all still in f16
    for (const int prefix : {40, 300, 513, 1000}) {
      SCOPED_TRACE(::testing::Message() << spec << " prefix " << prefix);
      // Drop tokens only while they are all still in f16 windows (any
      // number, for kinds without windows).
      for (const int wanted : {1, 7, 120, 400}) {
        kv::KvCache t = make(spec);
        append(t, prefix, 0);
        append(t, wanted, 3, true);
        const int n_drop = std::min(wanted, f16_tail(t));
        if (n_drop < wanted) continue;  // a dropped token reached quantized storage
        t.truncate(n_drop);
        for (const int m : {n_drop, n_drop + 37}) {
          kv::KvCache again = make(spec);
          append(again, prefix, 0);
          append(again, wanted, 3, true);
          again.truncate(n_drop);
          append(again, m, 11, true);
          kv::KvCache never = make(spec);
          append(never, prefix, 0);
          append(never, m, 11, true);
          expect_same(again, never);
          ++checked;
        }
      }
    }
    EXPECT_GE(checked, 8) << spec;
  }
}

TEST(SequenceOps, TruncateIntoQuantizedGroupsKeepsTheDequantizedTokens) {
  for (const char* spec : kSpecs) {
    SCOPED_TRACE(spec);
    kv::KvCache c = make(spec);
    append(c, 1100, 0);
    std::vector<std::vector<double>> k0, v0;
    for (int h = 0; h < kHeads; ++h) {
      k0.push_back(dequantized_keys(c.layer(0), h));
      v0.push_back(dequantized_values(c.layer(0), h));
    }
    const int keep = 777;  // inside a tile, a group and a block
    c.truncate(c.n_tokens() - keep);
    ASSERT_EQ(c.n_tokens(), keep);
    for (int h = 0; h < kHeads; ++h) {
      const std::vector<double> k1 = dequantized_keys(c.layer(0), h);
      const std::vector<double> v1 = dequantized_values(c.layer(0), h);
      // A cut group's kept tokens went back to f16: one rounding of each
      // stored element, at most 2^-11 of it. Rotated layers round in rotated
      // coordinates; rotating back keeps the error's L2 norm, so each
      // element is within 2^-11 of its row's L2 norm.
      for (const auto& [now, was] : {std::pair{&k1, &k0[static_cast<size_t>(h)]},
                                     std::pair{&v1, &v0[static_cast<size_t>(h)]}}) {
        for (size_t r = 0; r < now->size() / kDim; ++r) {
          double norm2 = 0.0;
          for (int c = 0; c < kDim; ++c) norm2 += (*was)[r * kDim + c] * (*was)[r * kDim + c];
          const double bound = std::sqrt(norm2) * std::ldexp(1.0, -11) * 1.001 + 1e-12;
          for (int c = 0; c < kDim; ++c) {
            ASSERT_NEAR((*now)[r * kDim + c], (*was)[r * kDim + c], bound) << "row " << r;
          }
        }
      }
    }
    append(c, 500, 4, true);  // and the sequence goes on
    EXPECT_EQ(c.n_tokens(), 1277);
  }
  kv::KvCache c = make("innerq");
  append(c, 10, 0);
  EXPECT_THROW(c.truncate(11), Error);
  EXPECT_THROW(c.truncate(-1), Error);
}

// Truncating to every length keeps exactly the prefix: the kept tokens'
// dequantized K/V are the original's (tokens of a cut group within one f16
// rounding of the stored element: they go back to the f16 window), whatever
// the residual and recent windows held; and where every dropped token was
// still in f16, appending after the truncate equals never having appended.
TEST(SequenceOps, TruncateToEveryLengthKeepsThePrefix) {
  for (const char* spec : kSpecs) {
    const bool kivi = std::string(spec).starts_with("kivi");
    kv::KvCache c = make(spec);
    append(c, 300, 0);
    append(c, 245, 0, true);  // residuals and recent windows in every state
    const int n = c.n_tokens();
    std::vector<std::vector<double>> k0, v0;
    for (int h = 0; h < kHeads; ++h) {
      k0.push_back(dequantized_keys(c.layer(0), h));
      v0.push_back(dequantized_values(c.layer(0), h));
    }
    const int tail = f16_tail(c);
    // Every length for KIVI (every 5th under the sanitizer: 5 is prime to
    // its group and residual sizes, so every offset in a group is still cut).
    const int stride = kivi ? (testing_env::kSanitized ? 5 : 1) : 17;
    for (int m = n; m >= 0; m -= stride) {
      SCOPED_TRACE(::testing::Message() << spec << " truncated to " << m);
      std::unique_ptr<kv::KvCache> t = c.fork();
      t->truncate_to(m);
      ASSERT_EQ(t->n_tokens(), m);
      for (int h = 0; h < kHeads; ++h) {
        for (const auto& [now, was] :
             {std::pair{dequantized_keys(t->layer(0), h), &k0[static_cast<size_t>(h)]},
              std::pair{dequantized_values(t->layer(0), h), &v0[static_cast<size_t>(h)]}}) {
          ASSERT_EQ(now.size(), static_cast<size_t>(m) * kDim);
          for (size_t r = 0; r < static_cast<size_t>(m); ++r) {
            double norm2 = 0.0;
            for (int x = 0; x < kDim; ++x) norm2 += (*was)[r * kDim + x] * (*was)[r * kDim + x];
            // One f16 rounding (2^-11 relative); rotated rows round in
            // rotated coordinates, within 2^-11 of the row's L2 norm.
            const double bound = std::sqrt(norm2) * std::ldexp(1.0, -11) * 1.001;
            for (int x = 0; x < kDim; ++x) {
              ASSERT_NEAR(now[r * kDim + x], (*was)[r * kDim + x], bound) << "row " << r;
            }
          }
        }
      }
      if (kivi && n - m <= tail) {  // KIVI stores token by token: one append of m is the same
        append(*t, 40, 11, true);
        kv::KvCache never = make(spec);
        append(never, m, 0);
        append(never, 40, 11, true);
        expect_same(*t, never);
      }
    }
  }
}

TEST(SequenceOps, SaveAndLoadRoundTripAndRefuseDamagedFiles) {
  const std::string path = ::testing::TempDir() + "/innerq_seq_test.bin";
  for (const char* spec : kSpecs) {
    SCOPED_TRACE(spec);
    kv::KvCache c = make(spec);
    append(c, 613, 0);
    append(c, 5, 1, true);
    c.save(path);
    kv::KvCache back = make(spec);
    back.load(path);
    expect_same(back, c);
    append(back, 50, 2, true);  // it goes on like the original
    append(c, 50, 2, true);
    expect_same(back, c);
  }
  kv::KvCache c = make("innerq");
  append(c, 400, 0);
  c.save(path);
  std::ifstream in(path, std::ios::binary);
  const std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto refuses = [&](const std::string& bytes, const std::string& why,
                           const char* spec = "innerq") {
    const std::string bad = path + ".bad";
    std::ofstream(bad, std::ios::binary) << bytes;
    kv::KvCache fresh = make(spec);
    try {
      fresh.load(bad);
      ADD_FAILURE() << "loaded a file that should be refused: " << why;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
    EXPECT_EQ(fresh.n_tokens(), 0);
  };
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x10;
  refuses(flipped, "checksum mismatch");
  for (const size_t cut : {size_t{3}, size_t{15}, size_t{40}, good.size() / 2, good.size() - 1}) {
    refuses(good.substr(0, cut), cut < 20 ? "too short" : "checksum mismatch");
  }
  std::string magic = good;
  magic[0] = 'X';
  refuses(magic, "bad magic");
  std::string version = good;
  version[8] = 9;
  refuses(version, "version 9");
  refuses(good, "was saved as", "innerq:k=4");
  kv::KvCache full = make("innerq");
  append(full, 1, 0);
  EXPECT_THROW(full.load(path), Error);  // only into an empty cache
  std::remove(path.c_str());
}

TEST(MemoryPlan, ReservedBytesEqualThePlan) {
  for (const char* spec : kSpecs) {
    const kv::LayerConfig config = kv::parse_cache_spec(spec).layer;
    const kv::CacheShape shape{1, kHeads, kDim, kMax};
    const kv::MemoryPlan plan = kv::plan_memory(shape, {config});
    kv::KvCache prefill = make(spec), steps = make(spec);
    for (const int n : {1, 31, 32, 33, 127, 128, 129, 200, 255, 256, 257, 700, 1025}) {
      SCOPED_TRACE(::testing::Message() << spec << " n=" << n);
      append(prefill, n - prefill.n_tokens(), 0);
      append(steps, n - steps.n_tokens(), 0, true);
      EXPECT_EQ(prefill.reserved_bytes(), plan.sequence_bytes(n));
      EXPECT_EQ(steps.reserved_bytes(), plan.sequence_bytes(n));
      EXPECT_EQ(steps.memory().total(), plan.layer(0, n).content.total());
    }
  }
}

// This process's resident memory (VmRSS), in bytes.
size_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  size_t kib = 0;
  while (status >> key) {
    if (key == "VmRSS:" && status >> kib) return kib << 10;
  }
  ADD_FAILURE() << "/proc/self/status has no VmRSS";
  return 0;
}

// Decoding through a cache with sliding-window layers (Gemma 3 270M's
// shape: 15 rings of 512 positions, 3 global layers) stays within its plan:
// the rings are allocated whole with the sequence and become resident as
// they fill, global layers take pool blocks, and nothing grows per token.
// The resident memory it adds is at most MemoryPlan::bytes for the sequence,
// the attention scratch, and one page of rounding per layer's allocation.
TEST(MemoryPlan, DecodeWithWindowLayersStaysWithinThePlan) {
  if (testing_env::kSanitized)
    GTEST_SKIP() << "the address sanitizer's shadow memory is resident too";
  constexpr int kLayers = 18, kRingDim = 256, kTokens = 1200;
  kv::CacheShape shape{kLayers, 1, kRingDim, kTokens};
  for (int l = 0; l < kLayers; ++l) shape.windows.push_back(l % 6 == 5 ? 0 : 512);
  const std::vector<kv::LayerConfig> configs(kLayers, kv::parse_cache_spec("f16").layer);
  const kv::MemoryPlan plan = kv::plan_memory(shape, configs);
  std::vector<float> k(kRingDim), v(kRingDim), q(4 * kRingDim, 0.1f), out(q.size());
  const auto decode = [&](kv::KvCache& cache, int n, AttentionScratch& scratch) {
    for (int t = 0; t < n; ++t) {
      for (int c = 0; c < kRingDim; ++c) {
        k[static_cast<size_t>(c)] = static_cast<float>(std::sin(t * 0.3 + c));
        v[static_cast<size_t>(c)] = static_cast<float>(std::cos(t * 0.7 + c));
      }
      for (int l = 0; l < kLayers; ++l) {
        cache.append(l, k.data(), v.data(), 1);
        if (shape.window(l) > 0) {
          window_attention(static_cast<const kv::WindowLayerCache&>(cache.layer(l)), q.data(), 4,
                           out.data(), scratch);
        } else {
          decode_attention(cache.layer(l), q.data(), 4, out.data(), {1, false}, scratch);
        }
      }
    }
  };
  {  // The code's own first run (its pages, the runtimes' set-up) is not the cache's.
    kv::KvCache warm(shape, configs);
    AttentionScratch scratch;
    decode(warm, 40, scratch);
  }
  AttentionScratch scratch;
  const size_t before = resident_bytes();
  kv::KvCache cache(shape, configs);
  decode(cache, kTokens, scratch);
  const size_t grown = resident_bytes() - before;
  std::printf("resident growth %zu bytes; plan %zu, attention scratch %zu\n", grown,
              plan.bytes(1, kTokens), scratch.bytes());
  EXPECT_EQ(cache.reserved_bytes(), plan.sequence_bytes(kTokens));
  const size_t page = 4096;
  const size_t allowed = plan.bytes(1, kTokens) + scratch.bytes() + (kLayers + 1) * page;
  EXPECT_LE(grown, allowed) << "resident growth " << grown << " bytes, plan "
                            << plan.bytes(1, kTokens) << ", attention scratch " << scratch.bytes();
}

TEST(MemoryPlan, PoolsRefuseWhenFullAndBudgetsInvert) {
  const kv::CacheShape shape{1, kHeads, kDim, kMax};
  const std::vector<kv::LayerConfig> configs{kv::parse_cache_spec("f16").layer};
  auto pool = std::make_shared<kv::KvPool>(shape, configs, 2);
  kv::KvCache a(pool), b(pool);
  append(a, 512, 0);  // both blocks
  try {
    append(b, 1, 0);
    ADD_FAILURE() << "a full pool handed out a block";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("all 2 blocks"), std::string::npos) << e.what();
  }
  a.truncate(300);  // gives one block back
  append(b, 1, 0);
  EXPECT_EQ(b.n_tokens(), 1);

  for (const char* spec : kSpecs) {
    const kv::MemoryPlan plan = kv::plan_memory(shape, {kv::parse_cache_spec(spec).layer});
    for (const size_t budget : {size_t{1} << 16, size_t{1} << 20, size_t{3} << 22}) {
      for (const int seqs : {1, 4}) {
        const int64_t t = plan.tokens_for_budget(budget, seqs);
        if (t > 0) {
          EXPECT_LE(plan.bytes(seqs, t), budget) << spec;
        }
        EXPECT_GT(plan.bytes(seqs, t + 1), budget) << spec;
      }
    }
  }
}

// With calibrated key statistics (kfactors=FILE), two sequences that share a
// prefix store identical blocks for it, however their tokens were appended;
// with per-sequence statistics they do not (which is why the option exists).
TEST(SequenceOps, CalibratedKeyFactorsMakeSharedPrefixBlocksIdentical) {
  for (const char* spec : {"innerq", "innerq-paper"}) {
    SCOPED_TRACE(spec);
    kv::LayerConfig config = kv::parse_cache_spec(spec).layer;
    const kv::CacheShape shape{1, kHeads, kDim, kMax};
    const auto blocks_equal = [&](const kv::LayerConfig& c) {
      auto pool = std::make_shared<kv::KvPool>(shape, std::vector<kv::LayerConfig>{c}, 16);
      kv::KvCache a(pool), b(pool);
      append(a, 900, 0);        // one prefill
      append(b, 300, 0);        // a shorter prompt,
      append(b, 600, 0, true);  // then token by token
      bool equal = true;
      const kv::BlockLayout& layout = a.layer(0).block_layout();
      for (int j = 0; j < 2; ++j) {  // blocks 0 and 1 are full in both
        for (int h = 0; h < kHeads; ++h) {
          for (const bool v : {false, true}) {
            const uint8_t* x = a.layer(0).block_region(j, h, v);
            equal = equal && std::equal(x, x + (v ? layout.v_region : layout.k_region),
                                        b.layer(0).block_region(j, h, v));
          }
        }
      }
      return equal;
    };
    EXPECT_FALSE(blocks_equal(config)) << "per-sequence statistics differ with the chunking";
    auto kf = std::make_shared<kv::KeyFactors>();
    kf->n_layers = 1;
    kf->n_kv_heads = kHeads;
    kf->head_dim = kDim;
    kf->knorm = config.knorm;
    kf->centered = config.kcenter;
    kf->rotated = config.rot_k;
    for (int i = 0; i < kHeads * kDim; ++i) {
      kf->factors.push_back(config.knorm == kv::KeyNorm::kOff ? 1.0f : 1.0f + (i % 5) * 0.25f);
      if (config.kcenter) kf->means.push_back(0.01f * (i % 7));
    }
    config.key_factors = kf;
    EXPECT_TRUE(blocks_equal(config));
  }
}

}  // namespace
}  // namespace innerq::attn
