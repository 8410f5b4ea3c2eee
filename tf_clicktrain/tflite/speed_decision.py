"""Which layers `convert` replaces: by measured speed, by size, or by a callable.

The speed decision times each candidate layer on the converting machine: a
one-operator .tflite of the builtin (same weights, shapes and options) and
one of each proposed custom op run in LiteRT's interpreter (XNNPACK for
builtin ops), interleaved round by round, and each is credited with its
fastest round. A layer is replaced only when its custom op is at least
`MIN_SPEEDUP` times faster. Equal shapes with equal sparsity structure
(`Rewrite.timing_key`) are timed once.

Why the fastest round and not the median: on a loaded machine a sample is
either clean or stretched by whole scheduler slices (measured under a load
of 7 on 2 cores: a 2.3 ms conv sampled at 2.3, 6.5 or 10.6 ms). Three runs
of the same pair gave median ratios of 1.03x to 4.4x, fastest-round ratios
of 1.5x to 2.4x. On a quiet machine the two agree.

The whole-model check then times the rewritten file against its
builtin-only twin; while the rewritten file is slower, the replaced layers
with the smallest measured gain go back to builtin (1, 2, 4, ... at a time).
At worst every layer goes back, and the builtin-only file itself is
returned, so the file `convert` returns never measured slower than the
builtin-only file.
"""

import dataclasses
import time
import warnings

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tf_clicktrain.tflite import flatbuffer_check
from tf_clicktrain.tflite import model_rewrite

# A custom op must beat the builtin by this factor to replace it: near-ties
# flip with timing noise, and each custom op splits XNNPACK's partition of
# the graph, which the one-operator files do not see.
MIN_SPEEDUP = 1.05


class TimingUnavailable(RuntimeError):
    """The custom ops cannot run here (no native library, LiteRT mismatch)."""


class InterpreterTimer:
    """Invoke times of .tflite files in LiteRT, sampled round-robin.

    Files with custom ops run in `tf_clicktrain.tflite.Interpreter`, the
    others in LiteRT's stock `Interpreter`; builtin ops run on XNNPACK (the
    stock default). Every input is filled with random normal data.

    Args:
        num_threads: the interpreters' `num_threads`.
        rounds: samples per file.
        sample_seconds: each sample averages enough invokes to last this
            long (at least one invoke).
    """

    def __init__(self, num_threads=1, rounds=15, sample_seconds=0.002):
        self.num_threads = num_threads
        self.rounds = rounds
        self.sample_seconds = sample_seconds

    def __call__(self, models):
        """Returns `{name: [seconds per invoke, one per round]}` for `{name: bytes}`."""
        invokes = {name: self._invoker(content) for name, content in models.items()}
        return interleaved_samples(invokes, self.rounds, self.sample_seconds)

    def _invoker(self, content):
        from ai_edge_litert import interpreter as litert_interpreter

        if has_custom_ops(content):
            interpreter = _custom_op_interpreter(content, self.num_threads)
        else:
            interpreter = litert_interpreter.Interpreter(
                model_content=content, num_threads=self.num_threads
            )
        interpreter.allocate_tensors()
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            shape = [max(int(d), 1) for d in detail["shape"]]
            if np.issubdtype(detail["dtype"], np.floating):
                data = rng.normal(size=shape).astype(detail["dtype"])
            else:
                data = np.zeros(shape, detail["dtype"])
            interpreter.set_tensor(detail["index"], data)
        return interpreter.invoke


def _custom_op_interpreter(content, num_threads):
    from tf_clicktrain.tflite import interpreter as ct_interpreter
    from tf_clicktrain.tflite import native_library

    try:
        native_library.check_runtime_version()
    except (FileNotFoundError, RuntimeError, OSError) as error:
        raise TimingUnavailable(str(error)) from error
    return ct_interpreter.Interpreter(model_content=content, num_threads=num_threads)


def has_custom_ops(tflite_bytes):
    """True when the .tflite file uses any CUSTOM operator.

    Raises:
        ValueError: if `tflite_bytes` is not a well-formed TFLite model.
    """
    tflite_bytes = bytes(tflite_bytes)
    flatbuffer_check.check_model(tflite_bytes)
    model = schema.Model.GetRootAs(tflite_bytes, 0)
    return any(
        model.OperatorCodes(index).CustomCode() for index in range(model.OperatorCodesLength())
    )


