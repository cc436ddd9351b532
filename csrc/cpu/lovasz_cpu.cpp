// CPU kernels of the Lovász primitives (fusedloss/ops/lovasz.py assembles them
// around torch.sort; the formulas: ../lovasz_math.h):
//   binary_lovasz_errors / multiclass_lovasz_errors  the errors and truth values
//       per row (elementwise; multiclass: a softmax per pixel, in acc);
//   lovasz_rows / lovasz_rows_backward  the scan over the sorted rows, in double:
//       each row is cut into fixed chunks of kChunk sorted positions; pass 1 sums
//       each chunk's gathered truth, an exclusive prefix over a row's chunks gives
//       each chunk its carry, pass 2 scans each chunk from its carry and writes a
//       partial loss per (row, chunk), summed in order (forward), or scatters
//       grad_loss[r] * g to the original positions (backward);
//   binary_lovasz_chain / multiclass_lovasz_chain  the chain rule from the errors
//       to the input (elementwise).
// Every parallel loop runs over fixed jobs (at::parallel_for), and every sum has a
// fixed order: the results do not depend on the thread count. With check_target,
// the errors ops check the targets as the other forward ops do (target_check_cpu.h).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../dispatch.h"
#include "../lovasz_layout.h"
#include "../lovasz_math.h"
#include "../target_check.h"
#include "convert.h"
#include "target_check_cpu.h"
#include "vector_math.h"

