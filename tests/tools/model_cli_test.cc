// tests/tools/model_cli_test.cc — `innerq generate | perplexity | info | passkey` as
// users run them: bad input gives exit code 2 and one line on stderr; --json
// gives the documented keys; greedy generation is the golden text.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_run.h"

namespace {

using innerq::test::CliRun;
using innerq::test::run_innerq;

using innerq::test::write_temp_file;

TEST(ModelCli, BadInputExitsWithCode2AndOneLine) {
  const std::string not_gguf = write_temp_file("innerq_not_a_model.gguf", "just text, not GGUF\n");
  for (const std::string& args : {
           std::string("generate -m /nonexistent/model.gguf -p hi"),
           "generate -m " + not_gguf + " -p hi",
           std::string("generate -m stories260K -p hi --kv innerq:k=7"),
           std::string("generate -m stories260K -p hi --kv nonsense"),
           std::string("generate -m stories260K -p 'Once upon a time there was a girl' -c 4"),
           std::string("generate -m stories260K -p hi --top-p 2"),
           std::string("perplexity -m stories260K -f /nonexistent/text.txt --kv f32"),
           std::string("perplexity -m stories260K -f /nonexistent/text.txt --kv q9_9"),
           std::string("perplexity -m stories260K -f tests/model/fixtures/stories260K.json "
                       "--ctx 64 --prefix 64"),
           std::string("info -m /nonexistent/model.gguf"),
           std::string("info -m stories260K --kv bogus"),
           std::string("passkey -m stories260K --lengths 100 --kv f32"),
           std::string("passkey -m stories260K --lengths 256,abc --kv f32"),
           std::string("passkey -m stories260K --lengths 256 --trials 0 --kv f32"),
           std::string("passkey -m stories260K --lengths 256 -f /nonexistent/filler.txt"),
           std::string("passkey -m stories260K --lengths 256 --keys 0 --kv f32"),
           std::string("passkey -m stories260K --lengths 256 --keys 5 --kv f32"),
           std::string("tune -m stories260K -o /nonexistent/layers.txt"),
           std::string("tune -m stories260K --self 100 -f x.txt -o /nonexistent/layers.txt"),
           std::string("tune -m stories260K --self 70000 -o /nonexistent/layers.txt"),
       }) {
    SCOPED_TRACE(args);
    const CliRun run = run_innerq(args);
    EXPECT_EQ(run.exit_code, 2) << run.output;
    EXPECT_EQ(run.output.find('\n'), run.output.size() - 1) << run.output;
  }
  EXPECT_NE(run_innerq("generate -m stories260K -p 'Once upon a time there was a girl' -c 4")
                .output.find("does not fit the context of 4"),
            std::string::npos);
  EXPECT_NE(run_innerq("tune -m stories260K -o /nonexistent/layers.txt")
                .output.find("-f FILE, or --self N"),
            std::string::npos);
  EXPECT_NE(run_innerq("passkey -m stories260K --lengths 256 -f /nonexistent/filler.txt")
                .output.find("scripts/fetch-data.sh"),
            std::string::npos);
  std::remove(not_gguf.c_str());
}

TEST(ModelCli, GenerateJsonIsTheGoldenGreedyText) {
  const CliRun run =
      run_innerq("generate -m stories260K -p 'Once upon a time' -n 24 --kv f16 --json", true);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output);
  for (const char* key : {"text", "prefill_tps", "decode_tps", "kv_bytes", "kv_bytes_f16",
                          "n_prompt", "n_generated"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_EQ(j["text"].get<std::string>().rfind(", there was a little girl named Lily.", 0), 0u)
      << j["text"];
  EXPECT_EQ(j["n_generated"].get<int>(), 24);
  EXPECT_GT(j["kv_bytes"].get<long>(), 0);
}

TEST(ModelCli, PerplexityJsonHasTheBaseAndEachSpec) {
  std::string story;
  for (int i = 0; i < 8; ++i) {
    story += "Once upon a time, there was a little girl named Lily. She loved to play outside. ";
  }
  const std::string path = write_temp_file("innerq_story.txt", story);
  const CliRun run = run_innerq(
      "perplexity -m stories260K -f " + path + " --ctx 96 --prefix 48 --chunks 1 --kv f32 --json",
      true);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["kv"], "f16");
  EXPECT_EQ(j[1]["kv"], "f32");
  for (const auto& row : j) {
    for (const char* key : {"kv", "ppl", "kld", "top1", "kv_bytes", "tokens"}) {
      EXPECT_TRUE(row.contains(key)) << key;
    }
    EXPECT_EQ(row["tokens"].get<int>(), 48);  // ctx − prefix
    EXPECT_GT(row["ppl"].get<double>(), 1.0);
    EXPECT_LT(row["ppl"].get<double>(), 10.0);  // a story the model knows well
  }
  EXPECT_EQ(j[0]["kld"].get<double>(), 0.0);
  EXPECT_LT(j[1]["kld"].get<double>(), 1e-4);  // f32 vs f16 cache: rounding only
  EXPECT_GE(j[1]["top1"].get<double>(), 0.95);
  std::remove(path.c_str());
}

// Scored tokens sent through the caches 8 at a time (chunked prefill) give
// the perplexity of one decode per token: with f32 and f16 caches only f32
// rounding (and f16 rounding of K/V rows that differ in their last bits)
// separates them.
TEST(ModelCli, PerplexityTokenBatchesMatchTokenByToken) {
  std::string story;
  for (int i = 0; i < 8; ++i) {
    story += "Once upon a time, there was a little girl named Lily. She loved to play outside. ";
  }
  const std::string path = write_temp_file("innerq_story_batches.txt", story);
  std::vector<nlohmann::json> runs;
  for (const char* b : {"1", "8"}) {
    const CliRun run = run_innerq("perplexity -m stories260K -f " + path +
                                      " --ctx 96 --prefix 40 --chunks 1 --kv f32 --json -b " + b,
                                  true);
    ASSERT_EQ(run.exit_code, 0) << run.output;
    runs.push_back(nlohmann::json::parse(run.output));
  }
  EXPECT_EQ(runs[0][0]["token_batch"], 1);
  EXPECT_EQ(runs[1][0]["token_batch"], 8);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(runs[1][i]["tokens"].get<int>(), 56);  // ctx − prefix, 56 = 7 steps of 8
    EXPECT_NEAR(runs[1][i]["ppl"].get<double>(), runs[0][i]["ppl"].get<double>(),
                1e-4 * runs[0][i]["ppl"].get<double>());
  }
  const CliRun bad = run_innerq(
      "perplexity -m stories260K -f " + path + " --ctx 96 --prefix 40 --kv f32 -b 0", false);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("--token-batch 0 must be >= 1"), std::string::npos) << bad.output;
  std::remove(path.c_str());
}

