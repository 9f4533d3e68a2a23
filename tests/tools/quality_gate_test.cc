// tests/tools/quality_gate_test.cc — the quality gate (label `model`, runs in
// CI): `innerq perplexity` on SmolLM2-135M over two short chunks of the
// WikiText-2 raw test split, for f16, q4_0 (plain and rotated), kivi and the
// default innerq config. Each cache's KL divergence from f16 and top-1
// agreement must stay within bounds set from measurements (docs/quality.md, "Quality
// gate") with margin, and the default must beat q4_0, so a kernel, cache or
// rotation bug that hurts quality fails CI. It scores token by token (-b 1):
// the decode path itself (chunked extend is checked against it in
// tests/attn/chunk_attention_test.cc and tests/model/extend_*).
//
// Needs models/ (scripts/fetch-model.sh) and data/wikitext2 (scripts/
// fetch-data.sh); scripts/test.sh runs both first. Without them the test
// skips saying what is missing, and fails under CI=true.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "innerq/kv/cache_spec.h"

namespace {

struct Bound {
  double max_kld;
  double min_top1;
};

void missing(const std::string& what) {
  if (const char* ci = std::getenv("CI"); ci != nullptr && std::string(ci) == "true") {
    FAIL() << what << " is missing in CI";
  }
  GTEST_SKIP() << what << " is missing";
}

std::string run(const std::string& args, int* status) {
  FILE* pipe = popen((std::string(INNERQ_BINARY) + " " + args + " 2>&1").c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) output.append(buffer.data(), n);
  *status = pclose(pipe);
  return output;
}

// Runs `innerq ARGS`; asserts it exits 0 and returns the JSON that starts at
// the first `open` character of its output (progress lines come before).
nlohmann::json run_json(const std::string& args, char open) {
  int status = 0;
  const std::string output = run(args, &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;
  const size_t start = output.find(open);
  if (start == std::string::npos) {
    ADD_FAILURE() << "no JSON in: " << output;
    return nlohmann::json();
  }
  return nlohmann::json::parse(output.substr(start));
}

// Checks `perplexity --json` rows against per-kv bounds: every listed kv and
// no other, `tokens` scored each, KLD and top-1 within bounds, and no
// quantized cache exact. Returns the KLD of each kv.
std::map<std::string, double> check_rows(const nlohmann::json& rows,
                                         const std::map<std::string, Bound>& bounds, long tokens) {
  std::map<std::string, double> kld;
  EXPECT_EQ(rows.size(), bounds.size()) << rows.dump();
  for (const auto& row : rows) {
    const std::string kv = row.at("kv");
    SCOPED_TRACE(kv);
    if (!bounds.count(kv)) {
      ADD_FAILURE() << "unexpected kv in " << rows.dump();
      continue;
    }
    const Bound& b = bounds.at(kv);
    EXPECT_EQ(row.at("tokens").get<long>(), tokens);
    EXPECT_LE(row.at("kld").get<double>(), b.max_kld);
    EXPECT_GE(row.at("top1").get<double>(), b.min_top1);
    kld[kv] = row.at("kld");
    if (kv != "f16") {
      EXPECT_GT(row.at("kld").get<double>(), 0.0) << "a quantized cache cannot be exact";
    }
  }
  return kld;
}

TEST(QualityGate, SmolLM2KldAndTop1WithinMeasuredBounds) {
  const std::string text = "data/wikitext2/test.raw.txt";
  if (!std::filesystem::exists("models/SmolLM2-135M-Instruct.Q4_1.gguf")) {
    return missing("models/SmolLM2-135M-Instruct.Q4_1.gguf (run scripts/fetch-model.sh)");
  }
  if (!std::filesystem::exists(text)) return missing(text + " (run scripts/fetch-data.sh)");

  const std::string args = " perplexity -m smollm2 -f " + text +
                           " --ctx 512 --prefix 256 --chunks 2 -t 2 -b 1 --json"
                           " --kv q4_0,q4_0:rot=kv,kivi,innerq ";
  const nlohmann::json rows = run_json(args, '[');
  ASSERT_FALSE(rows.is_null());

  // Measured on this text and these settings (docs/quality.md, "Quality gate"); the
  // bounds leave about 1.5× headroom on KLD and a few points on top-1, well
  // inside the gap a broken kernel opens (an unrotated-query bug, a dropped
  // window or a wrong scale costs several times the KLD).
  // Measured 2026-12-01 (KLD, top-1): q4_0 0.1121, 0.795; q4_0:rot=kv
  // 0.0455, 0.902; kivi 0.2099, 0.772; innerq 0.0211, 0.918.
  const std::map<std::string, Bound> bounds = {
      {"f16", {0.0, 1.0}},    {"q4_0", {0.17, 0.75}},    {"q4_0:rot=kv", {0.07, 0.86}},
      {"kivi", {0.32, 0.72}}, {"innerq", {0.032, 0.88}},
  };
  std::map<std::string, double> kld = check_rows(rows, bounds, 2 * 256);
  // The default beats llama.cpp's q4_0 (4.5 bits), plain and rotated, with
  // fewer bytes; rotation helps q4_0.
  EXPECT_LT(kld["innerq"], kld["q4_0:rot=kv"]);
  EXPECT_LT(kld["q4_0:rot=kv"], kld["q4_0"]);
}

// Gemma 3 270M (head_dim 256, 3 global layers quantized): the default must
// stay well below rotated and plain q4_0's KLD (the target is half; the
// head_dim rule meets it, docs/architecture.md, "By head_dim"). One chunk,
// batched extend (exact, tests/attn/chunk_attention_test.cc): about 35 s.
TEST(QualityGate, Gemma3KldWithinMeasuredBounds) {
  const std::string text = "data/wikitext2/test.raw.txt";
  if (!std::filesystem::exists("models/gemma-3-270m-q4_k_m.gguf")) {
    return missing("models/gemma-3-270m-q4_k_m.gguf (run scripts/fetch-model.sh)");
  }
  if (!std::filesystem::exists(text)) return missing(text + " (run scripts/fetch-data.sh)");
  const std::string args = " perplexity -m gemma3-270m -f " + text +
                           " --ctx 1024 --prefix 512 --chunks 1 -t 2 -b 64 --json"
                           " --kv q4_0,q4_0:rot=kv,innerq ";
  const nlohmann::json rows = run_json(args, '[');
  ASSERT_FALSE(rows.is_null());
  // Measured 2026-12-07 (KLD, top-1): q4_0 0.0787, 0.895; q4_0:rot=kv
  // 0.0657, 0.898; innerq 0.0217, 0.955 (0.0269 before its keys took codebook
  // levels). One chunk moves by up to 10 % from float order alone, hence 0.6
  // rather than the target's 0.5 below, and 0.033 (1.5x) for innerq.
  const std::map<std::string, Bound> bounds = {
      {"f16", {0.0, 1.0}},
      {"q4_0", {0.12, 0.85}},
      {"q4_0:rot=kv", {0.10, 0.85}},
      {"innerq", {0.033, 0.92}},
  };
  std::map<std::string, double> kld = check_rows(rows, bounds, 512);
  EXPECT_LE(kld["innerq"], 0.6 * kld["q4_0:rot=kv"]);
  EXPECT_LE(kld["innerq"], 0.6 * kld["q4_0"]);
}

// Passkey retrieval on SmolLM2 (tools/cmd_passkey.cc): a few fixed trials
// with the `repeat` filler, where f16 retrieves every key. Each cache must
// retrieve as measured and answer with an NLL within bounds: a key-path bug
// (a wrong scale, rotation or window) loses keys or inflates the NLL long
// before it moves KLD over ordinary text. About 15 s.
TEST(QualityGate, SmolLM2PasskeyAnswersLikeF16) {
  if (!std::filesystem::exists("models/SmolLM2-135M-Instruct.Q4_1.gguf")) {
    return missing("models/SmolLM2-135M-Instruct.Q4_1.gguf (run scripts/fetch-model.sh)");
  }
  const std::string args =
      " passkey -m smollm2 -f repeat --lengths 1024 --trials 4 --seed 1"
      " -t 2 --json --kv innerq,innerq:k=4,v=4 ";
  const nlohmann::json j = run_json(args, '{');
  ASSERT_FALSE(j.is_null());
  const std::string output = j.dump();
  // Measured 2026-12-06 (keys retrieved of 4, mean answer NLL in nats):
  // f16 4, 0.926; innerq 3, 1.769; innerq:k=4,v=4 4, 1.032. The default
  // loses one key here and answers with twice f16's NLL (docs/quality.md, "Passkey
  // retrieval": the retrieval target is not met on SmolLM2); the bounds
  // hold it there and 4-bit keys at f16's level.
  const std::map<std::string, double> max_nll = {
      {"f16", 1.4}, {"innerq", 2.7}, {"innerq:k=4,v=4", 1.55}};
  const std::map<std::string, int> min_retrieved = {
      {"f16", 4}, {"innerq", 3}, {"innerq:k=4,v=4", 4}};
  ASSERT_EQ(j.at("configs").size(), max_nll.size()) << output;
  double f16_nll = 0.0;
  for (const auto& c : j.at("configs")) {
    const std::string kv = c.at("kv");
    SCOPED_TRACE(kv);
    ASSERT_TRUE(max_nll.count(kv)) << output;
    EXPECT_GE(c.at("retrieved").get<int>(), min_retrieved.at(kv)) << output;
    const double nll = c.at("mean_answer_nll");
    EXPECT_GT(nll, 0.0);
    EXPECT_LE(nll, max_nll.at(kv));
    if (kv == "f16") f16_nll = nll;
    if (kv == "innerq:k=4,v=4") {
      EXPECT_LE(nll, 1.25 * f16_nll);
    }
  }
}

std::string read_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return "";
  std::string out;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), f)) out.append(buffer.data(), n);
  std::fclose(f);
  return out;
}

