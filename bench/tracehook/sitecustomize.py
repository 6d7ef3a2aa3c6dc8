"""Put on PYTHONPATH by the bench: turns on bench/http_trace.py in every Python process of a bench stack."""

import os
import sys

if os.environ.get("BENCH_TRACE_DIR"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import http_trace

    http_trace.install()
    sys.path.pop(0)
