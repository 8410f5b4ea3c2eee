#include "sparse_conv1x1_node.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "clicktrain/sparse_conv1x1.h"
#include "memory_budget.h"
#include "node_checks.h"
#include "sparse_conv1x1_operator.h"
#include "sparse_conv1x1_options.h"
#include "sparse_conv1x1_weights.h"

using clicktrain::AffordableThreads;
using clicktrain::BudgetedThreads;
using clicktrain::BudgetShare;
using clicktrain::CheckConstant;
using clicktrain::ElementCount;
using clicktrain::ReportNodeError;
using clicktrain::ResizeOutput;
using clicktrain::TensorAt;

namespace {

// Operator inputs, see the format in include/clicktrain/sparse_conv1x1.h.
enum InputIndex {
  kInput = 0,
  kNonzeroMask = 1,
  kValues = 2,
  kBias = 3,
  kNumInputs = 4,
};

constexpr const char* kKernelName = "ClickTrainSparseConv1x1Kernel";
constexpr size_t kErrorSize = 512;

struct SparseConv1x1Node {
  std::vector<int> inputs;
  std::vector<int> outputs;
  clicktrain_spconv1x1_options options{};
  std::string error;  // set when the node cannot run; reported by Prepare
  bool weights_ready = false;
  clicktrain_spconv1x1_weight_storage weights{};
  bool operator_ready = false;
  clicktrain_spconv1x1_operator conv{};
  TfLiteDelegate* delegate = nullptr;
  int node_index = -1;
  BudgetShare weights_budget;
  // The operator's memory: program and per-thread tiles, or dense weights.
  BudgetShare scratch_budget;

