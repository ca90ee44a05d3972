"""Combine several LoRA adapters on one model into one, with peft's add_weighted_adapter.

Methods and what they compute for weights w_i:
- "linear": A = Σ √w_i·A_i, B = Σ √w_i·B_i (adapters must share r). The product B·A then holds
  cross terms B_i·A_j (i ≠ j): it is NOT the weighted sum of the ΔWs, only an approximation
  that works when the adapters share their subspaces (e.g. fine-tunes of one run).
- "cat": A and B stacked, rank Σ r_i, so B·A = Σ w_i·B_i·A_i exactly.
- "svd": Σ w_i·ΔW_i computed exactly, then truncated to `svd_rank` by SVD.
- "ties", "dare_linear", "dare_ties", "magnitude_prune": task-arithmetic merges with
  `density` (share of entries kept) applied to the stacked factors; see the peft docs.
All adapters are loaded strictly through load_adapters first, so a misfit fails loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kbqa.errors import AdapterError
from kbqa.adapters.loading import load_adapters

FUSE_METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties", "magnitude_prune")


def fuse_adapters(model: Any, folders: list[Path], weights: list[float], method: str = "cat",
                  name: str = "fused", density: float | None = None,
                  svd_rank: int | None = None) -> Any:
    """Load `folders` strictly into `model`, add their weighted combination as `name`, activate it.

    Returns the peft model with only the fused adapter active; save it with
    `peft_model.save_pretrained(out, selected_adapters=[name])`.
    """
    from kbqa.adapters.prefix import refuse_prefix

    refuse_prefix([Path(f).expanduser() for f in folders], "fuse",
                  "a prefix cannot be fused with LoRA adapters (or another prefix) into one "
                  "adapter: it is extra key/value positions, not a weight change")
    if method not in FUSE_METHODS:
        raise AdapterError(f"unknown fuse method {method!r}; use one of {', '.join(FUSE_METHODS)}")
    if len(weights) != len(folders) or not folders:
        raise AdapterError(f"{len(folders)} adapters need as many weights, got {len(weights)}")
    if method in ("ties", "dare_linear", "dare_ties", "magnitude_prune") and density is None:
        raise AdapterError(f"method {method} needs a density (0..1)")
    peft_model, reports = load_adapters(model, folders)
    names = [report.name for report in reports]
    kwargs: dict[str, Any] = {"combination_type": method}
    if density is not None:
        kwargs["density"] = density
    if svd_rank is not None:
        kwargs["svd_rank"] = svd_rank
    try:
        peft_model.add_weighted_adapter(names, weights, name, **kwargs)
    except ValueError as exc:  # e.g. linear with different ranks
        raise AdapterError(f"cannot fuse with {method}: {exc}") from exc
    peft_model.set_adapter(name)
    return peft_model
