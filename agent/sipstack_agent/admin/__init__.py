"""Day-two commands run on the PBX host: `check`, `status`, `dead-letters`, `support-bundle`,
`resend`.

Each command has its own module; `cli.py` only parses arguments and calls them.
- `summary`: /status -> health (healthy / degraded / down) and the readable text;
- `agentclient`: where the running agent answers and GET /status;
- `statuscmd`: `sipstack-agent status` (from /status, or the state dir when stopped);
- `deadletters`: `sipstack-agent dead-letters list | show | retry | drop`;
- `bundle`: `sipstack-agent support-bundle`;
- `check`: `sipstack-agent check` (also the bundle's check.txt): every preflight check.
"""
