// The loss arithmetic of both families, written once for the CPU and CUDA
// kernels (host and device). It mirrors fusedloss/_spec.py: every loss is
//   loss_g = region_weight * R(TI_g) + elem_scale * E_g,
// TI the Tversky index of I = sum(p*t), P = sum(p), T = sum(t) (squared_pred:
// sum(p^2), sum(t^2); min_intersection, binary only: I = sum(min(p, t))),
// R = (1 - TI)^region_gamma or -log(max(TI, 1e-7)), and E
// the sum of per-element focal losses (BCE is focal with gamma = 0, no alpha).
// Binary (sigmoid, or probabilities: binary and multi-label) per element;
// multiclass (softmax over the classes, or probabilities) per pixel, its groups
// being classes.
#pragma once

#include <c10/macros/Macros.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <cstdint>
#include <vector>

// Every formula is inlined into its kernel: on the CPU that is what lets the
// loops vectorise (for each instruction set of cpu/binary_loss_cpu.cpp).
#define FUSEDLOSS_INLINE C10_HOST_DEVICE C10_ALWAYS_INLINE

namespace fusedloss {

// Scalar parameters of one loss, as the op schema passes them. Built only through
// the factories below, which say what each place needs (a field it does not need
// keeps its neutral default). A new parameter: a field, its factories, and the
// kernels that read it.
struct LossParams {
  // The region term: region_weight * R(TI), TI the Tversky index with alpha, beta and
  // smooth_nr / smooth_dr; R = (1 - TI)^region_gamma, or -log(max(TI, 1e-7)) with log_loss.
  bool region = false;
  double tv_alpha = 0, tv_beta = 0, smooth_nr = 0, smooth_dr = 0, region_gamma = 1, region_weight = 1;
  bool log_loss = false;
  bool squared_pred = false;  // P = sum(p^2), T = sum(t^2)
  // The element term: elem_weight * the focal losses' sum (their mean with elem_mean).
  bool elem = false;
  double focal_alpha = 0, focal_gamma = 0, elem_weight = 1;
  bool elem_mean = false;
  // Multiclass only: CE label smoothing (gamma = 0), and the element mean over the sum of the
  // valid pixels' class weights instead of their count (class maps).
  double label_smoothing = 0;
  bool weighted_mean = false;
  // How the input becomes probabilities and which logs the element term takes (BinaryInput,
  // MulticlassInput below).
  bool from_logits = true, clamped_log = false;
  // I = sum(min(p, t)) (smp's, MONAI's soft_label): binary only, not with squared_pred. Last, in
  // the padding: the other fields keep their offsets (the default kernels read the same bytes).
  bool min_intersection = false;
  // The binary focal factor's form (FocalForm below; logits only): after the bools, in the
  // padding too (sizeof and the other offsets unchanged).
  int focal_form = 0;

  // What the per-element passes read (statistics, backward): which terms, the focal
  // parameters, and how the input is read.
  static LossParams per_element(bool region, bool squared_pred, bool min_intersection, bool elem, double focal_alpha,
                                double focal_gamma, bool from_logits, bool clamped_log, int64_t focal_form = 0) {
    check_min_intersection(squared_pred, min_intersection);
    check_focal_form(focal_form, from_logits, clamped_log);
    return {.region = region,
            .squared_pred = squared_pred,
            .elem = elem,
            .focal_alpha = focal_alpha,
            .focal_gamma = focal_gamma,
            .from_logits = from_logits,
            .clamped_log = clamped_log,
            .min_intersection = min_intersection,
            .focal_form = static_cast<int>(focal_form)};
  }

  // The focal map ops: the element term alone.
  static LossParams focal_map(double focal_alpha, double focal_gamma, bool from_logits, bool clamped_log,
                              int64_t focal_form = 0) {
    return per_element(false, false, false, true, focal_alpha, focal_gamma, from_logits, clamped_log, focal_form);
  }

  // What the finalize ops take: the formula's parameters (the per-element ones are already in the sums).
  static LossParams for_finalize(bool region, double tv_alpha, double tv_beta, double smooth_nr, double smooth_dr,
                                 double region_gamma, double region_weight, bool log_loss, bool elem,
                                 double elem_weight, bool elem_mean) {
    return {.region = region,
            .tv_alpha = tv_alpha,
            .tv_beta = tv_beta,
            .smooth_nr = smooth_nr,
            .smooth_dr = smooth_dr,
            .region_gamma = region_gamma,
            .region_weight = region_weight,
            .log_loss = log_loss,
            .elem = elem,
            .elem_weight = elem_weight,
            .elem_mean = elem_mean};
  }

