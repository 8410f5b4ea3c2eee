"""TFLite / LiteRT export of pattern-sparse models.

- `convert(model)`: Keras model -> .tflite bytes in which pattern-sparse 3x3
  convolutions are compact `ClickTrainPatternConv2D` /
  `ClickTrainPatternDepthwiseConv2D` custom ops (`custom_ops=False`: a
  builtin-only file for stock runtimes).
- `replace_pattern_convs(tflite_bytes)`: the same rewrite on a .tflite file
  made by any converter call.
- `Interpreter(...)`: LiteRT's Interpreter with those ops available.
- `compact_format`: the compact weight format, in NumPy.
- `native_library`: locating and loading the native delegate library.
"""

from tf_clicktrain.tflite import compact_format
from tf_clicktrain.tflite import native_library
from tf_clicktrain.tflite.converter import convert
from tf_clicktrain.tflite.interpreter import Interpreter
from tf_clicktrain.tflite.model_rewrite import LayerReport
from tf_clicktrain.tflite.model_rewrite import count_pattern_ops
from tf_clicktrain.tflite.model_rewrite import replace_pattern_convs
