"""The live experiment against a real warehouse and a real MLflow registry: traffic served by the router,
landed and ingested, labels arriving, looks deciding, aliases and the allocation following.

The models here are stubs that are right with a known probability (they read the true class from a
feature the test plants), so the arms' accuracies are known; the router, the files, ingest, the
evidence queries, the decision and the registry are the real ones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest
from typer.testing import CliRunner

from driftloop.cli import app
from driftloop.core.spec import ModelSpec, get_spec
from driftloop.ingest.loader import ingest
from driftloop.learn import registry
from driftloop.promote import experiments
from driftloop.serve import router as serving
from driftloop.serve.events import EventLogger
from landing import land
from training_data import restore_mlflow_store, sync, use_mlflow_store


def started(url: str) -> datetime:
    """When the latest experiment started (traffic of an experiment comes after its start)."""
    with psycopg.connect(url) as conn:
        return conn.execute("select max(started_at) from ops.experiments").fetchone()[0]


class RightWithProbability:
    """Predicts the class planted in `tenure_months` (1 = churn) with probability `accuracy`."""

    def __init__(self, accuracy: float, seed: int):
        self.accuracy, self.rng = accuracy, np.random.default_rng(seed)

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        truth = "churn" if frame["tenure_months"].iloc[0] == 1 else "stay"
        right = self.rng.random() < self.accuracy
        predicted = truth if right else ("stay" if truth == "churn" else "churn")
        churn = 0.8 if predicted == "churn" else 0.2
        return pd.DataFrame({"prediction": [predicted], "stay": [1 - churn], "churn": [churn]})


def experiment_spec(**online) -> ModelSpec:
    payload = get_spec("churn").model_dump(mode="json")
    payload["promotion"]["online"].update({
        "ramp_steps": [0.5], "min_labelled_per_arm": 100, "min_assigned_for_guardrails": 100,
        "min_treatment_assigned_per_step": 100, "max_latency_p95_ratio": 50.0, "max_error_rate_increase": 0.5,
        "mixing_sd": 0.1, **online,
    })  # fmt: skip
    return ModelSpec.model_validate(payload)


@pytest.fixture
def world(warehouse_url, tmp_path):
    """Versions 1 (champion) and 2 (challenger) registered in a fresh MLflow store."""
    previous = use_mlflow_store(tmp_path / "mlflow")
    try:
        client = registry.client()
        client.create_registered_model("churn")
        for version in ("1", "2", "3"):
            (tmp_path / f"model-{version}").mkdir()
            client.create_model_version("churn", source=(tmp_path / f"model-{version}").as_uri())
        registry.set_alias(warehouse_url, "churn", "champion", "1")
        registry.set_alias(warehouse_url, "churn", "challenger", "2")
        sync(warehouse_url, get_spec("churn"))
        yield warehouse_url, tmp_path
    finally:
        restore_mlflow_store(previous)


def serve_and_label(url: str, root, spec: ModelSpec, accuracies: dict[str, float], n: int = 1200, seed: int = 1,
                    start: datetime | None = None, outcomes: dict | None = None) -> None:  # fmt: skip
    """n requests from n units through the router (stub models), from ``start`` (default: a minute after
    the experiment started), their labels a few minutes later, ingested. Latencies are seeded lognormal
    noise around 10 ms in every arm, never the machine's: a loaded machine must not move a guardrail.
    ``outcomes`` maps a version to a function of a random generator giving the feedback's outcome."""
    rng = np.random.default_rng(seed)
    latency_rng = np.random.default_rng(seed + 1000)
    start = start or started(url) + timedelta(minutes=1)
    logger = EventLogger(root, "churn", max_events=100_000)
    models = {version: RightWithProbability(accuracy, seed + i) for i, (version, accuracy) in enumerate(accuracies.items())}
    router = serving.Router("churn", url, logger=logger, models=models,
                            latency=lambda version: float(latency_rng.lognormal(np.log(10.0), 0.5)))  # fmt: skip
    feedback = []
    for i in range(n):
        truth = "churn" if rng.random() < 0.3 else "stay"
        features = {"tenure_months": 1.0 if truth == "churn" else 0.0, "monthly_charges": 50.0, "support_tickets_30d": 0.0,
                    "sessions_7d": 3.0, "contract_type": "monthly", "payment_method": "card", "plan": "basic"}  # fmt: skip
        at = start + timedelta(seconds=2 * i)
        event = router.predict(features, unit_id=f"u-{seed}-{i}", request_ts=at)
        outcome = (outcomes or {}).get(event["model_version"])
        feedback.append({"prediction_id": event["prediction_id"], "label": truth,
                         "outcome": None if outcome is None else outcome(rng),
                         "feedback_ts": (at + timedelta(minutes=5)).isoformat(), "source": "test"})  # fmt: skip
    router.close()
    land(root, "churn", "feedback", f"labels-{seed}.jsonl", feedback, day=start.date().isoformat(), now=start + timedelta(hours=2))
    result = ingest(spec, landing_root=str(root), url=url, now=start + timedelta(hours=2))
    assert result.rows_rejected == 0, [f.reasons for f in result.files]


