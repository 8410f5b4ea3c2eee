#include "pattern_conv_s8_node.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "clicktrain/pattern_conv_s8.h"
#include "memory_budget.h"
#include "node_checks.h"
#include "op_options.h"
#include "pattern_conv_s8_operator.h"
#include "sparse_conv1x1_node.h"  // ClickTrainDelegateThreadPool

using clicktrain::AffordableThreads;
using clicktrain::BudgetedThreads;
using clicktrain::BuildS8Layer;
using clicktrain::BudgetShare;
using clicktrain::CheckConstant;
using clicktrain::CompactInputs;
using clicktrain::CompactInputsOf;
using clicktrain::CompactWeightBytes;
using clicktrain::ElementCount;
using clicktrain::ReadCompactStructure;
using clicktrain::ReportNodeError;
using clicktrain::ResizeOutput;
using clicktrain::S8LayerBytes;
using clicktrain::S8NodeLayerBytes;
using clicktrain::TensorAt;
using clicktrain::TypeSize;

namespace {

constexpr const char* kKernelName = "ClickTrainPatternConv2DInt8Kernel";
constexpr size_t kErrorSize = 512;
constexpr int kMaxThreads = 64;

struct PatternConvS8Node {
  std::vector<int> inputs;
  std::vector<int> outputs;
  clicktrain_op_options options{};
  // Positions of the compact tensors, from options.format_version.
  CompactInputs layout{};
  std::string error;  // set when the node cannot run; reported by Prepare
  bool layer_ready = false;
  clicktrain_s8_layer layer{};
  bool prepared = false;
  clicktrain_conv_geometry geometry{};
  TfLiteDelegate* delegate = nullptr;  // owns the thread pool
  int node_index = -1;
  BudgetShare weights_budget;
  BudgetShare scratch_budget;  // the operator's program and workspaces
  // True when the operator is set up; false runs the scalar reference
  // kernel, with no scratch, because the memory budget is spent.
  bool operator_ready = false;
  clicktrain_s8_patconv_operator conv_operator{};  // set up for `geometry`

