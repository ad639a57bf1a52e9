"""Helpers for backends that run a whole batch as one framework call.

The usual ``execute`` of a framework backend: group the requests (the whole batch when the model
batches, else one request per group), concatenate each input across a group's requests once,
run the framework, and split every output back into each request's rows. These functions do the
kernel-generic parts, so a plugin only writes the framework call::

    def execute(self, requests):
        run_groups(requests, batching=self.batching, run=self._run, context=self.context)

    def _run(self, group):                      # returns (input_ns, infer_ns, output_ns)
        feeds = {name: gather(group, name) for name in self.input_names}
        ...
        scatter(group, outputs)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kernel._backend import InstanceContext
from kernel._errors import KernelError, Status
from kernel._inference import InferenceRequest

__all__ = ["gather", "run_groups", "scatter"]

GroupRunner = Callable[[list[InferenceRequest]], tuple[int, int, int]]
"""Runs one group and answers its requests; returns its compute input/infer/output ns."""


def run_groups(
    requests: Sequence[InferenceRequest],
    *,
    batching: bool,
    run: GroupRunner,
    context: InstanceContext,
) -> None:
    """Run the batch as one group (``batching``) or request by request, and report the times.

    When the batch is one group, an error propagates (the kernel answers each request with it);
    with several groups, a failing group answers only its own requests and the others still run.
    """
    groups = [list(requests)] if batching else [[r] for r in requests]
    totals = [0, 0, 0]
    for group in groups:
        try:
            times = run(group)
        except Exception as exc:
            if len(groups) == 1:
                raise
            error = KernelError.wrap(exc)
            for request in group:
                if not request.answered:
                    request.respond(error=error)
            continue
        totals = [a + b for a, b in zip(totals, times, strict=True)]
    context.report_times(*totals)


def gather(group: Sequence[InferenceRequest], name: str) -> npt.NDArray[Any]:
    """Input ``name`` of a group as one array: a lone request's own array (no copy), else the
    requests' arrays concatenated along the batch dimension (one copy).

    :raises KernelError: ``INVALID_ARG`` when some requests of the group lack the input.
    """
    arrays = [r.inputs.get(name) for r in group]
    present = [a for a in arrays if a is not None]
    if len(present) != len(arrays):
        raise KernelError(
            Status.INVALID_ARG, f"input '{name}' is given by some requests of a batch but not all"
        )
    return present[0] if len(present) == 1 else np.concatenate(present)


def scatter(group: Sequence[InferenceRequest], outputs: Mapping[str, npt.NDArray[Any]]) -> None:
    """Answer each request of a group with its rows of every output it asked for.

    Rows are split by ``request.batch_size`` (views, no copies); a lone request gets the arrays
    as they are.
    """
    if len(group) == 1:
        request = group[0]
        wanted = request.requested_output_names
        request.respond({n: a for n, a in outputs.items() if not wanted or n in wanted})
        return
    offset = 0
    for request in group:
        rows = slice(offset, offset + request.batch_size)
        offset += request.batch_size
        wanted = request.requested_output_names
        request.respond({n: a[rows] for n, a in outputs.items() if not wanted or n in wanted})
