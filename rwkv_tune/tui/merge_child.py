"""The dashboard's merge, run in a child process so torch never loads in the UI's process.

    python -m rwkv_tune.tui.merge_child '{"base": "...", "adapter": "...", "out": "...", "dtype": null}'

Prints one JSON object a line: {"done", "total"} per tensor, then {"report": ...} or {"error": ...}.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    """Merge as asked by the JSON argument; 0 on success, 2 on a user error."""
    args = json.loads((argv if argv is not None else sys.argv[1:])[0])
    from rwkv_tune.errors import UserError
    from rwkv_tune.merge import merge

    def progress(done: int, total: int, key: str) -> None:
        print(json.dumps({"done": done, "total": total}), flush=True)

    try:
        report = merge(args["base"], args["adapter"], args["out"], dtype=args.get("dtype"), progress=progress)
    except UserError as exc:
        print(json.dumps({"error": exc.one_line()}), flush=True)
        return 2
    print(json.dumps({"report": report.to_dict()}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
