// Calibrated key factors (kv/key_factors.h): the statistic against a
// brute-force computation, the file format's round trip, every corruption
// refused with its own message, and `kfactors=FILE` in cache specs.
#include "innerq/kv/key_factors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "innerq/base/error.h"
#include "innerq/kv/cache_spec.h"

namespace innerq::kv {
namespace {

KeyFactors sample_factors(bool centered, KeyNorm knorm = KeyNorm::kRms, bool rotated = true) {
  KeyFactors kf;
  kf.model = "llama: test model";
  kf.n_layers = 3;
  kf.n_kv_heads = 2;
  kf.head_dim = 8;
  kf.knorm = knorm;
  kf.centered = centered;
  kf.rotated = rotated;
  kf.n_tokens = 1234;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.25f, 4.0f);
  kf.factors.resize(3 * 2 * 8);
  for (float& x : kf.factors) x = u(rng);
  if (centered) {
    kf.means.resize(kf.factors.size());
    for (float& x : kf.means) x = u(rng) - 2.0f;
  }
  kf.path = "sample.kf";
  return kf;
}

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + std::to_string(getpid()) + "_" + name;
}

// The message parse_key_factors throws for `bytes`, or "" if it parses.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  try {
    parse_key_factors(bytes.data(), bytes.size(), "bad.kf");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// FNV-1a-64, written out again so the test can forge a valid checksum.
void reseal(std::vector<uint8_t>& bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i + 8 < bytes.size(); ++i) h = (h ^ bytes[i]) * 0x100000001b3ull;
  for (int i = 0; i < 8; ++i) bytes[bytes.size() - 8 + i] = static_cast<uint8_t>(h >> (8 * i));
}

TEST(KeyFactors, StatisticMatchesBruteForce) {
  constexpr int kRows = 300, kDim = 16;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> rows(static_cast<size_t>(kRows) * kDim);
  for (size_t i = 0; i < rows.size(); ++i) {
    const int c = static_cast<int>(i % kDim);
    rows[i] = normal(rng) * (c == 3 ? 30.0f : 1.0f) + (c == 5 ? 12.0f : 0.0f);  // outlier, offset
  }
  rows[7 * kDim + 9] = 0.0f;
  for (KeyNorm knorm : {KeyNorm::kOff, KeyNorm::kSqrtMax, KeyNorm::kRms}) {
    for (bool center : {false, true}) {
      SCOPED_TRACE(std::string(key_norm_name(knorm)) + (center ? " centered" : ""));
      std::vector<float> mu(kDim, -1.0f), f(kDim);
      compute_key_factors(knorm, center, rows.data(), kRows, kDim, mu.data(), f.data());
      for (int c = 0; c < kDim; ++c) {
        double mean = 0.0;
        for (int t = 0; t < kRows; ++t) mean += rows[static_cast<size_t>(t) * kDim + c];
        mean = center ? mean / kRows : 0.0;
        double max = 0.0, sq = 0.0;
        for (int t = 0; t < kRows; ++t) {
          const double x = rows[static_cast<size_t>(t) * kDim + c] - mean;
          max = std::max(max, std::fabs(x));
          sq += x * x;
        }
        const double want = knorm == KeyNorm::kOff       ? 1.0
                            : knorm == KeyNorm::kSqrtMax ? std::sqrt(max)
                                                         : std::sqrt(std::sqrt(sq / kRows));
        // f32 rounding: the mean and the centered value (sqrtmax), plus a sum
        // of kRows squares (rms), each 2^-24 relative; two square roots halve
        // the relative error twice.
        const double tol = (knorm == KeyNorm::kRms ? kRows + 8 : 8) * std::ldexp(1.0, -24);
        EXPECT_NEAR(f[static_cast<size_t>(c)], want, tol * want) << "channel " << c;
        if (center) {
          EXPECT_NEAR(mu[static_cast<size_t>(c)], mean, 1e-6 * (std::fabs(mean) + 1));
        }
      }
      if (!center) {
        EXPECT_EQ(mu[0], -1.0f);  // untouched
      }
    }
  }
  // An all-zero channel gets 1.
  std::vector<float> zeros(4 * 8, 0.0f), f(8);
  key_channel_factors(KeyNorm::kSqrtMax, zeros.data(), 4, 8, f.data());
  for (float x : f) EXPECT_EQ(x, 1.0f);
}

