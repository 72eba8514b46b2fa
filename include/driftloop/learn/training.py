"""Training a challenger on its data (driftloop.learn.data): the candidates (LightGBM, a regularised
logistic regression, a warm start of the champion), their evaluation (driftloop.core.quality) and
feature importance. No MLflow and no Airflow here (see driftloop.learn.retrain).

A model takes the features as the prediction contract carries them (one column per spec feature:
numbers, strings, booleans, nulls) and returns class probabilities in the spec's class order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from driftloop.core.quality import is_better, quality_metrics
from driftloop.core.spec import LOWER_IS_BETTER, FeatureType, ModelSpec
from driftloop.learn.data import Split, TrainingData, TrainingError, time_split

# --------------------------------------------------------------------------------------------------
# Features: the contract's values -> what the estimators take


def feature_frame(features: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Typed model input from contract values: numeric and boolean features as float (NaN when null),
    categorical as pandas categories over the spec's categories (an unknown category is NaN)."""
    columns: dict[str, Any] = {}
    for feature in spec.features:
        values = features[feature.name] if feature.name in features else pd.Series(np.nan, index=features.index)
        if feature.type is FeatureType.categorical:
            text = values.astype(object).where(values.notna(), None)
            columns[feature.name] = pd.Categorical(text, categories=list(feature.categories or []))
        elif feature.type is FeatureType.boolean:
            mapped = values.map(_boolean, na_action="ignore") if values.dtype == object else values
            columns[feature.name] = pd.to_numeric(mapped, errors="coerce").astype("float64")
        else:
            columns[feature.name] = pd.to_numeric(values, errors="coerce").astype("float64")
    return pd.DataFrame(columns, index=features.index)


def _boolean(value: Any) -> float:
    if isinstance(value, str):
        return {"true": 1.0, "false": 0.0}.get(value.lower(), np.nan)
    return float(bool(value))


def categories_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns as text with an explicit "(missing)" level, for one-hot encoding."""
    return frame.apply(lambda column: column.astype(object).where(column.notna(), "(missing)"))


# --------------------------------------------------------------------------------------------------
# Models


@dataclass
class TrainedModel:
    """A fitted estimator with what it needs to score contract features: probabilities come back in the
    spec's class order whatever order the estimator learnt them in."""

    kind: str  # lightgbm, logistic_regression, lightgbm_warm_start
    estimator: Any = field(repr=False)
    spec: ModelSpec = field(repr=False)
    classes: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.spec.classes]

    def fit(self, *args: Any, **kwargs: Any) -> TrainedModel:
        # sklearn's inspection tools want an estimator with fit(); this one is trained already
        raise NotImplementedError("a TrainedModel is fitted by driftloop.learn.training.train_candidates")

    def predict_proba(self, features: pd.DataFrame) -> np.ndarray:
        frame = feature_frame(features, self.spec)
        raw = np.asarray(self.estimator.predict_proba(frame), dtype=np.float64)
        probabilities = np.zeros((len(frame), len(self.classes)))
        for column, learnt in enumerate(self.estimator.classes_):
            probabilities[:, int(learnt)] = raw[:, column]
        return probabilities

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.classes, dtype=object)[self.predict_proba(features).argmax(axis=1)]

    def predict_frame(self, features: pd.DataFrame, probabilities: np.ndarray | None = None) -> pd.DataFrame:
        """What the served model returns: ``prediction`` and one probability column per class
        (``probabilities``: already computed ones for these rows)."""
        probabilities = self.predict_proba(features) if probabilities is None else probabilities
        frame = pd.DataFrame(probabilities, columns=self.classes, index=features.index)
        frame.insert(0, "prediction", np.asarray(self.classes, dtype=object)[probabilities.argmax(axis=1)])
        return frame

    @property
    def booster(self):
        """The LightGBM booster, for a warm start; None for other estimators."""
        return getattr(self.estimator, "booster_", None)


def _lightgbm(config, seed: int, rounds: int | None = None):
    import lightgbm as lgb

    return lgb.LGBMClassifier(
        n_estimators=rounds or config.lightgbm_max_rounds,
        learning_rate=config.lightgbm_learning_rate,
        num_leaves=config.lightgbm_num_leaves,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.9,
        reg_lambda=1.0,
        random_state=seed,
        n_jobs=2,
        verbose=-1,
    )


