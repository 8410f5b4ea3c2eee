"""Files whose op parameters inflate their tensors are refused before they run.

A file declares every tensor's shape, but LiteRT recomputes the shapes from
the ops' parameters when it allocates. A PAD op whose paddings a hostile
file raised to 30,000 turns 512 declared bytes into 7.2 GB. The interpreter
refuses it at `allocate_tensors` (and in signature runners), before a byte
of it is touched, while models resized by the caller still run.
"""

import resource
import time

import keras
import numpy as np
import pytest
import tflite_helpers

from tf_clicktrain import tflite as ct_tflite

HUGE_PADDING = 30_000


@pytest.fixture(scope="module")
def pad_model():
    return keras.Sequential([keras.Input((8, 8, 2)), keras.layers.ZeroPadding2D(1)])


@pytest.fixture(scope="module")
def pad_file(pad_model):
    return ct_tflite.convert(pad_model, custom_ops=False)


@pytest.fixture(scope="module")
def inflated_file(pad_file):
    paddings = np.array([[0, 0], [0, HUGE_PADDING], [0, HUGE_PADDING], [0, 0]], np.int32)
    return tflite_helpers.edit_operator(
        pad_file, tflite_helpers.set_buffer(1, lambda _: paddings.tobytes())
    )


def _peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_inflated_tensor_is_refused_naming_it_before_memory_is_touched(inflated_file):
    interpreter = ct_tflite.Interpreter(model_content=inflated_file, num_threads=1)
    peak_before = _peak_rss_bytes()
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"tensors need 7,203\.8 MB.*largest is tensor") as error:
        interpreter.allocate_tensors()
    assert time.perf_counter() - start < 1.0
    assert "[1, 30008, 30008, 2]" in str(error.value)
    assert "tensor_memory_limit" in str(error.value)
    with pytest.raises(ValueError, match="tensors need"):
        interpreter.invoke()
    assert _peak_rss_bytes() - peak_before < 100 << 20


def test_signature_runner_is_refused_too(inflated_file):
    interpreter = ct_tflite.Interpreter(model_content=inflated_file, num_threads=1)
    runner = interpreter.get_signature_runner()
    (input_name,) = runner.get_input_details()
    with pytest.raises(ValueError, match="tensors need"):
        runner(**{input_name: np.ones((1, 8, 8, 2), np.float32)})


def test_inputs_resized_by_the_caller_still_run(pad_model, pad_file):
    interpreter = ct_tflite.Interpreter(model_content=pad_file, num_threads=1)
    # 64x the declared input: the limit grows with the caller's resize.
    images = np.random.default_rng(0).standard_normal((4, 32, 32, 2)).astype(np.float32)
    outputs = tflite_helpers.run_interpreter(interpreter, images)
    np.testing.assert_array_equal(outputs, keras.ops.convert_to_numpy(pad_model(images)))
    # Back to the declared shape.
    images = images[:1, :8, :8]
    outputs = tflite_helpers.run_interpreter(interpreter, images)
    np.testing.assert_array_equal(outputs, keras.ops.convert_to_numpy(pad_model(images)))


def test_tensor_memory_limit_replaces_the_rule(pad_file):
    # The file's own tensors: 8x8x2 and 10x10x2 floats plus the paddings.
    tight = ct_tflite.Interpreter(model_content=pad_file, tensor_memory_limit=1000)
    with pytest.raises(ValueError, match="limit of 1,000 bytes given as tensor_memory_limit"):
        tight.allocate_tensors()
    enough = ct_tflite.Interpreter(model_content=pad_file, tensor_memory_limit=2000)
    enough.allocate_tensors()
    enough.invoke()


def test_limit_is_checked_at_every_shape_change_of_a_signature_runner(pad_model, pad_file):
    # 1x8x8x2 floats in, 1x10x10x2 out: 1,312 bytes plus the paddings' 32.
    interpreter = ct_tflite.Interpreter(model_content=pad_file, tensor_memory_limit=2000)
    small = np.random.default_rng(0).standard_normal((1, 8, 8, 2)).astype(np.float32)
    large = np.concatenate([small] * 4)
    expected = keras.ops.convert_to_numpy(pad_model(small))

    def run(images):
        runner = interpreter.get_signature_runner()
        (input_name,) = runner.get_input_details()
        (outputs,) = runner(**{input_name: images}).values()
        return outputs

    for _ in range(3):  # Repeated calls at one shape skip the shape reads.
        np.testing.assert_array_equal(run(small), expected)
    for _ in range(2):  # Refused at every call while the shape stays too large.
        with pytest.raises(ValueError, match="limit of 2,000 bytes"):
            run(large)
    with pytest.raises(ValueError, match="limit of 2,000 bytes"):
        interpreter.invoke()
    np.testing.assert_array_equal(run(small), expected)
    interpreter.invoke()
    # A resize LiteRT refuses (strict, on a fixed dimension) changes nothing.
    with pytest.raises((ValueError, RuntimeError), match="unknown dimensions"):
        interpreter.resize_tensor_input(0, [1, 9, 8, 2], strict=True)
    np.testing.assert_array_equal(run(small), expected)
    # Resizes outside the runner are seen by it too.
    interpreter.resize_tensor_input(0, [4, 8, 8, 2])
    with pytest.raises(ValueError, match="limit of 2,000 bytes"):
        interpreter.allocate_tensors()
    with pytest.raises(ValueError, match="limit of 2,000 bytes"):
        run(large)
    np.testing.assert_array_equal(run(small), expected)