  // Every parameter, as the loss ops (binary_loss, multiclass_loss) take them.
  static LossParams from_op(bool region, double tv_alpha, double tv_beta, double smooth_nr, double smooth_dr,
                            double region_gamma, double region_weight, bool log_loss, bool squared_pred,
                            bool min_intersection, bool elem, double focal_alpha, double focal_gamma,
                            int64_t focal_form, double elem_weight, bool elem_mean, bool from_logits,
                            bool clamped_log) {
    check_min_intersection(squared_pred, min_intersection);
    check_focal_form(focal_form, from_logits, clamped_log);
    LossParams lp = for_finalize(region, tv_alpha, tv_beta, smooth_nr, smooth_dr, region_gamma, region_weight, log_loss,
                                 elem, elem_weight, elem_mean);
    lp.squared_pred = squared_pred;
    lp.min_intersection = min_intersection;
    lp.focal_alpha = focal_alpha;
    lp.focal_gamma = focal_gamma;
    lp.focal_form = static_cast<int>(focal_form);
    lp.from_logits = from_logits;
    lp.clamped_log = clamped_log;
    return lp;
  }

  // min_intersection takes P = sum(p), T = sum(t): not with squared_pred.
  static void check_min_intersection(bool squared_pred, bool min_intersection) {
    TORCH_CHECK_VALUE(!(squared_pred && min_intersection),
                      "fusedloss: min_intersection (I = sum(min(p, t))) does not combine with squared_pred");
  }

  // focal_form: 0 (Lin et al., torchvision), 1 (smp), 2 (MONAI); 1 and 2 on logits only
  // (from_logits, not clamped_log).
  static void check_focal_form(int64_t focal_form, bool from_logits, bool clamped_log) {
    TORCH_CHECK_VALUE(focal_form >= 0 && focal_form <= 2,
                      "fusedloss: focal_form must be 0 (torchvision), 1 (smp) or 2 (MONAI), got ", focal_form);
    TORCH_CHECK_VALUE(focal_form == 0 || (from_logits && !clamped_log),
                      "fusedloss: focal_form 1 (smp) and 2 (MONAI) take logits (from_logits=True, clamped_log=False), "
                      "got from_logits=",
                      from_logits, ", clamped_log=", clamped_log);
  }

