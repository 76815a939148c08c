"""Pack what ``bench gpu`` needs for a GPU machine without network, in a few tens of MiB.

    .venv/bin/python -m bench.gpu.pack                      # bench/gpu/bundle/ (ignored)
    .venv/bin/python -m bench.gpu.pack --out DIR --python-version 3.12

Run it where there is network (a package index) and PyAV; it writes to ``--out``:

* ``workload.tar.xz``: the benchmark's workload (``bench gpu --write-workload``: the
  long recording's samples as 16-bit PCM, its chunks as the transcriber's chunker plans
  them, its reference), so the GPU machine needs neither PyAV nor onnxruntime. Ten cycles
  of the same speech: xz's large window keeps one (1.2 MiB).
* ``model.tar.xz``: the model directory with its weights quantised to int8 per row, as
  CTranslate2's converter does it (``--quantization int8``), so tiny.en's 75.5 MB of
  float16 weights travel as about 28 MB. CTranslate2 converts them back to the compute
  type asked for (float16 on the GPU) when it loads them.
* ``site.tar.xz``: the Python packages the model server and the benchmark import, as
  wheels for the machine's Python (``--python-version``, manylinux x86_64) fetched with
  ``pip download``, unpacked, their shared libraries without debug sections
  (:func:`strip_debug`): CTranslate2 (most of it), faster-whisper,
  tokenizers, FastAPI, uvicorn, pydantic, httpx and their dependencies. Not included:
  numpy (the GPU machine's torch installation has it; the run script checks), PyAV,
  asyncpg and SQLAlchemy (stand-ins in ``bench/gpu/stubs/`` take their place), onnxruntime
  (the chunks are planned here).
* ``MANIFEST.json``: what each file holds, its size, and the total, which must stay under
  ``--limit-mib`` (64).

``bench/gpu/run-on-gpu-machine.sh`` unpacks and runs it there.
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bench" / "gpu" / "bundle"
#: What the model server and ``bench gpu`` import on top of the standard library and numpy
#: (``python -X importtime``; see the module docstring for what is left out on purpose).
PACKAGES = (
    "ctranslate2",
    "faster-whisper",
    "tokenizers",
    "huggingface-hub",
    "tqdm",
    "filelock",
    "fsspec",
    "packaging",
    "pyyaml",
    "fastapi",
    "opentelemetry-api",
    "starlette",
    "annotated-doc",
    "pydantic",
    "pydantic-core",
    "pydantic-settings",
    "python-dotenv",
    "typing-inspection",
    "annotated-types",
    "typing-extensions",
    "python-multipart",
    "prometheus-client",
    "uvicorn",
    "click",
    "h11",
    "anyio",
    "sniffio",
    "httpx",
    "httpcore",
    "idna",
    "certifi",
)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")

# --- CTranslate2's model.bin ---------------------------------------------------------------

#: CTranslate2's type ids (``ctranslate2/specs/model_spec.py``, ``_dtype_to_type_id``).
DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")


def _read_string(f: IO[bytes]) -> str:
    (length,) = struct.unpack("H", f.read(2))
    return f.read(length)[:-1].decode()


def _write_string(f: IO[bytes], text: str) -> None:
    data = text.encode()
    f.write(struct.pack("H", len(data) + 1) + data + b"\0")


def read_model_bin(path: Path) -> dict[str, Any]:
    """A CTranslate2 ``model.bin`` (binary version 6): name, revision, variables, aliases."""
    variables: dict[str, np.ndarray] = {}
    aliases: list[tuple[str, str]] = []
    with path.open("rb") as f:
        (version,) = struct.unpack("I", f.read(4))
        if version != 6:
            raise ValueError(f"{path}: model.bin version {version}, this reads version 6")
        name = _read_string(f)
        (revision,) = struct.unpack("I", f.read(4))
        (count,) = struct.unpack("I", f.read(4))
        for _ in range(count):
            var = _read_string(f)
            (rank,) = struct.unpack("B", f.read(1))
            shape = struct.unpack(f"{rank}I", f.read(4 * rank)) if rank else ()
            (type_id,) = struct.unpack("B", f.read(1))
            (size,) = struct.unpack("I", f.read(4))
            dtype = DTYPES[type_id]
            raw = f.read(size)
            if dtype == "bfloat16":
                array = np.frombuffer(raw, dtype=np.uint16).reshape(shape)
            else:
                array = np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)
            variables[var] = array
        (count,) = struct.unpack("I", f.read(4))
        for _ in range(count):
            aliases.append((_read_string(f), _read_string(f)))
    return {"name": name, "revision": revision, "variables": variables, "aliases": aliases}


def write_model_bin(model: dict[str, Any], path: Path, dtypes: dict[str, str]) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("I", 6))
        _write_string(f, model["name"])
        f.write(struct.pack("I", model["revision"]))
        f.write(struct.pack("I", len(model["variables"])))
        for var, array in model["variables"].items():
            _write_string(f, var)
            f.write(struct.pack("B", array.ndim))
            for dim in array.shape:
                f.write(struct.pack("I", dim))
            f.write(struct.pack("B", DTYPES.index(dtypes.get(var, str(array.dtype)))))
            data = np.ascontiguousarray(array).tobytes()
            f.write(struct.pack("I", len(data)))
            f.write(data)
        f.write(struct.pack("I", len(model["aliases"])))
        for alias, target in model["aliases"]:
            _write_string(f, alias)
            _write_string(f, target)


def quantise_int8(model: dict[str, Any]) -> dict[str, Any]:
    """Every weight matrix (linear, convolution and embedding layers' ``.../weight``: the
    variables CTranslate2 gives a ``weight_scale``) to int8 with a float32 scale per row,
    as CTranslate2's ``_quantize`` does; the rest as it was."""
    out: dict[str, np.ndarray] = {}
    for var, array in model["variables"].items():
        floating = array.dtype in (np.float16, np.float32)
        if not (var.endswith("/weight") and array.ndim >= 2 and floating):
            out[var] = array
            continue
        value = array.astype(np.float32).reshape(array.shape[0], -1)
        amax = np.amax(np.absolute(value), axis=1)
        amax[amax == 0] = 127.0
        amax = np.maximum(amax, np.float32(127) / np.finfo(np.float32).max)
        scale = (127.0 / amax).astype(np.float32)
        quantised = np.rint(value * scale[:, None]).astype(np.int8).reshape(array.shape)
        out[var] = quantised
        out[var + "_scale"] = scale
    return {**model, "variables": out}


