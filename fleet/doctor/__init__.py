"""`fleet doctor`: stack fingerprints of the boards, checked against the version rules of
docs/reference/device_apis.md (checks), with the fix for every mismatch (cli)."""
