"""The shared ``kerneltest`` model configs (``kernel_test_backends.configs``) many tests and
bench/fuzz.py and bench/soak.py serve: each loads, and answers as its docstring says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
from kernel_test_backends import configs

from kernel.testing import ServerThread, write_model

SHARED = {
    "addsub": configs.ADDSUB,
    "addsub_any": configs.ADDSUB_ANY_LENGTH,
    "addsub_16": configs.addsub(16),
    "identity": configs.IDENTITY,
    "strings": configs.STRINGS,
    "batched": configs.BATCHED,
    "repeat": configs.REPEAT,
    "sleeping": configs.sleeping(1, instances=2),
}


def _input(name: str, values: np.ndarray, datatype: str) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(values.shape), datatype)
    tensor.set_data_from_numpy(values)
    return tensor


def test_every_shared_config_loads_and_answers(tmp_path: Path) -> None:
    for name, config in SHARED.items():
        write_model(tmp_path, name, config)
    with ServerThread(tmp_path, grpc_port=None, metrics_port=None) as running:
        client = httpclient.InferenceServerClient(running.http_url)
        try:
            assert all(client.is_model_ready(name) for name in SHARED)
            a, b = np.arange(4, dtype=np.float32), np.full(4, 2, dtype=np.float32)
            for name in ("addsub", "addsub_any"):
                result = client.infer(
                    name, [_input("INPUT0", a, "FP32"), _input("INPUT1", b, "FP32")]
                )
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
                np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
            for name in ("identity", "sleeping"):
                result = client.infer(name, [_input("INPUT0", a, "FP32")])
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a)
            words = np.array([b"ab", b"", b"xyz"], dtype=np.object_)
            result = client.infer("strings", [_input("INPUT0", words, "BYTES")])
            assert result.as_numpy("OUTPUT0").tolist() == words.tolist()
            rows = np.arange(6, dtype=np.int32).reshape(2, 3)
            result = client.infer("batched", [_input("INPUT0", rows, "INT32")])
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), rows)
            config = client.get_model_config("sleeping")
            assert config["instance_group"][0]["count"] == 2
            assert client.get_model_config("addsub_16")["input"][0]["dims"] == [16]
            assert client.get_model_config("repeat")["model_transaction_policy"]["decoupled"]
        finally:
            client.close()
