"""What a local HF model folder holds, read without loading it: its weight files and the dtype they are stored in.

``gspo validate`` uses these to fail where ``gspo train`` would (a folder with a config but no weights), and the
trainer exports ``final_model`` / checkpoint ``model/`` in the stored dtype (a bf16 checkpoint stays bf16).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
KEY = "actor_rollout_ref.model.path"
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
_CONFIG_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                  "float64": torch.float64}


def weight_files(folder: Path) -> list[Path]:
    """The weight files ``from_pretrained`` would read (a sharded index's shards included); [] if there are none."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            if not name.endswith(".index.json"):
                return [path]
            shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
            return [folder / shard for shard in shards]
    return []


def check_weights_present(folder: Path) -> list[Path]:
    """The weight files, or an error naming the folder and what is missing (a sharded index's missing shards)."""
    from gspo.model.loading import ModelLoadError

    try:
        files = weight_files(folder)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{KEY}: cannot read the weight index in {folder}: {exc}") from None
    if not files:
        raise ModelLoadError(f"{KEY}: {folder} has a config.json but no weights ({' / '.join(WEIGHT_FILES[::2])}); "
                             f"copy the checkpoint's weight files there or point the key at the full folder")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ModelLoadError(f"{KEY}: {folder} is missing weight shards {missing} named in its index")
    return files


def stored_dtype(folder: Path) -> torch.dtype:
    """The floating dtype of the folder's weights: the first floating tensor of a safetensors file, else the
    config's ``dtype`` / ``torch_dtype``, else float32."""
    files = weight_files(folder)
    if files and files[0].suffix == ".safetensors" and files[0].is_file():
        with open(files[0], "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, entry in header.items():
            if name != "__metadata__" and entry.get("dtype") in _SAFETENSORS_DTYPES:
                return _SAFETENSORS_DTYPES[entry["dtype"]]
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return torch.float32
    return _CONFIG_DTYPES.get(str(config.get("dtype") or config.get("torch_dtype")), torch.float32)
