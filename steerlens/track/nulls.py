"""Tracking statistics: EAS, projection and norm of a shift against the teacher vector, the
isotropic and covariance-matched nulls, and the excess-alignment bootstrap (formulas in
:mod:`steerlens.track`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from steerlens.measures.stats import cosines, span_directions, z_and_p

__all__ = ["NullConfig", "cov_null_cosines", "excess_bootstrap", "layer_stats"]


def cov_null_cosines(v: torch.Tensor, span_rows: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """cos(v, r_k) for r_k = Dᵀg_k/‖Dᵀg_k‖, g_k ~ N(0, I): the same draws as
    ``stats.cosines(v, stats.span_directions(D, n, seed))``, computed through the Gram matrix
    when D has fewer rows than columns (no (n, d) matrix of directions is formed)."""
    d64 = span_rows.double()
    m, dim = d64.shape
    if m > dim:
        return cosines(v, span_directions(span_rows, n, seed))
    g = torch.randn(n, m, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    v64 = v.double().reshape(-1)
    num = g @ (d64 @ v64)
    r_norm = ((g @ (d64 @ d64.T)) * g).sum(1).clamp_min(0).sqrt()
    den = r_norm * v64.norm()
    return torch.where(den > 1e-300, num / den.clamp_min(1e-300), torch.zeros_like(den))


@dataclass(frozen=True)
class NullConfig:
    n_null: int = 1000
    seed: int = 0
    alternative: str = "greater"


def layer_stats(
    shift_mean: torch.Tensor,
    teacher: torch.Tensor,
    iso_dirs: torch.Tensor,
    span_rows: torch.Tensor,
    cfg: NullConfig,
) -> dict[str, float]:
    """EAS, projection, norm and the two nulls' z and p for one layer and checkpoint.

    ``shift_mean`` is vˢ, ``teacher`` vᵀ, ``iso_dirs`` (n, d) unit directions for the
    isotropic null, ``span_rows`` the (m, d) rows whose centred span gives the
    covariance-matched null."""
    vs = shift_mean.double()
    vt = teacher.double()
    t_norm = float(vt.norm())
    s_norm = float(vs.norm())
    eas = float(vs @ vt) / (s_norm * t_norm) if s_norm > 0 and t_norm > 0 else 0.0
    proj = float(vs @ vt) / t_norm if t_norm > 0 else 0.0
    iso = cosines(vs, iso_dirs)
    centred = span_rows.double() - span_rows.double().mean(0, keepdim=True)
    cov = cov_null_cosines(vs, centred, cfg.n_null, cfg.seed + 1)
    z_iso, p_iso = z_and_p(eas, iso, cfg.alternative)
    z_cov, p_cov = z_and_p(eas, cov, cfg.alternative)
    return {
        "eas": eas,
        "proj": proj,
        "norm": s_norm,
        "z_iso": z_iso,
        "p_iso": p_iso,
        "z_cov": z_cov,
        "p_cov": p_cov,
    }


def excess_bootstrap(
    main_rows: torch.Tensor,
    ctrl_rows: torch.Tensor,
    teacher: torch.Tensor,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """EAS(main) − EAS(control) from paired (n, d) shift rows, with a percentile bootstrap
    over prompts (the same resampled prompts for both series) and p = (1 + #{draw ≤ 0}) /
    (1 + n_boot). Vectorised: each draw's mean shift is a row of W·D with W the (n_boot, n)
    resampling counts / n (its norm taken through the Gram matrix DDᵀ when n < d)."""
    if main_rows.shape != ctrl_rows.shape:
        raise ValueError(
            f"main and control shift rows differ in shape ({tuple(main_rows.shape)} vs "
            f"{tuple(ctrl_rows.shape)}): they must come from the same probe prompts"
        )
    n = main_rows.shape[0]
    vt = teacher.double()
    vt = vt / vt.norm().clamp_min(1e-300)

    def eas_of(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        r = rows.double()
        if r.shape[0] > r.shape[1]:
            means = w @ r
            return (means @ vt) / means.norm(dim=1).clamp_min(1e-300)
        # through the (n, n) Gram matrix: ‖wᵀR‖² = wᵀ(RRᵀ)w, no (n_boot, d) matrix formed
        sq = ((w @ (r @ r.T)) * w).sum(1).clamp_min(0)
        return (w @ (r @ vt)) / sq.sqrt().clamp_min(1e-300)

    ones = torch.full((1, n), 1.0 / n, dtype=torch.float64)
    est = float(eas_of(main_rows, ones)[0] - eas_of(ctrl_rows, ones)[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), idx.reshape(-1)), 1.0)
    w = torch.from_numpy(counts / n)
    draws = (eas_of(main_rows, w) - eas_of(ctrl_rows, w)).numpy()
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    p = (1 + int((draws <= 0).sum())) / (1 + n_boot)
    return {"estimate": est, "lo": float(lo), "hi": float(hi), "p": p}
