"""Known-answer tests of keel.core.drift.detect on seeded generated data, for both engines."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from keel.core.config import DriftConfig, parse_config
from keel.core.drift import stats as ds
from keel.core.drift.detect import (
    category_mapping,
    detect_drift,
    label_drift,
    score_drift,
)
from keel.core.errors import ConfigError, DataError

ENGINES = ["scipy", "alibi"]


def normal_frame(rng: np.random.Generator, n: int, k: int, shift: float = 0.0) -> pl.DataFrame:
    """k standard-normal features x0..x{k-1}; x0 shifted by `shift` standard deviations."""
    return pl.DataFrame({f"x{i}": rng.normal(shift if i == 0 else 0.0, 1.0, n) for i in range(k)})


def mixed_frames(seed: int = 7, n_ref: int = 3000, n_cur: int = 2000) -> tuple[pl.DataFrame, ...]:
    """Numeric and categorical features with nulls, NaN, unseen categories and real drift."""
    rng = np.random.default_rng(seed)

    def side(n: int, shifted: bool) -> pl.DataFrame:
        num = rng.normal(0.4 if shifted else 0.0, 1.0, n)
        num[rng.random(n) < (0.2 if shifted else 0.05)] = np.nan
        cities = ["lyon", "nice", "paris", "rome"] + (["oslo", "bern"] if shifted else [])
        weights = [0.1, 0.2, 0.3, 0.2, 0.1, 0.1] if shifted else [0.4, 0.3, 0.2, 0.1]
        city = rng.choice(cities, n, p=weights).astype(object)
        city[rng.random(n) < 0.1] = None
        return pl.DataFrame({
            "num": num,
            "flat": rng.normal(0.0, 1.0, n),
            "ints": pl.Series(rng.integers(0, 50, n)).set(pl.Series(rng.random(n) < 0.03), None),
            "city": pl.Series(city.tolist(), dtype=pl.String),
            "grade": rng.integers(1, 4 if shifted else 5, n),  # int categorical, a class vanishes
            "flag": rng.random(n) < (0.6 if shifted else 0.3),  # boolean: chi2 without asking
        })

    return side(n_ref, False), side(n_cur, True)


# --- detection power, false alarms and the effect-size floor ----------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_mean_shift_of_a_tenth_std_is_detected_in_that_feature_only(engine: str) -> None:
    rng = np.random.default_rng(0)
    ref, cur = normal_frame(rng, 5000, 4), normal_frame(rng, 5000, 4, shift=0.1)
    # The default Wasserstein floor (0.1 reference std) equals this shift, so whether a sample's
    # estimate lands above or below it is a coin flip; halve the floor to test the detection.
    settings = DriftConfig(engine=engine, wasserstein_threshold=0.05)
    report = detect_drift(ref, cur, ref.columns, [], settings)
    assert report.detected
    assert report.drifted() == ["x0"]
    by_name = {f.name: f for f in report.features}
    assert by_name["x0"].p_corrected < 1e-4
    assert 0.07 < by_name["x0"].effect_size < 0.13
    assert all(by_name[n].p_corrected > 0.05 for n in ("x1", "x2", "x3"))


def test_false_alarm_rate_over_200_seeds_is_at_most_alpha() -> None:
    alpha = 0.05
    settings = DriftConfig(engine="scipy", p_value=alpha)
    by_test, by_report, uncorrected = 0, 0, 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        ref, cur = normal_frame(rng, 2000, 5), normal_frame(rng, 2000, 5)
        report = detect_drift(ref, cur, ref.columns, [], settings)
        by_report += report.detected
        by_test += any(f.p_corrected < alpha for f in report.features)
        uncorrected += any(f.p_value < alpha for f in report.features)
    # Bonferroni over 5 independent tests gives about 1 - 0.99**5 = 0.049 in expectation; these
    # seeds give 7/200. Without the correction the rate is about 0.23: the check can fail.
    assert by_test / 200 <= alpha
    assert uncorrected / 200 > 3 * alpha
    assert by_report <= by_test  # the effect floor only ever removes alarms


def test_trivial_shift_at_a_million_rows_is_significant_but_not_drifted() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    ref = pl.DataFrame({"amount": rng.normal(0.0, 1.0, n)})
    cur = pl.DataFrame({"amount": rng.normal(0.005, 1.0, n)})
    settings = DriftConfig(engine="scipy", sample_size=n)  # compare every row, no sampling
    report = detect_drift(ref, cur, ["amount"], [], settings)
    feature = report.features[0]
    assert report.sampled is None and report.n_reference == n
    assert feature.p_corrected < 0.05  # large samples make a 0.005-std shift "significant"...
    assert feature.effect_size < 0.02  # ...but it is tiny,
    assert not feature.drifted and not report.detected  # so the effect floor keeps it quiet
    # the direct scipy call on all the rows agrees
    assert feature.p_value == pytest.approx(
        stats.ks_2samp(ref["amount"].to_numpy(), cur["amount"].to_numpy(), method="asymp").pvalue,
        rel=1e-9,
    )


def test_large_inputs_are_sampled_once_and_said_so() -> None:
    rng = np.random.default_rng(1)
    ref, cur = normal_frame(rng, 30_000, 2), normal_frame(rng, 12_000, 2)
    settings = DriftConfig(engine="scipy", sample_size=10_000, seed=3)
    report = detect_drift(ref, cur, ref.columns, [], settings)
    assert report.sampled == (
        "sampled 10000 of 30000 reference rows and 10000 of 12000 current rows, seed 3")
    assert (report.n_reference, report.n_current) == (10_000, 10_000)
    again = detect_drift(ref, cur, ref.columns, [], settings)
    assert [f.p_value for f in again.features] == [f.p_value for f in report.features]


# --- parity between the engines -----------------------------------------------------------------


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_alibi_and_scipy_engines_agree_to_1e_6(correction: str) -> None:
    ref, cur = mixed_frames()
    features = ["num", "flat", "ints", "city", "grade", "flag"]
    reports = {
        engine: detect_drift(ref, cur, features, ["city", "grade"],
                             DriftConfig(engine=engine, correction=correction))
        for engine in ENGINES
    }
    scipy_by, alibi_by = ({f.name: f for f in reports[e].features} for e in ENGINES)
    assert {f.kind for f in reports["scipy"].features if f.name in ("city", "grade", "flag")} == {
        "categorical"}
    for name in features:
        s, a = scipy_by[name], alibi_by[name]
        assert a.p_value == pytest.approx(s.p_value, abs=1e-6), name
        assert a.p_corrected == pytest.approx(s.p_corrected, abs=1e-6), name
        assert a.statistic == pytest.approx(s.statistic, rel=1e-6), name
        assert (a.effect_size, a.unseen, a.drifted) == (s.effect_size, s.unseen, s.drifted), name
    assert scipy_by["city"].unseen > 0 and scipy_by["num"].null_rate_current > 0.15
    # as sets: Alibi Detect returns float32 p-values, which underflow to 0 below ~1e-45, so the
    # p-value order of vanishing p-values (the report's last sort key) can differ
    assert set(reports["scipy"].drifted()) == set(reports["alibi"].drifted())
    assert {"num", "city", "flag"} <= set(reports["scipy"].drifted())
    assert "flat" not in reports["scipy"].drifted()


def test_scipy_engine_matches_the_direct_scipy_calls() -> None:
    ref, cur = mixed_frames()
    report = detect_drift(ref, cur, ["num", "city"], [], DriftConfig(engine="scipy"))
    by_name = {f.name: f for f in report.features}
    ks = stats.ks_2samp(ref["num"].drop_nans().drop_nulls().to_numpy(),
                        cur["num"].drop_nans().drop_nulls().to_numpy(), method="asymp")
    assert by_name["num"].p_value == pytest.approx(ks.pvalue, rel=1e-12, abs=1e-300)
    cats = category_mapping(ref, ["city"])["city"]  # lyon nice paris rome + unseen bucket
    table = [[(col.drop_nulls() == c).sum() for c in cats] + [(~col.drop_nulls().is_in(cats)).sum()]
             for col in (ref["city"], cur["city"])]
    chi2 = stats.chi2_contingency(np.array(table))
    assert by_name["city"].statistic == pytest.approx(chi2.statistic, rel=1e-12)
    assert by_name["city"].p_value == pytest.approx(chi2.pvalue, rel=1e-9, abs=1e-300)


def test_fused_ks_and_wasserstein_equal_scipy() -> None:
    rng = np.random.default_rng(5)
    cases = [
        (rng.normal(size=4000), rng.normal(0.05, 1.2, size=1500)),
        (rng.integers(0, 5, 800).astype(float), rng.integers(0, 6, 300).astype(float)),  # ties
        (np.array([1.0]), np.array([1.0, 2.0])),
        (np.zeros(10), np.zeros(7)),
    ]
    for a, b in cases:
        d, w1 = ds.ks_wasserstein(np.sort(a), np.sort(b))
        p = ds.ks_p_value(d, a.size, b.size)
        ks = stats.ks_2samp(a, b, alternative="two-sided", method="asymp")
        assert (d, p) == pytest.approx((ks.statistic, ks.pvalue), rel=1e-12, abs=1e-15)
        assert w1 == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-12, abs=1e-15)


# --- nulls, unseen categories, edge cases -------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_unseen_categories_are_counted_not_fatal(engine: str) -> None:
    ref = pl.DataFrame({"c": ["a", "b", "c"] * 100})
    cur = pl.DataFrame({"c": ["a", "b", "d", "e", None] * 60})
    report = detect_drift(ref, cur, ["c"], ["c"], DriftConfig(engine=engine))
    (feature,) = report.features
    assert feature.unseen == 120  # "d" and "e" share the unseen bucket
    assert feature.null_rate_current == pytest.approx(0.2)
    assert feature.drifted and feature.p_value < 1e-10
    assert category_mapping(ref, ["c"]) == {"c": ["a", "b", "c"]}


@pytest.mark.parametrize("engine", ENGINES)
def test_all_null_columns_do_not_crash(engine: str) -> None:
    ref = pl.DataFrame({"x": [1.0, 2.0, 3.0] * 50, "gone": [None] * 150, "c": ["a", "b", "c"] * 50})
    cur = pl.DataFrame({
        "x": pl.Series([None] * 100, dtype=pl.Float64),
        "gone": pl.Series([None] * 100, dtype=pl.Float64),
        "c": pl.Series([None] * 100, dtype=pl.String),
    })
    report = detect_drift(ref, cur, ["x", "gone", "c"], ["c"], DriftConfig(engine=engine))
    assert not report.detected
    for feature in report.features:
        assert math.isnan(feature.p_value) and not feature.drifted
        assert feature.null_rate_current == 1.0
    by_name = {f.name: f for f in report.features}
    assert by_name["x"].null_p_value < 1e-10 and by_name["gone"].null_p_value == 1.0
    json.dumps(report.to_dict(), allow_nan=False)


def test_null_rate_test_is_the_two_proportion_test() -> None:
    table = np.array([[30, 970], [55, 945]])
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert ds.null_rate_p_value(30, 1000, 55, 1000) == pytest.approx(expected, rel=1e-9)


def test_bad_settings_and_missing_columns_raise_config_errors() -> None:
    for bad in ({"engine": "evidently"}, {"correction": "holm"}, {"p_value": 0.0},
                {"numeric_effect": "kl"}, {"sample_size": 0}, {"psi_threshold": -1}):
        with pytest.raises(ConfigError, match=f"drift.{next(iter(bad))}"):
            parse_config({"model": "m", "target": "y", "drift": bad})
    frame = pl.DataFrame({"x": [1.0, 2.0]})
    with pytest.raises(ConfigError, match="'y'"):
        detect_drift(frame, frame, ["x", "y"], [], DriftConfig(engine="scipy"))
    with pytest.raises(DataError):
        detect_drift(frame, frame.clear(), ["x"], [], DriftConfig(engine="scipy"))


# --- corrections, effect sizes, ranking and output --------------------------------------------


def test_bonferroni_and_benjamini_hochberg_match_hand_values() -> None:
    p = np.array([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(ds.bonferroni(p), [0.04, 0.16, 0.12, 0.02])
    # sorted 0.005 0.01 0.03 0.04 -> x4/1 x4/2 x4/3 x4/4 = 0.02 0.02 0.04 0.04
    np.testing.assert_allclose(ds.benjamini_hochberg(p), [0.02, 0.04, 0.04, 0.02])
    # step-up: 0.01*3/1 = 0.03 is lowered to 0.011*3/2 = 0.0165
    np.testing.assert_allclose(ds.benjamini_hochberg(np.array([0.01, 0.011, 0.5])),
                               [0.0165, 0.0165, 0.5])
    np.testing.assert_allclose(ds.bonferroni(np.array([0.3, np.nan, 0.6])), [0.6, np.nan, 1.0])


def test_bh_decision_agrees_with_alibi_fdr() -> None:
    from alibi_detect.utils.statstest import fdr

    rng = np.random.default_rng(11)
    for _ in range(200):
        p = rng.uniform(0, 0.1, size=rng.integers(1, 12))
        assert bool(fdr(p, q_val=0.05)[0]) == bool((ds.benjamini_hochberg(p) < 0.05).any())


def test_report_uses_the_configured_correction() -> None:
    ref, cur = mixed_frames()
    features = ["num", "flat", "city", "flag"]
    for correction, adjust in (("bonferroni", ds.bonferroni), ("fdr", ds.benjamini_hochberg)):
        report = detect_drift(ref, cur, features, [], DriftConfig(engine="scipy", correction=correction))
        raw = np.array([f.p_value for f in report.features])
        np.testing.assert_allclose([f.p_corrected for f in report.features], adjust(raw))


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 20_001])
def test_sorted_quantiles_equal_numpy(n) -> None:
    rng = np.random.default_rng(n)
    values = np.sort(np.round(rng.normal(size=n), 1))  # ties included
    q = np.linspace(0.0, 1.0, 11)
    assert np.allclose(ds.sorted_quantiles(values, q), np.quantile(values, q), rtol=0, atol=1e-12)


def test_effect_sizes_psi_known_values() -> None:
    ref, cur = np.array([50, 50, 0]), np.array([25, 75, 0])
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert ds.psi(ref, cur) == pytest.approx(expected)
    assert ds.psi(np.array([100, 0]), np.array([90, 10])) == pytest.approx(
        (0.9 - 1.0) * math.log(0.9) + (0.1 - 1e-4) * math.log(0.1 / 1e-4))
    rng = np.random.default_rng(2)
    a = np.sort(rng.normal(size=20_000))
    assert ds.numeric_psi(a, a) == 0.0
    assert ds.numeric_psi(a, np.sort(rng.normal(1.0, 1.0, 20_000))) > 0.5
    report = detect_drift(pl.DataFrame({"x": a}), pl.DataFrame({"x": a + 1.0}), ["x"], [],
                          DriftConfig(engine="scipy", numeric_effect="psi"))
    assert report.features[0].effect_metric == "psi" and report.features[0].drifted
    assert ds.wasserstein_normalised(0.3, 0.0) == 0.3


def test_drifted_features_are_ranked_by_importance() -> None:
    rng = np.random.default_rng(3)
    ref = normal_frame(rng, 4000, 5)
    cur = normal_frame(rng, 4000, 5).with_columns(
        pl.col("x1") + 1.0, pl.col("x2") + 0.5, pl.col("x4") + 2.0)
    gains = {"x0": 50.0, "x1": 10.0, "x2": 30.0, "x3": 40.0, "unused": 99.0}
    report = detect_drift(ref, cur, ref.columns, [], DriftConfig(engine="scipy"), gains)
    assert report.drifted() == ["x2", "x1", "x4"]  # ranked ones first (by gain), then unranked
    assert [f.name for f in report.features] == ["x2", "x1", "x4", "x0", "x3"]
    ranks = {f.name: f.importance_rank for f in report.features}
    assert ranks == {"x0": 1, "x3": 2, "x2": 3, "x1": 4, "x4": None}


def test_to_dict_is_json_safe() -> None:
    ref, cur = mixed_frames()
    report = detect_drift(ref, cur, ["num", "city", "flag"], [], DriftConfig(engine="scipy"),
                          {"num": np.float32(2.5), "city": 1})
    text = json.dumps(report.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["detected"] is True and back["features"][0]["name"] == report.features[0].name
    assert all(type(v) in (str, int, float, bool, type(None))
               for f in back["features"] for k, v in f.items() if k != "histogram")
    assert all(type(v) in (str, float) for f in back["features"] for series in f["histogram"].values()
               for v in series), "the histogram is lists of plain numbers and labels"


def test_histogram_shares_over_the_psi_bins_and_top_categories() -> None:
    rng = np.random.default_rng(11)
    ref, cur = mixed_frames()
    cats = [f"c{i:02d}" for i in range(12)]
    ref = ref.with_columns(many=pl.Series(rng.choice(cats, ref.height, p=np.linspace(12, 1, 12) / 78)))
    cur = cur.with_columns(many=pl.Series(rng.choice([*cats, "new"], cur.height)))
    report = detect_drift(ref, cur, ["num", "flat", "city", "many"], [], DriftConfig(engine="scipy"))
    by_name = {f.name: f for f in report.features}

    num = by_name["num"].histogram
    assert len(num["edges"]) == ds.PSI_BINS - 1 and len(num["reference"]) == len(num["current"]) == ds.PSI_BINS
    assert all(abs(sum(num[side]) - 1.0) < 1e-12 for side in ("reference", "current"))
    assert max(abs(s - 0.1) for s in num["reference"]) < 0.01, "reference deciles: a tenth in each bin"
    # the same bins as PSI: the PSI recomputed from the shares equals the reported one
    refv = np.sort(ref["num"].fill_nan(None).drop_nulls().to_numpy())
    curv = np.sort(cur["num"].fill_nan(None).drop_nulls().to_numpy())
    assert np.allclose(num["edges"], ds.quantile_bins(refv, curv)[0])
    assert ds.psi(np.array(num["reference"]), np.array(num["current"])) == pytest.approx(ds.numeric_psi(refv, curv))
    assert sum(num["current"][5:]) > sum(num["reference"][5:]), "the +0.4 shift shows in the upper bins"

    city = by_name["city"].histogram  # 4 reference categories: all shown, "other" holds oslo and bern
    assert city["labels"] == ["lyon", "nice", "paris", "rome", "other"]
    assert city["reference"][-1] == 0.0 and city["current"][-1] > 0.1
    many = by_name["many"].histogram
    assert many["labels"] == [*cats[:8], "other"], "the reference's 8 most common, then other"
    assert all(abs(sum(many[side]) - 1.0) < 1e-12 for side in ("reference", "current"))
    assert by_name["city"].to_dict()["histogram"] == city


# --- prediction and label drift -----------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_prediction_and_label_drift(engine: str) -> None:
    rng = np.random.default_rng(4)
    settings = DriftConfig(engine=engine)
    ref_scores = rng.beta(2, 5, 5000)
    same = score_drift(ref_scores, rng.beta(2, 5, 5000), settings)
    moved = score_drift(ref_scores, np.append(rng.beta(4, 3, 5000), np.nan), settings)
    assert same.name == "prediction" and same.test == "ks" and not same.drifted
    assert moved.drifted and moved.null_rate_current == pytest.approx(1 / 5001)
    uncertainty = DriftConfig(engine=engine, prediction_test="uncertainty")  # KS on the scores' entropy
    assert score_drift(ref_scores, rng.beta(4, 3, 5000), uncertainty).test == "uncertainty_ks"
    labels = label_drift(rng.choice([0, 1], 4000, p=[0.8, 0.2]),
                         rng.choice([0, 1, 2], 4000, p=[0.5, 0.4, 0.1]), settings)
    assert (labels.name, labels.test, labels.kind) == ("label", "chi2", "categorical")
    assert labels.drifted and labels.unseen > 300
    steady = label_drift(np.array(["no", "yes"] * 500), np.array(["yes", "no"] * 400), settings)
    assert steady.p_value == pytest.approx(1.0) and not steady.drifted
    assert steady.test == "fet"  # two classes, nothing unseen: Fisher's exact test
