"""Weight importance transforms shared by the selection steps."""

import numpy as np


def fold_output_scale(importance, gamma, variance, epsilon):
    """Importance of a conv's weights as they act once BatchNorm is folded in.

    A BatchNorm after a conv multiplies output channel ``o`` by
    ``s_o = gamma_o / sqrt(variance_o + epsilon)``: the folded weight is
    ``w * s_o``. BN makes the loss invariant to the scale of each filter, so
    raw magnitudes compare filters by a scale that carries no information;
    the folded weights compare what each kernel contributes. Importance is a
    square (``w^2`` or ``(w * dL/dw)^2``), so it is scaled by ``s_o^2``.

    Args:
        importance: non-negative array whose last axis is the output channel
            (Keras layout ``(kh, kw, in, out)``).
        gamma: ``(out,)`` BatchNorm scale (ones if the BN has no scale).
        variance: ``(out,)`` BatchNorm moving variance.
        epsilon: BatchNorm epsilon, > 0.

    Returns:
        float64 array of ``importance``'s shape.
    """
    importance = np.asarray(importance, np.float64)
    gamma = np.asarray(gamma, np.float64).reshape(-1)
    variance = np.asarray(variance, np.float64).reshape(-1)
    channels = importance.shape[-1] if importance.ndim else 0
    if gamma.shape != (channels,) or variance.shape != (channels,):
        raise ValueError(
            "gamma and variance need one value per output channel (the last axis "
            f"of importance, {channels}). Received: gamma {gamma.shape}, "
            f"variance {variance.shape}"
        )
    if not epsilon > 0 or np.any(variance < 0):
        raise ValueError(
            "BatchNorm variance must be >= 0 and epsilon > 0. Received: "
            f"epsilon={epsilon!r}, min variance={variance.min() if variance.size else None}"
        )
    scale = gamma / np.sqrt(variance + epsilon)
    return importance * np.square(scale)
