/* Op glue: a TfLiteDelegate that claims every CUSTOM node named
 * ClickTrainPatternConv2D / ClickTrainPatternDepthwiseConv2D and runs it with
 * the compute kernels of include/clicktrain/pattern_conv.h.
 *
 * The stock LiteRT interpreter keeps unresolved custom ops as placeholders
 * that a delegate may claim, so the unmodified runtime (the ai-edge-litert
 * wheel, the LiteRT AAR on Android) runs our op once this delegate is added.
 *
 * Every byte reaching this file from a model is untrusted: tensor indices,
 * types, shapes, custom options and compact weights are validated before
 * use, and any failure is reported through the runtime as kTfLiteError.
 * What the delegate allocates for a graph's nodes is bounded by the bytes
 * of the tensors the graph declares plus a fixed 64 MiB (memory_budget.h).
 */
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "clicktrain/pattern_conv.h"
#include "clicktrain_tflite.h"
#include "compact_inputs.h"
#include "compact_weights.h"
#include "litert_abi.h"
#include "memory_budget.h"
#include "op_options.h"
#include "pattern_conv_operator.h"
#include "pattern_conv_s8_node.h"
#include "pattern_dwconv_s8_node.h"
#include "sparse_conv1x1_node.h"
#include "node_checks.h"
#include "thread_pool.h"

#define CLICKTRAIN_EXPORT extern "C" __attribute__((visibility("default")))

using clicktrain::BudgetShare;
using clicktrain::AffordableThreads;
using clicktrain::BudgetedThreads;
using clicktrain::CheckConstant;
using clicktrain::CompactInputs;
using clicktrain::CompactInputsOf;
using clicktrain::CompactWeightBytes;
using clicktrain::ElementCount;
using clicktrain::ReadCompactStructure;
using clicktrain::MemoryBudget;
using clicktrain::ReportNodeError;
using clicktrain::ResizeOutput;
using clicktrain::TensorAt;
using clicktrain::TypeSize;

