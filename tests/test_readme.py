"""Every command and example in README.md is run (issue 10): a README edit changes what this module tests.

What is parsed from README.md (nothing here is a copy of a command):
- the fenced ``bash`` blocks: each line is one command, run as typed in README order in one fresh working directory
  (like a reader following along; ``examples/`` is copied there), so a later command may use an earlier one's
  output (``models list`` after ``train run``, ``-c my.toml`` after ``config --toml > my.toml``);
- the Commands table's first column: every command must exist; those without placeholders are run too, after the
  blocks, in the same directory, with the few shortening overrides in `SHORTEN` appended (a full ``tradesys demo``
  replays 1,760 daily steps);
- the fenced ``python`` blocks: each is run as a script;
- the HTTP table: every route must be in the OpenAPI document of the API (or the predict application) with that
  method, and every ``/v1`` route of the OpenAPI documents must be in the table.

Each command's output must match the key line in `EXPECT` (a command with no entry fails: add one). ``make``
lines are not run: their targets must exist in the Makefile and do what the README says. ``ray job submit`` lines
check the job script's arguments parse (``python jobs/X.py --help``); tests/test_ray_job.py submits jobs/live.py to
a real head.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from tradesys.cli import app
from tradesys.config import TradesysConfig, load_config

from .conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
TRADESYS = str(BIN / "tradesys")
TIMEOUT_S = 300

# command prefix -> regex one line of its output must match (the longest matching prefix wins)
EXPECT: dict[str, str] = {
    "tradesys demo": r"\(completed\)",
    "tradesys live": r"\(completed\)",
    "tradesys backtest": r"run backtest \(completed\)",
    "tradesys backtest sweep": r"sweep sweep-[\w-]+: 4 trials \(4 ok\)",
    "tradesys backtest walkforward": r"stitched out of sample: Sharpe -?\d+\.\d\d",
    "tradesys report": r"Report written to sheet/report\.html",
    "tradesys tca": r"^Plot written to tca/tca\.png",
    "tradesys backup": r"^Backup complete: \d+ files, manifest backups/bt/manifest\.json",
    "tradesys restore": r"^Restore complete: \d+ files verified",
    "tradesys keys create": r"^token: tsk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$",
    "tradesys rl train": r"^summary: rl\.json",
    "tradesys rl export": r"^Exported policy for 3 symbols to policy",
    "tradesys serve": r"Serving on http://",
    "tradesys config --toml": r"^\[risk\]",
    "tradesys config": r'"initial_cash": 1000000',
    "tradesys price european": r"\b5\.63\d*\b",  # the at-the-money call: BSM(100, 100, 0.5, 0.2) = 5.6372
    "tradesys price surface": r"^arbitrage report: surface clean",  # the sample chain is made from an SVI skew
    "tradesys risk var": r"VaR 99\.0% 1d",
    "tradesys risk stress": r"^\W*covid_2020\W+historical\W+-[\d,]+\.\d\d\b",
    "tradesys data generate": r"wrote [\d,]+ trades rows",
    "tradesys train run": r"registry\W+tradesys-forecaster v\d+\b",
    "tradesys models list": r"version\(s\)",
}

# appended to Commands-table commands that replay the full data set (blocks must be small as typed)
SHORTEN: dict[str, list[str]] = {
    "tradesys demo": ["-s", "data.start=2022-07-01"],
    "tradesys live": ["-s", "data.start=2022-07-01"],
    "tradesys backtest": ["-s", "data.start=2022-07-01"],
    "tradesys backtest sweep": ["-s", "data.start=2021-01-01"],
    "tradesys backtest walkforward": ["-s", "data.start=2019-01-01"],  # 2Y in sample + 6M out: four windows
}

# commands that serve until stopped: the test picks the port, waits for the key line, then sends Ctrl-C
SERVERS = ("tradesys serve",)

# what each `make` target the README names must do (a substring of its recipe)
MAKE_DOES = {"demo": "tradesys demo", "test": "pytest"}

PLACEHOLDER = re.compile(r"\.\.\.|<[^>]*>|\[[^\]]*\]|\bhost:\d+|\bV\b")


# --- parsing README.md --------------------------------------------------------------------------------------------


@cache
def readme_text() -> str:
    return README.read_text()


def fenced_blocks(lang: str) -> list[str]:
    """The bodies of the ```lang fenced blocks, in order."""
    return re.findall(rf"^```{lang}[ \t]*\n(.*?)^```", readme_text(), flags=re.M | re.S)


def bash_commands() -> list[str]:
    """One command per logical line of the bash blocks (backslash continuations joined, comments dropped)."""
    out: list[str] = []
    for block in fenced_blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                out.append(shlex.join(words) if ">" not in line else line.split(" #")[0].strip())
    return out


def table_rows(heading: str) -> list[str]:
    """First-column cells (backticks stripped) of the first table under `## heading`."""
    section = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", readme_text(), flags=re.M | re.S)
    assert section, f"README.md has no '## {heading}' section"
    rows = []
    for line in section.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if not cells or set(cells[0]) <= {"-", " "} or cells[0] in ("command", "route"):
            continue
        rows.append(cells[0])
    assert rows, f"no table rows under '## {heading}'"
    return rows


