"""Rounding-error bounds for the numerics tests, derived from the arithmetic, not from a CPU.

A kernel may sum a dot product in any order and block split; what every correct one shares is
the IEEE arithmetic. For y = round_out(sum_k x_k w_k + b), where x and w are already in the
operand dtype, the products are exact in float32 (8-bit x 8-bit significands), the sum is kept
in float32, and the result is rounded once to the output dtype. With u the unit roundoff
(2^-p for a p-bit significand) and gamma_n = n u / (1 - n u) (Higham, "Accuracy and Stability of
Numerical Algorithms", 2nd ed., eq. 3.4, any summation order):

    |y - s| <= u_out |s| + (1 + u_out) gamma_{K+1}(u_f32) (sum_k |x_k w_k| + |b|)

where s is the exact sum (here: float64 from the same operands). Two correct kernels therefore
differ by at most twice that, whatever order each one sums in.
"""

from __future__ import annotations

import torch

SIGNIFICAND_BITS = {torch.bfloat16: 8, torch.float16: 11, torch.float32: 24, torch.float64: 53}


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p: the largest relative error of rounding one value to `dtype` (to nearest)."""
    return 2.0 ** -SIGNIFICAND_BITS[dtype]


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n: the relative bound of a sum of n terms accumulated with roundoff u."""
    assert n * u < 1
    return n * u / (1 - n * u)


def exact_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T + bias in float64 from the operands' own values (exact to ~2^-53)."""
    out = x.double() @ weight.double().T
    return out if bias is None else out + bias.double()


def linear_error_bound(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       out_dtype: torch.dtype) -> torch.Tensor:
    """Per-element bound on |kernel(x, weight, bias) - exact_linear(...)| (see module doc)."""
    magnitude = x.double().abs() @ weight.double().abs().T
    if bias is not None:
        magnitude = magnitude + bias.double().abs()
    u_out = unit_roundoff(out_dtype)
    reduction = gamma(x.shape[-1] + 1, unit_roundoff(torch.float32))
    return u_out * exact_linear(x, weight, bias).abs() + (1 + u_out) * reduction * magnitude


def attention_error_bound(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          scale: float, dtype: torch.dtype) -> float:
    """A bound on |softmax(scale q K^T) V - exact| for attention over n keys of dimension d.

    Each score is a d-term dot product: off by at most e_s = gamma_{d+1}(u) scale max_j sum|q k_j|.
    A shift of the scores by at most e_s changes each softmax weight by a factor within
    exp(+-2 e_s); exp, the n-term sum and the division add gamma_{n+2}(u). So the weights p (which
    sum to 1) are off by at most r = (exp(2 e_s) - 1) + gamma_{n+2}(u) relative, and sum_j p_j v_j,
    accumulated in n terms, by at most (r + gamma_n(u)) (1 + r) max|V|.
    """
    import math

    u = unit_roundoff(dtype)
    n, d = key.shape[-2], key.shape[-1]
    keys = key if key.shape[-3] == query.shape[-3] else key.repeat_interleave(
        query.shape[-3] // key.shape[-3], dim=-3)
    score_terms = (query.double().abs() @ keys.double().abs().transpose(-1, -2)).max()
    e_s = gamma(d + 1, u) * scale * float(score_terms)
    r = math.expm1(2 * e_s) + gamma(n + 2, u)
    return (r + gamma(n, u)) * (1 + r) * float(value.abs().max())
