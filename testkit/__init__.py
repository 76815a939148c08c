"""The testing kit: what ``tests/``, ``faults/`` and ``bench/`` use to run the service on
loopback and judge what it did. Nothing here is shipped; nothing in the service imports it.

* ``ports``             free ports on 127.0.0.1
* ``data``              the speech fixtures of tests/data and their reference transcripts
* ``text``              how a transcript is compared: ``words``, the word error rate
* ``media``             media files made with PyAV: every container, silence, broken files
* ``asgi``              an ASGI app (a service, a stub) served by uvicorn in this event loop;
                        ``wait_for``
* ``rawhttp``           the HTTP/1.1 server the peers are built on, and ``InThread`` to run
                        peers in a thread of their own
* ``media_server``      the media host: files with a fault in the URL, made-up bodies
* ``webhook_receiver``  records and verifies deliveries; answers as told, or hostilely
* ``model_proxy``       in front of the model server: forwards, counts, fails on cue
* ``balancer``          TCP round robin over replicas
* ``procs``             service processes in process groups of their own
* ``machine``           the machine a run ran on, for reports
"""
