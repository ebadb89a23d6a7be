"""The dtype maps the model runners and the variants share, in one place so that the two never disagree.

A version served as fp16 or bf16 has its model and float inputs cast to that torch dtype (fp32: served as
loaded); an ONNX Runtime session declares each input's type as a string such as "tensor(float)", which
decides the numpy dtype it must be fed and the dtype a loaded version reports for that input.
"""

from __future__ import annotations

import numpy as np

# manifest serving.precision -> the name of the torch dtype (getattr(torch, name)); fp32 is absent: no cast
SERVING_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}

# ONNX Runtime input type -> numpy dtype
ONNX_NUMPY_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                     "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
                     "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
