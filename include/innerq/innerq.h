/* innerq.h — the C ABI of innerq: 2-4 bit KV caches that decode faster than
 * a half-precision cache, and the GGUF models that run on them.
 *
 * Conventions (docs/c-api.md has the guide and a complete example):
 *   - Opaque handles. Every innerq_X_create/_load/_fork/_parse has an
 *     innerq_X_free; freeing NULL does nothing.
 *   - Every call that can fail returns an innerq_status. On failure
 *     innerq_last_error() holds a one-line message for the calling thread
 *     that names the argument and what was expected; outputs are left
 *     unchanged and no state changes (a failed append stores nothing).
 *   - No C++ exception crosses this interface; nothing aborts on bad input.
 *   - Arrays are described by innerq_view: a pointer, a dtype and element
 *     strides; the last dimension (head_dim) must be contiguous.
 *   - Threads: the library runs its compute on innerq_threads() threads.
 *     Calls on one pool (its sequences included) or one model must not run
 *     concurrently; different pools and models are independent.
 */
#ifndef INNERQ_INNERQ_H
#define INNERQ_INNERQ_H

#include <stddef.h>
#include <stdint.h>

#include "innerq/version.h"

#if defined(_WIN32)
#define INNERQ_API
#else
#define INNERQ_API __attribute__((visibility("default")))
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * Status, errors, version, capabilities, settings
 * ------------------------------------------------------------------------- */

typedef enum innerq_status {
  INNERQ_OK = 0,
  INNERQ_ERROR_INVALID_ARGUMENT = 1, /* a bad spec, shape, dtype, value, range or NULL */
  INNERQ_ERROR_POOL_FULL = 2,        /* no room for the tokens or the sequence; nothing stored */
  INNERQ_ERROR_IO = 3,               /* a file that cannot be read or written, or is damaged */
  INNERQ_ERROR_BUFFER_TOO_SMALL = 4, /* the output buffer is too small; the size needed is set */
  INNERQ_ERROR_UNSUPPORTED = 5,      /* valid, but not supported by this build or this layer */
  INNERQ_ERROR_OUT_OF_MEMORY = 6,    /* the system refused an allocation */
  INNERQ_ERROR_INTERNAL = 7          /* a bug: please report the message */
} innerq_status;

/* The message of the last failing call on this thread ("" if none). Valid
 * until the next failing call on this thread. */
INNERQ_API const char* innerq_last_error(void);
/* "ok", "invalid argument", "pool full", ... */
INNERQ_API const char* innerq_status_name(innerq_status status);

/* The library's version: INNERQ_VERSION_* of the headers it was built with. */
INNERQ_API const char* innerq_version(void);
INNERQ_API int innerq_version_number(void); /* major * 10000 + minor * 100 + patch */

/* Capabilities. */
INNERQ_API int innerq_kind_count(void);               /* cache kinds a spec may name */
INNERQ_API const char* innerq_kind_name(int i);       /* "f32", "f16", ..., NULL past the end */
INNERQ_API int innerq_bit_widths(int* out, int cap);  /* quantized bit widths; returns the count */
INNERQ_API int innerq_group_sizes(int* out, int cap); /* group sizes g, kg; returns the count */
INNERQ_API const char* innerq_simd_target(void);      /* the SIMD target the kernels dispatch to */
INNERQ_API int innerq_cuda_compiled(void);            /* 1 when built with the CUDA backend */

/* Settings of the process. Threads: 0 means every core (the default). The
 * OpenMP wait policy is read by the OpenMP runtime when it loads, before any
 * call here: innerq's tool and Python module set GOMP_SPINCOUNT=1000 (short
 * spinning, docs/architecture.md "Threads under contention"); a C program
 * sets it in its environment. innerq_wait_policy() says what is in effect. */
INNERQ_API innerq_status innerq_set_threads(int n_threads);
INNERQ_API int innerq_threads(void);
INNERQ_API const char* innerq_wait_policy(void);

