// Spec strings: every name, every key, and the malformed forms.
#include "innerq/kv/cache_spec.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

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

TEST(CacheSpec, InnerQPaperIsTheReferenceConfiguration) {
  const LayerConfig c = parse_cache_spec("innerq-paper").layer;
  EXPECT_EQ(c.kind, CacheKind::kInnerQ);
  EXPECT_EQ(c.k_bits, 3);
  EXPECT_EQ(c.k_mode, QuantMode::kSymmetric);
  EXPECT_EQ(c.knorm, KeyNorm::kSqrtMax);
  EXPECT_EQ(c.v_bits, 2);
  EXPECT_EQ(c.v_mode, QuantMode::kHybrid);
  EXPECT_EQ(c.group, 32);
  EXPECT_EQ(c.sink, 32);
  EXPECT_EQ(c.recent, 96);
  EXPECT_FALSE(c.rot_k);
  EXPECT_FALSE(c.rot_v);
  EXPECT_FALSE(c.kcenter);
}

// The default (docs/architecture.md, "Choosing the default"): K 3-bit sym in
// 64-channel groups, rotated and centered; V 3-bit hybrid in 128-token groups.
TEST(CacheSpec, InnerQAloneIsTheDefault) {
  const LayerConfig c = parse_cache_spec("innerq").layer;
  EXPECT_EQ(describe(c), describe(default_innerq_config()));
  EXPECT_EQ(c.kind, CacheKind::kInnerQ);
  EXPECT_EQ(c.k_bits, 3);
  EXPECT_EQ(c.k_mode, QuantMode::kSymmetric);
  EXPECT_EQ(c.key_group(), 64);
  EXPECT_EQ(c.v_bits, 3);
  EXPECT_EQ(c.v_mode, QuantMode::kHybrid);
  EXPECT_EQ(c.group, 128);
  EXPECT_TRUE(c.rot_k);
  EXPECT_FALSE(c.rot_v);
  EXPECT_TRUE(c.kcenter);
  EXPECT_EQ(c.knorm, KeyNorm::kOff);
  // 3.25 bits per value of quantized storage, like the paper's config.
  EXPECT_DOUBLE_EQ(bits_per_value(c.k_bits, c.key_group(), c.k_mode) +
                       bits_per_value(c.v_bits, c.group, c.v_mode),
                   6.5);
}

TEST(CacheSpec, RotationAndCenteringKeys) {
  EXPECT_TRUE(parse_cache_spec("q4_0:rot=kv").layer.rot_k);
  EXPECT_TRUE(parse_cache_spec("q4_0:rot=kv").layer.rot_v);
  EXPECT_TRUE(parse_cache_spec("q8_0:rot=k").layer.rot_k);
  EXPECT_FALSE(parse_cache_spec("q8_0:rot=k").layer.rot_v);
  EXPECT_TRUE(parse_cache_spec("kivi:rot=v").layer.rot_v);
  EXPECT_FALSE(parse_cache_spec("innerq-paper:rot=off").layer.rot_k);
  EXPECT_TRUE(parse_cache_spec("innerq-paper:kcenter=on").layer.kcenter);
  EXPECT_FALSE(parse_cache_spec("innerq").layer.ksort);
  EXPECT_TRUE(parse_cache_spec("innerq:ksort=on").layer.ksort);
  EXPECT_FALSE(parse_cache_spec("innerq:ksort=off").layer.ksort);
  EXPECT_NE(describe(parse_cache_spec("innerq-paper:ksort=on").layer).find(" ksort"),
            std::string::npos);
  EXPECT_FALSE(parse_cache_spec("innerq:kcenter=off").layer.kcenter);
  const LayerConfig kg = parse_cache_spec("innerq-paper:g=128,kg=64").layer;
  EXPECT_EQ(kg.group, 128);
  EXPECT_EQ(kg.key_group(), 64);
  EXPECT_EQ(parse_cache_spec("innerq-paper:g=64").layer.key_group(), 64);
  EXPECT_EQ(parse_cache_spec("q4_0").layer.kperm, kernels::ChannelOrder::kAsIs);
  EXPECT_EQ(parse_cache_spec("q4_0:kperm=evenodd").layer.kperm, kernels::ChannelOrder::kEvenOdd);
  EXPECT_EQ(parse_cache_spec("innerq:kperm=pairs,rot=k").layer.kperm,
            kernels::ChannelOrder::kPairs);
  EXPECT_EQ(parse_cache_spec("kivi4:kperm=off").layer.kperm, kernels::ChannelOrder::kAsIs);
  EXPECT_EQ(parse_cache_spec("innerq").layer.k_levels, Levels::kUniform);
  EXPECT_EQ(parse_cache_spec("innerq:klevels=normal").layer.k_levels, Levels::kNormal);
  EXPECT_EQ(parse_cache_spec("innerq-paper:klevels=uniform").layer.k_levels, Levels::kUniform);
  EXPECT_NE(describe(parse_cache_spec("innerq:klevels=normal").layer).find("klevels=normal"),
            std::string::npos);
  EXPECT_NE(describe(parse_cache_spec("q4_0:kperm=evenodd").layer).find("kperm=evenodd"),
            std::string::npos);
  try {
    parse_cache_spec("q4_0:kperm=halves");
    ADD_FAILURE() << "kperm=halves parsed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("kperm='halves' is not a channel order (off, evenodd, "
                                         "pairs)"),
              std::string::npos)
        << e.what();
  }
}

