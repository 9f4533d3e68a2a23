// innerq/kernels/activation_scalar.cc — the reference gated activations
// (activation.h).
#include <algorithm>
#include <cmath>

#include "innerq/kernels/activation.h"

namespace innerq::kernels::scalar {

void gated_silu(float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void gated_gelu_tanh(float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float g3 = g * g * g;
    const float arg =
        std::clamp(kGeluTanhC * (g + 0.044715f * g3), -kGeluTanhClamp, kGeluTanhClamp);
    gate[i] = 0.5f * g * (1.0f + std::tanh(arg)) * up[i];
  }
}

}  // namespace innerq::kernels::scalar
