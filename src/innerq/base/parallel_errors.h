// innerq/base/parallel_errors.h — carries exceptions out of OpenMP regions.
//
// An exception that leaves an OpenMP structured block ends the program
// (std::terminate). Code that may throw inside a parallel loop (an
// allocation, a check) runs each iteration through run(), which keeps the
// first exception; the region ends normally and rethrow() raises it on the
// calling thread (docs/architecture.md, "Errors and threads").
#pragma once

#include <exception>
#include <mutex>

namespace innerq {

class ParallelErrors {
 public:
  template <class F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
      const std::lock_guard<std::mutex> lock(mutex_);
      if (!first_) first_ = std::current_exception();
    }
  }

  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::mutex mutex_;
  std::exception_ptr first_;
};

}  // namespace innerq
