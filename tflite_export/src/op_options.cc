#include "op_options.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "flatbuffers/flexbuffers.h"

namespace {

int Fail(char* error, size_t error_size, const char* format, ...) {
  if (error != nullptr && error_size > 0) {
    va_list args;
    va_start(args, format);
    vsnprintf(error, error_size, format, args);
    va_end(args);
  }
  return -1;
}

// Reads integer `key` into `out`, requiring it to lie in [low, high].
bool ReadInt(const flexbuffers::Map& map, const char* key, int64_t low,
             int64_t high, int* out, char* error, size_t error_size) {
  const flexbuffers::Reference value = map[key];
  if (value.IsNull()) {
    Fail(error, error_size, "custom options lack the integer '%s'", key);
    return false;
  }
  if (!value.IsIntOrUint()) {
    Fail(error, error_size, "custom option '%s' must be an integer", key);
    return false;
  }
  const int64_t number = value.IsInt()
                             ? value.AsInt64()
                             : static_cast<int64_t>(std::min<uint64_t>(
                                   value.AsUInt64(),
                                   std::numeric_limits<int64_t>::max()));
  if (number < low || number > high) {
    Fail(error, error_size,
         "custom option '%s' must be in [%lld, %lld]. Received: %lld", key,
         static_cast<long long>(low), static_cast<long long>(high),
         static_cast<long long>(number));
    return false;
  }
  *out = static_cast<int>(number);
  return true;
}

// Reads string `key` and maps it to the index of its match in `names`.
bool ReadChoice(const flexbuffers::Map& map, const char* key,
                const char* const* names, int num_names, int* out,
                char* error, size_t error_size) {
  const flexbuffers::Reference value = map[key];
  if (!value.IsString()) {
    Fail(error, error_size, "custom options lack the string '%s'", key);
    return false;
  }
  const flexbuffers::String text = value.AsString();
  for (int i = 0; i < num_names; ++i) {
    if (text.length() == std::strlen(names[i]) &&
        std::memcmp(text.c_str(), names[i], text.length()) == 0) {
      *out = i;
      return true;
    }
  }
  Fail(error, error_size, "custom option '%s' has an unknown value", key);
  return false;
}

}  // namespace

extern "C" int clicktrain_parse_op_options(const void* data, size_t size,
                                           clicktrain_op_options* options,
                                           char* error, size_t error_size) {
  std::memset(options, 0, sizeof(*options));
  const auto* bytes = static_cast<const uint8_t*>(data);
  // A flexbuffer is at least a value, its type byte and its width byte.
  if (bytes == nullptr || size < 3 || size > CLICKTRAIN_MAX_OPTIONS_BYTES) {
    return Fail(error, error_size,
                "custom options must be a flexbuffer of 3 to %d bytes. "
                "Received: %zu bytes", CLICKTRAIN_MAX_OPTIONS_BYTES, size);
  }
  // The reuse tracker visits each vector once: without it, n offsets to one
  // n-element vector cost n^2 steps.
  std::vector<uint8_t> reuse_tracker;
  if (!flexbuffers::VerifyBuffer(bytes, size, &reuse_tracker)) {
    return Fail(error, error_size,
                "custom options are not a valid flexbuffer (%zu bytes)", size);
  }
  const flexbuffers::Reference root = flexbuffers::GetRoot(bytes, size);
  if (!root.IsMap()) {
    return Fail(error, error_size, "custom options must be a flexbuffer map");
  }
  const flexbuffers::Map map = root.AsMap();
  if (!ReadInt(map, "format_version", 1, 1 << 30, &options->format_version,
               error, error_size)) {
    return -1;
  }
  if (options->format_version < CLICKTRAIN_PATTERN_OLDEST_FORMAT_VERSION ||
      options->format_version > CLICKTRAIN_PATTERN_FORMAT_VERSION) {
    return Fail(error, error_size,
                "unsupported compact format_version %d (this build reads "
                "versions %d to %d); re-export the model with a matching "
                "tf_clicktrain", options->format_version,
                CLICKTRAIN_PATTERN_OLDEST_FORMAT_VERSION,
                CLICKTRAIN_PATTERN_FORMAT_VERSION);
  }
  static const char* const kPaddings[] = {"SAME", "VALID"};
  static const char* const kActivations[] = {"NONE", "RELU", "RELU_N1_TO_1",
                                             "RELU6"};
  int padding = 0;
  int activation = 0;
  if (!ReadInt(map, "input_channels", 1, CLICKTRAIN_MAX_CHANNELS,
               &options->input_channels, error, error_size) ||
      !ReadInt(map, "output_channels", 1, CLICKTRAIN_MAX_CHANNELS,
               &options->output_channels, error, error_size) ||
      !ReadInt(map, "stride_h", 1, CLICKTRAIN_MAX_STRIDE, &options->stride_h,
               error, error_size) ||
      !ReadInt(map, "stride_w", 1, CLICKTRAIN_MAX_STRIDE, &options->stride_w,
               error, error_size) ||
      !ReadInt(map, "dilation_h", 1, CLICKTRAIN_MAX_DILATION,
               &options->dilation_h, error, error_size) ||
      !ReadInt(map, "dilation_w", 1, CLICKTRAIN_MAX_DILATION,
               &options->dilation_w, error, error_size) ||
      !ReadChoice(map, "padding", kPaddings, 2, &padding, error,
                  error_size) ||
      !ReadChoice(map, "fused_activation", kActivations, 4, &activation,
                  error, error_size)) {
    return -1;
  }
  options->padding = static_cast<clicktrain_padding>(padding);
  options->activation = static_cast<clicktrain_activation>(activation);
  return 0;
}

