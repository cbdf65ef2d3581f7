"""``es serve --config``, the ``ES_*`` variables and ``es config check`` (docs/operations.md, 5):
every flag has a key and a variable, flag > env > file > default, mistakes are one line
naming the file's line, and a real ``es serve`` takes its listener and durability from a file."""

from __future__ import annotations

import itertools
import os
import re
import select
import signal
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any

import entry_points
import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner, Result

import eventstore
from eventstore.cli import serve as serve_cli
from eventstore.cli.app import app
from eventstore.cli.config_cmd import render
from eventstore.cli.config_file import Effective, Setting, effective, key_lines, settings_of, value_problem

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "es.toml"
OPERATIONS = ROOT / "docs" / "operations.md"
TIMEOUT_S = 30.0


@pytest.fixture(autouse=True)
def no_es_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests set the variables they mean; none leaks in from the environment."""
    for name in list(os.environ):  # bounded by the environment
        if name.startswith("ES_"):
            monkeypatch.delenv(name)


def serve_command() -> Any:
    one = typer.Typer(add_completion=False)
    one.command()(serve_cli.serve)
    return get_command(one)


def resolve(args: list[str], env: dict[str, str] | None = None,
            monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, Effective]:
    """``es serve ARGS`` resolved (not run): each setting's value and source, by key."""
    if monkeypatch is not None:
        for name, value in (env or {}).items():  # bounded by the test's variables
            monkeypatch.setenv(name, value)
    ctx = serve_command().make_context("serve", args)
    return {item.setting.key: item for item in effective(ctx)}


def es(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), prog_name="es", env=env)


def table() -> list[Setting]:
    return settings_of(serve_command().params)


# --- the table -------------------------------------------------------------------------------------


def test_every_serve_option_has_a_key_and_a_variable() -> None:
    options = [p for p in serve_command().params if p.param_type_name == "option"]
    rows = {row.name: row for row in table()}
    assert {p.name for p in options} - set(rows) == {"config"}  # the file does not name itself
    assert len({row.dotted for row in rows.values()}) == len(rows)
    assert len({row.env for row in rows.values()}) == len(rows)
    for param in options:  # bounded by the options
        if param.name == "config":
            assert param.envvar == "ES_CONFIG"
            continue
        row = rows[param.name]
        long_flag = next(o for o in param.opts if o.startswith("--"))
        assert row.flag == long_flag and row.key == long_flag[2:].replace("-", "_")
        assert row.env == f"ES_{row.key.upper()}"


STRING_SAMPLES = ("127.0.0.1:9777", "interval", "sample")


def _sample(row: Setting) -> tuple[Any, str]:
    """A value of the row's type that is not its default, as TOML and as an environment string."""
    if row.kind is bool:
        value: Any = not row.default
        text = "true" if value else "false"
    elif row.kind is int:
        value = 7 if row.default != 7 else 8
        text = str(value)
    elif row.kind is float:
        value = 7.5
        text = "7.5"
    elif row.choices:
        value = next(c for c in row.choices if c != row.default)
        text = value
    else:  # a string its value check (if any) takes
        value = next(c for c in STRING_SAMPLES if c != row.default and value_problem(row, c) is None)
        text = value
    if row.multiple:
        return [value], text
    return value, text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def test_every_setting_is_read_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = table()
    env = {row.env: _sample(row)[1] for row in rows}
    got = resolve([], env, monkeypatch)
    for row in rows:  # bounded by the table
        value = _sample(row)[0]
        assert got[row.key].source == f"env {row.env}", row
        assert got[row.key].value == (tuple(value) if row.multiple else value) or \
            list(got[row.key].value) == value, row