TEST(KeyFactors, FileRoundTrip) {
  for (bool centered : {false, true}) {
    const KeyFactors kf = sample_factors(centered);
    const std::string path = temp_path(centered ? "centered.kf" : "plain.kf");
    const size_t bytes = write_key_factors(kf, path);
    EXPECT_EQ(bytes, 44 + kf.model.size() + 4 * kf.factors.size() * (centered ? 2 : 1) + 8);
    const KeyFactors back = read_key_factors(path);
    EXPECT_EQ(back.model, kf.model);
    EXPECT_EQ(back.n_layers, 3);
    EXPECT_EQ(back.n_kv_heads, 2);
    EXPECT_EQ(back.head_dim, 8);
    EXPECT_EQ(back.knorm, KeyNorm::kRms);
    EXPECT_EQ(back.centered, centered);
    EXPECT_TRUE(back.rotated);
    EXPECT_EQ(back.n_tokens, 1234u);
    EXPECT_EQ(back.factors, kf.factors);
    EXPECT_EQ(back.means, kf.means);
    EXPECT_EQ(back.path, path);
    EXPECT_EQ(back.head_factors(2, 1)[3], kf.factors[(2 * 2 + 1) * 8 + 3]);
    EXPECT_EQ(back.head_means(1, 0) == nullptr, !centered);
    std::remove(path.c_str());
  }
}

TEST(KeyFactors, EveryTruncationIsRefused) {
  const std::vector<uint8_t> bytes = serialize_key_factors(sample_factors(true));
  for (size_t n = 0; n < bytes.size(); ++n) {
    const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    const std::string e = parse_error(cut);
    EXPECT_TRUE(contains(e, "truncated") && contains(e, "'bad.kf'")) << n << " bytes: " << e;
  }
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_TRUE(contains(parse_error(longer), "1 trailing bytes")) << parse_error(longer);
}

TEST(KeyFactors, EveryFlippedByteIsRefused) {
  const KeyFactors kf = sample_factors(true);
  const std::vector<uint8_t> bytes = serialize_key_factors(kf);
  const size_t payload = 44 + kf.model.size();
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t mask : {uint8_t{0x01}, uint8_t{0x80}}) {
      std::vector<uint8_t> bad = bytes;
      bad[i] ^= mask;
      const std::string e = parse_error(bad);
      SCOPED_TRACE("byte " + std::to_string(i) + " ^ " + std::to_string(mask) + ": " + e);
      ASSERT_FALSE(e.empty());
      EXPECT_TRUE(contains(e, "'bad.kf'"));
      if (i < 8) {
        EXPECT_TRUE(contains(e, "bad magic"));
      } else if (i < 12) {
        EXPECT_TRUE(contains(e, "version"));
      } else if (i >= 32 && i < 40) {
        EXPECT_TRUE(contains(e, "checksum mismatch"));  // n_tokens: only the checksum covers it
      } else if (i >= payload || (i >= 44 && i < payload)) {
        EXPECT_TRUE(contains(e, "checksum mismatch"));
      } else {  // dimensions, knorm, flags, model length
        EXPECT_TRUE(contains(e, "out of range") || contains(e, "truncated") ||
                    contains(e, "trailing") || contains(e, "knorm") || contains(e, "flags") ||
                    contains(e, "model description") || contains(e, "checksum mismatch"));
      }
    }
  }
}

TEST(KeyFactors, WrongMagicVersionAndAbsurdDimensions) {
  const KeyFactors kf = sample_factors(false);
  std::vector<uint8_t> bytes = serialize_key_factors(kf);
  std::vector<uint8_t> gguf = bytes;
  std::memcpy(gguf.data(), "GGUF\3\0\0\0", 8);
  EXPECT_TRUE(contains(parse_error(gguf), "not a key factors file (bad magic"));
  std::vector<uint8_t> v2 = bytes;
  v2[8] = 2;
  reseal(v2);
  EXPECT_TRUE(
      contains(parse_error(v2), "version 2 is not supported (this innerq reads version 1)"));
  // The largest dimensions allowed, in a small file: refused before any
  // allocation, from the size the header implies.
  std::vector<uint8_t> huge = bytes;
  for (size_t off : {12, 16, 20}) std::memset(&huge[off], 0, 4);
  huge[13] = 0x10;  // 4096 layers
  huge[17] = 0x04;  // 1024 heads
  huge[21] = 0x10;  // head_dim 4096
  reseal(huge);
  const uint64_t implied = 44 + kf.model.size() + uint64_t{4096} * 1024 * 4096 * 4 + 8;
  EXPECT_TRUE(contains(parse_error(huge), "its header describes " + std::to_string(implied)))
      << parse_error(huge);
  std::vector<uint8_t> zero = bytes;
  std::memset(&zero[16], 0, 4);
  reseal(zero);
  EXPECT_TRUE(contains(parse_error(zero), "0 KV heads, head_dim 8 are out of range"));
}

