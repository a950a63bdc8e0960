// Opens a WebSocket from pages in a real browser (Debian's chromium, driven by
// playwright-core) for tests/it/websocket.rs. Usage: node ws_browser.js ALLOWED_PAGE
// DENIED_PAGE WS_URL. Prints a JSON object with what each page's socket did: the echo of
// the message it sent, or that it never opened (and its close code).
async function visit(page, url, ws) {
  await page.goto(url);
  return page.evaluate(
    (ws) =>
      new Promise((resolve) => {
        const socket = new WebSocket(ws);
        let opened = false;
        const timer = setTimeout(() => resolve({ timeout: true }), 15000);
        socket.onopen = () => {
          opened = true;
          socket.send("hello from the page");
        };
        socket.onmessage = (m) => {
          clearTimeout(timer);
          socket.close(1000);
          resolve({ opened, echo: m.data });
        };
        socket.onclose = (e) => {
          clearTimeout(timer);
          resolve({ opened, closed: e.code });
        };
      }),
    ws,
  );
}

require("./browser").compare(visit);
