"""The benchmarks, one module each: ``main(argv)`` and ``SMOKE``; run by ``python -m bench``."""
