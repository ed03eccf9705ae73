"""How many threads a call may use: ``set_num_threads``/``get_num_threads`` and
the ``FASTLSTM_NUM_THREADS`` variable (default: the cores this process may run on)."""

import os


def _cores_available():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _from_environment():
    value = os.environ.get("FASTLSTM_NUM_THREADS")
    if value is None or value == "":
        return _cores_available()
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"FASTLSTM_NUM_THREADS: expected a positive integer, got {value!r}") from None
    if count < 1:
        raise ValueError(f"FASTLSTM_NUM_THREADS: expected a positive integer, got {value!r}")
    return count


_num_threads = _from_environment()


def set_num_threads(n):
    """Use at most ``n`` threads per call (n >= 1)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n}")
    _num_threads = n


def get_num_threads():
    """The most threads a call uses."""
    return _num_threads
