#include "node_checks.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace clicktrain {

TfLiteStatus ReportNodeError(TfLiteContext* context, const char* kernel_name,
                             const char* format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  context->ReportError(context, "%s: %s\n", kernel_name, message);
  return kTfLiteError;
}

size_t TypeSize(TfLiteType type) {
  switch (type) {
    case kTfLiteFloat32:
    case kTfLiteInt32:
    case kTfLiteUInt32:
      return 4;
    case kTfLiteInt16:
    case kTfLiteUInt16:
    case kTfLiteFloat16:
      return 2;
    case kTfLiteInt8:
    case kTfLiteUInt8:
    case kTfLiteBool:
      return 1;
    case kTfLiteInt64:
    case kTfLiteUInt64:
    case kTfLiteFloat64:
      return 8;
    default:
      return 0;
  }
}

TfLiteTensor* TensorAt(TfLiteContext* context, int index) {
  if (index < 0 || static_cast<size_t>(index) >= context->tensors_size) {
    return nullptr;
  }
  return &context->tensors[index];
}

TfLiteStatus CheckConstant(TfLiteContext* context, const char* kernel_name,
                           const TfLiteTensor* tensor, const char* name,
                           TfLiteType type, TfLiteType other_type, int rank,
                           size_t* shape) {
  if (tensor == nullptr) {
    return ReportNodeError(context, kernel_name,
                           "input tensor '%s' is missing", name);
  }
  if (tensor->type != type &&
      (other_type == kTfLiteNoType || tensor->type != other_type)) {
    return ReportNodeError(context, kernel_name,
                           "input '%s' has the wrong TFLite type %d", name,
                           static_cast<int>(tensor->type));
  }
  if (tensor->allocation_type != kTfLiteMmapRo || tensor->data == nullptr) {
    return ReportNodeError(context, kernel_name,
                           "input '%s' must be a constant tensor", name);
  }
  if (tensor->sparsity != nullptr) {
    return ReportNodeError(context, kernel_name,
                           "input '%s' must be dense, not a TFLite sparse "
                           "tensor",
                           name);
  }
  if (tensor->dims == nullptr || tensor->dims->size != rank) {
    return ReportNodeError(context, kernel_name,
                           "input '%s' must have rank %d", name, rank);
  }
  size_t bytes = TypeSize(tensor->type);
  for (int d = 0; d < rank; ++d) {
    if (tensor->dims->data[d] < 0) {
      return ReportNodeError(context, kernel_name,
                             "input '%s' has a negative dimension", name);
    }
    shape[d] = static_cast<size_t>(tensor->dims->data[d]);
    if (__builtin_mul_overflow(bytes, shape[d], &bytes)) {
      return ReportNodeError(context, kernel_name,
                             "input '%s' has an impossible shape", name);
    }
  }
  if (bytes != tensor->bytes) {
    return ReportNodeError(context, kernel_name,
                           "input '%s' holds %zu bytes, its shape needs %zu",
                           name, tensor->bytes, bytes);
  }
  return kTfLiteOk;
}

TfLiteStatus ResizeOutput(TfLiteContext* context, const char* kernel_name,
                          TfLiteTensor* output, const int shape[4]) {
  const size_t shape_bytes = 4 * sizeof(int);
  if (output->dims != nullptr && output->dims->size == 4 &&
      std::memcmp(output->dims->data, shape, shape_bytes) == 0) {
    return kTfLiteOk;
  }
  if (context->ResizeTensorExplicit != nullptr) {
    return context->ResizeTensorExplicit(context, output, 4, shape);
  }
  // ResizeTensor takes ownership and releases the array with free().
  auto* dims = static_cast<TfLiteIntArray*>(
      std::malloc(sizeof(TfLiteIntArray) + shape_bytes));
  if (dims == nullptr) {
    return ReportNodeError(context, kernel_name,
                           "out of memory");
  }
  dims->size = 4;
  std::memcpy(dims->data, shape, shape_bytes);
  return context->ResizeTensor(context, output, dims);
}

}  // namespace clicktrain
