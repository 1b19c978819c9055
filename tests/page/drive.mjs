// SPDX-License-Identifier: MPL-2.0
// The page of `u2netmatte serve` in a real browser (Debian's chromium,
// headless, driven by playwright-core): photos dropped on the drop zone as
// a user drops them, both results awaited, written out as the page got
// them, the compare slider moved from the keyboard, a screenshot, the .zip
// of all results, a re-run as masks, and a refusal shown on its item.
//
//   node tests/page/drive.mjs URL PHOTO1 PHOTO2 OUT_DIR
//
// Prints one JSON report on stdout; exits 1 if any check failed (each is
// named in report.failures), 2 if the run itself broke. The browser is
// closed in every case. tests/serve_page.rs runs it and checks the files.
import { chromium } from "playwright-core";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { basename, extname, join } from "node:path";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
// Bounds: generous for a slow CI machine on the CPU, finite everywhere.
const RESULT_TIMEOUT_MS = 120_000;
const STEP_TIMEOUT_MS = 15_000;
const WHOLE_RUN_MS = 300_000;

const [url, photo1, photo2, out] = process.argv.slice(2);
if (!url || !photo1 || !photo2 || !out) {
  console.error("usage: node drive.mjs URL PHOTO1 PHOTO2 OUT_DIR");
  process.exit(2);
}
const origin = new URL(url).origin;

const report = { url, chromium: null, failures: [], console: [], offsite: [] };
const fail = (check, detail) => report.failures.push(`${check}: ${detail}`);
const check = (ok, name, detail) => {
  if (!ok) fail(name, detail);
  return ok;
};

