"""``import deliberate`` changes nothing in the process and imports no backend; the registries are still complete at
their first lookup; the command line sets the process up (OMP_WAIT_POLICY) before anything imports torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys

BACKENDS = ("torch", "diffusers", "timm", "transformers")


def fresh(code: str, **env: str) -> dict:
    """Run ``code`` in a fresh interpreter whose environment has no OMP_WAIT_POLICY (plus ``env``); its last line of
    output, as JSON."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY",)}
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_leaves_the_process_alone_and_loads_no_backend():
    got = fresh("import json, os, sys\n"
                "env = dict(os.environ)\n"
                "import deliberate\n"
                "print(json.dumps({'env': env == dict(os.environ), 'modules': [m for m in %r if m in sys.modules]}))"
                % (BACKENDS,))
    assert got == {"env": True, "modules": []}


def test_every_built_in_is_registered_once_deliberate_is_imported():
    """The first lookup of each registry sees every entry that any module of the package registers (compared with
    the registries after importing every module), and loads no backend beyond torch (diffusers, transformers and
    timm load when a model is built)."""
    got = fresh("import importlib, json, pkgutil, sys\n"
                "import deliberate\n"
                "import deliberate.registry as r\n"
                "names = ('GENERATORS', 'LEARNERS', 'CRITERIA', 'METHODS')\n"
                "first = {k: sorted(getattr(r, k)) for k in names}\n"
                "backends = [m for m in ('diffusers', 'transformers', 'timm') if m in sys.modules]\n"
                "for m in pkgutil.walk_packages(deliberate.__path__, 'deliberate.'):\n"
                "    importlib.import_module(m.name)\n"
                "print(json.dumps({'first': first, 'all': {k: sorted(getattr(r, k)) for k in names}, "
                "'loaded': backends}))")
    assert got["first"] == got["all"] and got["loaded"] == []
    assert {"dp", "static", "prune"} <= set(got["all"]["METHODS"]) and "pixel_unet" in got["all"]["GENERATORS"]


def test_the_command_line_sets_the_process_up_before_torch():
    code = ("import json, os, sys\n"
            "from deliberate.cli import main\n"
            "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(json.dumps([os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules]))")
    assert fresh(code) == ["PASSIVE", False]
    assert fresh(code, OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", False]  # only a default: the user's value stands
