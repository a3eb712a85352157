#!/usr/bin/env bash
# Check the two ways napari-braggsim is installed, each into a fresh virtual environment
# (no system site-packages), from this checkout:
#   core:   `pip install .`          (a Dask worker, a script, a cluster): no napari, no Qt;
#           `import braggsim` and `braggsim simulate --help` work;
#   plugin: `pip install ".[napari]"` (the plugin outside napari's installer): napari is
#           there and npe2 finds and validates the plugin's manifest.
# torch 2.13.0 goes in first, as scripts/setup.sh does, so pip never pulls a CUDA build.
# Takes minutes (napari is large); not part of the test suite.  Prints one line per check
# and exits non-zero if any fails.  KEEP=1 leaves the environments in $WORK.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WORK="${WORK:-$(mktemp -d /tmp/braggsim-install.XXXXXX)}"
failures=0

check() {  # check "what" command...: one line, PASS or FAIL with the command's last output
    local what="$1"
    shift
    local output
    if output=$("$@" 2>&1); then
        echo "PASS  $what"
        echo "$output" | sed -n 's/^info: /      /p'
    else
        echo "FAIL  $what"
        echo "$output" | tail -5 | sed 's/^/      /'
        failures=$((failures + 1))
    fi
}

make_venv() {  # make_venv DIR SPEC: a fresh venv with torch and SPEC installed; prints the time taken
    local dir="$1" spec="$2" start
    start=$(date +%s)
    "$PYTHON" -m venv "$dir" || return 1
    "$dir/bin/python" -m pip install -q --disable-pip-version-check torch==2.13.0 || return 1
    "$dir/bin/python" -m pip install -q --disable-pip-version-check "$spec" || return 1
    echo "info: $spec installed in $(($(date +%s) - start)) s, $(du -sm "$dir" | cut -f1) MiB"
}

no_gui_packages() {  # no_gui_packages PYTHON: none of napari, magicgui or a Qt binding is installed
    "$1" - <<'EOF'
import importlib.util
gui = ["napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy"]
found = [name for name in gui if importlib.util.find_spec(name) is not None]
assert not found, f"installed with the core: {found}"
EOF
}

echo "== core: pip install . (into $WORK/core)"
check "core installs" make_venv "$WORK/core" "."
check "core has no napari, magicgui or Qt binding" no_gui_packages "$WORK/core/bin/python"
check "core: import braggsim and simulate an image" "$WORK/core/bin/python" -c \
    "import braggsim; assert braggsim.simulate(braggsim.Crystal(default_F=100), braggsim.Detector(fpixels=8)).sum() > 0"
check "core: braggsim simulate --help" "$WORK/core/bin/braggsim" simulate --help
check "core: braggsim.native reports the fused kernel" "$WORK/core/bin/python" -c \
    "from braggsim import native; print('info: fused kernel', 'available' if native.available() else native.unavailable_reason())"

echo "== plugin: pip install .[napari] (into $WORK/plugin)"
check "plugin installs" make_venv "$WORK/plugin" ".[napari]"
check "plugin: napari, magicgui and qtpy are installed" "$WORK/plugin/bin/python" -c "
import importlib.metadata as m
print('info: napari', m.version('napari'), 'magicgui', m.version('magicgui'), 'qtpy', m.version('qtpy'))"
check "plugin: npe2 validate napari-braggsim" "$WORK/plugin/bin/npe2" validate napari-braggsim
check "plugin: npe2's plugin manager finds the manifest" "$WORK/plugin/bin/python" -c "
import npe2
pm = npe2.PluginManager.instance()
pm.discover()
manifest = pm.get_manifest('napari-braggsim')
print('info:', manifest.name, len(manifest.contributions.commands), 'commands')"
# [napari] brings no Qt binding (napari's own environment, or [all], has one): say which is there
"$WORK/plugin/bin/python" -c "
import importlib.util
found = [b for b in ('PyQt5', 'PyQt6', 'PySide2', 'PySide6') if importlib.util.find_spec(b)]
print('INFO  plugin: Qt binding installed:', ', '.join(found) or 'none (a window needs napari[all] or napari\'s own environment)')"

[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
echo "== check_install: $failures failed"
exit $((failures > 0))
