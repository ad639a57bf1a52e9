"""tritonserver's tuning flags that ``kernel serve`` accepts and ignores, and the log line.

Apart from the parser (:mod:`kernel._cli`) and the command (:mod:`kernel._serve_command`) because
both read the table: the parser to accept the flags, the command to say why each changed nothing.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["NO_OP_FLAGS", "report_ignored_flags"]

log = logging.getLogger("kernel.serve")

# tritonserver tuning flags accepted and ignored (with a log line saying why): each tunes a
# pool or thread count this server does not have, so ignoring it changes no answer.
NO_OP_FLAGS = {
    "--http-thread-count": "HTTP requests are served on the event loop",
    "--model-load-thread-count": "models load concurrently on the event loop",
    "--buffer-manager-thread-count": "there is no buffer manager",
    "--grpc-infer-allocation-pool-size": "request and response objects are not pooled",
    "--pinned-memory-pool-byte-size": "there is no pinned memory pool (tensors are in CPU memory)",
    "--cuda-memory-pool-byte-size": "there is no CUDA memory pool (backends own GPU memory)",
    "--enable-peer-access": "there is no CUDA memory pool (backends own GPU memory)",
    "--cache-directory": "the response cache is built in (--cache-config local,size=N)",
}


def report_ignored_flags(args: argparse.Namespace) -> None:
    """One log line for each accepted tritonserver flag that changes nothing here, and why."""
    for flag, reason in NO_OP_FLAGS.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        if value is not None:
            log.info("%s=%s accepted and ignored: %s", flag, value, reason)
    if args.grpc_infer_response_compression_level != "none":
        log.warning(
            "--grpc-infer-response-compression-level=%s accepted, but gRPC responses are sent"
            " uncompressed (clients read them unchanged)",
            args.grpc_infer_response_compression_level,
        )
