"""The label-free estimate (CBPE): known answers on generated data, and its record on the real demo months."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from keel.core.errors import DataError
from keel.core.model.evaluate import classification_metrics
from keel.core.monitoring.estimate import (
    choose_calibration,
    em_prior,
    estimate_metrics,
    expected_auc,
    explain_miss,
    fit_calibrator,
)


def _world(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Covariate shift only: P(y | x) is fixed; the model's score is that probability, overconfident."""
    x1, x2 = rng.normal(shift, 1, n), rng.normal(0, 1, n)
    truth = 1 / (1 + np.exp(-(1.4 * x1 - 0.8 * x2 - 0.7)))
    y = (rng.random(n) < truth).astype(int)
    logit = np.log(truth / (1 - truth))
    score = 1 / (1 + np.exp(-2.2 * logit - 0.4))  # a badly calibrated model with the right ranking
    return y, score


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_estimate_matches_realised_metrics_without_concept_drift(method):
    rng = np.random.default_rng(3)
    hold_y, hold_s = _world(rng, 50_000, 0.0)
    cal = fit_calibrator(hold_y, hold_s, method)
    errors, raw_errors = [], []
    for shift in (-1.0, -0.5, 0.0, 0.4, 0.8, 1.2):
        y, s = _world(rng, 30_000, shift)
        real, est = classification_metrics(y, s), estimate_metrics(s, cal)
        errors.append(est["accuracy"] - real["accuracy"])
        raw_errors.append(np.mean(np.where(s >= 0.5, s, 1 - s)) - real["accuracy"])  # no calibration
        assert abs(est["roc_auc"] - real["roc_auc"]) < 0.01
        assert abs(est["precision"] - real["precision"]) < 0.02 and abs(est["recall"] - real["recall"]) < 0.02
        assert abs(est["accuracy"] - real["accuracy"]) < 0.015
    assert np.mean(np.abs(errors)) < 0.01, "within 1 point on average when P(y|score) holds"
    assert np.mean(np.abs(raw_errors)) > 0.03, "the uncalibrated scores would have been far off"


def test_platt_fit_converges_when_the_scores_crowd_the_ends():
    """Scores pushed towards 0 and 1 (logits of +-13): a full Newton step overshot and Platt's
    coefficients ran off to about 1e11, turning every calibrated probability into 0 or 1."""
    y, s = _world(np.random.default_rng(4), 1500, 0.0)  # the score is sigmoid(2.2 * true logit + 0.4)
    a, b = fit_calibrator(y, s, "platt").x
    assert a == pytest.approx(1 / 2.2, abs=0.1) and b == pytest.approx(-0.4 / 2.2, abs=0.1)


