"""The holdout and the uplift it measures.

The simulation closes the loop the way a shop would: the year is scored (the replay,
the live worker's runner on the in-memory store), marketing acts on every change into
HIGH that is not held out, and the simulator plays the year again with the campaign's
effect on those customers (`simulator.Treatment`). Held-out customers are never acted
on, so their events, scores and outcomes are the same in both years, and the effect
the campaign truly had on the treated arm is the difference between the two years'
treated churn rates. The uplift measured from the second year alone must recover it.
"""

from __future__ import annotations

import dataclasses
import io
import math
import tempfile
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from feature_store.store import MemoryStore
from schemas import BatchRecord, ChurnRiskChanged
from scoring.artifact import load_model
from scoring.batches import batch_record, recorded_policy
from scoring.campaign import ALL, TALLY, Arm, Uplift, tally_amounts, uplift, uplifts
from scoring.model import Model
from scoring.risk import Holdout, RiskPolicy
from scoring.runner import Outputs
from scoring.samples import HELD_OUT, TREATED, Sample
from simulator import History, Treatment, generate_history, write_jsonl
from stream_app import metrics
from stream_app.publisher import output_messages
from stream_app.replay import FileSink, messages, replay_stream
from tests.support import train_soft_model

PARTITIONS = 4
CUSTOMERS = 3000
SEED = 11
# Half held out: the most statistical power for a test; a shop holds out fewer.
HOLDOUT = Holdout(share=0.5, salt="test")


def test_the_holdout_is_a_stable_share_of_customers_drawn_by_the_salt() -> None:
    ids = [f"C{i}" for i in range(20_000)]
    first = {c for c in ids if Holdout(0.1, "a").held_out(c)}
    again = {c for c in ids if Holdout(0.1, "a").held_out(c)}
    other = {c for c in ids if Holdout(0.1, "b").held_out(c)}

    assert first == again
    assert abs(len(first) / len(ids) - 0.1) < 0.01
    assert abs(len(first & other) / len(ids) - 0.01) < 0.004  # independent draws
    assert not any(Holdout(0.0).held_out(c) for c in ids)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Holdout(1.0)


def test_the_uplift_interval_is_newcombes_hybrid_score_interval() -> None:
    # Newcombe (1998), Statistics in Medicine 17, table II, example (a): 56/70 - 48/80,
    # method 10 gives 0.0524 to 0.3339.
    found = uplift("w", treated=Arm(80, 48), held_out=Arm(70, 56))

    assert found.uplift == pytest.approx(0.2)
    assert found.low == pytest.approx(0.0524, abs=5e-5)
    assert found.high == pytest.approx(0.3339, abs=5e-5)
    assert found.relative == pytest.approx(0.25)  # 1 - 0.6 / 0.8
    assert found.relative_low is not None and found.relative_high is not None
    assert found.relative_low < 0.25 < found.relative_high


def test_an_arm_without_customers_has_no_uplift_yet() -> None:
    found = uplift("w", treated=Arm(10, 3), held_out=Arm(0, 0))

    assert (found.uplift, found.low, found.high, found.relative) == (None, None, None, None)


def test_the_tally_counts_changes_into_high_by_cohort_and_arm_and_pools_them() -> None:
    def sample(day: int, arm: str) -> Sample:
        return Sample("c", day * 86_400.0, 0.9, "HIGH", "v1", 30, "", arm)

    matured = [
        (sample(19_000, TREATED), True),
        (sample(19_001, TREATED), False),
        (sample(19_001, HELD_OUT), True),
        (sample(19_010, HELD_OUT), False),
        (Sample("c", 19_000 * 86_400.0, 0.9, "HIGH", "v1", 30), True),  # performance's
    ]
    found = uplifts(tally_amounts(matured))

    assert [u.cohort for u in found] == ["2022-01-03", "2022-01-17", ALL]
    assert found[0].treated == Arm(2, 1) and found[0].held_out == Arm(1, 1)
    assert found[1].treated == Arm(0, 0) and found[1].held_out == Arm(1, 0)
    assert found[-1].treated == Arm(2, 1) and found[-1].held_out == Arm(2, 1)


def test_a_held_out_customers_change_into_high_is_flagged_and_not_sent_to_marketing(
    models: Model,
) -> None:
    history = generate_history(300, seed=3)
    held_out = [
        c for c in changes_of(year(history, models, HOLDOUT)[0]) if c.risk == "HIGH" and c.held_out
    ]
    assert held_out and all(HOLDOUT.held_out(c.customer_id) for c in held_out)

    record = BatchRecord(0, 1, {}, {}, "v1", 0.05, {}, "f")
    sent = output_messages(Outputs(0, held_out, [], record), "")
    assert [t for t, _, _ in sent if t == "churn-risk-high"] == []
    assert len([t for t, _, _ in sent if t == "churn-risk"]) == len(held_out)


