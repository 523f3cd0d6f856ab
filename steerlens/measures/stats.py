"""Statistics in one place: random-direction nulls, bootstrap, permutation, multiple testing.

Every random choice takes a seed and uses its own generator (no global RNG state).
DESIGN.md "Nulls": the isotropic null of cos(v, r) for r uniform on the sphere has
E|cos| ≈ √(2/(πd)); the covariance-matched null draws r ~ N(0, Σ) with Σ the (uncentered)
second moment of the activation differences, i.e. random directions in their span.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Any

import einops
import numpy as np
import torch


def kl_per_row(ref: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL divergence per row of log-probabilities (nats), in the inputs' dtype (keeps grad):

    KL_i = Σ_v P_ref,i(v) · (log P_ref,i(v) − log P_other,i(v))

    for (..., V) log-softmax rows ``ref`` and ``other``; returns shape (...)."""
    return einops.reduce(ref.exp() * (ref - other), "... v -> ...", "sum")


def kl_rows(ref: torch.Tensor, other: torch.Tensor) -> float:
    """Mean KL divergence over rows of log-probabilities (nats), in float64:

    KL = mean_i Σ_v P_ref,i(v) · (log P_ref,i(v) − log P_other,i(v))

    for (n, V) log-softmax rows ``ref`` and ``other`` (e.g. next-token distributions at the
    first answer position); :func:`kl_per_row` averaged."""
    return float(kl_per_row(ref.double(), other.double()).mean())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def random_directions(d: int, n: int, seed: int = 0) -> torch.Tensor:
    """(n, d) unit vectors uniform on the sphere (isotropic null), float32."""
    if d < 1 or n < 1:
        raise ValueError(f"need d >= 1 and n >= 1, got d={d}, n={n}")
    r = torch.randn(n, d, generator=_gen(seed), dtype=torch.float64)
    return (r / r.norm(dim=1, keepdim=True)).float()


