"""CVMDrift, FETDrift and ClassifierUncertaintyDrift behind keel's drift interface: parity of the
two engines (p-values to 1e-6) and agreement with the direct scipy calls."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy import stats

from keel.core.config import DriftConfig, parse_config
from keel.core.drift import detectors as dd
from keel.core.drift.detect import detect_drift, label_drift, score_drift
from keel.core.errors import ConfigError

ENGINES = ["scipy", "alibi"]


def frames(seed: int = 12, n_ref: int = 3000, n_cur: int = 2500) -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(seed)

    def side(n: int, shifted: bool) -> pl.DataFrame:
        num = rng.normal(0.15 if shifted else 0.0, 1.3 if shifted else 1.0, n)
        num[rng.random(n) < 0.05] = np.nan
        return pl.DataFrame({
            "num": num,
            "flat": rng.normal(0.0, 1.0, n),
            "ties": rng.integers(0, 6, n).astype(float),  # heavy ties for CVM's ranks
            "flag": rng.random(n) < (0.36 if shifted else 0.3),  # boolean: FET
            "side": pl.Series(rng.choice(["left", "right"], n, p=[0.5, 0.5]).tolist()),  # 2 strings
            "city": pl.Series(rng.choice(["a", "b", "c"], n).tolist()),  # three: chi-square
        })

    return side(n_ref, False), side(n_cur, True)


@pytest.mark.parametrize("correction", ["bonferroni", "fdr"])
def test_cvm_and_fet_engines_agree_to_1e_6(correction: str) -> None:
    ref, cur = frames()
    features = ref.columns
    reports = {e: detect_drift(ref, cur, features, ["city"],
                               DriftConfig(engine=e, correction=correction, numeric_test="cvm"))
               for e in ENGINES}
    by = {e: {f.name: f for f in reports[e].features} for e in ENGINES}
    tests = {f.name: f.test for f in reports["scipy"].features}
    assert tests == {"num": "cvm", "flat": "cvm", "ties": "cvm", "flag": "fet", "side": "fet",
                     "city": "chi2"}
    for name in features:
        s, a = by["scipy"][name], by["alibi"][name]
        assert a.test == s.test
        assert a.p_value == pytest.approx(s.p_value, abs=1e-6), name
        assert a.p_corrected == pytest.approx(s.p_corrected, abs=1e-6), name
        assert a.statistic == pytest.approx(s.statistic, rel=1e-6), name
        assert (a.effect_size, a.drifted) == (s.effect_size, s.drifted), name
    assert "num" in reports["scipy"].drifted() and "flat" not in reports["scipy"].drifted()
    # 30% -> 36% True: significant, but a PSI of about 0.02 stays under the 0.2 floor
    assert by["scipy"]["flag"].p_corrected < 0.01 and not by["scipy"]["flag"].drifted
    assert set(reports["scipy"].drifted()) == set(reports["alibi"].drifted())


def test_cvm_matches_scipy_and_ks_stays_the_default() -> None:
    ref, cur = frames()
    report = detect_drift(ref, cur, ["num", "ties"], [], DriftConfig(engine="scipy", numeric_test="cvm"))
    by = {f.name: f for f in report.features}
    for name in ("num", "ties"):
        a, b = (frame[name].drop_nans().drop_nulls().to_numpy() for frame in (ref, cur))
        direct = stats.cramervonmises_2samp(a, b)
        assert by[name].statistic == pytest.approx(direct.statistic, rel=1e-12)
        assert by[name].p_value == pytest.approx(direct.pvalue, rel=1e-9, abs=1e-15)
    assert DriftConfig().numeric_test == "ks"
    assert detect_drift(ref, cur, ["num"], [], DriftConfig(engine="scipy")).features[0].test == "ks"
    # small samples take the exact CVM p-value on both engines
    small = [np.array([0.1, 0.5, 0.7, 1.3, 2.0]), np.array([0.9, 1.5, 2.2, 2.8, 3.1, 3.3])]
    p = {e: dd.cvm_test(np.sort(small[0]), np.sort(small[1]), e)[1] for e in ENGINES}
    assert p["alibi"] == pytest.approx(p["scipy"], abs=1e-6)
    assert p["scipy"] == pytest.approx(stats.cramervonmises_2samp(*small, method="exact").pvalue)


@pytest.mark.parametrize("engine", ENGINES)
def test_fet_is_two_sided_and_equals_fisher_exact(engine: str) -> None:
    # a fall in the share of True must count as much as a rise (FETDrift defaults to "greater")
    ref = pl.DataFrame({"flag": [True] * 300 + [False] * 700})
    fall = pl.DataFrame({"flag": [True] * 200 + [False] * 800})
    feature = detect_drift(ref, fall, ["flag"], [], DriftConfig(engine=engine)).features[0]
    odds, p = stats.fisher_exact([[200, 300], [800, 700]], alternative="two-sided")
    assert feature.test == "fet" and feature.kind == "categorical"
    assert feature.p_value == pytest.approx(p, rel=1e-6) and feature.statistic == pytest.approx(odds)
    assert feature.p_value < 1e-5 and feature.statistic < 1  # odds of True fell


@pytest.mark.parametrize("engine", ENGINES)
def test_a_binary_feature_with_an_unseen_value_falls_back_to_chi_square(engine: str) -> None:
    ref = pl.DataFrame({"c": ["x", "y"] * 200})
    cur = pl.DataFrame({"c": ["x", "y", "z", None] * 100})
    feature = detect_drift(ref, cur, ["c"], ["c"], DriftConfig(engine=engine)).features[0]
    assert (feature.test, feature.unseen) == ("chi2", 100)
    labels = label_drift(np.array([0, 1] * 300), np.array([0, 1, 1] * 200), DriftConfig(engine=engine))
    assert labels.test == "fet" and labels.p_value < 0.01


def test_uncertainty_is_the_entropy_alibi_computes() -> None:
    from alibi_detect.cd.preprocess import classifier_uncertainty

    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    expected = classifier_uncertainty(p.reshape(-1, 1), model_fn=dd.two_class_probs)
    np.testing.assert_array_equal(dd.entropy_uncertainty(p), expected.reshape(-1))
    assert dd.entropy_uncertainty(np.array([0.5]))[0] == pytest.approx(np.log(2))


def test_uncertainty_drift_engines_agree_to_1e_6() -> None:
    rng = np.random.default_rng(21)
    ref = rng.beta(2, 5, 4000)
    for cur in (rng.beta(2, 5, 3000), rng.beta(2.6, 4, 3000), rng.beta(5, 5, 3000)):
        results = {e: score_drift(ref, cur, DriftConfig(engine=e, prediction_test="uncertainty")) for e in ENGINES}
        s, a = results["scipy"], results["alibi"]
        assert s.test == a.test == "uncertainty_ks"
        assert a.p_value == pytest.approx(s.p_value, abs=1e-6)
        assert a.statistic == pytest.approx(s.statistic, rel=1e-6)
        assert (a.effect_size, a.drifted) == (s.effect_size, s.drifted)
        u_ref, u_cur = dd.entropy_uncertainty(ref), dd.entropy_uncertainty(cur)
        direct = stats.ks_2samp(u_ref, u_cur, method="asymp")
        assert s.statistic == pytest.approx(direct.statistic, rel=1e-12)
        assert s.p_value == pytest.approx(direct.pvalue, rel=1e-9, abs=1e-300)
    assert not results_for(ref, rng.beta(2, 5, 3000)).drifted
    assert results_for(ref, rng.beta(5, 5, 3000)).drifted  # scores crowd towards 0.5


def results_for(ref: np.ndarray, cur: np.ndarray):
    return score_drift(ref, cur, DriftConfig(engine="scipy", prediction_test="uncertainty"))


def test_bad_detector_settings_raise_config_errors() -> None:
    for bad in ({"numeric_test": "anderson"}, {"prediction_test": "margin"}):
        with pytest.raises(ConfigError, match=f"drift.{next(iter(bad))}"):
            parse_config({"model": "m", "target": "y", "drift": bad})
    from keel.core.config import DriftConfig

    assert DriftConfig(**DriftConfig().model_dump()) == DriftConfig()
    assert DriftConfig.model_fields["numeric_test"].description
