"""Every kind of source `collect` reads, against the real thing: SQLite, a throw-away PostgreSQL
server, a local HTTP JSON API, and CSV / Parquet / JSON Lines files. Each source holds the same
500 demo customers, so each must give the same validated rows as the SQLite demo source."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from lifecycle import sources
from lifecycle.errors import StageError
from lifecycle.io import sha256_file
from lifecycle.params import SqlSource
from tests.helpers_process import free_port
from tests.helpers_stages import (
    assert_one_error_line,
    run_stage,
    run_stage_process,
    run_stages,
    stage_dir,
)

PASSWORD_VAR = "LIFECYCLE_TEST_PG_PASSWORD"   # not PGPASSWORD: libpq would read that by itself


def read_table(db: Path) -> pd.DataFrame:
    with sqlite3.connect(db) as con:
        frame = pd.read_sql_query("SELECT * FROM customers ORDER BY customer_id", con)
    con.close()
    return frame


def collected(where: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """(snapshot, manifest, validated rows) a stage folder ended with."""
    return (pd.read_parquet(where / "data" / "raw" / "snapshot.parquet"),
            json.loads((where / "data" / "raw" / "manifest.json").read_text()),
            pd.read_parquet(where / "data" / "interim" / "validated.parquet"))


@pytest.fixture(scope="module")
def baseline(demo_sqlite, tmp_path_factory) -> pd.DataFrame:
    """The validated rows of the demo SQLite source, through the real collect and validate."""
    where = stage_dir(tmp_path_factory.mktemp("sqlite"))
    (where / "data" / "external").mkdir(parents=True)
    shutil.copy(demo_sqlite, where / "data" / "external" / "crm.sqlite")
    run_stages(where, "collect", "validate")
    return collected(where)[2]


def assert_same_rows(where: Path, baseline: pd.DataFrame) -> None:
    validated = collected(where)[2]
    pd.testing.assert_frame_equal(validated, baseline)


# --- SQL: SQLite ---------------------------------------------------------------------------
def test_sqlite_source_snapshot_and_manifest(demo_sqlite, baseline, tmp_path):
    where = stage_dir(tmp_path, {"collect.source.url": f"sqlite:///{demo_sqlite}"})
    run_stages(where, "collect", "validate")
    snapshot, manifest, validated = collected(where)
    pd.testing.assert_frame_equal(validated, baseline)   # wherever the file is, same rows
    assert manifest["rows"] == len(snapshot) == 500
    assert manifest["sha256"] == sha256_file(where / "data" / "raw" / "snapshot.parquet")
    assert manifest["source"] == {"kind": "sql", "url": f"sqlite:///{demo_sqlite}",
                                  "query": "SELECT * FROM customers ORDER BY customer_id"}
    assert list(manifest["columns"]) == list(snapshot.columns)
    pd.testing.assert_frame_equal(snapshot, read_table(demo_sqlite), check_dtype=False)


def _sqlite(path: Path, rows: list[tuple]) -> SqlSource:
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (id INTEGER, name TEXT, amount REAL, seats INTEGER)")
        con.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
    con.close()
    return SqlSource(kind="sql", url=f"sqlite:///{path}", query="SELECT * FROM t ORDER BY id")


def _general(source: SqlSource) -> pd.DataFrame:
    """The rows as the general SQL reader gives them, made storable."""
    return sources.snapshot_frame(sources.read_sql(source))


def test_sqlite_is_streamed_batch_by_batch_with_the_general_readers_rows(tmp_path):
    rows = [(i, f"name {i}", i / 7, None if i % 3 else i) for i in range(2_500)]
    source = _sqlite(tmp_path / "db.sqlite", rows)
    snapshot = tmp_path / "snapshot.parquet"
    assert sources.stream_sqlite(source, snapshot, batch_rows=1_000)   # three batches
    streamed = pd.read_parquet(snapshot)
    assert sources.snapshot_summary(snapshot)[0] == len(streamed) == 2_500
    pd.testing.assert_frame_equal(streamed, _general(source), check_dtype=False)
    assert streamed["amount"].tolist() == [i / 7 for i in range(2_500)]   # every digit kept


@pytest.mark.parametrize("where", [50, 250], ids=["first-batch", "later-batch"])
def test_sqlite_column_of_mixed_types_takes_the_general_path(where, tmp_path):
    """SQLite keeps 'abc' in an INTEGER column, and text in a REAL one: such a source is not
    streamed (the driver would stop, or write the numbers with six digits), nothing is left
    behind, and write_snapshot's snapshot is the general reader's, numbers and text intact."""
    rows = [(i, f"name {i}", i / 7, i) for i in range(300)]
    rows[where] = (where, "name", "not a number", "abc")
    source = _sqlite(tmp_path / "db.sqlite", rows)
    snapshot = tmp_path / "snapshot.parquet"
    assert not sources.stream_sqlite(source, snapshot, batch_rows=100)
    assert not list(tmp_path.glob("snapshot.parquet*"))
    sources.write_snapshot(source, snapshot)
    written = pd.read_parquet(snapshot)
    pd.testing.assert_frame_equal(written, _general(source))
    assert written.loc[where, "seats"] == "abc" and written.loc[1, "seats"] == "1"
    assert written.loc[1, "amount"] == str(1 / 7)   # all its digits, as text


def test_sqlite_query_error_is_one_clear_error(tmp_path):
    source = _sqlite(tmp_path / "db.sqlite", [(1, "a", 1.0, 1)])
    with pytest.raises(StageError, match=r"SQL source failed .*no such table: missing"):
        sources.stream_sqlite(source.model_copy(update={"query": "SELECT * FROM missing"}),
                              tmp_path / "snapshot.parquet")


# --- SQL: PostgreSQL -----------------------------------------------------------------------
def _postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    on_path = shutil.which("initdb")
    if not found and not on_path:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found in "
                    "/usr/lib/postgresql/*/bin or on PATH: install the Debian package "
                    "'postgresql' (apt-get install postgresql; .ci/run does it)")
    return Path(found[-1] if found else on_path).parent


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL cluster on a free port of 127.0.0.1, password-protected."""
    bindir = _postgres_bindir()
    as_root = os.geteuid() == 0
    as_user = ["runuser", "-u", "postgres", "--"] if as_root else []   # initdb refuses root
    home = Path(tempfile.mkdtemp(prefix="lifecycle-pg-"))
    password, port = secrets.token_hex(16), free_port()
    (home / "pw").write_text(password)
    if as_root:
        for path in (home, home / "pw"):
            shutil.chown(path, "postgres", "postgres")

    def pg(*args: str) -> None:
        proc = subprocess.run([*as_user, *args], capture_output=True, text=True)
        if proc.returncode:
            log = (home / "log").read_text() if (home / "log").exists() else ""
            pytest.fail(f"{args[0]} failed: {proc.stderr}\n{log}")

    pg(str(bindir / "initdb"), "-D", str(home / "data"), "-U", "postgres", "-E", "UTF8",
       "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={home / 'pw'}", "--no-sync")
    pg(str(bindir / "pg_ctl"), "-D", str(home / "data"), "-l", str(home / "log"), "-w", "-o",
       f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={home} -c fsync=off",
       "start")
    try:
        yield {"port": port, "password": password}
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(home / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_crm(postgres, demo_sqlite) -> str:
    """The demo CRM table loaded into PostgreSQL; the collect URL, password from the env."""
    import sqlalchemy as sa

    engine = sa.create_engine(
        f"postgresql+psycopg://postgres:{postgres['password']}@127.0.0.1:{postgres['port']}/postgres")
    with engine.begin() as con:
        read_table(demo_sqlite).to_sql("customers", con, index=False)
    engine.dispose()
    return f"postgresql+psycopg://postgres:${{{PASSWORD_VAR}}}@127.0.0.1:{postgres['port']}/postgres"


def test_postgresql_source_reads_the_password_from_the_environment(
        postgres, postgres_crm, baseline, tmp_path):
    where = stage_dir(tmp_path, {"collect.source.url": postgres_crm})
    proc = run_stage_process(where, "collect", env={PASSWORD_VAR: postgres["password"]})
    assert proc.returncode == 0, proc.stderr
    assert "500 rows" in proc.stderr
    run_stages(where, "validate")
    assert_same_rows(where, baseline)

    manifest_text = (where / "data" / "raw" / "manifest.json").read_text()
    assert postgres["password"] not in manifest_text
    assert json.loads(manifest_text)["source"]["url"] == (
        f"postgresql+psycopg://postgres:***@127.0.0.1:{postgres['port']}/postgres")
    assert postgres["password"] not in (where / "params.yaml").read_text()


def test_postgresql_wrong_password_is_one_clear_error(postgres_crm, tmp_path, monkeypatch):
    monkeypatch.setenv(PASSWORD_VAR, "not-the-password")
    code, err = run_stage(stage_dir(tmp_path, {"collect.source.url": postgres_crm}), "collect")
    assert code == 1
    line = assert_one_error_line(err, "collect", "SQL source failed", "password authentication")
    assert "not-the-password" not in line and "postgres:***@" in line


def test_unset_password_variable_is_named(postgres_crm, tmp_path, monkeypatch):
    monkeypatch.delenv(PASSWORD_VAR, raising=False)
    code, err = run_stage(stage_dir(tmp_path, {"collect.source.url": postgres_crm}), "collect")
    assert code == 1
    assert_one_error_line(err, "collect", "environment variable", PASSWORD_VAR)


# --- HTTP JSON API -------------------------------------------------------------------------
HUGE = {"C0000003": 99999999999999999999, "C0000007": -9223372036854775809}


class _Api(BaseHTTPRequestHandler):
    """/customers?page=&page_size= (numbered pages), /cursor?after= (a `next` link per page),
    /bare (a JSON list, not an object), /huge (integers beyond 64 bits), /broken (HTTP 503)."""

    def do_GET(self):
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        records = self.server.records
        self.server.seen.append(self.path)
        if url.path == "/customers":
            page, size = int(query["page"]), int(query["page_size"])
            self._json({"data": records[(page - 1) * size: page * size], "page": page})
        elif url.path == "/cursor":
            after, size = int(query.get("after", 0)), 150
            more = after + size < len(records)
            host, port = self.server.server_address
            self._json({"items": records[after: after + size],
                        "next": f"http://{host}:{port}/cursor?after={after + size}" if more
                        else None})
        elif url.path == "/bare":
            self._json(records)
        elif url.path == "/huge":   # integers JSON can hold and int64 cannot
            self._json({"data": [{**r, "tenure": HUGE.get(r["customer_id"], r["tenure"])}
                                 for r in records]})
        else:
            self.send_error(503, "maintenance")

    def _json(self, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:   # keep test output clean
        pass


@pytest.fixture(scope="module")
def api(demo_sqlite):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Api)
    server.records = json.loads(read_table(demo_sqlite).to_json(orient="records"))
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _api_url(api, path: str) -> str:
    host, port = api.server_address
    return f"http://{host}:{port}{path}"


def test_http_source_numbered_pages(api, baseline, tmp_path):
    where = stage_dir(tmp_path, {"collect.source": {
        "kind": "http", "url": _api_url(api, "/customers"), "records_key": "data",
        "pagination": "page", "page_size": 64}})
    api.seen.clear()
    run_stages(where, "collect", "validate")
    assert_same_rows(where, baseline)
    assert api.seen == [f"/customers?page={n}&page_size=64" for n in range(1, 10)]  # 8 full + 1


def test_http_source_next_links(api, baseline, tmp_path):
    where = stage_dir(tmp_path, {"collect.source": {
        "kind": "http", "url": _api_url(api, "/cursor"), "records_key": "items",
        "pagination": "next"}})
    api.seen.clear()
    run_stages(where, "collect", "validate")
    assert_same_rows(where, baseline)
    assert api.seen == ["/cursor", "/cursor?after=150", "/cursor?after=300", "/cursor?after=450"]
    assert collected(where)[1]["source"] == {"kind": "http", "url": _api_url(api, "/cursor")}


def test_http_integers_beyond_64_bits_are_quarantined_not_a_traceback(api, tmp_path):
    where = stage_dir(tmp_path, {"collect.source": {
        "kind": "http", "url": _api_url(api, "/huge"), "records_key": "data"}})
    run_stages(where, "collect", "validate")
    snapshot = pd.read_parquet(where / "data" / "raw" / "snapshot.parquet")
    assert snapshot.set_index("customer_id").loc["C0000003", "tenure"] == "99999999999999999999"
    quarantine = pd.read_parquet(where / "data" / "interim" / "quarantine.parquet")
    assert quarantine.set_index("customer_id")["failed_checks"].to_dict() == {
        "C0000003": "wrong_type:tenure", "C0000007": "wrong_type:tenure"}


def test_http_error_status_is_one_clear_error(api, tmp_path):
    url = _api_url(api, "/broken")
    code, err = run_stage(stage_dir(tmp_path, {"collect.source": {"kind": "http", "url": url}}),
                          "collect")
    assert code == 1
    assert_one_error_line(err, "collect", "HTTP source failed", "503", url)


def test_http_unexpected_body_is_one_clear_error(api, tmp_path):
    where = stage_dir(tmp_path, {"collect.source": {
        "kind": "http", "url": _api_url(api, "/bare"), "records_key": "data"}})
    code, err = run_stage(where, "collect")
    assert code == 1
    assert_one_error_line(err, "collect", "expected a JSON object", "list")


# --- files ---------------------------------------------------------------------------------
def _write_csv(table: pd.DataFrame, folder: Path) -> str:
    table.to_csv(folder / "customers.csv", index=False)
    return "data/external/customers.csv"


def _write_parquet(table: pd.DataFrame, folder: Path) -> str:
    table.to_parquet(folder / "customers.parquet", index=False)
    return "data/external/customers.parquet"


def _write_jsonl(table: pd.DataFrame, folder: Path) -> str:
    table.to_json(folder / "customers.jsonl", orient="records", lines=True)
    return "data/external/customers.jsonl"


def _write_csv_parts(table: pd.DataFrame, folder: Path) -> str:
    for part, start in enumerate(range(0, len(table), 200)):
        table.iloc[start:start + 200].to_csv(folder / f"customers-{part}.csv", index=False)
    return "data/external/customers-*.csv"


@pytest.mark.parametrize("write", [_write_csv, _write_parquet, _write_jsonl, _write_csv_parts],
                         ids=["csv", "parquet", "jsonl", "glob"])
def test_file_source(write, demo_sqlite, baseline, tmp_path):
    folder = tmp_path / "data" / "external"
    folder.mkdir(parents=True)
    path = write(read_table(demo_sqlite), folder)
    where = stage_dir(tmp_path, {"collect.source": {"kind": "files", "path": path}})
    run_stages(where, "collect", "validate")
    assert_same_rows(where, baseline)
    assert collected(where)[1]["source"] == {"kind": "files", "path": path}


def test_file_source_matching_nothing_is_one_clear_error(tmp_path):
    where = stage_dir(tmp_path, {"collect.source": {"kind": "files", "path": "data/*.csv"}})
    code, err = run_stage(where, "collect")
    assert code == 1
    assert_one_error_line(err, "collect", "no file matches data/*.csv")
