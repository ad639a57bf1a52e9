"""``config.pbtxt`` texts of the ``kerneltest`` models that many tests (and bench/fuzz.py,
bench/soak.py) serve, written once: a test writes one with ``kernel.testing.write_model(repo,
name, ADDSUB)``. A config only one test needs stays in that test, next to what it checks.
"""


def addsub(length: int) -> str:
    """Triton's add/sub example on FP32 vectors of ``length`` (-1: any): OUTPUT0 = INPUT0 +
    INPUT1, OUTPUT1 = INPUT0 - INPUT1."""
    return f"""
backend: "kerneltest"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ {length} ] }},
        {{ name: "INPUT1" data_type: TYPE_FP32 dims: [ {length} ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ {length} ] }},
         {{ name: "OUTPUT1" data_type: TYPE_FP32 dims: [ {length} ] }} ]
parameters {{ key: "behaviour" value {{ string_value: "addsub" }} }}
"""


def identity(datatype: str = "TYPE_FP32", max_batch_size: int = 0) -> str:
    """OUTPUT0 = INPUT0, a vector of any length (batched when ``max_batch_size`` > 0)."""
    return f"""
backend: "kerneltest"
max_batch_size: {max_batch_size}
input [ {{ name: "INPUT0" data_type: {datatype} dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: {datatype} dims: [ -1 ] }} ]
parameters {{ key: "behaviour" value {{ string_value: "identity" }} }}
"""


def sleeping(ms: int, instances: int | None = None) -> str:
    """``IDENTITY`` answered after ``ms`` milliseconds, each request holding its instance that
    long (``instances``: that many CPU instances; else the backend's default)."""
    config = IDENTITY.replace('"identity"', '"sleep"')
    if instances is not None:
        config += f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
    return config + f'parameters {{ key: "sleep_ms" value {{ string_value: "{ms}" }} }}\n'


ADDSUB = addsub(4)
ADDSUB_ANY_LENGTH = addsub(-1)
IDENTITY = identity()
"""OUTPUT0 = INPUT0, an FP32 vector of any length."""
STRINGS = identity("TYPE_STRING")
"""OUTPUT0 = INPUT0, a BYTES vector of any length."""
BATCHED = identity("TYPE_INT32", max_batch_size=8)
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