def state(url: str) -> dict:
    with psycopg.connect(url) as conn:
        allocation = conn.execute(
            "select experiment_id, champion_version, challenger_version, challenger_share from ops.traffic_allocation"
        ).fetchone()
        statuses = conn.execute("select experiment_id, status from ops.experiments order by started_at").fetchall()
        watches = conn.execute("select watch_status from ops.experiments order by started_at").fetchall()
        steps = conn.execute("select step, decision from ops.decisions order by decision_id").fetchall()
    champion = registry.version_by_alias("churn", "champion")
    challenger = registry.version_by_alias("churn", "challenger")
    return {"allocation": allocation, "experiments": statuses, "decisions": steps, "watch": [w[0] for w in watches],
            "champion": champion.version if champion else None, "challenger": challenger.version if challenger else None}  # fmt: skip


def test_a_better_challenger_is_promoted_and_gets_all_traffic(world):
    url, tmp = world
    spec = experiment_spec()
    experiment_id = experiments.start_experiment(url, spec, "1", "2")
    assert experiments.start_experiment(url, spec, "1", "2") == experiment_id  # idempotent
    assert state(url)["allocation"] == (experiment_id, "1", "2", 0.5)
    serve_and_label(url, tmp / "landing", spec, {"1": 0.70, "2": 0.92})

    decision = experiments.step_experiment(url, spec, as_of=started(url) + timedelta(hours=3))

    assert decision.action == "promote", decision.reason
    after = state(url)
    assert after["champion"] == "2" and after["challenger"] is None
    assert after["allocation"] == (None, "2", None, 0.0)  # 100 % to the new champion
    assert after["experiments"] == [(experiment_id, "promoted")]
    assert after["decisions"] == [("allocation", "start"), ("sequential_test", "promote"), ("allocation", "promoted")]
    with psycopg.connect(url) as conn:
        evidence = conn.execute("select evidence from ops.decisions where step = 'sequential_test'").fetchone()[0]
        alerts = conn.execute("select summary from ops.alerts where source = 'promote' order by alert_id").fetchall()
    step = evidence["evidence"]["steps"][0]
    assert step["treatment"]["n_labelled"] > 400 and step["control"]["n_labelled"] > 400
    assert abs(step["treatment"]["successes"] / step["treatment"]["n_labelled"] - 0.92) < 0.05
    assert [a[0].rsplit(": ", 1)[1] for a in alerts] == ["start", "promote"]
    assert experiments.step_experiment(url, spec) is None  # nothing runs anymore


def test_a_worse_challenger_is_rejected_and_the_champion_keeps_everything(world):
    url, tmp = world
    spec = experiment_spec()
    experiment_id = experiments.start_experiment(url, spec, "1", "2")
    serve_and_label(url, tmp / "landing", spec, {"1": 0.90, "2": 0.60})

    decision = experiments.step_experiment(url, spec, as_of=started(url) + timedelta(hours=3))

    assert decision.action == "reject", decision.reason
    after = state(url)
    assert after["champion"] == "1" and after["challenger"] is None
    assert after["allocation"] == (None, "1", None, 0.0)
    assert after["experiments"] == [(experiment_id, "rejected")]


