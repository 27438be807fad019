"""The report's statistics as pure functions on numpy arrays: one comparison's paired t interval and p-value,
Holm and Benjamini-Hochberg adjusted p-values over a family of comparisons, and the DerSimonian-Laird
random-effects summary of one technique over architectures.

Every interval here is conditional on the fixed test images: it carries the seed-to-seed noise of the paired
differences, not the sampling noise of the test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95  # of every interval
# The headline: Benjamini-Hochberg-adjusted p below ALPHA (false discovery rate 5 %). The report's table is
# a screen of ~50 comparisons many of which are expected to be real effects; FDR control is the standard for
# "which of these are discoveries", and with 5 seeds (df 4) Holm over 50 would need t > 9 for any star.
# Holm (familywise) is shown beside it. Chosen before any run of the 5-seed preset was looked at.
ALPHA = 0.05
# Differences closer than this are equal: accuracies are whole numbers of test images (steps >= 1e-4 for
# 10,000 images), so a smaller spread is float rounding of k/N, not noise (0.55-0.60 != 0.57-0.62 in floats).
EQUAL = 1e-9


@dataclass(frozen=True)
class PairedT:
    """One comparison from its own paired differences: mean, sd (ddof 1), n, df = n - 1, interval, p."""

    mean: float
    sd: float
    n: int
    df: int
    lo: float
    hi: float
    p: float


def paired_t(diffs: np.ndarray, confidence: float = CONFIDENCE) -> PairedT:
    """The paired t interval mean +- t(1 - alpha/2, n - 1) * sd / sqrt(n) and the two-sided p-value of the
    paired t test (H0: mean difference 0), from these differences alone.

    n = 0: everything NaN. n = 1: the mean, no sd, no interval, no p (NaN).
    All n >= 2 differences equal (within EQUAL: sd 0): the t statistic is 0/0 or infinite, and an sd of 0 says the
    noise is below the resolution of the accuracies (a whole number of test images), not that there is none;
    p = 0 would let two seeds that differ by the same number of images pass any correction. So the p-value
    is then the exact sign-flip (randomization) test's, which needs no sd: only the all-plus and all-minus
    sign patterns are as extreme as n equal differences, p = 2 / 2**n (1 when every difference is 0), and
    there is no interval (lo = hi = NaN).
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        return PairedT(math.nan, math.nan, 0, 0, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n == 1:
        return PairedT(mean, math.nan, 1, 0, math.nan, math.nan, math.nan)
    if np.ptp(d) <= EQUAL:
        p = 1.0 if abs(mean) <= EQUAL else 2.0 ** (1 - n)
        return PairedT(mean, 0.0, n, n - 1, math.nan, math.nan, p)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return PairedT(mean, sd, n, n - 1, mean - half, mean + half, p)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (familywise error control): sorted ascending, the i-th (from 0) of
    m is p * (m - i), made non-decreasing, capped at 1. NaN entries are not in the family and stay NaN."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    return out


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate): sorted ascending, the i-th (from 1) of m
    is p * m / i, made non-increasing from the largest down, capped at 1. NaN entries stay NaN."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(1.0, np.minimum.accumulate(scaled[::-1])[::-1])
    return out


@dataclass(frozen=True)
class RandomEffects:
    """A DerSimonian-Laird summary: estimate, its se and normal interval, between-study variance tau2,
    I2 (share of the spread beyond what the within-study variances explain), Cochran's Q, k studies."""

    estimate: float
    se: float
    lo: float
    hi: float
    tau2: float
    i2: float
    q: float
    k: int
    hk_lo: float = math.nan  # Hartung-Knapp interval: the verdict's (t with k - 1 df, se from the spread)
    hk_hi: float = math.nan
    p: float = math.nan  # two-sided Hartung-Knapp p-value of estimate = 0


def dersimonian_laird(effects: np.ndarray, variances: np.ndarray, confidence: float = CONFIDENCE) -> RandomEffects:
    """The random-effects mean of `effects` (one per study, here per architecture) with within-study
    `variances` (> 0; here sd^2 / n of the paired differences):

        w = 1/v, Q = sum w (y - ybar_w)^2, tau2 = max(0, (Q - (k-1)) / (sum w - sum w^2 / sum w)),
        w* = 1/(v + tau2), estimate = sum w* y / sum w*, se = 1/sqrt(sum w*), interval estimate +- z * se,
        I2 = max(0, (Q - (k-1)) / Q).

    The interval is the normal one DerSimonian and Laird give: it treats the variances as known, so with
    few seeds per study (each variance on n - 1 degrees of freedom) it is approximate and narrower than
    the truth. Needs k >= 2 (one study says nothing about the spread between studies): else all NaN.
    """
    y = np.asarray(effects, dtype=float)
    v = np.asarray(variances, dtype=float)
    k = len(y)
    if k < 2:
        return RandomEffects(*[math.nan] * 7, k)
    if np.any(~np.isfinite(v) | (v <= 0)):
        raise ValueError(f"dersimonian_laird: every within-study variance must be finite and > 0, got {v}")
    w = 1 / v
    fixed = np.sum(w * y) / np.sum(w)
    q = float(np.sum(w * (y - fixed) ** 2))
    tau2 = max(0.0, (q - (k - 1)) / (np.sum(w) - np.sum(w**2) / np.sum(w)))
    w_star = 1 / (v + tau2)
    estimate = float(np.sum(w_star * y) / np.sum(w_star))
    se = float(1 / math.sqrt(np.sum(w_star)))
    z = stats.norm.ppf(0.5 + confidence / 2)
    i2 = max(0.0, (q - (k - 1)) / q) if q > 0 else 0.0
    # Hartung-Knapp (2001): se from the weighted spread of the studies around the estimate, t with k - 1 df;
    # honest with few studies and with variances estimated from few seeds, where the normal interval is not.
    # Floored at the DerSimonian-Laird se (the usual modification) so agreement by chance never narrows it.
    hk_se = max(math.sqrt(float(np.sum(w_star * (y - estimate) ** 2)) / ((k - 1) * float(np.sum(w_star)))), se)
    t = stats.t.ppf(0.5 + confidence / 2, k - 1)
    p = float(2 * stats.t.sf(abs(estimate) / hk_se, k - 1))
    return RandomEffects(estimate, se, estimate - z * se, estimate + z * se, float(tau2), i2, q, k,
                         estimate - t * hk_se, estimate + t * hk_se, p)
