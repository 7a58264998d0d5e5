// The accounts page: the list with each account's role (changeable) and a remove button,
// and the form that adds one. The server checks everything and says why it refuses.
import { toLogin } from "./common.js";

const table = /** @type {HTMLTableSectionElement} */ (document.querySelector("#accounts tbody"));
const form = /** @type {HTMLFormElement} */ (document.querySelector("#account-form"));
const error = /** @type {HTMLElement} */ (form.querySelector(".error"));

async function send(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: { "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (response.status === 401) toLogin();
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `the server answered ${response.status}`);
  return answer;
}

function row(account) {
  const tr = document.createElement("tr");
  tr.dataset.name = account.name;
  const name = document.createElement("td");
  name.textContent = account.name;
  const role = document.createElement("td");
  const select = document.createElement("select");
  for (const choice of ["viewer", "operator", "admin"]) {
    const option = document.createElement("option");
    option.textContent = choice;
    option.selected = choice === account.role;
    select.append(option);
  }
  select.addEventListener("change", () =>
    send("PUT", `/api/accounts/${encodeURIComponent(account.name)}`, { role: select.value })
      .then(load)
      .catch((e) => {
        error.textContent = e.message;
        load();
      }),
  );
  role.append(select);
  const since = document.createElement("td");
  since.textContent = account.created;
  const actions = document.createElement("td");
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.addEventListener("click", () =>
    send("DELETE", `/api/accounts/${encodeURIComponent(account.name)}`)
      .then(load)
      .catch((e) => {
        error.textContent = e.message;
      }),
  );
  actions.append(remove);
  tr.append(name, role, since, actions);
  return tr;
}

async function load() {
  const answer = await send("GET", "/api/accounts");
  table.replaceChildren(...answer.accounts.map(row));
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const data = new FormData(form);
  send("POST", "/api/accounts", { name: data.get("name"), role: data.get("role"), password: data.get("password") })
    .then(() => {
      error.textContent = "";
      form.reset();
      return load();
    })
    .catch((e) => {
      error.textContent = e.message;
    });
});

load().catch((e) => {
  error.textContent = e.message;
});
