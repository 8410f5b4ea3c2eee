/* Chooses the compute kernels once per process.
 *
 * Only the scalar reference exists so far; SIMD variants (one file per ISA
 * next to f32-patconv/scalar.c) are added here, picked from the CPU's
 * features.
 */
#include "clicktrain/pattern_conv.h"

static const clicktrain_kernel_set kScalarKernels = {
    "scalar",
    clicktrain_f32_patconv_ukernel__scalar,
    clicktrain_f32_patdwconv_ukernel__scalar,
};

const clicktrain_kernel_set* clicktrain_select_kernels(void) {
  return &kScalarKernels;
}
