// The CPU backward's large outputs (gradients, focal maps) in memory that stays mapped. A
// tensor of 32 MiB or more is otherwise a fresh mmap on every call, and faulting it in on its
// first writes takes about as long as the pass itself (~20 ms for 64 MiB on 2 cores, against
// ~4 ms to write it); transparent huge pages cut that but stall for compaction at random
// (90 ms). So the two most recent large outputs' storages are kept, and one that nobody else
// holds any more (the caller dropped the gradient, as a training step does) is handed out
// again. At most two such buffers stay allocated; outputs are written in full by the kernels,
// as from at::empty.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/core/Storage.h>

#include <cstddef>
#include <mutex>

namespace fusedloss {

inline at::Tensor recycled_output(const at::Tensor& like, at::MemoryFormat format) {
  constexpr size_t kLarge = size_t{32} << 20;
  if (like.numel() * like.element_size() < static_cast<int64_t>(kLarge)) return at::empty_like(like, format);
  const at::Tensor shape = at::empty_like(like, like.options().device(at::kMeta), format);  // sizes and strides
  const size_t bytes = static_cast<size_t>(shape.numel()) * shape.element_size();
  static std::mutex mutex;
  static c10::Storage kept[2];  // kept[0]: the most recent
  const std::lock_guard<std::mutex> lock(mutex);
  int reuse = -1;
  for (int k = 0; k < 2; ++k) {
    if (kept[k] && kept[k].use_count() == 1 && kept[k].nbytes() == bytes) reuse = k;
  }
  at::Tensor out = at::empty({0}, like.options());
  if (reuse >= 0) {
    out.set_(kept[reuse], 0, shape.sizes(), shape.strides());
    if (reuse == 1) std::swap(kept[0], kept[1]);
  } else {
    out = at::empty_like(like, format);
    kept[1] = kept[0];
    kept[0] = out.storage();
  }
  return out;
}

}  // namespace fusedloss
