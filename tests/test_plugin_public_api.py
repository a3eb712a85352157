"""The plugin uses only braggsim's public API (docs/development.md): every name it imports
from braggsim is in that module's ``__all__``.  Read from the plugin's source (no napari,
no Qt needed)."""

import ast
import importlib
import importlib.util
from pathlib import Path

PLUGIN = Path(__file__).resolve().parents[1] / "src" / "napari_braggsim"
# known exceptions, each with its reason; a new one needs a public name in braggsim instead
KNOWN: dict = {}


def braggsim_imports():
    """[(file, line, module, name)] of every ``from braggsim... import name`` in the plugin."""
    found = []
    for path in sorted(PLUGIN.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "braggsim":
                found += [(path.name, node.lineno, node.module, alias.name) for alias in node.names]
    return found


def test_the_plugin_imports_only_names_in_braggsims_all():
    imports = braggsim_imports()
    assert len(imports) > 30  # the scan sees the plugin's imports (the stills dock alone has 15)
    assert ("_still.py", "braggsim.still_refine", "refine_still_pixels") in {(f, m, n) for f, _, m, n in imports}
    outside = []
    for file, line, module, name in imports:
        if (module, name) in KNOWN:
            continue
        owner = importlib.import_module(module)
        if hasattr(owner, "__path__") and importlib.util.find_spec(f"{module}.{name}") is not None:
            # a submodule: public, with an __all__ of its own
            if name.startswith("_") or not hasattr(importlib.import_module(f"{module}.{name}"), "__all__"):
                outside.append(f"{file}:{line}: {module}.{name} is not a public module with an __all__")
            continue
        public = getattr(owner, "__all__", None)
        if public is None:
            outside.append(f"{file}:{line}: {module} has no __all__ (importing {name})")
        elif name not in public:
            outside.append(f"{file}:{line}: {name} is not in {module}.__all__")
    assert outside == []


def test_every_all_name_exists():
    for module in sorted({module for _, _, module, _ in braggsim_imports()}):
        loaded = importlib.import_module(module)
        missing = [name for name in getattr(loaded, "__all__", ()) if not hasattr(loaded, name)]
        assert missing == [], f"{module}.__all__ names {missing}, which it does not define"
