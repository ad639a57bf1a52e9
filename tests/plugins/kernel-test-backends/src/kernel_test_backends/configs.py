"""``config.pbtxt`` texts of the ``kerneltest`` models that many tests (and bench/fuzz.py,
bench/soak.py) serve, written once: a test writes one with ``kernel.testing.write_model(repo,
name, ADDSUB)``. A config only one test needs stays in that test, next to what it checks.
"""

ADDSUB = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ 4 ] } ]
parameters { key: "behaviour" value { string_value: "addsub" } }
"""
"""Triton's add/sub example: OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1, FP32 [4]."""

ADDSUB_ANY_LENGTH = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
        { name: "INPUT1" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] },
         { name: "OUTPUT1" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "behaviour" value { string_value: "addsub" } }
"""
"""``ADDSUB`` on FP32 vectors of any length."""

IDENTITY = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] } ]
parameters { key: "behaviour" value { string_value: "identity" } }
"""
"""OUTPUT0 = INPUT0, an FP32 vector of any length."""

STRINGS = """
backend: "kerneltest"
max_batch_size: 0
input [ { name: "INPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_STRING dims: [ -1 ] } ]
parameters { key: "behaviour" value { string_value: "identity" } }
"""
"""OUTPUT0 = INPUT0, a BYTES vector of any length."""

BATCHED = """
backend: "kerneltest"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ -1 ] } ]
parameters { key: "behaviour" value { string_value: "identity" } }
"""
"""OUTPUT0 = INPUT0, INT32 [batch, any length], batches of up to 8."""

REPEAT = """
backend: "kerneltest"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "IN" data_type: TYPE_INT32 dims: [ -1 ] } ]
output [ { name: "OUT" data_type: TYPE_INT32 dims: [ 1 ] } ]
parameters { key: "behaviour" value { string_value: "repeat" } }
"""
"""Decoupled: one response per element of IN (OUT = that element), then the final flag."""


def sleeping(ms: int, instances: int | None = None) -> str:
    """``IDENTITY`` answered after ``ms`` milliseconds, each request holding its instance that
    long (``instances``: that many CPU instances; else the backend's default)."""
    config = IDENTITY.replace('"identity"', '"sleep"')
    if instances is not None:
        config += f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
    return config + f'parameters {{ key: "sleep_ms" value {{ string_value: "{ms}" }} }}\n'
