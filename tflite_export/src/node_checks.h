/* Checks shared by the delegate kernels of the ClickTrain custom ops
 * (delegate.cc, sparse_conv1x1_node.cc, pattern_conv_s8_node.cc): error
 * reporting under the kernel's name, bounds-checked tensor lookup, validation
 * of a constant weight tensor taken from an untrusted model, and resizing
 * the 4-D output. */
#ifndef CLICKTRAIN_NODE_CHECKS_H_
#define CLICKTRAIN_NODE_CHECKS_H_

#include <cstddef>

#include "litert_abi.h"

namespace clicktrain {

/* Reports "<kernel_name>: <formatted message>" through the runtime and
 * returns kTfLiteError. */
TfLiteStatus ReportNodeError(TfLiteContext* context, const char* kernel_name,
                             const char* format, ...)
    __attribute__((format(printf, 3, 4)));

/* Bytes per element of `type`, 0 for a type without a fixed size. */
size_t TypeSize(TfLiteType type);

/* The tensor at `index`, or nullptr when the index is out of range. */
TfLiteTensor* TensorAt(TfLiteContext* context, int index);

/* Checks that `tensor` (named `name` in errors) is present, of type `type`
 * (or `other_type` unless that is kTfLiteNoType), constant, dense, of rank
 * `rank` and holding exactly the bytes its shape needs; returns its
 * dimensions in `shape`. */
TfLiteStatus CheckConstant(TfLiteContext* context, const char* kernel_name,
                           const TfLiteTensor* tensor, const char* name,
                           TfLiteType type, TfLiteType other_type, int rank,
                           size_t* shape);

/* Gives `output` the NHWC shape `shape` unless it already has it. */
TfLiteStatus ResizeOutput(TfLiteContext* context, const char* kernel_name,
                          TfLiteTensor* output, const int shape[4]);

// Threads for one run: the runtime's recommendation, at most the threads the
// memory budget gave the operator.
inline int BudgetedThreads(const TfLiteContext* context, int max_threads) {
  return context->recommended_num_threads < max_threads
             ? context->recommended_num_threads
             : max_threads;
}

}  // namespace clicktrain

#endif  /* CLICKTRAIN_NODE_CHECKS_H_ */
