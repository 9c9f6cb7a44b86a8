"""Production-style evaluation: detection metrics from Parse/Match records, per-sample prediction files."""
