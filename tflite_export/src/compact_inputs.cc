#include "compact_inputs.h"

#include <cstdint>

#include "memory_budget.h"
#include "node_checks.h"

namespace clicktrain {

CompactInputs CompactInputsOf(int format_version, bool int8) {
  CompactInputs layout{};
  layout.input = 0;
  layout.pattern_masks = 1;
  int next = 2;
  if (format_version == 1) {
    layout.pattern_run_lengths = next++;
    layout.kernel_input_channels = next++;
    layout.kernel_index = -1;
  } else {
    layout.pattern_run_lengths = -1;
    layout.kernel_input_channels = -1;
    layout.kernel_index = next++;
  }
  layout.values = next++;
  layout.bias = next++;
  layout.filter_scales = int8 ? next++ : -1;
  layout.num_inputs = next;
  return layout;
}

size_t CompactWeightBytes(TfLiteContext* context, const int* inputs,
                          const CompactInputs& layout, int format_version,
                          size_t output_channels) {
  clicktrain_compact_tensors counts{};
  counts.format_version = format_version;
  counts.pattern_masks_count =
      ElementCount(TensorAt(context, inputs[layout.pattern_masks]));
  counts.values_count = ElementCount(TensorAt(context, inputs[layout.values]));
  if (layout.kernel_input_channels >= 0) {
    counts.kernel_input_channels_count = ElementCount(
        TensorAt(context, inputs[layout.kernel_input_channels]));
  }
  if (counts.pattern_masks_count == SIZE_MAX || counts.values_count == SIZE_MAX ||
      counts.kernel_input_channels_count == SIZE_MAX) {
    return SIZE_MAX;
  }
  return clicktrain_pattern_weights_bytes(&counts, output_channels);
}

TfLiteStatus ReadCompactStructure(TfLiteContext* context,
                                  const char* kernel_name, const int* inputs,
                                  const CompactInputs& layout,
                                  int format_version,
                                  clicktrain_compact_tensors* tensors) {
  size_t masks_shape[1] = {0};
  const TfLiteTensor* masks = TensorAt(context, inputs[layout.pattern_masks]);
  if (CheckConstant(context, kernel_name, masks, "pattern_masks",
                    kTfLiteUInt16, kTfLiteNoType, 1, masks_shape) != kTfLiteOk) {
    return kTfLiteError;
  }
  tensors->format_version = format_version;
  tensors->pattern_masks = masks->data;
  tensors->pattern_masks_count = masks_shape[0];
  if (format_version == 1) {
    size_t runs_shape[2] = {0, 0}, channels_shape[1] = {0};
    const TfLiteTensor* runs =
        TensorAt(context, inputs[layout.pattern_run_lengths]);
    const TfLiteTensor* channels =
        TensorAt(context, inputs[layout.kernel_input_channels]);
    if (CheckConstant(context, kernel_name, runs, "pattern_run_lengths",
                      kTfLiteUInt8, kTfLiteUInt16, 2, runs_shape) != kTfLiteOk ||
        CheckConstant(context, kernel_name, channels, "kernel_input_channels",
                      kTfLiteUInt8, kTfLiteUInt16, 1,
                      channels_shape) != kTfLiteOk) {
      return kTfLiteError;
    }
    tensors->pattern_run_lengths = runs->data;
    tensors->run_lengths_rows = runs_shape[0];
    tensors->run_lengths_columns = runs_shape[1];
    tensors->run_lengths_element_size = TypeSize(runs->type);
    tensors->kernel_input_channels = channels->data;
    tensors->kernel_input_channels_count = channels_shape[0];
    tensors->kernel_input_channels_element_size = TypeSize(channels->type);
    return kTfLiteOk;
  }
  size_t index_shape[1] = {0};
  const TfLiteTensor* index = TensorAt(context, inputs[layout.kernel_index]);
  if (CheckConstant(context, kernel_name, index, "kernel_index", kTfLiteUInt8,
                    kTfLiteNoType, 1, index_shape) != kTfLiteOk) {
    return kTfLiteError;
  }
  tensors->kernel_index = index->data;
  tensors->kernel_index_count = index_shape[0];
  return kTfLiteOk;
}

}  // namespace clicktrain