def test_every_setting_is_read_from_the_file_with_its_line(tmp_path: Path) -> None:
    rows = table()
    lines = ["# every key"]
    where = {}
    for section, group in itertools.groupby(sorted(rows, key=lambda r: r.section), key=lambda r: r.section):
        lines += ["", f"[{section}]"]
        for row in group:  # bounded by the table
            lines.append(f"{row.key} = {_toml_value(_sample(row)[0])}")
            where[row.key] = len(lines)
    path = tmp_path / "all.toml"
    path.write_text("\n".join(lines) + "\n")
    got = resolve(["--config", str(path)])
    for row in rows:  # bounded by the table
        assert got[row.key].source == f"file {path}:{where[row.key]}", row
        value = _sample(row)[0]
        assert got[row.key].value == value or list(got[row.key].value) == value, row


# --- precedence ------------------------------------------------------------------------------------

CASES = [  # key, flag args, env value, file line, default
    ("replica_lag_ms", ["--replica-lag-ms", "111"], "222", "replica_lag_ms = 333", 10_000),
    ("durability", ["--durability", "none"], "interval", 'durability = "replicated"', "fsync"),
    ("auto_create_topics", ["--auto-create-topics"], "true", "auto_create_topics = true", False),
]
SECTIONS = {"replica_lag_ms": "replication", "durability": "durability", "auto_create_topics": "topics"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("given", list(itertools.product([False, True], repeat=3)),
                         ids=lambda g: "+".join(n for n, on in zip(("flag", "env", "file"), g, strict=True)
                                                if on) or "none")
def test_flag_then_env_then_file_then_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              case: tuple[str, list[str], str, str, Any],
                                              given: tuple[bool, bool, bool]) -> None:
    key, flag_args, env_text, file_line, default = case
    with_flag, with_env, with_file = given
    path = tmp_path / "es.toml"
    path.write_text(f"# precedence\n[{SECTIONS[key]}]\n{file_line}\n")
    args = (flag_args if with_flag else []) + (["--config", str(path)] if with_file else [])
    got = resolve(args, {f"ES_{key.upper()}": env_text} if with_env else {}, monkeypatch)[key]
    from_flag = {"replica_lag_ms": 111, "durability": "none", "auto_create_topics": True}
    from_env = {"replica_lag_ms": 222, "durability": "interval", "auto_create_topics": True}
    from_file = {"replica_lag_ms": 333, "durability": "replicated", "auto_create_topics": True}
    if with_flag:
        expected = (from_flag[key], f"flag --{key.replace('_', '-')}")
    elif with_env:
        expected = (from_env[key], f"env ES_{key.upper()}")
    elif with_file:
        expected = (from_file[key], f"file {path}:3")
    else:
        expected = (default, "default")
    assert (got.value, got.source) == expected


def test_a_false_variable_overrides_a_true_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "es.toml"
    path.write_text("[topics]\nauto_create_topics = true\n")
    got = resolve(["--config", str(path)], {"ES_AUTO_CREATE_TOPICS": "false"}, monkeypatch)
    item = got["auto_create_topics"]
    assert (item.value, item.source) == (False, "env ES_AUTO_CREATE_TOPICS")


# --- mistakes --------------------------------------------------------------------------------------

