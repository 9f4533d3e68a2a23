// tests/quant/quant_cli_test.cc — `innerq quant` as users run it: exit code 2
// and one line on stderr for bad arguments, one JSON object with the
// documented keys for --json.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "../tools/cli_run.h"  // running the innerq binary

namespace {

using innerq::test::CliRun;
using innerq::test::run_innerq;

TEST(QuantCli, BadArgumentsExitWithCode2AndOneLine) {
  for (const char* args : {"quant --bits 5", "quant --group 48", "quant --mode both",
                           "quant --dist file:/nonexistent/values.f32", "quant --dist file:/tmp",
                           "quant --dist cauchy", "quant --n 1000", "quant --bits"}) {
    SCOPED_TRACE(args);
    const CliRun run = run_innerq(args);
    EXPECT_EQ(run.exit_code, 2) << run.output;
    EXPECT_EQ(run.output.find('\n'), run.output.size() - 1) << run.output;
  }
  EXPECT_NE(run_innerq("quant --bits 5").output.find("bits must be one of 2, 3, 4, 8 (got 5)"),
            std::string::npos);
}

TEST(QuantCli, JsonHasExactlyTheDocumentedKeys) {
  const CliRun run =
      run_innerq("quant --bits 3 --mode hybrid --group 32 --dist outliers --n 65536 --json");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json report = nlohmann::json::parse(run.output);
  ASSERT_EQ(report.size(), 6u);
  for (const char* key : {"bits_per_value", "rel_rmse", "max_abs_err", "sym_fraction", "quant_gbps",
                          "dequant_gbps"}) {
    ASSERT_TRUE(report.contains(key)) << key;
  }
  EXPECT_DOUBLE_EQ(report["bits_per_value"].get<double>(), 4.0);
  EXPECT_GT(report["rel_rmse"].get<double>(), 0.0);
  EXPECT_LT(report["rel_rmse"].get<double>(), 0.3);
}

TEST(QuantCli, ReadsRawFloatFiles) {
  const std::string path = ::testing::TempDir() + "innerq_quant_cli_values.f32";
  {
    std::ofstream file(path, std::ios::binary);
    for (int i = 0; i < 64; ++i) {
      const float v = static_cast<float>(i % 4);
      file.write(reinterpret_cast<const char*>(&v), sizeof v);
    }
  }
  const CliRun run = run_innerq("quant --bits 2 --mode asym --dist file:" + path + " --json");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(nlohmann::json::parse(run.output)["max_abs_err"].get<double>(), 0.0);
}

}  // namespace
