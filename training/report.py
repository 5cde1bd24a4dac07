"""A one-page HTML report of a training run, with its figures embedded (no other files).

Everything is drawn on the test cutoff's rows, which no model saw: the model
comparison, ROC and precision-recall curves, calibration, confusion matrices at the
risk cut-offs, feature importance and a summary of the served model's exact
per-feature contributions (TreeSHAP for the boosted families, coefficient x
standardised value for the linear one: the contributions the worker's per-event
reasons come from). Then which family was served and why, and the tuning on the
rolling validation cutoffs with the chosen configurations' stability across them.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from feature_store.definitions import FEATURE_NAMES
from scoring.families import LIGHTGBM, LINEAR, XGBOOST
from training import page
from training.metrics import TARGET_RECALL, confusion
from training.models import features, labels, patience
from training.train import SERVED, Evidence, TrainedModel, describe

REPORT_FILE = "report.html"
SHAP_ROWS = 2000
SHAP_FEATURES = 15
SERVED_COLOUR = "#d62728"
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f")

# metric key -> (column header, format, higher is better)
TABLE_COLUMNS: dict[str, tuple[str, str, bool]] = {
    "auc_roc": ("AUC-ROC", "{:.4f}", True),
    "pr_auc": ("PR-AUC", "{:.4f}", True),
    "precision_at_80_recall": ("P@80%R", "{:.4f}", True),
    "brier": ("Brier", "{:.4f}", False),
    "log_loss": ("log loss", "{:.4f}", False),
}


def served_label(metadata: dict[str, Any]) -> str:
    return f"{SERVED} ({metadata['model_family']})"


def comparison_rows(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per compared family at its chosen configuration, then the served model:
    name, mean validation AUC over the rolling cutoffs (raw score, the selection
    criterion), test metrics and the time its tuning (and refit) took."""
    metrics, timings = metadata["metrics"], metadata["timings_seconds"]
    validation = metrics["selection"]["validation_auc"]
    rows = [
        {
            "model": name,
            "validation_auc": validation[name],
            "test": values["test"],
            "seconds": timings.get(f"tune {name}"),
        }
        for name, values in metrics["candidates"].items()
    ]
    family = metadata["model_family"]
    rows.append(
        {
            "model": served_label(metadata),
            "validation_auc": validation[family],
            "test": metrics["test"],
            "seconds": timings.get(f"tune {family}", 0.0) + timings.get("fit served model", 0.0),
        }
    )
    return rows


def comparison_table_text(metadata: dict[str, Any]) -> str:
    """The comparison as fixed-width text (the CLI prints it)."""
    headers = ["val AUC", *(header for header, _, _ in TABLE_COLUMNS.values()), "fit s"]
    lines = [f"  {'model':<24}" + "".join(f"{h:>10}" for h in headers)]
    lines.append(f"  {'':<24}{'(mean)':>10}" + f"{'-- test, calibrated on validation --':>50}")
    for row in comparison_rows(metadata):
        cells = [f"{row['validation_auc']:.4f}"]
        cells += [fmt.format(row["test"][key]) for key, (_, fmt, _) in TABLE_COLUMNS.items()]
        cells.append(f"{row['seconds']:.1f}" if row["seconds"] is not None else "")
        lines.append(f"  {row['model']:<24}" + "".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)


# --- figures ------------------------------------------------------------------------


def _styles(names: list[str]) -> dict[str, dict[str, Any]]:
    styles = {}
    others = iter(PALETTE * 2)
    for name in names:
        if name == SERVED:
            styles[name] = {"color": SERVED_COLOUR, "linewidth": 2.4, "zorder": 3}
        else:
            styles[name] = {"color": next(others), "linewidth": 1.2, "alpha": 0.85}
    return styles


