#include "sparse_conv1x1_options.h"

#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "clicktrain/sparse_conv1x1.h"
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
  if (!value.IsIntOrUint()) {
    Fail(error, error_size, "custom options lack the integer '%s'", key);
    return false;
  }
  // A uint above INT64_MAX is out of range whatever AsInt64 makes of it.
  const bool huge = value.IsUInt() && value.AsUInt64() > static_cast<uint64_t>(high);
  const int64_t number = huge ? high + 1 : value.AsInt64();
  if (number < low || number > high) {
    Fail(error, error_size,
         "custom option '%s' must be in [%lld, %lld]. Received: %s%lld", key,
         static_cast<long long>(low), static_cast<long long>(high),
         huge ? "more than " : "", static_cast<long long>(huge ? high : number));
    return false;
  }
  *out = static_cast<int>(number);
  return true;
}

}  // namespace

extern "C" int clicktrain_parse_spconv1x1_options(
    const void* data, size_t size, clicktrain_spconv1x1_options* options,
    char* error, size_t error_size) {
  std::memset(options, 0, sizeof(*options));
  const auto* bytes = static_cast<const uint8_t*>(data);
  // A flexbuffer is at least a value, its type byte and its width byte.
  if (bytes == nullptr || size < 3 ||
      size > CLICKTRAIN_SPCONV1X1_MAX_OPTIONS_BYTES) {
    return Fail(error, error_size,
                "custom options must be a flexbuffer of 3 to %d bytes. "
                "Received: %zu bytes", CLICKTRAIN_SPCONV1X1_MAX_OPTIONS_BYTES,
                size);
  }
  // The reuse tracker visits each vector once, keeping verification linear.
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
  int version = 0;
  if (!ReadInt(map, "format_version", 1, 1 << 30, &version, error,
               error_size)) {
    return -1;
  }
  if (version != CLICKTRAIN_SPCONV1X1_FORMAT_VERSION) {
    return Fail(error, error_size,
                "unsupported sparse 1x1 format_version %d (this build reads "
                "version %d); re-export the model with a matching "
                "tf_clicktrain", version, CLICKTRAIN_SPCONV1X1_FORMAT_VERSION);
  }
  if (!ReadInt(map, "input_channels", 1, CLICKTRAIN_SPCONV1X1_MAX_CHANNELS,
               &options->input_channels, error, error_size) ||
      !ReadInt(map, "output_channels", 1, CLICKTRAIN_SPCONV1X1_MAX_CHANNELS,
               &options->output_channels, error, error_size) ||
      !ReadInt(map, "stride_h", 1, CLICKTRAIN_SPCONV1X1_MAX_STRIDE,
               &options->stride_h, error, error_size) ||
      !ReadInt(map, "stride_w", 1, CLICKTRAIN_SPCONV1X1_MAX_STRIDE,
               &options->stride_w, error, error_size)) {
    return -1;
  }
  const flexbuffers::Reference activation = map["fused_activation"];
  if (!activation.IsString()) {
    return Fail(error, error_size,
                "custom options lack the string 'fused_activation'");
  }
  static const struct {
    const char* name;
    float low, high;
  } kClamps[] = {{"NONE", -INFINITY, INFINITY},
                 {"RELU", 0.0f, INFINITY},
                 {"RELU_N1_TO_1", -1.0f, 1.0f},
                 {"RELU6", 0.0f, 6.0f}};
  const flexbuffers::String text = activation.AsString();
  for (const auto& clamp : kClamps) {
    if (text.length() == std::strlen(clamp.name) &&
        std::memcmp(text.c_str(), clamp.name, text.length()) == 0) {
      options->output_min = clamp.low;
      options->output_max = clamp.high;
      return 0;
    }
  }
  return Fail(error, error_size,
              "custom option 'fused_activation' must be NONE, RELU, "
              "RELU_N1_TO_1 or RELU6");
}