// spec_string spells every field, and parses back to the same config.
TEST(CacheSpec, SpecStringRoundTrips) {
  for (const char* spec : {"innerq", "innerq-paper",
                           "innerq:k=8,v=4,kmode=hybrid,vmode=asym,g=64,"
                           "kg=32,sink=3,recent=7,knorm=rms,kcenter=on,rot=kv",
                           "q4_0:rot=kv", "q8_0", "f16", "f32:rot=k", "kivi",
                           "kivi4:g=64,recent=64", "q4_0:kperm=evenodd", "innerq:kperm=pairs",
                           "kivi:kperm=evenodd,rot=k", "innerq:klevels=normal",
                           "innerq-paper:k=2,klevels=normal,rot=k", "innerq:k=3,v=3,ksort=on"}) {
    const LayerConfig c = parse_cache_spec(spec).layer;
    EXPECT_EQ(describe(parse_cache_spec(spec_string(c)).layer), describe(c)) << spec;
    EXPECT_EQ(spec_string(parse_cache_spec(spec_string(c)).layer), spec_string(c)) << spec;
  }
}

// `innerq` picks its key frame and bit split by head_dim (docs/
// architecture.md, "Choosing the default"): 3-bit keys rotated, 3-bit values
// below 256; 4-bit keys unrotated with sqrt-max normalization, 2-bit values
// from 256 on; a named field wins, field by field; other names are untouched.
TEST(CacheSpec, InnerqFollowsHeadDim) {
  const auto at = [](const char* spec, int head_dim) {
    return parse_cache_spec(spec).layers(1, head_dim)[0];
  };
  for (int hd : {64, 128}) {
    const LayerConfig c = at("innerq", hd);
    EXPECT_TRUE(c.rot_k) << hd;
    EXPECT_EQ(c.knorm, KeyNorm::kOff) << hd;
    EXPECT_EQ(c.k_bits, 3);
    EXPECT_EQ(c.v_bits, 3);
    EXPECT_EQ(c.k_levels, Levels::kUniform);
    EXPECT_EQ(c.by_head_dim, 0u);
  }
  for (int hd : {256, 512}) {
    const LayerConfig c = at("innerq", hd);
    EXPECT_FALSE(c.rot_k) << hd;
    EXPECT_EQ(c.knorm, KeyNorm::kSqrtMax) << hd;
    EXPECT_EQ(c.k_bits, 4);
    EXPECT_EQ(c.v_bits, 2);
    EXPECT_TRUE(c.kcenter);
    EXPECT_EQ(c.key_group(), 64);
    EXPECT_EQ(c.group, 128);
    EXPECT_EQ(c.k_levels, Levels::kNormal);
  }
  // The codebook only where it exists: named 8-bit or hybrid keys stay
  // uniform, a named klevels wins.
  EXPECT_EQ(at("innerq:k=8", 256).k_levels, Levels::kUniform);
  EXPECT_EQ(at("innerq:kmode=hybrid", 256).k_levels, Levels::kUniform);
  EXPECT_EQ(at("innerq:k=2", 256).k_levels, Levels::kNormal);
  EXPECT_EQ(at("innerq:klevels=uniform", 256).k_levels, Levels::kUniform);
  EXPECT_EQ(at("innerq:klevels=normal", 64).k_levels, Levels::kNormal);
  EXPECT_EQ(spec_string(parse_cache_spec("innerq:klevels=uniform").layer).find("klevels=uniform") !=
                std::string::npos,
            true);
  EXPECT_TRUE(at("innerq:rot=k", 256).rot_k);                   // named: kept
  EXPECT_EQ(at("innerq:rot=k", 256).knorm, KeyNorm::kSqrtMax);  // still by head_dim
  EXPECT_EQ(at("innerq:knorm=off", 256).knorm, KeyNorm::kOff);  // named: kept
  EXPECT_FALSE(at("innerq:knorm=off", 256).rot_k);              // still by head_dim
  EXPECT_EQ(at("innerq:k=3", 256).k_bits, 3);                   // named: kept
  EXPECT_EQ(at("innerq:k=3", 256).v_bits, 2);                   // still by head_dim
  EXPECT_EQ(at("innerq:v=4", 64).v_bits, 4);
  EXPECT_EQ(at("innerq:v=4", 64).k_bits, 3);
  EXPECT_FALSE(at("innerq:rot=off", 64).rot_k);
  EXPECT_EQ(at("innerq-paper", 256).knorm, KeyNorm::kSqrtMax);  // the paper's own
  EXPECT_EQ(at("innerq-paper", 256).v_bits, 2);
  EXPECT_EQ(at("innerq-paper", 64).k_bits, 3);
  EXPECT_EQ(at("innerq-paper:knorm=off", 256).knorm, KeyNorm::kOff);  // no rule
  // Whole-layer `innerq` overrides and overrides on top of it resolve too.
  const std::vector<LayerConfig> l = parse_cache_spec("f16;0=innerq:k=8;1=innerq").layers(3, 256);
  EXPECT_EQ(l[2].kind, CacheKind::kF16);
  EXPECT_EQ(l[0].k_bits, 8);
  EXPECT_EQ(l[1].k_bits, 4);
  EXPECT_EQ(l[0].k_levels, Levels::kUniform);
  EXPECT_EQ(l[1].k_levels, Levels::kNormal);
  for (int i : {0, 1}) {
    EXPECT_FALSE(l[static_cast<size_t>(i)].rot_k);
    EXPECT_EQ(l[static_cast<size_t>(i)].knorm, KeyNorm::kSqrtMax);
    EXPECT_EQ(l[static_cast<size_t>(i)].v_bits, 2);
  }
  const std::vector<LayerConfig> o = parse_cache_spec("innerq;0:v=4").layers(2, 256);
  EXPECT_EQ(o[0].v_bits, 4);
  EXPECT_EQ(o[0].k_bits, 4);
  EXPECT_EQ(o[1].v_bits, 2);
  // Without a model the spec says both choices, and round-trips.
  const LayerConfig unresolved = parse_cache_spec("innerq:knorm=rms").layer;
  EXPECT_EQ(describe(unresolved),
            "innerq k3sym v3hybrid g128 sink32 recent96 knorm=rms kg64 kcenter rot=k "
            "(head_dim < 256; from 256: k4sym v2hybrid klevels=normal rot=off)");
  const LayerConfig again = parse_cache_spec(spec_string(unresolved)).layer;
  EXPECT_EQ(again.by_head_dim, LayerConfig::kAutoRot | LayerConfig::kAutoKBits |
                                   LayerConfig::kAutoVBits | LayerConfig::kAutoKLevels);
  EXPECT_EQ(again.knorm, KeyNorm::kRms);
  EXPECT_EQ(spec_string(again), spec_string(unresolved));
  // Resolved configs spell every field out.
  const std::string resolved = spec_string(at("innerq", 256));
  EXPECT_EQ(resolved,
            "innerq-paper:k=4,v=2,kmode=sym,vmode=hybrid,g=128,kg=64,sink=32,recent=96,"
            "knorm=sqrtmax,kcenter=on,klevels=normal,rot=off");
}

