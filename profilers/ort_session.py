"""ONNX Runtime session options as the benchmark needs them, for the model runners and the variants alike."""

from __future__ import annotations


def session_options(threads: int, inter_op: int = 1):
    """SessionOptions with `threads` intra-op and `inter_op` inter-op threads whose pool threads never spin.

    Spinning is off so that the threads sleep when a run ends instead of spinning for more work: the harness
    interleaves several runtimes on the same cores; a session whose threads spin after its run steals those
    cores from the next cell (torch or another session), which measured as a 2x slowdown of every cell on 2
    cores. A serving process running one session would spin; here fairness between cells matters more.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_op
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options
