"""Triton model repositories on disk: model folders, ``config.pbtxt`` and version folders.

A repository is a folder of model folders; a model folder holds an optional ``config.pbtxt`` and
numeric version folders. Several repositories may be served at once; a model name found in two
of them is an error for that model, as in Triton. A load through the repository API may bring
its own config (JSON) and files: the files are written to a private temporary folder that then
serves as that model's folder, so backends always see real paths.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kernel import _config_text as _config
from kernel._errors import KernelError, Status
from kernel._proto.inference import ModelConfig, ModelInstanceGroupKind
from kernel._registry import PLATFORM_BACKENDS
from kernel.tensors import DATATYPES, config_type_to_datatype

__all__ = [
    "ModelRepository",
    "ModelSource",
    "backend_name",
    "check_model_name",
    "normalize_config",
    "select_versions",
]

CONFIG_FILE = "config.pbtxt"


@dataclass(slots=True)
class ModelSource:
    """What the repository knows of one model before it loads."""

    name: str
    model_dir: Path
    config: ModelConfig
    config_path: str
    """Where the config came from, for messages (a file path, or ``<override>``)."""
    has_config: bool
    temporary: bool = False
    """The model folder was made for a load with file contents and is deleted at unload."""
    fingerprint: tuple[tuple[str, int, int], ...] = field(default=())
    """Names, sizes and mtimes of the model's files (for poll mode's change detection)."""


def check_model_name(name: str) -> None:
    """Refuse a model name that could name anything but one folder of a repository.

    A model name becomes a path component (the model folder, a load's temporary folder), so
    one with a path separator, ``..``, a control character, or none at all is refused before
    it reaches the file system, as current tritonserver does.

    :raises KernelError: ``INVALID_ARG``.
    """
    if name and name.isprintable() and "/" not in name and "\\" not in name and ".." not in name:
        return
    shown = name.encode("unicode_escape").decode("ascii")
    raise KernelError(
        Status.INVALID_ARG,
        f"Invalid model name '{shown}': a model name must not be empty or contain path"
        " separators ('/', '\\'), '..' or control characters",
    )


def _fingerprint(model_dir: Path) -> tuple[tuple[str, int, int], ...]:
    items: list[tuple[str, int, int]] = []
    for path in sorted(model_dir.rglob("*")):
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file():
            items.append((str(path.relative_to(model_dir)), st.st_size, st.st_mtime_ns))
    return tuple(items)


class ModelRepository:
    """One or more repository folders, read on demand."""

    def __init__(self, roots: list[Path], *, config_name: str = "") -> None:
        self.roots = [Path(r) for r in roots]
        self.config_name = config_name
        """tritonserver's ``--model-config-name``: a model folder's
        ``configs/<name>.pbtxt`` is its config where that file exists."""
        self._temporary: dict[str, Path] = {}

    def scan(self) -> tuple[dict[str, Path], dict[str, str]]:
        """Model folders by name, and the names that cannot load with the reason why.

        :raises KernelError: ``INVALID_ARG`` when a repository folder does not exist.
        """
        found: dict[str, Path] = {}
        problems: dict[str, str] = {}
        for root in self.roots:
            if not root.is_dir():
                raise KernelError(
                    Status.INVALID_ARG, f"model repository '{root}' is not a readable folder"
                )
            for entry in sorted(root.iterdir()):
                if entry.name.startswith(".") or not entry.is_dir():
                    continue
                if entry.name in found:
                    problems[entry.name] = (
                        f"model '{entry.name}' appears in two repositories:"
                        f" '{found[entry.name].parent}' and '{root}'"
                    )
                    continue
                found[entry.name] = entry
        return found, problems

    def read(
        self,
        name: str,
        *,
        config_override: str | None = None,
        files: dict[str, bytes] | None = None,
    ) -> ModelSource:
        """Read a model's folder and config.

        ``config_override`` is the load API's JSON config; ``files`` maps paths inside the model
        folder (``"1/model.onnx"``) to their contents and requires ``config_override``.

        :raises KernelError: ``NOT_FOUND`` for an unknown model, ``INVALID_ARG`` for a config
            that does not parse or validate (the message names the file, line and field).
        """
        temporary = False
        if files:
            if config_override is None:
                raise KernelError(
                    Status.INVALID_ARG,
                    f"failed to load '{name}': a load with file content requires a config",
                )
            model_dir = self._write_files(name, files)
            temporary = True
        else:
            models, problems = self.scan()
            if name in problems:
                raise KernelError(Status.INVALID_ARG, problems[name])
            found = models.get(name)
            if found is None:
                raise KernelError(  # Triton 2.51 answers INTERNAL: the client named no model
                    Status.NOT_FOUND,
                    f"failed to load '{name}', failed to poll from model repository",
                )
            model_dir = found
        config_file = model_dir / CONFIG_FILE
        if self.config_name:
            custom = model_dir / "configs" / f"{self.config_name}.pbtxt"
            if custom.is_file():
                config_file = custom
        if config_override is not None:
            config = _parse_json(config_override, name)
            source_name, has_config = "<config override>", True
        elif config_file.is_file():
            source_name, has_config = str(config_file), True
            try:
                text = config_file.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise KernelError(Status.INVALID_ARG, f"{config_file}: cannot read: {exc}") from exc
            config = _parse_text(text, source_name)
        else:
            config, source_name, has_config = ModelConfig(), str(config_file), False
        if config.name and config.name != name:
            raise KernelError(
                Status.INVALID_ARG,
                f"{source_name}: field 'name': model name '{config.name}' does not match"
                f" its folder '{name}'",
            )
        config.name = name
        _autofill_platform(config, model_dir)
        return ModelSource(
            name=name,
            model_dir=model_dir,
            config=config,
            config_path=source_name,
            has_config=has_config,
            temporary=temporary,
            fingerprint=() if temporary else _fingerprint(model_dir),
        )

    def fingerprint(self, model_dir: Path) -> tuple[tuple[str, int, int], ...]:
        """Names, sizes and mtimes of the files under ``model_dir``."""
        return _fingerprint(model_dir)

    def _write_files(self, name: str, files: dict[str, bytes]) -> Path:
        """Write a load's file contents into a new private folder; every path stays inside it.

        A path is relative, names no ``..`` or ``.`` component, no backslash or control
        character; files are created new (never through a symbolic link or over another
        entry), so nothing outside the temporary folder is created or written.

        :raises KernelError: ``INVALID_ARG`` for a path that would leave the folder or that
            clashes with another one of the load.
        """
        check_model_name(name)
        for relative in files:
            _check_file_path(name, relative)
        base = Path(tempfile.mkdtemp(prefix="kernel-model-"))
        model_dir = base / name
        try:
            model_dir.mkdir()
            for relative, content in files.items():
                _write_new_file(model_dir, relative, content)
        except OSError as exc:
            shutil.rmtree(base, ignore_errors=True)
            raise KernelError(
                Status.INVALID_ARG,
                f"failed to load '{name}': cannot write the file contents of the load: {exc}",
            ) from None
        self.release(name)
        self._temporary[name] = base
        return model_dir

    def release(self, name: str) -> None:
        """Delete the temporary folder of a model loaded with file contents, if any."""
        base = self._temporary.pop(name, None)
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)

    def close(self) -> None:
        """Delete every temporary model folder."""
        for name in list(self._temporary):
            self.release(name)


def _check_file_path(name: str, relative: str) -> None:
    parts = relative.split("/")
    if (
        not relative
        or relative.startswith("/")
        or "\\" in relative
        or not relative.isprintable()
        or any(part in ("", ".", "..") for part in parts)
    ):
        shown = relative.encode("unicode_escape").decode("ascii")
        raise KernelError(
            Status.INVALID_ARG,
            f"failed to load '{name}': file path '{shown}' is not a relative path inside the"
            " model folder",
        )


def _write_new_file(model_dir: Path, relative: str, content: bytes) -> None:
    """Create ``model_dir/relative`` (and its folders), refusing to follow or replace links."""
    *folders, filename = relative.split("/")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(model_dir, flags)
    try:
        for folder in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o700, dir_fd=fd)
            child = os.open(folder, flags, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open(
            filename,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=fd,
        )
        with os.fdopen(out, "wb") as stream:
            stream.write(content)
    finally:
        os.close(fd)


DEFAULT_MODEL_FILES = {".onnx": "onnxruntime_onnx", ".pt": "pytorch_libtorch"}
"""Triton's autofill of backend fields: a config naming no backend or platform is served by the
platform whose model file (``model.onnx``/``model.pt`` or ``default_model_filename``) a version
folder holds -- so a folder with only ``1/model.onnx`` loads."""


DEFAULT_MODEL_FILE_BACKENDS = {".py": "python", ".xml": "openvino", ".pt2": "pytorch"}
"""The same for backends without a platform name: a version folder holding ``model.py`` is a
Python-backend model (Triton then sets ``backend: "python"``), one holding ``model.xml`` (an
OpenVINO IR) an ``openvino`` model, one holding ``model.pt2`` (a PyTorch exported program) a
``pytorch`` model."""


def _autofill_platform(config: ModelConfig, model_dir: Path) -> None:
    if config.backend or config.platform:
        return

    def holds(suffix: str) -> bool:
        filename = config.default_model_filename or f"model{suffix}"
        return filename.endswith(suffix) and any(
            (v / filename).exists() for v in model_dir.iterdir() if v.name.isdigit()
        )

    for suffix, platform in DEFAULT_MODEL_FILES.items():
        if holds(suffix):
            config.platform = platform
            return
    for suffix, backend in DEFAULT_MODEL_FILE_BACKENDS.items():
        if holds(suffix):
            config.backend = backend
            return


def _parse_text(text: str, source: str) -> ModelConfig:
    try:
        return _config.parse_model_config(text, source)
    except _config.ConfigParseError as exc:
        raise KernelError(Status.INVALID_ARG, str(exc)) from exc


def _parse_json(text: str, name: str) -> ModelConfig:
    try:
        return _config.config_from_json(text)
    except _config.ConfigParseError as exc:
        raise KernelError(
            Status.INVALID_ARG, f"failed to load '{name}': invalid config override: {exc}"
        ) from exc


def select_versions(source: ModelSource) -> list[int]:
    """The version numbers to serve under the model's ``version_policy`` (Triton's default:
    the latest one).

    :raises KernelError: ``INVALID_ARG`` when the policy selects no version folder.
    """
    available = sorted(
        int(p.name) for p in source.model_dir.iterdir() if p.is_dir() and p.name.isdigit()
    )
    policy = source.config.version_policy
    if policy is not None and policy.all is not None:
        chosen = available
    elif policy is not None and policy.specific is not None:
        wanted = set(policy.specific.versions)
        chosen = [v for v in available if v in wanted]
        missing = sorted(wanted - set(available))
        if missing:
            raise KernelError(
                Status.INVALID_ARG,
                f"{source.config_path}: field 'version_policy': versions {missing} of model"
                f" '{source.name}' have no version folder",
            )
    else:
        latest = policy.latest if policy is not None else None
        count = latest.num_versions if latest is not None and latest.num_versions > 0 else 1
        chosen = available[-count:]
    if not chosen:
        raise KernelError(
            Status.INVALID_ARG,
            f"at least one version must be available under the version policy of model"
            f" '{source.name}' (numeric folders found in '{source.model_dir}': {available})",
        )
    return chosen


def backend_name(config: ModelConfig, config_path: str) -> str:
    """The backend a config selects: its ``backend``, else the one its ``platform`` maps to.

    :raises KernelError: ``INVALID_ARG`` when neither is set or the platform is unknown.
    """
    if config.backend:
        return str(config.backend)
    if config.platform == "ensemble":
        return "ensemble"
    if config.platform:
        mapped = PLATFORM_BACKENDS.get(config.platform)
        if mapped is None:
            raise KernelError(
                Status.INVALID_ARG,
                f"{config_path}: field 'platform': unknown platform '{config.platform}'"
                f" (served platforms: {', '.join(sorted(PLATFORM_BACKENDS))}, ensemble)",
            )
        return mapped
    raise KernelError(
        Status.INVALID_ARG,
        f"{config_path}: field 'backend': model '{config.name}' names no backend or platform",
    )


def normalize_config(
    config: ModelConfig, config_path: str, *, gpus: int, preferred_kind: str = ""
) -> ModelConfig:
    """Fill Triton's defaults and check what the kernel relies on; returns ``config``.

    A missing ``instance_group`` and ``KIND_AUTO`` groups get the backend's
    ``preferred_kind`` (``KIND_CPU``/``KIND_GPU``) where it has one, else KIND_GPU when
    ``gpus`` are visible and KIND_CPU otherwise; KIND_GPU needs a GPU either way.

    :raises KernelError: ``INVALID_ARG`` naming the file and field of the first problem.
    """
    where = config_path

    def fail(fieldname: str, text: str) -> KernelError:
        return KernelError(Status.INVALID_ARG, f"{where}: field '{fieldname}': {text}")

    if config.platform in PLATFORM_BACKENDS and not config.backend:
        config.backend = PLATFORM_BACKENDS[config.platform]
    if config.max_batch_size < 0:
        raise fail("max_batch_size", "must be 0 (no batching) or positive")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        seen: set[str] = set()
        for tensor in tensors:
            if not tensor.name:
                raise fail(kind, f"an {kind} has no name")
            if tensor.name in seen:
                raise fail(kind, f"{kind} '{tensor.name}' is declared twice")
            seen.add(tensor.name)
            datatype = config_type_to_datatype(tensor.data_type.name or "")
            if datatype not in DATATYPES:
                raise fail(f"{kind}.data_type", f"{kind} '{tensor.name}' has no valid data_type")
            if any(d < -1 for d in tensor.dims):
                raise fail(f"{kind}.dims", f"{kind} '{tensor.name}' has invalid dims {tensor.dims}")
    if config.dynamic_batching is not None and config.max_batch_size > 0:
        for size in config.dynamic_batching.preferred_batch_size:
            if size < 1 or size > config.max_batch_size:
                raise fail(
                    "dynamic_batching.preferred_batch_size",
                    f"preferred batch size {size} must be in [1, max_batch_size="
                    f"{config.max_batch_size}]",
                )
    if config.platform != "ensemble":
        default_kind = ModelInstanceGroupKind.GPU if gpus else ModelInstanceGroupKind.CPU
        if preferred_kind == "KIND_CPU":
            default_kind = ModelInstanceGroupKind.CPU
        if not config.instance_group:
            from kernel._proto.inference import ModelInstanceGroup

            config.instance_group = [ModelInstanceGroup(kind=default_kind, count=1)]
        for index, group in enumerate(config.instance_group):
            if not group.name:
                group.name = f"{config.name}_{index}"
            if group.count == 0:
                group.count = 1
            if group.count < 0:
                raise fail("instance_group.count", f"group '{group.name}' has a negative count")
            if group.kind == ModelInstanceGroupKind.AUTO:
                group.kind = default_kind
    return config
