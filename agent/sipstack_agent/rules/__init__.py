"""Rules every stage shares, each with one home: pure functions, no I/O.

`ids` (linkedid order and grouping), `api_urls` (region -> host, endpoint
URLs), `redact` (API keys in text), `backoff` (the exponential formula,
reconnect delays), `mixmonitor` (MixMonitor appdata -> recording path).
Everything above imports from here; this package imports only the standard
library (the import-linter layers keep it so).
"""
