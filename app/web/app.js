// mammogen web page: plain JavaScript, no build step, no CDN. Forms come from /openapi.json, progress
// from GET /jobs/{id}/events (read with fetch, so the X-API-Key header travels), images from the
// server's 8-bit window/level previews of the 16-bit results.
"use strict";

const ROUTES = { "generate": "/generate", "super-resolve": "/super-resolve", "anomaly-map": "/anomaly-map" };
const HIDDEN = new Set(["file", "pacs", "study_uid", "series_uid", "instance_uid", "deliver", "callback_url", "lesions"]);
const $ = (id) => document.getElementById(id);
let openapi = null;
let current = null;  // the final job record shown

const keyInput = $("api-key");
keyInput.value = localStorage.getItem("mammogen-api-key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("mammogen-api-key", keyInput.value); loadModels(); });

function headers(extra = {}) {
  return keyInput.value ? { ...extra, "X-API-Key": keyInput.value } : extra;
}

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (!r.ok) {
    let detail = r.statusText;
    try { const body = await r.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${detail}`);
  }
  return r;
}

function resolve(schema) {
  while (schema && schema.$ref) schema = openapi.components.schemas[schema.$ref.split("/").pop()];
  return schema;
}

function requestSchema(kind) {  // the body's properties, with allOf parts (form models) merged in
  const body = openapi.paths[ROUTES[kind]].post.requestBody.content;
  const schema = resolve((body["application/json"] || body["multipart/form-data"]).schema);
  const properties = {};
  for (const part of schema.allOf || []) Object.assign(properties, resolve(part).properties);
  return { properties: Object.assign(properties, schema.properties) };
}

function plain(prop) {  // an Optional[X] property: the X branch
  prop = resolve(prop);
  if (prop.anyOf) return resolve(prop.anyOf.find((b) => b.type !== "null")) || {};
  return prop;
}

function renderFields() {
  const kind = document.querySelector("input[name=kind]:checked").value;
  $("file-row").hidden = kind === "generate";
  const schema = requestSchema(kind);
  const box = $("fields");
  box.innerHTML = "";
  for (const [name, raw] of Object.entries(schema.properties)) {
    if (HIDDEN.has(name)) continue;
    const prop = plain(raw);
    const label = document.createElement("label");
    label.title = raw.description || "";
    label.append(name);
    let input;
    if (prop.type === "array" && resolve(prop.items).enum) {
      input = document.createElement("span");
      input.className = "checks";
      const chosen = new Set(raw.default || []);
      for (const value of resolve(prop.items).enum) {
        const l = document.createElement("label");
        const c = document.createElement("input");
        c.type = "checkbox"; c.name = name; c.value = value; c.checked = chosen.has(value);
        l.append(c, value);
        input.append(l);
      }
    } else if (prop.enum) {
      input = document.createElement("select");
      input.name = name;
      if (raw.default === null || raw.default === undefined) input.append(new Option("(default)", ""));
      for (const value of prop.enum) input.append(new Option(value, value, false, value === raw.default));
    } else {
      input = document.createElement("input");
      input.name = name;
      input.type = prop.type === "integer" || prop.type === "number" ? "number" : "text";
      if (prop.type === "number") input.step = "any";
      if (prop.minimum !== undefined) input.min = prop.minimum;
      if (prop.maximum !== undefined) input.max = prop.maximum;
      if (raw.default !== null && raw.default !== undefined) input.value = raw.default;
      input.placeholder = raw.default == null ? "(default)" : ""; // unset (null, or omitted by FastAPI): the server decides
    }
    label.append(input);
    box.append(label);
  }
}

function collect(kind) {
  const schema = requestSchema(kind);
  const values = {};
  for (const [name, raw] of Object.entries(schema.properties)) {
    if (HIDDEN.has(name)) continue;
    const prop = plain(raw);
    if (prop.type === "array") {
      values[name] = [...document.querySelectorAll(`#fields input[name="${name}"]:checked`)].map((c) => c.value);
      continue;
    }
    const el = document.querySelector(`#fields [name="${name}"]`);
    if (!el || el.value === "") continue;
    values[name] = prop.type === "integer" ? parseInt(el.value, 10) : prop.type === "number" ? parseFloat(el.value) : el.value;
  }
  return values;
}

async function submit(event) {
  event.preventDefault();
  $("message").textContent = "";
  const kind = document.querySelector("input[name=kind]:checked").value;
  const values = collect(kind);
  let options;
  if (kind === "generate") {
    options = { method: "POST", body: JSON.stringify(values), headers: { "Content-Type": "application/json" } };
  } else {
    const form = new FormData();
    if (!$("file").files.length) { $("message").textContent = "Choose an image file first."; return; }
    form.append("file", $("file").files[0]);
    for (const [name, value] of Object.entries(values)) {
      if (Array.isArray(value)) value.forEach((v) => form.append(name, v)); else form.append(name, value);
    }
    options = { method: "POST", body: form };
  }
  try {
    const accepted = await (await api(ROUTES[kind], options)).json();
    follow(accepted.id);
  } catch (e) {
    $("message").textContent = e.message;
  }
}

