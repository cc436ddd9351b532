// The fusedloss_C op schemas (the same as the Triton ops', fusedloss/ops/schema.py;
// tests/test_cpp_extension.py checks they agree) and the Python module that
// loads them (with one function: the CUDA multiclass launch plan, for the tests). Kernels: cpu/binary_loss_cpu.cpp,
// cpu/multiclass_loss_cpu.cpp, cuda/binary_loss_cuda.cu, cuda/multiclass_loss_cuda.cu.
#include <Python.h>
#include <torch/library.h>

#include "launch_plan.h"

TORCH_LIBRARY(fusedloss_C, m) {
  m.def(
      "binary_loss(Tensor input, Tensor target, Tensor? weight, bool per_sample, bool per_channel, "
      "bool region, float tv_alpha, float tv_beta, float smooth_nr, float smooth_dr, float region_gamma, "
      "float region_weight, bool log_loss, bool squared_pred, bool min_intersection, bool elem, float focal_alpha, "
      "float focal_gamma, int focal_form, float elem_weight, bool elem_mean, float label_smoothing, bool "
      "weighted_mean, "
      "bool from_logits, bool clamped_log, int? ignore_index, str reduction, bool check_target) -> (Tensor, Tensor)");
  m.def(
      "binary_loss_backward(Tensor grad_loss, Tensor input, Tensor target, Tensor coef, bool per_sample, "
      "bool per_channel, bool region, bool squared_pred, bool min_intersection, bool elem, float focal_alpha, "
      "float focal_gamma, int focal_form, bool from_logits, bool clamped_log, int? ignore_index) -> Tensor");
  m.def(
      "binary_focal_map(Tensor input, Tensor target, float alpha, float gamma, int focal_form, bool from_logits, "
      "bool clamped_log, int? ignore_index, bool check_target) -> Tensor");
  m.def(
      "binary_focal_map_backward(Tensor grad_map, Tensor input, Tensor target, float alpha, float gamma, "
      "int focal_form, bool from_logits, bool clamped_log, int? ignore_index) -> Tensor");

  m.def(
      "multiclass_loss(Tensor input, Tensor target, Tensor? weight, Tensor? class_weight, bool per_sample, "
      "bool region, float tv_alpha, float tv_beta, float smooth_nr, float smooth_dr, float region_gamma, "
      "float region_weight, bool log_loss, bool squared_pred, bool min_intersection, bool elem, float focal_alpha, "
      "float focal_gamma, int focal_form, float elem_weight, bool elem_mean, float label_smoothing, bool "
      "weighted_mean, "
      "bool from_logits, bool clamped_log, int? ignore_index, bool include_background, bool exclude_empty, "
      "str reduction, bool check_target) -> (Tensor, Tensor)");
  m.def(
      "multiclass_loss_backward(Tensor grad_loss, Tensor input, Tensor target, Tensor coef, Tensor? class_weight, "
      "bool per_sample, bool region, bool squared_pred, bool elem, float focal_alpha, float focal_gamma, "
      "float label_smoothing, bool from_logits, bool clamped_log, int? ignore_index) -> Tensor");
  m.def(
      "multiclass_focal_map(Tensor input, Tensor target, Tensor? class_weight, float alpha, float gamma, "
      "bool from_logits, bool clamped_log, int? ignore_index, bool check_target) -> Tensor");
  m.def(
      "multiclass_focal_map_backward(Tensor grad_map, Tensor input, Tensor target, Tensor? class_weight, "
      "float alpha, float gamma, bool from_logits, bool clamped_log, int? ignore_index) -> Tensor");

  // The forward in two halves, for statistics summed across processes (fusedloss/ops/synced.py).
  m.def(
      "binary_stats(Tensor input, Tensor target, bool per_sample, bool per_channel, bool region, bool squared_pred, "
      "bool min_intersection, bool elem, float focal_alpha, float focal_gamma, int focal_form, bool from_logits, "
      "bool clamped_log, int? ignore_index, bool check_target) -> Tensor");
  m.def(
      "binary_finalize(Tensor sums, Tensor? weight, int num_channels, bool region, float tv_alpha, "
      "float tv_beta, float smooth_nr, float smooth_dr, float region_gamma, float region_weight, bool log_loss, "
      "bool elem, float elem_weight, bool elem_mean, str reduction, int[] loss_shape) -> (Tensor, Tensor)");
  m.def(
      "multiclass_stats(Tensor input, Tensor target, Tensor? class_weight, bool per_sample, bool region, "
      "bool squared_pred, bool elem, float focal_alpha, float focal_gamma, float label_smoothing, "
      "bool weighted_mean, bool from_logits, bool clamped_log, int? ignore_index, bool check_target) "
      "-> (Tensor, Tensor)");
  m.def(
      "multiclass_finalize(Tensor class_sums, Tensor elem_sums, Tensor? weight, int num_classes, bool per_sample, "
      "bool region, float tv_alpha, float tv_beta, float smooth_nr, float smooth_dr, float region_gamma, "
      "float region_weight, bool log_loss, bool elem, float elem_weight, bool elem_mean, bool include_background, "
      "bool exclude_empty, str reduction, int[] loss_shape) -> (Tensor, Tensor)");

  // The Lovász losses' primitives, assembled around torch.sort by fusedloss/ops/lovasz.py.
  m.def(
      "binary_lovasz_errors(Tensor input, Tensor target, bool per_sample, int? ignore_index, bool check_target) "
      "-> (Tensor, Tensor)");
  m.def(
      "multiclass_lovasz_errors(Tensor input, Tensor target, bool per_sample, bool from_logits, int? ignore_index, "
      "bool check_target) -> (Tensor, Tensor)");
  m.def("lovasz_rows(Tensor sorted_errors, Tensor truth, Tensor order) -> (Tensor, Tensor)");
  m.def("lovasz_rows_backward(Tensor grad_loss, Tensor truth, Tensor order) -> Tensor");
  m.def(
      "binary_lovasz_chain(Tensor grad_errors, Tensor input, Tensor target, bool per_sample, int? ignore_index) "
      "-> Tensor");
  m.def(
      "multiclass_lovasz_chain(Tensor grad_errors, Tensor input, Tensor target, bool per_sample, bool from_logits, "
      "int? ignore_index) -> Tensor");
}