def interleaved_samples(invokes, rounds, sample_seconds, return_thread_time=False):
    """Seconds per call of each callable, one sample per round.

    Each callable is warmed up, then called in `rounds` rounds whose order
    rotates; a sample is the mean over enough calls to last about
    `sample_seconds`.

    Args:
        invokes: `{name: callable}`.
        rounds: samples per callable.
        sample_seconds: the wall time one sample lasts, about.
        return_thread_time: also clock every sample in the calling thread's
            CPU time (`time.thread_time`), which leaves out the time other
            jobs take from a shared core; meaningful when the callables do
            their work on the calling thread.

    Returns:
        `{name: [seconds, ...]}` of wall time, sample `i` of every name from
        round `i`; with `return_thread_time`, a pair of such dicts: wall
        time and the calling thread's CPU time of the same samples.
    """
    repeats = {}
    for name, invoke in invokes.items():
        invoke()  # Warm-up: lazy delegate preparation, caches.
        start = time.perf_counter()
        invoke()
        elapsed = time.perf_counter() - start
        repeats[name] = max(1, int(sample_seconds / max(elapsed, 1e-7)))
    samples = {name: [] for name in invokes}
    thread_samples = {name: [] for name in invokes}
    names = list(invokes)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start, start_thread = time.perf_counter(), time.thread_time()
            for _ in range(repeats[name]):
                invokes[name]()
            samples[name].append((time.perf_counter() - start) / repeats[name])
            thread_samples[name].append((time.thread_time() - start_thread) / repeats[name])
    if return_thread_time:
        return samples, thread_samples
    return samples


def fastest(samples):
    """The estimate of a time from its samples: the fastest round."""
    return min(samples)


class SpeedChooser:
    """Replaces an operator only by a custom op measured faster than it.

    A chooser for `model_rewrite.replace_pattern_convs`: times the builtin
    operator and every proposed rewrite as one-operator files, interleaved,
    and picks the fastest rewrite if it is at least `MIN_SPEEDUP` times
    faster than the builtin. Timings are cached by `Rewrite.timing_key`.
    When the custom ops cannot run here, every operator stays builtin (with
    a warning).

    Args:
        timer: a callable `{name: tflite bytes} -> {name: [seconds per
            round]}`, e.g. `InterpreterTimer(num_threads)`.
        verbose: print one line per timed layer.
    """

    def __init__(self, timer, verbose=False):
        self.timer = timer
        self.verbose = verbose
        self._timings = {}  # timing_key -> _Timing, or the error that stopped it
        self._unavailable = None

    def __call__(self, candidates):
        rewrites = candidates.rewrites
        if self._unavailable is None and any(
            rewrite.timing_key not in self._timings for rewrite in rewrites
        ):
            try:
                self._measure(candidates)
            except TimingUnavailable as error:
                self._unavailable = str(error)
                warnings.warn(
                    "convert(decide_by='speed') cannot run the custom ops here, so "
                    "every layer stays builtin; pass decide_by='size' to replace "
                    f"layers regardless of speed. ({error})",
                    stacklevel=7,  # The caller of `convert`.
                )
        if self._unavailable is not None:
            return model_rewrite.Choice(
                rewrite=None,
                decided_by="speed",
                considered=rewrites[0],
                reason=f"speed could not be measured: {self._unavailable}",
            )
        timed = [
            rewrite
            for rewrite in rewrites
            if isinstance(self._timings[rewrite.timing_key], _Timing)
        ]
        if not timed:
            return model_rewrite.Choice(
                rewrite=None,
                decided_by="speed",
                considered=rewrites[0],
                reason=f"custom op failed to run: {self._timings[rewrites[0].timing_key]}",
            )
        best = max(timed, key=lambda rewrite: self._timings[rewrite.timing_key].speedup)
        timing = self._timings[best.timing_key]
        timings = dict(builtin_us=timing.builtin_us, custom_us=timing.custom_us)
        if timing.speedup >= MIN_SPEEDUP:
            return model_rewrite.Choice(rewrite=best, decided_by="speed", **timings)
        return model_rewrite.Choice(
            rewrite=None,
            decided_by="speed",
            considered=best,
            reason=(
                f"{best.custom_op} not faster: {timing.custom_us:.1f} us vs builtin "
                f"{timing.builtin_us:.1f} us ({timing.speedup:.2f}x < {MIN_SPEEDUP}x)"
            ),
            **timings,
        )

    def _measure(self, candidates):
        models = {"builtin": candidates.builtin_model()}
        for index, rewrite in enumerate(candidates.rewrites):
            models[index] = candidates.rewrite_model(rewrite)
        try:
            samples = self.timer(models)
        except TimingUnavailable:
            raise
        except (RuntimeError, ValueError) as error:
            # The native library refused the candidate (e.g. a layout it does
            # not run): not a candidate here.
            for rewrite in candidates.rewrites:
                self._timings[rewrite.timing_key] = str(error)
            if self.verbose:
                print(f"convert: {candidates.name} ({candidates.op}): {error}", flush=True)
            return
        for index, rewrite in enumerate(candidates.rewrites):
            timing = _Timing(
                builtin_us=fastest(samples["builtin"]) * 1e6,
                custom_us=fastest(samples[index]) * 1e6,
            )
            self._timings[rewrite.timing_key] = timing
            if self.verbose:
                verdict = "custom op" if timing.speedup >= MIN_SPEEDUP else "builtin"
                print(
                    f"convert: {candidates.name} ({candidates.op}): {rewrite.custom_op} "
                    f"{timing.custom_us:.1f} us, builtin {timing.builtin_us:.1f} us, "
                    f"{timing.speedup:.2f}x -> {verdict}",
                    flush=True,
                )


