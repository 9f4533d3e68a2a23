// tests/tools/calibrate_cli_test.cc — `innerq calibrate` and `innerq bench
// decode` as users run them on stories260K: the key factors file a
// calibration writes, the refusals (exit code 2, one line), and bench
// decode's JSON rows.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "innerq/kv/key_factors.h"
#include "cli_run.h"

namespace {

using innerq::test::CliRun;
using innerq::test::run_innerq;
using innerq::test::story_text;
using innerq::test::temp_path;

TEST(CalibrateCli, WritesAFileTheCacheSpecReads) {
  const std::string text = story_text(), out = temp_path("stories.kf");
  const CliRun run =
      run_innerq("calibrate -m stories260K -f " + text + " -c 64 --chunks 4 --kv " +
                     "innerq-paper:sink=4,knorm=rms,kcenter=on -o " + out + " --json",
                 true);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output);
  for (const char* key : {"file", "bytes", "chunks", "tokens_per_head", "layers", "kv_heads",
                          "head_dim", "knorm", "kcenter", "rot_k", "seconds"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["chunks"], 4);
  EXPECT_EQ(j["tokens_per_head"], 4 * (64 - 4));
  const innerq::kv::KeyFactors kf = innerq::kv::read_key_factors(out);
  EXPECT_EQ(kf.n_layers, 5);
  EXPECT_EQ(kf.n_kv_heads, 4);
  EXPECT_EQ(kf.head_dim, 8);
  EXPECT_EQ(kf.knorm, innerq::kv::KeyNorm::kRms);
  EXPECT_TRUE(kf.centered);
  EXPECT_FALSE(kf.rotated);
  EXPECT_EQ(j["bytes"], 44 + kf.model.size() + 2 * 4 * 5 * 4 * 8 + 8);
  EXPECT_NE(kf.model.find("llama"), std::string::npos) << kf.model;
  // Calibrated statistics are not all ones.
  int ones = 0;
  for (float f : kf.factors) ones += f == 1.0f;
  EXPECT_LT(ones, static_cast<int>(kf.factors.size()));
  std::remove(out.c_str());
  std::remove(text.c_str());
}

TEST(CalibrateCli, BadInputExitsWithCode2AndOneLine) {
  const std::string text = story_text(), out = temp_path("never.kf");
  const std::string corrupt = temp_path("corrupt.kf");
  std::ofstream(corrupt) << std::string("INNERQKF\1\0\0\0", 12);  // version 1, then nothing
  for (const auto& [args, reason] : std::vector<std::pair<std::string, std::string>>{
           {"calibrate -m stories260K -f " + text + " -o " + out + " --kv f16",
            "give an innerq or innerq-paper spec"},
           {"calibrate -m stories260K -f " + text + " -o " + out + " --kv 'innerq;0:k=4'",
            "per-layer overrides are not calibrated"},
           {"calibrate -m stories260K -f " + text + " -o " + out + " -c 32 --kv innerq",
            "must exceed the spec's sink of 32 tokens"},
           {"calibrate -m stories260K -f " + text + " -o " + out + " -c 100000 --kv innerq",
            "do not fill one chunk"},
           {"calibrate -m stories260K -f /nonexistent.txt -o " + out, "/nonexistent.txt"},
           {"generate -m stories260K -p hi --kv innerq:kfactors=" + corrupt,
            "key factors file '" + corrupt + "': truncated"},
           {"generate -m stories260K -p hi --kv innerq:kfactors=" + text,
            "not a key factors file (bad magic"},
       }) {
    SCOPED_TRACE(args);
    const CliRun run = run_innerq(args);
    EXPECT_EQ(run.exit_code, 2) << run.output;
    EXPECT_EQ(run.output.find('\n'), run.output.size() - 1) << run.output;
    EXPECT_NE(run.output.find(reason), std::string::npos) << run.output;
  }
  std::remove(corrupt.c_str());
  std::remove(text.c_str());
}

TEST(BenchDecodeCli, JsonRowsHaveTheDocumentedKeys) {
  const CliRun run =
      run_innerq("bench decode -m stories260K -b 1,2 --ctx 64 -n 2 --kv f16,f32 -t 1 --json", true);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json rows = nlohmann::json::parse(run.output);
  ASSERT_EQ(rows.size(), 4u);  // 2 batch sizes × 2 specs
  for (const nlohmann::json& r : rows) {
    for (const char* key :
         {"kv", "batch", "ctx", "steps", "tokens_per_s", "ms_per_step", "speedup_vs_f16",
          "kv_bytes", "planned_bytes", "peak_rss_growth_bytes", "rss_growth_bytes",
          "rss_growth_trimmed_bytes", "pool_bytes", "sequences_reserved_bytes", "peak_vs_plan_pct",
          "peak_reset", "threads"}) {
      EXPECT_TRUE(r.contains(key)) << key << " in " << r.dump();
    }
    EXPECT_GT(r["tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(r["kv_bytes"].get<uint64_t>(), 0u);
    EXPECT_GE(r["planned_bytes"].get<uint64_t>(), r["kv_bytes"].get<uint64_t>());
  }
  EXPECT_EQ(rows[0]["kv"], "f16");
  EXPECT_DOUBLE_EQ(rows[0]["speedup_vs_f16"].get<double>(), 1.0);
  EXPECT_EQ(run_innerq("bench decode -m stories260K -b 0 --ctx 64").exit_code, 2);
}

}  // namespace
