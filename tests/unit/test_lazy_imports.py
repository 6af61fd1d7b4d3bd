"""A bundle's processes import only what they use: the heavy libraries of other paths
(witnessing's HTTP client, the password rules, the sign-in limits, XPT's frame library, the
comparisons' statistics) are imported where they are needed, or a bundle at 1M events holds
tens of MB more in each process at once (its peak RSS target is 300 MB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
HEAVY = ("httpx", "zxcvbn", "limits", "polars", "pyreadstat", "scipy", "statsmodels", "pandas")


def _imported(*modules: str) -> set[str]:
    code = (f"import sys; import {', '.join(modules)}; "
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, check=True)
    return set(result.stdout.split())


def test_the_exporting_process_imports_none_of_the_heavy_libraries() -> None:
    assert _imported("application.runtime", "application.exports",
                     "projections.casebook_doc.pdf") == set()


def test_the_renderings_processes_import_none_of_the_heavy_libraries() -> None:
    assert _imported("application.bundle_tables") == set()
