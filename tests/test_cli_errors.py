"""`tradesys config`: the TOML template round-trips to the defaults, secrets stay off the terminal, honest help."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import typer
from typer.testing import CliRunner

from tradesys.cli import app
from tradesys.config import TradesysConfig, load_config

runner = CliRunner()


def _fields(model: type, prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, TradesysConfig.__mro__[1]):  # a section
            out += _fields(ann, f"{name}.")
        else:
            out.append(prefix + name)
    return out


def test_toml_template_loads_back_as_the_default_config(tmp_path: Path) -> None:
    r = runner.invoke(app, ["config", "--toml"])
    assert r.exit_code == 0, r.output
    path = tmp_path / "tradesys.toml"
    path.write_text(r.stdout)
    tree = tomllib.loads(r.stdout)
    assert load_config(path) == TradesysConfig()  # every value printed is the default
    back = runner.invoke(app, ["config", "-c", str(path)])
    assert back.exit_code == 0, back.output
    assert json.loads(back.stdout) == json.loads(TradesysConfig().model_dump_json())
    # every setting is in the template: set to its default, or commented out when unset (TOML has no null)
    lines = r.stdout.splitlines()
    for dotted in _fields(TradesysConfig):
        section, _, name = dotted.rpartition(".")
        default = TradesysConfig()
        for part in filter(None, [section]):
            default = getattr(default, part)
        value = getattr(default, name)
        if value is None:
            assert any(line.startswith(f"# {name} = ") for line in lines), dotted
        else:
            assert name in (tree[section] if section else tree), dotted
        # the line just above each setting is its description comment, never a placeholder
        i = next(i for i, line in enumerate(lines) if line.startswith((f"{name} = ", f"# {name} = ")))
        assert lines[i - 1].startswith("# ") and "(no description)" not in lines[i - 1], dotted


def test_config_masks_the_ledger_password() -> None:
    """Regression: `tradesys config` printed the PostgreSQL password, and a bad URL's error echoed it."""
    ok = runner.invoke(app, ["config", "-s", 'ledger.url="postgresql://trader:s3cret@db.internal:5432/prod"'])
    assert ok.exit_code == 0, ok.output
    assert "s3cret" not in ok.output
    assert json.loads(ok.stdout)["ledger"]["url"] == "postgresql://trader:***@db.internal:5432/prod"
    bad = runner.invoke(app, ["config", "-s", 'ledger.url="mysql://admin:s3cret@h/db"'])
    assert bad.exit_code == 2 and "s3cret" not in bad.output
    assert bad.stderr.strip() == ("config error: ledger.url: must start with sqlite:// or postgresql://, "
                                  "got 'mysql://admin:***@h/db'")


def test_help_shows_no_value_for_flags() -> None:
    """Regression: typer 0.29 printed `--json <bool>` in every help, as if a flag took a value."""
    group = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        paths.append([name])
        paths += [[name, sub] for sub in getattr(cmd, "commands", {})]
    for p in paths:
        r = runner.invoke(app, [*p, "--help"], terminal_width=200)
        assert r.exit_code == 0, (p, r.output)
        assert "<bool>" not in r.output, p
    assert "<path>" in runner.invoke(app, ["backtest", "--help"], terminal_width=200).output  # values still typed


def test_json_output_is_strict() -> None:
    """`--json` promises valid JSON: NaN and inf become null, numpy values plain numbers, dates ISO strings."""
    from datetime import date

    import numpy as np

    from tradesys.commands.output import dumps

    text = dumps({"nan": float("nan"), "inf": np.float64(-np.inf), "f32": np.float32(1.5), "i": np.int64(3),
                  "arr": np.array([1.0, np.nan]), "day": date(2020, 1, 2), "ok": np.bool_(True), 4: None})

    def refuse(name: str) -> None:
        raise AssertionError(name)

    assert json.loads(text, parse_constant=refuse) == {"nan": None, "inf": None, "f32": 1.5, "i": 3,
                                                       "arr": [1.0, None], "day": "2020-01-02", "ok": True, "4": None}