function showProgress(record) {
  const p = record.progress || {};
  const percent = Math.round(100 * (p.fraction || 0));
  $("bar").style.width = `${percent}%`;
  const eta = p.eta_s !== null && p.eta_s !== undefined && record.status !== "succeeded" ? `, ETA ${p.eta_s} s` : "";
  const where = record.status === "queued" && record.queue_position !== null ? ` (position ${record.queue_position})` : "";
  const stage = p.stage ? ` ${p.stage} ${p.step}/${p.total}` : "";
  $("progress-text").textContent = `${record.status}${where}: ${percent} %${stage}${eta}`;
  if (record.error) $("progress-text").textContent += ` (${record.error.error}: ${record.error.detail})`;
}

async function follow(jobId) {
  $("job-id").textContent = jobId;
  $("viewer").hidden = true;
  document.body.dataset.state = "running";
  let lastId = null;
  for (;;) {
    try {
      const r = await api(`/jobs/${jobId}/events`, { headers: lastId ? { "Last-Event-ID": lastId } : {} });
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const fields = {};
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) continue;
            const i = line.indexOf(":");
            fields[line.slice(0, i)] = line.slice(i + 1).replace(/^ /, "");
          }
          if (!fields.data) continue;
          lastId = fields.id || lastId;
          const record = JSON.parse(fields.data);
          if (fields.event === "gone") { $("progress-text").textContent = "The job was deleted."; return; }
          showProgress(record);
          if (fields.event === "final") { finished(record); return; }
        }
      }
    } catch (e) {
      $("message").textContent = e.message;
      if (e.message.startsWith("4")) return;
    }
    await new Promise((ok) => setTimeout(ok, 1000));  // the stream broke: resume after the last event
  }
}

async function imageInto(img, record, name) {
  const url = `/jobs/${record.id}/results/${name}/preview?level=${$("level").value}&window=${$("window").value}`;
  const blob = await (await api(url)).blob();
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  img.src = URL.createObjectURL(blob);
  await img.decode();
}

async function finished(record) {
  current = record;
  document.body.dataset.state = record.status;
  if (record.status !== "succeeded") return;
  $("viewer").hidden = false;
  const pngs = record.results.filter((r) => r.media_type === "image/png");
  const names = new Set(pngs.map((r) => r.name));
  const overlay = names.has("heatmap.png") && names.has("reconstruction.png");
  $("overlay-view").hidden = !overlay;
  $("opacity-row").hidden = !overlay;
  const images = $("images");
  images.innerHTML = "";
  for (const link of pngs) {  // dual-view pairs (pairNN_cc, pairNN_mlo) come next to each other
    const figure = document.createElement("figure");
    const img = document.createElement("img");
    img.dataset.name = link.name;
    const caption = document.createElement("figcaption");
    caption.textContent = link.name;
    figure.append(img, caption);
    images.append(figure);
  }
  const downloads = $("downloads");
  downloads.innerHTML = "";
  for (const link of record.results) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = link.url;
    a.textContent = `${link.name} (${link.size} bytes, sha256 ${link.sha256.slice(0, 12)}...)`;
    a.addEventListener("click", async (e) => {
      e.preventDefault();
      const blob = await (await api(link.url)).blob();
      const save = document.createElement("a");
      save.href = URL.createObjectURL(blob);
      save.download = link.name;
      save.click();
    });
    li.append(a);
    downloads.append(li);
  }
  await refreshImages();
  document.body.dataset.state = "shown";
}

async function refreshImages() {
  if (!current) return;
  const jobs = [...document.querySelectorAll("#images img")].map((img) => imageInto(img, current, img.dataset.name));
  if (!$("overlay-view").hidden) {
    jobs.push(imageInto($("overlay-base"), current, "reconstruction.png"));
    jobs.push(imageInto($("overlay-top"), current, "heatmap.png"));
    $("overlay-top").style.opacity = $("opacity").value;
  }
  await Promise.all(jobs);
}

async function loadModels() {
  const body = $("models").querySelector("tbody");
  body.innerHTML = "";
  try {
    const { models } = await (await api("/models")).json();
    for (const m of models) {
      const row = body.insertRow();
      for (const value of [m.kind, m.name || "", m.version || "", m.loaded ? "yes" : "no"]) row.insertCell().textContent = value;
    }
  } catch (e) {
    body.insertRow().insertCell().textContent = e.message;
  }
}

async function start() {
  openapi = await (await fetch("/openapi.json")).json();
  document.querySelectorAll("input[name=kind]").forEach((r) => r.addEventListener("change", renderFields));
  $("job-form").addEventListener("submit", submit);
  for (const id of ["level", "window"]) $(id).addEventListener("change", refreshImages);
  $("opacity").addEventListener("input", () => { $("overlay-top").style.opacity = $("opacity").value; });
  renderFields();
  loadModels();
  document.body.dataset.state = "ready";
}

start();