  ~SparseConv1x1Node() {
    clicktrain_spconv1x1_operator_release(&conv);
    clicktrain_free_spconv1x1_weights(&weights);
  }
};

TfLiteStatus BuildWeights(TfLiteContext* context, SparseConv1x1Node* op) {
  size_t mask_shape[2] = {0, 0}, values_shape[1] = {0}, bias_shape[1] = {0};
  const TfLiteTensor* mask = TensorAt(context, op->inputs[kNonzeroMask]);
  const TfLiteTensor* values = TensorAt(context, op->inputs[kValues]);
  if (CheckConstant(context, kKernelName, mask, "nonzero_mask", kTfLiteUInt8,
                    kTfLiteNoType, 2, mask_shape) != kTfLiteOk ||
      CheckConstant(context, kKernelName, values, "values", kTfLiteFloat32,
                    kTfLiteNoType, 1, values_shape) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* bias = nullptr;
  if (op->inputs[kBias] != CLICKTRAIN_TFLITE_OPTIONAL_TENSOR) {
    bias = TensorAt(context, op->inputs[kBias]);
    if (CheckConstant(context, kKernelName, bias, "bias", kTfLiteFloat32,
                      kTfLiteNoType, 1, bias_shape) != kTfLiteOk) {
      return kTfLiteError;
    }
  }
  clicktrain_spconv1x1_tensors tensors{};
  tensors.nonzero_mask = mask->data;
  tensors.mask_rows = mask_shape[0];
  tensors.mask_columns = mask_shape[1];
  tensors.values = values->data;
  tensors.values_count = values_shape[0];
  tensors.bias = bias == nullptr ? nullptr : bias->data;
  tensors.bias_count = bias_shape[0];
  // Reserved at Init from the same shapes; Resize keeps the share exact.
  const size_t weight_bytes = clicktrain_spconv1x1_weights_bytes(
      values_shape[0], static_cast<size_t>(op->options.output_channels));
  if (!op->weights_budget.Resize(weight_bytes)) {
    return op->weights_budget.ReportRefusal(context, kKernelName,
                                            op->node_index, "its weights",
                                            weight_bytes);
  }
  char error[kErrorSize];
  if (clicktrain_build_spconv1x1_weights(
          &tensors, static_cast<size_t>(op->options.input_channels),
          static_cast<size_t>(op->options.output_channels), &op->weights,
          error, sizeof(error)) != 0) {
    return ReportNodeError(context, kKernelName,
                           "invalid sparse weights: %s", error);
  }
  op->weights_ready = true;
  return kTfLiteOk;
}

void* Init(TfLiteContext* context, const char* buffer, size_t) {
  auto* op = new (std::nothrow) SparseConv1x1Node();
  if (op == nullptr) return nullptr;
  const auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
  if (params == nullptr || params->nodes_to_replace == nullptr ||
      params->nodes_to_replace->size != 1) {
    op->error = "expected exactly one node per delegate kernel";
    return op;
  }
  op->node_index = params->nodes_to_replace->data[0];
  op->weights_budget.Attach(ClickTrainDelegateBudget(params->delegate));
  op->scratch_budget.Attach(ClickTrainDelegateBudget(params->delegate));
  TfLiteNode* node = nullptr;
  TfLiteRegistration* registration = nullptr;
  if (context->GetNodeAndRegistration(context,
                                      params->nodes_to_replace->data[0], &node,
                                      &registration) != kTfLiteOk ||
      node == nullptr || registration == nullptr ||
      !ClickTrainIsSparseConv1x1(registration->custom_name)) {
    op->error = "delegated node is not a ClickTrain sparse 1x1 conv";
    return op;
  }
  if (node->inputs != nullptr && node->inputs->size >= 0) {
    op->inputs.assign(node->inputs->data,
                      node->inputs->data + node->inputs->size);
  }
  if (node->outputs != nullptr && node->outputs->size >= 0) {
    op->outputs.assign(node->outputs->data,
                       node->outputs->data + node->outputs->size);
  }
  char error[kErrorSize];
  const size_t options_size =
      node->custom_initial_data_size < 0
          ? 0
          : static_cast<size_t>(node->custom_initial_data_size);
  if (clicktrain_parse_spconv1x1_options(node->custom_initial_data,
                                         options_size, &op->options, error,
                                         sizeof(error)) != 0) {
    op->error = error;
    return op;
  }
  if (op->inputs.size() == kNumInputs) {
    const size_t values = ElementCount(TensorAt(context, op->inputs[kValues]));
    const size_t weight_bytes =
        values == SIZE_MAX
            ? SIZE_MAX
            : clicktrain_spconv1x1_weights_bytes(
                  values, static_cast<size_t>(op->options.output_channels));
    if (!op->weights_budget.Reserve(weight_bytes)) {
      op->error = op->weights_budget.RefusalMessage(op->node_index,
                                                    "its weights", weight_bytes);
      return op;
    }
  }
  op->delegate = params->delegate;
  return op;
}

void Free(TfLiteContext*, void* buffer) {
  delete static_cast<SparseConv1x1Node*>(buffer);
}

// Bytes the operator set up in `conv` holds, in one block: program, filter
// starts and one scratch slot per thread, or the few-pixel mode's dense
// weights (the same for any number of threads).
size_t OperatorBytes(const clicktrain_spconv1x1_operator& conv) {
  return conv.memory_bytes;
}

// Sets up the operator within the memory budget: in the few-pixel mode when
// the layer has few pixels and its dense weights fit what is left, else for
// as many of the interpreter's threads as its program and one scratch slot
// per thread fit; refuses the node when not even one thread fits.
TfLiteStatus SetUpOperator(TfLiteContext* context, SparseConv1x1Node* op,
                           const clicktrain_spconv1x1_geometry& geometry) {
  clicktrain_spconv1x1_operator_release(&op->conv);
  op->scratch_budget.ReturnAll();
  op->operator_ready = false;
  const clicktrain_spconv1x1_ukernels* ukernels =
      clicktrain_select_spconv1x1_ukernels();
  int threads = context->recommended_num_threads;
  if (threads > CLICKTRAIN_SPCONV1X1_MAX_THREADS) {
    threads = CLICKTRAIN_SPCONV1X1_MAX_THREADS;
  }
  if (threads < 1) threads = 1;
  const int wanted = threads;
  // Checked before setup, so dense weights that cannot fit are never
  // allocated; the SpMM below may still fit, its weights being compact.
  const size_t dense_bytes =
      clicktrain_spconv1x1_few_pixel_bytes(&geometry, ukernels->few_pixels);
  if (dense_bytes != 0 && dense_bytes <= op->scratch_budget.available()) {
    if (clicktrain_spconv1x1_operator_setup(
            &op->conv, &geometry, &op->weights.weights, ukernels, threads,
            ukernels->few_pixels) != 0) {
      return ReportNodeError(context, kKernelName,
                             "cannot prepare the layer: out of memory");
    }
    if (op->scratch_budget.Reserve(OperatorBytes(op->conv))) {
      op->operator_ready = true;
      return kTfLiteOk;
    }
    // Another node took the budget meanwhile: try the SpMM.
    clicktrain_spconv1x1_operator_release(&op->conv);
  }
  // A slot holds at least a pixel tile of every input channel: checked
  // before setup, so slots that cannot fit are never allocated.
  const size_t smallest_slot = static_cast<size_t>(geometry.input_channels) *
                               ukernels->pixel_tile * sizeof(float);
  threads = AffordableThreads(op->scratch_budget.available(), smallest_slot,
                              smallest_slot, threads);
  size_t bytes = smallest_slot;
  for (int attempt = 0; threads >= 1 && attempt < 2; ++attempt) {
    if (clicktrain_spconv1x1_operator_setup(&op->conv, &geometry,
                                            &op->weights.weights, ukernels,
                                            threads, 0) != 0) {
      return ReportNodeError(context, kKernelName,
                             "cannot prepare the layer: out of memory, or a "
                             "layer too large for 32-bit offsets");
    }
    bytes = OperatorBytes(op->conv);
    if (op->scratch_budget.Reserve(bytes)) {
      // dense_bytes != 0: the few-pixel mode was wanted but did not fit.
      if (threads < wanted || dense_bytes != 0) {
        ClickTrainDelegateCountFallback(op->delegate);
      }
      op->operator_ready = true;
      return kTfLiteOk;
    }
    // Set up again for the threads that fit with the program's real size.
    const size_t slot_bytes = op->conv.slot_floats * sizeof(float);
    const size_t program_bytes =
        bytes - slot_bytes * static_cast<size_t>(op->conv.max_threads);
    clicktrain_spconv1x1_operator_release(&op->conv);
    threads = AffordableThreads(op->scratch_budget.available(),
                                program_bytes + slot_bytes, slot_bytes,
                                threads - 1);
  }
  return op->scratch_budget.ReportRefusal(context, kKernelName, op->node_index,
                                          "its scratch on one thread", bytes);
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  auto* op = static_cast<SparseConv1x1Node*>(node->user_data);
  if (op == nullptr) {
    return ReportNodeError(context, kKernelName,
                           "kernel was not initialised");
  }
  if (!op->error.empty()) {
    return ReportNodeError(context, kKernelName,
                           "%s", op->error.c_str());
  }
  if (op->inputs.size() != kNumInputs || op->outputs.size() != 1) {
    return ReportNodeError(
        context, kKernelName,
        "op must have %d inputs and 1 output. Received: %zu and %zu",
        kNumInputs, op->inputs.size(), op->outputs.size());
  }
  if (!op->weights_ready && BuildWeights(context, op) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* input = TensorAt(context, op->inputs[kInput]);
  TfLiteTensor* output = TensorAt(context, op->outputs[0]);
  if (input == nullptr || output == nullptr) {
    return ReportNodeError(context, kKernelName,
                           "input or output tensor index out of range");
  }
  if (input->type != kTfLiteFloat32 || output->type != kTfLiteFloat32) {
    return ReportNodeError(context, kKernelName,
                           "input and output must be float32");
  }
  if (input->dims == nullptr || input->dims->size != 4) {
    return ReportNodeError(context, kKernelName, "input must be 4-D NHWC");
  }
  const int* in = input->dims->data;
  if (in[3] != op->options.input_channels) {
    return ReportNodeError(
        context, kKernelName,
        "input has %d channels but the layer was exported for %d",
        in[3], op->options.input_channels);
  }
  clicktrain_spconv1x1_geometry geometry;
  char error[kErrorSize];
  if (clicktrain_spconv1x1_compute_geometry(
          in[0], in[1], in[2], in[3], op->options.output_channels,
          op->options.stride_h, op->options.stride_w, op->options.output_min,
          op->options.output_max, &geometry, error, sizeof(error)) != 0) {
    return ReportNodeError(context, kKernelName, "%s", error);
  }
  if (SetUpOperator(context, op, geometry) != kTfLiteOk) return kTfLiteError;
  const int shape[4] = {geometry.batch, geometry.output_height,
                        geometry.output_width, geometry.output_channels};
  return ResizeOutput(context, kKernelName, output, shape);
}

TfLiteStatus Invoke(TfLiteContext* context, TfLiteNode* node) {
  auto* op = static_cast<SparseConv1x1Node*>(node->user_data);
  if (op == nullptr || !op->weights_ready || !op->operator_ready) {
    return ReportNodeError(context, kKernelName, "op was not prepared");
  }
  const TfLiteTensor* input = TensorAt(context, op->inputs[kInput]);
  TfLiteTensor* output = TensorAt(context, op->outputs[0]);
  const clicktrain_spconv1x1_geometry& g = op->conv.geometry;
  const size_t input_bytes = sizeof(float) * g.batch * g.input_height *
                             g.input_width * g.input_channels;
  const size_t output_bytes = sizeof(float) * op->conv.pixels *
                              static_cast<size_t>(g.output_channels);
  if (input == nullptr || output == nullptr || input->bytes != input_bytes ||
      output->bytes != output_bytes ||
      (input_bytes != 0 && input->data == nullptr) ||
      (output_bytes != 0 && output->data == nullptr)) {
    return ReportNodeError(context, kKernelName,
                           "tensors changed size since Prepare");
  }
  clicktrain_spconv1x1_operator_run(
      &op->conv, static_cast<const float*>(input->data),
      static_cast<float*>(output->data),
      ClickTrainDelegateThreadPool(
          op->delegate, BudgetedThreads(context, op->conv.max_threads)));
  return kTfLiteOk;
}

}  // namespace

bool ClickTrainIsSparseConv1x1(const char* custom_name) {
  return custom_name != nullptr &&
         std::strcmp(custom_name, CLICKTRAIN_SPARSE_CONV1X1_OP_NAME) == 0;
}

TfLiteRegistration ClickTrainSparseConv1x1Registration() {
  TfLiteRegistration registration{};
  registration.init = Init;
  registration.free = Free;
  registration.prepare = Prepare;
  registration.invoke = Invoke;
  registration.custom_name = kKernelName;
  registration.version = 1;
  return registration;
}