MISTAKES = [
    ("unknown-key", '# a\n[listeners]\nlisten = "127.0.0.1:0"\n\nlistn = "x"\n',
     "{f}:5: unknown key listeners.listn (did you mean listen?)"),
    ("misplaced-key", '[topics]\nreplica_id = 2\n',
     "{f}:2: unknown key topics.replica_id (it belongs in [replication])"),
    ("top-level-key", '\n\nlisten = "127.0.0.1:0"\n',
     "{f}:3: unknown key listen outside any section (it belongs in [listeners])"),
    ("unknown-section", '[listeners]\nlisten = "127.0.0.1:0"\n[securty]\n',
     "{f}:3: unknown section [securty] (did you mean [security]?)"),
    ("bad-int", '[replication]\n  replica_id = "one"\n',
     "{f}:2: replication.replica_id must be an integer, got 'one'"),
    ("bool-is-no-int", '[replication]\nreplica_id = true\n',
     "{f}:2: replication.replica_id must be an integer, got True"),
    ("bad-bool", '[topics]\nauto_create_topics = "yes"\n',
     "{f}:2: topics.auto_create_topics must be true or false, got 'yes'"),
    ("bad-string", '[listeners]\nlisten = 9092\n', "{f}:2: listeners.listen must be a string, got 9092"),
    ("inline-table", 'listeners = { listen = 9092 }\n', "{f}:1: listeners.listen must be a string, got 9092"),
    ("bad-durability", '[durability]\ndurability = "sometimes"\n',
     "{f}:2: durability.durability: must be one of fsync, interval, none, replicated, got 'sometimes'"),
    ("bad-address", '[store]\ndata = """\nlisten = 1\n"""\n[listeners]\nlisten = "nowhere"\n',
     "{f}:6: listeners.listen: must be 'HOST:PORT' with a port in 0..65535, got 'nowhere'"),
    ("not-toml", '[replication]\nreplica_id = 1\n[durability\n',
     "{f}:3: not valid TOML: Expected ']' at the end of a table declaration"),
]


@pytest.mark.parametrize(("text", "message"), [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_one_line_naming_the_files_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "es.toml"
    path.write_text(text)
    data = tmp_path / "never-made"
    for args in (["config", "check", str(path)], ["serve", "--data", str(data), "--config", str(path)]):
        result = es(*args)
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines() == ["error: " + message.format(f=path)]
        assert result.stdout == ""
    assert not data.exists()  # nothing opened, nothing written


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    result = es("config", "check", str(tmp_path / "absent.toml"))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path / 'absent.toml'}: cannot read the configuration file: No such file or directory"]


def test_a_bad_variable_is_named_by_config_check(tmp_path: Path) -> None:
    path = tmp_path / "es.toml"
    path.write_text("")
    result = es("config", "check", str(path), env={"ES_DURABILITY": "bogus"})
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: env ES_DURABILITY: durability.durability: must be one of fsync, interval, none, replicated, "
        "got 'bogus'"]


def test_key_lines_finds_headers_dotted_and_quoted_keys() -> None:
    text = ('a = 1\n[t]\n"q k" = 2\nx.y = 3\nm = """\nfake = 4\n"""\n[[arr]]\nz = 5\n'
            "[t.sub]\n w = 6\n")
    assert key_lines(text) == {("a",): 1, ("t",): 2, ("t", "q k"): 3, ("t", "x", "y"): 4, ("t", "m"): 5,
                               ("arr",): 8, ("arr", "z"): 9, ("t", "sub"): 10, ("t", "sub", "w"): 11}


# --- es config check -------------------------------------------------------------------------------


