"""The serving router against a real warehouse (ops.traffic_allocation), real landing files that the real
ingest loads, and a real MLflow registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from driftloop.core.spec import get_spec
from driftloop.ingest.loader import ingest
from driftloop.serve import router as serving
from driftloop.serve.events import EventLogger
from driftloop.sim import examples
from training_data import fast_spec, restore_mlflow_store, sync, use_mlflow_store

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
FEATURES = {"tenure_months": 12.0, "monthly_charges": 70.5, "support_tickets_30d": 1.0, "sessions_7d": 9.0,
            "contract_type": "monthly", "payment_method": "card", "plan": "basic", "has_partner": True}  # fmt: skip


class ConstantModel:
    """Stands in for a registered model: fixed probabilities (the router's logic is what is tested)."""

    def __init__(self, churn: float):
        self.churn = churn

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"prediction": ["churn" if self.churn >= 0.5 else "stay"] * len(frame),
                             "stay": 1 - self.churn, "churn": self.churn})  # fmt: skip


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def set_allocation(url, champion="1", challenger=None, share=0.0, experiment_id=None):
    with psycopg.connect(url) as conn:
        if experiment_id:
            conn.execute(
                "insert into ops.experiments (experiment_id, model_name, champion_version, challenger_version, strategy, status) "
                "values (%s, 'churn', %s, %s, 'canary', 'running') on conflict (experiment_id) do nothing",
                (experiment_id, champion, challenger),
            )
        conn.execute(
            """insert into ops.traffic_allocation (model_name, experiment_id, champion_version, challenger_version, challenger_share)
               values ('churn', %s, %s, %s, %s)
               on conflict (model_name) do update set experiment_id = excluded.experiment_id,
                 champion_version = excluded.champion_version, challenger_version = excluded.challenger_version,
                 challenger_share = excluded.challenger_share, updated_at = now()""",
            (experiment_id, champion, challenger, share),
        )


# ------------------------------------------------------------------------------------------------
# assignment (no services)


def test_assignment_is_sticky_uniform_and_a_ramp_keeps_earlier_units():
    units = [f"u-{i}" for i in range(100_000)]
    ten = serving.Allocation("1", "2", 0.10, "exp-1")
    quarter = serving.Allocation("1", "2", 0.25, "exp-1")
    arms_ten = np.array([serving.assign(ten, u) == serving.CHALLENGER for u in units])
    arms_quarter = np.array([serving.assign(quarter, u) == serving.CHALLENGER for u in units])
    assert abs(arms_ten.mean() - 0.10) < 0.005 and abs(arms_quarter.mean() - 0.25) < 0.006
    assert [serving.assign(ten, u) for u in units[:1000]] == [serving.assign(ten, u) for u in units[:1000]]
    assert not (arms_ten & ~arms_quarter).any()  # every unit of the 10 % stays in the 25 %
    other = np.array([serving.assign(serving.Allocation("1", "2", 0.10, "exp-2"), u) == serving.CHALLENGER for u in units])
    assert 0.005 < (arms_ten & other).mean() < 0.015  # a new experiment draws its arms afresh (~1 % overlap)
    assert serving.assign(serving.Allocation("1"), "u-1") == serving.CONTROL


# ------------------------------------------------------------------------------------------------
# the router on the warehouse


def test_the_router_follows_the_allocation_table_within_its_ttl(warehouse_url, tmp_path):
    set_allocation(warehouse_url, "1")
    clock = FakeClock()
    router = serving.Router("churn", warehouse_url, landing_root=tmp_path, ttl_seconds=30, clock=clock,
                            models={"1": ConstantModel(0.2), "2": ConstantModel(0.8)})  # fmt: skip
    assert {router.predict(FEATURES, unit_id=f"u-{i}")["variant"] for i in range(200)} == {"control"}
    set_allocation(warehouse_url, "1", "2", 0.5, "exp-ttl")
    clock.now = 29.0
    assert router.route("u-1")[0:2] == ("control", "1")  # still the cached allocation
    clock.now = 30.0
    served = [router.predict(FEATURES, unit_id=f"u-{i}") for i in range(400)]
    challenger = [e for e in served if e["variant"] == "challenger"]
    assert 120 < len(challenger) < 280
    assert {(e["model_version"], e["prediction"], e["experiment_id"]) for e in challenger} == {("2", "churn", "exp-ttl")}
    router.close()