TEST(CacheSpec, PerLayerOverridesInline) {
  const CacheSpec s = parse_cache_spec("innerq-paper:k=4;0-1:k=8,v=4;3=f16;1:kmode=asym");
  const std::vector<LayerConfig> l = s.layers(5, 64);
  ASSERT_EQ(l.size(), 5u);
  EXPECT_EQ(l[0].k_bits, 8);
  EXPECT_EQ(l[0].v_bits, 4);
  EXPECT_EQ(l[1].k_mode, QuantMode::kAsymmetric);  // later overrides win, on top of the base
  EXPECT_EQ(l[1].k_bits, 4);
  EXPECT_EQ(l[2].k_bits, 4);  // the base
  EXPECT_EQ(l[3].kind, CacheKind::kF16);
  EXPECT_EQ(l[4].kind, CacheKind::kInnerQ);
  try {
    s.layers(3, 64);
    ADD_FAILURE() << "layer 3 of a 3-layer model accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 3 is beyond the model's 3 layers"),
              std::string::npos)
        << e.what();
  }
  // Lists still split on names, not on fields inside overrides.
  const auto list = parse_cache_spec_list("innerq;0-1:k=8,v=8,f16,q4_0;2=kivi");
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list[0].overrides.size(), 1u);
  EXPECT_EQ(list[2].overrides.size(), 1u);
}

