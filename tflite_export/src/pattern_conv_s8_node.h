/* Op glue for ClickTrainPatternConv2DInt8 nodes: the delegate kernel that
 * validates a node's options, weights and quantization (as untrusted input)
 * and runs it with the int8 pattern-conv kernel. The delegate (delegate.cc)
 * claims the nodes and hands them this registration. */
#ifndef CLICKTRAIN_PATTERN_CONV_S8_NODE_H_
#define CLICKTRAIN_PATTERN_CONV_S8_NODE_H_

#include "litert_abi.h"

/* True when `custom_name` names the int8 pattern conv op. */
bool ClickTrainIsPatternConvS8(const char* custom_name);

/* The delegate kernel for one claimed node. */
TfLiteRegistration ClickTrainPatternConvS8Registration();

#endif  /* CLICKTRAIN_PATTERN_CONV_S8_NODE_H_ */