// `innerq tune` on a small calibration slice: it writes one spec per layer,
// keeps the budget, is deterministic, and the file is a valid --kv layers
// file for `info`.
TEST(Tune, WritesADeterministicLayersFileWithinTheBudget) {
  if (!std::filesystem::exists("models/SmolLM2-135M-Instruct.Q4_1.gguf")) {
    return missing("models/SmolLM2-135M-Instruct.Q4_1.gguf (run scripts/fetch-model.sh)");
  }
  const std::string text = "data/wikitext2/valid.txt";
  if (!std::filesystem::exists(text)) return missing(text + " (run scripts/fetch-data.sh)");
  const std::string base = ::testing::TempDir() + "tune_" + std::to_string(::getpid());
  std::string json[2], files[2];
  for (int i = 0; i < 2; ++i) {
    int status = 0;
    // Short windows so that a 128-token chunk quantizes most of its keys
    // and values.
    const std::string out = run("tune -m smollm2 -f " + text +
                                    " --base innerq:sink=4,recent=8,g=32 --bits 2,8 --budget 3.5"
                                    " --ctx 128 --prefix 96 --chunks 1 -t 2 --json -o " +
                                    base + ".txt",
                                &status);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
    json[i] = out.substr(out.find('{'));
    files[i] = read_file(base + ".txt");
  }
  const std::string& file = files[0];
  EXPECT_EQ(file, files[1]) << "the search must be deterministic";
  EXPECT_EQ(json[0], json[1]);
  const nlohmann::json j = nlohmann::json::parse(json[0]);
  EXPECT_LE(j.at("chosen_bits").get<double>(), 3.5);
  ASSERT_EQ(j.at("layers").size(), 30u);
  int lines = 0;
  for (char c : file) lines += c == '\n';
  EXPECT_GE(lines, 30);
  // The cheapest choice averages 2.625 bits, the budget 3.5: the most
  // sensitive layers get 8 bits.
  int eights = 0;
  for (const auto& l : j.at("layers")) eights += l.at("k_bits") == 8 || l.at("v_bits") == 8;
  EXPECT_GT(eights, 0);
  // Each layer of the file holds the bits chosen for it (an `innerq` base
  // resolves its head_dim fields first, so the file names k and v).
  const std::vector<innerq::kv::LayerConfig> layers =
      innerq::kv::parse_cache_spec("innerq:layers=" + base + ".txt").layers(30, 64);
  for (const auto& l : j.at("layers")) {
    const innerq::kv::LayerConfig& c = layers.at(l.at("layer").get<size_t>());
    EXPECT_EQ(c.k_bits, l.at("k_bits").get<int>()) << "layer " << l.at("layer");
    EXPECT_EQ(c.v_bits, l.at("v_bits").get<int>()) << "layer " << l.at("layer");
    EXPECT_EQ(c.sink, 4);
  }
  int status = 0;
  const std::string info =
      run("info -m smollm2 -c 1024 --json --kv innerq:layers=" + base + ".txt", &status);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << info;
  const nlohmann::json caches = nlohmann::json::parse(info.substr(info.find('{'))).at("caches");
  EXPECT_EQ(caches.at(0).at("layer_bytes").size(), 30u);
  std::remove((base + ".txt").c_str());
}