def table_commands() -> list[str]:
    return [cell.strip("`") for cell in table_rows("Commands")]


def http_routes() -> set[tuple[str, str]]:
    """(METHOD, path) pairs of the HTTP table; a cell like `GET /a`, `/b` gives the method to every path."""
    routes: set[tuple[str, str]] = set()
    for cell in table_rows("HTTP API"):
        method = ""
        for item in re.findall(r"`([^`]+)`", cell):
            parts = item.split()
            if len(parts) == 2:
                method, path = parts
            else:
                path = parts[0]
            assert method, f"HTTP table cell {cell!r}: no method"
            routes.add((method.upper(), path))
    return routes


def is_runnable(cmd: str) -> bool:
    """False for a command shown with placeholders (`...`, `<id>`, `[--opt]`, `host:9092`)."""
    return not PLACEHOLDER.search(cmd)


def key_line(cmd: str) -> str:
    cmd = _bare(cmd)
    matches = [p for p in EXPECT if cmd == p or cmd.startswith(p + " ")]
    assert matches, f"README command {cmd!r} has no expected output line in EXPECT (tests/test_readme.py): add one"
    return EXPECT[max(matches, key=len)]


def _is_group(cmd: Any) -> bool:
    """Typer vendors its own click: a group is whatever has sub-commands."""
    return isinstance(getattr(cmd, "commands", None), dict)


