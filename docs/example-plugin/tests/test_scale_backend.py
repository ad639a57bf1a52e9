"""The example plugin, served by a real server and called with the real tritonclient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

from kernel.testing import ServerThread, write_model

CONFIG = """
backend: "scale"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]
parameters { key: "factor" value { string_value: "2.5" } }
"""


def test_scale_model_serves(tmp_path: Path) -> None:
    write_model(tmp_path, "scale3", CONFIG)
    with ServerThread(tmp_path) as srv:
        client = httpclient.InferenceServerClient(srv.http_url)
        x = np.array([[1, 2, 3]], dtype=np.float32)
        inp = httpclient.InferInput("INPUT0", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer("scale3", [inp])
        np.testing.assert_allclose(result.as_numpy("OUTPUT0"), x * 2.5)
        client.close()


def test_bad_parameter_makes_only_this_model_unavailable(tmp_path: Path) -> None:
    write_model(tmp_path, "bad", CONFIG.replace('"2.5"', '"lots"'))
    with ServerThread(tmp_path) as srv:
        client = httpclient.InferenceServerClient(srv.http_url)
        index = client.get_model_repository_index()
        assert index[0]["state"] == "UNAVAILABLE"
        assert "parameter 'factor' must be a number" in index[0]["reason"]
        assert client.is_server_live()
        client.close()
