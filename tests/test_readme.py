"""README.md's Python snippets run as a user copies them.

Every ```python block of README.md is found under its section heading. The
Quickstart, "Export to LiteRT / TFLite", "int8 (full-integer) export" and
"Subclassed models" blocks are run
in that order in one namespace, as a user pasting them into one session would
(the export block uses the Quickstart's ``model`` and ``x_test``). The other
blocks need a cluster or the user's own ``build_model`` and data, so they are
only compiled; a new block must be put in one of the two lists below.

The full run, exactly as written, trains for a minute or more on two cores and
is marked slow. The fast test runs the same blocks with two documented edits
that shrink only the amount of work (fewer images and epochs), so an API
change that breaks a snippet fails the default suite.
"""

import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")

RUN_IN_ORDER = ("Quickstart", "Export to LiteRT / TFLite", "int8 (full-integer) export",
                "Subclassed models", "Pruning a trained model")
COMPILE_ONLY = ("Distributed training",)

# The fast test's edits: (text in the Quickstart, replacement).
SMALLER = (
    ('mnist("train", 12_000)', 'mnist("train", 256)'),
    ('mnist("test", 10_000)', 'mnist("test", 64)'),
    ("epochs, batch_size = 4, 64", "epochs, batch_size = 2, 64"),
)


def python_blocks(text):
    """``(section, code)`` for every ```python block, in order.

    ``section`` is the title of the nearest markdown heading above the block.
    """
    blocks = []
    section = None
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        heading = re.match(r"#+\s+(.*)", line)
        if heading:
            section = heading.group(1).strip()
        elif line.strip() == "```python":
            end = lines.index("```", index + 1)
            blocks.append((section, "\n".join(lines[index + 1:end]) + "\n"))
            index = end
        index += 1
    return blocks


def _readme_blocks():
    with open(README) as handle:
        return python_blocks(handle.read())


def test_python_blocks_are_found_under_their_headings():
    text = "# A\n\n```python\nx = 1\n```\n\n## B\n\n```bash\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == [("A", "x = 1\n"), ("B", "y = 2\n")]


def test_every_python_block_compiles_and_is_either_run_or_listed():
    blocks = _readme_blocks()
    sections = {section for section, _ in blocks}
    assert set(RUN_IN_ORDER) <= sections, sections
    for section, code in blocks:
        assert section in RUN_IN_ORDER + COMPILE_ONLY, (
            f"README block under '{section}' is neither run nor listed as compile-only "
            "in tests/test_readme.py")
        compile(code, f"README.md ({section})", "exec")


def _run_blocks(tmp_path, monkeypatch, edits=()):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for wanted in RUN_IN_ORDER:
        for section, code in _readme_blocks():
            if section != wanted:
                continue
            for old, new in edits:
                if section == "Quickstart":
                    assert old in code, f"the fast test's edit no longer applies: {old!r}"
                    code = code.replace(old, new)
            exec(compile(code, f"README.md ({section})", "exec"), namespace)
    return namespace


def _check_outcome(namespace, tmp_path):
    import numpy as np

    final = namespace["final"]
    assert namespace["ct"].model_stats(final).conv3x3_compression > 7.0
    # The export block ran the .tflite in LiteRT and it agreed with Keras.
    np.testing.assert_allclose(
        namespace["logits"], final.predict(namespace["images"], verbose=0),
        rtol=1e-4, atol=1e-4)
    # The int8 block's full-integer file agrees with its QAT model.
    qat_classes = namespace["qat"].predict(namespace["x_test"][:8], verbose=0).argmax(1)
    assert (namespace["int8_logits"].argmax(1) == qat_classes).mean() >= 0.75
    assert (tmp_path / "pruned.keras").exists()
    assert (tmp_path / "pruned.tflite").stat().st_size == len(namespace["tflite_bytes"])


def test_quickstart_and_export_run_on_a_smaller_budget(tmp_path, monkeypatch):
    namespace = _run_blocks(tmp_path, monkeypatch, edits=SMALLER)
    _check_outcome(namespace, tmp_path)  # 256 images train nothing: no accuracy check


@pytest.mark.slow
def test_quickstart_and_export_run_as_written(tmp_path, monkeypatch):
    namespace = _run_blocks(tmp_path, monkeypatch)
    _check_outcome(namespace, tmp_path)
    # README says about 0.983 (three seeds: 0.9825 to 0.9842); a margin for other seeds.
    assert namespace["accuracy"] > 0.975, namespace["accuracy"]


def test_quickstart_benchmark_runs_this_readme_block():
    """benchmarks/quickstart_accuracy.py measures the Quickstart as README shows it."""
    import importlib.util

    path = os.path.join(REPO, "benchmarks", "quickstart_accuracy.py")
    spec = importlib.util.spec_from_file_location("quickstart_accuracy", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    blocks = dict(_readme_blocks())
    assert benchmark.quickstart_block(README) == blocks["Quickstart"]
    assert benchmark.readme_block(README, benchmark.AFTER_TRAINING) == (
        blocks["Pruning a trained model"])
    # The substitutions it makes for the dense run and for the setup still apply.
    assert benchmark.IMPORT in blocks["Quickstart"]
    assert benchmark.NETWORK_END in blocks["Quickstart"]
