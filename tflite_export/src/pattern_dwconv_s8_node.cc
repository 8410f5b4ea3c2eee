#include "pattern_dwconv_s8_node.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "clicktrain/pattern_dwconv_s8.h"
#include "memory_budget.h"
#include "node_checks.h"
#include "op_options.h"
#include "pattern_conv_s8_node.h"  // the int8 conv's inputs and layer
#include "pattern_conv_s8_operator.h"
#include "pattern_dwconv_s8_operator.h"
#include "sparse_conv1x1_node.h"  // ClickTrainDelegateThreadPool

using clicktrain::AffordableThreads;
using clicktrain::BudgetedThreads;
using clicktrain::BuildS8Layer;
using clicktrain::BudgetShare;
using clicktrain::CheckConstant;
using clicktrain::CompactInputs;
using clicktrain::CompactInputsOf;
using clicktrain::ElementCount;
using clicktrain::ReportNodeError;
using clicktrain::ResizeOutput;
using clicktrain::S8NodeLayerBytes;
using clicktrain::TensorAt;
using clicktrain::TypeSize;

namespace {

constexpr const char* kKernelName = "ClickTrainPatternDepthwiseConv2DInt8Kernel";
constexpr size_t kErrorSize = 512;
constexpr int kMaxThreads = 64;

struct PatternDepthwiseConvS8Node {
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
  clicktrain_s8_patdwconv_operator conv_operator{};  // set up for `geometry`

  ~PatternDepthwiseConvS8Node() {
    clicktrain_s8_patdwconv_operator_release(&conv_operator);
    clicktrain_s8_layer_release(&layer);
  }
};

TfLiteStatus BuildLayer(TfLiteContext* context,
                        PatternDepthwiseConvS8Node* op) {
  if (BuildS8Layer(context, kKernelName, "int8 pattern depthwise",
                   op->node_index, op->inputs.data(), op->layout, op->options,
                   true, &op->weights_budget, &op->layer) != kTfLiteOk) {
    return kTfLiteError;
  }
  char error[kErrorSize];
  if (clicktrain_s8_dw_layer_check(&op->layer, error, sizeof(error)) != 0) {
    clicktrain_s8_layer_release(&op->layer);
    return ReportNodeError(context, kKernelName,
                           "invalid int8 pattern depthwise weights: %s", error);
  }
  op->layer_ready = true;
  return kTfLiteOk;
}

void* Init(TfLiteContext* context, const char* buffer, size_t) {
  auto* op = new (std::nothrow) PatternDepthwiseConvS8Node();
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
      !ClickTrainIsPatternDepthwiseConvS8(registration->custom_name)) {
    op->error =
        "delegated node is not a ClickTrain int8 pattern depthwise conv";
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
  delete static_cast<PatternDepthwiseConvS8Node*>(buffer);
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

// Sets up the operator within the memory budget: its packed weights,
// padding row and one workspace, plus one workspace per further thread of
// the interpreter as far as they fit what is left; when not even one thread
// fits, none (Invoke then runs the scalar reference kernel, with no
// scratch). Setting up once and lowering max_threads, rather than setting
// up again, leaves no freed workspace behind to fragment the heap.
TfLiteStatus SetUpOperator(TfLiteContext* context,
                           PatternDepthwiseConvS8Node* op) {
  clicktrain_s8_patdwconv_operator_release(&op->conv_operator);
  op->scratch_budget.ReturnAll();
  op->operator_ready = false;
  int threads = context->recommended_num_threads;
  if (threads > kMaxThreads) threads = kMaxThreads;
  if (threads > CLICKTRAIN_S8_PATDWCONV_MAX_THREADS) {
    threads = CLICKTRAIN_S8_PATDWCONV_MAX_THREADS;
  }
  if (threads < 1) threads = 1;
  const size_t setup_bytes = clicktrain_s8_patdwconv_setup_bytes(&op->geometry);
  const size_t workspace_bytes =
      clicktrain_s8_patdwconv_workspace_bytes(&op->geometry);
  // Reserved before setup allocates, so no file makes it allocate beyond
  // the budget even briefly.
  const int affordable =
      setup_bytes == SIZE_MAX || workspace_bytes == SIZE_MAX
          ? 0
          : AffordableThreads(op->scratch_budget.available(), setup_bytes,
                              workspace_bytes, threads);
  if (affordable >= 1 &&
      op->scratch_budget.Reserve(setup_bytes +
                                 static_cast<size_t>(affordable - 1) *
                                     workspace_bytes)) {
    if (clicktrain_s8_patdwconv_operator_setup(
            &op->conv_operator, &op->geometry, &op->layer,
            clicktrain_s8_patdwconv_select_ukernels(), affordable) != 0) {
      op->scratch_budget.ReturnAll();
      return ReportNodeError(context, kKernelName,
                             "out of memory preparing the layer");
    }
    if (affordable < threads) ClickTrainDelegateCountFallback(op->delegate);
    op->operator_ready = true;
    return kTfLiteOk;
  }
  ClickTrainDelegateCountFallback(op->delegate);
  return kTfLiteOk;
}

TfLiteStatus Prepare(TfLiteContext* context, TfLiteNode* node) {
  auto* op = static_cast<PatternDepthwiseConvS8Node*>(node->user_data);
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
  auto* op = static_cast<PatternDepthwiseConvS8Node*>(node->user_data);
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
    clicktrain_s8_patdwconv_ukernel__scalar(
        &g, &op->layer.structure.weights, op->layer.values,
        &op->layer.requantization, static_cast<const int8_t*>(input->data),
        static_cast<int8_t*>(output->data));
    return kTfLiteOk;
  }
  clicktrain_s8_patdwconv_operator_run(
      &op->conv_operator, static_cast<const int8_t*>(input->data),
      static_cast<int8_t*>(output->data),
      ClickTrainDelegateThreadPool(
          op->delegate,
          BudgetedThreads(context, op->conv_operator.max_threads)));
  return kTfLiteOk;
}

}  // namespace

bool ClickTrainIsPatternDepthwiseConvS8(const char* custom_name) {
  return custom_name != nullptr &&
         std::strcmp(custom_name,
                     CLICKTRAIN_PATTERN_DEPTHWISE_CONV_S8_OP_NAME) == 0;
}

TfLiteRegistration ClickTrainPatternDepthwiseConvS8Registration() {
  TfLiteRegistration registration{};
  registration.init = Init;
  registration.free = Free;
  registration.prepare = Prepare;
  registration.invoke = Invoke;
  registration.custom_name = kKernelName;
  registration.version = 1;
  return registration;
}
