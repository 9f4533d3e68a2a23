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
// A pool is either fixed (n blocks allocated once; acquire() past them throws
// innerq::Error naming the pool) or growable (a private pool of a standalone
// cache, which adds slabs as needed; a slab never moves). Slab memory comes
// from calloc: pages are zero and only become resident when written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
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

  // A block with one reference (its bytes are unspecified: the layer cache
  // clears the regions it takes). Throws innerq::Error when a fixed
  // pool has none free. Thread-safe (sequences of a batch append in
  // parallel), as are retain/release/refs.
  int acquire();
  void retain(int id);
  void release(int id);  // the block is free again at zero references
  int refs(int id) const;

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

 private:
  uint8_t* slab_ptr(int id) const {
    return slabs_[static_cast<size_t>(id / slab_blocks_)] +
           static_cast<size_t>(id % slab_blocks_) * block_bytes_;
  }
  void add_slab();  // caller holds mu_

  std::string name_;
  size_t block_bytes_;
  int slab_blocks_;
  bool growable_;
  std::vector<uint8_t*> slabs_;  // calloc'ed, slab_blocks_ blocks each
  std::vector<int> free_;        // ids, taken from the back
  std::vector<int> refs_;
  mutable std::mutex mu_;
};

}  // namespace innerq::kv
