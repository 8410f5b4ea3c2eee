// libFuzzer target over everything a .tflite file can feed the op glue of
// the pattern convs (float and int8, ClickTrainPatternConv2DInt8 and
// ClickTrainPatternDepthwiseConv2DInt8) and of the
// sparse 1x1 conv (ClickTrainSparseConv1x1): custom options (raw bytes, or a flexbuffer map built from fuzzed fields),
// the compact-weight tensors (types, ranks, shapes, byte sizes, contents,
// constness, tensor indices), the int8 quantization (scales, zero points)
// and the input shape. It drives the real
// delegate entry points (tflite_plugin_create_delegate -> Prepare -> the
// node's init / prepare / invoke) through a minimal stand-in for the
// runtime's TfLiteContext that keeps the runtime's own guarantees (a
// tensor's buffer holds exactly `bytes` bytes), so AddressSanitizer flags
// any read the glue makes beyond what the file provided.
//
//   make -C tflite_export fuzz            # >= 1,000,000 runs
//   make -C tflite_export fuzz-short      # ~25 s, for CI
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "flatbuffers/flexbuffers.h"
#include "litert_abi.h"

extern "C" TfLiteDelegate* tflite_plugin_create_delegate(
    char** option_keys, char** option_values, size_t num_options,
    void (*report_error)(const char*));
extern "C" void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);

namespace {

constexpr int kNumTensors = 8;  // 0 input, 1..5 weights, 6 output, 7 spare
                                // (int8: filter_scales)
constexpr int kFilterScales = 7;

// TfLiteAffineQuantization, as the runtime lays it out.
struct AffineQuantization {
  TfLiteIntArray* scale;  // a TfLiteFloatArray: int size, float data[]
  TfLiteIntArray* zero_point;
  int32_t quantized_dimension;
};
constexpr size_t kMaxElements = 1 << 16;

struct FakeRuntime {
  TfLiteContext context{};
  std::vector<TfLiteTensor> tensors;
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<TfLiteIntArray*> arrays;
  std::vector<AffineQuantization> affine = std::vector<AffineQuantization>(2);
  TfLiteNode node{};
  TfLiteRegistration custom{};
  TfLiteIntArray* plan = nullptr;
  // Filled by ReplaceNodeSubsetsWithDelegateKernels.
  bool replaced = false;
  TfLiteRegistration kernel{};
  TfLiteNode kernel_node{};
  TfLiteDelegate* delegate = nullptr;

