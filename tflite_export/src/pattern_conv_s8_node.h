/* Op glue for ClickTrainPatternConv2DInt8 nodes: the delegate kernel that
 * validates a node's options, weights and quantization (as untrusted input)
 * and runs it with the int8 pattern-conv kernel. The delegate (delegate.cc)
 * claims the nodes and hands them this registration. */
#ifndef CLICKTRAIN_PATTERN_CONV_S8_NODE_H_
#define CLICKTRAIN_PATTERN_CONV_S8_NODE_H_

#include <cstddef>

#include "clicktrain/pattern_conv_s8.h"
#include "compact_inputs.h"
#include "litert_abi.h"
#include "memory_budget.h"
#include "op_options.h"
#include "pattern_conv_s8_operator.h"

/* True when `custom_name` names the int8 pattern conv op. */
bool ClickTrainIsPatternConvS8(const char* custom_name);

/* The delegate kernel for one claimed node. */
TfLiteRegistration ClickTrainPatternConvS8Registration();

namespace clicktrain {

/* Bytes an int8 layer holds, plus the values widened to float once more
 * while it is built: the structure (`structure_bytes`, CompactWeightBytes
 * of its tensors: the float op's, values widened to float), the int8
 * values and four per-filter arrays. SIZE_MAX on overflow. */
size_t S8LayerBytes(size_t structure_bytes, size_t values,
                    size_t output_channels);

/* Bytes BuildS8Layer reserves for the node's tensors (`inputs`, laid out
 * as `layout`), from their element counts; SIZE_MAX on overflow. */
size_t S8NodeLayerBytes(TfLiteContext* context, const int* inputs,
                        const CompactInputs& layout,
                        const clicktrain_op_options& options);

/* Checks the constant inputs of an int8 pattern op (`inputs`, laid out as
 * `layout`), resizes `weights_budget` to the layer's bytes and builds
 * `layer` from them (`depthwise`: the depthwise op's structure); errors
 * name `kernel_name`, the node and, for invalid weights, "invalid
 * <weights_name> weights". */
TfLiteStatus BuildS8Layer(TfLiteContext* context, const char* kernel_name,
                          const char* weights_name, int node_index,
                          const int* inputs, const CompactInputs& layout,
                          const clicktrain_op_options& options, bool depthwise,
                          BudgetShare* weights_budget, clicktrain_s8_layer* layer);

}  // namespace clicktrain

#endif  /* CLICKTRAIN_PATTERN_CONV_S8_NODE_H_ */
