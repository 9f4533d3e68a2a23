// The block pool (block_pool.h).
#include "innerq/kv/block_pool.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include <fmt/core.h>

#include "innerq/base/error.h"
#include "innerq/base/huge_pages.h"

namespace innerq::kv {
namespace {

constexpr size_t kMaxSlabs = size_t{1} << 16;

}  // namespace

BlockPool::BlockPool(std::string name, size_t block_bytes, int n_blocks, bool growable)
    : name_(std::move(name)),
      block_bytes_(block_bytes),
      slab_blocks_(n_blocks),
      growable_(growable) {
  if (block_bytes == 0 || n_blocks <= 0) {
    throw Error(fmt::format("{}: {} blocks of {} bytes; both must be positive", name_, n_blocks,
                            block_bytes));
  }
  // Reserved once, so that the unlocked readers never see them move: a
  // fixed pool has its one slab, a growable one room for kMaxSlabs (1 MiB
  // of address space, only its first pages written).
  const size_t max_slabs = growable ? kMaxSlabs : 1;
  slabs_.reserve(max_slabs);
  slab_refs_.reserve(max_slabs);
  const auto held = lock();
  add_slab();
}

BlockPool::~BlockPool() {
  const size_t bytes = block_bytes_ * static_cast<size_t>(slab_blocks_);
  for (uint8_t* s : slabs_) {
    if (slabs_mapped()) {
      unmap_pages(s, bytes);
    } else {
      std::free(s);
    }
  }
}

// A slab of at least one 2 MiB page is mapped for huge pages: decode
// attention streams through it (docs/architecture.md, "Weight memory"). Every
// slab of a pool has the same size, so this holds for all or none of them.
bool BlockPool::slabs_mapped() const {
  return block_bytes_ * static_cast<size_t>(slab_blocks_) >= kHugePageBytes &&
         huge_pages_available();
}

std::unique_lock<std::mutex> BlockPool::lock() const {
  std::unique_lock<std::mutex> held(mu_);
  lock_count_.fetch_add(1, std::memory_order_relaxed);
  return held;
}

void BlockPool::add_slab() {
  // Never past the reserved room: the readers hold no lock.
  if (slabs_.size() == slabs_.capacity() || slab_refs_.size() == slab_refs_.capacity())
    throw Error(fmt::format("{}: more than {} slabs", name_, slabs_.capacity()));
  const size_t bytes = block_bytes_ * static_cast<size_t>(slab_blocks_);
  auto refs = std::make_unique<std::atomic<int>[]>(static_cast<size_t>(slab_blocks_));
  // Room for every block of every slab: release() never reallocates.
  free_.reserve((slabs_.size() + 1) * static_cast<size_t>(slab_blocks_));
  auto* slab =
      static_cast<uint8_t*>(slabs_mapped() ? map_huge_page_advised(bytes) : std::calloc(bytes, 1));
  if (slab == nullptr) {
    throw Error(fmt::format("{}: cannot allocate {:.1f} MiB for {} blocks", name_,
                            static_cast<double>(bytes) / (1 << 20), slab_blocks_));
  }
  const int first = static_cast<int>(slabs_.size()) * slab_blocks_;
  slabs_.push_back(slab);
  slab_refs_.push_back(std::move(refs));
  // Taken from the back: lower ids first, so a sequence's blocks tend to be
  // in address order.
  for (int i = slab_blocks_ - 1; i >= 0; --i) free_.push_back(first + i);
}

void BlockPool::acquire_n(std::span<int> ids) {
  if (ids.empty()) return;
  const auto held = lock();
  if (free_.size() < ids.size()) {
    if (!growable_) {
      const size_t total = slabs_.size() * static_cast<size_t>(slab_blocks_);
      throw PoolFullError(fmt::format(
          "{}: all {} blocks ({:.1f} MiB) are in use ({} free, {} needed); size the pool for more "
          "tokens or sequences",
          name_, total, static_cast<double>(block_bytes_) * static_cast<double>(total) / (1 << 20),
          free_.size(), ids.size()));
    }
    while (free_.size() < ids.size()) add_slab();
  }
  for (int& id : ids) {
    id = free_.back();
    free_.pop_back();
    slab_refs_[static_cast<size_t>(id / slab_blocks_)][id % slab_blocks_].store(
        1, std::memory_order_relaxed);
  }
}

void BlockPool::retain(int id) {
  slab_refs_[static_cast<size_t>(id / slab_blocks_)][id % slab_blocks_].fetch_add(
      1, std::memory_order_relaxed);
}

void BlockPool::release(int id) {
  // acq_rel: whoever sees the count drop to 1 (and then writes the block)
  // sees every read this holder made of it first.
  if (slab_refs_[static_cast<size_t>(id / slab_blocks_)][id % slab_blocks_].fetch_sub(
          1, std::memory_order_acq_rel) == 1) {
    const auto held = lock();
    free_.push_back(id);  // reserved by add_slab: cannot throw
  }
}

int BlockPool::n_blocks() const {
  const auto held = lock();
  return static_cast<int>(slabs_.size()) * slab_blocks_;
}

void BlockPool::prefault() {
  const auto held = lock();
  for (uint8_t* s : slabs_) std::memset(s, 0, block_bytes_ * static_cast<size_t>(slab_blocks_));
}

int BlockPool::n_free() const {
  const auto held = lock();
  return static_cast<int>(free_.size());
}

}  // namespace innerq::kv