namespace fusedloss {
namespace {

using at::Tensor;

constexpr int64_t kChunk = 4096;  // sorted positions per scan chunk; elements per binary job
constexpr int64_t kChunksPerTask = 4;
constexpr int kLanes = 8;  // independent partial sums of a chunk's loss: a fixed order that vectorises

// ---- the scan over sorted rows (lovasz_rows, lovasz_rows_backward) ----

// The rows of a (R..., L) tensor triple (lovasz_layout.h), cut into chunks of kChunk positions.
struct RowShape {
  int64_t rows, len, chunks;  // chunks per row
  explicit RowShape(const SortedRows& sorted)
      : rows(sorted.rows), len(sorted.len), chunks((sorted.len + kChunk - 1) / kChunk) {}
  int64_t jobs() const { return rows * chunks; }
  int64_t chunk_len(int64_t chunk) const { return std::min(kChunk, len - chunk * kChunk); }
};

// The chunk's sorted truth t_i = truth_row[order[i]] into t (double); false if an
// order value lies outside the row (then read as 0: it never indexes memory).
template <typename truth_t, typename order_t>
bool gather_truth(const truth_t* truth_row, const order_t* order, int64_t n, int64_t len, double* t) {
  unsigned bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = static_cast<int64_t>(order[i]);
    const bool inside = static_cast<uint64_t>(k) < static_cast<uint64_t>(len);
    bad |= inside ? 0u : 1u;
    t[i] = inside ? static_cast<double>(truth_row[k]) : 0.0;
  }
  return bad == 0;
}

// c_{i-1} for the chunk's positions, from its carry (the count before the chunk).
C10_ALWAYS_INLINE void running_counts(const double* t, int64_t n, double carry, double* before) {
  double c = carry;
  for (int64_t i = 0; i < n; ++i) {
    before[i] = c;
    c += t[i];
  }
}

// g_i of the chunk's positions (first: the row position of its first one; total: T).
C10_ALWAYS_INLINE double step_at(const double* t, const double* before, int64_t i, double first, double total) {
  const double c = before[i];
  return lovasz_step(total - c, total + (first + static_cast<double>(i)) - c, t[i]);
}

// The chunk's partial loss sum_i relu(e_i) g_i, in kLanes fixed partial sums.
FUSEDLOSS_CLONES double chunk_loss(const double* t, const double* e, double* before, int64_t n, double carry,
                                   double first, double total) {
  running_counts(t, n, carry, before);
  double lanes[kLanes] = {};
  const int64_t whole = n - n % kLanes;
  for (int64_t base = 0; base < whole; base += kLanes) {
    for (int lane = 0; lane < kLanes; ++lane) {
      const int64_t i = base + lane;
      lanes[lane] += relu_keep_nan(e[i]) * step_at(t, before, i, first, total);
    }
  }
  for (int64_t i = whole; i < n; ++i) lanes[0] += relu_keep_nan(e[i]) * step_at(t, before, i, first, total);
  double sum = 0;
  for (int lane = 0; lane < kLanes; ++lane) sum += lanes[lane];
  return sum;
}

// The chunk's grad_loss * g_i into g (before: scratch).
FUSEDLOSS_CLONES void chunk_grad(const double* t, double* before, int64_t n, double carry, double first, double total,
                                 double scale, double* g) {
  running_counts(t, n, carry, before);
  for (int64_t i = 0; i < n; ++i) g[i] = scale * step_at(t, before, i, first, total);
}

// A task's staging buffers (double), allocated once per task.
struct ScanBuffers {
  std::vector<double> t, before, values;
  ScanBuffers() : t(kChunk), before(kChunk), values(kChunk) {}
};

// Calls fn(truth_t*, order_t*) with the typed data of truth (any floating dtype) and order.
template <typename Fn>
void dispatch_truth_order(const Tensor& truth, const Tensor& order, Fn&& fn) {
  dispatch_input(truth, "lovasz_rows_cpu (truth)", [&](auto truth_tag) {
    const auto* t = truth.const_data_ptr<decltype(truth_tag)>();
    if (order.scalar_type() == at::kInt) {
      fn(t, order.const_data_ptr<int32_t>());
    } else {
      fn(t, order.const_data_ptr<int64_t>());
    }
  });
}

// Pass 1 and the prefix: per (row, chunk) the count before the chunk (carry), per row T.
struct RowCounts {
  std::vector<double> carry, total;
};

RowCounts row_counts(const RowShape& shape, const Tensor& truth, const Tensor& order) {
  std::vector<double> sums(shape.jobs());
  std::vector<char> bad(shape.jobs(), 0);
  dispatch_truth_order(truth, order, [&](const auto* truth_data, const auto* order_data) {
    at::parallel_for(0, shape.jobs(), kChunksPerTask, [&](int64_t begin, int64_t end) {
      std::vector<double> t(kChunk);
      for (int64_t job = begin; job < end; ++job) {
        const int64_t row = job / shape.chunks, chunk = job % shape.chunks, n = shape.chunk_len(chunk);
        const int64_t start = row * shape.len + chunk * kChunk;
        bad[job] = !gather_truth(truth_data + row * shape.len, order_data + start, n, shape.len, t.data());
        double sum = 0;
        for (int64_t i = 0; i < n; ++i) sum += t[i];
        sums[job] = sum;
      }
    });
  });
  TORCH_CHECK(std::none_of(bad.begin(), bad.end(), [](char b) { return b != 0; }),
              "fusedloss: order holds an index outside [0, ", shape.len, "): it must be a permutation of each row");
  RowCounts counts{std::vector<double>(shape.jobs()), std::vector<double>(shape.rows)};
  for (int64_t row = 0; row < shape.rows; ++row) {
    double c = 0;
    for (int64_t chunk = 0; chunk < shape.chunks; ++chunk) {
      counts.carry[row * shape.chunks + chunk] = c;
      c += sums[row * shape.chunks + chunk];
    }
    counts.total[row] = c;
  }
  return counts;
}

std::tuple<Tensor, Tensor> lovasz_rows_cpu(const Tensor& sorted_errors_, const Tensor& truth_, const Tensor& order_) {
  const RowShape shape(sorted_rows(sorted_errors_, truth_, order_, "sorted_errors"));
  const Tensor sorted_errors = sorted_errors_.contiguous(), truth = truth_.contiguous(), order = order_.contiguous();
  Tensor loss = at::empty(row_dims(sorted_errors), sorted_errors.options());
  Tensor positives = at::empty(row_dims(sorted_errors), sorted_errors.options());
  const RowCounts counts = row_counts(shape, truth, order);
  std::vector<double> partials(shape.jobs());
  dispatch_input(sorted_errors, "lovasz_rows_cpu", [&](auto errors_tag) {
    using errors_t = decltype(errors_tag);
    const errors_t* e = sorted_errors.const_data_ptr<errors_t>();
    dispatch_truth_order(truth, order, [&](const auto* truth_data, const auto* order_data) {
      at::parallel_for(0, shape.jobs(), kChunksPerTask, [&](int64_t begin, int64_t end) {
        ScanBuffers buffers;
        for (int64_t job = begin; job < end; ++job) {
          const int64_t row = job / shape.chunks, chunk = job % shape.chunks, n = shape.chunk_len(chunk);
          const int64_t start = row * shape.len + chunk * kChunk;
          gather_truth(truth_data + row * shape.len, order_data + start, n, shape.len, buffers.t.data());
          convert(e + start, buffers.values.data(), n);
          partials[job] = chunk_loss(buffers.t.data(), buffers.values.data(), buffers.before.data(), n,
                                     counts.carry[job], static_cast<double>(chunk * kChunk), counts.total[row]);
        }
      });
    });
    errors_t* loss_out = loss.mutable_data_ptr<errors_t>();
    errors_t* positives_out = positives.mutable_data_ptr<errors_t>();
    for (int64_t row = 0; row < shape.rows; ++row) {
      double sum = 0;
      for (int64_t chunk = 0; chunk < shape.chunks; ++chunk) sum += partials[row * shape.chunks + chunk];
      loss_out[row] = static_cast<errors_t>(sum);
      positives_out[row] = static_cast<errors_t>(counts.total[row]);
    }
    if (shape.rows == 0) {  // rows of length 0: no positions, loss and positives 0
      for (int64_t r = 0; r < loss.numel(); ++r) loss_out[r] = positives_out[r] = errors_t(0);
    }
  });
  return {loss, positives};
}

Tensor lovasz_rows_backward_cpu(const Tensor& grad_loss_, const Tensor& truth_, const Tensor& order_) {
  const RowShape shape(sorted_rows(truth_, truth_, order_, "truth"));
  check_grad_loss(grad_loss_, truth_);
  const Tensor truth = truth_.contiguous(), order = order_.contiguous();
  const Tensor grad_loss = grad_loss_.to(at::kDouble).contiguous();
  const double* upstream = grad_loss.const_data_ptr<double>();
  Tensor grad = at::empty(truth.sizes(), truth.options());
  const RowCounts counts = row_counts(shape, truth, order);
  dispatch_truth_order(truth, order, [&](const auto* truth_data, const auto* order_data) {
    using truth_t = pointee_t<decltype(truth_data)>;
    truth_t* out = grad.mutable_data_ptr<truth_t>();
    at::parallel_for(0, shape.jobs(), kChunksPerTask, [&](int64_t begin, int64_t end) {
      ScanBuffers buffers;
      for (int64_t job = begin; job < end; ++job) {
        const int64_t row = job / shape.chunks, chunk = job % shape.chunks, n = shape.chunk_len(chunk);
        const int64_t start = row * shape.len + chunk * kChunk;
        const auto* o = order_data + start;
        gather_truth(truth_data + row * shape.len, o, n, shape.len, buffers.t.data());
        chunk_grad(buffers.t.data(), buffers.before.data(), n, counts.carry[job], static_cast<double>(chunk * kChunk),
                   counts.total[row], upstream[row], buffers.values.data());
        truth_t* out_row = out + row * shape.len;  // each position written once: order is a permutation
        for (int64_t i = 0; i < n; ++i) out_row[o[i]] = static_cast<truth_t>(buffers.values[i]);
      }
    });
  });
  return grad;
}

// ---- binary errors and chain (elementwise) ----

// A binary element counts unless ignore_index is given and its target equals it (compared in acc_t).
template <typename acc_t>
C10_ALWAYS_INLINE bool kept(acc_t t, bool has_ignore, acc_t ignore) {
  return !(has_ignore && ignored_probability(t, ignore));
}

template <typename acc_t>
C10_ALWAYS_INLINE void binary_errors_loop(const acc_t* x, const acc_t* t, int64_t n, bool has_ignore, acc_t ignore,
                                          acc_t* e, acc_t* truth) {
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = kept(t[i], has_ignore, ignore);
    e[i] = keep ? binary_lovasz_error(x[i], t[i]) : -std::numeric_limits<acc_t>::infinity();
    truth[i] = keep ? t[i] : acc_t(0);
  }
}