TEST(ModelCli, PasskeyJsonHasEachConfigAndTrial) {
  const std::string path = write_temp_file(
      "innerq_filler.txt",
      "Once upon a time, there was a little girl named Lily.\nShe loved to play.\n");
  const CliRun run = run_innerq(
      "passkey -m stories260K -f " + path + " --lengths 256,300 --trials 2 --kv f32 -t 1 --json",
      true);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output);
  ASSERT_EQ(j["configs"].size(), 2u);
  EXPECT_EQ(j["configs"][0]["kv"], "f16");
  EXPECT_EQ(j["configs"][1]["kv"], "f32");
  for (const auto& config : j["configs"]) {
    EXPECT_EQ(config["trials"].get<int>(), 4);
    ASSERT_EQ(config["by_length"].size(), 2u);
    EXPECT_EQ(config["by_length"][1]["length"].get<int>(), 300);
    int retrieved = 0;
    for (const auto& length : config["by_length"]) {
      ASSERT_EQ(length["runs"].size(), 2u);
      for (const auto& r : length["runs"]) {
        EXPECT_EQ(r["key"].get<std::string>().size(), 5u);
        EXPECT_EQ(r["label"], "");  // one key per prompt: the plain needle
        EXPECT_EQ(r["filler"], path);
        EXPECT_TRUE(r.contains("text"));
        retrieved += r["retrieved"].get<bool>();
        EXPECT_GT(r["answer_nll"].get<double>(), 0.0);
      }
    }
    EXPECT_EQ(config["retrieved"].get<int>(), retrieved);
    const auto& wilson = config["wilson95"];
    EXPECT_LE(wilson[0].get<double>(), retrieved / 4.0);
    EXPECT_GE(wilson[1].get<double>(), retrieved / 4.0);
  }
  // Same prompts for every config: the keys agree.
  EXPECT_EQ(j["configs"][0]["by_length"][0]["runs"][1]["key"],
            j["configs"][1]["by_length"][0]["runs"][1]["key"]);
  std::remove(path.c_str());
}

