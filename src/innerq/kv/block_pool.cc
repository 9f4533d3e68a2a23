// The block pool (block_pool.h).
#include "innerq/kv/block_pool.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include <fmt/core.h>

#include "innerq/base/error.h"

namespace innerq::kv {

BlockPool::BlockPool(std::string name, size_t block_bytes, int n_blocks, bool growable)
    : name_(std::move(name)),
      block_bytes_(block_bytes),
      slab_blocks_(n_blocks),
      growable_(growable) {
  if (block_bytes == 0 || n_blocks <= 0) {
    throw Error(fmt::format("{}: {} blocks of {} bytes; both must be positive", name_, n_blocks,
                            block_bytes));
  }
  slabs_.reserve(1 << 16);  // data() reads slabs_ unlocked: it must never move
  std::lock_guard<std::mutex> lock(mu_);
  add_slab();
}

BlockPool::~BlockPool() {
  for (uint8_t* s : slabs_) std::free(s);
}

void BlockPool::add_slab() {
  const size_t bytes = block_bytes_ * static_cast<size_t>(slab_blocks_);
  auto* slab = static_cast<uint8_t*>(std::calloc(bytes, 1));
  if (slab == nullptr) {
    throw Error(fmt::format("{}: cannot allocate {:.1f} MiB for {} blocks", name_,
                            static_cast<double>(bytes) / (1 << 20), slab_blocks_));
  }
  if (slabs_.size() == slabs_.capacity()) {
    std::free(slab);
    throw Error(fmt::format("{}: more than {} slabs", name_, slabs_.capacity()));
  }
  const int first = static_cast<int>(slabs_.size()) * slab_blocks_;
  slabs_.push_back(slab);
  refs_.resize(refs_.size() + static_cast<size_t>(slab_blocks_), 0);
  // Taken from the back: lower ids first, so a sequence's blocks tend to be
  // in address order.
  for (int i = slab_blocks_ - 1; i >= 0; --i) free_.push_back(first + i);
}

int BlockPool::acquire() {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.empty()) {
    if (!growable_) {
      throw Error(
          fmt::format("{}: all {} blocks ({:.1f} MiB) are in use; size the pool for more tokens or "
                      "sequences",
                      name_, slabs_.size() * slab_blocks_,
                      static_cast<double>(block_bytes_) *
                          static_cast<double>(slabs_.size() * slab_blocks_) / (1 << 20)));
    }
    add_slab();
  }
  const int id = free_.back();
  free_.pop_back();
  refs_[static_cast<size_t>(id)] = 1;
  return id;
}

void BlockPool::retain(int id) {
  std::lock_guard<std::mutex> lock(mu_);
  ++refs_[static_cast<size_t>(id)];
}

void BlockPool::release(int id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (--refs_[static_cast<size_t>(id)] == 0) free_.push_back(id);
}

int BlockPool::refs(int id) const {
  std::lock_guard<std::mutex> lock(mu_);
  return refs_[static_cast<size_t>(id)];
}

int BlockPool::n_blocks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(slabs_.size()) * slab_blocks_;
}

void BlockPool::prefault() {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint8_t* s : slabs_) std::memset(s, 0, block_bytes_ * static_cast<size_t>(slab_blocks_));
}

int BlockPool::n_free() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(free_.size());
}

}  // namespace innerq::kv
