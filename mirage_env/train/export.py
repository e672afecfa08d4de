"""Export a trained weights folder for shipping: the same layout with floating-point tensors stored as float16.

    python -m mirage_env.train.export runs/tiny/weights mirage_env/data/tiny

``from_preset`` loads such a folder at the dtype it is asked for (float32 by default), so only the storage is
halved. Every part of the layout (:data:`mirage_env.models.loading.PARTS`) present in the source is copied:
configs as they are, safetensors files with their float tensors cast. Last, the target gets its checksum
``manifest.json`` (:func:`mirage_env.models.manifest.write_manifest`), which ``from_preset`` verifies.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mirage_env.models.loading import PARTS
from mirage_env.models.manifest import write_manifest


def export_weights(source: Path, target: Path, dtype: torch.dtype = torch.float16) -> list[Path]:
    """Copy the weights folder ``source`` to ``target`` with float tensors as ``dtype`` and write the target's
    manifest; returns the files written, the manifest last."""
    written = []
    for part in PARTS:
        folder = source / part.name
        if not folder.is_dir():
            continue
        (target / part.name).mkdir(parents=True, exist_ok=True)
        for file in sorted(folder.iterdir()):
            out = target / part.name / file.name
            if file.suffix == ".safetensors":
                tensors = load_file(str(file))
                save_file({k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}, str(out))
            else:
                shutil.copyfile(file, out)
            written.append(out)
    if not written:
        raise ValueError(f"{source} holds none of the weight folders {[p.name for p in PARTS]}")
    return [*written, write_manifest(target)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    files = export_weights(args.source, args.target)
    print(f"wrote {len(files)} files, {sum(f.stat().st_size for f in files) / 2**20:.2f} MiB, to {args.target}")


if __name__ == "__main__":
    main()