def roc_and_pr_figure(evidence: Evidence, metadata: dict[str, Any]) -> str:
    y = labels(evidence.test)
    styles = _styles(list(evidence.probabilities))
    figure, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(12, 5))
    test_metrics = {
        **metadata["metrics"]["candidates"],
        SERVED: {"test": metadata["metrics"]["test"]},
    }
    for name, probability in evidence.probabilities.items():
        scores = test_metrics[name]["test"]
        label = served_label(metadata) if name == SERVED else name
        fpr, tpr, _ = roc_curve(y, probability)
        roc_ax.plot(fpr, tpr, label=f"{label}  {scores['auc_roc']:.3f}", **styles[name])
        precision, recall, _ = precision_recall_curve(y, probability)
        pr_ax.plot(recall, precision, label=f"{label}  {scores['pr_auc']:.3f}", **styles[name])
    roc_ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle=":", linewidth=1)
    oracle = metadata["metrics"]["diagnostics"].get("oracle")
    title = "ROC on the test cutoff (AUC)"
    if oracle and oracle.get("auc_roc") is not None:
        title += f"; oracle propensity AUC {oracle['auc_roc']:.3f}"
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate (recall)", title=title)
    pr_ax.axvline(TARGET_RECALL, color="#999999", linestyle="--", linewidth=1)
    pr_ax.text(TARGET_RECALL, 0.02, " 80% recall", color="#666666", va="bottom")
    pr_ax.axhline(y.mean(), color="#bbbbbb", linestyle=":", linewidth=1)
    pr_ax.set(
        xlabel="recall (churners caught)",
        ylabel="precision (flagged who churn)",
        title="Precision-recall on the test cutoff (PR-AUC)",
        ylim=(0, 1.02),
    )
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=8)
        ax.grid(alpha=0.3)
    return page.png(figure)


def calibration_figure(evidence: Evidence, metadata: dict[str, Any]) -> str:
    y = labels(evidence.test)
    calibrated = evidence.probabilities[SERVED]
    figure, (ax, hist_ax) = plt.subplots(1, 2, figsize=(12, 4.6))
    for name, scores, style in (
        (
            f"raw {metadata['model_family']} score",
            evidence.served_test_raw,
            {"color": "#999999", "marker": "s"},
        ),
        ("calibrated (isotonic)", calibrated, {"color": SERVED_COLOUR, "marker": "o"}),
    ):
        predicted, observed = _reliability(y, scores)
        ax.plot(predicted, observed, label=name, linewidth=1.5, **style)
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linestyle=":", linewidth=1, label="perfect")
    ax.set(
        xlabel="predicted churn probability (test, 10 equal-size bins)",
        ylabel="observed churn rate",
        title="Calibration on the test cutoff",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3)
    hist_ax.hist(
        [calibrated[y == 0], calibrated[y == 1]],
        bins=40,
        range=(0, 1),
        stacked=True,
        color=["#2ca02c", SERVED_COLOUR],
        label=["stayed", "churned"],
    )
    thresholds = metadata["thresholds"]
    for name in ("medium", "high"):
        hist_ax.axvline(thresholds[name], color="black", linestyle="--", linewidth=1)
        hist_ax.annotate(
            f" {name.upper()}",
            (thresholds[name], 1.0),
            xycoords=("data", "axes fraction"),
            va="bottom",
            fontsize=9,
        )
    hist_ax.set(
        xlabel="calibrated churn probability",
        ylabel="customers",
    )
    hist_ax.set_title("Test customers by calibrated probability", pad=16)
    hist_ax.legend(loc="upper left", fontsize=9)
    return page.png(figure)


def _reliability(y: np.ndarray, scores: np.ndarray, bins: int = 10) -> tuple[np.ndarray, ...]:
    order = np.argsort(scores, kind="stable")
    groups = [g for g in np.array_split(order, bins) if len(g)]
    return (
        np.array([scores[g].mean() for g in groups]),
        np.array([y[g].mean() for g in groups]),
    )


def confusion_figure(evidence: Evidence, metadata: dict[str, Any]) -> str:
    y = labels(evidence.test)
    probability = evidence.probabilities[SERVED]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, name in zip(axes, ("medium", "high"), strict=True):
        cutoff = metadata["thresholds"][name]
        counts = confusion(y, probability, cutoff)
        grid = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
        ax.imshow(grid, cmap="Blues")
        for (row, col), value in np.ndenumerate(grid):
            share = value / max(1, grid[row].sum())
            colour = "white" if value > grid.max() / 2 else "black"
            ax.text(
                col, row, f"{value:,}\n{share:.0%} of row", ha="center", va="center", color=colour
            )
        flagged = counts["tp"] + counts["fp"]
        precision = counts["tp"] / flagged if flagged else float("nan")
        recall = counts["tp"] / max(1, counts["tp"] + counts["fn"])
        ax.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["not flagged", "flagged"],
            yticklabels=["stayed", "churned"],
            title=f"{name.upper()} and above (p >= {cutoff:.2f})\n"
            f"precision {precision:.1%}, recall {recall:.1%}",
        )
    return page.png(figure)