@pytest.mark.parametrize("effect", [0.8, 0.0])
def test_the_measured_uplift_recovers_the_simulated_campaign_effect(
    effect: float, models: Model
) -> None:
    untreated = generate_history(CUSTOMERS, seed=SEED)
    first_changes, first_tally = year(untreated, models, HOLDOUT)
    acted_on = first_acted_on(changes_of(first_changes))
    treated = generate_history(CUSTOMERS, seed=SEED, treatment=Treatment(effect, acted_on))
    _, second_tally = year(treated, models, HOLDOUT)

    before, after = pooled(first_tally), pooled(second_tally)
    assert after.held_out == before.held_out  # never acted on: the same year twice
    assert before.treated.rate is not None and after.treated.rate is not None
    true_effect = before.treated.rate - after.treated.rate
    assert after.uplift is not None and after.low is not None and after.high is not None
    print(
        f"effect {effect}: {len(acted_on)} customers acted on; treated {after.treated}, "
        f"held out {after.held_out}; churn prevented per treated customer: "
        f"{true_effect:.3f} simulated, {after.uplift:.3f} measured "
        f"[{after.low:.3f}, {after.high:.3f}]"
    )
    assert after.low <= true_effect <= after.high
    if effect:
        assert true_effect > 0.02 and after.low > 0  # a real effect, and found
    else:
        assert true_effect == 0 and after.low <= 0 <= after.high  # none, and none found


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A real model whose churn probability rises with the days since the last order:
    HIGH after about six weeks of silence, its horizon 30 days."""
    directory = train_soft_model(
        tmp_path_factory.mktemp("models"), "recency_days", 5, 55, "soft-recency"
    )
    model = load_model(directory)
    return dataclasses.replace(model, metadata={**model.metadata, "horizon_days": 30})


def year(history: History, model: Model, holdout: Holdout) -> tuple[bytes, dict[str, float]]:
    """The history through the replay: its changes (JSON lines) and its campaign tally."""
    out, store = io.BytesIO(), MemoryStore()
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "history.jsonl"
        write_jsonl(history, path)
        stream = messages(path, PARTITIONS)
        sink = FileSink(out)
        replay_stream(stream, model, sink, PARTITIONS, 500, 0.05, holdout=holdout, store=store)
    return out.getvalue(), store.tallies(range(PARTITIONS), TALLY)


def changes_of(lines: bytes) -> list[ChurnRiskChanged]:
    decoder = msgspec.json.Decoder(ChurnRiskChanged)
    return [decoder.decode(line) for line in lines.splitlines()]


def first_acted_on(changes: list[ChurnRiskChanged]) -> dict[str, datetime]:
    """When marketing first acted on each customer: their first change into HIGH that
    was sent on churn-risk-high."""
    acted: dict[str, datetime] = {}
    for change in changes:
        if change.risk == "HIGH" and not change.held_out:
            acted.setdefault(change.customer_id, change.event_time)
    return acted


def pooled(tally: dict[str, float]) -> Uplift:
    found = uplifts(tally)
    assert found and found[-1].cohort == ALL and not math.isnan(found[-1].treated.customers)
    return found[-1]


def test_a_batch_computed_again_holds_out_whom_its_record_says() -> None:
    policy = RiskPolicy(holdout=Holdout(0.2, "q3"))
    record = batch_record(0, 1, {}, {"orders": 5}, "v1", policy)
    without = batch_record(0, 1, {}, {"orders": 5}, "v1", RiskPolicy())

    assert recorded_policy(record, policy.thresholds).holdout == Holdout(0.2, "q3")
    assert recorded_policy(without, policy.thresholds).holdout is None
    assert record.policy_fingerprint != without.policy_fingerprint


def test_the_gauges_show_each_figure_known_of_the_latest_cohorts_and_all() -> None:
    found = uplifts(
        {
            "2026-02-02|treated|churned": 30,
            "2026-02-02|treated|retained": 70,
            "2026-02-09|treated|churned": 5,  # nobody held out yet: no uplift
        }
    )
    metrics.show_uplift(found)
    shown = {
        (s.labels["cohort"], s.labels["figure"]): s.value
        for family in metrics.UPLIFT.collect()
        for s in family.samples
    }

    assert shown[("all", "treated")] == 105 and shown[("all", "treated_churn_rate")] == 35 / 105
    assert shown[("2026-02-09", "held_out")] == 0
    assert ("2026-02-09", "uplift") not in shown and ("all", "held_out_churn_rate") not in shown
