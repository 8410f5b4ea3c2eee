"""tf-clicktrain: ClickTrain pattern pruning during training, for Keras 3.

Public API, mirroring tensorflow-model-optimization's sparsity API (its
argument names, ``pruning_schedule=`` and ``sparsity_m_by_n=``, are
accepted; steps are numbered as in tfmot):

- `prune_pattern`, `strip_pruning`, `prune_scope`, `pruning_wrappers`
- `PatternPruningWrapper`, `PrunableLayer`
- `PruningPolicy`, `PruneForLatency`: ``pruning_policy=`` of `prune_pattern`
- `UpdatePruningStep`, `PruningSummaries` (in `fit` or custom loops)
- `schedules`: `ConstantSparsity`, `PolynomialDecay`, `ClickTrainSchedule`
- `patterns`: the pattern math (no Keras)
- `model_stats`: compression figures
- `load_pretrained_weights`: dense weights into a wrapped model
- `RewoundLearningRate`: a learning-rate schedule replayed when the masks apply
- `save_model`, `save_weights`: atomic saves
- `quantize_model`, `QuantizeWrapper`, `quantize_scope`: int8
  quantization-aware training that keeps the patterns
- `distribute`: multi-worker helpers
- loaded on first use: `tflite` (export, interpreter), `report` (pattern
  report PNG)
"""

from tf_clicktrain import distribute
from tf_clicktrain import patterns
from tf_clicktrain import saving
from tf_clicktrain.pruning import schedules
from tf_clicktrain.pruning.callbacks import PruningSummaries
from tf_clicktrain.pruning.callbacks import UpdatePruningStep
from tf_clicktrain.pruning.learning_rate_rewinding import RewoundLearningRate
from tf_clicktrain.pruning.policy import PruneForLatency
from tf_clicktrain.pruning.policy import PruningPolicy
from tf_clicktrain.pruning.prunable_layer import PrunableLayer
from tf_clicktrain.pruning.pretrained import load_pretrained_weights
from tf_clicktrain.pruning.prune import prune_pattern
from tf_clicktrain.pruning.prune import prune_scope
from tf_clicktrain.pruning.prune import pruning_wrappers
from tf_clicktrain.pruning.prune import strip_pruning
from tf_clicktrain.pruning.schedules import ClickTrainSchedule
from tf_clicktrain.pruning.schedules import ConstantSparsity
from tf_clicktrain.pruning.schedules import PolynomialDecay
from tf_clicktrain.pruning.stats import model_stats
from tf_clicktrain.pruning.wrapper import PatternPruningWrapper
from tf_clicktrain.quantization import QuantizeWrapper
from tf_clicktrain.quantization import quantize_model
from tf_clicktrain.quantization import quantize_scope
from tf_clicktrain.saving import save_model
from tf_clicktrain.saving import save_weights

__version__ = "0.1.0"

# Optional parts load on first use, so `import tf_clicktrain` needs neither
# LiteRT nor matplotlib.
_LAZY_SUBMODULES = ("tflite", "report")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"tf_clicktrain.{name}")
    raise AttributeError(f"module 'tf_clicktrain' has no attribute {name!r}")