def test_config_check_prints_every_setting_with_its_source(tmp_path: Path) -> None:
    path = tmp_path / "es.toml"
    path.write_text('# node 3\n[listeners]\nlisten = "127.0.0.1:0"\n\n[durability]\ndurability = "interval"\n'
                    "[replication]\nreplica_lag_ms = 500\n")
    result = es("config", "check", str(path), "--min-insync-replicas", "2", env={"ES_REPLICA_ID": "3"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert 'listen = "127.0.0.1:0"  # file ' + f"{path}:3" in lines
    assert 'durability = "interval"  # file ' + f"{path}:6" in lines
    assert f"replica_lag_ms = 500  # file {path}:8" in lines
    assert "replica_id = 3  # env ES_REPLICA_ID" in lines
    assert "min_insync_replicas = 2  # flag --min-insync-replicas" in lines
    assert "# advertised_listener is not set  # default" in lines
    assert "auto_create_topics = false  # default" in lines
    printed = tomllib.loads(result.stdout)  # the output is itself a configuration file
    assert printed["replication"]["replica_id"] == 3 and printed["listeners"] == {"listen": "127.0.0.1:0"}
    again = tmp_path / "again.toml"
    again.write_text(result.stdout)
    assert es("config", "check", str(again)).exit_code == 0
    keys = {(section, key) for section, body in printed.items() for key in body}
    assert keys <= {(row.section, row.key) for row in table()}


def test_config_check_masks_secrets() -> None:
    secret = Setting("tls_key_password", "--tls-key-password", "security", "tls_key_password",
                     "ES_TLS_KEY_PASSWORD", str, None, False, None)
    shown = render([Effective(secret, "hunter2", "env ES_TLS_KEY_PASSWORD")])
    assert shown == '[security]\ntls_key_password = "***"  # env ES_TLS_KEY_PASSWORD'


def test_the_config_file_can_be_named_by_es_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "es.toml"
    path.write_text("# node 4\n[replication]\nreplica_id = 4\n")
    assert resolve([])["replica_id"].source == "default"
    got = resolve([], {"ES_CONFIG": str(path)}, monkeypatch)["replica_id"]
    assert (got.value, got.source) == (4, f"file {path}:3")


# --- the example -----------------------------------------------------------------------------------


def test_the_example_is_valid_and_names_every_key() -> None:
    result = es("config", "check", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    uncommented = re.sub(r"(?m)^#\s?(?=[a-z_]+\s*=)", "", EXAMPLE.read_text())
    present = set(key_lines(uncommented))
    missing = [f"[{row.section}] {row.key}" for row in table() if (row.section, row.key) not in present]
    assert not missing, f"examples/es.toml and docs/operations.md 5 lack (add a line or a comment): {missing}"


def test_the_example_in_operations_md_is_examples_es_toml() -> None:
    doc = OPERATIONS.read_text()
    found = re.search(r"<!-- es.toml example begins -->\n```toml\n(.*?)```\n<!-- es.toml example ends -->",
                      doc, re.S)
    assert found is not None
    assert found.group(1) == EXAMPLE.read_text()


# --- a real es serve -------------------------------------------------------------------------------

LISTENING = re.compile(rb"listening on (?:\w+://)?(\S+?):(\d+)\b")
SETTINGS = re.compile(rb"settings from .*\n")


def test_es_serve_takes_its_listener_and_durability_from_the_file(tmp_path: Path) -> None:
    data = tmp_path / "store"
    path = tmp_path / "es.toml"
    path.write_text(f'[store]\ndata = "{data}"\n[listeners]\nlisten = "127.0.0.1:0"\n'
                    '[durability]\ndurability = "interval"\n')
    env = {k: v for k, v in entry_points.environment(data).items() if not k.startswith("ES_")}
    proc = subprocess.Popen([*entry_points.es_command(), "serve", "--config", str(path)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    try:
        stderr = _read_until(proc, SETTINGS)  # logged once the ports are bound, after "listening on"
        found = LISTENING.search(stderr)
        assert found is not None, stderr.decode(errors="replace")
        assert found.group(1) == b"127.0.0.1"
        assert f"store {data}, durability interval, settings from {path}".encode() in stderr
        with eventstore.connect(f"{found.group(1).decode()}:{found.group(2).decode()}") as remote:
            remote.create_topic("orders", 1)  # served at the file's listener, into the file's store
            remote.append("orders", b"o1")
            assert [r.value for r in remote.read("orders", 0, 0)] == [b"o1"]
        assert (data / "catalog").is_dir()  # the file's store
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(TIMEOUT_S) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(TIMEOUT_S)
        assert proc.stderr is not None
        proc.stderr.close()


def _read_until(proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes]) -> bytes:
    assert proc.stderr is not None
    got = b""
    deadline = time.monotonic() + TIMEOUT_S
    while not pattern.search(got):  # bounded by the deadline
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([proc.stderr], [], [], remaining)[0]:
            break
        chunk = os.read(proc.stderr.fileno(), 65536)
        if not chunk:
            break
        got += chunk
    return got
