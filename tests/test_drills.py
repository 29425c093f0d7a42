"""Failure drills on a real redis-server: paused, dropped connections, and TLS."""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .support import apps
from .support.clients import Clients, make_settings
from .support.servers import start_redis_server, stop_redis_server

pytestmark = pytest.mark.real_redis
OPTIONS: dict[str, Any] = {"limit": "1000/minute", "routes": {"/c/*": 60}}


@pytest.mark.slow
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_client_pause_is_bounded_by_timeouts_and_recovers(interface: str,
                                                          own_server: Any) -> None:
    settings = make_settings(own_server.url, socket_timeout=0.3, breaker_cooldown=0.5)
    clients = Clients(interface, settings)
    try:
        client = clients("RedisMiddleware", **OPTIONS)
        client.post("/login?user=pat")
        assert client.get("/get").status_code == 200
        with own_server.client() as admin:
            admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        worst = 0.0
        statuses = []
        for path in ("/noop", "/get", "/noop", "/c/x", "/get"):
            started = time.monotonic()
            statuses.append(client.get(path).status_code)
            worst = max(worst, time.monotonic() - started)
        assert worst < 1.5  # a timeout at most, then the breaker answers at once
        assert statuses[0] == 200 and 503 in statuses and 500 not in statuses
        time.sleep(2.1)  # the pause ends
        deadline = time.monotonic() + 2
        while client.get("/get").status_code != 200:
            assert time.monotonic() < deadline, "no recovery within 2 s"
            time.sleep(0.05)
    finally:
        clients.close()


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_connections_killed_mid_request_leave_no_half_write(interface: str,
                                                            own_server: Any) -> None:
    settings = make_settings(own_server.url)
    clients = Clients(interface, settings)
    try:
        client = clients("SessionMiddleware")
        client.post("/set", json={"a": 1, "b": 1})
        cookie = {"cookie": f"session={client.cookies['session']}"}
        result: list[int] = []

        def slow_write() -> None:  # loads, sleeps, then writes two fields in one script
            result.append(clients().post("/set?sleep=0.4", json={"a": 2, "b": 2},
                                         headers=cookie).status_code)

        thread = threading.Thread(target=slow_write)
        thread.start()
        assert apps.sleeping.wait(10)  # it has loaded the session and sleeps
        with own_server.client() as admin:
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        thread.join()
        assert result[0] in (200, 503)
        data = client.get("/get").json()
        assert data in ({"a": 1, "b": 1}, {"a": 2, "b": 2})  # all of the write or none
    finally:
        clients.close()


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis-middleware test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_tls_rediss(interface: str, tmp_path: Path) -> None:
    from .support.servers import free_port

    ca, cert, key = _certificates(tmp_path)
    tls_port = free_port()
    server = start_redis_server(
        tmp_path / "data", "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
        "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no")
    try:
        url = f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        settings = make_settings(url)
        clients = Clients(interface, settings)
        try:
            client = clients("RedisMiddleware", **OPTIONS)
            client.post("/login?user=tls")
            assert client.get("/get").json() == {"user_id": "tls"}
            assert client.get("/c/t").headers["x-cache"] == "MISS"
            assert client.get("/c/t").headers["x-cache"] == "HIT"
            assert client.get("/noop").headers["x-ratelimit-remaining"]
        finally:
            clients.close()
    finally:
        stop_redis_server(server)


@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_unix_socket(interface: str, tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    server = start_redis_server(tmp_path / "data", "--unixsocket", str(socket_path),
                                "--unixsocketperm", "700")
    try:
        settings = make_settings(f"unix://{socket_path}?db=0")
        clients = Clients(interface, settings)
        try:
            client = clients("RedisMiddleware", **OPTIONS)
            client.post("/login?user=unix")
            assert client.get("/get").json() == {"user_id": "unix"}
        finally:
            clients.close()
    finally:
        stop_redis_server(server)


@pytest.mark.slow
@pytest.mark.parametrize("interface", ["asgi", "wsgi"])
def test_redis_stopped_mid_load(interface: str, tmp_path: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    import logging
    from concurrent.futures import ThreadPoolExecutor

    server = start_redis_server(tmp_path / "a")
    settings = make_settings(server.url, socket_timeout=0.3, breaker_cooldown=0.3)
    clients = Clients(interface, settings)
    results: list[tuple[float, str, int, float]] = []
    stop_at = time.monotonic() + 0.5
    done = threading.Event()  # set 2.5 s after the restart, however long it took
    try:
        options = {**OPTIONS, "limit": "1000000/minute"}  # counted, never reached
        anonymous = clients("RedisMiddleware", **options)
        user = clients("RedisMiddleware", **options)
        user.post("/login?user=load")

        def hammer(worker: int) -> None:
            client = user if worker % 2 else anonymous
            path = "/get" if worker % 2 else ("/noop", "/c/load")[worker % 4 // 2]
            while not done.is_set():
                started = time.monotonic()
                status = client.get(path).status_code
                results.append((started, path, status, time.monotonic() - started))

        with caplog.at_level(logging.WARNING, logger="redis_middleware"), \
                ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(hammer, i) for i in range(6)]
            try:
                time.sleep(max(0.0, stop_at - time.monotonic()))
                stop_redis_server(server)  # mid-load
                time.sleep(1.0)
                restarted = time.monotonic()
                server = start_redis_server(tmp_path / "b", port=server.port)
                time.sleep(2.5)
            finally:
                done.set()
            for future in futures:
                future.result()
        assert all(status != 500 for _, _, status, _ in results)
        assert max(took for *_, took in results) < 1.5  # bounded by timeouts and the breaker
        down = [r for r in results if stop_at + 0.1 < r[0] < restarted - 0.1]
        assert {s for _, p, s, _ in down if p == "/get"} <= {503, 200}
        assert {s for _, p, s, _ in down if p != "/get"} == {200}  # fail open, cache bypassed
        recovered = [r for r in results if r[0] > restarted + 2.0 and r[1] == "/noop"]
        assert recovered and all(s == 200 for _, _, s, _ in recovered)
        outage_lines = [r for r in caplog.records if "is unavailable (" in r.message]
        assert len(outage_lines) == 1  # one log line for the incident
    finally:
        clients.close()
        stop_redis_server(server)