def test_outcome_rate_gathers_conversions_per_arm_and_promotes_on_them(world):
    # GIVEN an experiment on the conversion rate (promotion.online.metric: outcome_rate) where both versions
    # are as accurate, but the challenger's users convert 40 % of the time against 20 %
    url, tmp = world
    spec = experiment_spec(metric="outcome_rate")
    experiments.start_experiment(url, spec, "1", "2")
    conversions = {"1": lambda rng: float(rng.random() < 0.20), "2": lambda rng: float(rng.random() < 0.40)}
    serve_and_label(url, tmp / "landing", spec, {"1": 0.80, "2": 0.80}, outcomes=conversions)
    as_of = started(url) + timedelta(hours=3)

    # WHEN the evidence is gathered from the warehouse and decided
    evidence = experiments.gather_evidence(url, spec, experiments.running_experiment(url, "churn"), as_of)
    decision = experiments.step_experiment(url, spec, as_of=as_of)

    # THEN each arm's conversions are what the warehouse holds, and the decision promotes on them, saying so
    with psycopg.connect(url) as conn:
        truth = dict(conn.execute(
            "select p.variant, count(*) filter (where f.outcome > 0) from raw.predictions p "
            "join raw.feedback f using (model_name, prediction_id) group by p.variant").fetchall())  # fmt: skip
    assert (evidence.control.outcome_positive, evidence.treatment.outcome_positive) == (truth["control"], truth["challenger"])
    assert evidence.treatment.n_outcomes == evidence.treatment.n_predictions  # every request got its outcome
    assert decision.action == "promote", decision.reason
    metric = decision.statistics["metric"]
    assert metric["name"] == "outcome_rate"
    assert metric["treatment"]["value"] == pytest.approx(truth["challenger"] / evidence.treatment.n_outcomes)
    assert f"conversion {metric['treatment']['value']:.2%} vs {metric['control']['value']:.2%}" in decision.reason


def test_outcome_mean_gathers_sums_per_arm_decides_and_fct_experiment_shows_the_same_numbers(world):
    # GIVEN an experiment on the mean outcome (revenue, lognormal) where the challenger's is 60 % higher
    url, tmp = world
    spec = experiment_spec(metric="outcome_mean", mixing_sd=2.0)
    experiments.start_experiment(url, spec, "1", "2")
    revenue = {"1": lambda rng: float(rng.lognormal(np.log(10.0), 0.5)),
               "2": lambda rng: float(rng.lognormal(np.log(16.0), 0.5))}  # fmt: skip
    serve_and_label(url, tmp / "landing", spec, {"1": 0.80, "2": 0.80}, outcomes=revenue)
    as_of = started(url) + timedelta(hours=3)

    # WHEN the evidence is gathered and decided, and the marts are built
    evidence = experiments.gather_evidence(url, spec, experiments.running_experiment(url, "churn"), as_of)
    decision = experiments.step_experiment(url, spec, as_of=as_of)
    from driftloop.monitor.dbt_runner import build

    build(url, as_of=as_of, select=["+fct_experiment"], target_path=tmp / "dbt-target", log_path=tmp / "dbt-logs")

    # THEN the sums are the warehouse's, the decision promotes with the means in its reason, and the mart
    # shows the experiment's primary metric per arm with the numbers the decision used
    with psycopg.connect(url) as conn:
        truth = {row[0]: row[1:] for row in conn.execute(
            "select p.variant, count(f.outcome), sum(f.outcome), sum(f.outcome * f.outcome) from raw.predictions p "
            "join raw.feedback f using (model_name, prediction_id) group by p.variant")}  # fmt: skip
        mart = {row[0]: row[1:] for row in conn.execute(
            "select arm, primary_metric, primary_metric_value, primary_metric_n, outcome_sd from marts.fct_experiment "
            "where window_size = 'day'")}  # fmt: skip
    for arm in (evidence.control, evidence.treatment):
        n, total, squares = truth["control" if arm is evidence.control else "challenger"]
        assert arm.metric_counts("outcome_mean") == (n, pytest.approx(total), pytest.approx(squares))
    assert decision.action == "promote", decision.reason
    metric = decision.statistics["metric"]
    assert f"mean outcome {metric['treatment']['value']:.4g} vs {metric['control']['value']:.4g}" in decision.reason
    for arm, name in (("challenger", "treatment"), ("control", "control")):
        primary, value, n, sd = mart[arm]
        assert (primary, n) == ("outcome_mean", metric[name]["n"])
        assert value == pytest.approx(metric[name]["value"]) and sd == pytest.approx(metric[name]["sd"])


