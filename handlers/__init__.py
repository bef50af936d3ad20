"""HTTP handlers, one module per resource: plain functions from a Request to a Response."""
