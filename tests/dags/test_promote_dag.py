"""promote__churn run for real with dag.test(): a challenger no better than the champion is stopped by
the offline gate and nothing reaches live traffic; a better one goes through the gate, a canary ramp on
live traffic served by driftloop.serve.router.Router, the always-valid decision and the watch, and ends as the
registry's champion with all traffic."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import yaml

from driftloop.core.spec import load_spec
from driftloop.ingest.loader import ingest
from driftloop.learn import registry, retrain
from driftloop.monitor import dbt_runner as metrics
from driftloop.serve import router as serving
from driftloop.sim import examples
from driftloop.sim.world import FEATURE_PREFIX, ConceptDrift, Scenario, generate_predictions
from landing import land
from training_data import NOW, TRAFFIC_START, fast_spec, load_traffic, sync

pytestmark = pytest.mark.dags


def test_a_challenger_that_fails_the_offline_gate_never_gets_traffic(dagbag, warehouse_url, monkeypatch, mlflow_store):
    spec = fast_spec()
    sync(warehouse_url, spec)
    examples.bootstrap(warehouse_url, spec, rows=3000, training_end=NOW)
    champion = registry.version_by_alias("churn", "champion")
    # the same model registered again: zero AUC gain on its holdout
    twin = registry.register("churn", champion.source, champion.run_id, run_key="test/twin")
    registry.set_alias(warehouse_url, "churn", "challenger", twin.version)
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)

    run = dagbag.get_dag("promote__churn").test()

    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert run.state == "success"
    assert states == {"offline_gate": "skipped", "start_experiment": "skipped", "decide_when_ready": "skipped",
                      "watch_new_champion": "skipped"}  # fmt: skip
    with psycopg.connect(warehouse_url) as conn:
        decisions = conn.execute("select step, decision, airflow_run_id from ops.decisions").fetchall()
        experiments = conn.execute("select count(*) from ops.experiments").fetchone()[0]
        allocation = conn.execute("select count(*) from ops.traffic_allocation").fetchone()[0]
    assert decisions == [("offline_gate", "fail", run.run_id)]
    assert experiments == 0 and allocation == 0
    assert registry.version_by_alias("churn", "challenger") is None
    assert registry.version_by_alias("churn", "champion").version == champion.version


# --------------------------------------------------------------------------------------------------
# The whole promotion with live traffic


class LiveTraffic(threading.Thread):
    """The serving application while promote__churn runs: requests from the (drifted) simulated world go
    through driftloop.serve.router.Router with the registry's real models, the router's event files land in the
    landing zone, their labels follow, and each batch is ingested. It starts when the experiment's
    allocation appears and stops once the experiment and the new champion's watch are over."""

    def __init__(self, url: str, spec, root: Path, world: pd.DataFrame, batch: int = 400, max_batches: int = 40):
        super().__init__(daemon=True)
        self.url, self.spec, self.root, self.world, self.batch, self.max_batches = url, spec, root, world, batch, max_batches
        self.stopped = threading.Event()
        self.batches, self.error = 0, None
        names = [f.name for f in spec.features]
        features = world[[FEATURE_PREFIX + n for n in names]].astype(object)
        self.requests = [
            {name: (None if pd.isna(value) else value) for name, value in zip(names, row, strict=True)}
            for row in features.itertuples(index=False)
        ]

    def _state(self) -> tuple | None:
        with psycopg.connect(self.url) as conn:
            return conn.execute(
                "select status, watch_status from ops.experiments where model_name = %s", (self.spec.name,)
            ).fetchone()

    def run(self) -> None:
        try:
            while self._state() is None:  # the experiment has not started yet
                if self.stopped.wait(0.2):
                    return
            router = serving.Router(self.spec.name, self.url, landing_root=self.root, ttl_seconds=0.2)
            while not self.stopped.is_set() and self.batches < self.max_batches:
                status, watch_status = self._state()
                if status != "running" and watch_status != "watching":
                    return
                self._serve(router)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def _serve(self, router) -> None:
        start = (self.batches * self.batch) % (len(self.requests) - self.batch)
        labels = []
        for i in range(start, start + self.batch):
            event = router.predict(self.requests[i], unit_id=f"unit-{self.batches}-{i}", segment=str(self.world["segment"].iloc[i]))
            labels.append({"prediction_id": event["prediction_id"], "label": str(self.world["label"].iloc[i]),
                           "outcome": None, "feedback_ts": datetime.now(UTC).isoformat(), "source": "test"})  # fmt: skip
        router.logger.flush()
        now = datetime.now(UTC)
        land(self.root, self.spec.name, "feedback", f"labels-{self.batches:03d}.jsonl", labels, day=now.date().isoformat(), now=now)
        result = ingest(self.spec, landing_root=str(self.root), url=self.url, now=now)
        assert result.rows_rejected == 0, [f.reasons for f in result.files]
        self.batches += 1


