"""Pattern math for 3x3 kernels, with no Keras or TensorFlow in it.

A *pattern* is a 0/1 vector over the 9 positions of a 3x3 kernel (row-major:
position ``3 * row + column``). A layer keeps a small *pattern set* of K
patterns; every kept kernel of the layer uses one of them and every removed
kernel (connectivity pruning) is all zero.

Kernels are handled as a 2-D array ``(num_kernels, 9)``; see
`kernels.to_kernel_rows` for how Keras' ``(3, 3, in, out)`` layout maps onto it.
"""

from tf_clicktrain.patterns import blocks
from tf_clicktrain.patterns.blocks import block_mask
from tf_clicktrain.patterns.connectivity import depth_increasing
from tf_clicktrain.patterns.connectivity import kernels_to_keep
from tf_clicktrain.patterns.connectivity import sparsity_for_compression
from tf_clicktrain.patterns.kernels import filter_group_rows
from tf_clicktrain.patterns.kernels import from_kernel_rows
from tf_clicktrain.patterns.kernels import kernel_row_groups
from tf_clicktrain.patterns.kernels import to_kernel_rows
from tf_clicktrain.patterns.library import candidate_patterns
from tf_clicktrain.patterns.library import pattern_to_string
from tf_clicktrain.patterns.selection import PatternSelection
from tf_clicktrain.patterns.selection import assign_patterns
from tf_clicktrain.patterns.selection import select_pattern_set
from tf_clicktrain.patterns.selection import select_patterns_and_kernels
from tf_clicktrain.patterns.selection import select_patterns_per_filter_group
from tf_clicktrain.patterns.selection import select_patterns_per_group
from tf_clicktrain.patterns.unstructured import magnitude_mask
from tf_clicktrain.patterns.verify import PatternSparsity
from tf_clicktrain.patterns.verify import describe_pattern_sparsity
