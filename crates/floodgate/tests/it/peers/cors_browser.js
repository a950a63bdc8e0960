// Runs fetches from pages in a real browser (Debian's chromium, driven by playwright-core)
// for tests/it/cors_browser.rs. Usage: node cors_browser.js ALLOWED_PAGE DENIED_PAGE API
// Prints a JSON object with what each page's fetches got.
async function visit(page, url, api) {
  await page.goto(url);
  return page.evaluate(async (api) => {
    const out = {};
    const attempt = async (name, req) => {
      try {
        const r = await req();
        out[name] = { status: r.status, body: await r.text(), rid: r.headers.get("x-request-id") };
      } catch (e) {
        out[name] = { error: String(e) };
      }
    };
    // A simple request (no preflight), with credentials.
    await attempt("simple", () => fetch(api, { credentials: "include" }));
    // A preflighted one: PUT with a custom header.
    await attempt("preflighted", () =>
      fetch(api, { method: "PUT", headers: { "x-token": "t1", "content-type": "application/json" }, body: "{}" }));
    // A method the policy does not allow.
    await attempt("delete", () => fetch(api, { method: "DELETE" }));
    return out;
  }, api);
}

require("./browser").compare(visit);
