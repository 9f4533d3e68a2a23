// innerq/base/error.h — the one error type every layer throws on bad input.
//
// Library code never aborts on user input: it throws innerq::Error with a
// message that names the input and the limit it broke. The tools turn it into
// one line on stderr and exit code 2.
#pragma once

#include <stdexcept>
#include <string>

namespace innerq {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace innerq
