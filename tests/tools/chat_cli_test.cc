// tests/tools/chat_cli_test.cc — `innerq chat` refusals on stories260K, which
// has no chat template: exit code 2 and one line naming the input. The chats
// themselves run on SmolLM2 in chat_model_cli_test.cc (label `model`).
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "cli_run.h"

namespace {

using innerq::test::CliRun;
using innerq::test::run_innerq;
using innerq::test::write_temp_file;

TEST(ChatCli, RefusalsExitWithCode2AndOneLine) {
  const std::string turns = write_temp_file("chat_turns.txt", "Hello\n");
  const std::string blank = write_temp_file("chat_blank.txt", "\n  \n\n");
  struct Case {
    std::string args;
    std::string says;
  };
  for (const Case& c : {
           Case{"chat -m stories260K --turns " + turns, "chat template"},
           Case{"chat -m stories260K --turns /nonexistent/turns.txt", "turns file"},
           Case{"chat -m stories260K --turns " + blank, "has no turn"},
           Case{"chat -m stories260K --turns " + turns + " -n 0", "-n 0"},
           Case{"chat -m stories260K --turns " + turns + " -c 1", "-c 1"},
           Case{"chat -m stories260K --turns " + turns + " --kv bogus", "bogus"},
       }) {
    SCOPED_TRACE(c.args);
    const CliRun run = run_innerq(c.args);
    EXPECT_EQ(run.exit_code, 2) << run.output;
    EXPECT_EQ(run.output.find('\n'), run.output.size() - 1) << run.output;
    EXPECT_NE(run.output.find(c.says), std::string::npos) << run.output;
  }
  std::remove(turns.c_str());
  std::remove(blank.c_str());
}

}  // namespace