def pack_model(model_dir: Path, dest: Path) -> dict[str, Any]:
    """``model_dir`` with int8 weights, written to ``dest`` (a directory)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.is_file() and item.name != "model.bin":
            shutil.copyfile(item, dest / item.name)
    model = quantise_int8(read_model_bin(model_dir / "model.bin"))
    write_model_bin(model, dest / "model.bin", {})
    return {
        "source": model_dir.name,
        "model_bin_bytes_before": (model_dir / "model.bin").stat().st_size,
        "model_bin_bytes_int8": (dest / "model.bin").stat().st_size,
    }


# --- Python packages -----------------------------------------------------------------------


def download_wheels(dest: Path, python_version: str, wheels: Path | None) -> list[Path]:
    """Wheels of :data:`PACKAGES` at the versions installed here, for ``python_version``
    (``pip download``; those already in ``wheels`` are taken from there)."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in PACKAGES]
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        *[arg for platform in PLATFORMS for arg in ("--platform", platform)],
        "--dest",
        str(dest),
        *(["--find-links", str(wheels)] if wheels else []),
        *pins,
    ]
    subprocess.run(command, check=True)
    return sorted(dest.glob("*.whl"))


def unpack_wheels(wheels: list[Path], site: Path) -> None:
    """A wheel unpacked is an installed package (its scripts aside)."""
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)


def strip_debug(site: Path) -> dict[str, int]:
    """``strip --strip-debug`` on every shared library (debug sections only: code, data
    and CUDA kernels stay). CTranslate2's Python extension carries 67 MB of debug
    information (10 MiB compressed). Bytes before and after; nothing without ``strip``."""
    sizes = {"before": 0, "after": 0}
    if shutil.which("strip") is None:
        return sizes
    for library in sorted(site.rglob("*.so*")):
        if not library.is_file() or library.read_bytes()[:4] != b"\x7fELF":
            continue
        sizes["before"] += library.stat().st_size
        subprocess.run(["strip", "--strip-debug", str(library)], check=True)
        sizes["after"] += library.stat().st_size
    return sizes


