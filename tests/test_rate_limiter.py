"""The rate limiter (``--rate-limit execution_count``): resources, pools and priorities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import numpy as np
import pytest

from kernel import InferenceRequest
from kernel._cli import build_parser
from kernel._proto.inference import ModelRateLimiter, ModelRateLimiterResource
from kernel._scheduling._rate_limiter import RateLimiter, parse_rate_limit_resource
from kernel._serve_command import options_from_args
from kernel.testing import run_server

NO_ENDPOINTS = {"http_port": None, "grpc_port": None, "metrics_port": None}


def _spec(count: int, *, priority: int = 0, global_: bool = False) -> ModelRateLimiter:
    resource = ModelRateLimiterResource(name="R", global_=global_, count=count)
    return ModelRateLimiter(resources=[resource], priority=priority)


async def test_an_instance_waits_for_its_resources() -> None:
    limiter = RateLimiter()
    first, second = limiter.register(_spec(1), -1), limiter.register(_spec(1), -1)
    await limiter.acquire(first)
    granted = anyio.Event()

    async def wait() -> None:
        await limiter.acquire(second)
        granted.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait)
        await anyio.sleep(0.05)
        assert not granted.is_set()  # the pool (the largest single need) is 1
        limiter.release(first)
        with anyio.fail_after(5):
            await granted.wait()
    limiter.release(second)


async def test_pools_are_per_device_unless_global() -> None:
    limiter = RateLimiter()
    on_gpu0, on_gpu1 = limiter.register(_spec(1), 0), limiter.register(_spec(1), 1)
    with anyio.fail_after(5):
        await limiter.acquire(on_gpu0)
        await limiter.acquire(on_gpu1)  # another device's pool: no wait
    shared = RateLimiter({("R", "global"): 1})
    a, b = shared.register(_spec(1, global_=True), 0), shared.register(_spec(1, global_=True), 1)
    await shared.acquire(a)
    with anyio.move_on_after(0.05) as scope:
        await shared.acquire(b)
    assert scope.cancelled_caught  # one global pool of 1


async def test_priority_weights_the_chances() -> None:
    limiter = RateLimiter({("R", -1): 1})
    instances = {
        f"{kind}{i}": limiter.register(_spec(1, priority=priority), -1)
        for kind, priority in (("fast", 1), ("slow", 2))
        for i in range(2)
    }
    grants = dict.fromkeys(instances, 0)
    done = anyio.Event()

    async def run(name: str) -> None:
        need = instances[name]
        while not done.is_set():
            await limiter.acquire(need)
            grants[name] += 1
            if sum(grants.values()) >= 600:
                done.set()
            await anyio.lowlevel.checkpoint()
            limiter.release(need)
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for name in instances:
                tg.start_soon(run, name)
    fast = grants["fast0"] + grants["fast1"]
    slow = grants["slow0"] + grants["slow1"]
    # While others wait, a priority-2 instance gets about half the turns of a priority-1 one.
    assert 1.6 < fast / slow < 2.5, grants


SLEEPY = """
backend: "kerneltest"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU
  rate_limiter {{ resources [ {{ name: "R" count: 1 {scope} }} ] }} }} ]
parameters {{ key: "behaviour" value {{ string_value: "sleep" }} }}
parameters {{ key: "sleep_ms" value {{ string_value: "150" }} }}
"""


@pytest.mark.parametrize(("rate_limit", "limited"), [("execution_count", True), ("off", False)])
async def test_models_sharing_a_resource_take_turns(
    repo: Path, add_model: Callable[..., Path], rate_limit: str, limited: bool
) -> None:
    for name in ("a", "b"):
        add_model(repo, name, SLEEPY.format(scope="global: true"))
    async with run_server(repo, rate_limit=rate_limit, **NO_ENDPOINTS) as srv:
        a, b = srv.server.route("a"), srv.server.route("b")
        seen = 0

        async def one(model: str) -> None:
            request = InferenceRequest(model, {"INPUT0": np.ones(1, np.float32)})
            assert (await srv.server.infer_once(request)).error is None

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for model in ("a", "b", "a", "b"):
                    tg.start_soon(one, model)
                for _ in range(200):
                    seen = max(seen, a.executing + b.executing)
                    await anyio.sleep(0.005)
        # Limited, one batch of the two models runs at a time; unlimited, both models run.
        assert seen == 1 if limited else seen >= 2


def test_rate_limit_flags() -> None:
    args, _ = build_parser().parse_known_args(
        [
            "serve",
            "--rate-limit=execution_count",
            "--rate-limit-resource=R:4",
            "--rate-limit-resource=G:2:0",
        ]
    )
    options = options_from_args(args)
    assert options.rate_limit == "execution_count"
    assert options.rate_limit_resources == {("R", "global"): 4, ("G", 0): 2}
    with pytest.raises(ValueError, match="expected <name>:<count>"):
        parse_rate_limit_resource("R")
