"""An interpreter made ready for `speed_decision.interleaved_samples`."""


def prepared_invoke(interpreter, inputs):
    """`(invoke, output)`: the interpreter's invoke on `inputs`, and its output.

    Allocates the tensors and sets the (single) input; `output()` reads the
    first output after an invoke. `interleaved_samples` warms `invoke` up
    (lazy delegate application, weight packing, caches) before timing it.
    """
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], inputs)
    output = interpreter.get_output_details()[0]["index"]
    return interpreter.invoke, lambda: interpreter.get_tensor(output)
