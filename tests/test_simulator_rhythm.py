"""Tests for the simulator's regular buyers: gamma renewal rhythms beside Poisson ones."""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import timedelta

import msgspec
import numpy as np
import pandas as pd
import pytest

from simulator import History, Treatment, generate_history
from simulator.__main__ import main

N = 3000
SEED = 4
DAY = 86_400.0


@functools.cache
def shop(regular_share: float) -> History:
    return generate_history(N, seed=SEED, regular_share=regular_share)


def order_times(h: History) -> dict[str, np.ndarray]:
    """Each customer's order times in epoch seconds, in order."""
    times: dict[str, list[float]] = defaultdict(list)
    for o in h.orders:
        times[o.customer_id].append(o.order_ts.timestamp())
    return {cid: np.array(ts) for cid, ts in times.items()}


def gap_cv(ts: np.ndarray) -> float:
    gaps = np.diff(ts)
    return float(gaps.std() / gaps.mean())


def regular_mask(h: History) -> pd.Series:
    return h.truth.set_index("customer_id")["rhythm_shape"] > 1.0


def encoded(h: History) -> list[bytes]:
    return [msgspec.json.encode(e) for _, e in h.events_in_time_order()]


def test_no_regular_share_leaves_the_history_unchanged():
    a = generate_history(300, seed=3, days=90)
    b = generate_history(300, seed=3, days=90, regular_share=0.0)
    assert encoded(a) == encoded(b)
    pd.testing.assert_frame_equal(a.truth, b.truth)
    assert (a.truth["rhythm_shape"] == 1.0).all()


def test_a_share_outside_zero_to_one_is_refused():
    for share in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="regular_share"):
            generate_history(10, days=10, regular_share=share)


def test_the_share_and_shapes_of_regular_customers():
    shape = shop(0.5).truth["rhythm_shape"]
    regular = shape[shape > 1.0]
    assert 0.45 < len(regular) / len(shape) < 0.55
    assert regular.between(2.0, 20.0).all()
    assert 0.15 < (regular < 4.0).mean() < 0.45  # log-uniform: 30% below 4


def test_poisson_customers_keep_their_order_times():
    h, plain = shop(0.5), shop(0.0)
    regular = regular_mask(h)
    poisson_orders = {(o.customer_id, o.order_ts) for o in h.orders if not regular[o.customer_id]}
    assert poisson_orders == {
        (o.customer_id, o.order_ts) for o in plain.orders if not regular[o.customer_id]
    }


def test_regular_customers_buy_at_evener_gaps_than_poisson_ones():
    h = shop(0.5)
    truth = h.truth.set_index("customer_id")
    times = order_times(h)
    stayed = truth["churn_ts"].isna()
    median_cv = {}
    for name, who in (("regular", regular_mask(h)), ("poisson", ~regular_mask(h))):
        ids = [c for c in truth.index[who & stayed] if len(times.get(c, ())) >= 6]
        assert len(ids) > 400
        median_cv[name] = np.median([gap_cv(times[c]) for c in ids])
    # Measured about 0.39 and 0.89: a rhythm, and Poisson but for the seasons.
    assert median_cv["regular"] < 0.55
    assert median_cv["poisson"] > 0.8


def test_regular_customers_buy_as_much_as_poisson_ones():
    h, plain = shop(0.5), shop(0.0)
    regular = regular_mask(h)
    mine = {cid: len(ts) for cid, ts in order_times(h).items()}
    before = {cid: len(ts) for cid, ts in order_times(plain).items()}
    # The same customers as Poisson buyers (measured within 2%), and the shop's volume.
    regulars = regular.index[regular]
    ratio = sum(mine.get(c, 0) for c in regulars) / sum(before.get(c, 0) for c in regulars)
    assert 0.95 < ratio < 1.05
    assert len(h.orders) == pytest.approx(len(plain.orders), rel=0.03)
    per_customer = {
        name: sum(mine.get(c, 0) for c in regular.index[who]) / who.sum()
        for name, who in (("regular", regular), ("poisson", ~regular))
    }
    assert per_customer["regular"] == pytest.approx(per_customer["poisson"], rel=0.15)


def test_churning_regular_customers_gaps_lengthen_before_they_go():
    h = shop(0.5)
    truth = h.truth.set_index("customer_id")
    times = order_times(h)
    regular = regular_mask(h)

    def last_over_median(ids: pd.Index) -> float:
        """The last gap over the customer's median gap, geometric mean over `ids`."""
        ratios = [
            (g := np.diff(times[c]))[-1] / np.median(g) for c in ids if len(times.get(c, ())) >= 4
        ]
        assert len(ratios) > 100
        return float(np.exp(np.mean(np.log(ratios))))

    churned = truth.index[regular & truth["churn_ts"].notna()]
    stayed = truth.index[regular & truth["churn_ts"].isna()]
    # Measured 1.13-1.25 against 1.03-1.06 over five seeds: the fade stretches the rhythm
    # (mostly the one last gap: a monthly buyer places about one order in the fade).
    assert last_over_median(churned) > 1.08
    assert last_over_median(churned) > last_over_median(stayed) + 0.05
    churn_s = truth["churn_ts"].dropna().map(pd.Timestamp.timestamp)
    assert all(times[c][-1] < churn_s[c] for c in churned if c in times)  # silent after


@pytest.fixture(scope="module")
def saved_shop() -> tuple[History, dict[str, float]]:
    """Every regular churner acted on 120 days before the end, a full effect."""
    h = shop(0.5)
    truth = h.truth.set_index("customer_id")
    when = h.end - timedelta(days=120)
    churners = truth.index[regular_mask(h) & truth["churn_ts"].notna()]
    treated = generate_history(
        N, seed=SEED, regular_share=0.5, treatment=Treatment(1.0, dict.fromkeys(churners, when))
    )
    return treated, dict.fromkeys(churners, when.timestamp())


def test_saved_regular_customers_resume_their_rhythm(saved_shop):
    treated, acted = saved_shop
    saved = treated.truth.set_index("customer_id")["saved"]
    times = order_times(treated)
    after = [times[c][times[c] > acted[c]] for c in acted if saved[c] and c in times]
    steady = [ts for ts in after if len(ts) >= 5]
    assert len(steady) > 30
    assert np.median([gap_cv(ts) for ts in steady]) < 0.55


def test_the_cli_passes_the_regular_share_on(tmp_path, capsys):
    args = ["jsonl", "--customers", "40", "--days", "30", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "plain.jsonl")]) == 0
    assert main([*args, "--regular-share", "0", "--out", str(tmp_path / "zero.jsonl")]) == 0
    assert main([*args, "--regular-share", "1", "--out", str(tmp_path / "all.jsonl")]) == 0
    plain, zero, every = (
        (tmp_path / f"{name}.jsonl").read_bytes() for name in ("plain", "zero", "all")
    )
    assert plain == zero != every
    with pytest.raises(SystemExit):
        main([*args, "--regular-share", "1.5", "--out", str(tmp_path / "bad.jsonl")])
    assert "must be in [0, 1]" in capsys.readouterr().err
