"""Model-config fields this server reads but does not act on, reported by name.

Nothing a config sets is silently ignored: a field the kernel (and its backends, for the fields
they own) does not implement is reported by ``kernel check`` and at load. A *warning* where
Triton would still serve the same answers without it (tuning, GPU-only settings, metrics
labels); an *error* -- the load fails -- where serving without it would answer wrongly (inputs
the model would never get, scheduling it would not see). ``docs/configuration.md`` carries the
same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kernel._proto.inference import ModelConfig, ModelOptimizationPolicyModelPriority

__all__ = ["Unhonoured", "unhonoured_fields"]

Severity = Literal["warning", "error"]


@dataclass(frozen=True, slots=True)
class Unhonoured:
    """One field a config sets that this server does not implement."""

    field: str
    severity: Severity
    reason: str

    def __str__(self) -> str:
        return f"field '{self.field}' is not implemented: {self.reason}"


def unhonoured_fields(config: ModelConfig) -> list[Unhonoured]:
    """The fields ``config`` sets that this server does not implement, errors first."""
    found: list[Unhonoured] = []

    def report(name: str, severity: Severity, reason: str) -> None:
        found.append(Unhonoured(name, severity, reason))

    if config.batch_input:
        report("batch_input", "error", "the model would not receive the batch inputs it declares")
    if config.batch_output:
        report("batch_output", "error", "batch outputs would not be scattered to the requests")
    if config.model_repository_agents is not None and config.model_repository_agents.agents:
        report(
            "model_repository_agents",
            "error",
            "repository agents (checksums, decryption, ...) would not run before the load",
        )
    for kind, tensors in (("input", config.input), ("output", config.output)):
        for tensor in tensors:
            if tensor.is_shape_tensor:
                report(
                    f"{kind}.is_shape_tensor",
                    "error",
                    f"{kind} '{tensor.name}' would be batched as a plain tensor (TensorRT shape"
                    " tensors are not supported)",
                )
            if tensor.is_non_linear_format_io:
                report(
                    f"{kind}.is_non_linear_format_io",
                    "warning",
                    f"{kind} '{tensor.name}': a TensorRT setting; tensors stay linear here",
                )
    for group in config.instance_group:
        if group.secondary_devices:
            report(
                "instance_group.secondary_devices",
                "warning",
                "secondary devices are not assigned to instances",
            )
        if group.profile:
            report("instance_group.profile", "warning", "TensorRT optimization profiles")
        if group.host_policy:
            report("instance_group.host_policy", "warning", "host policies are not supported")
    if config.cc_model_filenames:
        report(
            "cc_model_filenames",
            "warning",
            "no file is chosen by GPU compute capability; default_model_filename is used",
        )
    if config.metric_tags:
        report("metric_tags", "warning", "the tags are not added to the model's metrics")
    if config.model_metrics is not None and config.model_metrics.metric_control:
        report("model_metrics", "warning", "custom metric buckets are not applied")
    if config.model_operations is not None and config.model_operations.op_library_filename:
        report(
            "model_operations.op_library_filename",
            "warning",
            "custom operation libraries are not loaded by the server (a backend may)",
        )
    optimization = config.optimization
    if optimization is not None:
        if optimization.cuda is not None:
            report("optimization.cuda", "warning", "CUDA graphs and CUDA settings are not used")
        if optimization.priority not in (0, ModelOptimizationPolicyModelPriority.PRIORITY_DEFAULT):
            report("optimization.priority", "warning", "instances run at the default priority")
        if optimization.input_pinned_memory is not None:
            report("optimization.input_pinned_memory", "warning", "there is no pinned memory")
        if optimization.output_pinned_memory is not None:
            report("optimization.output_pinned_memory", "warning", "there is no pinned memory")
        if optimization.gather_kernel_buffer_threshold:
            report(
                "optimization.gather_kernel_buffer_threshold",
                "warning",
                "inputs are gathered on the CPU",
            )
        if optimization.eager_batching:
            report("optimization.eager_batching", "warning", "batches are not formed eagerly")
    found.sort(key=lambda u: u.severity != "error")
    return found
