"""Export a trained weights folder for shipping: the same layout with floating-point tensors stored as float16.

    python -m mirage_env.train.export runs/tiny/weights mirage_env/data/tiny

``from_preset`` loads such a folder at the dtype it is asked for (float32 by default), so only the storage is
halved. Every part of the layout (:data:`mirage_env.models.loading.PARTS`) present in the source is copied:
configs as they are, safetensors files with their float tensors cast, then the target's checksum ``manifest.json``
(:func:`mirage_env.models.manifest.write_manifest`), which ``from_preset`` verifies. ``target`` is replaced as a whole,
atomically (:func:`mirage_env.atomic.atomic_dir`): it holds the complete export or its previous content.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mirage_env.atomic import atomic_dir
from mirage_env.models.loading import PARTS
from mirage_env.models.manifest import write_manifest


def export_weights(source: Path, target: Path, dtype: torch.dtype = torch.float16) -> list[Path]:
    """Copy the weights folder ``source`` to ``target`` with float tensors as ``dtype`` and write the target's
    manifest; returns the files written, the manifest last."""
    parts = [part.name for part in PARTS if (source / part.name).is_dir()]
    if not parts:
        raise ValueError(f"{source} holds none of the weight folders {[p.name for p in PARTS]}")
    files = [Path(part) / file.name for part in parts for file in sorted((source / part).iterdir())]
    with atomic_dir(target) as temp:
        for part in parts:
            (temp / part).mkdir()
        for file in files:
            if file.suffix == ".safetensors":
                tensors = load_file(str(source / file))
                cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
                save_file(cast, str(temp / file))
            else:
                shutil.copyfile(source / file, temp / file)
        manifest = write_manifest(temp)
    return [target / file for file in files] + [target / manifest.name]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args(argv)
    files = export_weights(args.source, args.target)
    print(f"wrote {len(files)} files, {sum(f.stat().st_size for f in files) / 2**20:.2f} MiB, to {args.target}")


if __name__ == "__main__":
    main()