namespace {

// cuda_multiclass_plan(batch, classes, spatial, input_size, acc_size, sms, stats, max_slices) -> (slices, lanes, steps,
// chunks_per_row, blocks): the CUDA multiclass kernels' launch for a GPU of `sms` SMs (launch_plan.h), for the tests,
// in every build.
PyObject* cuda_multiclass_plan(PyObject*, PyObject* args) {
  long long batch, classes, spatial, input_size, acc_size;
  int sms, stats, max_slices;
  if (!PyArg_ParseTuple(args, "LLLLLipi", &batch, &classes, &spatial, &input_size, &acc_size, &sms, &stats,
                        &max_slices)) {
    return nullptr;
  }
  if (batch < 1 || classes < 1 || spatial < 1 || input_size < 1 || acc_size < 1 || sms < 1 || max_slices < 1) {
    PyErr_SetString(PyExc_ValueError, "cuda_multiclass_plan: every size must be at least 1");
    return nullptr;
  }
  const fusedloss::multiclass_cuda::Plan plan =
      fusedloss::multiclass_cuda::plan(batch, classes, spatial, input_size, acc_size, sms, stats != 0, max_slices);
  return Py_BuildValue("(iiLLL)", plan.slices, plan.lanes, static_cast<long long>(plan.chunks.steps),
                       static_cast<long long>(plan.chunks.chunks_per_row), static_cast<long long>(plan.chunks.blocks));
}

PyMethodDef methods[] = {
    {"cuda_multiclass_plan", cuda_multiclass_plan, METH_VARARGS, "The CUDA multiclass kernels' launch plan."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

// `import fusedloss._C` loads this library, which registers the ops above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module);
}