  ~PatternConvS8Node() {
    clicktrain_s8_patconv_operator_release(&conv_operator);
    clicktrain_s8_layer_release(&layer);
  }
};

TfLiteStatus BuildLayer(TfLiteContext* context, PatternConvS8Node* op) {
  if (BuildS8Layer(context, kKernelName, "int8 pattern", op->node_index,
                   op->inputs.data(), op->layout, op->options, false,
                   &op->weights_budget,
                   &op->layer) != kTfLiteOk) {
    return kTfLiteError;
  }
  op->layer_ready = true;
  return kTfLiteOk;
}

void* Init(TfLiteContext* context, const char* buffer, size_t) {
  auto* op = new (std::nothrow) PatternConvS8Node();
  if (op == nullptr) return nullptr;
  const auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
  if (params == nullptr || params->nodes_to_replace == nullptr ||
      params->nodes_to_replace->size != 1) {
    op->error = "expected exactly one node per delegate kernel";
    return op;
  }
  op->delegate = params->delegate;
  op->node_index = params->nodes_to_replace->data[0];
  op->weights_budget.Attach(ClickTrainDelegateBudget(params->delegate));
  op->scratch_budget.Attach(ClickTrainDelegateBudget(params->delegate));
  TfLiteNode* node = nullptr;
  TfLiteRegistration* registration = nullptr;
  if (context->GetNodeAndRegistration(context,
                                      params->nodes_to_replace->data[0], &node,
                                      &registration) != kTfLiteOk ||
      node == nullptr || registration == nullptr ||
      !ClickTrainIsPatternConvS8(registration->custom_name)) {
    op->error = "delegated node is not a ClickTrain int8 pattern conv";
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
  if (clicktrain_parse_op_options(node->custom_initial_data, options_size,
                                  &op->options, error, sizeof(error)) != 0) {
    op->error = error;
    return op;
  }
  op->layout = CompactInputsOf(op->options.format_version, true);
  if (op->inputs.size() == static_cast<size_t>(op->layout.num_inputs)) {
    const size_t layer_bytes = S8NodeLayerBytes(context, op->inputs.data(),
                                                op->layout, op->options);
    if (!op->weights_budget.Reserve(layer_bytes)) {
      op->error = op->weights_budget.RefusalMessage(op->node_index,
                                                    "its weights", layer_bytes);
    }
  }
  return op;
}

void Free(TfLiteContext*, void* buffer) {
  delete static_cast<PatternConvS8Node*>(buffer);
}

// Per-tensor int8 quantization of an activation tensor.
TfLiteStatus CheckActivation(TfLiteContext* context, const TfLiteTensor* t,
                             const char* name) {
  if (t->type != kTfLiteInt8) {
    return ReportNodeError(context, kKernelName,
                           "%s must be int8. Received TFLite type %d", name,
                           static_cast<int>(t->type));
  }
  // kTfLiteAffineQuantization is 1; per-channel activations are not TFLite's.
  if (t->quantization.type != 1 || t->quantization.params == nullptr) {
    return ReportNodeError(context, kKernelName,
                           "%s has no affine quantization", name);
  }
  struct Affine {
    void* scale;  // TfLiteFloatArray*
    TfLiteIntArray* zero_point;
    int quantized_dimension;
  };
  const auto* affine = static_cast<const Affine*>(t->quantization.params);
  const auto* scale = static_cast<const TfLiteIntArray*>(affine->scale);
  if (scale == nullptr || scale->size != 1 || affine->zero_point == nullptr ||
      affine->zero_point->size != 1) {
    return ReportNodeError(context, kKernelName,
                           "%s must be quantized per tensor", name);
  }
  return kTfLiteOk;
}

// Fewest bytes of one workspace of the fast path, from the layout
// pattern_conv_s8_operator.h documents: per input channel, u8 planes of at
// least (1 + the kernel's row reach) rows of (output_width + its column
// reach) bytes. SIZE_MAX on overflow.
size_t SmallestWorkspaceBytes(const clicktrain_conv_geometry& g) {
  const size_t rows = 1 + static_cast<size_t>(2 * g.dilation_h / g.stride_h);
  const size_t columns = static_cast<size_t>(g.output_width) +
                         static_cast<size_t>(2 * g.dilation_w / g.stride_w);
  size_t bytes = static_cast<size_t>(g.input_channels);
  bool overflow = __builtin_mul_overflow(bytes, rows, &bytes);
  overflow |= __builtin_mul_overflow(bytes, columns, &bytes);
  return overflow ? SIZE_MAX : bytes;
}

// Sets up the operator within the memory budget: the fast path on as many
// of the interpreter's threads as its program, tables and one workspace per
// thread fit what is left, else none (Invoke then runs the scalar reference
// kernel, with no scratch). Setting up once and lowering max_threads,
// rather than setting up again, leaves no freed workspace behind to
// fragment the heap.
TfLiteStatus SetUpOperator(TfLiteContext* context, PatternConvS8Node* op) {
  clicktrain_s8_patconv_operator_release(&op->conv_operator);
  op->scratch_budget.ReturnAll();
  op->operator_ready = false;
  int threads = context->recommended_num_threads;
  if (threads > kMaxThreads) threads = kMaxThreads;
  if (threads > CLICKTRAIN_S8_PATCONV_MAX_WORKSPACES) {
    threads = CLICKTRAIN_S8_PATCONV_MAX_WORKSPACES;
  }
  if (threads < 1) threads = 1;
  // The check before setup keeps a layer whose workspace could never fit
  // from allocating it even briefly.
  if (SmallestWorkspaceBytes(op->geometry) <=
      op->scratch_budget.available()) {
    if (clicktrain_s8_patconv_operator_setup(
            &op->conv_operator, &op->geometry, &op->layer,
            clicktrain_s8_patconv_select_ukernels(), threads) != 0) {
      return ReportNodeError(context, kKernelName,
                             "out of memory preparing the layer");
    }
    clicktrain_s8_patconv_operator& conv = op->conv_operator;
    // setup holds the program, tables and one workspace; a run on
    // `threads` threads adds a workspace per thread.
    const size_t workspace_bytes = conv.fast ? conv.workspace_bytes : 0;
    const int affordable =
        AffordableThreads(op->scratch_budget.available(), conv.scratch_bytes,
                          workspace_bytes, threads);
    if (affordable >= 1 &&
        op->scratch_budget.Reserve(conv.scratch_bytes +
                                   static_cast<size_t>(affordable - 1) *
                                       workspace_bytes)) {
      if (affordable < threads) {
        conv.max_threads = affordable;  // Invoke's pool has as many threads
        ClickTrainDelegateCountFallback(op->delegate);
      }
      op->operator_ready = true;
      return kTfLiteOk;
    }
    clicktrain_s8_patconv_operator_release(&op->conv_operator);
  }
  ClickTrainDelegateCountFallback(op->delegate);
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  auto* op = static_cast<PatternConvS8Node*>(node->user_data);
  if (op == nullptr) {
    return ReportNodeError(context, kKernelName,
                           "kernel was not initialised");
  }
  if (!op->error.empty()) {
    return ReportNodeError(context, kKernelName,
                           "%s", op->error.c_str());
  }
  if (op->inputs.size() != static_cast<size_t>(op->layout.num_inputs) ||
      op->outputs.size() != 1) {
    return ReportNodeError(
        context, kKernelName,
        "op must have %d inputs (compact format version %d) and 1 output. "
        "Received: %zu and %zu",
        op->layout.num_inputs, op->options.format_version, op->inputs.size(),
        op->outputs.size());
  }
  if (!op->layer_ready && BuildLayer(context, op) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* input = TensorAt(context, op->inputs[op->layout.input]);
  TfLiteTensor* output = TensorAt(context, op->outputs[0]);
  if (input == nullptr || output == nullptr) {
    return ReportNodeError(context, kKernelName,
                           "input or output tensor index out of range");
  }
  if (CheckActivation(context, input, "input") != kTfLiteOk ||
      CheckActivation(context, output, "output") != kTfLiteOk) {
    return kTfLiteError;
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
  char error[kErrorSize];
  if (clicktrain_s8_layer_requantize(
          &op->layer, input->params.scale, input->params.zero_point,
          output->params.scale, output->params.zero_point,
          op->options.activation, error, sizeof(error)) != 0) {
    return ReportNodeError(context, kKernelName, "%s", error);
  }
  op->prepared = false;
  if (clicktrain_compute_geometry(&op->options, in[0], in[1], in[2], in[3],
                                  &op->geometry, error, sizeof(error)) != 0) {
    return ReportNodeError(context, kKernelName, "%s", error);
  }
  if (SetUpOperator(context, op) != kTfLiteOk) return kTfLiteError;
  op->prepared = true;
  const clicktrain_conv_geometry& g = op->geometry;
  const int shape[4] = {g.batch, g.output_height, g.output_width,
                        g.output_channels};
  return ResizeOutput(context, kKernelName, output, shape);
}

TfLiteStatus Invoke(TfLiteContext* context, TfLiteNode* node) {
  auto* op = static_cast<PatternConvS8Node*>(node->user_data);
  if (op == nullptr || !op->layer_ready || !op->prepared) {
    return ReportNodeError(context, kKernelName, "op was not prepared");
  }
  const TfLiteTensor* input = TensorAt(context, op->inputs[op->layout.input]);
  TfLiteTensor* output = TensorAt(context, op->outputs[0]);
  const clicktrain_conv_geometry& g = op->geometry;
  const size_t input_bytes = static_cast<size_t>(g.batch) * g.input_height *
                             g.input_width * g.input_channels;
  const size_t output_bytes = static_cast<size_t>(g.batch) * g.output_height *
                              g.output_width * g.output_channels;
  if (input == nullptr || output == nullptr || input->bytes != input_bytes ||
      output->bytes != output_bytes ||
      (input_bytes != 0 && input->data == nullptr) ||
      (output_bytes != 0 && output->data == nullptr)) {
    return ReportNodeError(context, kKernelName,
                           "tensors changed size since Prepare");
  }
  if (!op->operator_ready) {
    clicktrain_s8_patconv_ukernel__scalar(
        &g, &op->layer.structure.weights, op->layer.values,
        &op->layer.requantization, static_cast<const int8_t*>(input->data),
        static_cast<int8_t*>(output->data));
    return kTfLiteOk;
  }
  clicktrain_s8_patconv_operator_run(
      &op->conv_operator, static_cast<const int8_t*>(input->data),
      static_cast<int8_t*>(output->data),
      ClickTrainDelegateThreadPool(
          op->delegate,
          BudgetedThreads(context, op->conv_operator.max_threads)));
  return kTfLiteOk;
}

}  // namespace

bool ClickTrainIsPatternConvS8(const char* custom_name) {
  return custom_name != nullptr &&
         std::strcmp(custom_name, CLICKTRAIN_PATTERN_CONV_S8_OP_NAME) == 0;
}

TfLiteRegistration ClickTrainPatternConvS8Registration() {
  TfLiteRegistration registration{};
  registration.init = Init;
  registration.free = Free;
  registration.prepare = Prepare;
  registration.invoke = Invoke;
  registration.custom_name = kKernelName;
  registration.version = 1;
  return registration;
}

namespace clicktrain {

size_t S8LayerBytes(size_t structure_bytes, size_t values,
                    size_t output_channels) {
  if (structure_bytes == SIZE_MAX || values > SIZE_MAX / 16 ||
      output_channels > SIZE_MAX / 32) {
    return SIZE_MAX;
  }
  size_t bytes = structure_bytes;
  if (__builtin_add_overflow(bytes, values * (1 + sizeof(float)) +
                                        4 * output_channels * sizeof(int32_t),
                             &bytes)) {
    return SIZE_MAX;
  }
  return bytes;
}

size_t S8NodeLayerBytes(TfLiteContext* context, const int* inputs,
                        const CompactInputs& layout,
                        const clicktrain_op_options& options) {
  const size_t output_channels = static_cast<size_t>(options.output_channels);
  return S8LayerBytes(
      CompactWeightBytes(context, inputs, layout, options.format_version,
                         output_channels),
      ElementCount(TensorAt(context, inputs[layout.values])), output_channels);
}

TfLiteStatus BuildS8Layer(TfLiteContext* context, const char* kernel_name,
                          const char* weights_name, int node_index,
                          const int* inputs, const CompactInputs& layout,
                          const clicktrain_op_options& options, bool depthwise,
                          BudgetShare* weights_budget, clicktrain_s8_layer* layer) {
  clicktrain_s8_compact_tensors tensors{};
  if (ReadCompactStructure(context, kernel_name, inputs, layout,
                           options.format_version,
                           &tensors.structure) != kTfLiteOk) {
    return kTfLiteError;
  }
  size_t values_shape[1] = {0}, bias_shape[1] = {0}, scales_shape[1] = {0};
  const TfLiteTensor* values = TensorAt(context, inputs[layout.values]);
  const TfLiteTensor* scales = TensorAt(context, inputs[layout.filter_scales]);
  if (CheckConstant(context, kernel_name, values, "values", kTfLiteInt8,
                    kTfLiteNoType, 1, values_shape) != kTfLiteOk ||
      CheckConstant(context, kernel_name, scales, "filter_scales",
                    kTfLiteFloat32, kTfLiteNoType, 1,
                    scales_shape) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* bias = nullptr;
  if (inputs[layout.bias] != CLICKTRAIN_TFLITE_OPTIONAL_TENSOR) {
    bias = TensorAt(context, inputs[layout.bias]);
    if (CheckConstant(context, kernel_name, bias, "bias", kTfLiteInt32,
                      kTfLiteNoType, 1, bias_shape) != kTfLiteOk) {
      return kTfLiteError;
    }
  }
  tensors.values = values->data;
  tensors.values_count = values_shape[0];
  tensors.bias = bias == nullptr ? nullptr : bias->data;
  tensors.bias_count = bias_shape[0];
  tensors.filter_scales = scales->data;
  tensors.filter_scales_count = scales_shape[0];
  // Reserved at Init from the same shapes; Resize keeps the share exact.
  const size_t output_channels =
      static_cast<size_t>(options.output_channels);
  clicktrain_compact_tensors structure_counts = tensors.structure;
  structure_counts.values_count = values_shape[0];
  const size_t layer_bytes = S8LayerBytes(
      clicktrain_pattern_weights_bytes(&structure_counts, output_channels),
      values_shape[0], output_channels);
  if (!weights_budget->Resize(layer_bytes)) {
    return weights_budget->ReportRefusal(context, kernel_name,
                                            node_index, "its weights",
                                            layer_bytes);
  }
  char error[512];
  const int status = clicktrain_s8_layer_build(
      &tensors, static_cast<size_t>(options.input_channels),
      output_channels, depthwise ? 1 : 0, layer, error, sizeof(error));
  // Building widened the values to float once more, briefly.
  weights_budget->Return(values_shape[0] * sizeof(float));
  if (status != 0) {
    return ReportNodeError(context, kernel_name, "invalid %s weights: %s",
                           weights_name, error);
  }
  return kTfLiteOk;
}


}  // namespace clicktrain
