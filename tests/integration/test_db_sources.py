"""Real PostgreSQL 15 + pgaudit and MariaDB + server_audit write the logs our parsers read.

Each server runs as its own system user in a fresh directory, bound to 127.0.0.1 on a
free port, with its clock zone set to Europe/Berlin (the logs name no zone or only an
abbreviation, so the source options must). A CRM-like workload runs through the real
command-line clients; the log files are then framed and parsed exactly as the agent
does (agent.parse_command.parse_file) and the normalized events are asserted. Every
server started is stopped. A test is skipped only when the server is not installed
(scripts/install-system-deps.sh installs it when run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.parse_command import parse_file
from agent.parsers import FORMATS
from proto.v1 import audit_pb2 as pb
from tests.helpers import free_port, traversable_tmpdir
from tests.processes import wait_for

pytestmark = pytest.mark.integration

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PGAUDIT_SO = Path("/usr/lib/postgresql/15/lib/pgaudit.so")
MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
ZONE = "Europe/Berlin"
PREFIX = "%m [%p] %q%u@%d %r %a %c "
IBAN_OLD = "DE89370400440532013000"
IBAN_NEW = "DE02120300000000202051"
TRICKY = 'O\'Brien, "Ltd"\nLine 2'


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _as(user: str, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run `argv` as `user` when we are root (servers refuse to run as root)."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", user, "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, **kwargs)  # type: ignore[call-overload,no-any-return]


def _skip_unless(condition: bool, reason: str) -> None:
    if not condition:
        pytest.skip(reason=reason)


def _by_action(events: list[pb.AuditEvent], action: str) -> list[pb.AuditEvent]:
    return [e for e in events if e.action == action]


def _changes(event: pb.AuditEvent) -> dict[str, str | None]:
    return {c.field: (c.new_value if c.HasField("new_value") else None) for c in event.changes}


# --- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_logs() -> Iterator[tuple[Path, int, int]]:
    """Run the workload on a fresh PostgreSQL; yield (log dir, start ns, end ns)."""
    _skip_unless(
        (PG_BIN / "postgres").exists() and PGAUDIT_SO.exists(),
        "PostgreSQL 15 with pgaudit not installed (apt-get install postgresql-15 "
        "postgresql-15-pgaudit; scripts/install-system-deps.sh does it as root)",
    )
    owner = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    _skip_unless(os.geteuid() != 0 or _user_exists("postgres"), "no postgres system user")
    home = traversable_tmpdir("crm-audit-pg-")
    data, logs = home / "data", home / "log"
    logs.mkdir()
    pwfile = home / "pw"
    pwfile.write_text("admin-secret\n")
    if os.geteuid() == 0:
        shutil.chown(home, owner)
        shutil.chown(logs, owner)
        shutil.chown(pwfile, owner)
    port = free_port()
    started = False
    try:
        init = _as(
            owner,
            [
                str(PG_BIN / "initdb"),
                "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "--locale=C.UTF-8",
            ],
        )  # fmt: skip
        assert init.returncode == 0, init.stderr
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{home}'",
            "shared_preload_libraries": "'pgaudit'",
            "pgaudit.log": "'all'",
            "pgaudit.log_rows": "on",
            "pgaudit.log_relation": "on",
            "pgaudit.log_catalog": "off",
            "log_connections": "on",
            "log_disconnections": "on",
            "logging_collector": "on",
            "log_destination": "'stderr,csvlog,jsonlog'",
            "log_directory": f"'{logs}'",
            "log_filename": "'postgresql'",
            "log_line_prefix": f"'{PREFIX}'",
            "log_timezone": f"'{ZONE}'",
            "lc_messages": "'C'",
        }
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        start = _as(
            owner,
            [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"), "-w",
             "-t", "60", "start"],
        )  # fmt: skip
        assert start.returncode == 0, start.stderr + (home / "server.log").read_text()
        started = True
        begin = time.time_ns()
        _postgres_workload(port)
        end = time.time_ns()
        # Stopping flushes the logging collector: the files are then complete.
        _as(owner, [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])
        started = False
        yield logs, begin, end
    finally:
        if started:
            _as(owner, [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(home, ignore_errors=True)


def _psql(port: int, user: str, password: str, *commands: str) -> subprocess.CompletedProcess[str]:
    argv = [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "crm"]
    argv += ["-X", "-q"]
    for command in commands:
        argv += ["-c", command]
    env = {**os.environ, "PGPASSWORD": password, "PGAPPNAME": "crm-web", "PGCONNECT_TIMEOUT": "10"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def _postgres_workload(port: int) -> None:
    setup = subprocess.run(
        [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
         "-d", "postgres", "-X", "-q", "-c", "CREATE DATABASE crm"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PGPASSWORD": "admin-secret"},
    )  # fmt: skip
    assert setup.returncode == 0, setup.stderr
    admin = _psql(
        port,
        "postgres",
        "admin-secret",
        "CREATE TABLE customers (id serial PRIMARY KEY, name text, street text, city text, "
        "iban text)",
        "CREATE ROLE crm_app LOGIN PASSWORD 'app-secret'",
        "GRANT SELECT, INSERT, UPDATE ON customers TO crm_app",
        "GRANT USAGE ON SEQUENCE customers_id_seq TO crm_app",
    )
    assert admin.returncode == 0, admin.stderr
    tricky = TRICKY.replace("'", "''")
    app = _psql(
        port,
        "crm_app",
        "app-secret",
        f"INSERT INTO customers (name, street, city, iban) VALUES "
        f"('Hans Müller', 'Hauptstr. 1', 'Berlin', '{IBAN_OLD}')",
        f"INSERT INTO customers (name, street, city, iban) VALUES "
        f"('{tricky}', 'Kai 2, Hof', 'Hamburg', 'DE00')",
        "UPDATE customers SET street = 'Neue Str. 5', city = 'Köln' WHERE id = 1",
        f"UPDATE customers SET iban = '{IBAN_NEW}' WHERE id = 1",
        "SELECT * FROM customers",
        "COPY customers TO STDOUT WITH (FORMAT csv)",
        "DELETE FROM customers WHERE id = 2",  # not granted: ERROR, no AUDIT record
    )
    assert "permission denied" in app.stderr, app.stderr
    failed = _psql(port, "crm_app", "wrong-password", "SELECT 1")
    assert failed.returncode != 0
    changes = _psql(
        port,
        "postgres",
        "admin-secret",
        "ALTER ROLE crm_app WITH CREATEROLE",
        "GRANT DELETE ON customers TO crm_app",
        "REVOKE DELETE ON customers FROM crm_app",
        "ALTER SYSTEM SET pgaudit.log_parameter = on",
        # Not 'none': pgaudit logs a SET after it took effect, so that one is silent.
        "SET pgaudit.log = 'all, -read'",
    )
    assert changes.returncode == 0, changes.stderr
    # A schema-qualified table with row-level security: COPY of it runs a query, which
    # pgaudit logs as a READ with command SELECT (plus its own COPY record).
    tenant = _psql(
        port,
        "postgres",
        "admin-secret",
        "CREATE SCHEMA crm",
        "CREATE TABLE crm.accounts (id int PRIMARY KEY, iban text)",
        f"INSERT INTO crm.accounts VALUES (1, '{IBAN_OLD}')",
        "ALTER TABLE crm.accounts ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY app_rows ON crm.accounts TO crm_app USING (true)",
        "GRANT USAGE ON SCHEMA crm TO crm_app",
        "GRANT SELECT ON crm.accounts TO crm_app",
        "ALTER SYSTEM SET pgaudit.log TO write, ddl",  # a list value, unquoted
        "ALTER SYSTEM RESET pgaudit.log;",  # psql passes the semicolon on
    )
    assert tenant.returncode == 0, tenant.stderr
    export = _psql(port, "crm_app", "app-secret", "COPY crm.accounts TO STDOUT")
    assert export.returncode == 0 and IBAN_OLD in export.stdout, export.stderr


def _pg_events(logs: Path, destination: str, prefix: str = PREFIX) -> list[pb.AuditEvent]:
    suffix = {"stderr": "", "csvlog": ".csv", "jsonlog": ".json"}[destination]
    path = logs / f"postgresql{suffix}"
    assert path.exists(), sorted(p.name for p in logs.iterdir())
    options = FORMATS["pgaudit"].options_model.model_validate(
        {"log_destination": destination, "log_line_prefix": prefix, "timezone": ZONE},
        context={"source_name": "pg"},
    )
    return parse_file(path, "pgaudit", {}, options, "pg")


@pytest.mark.parametrize("destination", ["stderr", "csvlog", "jsonlog"])
def test_pgaudit_workload_is_normalized(
    postgres_logs: tuple[Path, int, int], destination: str
) -> None:
    logs, begin, end = postgres_logs
    events = _pg_events(logs, destination)
    assert not [e.original for e in events if "parse_error" in e.flags]
    assert not [e.original for e in events if "prefix_mismatch" in e.flags]
    assert not [e.original for e in events if "invalid_timestamp" in e.flags]
    # Times are right (the log prints CET/CEST; the source option names the zone).
    timed = [e for e in events if e.user.name == "crm_app"]
    assert timed and all(begin - 2e9 <= e.time_unix_nano <= end + 2e9 for e in timed)

    inserts = [e for e in _by_action(events, "db.insert") if e.object.name == "public.customers"]
    assert len(inserts) == 2
    assert all(e.user.name == "crm_app" and e.source.ip == "127.0.0.1" for e in inserts)
    assert all(e.source.user_agent == "crm-web" and e.session_id for e in inserts)
    assert _changes(inserts[0])["iban"] == IBAN_OLD
    # A literal with commas, quotes and a newline survives every destination's quoting.
    assert _changes(inserts[1])["name"] == TRICKY
    assert inserts[0].audit_category == pb.AUDIT_CATEGORY_DATA_OPERATION

    updates = _by_action(events, "db.update")
    assert [_changes(e) for e in updates] == [
        {"street": "Neue Str. 5", "city": "Köln"},
        {"iban": IBAN_NEW},
    ]
    assert all(e.record_count == 1 and e.outcome == pb.OUTCOME_SUCCESS for e in updates)

    bulk = [e for e in _by_action(events, "db.select") if e.object.name == "public.customers"]
    assert bulk and bulk[0].record_count == 2
    # Every record of a COPY ... TO is an export, whichever command pgaudit names: the
    # row-level-security COPY comes as a READ with command SELECT (naming the table,
    # schema-qualified) and as pgaudit's own COPY record. A table only the statement names
    # is kept as written (the session's search_path is not in the log).
    exports = _by_action(events, "db.export")
    assert [(e.user.name, e.attributes["db.command"], e.object.name) for e in exports] == [
        ("crm_app", "COPY", "customers"),
        ("crm_app", "SELECT", "crm.accounts"),
        ("crm_app", "COPY", "crm.accounts"),
    ]
    assert not [e for e in exports if e.HasField("record_count")]  # pgaudit counts 0 for COPY

    # The refused DELETE: no pgaudit record, the server's ERROR + STATEMENT instead.
    denied = _by_action(events, "db.delete")
    assert len(denied) == 1 and denied[0].outcome == pb.OUTCOME_FAILURE
    assert "permission denied" in denied[0].message

    failed = _by_action(events, "login.failed")
    assert [(e.user.name, e.source.ip, e.outcome) for e in failed] == [
        ("crm_app", "127.0.0.1", pb.OUTCOME_FAILURE)
    ]
    assert failed[0].audit_category == pb.AUDIT_CATEGORY_SECURITY
    logins = _by_action(events, "login")
    assert {e.user.name for e in logins} >= {"crm_app", "postgres"}
    assert _by_action(events, "logout")

    role = _by_action(events, "db.role_change")
    assert [(e.attributes["db.command"], e.object.name, e.user.name) for e in role] == [
        ("CREATE ROLE", "crm_app", "postgres"),
        ("ALTER ROLE", "crm_app", "postgres"),
    ]
    assert "app-secret" not in role[0].original  # pgaudit redacts passwords
    assert role[0].audit_category == pb.AUDIT_CATEGORY_SYSTEM_ADMIN
    assert [e.object.name for e in _by_action(events, "db.grant")][-1] == "crm_app"
    assert _by_action(events, "db.revoke")
    # Audit-setting changes carry the new value (RESET: the default), and the setting's
    # name as object, without the statement's semicolon.
    config = _by_action(events, "db.audit_config_change")
    assert [(c.field, c.new_value) for e in config for c in e.changes] == [
        ("pgaudit.log_parameter", "on"),
        ("pgaudit.log", "all, -read"),
        ("pgaudit.log", "write, ddl"),
        ("pgaudit.log", "DEFAULT"),
    ]
    assert [e.object.name for e in config] == ["pgaudit.log_parameter"] + ["pgaudit.log"] * 3


def test_pgaudit_with_a_wrong_log_line_prefix_flags_every_unmatched_record(
    postgres_logs: tuple[Path, int, int], caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's default prefix instead of the server's: the postmaster's own lines
    still match it (%q ends the server's prefix for them), the session lines do not."""
    logs, _, _ = postgres_logs
    right = _pg_events(logs, "stderr")
    with caplog.at_level("WARNING", logger="agent.parsers.pgaudit"):
        wrong = _pg_events(logs, "stderr", prefix="%m [%p] ")
    # Nothing is glued together: each record the right prefix finds is still one event
    # (a mismatched record's DETAIL/STATEMENT lines become events of their own).
    assert len(wrong) >= len(right)
    assert max(e.original.count(" AUDIT: ") for e in wrong) == 1
    audits = [e for e in wrong if " AUDIT: " in e.original]
    assert len(audits) == sum(" AUDIT: " in e.original for e in right)
    assert all({"prefix_mismatch", "parse_error"} <= set(e.flags) for e in audits)
    failed = [e for e in wrong if "password authentication failed" in e.original]
    assert len(failed) == 1 and "prefix_mismatch" in failed[0].flags
    sessions = [e for e in wrong if " crm_app@crm " in e.original.split("  ", 1)[0]]
    assert sessions and all("prefix_mismatch" in e.flags for e in sessions)
    warnings = [r.getMessage() for r in caplog.records if "log_line_prefix" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("source pg: "), warnings


# --- MariaDB ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb_log() -> Iterator[tuple[Path, int, int, Path]]:
    """Run the workload on a fresh MariaDB; yield (audit log, start ns, end ns, export)."""
    _skip_unless(
        Path(MARIADBD).exists() and shutil.which("mariadb-install-db") is not None,
        "MariaDB server not installed (apt-get install mariadb-server; "
        "scripts/install-system-deps.sh does it as root)",
    )
    root = os.geteuid() == 0
    _skip_unless(not root or _user_exists("mysql"), "no mysql system user")
    owner = "mysql" if root else pwd.getpwuid(os.geteuid()).pw_name
    home = traversable_tmpdir("crm-audit-mariadb-")
    data, files = home / "data", home / "files"
    files.mkdir()
    if root:
        shutil.chown(home, owner)
        shutil.chown(files, owner)
    socket_path, audit = home / "mysqld.sock", home / "server_audit.log"
    port = free_port()
    installed = subprocess.run(
        ["mariadb-install-db", "--no-defaults", f"--datadir={data}", f"--user={owner}",
         "--auth-root-authentication-method=normal", "--skip-test-db"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    argv = [
        MARIADBD, "--no-defaults", f"--datadir={data}", f"--socket={socket_path}",
        f"--port={port}", "--bind-address=127.0.0.1", f"--user={owner}",
        f"--pid-file={home / 'mysqld.pid'}", f"--log-error={home / 'error.log'}",
        f"--secure-file-priv={files}", "--skip-name-resolve",
        "--plugin-load-add=server_audit", "--server-audit-logging=ON",
        "--server-audit-events=CONNECT,QUERY,TABLE", f"--server-audit-file-path={audit}",
    ]  # fmt: skip
    server = subprocess.Popen(
        argv, env={**os.environ, "TZ": ZONE}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(
            lambda: subprocess.run(
                ["mariadb-admin", f"--socket={socket_path}", "-uroot", "ping"],
                capture_output=True, timeout=10,
            ).returncode == 0 or server.poll() is not None,
            "MariaDB to accept connections",
        )  # fmt: skip
        assert server.poll() is None, (home / "error.log").read_text()
        begin = time.time_ns()
        export = files / "customers.csv"
        _mariadb_workload(socket_path, port, export)
        end = time.time_ns()
        yield audit, begin, end, export
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(home, ignore_errors=True)


def _mariadb(
    argv: list[str], statements: list[str], force: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mariadb", *argv, *(["--force"] if force else []), "-e", ";\n".join(statements)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _mariadb_workload(socket_path: Path, port: int, export: Path) -> None:
    root = [f"--socket={socket_path}", "-uroot"]
    app = ["--protocol=TCP", "-h", "127.0.0.1", "-P", str(port), "-ucrm_app", "-papp-secret"]
    setup = _mariadb(
        root,
        [
            "CREATE DATABASE crm",
            "CREATE TABLE crm.customers (id INT AUTO_INCREMENT PRIMARY KEY, name TEXT, "
            "street TEXT, city TEXT, iban TEXT)",
            "CREATE USER 'crm_app'@'127.0.0.1' IDENTIFIED BY 'app-secret'",
            "GRANT SELECT, INSERT, UPDATE ON crm.customers TO 'crm_app'@'127.0.0.1'",
        ],
        force=False,
    )
    assert setup.returncode == 0, setup.stderr
    tricky = TRICKY.replace("\\", "\\\\").replace("'", "\\'")
    work = _mariadb(
        [*app, "crm"],
        [
            "INSERT INTO customers (name, street, city, iban) VALUES "
            f"('Hans Müller', 'Hauptstr. 1', 'Berlin', '{IBAN_OLD}')",
            "INSERT INTO customers (name, street, city, iban) VALUES "
            f"('{tricky}', 'Kai 2, Hof', 'Hamburg', 'DE00')",
            "UPDATE customers SET street = 'Neue Str. 5', city = 'Köln' WHERE id = 1",
            f"UPDATE customers SET iban = '{IBAN_NEW}' WHERE id = 1",
            "SELECT * FROM customers",
            "DELETE FROM customers WHERE id = 2",  # not granted
        ],
    )
    assert "denied" in work.stderr, work.stderr
    failed = _mariadb([*app[:-1], "-pwrong-password"], ["SELECT 1"], force=False)
    assert failed.returncode != 0
    admin = _mariadb(
        root,
        [
            f"SELECT * FROM crm.customers INTO OUTFILE '{export}'",
            "ALTER USER 'crm_app'@'127.0.0.1' IDENTIFIED BY 'rotated-secret'",
            "GRANT DELETE ON crm.customers TO 'crm_app'@'127.0.0.1'",
            "REVOKE DELETE ON crm.customers FROM 'crm_app'@'127.0.0.1'",
            "SET GLOBAL server_audit_events = 'CONNECT,QUERY'",
        ],
        force=False,
    )
    assert admin.returncode == 0, admin.stderr


def test_mariadb_workload_is_normalized(mariadb_log: tuple[Path, int, int, Path]) -> None:
    audit, begin, end, export = mariadb_log
    options = FORMATS["mariadb_audit"].options_model.model_validate({"timezone": ZONE})
    events = parse_file(audit, "mariadb_audit", {}, options, "mariadb")
    assert events and not [e.original for e in events if "parse_error" in e.flags]
    assert all(begin - 2e9 <= e.time_unix_nano <= end + 2e9 for e in events)

    app = [e for e in events if e.user.name == "crm_app"]
    assert app and all(e.source.ip == "127.0.0.1" for e in app)
    inserts = _by_action(events, "db.insert")
    # Statements name the table as the TABLE events do: database.table.
    assert [e.object.name for e in inserts] == ["crm.customers", "crm.customers"]
    assert _changes(inserts[0])["iban"] == IBAN_OLD
    assert _changes(inserts[1])["name"] == TRICKY
    updates = _by_action(events, "db.update")
    assert [_changes(e) for e in updates] == [
        {"street": "Neue Str. 5", "city": "Köln"},
        {"iban": IBAN_NEW},
    ]
    assert all(e.outcome == pb.OUTCOME_SUCCESS for e in updates)
    # TABLE events (empty retcode) name the tables read and written.
    reads = _by_action(events, "db.table.read")
    assert "crm.customers" in {e.object.name for e in reads}
    statements = [e for e in events if e.object.type == "table" and e.message]
    assert {e.object.name for e in statements} == {"crm.customers"}
    assert all(e.outcome == pb.OUTCOME_UNSPECIFIED for e in reads)
    assert _by_action(events, "db.table.write")

    denied = _by_action(events, "db.delete")
    assert [(e.user.name, e.outcome) for e in denied] == [("crm_app", pb.OUTCOME_FAILURE)]
    failed = _by_action(events, "login.failed")
    assert [(e.user.name, e.source.ip) for e in failed] == [("crm_app", "127.0.0.1")]
    assert failed[0].attributes["db.retcode"] == "1045"
    assert {e.user.name for e in _by_action(events, "login")} >= {"crm_app", "root"}
    assert _by_action(events, "logout")

    exports = _by_action(events, "db.export")
    assert [e.user.name for e in exports] == ["root"] and export.exists()
    role = _by_action(events, "db.role_change")
    assert [(e.message.split()[0], e.object.name) for e in role] == [
        ("CREATE", "crm_app"),
        ("ALTER", "crm_app"),
    ]
    # server_audit hides passwords itself.
    assert not [e for e in events if "secret" in e.original and "IDENTIFIED" in e.original]
    assert _by_action(events, "db.grant") and _by_action(events, "db.revoke")
    config = _by_action(events, "db.audit_config_change")
    assert [(c.field, c.new_value) for e in config for c in e.changes] == [
        ("server_audit_events", "CONNECT,QUERY")
    ]
    assert config[0].audit_category == pb.AUDIT_CATEGORY_SYSTEM_ADMIN
