"""Pattern report: the patterns each pruned 3x3 layer uses, as data and as a PNG.

For every pattern-pruned layer of a model the report gives the layer's
patterns (3x3 0/1 masks), how many kernels use each, and how many kernels are
kept and removed (connectivity pruning).

- On a model with `PatternPruningWrapper` layers the wrappers' own state is
  read: the pattern set (in pattern-id order, unused patterns included) and
  the per-kernel pattern ids. Before the hard phase these are the selection's
  targets, not yet applied to the weights; before the first selection a
  layer has no patterns yet.
- On any other model (e.g. after `strip_pruning`, or loaded from a file) the
  patterns are read back from the zeros of each 3x3 conv kernel with
  `tf_clicktrain.patterns.describe_pattern_sparsity`, most used first. Dense
  3x3 convs are left out unless ``include_dense=True``.

`pattern_report` returns the figures as `LayerPatternReport` objects (NumPy
only); `plot_pattern_report` draws them into a PNG with matplotlib's Agg
backend (no display needed; ``pip install matplotlib``).

Example:
```python
final = ct.strip_pruning(model)
ct.report.plot_pattern_report(final, "patterns.png")
for layer in ct.report.pattern_report(final):
    print(layer.name, layer.kept_kernels, "/", layer.num_kernels, layer.counts)
```
"""

import dataclasses
import io

import keras
import numpy as np

from tf_clicktrain import patterns as patterns_lib
from tf_clicktrain.pruning import layer_kinds
from tf_clicktrain.pruning import schedules as schedules_lib
from tf_clicktrain.pruning.layer_walk import walk_layers
from tf_clicktrain.pruning.wrapper import PatternPruningWrapper

__all__ = [
    "LayerPatternReport",
    "pattern_report",
    "pattern_report_figure",
    "pattern_report_png",
    "plot_pattern_report",
]

SOURCE_WRAPPER = "wrapper"
SOURCE_ZEROS = "zeros"

_KEPT_COLOUR = "#1f5f99"
_REMOVED_COLOUR = "#d9d9d9"
_EMPTY_COLOUR = "#f4f4f4"


@dataclasses.dataclass(frozen=True)
class LayerPatternReport:
    """The patterns of one pattern-pruned 3x3 weight.

    Attributes:
        name: layer name (the wrapped layer's name for wrappers; with the
            weight's name appended when a layer prunes several 3x3 weights).
        source: "wrapper" (read from the wrapper's pattern set and ids) or
            "zeros" (read from the weight's zeros).
        phase: the wrapper's phase ("dense", "soft", "hard"), or None for
            layers read from zeros.
        patterns: int ``(P, 9)`` 0/1 rows, position ``3 * row + column``.
            For wrappers, the pattern set in id order; from zeros, the
            distinct patterns of the kept kernels, most used first.
        counts: int ``(P,)`` kernels using each pattern.
        num_kernels: 3x3 kernels of the weight.
        kept_kernels: kernels that are not removed.
        pattern_ids: per-kernel pattern ids for wrappers (-1: removed), else
            None.
    """

    name: str
    source: str
    phase: object
    patterns: np.ndarray
    counts: np.ndarray
    num_kernels: int
    kept_kernels: int
    pattern_ids: object = None

    @property
    def removed_kernels(self):
        return self.num_kernels - self.kept_kernels

    @property
    def selected(self):
        """False for a wrapper whose patterns are not selected yet."""
        return len(self.patterns) > 0 or self.kept_kernels == 0

    @property
    def num_patterns_in_use(self):
        return int(np.count_nonzero(self.counts))

    @property
    def nonzero(self):
        """Weights the patterns keep (all 9 per kernel before selection)."""
        if not self.selected:
            return 9 * self.num_kernels
        return int(np.sum(self.counts * self.patterns.sum(axis=1)))

    @property
    def compression(self):
        """3x3 weights / weights the patterns keep."""
        return 9 * self.num_kernels / max(self.nonzero, 1)