  // The same loss without its element term (the multiclass one is not per group).
  FUSEDLOSS_INLINE LossParams region_only() const {
    LossParams lp = *this;
    lp.elem = false;
    return lp;
  }
};

// How a binary input becomes p, and which BCE its element term is.
enum BinaryInput : int {
  kLogitBce = 0,           // from_logits: the two-sided sigmoid, BCE on the logits (softplus, exact in the tails)
  kSigmoidClampedLog = 1,  // from_logits and clamped_log: torch.sigmoid, then F.binary_cross_entropy
  kProbabilities = 2,      // not from_logits: p = the input, F.binary_cross_entropy (clamped_log implied)
};

inline BinaryInput binary_input(const LossParams& lp) {
  if (!lp.from_logits) return kProbabilities;
  return lp.clamped_log ? kSigmoidClampedLog : kLogitBce;
}

// The multiclass loss ops take min_intersection (the schema is the whole LossSpec); the
// multiclass kernels do not implement it.
inline void check_no_min_intersection(bool min_intersection) {
  TORCH_CHECK_VALUE(!min_intersection,
                    "fusedloss: min_intersection (I = sum(min(p, t))) is implemented for the binary family only, "
                    "not for multi-class losses");
}

// The multiclass loss ops take focal_form (the schema is the whole LossSpec); the multiclass
// kernels do not implement it.
inline void check_no_focal_form(int64_t focal_form) {
  TORCH_CHECK_VALUE(focal_form == 0,
                    "fusedloss: focal_form 1 (smp) and 2 (MONAI) are implemented for the binary family only, "
                    "not for multi-class losses");
}

// How a multiclass input becomes p: softmax of logits (log_softmax in the element
// term), or probabilities as they are (logs clamped at -100). No other pairing exists.
enum MulticlassInput : int { kSoftmax = 0, kClassProbabilities = 1 };

inline MulticlassInput multiclass_input(const LossParams& lp) {
  TORCH_CHECK(lp.from_logits != lp.clamped_log,
              "fusedloss: a multi-class loss takes from_logits=True with clamped_log=False (softmax) or "
              "from_logits=False with clamped_log=True (probabilities), got from_logits=",
              lp.from_logits, ", clamped_log=", lp.clamped_log);
  return lp.from_logits ? kSoftmax : kClassProbabilities;
}

enum class Reduction : int { None = 0, Mean = 1, Sum = 2 };

inline Reduction parse_reduction(c10::string_view name) {
  if (name == "none") return Reduction::None;
  if (name == "sum") return Reduction::Sum;
  return Reduction::Mean;  // the Python layer has validated the name
}

// The tensor as `rows` contiguous rows of `row_len` elements; row r belongs to
// group r % num_groups; the per-group losses have `shape` (see _spec.group_layout).
struct GroupLayout {
  int64_t rows, row_len, num_groups, num_channels;
  std::vector<int64_t> shape;
};

inline GroupLayout group_layout(c10::IntArrayRef sizes, bool per_sample, bool per_channel) {
  int64_t numel = 1;
  for (auto size : sizes) numel *= size;
  // The Python API says so first; called directly, an empty batch would divide by zero here.
  TORCH_CHECK(numel > 0, "fusedloss: input must not be empty, got sizes ", sizes);
  if (per_channel) {
    const int64_t batch = sizes[0], channels = sizes[1], rows = batch * channels;
    if (per_sample) return {rows, numel / rows, rows, channels, {batch, channels}};
    return {rows, numel / rows, channels, channels, {channels}};
  }
  if (per_sample) {
    const int64_t batch = sizes[0];
    return {batch, numel / batch, batch, 1, {batch}};
  }
  return {1, numel, 1, 1, {}};
}

// The elementary functions the formulas use, as a policy: the standard ones
// (CUDA, and fp64 on the CPU), or the CPU's vectorisable float versions
// (cpu/vector_math.h).
struct StdMath {
  template <typename T>
  FUSEDLOSS_INLINE static T exp(T x) {
    return std::exp(x);
  }
  template <typename T>
  FUSEDLOSS_INLINE static T log(T x) {
    return std::log(x);
  }
  template <typename T>
  FUSEDLOSS_INLINE static T log1p(T x) {
    return std::log1p(x);
  }
  // log1p for x in [0, 1] (exp(-|x|) of a logit), where the CPU's float version is cheaper.
  template <typename T>
  FUSEDLOSS_INLINE static T log1p_unit(T x) {
    return std::log1p(x);
  }
  template <typename T>
  FUSEDLOSS_INLINE static T pow(T x, T y) {
    return std::pow(x, y);
  }
};

// p = sigmoid(x) and q = 1 - p, both accurate in the tails, and e = exp(-|x|)
// (log(1 + e) is softplus(-|x|), the BCE's log term).
template <typename acc_t>
struct SigmoidParts {
  acc_t p, q, e;
};

template <typename Math = StdMath, typename acc_t>
FUSEDLOSS_INLINE SigmoidParts<acc_t> sigmoid_parts(acc_t x) {
  const acc_t e = Math::exp(x < acc_t(0) ? x : -x);
  const acc_t big = acc_t(1) / (acc_t(1) + e);
  const acc_t small = e * big;
  const bool positive = x >= acc_t(0);
  return {positive ? big : small, positive ? small : big, e};
}

template <typename acc_t>
struct FocalTerms {
  acc_t loss, dloss;  // the element's focal loss and its derivative in x
};

// BCE with logits, max(x, 0) - x t + log(1 + exp(-|x|)) (s.e = exp(-|x|)): every focal form's B.
template <typename Math, typename acc_t>
FUSEDLOSS_INLINE acc_t logit_bce(acc_t x, acc_t t, const SigmoidParts<acc_t>& s) {
  return (x > acc_t(0) ? x : acc_t(0)) - x * t + Math::log1p_unit(s.e);
}

// The focal loss's class balance alpha_t = alpha t + (1 - alpha)(1 - t); alpha < 0: none (1).
template <typename acc_t>
FUSEDLOSS_INLINE acc_t alpha_weight(acc_t alpha, acc_t t) {
  const acc_t one = 1;
  return alpha >= acc_t(0) ? alpha * t + (one - alpha) * (one - t) : one;
}

// bce = max(x,0) - x*t + log(1+exp(-|x|)); q_t = 1 - p_t = p*(1-t) + q*t;
// loss = alpha_t * q_t^gamma * bce (alpha < 0: alpha_t = 1);
// dloss/dx = alpha_t * (q_t^gamma * (p - t) + gamma * q_t^(gamma-1) * p*q*(1-2t) * bce).
// MODULATED = false is the shortcut for gamma == 0 (BCE): q_t^0 = 1, no slope term.
template <typename Math = StdMath, bool MODULATED = true, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> focal_terms(acc_t x, acc_t t, const SigmoidParts<acc_t>& s, acc_t alpha,
                                               acc_t gamma) {
  const acc_t one = 1;
  const acc_t bce = logit_bce<Math>(x, t, s);
  const acc_t alpha_t = alpha_weight(alpha, t);
  if (!MODULATED) return {alpha_t * bce, alpha_t * (s.p - t)};
  const acc_t q_t = s.p * (one - t) + s.q * t;
  const bool positive = q_t > acc_t(0);
  const acc_t powered = Math::pow(positive ? q_t : one, gamma);
  const acc_t modulator = positive ? powered : (gamma == acc_t(0) ? one : acc_t(0));
  // q_t^(gamma-1) * p*q = modulator * (p*q / q_t): q_t lies between p and q, so the ratio
  // is at most max(p, q) <= 1 (1 / q_t alone overflows for a subnormal q_t, |x| ~ 89..104
  // in fp32); the limit at q_t = 0 is 0.
  const acc_t pq_over_q_t = positive ? (s.p * s.q) / q_t : acc_t(0);
  // gamma = 0 has no slope (not 0 * bce, NaN at |x| = inf: BCE's gradient stays p - t there).
  const acc_t slope = gamma != acc_t(0) ? gamma * modulator * pq_over_q_t * (one - acc_t(2) * t) * bce : acc_t(0);
  return {alpha_t * modulator * bce, alpha_t * (modulator * (s.p - t) + slope)};
}

// The binary focal factor f's form (focal_form; the same for hard targets, not for soft ones):
// kFocalLin, Lin et al.'s and torchvision's (1 - p_t)^gamma (focal_terms above); kFocalSmp,
// segmentation_models_pytorch's (1 - exp(-B))^gamma; kFocalMonai, MONAI's sigmoid(z)^gamma,
// z = -x (2t - 1). B the BCE with logits; logits only, gamma != 0 only (gamma = 0 is BCE in
// every form: focal_terms' shortcut).
enum FocalForm : int { kFocalLin = 0, kFocalSmp = 1, kFocalMonai = 2 };

// smp's focal term: q = exp(-B), f = (1 - q)^gamma, loss = a_t f B;
// dloss/dx = a_t (p - t) [f + gamma B q (1 - q)^(gamma - 1)], the bracket's second part written
// B q f / (1 - q) where 1 - q > 0, else 0 (its limit at B -> 0, for gamma in (0, 1) too).
template <typename Math, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> smp_focal_terms(acc_t x, acc_t t, const SigmoidParts<acc_t>& s, acc_t alpha,
                                                   acc_t gamma) {
  const acc_t one = 1;
  const acc_t bce = logit_bce<Math>(x, t, s);
  const acc_t alpha_t = alpha_weight(alpha, t);
  const acc_t q = Math::exp(-bce);
  const acc_t r = one - q;  // as smp computes it
  const bool positive = r > acc_t(0);
  const acc_t f = positive ? Math::pow(r, gamma) : acc_t(0);  // gamma != 0
  const acc_t b_q_f_over_r = positive ? (bce / r) * q * f : acc_t(0);
  return {alpha_t * f * bce, alpha_t * (s.p - t) * (f + gamma * b_q_f_over_r)};
}

// MONAI's focal term: z = -x (2t - 1), f = sigmoid(z)^gamma = exp(gamma logsigmoid(z)),
// loss = a_t f B; dloss/dx = a_t [f (p - t) + gamma B f (1 - sigmoid(z)) (1 - 2t)].
template <typename Math, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> monai_focal_terms(acc_t x, acc_t t, const SigmoidParts<acc_t>& s, acc_t alpha,
                                                     acc_t gamma) {
  const acc_t one = 1;
  const acc_t bce = logit_bce<Math>(x, t, s);
  const acc_t alpha_t = alpha_weight(alpha, t);
  const acc_t one_minus_2t = one - acc_t(2) * t;
  const acc_t z = x * one_minus_2t;
  const acc_t e_z = Math::exp(z < acc_t(0) ? z : -z);  // exp(-|z|)
  const acc_t log_sigmoid_z = (z < acc_t(0) ? z : acc_t(0)) - Math::log1p_unit(e_z);
  const acc_t f = Math::exp(gamma * log_sigmoid_z);
  const acc_t sigmoid_neg_z = (z >= acc_t(0) ? e_z : one) / (one + e_z);  // 1 - sigmoid(z)
  return {alpha_t * f * bce, alpha_t * (f * (s.p - t) + gamma * bce * f * sigmoid_neg_z * one_minus_2t)};
}

// One binary element's p, q = 1 - p and dp/dx for the input mode; e = exp(-|x|) for
// the logit BCE (kLogitBce) only.
template <typename acc_t>
struct BinaryProbability {
  acc_t p, q, dp_dx, e;
};

template <typename Math, BinaryInput INPUT, typename acc_t>
FUSEDLOSS_INLINE BinaryProbability<acc_t> binary_probability(acc_t x) {
  const acc_t one = 1;
  if constexpr (INPUT == kProbabilities) {
    return {x, one - x, one, acc_t(0)};
  } else if constexpr (INPUT == kSigmoidClampedLog) {
    // One-sided, as torch.sigmoid rounds it (p = 1 from x ~ 16.6 in fp32, 0 below ~ -88.7:
    // exp overflows), so the clamped logs see the p that F.binary_cross_entropy would.
    const acc_t p = one / (one + Math::exp(-x));
    const acc_t q = one - p;
    return {p, q, p * q, acc_t(0)};
  } else {
    const SigmoidParts<acc_t> s = sigmoid_parts<Math>(x);
    return {s.p, s.q, s.p * s.q, s.e};
  }
}

// F.binary_cross_entropy's focal loss from p and q = 1 - p (as computed):
// bce = -(t max(log p, -100) + (1-t) max(log1p(-p), -100)), dbce/dp = (p - t) / max(p q, 1e-12f)
// (torch's backward); loss = alpha_t q_t^gamma bce;
// dloss/dp = alpha_t (q_t^gamma dbce/dp + gamma q_t^(gamma-1) (1 - 2t) bce). dloss is in p.
template <typename Math, bool MODULATED, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> clamped_focal_terms(acc_t p, acc_t q, acc_t t, acc_t alpha, acc_t gamma) {
  const acc_t one = 1, floor = -100;
  const acc_t log_p = Math::log(p), log_q = Math::log1p(-p);  // torch's log1p(-p): exact for a tiny p
  // The clamps let NaN through.
  const acc_t lp = log_p < floor ? floor : log_p, lq = log_q < floor ? floor : log_q;
  const acc_t bce = -(t * lp + (one - t) * lq);
  // torch's epsilon is the float 1e-12f (in fp64 too).
  const acc_t pq = p * q, epsilon = acc_t(1e-12f);
  const acc_t dbce = (p - t) / (pq < epsilon ? epsilon : pq);
  const acc_t alpha_t = alpha_weight(alpha, t);
  if (!MODULATED) return {alpha_t * bce, alpha_t * dbce};
  const acc_t q_t = p * (one - t) + q * t;
  const bool positive = q_t > acc_t(0);
  const acc_t powered = Math::pow(positive ? q_t : one, gamma);
  const acc_t modulator = positive ? powered : (gamma == acc_t(0) ? one : acc_t(0));
  // bce / q_t stays bounded as q_t -> 0 (bce -> 0 with it, at most ~100 q_t), where
  // modulator / q_t alone overflows for gamma < 1 and a subnormal q_t.
  const acc_t slope = gamma != acc_t(0) && positive ? gamma * modulator * (bce / q_t) * (one - acc_t(2) * t) : acc_t(0);
  return {alpha_t * modulator * bce, alpha_t * (modulator * dbce + slope)};
}

// A binary element's focal loss and its derivative in x, for the input mode. FORM (FocalForm):
// with kLogitBce and MODULATED only (the callers' dispatch sees to it).
template <typename Math, BinaryInput INPUT, bool MODULATED, int FORM = kFocalLin, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> binary_element_terms(acc_t x, acc_t t, const BinaryProbability<acc_t>& s,
                                                        acc_t alpha, acc_t gamma) {
  static_assert(FORM == kFocalLin || (INPUT == kLogitBce && MODULATED), "a focal form needs logits and gamma != 0");
  if constexpr (FORM == kFocalSmp) {
    return smp_focal_terms<Math>(x, t, SigmoidParts<acc_t>{s.p, s.q, s.e}, alpha, gamma);
  } else if constexpr (FORM == kFocalMonai) {
    return monai_focal_terms<Math>(x, t, SigmoidParts<acc_t>{s.p, s.q, s.e}, alpha, gamma);
  } else if constexpr (INPUT == kLogitBce) {
    return focal_terms<Math, MODULATED>(x, t, SigmoidParts<acc_t>{s.p, s.q, s.e}, alpha, gamma);
  } else {
    const FocalTerms<acc_t> in_p = clamped_focal_terms<Math, MODULATED>(s.p, s.q, t, alpha, gamma);
    return {in_p.loss, in_p.dloss * s.dp_dx};
  }
}

// The statistics' share of one value: p (or t) in P (T), p^2 with squared_pred.
template <bool SQUARED, typename acc_t>
FUSEDLOSS_INLINE acc_t region_share(acc_t v) {
  return SQUARED ? v * v : v;
}

// The statistics' share of one element in I: p t, or min(p, t) with MIN (min_intersection;
// a NaN p stays NaN, as torch.minimum's).
template <bool MIN, typename acc_t>
FUSEDLOSS_INLINE acc_t intersection_share(acc_t p, acc_t t) {
  return MIN ? (t < p ? t : p) : p * t;
}

// The region term's dL/dp of one element: coef_I dI/dp + coef_P dP/dp; dI/dp = t, or with
// MIN the step [p < t] (1/2 at p == t: torch's subgradient of |p - t|, smp's and MONAI's).
template <bool SQUARED, bool MIN = false, typename acc_t>
FUSEDLOSS_INLINE acc_t region_dp(acc_t coef_i, acc_t coef_p, acc_t t, acc_t p) {
  const acc_t di_dp = MIN ? (p < t ? acc_t(1) : (p == t ? acc_t(0.5) : acc_t(0))) : t;
  return coef_i * di_dp + (SQUARED ? coef_p * (acc_t(2) * p) : coef_p);
}

// The same for one class of a multiclass pixel, its t one-hot: hit = [c = y].
template <bool SQUARED, typename acc_t>
FUSEDLOSS_INLINE acc_t region_dp_one_hot(acc_t coef_i, acc_t coef_p, bool hit, acc_t p) {
  return (hit ? coef_i : acc_t(0)) + (SQUARED ? coef_p * (acc_t(2) * p) : coef_p);
}

// Multiclass, per pixel: the focal loss -alpha (1 - p_y)^gamma log p_y (alpha < 0:
// no alpha; gamma = 0: cross-entropy) and A, its gradient being
// dloss/dx_c = A (p_c - [c = y]): A = alpha ((1-p_y)^gamma - gamma (1-p_y)^(gamma-1) p_y log p_y).
// rest = 1 - p_y, computed by the caller as the other classes' share (no cancellation).
// scale: the class's factor a (multiclass_focal_terms: alpha, or 1 for alpha < 0).
template <typename Math = StdMath, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> multiclass_focal_terms_scaled(acc_t log_p_y, acc_t rest, acc_t scale, acc_t gamma) {
  const acc_t one = 1;
  const acc_t p_y = Math::exp(log_p_y);
  const bool positive = !(rest <= acc_t(0));  // NaN (a NaN logit) takes the pow: stays NaN
  const acc_t powered = Math::pow(positive ? rest : one, gamma);
  const acc_t modulator = positive ? powered : (gamma == acc_t(0) ? one : acc_t(0));
  // (1 - p_y)^(gamma-1) p_y log p_y -> 0 as p_y -> 1.
  // gamma = 0 (cross-entropy) has no slope: not 0 * log p_y, NaN where p_y = 0 (a -inf logit).
  const acc_t slope = positive && gamma != acc_t(0) ? gamma * (modulator / rest) * p_y * log_p_y : acc_t(0);
  return {-scale * modulator * log_p_y, scale * (modulator - slope)};
}

// A class's element factor a_c without class weights: alpha, or 1 (alpha < 0: no alpha).
template <typename acc_t>
FUSEDLOSS_INLINE acc_t alpha_scale(acc_t alpha) {
  return alpha >= acc_t(0) ? alpha : acc_t(1);
}

template <typename Math = StdMath, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> multiclass_focal_terms(acc_t log_p_y, acc_t rest, acc_t alpha, acc_t gamma) {
  return multiclass_focal_terms_scaled<Math>(log_p_y, rest, alpha_scale(alpha), gamma);
}

// Multiclass on probabilities (from_logits = False), per pixel: the focal loss
// -alpha (1 - p_y)^gamma max(log p_y, -100) (gamma = 0: F.nll_loss of the clamped log)
// and its derivative in p_y (the clamp's: 0 where log p_y < -100).
// scale: as multiclass_focal_terms_scaled's; MODULATED = false: the gamma = 0 shortcut (no pow).
template <typename Math, bool MODULATED = true, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> multiclass_clamped_focal_terms_scaled(acc_t p_y, acc_t scale, acc_t gamma) {
  const acc_t one = 1, floor = -100;
  const acc_t log_p = Math::log(p_y);
  const acc_t lp = log_p < floor ? floor : log_p;  // NaN stays NaN
  const acc_t dlp = log_p >= floor ? one / p_y : acc_t(0);
  if (!MODULATED) return {-scale * lp, -scale * dlp};
  const acc_t rest = one - p_y;
  const bool positive = !(rest <= acc_t(0));  // NaN takes the pow: stays NaN
  const acc_t powered = Math::pow(positive ? rest : one, gamma);
  const acc_t modulator = positive ? powered : (gamma == acc_t(0) ? one : acc_t(0));
  const acc_t slope = positive && gamma != acc_t(0) ? gamma * (modulator / rest) * lp : acc_t(0);
  return {-scale * modulator * lp, -scale * (modulator * dlp - slope)};
}

template <typename Math, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> multiclass_clamped_focal_terms(acc_t p_y, acc_t alpha, acc_t gamma) {
  return multiclass_clamped_focal_terms_scaled<Math>(p_y, alpha_scale(alpha), gamma);
}

// Per-class element terms (dense targets, label smoothing): class c of a pixel weighs in with
// w_c = a_c t'_c, t'_c = t_c (1 - eps) + eps / C (F.cross_entropy's label smoothing; t_c = [c = y]
// for a class map): E = sum_c w_c (1 - p_c)^gamma (-lp_c).
template <typename acc_t>
FUSEDLOSS_INLINE acc_t class_target_weight(acc_t a_c, acc_t t_c, acc_t keep, acc_t spread) {
  return a_c * (t_c * keep + spread);  // keep = 1 - eps, spread = eps / C
}

// Softmax: class c's loss w (1 - p)^gamma (-lp) and h = -w Afocal(p) (Afocal: multiclass_focal_terms'
// A without alpha, 1 for cross-entropy); then dE/dx_j = h_j - p_j sum_c h_c. rest = 1 - p, as there.
template <typename Math, bool MODULATED, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> softmax_class_terms(acc_t log_p, acc_t rest, acc_t w, acc_t gamma) {
  if (!MODULATED) return {-w * log_p, -w};
  const FocalTerms<acc_t> unit = multiclass_focal_terms_scaled<Math>(log_p, rest, acc_t(1), gamma);
  return {w * unit.loss, -w * unit.dloss};
}

// Probabilities: class c's loss w (1 - p)^gamma (-max(log p, -100)) and its derivative in p_c.
template <typename Math, bool MODULATED, typename acc_t>
FUSEDLOSS_INLINE FocalTerms<acc_t> probability_class_terms(acc_t p, acc_t w, acc_t gamma) {
  return multiclass_clamped_focal_terms_scaled<Math, MODULATED>(p, w, gamma);
}

// The output's scale (1 / the groups counted, for a mean) and the element term's
// (elem_weight, over the elements counted with elem_mean).
template <typename acc_t>
struct LossScales {
  acc_t out_scale, elem_scale;
};

// Binary, for one group: every group counts; `counted` is the group's elements not
// ignored (its size without ignore_index), taken as 1 at least (all ignored: E = 0).
template <typename acc_t>
FUSEDLOSS_INLINE LossScales<acc_t> binary_scales(int64_t num_groups, acc_t counted, const LossParams& lp,
                                                 Reduction reduction) {
  const acc_t out_scale = reduction == Reduction::Mean ? acc_t(1) / acc_t(num_groups) : acc_t(1);
  const acc_t elem_scale =
      lp.elem_mean ? acc_t(lp.elem_weight) / (counted < acc_t(1) ? acc_t(1) : counted) : acc_t(lp.elem_weight);
  return {out_scale, elem_scale};
}

// One group's loss (weighted) and its backward coefficients d(output)/dI, dP, dE.
template <typename acc_t>
struct GroupResult {
  acc_t loss, coef_i, coef_p, coef_e;
};

template <typename acc_t>
FUSEDLOSS_INLINE GroupResult<acc_t> finalize_group(acc_t sum_i, acc_t sum_p, acc_t sum_t, acc_t sum_e,
                                                   acc_t group_weight, acc_t out_scale, acc_t elem_scale,
                                                   const LossParams& lp) {
  const acc_t scale = group_weight * out_scale;
  acc_t loss = 0, coef_i = 0, coef_p = 0;
  if (lp.region) {
    const acc_t a = lp.tv_alpha, b = lp.tv_beta, gamma = lp.region_gamma;
    const acc_t smooth_nr = lp.smooth_nr, smooth_dr = lp.smooth_dr, rw = lp.region_weight;
    // NaN sums (a NaN logit) give NaN: every clamp and test below lets NaN through.
    // FP and FN are not clamped at 0: with squared_pred, P = sum(p^2) may be below I (the
    // index's denominator is still the definition's, e.g. (P + T) / 2 for Dice).
    const acc_t false_pos = sum_p - sum_i;
    const acc_t false_neg = sum_t - sum_i;
    const acc_t numer = sum_i + smooth_nr;
    // smooth_dr = 0 with nothing predicted and nothing to find: 0/0, scored as a perfect match.
    const bool defined = !(sum_i + a * false_pos + b * false_neg + smooth_dr <= acc_t(0));
    const acc_t denom = defined ? sum_i + a * false_pos + b * false_neg + smooth_dr : acc_t(1);
    const acc_t ratio = numer / denom;  // TI
    acc_t region, dregion;              // R and dR/d(1 - TI)
    if (lp.log_loss) {
      const acc_t floor = 1e-7;
      region = defined ? -std::log(ratio < floor ? floor : ratio) : acc_t(0);
      dregion = defined && ratio > floor ? acc_t(1) / ratio : acc_t(0);
    } else if (gamma == acc_t(1)) {
      // Not clamped: 1 - TI < 0 where smooth_nr > smooth_dr (its gradient stays).
      region = defined ? acc_t(1) - ratio : acc_t(0);
      dregion = defined ? acc_t(1) : acc_t(0);
    } else {
      acc_t tversky = defined ? acc_t(1) - ratio : acc_t(0);
      tversky = tversky < acc_t(0) ? acc_t(0) : tversky;
      if (!(tversky <= acc_t(0))) {
        region = std::pow(tversky, gamma);
        dregion = gamma * region / tversky;
      } else {
        region = gamma == acc_t(0) ? acc_t(1) : acc_t(0);
        dregion = 0;
      }
    }
    // d(1 - TI)/dI = -(1 - TI (1 - a - b)) / denom, d(1 - TI)/dP = TI a / denom: written
    // with the ratio, so a tiny denom does not overflow denom^2.
    const acc_t dtv_di = -(acc_t(1) - ratio * (acc_t(1) - a - b)) / denom;
    const acc_t dtv_dp = ratio * a / denom;
    loss += rw * region;
    coef_i = scale * rw * dregion * dtv_di;
    coef_p = scale * rw * dregion * dtv_dp;
  }
  if (lp.elem) loss += elem_scale * sum_e;
  return {group_weight * loss, coef_i, coef_p, scale * elem_scale};
}

// The multiclass finalize rules, written once for both backends. Groups are classes
// (g % classes the class; groups = C, or N*C per sample) with sums [I, P, T]; the
// element term is one sum E over the valid pixels, not per group.
struct MulticlassRules {
  int64_t classes;
  bool include_background, exclude_empty;