// Several keys under labels, two filler sources by turns, and the paired
// statistics: the counts agree with the trials, and an f32 cache scores the
// answer as the f16 reference does (K/V rounding only). stories260K's head
// dimension (8) admits only the f16 and f32 caches; the quantized kinds run
// through the same code (tested on SmolLM2 by the quality gate).
TEST(ModelCli, PasskeyMultiKeyPairsEachConfigWithF16) {
  const std::string path = write_temp_file(
      "innerq_filler2.txt",
      "Once upon a time, there was a little girl named Lily.\nShe loved to play.\n");
  const CliRun run = run_innerq("passkey -m stories260K -f " + path +
                                    ",repeat --keys 3 --lengths 400 --trials 4 --kv f32 -t 1 "
                                    "--seed 3 --json",
                                true);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output);
  ASSERT_EQ(j["configs"].size(), 2u);
  const auto& base_runs = j["configs"][0]["by_length"][0]["runs"];
  ASSERT_EQ(base_runs.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const std::string label = base_runs[i]["label"];
    EXPECT_TRUE(label == "red" || label == "blue" || label == "green") << label;
    EXPECT_EQ(base_runs[i]["filler"], i % 2 == 0 ? path : std::string("repeat"));
  }
  {
    const auto& config = j["configs"][1];
    const auto& runs = config["by_length"][0]["runs"];
    int lost = 0, gained = 0;
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(runs[i]["key"], base_runs[i]["key"]);
      EXPECT_EQ(runs[i]["label"], base_runs[i]["label"]);
      const bool base = base_runs[i]["retrieved"], mine = runs[i]["retrieved"];
      lost += base && !mine;
      gained += mine && !base;
      const double b = base_runs[i]["answer_nll"], f = runs[i]["answer_nll"];
      EXPECT_GT(b, 0.0);
      EXPECT_NEAR(f, b, 0.01 * b) << "trial " << i;
    }
    double delta = 0.0;
    for (size_t i = 0; i < 4; ++i) {
      delta += runs[i]["answer_nll"].get<double>() - base_runs[i]["answer_nll"].get<double>();
    }
    EXPECT_NEAR(config["answer_nll_delta_vs_f16"].get<double>(), delta / 4, 1e-9);
    EXPECT_GE(config["answer_nll_delta_ci95"].get<double>(), 0.0);
    EXPECT_EQ(config["lost_vs_f16"].get<int>(), lost);
    EXPECT_EQ(config["gained_vs_f16"].get<int>(), gained);
    EXPECT_LE(config["mcnemar_p"].get<double>(), 1.0);
    ASSERT_EQ(config["by_filler"].size(), 2u);
    EXPECT_EQ(
        config["by_filler"][0]["trials"].get<int>() + config["by_filler"][1]["trials"].get<int>(),
        4);
  }
  std::remove(path.c_str());
}