def _wrapper_reports(wrapper):
    if not wrapper.built:
        return []
    pattern_weights = [
        (index, weight)
        for index, (weight, kind) in enumerate(wrapper.pruned_weights())
        if kind == layer_kinds.PATTERN
    ]
    phase = schedules_lib.PHASE_NAMES.get(int(wrapper.pruning_phase.numpy()), "unknown")
    selected = int(wrapper.selection_count.numpy()) > 0
    reports = []
    for index, weight in pattern_weights:
        pattern_set, pattern_ids = wrapper.pattern_state(index)
        pattern_ids = np.asarray(pattern_ids, np.int64)
        num_kernels = int(pattern_ids.size)
        name = wrapper.layer.name
        if len(pattern_weights) > 1:
            name = f"{name}/{weight.name}"
        if selected:
            pattern_rows = (np.asarray(pattern_set) > 0.5).astype(np.int64)
            kept = pattern_ids >= 0
            counts = np.bincount(pattern_ids[kept], minlength=len(pattern_rows))
            kept_kernels = int(kept.sum())
        else:
            pattern_rows = np.zeros((0, 9), np.int64)
            counts = np.zeros(0, np.int64)
            kept_kernels = num_kernels
        reports.append(LayerPatternReport(
            name=name, source=SOURCE_WRAPPER, phase=phase, patterns=pattern_rows,
            counts=counts[: len(pattern_rows)].astype(np.int64),
            num_kernels=num_kernels, kept_kernels=kept_kernels,
            pattern_ids=pattern_ids,
        ))
    return reports


def _zeros_report(name, kernel, include_dense):
    described = patterns_lib.describe_pattern_sparsity(kernel)
    dense = described.removed_kernels == 0 and described.entries_per_kernel == (9,)
    if dense and not include_dense:
        return None
    items = sorted(described.pattern_counts.items(), key=lambda item: (-item[1], item[0]))
    rows = np.zeros((len(items), 9), np.int64)
    for row, (positions, _) in zip(rows, items):
        row[list(positions)] = 1
    counts = np.array([count for _, count in items], np.int64)
    return LayerPatternReport(
        name=name, source=SOURCE_ZEROS, phase=None, patterns=rows, counts=counts,
        num_kernels=described.num_kernels, kept_kernels=described.kept_kernels,
    )


def _is_3x3_kernel(variable):
    shape = tuple(getattr(variable, "shape", ()))
    return len(shape) == 4 and shape[:2] == (3, 3)


def pattern_report(model, include_dense=False):
    """The patterns of every pattern-pruned 3x3 layer of a model.

    Args:
        model: a Keras model (Sequential, Functional or subclassed; nested
            models included), a layer, or a list of layers; wrapped or not.
        include_dense: also report 3x3 convs read from zeros that are fully
            dense (one 9-entry pattern, no kernel removed).

    Returns:
        A list of `LayerPatternReport`, in layer order. Wrappers are read from
        their pattern set and ids; other layers' 3x3 ``kernel`` (Conv2D,
        DepthwiseConv2D, or any layer with such a weight) from their zeros.
        Unstructured-pruned and non-3x3 weights are not reported.
    """
    reports = []
    for layer in walk_layers(model, into_sublayers=True):
        if isinstance(layer, PatternPruningWrapper):
            reports.extend(_wrapper_reports(layer))
            continue
        kernel = getattr(layer, "kernel", None)
        if kernel is None and isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel = getattr(layer, "depthwise_kernel", None)
        if kernel is None or not _is_3x3_kernel(kernel):
            continue
        report = _zeros_report(layer.name, keras.ops.convert_to_numpy(kernel), include_dense)
        if report is not None:
            reports.append(report)
    return reports


# ------------------------------------------------------------------ drawing


def _as_reports(model_or_reports, include_dense):
    if isinstance(model_or_reports, (list, tuple)) and all(
        isinstance(item, LayerPatternReport) for item in model_or_reports
    ) and model_or_reports:
        return list(model_or_reports)
    if isinstance(model_or_reports, LayerPatternReport):
        return [model_or_reports]
    return pattern_report(model_or_reports, include_dense=include_dense)


def _import_matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "The pattern report's drawing needs matplotlib: `pip install matplotlib` "
            "(or `pip install tf-clicktrain[report]`). `pattern_report()` gives the "
            "same figures as data without it."
        ) from error
    return Figure, FigureCanvasAgg


# Pattern tiles, in pixels of the composite image drawn per layer.
_CELL = 9
_LINE = 1
_TILE = 3 * _CELL + 4 * _LINE
_GAP = 14
_PITCH = _TILE + _GAP


def _hex_rgb(colour):
    colour = colour.lstrip("#")
    return np.array([int(colour[i:i + 2], 16) / 255.0 for i in (0, 2, 4)])


