"""Quantization-aware training to full-integer int8, keeping pattern sparsity.

- `quantize_model(model)`: BatchNorm folded, kernels fake-quantized per
  channel after their sparsity mask, activations over moving int8 ranges.
- `QuantizeWrapper`: the wrapper layer holding that state.
- `quantize_scope`, `quantize_wrappers`.

Export the trained model with `ct.tflite.convert(qat_model)`.
"""

from tf_clicktrain.quantization.quantize import quantize_model
from tf_clicktrain.quantization.quantize import quantize_scope
from tf_clicktrain.quantization.quantize import quantize_wrappers
from tf_clicktrain.quantization.quantize_wrapper import QuantizeWrapper