TEST(CacheSpec, PerLayerOverridesFromAFile) {
  const std::string path = ::testing::TempDir() + "layers_" + std::to_string(::getpid()) + ".txt";
  {
    std::ofstream f(path);
    f << "# tuned\n0:k=8,v=8   # protect layer 0\n\n  2-3 = q8_0\n";
  }
  const CacheSpec s = parse_cache_spec("innerq:k=2,layers=" + path);
  const std::vector<LayerConfig> l = s.layers(4, 64);
  EXPECT_EQ(l[0].k_bits, 8);
  EXPECT_EQ(l[1].k_bits, 2);
  EXPECT_EQ(l[2].kind, CacheKind::kQ8_0);
  {
    std::ofstream f(path);
    f << "0:k=8\n1:k=7\n";
  }
  try {
    parse_cache_spec("innerq:layers=" + path);
    ADD_FAILURE() << "bad line accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("k=7 is not a supported bit width"), std::string::npos);
  }
  std::remove(path.c_str());
  EXPECT_THROW(parse_cache_spec("innerq:layers=" + path), Error);  // missing file
  EXPECT_THROW(parse_cache_spec("innerq:layers=/"), Error);        // a directory
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
      {"innerq:bits=3",
       "unknown key 'bits' for innerq (allowed keys: k, v, kmode, vmode, g, kg, sink"},
      {"f16:k=3", "unknown key 'k' for f16 (allowed keys: rot, kperm, layers)"},
      {"kivi:k=3", "unknown key 'k' for kivi (allowed keys: g, recent, rot, kperm, layers)"},
      {"q4_0:rot=q", "rot='q' is not a rotation (off, k, v, kv)"},
      {"innerq:kcenter=yes", "kcenter='yes' is not on or off"},
      {"innerq:ksort=1", "ksort='1' is not on or off"},
      {"kivi:ksort=on", "unknown key 'ksort' for kivi"},
      {"innerq:kg=16", "kg=16 is not a supported group size (32, 64, 128)"},
      {"innerq:k=3,k=4", "key 'k' is given twice"},
      {"innerq;", "is not RANGE=SPEC or RANGE:FIELDS"},
      {"innerq;x:k=3", "layer='x' is not an integer"},
      {"innerq;3-1:k=3", "layer range '3-1' is empty"},
      {"innerq;0:k=9", "k=9 is not a supported bit width"},
      {"innerq;0=f8", "unknown cache 'f8'"},
      {"innerq;0=innerq:layers=x", "unknown key 'layers'"},
      {"innerq;99999:k=3", "layer 99999 must be between 0 and 4095"},
      {"kivi:recent=100", "recent=100 must be a multiple of g=32"},
      {"innerq:k=3,,v=2", "'' is not key=value"},
      {"innerq:klevels=lloyd", "klevels='lloyd' is not uniform or normal"},
      {"innerq:klevels=normal,kmode=hybrid",
       "klevels=normal needs symmetric key groups (kmode=sym), not kmode=hybrid"},
      {"innerq:k=8,klevels=normal", "klevels=normal has codebooks for k=2, 3 and 4, not k=8"},
      {"innerq:klevels=normal;0:k=8", "has codebooks for k=2, 3 and 4, not k=8"},
      {"kivi:klevels=normal", "unknown key 'klevels' for kivi"},
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