/* ---------------------------------------------------------------------------
 * Arrays
 * ------------------------------------------------------------------------- */

typedef enum innerq_dtype {
  INNERQ_DTYPE_F32 = 0,
  INNERQ_DTYPE_F16 = 1, /* IEEE half */
  INNERQ_DTYPE_BF16 = 2
} innerq_dtype;

/* A 3-D array: element (i, j, c) is at data + (i * stride[0] + j * stride[1]
 * + c) elements. The dimensions are given by the call (e.g. [tokens,
 * kv_heads, head_dim]); the last one is contiguous. innerq_view_packed()
 * fills the strides of a contiguous row-major array. */
typedef struct innerq_view {
  void* data;
  innerq_dtype dtype;
  int64_t stride[2];
} innerq_view;

INNERQ_API innerq_view innerq_view_packed(void* data, innerq_dtype dtype, int64_t dim1,
                                          int64_t dim2);

/* ---------------------------------------------------------------------------
 * Cache specs: the `--kv` strings of the innerq tool
 *   "innerq", "innerq-paper", "kivi", "q4_0:rot=kv", "innerq;0-1:k=4,v=4;29=f16", ...
 * ------------------------------------------------------------------------- */

typedef struct innerq_spec innerq_spec;

INNERQ_API innerq_status innerq_spec_parse(const char* text, innerq_spec** out);
INNERQ_API void innerq_spec_free(innerq_spec* spec);
/* Writes a NUL-terminated string into buf (cap bytes) and the length it
 * needs (without the NUL) into *len; INNERQ_ERROR_BUFFER_TOO_SMALL when
 * cap <= *len. layer < 0: the spec as given; layer >= 0: that layer's config
 * spelled out for a model of n_layers layers. `innerq` chooses its bits and
 * key frame by head_dim, which this call does not know, so its layers read
 * "innerq k3sym v3hybrid g128 sink32 recent96 knorm=off kg64 kcenter rot=k
 * (head_dim < 256; from 256: k4sym v2hybrid knorm=sqrtmax rot=off)". */
INNERQ_API innerq_status innerq_spec_describe(const innerq_spec* spec, int layer, int n_layers,
                                              char* buf, size_t cap, size_t* len);

/* INNERQ_OK when every layer of the spec (for a model of n_layers layers)
 * can store heads of head_dim channels; otherwise INNERQ_ERROR_INVALID_ARGUMENT
 * and a message naming the layer's config and the rule it breaks (quantized
 * kinds: head_dim a multiple of 32 and of their group sizes). */
INNERQ_API innerq_status innerq_spec_check_head_dim(const innerq_spec* spec, int32_t n_layers,
                                                    int32_t head_dim);

/* ---------------------------------------------------------------------------
 * Cache shapes and memory planning (arithmetic only: nothing is allocated)
 * ------------------------------------------------------------------------- */

typedef struct innerq_shape {
  int32_t n_layers;
  int32_t n_kv_heads;
  int32_t head_dim;
  int32_t max_tokens;    /* per sequence; appends past it fail */
  const int32_t* window; /* NULL, or n_layers entries: > 0 marks a sliding-window layer
                            that keeps its last window[l] positions in f16 */
} innerq_shape;

typedef struct innerq_plan {
  uint64_t bytes;          /* a pool for n_seqs sequences of n_tokens: blocks + windows */
  uint64_t sequence_bytes; /* what one sequence of n_tokens holds */
  uint64_t block_bytes;    /* one block of every layer */
  int64_t blocks;          /* blocks per layer of such a pool */
  int32_t block_tokens;    /* tokens per block (256) */
  uint64_t f16_bytes;      /* the same n_seqs x n_tokens as an f16 cache */
} innerq_plan;

INNERQ_API innerq_status innerq_plan_memory(const innerq_spec* spec, const innerq_shape* shape,
                                            int32_t n_seqs, int64_t n_tokens, innerq_plan* out);
