#!/usr/bin/env bash
# Starts (or restarts) the cluster's MLflow tracking server on the Ray head node, in the background.
# Called by head_start_ray_commands in cluster/aws.yaml, gcp.yaml and onprem.yaml.
#
# It listens on 127.0.0.1:5000 only: the job drivers run on the head (`ray job submit` puts the
# entrypoint there) and reach it as MLFLOW_TRACKING_URI=http://127.0.0.1:5000, which the head's
# `ray start` exports; you reach it through SSH (`ray attach CLUSTER.yaml --port-forward 5000`).
# Set MLFLOW_HOST to expose it deliberately (and put authentication in front of it).
#
# Where it stores runs comes from the environment, never from a file in the repo:
#   MLFLOW_BACKEND_STORE_URI      default sqlite:///$HOME/mlflow/mlflow.db (on the head's disk)
#                                 e.g. postgresql://USER@HOST:5432/mlflow with the password in
#                                 PGPASSWORD or ~/.pgpass, never in the URI
#   MLFLOW_ARTIFACTS_DESTINATION  default $HOME/mlflow/artifacts; e.g. s3://BUCKET/mlflow or
#                                 gs://BUCKET/mlflow, reached with the head's instance role /
#                                 service account (Ray gives the head S3 / GCS access), no keys
# To set them on a launcher cluster, put `export NAME=value` lines in a file outside the repo and
# copy it to the head: `ray rsync-up CLUSTER.yaml ~/mlflow.env /home/ray/.edge-orchestrator/env`,
# then `ray up CLUSTER.yaml --restart-only`; this script sources that file.
set -euo pipefail
ENV_FILE="$HOME/.edge-orchestrator/env"
# shellcheck disable=SC1090
[ -f "$ENV_FILE" ] && . "$ENV_FILE"
STATE="$HOME/mlflow"
mkdir -p "$STATE/artifacts"
if [ -f "$STATE/server.pid" ]; then
  kill "$(cat "$STATE/server.pid")" 2>/dev/null || true
  rm -f "$STATE/server.pid"
fi
nohup mlflow server \
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$STATE/mlflow.db}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$STATE/artifacts}" \
  >"$STATE/server.log" 2>&1 &
echo $! >"$STATE/server.pid"