def test_a_person_stops_the_experiment_with_a_reason_and_the_champion_gets_everything_back(world):
    url, tmp = world
    spec = experiment_spec()
    experiment_id = experiments.start_experiment(url, spec, "1", "2")
    with pytest.raises(ValueError, match="needs a reason"):
        experiments.stop_experiment(url, spec, reason="  ")
    assert state(url)["experiments"] == [(experiment_id, "running")]  # a refused stop changes nothing
    at = started(url) + timedelta(hours=1)

    stopped = experiments.stop_experiment(url, spec, reason="the serving team found a bug in v2", by="alice", as_of=at)

    assert stopped["experiment_id"] == experiment_id
    after = state(url)
    assert after["experiments"] == [(experiment_id, "halted")] and after["allocation"] == (None, "1", None, 0.0)
    assert after["champion"] == "1" and after["challenger"] is None
    with psycopg.connect(url) as conn:
        reason, decided_at = conn.execute(
            "select reason, decided_at from ops.decisions where step = 'allocation' and decision = 'halted'"
        ).fetchone()
        alert = conn.execute("select severity, summary from ops.alerts where source = 'promote' order by alert_id desc").fetchone()
    assert reason == "stopped by alice: the serving team found a bug in v2" and decided_at == at
    assert alert == ("warning", f"churn experiment {experiment_id}: halt")
    assert experiments.stop_experiment(url, spec, reason="again") is None  # nothing runs anymore
    assert experiments.step_experiment(url, spec) is None


def test_stop_experiment_on_the_command_line(world, monkeypatch):
    url, _ = world
    monkeypatch.setenv("DRIFTLOOP_WAREHOUSE_URL", url)
    experiment_id = experiments.start_experiment(url, experiment_spec(), "1", "2")
    refused = CliRunner().invoke(app, ["stop-experiment", "--model", "churn", "--reason", ""])
    assert refused.exit_code != 0 and "needs a reason" in refused.output
    done = CliRunner().invoke(app, ["stop-experiment", "--model", "churn", "--reason", "wrong features", "--by", "bob"])
    assert done.exit_code == 0, done.output
    assert f"experiment {experiment_id} stopped; version 1 serves all traffic" in done.output
    assert state(url)["experiments"] == [(experiment_id, "halted")]
    again = CliRunner().invoke(app, ["stop-experiment", "--model", "churn", "--reason", "again"])
    assert "no experiment is running" in again.output


def test_a_crash_between_the_alias_and_the_allocation_is_repaired_by_the_next_look(world, monkeypatch):
    url, tmp = world
    spec = experiment_spec()
    experiment_id = experiments.start_experiment(url, spec, "1", "2")
    serve_and_label(url, tmp / "landing", spec, {"1": 0.70, "2": 0.92})
    real_finish = experiments._finish

    def die(*args, **kwargs):
        raise ConnectionError("worker killed after the alias moved")

    monkeypatch.setattr(experiments, "_finish", die)
    with pytest.raises(ConnectionError):
        experiments.step_experiment(url, spec, as_of=started(url) + timedelta(hours=3))
    broken = state(url)
    assert broken["champion"] == "2" and broken["allocation"] == (experiment_id, "1", "2", 0.5)  # inconsistent
    assert broken["experiments"] == [(experiment_id, "running")]

    monkeypatch.setattr(experiments, "_finish", real_finish)
    assert experiments.step_experiment(url, spec, as_of=started(url) + timedelta(hours=4)) is None  # repaired, then nothing runs
    repaired = state(url)
    assert repaired["champion"] == "2" and repaired["allocation"] == (None, "2", None, 0.0)
    assert repaired["experiments"] == [(experiment_id, "promoted")]


