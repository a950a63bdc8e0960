// Shared by the browser peers (cors_browser.js, ws_browser.js): launches Debian's chromium
// through playwright-core, runs `visit(page, pageUrl, target)` for the allowed page and
// for the denied page, and prints {allowed, denied} as JSON.
// Usage from a peer: require("./browser").compare(visit), with argv ALLOWED DENIED TARGET.
const { chromium } = require("playwright-core");

exports.compare = (visit) =>
  (async () => {
    const [allowed, denied, target] = process.argv.slice(2);
    const browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox"],
    });
    try {
      const page = await browser.newPage();
      const result = {
        allowed: await visit(page, allowed, target),
        denied: await visit(page, denied, target),
      };
      console.log(JSON.stringify(result));
    } finally {
      await browser.close();
    }
  })().catch((e) => {
    console.error(e);
    process.exit(1);
  });
