# driftloop image for docker-compose.yaml: every Airflow component and the MLflow server.
#
# The official Airflow image already carries what the compose stack needs beyond our lock
# (the celery and redis providers for CeleryExecutor, curl for health checks). On top of it we install
# the project's fully pinned lock and the driftloop package itself (editable: docker-compose.yaml
# mounts ./include over /opt/airflow/include, so code changes need no rebuild).
FROM apache/airflow:3.3.2-python3.11

# Folders that named volumes are mounted on: created here, owned by the airflow user (group 0, as the
# official image expects for arbitrary AIRFLOW_UID), so a fresh volume starts out writable.
USER root
RUN mkdir -p /opt/airflow/landing /opt/airflow/.driftloop /opt/mlflow/artifacts \
    && chown -R airflow:0 /opt/airflow/landing /opt/airflow/.driftloop /opt/mlflow \
    && chmod -R g+rwX /opt/airflow/landing /opt/airflow/.driftloop /opt/mlflow
USER airflow

# Dependencies first, so editing the package does not re-install ~300 wheels. The image's own
# apache-airflow version is pinned on the command line as the Airflow docs recommend, so pip can
# never swap Airflow for another version while installing the lock.
COPY --chown=airflow:0 requirements.lock /tmp/driftloop/requirements.lock
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/driftloop/requirements.lock

# The package: include/driftloop, declared by pyproject.toml (README.md is optional).
COPY --chown=airflow:0 pyproject.toml README.md* /opt/airflow/
COPY --chown=airflow:0 include /opt/airflow/include
RUN pip install --no-cache-dir --no-deps -e /opt/airflow

ENV DRIFTLOOP_HOME=/opt/airflow/.driftloop \
    DO_NOT_TRACK=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    GX_ANALYTICS_ENABLED=False \
    WHYLOGS_NO_ANALYTICS=True
