"""crm-audit benchmark harness (`python -m bench`, `make bench`).

Measures, side by side in one run on one machine:

1. ceiling     opensearch-py bulk indexing of the pipeline's own documents (best of a
               small grid of bulk sizes x concurrency), docs/s
2. e2e         lines appended to files -> agent -> collector -> searchable, events/s
               (agent key registered, seals required, checkpoints on: as in production)
               and ratio to the ceiling
3. agent       file -> agent -> a null collector that acks without indexing: events/s,
               CPU-seconds per million events, peak RSS
4. latency     write-to-searchable p50/p99 at a steady 1k events/s
5. peer        rsyslog (imfile -> omelasticsearch) shipping the same files into the
               same OpenSearch: events/s, CPU-s per million, ratio to ours
   syslog-ng   the second peer: syslog-ng (wildcard-file -> elasticsearch-http), same
               files, same node, same figures
6. scaling     agent alone over files (1, 10, 100) x line length (100 B, 1 KiB)
7. parsers     framing + parsing lines/s per format on replicated sample files, and the
               whole jsonlines normalize step (+ privacy, protobuf serialization);
               in-process
8. integrity   µs per event of hashing, sealing (agent) and verify_batch (collector),
               in-process; `crm-audit verify` events/s over sealed events shipped to a
               real collector with integrity keys and checkpoints
9. detection   line written -> alert document p50/p99 for a per-event rule (bulk
               export) and a windowed rule (failed-login burst) under background load

Module map: `cli` (arguments, environment, orchestration, output), `sizes` (full and
quick presets), `corpus` (the lines written), `procstat` (CPU and memory of a pid),
`processes` (child processes), `search` (OpenSearch helpers and node), `nullcollector`
(in-bench gRPC servicer), `pipeline` (agent/collector/rsyslog/syslog-ng configs and lifecycles),
`scenarios` (one function per scenario), `stats`, `machine`, `report` (table and
markdown, also `python -m bench.report results.json`).

Benchmarks are not tests: nothing here asserts a time. The agent is driven only
through its CLI and config file, so it can be rewritten underneath.
"""
