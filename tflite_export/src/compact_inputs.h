/* Op glue shared by the pattern-conv nodes (float and int8): where a node's
 * compact tensors sit among its inputs in each format version
 * (include/clicktrain/pattern_conv.h, pattern_conv_s8.h), the bytes their
 * expansion takes, and their checked reading into a
 * clicktrain_compact_tensors. */
#ifndef CLICKTRAIN_COMPACT_INPUTS_H_
#define CLICKTRAIN_COMPACT_INPUTS_H_

#include <cstddef>

#include "compact_weights.h"
#include "litert_abi.h"

namespace clicktrain {

/* Positions in node->inputs; -1 for a tensor the version or op lacks. */
struct CompactInputs {
  int num_inputs;
  int input;                  /* the activations, always 0 */
  int pattern_masks;
  int pattern_run_lengths;    /* version 1 */
  int kernel_input_channels;  /* version 1 */
  int kernel_index;           /* version 2 */
  int values;
  int bias;
  int filter_scales;          /* int8 ops */
};

/* The inputs of a pattern op written in `format_version` (a version
 * clicktrain_parse_op_options accepted); `int8` for the int8 ops, which
 * take filter_scales last. */
CompactInputs CompactInputsOf(int format_version, bool int8);

/* clicktrain_pattern_weights_bytes from the element counts of the node's
 * tensors (`inputs` holds at least layout.num_inputs entries), before any
 * is checked; SIZE_MAX when a tensor is missing or its count overflows. */
size_t CompactWeightBytes(TfLiteContext* context, const int* inputs,
                          const CompactInputs& layout, int format_version,
                          size_t output_channels);

/* Checks the structure tensors (pattern_masks and the version's index
 * tensors) as constants of the right types and ranks and points the
 * structure fields of `tensors` (not values and bias) at them; errors name
 * `kernel_name` and the tensor. */
TfLiteStatus ReadCompactStructure(TfLiteContext* context,
                                  const char* kernel_name, const int* inputs,
                                  const CompactInputs& layout,
                                  int format_version,
                                  clicktrain_compact_tensors* tensors);

}  // namespace clicktrain

#endif  /* CLICKTRAIN_COMPACT_INPUTS_H_ */
