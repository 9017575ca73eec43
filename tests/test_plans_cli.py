"""`ducto-redis pricing validate | set | get`: a pricing file checked, published and read back."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REDIS_URL, drop_namespace, new_namespace

from ducto_redis import RedisStore
from ducto_redis.cli import main

GOOD = {
    "models": {"gpt-4o": "input_tokens * 0.0025 + output_tokens * 0.01"},
    "tools": {"web_search": "tool_calls * 2", "_default": "tool_calls * 0.5"},
    "plans": {"pro": {"id": "pro", "name": "Pro", "free_allowance": 100}},
}


def write(tmp_path: Path, name: str, data: Any) -> str:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(p)


def test_validate_accepts_a_good_file_and_refuses_a_bad_formula(tmp_path: Path, capsys: Any) -> None:
    assert main(["pricing", "validate", write(tmp_path, "p.json", GOOD)]) == 0
    assert "valid: 1 models, 2 tools" in capsys.readouterr().out
    bad = {**GOOD, "models": {"gpt-4o": "__import__('os')"}}
    assert main(["pricing", "validate", write(tmp_path, "bad.json", bad)]) == 1
    assert "invalid pricing config" in capsys.readouterr().err


def test_set_publishes_a_new_version_and_get_prints_it(tmp_path: Path, capsys: Any, redis_client: Any) -> None:
    ns = new_namespace()
    base = ["--redis-url", REDIS_URL, "--namespace", ns]
    try:
        assert main([*base, "pricing", "get"]) == 1
        assert main([*base, "pricing", "set", write(tmp_path, "p.json", GOOD), "--label", "launch"]) == 0
        assert "version 1" in capsys.readouterr().out
        assert main([*base, "pricing", "get"]) == 0
        printed = json.loads(capsys.readouterr().out)
        assert (printed["version"], printed["label"]) == (1, "launch")
        assert printed["config"]["plans"]["pro"]["free_allowance"] == 100
        active = RedisStore.from_url(REDIS_URL, namespace=ns).get_active_pricing()
        assert active is not None and active.config.tools["web_search"] == "tool_calls * 2"
    finally:
        drop_namespace(redis_client, ns)


def test_a_bad_file_is_never_published(tmp_path: Path, redis_client: Any) -> None:
    ns = new_namespace()
    try:
        bad = write(tmp_path, "bad.json", {"models": {"m": "input_tokens ** 9"}})
        assert main(["--redis-url", REDIS_URL, "--namespace", ns, "pricing", "set", bad]) == 1
        assert RedisStore.from_url(REDIS_URL, namespace=ns).get_active_pricing() is None
    finally:
        drop_namespace(redis_client, ns)


YAML = """models:
  gpt-4o: input_tokens * 0.0025 + output_tokens * 0.01
tools:
  web_search: tool_calls * 2
"""


@pytest.mark.skipif(importlib.util.find_spec("yaml") is not None, reason="PyYAML is installed")
def test_a_yaml_file_without_pyyaml_gets_a_clear_message(tmp_path: Path, capsys: Any) -> None:
    assert main(["pricing", "validate", write(tmp_path, "p.yaml", YAML)]) == 1
    assert "needs PyYAML" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("yaml") is None, reason="PyYAML is not installed")
def test_a_yaml_file_validates_with_pyyaml(tmp_path: Path) -> None:
    assert main(["pricing", "validate", write(tmp_path, "p.yaml", YAML)]) == 0
