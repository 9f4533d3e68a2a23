// tests/tools/chat_model_cli_test.cc — `innerq chat` on SmolLM2 (label
// `model`; skips without the model, which scripts/fetch-model.sh downloads):
// per-turn JSON, earlier turns kept in the cache, a full context, and replies
// equal to one-shot generate on the same conversation.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_run.h"

namespace {

using innerq::test::CliRun;
using innerq::test::run_innerq;
using innerq::test::write_temp_file;

// The JSON objects of a --json run, one per line.
std::vector<nlohmann::json> json_lines(const std::string& output) {
  std::vector<nlohmann::json> rows;
  std::istringstream in(output);
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

bool has_smollm2() {
  return std::filesystem::exists("models/SmolLM2-135M-Instruct.Q4_1.gguf");
}

// Three turns: every turn's prompt goes into the cache after what is there,
// so the cache holds every prompt and reply token so far (the token that
// stopped a reply is stored only as the next turn's closing token).
TEST(ChatCliModel, TurnsStayInTheCache) {
  if (!has_smollm2()) GTEST_SKIP() << "needs scripts/fetch-model.sh";
  const std::string turns =
      write_temp_file("chat_three.txt",
                      "What is the capital of France?\n\nAnd of Italy?\r\nName one river there.\n");
  const CliRun run =
      run_innerq("chat -m smollm2 --turns " + turns + " -n 24 --kv innerq --json", true);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const std::vector<nlohmann::json> rows = json_lines(run.output);
  ASSERT_EQ(rows.size(), 3u) << run.output;
  const char* users[] = {"What is the capital of France?", "And of Italy?",
                         "Name one river there."};
  int64_t held = 0;
  int64_t last_bytes = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& r = rows[i];
    SCOPED_TRACE(r.dump());
    for (const char* key : {"text", "text_utf8_valid", "tokens", "stop", "kv", "ctx",
                            "kv_reserved_bytes", "prefill_ms", "decode_tps"}) {
      EXPECT_TRUE(r.contains(key)) << key;
    }
    EXPECT_EQ(r["turn"], i + 1);
    EXPECT_EQ(r["user"], users[i]);
    EXPECT_EQ(r["n_reply"], r["tokens"].size());
    EXPECT_GE(r["n_reply"].get<int>(), 1);
    EXPECT_LE(r["n_reply"].get<int>(), 24);
    EXPECT_NE(r["stop"], "context");
    held += r["n_prompt"].get<int64_t>() + r["n_reply"].get<int64_t>();
    EXPECT_EQ(r["kv_tokens"].get<int64_t>(), held);
    EXPECT_GT(r["kv_bytes"].get<int64_t>(), last_bytes);
    EXPECT_GE(r["kv_reserved_bytes"].get<int64_t>(), r["kv_bytes"].get<int64_t>());
    last_bytes = r["kv_bytes"].get<int64_t>();
  }
  // A later turn adds only its own text (and the closing of the reply):
  // nothing of the system turn or earlier turns is sent again.
  EXPECT_LT(rows[1]["n_prompt"].get<int>(), rows[0]["n_prompt"].get<int>());
  std::remove(turns.c_str());
}

TEST(ChatCliModel, FullContextExitsWithCode2NamingTheCache) {
  if (!has_smollm2()) GTEST_SKIP() << "needs scripts/fetch-model.sh";
  const std::string turns = write_temp_file("chat_full.txt", "Hi\nTell me a long story.\n");
  // The first turn (a 30-token system turn) fits; its reply or the second
  // turn does not.
  const CliRun run = run_innerq("chat -m smollm2 --turns " + turns + " -n 64 -c 48 --kv f16");
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find("the context is full: the cache holds"), std::string::npos)
      << run.output;
  EXPECT_NE(run.output.find("of -c 48"), std::string::npos) << run.output;
  // Too small for even the first turn.
  const CliRun tiny = run_innerq("chat -m smollm2 --turns " + turns + " -c 8 --json");
  EXPECT_EQ(tiny.exit_code, 2) << tiny.output;
  EXPECT_NE(tiny.output.find("the cache holds 0 tokens of -c 8"), std::string::npos) << tiny.output;
  std::remove(turns.c_str());
}

// The first turn through extend on an empty f32 cache is the prompt
// generate --chat prefills: greedy decoding gives the same tokens.
TEST(ChatCliModel, FirstReplyEqualsOneShotGenerate) {
  if (!has_smollm2()) GTEST_SKIP() << "needs scripts/fetch-model.sh";
  const std::string user = "What is the capital of France?";
  const std::string turns = write_temp_file("chat_first.txt", user + "\nAnd of Italy?\n");
  const CliRun chat =
      run_innerq("chat -m smollm2 --turns " + turns + " -n 16 --kv f32 --temp 0 --json", true);
  ASSERT_EQ(chat.exit_code, 0) << chat.output;
  const CliRun gen = run_innerq(
      "generate -m smollm2 --chat -p '" + user + "' -n 16 --kv f32 --temp 0 --json", true);
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  const std::vector<nlohmann::json> rows = json_lines(chat.output);
  ASSERT_EQ(rows.size(), 2u);
  const nlohmann::json g = nlohmann::json::parse(gen.output);
  EXPECT_EQ(rows[0]["n_prompt"], g["n_prompt"]);
  EXPECT_EQ(rows[0]["tokens"], g["tokens"]);

  // The second turn against generate on the whole conversation as one
  // prompt, when the first reply's text tokenizes back to its tokens.
  const std::string conversation =
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
      "Face<|im_end|>\n<|im_start|>user\n" +
      user + "<|im_end|>\n<|im_start|>assistant\n" + rows[0]["text"].get<std::string>() +
      "<|im_end|>\n<|im_start|>user\nAnd of Italy?<|im_end|>\n<|im_start|>assistant\n";
  const std::string prompt = write_temp_file("chat_conversation.txt", conversation);
  const CliRun whole =
      run_innerq("generate -m smollm2 -f " + prompt + " -n 16 --kv f32 --temp 0 --json", true);
  ASSERT_EQ(whole.exit_code, 0) << whole.output;
  const nlohmann::json w = nlohmann::json::parse(whole.output);
  if (w["n_prompt"] == rows[0]["kv_tokens"].get<int>() + rows[1]["n_prompt"].get<int>()) {
    EXPECT_EQ(rows[1]["tokens"], w["tokens"]);
  } else {
    ADD_FAILURE() << "the first reply does not tokenize back to its " << rows[0]["n_reply"]
                  << " tokens: " << rows[0]["text"];
  }
  std::remove(prompt.c_str());
  std::remove(turns.c_str());
}

}  // namespace