def span_directions(diffs: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """(n, d) unit vectors r = Dᵀg/‖Dᵀg‖, g ~ N(0, I_m), for the (m, d) differences D: draws
    from N(0, DᵀD), a null matched to the covariance of the activation differences."""
    if diffs.dim() != 2 or diffs.shape[0] < 1:
        raise ValueError("diffs must be a non-empty (m, d) matrix")
    g = torch.randn(n, diffs.shape[0], generator=_gen(seed), dtype=torch.float64)
    r = g @ diffs.double()
    norms = r.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (r / norms).float()


def cosines(v: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """cos(v, r_k) for each row r_k of ``dirs`` (float64)."""
    v64 = v.double().reshape(-1)
    d64 = dirs.double()
    den = d64.norm(dim=1) * v64.norm()
    return torch.where(den > 0, (d64 @ v64) / den.clamp_min(1e-300), torch.zeros_like(den))


def z_and_p(
    observed: float, null: torch.Tensor | np.ndarray | Sequence[float], alternative: str = "greater"
) -> tuple[float, float]:
    """z = (obs − mean(null)) / sd(null) and the empirical p-value with the +1 correction,
    p = (1 + #{null ≥ obs}) / (1 + n) (``greater``), or on |·| for ``two-sided``."""
    arr = np.asarray(null, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError("empty null distribution")
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    z = (observed - float(arr.mean())) / sd if sd > 0 else float("nan")
    if alternative == "greater":
        hits = int((arr >= observed).sum())
    elif alternative == "two-sided":
        hits = int((np.abs(arr - arr.mean()) >= abs(observed - arr.mean())).sum())
    elif alternative == "less":
        hits = int((arr <= observed).sum())
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return z, (1 + hits) / (1 + arr.size)


def bootstrap(
    stat: Callable[[np.ndarray], float],
    n: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Percentile bootstrap over ``n`` items: ``stat`` receives resampled indices (with
    replacement); returns the estimate on all items and the ``level`` interval."""
    if n < 1:
        raise ValueError("bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    est = float(stat(np.arange(n)))
    draws = np.array([stat(rng.integers(0, n, size=n)) for _ in range(n_boot)], dtype=float)
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {
        "estimate": est,
        "lo": float(lo),
        "hi": float(hi),
        "se": float(draws.std(ddof=1)),
        "n_boot": n_boot,
    }


def permutation_test(
    a: np.ndarray,
    b: np.ndarray,
    *,
    n_perm: int = 2000,
    seed: int = 0,
    stat: Callable[[np.ndarray, np.ndarray], float] | None = None,
) -> dict[str, float]:
    """Two-sample permutation test of ``stat`` (default difference of means), two-sided,
    p = (1 + #{|perm| ≥ |obs|}) / (1 + n_perm)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    fn = stat or (lambda x, y: float(x.mean() - y.mean()))
    obs = fn(a, b)
    pooled = np.concatenate([a, b])
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_perm):
        perm = rng.permutation(len(pooled))
        if abs(fn(pooled[perm[: len(a)]], pooled[perm[len(a) :]])) >= abs(obs):
            hits += 1
    return {"statistic": obs, "p": (1 + hits) / (1 + n_perm), "n_perm": n_perm}


def holm(pvals: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error)."""
    p = np.asarray(pvals, dtype=float)
    m = p.size
    order = np.argsort(p)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * p[i])
        adj[i] = min(1.0, running)
    return adj.tolist()


def bh(pvals: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (false discovery rate)."""
    p = np.asarray(pvals, dtype=float)
    m = p.size
    order = np.argsort(p)[::-1]
    adj = np.empty(m)
    running = 1.0
    for k, i in enumerate(order):
        rank = m - k
        running = min(running, p[i] * m / rank)
        adj[i] = running
    return adj.tolist()


def correct(pvals: Sequence[float], method: str = "holm") -> list[float]:
    """Adjust for testing many layers: ``holm`` or ``bh``."""
    if method == "holm":
        return holm(pvals)
    if method == "bh":
        return bh(pvals)
    raise ValueError(f"unknown correction {method!r}: use 'holm' or 'bh'")


def paired_bootstrap_mean(
    diffs: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Mean of paired differences dᵢ = a_i − b_i (one per eval prompt) with a percentile
    bootstrap CI over prompts (DESIGN.md "Behavior deltas"): draws mean(d[idx]) for idx
    resampled with replacement, vectorised as W·d with W the (n_boot, n) resampling counts / n."""
    d = np.asarray(diffs, dtype=np.float64).reshape(-1)
    if d.size < 1:
        raise ValueError("paired_bootstrap_mean needs at least one difference")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    draws = d[idx].mean(axis=1)
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {
        "estimate": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "se": float(draws.std(ddof=1)) if n_boot > 1 else 0.0,
        "n": int(d.size),
        "n_boot": int(n_boot),
        "level": float(level),
    }


def sign_flip_test(
    diffs: Sequence[float] | np.ndarray,
    *,
    n_perm: int = 5000,
    seed: int = 0,
    alternative: str = "two-sided",
) -> dict[str, float | str]:
    """Paired permutation test of mean(d) = 0 for paired differences dᵢ (DESIGN.md "Behavior
    deltas"): under the null each pair's sign is exchangeable, so the statistic mean(sᵢ·dᵢ)
    with sᵢ = ±1 at random is the null draw; p = (1 + #{|draw| ≥ |obs|}) / (1 + n_perm)
    (``two-sided``), or on the draw ≥ obs (``greater``) / ≤ obs (``less``)."""
    d = np.asarray(diffs, dtype=np.float64).reshape(-1)
    if d.size < 1:
        raise ValueError("sign_flip_test needs at least one difference")
    obs = float(d.mean())
    rng = np.random.default_rng(seed)
    signs = rng.integers(0, 2, size=(n_perm, d.size)) * 2.0 - 1.0
    draws = (signs * d).mean(axis=1)
    tol = 1e-12 * max(1.0, abs(obs))
    if alternative == "two-sided":
        hits = int((np.abs(draws) >= abs(obs) - tol).sum())
    elif alternative == "greater":
        hits = int((draws >= obs - tol).sum())
    elif alternative == "less":
        hits = int((draws <= obs + tol).sum())
    else:
        raise ValueError(f"unknown alternative {alternative!r}: two-sided, greater or less")
    return {
        "statistic": obs,
        "p": (1 + hits) / (1 + n_perm),
        "n_perm": int(n_perm),
        "alternative": alternative,
    }


def normal_two_sided_p(z: float) -> float:
    """Two-sided normal p-value 2·Φ(−|z|) = erfc(|z|/√2) (NaN for a NaN z)."""
    if not math.isfinite(z):
        return float("nan")
    return math.erfc(abs(z) / math.sqrt(2.0))


def prediction_t_test(x: float, refs: Sequence[float]) -> dict[str, Any]:
    """Whether ``x`` lies beyond what ``refs`` predict for one more draw of their kind (k ≥ 2
    exchangeable replicates, e.g. control models trained with different seeds):
    t = (x − r̄) / (s·√(1 + 1/k)), s the replicates' standard deviation (ddof 1), df = k − 1;
    one-sided p = P(T_df ≥ t); the 95% prediction interval of a new replicate is
    r̄ ± t_{0.975, df}·s·√(1 + 1/k). Exact for normal replicates: under exchangeability
    P(p ≤ α) = α. ``estimate`` = x − r̄."""
    from scipy import stats as st

    r = np.asarray(refs, dtype=float)
    k = int(r.size)
    if k < 2:
        raise ValueError(f"a prediction test needs at least 2 replicates, got {k}")
    mean, sd = float(r.mean()), float(r.std(ddof=1))
    scale = sd * math.sqrt(1 + 1 / k)
    df = k - 1
    if scale == 0:
        raise ValueError(
            f"the {k} replicates are identical ({mean:.6g}): they must be independent runs "
            "(different data samples and seeds)"
        )
    t = (float(x) - mean) / scale
    half = float(st.t.ppf(0.975, df)) * scale
    return {
        "estimate": float(x) - mean,
        "t": t,
        "df": float(df),
        "k": float(k),
        "p": float(st.t.sf(t, df)),
        "replicate_mean": mean,
        "replicate_sd": sd,
        "pi_lo": mean - half,
        "pi_hi": mean + half,
        "test": "prediction t-test against the replicates, one-sided (greater)",
    }


# ------------------------------------------------------------ detectors as classifiers


def roc_auc(neg: Sequence[float] | np.ndarray, pos: Sequence[float] | np.ndarray) -> float:
    """AUC = P(score(positive) > score(negative)) + ½·P(tie), over every (negative, positive)
    pair (the Mann-Whitney statistic divided by n_neg·n_pos). NaN scores count as the lowest."""
    n = np.nan_to_num(np.asarray(neg, dtype=float), nan=-np.inf)
    p = np.nan_to_num(np.asarray(pos, dtype=float), nan=-np.inf)
    if n.size == 0 or p.size == 0:
        return float("nan")
    gt = (p[:, None] > n[None, :]).sum()
    eq = (p[:, None] == n[None, :]).sum()
    return float((gt + 0.5 * eq) / (n.size * p.size))


def roc_auc_ci(
    neg: Sequence[float],
    pos: Sequence[float],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(AUC, lo, hi): :func:`roc_auc` with a percentile bootstrap CI, negatives and positives
    resampled separately (stratified over students)."""
    n = np.asarray(neg, dtype=float)
    p = np.asarray(pos, dtype=float)
    auc = roc_auc(n, p)
    if n.size == 0 or p.size == 0:
        return auc, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = [
        roc_auc(n[rng.integers(0, n.size, n.size)], p[rng.integers(0, p.size, p.size)])
        for _ in range(n_boot)
    ]
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return auc, float(lo), float(hi)


def threshold_at_fpr(neg: Sequence[float], max_fpr: float = 0.05) -> float:
    """The smallest threshold τ with FPR(τ) = #{neg > τ}/n ≤ ``max_fpr`` among the candidates
    (the negatives' own scores and +∞): decide "positive" when score > τ."""
    n = np.sort(np.nan_to_num(np.asarray(neg, dtype=float), nan=-np.inf))
    if n.size == 0:
        return float("inf")
    for tau in n:
        if (n > tau).mean() <= max_fpr:
            return float(tau)
    return float("inf")  # pragma: no cover - the largest negative always qualifies


def rate(decisions: Sequence[bool]) -> dict[str, float]:
    """k/n with the Wilson 95% interval."""
    k, n = int(sum(bool(d) for d in decisions)), len(decisions)
    if n == 0:
        return {"k": 0, "n": 0, "rate": float("nan"), "lo": float("nan"), "hi": float("nan")}
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "rate": k / n, "lo": lo, "hi": hi}


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z / den * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