def test_a_stated_clock_starts_the_experiment_and_dates_every_decision(world):
    # GIVEN a run that states its clock (a replay, a simulation) two weeks before the wall clock
    url, tmp = world
    spec = experiment_spec()
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(days=14)
    experiment_id = experiments.start_experiment(url, spec, "1", "2", now=now)
    assert started(url) == now  # the experiment starts at the stated clock, not the database's
    serve_and_label(url, tmp / "landing", spec, {"1": 0.70, "2": 0.92}, start=now + timedelta(minutes=1))
    # WHEN the look at now + 3 h decides
    decision = experiments.step_experiment(url, spec, as_of=now + timedelta(hours=3))
    # THEN every decision is dated by the clock of the step that made it, and the traffic counted
    assert decision.action == "promote", decision.reason
    with psycopg.connect(url) as conn:
        dated = conn.execute("select step, decision, decided_at from ops.decisions where experiment_id = %s "
                             "order by decision_id", (experiment_id,)).fetchall()  # fmt: skip
        ended = conn.execute("select ended_at from ops.experiments where experiment_id = %s", (experiment_id,)).fetchone()[0]
    assert dated == [("allocation", "start", now), ("sequential_test", "promote", now + timedelta(hours=3)),
                     ("allocation", "promoted", now + timedelta(hours=3))]  # fmt: skip
    assert ended == now + timedelta(hours=3)


def test_one_experiment_per_model_at_a_time(world):
    url, _ = world
    spec = experiment_spec()
    experiments.start_experiment(url, spec, "1", "2")
    with pytest.raises(experiments.ExperimentConflict, match="still running"):
        experiments.start_experiment(url, spec, "1", "3")


def test_too_few_labels_continue_at_the_first_canary_step(world):
    url, tmp = world
    spec = experiment_spec(min_labelled_per_arm=5000)
    experiments.start_experiment(url, spec, "1", "2")
    serve_and_label(url, tmp / "landing", spec, {"1": 0.7, "2": 0.9}, n=300)
    decision = experiments.step_experiment(url, spec, as_of=started(url) + timedelta(hours=3))
    assert decision.action == "continue"
    assert state(url)["allocation"][3] == 0.5 and state(url)["champion"] == "1"


def test_status_shows_the_running_experiment_its_estimate_and_the_decisions_in_100_columns(world):
    url, tmp = world
    spec = experiment_spec(min_labelled_per_arm=5000)
    experiment_id = experiments.start_experiment(url, spec, "1", "2")
    serve_and_label(url, tmp / "landing", spec, {"1": 0.7, "2": 0.9}, n=300)
    experiments.step_experiment(url, spec, as_of=started(url) + timedelta(hours=3))

    printed = CliRunner().invoke(app, ["status", "--model", "churn", "--url", url])

    assert printed.exit_code == 0, printed.output
    lines = printed.output.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert f"serving   version 1, challenger version 2 on 50% of the units ({experiment_id})" in lines
    assert any(line.startswith(f"experiment {experiment_id} (canary): running") for line in lines)
    estimate = next(line for line in lines if line.startswith("  estimate accuracy challenger - champion"))
    with psycopg.connect(url) as conn:
        test = conn.execute("select evidence -> 'statistics' -> 'test' from ops.decisions "
                            "where step = 'sequential_test'").fetchone()[0]  # fmt: skip
    assert f"{test['difference']:+.4f}" in estimate and f"[{test['always_valid_interval'][0]:+.4f}," in estimate
    assert lines[lines.index(estimate) + 1].startswith("  last look ") and ": continue, challenger share 50%" in lines[lines.index(estimate) + 1]
    assert "health    no marts yet: run the metrics DAG" in lines  # no dbt build in this test
    decisions = lines[lines.index("decisions (latest first)") + 1 :]
    assert [line.split()[2] for line in decisions[:2]] == ["sequential_test:", "allocation:"]
    assert "== ingestion" in lines


