"""Benchmarks: scenarios over one runner (``python -m bench``) and one report writer.

    .venv/bin/python -m bench --list                 the scenarios
    .venv/bin/python -m bench pickup --jobs 50       one scenario, its own options
    .venv/bin/python -m bench all                    every scenario, as ``make bench``
    .venv/bin/python -m bench --smoke [NAME ...]     the smallest run of each, results in
                                                     bench/results/tmp/smoke/

* ``scenarios/``  one module a benchmark, each with ``main(argv)`` and its ``SMOKE`` options
* ``report``      the results files (JSON and Markdown, with the machine), and logging
* ``measure``     CPU by process group, resident memory, a quiet machine, percentiles
* ``database``    a scratch PostgreSQL database per run
* ``stack``       the four services as processes, with the kit's peers in a thread
* ``speech``      the long recording of real speech and its reference
* ``loadgen``     a paced, open-loop HTTP load generator; ``pyspy`` profiles
* ``readme``      the results table of bench/README.md, from the newest results

The peers, process runner, ports, fixtures and WER come from the testing kit
(``testkit``), shared with tests/ and faults/. bench/README.md says what each scenario
measures and what the results were.
"""
