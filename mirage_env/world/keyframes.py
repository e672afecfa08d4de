"""Generated keyframes and their reference retrieval by voxel overlap (vectorised, occlusion-aware).

Every latent frame written into the memory becomes a keyframe: its latent, pose and the sorted voxel keys it
wrote. To condition a new segment, keyframes are ranked by how many of the voxels *visible* from the target
cameras (the winners of the memory's z-buffer, so occluded voxels do not count) they wrote. One ``torch.isin``
and one ``bincount`` over all keyframes replace the public release's per-pair Python set intersections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class KeyframeStore:
    """Bounded list of keyframes (oldest dropped first), with their latents [C, h, w] and voxel keys."""

    capacity: int = 64
    latents: list[torch.Tensor] = field(default_factory=list)
    poses: list[torch.Tensor] = field(default_factory=list)
    keys: list[torch.Tensor] = field(default_factory=list)
    frame_index: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.latents)

    def add(self, latent: torch.Tensor, pose: torch.Tensor, keys: torch.Tensor, frame_index: int) -> None:
        """Store a keyframe; ``keys`` are the voxel keys it wrote (any order, duplicates allowed)."""
        self.latents.append(latent)
        self.poses.append(pose)
        self.keys.append(torch.unique(keys))
        self.frame_index.append(frame_index)
        if len(self.latents) > self.capacity:
            for items in (self.latents, self.poses, self.keys, self.frame_index):
                del items[0]

    def overlap(self, visible_keys: torch.Tensor) -> torch.Tensor:
        """Number of ``visible_keys`` each keyframe wrote: int64 [len(self)]."""
        if not self.keys:
            return torch.zeros(0, dtype=torch.int64)
        owner = torch.repeat_interleave(torch.arange(len(self.keys)), torch.tensor([k.numel() for k in self.keys]))
        hit = torch.isin(torch.cat(self.keys), visible_keys.to(self.keys[0].device))
        return torch.bincount(owner[hit.cpu()], minlength=len(self.keys))

    def retrieve(self, visible_keys: torch.Tensor, count: int, exclude_after: int) -> list[int]:
        """Indices of up to ``count`` keyframes with the largest overlap (> 0), skipping keyframes whose frame
        index is ``exclude_after`` or later (the preceding window); returned in time order."""
        if count <= 0 or not self.keys:
            return []
        scores = self.overlap(visible_keys)
        eligible = torch.tensor(self.frame_index) < exclude_after
        scores = torch.where(eligible & (scores > 0), scores, torch.full_like(scores, -1))
        order = torch.argsort(-scores, stable=True)[:count]
        return sorted(int(i) for i in order if scores[i] > 0)

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "latents": list(self.latents), "poses": list(self.poses),
                "keys": list(self.keys), "frame_index": list(self.frame_index)}

    @classmethod
    def from_state_dict(cls, state: dict) -> KeyframeStore:
        return cls(state["capacity"], list(state["latents"]), list(state["poses"]), list(state["keys"]),
                   list(state["frame_index"]))
