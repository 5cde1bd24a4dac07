"""The purchase-rhythm prior, fitted on training data (see `FeatureParams`).

Each customer's gaps between orders are taken as exponential at their own rate,
the rates drawn from a gamma distribution. Its two parameters, read as the prior
mean gap and the prior's weight in gaps, are fitted by maximum marginal likelihood
on the customers' own gaps: a customer with n gaps summing to S days contributes

    log p(gaps) = a log b - (a + n) log(b + S) + log Gamma(a + n) - log Gamma(a)

with shape a = prior_gaps + 1 and rate b = prior_gaps * prior_gap_days. Only the
order count and the first and last order times enter, read off the same base
columns the features use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import pandas as pd

from feature_store.definitions import SECONDS_PER_DAY, FeatureParams
from feature_store.offline import History, base_columns

# Search box, in natural logs of (prior_gaps, prior_gap_days): a weight of 0.01 to
# 1,000 gaps, a mean gap of 15 minutes to 30 years. A fit on its edge says the data
# has too little spread (or too few gaps) to place it further.
LOG_BOUNDS = np.log([[0.01, 1_000.0], [0.01, 11_000.0]])
LOG_TOLERANCE = 1e-4


def customer_gaps(base: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, their total in days) of every customer with at least one gap."""
    gaps = base["orders_lifetime"] - 1.0
    span = (base["last_order_ts"] - base["first_order_ts"]) / SECONDS_PER_DAY
    has_gap = gaps >= 1
    return gaps[has_gap].astype(np.int64), span[has_gap]


def log_likelihood(
    gaps: np.ndarray, total_days: np.ndarray, prior_gaps: float, prior_gap_days: float
) -> float:
    """Marginal log-likelihood of the customers' gaps under the prior (module doc)."""
    shape, rate = prior_gaps + 1.0, prior_gaps * prior_gap_days
    # log Gamma(a + n) - log Gamma(a) = sum of log(a + j) for j < n, n a whole number.
    rising = np.concatenate([[0.0], np.cumsum(np.log(shape + np.arange(gaps.max())))])
    return float(
        np.sum(shape * np.log(rate) - (shape + gaps) * np.log(rate + total_days) + rising[gaps])
    )


def fit_gap_prior(history: History, cutoff_ts: float, params: FeatureParams) -> FeatureParams:
    """`params` with the rhythm prior of maximum likelihood on every customer's gaps as
    of `cutoff_ts`; unchanged when fewer than two customers have a gap to fit on."""
    orders = history.orders
    customers = orders["customer_id"][orders["ts"] <= cutoff_ts].unique()
    gaps, total_days = customer_gaps(base_columns(history, pd.Series(cutoff_ts, index=customers)))
    if len(gaps) < 2:
        return params
    prior_gaps, prior_gap_days = maximise(gaps, total_days)
    return replace(params, prior_gap_days=prior_gap_days, prior_gaps=prior_gaps)


def maximise(gaps: np.ndarray, total_days: np.ndarray) -> tuple[float, float]:
    """(prior_gaps, prior_gap_days) of maximum likelihood in the search box: for each
    weight the best mean gap, and the best of those (golden-section searches in logs)."""
    (low_weight, high_weight), (low_gap, high_gap) = LOG_BOUNDS

    def best_gap(log_weight: float) -> float:
        return _golden_max(
            lambda log_gap: log_likelihood(gaps, total_days, np.exp(log_weight), np.exp(log_gap)),
            low_gap,
            high_gap,
        )

    def profile(log_weight: float) -> float:
        weight = np.exp(log_weight)
        return log_likelihood(gaps, total_days, weight, np.exp(best_gap(log_weight)))

    log_weight = _golden_max(profile, low_weight, high_weight)
    return float(np.exp(log_weight)), float(np.exp(best_gap(log_weight)))


_INVERSE_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def _golden_max(f: Callable[[float], float], low: float, high: float) -> float:
    """Where a unimodal `f` peaks in [low, high], to within LOG_TOLERANCE."""
    a, b = low, high
    c, d = b - _INVERSE_GOLDEN * (b - a), a + _INVERSE_GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    while b - a > LOG_TOLERANCE:
        if fc >= fd:
            b, d, fd = d, c, fc
            c = b - _INVERSE_GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _INVERSE_GOLDEN * (b - a)
            fd = f(d)
    return (a + b) / 2
