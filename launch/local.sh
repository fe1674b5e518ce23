#!/bin/bash
# The whole pipeline on one machine, in order, at demo scale (CPU, minutes). Each stage is the command a cluster
# runs at full scale; see README.md for those.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}

python -m physbert_jax.train --config configs/mlm.py:tiny --workdir "${RUNS}/tiny"
