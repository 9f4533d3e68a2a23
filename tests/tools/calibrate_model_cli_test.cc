// tests/tools/calibrate_model_cli_test.cc — `--kv ...:kfactors=FILE` in the
// model commands on SmolLM2 (label `model`; skips without the model, which
// scripts/fetch-model.sh downloads).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_run.h"

namespace {

using innerq::test::CliRun;
using innerq::test::run_innerq;
using innerq::test::story_text;
using innerq::test::temp_path;

// SmolLM2 (label `model`): factors calibrated on one text serve perplexity
// and generation on another, for the default and the paper's config.
TEST(CalibrateCliModel, CalibratedFactorsRunPerplexityAndGenerate) {
  if (!std::filesystem::exists("models/SmolLM2-135M-Instruct.Q4_1.gguf")) {
    GTEST_SKIP() << "needs scripts/fetch-model.sh";
  }
  const std::string text = story_text();
  for (const std::string spec : {"innerq", "innerq-paper"}) {
    SCOPED_TRACE(spec);
    const std::string out = temp_path(spec + ".kf");
    const CliRun cal = run_innerq("calibrate -m smollm2 -f " + text + " -c 256 --chunks 2 --kv " +
                                      spec + " -o " + out + " --json",
                                  true);
    ASSERT_EQ(cal.exit_code, 0) << cal.output;
    const CliRun ppl =
        run_innerq("perplexity -m smollm2 -f " + text + " --ctx 256 --prefix 160 --chunks 1 --kv " +
                       spec + ":kfactors=" + out + " --json",
                   true);
    ASSERT_EQ(ppl.exit_code, 0) << ppl.output;
    const nlohmann::json rows = nlohmann::json::parse(ppl.output);
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_TRUE(std::isfinite(rows[1]["kld"].get<double>())) << ppl.output;
    const CliRun gen = run_innerq("generate -m smollm2 -p 'Once upon a time' -n 8 --kv " + spec +
                                      ":kfactors=" + out + " --json",
                                  true);
    ASSERT_EQ(gen.exit_code, 0) << gen.output;
    EXPECT_EQ(nlohmann::json::parse(gen.output)["n_generated"], 8);
    std::remove(out.c_str());
  }
  std::remove(text.c_str());
}

}  // namespace
