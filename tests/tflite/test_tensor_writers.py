"""Files in which a tensor has two writers, or an operator writes a tensor it
reads, are refused.

An operator resizes its outputs at Prepare. In a whole-file fuzz run, a
QUANTIZE and an int8 pattern conv both wrote one tensor: the conv resized
it smaller after the QUANTIZE was prepared, and LiteRT's QUANTIZE then wrote
past its end into the next heap mapping. `ct.tflite.Interpreter` refuses
such graphs with a ValueError before LiteRT builds them.
"""

import flatbuffers
import keras
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

import tf_clicktrain as ct


@pytest.fixture(scope="module")
def two_op_file():
    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, padding="same"),
        keras.layers.Conv2D(3, 3, padding="same"),
    ])
    return ct.tflite.convert(model, custom_ops=False)


def _edit(content, change):
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    change(model.subgraphs[0])
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _first_writes_second_output(subgraph):
    first, second = subgraph.operators[0], subgraph.operators[1]
    first.outputs = np.array(second.outputs)


def _second_writes_its_input(subgraph):
    second = subgraph.operators[1]
    second.outputs = np.array([second.inputs[0]])


def test_the_unedited_file_runs(two_op_file):
    interpreter = ct.tflite.Interpreter(model_content=two_op_file)
    interpreter.allocate_tensors()
    interpreter.invoke()


@pytest.mark.parametrize("change, expected", [
    (_first_writes_second_output, r"operators\[1\]\.outputs\[0\] is tensor \d+, which "
                                  r"operators\[0\] also writes"),
    (_second_writes_its_input, r"operators\[1\]\.outputs\[0\] is tensor \d+, which the "
                               r"operator also reads"),
])
def test_tensor_with_two_writers_is_refused(two_op_file, change, expected):
    with pytest.raises(ValueError, match=expected):
        ct.tflite.Interpreter(model_content=_edit(two_op_file, change))
