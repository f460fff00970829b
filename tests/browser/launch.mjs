// What the browser tests share: one JSON line per step on stdout, and
// Debian's headless chromium (ZF_CHROMIUM, /usr/bin/chromium) started by
// playwright-core with a persistent profile in PROFILE_DIR.
import { chromium } from "playwright-core";

export const WAIT = Number(process.env.ZF_BROWSER_WAIT_MS || 15000);

export const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");

// Opens the browser; extra playwright options (viewport, ignoreHTTPSErrors)
// are merged in. Returns the persistent context.
export function launch(profile, options = {}) {
  return chromium.launchPersistentContext(profile, {
    executablePath: process.env.ZF_CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    ...options,
  });
}