TEST(ModelCli, InfoDescribesTheModelAndCache) {
  const CliRun run = run_innerq("info -m stories260K -c 256 --kv f16,f32");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("parameters    292800"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("KV cache for 256 tokens"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("F32"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("block pool (256 tokens a block"), std::string::npos) << run.output;
}

// The pool arithmetic of `info`: a budget inverts to the most tokens per
// sequence, and that many fit while one more does not (kv::MemoryPlan).
TEST(ModelCli, InfoSizesAPoolBudget) {
  const CliRun run =
      run_innerq("info -m stories260K -c 512 --kv f16,f32 --budget 2 --seqs 4 --json", true);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output);
  for (const nlohmann::json& c : j.at("caches")) {
    const int64_t t = c.at("budget_tokens_per_sequence");
    EXPECT_GT(t, 0) << c.dump();
    EXPECT_EQ(c.at("budget_bytes"), 2 << 20);
    EXPECT_EQ(c.at("block_tokens"), 256);
    EXPECT_GT(c.at("sequence_reserved_bytes").get<size_t>(), c.at("bytes").get<size_t>() / 2);
  }
  // Plain caches have no windows: a block of every layer is layers x KV heads
  // x 256 tokens x (K, V) x head_dim x element bytes, and the budget holds
  // whole blocks for each of the 4 sequences.
  const size_t per_token_elements =
      j["layers"].get<size_t>() * j["kv_heads"].get<size_t>() * 2 * j["head_dim"].get<size_t>();
  for (const auto& [index, element] : {std::pair{0, 2}, std::pair{1, 4}}) {
    const nlohmann::json& c = j["caches"][index];
    const size_t block = per_token_elements * 256 * element;
    EXPECT_EQ(c["block_bytes"], block);
    EXPECT_EQ(c["budget_tokens_per_sequence"], (2 << 20) / (4 * block) * 256);
  }
  const CliRun bad = run_innerq("info -m stories260K --budget -3");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("--budget -3 MiB must be"), std::string::npos) << bad.output;
}

// Gemma 3 270M (scripts/fetch-model.sh): its sliding-window layers, and their
// cache memory bounded by the window while the global layers grow.
TEST(ModelCli, InfoShowsSlidingWindowLayersAndTheirMemory) {
  if (!std::ifstream("models/gemma-3-270m-q4_k_m.gguf")) {
    GTEST_SKIP() << "models/gemma-3-270m-q4_k_m.gguf is missing (scripts/fetch-model.sh)";
  }
  const CliRun run = run_innerq("info -m gemma3-270m -c 8192 --kv f16,innerq");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (const char* want :
       {"architecture  gemma3 (RoPE half split (NEOX), GeGLU (tanh), per-head q/k norm",
        "18: 15 sliding-window (0-4, 6-10, 12-16; 512 positions, RoPE base 10000), 3 global "
        "(5, 11, 17)",
        "head_dim 256", "Q4_K    27 tensors", "layers 0-4           524288 bytes each  window 512",
        "layer  5            8388608 bytes       f16"}) {
    EXPECT_NE(run.output.find(want), std::string::npos) << want << " not in:\n" << run.output;
  }
  const CliRun json = run_innerq("info -m gemma3-270m -c 8192 --kv f16 --json", true);
  ASSERT_EQ(json.exit_code, 0) << json.output;
  const nlohmann::json j = nlohmann::json::parse(json.output);
  EXPECT_EQ(j.at("window_layers"), 15);
  // 253 MB of weights: copied into 2 MiB pages where the kernel offers them
  // (tests/model/gguf_test.cc checks which, and the mapping behind it).
  const std::string memory = j.at("weights_memory");
  EXPECT_TRUE(memory == "huge_pages" || memory == "mapped") << memory;
  EXPECT_NE(run.output.find(memory == "huge_pages" ? "weights in    memory in 2 MiB pages"
                                                   : "weights in    the file's mapping"),
            std::string::npos)
      << run.output;
  // Packed weights (docs/architecture.md, "Packed weights"): with AVX-512
  // VNNI the Q8_0 and Q5_0 matrices are packed in place where the weights
  // are the process's own copy, the Q4_K and Q6_K ones beside their rows;
  // INNERQ_PACK=0 packs nothing.
  const size_t in_place = j.at("weights_packed_in_place_bytes");
  const size_t copy = j.at("weights_packed_copy_bytes");
  EXPECT_NE(run.output.find("packed        "), std::string::npos) << run.output;
  if (in_place + copy > 0) {
    EXPECT_GT(copy, 20'000'000u) << "the K-quant matrices";
    if (memory == "huge_pages") {
      EXPECT_GT(in_place, 200'000'000u) << "Q8_0 and Q5_0";
    } else {
      EXPECT_EQ(in_place, 0u) << "a file mapping is never written";
    }
  }
  ::setenv("INNERQ_PACK", "0", 1);
  const CliRun off = run_innerq("info -m gemma3-270m -c 8192 --kv f16 --json", true);
  ::unsetenv("INNERQ_PACK");
  ASSERT_EQ(off.exit_code, 0) << off.output;
  const nlohmann::json j_off = nlohmann::json::parse(off.output);
  EXPECT_EQ(j_off.at("weights_packed_in_place_bytes"), 0u);
  EXPECT_EQ(j_off.at("weights_packed_copy_bytes"), 0u);
  const std::vector<size_t> bytes = j.at("caches").at(0).at("layer_bytes");
  ASSERT_EQ(bytes.size(), 18u);
  // 512 positions x (K + V) x 256 dims x 2 bytes; 8192 positions globally.
  for (size_t l = 0; l < 18; ++l) EXPECT_EQ(bytes[l], l % 6 == 5 ? 8388608u : 524288u) << l;
}

