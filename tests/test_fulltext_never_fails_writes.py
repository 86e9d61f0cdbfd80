"""--fulltext never makes the application's own writes fail. The generated
tsvector indexes the first FULLTEXT_MAX_CHARS characters, which stay under PostgreSQL's 1 MB
tsvector limit whatever the text: checked here on adversarial texts (distinct words, 4-byte
characters, hyphenated words whose parts are indexed twice, URLs, repeated words, long words,
random mixtures), each twice as long as the bound. Real embedded PostgreSQL; the CockroachDB
statements are pinned in tests/test_dialects.py."""

from __future__ import annotations

import itertools
import json
import random

import psycopg
import pytest

from vectorize_core import dialects

TSVECTOR_MAX = 1_048_575  # PostgreSQL's MAXSTRPOS: bytes of lexemes and positions in one tsvector
BYTES_PER_CHAR = 8  # the bound argued in dialects.py
N = 100_000  # the characters indexed, as the README states them


def cjk(i: int) -> str:
    """Distinct 4-byte characters (CJK Extension B), letters to the parser."""
    return chr(0x20000 + i % 0xA000)


def ascii_words():
    for n in itertools.count(1):
        for letters in itertools.product("abcdefghijklmnopqrstuvwxyz", repeat=n):
            yield "".join(letters)


def text_of(words, length: int = 2 * N, sep: str = " ") -> str:
    out, size = [], 0
    for word in words:
        out.append(word)
        size += len(word) + len(sep)
        if size - len(sep) >= length:
            break
    return sep.join(out)[:length]


def hyphenated(part: int):
    """Hyphenated words of distinct 4-byte parts, as long as PostgreSQL indexes (under 2,047
    bytes): the whole word and each part become lexemes, 7.96 bytes a character at part=100."""
    counter = itertools.count()
    parts = max(2, 2040 // (4 * part + 1))
    while True:
        yield "-".join("".join(cjk(next(counter)) for _ in range(part)) for _ in range(parts))


def hyphenated_ascii():
    words = ascii_words()
    while True:
        yield "-".join(itertools.islice(words, 50))


def fuzz(seed: int) -> str:
    rnd = random.Random(seed)
    alphabet = list("abcxyzAZ0129") + ["\u023a", "\u0130", "ß", "é", "Ω", "ж", "\u4e00", "\U00020001", "\u0301"]
    punct = list("-./:@_+&;<>=?#%~!'\"(),[]{}| \t\n") + ["http://", "www.", ".com", "-", "-"]
    parts: list[str] = []
    size = 0
    while size < 2 * N:
        if rnd.random() < 0.6:
            piece = "".join(
                cjk(rnd.randrange(0xA000)) if rnd.random() < 0.5 else rnd.choice(alphabet)
                for _ in range(rnd.choice([1, 2, 3, 5, 40]))
            )
        else:
            piece = rnd.choice(punct)
        parts.append(piece)
        size += len(piece)
    return "".join(parts)[: 2 * N]


ADVERSARIAL = {
    "distinct ascii words": lambda: text_of(ascii_words()),
    "distinct 4-byte words": lambda: text_of(cjk(i) for i in itertools.count()),
    "distinct 4-byte words of 3": lambda: text_of("".join(cjk(3 * i + j) for j in range(3)) for i in itertools.count()),
    "hyphenated, parts of 1": lambda: text_of(hyphenated(1)),
    "hyphenated, parts of 5": lambda: text_of(hyphenated(5)),
    "hyphenated, parts of 100": lambda: text_of(hyphenated(100)),
    "hyphenated ascii": lambda: text_of(hyphenated_ascii()),
    "urls": lambda: text_of(f"http://{w}.example.com/{w}/x-{w}?q={w}" for w in ascii_words()),
    "one word, every position": lambda: text_of(itertools.repeat("position")),
    "words longer than any lexeme": lambda: text_of(cjk(i) * 3000 for i in itertools.count()),
    "lowercase longer than uppercase": lambda: text_of("\u023a" + cjk(i) for i in itertools.count()),
    "random mixture 1": lambda: fuzz(1),
    "random mixture 2": lambda: fuzz(2),
}


def test_the_bound_is_the_one_the_readme_states():
    assert getattr(dialects, "FULLTEXT_MAX_CHARS", None) == N


@pytest.fixture
def docs(run_cli, url, conn, words):
    conn.add_notice_handler(lambda diagnostic: None)  # "word is too long to be indexed"
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'first', 'an ordinary short text about zebras')")
    result = run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words", "--fulltext")
    assert result.exit_code == 0, result.output
    return conn