def _step_world(rng: np.random.Generator, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """P(y | score) jumps at 0.6 (12% below, 70% above): monotone, but no logistic curve of the score."""
    s = np.clip(rng.beta(2 + shift, 2 - shift / 2, n), 1e-4, 1 - 1e-4)
    return (rng.random(n) < np.where(s < 0.6, 0.12, 0.7)).astype(int), s


@pytest.mark.parametrize(("world", "rows", "better"), [(_world, 1500, "platt"), (_step_world, 20_000, "isotonic")])
def test_auto_calibration_takes_the_method_that_carries_to_unseen_rows(world, rows, better):
    """``calibration = "auto"`` asks the calibration rows alone (5-fold cross-validated log loss) whether
    Platt's two numbers or isotonic regression's staircase carries over to rows it was not fitted on.
    A logistic distortion of the score, few rows: Platt (isotonic spends steps on the sample's noise).
    A step in P(y | score), many rows: isotonic (no logistic curve has a step). In both, the method
    chosen is the one whose estimate then misses less on shifted batches, and "auto" is that method."""
    other = "isotonic" if better == "platt" else "platt"
    misses: dict[str, list[float]] = {"auto": [], better: [], other: []}
    for seed in range(6):
        rng = np.random.default_rng(seed)
        y, s = world(rng, rows, 0.0)
        assert choose_calibration(y, s) == better, seed
        calibrators = {m: fit_calibrator(y, s, m) for m in misses}
        assert calibrators["auto"] == calibrators[better]
        for shift in (-0.5, 0.5, 1.0):
            yb, sb = world(rng, 20_000, shift)
            real = classification_metrics(yb, sb)
            for m, cal in calibrators.items():
                est = estimate_metrics(sb, cal)
                misses[m].append(abs(est["accuracy"] - real["accuracy"]) + abs(est["roc_auc"] - real["roc_auc"]))
    assert np.mean(misses[better]) < np.mean(misses[other]), {m: np.mean(v) for m, v in misses.items()}


def _label_shift_world(rng: np.random.Generator, n: int, prior: float) -> tuple[np.ndarray, np.ndarray]:
    """Pure label shift: P(score | y) is fixed and only the positive rate moves."""
    y = (rng.random(n) < prior).astype(int)
    logit = np.where(y == 1, rng.normal(1.0, 1.2, n), rng.normal(-1.2, 1.0, n))
    return y, 1 / (1 + np.exp(-0.6 * logit + 0.3))  # miscalibrated; the calibrator fixes that


def test_em_prior_recovers_a_known_label_shift():
    rng = np.random.default_rng(8)
    cal = fit_calibrator(*_label_shift_world(rng, 40_000, 0.25))
    for prior in (0.08, 0.25, 0.45, 0.6):
        y, s = _label_shift_world(rng, 20_000, prior)
        real = classification_metrics(y, s)
        plain, em = estimate_metrics(s, cal), estimate_metrics(s, cal, prior_shift="em")
        assert em["estimated_prior"] == pytest.approx(y.mean(), abs=0.015), prior
        assert em["expected_positive_rate"] == pytest.approx(em["estimated_prior"], abs=1e-6)
        assert abs(em["accuracy"] - real["accuracy"]) < 0.01, prior
        assert abs(em["recall"] - real["recall"]) < 0.02 and abs(em["precision"] - real["precision"]) < 0.02
        if abs(prior - 0.25) > 0.15:  # plain CBPE keeps the holdout's prior and misses
            assert abs(plain["accuracy"] - real["accuracy"]) > 0.03, prior
    assert plain["estimated_prior"] is None
    with pytest.raises(DataError):
        estimate_metrics(s, cal, prior_shift="bbse")
    p = cal(s)
    assert em_prior(p, cal.positives / cal.n) == pytest.approx(em["estimated_prior"])


def test_expected_auc_is_exact_for_certain_labels_and_half_for_ties():
    s = np.array([0.9, 0.8, 0.3, 0.2])
    assert expected_auc(s, np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert expected_auc(s, np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.0)
    assert expected_auc(np.full(4, 0.5), np.array([1.0, 0.0, 1.0, 0.0])) == pytest.approx(0.5)
    assert expected_auc(s, np.ones(4)) is None


def test_calibration_refuses_too_little_or_one_class():
    from keel.core.errors import DataError

    with pytest.raises(DataError):
        fit_calibrator(np.ones(100), np.linspace(0, 1, 100))
    with pytest.raises(DataError):
        fit_calibrator(np.array([0, 1] * 5), np.linspace(0, 1, 10))


def test_explain_miss_names_each_broken_assumption():
    assert explain_miss(0.80, 0.79, 0.2, 0.3, 0.8, 0.6, "holdout") == [], "within 2 points: nothing to explain"
    assert explain_miss(None, 0.79, None, None, None, None, None) == []
    why = explain_miss(0.81, 0.73, 0.181, 0.279, 0.70, 0.69, "recent")
    assert why == ["label shift: 27.9% positive, 18.1% expected"]
    why = explain_miss(0.78, 0.75, 0.25, 0.24, 0.745, 0.615, "holdout")
    assert why == ["ranking fell: AUC 0.615, 0.745 expected", "calibrated on the training holdout"]
    assert explain_miss(0.78, 0.75, 0.25, 0.24, 0.70, 0.69, "recent") == [
        "no single cause: positive rate and ranking as expected"]


def test_estimate_on_the_demo_months_misses_only_where_labels_shift(flights, capsys):
    """The demo's first production model (trained on January as the pipeline trains it), estimated on
    every later month of 2013 and compared with the realised accuracy once the labels are known.

    Two calibrations: on the model's training holdout (a random 30% of January), and as the pipeline
    now calibrates, on the newest (up to three) labelled months the model scored before, out of time.

    Measured: accuracy MAE 4.1 points with the holdout, about the same with the recent months; the
    issue's 2-point bound does NOT hold on this data, and no calibration can make it: the misses
    follow the delay rate, which moves with causes the features do not carry (congestion, weather
    elsewhere, the April 2013 air-traffic-control furloughs): April +11 points more delays than the
    scores expect, July +7, September -9, December +8 (error correlation with that shift about 0.9).
    bench/estimate.py shows that even a model trained on ten other months of the year misses by 4.7
    points on average. What calibrating out of time does fix is the ranking: every month ranks worse
    than the January holdout promised (a random in-month holdout shares days and weather with the
    training rows), so the holdout-calibrated ROC AUC estimate is 5-13 points too high; calibrated on
    the months before, it misses by about half as much.

    The label-shift correction (``prior_shift="em"``: EM prior estimation of Saerens et al. 2002,
    then re-weighted probabilities) was measured on the same months and model and makes it WORSE:
    MAE 7.7 points (April +22.8: the scores fall while the delay rate rises, so EM puts the prior
    near zero; February -9.5, June -11.9). The months are not label shift (P(score | y) moves), so
    the default stays "none". Every month that misses by more than 2 points gets a named cause from
    :func:`explain_miss` (what `keel metrics estimates` prints); the assertions hold all the figures.
    """
    import tomllib

    from keel.core.config import parse_config
    from keel.core.data.demo import DEMO_CONFIG
    from keel.core.data.features import feature_spec, label_array
    from keel.core.model.train import load_booster, model_params, predict, train_model

    cfg = parse_config(tomllib.loads(DEMO_CONFIG))
    january = flights.filter((pl.col("month") == 1) & pl.col("delayed").is_not_null()).sort("time_hour", "flight_id")
    holdout_rows = np.random.default_rng(cfg.retrain.seed).random(january.height) < cfg.retrain.holdout_share
    train, holdout = january.filter(pl.Series(~holdout_rows)), january.filter(pl.Series(holdout_rows))
    spec = feature_spec(cfg, train)
    model = train_model(train, spec, model_params(cfg.retrain.params, cfg.retrain.seed), cfg.retrain.num_boost_round)
    booster = load_booster(model.text)
    cal = fit_calibrator(label_array(holdout, spec), predict(booster, holdout, spec, model.categories))

    scored = {}
    for month in range(2, 13):
        frame = flights.filter(pl.col("month") == month)
        s, y = predict(booster, frame, spec, model.categories), label_array(frame, spec)
        known = ~np.isnan(y)
        scored[month] = (s, y, known)
    rows = []
    for month in range(2, 13):
        s, y, known = scored[month]
        before = [m for m in range(max(2, month - cfg.monitor.calibration_batches), month)]
        recent_cal = cal if not before else fit_calibrator(
            np.concatenate([scored[m][1][scored[m][2]] for m in before]),
            np.concatenate([scored[m][0][scored[m][2]] for m in before]))
        est = estimate_metrics(s, cal)  # from the scores alone, labels unseen
        rec = estimate_metrics(s, recent_cal)
        em = estimate_metrics(s, cal, prior_shift="em")
        real = classification_metrics(y[known].astype(int), s[known])
        rate = float(y[known].mean())
        rows.append({"month": month, "err": est["accuracy"] - real["accuracy"], "est": est["accuracy"],
                     "rec_err": rec["accuracy"] - real["accuracy"], "rec_auc_err": rec["roc_auc"] - real["roc_auc"],
                     "em_err": em["accuracy"] - real["accuracy"], "em_prior": em["estimated_prior"],
                     "real": real["accuracy"], "rate_shift": rate - est["expected_positive_rate"],
                     "auc_fall": est["roc_auc"] - real["roc_auc"],
                     "why": explain_miss(rec["accuracy"], real["accuracy"], rec["expected_positive_rate"], rate,
                                         rec["roc_auc"], real["roc_auc"], "recent" if before else "holdout")})
    mae = float(np.mean([abs(r["err"]) for r in rows]))
    rec_mae = float(np.mean([abs(r["rec_err"]) for r in rows]))
    em_mae = float(np.mean([abs(r["em_err"]) for r in rows]))
    auc_mae = float(np.mean([abs(r["auc_fall"]) for r in rows]))
    rec_auc_mae = float(np.mean([abs(r["rec_auc_err"]) for r in rows]))
    with capsys.disabled():
        print(f"\nCBPE on the demo months (January model): accuracy MAE {100 * mae:.2f} points calibrated on the "
              f"holdout, {100 * rec_mae:.2f} on the months before, {100 * em_mae:.2f} with the EM prior adjustment; "
              f"ROC AUC MAE {100 * auc_mae:.2f} and {100 * rec_auc_mae:.2f}")
        for r in rows:
            print(f"  2013-{r['month']:02d}  estimated {r['est']:.3f}  realised {r['real']:.3f}  "
                  f"error {100 * r['err']:+.2f} (recent {100 * r['rec_err']:+.2f})  "
                  f"delay-rate shift {100 * r['rate_shift']:+.1f}  AUC fall {r['auc_fall']:+.3f} "
                  f"(recent {r['rec_auc_err']:+.3f})  EM error {100 * r['em_err']:+.2f}  {'; '.join(r['why'])}")
    for r in rows:
        if abs(r["err"]) > 0.02:
            assert abs(r["rate_shift"]) > 0.02 or r["auc_fall"] > 0.05, f"unexplained miss in month {r['month']}"
        if abs(r["rec_err"]) > 0.02:
            assert r["why"] and not r["why"][0].startswith("no single cause"), (r["month"], r["why"])
    corr = np.corrcoef([r["err"] for r in rows], [r["rate_shift"] for r in rows])[0, 1]
    assert corr > 0.8, f"the misses follow the delay-rate shift the scores cannot see (r = {corr:.2f})"
    assert 0.02 < mae < 0.06, f"the demo's figure changed: MAE {mae:.4f}; update the report and this test"
    assert 0.02 < rec_mae < 0.06, f"the demo's figure changed: MAE {rec_mae:.4f}; update the report and this test"
    assert em_mae > mae + 0.02, f"EM prior adjustment: MAE {em_mae:.4f} against {mae:.4f}; revisit the default"
    assert rec_auc_mae < auc_mae - 0.03, f"out-of-time calibration: AUC MAE {rec_auc_mae:.4f} against {auc_mae:.4f}"
