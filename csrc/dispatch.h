// From runtime values to what the kernels are instantiated for, shared by the
// kernel files (host side): the accumulation dtype; the input's and the
// target's dtypes to C++ types; a binary loss's terms to a template argument.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

#include "loss_math.h"

namespace fusedloss {

// The dtype the kernels accumulate in (at::opmath_type's): double for a double
// tensor, float for float, half and bfloat16.
inline at::ScalarType accumulation_type(const at::Tensor& tensor) {
  return tensor.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline at::TensorOptions accumulation_options(const at::Tensor& tensor) {
  return tensor.options().dtype(accumulation_type(tensor));
}

// Calls fn(T{}) for the first of Ts that is `type`'s C++ type; false if none is.
template <typename... Ts, typename Fn>
bool dispatch_one_of(at::ScalarType type, Fn&& fn) {
  return ((type == c10::CppTypeToScalarType<Ts>::value && (fn(Ts{}), true)) || ...);
}

// Calls fn(input_t{}) for the input's dtype: double, float, half or bfloat16; any
// other fails as AT_DISPATCH_FLOATING_TYPES_AND2 would, naming `name` (a
// runtime string, which the macro cannot take).
template <typename Fn>
void dispatch_input(const at::Tensor& input, const char* name, Fn&& fn) {
  const at::ScalarType type = input.scalar_type();
  if (!dispatch_one_of<double, float, at::Half, at::BFloat16>(type, fn)) {
    TORCH_CHECK_NOT_IMPLEMENTED(false, '"', name, "\" not implemented for '", c10::toString(type), "'");
  }
}

// Calls fn(target_t{}) for a binary target (probabilities): float, double, half,
// bfloat16, bool or uint8.
template <typename Fn>
void dispatch_probability_target(const at::Tensor& target, Fn&& fn) {
  if (!dispatch_one_of<float, double, at::Half, at::BFloat16, bool, uint8_t>(target.scalar_type(), fn)) {
    TORCH_CHECK(false, "fusedloss: target must be float, double, half, bfloat16, bool or uint8, got ",
                target.scalar_type());
  }
}

// Calls fn(target_t{}) for a multiclass target (class indices): uint8, int16, int32 or int64.
template <typename Fn>
void dispatch_class_map(const at::Tensor& target, Fn&& fn) {
  if (!dispatch_one_of<uint8_t, int16_t, int32_t, int64_t>(target.scalar_type(), fn)) {
    TORCH_CHECK(false, "fusedloss: multi-class target must be uint8, int16, int32 or int64, got ",
                target.scalar_type());
  }
}

// The C++ type a dispatched data pointer points to.
template <typename Pointer>
using pointee_t = std::remove_cv_t<std::remove_pointer_t<Pointer>>;

// Input dtype x target dtype: fn(x, t), the input's and the target's data as
// pointers to their C++ types (see pointee_t); the input's dtype is checked first.
template <typename Fn>
void dispatch_binary_data(const at::Tensor& input, const at::Tensor& target, const char* name, Fn&& fn) {
  dispatch_input(input, name, [&](auto input_tag) {
    using input_t = decltype(input_tag);
    dispatch_probability_target(target, [&](auto target_tag) {
      fn(input.const_data_ptr<input_t>(), target.const_data_ptr<decltype(target_tag)>());
    });
  });
}

template <typename Fn>
void dispatch_multiclass_data(const at::Tensor& input, const at::Tensor& target, const char* name, Fn&& fn) {
  dispatch_input(input, name, [&](auto input_tag) {
    using input_t = decltype(input_tag);
    dispatch_class_map(target, [&](auto target_tag) {
      fn(input.const_data_ptr<input_t>(), target.const_data_ptr<decltype(target_tag)>());
    });
  });
}

// Which terms a binary loss has and how it reads its input (BinaryInput), as a
// template argument of the CPU loops: each combination is a loop of its own, so
// the default one (logits, no squared_pred) is the same code as before the options.
enum Terms : int {
  kRegion = 1,
  kElem = 2,
  kModulated = 4,          // focal gamma != 0
  kSquared = 8,            // squared_pred (with kRegion only)
  kIgnored = 64,           // ignore_index given (a bit above the BinaryInput's): a loop of its own
  kMinIntersection = 128,  // min_intersection (with kRegion only, never kSquared): loops of their own
};
// The focal form (FocalForm, != kFocalLin only with kModulated and kLogitBce), in the bits from
// here up: loops of their own (with_focal_form_terms).
constexpr int kFocalFormShift = 8;
constexpr int kInputShift = 4;  // the BinaryInput, in the bits from here up
constexpr int kTermBits = (1 << kInputShift) - 1;

constexpr bool has(int terms, Terms term) { return (terms & term) != 0; }
constexpr BinaryInput input_of(int terms) { return static_cast<BinaryInput>((terms >> kInputShift) & 3); }
constexpr int form_of(int terms) { return (terms >> kFocalFormShift) & 3; }

inline int terms_of(const LossParams& lp) {
  return (lp.region ? kRegion : 0) | (lp.region && lp.squared_pred ? kSquared : 0) |
         (lp.region && lp.min_intersection ? kMinIntersection : 0) | (lp.elem ? kElem : 0) |
         (lp.elem && lp.focal_gamma != 0 ? kModulated : 0) | (binary_input(lp) << kInputShift) |
         (lp.elem && lp.focal_gamma != 0 ? lp.focal_form << kFocalFormShift : 0);
}

// Calls fn(std::integral_constant<BinaryInput, INPUT>{}) for the runtime `input`.
template <typename Fn>
C10_ALWAYS_INLINE decltype(auto) with_binary_input(BinaryInput input, Fn&& fn) {
  switch (input) {
    case kSigmoidClampedLog: return fn(std::integral_constant<BinaryInput, kSigmoidClampedLog>{});
    case kProbabilities: return fn(std::integral_constant<BinaryInput, kProbabilities>{});
    default: return fn(std::integral_constant<BinaryInput, kLogitBce>{});
  }
}

// Calls fn(std::integral_constant<MulticlassInput, INPUT>{}) for the runtime `input`.
template <typename Fn>
C10_ALWAYS_INLINE decltype(auto) with_multiclass_input(MulticlassInput input, Fn&& fn) {
  if (input == kClassProbabilities) return fn(std::integral_constant<MulticlassInput, kClassProbabilities>{});
  return fn(std::integral_constant<MulticlassInput, kSoftmax>{});
}

// A multiclass element term's form, as a template argument: the labelled class alone
// (kLabel: scalar alpha, today's code; kLabelWeighted: a_y = class_weight[y]), or a sum
// over the classes, each weighed by a_c t'_c (kPerClass: cross-entropy, label smoothing on a
// class map or a dense target; kPerClassFocal: a dense target's focal loss). The per-class
// forms read t_c from a staged target (a class map's one-hot), in the region term too.
enum MulticlassElem : int { kLabel = 0, kLabelWeighted = 1, kPerClass = 2, kPerClassFocal = 3 };

constexpr bool is_per_class(MulticlassElem kind) { return kind >= kPerClass; }

inline MulticlassElem multiclass_elem(const LossParams& lp, bool dense_target, bool has_class_weight) {
  TORCH_CHECK(lp.label_smoothing == 0 || lp.focal_gamma == 0,
              "fusedloss: label_smoothing needs focal_gamma == 0 (cross-entropy), got focal_gamma=", lp.focal_gamma);
  if (dense_target) return lp.elem && lp.focal_gamma != 0 ? kPerClassFocal : kPerClass;
  if (!lp.elem) return kLabel;
  if (lp.label_smoothing != 0) return kPerClass;
  return has_class_weight ? kLabelWeighted : kLabel;
}

// Calls fn(std::integral_constant<MulticlassElem, KIND>{}) for the runtime `kind`.
template <typename Fn>
C10_ALWAYS_INLINE decltype(auto) with_multiclass_elem(MulticlassElem kind, Fn&& fn) {
  switch (kind) {
    case kLabelWeighted: return fn(std::integral_constant<MulticlassElem, kLabelWeighted>{});
    case kPerClass: return fn(std::integral_constant<MulticlassElem, kPerClass>{});
    case kPerClassFocal: return fn(std::integral_constant<MulticlassElem, kPerClassFocal>{});
    default: return fn(std::integral_constant<MulticlassElem, kLabel>{});
  }
}

// Calls fn(std::integral_constant<int, TERMS>{}) for the runtime `terms` (from
// terms_of, | kIgnored with an ignore_index; no term at all runs as region and
// modulated element terms; kMinIntersection: with_min_intersection_terms). The CPU
// calls a function template per TERMS, each its own set of target clones.
template <int INPUT_BITS, typename Fn>
C10_ALWAYS_INLINE decltype(auto) with_terms_for_input(int terms, Fn&& fn) {
  constexpr int kAll = kRegion | kElem | kModulated;
  switch (terms & kTermBits) {
    case kRegion: return fn(std::integral_constant<int, INPUT_BITS | kRegion>{});
    case kRegion | kSquared: return fn(std::integral_constant<int, INPUT_BITS | kRegion | kSquared>{});
    case kElem: return fn(std::integral_constant<int, INPUT_BITS | kElem>{});
    case kElem | kModulated: return fn(std::integral_constant<int, INPUT_BITS | kElem | kModulated>{});
    case kRegion | kElem: return fn(std::integral_constant<int, INPUT_BITS | kRegion | kElem>{});
    case kRegion | kSquared | kElem: return fn(std::integral_constant<int, INPUT_BITS | kRegion | kSquared | kElem>{});
    case kAll | kSquared: return fn(std::integral_constant<int, INPUT_BITS | kAll | kSquared>{});
    default: return fn(std::integral_constant<int, INPUT_BITS | kAll>{});
  }
}

// kMinIntersection (region on, squared_pred off: LossParams checks it): three term sets only,
// region, region and element, region and modulated element.
template <int BITS, typename Fn>
C10_ALWAYS_INLINE decltype(auto) with_min_intersection_terms(int terms, Fn&& fn) {
  switch (terms & kTermBits) {
    case kRegion | kElem: return fn(std::integral_constant<int, BITS | kRegion | kElem>{});
    case kRegion | kElem | kModulated: return fn(std::integral_constant<int, BITS | kRegion | kElem | kModulated>{});
    default: return fn(std::integral_constant<int, BITS | kRegion>{});
  }
}

template <int BITS, typename Fn>
C10_ALWAYS_INLINE decltype(auto) with_intersection_and_terms(int terms, Fn&& fn) {
  if (has(terms, kMinIntersection)) return with_min_intersection_terms<BITS | kMinIntersection>(terms, fn);
  return with_terms_for_input<BITS>(terms, fn);
}

// A focal form (logits, modulated element term: LossParams and terms_of see to it): four term
// sets only, the element term alone, with the region term, with squared_pred, with
// min_intersection.
template <int BITS, typename Fn>
C10_ALWAYS_INLINE decltype(auto) with_focal_form_term_sets(int terms, Fn&& fn) {
  constexpr int kModulatedElem = kElem | kModulated;
  if (has(terms, kMinIntersection)) {
    return fn(std::integral_constant<int, BITS | kMinIntersection | kRegion | kModulatedElem>{});
  }
  switch (terms & kTermBits) {
    case kRegion | kModulatedElem: return fn(std::integral_constant<int, BITS | kRegion | kModulatedElem>{});
    case kRegion | kSquared | kModulatedElem:
      return fn(std::integral_constant<int, BITS | kRegion | kSquared | kModulatedElem>{});
    default: return fn(std::integral_constant<int, BITS | kModulatedElem>{});
  }
}

template <int BITS, typename Fn>
C10_ALWAYS_INLINE decltype(auto) with_focal_form_terms(int terms, Fn&& fn) {
  constexpr int kInput = kLogitBce << kInputShift;
  if (form_of(terms) == kFocalSmp)
    return with_focal_form_term_sets<BITS | kInput | (kFocalSmp << kFocalFormShift)>(terms, fn);
  return with_focal_form_term_sets<BITS | kInput | (kFocalMonai << kFocalFormShift)>(terms, fn);
}

template <typename Fn>
C10_ALWAYS_INLINE decltype(auto) with_terms(int terms, Fn&& fn) {
  if (form_of(terms) != kFocalLin) {
    if (has(terms, kIgnored)) return with_focal_form_terms<kIgnored>(terms, fn);
    return with_focal_form_terms<0>(terms, fn);
  }
  return with_binary_input(input_of(terms), [&](auto input_tag) C10_ALWAYS_INLINE_ATTRIBUTE -> decltype(auto) {
    constexpr int kInput = decltype(input_tag)::value << kInputShift;
    if (has(terms, kIgnored)) return with_intersection_and_terms<kInput | kIgnored>(terms, fn);
    return with_intersection_and_terms<kInput>(terms, fn);
  });
}

}  // namespace fusedloss