def test_logged_events_are_contract_events_that_ingest_loads(warehouse_url, tmp_path):
    sync(warehouse_url, get_spec("churn"))
    set_allocation(warehouse_url, "1", "2", 0.3, "exp-log")
    logger = EventLogger(tmp_path, "churn", max_events=250)
    router = serving.Router("churn", warehouse_url, logger=logger, models={"1": ConstantModel(0.2), "2": ConstantModel(0.8)})
    for i in range(600):
        router.predict(FEATURES, unit_id=f"u-{i % 150}", segment="eu", request_ts=NOW - timedelta(minutes=i))
    assert len(logger.published) == 2  # 500 events published; the last 100 still in the hidden file
    router.close()
    assert len(logger.published) == 3 and not list(tmp_path.rglob(".*.tmp"))  # 250 + 250 + 100, nothing hidden left
    result = ingest(get_spec("churn"), landing_root=str(tmp_path), url=warehouse_url, now=NOW + timedelta(hours=1))
    assert result.rows_rejected == 0 and result.rows_loaded == 600
    with psycopg.connect(warehouse_url) as conn:
        arms = conn.execute(
            "select variant, model_version, experiment_id, count(distinct unit_id) from raw.predictions group by 1, 2, 3 order by 1"
        ).fetchall()
    assert [a[:3] for a in arms] == [("challenger", "2", "exp-log"), ("control", "1", "exp-log")]
    assert sum(a[3] for a in arms) == 150  # sticky: every unit in exactly one arm


def test_a_model_error_is_logged_as_a_failed_request(warehouse_url, tmp_path):
    class Broken:
        def predict(self, frame):
            raise ValueError("model file corrupt")

    router = serving.Router("churn", allocation=serving.Allocation("1"), landing_root=tmp_path, models={"1": Broken()})
    event = router.predict(FEATURES, unit_id="u-1")
    assert event["error"] == "ValueError: model file corrupt" and event["prediction"] is None and event["scores"] is None
    router.close()


class CountingModel(ConstantModel):
    def __init__(self, churn: float):
        super().__init__(churn)
        self.calls = 0

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls += 1
        return super().predict(frame)


def test_a_batch_is_routed_per_unit_predicted_once_per_arm_and_logged_like_single_requests(tmp_path):
    allocation = serving.Allocation("1", "2", 0.5, "exp-batch")
    models = {"1": CountingModel(0.2), "2": CountingModel(0.8)}
    failing = iter([None, "TimeoutError: upstream feature store"] + [None] * 1000)
    router = serving.Router("churn", allocation=allocation, landing_root=tmp_path, models=models,
                            latency=lambda version: 7.0 if version == "1" else 9.0,
                            failure=lambda version: next(failing))  # fmt: skip
    units = [f"u-{i}" for i in range(300)]
    stamps = [NOW + timedelta(seconds=i) for i in range(300)]
    rows = [dict(FEATURES, tenure_months=float(i)) for i in range(300)]
    events = router.predict_batch(rows, unit_ids=units, segments=["eu"] * 300, request_ts=stamps)
    assert (models["1"].calls, models["2"].calls) == (1, 1)  # one model call per arm, not per request
    assert [e["variant"] for e in events] == [serving.assign(allocation, u) for u in units]
    assert [e["features"]["tenure_months"] for e in events] == [float(i) for i in range(300)]
    failed = [e for e in events if e["error"] is not None]
    assert [e["error"] for e in failed] == ["TimeoutError: upstream feature store"]
    assert failed[0]["prediction"] is None and failed[0]["scores"] is None
    ok = [e for e in events if e["error"] is None]
    assert {(e["variant"], e["prediction"], e["latency_ms"]) for e in ok} == {("control", "stay", 7.0), ("challenger", "churn", 9.0)}
    seen = {}
    skewed = serving.Router("churn", allocation=serving.Allocation("1"), landing_root=tmp_path / "skew", models=models,
                            transform=lambda version, frame: seen.setdefault(version, frame.assign(tenure_months=-1.0)))  # fmt: skip
    logged = skewed.predict_batch(rows[:3], unit_ids=units[:3])
    assert seen["1"]["tenure_months"].tolist() == [-1.0] * 3  # the model got the transformed features
    assert [e["features"]["tenure_months"] for e in logged] == [0.0, 1.0, 2.0]  # the log keeps what was sent
    skewed.close()
    single = serving.Router("churn", allocation=allocation, landing_root=tmp_path / "single", models=models,
                            latency=lambda version: 7.0 if version == "1" else 9.0)  # fmt: skip
    k = events.index(ok[0])
    alone = single.predict(rows[k], unit_id=units[k], segment="eu", request_ts=stamps[k], prediction_id=events[k]["prediction_id"])
    assert alone == events[k]
    typed = pd.DataFrame(rows[:4]).astype({"contract_type": "category", "has_partner": "boolean", "sessions_7d": "int64"})
    typed.loc[1, "has_partner"] = pd.NA
    seen = {}
    probe = serving.Router("churn", allocation=serving.Allocation("1"), landing_root=tmp_path / "typed", models=models,
                           transform=lambda version, frame: seen.setdefault(version, frame))  # fmt: skip
    logged = probe.predict_batch(typed, unit_ids=units[:4])
    assert {str(t) for t in seen["1"][["contract_type", "has_partner"]].dtypes} == {"object"}  # what MLflow's schema takes
    assert str(seen["1"]["sessions_7d"].dtype) == "float64"
    assert [e["features"]["has_partner"] for e in logged] == [True, None, True, True]
    assert [e["features"]["contract_type"] for e in logged] == ["monthly"] * 4
    probe.close()
    with pytest.raises(ValueError, match="one entry per row"):
        router.predict_batch(rows[:3], unit_ids=units[:2])
    router.close()
    single.close()


