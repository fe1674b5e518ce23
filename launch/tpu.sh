#!/bin/bash
# Training on a Cloud TPU VM pod slice: one process per TPU VM host, started on every worker at once.
# jax.distributed.initialize() detects TPU VMs by itself (no coordinator address needed), and every process reads
# its rows of each global batch, as under Slurm. NOT TESTED by this project (no TPU at hand); the commands follow
# the Cloud TPU JAX guide. The data and the workdir must be on storage every host sees (a GCS bucket through
# gcsfuse, or Filestore).
#
#   TPU=my-v5p-64 ZONE=us-east5-a bash launch/tpu.sh configs/mlm.py:base /mnt/shared/runs/mlm128
#
# Preemption: Cloud TPU sends SIGTERM before maintenance/preemption; the processes agree on a step, save and exit.
# Running the same line again resumes. On TPU set --config.model.attention_impl=xla (cudnn is GPU-only).
set -euo pipefail
CONFIG=${1:?usage: TPU=name ZONE=zone bash launch/tpu.sh CONFIG WORKDIR [--config.x=y ...]}
WORKDIR=${2:?usage: TPU=name ZONE=zone bash launch/tpu.sh CONFIG WORKDIR [--config.x=y ...]}
shift 2
: "${TPU:?set TPU to the TPU VM name}" "${ZONE:?set ZONE to its zone}"
REPO_DIR=${REPO_DIR:-physbert-jax}     # the repository's path on every host (clone it there first)

# Install once on every host:  pip install -e "${REPO_DIR}[tpu]"  (jax[tpu]); then:
gcloud compute tpus tpu-vm ssh "${TPU}" --zone "${ZONE}" --worker=all --command \
  "cd ${REPO_DIR} && PHYSBERT_DISTRIBUTED=1 python -m physbert_jax.train --config ${CONFIG} --workdir ${WORKDIR} $*"
