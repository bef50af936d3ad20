// The "Try it" panels of /docs: send a request to this server from the page and show
// the answer, status, headers and body. Hand-written and dependency-free, like the
// page (handlers/docs.py renders the forms this script drives); it runs on the
// page's own origin, so the calls need no CORS. The page's Content-Security-Policy
// allows this one script by its SHA-256 and lets it talk to this server only.
"use strict";

// The bearer token every panel sends, once "Authorize" has one; kept for this tab only.
const TOKEN_KEY = "meditrack-docs-token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";

function showToken() {
  const state = document.getElementById("auth-state");
  state.textContent = token ? "Authorized: requests carry your token." : "Not authorized.";
  document.getElementById("auth-token").value = token;
}

function setToken(value) {
  token = value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  showToken();
}

// Authorize: log in with a username and password (POST /auth/login), or paste a token.
async function authorize(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const username = form.elements.username.value;
  if (!username) {
    setToken(form.elements.token.value);
    return;
  }
  const state = document.getElementById("auth-state");
  try {
    const response = await fetch("/auth/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username, password: form.elements.password.value }),
    });
    const answer = await response.json();
    if (response.ok) {
      setToken(answer.accessToken);
      form.elements.password.value = "";
    } else {
      state.textContent = `Login refused (${response.status}): ${answer.detail}`;
    }
  } catch (error) {
    state.textContent = `Login failed: ${error}`;
  }
}

// The request a panel describes: its path with the path parameters filled in, the
// query, the headers, and the body (JSON text, or a multipart form with the file).
function requestOf(form) {
  let path = form.dataset.path;
  const query = new URLSearchParams();
  const headers = new Headers();
  for (const input of form.querySelectorAll("[data-in]")) {
    if (input.value === "") continue;
    if (input.dataset.in === "path") path = path.replace(`{${input.name}}`, encodeURIComponent(input.value));
    else if (input.dataset.in === "query") query.append(input.name, input.value);
    else headers.set(input.name, input.value);
  }
  if (form.dataset.auth === "true" && token) headers.set("Authorization", `Bearer ${token}`);
  let body;
  const bodyType = form.dataset.bodyType;
  if (bodyType === "multipart/form-data") {
    body = new FormData();  // fetch writes its boundary into Content-Type itself
    for (const field of form.querySelectorAll("[data-part]")) {
      if (field.type === "file" && field.files.length) body.append(field.name, field.files[0]);
      else if (field.type !== "file" && field.value !== "") body.append(field.name, field.value);
    }
  } else if (bodyType) {
    headers.set("Content-Type", bodyType);
    body = form.querySelector("textarea[name=body]").value;
  }
  const search = query.toString();
  return { url: search ? `${path}?${search}` : path, init: { method: form.dataset.method, headers, body } };
}

// How an answer is shown: JSON indented, text as it is, anything else by its size.
async function bodyText(response) {
  const type = response.headers.get("Content-Type") || "";
  if (/json/.test(type)) {
    const text = await response.text();
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
  }
  if (type.startsWith("text/") || type.includes("ndjson")) return response.text();
  const bytes = await response.arrayBuffer();
  return bytes.byteLength ? `(${bytes.byteLength} bytes of ${type})` : "";
}

async function send(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const output = form.querySelector("output");
  output.textContent = "Sending…";
  delete output.dataset.status;
  const { url, init } = requestOf(form);
  try {
    const response = await fetch(url, init);
    const lines = [`${response.status} ${response.statusText}`];
    response.headers.forEach((value, name) => lines.push(`${name}: ${value}`));
    output.textContent = `${init.method} ${url}\n\n${lines.join("\n")}\n\n${await bodyText(response)}`;
    output.dataset.status = String(response.status);
  } catch (error) {
    output.textContent = `The request could not be sent: ${error}`;
    output.dataset.status = "failed";
  }
}

document.getElementById("authorize").addEventListener("submit", authorize);
for (const form of document.querySelectorAll("form.try")) form.addEventListener("submit", send);
showToken();