def _tiles_image(pattern_rows, faded, columns):
    """One RGB image of the patterns as 3x3 tiles side by side, white between."""
    image = np.ones((_TILE, columns * _PITCH - _GAP, 3))
    kept, empty = _hex_rgb(_KEPT_COLOUR), _hex_rgb(_EMPTY_COLOUR)
    frame, white = _hex_rgb("#888888"), np.ones(3)
    for index, (pattern, fade) in enumerate(zip(pattern_rows, faded)):
        left = index * _PITCH
        tile = image[:, left:left + _TILE]
        tile[:] = frame
        tile[_LINE:-_LINE, _LINE:-_LINE] = white
        for position, value in enumerate(pattern):
            row, column = divmod(position, 3)
            top = _LINE + row * (_CELL + _LINE)
            start = _LINE + column * (_CELL + _LINE)
            colour = kept if value else empty
            if fade:
                colour = 0.35 * colour + 0.65 * white
            tile[top:top + _CELL, start:start + _CELL] = colour
    return image


def _draw_patterns(ax, report, shown, extra, columns):
    """The layer's patterns as tiles, id above, kernels using each below."""
    counts = report.counts[:shown]
    faded = counts == 0
    ax.imshow(_tiles_image(report.patterns[:shown], faded, columns),
              interpolation="nearest", extent=(0, columns * _PITCH - _GAP, _TILE, 0))
    ax.set_xlim(-1, columns * _PITCH - _GAP + 1)
    ax.set_ylim(_TILE + 11, -8)
    ax.set_anchor("W")
    ax.axis("off")
    kept = max(report.kept_kernels, 1)
    for index in range(shown):
        centre = index * _PITCH + _TILE / 2
        label = f"#{index}" if report.source == SOURCE_WRAPPER else f"{index + 1}."
        ax.text(centre, -2, label, ha="center", va="bottom", fontsize=8, color="#555555")
        count = int(counts[index])
        text = "unused" if faded[index] else f"{count} ({count / kept:.0%})"
        ax.text(centre, _TILE + 2, text, ha="center", va="top", fontsize=8.5,
                color="#999999" if faded[index] else "black")
    if extra:
        rest = report.counts[shown:]
        ax.text(shown * _PITCH + _TILE / 2, _TILE / 2,
                f"+{len(rest)} more\npatterns\n{int(rest.sum())} kernels",
                ha="center", va="center", fontsize=8, color="#555555")
    if not report.selected:
        ax.text(0, _TILE / 2, "no patterns selected yet (dense warm-up)", va="center",
                fontsize=9, color="#777777")


def _draw_summary(ax, report):
    kept, removed = report.kept_kernels, report.removed_kernels
    total = max(report.num_kernels, 1)
    ax.barh([0], [kept], color=_KEPT_COLOUR, height=0.6)
    ax.barh([0], [removed], left=[kept], color=_REMOVED_COLOUR, height=0.6)
    for left, width, text, colour in ((0, kept, "kept", "white"),
                                      (kept, removed, "removed", "#444444")):
        if width >= 0.18 * total:
            ax.text(left + width / 2, 0, text, ha="center", va="center", fontsize=8.5,
                    color=colour)
    ax.set_xlim(0, total)
    ax.set_ylim(-0.6, 0.6)
    ax.set_yticks([])
    ax.tick_params(axis="x", labelsize=7, length=2)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    title = report.name
    if report.phase is not None and report.phase != schedules_lib.PHASE_NAMES[schedules_lib.HARD]:
        title += f"  [{report.phase} phase{', masks not applied yet' if report.selected else ''}]"
    ax.set_title(title, fontsize=10, fontweight="bold", loc="left", pad=4)
    lines = [
        f"kernels kept {kept} / {report.num_kernels} ({kept / total:.0%}), removed {removed}",
    ]
    if report.selected:
        entries = report.patterns.sum(axis=1) if len(report.patterns) else np.zeros(0)
        entries = sorted(set(int(e) for e in entries[report.counts > 0]))
        if len(entries) > 3:
            per_kernel = f"{entries[0]}-{entries[-1]}"
        else:
            per_kernel = "/".join(str(e) for e in entries) or "-"
        in_use = report.num_patterns_in_use
        lines.append(
            f"{in_use} pattern{'' if in_use == 1 else 's'} in use, {per_kernel} of 9 "
            f"entries, {report.compression:.1f}x"
        )
    else:
        lines.append("patterns not selected yet")
    ax.set_xlabel("\n".join(lines), fontsize=8.5, loc="left", labelpad=3)


