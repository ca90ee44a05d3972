"""Which donor layers feed each target layer when the two models have different depths.

Both methods match layers by relative depth, x = j·(L_donor − 1)/(L_target − 1) for target
layer j, so the first and last layers always correspond:

- "proportional": the single donor layer nearest to x (ΔW copied; some donor layers may go
  unused when the donor is deeper, or be used twice when it is shallower);
- "interpolate": the two donor layers around x, blended linearly,
  ΔW_j = (1 − f)·ΔW_⌊x⌋ + f·ΔW_⌊x⌋+1 with f = x − ⌊x⌋ (every donor layer contributes).

With equal depths both reduce to layer j ← layer j.
"""

from __future__ import annotations

import math

LAYER_MAPS = ("proportional", "interpolate")


def donor_layers_for(target_layer: int, target_layers: int, donor_layers: int,
                     method: str) -> list[tuple[int, float]]:
    """[(donor layer, weight)] for one target layer; the weights sum to 1."""
    if method not in LAYER_MAPS:
        raise ValueError(f"unknown layer map {method!r}; use one of {LAYER_MAPS}")
    if target_layers == 1 or donor_layers == 1:
        position = 0.0 if donor_layers == 1 else (donor_layers - 1) / 2
    else:
        position = target_layer * (donor_layers - 1) / (target_layers - 1)
    if method == "proportional":
        return [(int(math.floor(position + 0.5)), 1.0)]
    low = int(math.floor(position))
    fraction = position - low
    if fraction < 1e-9 or low + 1 >= donor_layers:
        return [(low, 1.0)]
    return [(low, 1.0 - fraction), (low + 1, fraction)]
