"""Helpers of the agent tests (imported by tests/agent/conftest.py and the tests).

- `servers`: the shared PostgreSQL / MariaDB servers, throwaway databases with a
  SELECT-only user (`ServerDb`), the DBA's zone (`pg_zone`), the admin login;
- `pbxdb`: a PBX database with tables unique to a test and its writer
  (`sipstack_agent.sim.writers.PbxWriter`, the simulator's writer);
- `sample`: the real Asterisk 20 sample rows;
- `tcpproxy`: a TCP forwarder a test can cut (a database restart as clients see it);
- `smallfs`: a real, small filesystem to run out of space on;
- `live_writer`: recorded rows replayed into a PBX database at their recorded pace.
"""
