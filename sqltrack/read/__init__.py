"""Reading back: run queries, metric frames, DataFrame helpers and exports (CLI, web
page and notebooks share them)."""