const TYPES = { ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp" };

let browser;
const watchdog = setTimeout(async () => {
  // A hang anywhere is a failure with a message, never a stuck test.
  console.error(`drive.mjs: no end within ${WHOLE_RUN_MS / 1000} s`);
  try { await browser?.close(); } catch (_) { /* closing anyway */ }
  process.exit(2);
}, WHOLE_RUN_MS);

/** The page's state of every item, for the report and for waiting. */
const itemsNow = (page) => page.$$eval("#items > li.item", (lis) => lis.map((li) => ({
  name: li.dataset.name,
  state: li.dataset.state,
  run: Number(li.dataset.run),
  status: li.querySelector(".status").textContent,
  error: li.querySelector(".error").hidden ? null : li.querySelector(".error").textContent,
  resultUrl: li.querySelector("img.result").getAttribute("src"),
  download: li.querySelector("a.download").hidden ? null : {
    href: li.querySelector("a.download").getAttribute("href"),
    name: li.querySelector("a.download").download,
  },
})));

/** Waits until every item has ended run `run` (done or error). */
async function waitForRun(page, run, what) {
  try {
    await page.waitForFunction((run) => {
      const lis = [...document.querySelectorAll("#items > li.item")];
      return lis.length === 2 && lis.every((li) => Number(li.dataset.run) >= run &&
        (li.dataset.state === "done" || li.dataset.state === "error"));
    }, run, { timeout: RESULT_TIMEOUT_MS, polling: 100 });
  } catch (e) {
    throw new Error(`${what}: not both done within ${RESULT_TIMEOUT_MS / 1000} s: ` +
      JSON.stringify(await itemsNow(page)));
  }
  const items = await itemsNow(page);
  for (const item of items) {
    if (item.state !== "done") throw new Error(`${what}: ${item.name} failed: ${item.error}`);
  }
  return items;
}

/** A blob: URL's bytes as the page holds them. */
async function blobBytes(page, blobUrl) {
  const b64 = await page.evaluate(async (u) => {
    const bytes = new Uint8Array(await (await fetch(u)).arrayBuffer());
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }, blobUrl);
  return Buffer.from(b64, "base64");
}

async function main() {
  await mkdir(out, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"],
    timeout: 60_000,
  });
  report.chromium = browser.version();
  const context = await browser.newContext({
    viewport: { width: 1100, height: 800 },
    deviceScaleFactor: 1,
    acceptDownloads: true,
  });
  // The page works offline: anything it asks of another origin is
  // refused here and is a failure.
  await context.route("**/*", (route) => {
    const u = route.request().url();
    if (u.startsWith(origin + "/") || u.startsWith("blob:") || u.startsWith("data:")) return route.continue();
    report.offsite.push(u);
    return route.abort();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") report.console.push(`${m.type()}: ${m.text()}`); });
  page.on("pageerror", (e) => fail("page error", e.message));

  // File choosers are intercepted from before the page loads: Playwright
  // turns interception on asynchronously when the first listener comes, and
  // a key press that wins that race opens an un-intercepted chooser that
  // blocks every later one (a fresh CI run saw Space and Enter both fail).
  const choosers = [];
  page.on("filechooser", (c) => choosers.push(c));

  const response = await page.goto(url, { waitUntil: "load" });
  check(response && response.status() === 200, "page", `GET / answered ${response && response.status()}`);

  // Keyboard: Tab reaches the file input, and Space opens the picker.
  let tabs = 0;
  for (; tabs < 20; tabs++) {
    if (await page.evaluate(() => document.activeElement && document.activeElement.id === "files")) break;
    await page.keyboard.press("Tab");
  }
  report.keyboard = { tabsToPicker: tabs };
  if (check(tabs < 20, "keyboard", "Tab never reached the file input")) {
    // Space, then Enter if Space was not taken: either is the keyboard
    // opening the picker.
    let multiple = null;
    for (const key of ["Space", "Enter"]) {
      await page.focus("#files");
      const seen = choosers.length;
      await page.keyboard.press(key);
      const deadline = Date.now() + 5_000;
      while (choosers.length === seen && Date.now() < deadline) await page.waitForTimeout(50);
      if (choosers.length > seen) {
        multiple = choosers[choosers.length - 1].isMultiple();
        report.keyboard.keyOpeningPicker = key;
        break;
      }
    }
    report.keyboard.spaceOpensPicker = multiple !== null;
    report.keyboard.pickerTakesMany = multiple === true;
    check(multiple === true, "keyboard", `Space or Enter on the file input: ${multiple === null ? "no file chooser" : "a chooser for one file"}`);
  }

  // Every state each item goes through, seen from inside the page.
  await page.evaluate(() => {
    window.__states = {};
    new MutationObserver((records) => {
      for (const r of records) {
        const li = r.target;
        if (!(li instanceof HTMLElement) || !li.matches("li.item")) continue;
        const seen = (window.__states[li.dataset.name] ||= []);
        if (seen[seen.length - 1] !== li.dataset.state) seen.push(li.dataset.state);
      }
    }).observe(document.getElementById("items"), {
      subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"],
    });
  });

  // The drop: a DataTransfer holding the two photos as File objects,
  // dispatched as dragenter, dragover and drop on the drop zone.
  const photos = [];
  for (const path of [photo1, photo2]) {
    photos.push({ name: basename(path), type: TYPES[extname(path).toLowerCase()] || "", b64: (await readFile(path)).toString("base64") });
  }
  const dataTransfer = await page.evaluateHandle((photos) => {
    const dt = new DataTransfer();
    for (const p of photos) {
      const bin = atob(p.b64);
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      dt.items.add(new File([bytes], p.name, { type: p.type }));
    }
    return dt;
  }, photos);
  await page.dispatchEvent("#drop .drop-label", "dragenter", { dataTransfer });
  await page.dispatchEvent("#drop .drop-label", "dragover", { dataTransfer });
  report.dragHighlight = await page.$eval("#drop", (d) => d.classList.contains("over"));
  check(report.dragHighlight, "drop", "the drop zone does not show a drag over it");
  await page.dispatchEvent("#drop .drop-label", "drop", { dataTransfer });
  const t0 = Date.now();

  const first = await waitForRun(page, 1, "the dropped photos");
  report.firstRunMs = Date.now() - t0;
  report.states = await page.evaluate(() => window.__states);
  for (const p of photos) {
    const seen = report.states[p.name] || [];
    check(seen.includes("working") && seen[seen.length - 1] === "done", "progress",
      `${p.name} went through ${JSON.stringify(seen)}, not working then done`);
  }

  // The results, byte for byte as the page got them.
  report.results = [];
  for (const [i, item] of first.entries()) {
    check(item.name === photos[i].name, "order", `item ${i} is ${item.name}, dropped ${photos[i].name}`);
    if (!check(item.download && item.download.href === item.resultUrl, "download",
      `${item.name}: the Download link is not the result shown (${JSON.stringify(item.download)})`)) continue;
    const bytes = await blobBytes(page, item.resultUrl);
    const file = join(out, item.download.name);
    await writeFile(file, bytes);
    const shown = await page.$eval(`#items > li.item:nth-child(${i + 1}) img.result`, (img) => ({ w: img.naturalWidth, h: img.naturalHeight }));
    report.results.push({ photo: item.name, file, bytes: bytes.length, shown, status: item.status });
  }

  // The slider, from the keyboard: focus, ArrowLeft; the result's clip
  // must follow it.
  const slider = page.locator("#items > li.item").first().locator("input.slider");
  const clip = () => page.$eval("#items > li.item .result-layer", (l) => getComputedStyle(l).clipPath);
  const before = { value: await slider.inputValue(), clip: await clip() };
  await slider.focus();
  for (let i = 0; i < 15; i++) await page.keyboard.press("ArrowLeft");
  const after = { value: await slider.inputValue(), clip: await clip() };
  report.slider = {
    before, after,
    label: await slider.getAttribute("aria-label"),
    moved: before.value === "50" && after.value === "35" && before.clip !== after.clip,
  };
  check(report.slider.moved, "slider", `ArrowLeft x15: ${JSON.stringify(before)} -> ${JSON.stringify(after)}`);
  check(Boolean(report.slider.label), "slider", "the slider has no accessible name");

  // Blur the slider so that the screenshot shows the page at rest.
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  report.screenshot = join(out, "page.png");
  await page.screenshot({ path: report.screenshot, fullPage: true });

  // Download all: a .zip built in the page.
  const download = page.waitForEvent("download", { timeout: STEP_TIMEOUT_MS });
  await page.click("#download-all");
  const zip = await download;
  report.zip = { file: join(out, "all.zip"), suggested: zip.suggestedFilename() };
  await zip.saveAs(report.zip.file);

  // Re-run all as masks: both come back grayscale and opaque.
  await page.selectOption("#mode", "mask");
  await page.click("#rerun");
  const second = await waitForRun(page, 2, "the re-run as masks");
  report.rerun = { mode: "mask", results: [] };
  for (const [i, item] of second.entries()) {
    const pixels = await page.$eval(`#items > li.item:nth-child(${i + 1}) img.result`, async (img) => {
      await img.decode();
      const c = document.createElement("canvas");
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let gray = true, opaque = true, min = 255, max = 0;
      for (let p = 0; p < d.length; p += 4) {
        if (d[p] !== d[p + 1] || d[p] !== d[p + 2]) gray = false;
        if (d[p + 3] !== 255) opaque = false;
        if (d[p] < min) min = d[p];
        if (d[p] > max) max = d[p];
      }
      return { width: c.width, height: c.height, gray, opaque, min, max };
    });
    const bytes = await blobBytes(page, item.resultUrl);
    const file = join(out, item.download.name);
    await writeFile(file, bytes);
    const changed = item.resultUrl !== first[i].resultUrl;
    report.rerun.results.push({ photo: item.name, file, changed, ...pixels });
    check(changed && pixels.gray && pixels.opaque && pixels.max > pixels.min, "re-run",
      `${item.name} as a mask: ${JSON.stringify(pixels)}, new result: ${changed}`);
  }
  report.rerun.mask = report.rerun.results.length === 2 &&
    report.rerun.results.every((r) => r.changed && r.gray && r.opaque && r.max > r.min);

  // Until now nothing went wrong; the refusal below logs its 400.
  check(report.console.length === 0, "console", report.console.join(" | "));

  // A refusal is shown on its item in the service's words: JPEG has no
  // alpha for a cut-out.
  await page.selectOption("#mode", "alpha");
  await page.selectOption("#format", "jpg");
  await page.locator("#items > li.item").nth(1).locator("button.rerun-one").click();
  await page.waitForFunction(() => {
    const li = document.querySelectorAll("#items > li.item")[1];
    return Number(li.dataset.run) >= 3 && li.dataset.state === "error";
  }, null, { timeout: RESULT_TIMEOUT_MS });
  report.refusal = (await itemsNow(page))[1].error;
  check(/^400: format=jpg has no alpha channel/.test(report.refusal || ""), "refusal",
    `the item shows ${JSON.stringify(report.refusal)}`);

  check(report.offsite.length === 0, "offline", `the page asked for ${report.offsite.join(", ")}`);
}

let code = 0;
try {
  await main();
  code = report.failures.length ? 1 : 0;
} catch (e) {
  report.failures.push(`run: ${e && e.stack ? e.stack : e}`);
  code = 2;
} finally {
  try { await browser?.close(); } catch (_) { /* reported below if it matters */ }
  clearTimeout(watchdog);
}
console.log(JSON.stringify(report, null, 2));
process.exit(code);