def stored_tsvector_bytes(conn, key: int) -> int:
    """Bytes of lexemes and positions (what the limit counts) of the row's stored tsvector."""
    size, lexemes = conn.execute(
        "SELECT pg_column_size(v), length(v) FROM (SELECT body_tsv || ''::tsvector AS v FROM docs WHERE id = %s) s",
        (key,),
    ).fetchone()
    return size - 8 - 4 * lexemes


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_no_text_makes_the_applications_insert_fail(docs, name):
    text = ADVERSARIAL[name]()
    assert len(text) == 2 * N
    docs.execute("INSERT INTO docs VALUES (2, 'x', %s)", (text,))  # failed before: string is too long for tsvector
    used = stored_tsvector_bytes(docs, 2)
    assert used <= BYTES_PER_CHAR * N < TSVECTOR_MAX, (name, used)
    docs.execute("UPDATE docs SET body = body || %s WHERE id = 2", (text,))  # and an UPDATE
    (stored,) = docs.execute("SELECT length(body) FROM docs WHERE id = 2").fetchone()
    assert stored == 4 * N  # the user's text is kept whole; only the index reads a prefix


def test_the_adversarial_texts_are_real_threats(conn):
    """Without the bound, the worst of them fails PostgreSQL at once: the bound is what holds."""
    conn.add_notice_handler(lambda diagnostic: None)
    text = ADVERSARIAL["hyphenated, parts of 100"]()
    (ratio,) = conn.execute(
        "SELECT (pg_column_size(v) - 8 - 4 * length(v))::float / %s FROM (SELECT to_tsvector('english', %s) v) s",
        (N, text[:N]),
    ).fetchone()
    assert 7.9 < ratio < BYTES_PER_CHAR  # the worst case found, and under the bound argued
    with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="string is too long for tsvector"):
        conn.execute("SELECT to_tsvector('english', %s)", (text,))


def test_a_2_mb_row_inserted_after_fulltext_succeeds_and_hybrid_finds_its_words(run_cli, url, docs):
    head = "quokka " + text_of(ascii_words(), N - 100)  # a word in the indexed part
    text = head + " " + text_of(hyphenated(100), 2_000_000 - len(head) - 20) + " wombat"  # past the bound
    docs.execute("INSERT INTO docs VALUES (3, 'big', %s)", (text,))
    assert len(text) >= 1_990_000
    rows = json.loads(run_cli("search", "--url", url, "quokka", "-t", "docs", "--hybrid", "--json").stdout)
    (found,) = [r for r in rows if r["id"] == 3]
    assert found["text_rank"] == 1
    zebras = json.loads(run_cli("search", "--url", url, "zebras", "-t", "docs", "--hybrid", "--json").stdout)
    assert [r["id"] for r in zebras if r["text_rank"] == 1] == [1]
    # Words past the first FULLTEXT_MAX_CHARS characters are not in the full text (the README says so).
    (hits,) = docs.execute("SELECT count(*) FROM docs WHERE body_tsv @@ to_tsquery('english', 'wombat')").fetchone()
    assert hits == 0


def test_encode_fulltext_on_a_table_already_holding_a_2_mb_row_succeeds(run_cli, url, conn, words):
    conn.add_notice_handler(lambda diagnostic: None)
    conn.execute("CREATE TABLE big (id int PRIMARY KEY, title text, body text)")
    text = text_of(hyphenated(100), 2_000_000)
    conn.execute("INSERT INTO big VALUES (1, %s, %s), (2, 'small', 'a small text about otters')", (text, text))
    result = run_cli("encode", "--url", url, "-t", "big", "-c", "title", "-c", "body", "-m", "words", "--fulltext")
    assert result.exit_code == 0, result.output  # was exit 1: string is too long for tsvector
    assert "full text in title_tsv" in result.stdout
    (hits,) = conn.execute("SELECT count(*) FROM big WHERE title_tsv @@ to_tsquery('english', 'otters')").fetchone()
    assert hits == 1
    # Several columns: the bound is on the text they make together.
    conn.execute("INSERT INTO big VALUES (3, %s, %s)", (text, text))


OLD_EXPRESSION = "to_tsvector('english', coalesce(CAST(body AS text), ''))"


def test_a_rerun_of_encode_bounds_a_full_text_column_made_by_an_earlier_version(run_cli, url, docs):
    docs.execute(f"ALTER TABLE docs ALTER COLUMN body_tsv SET EXPRESSION AS ({OLD_EXPRESSION})")  # as before
    text = text_of(hyphenated(100), 2_000_000)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        docs.execute("INSERT INTO docs VALUES (4, 'old', %s)", (text,))
    (column,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert (
        "indexes whole texts" in column["problem"] and "vectorize.py encode -t public.docs -c body" in column["problem"]
    )
    dry = run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words", "--dry-run")
    assert 'ALTER TABLE "public"."docs" ALTER COLUMN "body_tsv" SET EXPRESSION AS' in dry.stdout
    result = run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words")
    assert result.exit_code == 0, result.output
    docs.execute("INSERT INTO docs VALUES (4, 'old', %s)", (text,))
    (column,) = json.loads(run_cli("status", "--url", url, "--json").stdout)
    assert column["problem"] is None
    (hits,) = docs.execute("SELECT count(*) FROM docs WHERE body_tsv @@ to_tsquery('english', 'zebras')").fetchone()
    assert hits == 1  # the rows already there were indexed again, and the GIN index kept
    (index,) = docs.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'docs_body_tsv_idx'").fetchone()
    assert index == 1
    again = run_cli("encode", "--url", url, "-t", "docs", "-c", "body", "-m", "words", "--dry-run")
    assert "SET EXPRESSION" not in again.stdout  # once