def _click_paths(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    if _is_group(cmd):
        for name, sub in cmd.commands.items():
            paths += _click_paths(sub, (*path, name))
    return paths


def _resolve(words: list[str]) -> tuple[str, ...]:
    """The command path named by `tradesys w1 w2 ...`; fails if the first word is not a command."""
    group = typer.main.get_command(app)
    path: tuple[str, ...] = ()
    for w in words:
        if not _is_group(group) or w.startswith("-"):
            break
        sub = group.commands.get(w)
        if sub is None:
            break
        path, group = (*path, w), sub
    return path


# --- running the tour ---------------------------------------------------------------------------------------------


@dataclass
class Result:
    cmd: str
    argv: list[str]
    rc: int
    output: str
    seconds: float


@dataclass
class Tour:
    """The README's runnable commands in order, run lazily in one working directory (prerequisites first)."""

    cwd: Path
    env: dict[str, str]
    commands: list[str]
    results: dict[int, Result] = field(default_factory=dict)

    def result(self, i: int) -> Result:
        for j in range(i + 1):
            if j not in self.results:
                self.results[j] = self._run(self.commands[j])
        return self.results[i]

    def _run(self, cmd: str) -> Result:
        redirect = None
        if ">" in cmd:
            cmd_part, redirect = (s.strip() for s in cmd.split(">", 1))
        else:
            cmd_part = cmd
        words = shlex.split(cmd_part)
        env = dict(self.env)
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):  # VAR=value prefixes, as a shell does
            name, value = words.pop(0).split("=", 1)
            env[name] = value
        assert words[0] == "tradesys", cmd
        argv = [TRADESYS, *words[1:]]
        shorten = [p for p in SHORTEN if _bare(cmd) == p or _bare(cmd).startswith(p + " ")]
        if self._from_table(cmd) and shorten:
            argv += SHORTEN[max(shorten, key=len)]  # the longest prefix only (`backtest sweep` over `backtest`)
        t0 = time.monotonic()
        if _bare(cmd).startswith(SERVERS):
            rc, out = self._serve(argv, env)
        else:
            proc = subprocess.run(argv, cwd=self.cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
            rc, out = proc.returncode, proc.stdout + proc.stderr
            if redirect:
                (self.cwd / redirect).write_text(proc.stdout)
        return Result(cmd, argv, rc, out, time.monotonic() - t0)

    def _from_table(self, cmd: str) -> bool:
        return cmd in table_commands() and cmd not in bash_commands()

    def _serve(self, argv: list[str], env: dict[str, str]) -> tuple[int, str]:
        """Start the server on a free port, wait for its key line, check /health and the OpenAPI doc, Ctrl-C it."""
        port = free_port()
        log = self.cwd / f"serve-{port}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen([*argv, "--port", str(port)], cwd=self.cwd, env=env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + TIMEOUT_S
            while time.monotonic() < deadline and proc.poll() is None and "Serving on" not in log.read_text():
                time.sleep(0.5)
            if proc.poll() is not None:
                return proc.returncode, log.read_text()
            base = f"http://127.0.0.1:{port}"
            with urllib.request.urlopen(f"{base}/health", timeout=30) as r:
                health = r.read().decode()
            with urllib.request.urlopen(f"{base}/openapi.json", timeout=30) as r:
                doc = r.read().decode()
            os.killpg(proc.pid, signal.SIGINT)
            rc = proc.wait(timeout=60)
            return rc, log.read_text() + "\n" + health + "\n" + doc[:2000]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def _bare(cmd: str) -> str:
    """The command without leading VAR=value assignments."""
    return re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+", "", cmd)


def _path_of(cmd: str) -> tuple[str, ...]:
    """The `tradesys` command path a README line runs (`train run` for `tradesys train run --kinds lstm`)."""
    return _resolve(shlex.split(_bare(cmd).split(">")[0])[1:])


def tour_commands() -> list[str]:
    """Runnable `tradesys` commands: the bash blocks in order, then table commands whose command no block runs
    (the table's other rows have their options parsed by `test_table_command_exists`; each run starts Ray)."""
    blocks = [c for c in bash_commands() if _bare(c).startswith("tradesys") and is_runnable(c)]
    covered = {_path_of(c) for c in blocks}
    table = [c for c in table_commands() if c.startswith("tradesys") and is_runnable(c) and _path_of(c) not in covered]
    return list(dict.fromkeys([*blocks, *table]))


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Tour:
    cwd = tmp_path_factory.mktemp("readme")
    if any("examples/" in c for c in tour_commands()) and (ROOT / "examples").is_dir():
        shutil.copytree(ROOT / "examples", cwd / "examples")
    env = {**os.environ, "COLUMNS": "200", "RAY_USAGE_STATS_ENABLED": "0", "TRADESYS_API_KEY": "readme-test-key"}
    for var in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "TRADESYS_KAFKA_BOOTSTRAP"):
        env.pop(var, None)
    return Tour(cwd, env, tour_commands())


COMMANDS = tour_commands()


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("i", range(len(COMMANDS)), ids=[c[:60] for c in COMMANDS])
def test_readme_command_runs(tour: Tour, i: int) -> None:
    r = tour.result(i)
    assert r.rc == 0, f"`{r.cmd}` exited {r.rc} after {r.seconds:.0f}s:\n{r.output[-3000:]}"
    pattern = key_line(r.cmd)
    assert re.search(pattern, r.output, flags=re.M), f"`{r.cmd}`: no line matches {pattern!r}:\n{r.output[-3000:]}"
    for name in written_paths(r.cmd):  # what the command says it writes is there and not empty
        path = tour.cwd / name
        assert path.exists() and (any(path.iterdir()) if path.is_dir() else path.stat().st_size > 0), name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        if name.endswith(".toml"):  # the template loads back as the default configuration
            assert load_config(path, []) == TradesysConfig(), name


