// innerq/kernels/activation.h — the gated activations of a feed-forward
// block: gate = act(gate) ⊙ up, elementwise over n values.
//
//   SwiGLU:        act(g) = g·σ(g),  σ(g) = 1 / (1 + e^−g)
//   GeGLU (tanh):  act(g) = ½·g·(1 + tanh(c·(g + 0.044715·g³))),  c = √(2/π)
//
// The scalar reference computes these with the C library's exp and tanh.
// The SIMD version evaluates e^−|g| (never overflowing: σ(g) = 1/(1 + e^−g)
// for g ≥ 0, e^g/(1 + e^g) below) and tanh with Highway's vector functions
// (at most 1 and 4 ulp), on the same tanh argument, computed in the same
// order; tests/kernels/activation_test.cc bounds the difference from those
// error bounds. The tanh argument is clamped to ±10 in both: tanh(±10)
// rounds to ±1 in float, and the clamp keeps an infinite g from reaching
// tanh.
#pragma once

#include <cstddef>

namespace innerq::kernels {

inline constexpr float kGeluTanhC = 0.7978845608028654f;  // √(2/π)
inline constexpr float kGeluTanhClamp = 10.0f;

namespace scalar {
void gated_silu(float* gate, const float* up, size_t n);
void gated_gelu_tanh(float* gate, const float* up, size_t n);
}  // namespace scalar

namespace simd {
void gated_silu(float* gate, const float* up, size_t n);
void gated_gelu_tanh(float* gate, const float* up, size_t n);
}  // namespace simd

}  // namespace innerq::kernels