/* The most tokens per sequence that n_seqs sequences can hold in `bytes`. */
INNERQ_API innerq_status innerq_plan_tokens(const innerq_spec* spec, const innerq_shape* shape,
                                            int32_t n_seqs, uint64_t bytes, int64_t* tokens);

/* ---------------------------------------------------------------------------
 * Pools and sequences
 * ------------------------------------------------------------------------- */

typedef struct innerq_pool innerq_pool;
typedef struct innerq_seq innerq_seq;

/* A pool of cache blocks for sequences of one shape and spec.
 * max_seqs: the most live sequences (forks included); 0 = no limit.
 * budget_bytes > 0: a fixed pool. Its blocks and the windows of max_seqs
 *   sequences fit in the budget (innerq_plan_memory(...).bytes of max_seqs
 *   sequences of n tokens is the budget that holds them); needs max_seqs > 0.
 * budget_bytes == 0: a pool that grows as sequences need blocks. */
INNERQ_API innerq_status innerq_pool_create(const innerq_spec* spec, const innerq_shape* shape,
                                            int32_t max_seqs, uint64_t budget_bytes,
                                            innerq_pool** out);
/* The handle goes; the memory goes with the last sequence of the pool. */
INNERQ_API void innerq_pool_free(innerq_pool* pool);

typedef struct innerq_pool_stats {
  uint64_t bytes;         /* blocks allocated (all layers) */
  int64_t blocks;         /* per layer, allocated */
  int64_t free_blocks;    /* per layer */
  int32_t n_seqs;         /* live sequences */
  int32_t max_seqs;       /* 0 = no limit */
  uint64_t scratch_bytes; /* attention scratch held (innerq_pool_release_scratch frees it) */
} innerq_pool_stats;

INNERQ_API innerq_status innerq_pool_stats_get(const innerq_pool* pool, innerq_pool_stats* out);
INNERQ_API innerq_status innerq_pool_shape(const innerq_pool* pool, innerq_shape* out);
INNERQ_API void innerq_pool_release_scratch(innerq_pool* pool);

/* An empty sequence in the pool. POOL_FULL past max_seqs, or when the pool
 * cannot hold its windows. */
INNERQ_API innerq_status innerq_seq_create(innerq_pool* pool, innerq_seq** out);
/* A new sequence with the same tokens; blocks are shared copy-on-write. */
INNERQ_API innerq_status innerq_seq_fork(const innerq_seq* seq, innerq_seq** out);
INNERQ_API void innerq_seq_free(innerq_seq* seq);
/* Tokens held (every layer holds the same count between steps). */
INNERQ_API int64_t innerq_seq_n_tokens(const innerq_seq* seq);
/* Keeps the first n_tokens (drops the rest); docs/architecture.md, "Sequence
 * operations", says what happens to quantized groups. */
INNERQ_API innerq_status innerq_seq_truncate(innerq_seq* seq, int64_t n_tokens);
/* Writes the sequence to a file; loads one into an empty sequence of a pool
 * of the same shape and spec (a damaged or foreign file is INNERQ_ERROR_IO,
 * and the sequence stays empty). */
INNERQ_API innerq_status innerq_seq_save(const innerq_seq* seq, const char* path);
INNERQ_API innerq_status innerq_seq_load(innerq_seq* seq, const char* path);
/* Empties the sequence (it stays in its pool). */
INNERQ_API innerq_status innerq_seq_clear(innerq_seq* seq);

typedef struct innerq_memory {
  uint64_t codes;     /* packed quantized codes of the tokens held */
  uint64_t metadata;  /* fp16 scales and zeros */
  uint64_t windows;   /* f16 sink, recent, residual and plain rows */
  uint64_t norm;      /* key factors and means */
  uint64_t total;     /* the four above */
  uint64_t reserved;  /* what the sequence holds: whole blocks, windows at capacity */
  uint64_t f16_bytes; /* the same tokens in an f16 cache */
} innerq_memory;