  // Whether group g counts (for the loss and the mean): not class 0 unless
  // include_background; not a class absent from the target (T = 0) with exclude_empty.
  template <typename acc_t>
  FUSEDLOSS_INLINE bool counts(int64_t g, acc_t sum_t) const {
    return (include_background || g % classes != 0) && (!exclude_empty || sum_t > acc_t(0));
  }
};

// counted: the groups that count (taken as 1 at least); valid_pixels: E's mean denominator (elem_sums[1]).
template <typename acc_t>
FUSEDLOSS_INLINE LossScales<acc_t> multiclass_scales(acc_t counted, acc_t valid_pixels, const LossParams& lp,
                                                     Reduction reduction) {
  const acc_t one = 1;
  const acc_t out_scale = reduction == Reduction::Mean ? one / (counted < one ? one : counted) : one;
  // valid_pixels: a count (0 -> 1: E is 0 then), or with weighted_mean the sum of the pixels'
  // class weights, at least the smallest normal number (as the reference's clamp).
  const acc_t tiny = sizeof(acc_t) == sizeof(float) ? acc_t(1.17549435e-38f) : acc_t(2.2250738585072014e-308);
  const acc_t denominator = valid_pixels <= acc_t(0) ? one : (valid_pixels < tiny ? tiny : valid_pixels);
  const acc_t elem_scale = lp.elem_mean ? acc_t(lp.elem_weight) / denominator : acc_t(lp.elem_weight);
  return {out_scale, elem_scale};
}

// Group g's loss (weighted, 0 unless it counts and there is a region term) and its
// coefficients; coef_e is the element term's scale, the same for every group.
template <typename acc_t>
FUSEDLOSS_INLINE GroupResult<acc_t> multiclass_group(const acc_t* sums, int64_t g, acc_t group_weight,
                                                     const LossScales<acc_t>& scales, const MulticlassRules& rules,
                                                     const LossParams& lp) {
  GroupResult<acc_t> r{0, 0, 0, 0};
  if (lp.region && rules.counts(g, sums[2])) {
    r = finalize_group<acc_t>(sums[0], sums[1], sums[2], acc_t(0), group_weight, scales.out_scale, acc_t(0),
                              lp.region_only());
  }
  r.coef_e = scales.elem_scale;
  return r;
}

// The reduced loss from the groups' losses summed in order, and E.
template <typename acc_t>
FUSEDLOSS_INLINE acc_t multiclass_total(acc_t group_loss_sum, acc_t elem_sum, const LossScales<acc_t>& scales) {
  return group_loss_sum * scales.out_scale + scales.elem_scale * elem_sum;
}

}  // namespace fusedloss