# --- the bundle ----------------------------------------------------------------------------


def tar_xz(source: Path, dest: Path, preset: int) -> int:
    """``source``'s contents (not the folder itself) into ``dest``; its size."""
    import lzma

    filters = [{"id": lzma.FILTER_LZMA2, "preset": preset}]
    with (
        lzma.open(dest, "wb", format=lzma.FORMAT_XZ, filters=filters) as raw,
        tarfile.open(fileobj=raw, mode="w") as tar,
    ):
        for item in sorted(source.iterdir()):
            tar.add(item, arcname=item.name)
    return dest.stat().st_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gpu.pack", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=BUNDLE)
    parser.add_argument(
        "--model-dir", type=Path, help="a faster-whisper model directory (default tiny.en)"
    )
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    parser.add_argument("--wheels", type=Path, help="a folder of wheels to take first")
    parser.add_argument("--no-site", action="store_true", help="skip the Python packages")
    parser.add_argument("--cycles", type=int, default=10, help="cycles of the recording")
    parser.add_argument("--smoke", action="store_true", help="the smoke workload instead")
    parser.add_argument("--xz-preset", type=int, default=9, help="0 (fast) to 9 (small)")
    parser.add_argument("--limit-mib", type=float, default=64.0)
    args = parser.parse_args(argv)

    from bench.scenarios import gpu
    from bench.speech import tiny_model_path

    args.out.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    manifest: dict[str, Any] = {
        "commit": commit or None,
        "python_version": args.python_version,
        "files": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-gpu-pack-") as tmp_name:
        tmp = Path(tmp_name)

        workload = gpu.make_workload(args.cycles, args.smoke)
        (tmp / "workload").mkdir()
        workload.save(tmp / "workload" / "workload.npz")
        size = tar_xz(tmp / "workload", args.out / "workload.tar.xz", args.xz_preset)
        manifest["files"]["workload.tar.xz"] = {
            "bytes": size,
            "kind": workload.kind,
            "seconds": round(workload.seconds, 1),
            "chunks": len(workload.chunks),
        }
        print(f"workload: {workload.kind}, {workload.seconds:.0f} s -> {size / 2**20:.1f} MiB")

        model_dir = args.model_dir or Path(tiny_model_path())
        model_name = args.model_dir.name if args.model_dir else "tiny.en"
        (tmp / "model").mkdir()
        about = pack_model(model_dir, tmp / "model" / model_name)
        size = tar_xz(tmp / "model", args.out / "model.tar.xz", args.xz_preset)
        manifest["files"]["model.tar.xz"] = {"bytes": size, "model": model_name, **about}
        print(f"model: {model_name}, int8 -> {size / 2**20:.1f} MiB")

        if not args.no_site:
            wheels = download_wheels(tmp / "wheels", args.python_version, args.wheels)
            unpack_wheels(wheels, tmp / "site")
            stripped = strip_debug(tmp / "site")
            size = tar_xz(tmp / "site", args.out / "site.tar.xz", args.xz_preset)
            manifest["files"]["site.tar.xz"] = {
                "bytes": size,
                "wheels": [w.name for w in wheels],
                "shared_library_bytes_before_and_after_strip_debug": stripped,
            }
            print(f"site: {len(wheels)} wheels -> {size / 2**20:.1f} MiB")
        else:
            (args.out / "site.tar.xz").unlink(missing_ok=True)

    total = sum(f["bytes"] for f in manifest["files"].values())
    manifest["total_mib"] = round(total / 2**20, 2)
    manifest["limit_mib"] = args.limit_mib
    (args.out / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"bundle: {manifest['total_mib']} MiB in {args.out} (limit {args.limit_mib} MiB)")
    if total > args.limit_mib * 2**20:
        print(f"TOO LARGE: {manifest['total_mib']} MiB > {args.limit_mib} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
