"""The event categories of the trace table: the `cat` column's values and the raw Kineto `cat` strings behind them.

Kineto's raw category names differ across PyTorch versions and vendors (cpu_op / Operator, cuda_runtime /
hip_runtime / xpu_runtime, ...); the table maps them onto one short list so that the diff engine asks
"is this a kernel" once, whatever recorded the trace. A category is an int code while events are read (the
column builder stores int8 kinds), and its name in CATEGORIES once the table is built.
"""

from __future__ import annotations

CATEGORIES = ("cpu_op", "kernel", "runtime", "memcpy", "memset", "annotation", "gpu_annotation", "python", "other")

CPU_OP, KERNEL, RUNTIME, MEMCPY, MEMSET, ANNOTATION, GPU_ANNOTATION, PYTHON, OTHER = range(len(CATEGORIES))
# categories whose events run on a CPU thread and nest on it (runtime calls are children of the op that
# made them, as in PyTorch's own self-CPU-time); the others run on a GPU stream and get no parent
NESTING_CATS = (CPU_OP, ANNOTATION, PYTHON, RUNTIME)
STEP_CATS = (CPU_OP, ANNOTATION)  # categories whose ProfilerStep#N events mark a step
GPU_CATS = (KERNEL, MEMCPY, MEMSET, GPU_ANNOTATION)  # any event of these: the trace ran on a GPU

_RAW_CATEGORY = {
    "cpu_op": CPU_OP, "operator": CPU_OP,
    "kernel": KERNEL,
    "cuda_runtime": RUNTIME, "runtime": RUNTIME, "cuda_driver": RUNTIME, "driver": RUNTIME,
    "hip_runtime": RUNTIME, "hip_driver": RUNTIME,
    "gpu_memcpy": MEMCPY, "memcpy": MEMCPY,
    "gpu_memset": MEMSET, "memset": MEMSET,
    "user_annotation": ANNOTATION, "record_param_comms": ANNOTATION,
    "gpu_user_annotation": GPU_ANNOTATION,
    "python_function": PYTHON,
}


def category_of(raw_cat) -> int:
    """The category code of a raw Kineto `cat` value; OTHER (dropped from the table) when it is not known."""
    if not isinstance(raw_cat, str):
        return OTHER
    low = raw_cat.strip().lower()
    c = _RAW_CATEGORY.get(low)
    if c is not None:
        return c
    if low.endswith("_runtime") or low.endswith("_driver"):  # xpu_runtime, privateuse1_driver, ...
        return RUNTIME
    return OTHER
