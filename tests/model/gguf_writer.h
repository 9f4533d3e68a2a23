// tests/model/gguf_writer.h — builds whole GGUF files in memory for tests:
// typed metadata and tensors laid out the way the GGUF format asks
// (docs/architecture.md, "GGUF files"), plus a tiny valid Llama model that
// tests then break one field at a time.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "innerq/base/fp16.h"
#include "innerq/model/gguf.h"

namespace innerq::model::testing {

class GgufWriter {
 public:
  // ---- metadata (a key written again replaces the earlier value) ----
  GgufWriter& set_u32(const std::string& key, uint32_t v) {
    return set(key, GgufType::kU32, le(v));
  }
  GgufWriter& set_u64(const std::string& key, uint64_t v) {
    return set(key, GgufType::kU64, le(v));
  }
  GgufWriter& set_i32(const std::string& key, int32_t v) { return set(key, GgufType::kI32, le(v)); }
  GgufWriter& set_f32(const std::string& key, float v) { return set(key, GgufType::kF32, le(v)); }
  GgufWriter& set_string(const std::string& key, const std::string& s) {
    return set(key, GgufType::kString, str(s));
  }
  GgufWriter& set_strings(const std::string& key, const std::vector<std::string>& items) {
    std::vector<uint8_t> b = array_head(GgufType::kString, items.size());
    for (const std::string& s : items) append(b, str(s));
    return set(key, GgufType::kArray, b);
  }
  GgufWriter& set_bools(const std::string& key, const std::vector<bool>& items) {
    std::vector<uint8_t> b = array_head(GgufType::kBool, items.size());
    for (bool v : items) b.push_back(v ? 1 : 0);
    return set(key, GgufType::kArray, b);
  }
  GgufWriter& set_f32s(const std::string& key, const std::vector<float>& items) {
    std::vector<uint8_t> b = array_head(GgufType::kF32, items.size());
    for (float v : items) append(b, le(v));
    return set(key, GgufType::kArray, b);
  }
  // Any value, already encoded (for values no setter above writes).
  GgufWriter& set(const std::string& key, GgufType type, std::vector<uint8_t> encoded) {
    for (Entry& e : metadata_) {
      if (e.key == key) {
        e.type = type;
        e.value = std::move(encoded);
        return *this;
      }
    }
    metadata_.push_back({key, type, std::move(encoded)});
    return *this;
  }
  void erase(const std::string& key) {
    std::erase_if(metadata_, [&](const Entry& e) { return e.key == key; });
  }

  // ---- tensors: ne in ggml order (ne[0] is the row length); data laid out
  // one after the other at the alignment unless an offset is forced ----
  GgufWriter& tensor(const std::string& name, GgmlType type, std::vector<uint64_t> ne,
                     std::vector<uint8_t> data, std::optional<uint64_t> offset = std::nullopt) {
    for (Tensor& t : tensors_) {
      if (t.name == name) {
        t = {name, type, std::move(ne), std::move(data), offset};
        return *this;
      }
    }
    tensors_.push_back({name, type, std::move(ne), std::move(data), offset});
    return *this;
  }
  std::vector<uint8_t>& tensor_data(const std::string& name) {
    for (Tensor& t : tensors_) {
      if (t.name == name) return t.data;
    }
    ADD_FAILURE() << "no tensor " << name;
    return tensors_.front().data;
  }

  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> b;
    append(b, le<uint32_t>(0x46554747));
    append(b, le<uint32_t>(3));
    append(b, le<uint64_t>(tensors_.size()));
    append(b, le<uint64_t>(metadata_.size()));
    for (const Entry& e : metadata_) {
      append(b, str(e.key));
      append(b, le(static_cast<uint32_t>(e.type)));
      append(b, e.value);
    }
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const Tensor& t : tensors_) {
      const uint64_t at = t.offset.value_or(next);
      offsets.push_back(at);
      next = std::max(next, round_up(at + t.data.size()));
      append(b, str(t.name));
      append(b, le(static_cast<uint32_t>(t.ne.size())));
      for (uint64_t n : t.ne) append(b, le(n));
      append(b, le(static_cast<uint32_t>(t.type)));
      append(b, le(at));
    }
    b.resize(round_up(b.size()), 0);
    const size_t data_start = b.size();
    b.resize(data_start + next, 0);
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const std::vector<uint8_t>& d = tensors_[i].data;
      std::copy(d.begin(), d.end(), b.begin() + static_cast<long>(data_start + offsets[i]));
    }
    return b;
  }

  // Writes bytes() to a temp file; the pid keeps concurrent test processes
  // (ctest -j) apart.
  std::string write(const std::string& tag) const {
    const std::string path =
        ::testing::TempDir() + "innerq_writer_" + std::to_string(getpid()) + "_" + tag + ".gguf";
    const std::vector<uint8_t> b = bytes();
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
    return path;
  }

  template <typename T>
  static std::vector<uint8_t> le(T v) {
    std::vector<uint8_t> b(sizeof(T));
    std::memcpy(b.data(), &v, sizeof(T));
    return b;
  }
  static std::vector<uint8_t> str(const std::string& s) {
    const uint64_t n = s.size();
    std::vector<uint8_t> b(sizeof(n) + s.size());
    std::memcpy(b.data(), &n, sizeof(n));
    if (!s.empty()) std::memcpy(b.data() + sizeof(n), s.data(), s.size());
    return b;
  }
  static std::vector<uint8_t> array_head(GgufType elem, uint64_t n) {
    std::vector<uint8_t> b = le(static_cast<uint32_t>(elem));
    append(b, le(n));
    return b;
  }
  static void append(std::vector<uint8_t>& b, const std::vector<uint8_t>& more) {
    b.insert(b.end(), more.begin(), more.end());
  }

 private:
  static constexpr uint64_t kAlignment = 32;
  static uint64_t round_up(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

  struct Entry {
    std::string key;
    GgufType type;
    std::vector<uint8_t> value;
  };
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<uint64_t> ne;
    std::vector<uint8_t> data;
    std::optional<uint64_t> offset;
  };
  std::vector<Entry> metadata_;
  std::vector<Tensor> tensors_;
};