TEST(KeyFactors, NonFiniteOrNonPositiveValuesAreRefused) {
  for (float bad : {0.0f, -1.0f, std::numeric_limits<float>::quiet_NaN(),
                    std::numeric_limits<float>::infinity()}) {
    KeyFactors kf = sample_factors(true);
    kf.factors[(1 * 2 + 1) * 8 + 6] = bad;
    const std::string e = parse_error(serialize_key_factors(kf));
    EXPECT_TRUE(contains(e, "factor of layer 1 KV head 1 channel 6") &&
                contains(e, "must be finite and > 0"))
        << e;
    EXPECT_THROW(write_key_factors(kf, temp_path("never.kf")), Error);
  }
  KeyFactors kf = sample_factors(true);
  kf.means[2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(contains(parse_error(serialize_key_factors(kf)),
                       "mean of layer 0 KV head 0 channel 2 is nan"));
}

TEST(KeyFactors, ModelMismatchNamesTheFileAndTheModel) {
  const KeyFactors kf = sample_factors(false);
  EXPECT_NO_THROW(check_key_factors(kf, 2, 2, 8));
  for (auto [layer, heads, dim] : {std::tuple{3, 2, 8}, {0, 4, 8}, {0, 2, 64}}) {
    try {
      check_key_factors(kf, layer, heads, dim);
      ADD_FAILURE() << "accepted layer " << layer;
    } catch (const Error& e) {
      EXPECT_TRUE(contains(e.what(), "'sample.kf' was calibrated on 'llama: test model'") &&
                  contains(e.what(), "run innerq calibrate on this model"))
          << e.what();
    }
  }
}

TEST(KeyFactors, SpecKeyLoadsTheFileOnceAndRoundTrips) {
  const std::string path = temp_path("spec.kf");
  write_key_factors(sample_factors(true, KeyNorm::kOff, true), path);  // what `innerq` computes
  const CacheSpec spec = parse_cache_spec("innerq:kfactors=" + path + ";1:k=4;2=f16");
  ASSERT_TRUE(spec.layer.key_factors);
  EXPECT_EQ(spec.layer.key_factors->path, path);
  const std::vector<LayerConfig> layers = spec.layers(3, 64);
  // The file holds a rotated, unnormalized frame: `innerq` has it below
  // head_dim 256 and not from there on, where layers() refuses the file.
  try {
    (void)spec.layers(3, 256);
    ADD_FAILURE() << "a rotated kfactors file accepted for an unrotated frame";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim 256"), std::string::npos) << e.what();
  }
  EXPECT_EQ(layers[1].key_factors, spec.layer.key_factors);  // shared, not re-read
  EXPECT_FALSE(layers[2].key_factors);
  EXPECT_NE(describe(layers[0]).find(" kfactors=" + path), std::string::npos);
  const std::string canonical = spec_string(layers[1]);
  EXPECT_NE(canonical.find(",kfactors=" + path), std::string::npos);
  EXPECT_EQ(spec_string(parse_cache_spec(canonical).layer), canonical);
  EXPECT_EQ(parse_cache_spec_list("f16,innerq:kfactors=" + path).size(), 2u);

  const auto refusal = [](const std::string& text) -> std::string {
    try {
      parse_cache_spec(text);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  // Calibrated without knorm: refused for a config that normalizes, or one
  // that does not center or rotate, and by an override that changes knorm.
  EXPECT_TRUE(contains(refusal("innerq-paper:kfactors=" + path), "calibrate with the same --kv"));
  EXPECT_TRUE(contains(refusal("innerq:kfactors=" + path + ",rot=off"), "rot(k)=off"));
  EXPECT_TRUE(contains(refusal("innerq:kfactors=" + path + ";0:knorm=rms"), "knorm=rms"));
  EXPECT_TRUE(contains(refusal("f16:kfactors=" + path), "unknown key 'kfactors' for f16"));
  // A file holds channels in the model's order: no channel permutation.
  EXPECT_TRUE(contains(refusal("innerq:kfactors=" + path + ",kperm=evenodd"),
                       "kfactors and kperm=evenodd together are not supported"));
  EXPECT_TRUE(contains(refusal("innerq:kfactors=" + path + ";0:kperm=pairs"),
                       "kfactors and kperm=pairs together are not supported"));
  EXPECT_TRUE(contains(refusal("innerq:kfactors=/nonexistent.kf"),
                       "key factors file '/nonexistent.kf' is not a readable file"));
  std::remove(path.c_str());
}

}  // namespace
}  // namespace innerq::kv