def _contribution_sample(
    model: TrainedModel, evidence: Evidence, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Test rows (at most SHAP_ROWS) and the served model's contributions on them."""
    test = evidence.test
    rows = test if len(test) <= SHAP_ROWS else test.sample(SHAP_ROWS, random_state=seed)
    x = features(rows)
    return x, model.estimator.contributions(x)


def importance_figure(model: TrainedModel, sample: tuple[np.ndarray, np.ndarray]) -> str:
    """Mean |contribution| per feature: the same measure for every family. `sample`:
    _contribution_sample's test rows and contributions."""
    _, contributions = sample
    weight = np.abs(contributions).mean(axis=0)
    share = weight / max(weight.sum(), 1e-12)
    order = np.argsort(share)
    figure, ax = plt.subplots(figsize=(7, 6.5))
    ax.barh(np.array(FEATURE_NAMES)[order], share[order], color=SERVED_COLOUR)
    ax.set(
        xlabel="share of the mean |contribution| to the log-odds (test customers)",
        title=f"Feature importance, {model.estimator.family}",
    )
    ax.grid(axis="x", alpha=0.3)
    return page.png(figure)


# How each family's contributions are computed, for the figure's axis.
CONTRIBUTIONS = {
    LINEAR: "coefficient x standardised value",
    LIGHTGBM: "TreeSHAP, LightGBM pred_contrib",
    XGBOOST: "TreeSHAP, XGBoost pred_contribs",
}


def shap_figure(model: TrainedModel, sample: tuple[np.ndarray, np.ndarray], seed: int) -> str:
    """Beeswarm of per-row contributions (log-odds), top features first. `sample`:
    _contribution_sample's test rows and contributions."""
    x, contributions = sample
    top = np.argsort(-np.abs(contributions).mean(axis=0))[:SHAP_FEATURES][::-1]
    rng = np.random.default_rng(seed)
    figure, ax = plt.subplots(figsize=(9, 0.42 * len(top) + 1.5))
    scatter = None
    for position, column in enumerate(top):
        values = x[:, column]
        known = np.isfinite(values)
        colour = np.full(len(values), np.nan)
        if known.any():
            ranks = values[known].argsort().argsort()
            colour[known] = ranks / max(1, known.sum() - 1)  # percentile within the sample
        jitter = position + rng.uniform(-0.3, 0.3, len(values))
        ax.scatter(contributions[~known, column], jitter[~known], s=6, color="#cccccc")
        scatter = ax.scatter(
            contributions[known, column],
            jitter[known],
            s=6,
            c=colour[known],
            cmap="coolwarm",
            vmin=0,
            vmax=1,
        )
    ax.axvline(0, color="#888888", linewidth=0.8)
    ax.set(
        yticks=range(len(top)),
        yticklabels=[FEATURE_NAMES[c] for c in top],
        xlabel=f"contribution to churn log-odds ({CONTRIBUTIONS[model.estimator.family]})",
        title=f"Contributions: {len(x):,} test customers (grey: value missing)",
    )
    if scatter is not None:
        bar = figure.colorbar(scatter, ax=ax, pad=0.01)
        bar.set_label("feature value (low -> high, percentile)")
    ax.grid(axis="x", alpha=0.3)
    return page.png(figure)


# --- page ---------------------------------------------------------------------------


def _comparison_html(metadata: dict[str, Any]) -> str:
    rows = comparison_rows(metadata)
    best = {
        key: (max if higher else min)(row["test"][key] for row in rows)
        for key, (_, _, higher) in TABLE_COLUMNS.items()
    }
    best_validation = max(row["validation_auc"] for row in rows)
    cells, classes = [], []
    for row in rows:
        mark = ' class="best"' if row["validation_auc"] == best_validation else ""
        line = [f"<td>{html.escape(row['model'])}</td>"]
        line.append(f"<td{mark}>{row['validation_auc']:.4f}</td>")
        for key, (_, fmt, _) in TABLE_COLUMNS.items():
            value = row["test"][key]
            mark = ' class="best"' if value == best[key] else ""
            line.append(f"<td{mark}>{fmt.format(value)}</td>")
        line.append(f"<td>{row['seconds']:.1f}</td>" if row["seconds"] is not None else "<td></td>")
        cells.append(line)
        classes.append("served" if row["model"] == served_label(metadata) else "")
    headers = [
        "model",
        "validation AUC (mean)",
        *(f"test {header}" for header, _, _ in TABLE_COLUMNS.values()),
        "fit s",
    ]
    return page.table(headers, cells, classes)


def _selection_html(metadata: dict[str, Any], evidence: Evidence) -> str:
    selection = metadata["metrics"]["selection"]
    folds = metadata["metrics"]["tuning"]["folds"]
    sampled = ""
    if evidence.candidate_rows < evidence.training_rows:
        sampled = (
            f" To keep training within minutes, every family was tuned on a random "
            f"{evidence.candidate_rows:,} of each fold's training rows; the served model was "
            f"then refitted on all {evidence.training_rows:,}."
        )
    families = "".join(
        f"<li><b>{html.escape(name)}</b>{'' if name in selection['servable'] else ' (yardstick)'}"
        f": {html.escape(description)}</li>"
        for name, description in selection["families"].items()
    )
    cutoffs = ", ".join(fold["validation_cutoff"] for fold in folds)
    return (
        f'<p class="note"><b>{html.escape(selection["why"])}</b></p>'
        f'<ul class="note">{families}</ul>'
        f'<p class="note">Each family is tuned over its search space and judged by the mean '
        f"validation AUC of its raw score over {len(folds)} validation cutoffs ({cutoffs}), "
        f"each fitted on the training cutoffs at least a horizon before it. Families within "
        f"{selection['tie_auc']} of the best servable one are tied, and the simplest of those "
        f"is served ({' &lt; '.join(selection['simplest_first'])}); yardsticks are compared "
        "but have no artifact format to be served in. Every test metric is after an "
        "isotonic calibration fitted on the latest validation cutoff, the same treatment "
        f"for every family.{sampled}</p>"
    )


def _cards(metadata: dict[str, Any]) -> str:
    test = metadata["metrics"]["test"]
    diagnostics = metadata["metrics"]["diagnostics"]
    cards = [
        ("good", f"{test['auc_roc']:.3f}", "served model, test AUC-ROC (point in time)"),
        ("", f"{test['precision_at_80_recall']:.1%}", "precision at 80% recall (test)"),
    ]
    oracle = diagnostics.get("oracle")
    if oracle and oracle.get("auc_roc") is not None:
        cards.append(("", f"{oracle['auc_roc']:.3f}", "oracle: simulator's true propensity"))
    leaky = diagnostics.get("leaky_label")
    if leaky and leaky.get("inflated_auc_roc") is not None:
        cards.append(("bad", f"{leaky['inflated_auc_roc']:.3f}", "leaky seed label, random split"))
        honest = leaky.get("auc_roc_against_point_in_time_label")
        if honest is not None:
            cards.append(("", f"{honest:.3f}", "same leaky model vs what customers did next"))
    return page.cards(cards)


def criterion_text(criterion: dict[str, Any]) -> str:
    """One success criterion, judged: 'PASS precision at 80% recall 0.7495 >= 0.75'."""
    verdict = "PASS" if criterion["passed"] else "FAIL"
    sign = ">=" if criterion["at_least"] else "<="
    return (
        f"{verdict} {criterion['criterion']} {criterion['value']:.4f} "
        f"(needs {sign} {criterion['bound']:g})"
    )


def _success_html(metadata: dict[str, Any]) -> str:
    rows = [
        [
            f"<td>{html.escape(c['criterion'])}</td>",
            f"<td>{'&ge;' if c['at_least'] else '&le;'} {c['bound']:g}</td>",
            f"<td>{c['value']:.4f}</td>",
            f"<td>{'pass' if c['passed'] else '<b>fail</b>'}</td>",
            f"<td>{html.escape(c['source'])}</td>",
        ]
        for c in metadata.get("success_criteria", [])
    ]
    return page.table(["criterion", "needs", "test", "verdict", "why this bound"], rows)


def _targeting_html(metadata: dict[str, Any]) -> str:
    rows = [
        [
            f"<td>{html.escape(t['policy'])}</td>",
            f"<td>{t['flagged']:,}</td>",
            f"<td>{_share(t['precision'])}</td>",
            f"<td>{_share(t['recall'])}</td>",
        ]
        for t in metadata.get("targeting", [])
    ]
    return page.table(["HIGH by", "flagged", "precision", "recall"], rows) + (
        '<p class="note">Test split. The cut-off flags whoever is likely enough; value '
        "flags whoever acting on pays for (a big spender sooner, one who spends nothing "
        "never), so it trades precision for the customers worth keeping; capacity flags "
        "as many as marketing can work, the most likely first. Set it with "
        "CHURN_HIGH_TARGETING.</p>"
    )


def targeting_text(metadata: dict[str, Any]) -> list[str]:
    """The targeting table as lines for the terminal."""
    return [
        f"{t['policy']:<52} {t['flagged']:>7,} flagged  precision {_share(t['precision'])}"
        f"  recall {_share(t['recall'])}"
        for t in metadata.get("targeting", [])
    ]


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _data_html(metadata: dict[str, Any]) -> str:
    cutoffs = metadata["cutoffs"]
    split_cutoffs = {
        "train": ", ".join(cutoffs["train"]),
        "validation": cutoffs["validation"],
        "test": cutoffs["test"],
    }
    rows = [
        [
            f"<td>{name}</td>",
            f"<td>{split_cutoffs[name]}</td>",
            f"<td>{metadata['rows'][name]:,}</td>",
            f"<td>{metadata['positive_rate'][name]:.1%}</td>",
        ]
        for name in ("train", "validation", "test")
    ]
    return page.table(["split", "cutoffs (23:59:59 UTC)", "rows", "churned"], rows)


def _tuning_html(metadata: dict[str, Any]) -> str:
    tuning = metadata["metrics"]["tuning"]
    dates = [fold["validation_cutoff"] for fold in tuning["folds"]]
    parts = [
        page.table(
            ["validation cutoff", "training cutoffs", "training rows", "validation rows"],
            [
                [
                    f"<td>{fold['validation_cutoff']}</td>",
                    f"<td>{', '.join(fold['train_cutoffs'])}</td>",
                    f"<td>{fold['train_rows']:,}</td>",
                    f"<td>{fold['validation_rows']:,}</td>",
                ]
                for fold in tuning["folds"]
            ],
        )
    ]
    for family, trials in tuning["families"].items():
        rows = [
            [
                f"<td>{html.escape(describe(t['params']))}</td>",
                f"<td>{t['validation_auc']:.4f}</td>",
                *(f"<td>{auc:.4f}</td>" for auc in t["fold_auc"]),
                f"<td>{'' if t['trees'] is None else t['trees']}</td>",
                f"<td>{'chosen' if t['chosen'] else ''}</td>",
            ]
            for t in trials
        ]
        classes = ["served" if t["chosen"] else "" for t in trials]
        headers = [f"{family} configuration", "mean", *dates, "trees", ""]
        parts.append(page.table(headers, rows, classes))
        parts.append(f'<p class="note">{html.escape(stability_text(family, metadata))}</p>')
    parts.append(
        '<p class="note">Of each family, the configuration with the best mean validation '
        "AUC over the cutoffs is chosen. Boosting grows every cutoff's model a "
        "tree at a time and stops once their mean validation AUC has not improved for "
        f"{html.escape(tuning['patience'])} ({patience(0.1)} at 0.1): a patience of 50 "
        "trees at 0.1 stopped models on small, sparse data after a handful of trees, at "
        "the first wobble of a noisy validation AUC.</p>"
    )
    return "".join(parts)


def stability_text(family: str, metadata: dict[str, Any]) -> str:
    """The chosen configuration and how it held across the validation cutoffs."""
    s = metadata["metrics"]["tuning"]["stability"][family]
    dates = [fold["validation_cutoff"] for fold in metadata["metrics"]["tuning"]["folds"]]
    by_cutoff = ", ".join(f"{d} {auc:.4f}" for d, auc in zip(dates, s["fold_auc"], strict=True))
    text = (
        f"{family}: chosen {describe(s['params'])}; validation AUC by cutoff {by_cutoff} "
        f"(mean {s['mean_auc']:.4f}, sd {s['std_auc']:.4f}, range "
        f"{s['max_auc'] - s['min_auc']:.4f})."
    )
    if s["configurations"] > 1:
        ranks = ", ".join(str(rank) for rank in s["rank_by_fold"])
        text += f" Its rank among the {s['configurations']} configurations by cutoff: {ranks}."
    if s["trees"] is not None:
        alone = ", ".join(str(trees) for trees in s["fold_trees"])
        text += f" {s['trees']} trees on the mean; each cutoff alone would have stopped at {alone}."
    return text


def _diagnostics_html(metadata: dict[str, Any]) -> str:
    return _oracle_html(metadata) + _leaky_html(metadata)


def _oracle_html(metadata: dict[str, Any]) -> str:
    oracle = metadata["metrics"]["diagnostics"].get("oracle")
    if not oracle or oracle.get("auc_roc") is None:
        return ""
    return (
        '<p class="note">Oracle: the simulator draws each customer\'s latent churn '
        "propensity (the chance they stop buying at some point in the simulated year). "
        f"Against the same test labels it scores AUC <b>{oracle['auc_roc']:.3f}</b>. It "
        "knows who is prone to churn, but not who has already gone quiet, which recent "
        "behaviour shows, so a point-in-time model can score above it.</p>"
    )


def _leaky_html(metadata: dict[str, Any]) -> str:
    leaky = metadata["metrics"]["diagnostics"].get("leaky_label")
    if not leaky or leaky.get("inflated_auc_roc") is None:
        return ""
    honest = leaky.get("auc_roc_against_point_in_time_label")
    honest_text = f"{honest:.3f}" if honest is not None else "n/a"
    return (
        '<p class="note">The seed article labels a customer churned when their last order '
        f"is more than 30 days old, computes that label from the very features the model "
        f"sees, and splits customers at random. On the test cutoff's customers that model "
        f"scores AUC <b>{leaky['inflated_auc_roc']:.3f}</b> on its own label: it only "
        "relearns recency. Scored on the same held-out customers against what they did in "
        f"the next {metadata['horizon_days']} days, it reaches <b>{honest_text}</b>, while the "
        f"point-in-time model reaches <b>{metadata['metrics']['test']['auc_roc']:.3f}</b> on "
        "a later period it never saw.</p>"
    )


def render(model: TrainedModel, version: str) -> str:
    """The report page for `model`, served from the artifact directory `version`."""
    if model.evidence is None:
        raise ValueError("the model carries no evidence to report on")
    metadata, evidence = model.metadata, model.evidence
    thresholds = metadata["thresholds"]
    sample = _contribution_sample(model, evidence, metadata["seed"])
    figures = [
        ("ROC and precision-recall", roc_and_pr_figure(evidence, metadata)),
        ("Calibration", calibration_figure(evidence, metadata)),
        ("Confusion at the risk cut-offs", confusion_figure(evidence, metadata)),
        ("Feature importance", importance_figure(model, sample)),
        ("Contributions summary", shap_figure(model, sample, metadata["seed"])),
    ]
    window = metadata["training_window"]
    parts = [
        f"<h1>Churn model {html.escape(version)}</h1>",
        f'<p class="sub">trained {metadata["trained_at"]} on data from {window["data_from"]} '
        f"to {window['data_to']}; churn = no order in the {metadata['horizon_days']} days "
        f"after a cutoff; risk cut-offs MEDIUM >= {thresholds['medium']:.2f}, "
        f"HIGH >= {thresholds['high']:.2f} (calibrated probability)</p>",
        _cards(metadata),
        "<h2>Success criteria</h2>",
        _success_html(metadata),
        "<h2>Who HIGH flags</h2>",
        _targeting_html(metadata),
        "<h2>Model comparison</h2>",
        _comparison_html(metadata),
        _selection_html(metadata, evidence),
        _diagnostics_html(metadata),
    ]
    parts += [page.image(title, png) for title, png in figures]
    parts += [
        "<h2>Point-in-time data</h2>",
        _data_html(metadata),
        '<p class="note">Each row is a customer with an order at or before the cutoff; '
        "features use only events up to the cutoff, the label only the horizon after it. "
        "Earlier cutoffs train, later ones validate (tuning, the choice of family and "
        "of when to stop boosting; the latest also calibration and cut-offs), the latest "
        "one tests.</p>",
        "<h2>Tuning on rolling validation cutoffs</h2>",
        _tuning_html(metadata),
        "<h2>Timings</h2>",
        page.table(
            ["step", "seconds"],
            [
                [f"<td>{html.escape(step)}</td>", f"<td>{seconds:.1f}</td>"]
                for step, seconds in metadata["timings_seconds"].items()
            ],
        ),
    ]
    return page.document(f"Churn model {version}", parts)


def write_report(model: TrainedModel, directory: Path) -> Path:
    """Write report.html into the artifact directory; returns its path."""
    path = directory / REPORT_FILE
    path.write_text(render(model, directory.name), encoding="utf-8")
    return path
