// The Lovász losses' arithmetic, written once for the CPU and CUDA kernels
// (host and device): the Lovász step of the sorted scan (lovasz_rows and its
// backward, in double), the hinge of the binary errors, and the per-element
// gradients of the chain ops. The spec: the kernel primitives' contract
// (errors, sort, scan, chain; fusedloss/ops/lovasz.py assembles them).
#pragma once

#include <cmath>

#include "loss_math.h"  // FUSEDLOSS_INLINE

namespace fusedloss {

// The Lovász gradient g_i = J_i - J_{i-1} of the sorted position i, from the
// intersection I = T - c_{i-1} and union U = T + i - c_{i-1} before step i and the
// truth t = t_i (c_{i-1}: the running count of the truth before i, T its row total),
// written so that nothing cancels; U == 0 only at i = 0 of a row with T = 0: g = 1.
FUSEDLOSS_INLINE double lovasz_step(double I, double U, double t) {
  return U == 0.0 ? 1.0 : (I * (1.0 - t) + t * U) / (U * (U + 1.0 - t));
}

// torch.relu: e where e > 0, NaN kept (e = NaN), else 0 (-inf included).
template <typename T>
FUSEDLOSS_INLINE T relu_keep_nan(T e) {
  return e > T(0) ? e : (e != e ? e : T(0));
}

// The binary hinge error e = 1 - x (2t - 1) of a logit x and its target t.
template <typename acc_t>
FUSEDLOSS_INLINE acc_t binary_lovasz_error(acc_t x, acc_t t) {
  return acc_t(1) - x * (acc_t(2) * t - acc_t(1));
}

// de/dx times the upstream gradient through relu: grad_e * [e > 0] * -(2t - 1); 0 where
// e <= 0 or e is NaN, whatever grad_e holds (torch.relu's backward selects).
template <typename acc_t>
FUSEDLOSS_INLINE acc_t binary_lovasz_grad(acc_t grad_e, acc_t e, acc_t t) {
  return e > acc_t(0) ? -grad_e * (acc_t(2) * t - acc_t(1)) : acc_t(0);
}

// The multiclass error e_c = |t_c - p_c|.
template <typename acc_t>
FUSEDLOSS_INLINE acc_t multiclass_lovasz_error(acc_t p, acc_t t) {
  const acc_t d = t - p;
  return d < acc_t(0) ? -d : d;  // NaN stays NaN
}

// dL/dp_c = grad_e_c * [e_c > 0] * sign(p_c - t_c); 0 where e_c is 0 or NaN.
template <typename acc_t>
FUSEDLOSS_INLINE acc_t multiclass_lovasz_dp(acc_t grad_e, acc_t p, acc_t t) {
  return p > t ? grad_e : (p < t ? -grad_e : acc_t(0));
}

}  // namespace fusedloss