namespace {

constexpr const char* kDelegateKernelName = "ClickTrainPatternConvKernel";
constexpr size_t kErrorSize = 512;

// Most threads a node may use; the interpreter's num_threads is capped here.
constexpr int kMaxThreads = 64;

// The float pattern convs' band buffers, shared by the nodes of one graph.
//
// Each pattern-conv operator allocates band buffers of its own, whose
// padding zeros it writes once; in a whole model every node's buffers are
// then cold (last touched one invoke earlier, evicted from L2 by the other
// layers), and writing the packed band into them costs a cache miss per
// line. The nodes of a graph run one at a time, so they can take turns on
// one set of buffers that stays in L2 instead: ResNet-18's pattern convs
// measured 7-10% faster as a whole model on one thread. A buffer is zeroed
// again whenever the node about to use it packs a different band layout
// than the last node that did (its padding columns and rows would hold
// that node's data); nodes of the same layout (the convs of one ResNet
// stage) pack the same positions and share it as it is. What the operator
// remembers of a buffer's content (the band it last packed there, whose
// rows outside the input it then leaves as they are) holds only while no
// other node used the buffer: Invoke forgets it otherwise.
struct BandLayout {
  // The geometry without what only the output side uses.
  clicktrain_conv_geometry input_side;
  size_t fields[13];
  const void* kernels;
};

BandLayout BandLayoutOf(const clicktrain_patconv_operator& conv) {
  BandLayout layout;
  std::memset(&layout, 0, sizeof(layout));  // padding bytes too: memcmp
  layout.input_side = conv.geometry;
  layout.input_side.output_channels = 0;
  layout.input_side.output_min = 0.0f;
  layout.input_side.output_max = 0.0f;
  const size_t fields[13] = {
      static_cast<size_t>(conv.depthwise), conv.row_phases,
      static_cast<size_t>(conv.phase_value[0]),
      static_cast<size_t>(conv.phase_value[1]),
      static_cast<size_t>(conv.phase_value[2]), conv.band_rows,
      conv.band_buffer_rows, conv.columns, conv.copies, conv.twin_shift,
      conv.sub_plane_stride, conv.channel_stride, conv.buffer_floats};
  std::memcpy(layout.fields, fields, sizeof(fields));
  layout.kernels = conv.kernels;
  return layout;
}

class SharedBandBuffers {
 public:
  // One reference (the caller's), or nullptr when out of memory.
  static SharedBandBuffers* Create() {
    return new (std::nothrow) SharedBandBuffers();
  }
  void Acquire() { references_.fetch_add(1, std::memory_order_relaxed); }
  void Release() {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Grows the set to at least `count` buffers of `floats` floats (at
  // Prepare; no run holds the buffers then). False when out of memory,
  // keeping the buffers it had.
  bool Reserve(size_t count, size_t floats) {
    if (count > CLICKTRAIN_PATCONV_MAX_BUFFERS) return false;
    if (floats > floats_) {
      float* grown[CLICKTRAIN_PATCONV_MAX_BUFFERS] = {};
      const size_t have = count > count_ ? count : count_;
      for (size_t i = 0; i < have; ++i) {
        grown[i] = Allocate(floats);
        if (grown[i] == nullptr) {
          for (size_t j = 0; j < i; ++j) std::free(grown[j]);
          return false;
        }
      }
      FreeAll();
      std::memcpy(buffers_, grown, sizeof(grown));
      count_ = have;
      floats_ = floats;
      return true;
    }
    while (count_ < count) {
      float* buffer = Allocate(floats_);
      if (buffer == nullptr) return false;
      buffers_[count_] = buffer;
      owner_known_[count_] = false;
      ++count_;
    }
    return true;
  }

  // The first `count` buffers, for a run of `user` packing band layout
  // `layout`: each zeroed first (its first `floats` floats) unless the last
  // run that used it packed the same layout. kept[i]: the last run that
  // used buffer i was `user`'s own.
  float* const* ForRun(const void* user, const BandLayout& layout,
                       size_t count, size_t floats, bool* kept) {
    for (size_t i = 0; i < count; ++i) {
      kept[i] = owner_known_[i] && users_[i] == user;
      if (!owner_known_[i] ||
          std::memcmp(&owners_[i], &layout, sizeof(layout)) != 0) {
        std::memset(buffers_[i], 0, floats * sizeof(float));
        owners_[i] = layout;
        owner_known_[i] = true;
      }
      users_[i] = user;
    }
    return buffers_;
  }

 private:
  SharedBandBuffers() = default;
  ~SharedBandBuffers() { FreeAll(); }

  static float* Allocate(size_t floats) {
    const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    return static_cast<float*>(std::aligned_alloc(64, bytes));
  }
  void FreeAll() {
    for (size_t i = 0; i < count_; ++i) {
      std::free(buffers_[i]);
      buffers_[i] = nullptr;
      owner_known_[i] = false;
    }
    count_ = 0;
  }

  std::atomic<int> references_{1};
  float* buffers_[CLICKTRAIN_PATCONV_MAX_BUFFERS] = {};
  BandLayout owners_[CLICKTRAIN_PATCONV_MAX_BUFFERS];
  const void* users_[CLICKTRAIN_PATCONV_MAX_BUFFERS] = {};
  bool owner_known_[CLICKTRAIN_PATCONV_MAX_BUFFERS] = {};
  size_t count_ = 0;
  size_t floats_ = 0;
};

struct DelegateState {
  int claimed_nodes = 0;
  // Nodes running on fewer threads or their reference kernel for lack of
  // memory budget.
  std::atomic<int> memory_fallbacks{0};
  // Held through DelegatePrepare: the budget of the graph being claimed,
  // which the node kernels' Init (called from within) share.
  std::mutex prepare_mutex;
  MemoryBudget* preparing_budget = nullptr;
  // Likewise the band buffers of the graph being claimed.
  SharedBandBuffers* preparing_band_buffers = nullptr;
  // One pool per thread count asked for by an interpreter (num_threads),
  // created on first use and shared by every node of this delegate.
  std::mutex pools_mutex;
  clicktrain_thread_pool* pools[kMaxThreads + 1] = {};

  ~DelegateState() {
    for (clicktrain_thread_pool* pool : pools) {
      clicktrain_thread_pool_destroy(pool);
    }
  }

  // The pool for `threads` threads, or nullptr to run on the caller.
  clicktrain_thread_pool* Pool(int threads) {
    if (threads < 2) return nullptr;
    if (threads > kMaxThreads) threads = kMaxThreads;
    std::lock_guard<std::mutex> lock(pools_mutex);
    if (pools[threads] == nullptr) {
      pools[threads] = clicktrain_thread_pool_create(threads);
    }
    return pools[threads];
  }
};

// One claimed pattern-conv node.
struct PatternConvNode {
  bool depthwise = false;
  std::vector<int> inputs;
  std::vector<int> outputs;
  clicktrain_op_options options{};
  // Positions of the compact tensors, from options.format_version.
  CompactInputs layout{};
  std::string error;  // set when the node cannot run; reported by Prepare
  bool weights_ready = false;
  clicktrain_weight_storage weights{};
  clicktrain_conv_geometry geometry{};
  const clicktrain_kernel_set* kernels = nullptr;
  // The same kernels without the planar one: the operator then runs the
  // reference kernels, with no scratch.
  clicktrain_kernel_set reference_kernels{};
  TfLiteDelegate* delegate = nullptr;
  DelegateState* delegate_state = nullptr;
  int node_index = -1;
  BudgetShare weights_budget;
  BudgetShare scratch_budget;  // the operator's program and band buffers
  bool operator_ready = false;
  clicktrain_patconv_operator conv_operator{};
  // The graph's band buffers (a reference), and how many of the operator's
  // buffer slots are theirs: those slots are null but during a run.
  SharedBandBuffers* band_buffers = nullptr;
  size_t shared_slots = 0;
  BandLayout band_layout{};

  // Releases the operator, which frees only the buffers it owns.
  void ReleaseOperator() {
    for (size_t i = 0; i < shared_slots; ++i) conv_operator.buffers[i] = nullptr;
    shared_slots = 0;
    clicktrain_patconv_operator_release(&conv_operator);
  }

  ~PatternConvNode() {
    ReleaseOperator();
    if (band_buffers != nullptr) band_buffers->Release();
    clicktrain_free_pattern_weights(&weights);
  }
};

bool IsPatternConvName(const char* name, bool* depthwise) {
  if (name == nullptr) return false;
  if (std::strcmp(name, CLICKTRAIN_PATTERN_CONV_OP_NAME) == 0) {
    *depthwise = false;
    return true;
  }
  if (std::strcmp(name, CLICKTRAIN_PATTERN_DEPTHWISE_CONV_OP_NAME) == 0) {
    *depthwise = true;
    return true;
  }
  return false;
}

// Checks, on the live runtime, that the function table of TfLiteContext is
// where litert_abi.h declares it, before any of it is called.
bool ContextLooksRight(const TfLiteContext* context, std::string* why) {
  if (context->GetNodeAndRegistration == nullptr ||
      context->ReplaceNodeSubsetsWithDelegateKernels == nullptr ||
      context->GetExecutionPlan == nullptr || context->ReportError == nullptr) {
    *why = "context function table is not where litert_abi.h expects it";
    return false;
  }
  if (context->tensors_size > (1u << 28)) {
    *why = "implausible tensors_size";
    return false;
  }
  return true;
}

// Checks that TfLiteTensor matches the runtime's layout on the tensors the
// delegate will read (those of the claimed nodes): each has a valid type and
// allocation type, dims, and, if it is a dense constant, exactly the bytes
// its shape needs. The runtime guarantees all of this for any model it loads
// (it refuses a dense constant whose buffer disagrees with its shape), so a
// failure means a wrong struct size or field order, not a bad model. Sparse
// constants (TfLiteTensor.sparsity set) hold fewer bytes than their shape;
// tensor indices out of range are the model's fault, reported by the node.
bool ClaimedTensorsLookRight(TfLiteContext* context,
                             const std::vector<int>& claimed,
                             std::string* why) {
  for (int node_index : claimed) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* registration = nullptr;
    if (context->GetNodeAndRegistration(context, node_index, &node,
                                        &registration) != kTfLiteOk ||
        node == nullptr) {
      *why = "a claimed node cannot be read back";
      return false;
    }
    for (const TfLiteIntArray* indices : {node->inputs, node->outputs}) {
      if (indices == nullptr) continue;
      for (int i = 0; i < indices->size; ++i) {
        const int index = indices->data[i];
        if (index < 0 || static_cast<size_t>(index) >= context->tensors_size) {
          continue;
        }
        const TfLiteTensor* tensor = &context->tensors[index];
        // Read as plain ints: a value outside the enums is what a layout
        // mismatch looks like, and the compiler may assume enums in range.
        int type = 0;
        int allocation_type = 0;
        std::memcpy(&type, &tensor->type, sizeof(type));
        std::memcpy(&allocation_type, &tensor->allocation_type,
                    sizeof(allocation_type));
        if (type < 0 || type > 64 || allocation_type < 0 ||
            allocation_type > 16) {
          *why = "TfLiteTensor fields are not where litert_abi.h expects them";
          return false;
        }
        const TfLiteIntArray* dims = tensor->dims;
        if (dims == nullptr || dims->size < 0) {
          *why = "TfLiteTensor.dims is not where litert_abi.h expects it";
          return false;
        }
        const size_t element_size = TypeSize(tensor->type);
        if (element_size == 0 || tensor->allocation_type != kTfLiteMmapRo ||
            tensor->sparsity != nullptr) {
          continue;
        }
        size_t bytes = element_size;
        bool overflow = false;
        for (int d = 0; d < dims->size; ++d) {
          const size_t extent =
              static_cast<size_t>(dims->data[d] < 0 ? 0 : dims->data[d]);
          overflow |= __builtin_mul_overflow(bytes, extent, &bytes);
        }
        if (overflow || bytes != tensor->bytes) {
          *why = "TfLiteTensor.bytes disagrees with its shape";
          return false;
        }
      }
    }
  }
  return true;
}

// ---------------------------------------------------------------------------
// The delegate kernel: one instance per claimed node.

void* KernelInit(TfLiteContext* context, const char* buffer, size_t) {
  auto* op = new (std::nothrow) PatternConvNode();
  if (op == nullptr) return nullptr;
  const auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
  if (params == nullptr || params->nodes_to_replace == nullptr ||
      params->nodes_to_replace->size != 1) {
    op->error = "expected exactly one node per delegate kernel";
    return op;
  }
  op->node_index = params->nodes_to_replace->data[0];
  op->delegate = params->delegate;
  op->weights_budget.Attach(ClickTrainDelegateBudget(params->delegate));
  op->scratch_budget.Attach(ClickTrainDelegateBudget(params->delegate));
  TfLiteNode* node = nullptr;
  TfLiteRegistration* registration = nullptr;
  if (context->GetNodeAndRegistration(context,
                                      params->nodes_to_replace->data[0], &node,
                                      &registration) != kTfLiteOk ||
      node == nullptr || registration == nullptr ||
      !IsPatternConvName(registration->custom_name, &op->depthwise)) {
    op->error = "delegated node is not a ClickTrain pattern conv";
    return op;
  }
  if (node->inputs != nullptr) {
    op->inputs.assign(node->inputs->data,
                      node->inputs->data + node->inputs->size);
  }
  if (node->outputs != nullptr) {
    op->outputs.assign(node->outputs->data,
                       node->outputs->data + node->outputs->size);
  }
  char error[kErrorSize];
  const size_t options_size = node->custom_initial_data_size < 0
                                  ? 0
                                  : static_cast<size_t>(
                                        node->custom_initial_data_size);
  if (clicktrain_parse_op_options(node->custom_initial_data, options_size,
                                  &op->options, error, sizeof(error)) != 0) {
    op->error = error;
    return op;
  }
  op->layout = CompactInputsOf(op->options.format_version, false);
  if (op->inputs.size() == static_cast<size_t>(op->layout.num_inputs)) {
    const size_t weight_bytes = CompactWeightBytes(
        context, op->inputs.data(), op->layout, op->options.format_version,
        op->options.output_channels);
    if (!op->weights_budget.Reserve(weight_bytes)) {
      op->error = op->weights_budget.RefusalMessage(op->node_index,
                                                    "its weights", weight_bytes);
      return op;
    }
  }
  op->kernels = clicktrain_select_kernels();
  op->reference_kernels = *op->kernels;
  op->reference_kernels.planar = nullptr;
  if (params->delegate != nullptr) {
    op->delegate_state = static_cast<DelegateState*>(params->delegate->data_);
    op->band_buffers = op->delegate_state->preparing_band_buffers;
    if (op->band_buffers != nullptr) op->band_buffers->Acquire();
  }
  return op;
}

void KernelFree(TfLiteContext*, void* buffer) {
  delete static_cast<PatternConvNode*>(buffer);
}

TfLiteStatus BuildWeights(TfLiteContext* context, PatternConvNode* op) {
  const CompactInputs& layout = op->layout;
  clicktrain_compact_tensors compact{};
  if (ReadCompactStructure(context, kDelegateKernelName, op->inputs.data(),
                           layout, op->options.format_version,
                           &compact) != kTfLiteOk) {
    return kTfLiteError;
  }
  size_t values_shape[1] = {0}, bias_shape[1] = {0};
  const TfLiteTensor* values = TensorAt(context, op->inputs[layout.values]);
  if (CheckConstant(context, kDelegateKernelName, values, "values",
                    kTfLiteFloat32, kTfLiteNoType, 1,
                    values_shape) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* bias = nullptr;
  if (op->inputs[layout.bias] != CLICKTRAIN_TFLITE_OPTIONAL_TENSOR) {
    bias = TensorAt(context, op->inputs[layout.bias]);
    if (CheckConstant(context, kDelegateKernelName, bias, "bias",
                      kTfLiteFloat32, kTfLiteNoType, 1,
                      bias_shape) != kTfLiteOk) {
      return kTfLiteError;
    }
  }
  compact.values = values->data;
  compact.values_count = values_shape[0];
  compact.bias = bias == nullptr ? nullptr : bias->data;
  compact.bias_count = bias_shape[0];
  // Reserved at Init from the same shapes; Resize keeps the share exact.
  const size_t weight_bytes = clicktrain_pattern_weights_bytes(
      &compact, op->options.output_channels);
  if (!op->weights_budget.Resize(weight_bytes)) {
    return op->weights_budget.ReportRefusal(context, kDelegateKernelName,
                                            op->node_index,
                                            "its weights", weight_bytes);
  }
  char error[kErrorSize];
  if (clicktrain_build_pattern_weights(
          &compact, op->options.input_channels, op->options.output_channels,
          op->depthwise, &op->weights, error, sizeof(error)) != 0) {
    return ReportNodeError(context, kDelegateKernelName,
                           "invalid compact weights: %s", error);
  }
  op->weights_ready = true;
  return kTfLiteOk;
}

// Fewest bytes of one band buffer of the fast path, from the layout
// pattern_conv_operator.h documents: per input channel, row phase in use and
// kernel column, a sub-plane of at least (1 + kernel reach) rows of the
// output width rounded up to 8 floats. SIZE_MAX on overflow.
size_t SmallestBandBufferBytes(const clicktrain_conv_geometry& g) {
  int phases[CLICKTRAIN_KERNEL_SIZE] = {};
  size_t row_phases = 0;
  for (int ky = 0; ky < CLICKTRAIN_KERNEL_SIZE; ++ky) {
    const int phase = ky * g.dilation_h % g.stride_h;
    size_t p = 0;
    while (p < row_phases && phases[p] != phase) ++p;
    if (p == row_phases) phases[row_phases++] = phase;
  }
  const size_t rows =
      1 + static_cast<size_t>((CLICKTRAIN_KERNEL_SIZE - 1) * g.dilation_h /
                              g.stride_h);
  const size_t columns = (static_cast<size_t>(g.output_width) + 7) / 8 * 8;
  size_t bytes = sizeof(float) * row_phases * CLICKTRAIN_KERNEL_SIZE;
  bool overflow = __builtin_mul_overflow(
      bytes, static_cast<size_t>(g.input_channels), &bytes);
  overflow |= __builtin_mul_overflow(bytes, rows, &bytes);
  overflow |= __builtin_mul_overflow(bytes, columns, &bytes);
  return overflow ? SIZE_MAX : bytes;
}

// Moves the fast path's band buffers to the graph's shared ones: frees the
// buffer setup allocated and marks a slot per thread the run may use as
// shared (filled by Invoke). Keeps its own buffers when the shared ones
// cannot grow. The node keeps its budget reservation for the buffers it no
// longer holds, so the budget still bounds what the graph allocates.
void ShareBandBuffers(PatternConvNode* op) {
  clicktrain_patconv_operator& conv = op->conv_operator;
  const size_t slots = static_cast<size_t>(conv.max_threads);
  if (op->band_buffers == nullptr || !conv.fast ||
      conv.allocated_buffers != 1 || slots < 1 ||
      slots > CLICKTRAIN_PATCONV_MAX_BUFFERS ||
      !op->band_buffers->Reserve(slots, conv.buffer_floats)) {
    return;
  }
  std::free(conv.buffers[0]);
  for (size_t i = 0; i < slots; ++i) conv.buffers[i] = nullptr;
  conv.allocated_buffers = slots;
  op->shared_slots = slots;
  op->band_layout = BandLayoutOf(conv);
}

// Sets up the operator for op->geometry within the memory budget: the fast
// path on as many of the interpreter's threads as its program and one band
// buffer per thread fit what is left, else the reference kernels (no
// scratch). Reserves what the chosen setup holds. Setting up once and
// lowering max_threads, rather than setting up again, leaves no freed
// buffer behind to fragment the heap.
TfLiteStatus SetUpOperator(TfLiteContext* context, PatternConvNode* op) {
  op->ReleaseOperator();
  op->scratch_budget.ReturnAll();
  op->operator_ready = false;
  int threads = context->recommended_num_threads;
  if (threads > kMaxThreads) threads = kMaxThreads;
  if (threads > CLICKTRAIN_PATCONV_MAX_BUFFERS) {
    threads = CLICKTRAIN_PATCONV_MAX_BUFFERS;
  }
  if (threads < 1) threads = 1;
  // The check before setup keeps a layer whose buffers could never fit
  // (a huge dilation over a tiny input) from allocating them even briefly.
  if (SmallestBandBufferBytes(op->geometry) <=
      op->scratch_budget.available()) {
    if (clicktrain_patconv_operator_setup(&op->conv_operator, &op->geometry,
                                          &op->weights.weights, op->depthwise,
                                          op->kernels, threads) != 0) {
      return ReportNodeError(context, kDelegateKernelName,
                             "out of memory preparing the layer");
    }
    clicktrain_patconv_operator& conv = op->conv_operator;
    // setup holds the program and one band buffer; a run on `threads`
    // threads adds a buffer per thread.
    const size_t buffer_bytes =
        conv.fast ? conv.buffer_floats * sizeof(float) : 0;
    const int affordable =
        AffordableThreads(op->scratch_budget.available(), conv.scratch_bytes,
                          buffer_bytes, threads);
    if (affordable >= 1 &&
        op->scratch_budget.Reserve(conv.scratch_bytes +
                                   static_cast<size_t>(affordable - 1) *
                                       buffer_bytes)) {
      if (affordable < threads) {
        conv.max_threads = affordable;  // Invoke's pool has as many threads
        ClickTrainDelegateCountFallback(op->delegate);
      }
      ShareBandBuffers(op);
      op->operator_ready = true;
      return kTfLiteOk;
    }
    op->ReleaseOperator();
  }
  ClickTrainDelegateCountFallback(op->delegate);
  if (clicktrain_patconv_operator_setup(&op->conv_operator, &op->geometry,
                                        &op->weights.weights, op->depthwise,
                                        &op->reference_kernels, 1) != 0) {
    return ReportNodeError(context, kDelegateKernelName,
                           "out of memory preparing the layer");
  }
  op->operator_ready = true;
  return kTfLiteOk;
}

TfLiteStatus KernelPrepare(TfLiteContext* context, TfLiteNode* node) {
  auto* op = static_cast<PatternConvNode*>(node->user_data);
  if (op == nullptr) {
    return ReportNodeError(context, kDelegateKernelName,
                           "kernel was not initialised");
  }
  if (!op->error.empty()) {
    return ReportNodeError(context, kDelegateKernelName,
                           "%s", op->error.c_str());
  }
  if (op->inputs.size() != static_cast<size_t>(op->layout.num_inputs) ||
      op->outputs.size() != 1) {
    return ReportNodeError(
        context, kDelegateKernelName,
        "op must have %d inputs (compact format version %d) and 1 output. "
        "Received: %zu and %zu",
        op->layout.num_inputs, op->options.format_version, op->inputs.size(),
        op->outputs.size());
  }
  if (!op->weights_ready && BuildWeights(context, op) != kTfLiteOk) {
    return kTfLiteError;
  }
  const TfLiteTensor* input = TensorAt(context, op->inputs[op->layout.input]);
  TfLiteTensor* output = TensorAt(context, op->outputs[0]);
  if (input == nullptr || output == nullptr) {
    return ReportNodeError(context, kDelegateKernelName,
                           "input or output tensor index out of range");
  }
  if (input->type != kTfLiteFloat32 || output->type != kTfLiteFloat32) {
    return ReportNodeError(context, kDelegateKernelName,
                           "input and output must be float32");
  }
  if (input->dims == nullptr || input->dims->size != 4) {
    return ReportNodeError(context, kDelegateKernelName,
                           "input must be 4-D NHWC");
  }
  const int* in = input->dims->data;
  char error[kErrorSize];
  if (clicktrain_compute_geometry(&op->options, in[0], in[1], in[2], in[3],
                                  &op->geometry, error,
                                  sizeof(error)) != 0) {
    return ReportNodeError(context, kDelegateKernelName, "%s", error);
  }
  if (SetUpOperator(context, op) != kTfLiteOk) return kTfLiteError;
  const int shape[4] = {op->geometry.batch, op->geometry.output_height,
                        op->geometry.output_width,
                        op->geometry.output_channels};
  return ResizeOutput(context, kDelegateKernelName, output, shape);
}

TfLiteStatus KernelInvoke(TfLiteContext* context, TfLiteNode* node) {
  auto* op = static_cast<PatternConvNode*>(node->user_data);
  if (op == nullptr || !op->weights_ready || !op->operator_ready) {
    return ReportNodeError(context, kDelegateKernelName, "op was not prepared");
  }
  const TfLiteTensor* input = TensorAt(context, op->inputs[op->layout.input]);
  TfLiteTensor* output = TensorAt(context, op->outputs[0]);
  const clicktrain_conv_geometry& g = op->geometry;
  const size_t input_bytes = sizeof(float) * g.batch * g.input_height *
                             g.input_width * g.input_channels;
  const size_t output_bytes = sizeof(float) * g.batch * g.output_height *
                              g.output_width * g.output_channels;
  if (input == nullptr || output == nullptr || input->bytes != input_bytes ||
      output->bytes != output_bytes ||
      (input_bytes != 0 && input->data == nullptr) ||
      (output_bytes != 0 && output->data == nullptr)) {
    return ReportNodeError(context, kDelegateKernelName,
                           "tensors changed size since Prepare");
  }
  const int threads = BudgetedThreads(context, op->conv_operator.max_threads);
  clicktrain_thread_pool* pool =
      op->delegate_state == nullptr ? nullptr
                                    : op->delegate_state->Pool(threads);
  clicktrain_patconv_operator& conv = op->conv_operator;
  if (op->shared_slots > 0) {
    bool kept[CLICKTRAIN_PATCONV_MAX_BUFFERS];
    float* const* buffers = op->band_buffers->ForRun(
        op, op->band_layout, op->shared_slots, conv.buffer_floats, kept);
    for (size_t i = 0; i < op->shared_slots; ++i) {
      conv.buffers[i] = buffers[i];
      // Another node packed its bands there.
      if (!kept[i]) clicktrain_patconv_operator_forget_buffer(&conv, i);
    }
  }
  clicktrain_patconv_operator_run(&conv, static_cast<const float*>(input->data),
                                  static_cast<float*>(output->data), pool);
  for (size_t i = 0; i < op->shared_slots; ++i) conv.buffers[i] = nullptr;
  return kTfLiteOk;
}

TfLiteRegistration KernelRegistration() {
  TfLiteRegistration registration{};
  registration.init = KernelInit;
  registration.free = KernelFree;
  registration.prepare = KernelPrepare;
  registration.invoke = KernelInvoke;
  registration.custom_name = kDelegateKernelName;
  registration.version = 1;
  return registration;
}

// ---------------------------------------------------------------------------
// The delegate: claims our custom nodes, one delegate kernel per node.

TfLiteStatus ReportAbiMismatch(TfLiteContext* context, const std::string& why) {
  if (context->ReportError != nullptr) {
    context->ReportError(context,
                         "%s: the LiteRT runtime's ABI differs from the one "
                         "this library was built for (ai-edge-litert %s): %s\n",
                         kDelegateKernelName, CLICKTRAIN_LITERT_ABI_VERSION,
                         why.c_str());
  }
  return kTfLiteError;
}

TfLiteStatus ReplaceClaimedNodes(TfLiteContext* context,
                                 TfLiteDelegate* delegate,
                                 const std::vector<int>& claimed,
                                 const std::vector<bool>& claimed_sparse_1x1,
                                 const std::vector<bool>& claimed_int8,
                                 const std::vector<bool>& claimed_int8_dw) {
  // One call per node keeps each claimed op its own kernel, so tensors
  // between two adjacent pattern convs stay runtime-allocated.
  const TfLiteRegistration registration = KernelRegistration();
  const TfLiteRegistration sparse_1x1 = ClickTrainSparseConv1x1Registration();
  const TfLiteRegistration int8 = ClickTrainPatternConvS8Registration();
  const TfLiteRegistration int8_dw =
      ClickTrainPatternDepthwiseConvS8Registration();
  alignas(TfLiteIntArray) unsigned char single_storage[sizeof(TfLiteIntArray) +
                                                       sizeof(int)];
  auto* single = reinterpret_cast<TfLiteIntArray*>(single_storage);
  for (size_t c = 0; c < claimed.size(); ++c) {
    single->size = 1;
    single->data[0] = claimed[c];
    TfLiteStatus status = context->ReplaceNodeSubsetsWithDelegateKernels(
        context,
        claimed_int8_dw[c]
            ? int8_dw
            : (claimed_int8[c]
                   ? int8
                   : (claimed_sparse_1x1[c] ? sparse_1x1 : registration)),
        single, delegate);
    if (status != kTfLiteOk) return status;
  }
  // The registration crossed the ABI by value: check that it arrived intact.
  {
    int found = 0;
    TfLiteIntArray* plan = nullptr;
    if (context->GetExecutionPlan(context, &plan) != kTfLiteOk ||
        plan == nullptr) {
      return ReportNodeError(context, kDelegateKernelName,
                             "cannot read the execution plan");
    }
    for (int i = 0; i < plan->size; ++i) {
      TfLiteNode* node = nullptr;
      TfLiteRegistration* replaced = nullptr;
      if (context->GetNodeAndRegistration(context, plan->data[i], &node,
                                          &replaced) == kTfLiteOk &&
          replaced != nullptr &&
          (replaced->invoke == KernelInvoke ||
           replaced->invoke == sparse_1x1.invoke ||
           replaced->invoke == int8.invoke ||
           replaced->invoke == int8_dw.invoke)) {
        const TfLiteRegistration& ours =
            replaced->invoke == KernelInvoke
                ? registration
                : (replaced->invoke == int8.invoke
                       ? int8
                       : (replaced->invoke == int8_dw.invoke ? int8_dw
                                                             : sparse_1x1));
        if (replaced->prepare != ours.prepare ||
            replaced->custom_name != ours.custom_name) {
          return ReportNodeError(context, kDelegateKernelName,
                                 "TfLiteRegistration layout differs from the "
                                 "runtime's");
        }
        ++found;
      }
    }
    if (found != static_cast<int>(claimed.size())) {
      return ReportNodeError(context, kDelegateKernelName,
                             "claimed %zu nodes but the runtime shows %d",
                             claimed.size(), found);
    }
  }
  return kTfLiteOk;
}


// Hands each claimed node to its delegate kernel, whose Init shares
// `budget`, and checks the result.
TfLiteStatus ClaimNodes(TfLiteContext* context, TfLiteDelegate* delegate,
                        DelegateState* state, MemoryBudget* budget,
                        const std::vector<int>& claimed,
                        const std::vector<bool>& claimed_sparse_1x1,
                        const std::vector<bool>& claimed_int8,
                        const std::vector<bool>& claimed_int8_dw) {
  std::lock_guard<std::mutex> lock(state->prepare_mutex);
  state->preparing_budget = budget;
  // Null when out of memory: each node then keeps buffers of its own.
  state->preparing_band_buffers = SharedBandBuffers::Create();
  const TfLiteStatus status = ReplaceClaimedNodes(
      context, delegate, claimed, claimed_sparse_1x1, claimed_int8,
      claimed_int8_dw);
  if (state->preparing_band_buffers != nullptr) {
    state->preparing_band_buffers->Release();  // the nodes hold theirs
  }
  state->preparing_band_buffers = nullptr;
  state->preparing_budget = nullptr;
  if (status == kTfLiteOk) {
    state->claimed_nodes += static_cast<int>(claimed.size());
  }
  return status;
}

TfLiteStatus DelegatePrepare(TfLiteContext* context,
                             TfLiteDelegate* delegate) {
  std::string why;
  if (!ContextLooksRight(context, &why)) {
    return ReportAbiMismatch(context, why);
  }
  TfLiteIntArray* plan = nullptr;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk ||
      plan == nullptr) {
    return ReportNodeError(context, kDelegateKernelName,
                           "cannot read the execution plan");
  }
  std::vector<int> claimed;
  std::vector<bool> claimed_sparse_1x1;
  std::vector<bool> claimed_int8;
  std::vector<bool> claimed_int8_dw;
  for (int i = 0; i < plan->size; ++i) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* registration = nullptr;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node,
                                        &registration) != kTfLiteOk ||
        registration == nullptr) {
      continue;
    }
    bool depthwise = false;
    const bool sparse_1x1 =
        ClickTrainIsSparseConv1x1(registration->custom_name);
    const bool int8 = ClickTrainIsPatternConvS8(registration->custom_name);
    const bool int8_dw =
        ClickTrainIsPatternDepthwiseConvS8(registration->custom_name);
    if (registration->builtin_code == CLICKTRAIN_TFLITE_BUILTIN_CUSTOM &&
        (sparse_1x1 || int8 || int8_dw ||
         IsPatternConvName(registration->custom_name, &depthwise))) {
      claimed.push_back(plan->data[i]);
      claimed_sparse_1x1.push_back(sparse_1x1);
      claimed_int8.push_back(int8);
      claimed_int8_dw.push_back(int8_dw);
    }
  }
  if (!ClaimedTensorsLookRight(context, claimed, &why)) {
    return ReportAbiMismatch(context, why);
  }
  if (claimed.empty()) return kTfLiteOk;
  size_t declared_bytes = 0;
  if (!clicktrain::DeclaredTensorBytes(context, plan, &declared_bytes, &why)) {
    return ReportNodeError(context, kDelegateKernelName,
                           "the model's tensors are too large: %s",
                           why.c_str());
  }
  MemoryBudget* budget = MemoryBudget::Create(declared_bytes);
  if (budget == nullptr) {
    return ReportNodeError(context, kDelegateKernelName, "out of memory");
  }
  auto* state = static_cast<DelegateState*>(delegate->data_);
  const TfLiteStatus status =
      ClaimNodes(context, delegate, state, budget, claimed, claimed_sparse_1x1,
                 claimed_int8, claimed_int8_dw);
  budget->Release();  // the claimed nodes hold their own references
  return status;
}

}  // namespace

