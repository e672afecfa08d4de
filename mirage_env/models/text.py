"""Prompt embeddings from umT5 (transformers), as the Wan pipelines make them: zeros beyond each prompt."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer, UMT5EncoderModel


class TextEncoder:
    """``encoder(prompts) -> [B, max_length, d_model]``; loads from local directories only."""

    def __init__(self, encoder_dir: str | Path, tokenizer_dir: str | Path, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, max_length: int = 512) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        self.model = UMT5EncoderModel.from_pretrained(str(encoder_dir), dtype=dtype, local_files_only=True)
        self.model.to(device).eval()
        self.max_length = max_length

    @property
    def dim(self) -> int:
        return int(self.model.config.d_model)

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.max_length, truncation=True,
                                return_attention_mask=True, return_tensors="pt")
        device = self.model.device
        mask = tokens.attention_mask.to(device)
        hidden = self.model(input_ids=tokens.input_ids.to(device), attention_mask=mask).last_hidden_state
        return hidden * mask.unsqueeze(-1).to(hidden.dtype)