  TfLiteIntArray* Array(const std::vector<int>& values) {
    auto* array = static_cast<TfLiteIntArray*>(
        std::malloc(sizeof(TfLiteIntArray) + sizeof(int) * values.size()));
    array->size = static_cast<int>(values.size());
    if (!values.empty()) {
      std::memcpy(array->data, values.data(), sizeof(int) * values.size());
    }
    arrays.push_back(array);
    return array;
  }
  ~FakeRuntime() {
    for (TfLiteIntArray* array : arrays) std::free(array);
    for (TfLiteTensor& tensor : tensors) {
      if (tensor.allocation_type == kTfLiteDynamic) std::free(tensor.data);
    }
  }
};

FakeRuntime* Runtime(TfLiteContext* context) {
  return static_cast<FakeRuntime*>(context->impl_);
}

TfLiteStatus GetExecutionPlan(TfLiteContext* context, TfLiteIntArray** plan) {
  *plan = Runtime(context)->plan;
  return kTfLiteOk;
}

TfLiteStatus GetNodeAndRegistration(TfLiteContext* context, int index,
                                    TfLiteNode** node,
                                    TfLiteRegistration** registration) {
  FakeRuntime* runtime = Runtime(context);
  if (index != 0) return kTfLiteError;
  if (runtime->replaced) {
    *node = &runtime->kernel_node;
    *registration = &runtime->kernel;
  } else {
    *node = &runtime->node;
    *registration = &runtime->custom;
  }
  return kTfLiteOk;
}

TfLiteStatus Replace(TfLiteContext* context, TfLiteRegistration registration,
                     const TfLiteIntArray* nodes, TfLiteDelegate* delegate) {
  FakeRuntime* runtime = Runtime(context);
  if (nodes->size != 1 || nodes->data[0] != 0) return kTfLiteError;
  TfLiteDelegateParams params{};
  params.delegate = delegate;
  params.nodes_to_replace = const_cast<TfLiteIntArray*>(nodes);
  // The runtime calls init with the params while the original node is
  // still in place, then swaps in the delegate kernel.
  void* user_data = registration.init(
      context, reinterpret_cast<const char*>(&params), 0);
  runtime->kernel = registration;
  runtime->kernel_node = runtime->node;
  runtime->kernel_node.user_data = user_data;
  runtime->kernel_node.delegate = delegate;
  runtime->replaced = true;
  return kTfLiteOk;
}

size_t TypeSize(TfLiteType type);

TfLiteStatus ResizeTensor(TfLiteContext* context, TfLiteTensor* tensor,
                          TfLiteIntArray* size) {
  size_t elements = 1;
  for (int d = 0; d < size->size; ++d) elements *= size->data[d];
  Runtime(context)->arrays.push_back(size);  // the runtime owns it now
  tensor->dims = size;
  if (tensor->allocation_type == kTfLiteDynamic) std::free(tensor->data);
  tensor->allocation_type = kTfLiteDynamic;
  tensor->bytes = elements * TypeSize(tensor->type);
  tensor->data = elements <= kMaxElements ? std::malloc(tensor->bytes + 1) : nullptr;
  if (tensor->data == nullptr) tensor->bytes = 0;
  return kTfLiteOk;
}

void ReportError(TfLiteContext*, const char*, ...) {}

TfLiteType PickType(FuzzedDataProvider& data, TfLiteType likely) {
  static const TfLiteType kTypes[] = {kTfLiteFloat32, kTfLiteUInt8,
                                      kTfLiteUInt16, kTfLiteInt32,
                                      kTfLiteInt8, kTfLiteNoType};
  if (data.ConsumeIntegralInRange<int>(0, 7) != 0) return likely;
  return kTypes[data.ConsumeIntegralInRange<size_t>(0, 5)];
}

size_t TypeSize(TfLiteType type) {
  switch (type) {
    case kTfLiteFloat32: case kTfLiteInt32: return 4;
    case kTfLiteUInt16: return 2;
    case kTfLiteUInt8: case kTfLiteInt8: return 1;
    default: return 0;
  }
}

// A tensor whose shape is mostly consistent with its bytes, sometimes not.
void MakeTensor(FakeRuntime& runtime, FuzzedDataProvider& data, int index,
                TfLiteType likely_type, int likely_rank, int max_dim) {
  TfLiteTensor& tensor = runtime.tensors[index];
  tensor.type = PickType(data, likely_type);
  int rank = likely_rank;
  if (data.ConsumeIntegralInRange<int>(0, 9) == 0) {
    rank = data.ConsumeIntegralInRange<int>(0, 5);
  }
  std::vector<int> dims(rank);
  size_t elements = 1;
  for (int d = 0; d < rank; ++d) {
    dims[d] = data.ConsumeIntegralInRange<int>(
        data.ConsumeIntegralInRange<int>(0, 15) == 0 ? -3 : 0, max_dim);
    elements *= dims[d] < 0 ? 0 : static_cast<size_t>(dims[d]);
  }
  tensor.dims = runtime.Array(dims);
  size_t bytes = elements * TypeSize(tensor.type);
  if (data.ConsumeIntegralInRange<int>(0, 9) == 0) {
    bytes = data.ConsumeIntegralInRange<size_t>(0, 4096);
  }
  if (bytes > kMaxElements * 4) bytes = 0;
  tensor.allocation_type =
      data.ConsumeIntegralInRange<int>(0, 15) == 0 ? kTfLiteArenaRw : kTfLiteMmapRo;
  std::vector<uint8_t>& buffer = runtime.buffers[index];
  buffer = data.ConsumeBytes<uint8_t>(bytes);
  buffer.resize(bytes);  // zero-fill what the input ran out of
  tensor.bytes = bytes;
  tensor.data = bytes == 0 ? nullptr : buffer.data();
}

// Options of the pattern convs; *version is the format_version written
// (the exporter's 2, or 1 as earlier releases wrote it).
std::vector<uint8_t> Options(FuzzedDataProvider& data, int* channels,
                             int* version) {
  if (data.ConsumeIntegralInRange<int>(0, 7) == 0) {
    return data.ConsumeBytes<uint8_t>(data.ConsumeIntegralInRange<size_t>(0, 128));
  }
  flexbuffers::Builder builder;
  static const char* const kIntKeys[] = {
      "format_version", "input_channels", "output_channels", "stride_h",
      "stride_w", "dilation_h", "dilation_w"};
  const size_t map = builder.StartMap();
  for (size_t k = 0; k < 7; ++k) {
    const int choice = data.ConsumeIntegralInRange<int>(0, 19);
    if (choice == 0) continue;  // missing
    int64_t value;
    if (choice == 1) {
      value = data.ConsumeIntegral<int64_t>();
    } else if (k == 0) {
      value = data.ConsumeBool() ? 2 : 1;
      *version = static_cast<int>(value);
    } else if (k <= 2) {
      value = data.ConsumeIntegralInRange<int>(1, 40);
    } else {
      value = data.ConsumeIntegralInRange<int>(1, 4);
    }
    if (k == 1) *channels = static_cast<int>(value);
    if (choice == 2) {
      builder.String(kIntKeys[k], "1");
    } else if (choice == 3) {
      builder.UInt(kIntKeys[k], static_cast<uint64_t>(value));
    } else {
      builder.Int(kIntKeys[k], value);
    }
  }
  static const char* const kPaddings[] = {"SAME", "VALID", "same", ""};
  static const char* const kActivations[] = {"NONE", "RELU", "RELU_N1_TO_1",
                                             "RELU6", "TANH"};
  if (data.ConsumeIntegralInRange<int>(0, 19) != 0) {
    builder.String("padding", kPaddings[data.ConsumeIntegralInRange<int>(0, 3) % 4]);
  }
  if (data.ConsumeIntegralInRange<int>(0, 19) != 0) {
    builder.String("fused_activation",
                   kActivations[data.ConsumeIntegralInRange<int>(0, 4)]);
  }
  builder.EndMap(map);
  builder.Finish();
  std::vector<uint8_t> bytes = builder.GetBuffer();
  // Sometimes corrupt a byte or cut the end.
  if (!bytes.empty() && data.ConsumeIntegralInRange<int>(0, 7) == 0) {
    bytes[data.ConsumeIntegralInRange<size_t>(0, bytes.size() - 1)] ^=
        data.ConsumeIntegral<uint8_t>();
  }
  if (!bytes.empty() && data.ConsumeIntegralInRange<int>(0, 15) == 0) {
    bytes.resize(data.ConsumeIntegralInRange<size_t>(0, bytes.size() - 1));
  }
  return bytes;
}

// Options of ClickTrainSparseConv1x1: raw bytes, or a map of fuzzed fields.
std::vector<uint8_t> SparseOptions(FuzzedDataProvider& data, int* channels,
                                   int* output_channels) {
  if (data.ConsumeIntegralInRange<int>(0, 7) == 0) {
    return data.ConsumeBytes<uint8_t>(data.ConsumeIntegralInRange<size_t>(0, 128));
  }
  flexbuffers::Builder builder;
  static const char* const kIntKeys[] = {"format_version", "input_channels",
                                         "output_channels", "stride_h",
                                         "stride_w"};
  const size_t map = builder.StartMap();
  for (size_t k = 0; k < 5; ++k) {
    const int choice = data.ConsumeIntegralInRange<int>(0, 19);
    if (choice == 0) continue;  // missing
    int64_t value;
    if (choice == 1) {
      value = data.ConsumeIntegral<int64_t>();
    } else if (k == 0) {
      value = 1;
    } else if (k <= 2) {
      value = data.ConsumeIntegralInRange<int>(1, 40);
    } else {
      value = data.ConsumeIntegralInRange<int>(1, 4);
    }
    if (k == 1) *channels = static_cast<int>(value);
    if (k == 2) *output_channels = static_cast<int>(value);
    if (choice == 2) {
      builder.String(kIntKeys[k], "1");
    } else if (choice == 3) {
      builder.UInt(kIntKeys[k], static_cast<uint64_t>(value));
    } else {
      builder.Int(kIntKeys[k], value);
    }
  }
  static const char* const kActivations[] = {"NONE", "RELU", "RELU_N1_TO_1",
                                             "RELU6", "TANH"};
  if (data.ConsumeIntegralInRange<int>(0, 19) != 0) {
    builder.String("fused_activation",
                   kActivations[data.ConsumeIntegralInRange<int>(0, 4)]);
  }
  builder.EndMap(map);
  builder.Finish();
  std::vector<uint8_t> bytes = builder.GetBuffer();
  if (!bytes.empty() && data.ConsumeIntegralInRange<int>(0, 7) == 0) {
    bytes[data.ConsumeIntegralInRange<size_t>(0, bytes.size() - 1)] ^=
        data.ConsumeIntegral<uint8_t>();
  }
  if (!bytes.empty() && data.ConsumeIntegralInRange<int>(0, 15) == 0) {
    bytes.resize(data.ConsumeIntegralInRange<size_t>(0, bytes.size() - 1));
  }
  return bytes;
}

// A well-formed sparse 1x1 layer in tensors 1 (nonzero_mask), 2 (values)
// and 3 (bias), as the exporter writes it; then sometimes corrupted.
void SparseWeights(FakeRuntime& runtime, FuzzedDataProvider& data,
                   int in_channels, int output_channels) {
  const size_t row_bytes = (static_cast<size_t>(in_channels) + 7) / 8;
  std::vector<uint8_t> mask(static_cast<size_t>(output_channels) * row_bytes, 0);
  size_t kept = 0;
  for (int o = 0; o < output_channels; ++o) {
    for (int i = 0; i < in_channels; ++i) {
      if (data.ConsumeIntegralInRange<int>(0, 3) == 0) {
        mask[o * row_bytes + i / 8] |= static_cast<uint8_t>(1u << (i % 8));
        ++kept;
      }
    }
  }
  std::vector<float> values(kept);
  for (size_t i = 0; i < kept; ++i) values[i] = 0.25f * static_cast<float>(i % 7) - 0.75f;
  std::vector<float> bias(output_channels, 0.5f);
  auto set = [&](int index, TfLiteType type, std::vector<int> shape,
                 const void* source, size_t bytes) {
    TfLiteTensor& tensor = runtime.tensors[index];
    tensor.type = type;
    tensor.dims = runtime.Array(shape);
    tensor.allocation_type = kTfLiteMmapRo;
    runtime.buffers[index].assign(static_cast<const uint8_t*>(source),
                                  static_cast<const uint8_t*>(source) + bytes);
    tensor.bytes = bytes;
    tensor.data = bytes == 0 ? nullptr : runtime.buffers[index].data();
  };
  set(1, kTfLiteUInt8, {output_channels, static_cast<int>(row_bytes)}, mask.data(),
      mask.size());
  set(2, kTfLiteFloat32, {static_cast<int>(kept)}, values.data(), kept * 4);
  set(3, kTfLiteFloat32, {output_channels}, bias.data(), bias.size() * 4);
  while (data.remaining_bytes() > 0 && data.ConsumeIntegralInRange<int>(0, 3) == 0) {
    const int index = data.ConsumeIntegralInRange<int>(1, 3);
    switch (data.ConsumeIntegralInRange<int>(0, 3)) {
      case 0: {  // flip bits in the contents
        std::vector<uint8_t>& buffer = runtime.buffers[index];
        if (!buffer.empty()) {
          buffer[data.ConsumeIntegralInRange<size_t>(0, buffer.size() - 1)] ^=
              data.ConsumeIntegralInRange<uint8_t>(1, 255);
        }
        break;
      }
      case 1:  // a fuzzed tensor in its place
        MakeTensor(runtime, data, index, runtime.tensors[index].type,
                   runtime.tensors[index].dims->size, 64);
        break;
      case 2: {  // a wrong dimension, bytes unchanged
        TfLiteIntArray* dims = runtime.tensors[index].dims;
        if (dims->size > 0) {
          dims->data[data.ConsumeIntegralInRange<int>(0, dims->size - 1)] =
              data.ConsumeIntegralInRange<int>(-2, 70000);
        }
        break;
      }
      default:  // not a constant
        runtime.tensors[index].allocation_type = kTfLiteArenaRw;
    }
  }
}

// Per-tensor int8 quantization of tensor `index`: mostly sane, sometimes a
// scale or zero point out of range, sometimes absent or per-channel.
void Quantize(FakeRuntime& runtime, FuzzedDataProvider& data, int index,
              AffineQuantization* affine) {
  static const float kScales[] = {0.05f, 0.0078125f, 0.0f, -1.0f, INFINITY,
                                  NAN, 1e-30f, 1e30f};
  const float scale = data.ConsumeIntegralInRange<int>(0, 7) != 0
                          ? kScales[data.ConsumeIntegralInRange<int>(0, 1)]
                          : kScales[data.ConsumeIntegralInRange<int>(0, 7)];
  const int32_t zero_point = data.ConsumeIntegralInRange<int>(0, 7) != 0
                                 ? data.ConsumeIntegralInRange<int>(-128, 127)
                                 : data.ConsumeIntegral<int32_t>();
  TfLiteTensor& tensor = runtime.tensors[index];
  tensor.params.scale = scale;
  tensor.params.zero_point = zero_point;
  int scale_bits;
  std::memcpy(&scale_bits, &scale, sizeof(scale));
  const int count = data.ConsumeIntegralInRange<int>(0, 15) == 0
                        ? data.ConsumeIntegralInRange<int>(0, 2)
                        : 1;
  affine->scale = runtime.Array(std::vector<int>(count, scale_bits));
  affine->zero_point = runtime.Array(std::vector<int>(count, zero_point));
  affine->quantized_dimension = 0;
  const bool absent = data.ConsumeIntegralInRange<int>(0, 15) == 0;
  tensor.quantization.type = absent ? 0 : 1;
  tensor.quantization.params = absent ? nullptr : affine;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  FuzzedDataProvider data(bytes, size);
  FakeRuntime runtime;
  runtime.tensors.resize(kNumTensors);
  runtime.buffers.resize(kNumTensors);
  const int kind = data.ConsumeIntegralInRange<int>(0, 4);
  const bool depthwise = kind == 1 || kind == 4;
  const bool sparse_1x1 = kind == 2;
  const bool int8 = kind == 3 || kind == 4;
  int channels = 4;
  int sparse_output_channels = 4;
  int version = 2;
  std::vector<uint8_t> options =
      sparse_1x1 ? SparseOptions(data, &channels, &sparse_output_channels)
                 : Options(data, &channels, &version);
  if (channels < 1 || channels > 40) channels = 4;
  if (sparse_output_channels < 1 || sparse_output_channels > 40) {
    sparse_output_channels = 4;
  }

  // Input: NHWC, consistent with the options' channels most of the time.
  TfLiteTensor& input = runtime.tensors[0];
  input.type = PickType(data, int8 ? kTfLiteInt8 : kTfLiteFloat32);
  const int rank = data.ConsumeIntegralInRange<int>(0, 15) == 0
                       ? data.ConsumeIntegralInRange<int>(0, 5)
                       : 4;
  std::vector<int> dims(rank);
  size_t elements = 1;
  for (int d = 0; d < rank; ++d) {
    dims[d] = d == 3 && data.ConsumeIntegralInRange<int>(0, 7) != 0
                  ? channels
                  : data.ConsumeIntegralInRange<int>(d == 0 ? 0 : 1, 12);
    elements *= static_cast<size_t>(dims[d]);
  }
  input.dims = runtime.Array(dims);
  input.allocation_type = kTfLiteArenaRw;
  if (elements > kMaxElements) return 0;
  runtime.buffers[0].assign(elements * (int8 ? 1 : sizeof(float)), 0);
  for (size_t i = 0; i < runtime.buffers[0].size(); ++i) runtime.buffers[0][i] = static_cast<uint8_t>(i * 131);
  input.bytes = runtime.buffers[0].size();
  input.data = input.bytes == 0 ? nullptr : runtime.buffers[0].data();

  // Weights: usually a well-formed layer (as the exporter writes it), so
  // the fuzzer reaches the validator's deep checks and the kernels; then
  // sometimes one tensor is corrupted or replaced by a fuzzed one.
  int output_channels = 4;
  if (sparse_1x1) {
    SparseWeights(runtime, data, channels, sparse_output_channels);
  } else {
    const int in_channels = channels;
    output_channels = depthwise ? in_channels : data.ConsumeIntegralInRange<int>(1, 24);
    const int patterns = data.ConsumeIntegralInRange<int>(1, 4);
    std::vector<uint16_t> masks(patterns);
    std::vector<int> popcounts(patterns);
    for (int p = 0; p < patterns; ++p) {
      masks[p] = static_cast<uint16_t>(1 + data.ConsumeIntegralInRange<int>(0, 510));
      popcounts[p] = __builtin_popcount(masks[p]);
    }
    // Pattern of each (filter, input channel) pair, -1 when removed.
    const int per_filter = depthwise ? 1 : in_channels;
    std::vector<int> pattern_of(static_cast<size_t>(output_channels) * per_filter, -1);
    const int removal = data.ConsumeIntegralInRange<int>(0, 4);
    for (int& pattern : pattern_of) {
      if (data.ConsumeIntegralInRange<int>(0, 4) >= removal) {
        pattern = data.ConsumeIntegralInRange<int>(0, patterns - 1);
      }
    }
    size_t num_values = 0;
    for (int pattern : pattern_of) num_values += pattern < 0 ? 0 : popcounts[pattern];
    auto set = [&](int index, TfLiteType type, std::vector<int> shape,
                   const void* source, size_t bytes) {
      TfLiteTensor& tensor = runtime.tensors[index];
      tensor.type = type;
      tensor.dims = runtime.Array(shape);
      tensor.allocation_type = kTfLiteMmapRo;
      runtime.buffers[index].assign(static_cast<const uint8_t*>(source),
                                    static_cast<const uint8_t*>(source) + bytes);
      tensor.bytes = bytes;
      tensor.data = bytes == 0 ? nullptr : runtime.buffers[index].data();
    };
    set(1, kTfLiteUInt16, {patterns}, masks.data(), masks.size() * 2);
    // The values' order: version 1 groups a filter's kernels by pattern,
    // version 2 keeps pair order; the fuzzer's values need no order.
    if (version == 1) {
      std::vector<uint16_t> runs(static_cast<size_t>(output_channels) * patterns, 0);
      std::vector<uint16_t> kernel_channels;
      for (int o = 0; o < output_channels; ++o) {
        for (int p = 0; p < patterns; ++p) {
          for (int j = 0; j < per_filter; ++j) {
            if (pattern_of[static_cast<size_t>(o) * per_filter + j] != p) continue;
            ++runs[static_cast<size_t>(o) * patterns + p];
            kernel_channels.push_back(static_cast<uint16_t>(depthwise ? o : j));
          }
        }
      }
      if (data.ConsumeBool()) {
        set(2, kTfLiteUInt16, {output_channels, patterns}, runs.data(), runs.size() * 2);
        set(3, kTfLiteUInt16, {static_cast<int>(kernel_channels.size())},
            kernel_channels.data(), kernel_channels.size() * 2);
      } else {
        std::vector<uint8_t> narrow_runs(runs.begin(), runs.end());
        std::vector<uint8_t> narrow_channels(kernel_channels.begin(), kernel_channels.end());
        set(2, kTfLiteUInt8, {output_channels, patterns}, narrow_runs.data(), narrow_runs.size());
        set(3, kTfLiteUInt8, {static_cast<int>(narrow_channels.size())},
            narrow_channels.data(), narrow_channels.size());
      }
    } else {
      // kernel_index: gap_bits, then Rice-coded gaps and pattern ids.
      const unsigned gap_bits = data.ConsumeIntegralInRange<int>(0, 15) == 0
                                    ? data.ConsumeIntegralInRange<unsigned>(0, 40)
                                    : data.ConsumeIntegralInRange<unsigned>(0, 3);
      unsigned id_bits = 0;
      while ((1 << id_bits) < patterns) ++id_bits;
      std::vector<uint8_t> index(1, static_cast<uint8_t>(gap_bits));
      size_t bit = 0;
      auto put = [&](uint64_t value, unsigned count) {
        for (unsigned b = 0; b < count; ++b, ++bit) {
          if (bit / 8 + 1 >= index.size()) index.push_back(0);
          if (b < 64 && ((value >> b) & 1u)) index[1 + bit / 8] |= static_cast<uint8_t>(1u << (bit % 8));
        }
      };
      auto put_gap = [&](uint64_t gap) {
        const unsigned shift = gap_bits < 64 ? gap_bits : 63;
        for (uint64_t q = gap >> shift; q > 0; --q) put(1, 1);
        put(0, 1);
        put(gap, gap_bits);
      };
      size_t next = 0;
      for (size_t pair = 0; pair < pattern_of.size(); ++pair) {
        if (pattern_of[pair] < 0) continue;
        put_gap(pair - next);
        put(static_cast<uint64_t>(pattern_of[pair]), id_bits);
        next = pair + 1;
      }
      put_gap(pattern_of.size() - next);
      set(2, kTfLiteUInt8, {static_cast<int>(index.size())}, index.data(), index.size());
    }
    const int values_slot = version == 1 ? 4 : 3;
    const int bias_slot = values_slot + 1;
    if (int8) {
      std::vector<int8_t> values(num_values);
      for (size_t i = 0; i < num_values; ++i) values[i] = static_cast<int8_t>(i * 37);
      set(values_slot, kTfLiteInt8, {static_cast<int>(num_values)}, values.data(),
          values.size());
      std::vector<int32_t> bias(output_channels);
      for (int o = 0; o < output_channels; ++o) bias[o] = (o % 2 ? -1 : 1) * (1 << (o % 31));
      set(bias_slot, kTfLiteInt32, {output_channels}, bias.data(), bias.size() * 4);
      std::vector<float> scales(output_channels, 0.01f);
      if (data.ConsumeIntegralInRange<int>(0, 7) == 0) {
        static const float kBad[] = {0.0f, -0.5f, NAN, INFINITY, 1e30f, 1e-40f};
        scales[data.ConsumeIntegralInRange<int>(0, output_channels - 1)] =
            kBad[data.ConsumeIntegralInRange<int>(0, 5)];
      }
      set(kFilterScales, kTfLiteFloat32, {output_channels}, scales.data(),
          scales.size() * 4);
    } else {
      std::vector<float> values(num_values);
      for (size_t i = 0; i < num_values; ++i) values[i] = 0.25f * static_cast<float>(i % 7) - 0.75f;
      set(values_slot, kTfLiteFloat32, {static_cast<int>(num_values)}, values.data(),
          values.size() * 4);
      std::vector<float> bias(output_channels, 0.5f);
      set(bias_slot, kTfLiteFloat32, {output_channels}, bias.data(), bias.size() * 4);
    }
    // Corruptions.
    while (data.remaining_bytes() > 0 && data.ConsumeIntegralInRange<int>(0, 3) == 0) {
      int index = data.ConsumeIntegralInRange<int>(1, int8 ? bias_slot + 1 : bias_slot);
      if (index > bias_slot) index = kFilterScales;
      switch (data.ConsumeIntegralInRange<int>(0, 3)) {
        case 0: {  // flip bits in the contents
          std::vector<uint8_t>& buffer = runtime.buffers[index];
          if (!buffer.empty()) {
            buffer[data.ConsumeIntegralInRange<size_t>(0, buffer.size() - 1)] ^=
                data.ConsumeIntegralInRange<uint8_t>(1, 255);
          }
          break;
        }
        case 1:  // a fuzzed tensor in its place
          MakeTensor(runtime, data, index, runtime.tensors[index].type,
                     runtime.tensors[index].dims->size, 64);
          break;
        case 2: {  // a wrong dimension, bytes unchanged
          TfLiteIntArray* dims = runtime.tensors[index].dims;
          if (dims->size > 0) {
            dims->data[data.ConsumeIntegralInRange<int>(0, dims->size - 1)] =
                data.ConsumeIntegralInRange<int>(-2, 70000);
          }
          break;
        }
        default:  // not a constant
          runtime.tensors[index].allocation_type = kTfLiteArenaRw;
      }
    }
  }
  runtime.tensors[6].type = int8 ? PickType(data, kTfLiteInt8) : kTfLiteFloat32;
  runtime.tensors[6].allocation_type = kTfLiteArenaRw;
  runtime.tensors[6].dims = runtime.Array({});
  if (int8) {
    Quantize(runtime, data, 0, &runtime.affine[0]);
    Quantize(runtime, data, 6, &runtime.affine[1]);
  }

  std::vector<int> inputs = {0, 1, 2, 3, 4, 5};
  if (sparse_1x1) {
    inputs = {0, 1, 2, 3};
  } else if (version != 1) {
    inputs = {0, 1, 2, 3, 4};  // no run lengths and channels: kernel_index
  }
  const size_t bias_position = inputs.size() - 1;
  if (int8) inputs.push_back(kFilterScales);
  if (data.ConsumeIntegralInRange<int>(0, 7) == 0) {
    inputs[bias_position] = -1;  // no bias
  }
  if (data.ConsumeIntegralInRange<int>(0, 15) == 0) {
    inputs[data.ConsumeIntegralInRange<size_t>(0, inputs.size() - 1)] =
        data.ConsumeIntegralInRange<int>(-5, 20);
  }
  if (data.ConsumeIntegralInRange<int>(0, 31) == 0) inputs.pop_back();
  runtime.node.inputs = runtime.Array(inputs);
  runtime.node.outputs = runtime.Array({6});
  runtime.node.custom_initial_data = options.data();
  runtime.node.custom_initial_data_size = static_cast<int>(options.size());
  runtime.custom.builtin_code = CLICKTRAIN_TFLITE_BUILTIN_CUSTOM;
  runtime.custom.custom_name =
      int8 && depthwise ? "ClickTrainPatternDepthwiseConv2DInt8"
      : int8        ? "ClickTrainPatternConv2DInt8"
      : sparse_1x1 ? "ClickTrainSparseConv1x1"
      : depthwise ? "ClickTrainPatternDepthwiseConv2D"
                  : "ClickTrainPatternConv2D";
  runtime.plan = runtime.Array({0});

  TfLiteContext& context = runtime.context;
  context.impl_ = &runtime;
  context.tensors = runtime.tensors.data();
  context.tensors_size = runtime.tensors.size();
  context.GetExecutionPlan = GetExecutionPlan;
  context.GetNodeAndRegistration = GetNodeAndRegistration;
  context.ReplaceNodeSubsetsWithDelegateKernels = Replace;
  context.ResizeTensor = ResizeTensor;
  context.ReportError = ReportError;
  context.recommended_num_threads = 1;

  TfLiteDelegate* delegate = tflite_plugin_create_delegate(nullptr, nullptr, 0, nullptr);
  if (delegate->Prepare(&context, delegate) == kTfLiteOk && runtime.replaced) {
    TfLiteNode* node = &runtime.kernel_node;
    // The runtime prepares again after a resize: twice, like it.
    if (runtime.kernel.prepare(&context, node) == kTfLiteOk &&
        runtime.kernel.prepare(&context, node) == kTfLiteOk) {
      runtime.kernel.invoke(&context, node);
    }
    runtime.kernel.free(&context, node->user_data);
  }
  tflite_plugin_destroy_delegate(delegate);
  return 0;
}
