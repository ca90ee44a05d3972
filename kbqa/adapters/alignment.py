"""Width alignment between two base models through their weights' singular subspaces.

When a role's ΔW has a different shape in donor and target (hidden 576 vs 896, 9 vs 14 heads),
there is no row-to-row correspondence to copy along. Following Cross-LoRA, each base weight is
reduced to its top-r singular subspaces, W_s ≈ U_s Σ_s V_sᵀ and W_t ≈ U_t Σ_t V_tᵀ, and the
donor change is carried over by the least-squares maps between those bases,
P_out = argmin‖P U_s − U_t‖ = U_t U_sᵀ and P_in = V_t V_sᵀ:

    ΔW_t = P_out ΔW_s P_inᵀ = U_t (U_sᵀ ΔW_s V_s) V_tᵀ

which already lies inside the target's subspaces (U_t U_tᵀ · … · V_t V_tᵀ changes nothing). With
identical base weights and full rank, U_t U_sᵀ = I and the map is the identity.

The i-th singular direction of one model is paired with the i-th of the other. That pairing is
a heuristic (singular vectors carry arbitrary signs and the models were trained apart), so each
module gets a similarity score and modules below a threshold are skipped (LoRA-X): for equal
shapes the mean cosine of the principal angles between the two models' subspaces, otherwise
(no common space to measure angles in) the cosine between their normalised singular spectra.
"captured" is the share of ‖ΔW_s‖ inside the donor's top-r subspaces; the rest cannot travel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Subspace:
    """Top-r singular triplets of a base weight."""

    u: torch.Tensor  # (rows, r_out)
    s: torch.Tensor  # (min(r_out, r_in),)
    v: torch.Tensor  # (columns, r_in)


@dataclass(frozen=True)
class AlignedDelta:
    delta: torch.Tensor
    similarity: float
    captured: float


def subspace(weight: torch.Tensor, rank: int) -> Subspace:
    """Top-`rank` singular subspaces of `weight` (float32, exact SVD), one rank per side.

    A rank beyond min(rows, columns) completes the larger side with its null-space basis, so
    that rank ≥ both dimensions gives complete bases (and the map becomes exactly invertible).
    """
    full = rank > min(weight.shape)
    u, s, vh = torch.linalg.svd(weight.float(), full_matrices=full)
    return Subspace(u=u[:, :rank], s=s[:rank], v=vh[:rank].T)


def _principal_cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the column spaces of orthonormal a and b."""
    return torch.linalg.svdvals(a.T @ b).clamp(max=1.0)


def similarity(donor: Subspace, target: Subspace) -> float:
    """Mean principal-angle cosine (equal shapes), else cosine of the normalised spectra."""
    if donor.u.shape == target.u.shape and donor.v.shape == target.v.shape:
        cosines = torch.cat([_principal_cosines(donor.u, target.u),
                             _principal_cosines(donor.v, target.v)])
        return float(cosines.mean())
    r = min(donor.s.numel(), target.s.numel())
    a, b = donor.s[:r], target.s[:r]
    return float(a @ b / (a.norm() * b.norm()).clamp(min=1e-12))


def align_delta(delta: torch.Tensor, donor: Subspace, target: Subspace) -> AlignedDelta:
    """Carry a donor ΔW into the target's shape through the paired singular subspaces."""
    r_out = min(donor.u.shape[1], target.u.shape[1])
    r_in = min(donor.v.shape[1], target.v.shape[1])
    core = donor.u[:, :r_out].T @ delta.float() @ donor.v[:, :r_in]
    mapped = target.u[:, :r_out] @ core @ target.v[:, :r_in].T
    norm = float(delta.norm())
    captured = float(core.norm()) / norm if norm > 0 else 0.0
    return AlignedDelta(delta=mapped, similarity=similarity(donor, target), captured=captured)
