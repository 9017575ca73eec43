"""Real servers for the gateway tests: uvicorn in a thread, and Caddy / NGINX started from their
Debian packages on free loopback ports with the configuration docs/service.md shows (its addresses
and token replaced) in a temporary folder, as the current user, stopped afterwards (a system-wide
instance is never touched)."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from conftest import REDIS_URL, drop_namespace, new_namespace

from ducto_redis import RedisStore
from ducto_redis.gate import UPSTREAM_HEADERS

# the headers the service answers on an admitted request, copied onto the upstream request
COPIED = list(UPSTREAM_HEADERS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None, seconds: float = 15, log: str = "") -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}: {log and _tail(log)}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds}s {log and _tail(log)}")


def _tail(path: str) -> str:
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        return f.read()[-2000:]
    return ""


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def own_namespace(redis_client: Any) -> Iterator[RedisStore]:
    """A sync store on a fresh namespace of the real Redis (the tests' admin), deleted afterwards."""
    admin = RedisStore.from_url(REDIS_URL, namespace=new_namespace())
    try:
        yield admin
    finally:
        drop_namespace(redis_client, admin.settings.namespace)
        admin.close()


def funded_user(admin: RedisStore, credits: int, prefix: str = "u") -> str:
    """A new user id with ``credits``."""
    uid = f"{prefix}-{new_namespace()}"
    admin.add_credits(uid, credits)
    return uid


def need_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        raise RuntimeError(f"{name} is not installed: .ci/run installs it (apt-get install -y {name})")
    return path


DOCS = Path(__file__).resolve().parent.parent / "docs" / "service.md"
SERVICE, UPSTREAM, TOKEN_IN_DOCS = "127.0.0.1:8080", "127.0.0.1:9000", "change-me"


def doc_config(heading: str) -> str:
    """The first fenced block after ``heading`` in docs/service.md: a configuration as users copy it."""
    text = DOCS.read_text(encoding="utf-8")
    m = re.compile(r"```[a-z]*\n(.*?)```", re.S).search(text, text.index(heading))
    assert m is not None, f"no configuration after {heading!r} in docs/service.md"
    return m.group(1)


def placed(conf: str, service_port: int, upstream_port: int, token: str) -> str:
    """A documented configuration with the tests' addresses and token in place of the docs' ones."""
    for placeholder in (SERVICE, UPSTREAM, TOKEN_IN_DOCS):
        assert placeholder in conf, f"the documented configuration no longer names {placeholder}"
    return (conf.replace(SERVICE, f"127.0.0.1:{service_port}").replace(UPSTREAM, f"127.0.0.1:{upstream_port}")
            .replace(TOKEN_IN_DOCS, token))


class Gateway:
    """A gateway process on a free loopback port running the configuration docs/service.md shows,
    in front of the upstream at ``upstream_port`` (a free port where nothing listens: an upstream
    the gateway cannot reach); its files in a temporary folder."""

    name = ""

    def __init__(self, service_port: int, upstream_port: int, token: str) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"ducto-{self.name}-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(self.dir, "error.log")
        cmd = self.command(service_port, upstream_port, token)
        env = {**os.environ, "HOME": self.dir, "XDG_DATA_HOME": self.dir, "XDG_CONFIG_HOME": self.dir}
        out = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=out, stderr=out)
        try:
            wait_port(self.port, self.proc, log=self.log)
        except BaseException:
            self.stop()
            raise

    def command(self, service_port: int, upstream_port: int, token: str) -> list[str]:
        raise NotImplementedError

    def write(self, name: str, text: str) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._out.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Caddy(Gateway):
    """Caddy with docs/service.md's site block (``forward_auth``, ``handle_errors`` calling ``/v1/void``)."""

    name = "caddy"

    def command(self, service_port: int, upstream_port: int, token: str) -> list[str]:
        site = placed(doc_config("### Caddy"), service_port, upstream_port, token)
        assert site.startswith("example.com {")
        conf = self.write("Caddyfile", f"""{{
	admin off
	auto_https off
	storage file_system {self.dir}/data
}}
http://127.0.0.1:{self.port} {site[len("example.com "):]}""")
        return [need_binary("caddy"), "run", "--config", conf, "--adapter", "caddyfile"]


def nginx_conf(dir: str, port: int, service_port: int, upstream_port: int, token: str) -> str:
    """An nginx.conf whose one server holds docs/service.md's locations (``auth_request``, the named
    location giving the client the service's real status, the one calling ``/v1/void``)."""
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    locations = placed(doc_config("### NGINX"), service_port, upstream_port, token)
    return f"""{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
{locations}
    }}
}}
"""


class Nginx(Gateway):
    """NGINX with docs/service.md's locations (as :class:`Caddy`)."""

    name = "nginx"

    def command(self, service_port: int, upstream_port: int, token: str) -> list[str]:
        conf = self.write("nginx.conf", nginx_conf(self.dir, self.port, service_port, upstream_port, token))
        return [need_binary("nginx"), "-p", self.dir, "-c", conf, "-e", self.log, "-g", "daemon off;"]