template <typename acc_t>
C10_ALWAYS_INLINE void binary_chain_loop(const acc_t* grad_e, const acc_t* x, const acc_t* t, int64_t n,
                                         bool has_ignore, acc_t ignore, acc_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = kept(t[i], has_ignore, ignore);
    const acc_t g = binary_lovasz_grad(grad_e[i], binary_lovasz_error(x[i], t[i]), t[i]);
    out[i] = keep ? g : acc_t(0);
  }
}

FUSEDLOSS_CLONES void binary_errors_chunk(const float* x, const float* t, int64_t n, bool has_ignore, float ignore,
                                          float* e, float* truth) {
  binary_errors_loop(x, t, n, has_ignore, ignore, e, truth);
}
void binary_errors_chunk(const double* x, const double* t, int64_t n, bool has_ignore, double ignore, double* e,
                         double* truth) {
  binary_errors_loop(x, t, n, has_ignore, ignore, e, truth);
}
FUSEDLOSS_CLONES void binary_chain_chunk(const float* grad_e, const float* x, const float* t, int64_t n,
                                         bool has_ignore, float ignore, float* out) {
  binary_chain_loop(grad_e, x, t, n, has_ignore, ignore, out);
}
void binary_chain_chunk(const double* grad_e, const double* x, const double* t, int64_t n, bool has_ignore,
                        double ignore, double* out) {
  binary_chain_loop(grad_e, x, t, n, has_ignore, ignore, out);
}