# --------------------------------------------------------------------------------------------------
# bandit allocation


def test_thompson_sampling_moves_traffic_to_the_better_arm_then_promotes(world):
    # GIVEN a Thompson-sampling experiment (first period at 10 %) and a challenger better than the champion,
    # with a mixing sd that needs more than the first period's evidence to promote
    url, tmp = world
    spec = experiment_spec(strategy="thompson", ramp_steps=[0.10], min_labelled_per_arm=50, mixing_sd=0.02,
                           min_assigned_for_guardrails=50, min_treatment_assigned_per_step=50)  # fmt: skip
    experiment_id = experiments.start_experiment(url, spec, "1", "2")
    serve_and_label(url, tmp / "landing", spec, {"1": 0.80, "2": 0.88}, n=1500, seed=5)
    first_look = started(url) + timedelta(hours=3)

    # WHEN the first look sees the first period
    decision = experiments.step_experiment(url, spec, as_of=first_look)

    # THEN traffic moves to the challenger (the posterior says it is better almost surely; capped at 90 %)
    assert decision.action == "reallocate", decision.reason
    p_better = decision.statistics["allocation"]["posterior_p_treatment_better"]
    assert p_better > 0.9 and decision.next_allocation == pytest.approx(min(p_better, 0.90)), decision.reason
    share = decision.next_allocation
    assert state(url)["allocation"] == (experiment_id, "1", "2", pytest.approx(share))

    # WHEN more traffic is served at the new allocation and looked at
    serve_and_label(url, tmp / "landing", spec, {"1": 0.80, "2": 0.88}, n=2000, seed=6, start=first_look + timedelta(minutes=2))
    second = experiments.step_experiment(url, spec, as_of=first_look + timedelta(hours=3))

    # THEN the evidence of both periods promotes it, each period counted at its own share
    assert second.action == "promote", second.reason
    with psycopg.connect(url) as conn:
        steps = conn.execute(
            "select evidence -> 'evidence' -> 'steps' from ops.decisions where step = 'sequential_test' "
            "order by decision_id desc limit 1"
        ).fetchone()[0]
    assert [step["treatment_share"] for step in steps] == [0.10, pytest.approx(share)]
    second_period = steps[1]
    observed_share = second_period["treatment"]["n_assigned"] / (
        second_period["treatment"]["n_assigned"] + second_period["control"]["n_assigned"]
    )
    assert abs(observed_share - share) < 0.05  # the router followed the new allocation (sticky hashing)
    assert state(url)["champion"] == "2"


# --------------------------------------------------------------------------------------------------
# the watch after a promotion


def promote(url: str, tmp, spec: ModelSpec) -> datetime:
    """Run an experiment that promotes version 2; returns the look that promoted it."""
    experiments.start_experiment(url, spec, "1", "2")
    serve_and_label(url, tmp / "landing", spec, {"1": 0.70, "2": 0.92})
    as_of = started(url) + timedelta(hours=3)
    assert experiments.step_experiment(url, spec, as_of=as_of).action == "promote"
    return as_of


