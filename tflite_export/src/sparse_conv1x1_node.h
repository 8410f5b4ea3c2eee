/* Op glue for ClickTrainSparseConv1x1 nodes: the delegate kernel that
 * validates a node's options and weights (as untrusted input) and runs it
 * with src/sparse_conv1x1_operator.c. The delegate (delegate.cc) claims the
 * nodes and hands them this registration. */
#ifndef CLICKTRAIN_SPARSE_CONV1X1_NODE_H_
#define CLICKTRAIN_SPARSE_CONV1X1_NODE_H_

#include "litert_abi.h"
#include "thread_pool.h"

/* True when `custom_name` names the sparse 1x1 conv op. */
bool ClickTrainIsSparseConv1x1(const char* custom_name);

/* The delegate kernel for one claimed node. */
TfLiteRegistration ClickTrainSparseConv1x1Registration();

/* Provided by the delegate: its pool for `threads` threads (NULL: run on
 * the caller), shared by every node it claimed. */
clicktrain_thread_pool* ClickTrainDelegateThreadPool(TfLiteDelegate* delegate,
                                                     int threads);

#endif  /* CLICKTRAIN_SPARSE_CONV1X1_NODE_H_ */