// A chunk's values as acc_t: the source itself when it already is, else a converted copy.
template <typename acc_t, typename T>
const acc_t* staged(const T* source, int64_t n, acc_t* buffer) {
  if constexpr (std::is_same_v<T, acc_t>) {
    return source;
  } else {
    convert(source, buffer, n);
    return buffer;
  }
}

template <typename acc_t>
acc_t ignore_value(const std::optional<int64_t>& ignore_index) {
  return ignore_index.has_value() ? static_cast<acc_t>(*ignore_index) : acc_t(0);
}

std::tuple<Tensor, Tensor> binary_lovasz_errors_cpu(const Tensor& input_, const Tensor& target_, bool per_sample,
                                                    std::optional<int64_t> ignore_index, bool check_target) {
  const BinaryRows shape = binary_rows(input_, target_, per_sample);
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  Tensor errors = at::empty({shape.groups, shape.len}, accumulation_options(input));
  Tensor truth = at::empty({shape.groups, shape.len}, accumulation_options(input));
  const int64_t numel = input.numel(), chunks = (numel + kChunk - 1) / kChunk;
  dispatch_binary_data(input, target, "binary_lovasz_errors_cpu", [&](const auto* x, const auto* t) {
    using input_t = pointee_t<decltype(x)>;
    using target_t = pointee_t<decltype(t)>;
    using acc_t = at::opmath_type<input_t>;
    const acc_t ignore = ignore_value<acc_t>(ignore_index);
    acc_t* e = errors.mutable_data_ptr<acc_t>();
    acc_t* truth_out = truth.mutable_data_ptr<acc_t>();
    FirstBadTargets<acc_t> bad(check_target && !std::is_same_v<target_t, bool>, chunks);  // bool: always valid
    at::parallel_for(0, chunks, kChunksPerTask, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> xs(kChunk), ts(kChunk);
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t start = chunk * kChunk, n = std::min(kChunk, numel - start);
        const acc_t* tv = staged(t + start, n, ts.data());
        binary_errors_chunk(staged(x + start, n, xs.data()), tv, n, ignore_index.has_value(), ignore, e + start,
                            truth_out + start);
        if (bad.checking()) bad.record(chunk, tv, first_bad_target(tv, n, ignore_index));
      }
    });
    check_probabilities(bad);
  });
  return {errors, truth};
}

Tensor binary_lovasz_chain_cpu(const Tensor& grad_errors_, const Tensor& input_, const Tensor& target_, bool per_sample,
                               std::optional<int64_t> ignore_index) {
  const BinaryRows shape = binary_rows(input_, target_, per_sample);
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  const Tensor grad_errors = grad_errors_of(grad_errors_, {shape.groups, shape.len}, input);
  Tensor grad = at::empty(input.sizes(), input.options());
  const int64_t numel = input.numel(), chunks = (numel + kChunk - 1) / kChunk;
  dispatch_binary_data(input, target, "binary_lovasz_chain_cpu", [&](const auto* x, const auto* t) {
    using input_t = pointee_t<decltype(x)>;
    using acc_t = at::opmath_type<input_t>;
    const acc_t ignore = ignore_value<acc_t>(ignore_index);
    const acc_t* ge = grad_errors.const_data_ptr<acc_t>();
    input_t* out = grad.mutable_data_ptr<input_t>();
    at::parallel_for(0, chunks, kChunksPerTask, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> xs(kChunk), ts(kChunk), gs(kChunk);
      for (int64_t chunk = begin; chunk < end; ++chunk) {
        const int64_t start = chunk * kChunk, n = std::min(kChunk, numel - start);
        acc_t* results = std::is_same_v<input_t, acc_t> ? reinterpret_cast<acc_t*>(out + start) : gs.data();
        binary_chain_chunk(ge + start, staged(x + start, n, xs.data()), staged(t + start, n, ts.data()), n,
                           ignore_index.has_value(), ignore, results);
        if constexpr (!std::is_same_v<input_t, acc_t>) convert(gs.data(), out + start, n);
      }
    });
  });
  return grad;
}