MemoryBudget* ClickTrainDelegateBudget(TfLiteDelegate* delegate) {
  if (delegate == nullptr || delegate->data_ == nullptr) return nullptr;
  return static_cast<DelegateState*>(delegate->data_)->preparing_budget;
}

void ClickTrainDelegateCountFallback(TfLiteDelegate* delegate) {
  if (delegate == nullptr || delegate->data_ == nullptr) return;
  static_cast<DelegateState*>(delegate->data_)->memory_fallbacks.fetch_add(
      1, std::memory_order_relaxed);
}

clicktrain_thread_pool* ClickTrainDelegateThreadPool(TfLiteDelegate* delegate,
                                                     int threads) {
  if (delegate == nullptr || delegate->data_ == nullptr) return nullptr;
  return static_cast<DelegateState*>(delegate->data_)->Pool(threads);
}

// ---------------------------------------------------------------------------
// External-delegate plugin interface, as loaded by
// ai_edge_litert.interpreter.load_delegate().

CLICKTRAIN_EXPORT TfLiteDelegate* tflite_plugin_create_delegate(
    char** option_keys, char** option_values, size_t num_options,
    void (*report_error)(const char*)) {
  (void)option_values;
  if (num_options != 0) {
    if (report_error != nullptr) {
      std::string message = "ClickTrain delegate takes no options. Received: ";
      message += option_keys[0] == nullptr ? "(null)" : option_keys[0];
      report_error(message.c_str());
    }
    return nullptr;
  }
  auto* delegate = new (std::nothrow) TfLiteDelegate();
  auto* state = new (std::nothrow) DelegateState();
  if (delegate == nullptr || state == nullptr) {
    delete delegate;
    delete state;
    return nullptr;
  }
  delegate->data_ = state;
  delegate->Prepare = DelegatePrepare;
  // Without this flag the runtime rejects graphs that still hold unresolved
  // custom ops before our Prepare can claim them.
  delegate->flags = CLICKTRAIN_TFLITE_DELEGATE_ALLOW_DYNAMIC_TENSORS;
  return delegate;
}

