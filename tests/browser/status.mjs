// zfront's live status page in a real browser: Debian's headless chromium
// driven by playwright-core. Run by tests/integration/test_status_browser.py:
//
//   node status.mjs URL MORE SCREENSHOT.png PROFILE_DIR
//
// opens URL (the admin listener's /status), waits until the page's event
// stream is open and it drew a first status, prints {"ready":true,
// "requests":N} with the request count the page shows, then waits (up to
// ZF_BROWSER_WAIT_MS) until the page shows N + MORE requests (the test makes
// MORE requests meanwhile) without being reloaded. Saves the screenshot
// either way; prints one JSON line per step and exits 0 when the count was
// reached, 1 when not, 2 on a setup error.
import { WAIT, launch, out } from "./launch.mjs";

const [url, more, shot, profile] = process.argv.slice(2);

if (!url || !more || !shot || !profile) {
  out({ error: "usage: node status.mjs URL MORE SCREENSHOT.png PROFILE_DIR" });
  process.exit(2);
}

const context = await launch(profile, { viewport: { width: 1000, height: 700 } });
let code = 2;
try {
  const page = context.pages()[0] || (await context.newPage());
  page.on("console", (m) => out({ console: m.type(), text: m.text() }));
  page.on("pageerror", (e) => out({ pageerror: String(e) }));
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });
  // every request the page makes after loading: an EventSource, no polling
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const resp = await page.goto(url, { timeout: WAIT });
  out({ page: url, status: resp && resp.status() });
  await page.waitForFunction(
    () => document.getElementById("state").textContent === "open" &&
      Number(document.getElementById("updates").textContent) >= 1,
    null, { timeout: WAIT });
  await page.evaluate(() => { window.zfMarker = "same document"; });
  const start = Number(await page.textContent("#requests"));
  out({ ready: true, requests: start });
  code = 1;
  try {
    await page.waitForFunction(
      (target) => Number(document.getElementById("requests").textContent) >= target,
      start + Number(more), { timeout: WAIT });
    code = 0;
  } catch (e) {
    out({ error: "the request count did not change: " + e.message.split("\n")[0] });
  }
  out({
    state: await page.textContent("#state"),
    requests: Number(await page.textContent("#requests")),
    updates: Number(await page.textContent("#updates")),
    workers: await page.$$eval("#workers tbody tr", (rows) => rows.length),
    marker: await page.evaluate(() => window.zfMarker || null),
    navigations,
    fetched: requests,
  });
  await page.screenshot({ path: shot, fullPage: true });
  out({ screenshot: shot });
} catch (e) {
  out({ error: String(e && e.message ? e.message.split("\n")[0] : e) });
} finally {
  await context.close();
}
process.exit(code);