def test_a_single_request_is_typed_logged_and_served_exactly_as_a_batch_of_one(tmp_path):
    # predict() builds the one-row input without pandas' per-column typing: every kind of value a caller
    # may send must reach the model in the same dtypes and be logged the same as through predict_batch
    odd = [
        {},  # every feature missing
        dict(FEATURES, tenure_months=None, contract_type=None, has_partner=None),
        dict(FEATURES, tenure_months=float("nan"), plan=float("nan"), monthly_charges=float("inf")),
        dict(FEATURES, tenure_months=True, sessions_7d=7, support_tickets_30d=2**70, has_partner=False),
        dict(FEATURES, contract_type=3, plan=2.5, payment_method=True, extra_field="ignored"),
        dict(FEATURES, tenure_months="12", sessions_7d=np.int64(4), has_partner=np.bool_(True)),  # pandas' typing
        dict(FEATURES, tenure_months="not a number", contract_type=pd.NA),
    ]
    seen: dict[str, list[pd.DataFrame]] = {"single": [], "batch": []}

    def router(kind):
        return serving.Router("churn", allocation=serving.Allocation("1"), landing_root=tmp_path / kind,
                              models={"1": ConstantModel(0.3)}, latency=lambda version: 5.0,
                              transform=lambda version, frame: seen[kind].append(frame) or frame)  # fmt: skip

    single, batch = router("single"), router("batch")
    for k, features in enumerate(odd):
        options = {"unit_id": f"u-{k}", "segment": "eu", "prediction_id": f"p-{k}", "request_ts": NOW}
        alone = single.predict(features, **options)
        together = batch.predict_batch([features], unit_ids=[f"u-{k}"], segments=["eu"], prediction_ids=[f"p-{k}"],
                                       request_ts=[NOW])[0]  # fmt: skip
        assert alone == together, features
        pd.testing.assert_frame_equal(seen["single"][k], seen["batch"][k])
    assert alone["features"]["tenure_months"] is None and alone["features"]["contract_type"] is None
    assert seen["single"][3]["support_tickets_30d"].tolist() == [float(2**70)]
    single.close()
    batch.close()


def test_one_running_experiment_per_model_is_enforced_by_the_database(warehouse_url):
    set_allocation(warehouse_url, "1", "2", 0.1, "exp-a")
    with pytest.raises(psycopg.errors.UniqueViolation):
        set_allocation(warehouse_url, "1", "3", 0.1, "exp-b")


# ------------------------------------------------------------------------------------------------
# with the registry


def test_the_router_serves_the_registered_champion(warehouse_url, tmp_path):
    previous = use_mlflow_store(tmp_path / "mlflow")
    try:
        spec = fast_spec()
        sync(warehouse_url, spec)
        examples.bootstrap(warehouse_url, spec, rows=2000, training_end=NOW - timedelta(days=1))
        router = serving.Router("churn", warehouse_url, landing_root=tmp_path / "landing")  # no allocation row yet
        event = router.predict(FEATURES, unit_id="u-1")
        from driftloop.learn import registry

        expected = registry.load_model("churn", "champion").predict(pd.DataFrame([FEATURES]))
        assert event["variant"] == "control" and event["model_version"] == "1" and event["experiment_id"] is None
        assert event["prediction"] == expected["prediction"].iloc[0]
        assert event["scores"]["churn"] == round(float(expected["churn"].iloc[0]), 6)
        router.close()
    finally:
        restore_mlflow_store(previous)
