"""What the tests share that is not a fixture: servers, clusters, clients, the keyspace
audit, the test apps (some run by subprocesses: ``tests.support.worker_app`` and its
siblings), a browser driver and a WSGI transport. The fixtures are in ``tests/conftest.py``."""
