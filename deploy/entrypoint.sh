#!/bin/sh
# curvprof-entrypoint MODE [ARGS...]
#   api         join the Ray cluster at CURVPROF_RAY_ADDRESS as a node with no CPUs or GPUs
#               (a Ray driver must run on a Ray node), then `curvprof serve` on 0.0.0.0:8000
#   ray-head    `ray start --head` on port 6379 (no tasks on the head by default)
#   ray-worker  `ray start --address=RAY_HEAD_ADDRESS` (resources auto-detected: CPUs, GPUs)
#   anything else is executed as given (e.g. `curvprof db upgrade`)
set -eu
mode="${1:-api}"
[ "$#" -gt 0 ] && shift
store="${RAY_OBJECT_STORE_BYTES:-1000000000}"

case "$mode" in
  api)
    if [ -n "${CURVPROF_RAY_ADDRESS:-}" ] && [ "${CURVPROF_RAY_ADDRESS#ray://}" = "$CURVPROF_RAY_ADDRESS" ]; then
      ray start --address="$CURVPROF_RAY_ADDRESS" --num-cpus=0 --num-gpus=0 \
        --object-store-memory="$store" --disable-usage-stats
    fi
    exec curvprof serve --host 0.0.0.0 --port "${CURVPROF_PORT:-8000}" "$@"
    ;;
  ray-head)
    exec ray start --head --port=6379 --dashboard-host=0.0.0.0 \
      --num-cpus="${RAY_HEAD_NUM_CPUS:-0}" --object-store-memory="$store" \
      --disable-usage-stats --block "$@"
    ;;
  ray-worker)
    exec ray start --address="${RAY_HEAD_ADDRESS:?set RAY_HEAD_ADDRESS, e.g. ray-head:6379}" \
      --object-store-memory="$store" --disable-usage-stats --block "$@"
    ;;
  *)
    exec "$mode" "$@"
    ;;
esac
