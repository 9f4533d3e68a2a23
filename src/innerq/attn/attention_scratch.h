// innerq/attn/attention_scratch.h — the buffers of one attention call, owned
// by the caller (docs/architecture.md, "No allocation per token").
//
// decode_attention splits a layer's tokens into chunks per KV head and runs
// the chunks on n_threads threads. Each thread needs a score buffer as long
// as its chunk, a buffer for a chunk cut inside a G-token group (n_visible),
// and the InnerQ kernels' int8 scratch; the call needs the layer's segment
// lists, the chunk cuts, the scaled (and rotated) queries and the partial
// results of every (KV head, chunk). window_attention and
// window_chunk_attention need a score buffer as long as the window and the
// scaled queries. An AttentionScratch holds all of these, per thread indexed
// by the OpenMP thread number. It is sized for the longest chunk the cache's
// block table can address the first time it serves a cache (or by
// reserve()), so later calls over that cache allocate nothing; bytes() is
// what it holds, at most bound_bytes(); release() gives it all back (the
// next call sizes it again). One call at a time: rows that attend in
// parallel each need their own.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "innerq/kv/kv_cache.h"
#include "innerq/kv/layer_caches.h"
#include "innerq/kv/segments.h"
#include "innerq/kv/window_layer_cache.h"

namespace innerq::attn {

struct DecodeOptions;
class WindowChunk;

// Query rows (steps × query heads of one KV head) chunk_attention reads the
// cache for at once; a longer chunk takes several passes.
inline constexpr int kChunkRows = 512;

// Chunk cuts are multiples of this many tokens from the segments' origin, so
// they fall on 16-token tiles and on G-token blocks for every G ≤ 128.
inline constexpr int kChunkAlign = 128;
// The shortest chunk decode attention cuts.
inline constexpr int kMinChunk = 512;

// Chunk length decode_attention uses for n tokens: a multiple of
// kChunkAlign, at least kMinChunk, and n / max(1, ⌈4·n_threads / n_kv_heads⌉)
// rounded up, so every thread has about four chunks.
int decode_chunk_tokens(int64_t n_tokens, int n_kv_heads, int n_threads);

class AttentionScratch {
 public:
  // Sized for attention over `cache` (a pooled layer, or a sliding-window
  // ring) with n_heads query heads on up to n_threads threads.
  void reserve(const kv::LayerCache& cache, int n_heads, int n_threads);

  // What bytes() can reach for calls over `cache` on any numbers of threads
  // up to n_threads (and what reserve() holds). With K KV heads, nq =
  // n_heads / K query heads per KV head, D = head_dim, T = n_threads,
  // N = max(capacity_tokens, n_tokens) and J = N / block_tokens:
  //   pooled layer: a call on t threads cuts chunks of at most
  //   C_t = origin + decode_chunk_tokens(N, K, t) tokens (origin: InnerQ's
  //   sink, else 0), at most W = max(1, ⌈4T / K⌉) + 1 per KV head;
  //     segments 2K·(J + 3)·sizeof(Segment), cuts (W + 1)·4,
  //     queries 3·n_heads·D·4, partial results K·W·nq·(D + 2)·4,
  //     and thread t − 1 (t = 1..T), which serves calls on t or more
  //     threads: scores nq·C_t·4, the cut-group buffer nq·(C_t + 128)·4
  //     (KIVI and InnerQ only), the InnerQ kernel scratch
  //     max(innerq_k_scratch_bytes, innerq_v_scratch_bytes) (InnerQ only);
  //   ring of window + kWindowSpare slots (one thread):
  //     queries nq·D·4, scores nq·(window + kWindowSpare + 16)·4,
  //     partial results 2·nq·4;
  //   plus the list headers: K·sizeof(HeadSegments) and three vectors per
  //   thread (T of them; one for a ring).
  static size_t bound_bytes(const kv::LayerCache& cache, int n_heads, int n_threads);

  size_t bytes() const;  // heap bytes held
  void release();        // bytes() == 0 afterwards

 private:
  friend void decode_attention(const kv::LayerCache& cache, const float* q, int n_heads, float* out,
                               const DecodeOptions& options, AttentionScratch& scratch);
  friend void window_attention(const kv::WindowLayerCache& cache, const float* q, int n_heads,
                               float* out, AttentionScratch& scratch);
  friend void window_chunk_attention(const WindowChunk& chunk, int i, const float* q, int n_heads,
                                     float* out, AttentionScratch& scratch);

  // Per thread of a call: three vectors, as bound_bytes() counts them.
  struct Thread {
    std::vector<float> scores;    // [nq][chunk]
    std::vector<float> cut;       // [nq][chunk rounded up to its group]
    std::vector<uint8_t> kernel;  // kernels::KernelScratch of the InnerQ kernels
  };
  // The sizes bound_bytes() describes, for a call over `cache`.
  struct Sizes {
    size_t segments = 0;  // Segment slots per list
    size_t heads = 0;     // KV heads (HeadSegments)
    size_t cuts = 0, queries = 0, partial = 0;
    size_t scores = 0, cut = 0, kernel = 0;  // per thread
    size_t threads = 0;
  };
  static Sizes sizes(const kv::LayerCache& cache, int n_heads, int n_threads);
  // Grows every buffer to `s` (a no-op once it has served such a call).
  void fit(const Sizes& s);
  // Grows the buffers window attention uses: nq query heads of head_dim,
  // scores of `stride` positions per head.
  void fit_window(int nq, int head_dim, size_t stride);

  std::vector<kv::HeadSegments> heads_;
  std::vector<int> cuts_;
  std::vector<float> queries_;
  std::vector<float> partial_;
  std::vector<Thread> threads_;
};

// The buffers of chunk_attention (decode_attention.h): the layer's segment
// lists, one step's lists per thread, the queries of up to kChunkRows query
// rows per KV head, and per thread a score buffer, a buffer for a group cut
// by a step's end, the InnerQ kernel scratch and running softmax results of
// every row. They grow to the largest call and stay (a workspace serves
// every chunk of a generation loop without allocating again); bytes() is
// what it holds, release() gives it back.
class ChunkScratch {
 public:
  size_t bytes() const;
  void release();

 private:
  friend void chunk_attention(const kv::LayerCache& cache, const kv::ChunkSteps& steps,
                              const float* q, int n_heads, float* out, const DecodeOptions& options,
                              ChunkScratch& scratch);
  struct Thread {
    kv::HeadSegments step;        // one step's segments
    std::vector<float> scores;    // [rows][chunk]
    std::vector<float> cut;       // [rows][chunk + kChunkAlign]
    std::vector<uint8_t> kernel;  // kernels::KernelScratch
    std::vector<float> o;         // [rows][D] one task's output
    std::vector<float> m, l;      // [n_kv][rows] running max and sum
    std::vector<float> acc;       // [n_kv][rows][D] running output
  };
  std::vector<kv::HeadSegments> heads_;
  std::vector<float> queries_;  // rotated, scaled, normalized: 3 × [n_kv][rows][D]
  std::vector<int> cuts_;
  std::vector<Thread> threads_;
};

}  // namespace innerq::attn