CLICKTRAIN_EXPORT void tflite_plugin_destroy_delegate(
    TfLiteDelegate* delegate) {
  if (delegate == nullptr) return;
  delete static_cast<DelegateState*>(delegate->data_);
  delete delegate;
}

// Number of nodes this delegate has claimed across interpreters.
CLICKTRAIN_EXPORT int clicktrain_tflite_claimed_nodes(
    const TfLiteDelegate* delegate) {
  if (delegate == nullptr || delegate->data_ == nullptr) return -1;
  return static_cast<const DelegateState*>(delegate->data_)->claimed_nodes;
}

CLICKTRAIN_EXPORT int clicktrain_tflite_memory_fallbacks(
    const TfLiteDelegate* delegate) {
  if (delegate == nullptr || delegate->data_ == nullptr) return -1;
  return static_cast<const DelegateState*>(delegate->data_)
      ->memory_fallbacks.load(std::memory_order_relaxed);
}

CLICKTRAIN_EXPORT const char* clicktrain_tflite_litert_abi_version(void) {
  return CLICKTRAIN_LITERT_ABI_VERSION;
}

CLICKTRAIN_EXPORT int clicktrain_tflite_format_version(void) {
  return CLICKTRAIN_PATTERN_FORMAT_VERSION;
}

CLICKTRAIN_EXPORT const char* clicktrain_tflite_kernel_name(void) {
  return clicktrain_select_kernels()->name;
}