def promotion_spec(folder: Path):
    """The churn spec with a fast training budget (LightGBM only: the candidates' prediction costs differ
    by several times), looks every second, a small ramp and a short watch; the gate's latency and
    importance checks are relaxed (timing 5,000 rows on a busy machine is noisy; a concept drift reorders
    importance)."""
    payload = fast_spec(candidates=["lightgbm"]).model_dump(mode="json")
    payload["promotion"]["offline_gate"].update({"max_latency_ratio": 3.0, "min_importance_rank_correlation": -1.0})
    payload["promotion"]["online"].update({
        # a step's guardrails are measured before the test counts labels: the canary ramps before it can decide
        "ramp_steps": [0.25, 0.5], "min_treatment_assigned_per_step": 80, "min_assigned_for_guardrails": 80,
        "min_labelled_per_arm": 250, "mixing_sd": 0.05, "max_latency_p95_ratio": 2.0, "max_error_rate_increase": 0.05,
        "poke_interval": "1s", "allocation_settle": "1s",
    })  # fmt: skip
    # the watch compares latency across time, so a busy machine moves it: only a gross regression counts here
    payload["promotion"]["watch"].update({"window": "4s", "poke_interval": "1s", "min_labelled": 100,
                                          "max_latency_p95_ratio": 5.0})  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "churn.yaml").write_text(yaml.safe_dump(payload, sort_keys=False))
    return load_spec(folder / "churn.yaml")


def test_a_better_challenger_goes_from_the_gate_through_live_traffic_to_champion(
    airflow_db, warehouse_url, mlflow_store, tmp_path, monkeypatch
):
    # GIVEN a champion trained before a concept drift, three days of drifted labelled traffic, and a
    # challenger retrained on it (what retrain__churn registers)
    spec = promotion_spec(tmp_path / "specs")
    monkeypatch.setenv("DRIFTLOOP_SPECS_DIR", str(tmp_path / "specs"))
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)
    sync(warehouse_url, spec)
    drift = ConceptDrift(TRAFFIC_START - timedelta(days=1), strength=0.6)
    past = generate_predictions(spec, 120 * 72, TRAFFIC_START, NOW, Scenario(seed=42, label_delay_mean=timedelta(hours=2), concept_drift=drift))
    past.loc[past["feedback_ts"] > NOW, "labelled"] = False
    load_traffic(warehouse_url, spec, tmp_path / "history", past, "traffic")
    examples.bootstrap(warehouse_url, spec, rows=4000, training_end=TRAFFIC_START)
    trained = retrain.run_retrain(warehouse_url, spec, run_key="test/challenger", trigger="drift", reason="concept drift",
                                  evidence={}, as_of=NOW, respect_cooldown=False)  # fmt: skip
    champion, challenger = "1", trained["model_version"]
    assert registry.version_by_alias("churn", "challenger").version == challenger

    # WHEN promote__churn runs (dag.test, deferred looks run inline) while a service routes live traffic
    live = LiveTraffic(warehouse_url, spec, tmp_path / "landing",
                       generate_predictions(spec, 4000, NOW, NOW + timedelta(hours=8), Scenario(seed=42, concept_drift=drift)))  # fmt: skip
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).get_dag("promote__churn")
    assert dag.get_task("decide_when_ready").poke_interval == timedelta(seconds=1)  # the test spec's
    live.start()
    try:
        run = dag.test()
    finally:
        live.stopped.set()
        live.join(timeout=120)
    assert live.error is None, live.error

    # THEN the gate passed, the canary ramped, the test promoted, the watch kept it: the challenger is
    # the registry's champion and gets all traffic
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    assert run.state == "success", states
    assert set(states.values()) == {"success"}, states
    assert registry.version_by_alias("churn", "champion").version == challenger
    assert registry.version_by_alias("churn", "challenger") is None
    with psycopg.connect(warehouse_url) as conn:
        allocation = conn.execute(
            "select experiment_id, champion_version, challenger_version, challenger_share from ops.traffic_allocation"
        ).fetchone()
        experiment = conn.execute("select experiment_id, status, watch_status from ops.experiments").fetchone()
        decisions = conn.execute("select step, decision, airflow_run_id from ops.decisions order by decision_id").fetchall()
        promote = conn.execute(
            "select evidence from ops.decisions where step = 'sequential_test' and decision = 'promote'"
        ).fetchone()[0]
        served = conn.execute(
            "select variant, model_version, count(*) from raw.predictions where experiment_id is not null "
            "group by 1, 2 order by 1"
        ).fetchall()
    assert allocation == (None, challenger, None, 0.0)  # nothing else serves: 100 % to the new champion
    assert experiment == (f"churn-v{champion}-vs-v{challenger}", "promoted", "passed")
    steps = [(step, decision) for step, decision, _ in decisions]
    assert steps[:2] == [("offline_gate", "pass"), ("allocation", "start")]
    assert ("allocation", "ramp") in steps and ("sequential_test", "promote") in steps
    assert steps.index(("allocation", "promoted")) > steps.index(("sequential_test", "promote"))
    assert steps[-1] == ("watch", "keep")
    assert {run_id for _, _, run_id in decisions} == {run.run_id}
    # the router served both versions, and each allocation step saw the share it was given
    assert [(variant, version) for variant, version, _ in served] == [("challenger", challenger), ("control", champion)]
    for step in promote["evidence"]["steps"]:
        assigned = step["treatment"]["n_assigned"] + step["control"]["n_assigned"]
        assert assigned > 0 and abs(step["treatment"]["n_assigned"] / assigned - step["treatment_share"]) < 0.08, step
    assert [step["treatment_share"] for step in promote["evidence"]["steps"]][:2] == [0.25, 0.5][: len(promote["evidence"]["steps"])]
    assert promote["statistics"]["arms"]["treatment"]["success_rate"] > promote["statistics"]["arms"]["control"]["success_rate"]

    # and marts.fct_experiment (dbt) tells the same story per arm, from the warehouse alone
    metrics.build(warehouse_url, select=["+fct_experiment"], target_path=tmp_path / "dbt" / "target",
                  log_path=tmp_path / "dbt" / "logs")  # fmt: skip
    with psycopg.connect(warehouse_url) as conn:
        mart = pd.DataFrame(conn.execute(
            "select arm, min(model_version), sum(n_predictions), sum(n_labelled), sum(n_correct), sum(n_failed), "
            "max(latency_p95_ms), count(*) from marts.fct_experiment where experiment_id = %s and window_size = 'day' "
            "group by arm order by arm", (experiment[0],)).fetchall(),
            columns=["arm", "model_version", "n_predictions", "n_labelled", "n_correct", "n_failed", "latency_p95_ms",
                     "n_days"]).set_index("arm")  # fmt: skip
        raw = pd.DataFrame(conn.execute(
            "select p.variant, p.latency_ms, f.label is not null, f.label = p.prediction from raw.predictions p "
            "left join raw.feedback f using (model_name, prediction_id) where p.experiment_id = %s", (experiment[0],)).fetchall(),
            columns=["arm", "latency_ms", "labelled", "correct"])  # fmt: skip
    by_arm = raw.groupby("arm")
    assert mart["model_version"].to_dict() == {"challenger": challenger, "control": champion}
    assert mart["n_predictions"].to_dict() == by_arm.size().to_dict()
    assert mart["n_labelled"].to_dict() == by_arm["labelled"].sum().to_dict()
    assert mart["n_correct"].to_dict() == by_arm["correct"].sum().to_dict()
    assert (mart["n_failed"] == 0).all()
    if (mart["n_days"] == 1).all():  # the experiment did not cross midnight (UTC): one window per arm
        expected_p95 = by_arm["latency_ms"].apply(lambda values: np.percentile(values.astype(float), 95))
        assert mart["latency_p95_ms"].to_dict() == pytest.approx(expected_p95.to_dict())


