"""Real servers for the gateway tests: uvicorn in a thread, and Caddy / NGINX started from their
Debian packages on free loopback ports with their own config in a temporary folder, as the
current user, stopped afterwards (a system-wide instance is never touched)."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
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


class Gateway:
    """A gateway process on a free loopback port, its files in a temporary folder."""

    name = ""

    def __init__(self, service_port: int, upstream_port: int, token: str, dead_port: int) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"ducto-{self.name}-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(self.dir, "error.log")
        cmd = self.command(service_port, upstream_port, token, dead_port)
        env = {**os.environ, "HOME": self.dir, "XDG_DATA_HOME": self.dir, "XDG_CONFIG_HOME": self.dir}
        out = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=out, stderr=out)
        try:
            wait_port(self.port, self.proc, log=self.log)
        except BaseException:
            self.stop()
            raise

    def command(self, service_port: int, upstream_port: int, token: str, dead_port: int) -> list[str]:
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
    """Caddy with ``forward_auth`` to the service, in front of the upstream; ``/down/*`` goes to a
    port where nothing listens (an upstream that never answers)."""

    name = "caddy"

    def command(self, service_port: int, upstream_port: int, token: str, dead_port: int) -> list[str]:
        auth = f"""forward_auth 127.0.0.1:{service_port} {{
			uri /v1/authorize
			header_up X-Ducto-Token {token}
			copy_headers {" ".join(COPIED)}
		}}"""
        conf = self.write("Caddyfile", f"""{{
	admin off
	auto_https off
	storage file_system {self.dir}/data
}}
http://127.0.0.1:{self.port} {{
	handle /down/* {{
		{auth}
		reverse_proxy 127.0.0.1:{dead_port}
	}}
	handle {{
		{auth}
		reverse_proxy 127.0.0.1:{upstream_port}
	}}
}}
""")
        return [need_binary("caddy"), "run", "--config", conf, "--adapter", "caddyfile"]


def nginx_conf(dir: str, port: int, service_port: int, upstream_port: int, token: str, dead_port: int) -> str:
    """The NGINX configuration of docs/service.md: auth_request, and the named location that gives
    the client the service's real status (402, 429, 503) although auth_request passes only 401/403."""
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    copy = "\n".join(
        f"        auth_request_set $ducto_{i} $upstream_http_{h.lower().replace('-', '_')};\n"
        f"        proxy_set_header {h} $ducto_{i};" for i, h in enumerate(COPIED))
    protected = f"""
        auth_request /_ducto_auth;
        auth_request_set $ducto_status $upstream_http_x_ducto_status;
        auth_request_set $ducto_error $upstream_http_x_ducto_error;
        auth_request_set $ducto_retry $upstream_http_retry_after;
        auth_request_set $ducto_balance $upstream_http_x_credits_remaining;
{copy}
        error_page 401 403 = @ducto_denied;"""
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
        location /down/ {{{protected}
            proxy_pass http://127.0.0.1:{dead_port};
        }}
        location / {{{protected}
            proxy_pass http://127.0.0.1:{upstream_port};
        }}
        location = /_ducto_auth {{
            internal;
            proxy_pass http://127.0.0.1:{service_port}/v1/authorize?deny_status=403;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
            proxy_set_header X-Original-Method $request_method;
            proxy_set_header X-Ducto-Token {token};
        }}
        location @ducto_denied {{
            default_type application/json;
            add_header Retry-After $ducto_retry always;
            add_header X-Credits-Remaining $ducto_balance always;
            if ($ducto_status = 402) {{ return 402 '{{"error":"$ducto_error"}}'; }}
            if ($ducto_status = 429) {{ return 429 '{{"error":"$ducto_error"}}'; }}
            if ($ducto_status = 503) {{ return 503 '{{"error":"$ducto_error"}}'; }}
            if ($ducto_status = 401) {{ return 401 '{{"error":"$ducto_error"}}'; }}
            return 403 '{{"error":"$ducto_error"}}';
        }}
    }}
}}
"""


class Nginx(Gateway):
    """NGINX with ``auth_request`` to the service, in front of the upstream (as :class:`Caddy`)."""

    name = "nginx"

    def command(self, service_port: int, upstream_port: int, token: str, dead_port: int) -> list[str]:
        conf = self.write("nginx.conf", nginx_conf(self.dir, self.port, service_port, upstream_port, token,
                                                   dead_port))
        return [need_binary("nginx"), "-p", self.dir, "-c", conf, "-e", self.log, "-g", "daemon off;"]