INNERQ_API innerq_status innerq_seq_memory(const innerq_seq* seq, innerq_memory* out);

/* Appends n_tokens rows of K and V to `layer` of each of n_seqs sequences:
 * k[b], v[b] are [n_tokens, kv_heads, head_dim] post-RoPE rows for seqs[b].
 * All or nothing: every row is checked (finite, within f16 range) and room
 * for every sequence is made before any is stored. */
INNERQ_API innerq_status innerq_append(innerq_seq* const* seqs, int32_t n_seqs, int32_t layer,
                                       const innerq_view* k, const innerq_view* v,
                                       int32_t n_tokens);

/* Decode attention of one query per sequence against everything the
 * sequence holds in `layer` (its newest position included):
 * q, out: [n_seqs, n_heads, head_dim]; query head h reads KV head
 * h / (n_heads / kv_heads). scale: the score is q.k * scale (0 means
 * 1/sqrt(head_dim)). Quantized layers are read by the fused kernels; nothing
 * is dequantized. */
INNERQ_API innerq_status innerq_attend(innerq_seq* const* seqs, int32_t n_seqs, int32_t layer,
                                       const innerq_view* q, int32_t n_heads, float scale,
                                       const innerq_view* out);

/* Chunked attention of n_q queries of one sequence: query i sees positions
 * [0, n_visible + i) (causal over a chunk whose rows are already appended).
 * q, out: [n_q, n_heads, head_dim]. Not for sliding-window layers.
 * When the queries are exactly the rows of the last innerq_append to this
 * sequence and layer (n_visible - 1 = the position of its first row,
 * n_q = its rows, nothing changed the layer since) and that append had
 * several rows for a sequence that already held tokens, each query sees
 * what token-by-token decode would have shown it: the f16 windows as they
 * were at its position. Such an append stores its rows as if they came one
 * at a time (a first append, a prompt, flushes after all its rows, so that
 * InnerQ's key statistics cover it). The stored cache is then read once for
 * all the queries. Otherwise each query reads the layer as it is now: with
 * kivi and innerq a chunk's later rows may already have pushed earlier ones
 * out of the f16 windows. */
INNERQ_API innerq_status innerq_attend_chunk(const innerq_seq* seq, int32_t layer,
                                             const innerq_view* q, int32_t n_q, int32_t n_heads,
                                             int64_t n_visible, float scale,
                                             const innerq_view* out);

/* What `layer` holds, dequantized, in the model's coordinates (rotation, channel order,
 * centering and key factors undone): k, v: [kv_heads, n, head_dim] where
 * n = *n_tokens on return. A sliding-window layer gives its last
 * min(n_tokens, window) positions; *first is the position of row 0. Pass
 * k = v = NULL to learn n first. */
INNERQ_API innerq_status innerq_seq_dequantize(const innerq_seq* seq, int32_t layer,
                                               const innerq_view* k, const innerq_view* v,
                                               int64_t* n_tokens, int64_t* first);

/* ---------------------------------------------------------------------------
 * Models (GGUF: llama, qwen2, qwen3, gemma3)
 * ------------------------------------------------------------------------- */

typedef struct innerq_model innerq_model;

INNERQ_API innerq_status innerq_model_load(const char* path, innerq_model** out);
INNERQ_API void innerq_model_free(innerq_model* model);

typedef struct innerq_model_info {
  const char* arch; /* "llama", "qwen2", "qwen3", "gemma3"; lives as long as the model */
  int32_t n_layers, n_heads, n_kv_heads, head_dim, n_embd, n_vocab, n_ctx_train;
  int32_t n_window_layers;
  int32_t bos, eos;      /* -1 when the vocabulary has none */
  int32_t adds_bos;      /* 1 when the model wants BOS before a text */
  int32_t chat_template; /* 0 none, 1 ChatML, 2 Gemma */
  int64_t n_params;
} innerq_model_info;

