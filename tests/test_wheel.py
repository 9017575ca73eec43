"""The built wheel carries the Lua scripts inside the package, and a store installed from it runs."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHARGE = """
import ducto_redis
from ducto_redis import MemoryStore
s = MemoryStore("wheel")
s.add_credits("u", 10)
r = s.charge("u", 3, "x")
assert (r.error, r.balance_after) == (None, 7), r
print(ducto_redis.__file__)
"""


def test_a_store_installed_from_the_wheel_in_a_fresh_venv_finds_its_lua_and_charges(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("ducto_redis-*.whl")
    lua = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "lua").rglob("*.lua"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert sorted(n.removeprefix("ducto_redis/") for n in names if n.endswith(".lua")) == lua
    assert len(names) == len(set(names))  # each file once (the lua/ symlink is not followed twice)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    # the dependencies come from this environment's site-packages (a plain path: its .pth files, the
    # editable install of this checkout among them, are not read there)
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    done = subprocess.run([str(python), "-c", CHARGE], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert Path(done.stdout.strip()).is_relative_to(site / "ducto_redis")