// ---- multiclass errors and chain (per pixel, over the classes) ----

// Pixels per chunk: fewer with many classes (a chunk is staged as C x pixels); the shape's alone.
int64_t chunk_pixels(int64_t classes) { return std::max<int64_t>(16, std::min<int64_t>(512, 16384 / classes)); }

// One chunk's working set: [C][pixels] blocks of logits (then probabilities), dense targets
// and results, and per pixel its label (dense targets: 0) and whether it counts (not ignore_index;
// an unchecked label outside [0, C) counts, with t_c = 0 for every class, as the spec's (label == c)).
template <typename acc_t>
struct PixelChunk {
  std::vector<acc_t> x, t, out;
  std::vector<acc_t> top, total;
  std::vector<int64_t> label;
  std::vector<uint8_t> counted;
  int64_t classes, stride, n = 0;  // stride: pixels per class row

  explicit PixelChunk(const MulticlassRows& shape)
      : x(shape.classes * chunk_pixels(shape.classes)),
        t(shape.dense ? shape.classes * chunk_pixels(shape.classes) : 0),
        out(shape.classes * chunk_pixels(shape.classes)),
        top(chunk_pixels(shape.classes)),
        total(chunk_pixels(shape.classes)),
        label(chunk_pixels(shape.classes)),
        counted(chunk_pixels(shape.classes)),
        classes(shape.classes),
        stride(chunk_pixels(shape.classes)) {}

  // Sample `sample`'s pixels [first, first + n).
  template <typename input_t, typename target_t, bool DENSE>
  void stage(const input_t* input, const target_t* target, const MulticlassRows& shape, int64_t sample, int64_t first,
             int64_t n_, const std::optional<int64_t>& ignore_index) {
    n = n_;
    const int64_t base = sample * shape.classes * shape.spatial + first;
    for (int64_t c = 0; c < classes; ++c) convert(input + base + c * shape.spatial, x.data() + c * stride, n);
    if constexpr (DENSE) {
      for (int64_t c = 0; c < classes; ++c) convert(target + base + c * shape.spatial, t.data() + c * stride, n);
      std::fill(label.begin(), label.begin() + n, int64_t(0));
      std::fill(counted.begin(), counted.begin() + n, uint8_t(1));
    } else {
      const target_t* labels = target + sample * shape.spatial + first;
      const bool has_ignore = ignore_index.has_value();
      const int64_t ignore = ignore_index.value_or(0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t y = static_cast<int64_t>(labels[i]);
        label[i] = y;
        counted[i] = has_ignore && y == ignore ? 0 : 1;
      }
    }
  }

  acc_t target_of(int64_t c, int64_t i) const {
    if (!t.empty()) return t[c * stride + i];
    return label[i] == c ? acc_t(1) : acc_t(0);
  }
};

// x := p in place: the softmax over the classes in acc_t (the max subtracted), or p = x.
template <typename Math, typename acc_t>
C10_ALWAYS_INLINE void softmax_loop(acc_t* __restrict__ x, acc_t* __restrict__ top, acc_t* __restrict__ total,
                                    int64_t classes, int64_t stride, int64_t n) {
  for (int64_t i = 0; i < n; ++i) top[i] = -std::numeric_limits<acc_t>::infinity();
  for (int64_t c = 0; c < classes; ++c) {
    const acc_t* row = x + c * stride;
    for (int64_t i = 0; i < n; ++i) top[i] = row[i] > top[i] ? row[i] : top[i];  // NaN: in the exp below
  }
  for (int64_t i = 0; i < n; ++i) total[i] = 0;
  for (int64_t c = 0; c < classes; ++c) {
    acc_t* row = x + c * stride;
    for (int64_t i = 0; i < n; ++i) {
      row[i] = Math::exp(row[i] - top[i]);
      total[i] += row[i];
    }
  }
  for (int64_t i = 0; i < n; ++i) total[i] = acc_t(1) / total[i];
  for (int64_t c = 0; c < classes; ++c) {
    acc_t* row = x + c * stride;
    for (int64_t i = 0; i < n; ++i) row[i] *= total[i];
  }
}

