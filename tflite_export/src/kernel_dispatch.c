/* Chooses the compute kernels once per process from the CPU's features.
 *
 * Each fast variant lives in its own file (f32-patconv/<isa>.c), compiled
 * with only that ISA's flags, so this file (built for the baseline ISA)
 * decides at run time which one is safe to call. TF_CLICKTRAIN_KERNELS
 * (a variant name) overrides the choice, for tests and benchmarks; a name
 * this CPU cannot run is ignored.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "clicktrain/pattern_conv.h"

/* Every set runs the same driver (pattern_conv_operator.c); only the
 * micro-kernels differ. The reference kernels serve layers the fast path
 * does not take. */
#define CLICKTRAIN_KERNEL_SET(variant, tile, lanes)                       \
  {                                                                       \
    .name = #variant,                                                     \
    .conv = clicktrain_f32_patconv_ukernel__scalar,                       \
    .depthwise_conv = clicktrain_f32_patdwconv_ukernel__scalar,           \
    .planar = clicktrain_f32_patconv_planar_ukernel__##variant,           \
    .pixel_tile = (tile),                                                 \
    .vector_floats = (lanes),                                             \
    .transpose = clicktrain_x32_transpose_ukernel__##variant,             \
  }

static const clicktrain_kernel_set kScalarKernels =
    CLICKTRAIN_KERNEL_SET(scalar, 64, 1);

#if defined(__x86_64__) || defined(_M_X64)
static const clicktrain_kernel_set kAvx2Kernels = CLICKTRAIN_KERNEL_SET(avx2, 64, 8);
static const clicktrain_kernel_set kAvx512Kernels =
    CLICKTRAIN_KERNEL_SET(avx512, 128, 16);
#endif

#if defined(__aarch64__)
static const clicktrain_kernel_set kNeonKernels = CLICKTRAIN_KERNEL_SET(neon, 32, 4);
#endif
#undef CLICKTRAIN_KERNEL_SET

size_t clicktrain_available_kernels(const clicktrain_kernel_set** sets,
                                    size_t capacity) {
  size_t count = 0;
#define CLICKTRAIN_ADD(set) \
  do {                      \
    if (count < capacity) sets[count] = (set); \
    ++count;                \
  } while (0)
  CLICKTRAIN_ADD(&kScalarKernels);
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  /* __builtin_cpu_supports also checks that the OS saves the registers. */
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    CLICKTRAIN_ADD(&kAvx2Kernels);
  }
  if (__builtin_cpu_supports("avx512f")) CLICKTRAIN_ADD(&kAvx512Kernels);
#endif
#if defined(__aarch64__)
  CLICKTRAIN_ADD(&kNeonKernels);  /* Advanced SIMD is mandatory on arm64. */
#endif
#undef CLICKTRAIN_ADD
  return count;
}

static const clicktrain_kernel_set* selected_kernels = &kScalarKernels;
static pthread_once_t selection_once = PTHREAD_ONCE_INIT;

static void select_once(void) {
  const clicktrain_kernel_set* sets[8];
  size_t count = clicktrain_available_kernels(sets, 8);
  if (count > 8) count = 8;
  /* Later entries are faster. */
  selected_kernels = sets[count - 1];
  const char* wanted = getenv("TF_CLICKTRAIN_KERNELS");
  if (wanted == NULL) return;
  for (size_t i = 0; i < count; ++i) {
    if (strcmp(sets[i]->name, wanted) == 0) selected_kernels = sets[i];
  }
}

const clicktrain_kernel_set* clicktrain_select_kernels(void) {
  pthread_once(&selection_once, select_once);
  return selected_kernels;
}

/* ------------------------------------------------------------------------
 * Sparse 1x1 conv micro-kernels (include/clicktrain/sparse_conv1x1.h),
 * chosen the same way. */
#include "clicktrain/sparse_conv1x1.h"

size_t clicktrain_available_spconv1x1_ukernels(
    const clicktrain_spconv1x1_ukernels** sets, size_t capacity) {
  size_t count = 0;
  if (count < capacity) sets[count] = &clicktrain_spconv1x1_ukernels__scalar;
  ++count;
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    if (count < capacity) sets[count] = &clicktrain_spconv1x1_ukernels__avx2;
    ++count;
  }
  if (__builtin_cpu_supports("avx512f")) {
    if (count < capacity) sets[count] = &clicktrain_spconv1x1_ukernels__avx512;
    ++count;
  }
#endif
#if defined(__aarch64__)
  if (count < capacity) sets[count] = &clicktrain_spconv1x1_ukernels__neon;
  ++count;
#endif
  return count;
}

static const clicktrain_spconv1x1_ukernels* selected_spconv1x1 =
    &clicktrain_spconv1x1_ukernels__scalar;
static pthread_once_t spconv1x1_selection_once = PTHREAD_ONCE_INIT;

static void select_spconv1x1_once(void) {
  const clicktrain_spconv1x1_ukernels* sets[8];
  size_t count = clicktrain_available_spconv1x1_ukernels(sets, 8);
  if (count > 8) count = 8;
  selected_spconv1x1 = sets[count - 1];  /* later entries are faster */
  const char* wanted = getenv("TF_CLICKTRAIN_KERNELS");
  if (wanted == NULL) return;
  for (size_t i = 0; i < count; ++i) {
    if (strcmp(sets[i]->name, wanted) == 0) selected_spconv1x1 = sets[i];
  }
}

const clicktrain_spconv1x1_ukernels* clicktrain_select_spconv1x1_ukernels(void) {
  pthread_once(&spconv1x1_selection_once, select_spconv1x1_once);
  return selected_spconv1x1;
}
