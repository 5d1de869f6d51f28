"""The Textual training dashboard (`DashboardApp` in `rwkv_tune.tui.app`).

Importing this package loads nothing heavy: `state`, `tail` and `chart` are pure, so the plain
progress printer and `watch --plain` use them without Textual.
"""