FUSEDLOSS_CLONES void softmax_block(float* x, float* top, float* total, int64_t classes, int64_t stride, int64_t n) {
  softmax_loop<VectorMath>(x, top, total, classes, stride, n);
}
void softmax_block(double* x, double* top, double* total, int64_t classes, int64_t stride, int64_t n) {
  softmax_loop<StdMath>(x, top, total, classes, stride, n);
}

template <typename acc_t>
void probabilities(PixelChunk<acc_t>& chunk, bool from_logits) {
  if (from_logits) {
    softmax_block(chunk.x.data(), chunk.top.data(), chunk.total.data(), chunk.classes, chunk.stride, chunk.n);
  }
}

// Calls fn(x, y, dense_tag) with the input's and the target's typed data (a class map or a dense target).
template <typename Fn>
void dispatch_multiclass_operands(const Tensor& input, const Tensor& target, bool dense, const char* name, Fn&& fn) {
  if (dense) {
    dispatch_binary_data(input, target, name, [&](const auto* x, const auto* y) { fn(x, y, std::true_type{}); });
  } else {
    dispatch_multiclass_data(input, target, name, [&](const auto* x, const auto* y) { fn(x, y, std::false_type{}); });
  }
}

// Runs fn(chunk buffers, sample, job, first pixel, pixels) for every chunk of pixels, in parallel.
template <typename acc_t, typename Fn>
void for_each_pixel_chunk(const MulticlassRows& shape, Fn&& fn) {
  const int64_t pixels = chunk_pixels(shape.classes), per_sample = (shape.spatial + pixels - 1) / pixels;
  at::parallel_for(0, shape.batch * per_sample, kChunksPerTask, [&](int64_t begin, int64_t end) {
    PixelChunk<acc_t> chunk(shape);
    for (int64_t job = begin; job < end; ++job) {
      const int64_t sample = job / per_sample, first = (job % per_sample) * pixels;
      fn(chunk, sample, job, first, std::min(pixels, shape.spatial - first));
    }
  });
}

std::tuple<Tensor, Tensor> multiclass_lovasz_errors_cpu(const Tensor& input_, const Tensor& target_, bool per_sample,
                                                        bool from_logits, std::optional<int64_t> ignore_index,
                                                        bool check_target) {
  const MulticlassRows shape = multiclass_rows(input_, target_, per_sample);
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  Tensor errors = at::empty({shape.groups, shape.classes, shape.len}, accumulation_options(input));
  Tensor truth = at::empty({shape.groups, shape.classes, shape.len}, accumulation_options(input));
  const int64_t pixels = chunk_pixels(shape.classes);
  const int64_t jobs = shape.batch * ((shape.spatial + pixels - 1) / pixels);
  const int64_t C = shape.classes;
  dispatch_multiclass_operands(
      input, target, shape.dense, "multiclass_lovasz_errors_cpu", [&](const auto* x, const auto* y, auto dense_tag) {
        using input_t = pointee_t<decltype(x)>;
        using target_t = pointee_t<decltype(y)>;
        using acc_t = at::opmath_type<input_t>;
        constexpr bool kDense = decltype(dense_tag)::value;
        acc_t* e_out = errors.mutable_data_ptr<acc_t>();
        acc_t* t_out = truth.mutable_data_ptr<acc_t>();
        // Jobs in the memory order of the class map; a dense target's values by chunk, then class.
        FirstBadTargets<int64_t> bad_classes(check_target && !kDense, jobs);
        FirstBadTargets<acc_t> bad_values(check_target && kDense && !std::is_same_v<target_t, bool>, jobs);
        for_each_pixel_chunk<acc_t>(
            shape, [&](PixelChunk<acc_t>& chunk, int64_t sample, int64_t job, int64_t first, int64_t n) {
              chunk.template stage<input_t, target_t, kDense>(x, y, shape, sample, first, n, ignore_index);
              probabilities(chunk, from_logits);
              for (int64_t c = 0; c < C; ++c) {
                const acc_t* p = chunk.x.data() + c * chunk.stride;
                const int64_t offset = shape.row_offset(sample, c) + first;
                acc_t* e = e_out + offset;
                acc_t* t = t_out + offset;
                for (int64_t i = 0; i < n; ++i) {
                  const bool keep = chunk.counted[i] != 0;
                  const acc_t tc = chunk.target_of(c, i);
                  e[i] = keep ? multiclass_lovasz_error(p[i], tc) : -std::numeric_limits<acc_t>::infinity();
                  t[i] = keep ? tc : acc_t(0);
                }
              }
              if constexpr (kDense) {
                if (bad_values.checking()) scan_dense(bad_values, job, chunk.t.data(), C, chunk.stride, n);
              } else {
                if (bad_classes.checking())
                  scan_classes(bad_classes, job, y + sample * shape.spatial + first, n, C, ignore_index);
              }
            });
        check_classes(bad_classes, C, ignore_index);
        check_probabilities(bad_values);
      });
  return {errors, truth};
}