def written_paths(cmd: str) -> list[str]:
    """Files a README command names as its output: `> FILE`, `--plot FILE`, `--out PATH`."""
    paths = re.findall(r"(?:>|--plot|--out)\s+(\S+)", cmd)
    return [p.rstrip("/") for p in paths]


@pytest.mark.slow
@pytest.mark.ray
def test_readme_kafka_command(tansu_broker: str, tmp_path: Path) -> None:
    """The table's Kafka row, run with its placeholder `host:9092` pointed at a real Kafka-protocol broker (Tansu),
    on a fresh topic and group, shortened to a quarter of data: the loop reads its bars through Kafka to the end."""
    rows = [c for c in table_commands() if "data.bus=kafka" in c]
    assert rows, "the Commands table has no Kafka row"
    topic = f"readme-{os.getpid()}-{time.monotonic_ns()}"
    for cmd in rows:
        assert "host:9092" in cmd, cmd
        words = shlex.split(cmd.replace("host:9092", tansu_broker))
        argv = [TRADESYS, *words[1:], "-s", "data.start=2022-10-01", "-s", f'data.topic="{topic}"',
                "-s", f'data.consumer_group="{topic}"']  # fmt: skip
        env = {**os.environ, "COLUMNS": "200", "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"`{cmd}` exited {proc.returncode}:\n{out[-3000:]}"
        assert re.search(key_line(cmd), out, flags=re.M), out[-3000:]


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("i", range(len(fenced_blocks("sh"))))
def test_readme_shell_session(i: int, tmp_path: Path) -> None:
    """A ```sh block is one shell session (exports, a server in the background, the command that uses it): bash
    runs it whole, as typed, with this venv first on PATH; its background jobs are stopped after it. The Alpaca
    session must end with a completed live run that traded."""
    block = fenced_blocks("sh")[i]
    script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n" + block
    env = {**os.environ, "COLUMNS": "200", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    for var in ("RAY_ADDRESS", "APCA_API_BASE_URL", "APCA_DATA_STREAM_URL", "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"):
        env.pop(var, None)
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    if "broker.kind='\"alpaca\"'" in block:
        assert re.search(r"\(completed\)", out), out[-3000:]
        fills = re.search(r"│ fills\s+│\s+([\d,]+)", out)
        assert fills and int(fills.group(1).replace(",", "")) > 0, out[-3000:]
        assert "Alpaca paper server on http://127.0.0.1:8765" in out, out[-3000:]


@pytest.fixture()
def venv_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python` in a job entrypoint resolves on the head's PATH: this venv's first (before `ray_head` starts)."""
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _job_lines() -> list[str]:
    return [c for c in [*bash_commands(), *table_commands()] if _bare(c).startswith("ray job submit")]


@pytest.mark.slow
@pytest.mark.ray
def test_readme_ray_jobs_on_a_head(venv_on_path: None, ray_head: tuple[str, dict[str, str], str]) -> None:
    """The README's `ray job submit` lines without placeholders, submitted as typed (plus the head's address and
    `RAY_AUTH_MODE=token`, as the README says) to a real head with token authentication; jobs/live.py with its
    arguments is covered by tests/test_ray_job.py."""
    address, env, _gcs = ray_head
    runnable = [c for c in _job_lines() if is_runnable(c)]
    assert runnable, "no runnable `ray job submit` line in the README"
    for cmd in runnable:
        words = shlex.split(_bare(cmd))
        argv = [str(BIN / "ray"), "job", "submit", f"--address={address}", *words[3:]]
        for _ in range(12):  # the dashboard answers before the head's job agent registers: retry only that
            proc = subprocess.run(argv, cwd=ROOT, env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True,
                                  text=True, timeout=TIMEOUT_S)  # fmt: skip
            if proc.returncode == 0 or "No available agent" not in proc.stdout + proc.stderr:
                break
            time.sleep(5)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"`{cmd}` exited {proc.returncode}:\n{out[-3000:]}"
        assert "succeeded" in out.lower(), out[-3000:]


# --- fast checks --------------------------------------------------------------------------------------------------


def test_readme_is_parsed() -> None:
    """The parser sees the README's commands: a parse that finds nothing would make every other test vacuous."""
    assert "make demo" in bash_commands()
    assert any(c.startswith("tradesys demo") for c in table_commands())
    assert len(COMMANDS) >= 5
    assert fenced_blocks("python")
    assert any("tradesys paper-server" in b for b in fenced_blocks("sh"))
    assert len(http_routes()) >= 10


def test_every_runnable_command_has_a_key_line() -> None:
    for cmd in COMMANDS:
        key_line(cmd)


@pytest.mark.parametrize("cmd", table_commands())
def test_table_command_exists(cmd: str) -> None:
    words = shlex.split(cmd.replace("...", ""))
    if words[0] == "tradesys":
        path = _resolve(words[1:])
        assert path and path[0] == words[1], f"`{cmd}`: `tradesys {words[1]}` is not a command"
        target = typer.main.get_command(app)
        for w in path:
            assert _is_group(target)
            target = target.commands[w]
        runs_itself = getattr(target, "invoke_without_command", False)  # `backtest`: a command with subcommands
        assert not _is_group(target) or runs_itself, f"`{cmd}` names a group, not a command"
        if is_runnable(cmd):  # its options parse (without running it)
            args = words[1 + len(path) :]
            try:
                target.make_context(path[-1], list(args))
            except Exception as exc:
                pytest.fail(f"`{cmd}`: {type(exc).__name__}: {exc}")
    elif words[:3] == ["ray", "job", "submit"]:
        _check_job(words)
    else:
        pytest.fail(f"Commands table: {cmd!r} is neither a tradesys command nor a ray job")


def _check_job(words: list[str]) -> None:
    """`ray job submit ... -- python jobs/X.py ARGS`: the script exists and its arguments parse."""
    assert "--" in words, words
    rest = words[words.index("--") + 1 :]
    assert rest[0] == "python" and rest[1].startswith("jobs/"), words
    script = ROOT / rest[1]
    assert script.is_file(), f"{rest[1]} does not exist"
    args = [a for a in rest[2:] if is_runnable(a) and "=..." not in a]
    proc = subprocess.run([sys.executable, str(script), *args, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, f"{rest[1]} --help: {proc.stderr[-2000:]}"
    assert "usage" in proc.stdout.lower(), proc.stdout[:500]


def test_ray_job_lines_in_blocks() -> None:
    for cmd in bash_commands():
        if _bare(cmd).startswith("ray job submit"):
            _check_job(shlex.split(_bare(cmd)))


def test_make_lines() -> None:
    """`make X` lines: the target exists and its recipe does what the README says; `make demo` installs first."""
    makefile = (ROOT / "Makefile").read_text()
    targets = {m.group(1): m.group(2) for m in re.finditer(r"^([\w-]+):([^\n]*)\n((?:\t[^\n]*\n)*)", makefile, re.M)}
    recipes = {m.group(1): m.group(3) for m in re.finditer(r"^([\w-]+):([^\n]*)\n((?:\t[^\n]*\n)*)", makefile, re.M)}
    named = [shlex.split(c)[1] for c in bash_commands() if c.startswith("make ")]
    assert named
    for target in named:
        assert target in targets, f"README runs `make {target}`: no such target"
        assert target in MAKE_DOES, f"README runs `make {target}`: say what it must do in MAKE_DOES"
        assert MAKE_DOES[target] in recipes[target], f"make {target}: recipe {recipes[target]!r}"
        assert "install" in targets[target].split(), f"make {target} does not depend on install"


HELP_PATHS = _click_paths(typer.main.get_command(app))


@pytest.mark.parametrize("path", HELP_PATHS, ids=[" ".join(p) or "tradesys" for p in HELP_PATHS])
def test_help(path: tuple[str, ...]) -> None:
    """`tradesys ... --help` works for every command and subcommand, and says what the command is for."""
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert re.search(r"Usage: .*" + re.escape(" ".join(path)), res.output), res.output
    cmd = typer.main.get_command(app)
    for w in path:
        cmd = cmd.commands[w]  # type: ignore[attr-defined]
    assert (cmd.help or "").strip(), f"`tradesys {' '.join(path)}` has no help text"


@pytest.mark.parametrize("i", range(len(fenced_blocks("python"))))
def test_python_example(i: int, tmp_path: Path) -> None:
    script = tmp_path / f"example_{i}.py"
    script.write_text(fenced_blocks("python")[i])
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _openapi_routes() -> set[tuple[str, str]]:
    """Every (METHOD, path) in the OpenAPI documents of the API (with a ledger) and of the predict application."""
    from fastapi import FastAPI
    from pydantic import SecretStr

    from tradesys.serve.app import create_api
    from tradesys.serve.predict import RoutingConfig, predict_router

    routes: set[tuple[str, str]] = set()
    key = SecretStr("readme-test-key")
    predict = FastAPI()
    predict.include_router(predict_router(None, None, config=RoutingConfig(champion="1"), api_key=key))  # type: ignore[arg-type]
    for api in (create_api("sqlite:///:memory:", api_key=key), predict):
        for path, ops in api.openapi()["paths"].items():
            routes |= {(m.upper(), path) for m in ops}
    return routes


def _same_path(a: str, b: str) -> bool:
    """Paths equal up to the names of path parameters (`{id}` in the README, `{client_order_id}` in the API)."""
    return re.sub(r"\{[^}]*\}", "{}", a) == re.sub(r"\{[^}]*\}", "{}", b)


def test_http_table_matches_openapi() -> None:
    api = _openapi_routes()
    readme = http_routes()
    missing = [r for r in readme if not any(r[0] == a[0] and _same_path(r[1], a[1]) for a in api)]
    assert not missing, f"README HTTP table routes not in the OpenAPI documents: {sorted(missing)}"
    undocumented = [a for a in api if a[1].startswith("/v1") and not any(
        a[0] == r[0] and _same_path(r[1], a[1]) for r in readme)]  # fmt: skip
    assert not undocumented, f"/v1 routes missing from the README HTTP table: {sorted(undocumented)}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_doc_links_resolve() -> None:
    """Every relative link in README.md and docs/ names a file that exists, and an anchor that is a heading there
    (the pages point at docs/benchmarks.md sections instead of repeating its figures)."""
    broken = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and anchor not in {_slug(h) for h in re.findall(r"^#+ (.*)$", dest.read_text(), re.M)}:
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


# figures with units that are settings or quoted aims, not measurements (a reviewed list: add with care)
NOT_MEASUREMENTS = (
    "defaults it to 10 ms", '"< 1 ms per inference"', '"under 100 ms on one core"', "1 ms .. 5 s buckets",
)


def test_pages_do_not_repeat_benchmark_tables() -> None:
    """Throughput and latency figures live in docs/benchmarks.md only: other pages link to it."""
    unit = re.compile(r"\d[\d,.]*\s?(?:ms|µs|us)\b|\d[\d,.]*\s?(?:[kM]\s)?(?:updates|orders|rows|labels|trades|"
                      r"scenarios|requests|ent|entities|options)/s\b|\d[\d,.]*\s?(?:rows|requests)/s")
    offenders = []
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        if page.name == "benchmarks.md":
            continue
        for n, line in enumerate(page.read_text().splitlines(), 1):
            if unit.search(line) and "benchmarks.md" not in line and not any(a in line for a in NOT_MEASUREMENTS):
                offenders.append(f"{page.name}:{n}: {line.strip()[:100]}")
    assert not offenders, "\n".join(offenders)