def test_stop_experiment_dag_halts_the_running_experiment_with_its_reason(dagbag, warehouse_url, monkeypatch, mlflow_store):
    from driftloop.core.spec import get_spec
    from driftloop.promote import experiments

    spec = get_spec("churn")
    sync(warehouse_url, fast_spec())
    examples.bootstrap(warehouse_url, fast_spec(), rows=2000, training_end=NOW)
    champion = registry.version_by_alias("churn", "champion")
    twin = registry.register("churn", champion.source, champion.run_id, run_key="test/stop")
    registry.set_alias(warehouse_url, "churn", "challenger", twin.version)
    experiment_id = experiments.start_experiment(warehouse_url, spec, champion.version, twin.version, now=NOW)
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", warehouse_url)
    dag = dagbag.get_dag("stop_experiment__churn")

    run = dag.test(run_conf={"reason": "rolling out a fix to the feature pipeline", "now": (NOW + timedelta(hours=2)).isoformat()})

    assert run.state == "success"
    with psycopg.connect(warehouse_url) as conn:
        status = conn.execute("select status, ended_at from ops.experiments where experiment_id = %s", (experiment_id,)).fetchone()
        reason = conn.execute("select reason from ops.decisions where decision = 'halted'").fetchone()[0]
        share = conn.execute("select challenger_share from ops.traffic_allocation").fetchone()[0]
    assert status == ("halted", NOW + timedelta(hours=2)) and share == 0.0
    assert reason.endswith(": rolling out a fix to the feature pipeline")
    assert registry.version_by_alias("churn", "challenger") is None
    again = dag.test(run_conf={"reason": "nothing runs now"})  # nothing to stop: the run says so and succeeds
    assert again.state == "success"