Tensor multiclass_lovasz_chain_cpu(const Tensor& grad_errors_, const Tensor& input_, const Tensor& target_,
                                   bool per_sample, bool from_logits, std::optional<int64_t> ignore_index) {
  const MulticlassRows shape = multiclass_rows(input_, target_, per_sample);
  const Tensor input = input_.contiguous(), target = target_.contiguous();
  const Tensor grad_errors = grad_errors_of(grad_errors_, {shape.groups, shape.classes, shape.len}, input);
  Tensor grad = at::empty(input.sizes(), input.options());
  const int64_t C = shape.classes;
  dispatch_multiclass_operands(
      input, target, shape.dense, "multiclass_lovasz_chain_cpu", [&](const auto* x, const auto* y, auto dense_tag) {
        using input_t = pointee_t<decltype(x)>;
        using target_t = pointee_t<decltype(y)>;
        using acc_t = at::opmath_type<input_t>;
        constexpr bool kDense = decltype(dense_tag)::value;
        const acc_t* ge = grad_errors.const_data_ptr<acc_t>();
        input_t* out = grad.mutable_data_ptr<input_t>();
        for_each_pixel_chunk<acc_t>(
            shape, [&](PixelChunk<acc_t>& chunk, int64_t sample, int64_t, int64_t first, int64_t n) {
              chunk.template stage<input_t, target_t, kDense>(x, y, shape, sample, first, n, ignore_index);
              probabilities(chunk, from_logits);
              // dp_c into out; with logits, sum_k p_k dp_k into total.
              acc_t* dot = chunk.total.data();
              for (int64_t i = 0; i < n; ++i) dot[i] = 0;
              for (int64_t c = 0; c < C; ++c) {
                const acc_t* p = chunk.x.data() + c * chunk.stride;
                const acc_t* g = ge + shape.row_offset(sample, c) + first;
                acc_t* dp = chunk.out.data() + c * chunk.stride;
                for (int64_t i = 0; i < n; ++i) {
                  dp[i] = multiclass_lovasz_dp(g[i], p[i], chunk.target_of(c, i));
                  dot[i] += p[i] * dp[i];
                }
              }
              const int64_t base = sample * C * shape.spatial + first;
              for (int64_t c = 0; c < C; ++c) {
                const acc_t* p = chunk.x.data() + c * chunk.stride;
                acc_t* dp = chunk.out.data() + c * chunk.stride;
                for (int64_t i = 0; i < n; ++i) {
                  const acc_t gx = from_logits ? p[i] * (dp[i] - dot[i]) : dp[i];
                  dp[i] = chunk.counted[i] != 0 ? gx : acc_t(0);
                }
                convert(dp, out + base + c * shape.spatial, n);
              }
            });
      });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(fusedloss_C, CPU, m) {
  m.impl("binary_lovasz_errors", &binary_lovasz_errors_cpu);
  m.impl("multiclass_lovasz_errors", &multiclass_lovasz_errors_cpu);
  m.impl("lovasz_rows", &lovasz_rows_cpu);
  m.impl("lovasz_rows_backward", &lovasz_rows_backward_cpu);
  m.impl("binary_lovasz_chain", &binary_lovasz_chain_cpu);
  m.impl("multiclass_lovasz_chain", &multiclass_lovasz_chain_cpu);
}

}  // namespace fusedloss
