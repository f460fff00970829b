"""zfront's benchmark harness (see bench/run and docs/benchmarks.md)."""