def pattern_report_figure(model_or_reports, max_patterns=12, include_dense=False,
                          title=None):
    """Draws the pattern report as a matplotlib `Figure` (Agg canvas).

    One row per layer: a bar of kernels kept (blue) vs removed (grey) with
    the layer's figures, then each pattern as a 3x3 image (kept positions
    blue) with the number and share of kept kernels using it. Wrappers show
    their whole pattern set in id order (unused patterns faded); layers read
    from zeros show their most used patterns, the rest summed up.

    Args:
        model_or_reports: a model or layer(s) (see `pattern_report`), or a
            list of `LayerPatternReport`.
        max_patterns: most patterns drawn per layer.
        include_dense: passed to `pattern_report`.
        title: figure title; a default names the totals.

    Returns:
        A `matplotlib.figure.Figure` not attached to any display (save it
        with ``fig.savefig``). Needs matplotlib.
    """
    Figure, FigureCanvasAgg = _import_matplotlib()
    if not isinstance(max_patterns, int) or max_patterns < 1:
        raise ValueError(f"max_patterns must be a positive integer. Received: {max_patterns!r}")
    reports = _as_reports(model_or_reports, include_dense)
    shown = [min(len(r.patterns), max_patterns) for r in reports]
    extra = [len(r.patterns) > max_patterns for r in reports]
    columns = max([s + e for s, e in zip(shown, extra)] + [4])
    rows = max(len(reports), 1)
    summary_width = 3.2
    fig = Figure(figsize=(summary_width + 0.8 * columns + 0.3, 1.6 * rows + 0.75),
                 dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    if title is None:
        if reports:
            weights = sum(9 * r.num_kernels for r in reports)
            nonzero = sum(r.nonzero for r in reports)
            layers = "layer" if len(reports) == 1 else "layers"
            title = (f"Pattern report of {len(reports)} {layers} (3x3 kernels): "
                     f"{weights / max(nonzero, 1):.2f}x compression over them")
        else:
            title = "Pattern report"
    fig.suptitle(title, fontsize=11)
    if not reports:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no pattern-pruned 3x3 layers", ha="center", va="center",
                fontsize=11, color="#555555")
        return fig
    fig.supxlabel(
        "Patterns: kept weights in blue; below each, the kernels using it "
        "(share of kept kernels).",
        fontsize=8, color="#555555")
    pattern_width = 0.8 * columns
    grid = fig.add_gridspec(rows, 2, width_ratios=[summary_width, pattern_width])
    for row, report in enumerate(reports):
        _draw_summary(fig.add_subplot(grid[row, 0]), report)
        _draw_patterns(fig.add_subplot(grid[row, 1]), report, shown[row], extra[row], columns)
    return fig


def pattern_report_png(model_or_reports, max_patterns=12, include_dense=False, dpi=100):
    """The pattern report drawn as PNG bytes (see `pattern_report_figure`)."""
    fig = pattern_report_figure(model_or_reports, max_patterns=max_patterns,
                                include_dense=include_dense)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plot_pattern_report(model, path, max_patterns=12, include_dense=False, dpi=110):
    """Draws the pattern report of a wrapped or pattern-sparse model to a PNG.

    Per pattern-pruned 3x3 layer: the selected patterns as small 3x3 images
    with how many kernels use each, and kernels kept vs removed. Wrapped
    models are read from each wrapper's pattern set and ids; stripped or any
    other models from the zeros of their 3x3 kernels.

    Args:
        model: a model or layer(s), wrapped or not, or a list of
            `LayerPatternReport` (from `pattern_report`).
        path: the PNG file to write (its folder must exist).
        max_patterns: most patterns drawn per layer.
        include_dense: also draw dense 3x3 convs read from zeros.
        dpi: resolution of the PNG.

    Returns:
        ``path``.

    Example:
    ```python
    ct.report.plot_pattern_report(ct.strip_pruning(model), "patterns.png")
    ```
    """
    fig = pattern_report_figure(model, max_patterns=max_patterns, include_dense=include_dense)
    fig.savefig(path, format="png", dpi=dpi)
    return path
