"""A simulated Asterisk PBX: the tables it writes, its traffic, its manager interface.

Used by `sipstack-agent demo`, the benchmarks and the tests; never by the
running agent. One job per module:

- `ddl`: the cdr / cel tables per dialect (and FreePBX's id-less cdr);
- `timeline`: a simulated call (`SimCall`, `ExpectedCall`), its rows in commit
  order (`Write`, `timeline`), `shift`;
- `channels`, `traffic`, `scenarios`, `routed`: the traffic generator
  (`TrafficGenerator`) and the call scenarios it plays;
- `dialects`: how each database takes a row (the dialect table, pure);
- `drivers`, `writers`: the PBX writer (`PbxWriter`, `write_sqlite`, ...);
- `celcsv`: the same rows as cel_custom's Master.csv lines;
- `play`: real-time pacing of the writes;
- `ami`: a simulated Asterisk Manager Interface server speaking CEL events.
"""
