"""Training a challenger: the data (labelled predictions from the warehouse), the time-based split,
the candidates (LightGBM, a regularised logistic regression, a warm start of the champion), their
evaluation and feature importance. No MLflow and no Airflow here (see driftloop.retrain).

A model takes the features as the prediction contract carries them (one column per spec feature:
numbers, strings, booleans, nulls) and returns class probabilities in the spec's class order.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from driftloop.spec import LOWER_IS_BETTER, FeatureType, ModelSpec, Task


class TrainingError(RuntimeError):
    """Training cannot produce a model from this data (too few rows, one class only, ...)."""


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
        raise NotImplementedError("a TrainedModel is fitted by driftloop.training.train_candidates")

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
# Metrics (the same definitions as the dbt marts)


def encode_labels(labels: Sequence[Any], spec: ModelSpec) -> np.ndarray:
    index = {str(c): i for i, c in enumerate(spec.classes)}
    codes = np.array([index.get(str(label), -1) for label in labels], dtype=np.int64)
    if (codes < 0).any():
        unknown = sorted({str(label) for label, code in zip(labels, codes, strict=True) if code < 0})
        raise TrainingError(f"labels that are not classes of {spec.name}: {unknown[:5]}")
    return codes


def expected_calibration_error(correct: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> float:
    """Top-label ECE over equal-width bins [0, 0.1), ..., [0.9, 1.0] (as the marts compute it)."""
    bins = np.minimum((confidence * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() / len(confidence) * abs(correct[mask].mean() - confidence[mask].mean())
    return float(total)


def quality_metrics(spec: ModelSpec, y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float | None]:
    """Accuracy, precision, recall, F1 (binary: positive class; multiclass: macro), ROC AUC
    (multiclass: one-vs-rest macro), log loss, Brier, ECE, positive rate. None where undefined."""
    from sklearn import metrics

    n_classes = len(spec.classes)
    predicted = probabilities.argmax(axis=1)
    result: dict[str, float | None] = {"n": float(len(y_true))}
    if len(y_true) == 0:
        return result
    labels = list(range(n_classes))
    result["accuracy"] = float(metrics.accuracy_score(y_true, predicted))
    result["log_loss"] = float(metrics.log_loss(y_true, np.clip(probabilities, 1e-15, 1), labels=labels))
    confidence = probabilities.max(axis=1)
    result["ece"] = expected_calibration_error((predicted == y_true).astype(float), confidence)
    present = np.unique(y_true)
    if spec.task is Task.binary:
        positive = [str(c) for c in spec.classes].index(str(spec.positive_class))
        truth = (y_true == positive).astype(int)
        guess = (predicted == positive).astype(int)
        result["precision"] = float(metrics.precision_score(truth, guess, zero_division=np.nan))
        result["recall"] = float(metrics.recall_score(truth, guess, zero_division=np.nan))
        result["f1"] = float(metrics.f1_score(truth, guess, zero_division=np.nan))
        result["brier"] = float(metrics.brier_score_loss(truth, probabilities[:, positive]))
        result["roc_auc"] = float(metrics.roc_auc_score(truth, probabilities[:, positive])) if len(present) == 2 else None
        result["positive_rate"] = float(guess.mean())
    else:
        kwargs = {"labels": labels, "average": "macro", "zero_division": np.nan}
        result["precision"] = float(metrics.precision_score(y_true, predicted, **kwargs))
        result["recall"] = float(metrics.recall_score(y_true, predicted, **kwargs))
        result["f1"] = float(metrics.f1_score(y_true, predicted, **kwargs))
        one_hot = np.eye(n_classes)[y_true]
        result["brier"] = float(((one_hot - probabilities) ** 2).sum(axis=1).mean())
        result["roc_auc"] = (
            float(metrics.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro", labels=labels))
            if len(present) == n_classes
            else None
        )
    return {k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else v) for k, v in result.items()}


def is_better(metric: str, candidate: float | None, incumbent: float | None) -> bool:
    if candidate is None:
        return False
    if incumbent is None:
        return True
    return candidate < incumbent if metric in LOWER_IS_BETTER else candidate > incumbent


# --------------------------------------------------------------------------------------------------
# Data


@dataclass
class TrainingData:
    """Labelled rows, newest last: ``prediction_id``, ``request_ts``, ``model_version``, ``segment``,
    ``label``, one column per feature (contract values), plus where they came from."""

    frame: pd.DataFrame
    source: str  # warehouse, simulated
    query: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    labels_loaded_until: datetime | None = None

    def content_hash(self, spec: ModelSpec) -> str:
        """sha256 over ids, request times, labels and features: the data version."""
        columns = ["prediction_id", "request_ts", "label", *[f.name for f in spec.features]]
        hashed = pd.util.hash_pandas_object(self.frame[columns].astype(str), index=False).to_numpy()
        return hashlib.sha256(hashed.tobytes()).hexdigest()


def _feature_sql(spec: ModelSpec):
    from psycopg import sql

    parts = []
    for feature in spec.features:
        value = sql.SQL("predictions.event -> 'features' ->> {}").format(sql.Literal(feature.name))
        if feature.type is FeatureType.numeric:
            value = sql.SQL("cast({} as double precision)").format(value)
        elif feature.type is FeatureType.boolean:
            value = sql.SQL("cast({} as boolean)").format(value)
        parts.append(sql.SQL("{} as {}").format(value, sql.Identifier(feature.name)))
    return sql.SQL(", ").join(parts)


def training_query(spec: ModelSpec, start: datetime, end: datetime, max_rows: int):
    """Labelled, successfully served predictions of ``spec`` requested in [start, end), the newest
    ``max_rows``; the label is the latest feedback (a later feedback_ts is a correction)."""
    from psycopg import sql

    return sql.SQL(
        """
        with labels as (
            -- one sort of the model's feedback (a hash join then), not an index probe per prediction
            select distinct on (feedback.prediction_id) feedback.prediction_id, feedback.label
            from raw.feedback as feedback
            where feedback.model_name = {model}
            order by feedback.prediction_id, feedback.feedback_ts desc
        )
        select predictions.prediction_id, predictions.request_ts, predictions.model_version,
            predictions.segment, labels.label, {features}
        from raw.predictions as predictions
        inner join labels on labels.prediction_id = predictions.prediction_id
        where predictions.model_name = {model}
            and predictions.request_ts >= {start} and predictions.request_ts < {end}
            and predictions.error is null
        order by predictions.request_ts desc, predictions.prediction_id
        limit {limit}
        """
    ).format(
        features=_feature_sql(spec), model=sql.Literal(spec.name), start=sql.Literal(start),
        end=sql.Literal(end), limit=sql.Literal(max_rows),
    )  # fmt: skip


def load_training_data(url: str, spec: ModelSpec, start: datetime, end: datetime, max_rows: int) -> TrainingData:
    """Read the labelled rows in one repeatable-read snapshot (COPY, parsed by Arrow), together with the
    newest feedback ``loaded_at`` that snapshot holds: labels loaded after it are new to this training."""
    import psycopg
    import pyarrow as pa
    from pyarrow import csv

    query = training_query(spec, start, end, max_rows)
    buffer = io.BytesIO()
    with psycopg.connect(url) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            # one pass over each side: right after a big load the planner's row estimates can be stale
            # (autovacuum has not analyzed yet) and a nested loop over a million rows never ends
            conn.execute("set local enable_nestloop = off")
            conn.execute("set local work_mem = '256MB'")
            text = query.as_string(conn)
            with conn.cursor().copy(f"copy ({text}) to stdout with (format csv, header)") as copy:
                for block in copy:
                    buffer.write(block)
            loaded_until = conn.execute(
                "select max(loaded_at) from raw.feedback where model_name = %s", (spec.name,)
            ).fetchone()[0]
    buffer.seek(0)
    types = {"prediction_id": pa.string(), "model_version": pa.string(), "segment": pa.string(), "label": pa.string()}
    for feature in spec.features:
        types[feature.name] = {
            FeatureType.numeric: pa.float64(), FeatureType.boolean: pa.bool_(), FeatureType.categorical: pa.string(),
        }[feature.type]  # fmt: skip
    table = csv.read_csv(
        buffer,
        convert_options=csv.ConvertOptions(column_types=types, strings_can_be_null=True, true_values=["t"], false_values=["f"]),
    )
    frame = table.to_pandas()
    frame["request_ts"] = pd.to_datetime(frame["request_ts"], utc=True, format="ISO8601")
    frame = frame.sort_values(["request_ts", "prediction_id"], kind="stable").reset_index(drop=True)
    return TrainingData(frame, "warehouse", " ".join(text.split()), start, end, loaded_until)


def simulated_training_data(spec: ModelSpec, rows: int, start: datetime, end: datetime, seed: int) -> TrainingData:
    """Training rows drawn from the simulator's world (the example model's "original" data): every row
    labelled with its true class."""
    from driftloop.simulate import FEATURE_PREFIX, Scenario, generate_predictions

    generated = generate_predictions(spec, rows, start, end, Scenario(seed=seed))
    frame = pd.DataFrame({
        "prediction_id": generated["prediction_id"],
        "request_ts": generated["request_ts"],
        "model_version": None,
        "segment": generated["segment"].astype(object) if "segment" in generated else None,
        "label": generated["label"].astype(str),
    })  # fmt: skip
    for feature in spec.features:
        column = generated[FEATURE_PREFIX + feature.name]
        frame[feature.name] = column.astype(object).where(column.notna(), None) if feature.type is not FeatureType.numeric else column
    return TrainingData(frame, "simulated", None, start, end, None)


@dataclass
class Split:
    train: pd.DataFrame
    validation: pd.DataFrame
    holdout: pd.DataFrame

    def describe(self) -> dict[str, Any]:
        def bounds(part: pd.DataFrame) -> dict[str, Any]:
            if part.empty:
                return {"rows": 0, "start": None, "end": None}
            return {"rows": len(part), "start": part["request_ts"].min().isoformat(), "end": part["request_ts"].max().isoformat()}

        return {"train": bounds(self.train), "validation": bounds(self.validation), "holdout": bounds(self.holdout)}


def time_split(frame: pd.DataFrame, validation_fraction: float, holdout_fraction: float) -> Split:
    """Oldest rows train, then validation, newest holdout, cut on request_ts so that every validation row
    is strictly newer than every training row and every holdout row strictly newer than both (rows with
    the same timestamp never straddle a cut)."""
    ordered = frame.sort_values(["request_ts", "prediction_id"], kind="stable").reset_index(drop=True)
    ts = ordered["request_ts"].to_numpy()
    n = len(ordered)

    def cut(share_after: float) -> int:
        position = int(round(n * (1 - share_after)))
        position = min(max(position, 0), n)
        # move the cut back to the first row of its timestamp, so equal timestamps stay together
        return int(np.searchsorted(ts, ts[position], side="left")) if position < n else n

    holdout_at = cut(holdout_fraction)
    validation_at = min(cut(holdout_fraction + validation_fraction), holdout_at)
    return Split(ordered.iloc[:validation_at], ordered.iloc[validation_at:holdout_at], ordered.iloc[holdout_at:])


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
