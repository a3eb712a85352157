#!/usr/bin/env bash
# Issue 14's determinism check for the GUI tests: run the GUI tests that once depended on
# the machine's speed (the Refine dock with its stop/close tests, the state and controller,
# the docks) RUNS times in a row and print one line per run with the load average at its
# start.  Run it while the machine is busy (e.g. `stress -c 2`, or other work) to check
# they do not depend on speed.
#
#     bash benchmarks/gui_loop.sh [RUNS]        # default 20
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
passed=0
for i in $(seq 1 "$runs"); do
    start=$(date +%s)
    load=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
    log=$(mktemp)
    .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/napari_braggsim/test_refine_widget.py \
        tests/napari_braggsim/test_state_and_controller.py \
        tests/napari_braggsim/test_dock_widgets.py >"$log" 2>&1
    rc=$?
    last=$(tail -1 "$log")
    rm -f "$log"
    [ "$rc" -eq 0 ] && passed=$((passed + 1))
    echo "run $i: load at start $load, $(( $(date +%s) - start )) s: $last"
done
echo "$passed/$runs runs passed"
[ "$passed" -eq "$runs" ]