def test_a_promoted_champion_that_degrades_is_rolled_back(world):
    # GIVEN version 2 promoted (92 % right in its experiment), then serving everything at 60 %
    url, tmp = world
    spec = experiment_spec()
    promoted_at = promote(url, tmp, spec)
    assert state(url)["watch"] == ["watching"]
    serve_and_label(url, tmp / "landing", spec, {"1": 0.70, "2": 0.60}, n=600, seed=9, start=promoted_at + timedelta(minutes=1))

    # WHEN the watch looks
    decision = experiments.step_watch(url, spec, as_of=promoted_at + timedelta(hours=2))

    # THEN it rolls back: the previous champion is back in the registry and gets all traffic
    assert decision.action == "rollback", decision.reason
    assert decision.statistics["after_promotion"]["n_labelled"] == 600
    after = state(url)
    assert after["champion"] == "1"
    assert after["allocation"] == (None, "1", None, 0.0)
    assert after["experiments"][0][1] == "rolled_back" and after["watch"] == ["rolled_back"]
    assert after["decisions"][-2:] == [("watch", "rollback"), ("allocation", "rolled_back")]
    assert registry.client().get_model_version("churn", "2").tags["driftloop.status"] == "rolled_back"
    with psycopg.connect(url) as conn:
        alert = conn.execute("select severity, details ->> 'reason' from ops.alerts where summary like '%rollback'").fetchone()
    assert alert[0] == "warning" and "degraded" in alert[1]
    assert experiments.step_watch(url, spec) is None  # nothing is watched anymore
    # and the command line explains it from the warehouse alone
    shown = CliRunner().invoke(app, ["decisions", "--model", "churn", "--url", url])
    assert shown.exit_code == 0, shown.output
    assert "rolled_back" in shown.output and "watch: rollback" in shown.output and "Roll back: the new champion degraded" in shown.output
    assert shown.output.index("sequential_test: promote") < shown.output.index("watch: rollback")


def test_a_healthy_champion_is_kept_when_the_window_ends(world):
    # GIVEN version 2 promoted and serving as well as in its experiment
    url, tmp = world
    spec = experiment_spec()
    promoted_at = promote(url, tmp, spec)
    serve_and_label(url, tmp / "landing", spec, {"2": 0.92}, n=600, seed=9, start=promoted_at + timedelta(minutes=1))

    # WHEN the watch looks inside the window, then after it
    inside = experiments.step_watch(url, spec, as_of=promoted_at + timedelta(hours=2))
    window = spec.promotion.watch.window
    end = experiments.step_watch(url, spec, as_of=promoted_at + window + timedelta(minutes=1))

    # THEN it keeps watching, then keeps the champion
    assert inside.action == "continue", inside.reason
    assert end.action == "keep", end.reason
    after = state(url)
    assert after["champion"] == "2" and after["allocation"] == (None, "2", None, 0.0) and after["watch"] == ["passed"]
    assert experiments.step_watch(url, spec) is None


def test_no_new_experiment_starts_while_a_promoted_champion_is_watched(world):
    url, tmp = world
    spec = experiment_spec()
    promote(url, tmp, spec)
    with pytest.raises(experiments.ExperimentConflict, match="still being watched"):
        experiments.start_experiment(url, spec, "2", "3")


def test_a_crash_between_the_rollback_alias_and_the_allocation_is_repaired(world, monkeypatch):
    # GIVEN a rollback that dies after the champion alias moved back, before the allocation follows
    url, tmp = world
    spec = experiment_spec()
    promoted_at = promote(url, tmp, spec)
    serve_and_label(url, tmp / "landing", spec, {"2": 0.55}, n=600, seed=9, start=promoted_at + timedelta(minutes=1))
    real_set_allocation = experiments._set_allocation

    def die(*args, **kwargs):
        raise ConnectionError("worker killed after the alias moved back")

    monkeypatch.setattr(experiments, "_set_allocation", die)
    with pytest.raises(ConnectionError):
        experiments.step_watch(url, spec, as_of=promoted_at + timedelta(hours=2))
    broken = state(url)
    assert broken["champion"] == "1" and broken["allocation"] == (None, "2", None, 0.0)  # inconsistent
    assert broken["watch"] == ["watching"]

    # WHEN the next look runs THEN it finishes the rollback, and the state converges
    monkeypatch.setattr(experiments, "_set_allocation", real_set_allocation)
    assert experiments.step_watch(url, spec, as_of=promoted_at + timedelta(hours=3)) is None
    repaired = state(url)
    assert repaired["champion"] == "1" and repaired["allocation"] == (None, "1", None, 0.0)
    assert repaired["watch"] == ["rolled_back"] and repaired["experiments"][0][1] == "rolled_back"
    assert [d for d in repaired["decisions"] if d[1] == "rolled_back"] == [("allocation", "rolled_back")]
