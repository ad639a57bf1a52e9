"""An ensemble's dataflow, read from ``ensemble_scheduling`` and checked before it serves.

Tensors are named by the ensemble: its inputs, and whatever a step's ``output_map`` names. A
step runs once every tensor its ``input_map`` names exists. A tensor *streams* when its
producing step is decoupled or reads a streaming tensor: it then gets a value per response, and
its consumers run once per value (values of several streaming inputs are paired by position;
a non-streaming input's single value is reused for each run).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kernel._errors import KernelError, Status
from kernel._proto.inference import ModelConfig

__all__ = ["EnsemblePlan", "Step", "StepModel"]


@dataclass(frozen=True, slots=True)
class Step:
    """One ``step`` entry: which model, and how its tensors map to the ensemble's."""

    index: int
    model_name: str
    model_version: int
    """-1: the version the model's policy serves (Triton's ``model_version: -1``)."""
    inputs: dict[str, str]
    """Step model input -> ensemble tensor."""
    outputs: dict[str, str]
    """Step model output -> ensemble tensor."""


@dataclass(slots=True)
class StepModel:
    """What the plan needs to know of a loaded step model."""

    config: ModelConfig
    decoupled: bool


@dataclass(slots=True)
class EnsemblePlan:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    steps: tuple[Step, ...]
    streaming: set[str] = field(default_factory=set)
    """Tensors that may carry several values (set by :meth:`bind`)."""
    streaming_steps: set[int] = field(default_factory=set)

    def _error(self, text: str) -> KernelError:
        return KernelError(Status.INVALID_ARG, f"ensemble '{self.name}': {text}")

    @classmethod
    def from_config(cls, config: ModelConfig) -> EnsemblePlan:
        """Read and check the dataflow: every tensor produced once, every step input and
        ensemble output produced, every ensemble input used, no cycle.

        :raises KernelError: ``INVALID_ARG`` naming the ensemble and the problem.
        """
        scheduling = config.ensemble_scheduling
        steps = tuple(
            Step(
                index,
                step.model_name,
                step.model_version if step.model_version > 0 else -1,
                dict(step.input_map),
                dict(step.output_map),
            )
            for index, step in enumerate(scheduling.step if scheduling is not None else [])
        )
        plan = cls(
            config.name,
            tuple(t.name for t in config.input),
            tuple(t.name for t in config.output),
            steps,
        )
        plan._check()
        return plan

    def _check(self) -> None:
        if not self.steps:
            raise self._error("ensemble_scheduling must have at least one step")
        produced: dict[str, Step] = {}
        for step in self.steps:
            if not step.model_name:
                raise self._error(f"step {step.index} names no model")
            if step.model_name == self.name:
                raise self._error("a step cannot run the ensemble itself")
            for tensor in step.outputs.values():
                if tensor in self.inputs:
                    raise self._error(
                        f"ensemble input '{tensor}' is also an output of model '{step.model_name}'"
                    )
                if tensor in produced:
                    raise self._error(
                        f"ensemble tensor '{tensor}' is an output of both model"
                        f" '{produced[tensor].model_name}' and model '{step.model_name}'"
                    )
                produced[tensor] = step
        available = set(self.inputs) | set(produced)
        used: set[str] = set()
        for step in self.steps:
            for tensor in step.inputs.values():
                if tensor not in available:
                    raise self._error(
                        f"input of model '{step.model_name}' reads tensor '{tensor}', which is"
                        " neither an ensemble input nor an output of a step"
                    )
                used.add(tensor)
        for name in self.outputs:
            if name not in produced:
                raise self._error(f"ensemble output '{name}' is not produced by any step")
        for name in self.inputs:
            if name not in used:
                raise self._error(f"ensemble input '{name}' is not used by any step")
        self._order()

    def _order(self) -> list[Step]:
        """The steps in an order where each comes after the steps it reads from."""
        have = set(self.inputs)
        ordered: list[Step] = []
        waiting = list(self.steps)
        while waiting:
            runnable = [s for s in waiting if set(s.inputs.values()) <= have]
            if not runnable:
                names = ", ".join(f"'{s.model_name}'" for s in waiting)
                raise self._error(f"the steps of models {names} wait on each other in a cycle")
            for step in runnable:
                have.update(step.outputs.values())
                ordered.append(step)
                waiting.remove(step)
        return ordered

    @property
    def models(self) -> list[str]:
        """The step models, each once, in step order."""
        return list(dict.fromkeys(step.model_name for step in self.steps))

    def bind(self, models: Mapping[int, StepModel]) -> None:
        """Check the steps against their loaded models (``models`` by step index) and find the
        streaming tensors.

        :raises KernelError: ``INVALID_ARG`` for a mapped name the step model does not have, or
            a required input of it left unmapped.
        """
        self.streaming.clear()
        self.streaming_steps.clear()
        for step in self._order():
            model = models[step.index]
            known_inputs = {t.name: t for t in model.config.input}
            for name in step.inputs:
                if name not in known_inputs:
                    raise self._error(f"model '{step.model_name}' has no input '{name}'")
            for name, tensor in known_inputs.items():
                if name not in step.inputs and not tensor.optional:
                    raise self._error(
                        f"input '{name}' of model '{step.model_name}' is not mapped (input_map)"
                    )
            known_outputs = {t.name for t in model.config.output}
            for name in step.outputs:
                if known_outputs and name not in known_outputs:
                    raise self._error(f"model '{step.model_name}' has no output '{name}'")
            if model.decoupled or any(t in self.streaming for t in step.inputs.values()):
                self.streaming_steps.add(step.index)
                self.streaming.update(step.outputs.values())

    @property
    def streams(self) -> bool:
        """Whether a request may get several responses (some step streams)."""
        return bool(self.streaming_steps)