INNERQ_API innerq_status innerq_model_info_get(const innerq_model* model, innerq_model_info* out);
/* The cache shape of this model for sequences of up to max_tokens tokens;
 * out->window points into the model. */
INNERQ_API innerq_status innerq_model_shape(const innerq_model* model, int32_t max_tokens,
                                            innerq_shape* out);

/* tokens: up to cap ids; *n_tokens gets the count (also when the buffer is
 * too small: INNERQ_ERROR_BUFFER_TOO_SMALL). add_bos: put BOS first when the
 * model adds one. parse_special: spell control tokens as such. */
INNERQ_API innerq_status innerq_tokenize(const innerq_model* model, const char* text,
                                         size_t text_len, int add_bos, int parse_special,
                                         int32_t* tokens, int64_t cap, int64_t* n_tokens);
/* The text of tokens (bytes, not always valid UTF-8), NUL-terminated; *len
 * gets the length without the NUL. */
INNERQ_API innerq_status innerq_detokenize(const innerq_model* model, const int32_t* tokens,
                                           int64_t n_tokens, char* buf, size_t cap, size_t* len);
/* One user turn in the model's chat template (system text on the first
 * turn); INNERQ_ERROR_UNSUPPORTED when the vocabulary has none. */
INNERQ_API innerq_status innerq_chat_turn(const innerq_model* model, const char* user,
                                          const char* system, int first, char* buf, size_t cap,
                                          size_t* len);
/* 1 when the token ends a generation (EOS, end of turn). */
INNERQ_API int innerq_token_ends_generation(const innerq_model* model, int32_t token);

/* Sends the same n_tokens tokens through each of n_seqs sequences (whose
 * pools must have the model's shape; their specs may differ, so one weight
 * pass serves several cache configs). Empty sequences are prefilled
 * (full-precision attention over the tokens, then every K/V stored);
 * sequences that hold tokens are extended (the tokens' K/V stored, then each
 * attends to the cache up to its own position); a call mixing the two is
 * refused. logits: [n_seqs, n_tokens, n_vocab] when all_logits, else
 * [n_seqs, n_vocab] of each sequence's last token; may be NULL. */
INNERQ_API innerq_status innerq_model_extend(innerq_model* model, innerq_seq* const* seqs,
                                             int32_t n_seqs, const int32_t* tokens,
                                             int64_t n_tokens, int all_logits, float* logits);
/* One token per sequence, batched: tokens[b] goes to seqs[b] at its next
 * position. logits: [n_seqs, n_vocab]. Nothing is stored unless every
 * sequence can take its token. */
INNERQ_API innerq_status innerq_model_decode(innerq_model* model, innerq_seq* const* seqs,
                                             const int32_t* tokens, int32_t n_seqs, float* logits);
/* Scratch the model holds between calls (activations), and freeing it. */
INNERQ_API uint64_t innerq_model_scratch_bytes(const innerq_model* model);
INNERQ_API void innerq_model_release_scratch(innerq_model* model);

/* ---------------------------------------------------------------------------
 * Sampling
 * ------------------------------------------------------------------------- */

typedef struct innerq_sampler innerq_sampler;

typedef struct innerq_sampler_params {
  float temperature; /* 0: greedy (argmax) */
  int32_t top_k;     /* 0: no cut */
  float top_p;       /* 1: no cut */
  uint64_t seed;
} innerq_sampler_params;

INNERQ_API innerq_sampler_params innerq_sampler_default_params(void); /* greedy */
INNERQ_API innerq_status innerq_sampler_create(const innerq_sampler_params* params,
                                               innerq_sampler** out);
INNERQ_API void innerq_sampler_free(innerq_sampler* sampler);
INNERQ_API innerq_status innerq_sample(innerq_sampler* sampler, const float* logits,
                                       int32_t n_vocab, int32_t* token);

#ifdef __cplusplus
}
#endif

#endif /* INNERQ_INNERQ_H */
