// The demo's live page in a real browser: Debian's headless chromium driven by
// playwright-core (tests/browser/package.json; no browser is downloaded).
// Run by tests/integration/test_ws_browser.py:
//
//   node live.mjs URL EXPECTED SCREENSHOT.png PROFILE_DIR
//
// opens URL (the demo's /live, http:// or https:// with a self-signed
// certificate), waits until the page shows "open" and the server confirmed
// the subscription to demo/content, prints {"ready":true}, then waits (up to
// ZF_BROWSER_WAIT_MS, 15 s by default) for a notification containing
// EXPECTED in the page's list (the test changes the content over HTTP in the
// meantime). Saves the screenshot either way; prints one JSON line per step
// and exits 0 when the notification was shown, 1 when not, 2 on a setup error.
import { WAIT, launch, out } from "./launch.mjs";

const [url, expected, shot, profile] = process.argv.slice(2);

if (!url || !expected || !shot || !profile) {
  out({ error: "usage: node live.mjs URL EXPECTED SCREENSHOT.png PROFILE_DIR" });
  process.exit(2);
}

const context = await launch(profile, { ignoreHTTPSErrors: true, viewport: { width: 900, height: 600 } });
let code = 2;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => out({ console: m.type(), text: m.text() }));
  page.on("pageerror", (e) => out({ pageerror: String(e) }));
  // the server's confirmation of the subscription, seen on the wire
  let subscribed;
  const confirmed = new Promise((resolve) => (subscribed = resolve));
  page.on("websocket", (ws) => {
    out({ websocket: ws.url() });
    ws.on("framereceived", (f) => {
      let msg;
      try {
        msg = JSON.parse(f.payload);
      } catch {
        return;
      }
      if (msg.type === "subscribed" && msg.topic === "demo/content") subscribed();
    });
  });
  const resp = await page.goto(url, { timeout: WAIT });
  out({ page: url, status: resp && resp.status() });
  await page.waitForFunction(() => document.getElementById("state").textContent === "open",
                             null, { timeout: WAIT });
  await Promise.race([
    confirmed,
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error("no subscribed for demo/content")), WAIT)),
  ]);
  out({ ready: true });
  code = 1;
  try {
    await page.waitForFunction(
      (text) => [...document.querySelectorAll("#events li.event")]
        .some((li) => li.textContent.includes(text)),
      expected, { timeout: WAIT });
    code = 0;
  } catch (e) {
    out({ error: "the notification did not appear: " + e.message.split("\n")[0] });
  }
  const items = await page.$$eval("#events li", (lis) => lis.map((li) => li.textContent));
  out({ state: await page.textContent("#state"), events: items });
  await page.screenshot({ path: shot, fullPage: true });
  out({ screenshot: shot });
} catch (e) {
  out({ error: String(e && e.message ? e.message.split("\n")[0] : e) });
} finally {
  await context.close();
}
process.exit(code);
