"""ONNX Runtime session options as a version is served, for the model runners and the variants alike."""

from __future__ import annotations

# The session config entries that keep ORT's thread pools from spinning after a run: what a user sets to share
# cores between sessions, and what the benchmark used to force on every session.
NO_SPINNING = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def session_options(threads: int, inter_op: int = 1, config: dict[str, str] | None = None):
    """SessionOptions with `threads` intra-op and `inter_op` inter-op threads and the version's own session config
    entries (`serving.ort_session_config`), ORT's defaults for everything else.

    ORT's pool threads spin for more work after a run by default, and a server running one session keeps them
    spinning: that is part of how fast it serves, so the benchmark times the session that way. Fairness between
    interleaved cells (a spinning pool stealing the cores of the next cell) is the harness's job: it runs each
    cell's requests in blocks and leaves the switch between cells out of the timed region.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = inter_op
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return options


def describe(threads: int, inter_op: int = 1, config: dict[str, str] | None = None) -> dict:
    """The session options in the words of the variant table: threads and whether the pools spin."""
    config = config or {}
    return {"intra_op_threads": threads, "inter_op_threads": inter_op,
            "allow_spinning": config.get("session.intra_op.allow_spinning", "1") != "0",
            **({"config": dict(config)} if config else {})}
