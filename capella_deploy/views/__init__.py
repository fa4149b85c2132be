"""Every rendering, as functions of values: plans, apply results, checks, drift (human, JSON, Markdown)."""
