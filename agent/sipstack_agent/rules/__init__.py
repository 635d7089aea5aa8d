"""Rules every stage shares, each with one home: pure functions, no I/O.

`ids` (linkedid order and grouping), `api_urls` (region -> host, endpoint
URLs), `redact` (API keys in text), `backoff` (reconnect delays),
`mixmonitor` (MixMonitor appdata -> recording path), `checks` (the result
type of `sipstack-agent check`). Everything above imports from here; this
package imports only the standard library and `model`.
"""