extern "C" int clicktrain_compute_geometry(
    const clicktrain_op_options* options, int batch, int input_height,
    int input_width, int input_channels, clicktrain_conv_geometry* geometry,
    char* error, size_t error_size) {
  std::memset(geometry, 0, sizeof(*geometry));
  constexpr int kMaxSide = 1 << 24;
  if (batch < 0 || input_height < 1 || input_width < 1 ||
      input_height > kMaxSide || input_width > kMaxSide) {
    return Fail(error, error_size,
                "input must have batch >= 0 and height, width in [1, 2^24]. "
                "Received: [%d, %d, %d, %d]", batch, input_height, input_width,
                input_channels);
  }
  if (input_channels != options->input_channels) {
    return Fail(error, error_size,
                "input has %d channels but the layer was exported for %d",
                input_channels, options->input_channels);
  }
  const int extent_h = (CLICKTRAIN_KERNEL_SIZE - 1) * options->dilation_h + 1;
  const int extent_w = (CLICKTRAIN_KERNEL_SIZE - 1) * options->dilation_w + 1;
  int output_height;
  int output_width;
  if (options->padding == CLICKTRAIN_PADDING_SAME) {
    output_height = (input_height + options->stride_h - 1) / options->stride_h;
    output_width = (input_width + options->stride_w - 1) / options->stride_w;
  } else {
    output_height =
        (input_height - extent_h + options->stride_h) / options->stride_h;
    output_width =
        (input_width - extent_w + options->stride_w) / options->stride_w;
  }
  if (output_height < 1 || output_width < 1) {
    return Fail(error, error_size,
                "a %dx%d input is smaller than the %dx%d dilated kernel with "
                "VALID padding", input_height, input_width, extent_h,
                extent_w);
  }
  const int total_pad_h = std::max(
      0, (output_height - 1) * options->stride_h + extent_h - input_height);
  const int total_pad_w = std::max(
      0, (output_width - 1) * options->stride_w + extent_w - input_width);

  geometry->batch = batch;
  geometry->input_height = input_height;
  geometry->input_width = input_width;
  geometry->input_channels = input_channels;
  geometry->output_height = output_height;
  geometry->output_width = output_width;
  geometry->output_channels = options->output_channels;
  geometry->stride_h = options->stride_h;
  geometry->stride_w = options->stride_w;
  geometry->dilation_h = options->dilation_h;
  geometry->dilation_w = options->dilation_w;
  geometry->padding_top = total_pad_h / 2;
  geometry->padding_left = total_pad_w / 2;
  switch (options->activation) {
    case CLICKTRAIN_ACTIVATION_RELU:
      geometry->output_min = 0.0f;
      geometry->output_max = INFINITY;
      break;
    case CLICKTRAIN_ACTIVATION_RELU_N1_TO_1:
      geometry->output_min = -1.0f;
      geometry->output_max = 1.0f;
      break;
    case CLICKTRAIN_ACTIVATION_RELU6:
      geometry->output_min = 0.0f;
      geometry->output_max = 6.0f;
      break;
    default:
      geometry->output_min = -INFINITY;
      geometry->output_max = INFINITY;
  }
  return 0;
}
