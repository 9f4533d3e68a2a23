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

// A fixed pool has no room left for what was asked (blocks of a sequence, or
// a new sequence): the request was refused and nothing was stored. The C ABI
// reports it as INNERQ_ERROR_POOL_FULL, so a caller can evict and retry.
class PoolFullError : public Error {
 public:
  using Error::Error;
};

}  // namespace innerq
