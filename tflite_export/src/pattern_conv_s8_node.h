/* Op glue for ClickTrainPatternConv2DInt8 nodes: the delegate kernel that
 * validates a node's options, weights and quantization (as untrusted input)
 * and runs it with the int8 pattern-conv kernel. The delegate (delegate.cc)
 * claims the nodes and hands them this registration. */
#ifndef CLICKTRAIN_PATTERN_CONV_S8_NODE_H_
#define CLICKTRAIN_PATTERN_CONV_S8_NODE_H_

#include <cstddef>

#include "clicktrain/pattern_conv_s8.h"
#include "litert_abi.h"
#include "memory_budget.h"
#include "op_options.h"
#include "pattern_conv_s8_operator.h"

/* True when `custom_name` names the int8 pattern conv op. */
bool ClickTrainIsPatternConvS8(const char* custom_name);

/* The delegate kernel for one claimed node. */
TfLiteRegistration ClickTrainPatternConvS8Registration();

namespace clicktrain {

/* Operator inputs of the int8 pattern conv and depthwise conv, see the
 * format in include/clicktrain/pattern_conv_s8.h. */
namespace s8_pattern_input {
enum : int {
  kInput = 0,
  kPatternMasks = 1,
  kRunLengths = 2,
  kKernelInputChannels = 3,
  kValues = 4,
  kBias = 5,
  kFilterScales = 6,
  kNumInputs = 7,
};
}  // namespace s8_pattern_input

/* Bytes an int8 layer of these tensor sizes holds, plus the values widened
 * to float once more while it is built: the structure (with the values
 * widened to float, as the float op's), the int8 values and four
 * per-filter arrays. SIZE_MAX on overflow. */
size_t S8LayerBytes(size_t masks, size_t kernels, size_t values,
                    size_t output_channels);

/* Checks the constant inputs of an int8 pattern op (`inputs`, indexed by
 * s8_pattern_input), resizes `weights_budget` to the layer's bytes and
 * builds `layer` from them; errors name `kernel_name`, the node and, for
 * invalid weights, "invalid <weights_name> weights". */
TfLiteStatus BuildS8Layer(TfLiteContext* context, const char* kernel_name,
                          const char* weights_name, int node_index,
                          const int* inputs, const clicktrain_op_options& options,
                          BudgetShare* weights_budget, clicktrain_s8_layer* layer);

}  // namespace clicktrain

#endif  /* CLICKTRAIN_PATTERN_CONV_S8_NODE_H_ */