@dataclasses.dataclass(frozen=True)
class _Timing:
    builtin_us: float
    custom_us: float

    @property
    def speedup(self):
        return self.builtin_us / self.custom_us


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One proposed replacement, as given to a `decide_by` callable.

    Attributes:
        report: the layer's `LayerReport` if it is replaced (name, op,
            custom_op, weight bytes, patterns, kept weights).
        builtin_model: the builtin operator alone, as .tflite bytes (e.g.
            to time on the target device).
        custom_model: the custom op alone, as .tflite bytes.
    """

    report: model_rewrite.LayerReport
    builtin_model: bytes
    custom_model: bytes


class CallableChooser:
    """Asks `decide(Candidate) -> bool` for each proposed rewrite in turn."""

    def __init__(self, decide):
        self.decide = decide

    def __call__(self, candidates):
        for rewrite in candidates.rewrites:
            verdict = self.decide(
                Candidate(
                    rewrite.report,
                    candidates.builtin_model(),
                    candidates.rewrite_model(rewrite),
                )
            )
            if not isinstance(verdict, (bool, np.bool_)):
                raise ValueError(
                    "decide_by must return True (replace) or False (keep builtin). "
                    f"Received: {verdict!r} for layer {candidates.name!r}"
                )
            if verdict:
                return model_rewrite.Choice(rewrite=rewrite, decided_by="callable")
        return model_rewrite.Choice(
            rewrite=None,
            decided_by="callable",
            considered=candidates.rewrites[0],
            reason="decide_by returned False",
        )


class _KeepBuiltinAt:
    """Wraps a chooser; the operators at `locations` stay builtin."""

    def __init__(self, choose, locations, reason):
        self.choose = choose
        self.locations = frozenset(locations)
        self.reason = reason

    def __call__(self, candidates):
        choice = self.choose(candidates)
        if candidates.location not in self.locations or choice.rewrite is None:
            return choice
        return dataclasses.replace(
            choice,
            rewrite=None,
            considered=choice.rewrite,
            decided_by="whole-model check",
            reason=self.reason,
        )


def keep_not_slower(builtin_bytes, rewritten, choose, rewrite, timer, verbose=False):
    """Puts layers back to builtin until the file is not slower than builtin.

    Args:
        builtin_bytes: the builtin-only file.
        rewritten: `(bytes, reports)` from `rewrite(choose)`.
        choose: the chooser that made `rewritten`.
        rewrite: `rewrite(choose) -> (bytes, reports)` reruns the rewrite of
            `builtin_bytes` with another chooser.
        timer: `{name: bytes} -> {name: [seconds per round]}` for whole
            files.
        verbose: print the whole-model timings.

    Returns:
        `(bytes, reports)`: `rewritten` when it measured no slower than
        `builtin_bytes`, else a file with the replaced layers of smallest
        measured gain put back to builtin (reported with
        `decided_by="whole-model check"`), or `builtin_bytes` itself.
    """
    tflite_bytes, reports = rewritten
    replaced = [report for report in reports if report.replaced]
    if not replaced:
        return tflite_bytes, reports
    # Smallest gain first; untimed layers count as no gain.
    replaced.sort(key=lambda report: (report.builtin_us or 0.0) - (report.custom_us or 0.0))
    put_back = 0
    step = 1
    first_measurement = None
    while True:
        samples = timer({"builtin": builtin_bytes, "custom": tflite_bytes})
        builtin_ms = fastest(samples["builtin"]) * 1e3
        custom_ms = fastest(samples["custom"]) * 1e3
        speedup = builtin_ms / custom_ms
        if verbose:
            print(
                f"convert: whole model: {custom_ms:.2f} ms with {len(replaced) - put_back} "
                f"custom ops, builtin-only {builtin_ms:.2f} ms, {speedup:.2f}x",
                flush=True,
            )
        first_measurement = first_measurement or (custom_ms, builtin_ms)
        if speedup >= 1.0:
            break
        put_back = min(len(replaced), put_back + step)
        step *= 2
        reason = (
            f"put back: the whole file measured {custom_ms:.2f} ms vs "
            f"builtin-only {builtin_ms:.2f} ms"
        )
        locations = [report.location for report in replaced[:put_back]]
        tflite_bytes, reports = rewrite(_KeepBuiltinAt(choose, locations, reason))
        if put_back == len(replaced):
            tflite_bytes = builtin_bytes  # Every layer builtin: the twin itself.
            break
    if put_back:
        custom_ms, builtin_ms = first_measurement
        warnings.warn(
            f"The rewritten file measured slower than the builtin-only file "
            f"({custom_ms:.2f} ms vs {builtin_ms:.2f} ms); {put_back} of "
            f"{len(replaced)} custom-op layers were put back to builtin.",
            stacklevel=4,  # The caller of `convert`.
        )
    return tflite_bytes, reports
