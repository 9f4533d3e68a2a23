// Spec strings: every name, every key, and the malformed forms.
#include "innerq/kv/cache_spec.h"

#include <gtest/gtest.h>

#include <string>

#include "innerq/base/error.h"

namespace innerq::kv {
namespace {

TEST(CacheSpec, EveryNameParses) {
  EXPECT_EQ(parse_cache_spec("f32").layer.kind, CacheKind::kF32);
  EXPECT_EQ(parse_cache_spec("f16").layer.kind, CacheKind::kF16);
  EXPECT_EQ(parse_cache_spec("q8_0").layer.kind, CacheKind::kQ8_0);
  EXPECT_EQ(parse_cache_spec("q4_0").layer.kind, CacheKind::kQ4_0);
  const LayerConfig kivi = parse_cache_spec("kivi").layer;
  EXPECT_EQ(kivi.kind, CacheKind::kKivi);
  EXPECT_EQ(kivi.k_bits, 2);
  EXPECT_EQ(kivi.recent, 128);
  EXPECT_EQ(kivi.group, 32);
  EXPECT_EQ(parse_cache_spec("kivi4").layer.k_bits, 4);
  EXPECT_EQ(parse_cache_spec("kivi4").layer.v_bits, 4);
}

TEST(CacheSpec, InnerQAloneIsTheReferenceConfiguration) {
  const LayerConfig c = parse_cache_spec("innerq").layer;
  EXPECT_EQ(c.kind, CacheKind::kInnerQ);
  EXPECT_EQ(c.k_bits, 3);
  EXPECT_EQ(c.k_mode, QuantMode::kSymmetric);
  EXPECT_EQ(c.knorm, KeyNorm::kSqrtMax);
  EXPECT_EQ(c.v_bits, 2);
  EXPECT_EQ(c.v_mode, QuantMode::kHybrid);
  EXPECT_EQ(c.group, 32);
  EXPECT_EQ(c.sink, 32);
  EXPECT_EQ(c.recent, 96);
}

TEST(CacheSpec, EveryInnerQKey) {
  const LayerConfig c =
      parse_cache_spec("innerq:k=4,v=8,kmode=asym,vmode=sym,g=128,sink=0,recent=7,knorm=rms").layer;
  EXPECT_EQ(c.k_bits, 4);
  EXPECT_EQ(c.v_bits, 8);
  EXPECT_EQ(c.k_mode, QuantMode::kAsymmetric);
  EXPECT_EQ(c.v_mode, QuantMode::kSymmetric);
  EXPECT_EQ(c.group, 128);
  EXPECT_EQ(c.sink, 0);
  EXPECT_EQ(c.recent, 7);
  EXPECT_EQ(c.knorm, KeyNorm::kRms);
  EXPECT_EQ(parse_cache_spec("innerq:kmode=hybrid,knorm=off").layer.knorm, KeyNorm::kOff);
  EXPECT_EQ(parse_cache_spec("innerq:knorm=sqrtmax").layer.knorm, KeyNorm::kSqrtMax);
  EXPECT_EQ(parse_cache_spec("kivi:g=64,recent=64").layer.group, 64);
}

// Each malformed spec fails with a message that names the offending part.
TEST(CacheSpec, MalformedSpecsNameTheBadField) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "unknown cache ''"},
      {"f8", "unknown cache 'f8'"},
      {"INNERQ", "unknown cache 'INNERQ'"},
      {"innerq:", "nothing after ':'"},
      {"innerq:k", "'k' is not key=value"},
      {"innerq:k=", "'k=' is not key=value"},
      {"innerq:=3", "'=3' is not key=value"},
      {"innerq:k=5", "k=5 is not a supported bit width (2, 3, 4, 8)"},
      {"innerq:v=1", "v=1 is not a supported bit width"},
      {"innerq:k=three", "k='three' is not an integer"},
      {"innerq:k=3x", "k='3x' is not an integer"},
      {"innerq:g=48", "g=48 is not a supported group size (32, 64, 128)"},
      {"innerq:kmode=signed", "kmode='signed' is not a mode (sym, asym, hybrid)"},
      {"innerq:vmode=", "'vmode=' is not key=value"},
      {"innerq:knorm=max", "knorm='max' is not a key normalization (off, sqrtmax, rms)"},
      {"innerq:sink=-1", "sink=-1 must be between 0 and 1048576"},
      {"innerq:recent=99999999", "recent=99999999 must be between"},
      {"innerq:bits=3", "unknown key 'bits' for innerq (allowed keys: k, v, kmode, vmode, g, sink"},
      {"f16:k=3", "unknown key 'k' for f16 (allowed keys: none)"},
      {"kivi:k=3", "unknown key 'k' for kivi (allowed keys: g, recent)"},
      {"kivi:recent=100", "recent=100 must be a multiple of g=32"},
      {"innerq:k=3,,v=2", "'' is not key=value"},
  };
  for (const auto& [spec, message] : cases) {
    SCOPED_TRACE(spec);
    try {
      parse_cache_spec(spec);
      ADD_FAILURE() << "no error for '" << spec << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::string("'") + spec + "'"), std::string::npos)
          << "message does not quote the spec: " << e.what();
    }
  }
}

TEST(CacheSpec, ListsSplitOnNamesNotOnFields) {
  const auto specs = parse_cache_spec_list("f16,innerq:k=4,v=4,kivi,innerq:k=2,v=2,q4_0");
  ASSERT_EQ(specs.size(), 5u);
  EXPECT_EQ(specs[0].text, "f16");
  EXPECT_EQ(specs[1].text, "innerq:k=4,v=4");
  EXPECT_EQ(specs[1].layer.v_bits, 4);
  EXPECT_EQ(specs[2].text, "kivi");
  EXPECT_EQ(specs[3].text, "innerq:k=2,v=2");
  EXPECT_EQ(specs[4].text, "q4_0");
  EXPECT_THROW(parse_cache_spec_list("f16,,kivi"), Error);
}

}  // namespace
}  // namespace innerq::kv
