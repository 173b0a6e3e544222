#!/bin/sh
# Run the tests marked `ray` inside a network namespace that has only loopback, so that no Ray
# process can bind to or reach the machine's network address.  Needs root (as CI runs) and unshare.
# Usage: scripts/run_ray_tests.sh [pytest args...]     (PYTHON overrides the interpreter)
set -u
PYTHON="${PYTHON:-python}"
if [ "$(id -u)" != "0" ] || ! command -v unshare >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    echo "##################################################################################" >&2
    echo "## SKIPPING the Ray tests (pytest -m ray): they need root, unshare and ip to run in  " >&2
    echo "## a loopback-only network namespace. As root: scripts/run_ray_tests.sh [pytest args]" >&2
    echo "##################################################################################" >&2
    exit 0
fi
export RAY_USAGE_STATS_ENABLED=0
unshare -n sh -c 'ip link set lo up && exec "$0" -m pytest -m ray "$@"' "$PYTHON" "$@"
rc=$?
# 5: no test selected (e.g. PYTEST_ARGS named only other tests): nothing to run is not a failure
if [ "$rc" = 5 ]; then exit 0; fi
exit "$rc"
