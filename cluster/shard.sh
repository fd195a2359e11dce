#!/usr/bin/env bash
# Run one shard of a vlmflow command under any scheduler that gives each array task an index.
#
#   cluster/shard.sh N COMMAND [ARGS...]
#
# reads the task's index from the environment variable named by $SHARD_INDEX_VAR (default SLURM_ARRAY_TASK_ID),
# subtracts $SHARD_INDEX_BASE (default 0; 1 for schedulers that count from 1), replaces every "{i}" in ARGS with
# the 0-based index and runs COMMAND ARGS --shard i/N (`vlmflow sweep` runs every N-th image starting at i).
# Examples of index variables: SLURM_ARRAY_TASK_ID (Slurm), PBS_ARRAY_INDEX (PBS Pro), SGE_TASK_ID (Grid Engine,
# from 1), LSB_JOBINDEX (LSF, from 1), AWS_BATCH_JOB_ARRAY_INDEX (AWS Batch), JOB_COMPLETION_INDEX (Kubernetes
# indexed Jobs). See book/rerun.md; tests/integration/test_cluster.py runs it with fake indices.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: cluster/shard.sh N COMMAND [ARGS...]  (index from the variable named by SHARD_INDEX_VAR)" >&2
  exit 2
fi
n=$1
shift
var=${SHARD_INDEX_VAR:-SLURM_ARRAY_TASK_ID}
raw=${!var:-}
if ! [[ "$n" =~ ^[1-9][0-9]*$ ]]; then
  echo "shard.sh: N must be a positive integer, got '$n'" >&2
  exit 2
fi
if ! [[ "$raw" =~ ^[0-9]+$ ]]; then
  echo "shard.sh: \$$var is '${raw}', not an array index (set SHARD_INDEX_VAR to your scheduler's index variable)" >&2
  exit 2
fi
i=$((raw - ${SHARD_INDEX_BASE:-0}))
if ((i < 0 || i >= n)); then
  echo "shard.sh: index $i (\$$var=$raw, base ${SHARD_INDEX_BASE:-0}) is outside 0..$((n - 1))" >&2
  exit 2
fi
args=("${@//\{i\}/$i}")
exec "${args[@]}" --shard "$i/$n"
