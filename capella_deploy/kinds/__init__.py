"""One module per resource kind: live parsing, attributes and request bodies, plan rule, apply steps."""