// On Gemma 3 only the 3 global layers are quantized: tune measures, budgets
// and writes those, with the head_dim-256 frame of `innerq` (unrotated keys,
// sqrt-max normalization) and the chosen bits; --validate measures the
// choice for real.
TEST(Tune, SkipsSlidingWindowLayersAndKeepsTheWideFrame) {
  if (!std::filesystem::exists("models/gemma-3-270m-q4_k_m.gguf")) {
    return missing("models/gemma-3-270m-q4_k_m.gguf (run scripts/fetch-model.sh)");
  }
  const std::string text = "data/wikitext2/valid.txt";
  if (!std::filesystem::exists(text)) return missing(text + " (run scripts/fetch-data.sh)");
  const std::string file = ::testing::TempDir() + "tune_gemma_" + std::to_string(::getpid());
  int status = 0;
  const std::string out = run("tune -m gemma3-270m -f " + text +
                                  " --base innerq:sink=4,recent=8 --bits 2,8 --budget 3.5"
                                  " --ctx 96 --prefix 64 --chunks 1 -t 2 --json --validate -o " +
                                  file,
                              &status);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  const nlohmann::json j = nlohmann::json::parse(out.substr(out.find('{')));
  std::vector<int> tuned;
  for (const auto& l : j.at("layers")) tuned.push_back(l.at("layer").get<int>());
  EXPECT_EQ(tuned, (std::vector<int>{5, 11, 17}));
  EXPECT_LE(j.at("chosen_bits").get<double>(), 3.5);
  EXPECT_GT(j.at("chosen_bits").get<double>(), 3.0);  // one layer affords an 8-bit K or V
  // --validate ran the choice and the one uniform choice within the budget
  // (K2 V2): spending the budget on 8-bit layers must measure better.
  ASSERT_EQ(j.at("uniform").size(), 1u);
  const double tuned_kld = j.at("measured_kld").get<double>();
  const double uniform_kld = j.at("uniform").at(0).at("measured_kld").get<double>();
  EXPECT_GE(tuned_kld, 0.0);
  EXPECT_LT(tuned_kld, uniform_kld);
  const std::string written = read_file(file);
  EXPECT_NE(written.find("# innerq tune: 3 layers of 18 (the others are sliding windows)"),
            std::string::npos)
      << written;
  const std::vector<innerq::kv::LayerConfig> layers =
      innerq::kv::parse_cache_spec("innerq:layers=" + file).layers(18, 256);
  for (const auto& l : j.at("layers")) {
    const innerq::kv::LayerConfig& c = layers.at(l.at("layer").get<size_t>());
    EXPECT_EQ(c.k_bits, l.at("k_bits").get<int>());
    EXPECT_EQ(c.v_bits, l.at("v_bits").get<int>());
    EXPECT_FALSE(c.rot_k);
    EXPECT_EQ(c.knorm, innerq::kv::KeyNorm::kSqrtMax);
  }
  std::remove(file.c_str());
}

