"""The ring of recent inputs that model_file_fuzzer.cc keeps on disk.

With CLICKTRAIN_FUZZ_RING=<directory>, the fuzz target writes every input to
`<directory>/input-<n % size>`, then `<count> <size>` to `<directory>/count`
(count: the inputs started so far), before running it. This module lists the surviving inputs, oldest
first, so the sequence that led to an abort can be replayed in one process:

    python fuzz/input_ring.py <directory>        # one path a line

    # under ASan, through the fuzz target (it runs its file arguments in order)
    build/fuzz/model_file_fuzzer $(python fuzz/input_ring.py <directory>)

    # under valgrind, with the uninstrumented library
    valgrind python fuzz/model_file_harness.py --ring <directory>
"""

import os
import sys


def ring_inputs(directory):
    """Returns the paths of the ring's inputs, oldest first.

    Raises:
        ValueError: if `directory` holds no ring or a damaged count file.
    """
    count_path = os.path.join(directory, "count")
    try:
        with open(count_path, encoding="ascii") as count_file:
            count, size = (int(field) for field in count_file.read().split())
    except (OSError, ValueError) as error:
        raise ValueError(f"{count_path} does not hold '<count> <size>': {error}") from error
    if count < 0 or size < 1:
        raise ValueError(f"{count_path} holds count {count} and size {size}")
    paths = [os.path.join(directory, f"input-{n % size}") for n in range(max(0, count - size), count)]
    return [path for path in paths if os.path.exists(path)]


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} <ring directory>")
    print("\n".join(ring_inputs(sys.argv[1])))
