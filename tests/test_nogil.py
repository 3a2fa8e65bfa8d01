# The GIL is never taken on a per-request path.
#
# Two checks that fail if anyone breaks it:
# 1. In the Cython source, every C-level function of the core is declared
#    `nogil` (Cython then refuses to compile any Python object use inside it),
#    and nothing in ext/ re-acquires the GIL with `with gil`.
# 2. In the C that Cython generates, no C-level function of the core touches
#    the Python C API: no PyGILState_Ensure, no PyObject, no refcounting.
#    This also catches exception checks Cython would add behind our back.
# The only Python-facing code is the API in _core.pyx (and testing hooks),
# which the worker threads never run: they enter worker_loop() once, under
# `with nogil`, and stay there until shutdown.
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT = ROOT / "ext"
# Fragments that hold only test hooks may define Python-level helpers.
PYTHON_FACING = {"_core.pyx", "testing.pxi"}

SIG_START = re.compile(r"^cdef\s+(?!(class|struct|enum|extern|union|packed|public\s+class)\b)"
                       r"(inline\s+)?[\w\s\*\[\]]+?\b(\w+)\s*\(")


def c_level_functions():
    """(file, name, full signature) of every cdef function in the core's fragments."""
    out = []
    for path in sorted(EXT.glob("*.pxi")):
        if path.name in PYTHON_FACING:
            continue
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            m = SIG_START.match(lines[i])
            if m and "=" not in lines[i].split("(")[0]:
                sig = lines[i]
                j = i
                while not sig.rstrip().endswith(":") and j + 1 < len(lines):
                    j += 1
                    sig += " " + lines[j].strip()
                out.append((path.name, m.group(3), sig))
                i = j
            i += 1
    return out


def test_every_core_function_is_nogil():
    funcs = c_level_functions()
    assert len(funcs) > 80, "the parser found too few functions; is the regex broken?"
    offenders = [f"{f}: {name}" for f, name, sig in funcs if "nogil" not in sig]
    assert not offenders, "C-level functions not declared nogil:\n" + "\n".join(offenders)


def test_no_function_reacquires_the_gil():
    for path in list(EXT.glob("*.pxi")) + list(EXT.glob("*.pyx")) + list(EXT.glob("*.pxd")):
        text = path.read_text()
        assert "with gil" not in text, f"{path.name} re-acquires the GIL"


def test_worker_and_acceptor_loops_run_without_the_gil():
    api = (EXT / "_core.pyx").read_text()
    for call in ("acceptor_loop(n)", "worker_loop(&g_workers[i])"):
        idx = api.index(call)
        assert "with nogil:" in api[max(0, idx - 80):idx], f"{call} is not inside `with nogil:`"


@pytest.mark.timeout(300)
def test_generated_c_has_no_python_api_in_core_functions(tmp_path):
    pytest.importorskip("Cython")
    src = tmp_path / "ext"
    src.mkdir()
    for p in EXT.iterdir():
        if p.suffix in (".pyx", ".pxi", ".pxd", ".h"):
            (src / p.name).write_text(p.read_text())
    subprocess.run([sys.executable, "-m", "cython", "-3", "-I", str(src), "--module-name",
                    "memcachepy._core", str(src / "_core.pyx"), "-o", str(tmp_path / "core.c")],
                   check=True, capture_output=True, cwd=tmp_path)
    c_src = (tmp_path / "core.c").read_text()
    names = {name for _, name, _ in c_level_functions()}
    # Cython names module-level C functions __pyx_f_<mangled module>_<name>.
    bodies = {}
    for m in re.finditer(r"^static [^;{]*?\b__pyx_f_10memcachepy_5_core_(\w+)\([^;{]*\)\s*\{", c_src, re.M):
        name = m.group(1)
        end = c_src.find("\n}\n", m.end())
        bodies[name] = c_src[m.end():end]
    checked = 0
    bad = []
    for name in names:
        body = bodies.get(name)
        if body is None:
            continue                     # inlined away or unused: nothing to run
        checked += 1
        for marker in ("PyGILState_Ensure", "PyObject", "Py_INCREF", "Py_DECREF", "__Pyx_RefNanny",
                       "__Pyx_AddTraceback", "__Pyx_ErrOccurred"):
            if marker in body:
                bad.append(f"{name}: {marker}")
    assert checked > 60, f"only {checked} generated functions found; naming scheme changed?"
    assert not bad, "core functions using the Python C API:\n" + "\n".join(sorted(bad))
