/* Op glue for ClickTrainPatternDepthwiseConv2DInt8 nodes: the delegate
 * kernel that validates a node's options, weights and quantization (as
 * untrusted input, with the int8 pattern conv's checks plus the depthwise
 * structure) and runs it with src/pattern_dwconv_s8_operator.c. The
 * delegate (delegate.cc) claims the nodes and hands them this registration. */
#ifndef CLICKTRAIN_PATTERN_DWCONV_S8_NODE_H_
#define CLICKTRAIN_PATTERN_DWCONV_S8_NODE_H_

#include "litert_abi.h"

/* True when `custom_name` names the int8 pattern depthwise conv op. */
bool ClickTrainIsPatternDepthwiseConvS8(const char* custom_name);

/* The delegate kernel for one claimed node. */
TfLiteRegistration ClickTrainPatternDepthwiseConvS8Registration();

#endif  /* CLICKTRAIN_PATTERN_DWCONV_S8_NODE_H_ */
