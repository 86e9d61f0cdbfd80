// The page of `vectorize.py serve`: pick a vectorized column, type a query, see the ranked rows,
// and a second vector column of the same source beside them when there is one. Table contents
// are put in as text (textContent), never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
let columns = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem("vectorize-token");
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

async function call(path, body) {
  const response = await fetch(path, {
    method: body ? "POST" : "GET",
    headers: headers(),
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = { error: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) $("token-line").hidden = false;
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function say(text, isError) {
  $("message").textContent = text || "";
  $("message").className = isError ? "error" : "";
}

function label(c) {
  return `${c.table}.${c.column} → ${c.vector_column} (${c.model}, ${c.metric})`;
}

async function loadColumns() {
  try {
    columns = (await call("/columns")).columns;
  } catch (e) {
    say(e.message, true);
    return;
  }
  const select = $("column");
  select.replaceChildren();
  columns.forEach((c, i) => select.add(new Option(label(c), String(i))));
  if (!columns.length) {
    say("No vectorized columns yet: run `vectorize.py encode --table T --column C` first.", true);
    return;
  }
  say(`${columns.length} vectorized column${columns.length > 1 ? "s" : ""}.`);
  choose();
}

// The other vector columns of the chosen one's table and source: the candidates to compare.
function siblings(c) {
  return columns
    .map((other, i) => [other, i])
    .filter(([o]) => o !== c && o.schema === c.schema && o.table_name === c.table_name && o.column === c.column);
}

function choose() {
  const c = columns[Number($("column").value)];
  if (!c) return;
  const compare = $("compare");
  compare.replaceChildren(new Option("none", ""));
  const others = siblings(c);
  others.forEach(([o, i]) => compare.add(new Option(`${o.vector_column} (${o.model}, ${o.metric})`, String(i))));
  $("compare-label").hidden = others.length === 0;
  compare.value = others.length ? String(others[0][1]) : "";
  $("hybrid-label").hidden = !c.fulltext;
  if (!c.fulltext) $("hybrid").checked = false;
}

function request(c) {
  const body = {
    schema: c.schema,
    table: c.table_name,
    vector_column: c.vector_column,
    query: $("query").value,
    k: Number($("k").value) || 10,
    exact: $("exact").checked,
  };
  const where = $("where").value.trim();
  if (where) body.where = where; // the server reads it as `search --where` does
  const shown = $("show").value.split(",").map((name) => name.trim()).filter(Boolean);
  if (shown.length) body.show = shown;
  if ($("hybrid").checked && c.fulltext) body.hybrid = true;
  return body;
}

function cell(row, tag, text, cls) {
  const td = document.createElement(tag);
  if (cls) td.className = cls;
  if (cls === "text") {
    const div = document.createElement("div");
    div.textContent = text;
    td.append(div);
  } else {
    td.textContent = text;
  }
  row.append(td);
}

function show(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function panel(c, result, error) {
  const section = document.createElement("section");
  section.className = "panel";
  section.dataset.vectorColumn = c.vector_column;
  const title = document.createElement("h2");
  title.textContent = c.vector_column;
  const small = document.createElement("small");
  small.textContent = result
    ? `${c.model} · ${c.metric} · ${result.ranking.mode} · ${result.took_ms.toFixed(0)} ms`
    : `${c.model} · ${c.metric}`;
  title.append(small);
  section.append(title);
  if (error) {
    const p = document.createElement("p");
    p.className = "error";
    p.textContent = error;
    section.append(p);
    return section;
  }
  const r = result.ranking;
  if (r.notice) {
    const p = document.createElement("p");
    p.className = "notice";
    p.textContent = r.notice;
    section.append(p);
  }
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  const measure = r.score_key ? "score" : "distance";
  for (const name of ["#", measure, ...r.key_columns, ...r.extra_columns, r.text_columns.join(" + ")]) {
    cell(head, "th", name);
  }
  const body = table.createTBody();
  result.rows.forEach((row, i) => {
    const tr = body.insertRow();
    cell(tr, "td", String(i + 1), "num");
    const value = row[r.score_key || r.distance_key];
    cell(tr, "td", value === null ? "" : Number(value).toFixed(4), "num");
    r.key_columns.forEach((k) => cell(tr, "td", show(row[k]), "num"));
    r.extra_columns.forEach((k) => cell(tr, "td", show(row[k]), "extra"));
    // A chunked column: the chunk that matched, so that the reader sees why the row did.
    const chunk = r.chunk_keys ? row[r.chunk_keys[3]] : null;
    const text = chunk === null || chunk === undefined
      ? r.text_columns.map((t) => show(row[t])).join(" ")
      : `[chunk ${row[r.chunk_keys[0]]}] ${chunk}`;
    cell(tr, "td", text, "text");
  });
  if (!result.rows.length) {
    const tr = body.insertRow();
    cell(tr, "td", "No rows.", "text");
  }
  section.append(table);
  return section;
}

async function run(event) {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) sessionStorage.setItem("vectorize-token", token);
  if (!columns.length) {
    await loadColumns();
    if (!columns.length) return;
  }
  const chosen = [columns[Number($("column").value)]];
  if ($("compare").value !== "" && !$("compare-label").hidden) chosen.push(columns[Number($("compare").value)]);
  if (!$("query").value.trim()) {
    say("Type a query first.", true);
    return;
  }
  $("go").disabled = true;
  say("Searching…");
  const answers = await Promise.all(
    chosen.map((c) => call("/search", request(c)).then((result) => [c, result, null], (e) => [c, null, e.message])),
  );
  $("go").disabled = false;
  $("results").replaceChildren(...answers.map(([c, result, error]) => panel(c, result, error)));
  const failed = answers.filter(([, , error]) => error);
  say(failed.length === answers.length ? failed[0][2] : "", failed.length === answers.length);
}

document.addEventListener("DOMContentLoaded", () => {
  $("column").addEventListener("change", choose);
  $("search").addEventListener("submit", run);
  loadColumns();
});