// Shape of the tiny model: one matrix per projection, small random weights,
// a GPT-2 style vocabulary of single letters (no merges needed).
struct TinyLlama {
  int n_layers = 1;
  int n_embd = 32;
  int n_heads = 4;
  int n_kv_heads = 2;
  int n_ff = 32;
  int n_vocab = 16;
  bool q8_0 = false;  // matrices in Q8_0 (n_embd and n_ff multiples of 32), else F32
  bool tied = false;  // no output.weight: the output head reuses token_embd
  // general.architecture and the prefix of its keys; the tensors stay those
  // of llama (other architectures then miss theirs).
  std::string arch = "llama";
};

// F32 values in [-0.5, 0.5) from a fixed seed.
inline std::vector<float> tiny_values(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-0.5f, 0.5f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// Q8_0 blocks {f16 d; i8 q[32]} of v (length a multiple of 32).
inline std::vector<uint8_t> q8_0_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b;
  for (size_t i = 0; i < v.size(); i += 32) {
    float amax = 0;
    for (size_t j = 0; j < 32; ++j) amax = std::max(amax, std::abs(v[i + j]));
    const float d = amax / 127.0f;
    const f16_bits dh = f32_to_f16(d);
    b.push_back(static_cast<uint8_t>(dh & 0xFF));
    b.push_back(static_cast<uint8_t>(dh >> 8));
    for (size_t j = 0; j < 32; ++j) {
      const long q = d == 0 ? 0 : std::lround(v[i + j] / d);
      b.push_back(static_cast<uint8_t>(static_cast<int8_t>(q)));
    }
  }
  return b;
}

inline GgufWriter tiny_llama(const TinyLlama& m = {}) {
  GgufWriter w;
  const std::string a = m.arch + ".";
  w.set_string("general.architecture", m.arch);
  w.set_u32(a + "block_count", static_cast<uint32_t>(m.n_layers));
  w.set_u32(a + "embedding_length", static_cast<uint32_t>(m.n_embd));
  w.set_u32(a + "attention.head_count", static_cast<uint32_t>(m.n_heads));
  w.set_u32(a + "attention.head_count_kv", static_cast<uint32_t>(m.n_kv_heads));
  w.set_u32(a + "feed_forward_length", static_cast<uint32_t>(m.n_ff));
  w.set_u32(a + "context_length", 64);
  w.set_f32(a + "rope.freq_base", 10000.0f);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_string("tokenizer.ggml.model", "gpt2");
  std::vector<std::string> tokens;
  for (int i = 0; i < m.n_vocab; ++i) tokens.push_back(std::string(1, static_cast<char>('a' + i)));
  w.set_strings("tokenizer.ggml.tokens", tokens);
  w.set_strings("tokenizer.ggml.merges", {});

  uint32_t seed = 1;
  const auto matrix = [&](const std::string& name, int rows, int cols) {
    const std::vector<float> v =
        tiny_values(static_cast<size_t>(rows) * static_cast<size_t>(cols), seed++);
    w.tensor(name, m.q8_0 ? GgmlType::kQ8_0 : GgmlType::kF32,
             {static_cast<uint64_t>(cols), static_cast<uint64_t>(rows)},
             m.q8_0 ? q8_0_bytes(v) : f32_bytes(v));
  };
  const auto norm = [&](const std::string& name) {
    w.tensor(name, GgmlType::kF32, {static_cast<uint64_t>(m.n_embd)},
             f32_bytes(std::vector<float>(static_cast<size_t>(m.n_embd), 1.0f)));
  };
  const int head_dim = m.n_embd / m.n_heads;
  matrix("token_embd.weight", m.n_vocab, m.n_embd);
  norm("output_norm.weight");
  if (!m.tied) matrix("output.weight", m.n_vocab, m.n_embd);
  for (int l = 0; l < m.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    norm(p + "attn_norm.weight");
    matrix(p + "attn_q.weight", m.n_heads * head_dim, m.n_embd);
    matrix(p + "attn_k.weight", m.n_kv_heads * head_dim, m.n_embd);
    matrix(p + "attn_v.weight", m.n_kv_heads * head_dim, m.n_embd);
    matrix(p + "attn_output.weight", m.n_embd, m.n_heads * head_dim);
    norm(p + "ffn_norm.weight");
    matrix(p + "ffn_gate.weight", m.n_ff, m.n_embd);
    matrix(p + "ffn_up.weight", m.n_ff, m.n_embd);
    matrix(p + "ffn_down.weight", m.n_embd, m.n_ff);
  }
  return w;
}

}  // namespace innerq::model::testing
