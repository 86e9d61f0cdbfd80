"""vectorize.py serve: the real server (uvicorn) on a free loopback port, spoken to over HTTP, on a
table encoded by the real MiniLM; its page in headless Chromium (skipped, saying why, without it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import httpx
import numpy as np
import pytest
from psycopg import sql

import vectorize
from conftest import ROOT, fresh_database, stored_vectors
from vectorize_core import connect, encode
from vectorize_core import search as core_search
from vectorize_core import serve as core
from vectorize_core.errors import DatabaseError

PASSAGES = [
    (1, "The stock exchange on Wall Street", "en", 2019),
    (2, "Kittens playing with yarn", "en", 2020),
    (3, "Baking bread at home", "fr", 2021),
    (4, "A storm over the ocean", "en", 2022),
    (5, "Puppies chasing a ball in the park", "fr", 2023),
    (6, "The central bank raised interest rates again", "fr", 2024),
    (7, "Sourdough needs a starter and patience", "en", 2025),
    (8, "Sailing boats in heavy wind", "fr", 2026),
]
TEXT = {i: text for i, text, _, _ in PASSAGES}
FINANCE = "New York is the financial capital of the world"
TOKEN = "a-token-of-thirty-two-characters"
COSINE = {"table": "passage", "vector_column": "passage_vector"}


@pytest.fixture(scope="module")
def db_url(pg_server):
    """passage(id, passage, lang, year): MiniLM vectors (cosine, with full text) and a second
    vector column of the same source (l2), for side by side."""
    url = fresh_database(pg_server.get_uri())
    with connect(url) as db:
        db.command("CREATE TABLE passage (id int PRIMARY KEY, passage text, lang text, year int)")
        for row in PASSAGES:
            db.command("INSERT INTO passage VALUES (%s, %s, %s, %s)", row)
        encode(db, table="passage", column="passage", model="minilm", fulltext=True)
        encode(db, table="passage", column="passage", model="minilm", metric="l2", vector_column="passage_l2")
    return url


@pytest.fixture(scope="module")
def server(db_url):
    with core.BackgroundServer(core.create_app(db_url)) as running:
        running.app = running.server.config.app
        with httpx.Client(base_url=running.url, timeout=120) as client:
            running.client = client
            yield running


@pytest.fixture(scope="module")
def guarded(db_url):
    """The same database behind a token."""
    with core.BackgroundServer(core.create_app(db_url, token=TOKEN)) as running:
        with httpx.Client(base_url=running.url, timeout=120) as client:
            running.client = client
            yield running


def post(server, body, **kwargs):
    return server.client.post("/search", json=body, **kwargs)


def texts(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["passage"] for row in response.json()["rows"]]


# -- searching --------------------------------------------------------------------------------------


def test_a_text_query_ranks_the_matching_row_first(server):
    response = post(server, {**COSINE, "query": FINANCE, "k": 3})
    assert texts(response)[0] == TEXT[1]
    body = response.json()
    distances = [row["distance"] for row in body["rows"]]
    assert len(distances) == 3 and distances == sorted(distances)
    ranking = body["ranking"]
    assert ranking["table"] == "public.passage" and ranking["vector_column"] == "passage_vector"
    assert (ranking["model"], ranking["metric"], ranking["mode"]) == ("minilm", "cosine", "index")
    assert ranking["key_columns"] == ["id"] and ranking["text_columns"] == ["passage"]
    assert ranking["distance_key"] == "distance" and ranking["notice"] is None
    assert body["took_ms"] > 0


def test_rows_are_those_of_search_json(server, run_cli, db_url):
    got = post(server, {**COSINE, "query": "dogs playing outside", "k": 5, "show": ["lang", "year"]}).json()["rows"]
    cli = run_cli("search", "--url", db_url, "dogs playing outside", "-t", "passage", "--vector-column",
                  "passage_vector", "-k", "5", "--show", "lang,year", "--json")  # fmt: skip
    assert cli.exit_code == 0, cli.output
    expected = json.loads(cli.stdout)
    assert [{k: v for k, v in r.items() if k != "distance"} for r in got] == [
        {k: v for k, v in r.items() if k != "distance"} for r in expected
    ]
    assert [r["distance"] for r in got] == pytest.approx([r["distance"] for r in expected], abs=1e-6)
    assert got[0]["passage"] == TEXT[5]


def test_a_query_vector_finds_its_own_row(server, db_url):
    import psycopg

    with psycopg.connect(db_url) as conn:
        vector = stored_vectors(conn, "passage", "id", "passage_l2")[6]
    response = post(server, {"table": "passage", "metric": "l2", "query_vector": vector.tolist(), "k": 2})
    rows = response.json()["rows"]
    assert response.status_code == 200 and rows[0]["id"] == 6
    assert rows[0]["distance"] == pytest.approx(0, abs=1e-5)
    assert response.json()["ranking"]["vector_column"] == "passage_l2"


@pytest.mark.parametrize("where", [{"lang": "fr", "year": {"$gte": 2021}}, '{"lang": "fr", "year": {"$gte": 2021}}'])
def test_a_filter_keeps_only_matching_rows(server, where):
    response = post(server, {**COSINE, "query": "dogs playing outside", "where": where, "k": 10, "show": ["lang"]})
    rows = response.json()["rows"]
    assert [r["id"] for r in rows] and all(r["lang"] == "fr" for r in rows)
    assert sorted(r["id"] for r in rows) == [3, 5, 6, 8]
    assert rows[0]["passage"] == TEXT[5]


def test_exact_ranks_every_row(server):
    response = post(server, {**COSINE, "query": FINANCE, "k": 8, "exact": True})
    assert response.json()["ranking"]["mode"] == "exact"
    assert texts(response)[0] == TEXT[1] and len(texts(response)) == 8
    assert texts(response) == texts(post(server, {**COSINE, "query": FINANCE, "k": 8}))


def test_hybrid_fuses_full_text(server):
    body = post(server, {**COSINE, "query": "sourdough starter", "hybrid": True, "k": 3}).json()
    assert body["ranking"]["mode"] == "hybrid" and body["ranking"]["score_key"] == "score"
    assert body["rows"][0]["passage"] == TEXT[7] and body["rows"][0]["text_rank"] == 1


def test_the_encoder_is_loaded_once(server):
    for query in ("a storm at sea", "bread"):
        assert post(server, {**COSINE, "query": query}).status_code == 200
    cached = server.app.state.encoders.cache_info()
    assert cached.currsize == 1 and cached.hits >= 1


def test_columns_lists_each_vector_column_with_its_status(server):
    response = server.client.get("/columns")
    assert response.status_code == 200
    columns = {c["vector_column"]: c for c in response.json()["columns"]}
    assert set(columns) == {"passage_vector", "passage_l2"}
    for name, metric in (("passage_vector", "cosine"), ("passage_l2", "l2")):
        c = columns[name]
        assert (c["schema"], c["table_name"], c["column"], c["model"], c["metric"]) == (
            "public", "passage", "passage", "minilm", metric,
        )  # fmt: skip
        assert (c["rows"], c["embedded"], c["pending"]) == (8, 8, 0)
    assert columns["passage_vector"]["fulltext"]["column"] == "passage_tsv"
    assert server.client.get("/columns", params={"table": "nosuch"}).status_code == 404


def test_healthz(server):
    assert server.client.get("/healthz").json() == {"status": "ok", "engine": "postgresql"}


def test_the_openapi_schema_in_docs_is_what_the_server_serves(server, run_cli):
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    served = server.client.get("/openapi.json").json()
    assert served == json.loads(committed), "regenerate: vectorize.py serve --openapi > docs/openapi.json"
    assert run_cli("serve", "--openapi").stdout == committed
    assert "/search" in served["paths"] and "/columns" in served["paths"] and "/healthz" in served["paths"]


# -- bad input: 400 with the CLI's line, 404 for what is not there ---------------------------------


@pytest.mark.parametrize(
    "body, args",
    [
        ({**COSINE, "query": "x", "where": {"nosuch": 1}}, ["x", "--where", '{"nosuch": 1}']),
        ({**COSINE, "query": "x", "where": '{"lang": '}, ["x", "--where", '{"lang": ']),
        ({**COSINE, "query": "x", "where": {"year": {"$gte": 1.5}}}, ["x", "--where", '{"year": {"$gte": 1.5}}']),
        ({**COSINE, "query": "x", "where": {"lang": {"$regex": "e"}}}, ["x", "--where", '{"lang": {"$regex": "e"}}']),
        ({**COSINE, "query": "x", "show": ["nosuch"]}, ["x", "--show", "nosuch"]),
        ({**COSINE, "query_vector": [1.0, 2.0]}, ["--query-vector", "[1.0, 2.0]"]),
        ({**COSINE, "query_vector": [0.0] * 384}, ["--query-vector", json.dumps([0.0] * 384)]),
        ({"table": "passage", "query": "x"}, ["x", "--table", "passage"]),
        ({**COSINE, "query": "x", "follower_read": True}, ["x", "--follower-read"]),
    ],
    ids=[
        "unknown-column",
        "bad-json",
        "fraction-for-int",
        "unknown-operator",
        "show",
        "dimension",
        "zero-vector",
        "ambiguous",
        "follower-read",
    ],  # fmt: skip
)
def test_bad_input_is_400_with_the_cli_line(server, run_cli, db_url, body, args):
    table = [] if "--table" in args else ["--table", "passage", "--vector-column", "passage_vector"]
    cli = run_cli("search", "--url", db_url, *args, *table)
    assert cli.exit_code == 2 and cli.stderr.count("\n") == 1, cli.stderr
    response = post(server, body)
    assert response.status_code == 400, response.text
    # The CLI's line, its options named as the API's fields (--where is "where").
    assert response.json() == {"error": core.api_wording(cli.stderr.removeprefix("Error: ").rstrip("\n"))}


@pytest.mark.parametrize(
    "body, message",
    [
        ({**COSINE, "query": "x", "k": 0}, "k: Input should be greater than or equal to 1"),
        ({**COSINE, "query": "x", "k": 100_001}, "k: Input should be less than or equal to 100000"),
        ({**COSINE, "query": "x", "k": "5"}, "k: Input should be a valid integer"),
        ({**COSINE, "query": "x", "limit": 5}, "limit: Extra inputs are not permitted"),
        ({**COSINE, "query_vector": [1, True]}, "query_vector.1: Input should be a valid number"),
        ({**COSINE}, 'give either a query text or "query_vector"'),
        (["query"], 'the request body must be a JSON object, like {"query": "a sentence", "k": 5}'),
    ],
)
def test_wrong_types_are_400_in_one_line(server, body, message):
    response = post(server, body)
    assert (response.status_code, response.json()) == (400, {"error": message})


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"query": "x", "k": 5, "k": 6}', "the request body is not valid JSON: duplicate key 'k'"),
        (b'{"query_vector": [NaN]}', "the request body is not valid JSON: NaN is not a JSON number"),
        (b'{"query": ', "the request body is not valid JSON: Expecting value: line 1 column 11 (char 10)"),
        (b'{"query": "\xff"}', "the request body is not UTF-8"),
    ],
)
def test_a_body_that_is_not_json_is_400(server, content, message):
    response = server.client.post("/search", content=content)
    assert (response.status_code, response.json()) == (400, {"error": message})


def test_unknown_table_or_column_is_404_with_the_cli_line(server, run_cli, db_url):
    for body, args in (
        ({"table": "nosuch", "query": "x"}, ["--table", "nosuch"]),
        ({"table": "passage", "vector_column": "nosuch", "query": "x"}, ["-t", "passage", "--vector-column", "nosuch"]),
    ):
        cli = run_cli("search", "--url", db_url, "x", *args)
        response = post(server, body)
        assert response.status_code == 404
        assert response.json() == {"error": core.api_wording(cli.stderr.removeprefix("Error: ").rstrip("\n"))}


def test_curl_d_form_content_type_is_read_as_json(server):
    # `curl -d '{...}'` sends application/x-www-form-urlencoded.
    response = server.client.post(
        "/search",
        content=json.dumps({**COSINE, "query": FINANCE, "k": 1}),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert texts(response) == [TEXT[1]]


def test_bodies_are_bounded(server):
    big = {**COSINE, "query": "x" * (core.MAX_BODY_BYTES + 1)}
    response = post(server, big)
    assert response.status_code == 413 and "larger than 1,048,576 bytes" in response.json()["error"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(11):
            yield b" " * 100_000

    response = server.client.post("/search", content=chunks())
    assert response.status_code == 413


def test_unknown_paths_and_methods_answer_json(server):
    assert server.client.get("/nosuch").json() == {"error": "Not Found"}
    assert server.client.get("/search").status_code == 405


def test_k_is_bounded_like_the_cli():
    assert core_search.MAX_K == vectorize.MAX_K


# -- read-only, timeouts, the database gone ---------------------------------------------------------


def test_the_server_cannot_change_the_database(server):
    with server.app.state.pool.borrow() as db:
        assert db.fetchone("SHOW default_transaction_read_only")[0] == "on"
        assert db.fetchone("SHOW statement_timeout")[0] == "30s"
        with pytest.raises(DatabaseError) as failed:
            db.command("CREATE TABLE intruder (id int)")
        assert failed.value.sqlstate == "25006"  # read_only_sql_transaction
        with pytest.raises(DatabaseError):
            db.command(sql.SQL("UPDATE {} SET passage = 'x'").format(sql.Identifier("passage")))


def test_a_slow_statement_is_cut_by_the_timeout(db_url):
    app = core.create_app(db_url, statement_timeout=0.2)
    with app.state.get_pool().borrow() as db:
        with pytest.raises(DatabaseError) as failed:
            db.fetchone("SELECT pg_sleep(2)", retry=False)
    assert core.status_of(failed.value) == 504


def test_a_database_that_is_gone_is_503_without_its_password():
    app = core.create_app("postgresql://reader:sekret-word@127.0.0.1:1/nowhere")
    with core.BackgroundServer(app) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        for response in (client.get("/healthz"), client.post("/search", json={"query": "x"})):
            assert response.status_code == 503
            assert "sekret-word" not in response.text and "reader:***@" in response.json()["error"]
            assert "\n" not in response.json()["error"] and "Traceback" not in response.text


# -- who may ask -------------------------------------------------------------------------------------


def test_a_token_is_needed_when_the_server_has_one(guarded):
    body = {**COSINE, "query": FINANCE, "k": 1}
    missing = guarded.client.post("/search", json=body)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert missing.json() == {"error": "a token is needed: Authorization: Bearer <token>"}
    wrong = guarded.client.post("/search", json=body, headers={"Authorization": "Bearer " + TOKEN[:-1] + "X"})
    assert (wrong.status_code, wrong.json()) == (401, {"error": "wrong token"})
    assert guarded.client.get("/columns").status_code == 401
    right = guarded.client.post("/search", json=body, headers={"Authorization": "Bearer " + TOKEN})
    assert texts(right) == [TEXT[1]]
    assert guarded.client.get("/columns", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    # The page and the health check hold no data.
    assert guarded.client.get("/healthz").status_code == 200
    assert guarded.client.get("/").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_token(host):
    core.check_exposure(host, None)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "example.org"])
def test_any_other_host_needs_a_token(host):
    with pytest.raises(core.BadInput, match=f"refusing to serve on {host} without a token"):
        core.check_exposure(host, None)
    core.check_exposure(host, TOKEN)
    with pytest.raises(core.BadInput, match="at least 16"):
        core.check_exposure(host, "short")


def test_the_cli_refuses_an_open_host_without_a_token_in_one_line(run_cli, db_url, monkeypatch):
    result = run_cli("serve", "--url", db_url, "--host", "0.0.0.0")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: refusing to serve on 0.0.0.0 without a token")
    assert result.stderr.count("\n") == 1
    monkeypatch.delenv("VECTORIZE_NO_SUCH_TOKEN", raising=False)
    result = run_cli("serve", "--url", db_url, "--host", "0.0.0.0", "--token-env", "VECTORIZE_NO_SUCH_TOKEN")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "VECTORIZE_NO_SUCH_TOKEN is not set" in result.stderr


def test_the_cli_serves_until_sigterm(db_url, tmp_path):
    env = {**os.environ, "VECTORIZE_HOME": str(tmp_path), "VECTORIZE_TOKEN_T": TOKEN}
    env.pop("DATABASE_URL", None)
    command = [sys.executable, str(ROOT / "vectorize.py"), "serve", "--url", db_url, "--port", "0",
               "--token-env", "VECTORIZE_TOKEN_T"]  # fmt: skip
    with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env) as process:
        try:
            line = process.stderr.readline()
            assert line.startswith("Serving http://127.0.0.1:"), line
            base = line.split()[1].rstrip(":")
            with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                assert client.get("/healthz").status_code == 200
                response = client.post("/search", content=json.dumps({**COSINE, "query": FINANCE, "k": 1}))
                assert texts(response) == [TEXT[1]]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        finally:
            process.kill()
        assert "Traceback" not in process.stderr.read()


def test_a_port_in_use_is_one_line(run_cli, db_url, server):
    port = server.url.rsplit(":", 1)[1]
    result = run_cli("serve", "--url", db_url, "--port", port)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}: ")


# -- the page, in a real browser ---------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000"]  # fmt: skip


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.skip(f"no {' or '.join(missing)}: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def search_on_page(browser, server, query, column="passage_vector", where="", k=10, show=""):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#column option")) == 2)
    select = Select(browser.find_element(By.ID, "column"))
    select.select_by_visible_text(next(o.text for o in select.options if f"→ {column} " in o.text))
    browser.find_element(By.ID, "query").send_keys(query)
    browser.find_element(By.ID, "where").send_keys(where)
    browser.find_element(By.ID, "show").send_keys(show)
    browser.find_element(By.ID, "k").clear()
    browser.find_element(By.ID, "k").send_keys(str(k))
    browser.find_element(By.ID, "go").click()
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".panel") and b.find_element(By.ID, "go").is_enabled())
    return {
        panel.get_attribute("data-vector-column"): panel for panel in browser.find_elements(By.CSS_SELECTOR, ".panel")
    }


def test_the_page_ranks_a_query_in_two_columns_side_by_side(browser, server):
    from selenium.webdriver.common.by import By

    panels = search_on_page(browser, server, FINANCE, k=4)
    assert set(panels) == {"passage_vector", "passage_l2"}  # the l2 column of the same source beside it
    for panel in panels.values():
        rows = panel.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert len(rows) == 4
        cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
        assert cells[0] == "1" and cells[2] == "1" and cells[3] == TEXT[1]  # rank, distance, id, text
        distances = [float(r.find_elements(By.TAG_NAME, "td")[1].text) for r in rows]
        assert distances == sorted(distances) and np.all(np.array(distances) >= 0)
    assert "minilm · cosine · index · " in panels["passage_vector"].find_element(By.TAG_NAME, "h2").text
    assert "minilm · l2 · index · " in panels["passage_l2"].find_element(By.TAG_NAME, "h2").text
    assert browser.find_element(By.ID, "message").text == ""
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []  # no script error, no 404


def test_the_page_shows_a_bad_filter_as_the_cli_line(browser, server):
    from selenium.webdriver.common.by import By

    panels = search_on_page(browser, server, "bread", where='{"nosuch": 1}')
    expected = post(server, {**COSINE, "query": "bread", "where": '{"nosuch": 1}'}).json()["error"]
    assert panels["passage_vector"].find_element(By.CSS_SELECTOR, ".error").text == expected
    assert browser.find_element(By.ID, "message").text == expected


def test_the_page_filters(browser, server):
    from selenium.webdriver.common.by import By

    panels = search_on_page(browser, server, "dogs playing outside", where='{"lang": "fr"}', show="lang, year")
    rows = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in panels["passage_vector"].find_elements(
        By.CSS_SELECTOR, "tbody tr")]  # fmt: skip
    assert rows[0] == ["1", rows[0][1], "5", "fr", "2023", TEXT[5]]  # rank, distance, id, lang, year, text
    assert sorted(int(r[2]) for r in rows) == [3, 5, 6, 8] and {r[3] for r in rows} == {"fr"}


def test_the_page_asks_for_the_token_when_the_api_does(browser, guarded):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(guarded.url + "/")
    wait = WebDriverWait(browser, 60)
    wait.until(lambda b: b.find_element(By.ID, "token-line").is_displayed())
    assert browser.find_element(By.ID, "message").text == "a token is needed: Authorization: Bearer <token>"
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "query").send_keys(FINANCE)
    browser.find_element(By.ID, "go").click()
    wait.until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".panel tbody tr") and b.find_element(By.ID, "go").is_enabled()
    )
    first = browser.find_element(By.CSS_SELECTOR, ".panel tbody tr td.text")
    assert first.text == TEXT[1]


def test_the_session_statements_are_plain_sets_both_engines_take(server):
    from vectorize_core.db import session_statements

    with server.app.state.pool.borrow() as db:
        assert [db.as_string(s) for s in session_statements(core.session_settings(30))] == [
            "SET default_transaction_read_only = 'on'",
            "SET statement_timeout = '30000ms'",
        ]
    with pytest.raises(ValueError):
        session_statements({"x; DROP TABLE passage": "1"})


def test_serve_on_each_engine(engine_url, words):
    """The read-only session and a search over HTTP, on PostgreSQL and (with its URL) CockroachDB."""
    with connect(engine_url) as db:
        db.command("CREATE TABLE t (id int PRIMARY KEY, body text)")
        db.command("INSERT INTO t VALUES (1, 'a bb ccc'), (2, 'dddd eeeee'), (3, 'ffffff')")
        encode(db, table="t", column="body", model="words")
    app = core.create_app(engine_url)
    with core.BackgroundServer(app) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        response = client.post("/search", json={"table": "t", "query": "xxxx yyyyy", "k": 2})
        assert [row["id"] for row in response.json()["rows"]] == [2, 1]
        with app.state.pool.borrow() as db:
            assert db.fetchone("SHOW default_transaction_read_only")[0] == "on"
            with pytest.raises(DatabaseError) as failed:
                db.command("INSERT INTO t VALUES (4, 'x')")
            assert failed.value.sqlstate == "25006"


def test_the_page_shows_a_chunked_row_by_the_chunk_that_matched(browser, pg_server):
    """encode --chunk: the page's text cell is the best chunk, so the reader sees why the row matched."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    filler = " ".join(f"Section {i} covers the routine care of pumps and valves." for i in range(80))
    url = fresh_database(pg_server.get_uri())
    with connect(url) as db:
        db.command("CREATE TABLE manual (id int PRIMARY KEY, body text)")
        db.command(
            "INSERT INTO manual VALUES (1, %s), (2, %s)", (filler, filler + " The keeper feeds forty-two gulls.")
        )
        encode(db, table="manual", column="body", model="minilm", chunk=True)
    with core.BackgroundServer(core.create_app(url)) as running:
        browser.get(running.url + "/")
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#column option")) == 1)
        browser.find_element(By.ID, "query").send_keys("how many seagulls does the keeper feed")
        browser.find_element(By.ID, "go").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, ".panel tbody tr"))
        first = browser.find_element(By.CSS_SELECTOR, ".panel tbody tr")
        cells = [c.text for c in first.find_elements(By.TAG_NAME, "td")]
    assert cells[2] == "2"
    assert cells[-1].startswith("[chunk ") and "forty-two gulls" in cells[-1] and len(cells[-1]) < len(filler)