// --self calibrates without a data set: the model samples its own text
// (seeded, so two runs write the same file), which also fills the
// calibration passkeys; the file and the JSON say where the text came from.
TEST(Tune, SelfCalibratesOnTheModelsOwnSamples) {
  if (!std::filesystem::exists("models/gemma-3-270m-q4_k_m.gguf")) {
    return missing("models/gemma-3-270m-q4_k_m.gguf (run scripts/fetch-model.sh)");
  }
  const std::string file = ::testing::TempDir() + "tune_self_" + std::to_string(::getpid());
  std::string json[2], files[2];
  for (int i = 0; i < 2; ++i) {
    int status = 0;
    const std::string out =
        run("tune -m gemma3-270m --self 200 --base innerq:sink=4,recent=8 --bits 2,8 --budget 3.5"
            " --ctx 96 --prefix 64 --chunks 2 -t 2 --json --passkey 1 --passkey-length 256 -o " +
                file,
            &status);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
    json[i] = out.substr(out.find('{'));
    files[i] = read_file(file);
  }
  EXPECT_EQ(files[0], files[1]) << "the samples must be seeded";
  EXPECT_EQ(json[0], json[1]);
  const nlohmann::json j = nlohmann::json::parse(json[0]);
  EXPECT_EQ(j.at("calibration").at("text"), "the model's own samples (--self 200)");
  EXPECT_GE(j.at("calibration").at("tokens").get<int>(), 200);
  EXPECT_EQ(j.at("layers").size(), 3u);
  EXPECT_LE(j.at("chosen_bits").get<double>(), 3.5);
  EXPECT_NE(files[0].find("calibration text the model's own samples (--self 200) (2 chunks of 96"),
            std::string::npos)
      << files[0];
  // Too few tokens for the chunks asked, and two texts at once, are refused.
  int status = 0;
  std::string out = run("tune -m gemma3-270m --self 50 --ctx 96 --prefix 64 -o " + file, &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << out;
  out = run("tune -m gemma3-270m --self 200 -f data/wikitext2/valid.txt -o " + file, &status);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << out;
  EXPECT_NE(out.find("-f and --self"), std::string::npos) << out;
  std::remove(file.c_str());
}

// --passkey adds each config's answer NLL over f16 on calibration passkeys to
// its KLD: the JSON carries both sensitivities, the choice minimizes their
// weighted sum over every choice within the budget (checked here by
// enumeration), and --validate measures both for real. Bad values are
// refused with the option's name.
TEST(Tune, PricesRetrievalWithCalibrationPasskeys) {
  if (!std::filesystem::exists("models/gemma-3-270m-q4_k_m.gguf")) {
    return missing("models/gemma-3-270m-q4_k_m.gguf (run scripts/fetch-model.sh)");
  }
  const std::string text = "data/wikitext2/valid.txt";
  if (!std::filesystem::exists(text)) return missing(text + " (run scripts/fetch-data.sh)");
  const std::string file = ::testing::TempDir() + "tune_passkey_" + std::to_string(::getpid());
  const std::string common = "tune -m gemma3-270m -f " + text +
                             " --base innerq:sink=4,recent=8 --bits 2,8 --budget 3.5"
                             " --ctx 96 --prefix 64 --chunks 1 -t 2 -o " +
                             file;
  const double weight = 100.0;
  int status = 0;
  const std::string out =
      run(common + " --json --validate --passkey 2 --passkey-length 256" + " --passkey-weight 100",
          &status);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  const nlohmann::json j = nlohmann::json::parse(out.substr(out.find('{')));
  ASSERT_EQ(j.at("passkey").at("trials"), 2);
  EXPECT_EQ(j.at("passkey").at("length"), 256);
  const std::vector<int> bits = j.at("bits").get<std::vector<int>>();
  ASSERT_EQ(bits, (std::vector<int>{2, 8}));
  const nlohmann::json& layers = j.at("layers");
  ASSERT_EQ(layers.size(), 3u);
  // Per layer and option (k index, v index): objective and cost in bits.
  const auto sens = [&](size_t l, size_t k, size_t v) {
    const nlohmann::json& r = layers.at(l);
    for (const char* key : {"dnll_k", "dnll_v"}) {
      for (double d : r.at(key).get<std::vector<double>>()) {
        EXPECT_TRUE(std::isfinite(d) && d >= 0.0) << key << " " << d;
      }
    }
    return r.at("kld_k").at(k).get<double>() + r.at("kld_v").at(v).get<double>() +
           weight * (r.at("dnll_k").at(k).get<double>() + r.at("dnll_v").at(v).get<double>());
  };
  // K sym kg=64 (b + 0.25 bits), V hybrid g=128 (b + 0.25): per layer (K + V) / 2.
  const auto cost = [&](size_t k, size_t v) { return (bits[k] + bits[v] + 0.5) / 2.0; };
  double best = 1e30, any_dnll = 0.0;
  for (size_t c = 0; c < 64; ++c) {
    double objective = 0.0, avg = 0.0;
    for (size_t l = 0; l < 3; ++l) {
      const size_t k = (c >> (2 * l)) & 1, v = (c >> (2 * l + 1)) & 1;
      objective += sens(l, k, v);
      avg += cost(k, v) / 3.0;
      any_dnll += layers.at(l).at("dnll_k").at(k).get<double>();
    }
    if (avg <= 3.5 + 1e-9) best = std::min(best, objective);
  }
  EXPECT_GT(any_dnll, 0.0) << "2-bit keys must cost some answer NLL somewhere";
  double chosen = 0.0;
  for (size_t l = 0; l < 3; ++l) {
    const size_t k = layers.at(l).at("k_bits") == 8, v = layers.at(l).at("v_bits") == 8;
    chosen += sens(l, k, v);
  }
  EXPECT_NEAR(chosen, best, 1e-9 * std::max(1.0, best));
  EXPECT_NEAR(j.at("predicted_objective").get<double>(), best, 1e-9 * std::max(1.0, best));
  const double measured = j.at("passkey").at("measured_dnll").get<double>();
  EXPECT_TRUE(std::isfinite(measured) && measured >= 0.0);
  EXPECT_NE(read_file(file).find("# objective: KLD + 100 x answer NLL/token"), std::string::npos);
  std::remove(file.c_str());

  for (const auto& [args, expected] : std::vector<std::pair<std::string, std::string>>{
           {" --passkey -1", "--passkey -1 must be in [0, 1000]"},
           {" --passkey 2 --passkey-weight nan", "--passkey-weight nan must be a finite number"},
           {" --passkey 2 --passkey-length 100", "--passkey-length 100 must be in [256, "}}) {
    const std::string err = run(common + args, &status);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << args << ": " << err;
    EXPECT_NE(err.find(expected), std::string::npos) << args << ": " << err;
  }
}

}  // namespace
