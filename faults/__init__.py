"""Fault drills: the real services as separate processes, something broken on purpose,
and a check, from the database and the webhook receiver's log, that no job and no
transcript was lost.

    python -m faults                      every drill, full durations, a report in
                                          faults/results/<date>.md and .json
    python -m faults --profile ci         the short durations tests/faults uses
    python -m faults transcriber-kill     one drill (names: python -m faults --list)

Modules:

* ``stack``   a fresh database plus the services as processes (``testkit.procs``) and the
              peers (``testkit``: a media server, a webhook receiver, a model-server
              proxy and a TCP load balancer in front of the transcriber replicas), and the
              job stream
* ``peers``   the peers' old names, importable here
* ``checks``  the verdict: terminal statuses, deliveries, signatures, duplicates
* ``drills``  the drills themselves; ``fuzz`` the schemathesis run
* ``report``  machine info, Markdown and JSON reports
"""
