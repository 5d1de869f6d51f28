"""The layout rule: no module of the package over 400 lines (split a room that does several jobs)."""

from pathlib import Path

import rwkv_tune

LIMIT = 400


def test_no_module_over_400_lines():
    root = Path(rwkv_tune.__file__).parent
    long = {str(p.relative_to(root)): n for p in root.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > LIMIT}
    assert not long, f"modules over {LIMIT} lines: {long}"
