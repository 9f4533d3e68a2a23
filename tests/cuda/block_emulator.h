// tests/cuda/block_emulator.h — runs the CUDA kernels' device code on the
// CPU, one thread block at a time, so that their indexing, shared-memory use,
// barriers and shuffles are checked on machines without a GPU.
//
// Each CUDA thread of a block is a fiber (ucontext) with its own stack; the
// scheduler runs them in turn and switches only at __syncthreads (all threads
// of the block) and at warp shuffles (the 32 lanes of a warp), which is where
// a real GPU's threads can observe each other. The intrinsics the kernels use
// get plain host definitions below (dp4a and the byte permute have host
// fallbacks in device_format.cuh). Include this before any kernel header and
// compile with the host compiler, not nvcc.
#pragma once

#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#if defined(__CUDACC__)
#error "block_emulator.h is for the host compiler"
#endif

#define __launch_bounds__(...)

namespace innerq::cuda {

// Block-scope `extern __shared__` arrays of the kernels resolve to this.
alignas(16) inline unsigned char smem[256 * 1024];

inline uint3 threadIdx, blockIdx;

namespace emulator {

constexpr int kWarp = 32;

class Block {
 public:
  explicit Block(int n_threads) : fibers_(static_cast<size_t>(n_threads)) {}

  // Runs body() once per thread of the block, as the kernel's threads.
  void run(const std::function<void()>& body) {
    body_ = &body;
    for (size_t t = 0; t < fibers_.size(); ++t) {
      Fiber& f = fibers_[t];
      f.stack.resize(kStackBytes);
      f.state = State::kReady;
      getcontext(&f.context);
      f.context.uc_stack.ss_sp = f.stack.data();
      f.context.uc_stack.ss_size = f.stack.size();
      f.context.uc_link = &scheduler_;
      makecontext(&f.context, &Block::trampoline, 0);
    }
    current_block() = this;
    for (;;) {
      bool ran = false;
      for (size_t t = 0; t < fibers_.size(); ++t) {
        if (fibers_[t].state != State::kReady) continue;
        ran = true;
        current_ = static_cast<int>(t);
        threadIdx = {static_cast<unsigned>(t), 0, 0};
        swapcontext(&scheduler_, &fibers_[t].context);
      }
      if (release_barriers()) continue;
      if (!ran) break;
    }
    for (const Fiber& f : fibers_) {
      if (f.state != State::kDone) throw std::runtime_error("emulated block deadlocked");
    }
  }

  // __syncthreads: wait until every thread of the block arrives.
  void block_barrier() { wait(State::kAtBlockBarrier); }

  // A shuffle: publish `bits`, wait for the warp, read lane `src`'s, wait again.
  uint32_t exchange(uint32_t bits, int src_lane) {
    const int warp = current_ / kWarp;
    slots_[static_cast<size_t>(current_)] = bits;
    wait(State::kAtWarpBarrier);
    const uint32_t got = slots_[static_cast<size_t>(warp * kWarp + src_lane)];
    wait(State::kAtWarpBarrier);
    return got;
  }

  int lane() const { return current_ % kWarp; }
  static Block*& current_block() {
    static Block* block = nullptr;
    return block;
  }

 private:
  enum class State { kReady, kAtBlockBarrier, kAtWarpBarrier, kDone };
  struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    State state;
  };
  static constexpr size_t kStackBytes = 256 * 1024;

  static void trampoline() {
    Block* b = current_block();
    (*b->body_)();
    b->fibers_[static_cast<size_t>(b->current_)].state = State::kDone;
  }

  void wait(State s) {
    Fiber& f = fibers_[static_cast<size_t>(current_)];
    f.state = s;
    swapcontext(&f.context, &scheduler_);
  }

  // Releases a block barrier that every live thread reached, and each warp
  // barrier that every live lane of its warp reached. True if any released.
  bool release_barriers() {
    bool released = false;
    bool all_at_block = true, any_at_block = false;
    for (const Fiber& f : fibers_) {
      if (f.state == State::kAtBlockBarrier) any_at_block = true;
      if (f.state != State::kAtBlockBarrier && f.state != State::kDone) all_at_block = false;
    }
    if (any_at_block && all_at_block) {
      for (Fiber& f : fibers_) {
        if (f.state == State::kAtBlockBarrier) f.state = State::kReady;
      }
      released = true;
    }
    for (size_t w = 0; w * kWarp < fibers_.size(); ++w) {
      bool all = true, any = false;
      for (size_t t = w * kWarp; t < (w + 1) * kWarp && t < fibers_.size(); ++t) {
        if (fibers_[t].state == State::kAtWarpBarrier) any = true;
        if (fibers_[t].state != State::kAtWarpBarrier && fibers_[t].state != State::kDone) {
          all = false;
        }
      }
      if (any && all) {
        for (size_t t = w * kWarp; t < (w + 1) * kWarp && t < fibers_.size(); ++t) {
          if (fibers_[t].state == State::kAtWarpBarrier) fibers_[t].state = State::kReady;
        }
        released = true;
      }
    }
    return released;
  }

  std::vector<Fiber> fibers_;
  std::vector<uint32_t> slots_ = std::vector<uint32_t>(1024);
  ucontext_t scheduler_{};
  const std::function<void()>* body_ = nullptr;
  int current_ = 0;
};

}  // namespace emulator

// ---- the intrinsics the decode kernels use --------------------------------
inline void __syncthreads() {
  emulator::Block::current_block()->block_barrier();
}

inline float __shfl_xor_sync(unsigned, float v, int mask) {
  emulator::Block* b = emulator::Block::current_block();
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits = b->exchange(bits, b->lane() ^ mask);
  std::memcpy(&v, &bits, 4);
  return v;
}
inline int __shfl_xor_sync(unsigned, int v, int mask) {
  emulator::Block* b = emulator::Block::current_block();
  return static_cast<int>(b->exchange(static_cast<uint32_t>(v), b->lane() ^ mask));
}

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
inline int __float2int_rn(float x) {
  return static_cast<int>(std::nearbyint(x));
}
inline unsigned __float2uint_rn(float x) {
  return static_cast<unsigned>(std::nearbyint(x));
}
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline int atomicMin(int* address, int value) {
  const int old = *address;
  if (value < old) *address = value;
  return old;
}
inline int min(int a, int b) {
  return a < b ? a : b;
}
inline unsigned min(unsigned a, unsigned b) {
  return a < b ? a : b;
}

}  // namespace innerq::cuda
