// innerq/kv/block_pool.h — fixed-size token blocks from a pool sized once.
//
// A layer's quantized (or plain) K/V storage lives in blocks of B tokens
// (B = block_tokens, a multiple of the 16-token tile and of every group size,
// 256 by default). A block holds, for each KV head, a K region and a V region
// for the same B middle-token slots; a sequence owns a block table per layer
// (LayerCache), so appending writes into the last block or takes a new one
// and never moves stored bytes. Blocks are reference-counted: fork() shares a
// parent's blocks and the first write to a shared block copies it
// (copy-on-write). See docs/architecture.md, "The block pool".
//
// A pool is either fixed (n blocks allocated once; acquire_n() past them
// throws innerq::PoolFullError naming the pool) or growable (a private pool of a
// standalone cache, which adds slabs as needed; a slab never moves). Slab
// memory comes from calloc: pages are zero and only become resident when
// written.
//
// Threads: acquire_n/release/prefault and the counts take a mutex (sequences
// of a batch append in parallel). refs() and retain() do not: reference
// counts are atomic, so an append that writes into a block its sequence
// already holds alone (refs() == 1, which no other sequence can change)
// takes no lock at all.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace innerq::kv {

inline constexpr int kDefaultBlockTokens = 256;
// Each region of a block starts at a multiple of this many bytes.
inline constexpr size_t kRegionAlign = 64;

class BlockPool {
 public:
  // n_blocks > 0 blocks of block_bytes > 0 bytes. growable: more slabs of
  // n_blocks each when the first is used up.
  BlockPool(std::string name, size_t block_bytes, int n_blocks, bool growable);
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // ids.size() blocks with one reference each, taken under one lock: all of
  // them or none. A fixed pool with fewer free throws PoolFullError naming
  // the pool, its size and the request, and hands out nothing. Their bytes
  // are unspecified (the layer cache clears or overwrites what it takes).
  void acquire_n(std::span<int> ids);
  void retain(int id);
  void release(int id);  // the block is free again at zero references
  int refs(int id) const {
    return slab_refs_[static_cast<size_t>(id / slab_blocks_)][id % slab_blocks_].load(
        std::memory_order_acquire);
  }

  uint8_t* data(int id) { return slab_ptr(id); }
  const uint8_t* data(int id) const { return slab_ptr(id); }
  // The slab that holds block `id`, and blocks per slab. A layer cache lays
  // a slab out region-major (every block's region r side by side, see
  // LayerCache::region), so the same region of consecutive blocks is
  // contiguous; data(id) is then only the block's slot for raw copies.
  uint8_t* slab_base(int id) const { return slabs_[static_cast<size_t>(id / slab_blocks_)]; }
  int slab_blocks() const { return slab_blocks_; }

  size_t block_bytes() const { return block_bytes_; }
  int n_blocks() const;  // allocated so far
  int n_free() const;
  size_t bytes() const { return block_bytes_ * static_cast<size_t>(n_blocks()); }
  // Writes every page of the allocated slabs, so they are resident now.
  void prefault();
  // How many times the pool's mutex has been taken: what tests read to see
  // that appending into held blocks takes no lock.
  uint64_t lock_count() const { return lock_count_.load(std::memory_order_relaxed); }

 private:
  uint8_t* slab_ptr(int id) const {
    return slabs_[static_cast<size_t>(id / slab_blocks_)] +
           static_cast<size_t>(id % slab_blocks_) * block_bytes_;
  }
  std::unique_lock<std::mutex> lock() const;
  // Slabs are mapped for huge pages (else calloc'ed).
  bool slabs_mapped() const;
  void add_slab();  // caller holds mu_

  std::string name_;
  size_t block_bytes_;
  int slab_blocks_;
  bool growable_;
  // Both reserved once (never moved): data() and refs() read them unlocked.
  std::vector<uint8_t*> slabs_;                                 // slab_blocks_ blocks each, zeroed
  std::vector<std::unique_ptr<std::atomic<int>[]>> slab_refs_;  // [slab][block] references
  std::vector<int> free_;                                       // ids, taken from the back
  mutable std::mutex mu_;
  mutable std::atomic<uint64_t> lock_count_{0};
};

}  // namespace innerq::kv
