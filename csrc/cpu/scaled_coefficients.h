// The CPU backward's per-group coefficients times the upstream gradient, in double and
// without tensor ops: on a small input a few tensor ops cost as much as the whole pass.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstddef>
#include <vector>

namespace fusedloss {

// A floating tensor's values in double (float and double read where they lie).
inline std::vector<double> as_doubles(const at::Tensor& tensor) {
  const bool direct = tensor.scalar_type() == at::kFloat || tensor.scalar_type() == at::kDouble;
  const at::Tensor values = direct ? tensor.contiguous() : tensor.to(at::kDouble).contiguous();
  std::vector<double> out(values.numel());
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "as_doubles", [&] {
    const scalar_t* v = values.const_data_ptr<scalar_t>();
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(v[i]);
  });
  return out;
}

// Coefficients (groups x 3) times the upstream gradient (a scalar or one per group).
inline std::vector<double> scaled_coefficients(const at::Tensor& coef, const at::Tensor& grad_loss) {
  std::vector<double> c = as_doubles(coef);
  const std::vector<double> g = as_doubles(grad_loss);
  TORCH_CHECK(g.size() == 1 || 3 * g.size() == c.size(), "fusedloss: the upstream gradient has ", g.size(),
              " values for ", c.size() / 3, " groups");
  for (size_t k = 0; k < c.size(); ++k) c[k] *= g[g.size() == 1 ? 0 : k / 3];
  return c;
}

}  // namespace fusedloss