def _fit_lightgbm(spec, config, x_train, y_train, x_valid, y_valid, init_model=None) -> TrainedModel:
    import lightgbm as lgb

    # a warm start adds trees to a booster that has learnt most of it already: a quarter of the budget
    rounds = max(50, config.lightgbm_max_rounds // 4) if init_model is not None else None
    estimator = _lightgbm(config, config.seed, rounds)
    estimator.fit(
        x_train,
        y_train,
        eval_X=x_valid,
        eval_y=y_valid,
        init_model=init_model,
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
    )
    return TrainedModel("lightgbm_warm_start" if init_model is not None else "lightgbm", estimator, spec)


def logistic_regression_pipeline(spec: ModelSpec, seed: int):
    """Scaled numeric and boolean features (median-imputed, with missing indicators) and one-hot
    categories, into an L2-regularised logistic regression."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    numeric = [f.name for f in spec.features if f.type is not FeatureType.categorical]
    categorical = [f.name for f in spec.features if f.type is FeatureType.categorical]
    transformers = []
    if numeric:
        transformers.append((
            "numeric",
            Pipeline([("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
                      ("scale", StandardScaler())]),
            numeric,
        ))  # fmt: skip
    if categorical:
        transformers.append((
            "categorical",
            Pipeline([("text", FunctionTransformer(categories_as_text, feature_names_out="one-to-one")),
                      ("one_hot", OneHotEncoder(handle_unknown="ignore"))]),
            categorical,
        ))  # fmt: skip
    return Pipeline([
        ("encode", ColumnTransformer(transformers)),
        ("classify", LogisticRegression(C=1.0, max_iter=2000, random_state=seed)),
    ])  # fmt: skip


def _fit_logistic_regression(spec, config, x_train, y_train, x_valid, y_valid, init_model=None) -> TrainedModel:
    pipeline = logistic_regression_pipeline(spec, config.seed)
    pipeline.fit(x_train, y_train)
    return TrainedModel("logistic_regression", pipeline, spec)


# --------------------------------------------------------------------------------------------------
# Labels (the metric definitions are driftloop.core.quality's, the same as the dbt marts')


def encode_labels(labels: Sequence[Any], spec: ModelSpec) -> np.ndarray:
    index = {str(c): i for i, c in enumerate(spec.classes)}
    codes = np.array([index.get(str(label), -1) for label in labels], dtype=np.int64)
    if (codes < 0).any():
        unknown = sorted({str(label) for label, code in zip(labels, codes, strict=True) if code < 0})
        raise TrainingError(f"labels that are not classes of {spec.name}: {unknown[:5]}")
    return codes


# --------------------------------------------------------------------------------------------------
# Candidates


FITTERS: dict[str, Callable[..., TrainedModel]] = {
    "lightgbm": _fit_lightgbm,
    "logistic_regression": _fit_logistic_regression,
    "lightgbm_warm_start": _fit_lightgbm,
}


@dataclass
class CandidateResult:
    kind: str
    model: TrainedModel | None
    seconds: float
    validation: dict[str, float | None] = field(default_factory=dict)
    holdout: dict[str, float | None] = field(default_factory=dict)
    latency_ms_per_row: float | None = None
    skipped: str | None = None  # why it was not trained (e.g. no LightGBM champion to warm-start)
    params: dict[str, Any] = field(default_factory=dict)
    holdout_probabilities: np.ndarray | None = field(default=None, repr=False)  # spec class order


@dataclass
class TrainingOutcome:
    spec: ModelSpec
    data: TrainingData
    split: Split
    candidates: list[CandidateResult]
    best: CandidateResult
    importance: dict[str, dict[str, float]]
    timings: dict[str, float]
    data_hash: str
    n_original: int = 0  # the champion's own training rows mixed into the training split


def ms_per_row(predict: Callable[[pd.DataFrame], Any], features: pd.DataFrame, repeats: int = 3, rows: int = 10_000) -> float:
    """Prediction time per row: the best of ``repeats`` timed calls on the first ``rows`` rows."""
    sample = features.iloc[: min(len(features), rows)]
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        predict(sample)
        best = min(best, time.perf_counter() - started)
    return best * 1000 / max(len(sample), 1)


def paired_ms_per_row(first: Callable[[pd.DataFrame], Any], second: Callable[[pd.DataFrame], Any], features: pd.DataFrame,
                      repeats: int = 7, rows: int = 5_000) -> tuple[float, float]:  # fmt: skip
    """CPU time per row of two models' predictions on the same rows: the process's CPU time (every
    thread of a multi-threaded predict counted), not the wall clock, which on a loaded machine counts
    the other processes' turns too; timed in alternation (first, second, first, ...) and each the best
    of ``repeats``, so what remains of the machine's noise touches both alike. Wall-clock timing one
    model after the other put the ratio of one model against itself anywhere in 0.48-1.6 at a load of
    5 on 2 cores (an offline gate at 1.10 then rejects a challenger for the machine's load)."""
    sample = features.iloc[: min(len(features), rows)]
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, predict in enumerate((first, second)):
            started = time.process_time()
            predict(sample)
            best[i] = min(best[i], time.process_time() - started)
    per_row = 1000 / max(len(sample), 1)
    return best[0] * per_row, best[1] * per_row


def gain_importance(model: TrainedModel) -> dict[str, float]:
    """Each feature's share of the model's importance: LightGBM total gain; logistic regression the sum
    of absolute coefficients of the feature's encoded columns (scaled inputs, so comparable)."""
    names = [f.name for f in model.spec.features]
    if model.booster is not None:
        raw = dict(zip(model.booster.feature_name(), model.booster.feature_importance("gain"), strict=True))
        values = np.array([float(raw.get(name, 0.0)) for name in names])
    else:
        encode = model.estimator.named_steps["encode"]
        coefficients = np.abs(model.estimator.named_steps["classify"].coef_).sum(axis=0)
        encoded = encode.get_feature_names_out()
        values = np.zeros(len(names))
        for coefficient, column in zip(coefficients, encoded, strict=True):
            stem = column.split("__", 1)[1]
            for i, name in enumerate(names):
                if stem == name or stem.startswith(name + "_") or stem == f"missingindicator_{name}":
                    values[i] += coefficient
                    break
    total = values.sum()
    shares = values / total if total > 0 else values
    return {name: float(share) for name, share in zip(names, shares, strict=True)}


def permutation_importance(model: TrainedModel, features: pd.DataFrame, y_true: np.ndarray, metric: str, seed: int) -> dict[str, float]:
    """Mean drop of ``metric`` on these rows when one feature's values are shuffled (3 repeats;
    sklearn.inspection.permutation_importance over the contract features)."""
    from sklearn.inspection import permutation_importance as sklearn_permutation

    spec = model.spec

    def score(estimator: TrainedModel, x: pd.DataFrame, y: np.ndarray) -> float:
        value = quality_metrics(spec, y, estimator.predict_proba(x)).get(metric)
        if value is None:
            return 0.0
        return -value if metric in LOWER_IS_BETTER else value

    result = sklearn_permutation(model, features, y_true, scoring=score, n_repeats=3, random_state=seed, n_jobs=1)
    return {f.name: float(v) for f, v in zip(spec.features, result.importances_mean, strict=True)}


def train_candidates(
    spec: ModelSpec,
    data: TrainingData,
    *,
    champion: TrainedModel | None = None,
    original: pd.DataFrame | None = None,
    progress: Callable[[str], None] | None = None,
) -> TrainingOutcome:
    """Split, train every configured candidate, score each on validation and holdout, pick the best on
    validation (``training.selection_metric``) and compute its feature importance."""
    config = spec.retraining.training
    say = progress or (lambda message: None)
    timings: dict[str, float] = {}
    if len(data.frame) < config.min_rows:
        raise TrainingError(
            f"{len(data.frame)} labelled rows for {spec.name} between {data.start} and {data.end}; "
            f"training needs at least {config.min_rows} (retraining.training.min_rows)"
        )
    split = time_split(data.frame, config.validation_fraction, config.holdout_fraction)
    if split.validation.empty or split.holdout.empty:
        raise TrainingError(f"the time-based split of {len(data.frame)} rows left an empty validation or holdout set")
    train = split.train
    n_original = 0
    if original is not None and config.original_data_fraction > 0 and not original.empty:
        n_original = min(len(original), int(round(len(train) * config.original_data_fraction)))
        extra = original.sample(n=n_original, random_state=config.seed)
        train = pd.concat([train, extra], ignore_index=True)
    names = [f.name for f in spec.features]
    y_train, y_valid, y_hold = (encode_labels(part["label"].tolist(), spec) for part in (train, split.validation, split.holdout))
    if len(np.unique(y_train)) < 2:
        raise TrainingError("the training rows hold a single class: nothing to learn")
    x_train, x_valid = feature_frame(train[names], spec), feature_frame(split.validation[names], spec)
    results: list[CandidateResult] = []
    for kind in config.candidates:
        init_model = None
        if kind == "lightgbm_warm_start":
            if champion is None or champion.booster is None:
                results.append(CandidateResult(kind, None, 0.0, skipped="no LightGBM champion to warm-start from"))
                continue
            init_model = champion.booster
        say(f"training {kind} on {len(train)} rows")
        started = time.perf_counter()
        model = FITTERS[kind](spec, config, x_train, y_train, x_valid, y_valid, init_model=init_model)
        seconds = time.perf_counter() - started
        timings[f"train_{kind}"] = seconds
        candidate = CandidateResult(kind, model, seconds)
        candidate.validation = quality_metrics(spec, y_valid, model.predict_proba(split.validation[names]))
        candidate.holdout_probabilities = model.predict_proba(split.holdout[names])
        candidate.holdout = quality_metrics(spec, y_hold, candidate.holdout_probabilities)
        candidate.latency_ms_per_row = ms_per_row(model.predict_proba, split.holdout[names])
        if model.booster is not None:
            candidate.params = {"best_iteration": int(model.estimator.best_iteration_ or model.estimator.n_estimators)}
        results.append(candidate)
    trained = [c for c in results if c.model is not None]
    if not trained:
        raise TrainingError(f"no candidate could be trained (configured: {config.candidates})")
    metric = config.selection_metric
    best = trained[0]
    for candidate in trained[1:]:
        if is_better(metric, candidate.validation.get(metric), best.validation.get(metric)):
            best = candidate
    started = time.perf_counter()
    sample = split.validation.iloc[-config.permutation_rows :]
    importance = {
        "gain": gain_importance(best.model),
        "permutation": permutation_importance(
            best.model, sample[names], encode_labels(sample["label"].tolist(), spec), metric, config.seed
        ),
    }
    timings["importance"] = time.perf_counter() - started
    return TrainingOutcome(spec, data, split, results, best, importance, timings, data.content_hash(spec), n_original)
