"""`ducto-redis serve` and `ducto-redis flush --metrics-port` as an operator runs them (subprocesses)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from conftest import DATABASE_URL, REDIS_URL, drop_namespace, new_namespace
from gateway_support import free_port, wait_port

from ducto_redis import RedisStore
from ducto_redis.cli import ExitCode, cli

CLI = [sys.executable, "-m", "ducto_redis.cli"]


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str], port: int) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([*CLI, *args], env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_port(port, proc)  # type: ignore[arg-type]
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(15)
        if proc.poll() is None:
            proc.kill()


def test_serve_with_two_workers_answers_the_api_forward_auth_and_summed_metrics(
    redis_client: Any, tmp_path: Path
) -> None:
    ns = new_namespace()
    routes = tmp_path / "routes.json"
    routes.write_text('{"routes": [{"path": "/chat", "cost": 2}]}')
    port = free_port()
    env = {"DUCTO_SERVICE_TOKENS": "tok", "DUCTO_NAMESPACE": ns}
    admin = RedisStore.from_url(REDIS_URL, namespace=ns)
    admin.add_credits("k", 10)
    try:
        with running(["--redis-url", REDIS_URL, "serve", "--port", str(port), "--workers", "2",
                      "--routes", str(routes)], env, port):
            base = f"http://127.0.0.1:{port}"
            for _ in range(4):  # spread over both workers
                r = httpx.get(base + "/v1/authorize", headers={"X-Forwarded-Uri": "/chat", "X-API-Key": "k",
                                                                "X-Ducto-Token": "tok"})
                assert r.status_code == 200
            assert admin.get_balance("k").balance == 2
            assert httpx.get(base + "/v1/balance/k").status_code == 401
            text = httpx.get(base + "/metrics").text
            total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                        if line.startswith('ducto_decisions_total{operation="charge",outcome="ok"'))
            assert total == 4  # every worker's decisions in one scrape
    finally:
        drop_namespace(redis_client, ns)
        admin.close()


def test_serve_without_tokens_listens_on_loopback_only_and_says_so() -> None:
    port = free_port()
    env = {"DUCTO_SERVICE_TOKENS": ""}
    with running(["serve", "--host", "0.0.0.0", "--port", str(port)], env, port) as proc:
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").status_code == 200
        proc.terminate()
        out = proc.communicate(timeout=15)[0]
    assert "listening on 127.0.0.1 only" in out


def test_serve_refuses_a_bad_routes_file_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "routes.json"
    bad.write_text('{"routes": [{"path": "/chat"}]}')
    r = subprocess.run([*CLI, "serve", "--routes", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "exactly one of cost" in r.stderr and "Traceback" not in r.stderr


def test_serve_says_a_missing_routes_file_in_one_line_with_its_own_exit_code(tmp_path: Path) -> None:
    r = subprocess.run([*CLI, "serve", "--routes", str(tmp_path / "nope.json")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == ExitCode.NO_FILE
    assert r.stderr.startswith("ducto-redis: serve: cannot read routes file") and r.stderr.count("\n") == 1


def test_serve_and_metrics_port_without_the_service_extra_name_it(monkeypatch: Any) -> None:
    from click.testing import CliRunner

    for module in ("ducto_redis.service.run", "ducto_redis.metrics"):
        monkeypatch.setitem(sys.modules, module, None)  # as if Starlette / prometheus_client were missing
    for args in (["serve"], ["flush", "--metrics-port", "9999", "--redis-url", "redis://127.0.0.1:1/0"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == ExitCode.CONFIG, (args, r.output)
        assert "needs the [service] extra" in r.output


def test_flush_metrics_port_reports_rows_and_backlog(ledger_store: RedisStore) -> None:
    s = ledger_store.settings
    ledger_store.add_credits("m", 5)
    port = free_port()
    args = ["--redis-url", REDIS_URL, "--namespace", s.namespace, "--database-url", DATABASE_URL,
            "--ledger-schema", s.ledger_schema, "flush", "--metrics-port", str(port)]
    with running(args, {}, port):
        deadline = time.time() + 30
        text = ""
        while time.time() < deadline:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            if f'ducto_flusher_rows_total{{namespace="{s.namespace}"}} 1.0' in text:
                break
            time.sleep(0.2)
        assert f'ducto_flusher_rows_total{{namespace="{s.namespace}"}} 1.0' in text
        assert "ducto_flusher_batch_seconds_count" in text
        assert f'ducto_ledger_backlog_entries{{namespace="{s.namespace}"}}' in text


def test_the_service_protocol_turns_nagle_off_on_sockets_uvicorns_workers_accept() -> None:
    """uvicorn's workers accept on a socket made with protocol number 0, on which asyncio leaves
    Nagle's algorithm on (a keep-alive request then waits ~40 ms for a delayed ACK); the service's
    protocol turns it off when the connection is made."""
    import asyncio
    import socket

    from ducto_redis.service.nodelay import NoDelayHTTP, set_nodelay

    listener = socket.socket(socket.AF_INET)  # as uvicorn's Config.bind_socket makes it
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        assert accepted.proto == 0
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0

        class Transport(asyncio.BaseTransport):
            def get_extra_info(self, name: str, default: Any = None) -> Any:
                return accepted if name == "socket" else default

        set_nodelay(Transport())
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert "connection_made" in vars(NoDelayHTTP)
    finally:
        for s in (client, accepted, listener):
            s.close()


def test_serve_runs_uvicorn_with_the_nodelay_protocol(monkeypatch: Any) -> None:
    import uvicorn

    from ducto_redis.service.nodelay import NoDelayHTTP
    from ducto_redis.service.run import serve
    from ducto_redis.settings import Settings

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(os, "environ", dict(os.environ))  # serve exports settings for its workers
    serve(Settings(service_tokens="tok"), host="127.0.0.1", port=free_port(), workers=2)
    assert seen["http"] is NoDelayHTTP and seen["workers"] == 2