// Issue "hardening", classes 1, 6, 7, 8: each message names the input and
// what was expected; nothing is read or allocated without a bound first.
TEST(ModelCli, HostileArgumentsGetClearErrors) {
  const std::string empty = write_temp_file("innerq_empty.txt", "");
  const struct {
    std::string args, expect;
  } cases[] = {
      {"generate -m stories260K -f /dev/zero", "is not a regular file"},
      {"generate -m stories260K -f /tmp", "is a directory"},
      {"generate -m stories260K -f " + empty, "is empty"},
      {"generate -m stories260K -p hi -c -5", "-c -5 must be"},
      {"generate -m stories260K -p hi -n 2147483647", "exceeds the limit of"},
      {"generate -m stories260K -p hi -c 2000000000", "-c 2000000000 must be"},
      {"info -m stories260K -c 99999999", "-c 99999999 must be"},
      {"info -m stories260K -c -1", "-c -1 must be"},
      {"perplexity -m stories260K -f /dev/zero --kv f32", "is not a regular file"},
      {"bench attention --ctx 99999999k", "is not a token count between 1 and"},
      {"bench attention --ctx 4000k --kv f16", "more than 80%"},
      {"generate -m stories260K -p hi --kv innerq:k=4,k=3", "key 'k' is given twice"},
      {"frobnicate", "unknown subcommand 'frobnicate'"},
      {"", "give a subcommand"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const CliRun run = run_innerq(c.args);
    EXPECT_EQ(run.exit_code, 2) << run.output;
    EXPECT_EQ(run.output.find('\n'), run.output.size() - 1) << run.output;
    EXPECT_NE(run.output.find(c.expect), std::string::npos) << run.output;
    EXPECT_EQ(run.output.find("internal error"), std::string::npos) << run.output;
  }
  std::remove(empty.c_str());
}

// JSON stays valid whatever bytes the prompt or the model's text holds: an
// invalid or cut UTF-8 sequence becomes U+FFFD, and the token ids carry the
// exact output.
TEST(ModelCli, GenerateJsonIsValidForBytesThatAreNotUtf8) {
  const std::string prompt =
      write_temp_file("innerq_bad_utf8.txt", "Once upon a \xe6\x97 time \xff");
  const CliRun run =
      run_innerq("generate -m stories260K -f " + prompt + " -n 8 --kv f16 --json", true);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json j = nlohmann::json::parse(run.output);  // throws on invalid UTF-8
  EXPECT_NE(j["prompt"].get<std::string>().find("\xef\xbf\xbd"), std::string::npos) << j["prompt"];
  EXPECT_EQ(j["tokens"].size(), j["n_generated"].get<size_t>());
  EXPECT_TRUE(j.contains("text_utf8_valid"));
  std::remove(prompt.c_str());
}

}  // namespace
