// SPDX-License-Identifier: MPL-2.0
// The page of `u2netmatte serve`: photos dropped or picked are sent to
// /api/remove of this same service, a few at a time, each shown beside its
// result. Plain script, no framework and no build step: it is built into
// the binary as it is, and the page works with no network beyond the
// service (nothing is fetched from elsewhere).
//
// Hooks for tests and scripts: each photo is an <li class="item"> with
// data-state="queued|working|done|error" and data-run (how many of its
// runs have ended); its result is img.result and a.download.
"use strict";

(() => {
  // Requests at once: enough to keep the service's shared model batches
  // full, few enough that a hundred dropped photos do not all hit its
  // --max-queue together (a full service answers 503).
  const AT_ONCE = 4;

  const $ = (id) => document.getElementById(id);
  const settings = {
    mode: $("mode"),
    fill: $("fill"),
    fillOpaque: $("fill-opaque"),
    threshold: $("threshold"),
    feather: $("feather"),
    blurRadius: $("blur-radius"),
    format: $("format"),
  };
  const drop = $("drop");
  const picker = $("files");
  const list = $("items");
  const template = $("item-template");
  const summary = $("summary");
  const rerunAll = $("rerun");
  const downloadAll = $("download-all");
  const clearAll = $("clear");

  /** Every photo on the page, in the order it came. */
  const items = [];
  /** Items waiting for a turn; `running` are being sent or processed. */
  const waiting = [];
  let running = 0;
  let nextId = 1;

  // --- settings -> the request's query -----------------------------------

  // Which settings a mode uses: only those are sent, so that the service
  // is never told something that does not apply.
  const USES = {
    alpha: [],
    composite: ["fill", "threshold", "feather"],
    mask: [],
    blur: ["blur-radius"],
  };

  function fillColor() {
    // <input type=color> gives #rrggbb; the service takes 0xAARRGGBB.
    const rgb = settings.fill.value.replace("#", "");
    return "0x" + (settings.fillOpaque.checked ? "ff" : "00") + rgb;
  }

  function currentQuery() {
    const mode = settings.mode.value;
    const q = new URLSearchParams({ mode });
    const uses = USES[mode];
    if (uses.includes("fill")) q.set("fill-color", fillColor());
    if (uses.includes("threshold")) q.set("threshold", settings.threshold.value);
    if (uses.includes("feather")) q.set("feather", settings.feather.value);
    if (uses.includes("blur-radius")) q.set("blur-radius", settings.blurRadius.value);
    q.set("format", settings.format.value);
    return q;
  }

  function showSettings() {
    for (const field of document.querySelectorAll(".field[data-for]")) {
      const used = field.dataset.for.split(" ").includes(settings.mode.value);
      field.classList.toggle("unused", !used);
      for (const input of field.querySelectorAll("input, select")) input.disabled = !used;
    }
    $("threshold-value").value = Number(settings.threshold.value).toFixed(2);
    $("feather-value").value = Number(settings.feather.value).toFixed(2);
  }

  for (const input of Object.values(settings)) {
    input.addEventListener("input", showSettings);
    input.addEventListener("change", showSettings);
  }
  $("settings").addEventListener("submit", (e) => e.preventDefault());
  showSettings();

  // --- photos in ---------------------------------------------------------

  function isImage(file) {
    // Some systems give no type for TIFF or WebP: the name decides then,
    // and the service has the last word (415 for what it cannot read).
    return file.type.startsWith("image/") ||
      (file.type === "" && /\.(png|jpe?g|webp|tiff?|bmp|gif)$/i.test(file.name));
  }

  function addFiles(fileList) {
    const files = Array.from(fileList);
    const skipped = files.filter((f) => !isImage(f));
    for (const file of files) {
      if (isImage(file)) enqueue(newItem(file));
    }
    if (skipped.length) {
      summary.textContent = `Skipped ${skipped.length} file(s) that are not pictures: ` +
        skipped.map((f) => f.name).join(", ");
    } else {
      updateSummary();
    }
  }

  picker.addEventListener("change", () => {
    addFiles(picker.files);
    // The same photo may be picked again later.
    picker.value = "";
  });

  // A drop anywhere else would make the browser open the photo instead of
  // the page: only the drop zone takes it.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (e) => e.preventDefault());
  }
  let dragDepth = 0;
  drop.addEventListener("dragenter", (e) => {
    e.preventDefault();
    dragDepth += 1;
    drop.classList.add("over");
  });
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
  });
  drop.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) drop.classList.remove("over");
  });
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    dragDepth = 0;
    drop.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) addFiles(e.dataTransfer.files);
  });

  // --- one photo ---------------------------------------------------------

  function stem(name) {
    const dot = name.lastIndexOf(".");
    return dot > 0 ? name.slice(0, dot) : name;
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  function newItem(file) {
    const el = template.content.firstElementChild.cloneNode(true);
    const item = {
      id: nextId++,
      file,
      el,
      originalUrl: URL.createObjectURL(file),
      result: null, // { blob, url, name }
      xhr: null,
      run: 0, // runs ended (done or error)
      started: 0,
    };
    el.dataset.id = String(item.id);
    el.dataset.name = file.name;
    el.dataset.run = "0";
    el.querySelector(".name").textContent = file.name;
    el.querySelector(".name").title = file.name;
    const original = el.querySelector(".original");
    original.src = item.originalUrl;
    original.alt = `${file.name}, original`;
    const result = el.querySelector(".result");
    result.alt = `${file.name}, background removed`;

    const compare = el.querySelector(".compare");
    const slider = el.querySelector(".slider");
    slider.setAttribute("aria-label", `Compare ${file.name}: share of the result shown`);
    const moveSlider = () => {
      compare.style.setProperty("--pos", `${slider.value}%`);
      slider.setAttribute("aria-valuetext", `${slider.value}% result, ${100 - slider.value}% original`);
    };
    slider.addEventListener("input", moveSlider);
    moveSlider();

    el.querySelector(".rerun-one").addEventListener("click", () => rerun(item));
    el.querySelector(".remove").addEventListener("click", () => remove(item));
    items.push(item);
    list.append(el);
    return item;
  }

  function setState(item, state, status) {
    item.el.dataset.state = state;
    item.el.querySelector(".status").textContent = status;
  }

  function enqueue(item) {
    item.el.querySelector(".error").hidden = true;
    const progress = item.el.querySelector(".progress");
    progress.hidden = false;
    progress.value = 0;
    setState(item, "queued", "Waiting");
    waiting.push(item);
    pump();
    updateButtons();
  }

  function pump() {
    while (running < AT_ONCE && waiting.length) {
      send(waiting.shift());
    }
  }

  /** Sends the photo with the settings as they are now. */
  function send(item) {
    running += 1;
    const query = currentQuery();
    const mode = query.get("mode");
    const format = query.get("format");
    const xhr = new XMLHttpRequest();
    item.xhr = xhr;
    item.started = performance.now();
    const progress = item.el.querySelector(".progress");
    const form = new FormData();
    // rembg's field name; the service takes the same.
    form.append("file", item.file, item.file.name);

    setState(item, "working", "Uploading");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) {
        progress.value = e.loaded / e.total;
        setState(item, "working", `Uploading ${Math.round((100 * e.loaded) / e.total)}%`);
      }
    });
    xhr.upload.addEventListener("load", () => {
      // Sent: the model's time is not measurable from here, so the bar
      // becomes indeterminate.
      progress.removeAttribute("value");
      setState(item, "working", "Processing");
    });

    const finish = () => {
      if (item.xhr !== xhr) return; // re-run or removed meanwhile
      item.xhr = null;
      running -= 1;
      item.run += 1;
      item.el.dataset.run = String(item.run);
      pump();
      updateButtons();
      updateSummary();
    };

    xhr.addEventListener("load", async () => {
      if (item.xhr !== xhr) return;
      const blob = xhr.response;
      if (xhr.status === 200) {
        const seconds = ((performance.now() - item.started) / 1000).toFixed(1);
        showResult(item, blob, mode, format);
        setState(item, "done", `${mode} · ${formatBytes(blob.size)} · ${seconds} s`);
      } else {
        showError(item, await refusalText(xhr, blob));
      }
      finish();
    });
    xhr.addEventListener("error", () => {
      if (item.xhr !== xhr) return;
      showError(item, "The service could not be reached (is u2netmatte serve still running?)");
      finish();
    });
    xhr.addEventListener("abort", () => {
      // Only a re-run or a removal aborts; they account for the request.
    });

    xhr.open("POST", "/api/remove?" + query.toString());
    xhr.responseType = "blob";
    xhr.send(form);
  }

  /** The service's own words: its JSON `error`, else the status line. */
  async function refusalText(xhr, blob) {
    let text = "";
    try {
      text = await blob.text();
      const body = JSON.parse(text);
      if (body && typeof body.error === "string") return `${xhr.status}: ${body.error}`;
    } catch (_) {
      // Not JSON (a proxy's page, say): fall through to the status.
    }
    return `${xhr.status} ${xhr.statusText}${text ? ": " + text.slice(0, 200) : ""}`;
  }

  const EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };

  function showResult(item, blob, mode, format) {
    if (item.result) URL.revokeObjectURL(item.result.url);
    const ext = EXTENSIONS[blob.type] || format;
    const url = URL.createObjectURL(blob);
    item.result = { blob, url, name: `${stem(item.file.name)}-${mode}.${ext}` };
    const img = item.el.querySelector(".result");
    img.src = url;
    const link = item.el.querySelector(".download");
    link.href = url;
    link.download = item.result.name;
    link.textContent = `Download ${item.result.name}`;
    link.hidden = false;
    item.el.querySelector(".progress").hidden = true;
    item.el.querySelector(".error").hidden = true;
    item.el.classList.add("has-result");
  }

  function showError(item, message) {
    const error = item.el.querySelector(".error");
    error.textContent = message;
    error.hidden = false;
    item.el.querySelector(".progress").hidden = true;
    setState(item, "error", "Failed");
  }

  /** Stops what an item is waiting for or doing, so it can go again. */
  function cancel(item) {
    const at = waiting.indexOf(item);
    if (at >= 0) waiting.splice(at, 1);
    if (item.xhr) {
      const xhr = item.xhr;
      item.xhr = null;
      running -= 1;
      xhr.abort();
    }
  }

  function rerun(item) {
    cancel(item);
    enqueue(item);
    updateSummary();
  }

  function remove(item) {
    cancel(item);
    URL.revokeObjectURL(item.originalUrl);
    if (item.result) URL.revokeObjectURL(item.result.url);
    items.splice(items.indexOf(item), 1);
    item.el.remove();
    pump();
    updateButtons();
    updateSummary();
    // Keyboard users keep their place: focus goes to a photo still on the
    // page, or back to the drop zone.
    (list.querySelector(".item button.rerun-one") || picker).focus();
  }

  rerunAll.addEventListener("click", () => {
    for (const item of items) cancel(item);
    for (const item of items) enqueue(item);
    updateSummary();
  });
  clearAll.addEventListener("click", () => {
    for (const item of items.slice()) remove(item);
    picker.focus();
  });
  downloadAll.addEventListener("click", () => {
    const done = items.filter((i) => i.result);
    const names = new Set();
    const entries = done.map((i) => {
      // Two photos of one name from different folders: keep both.
      let name = i.result.name;
      for (let n = 2; names.has(name); n++) name = `${stem(i.result.name)}-${n}.${i.result.name.split(".").pop()}`;
      names.add(name);
      return { name, blob: i.result.blob };
    });
    zip(entries).then((blob) => {
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = "u2netmatte.zip";
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
    });
  });

  function updateButtons() {
    rerunAll.disabled = items.length === 0;
    clearAll.disabled = items.length === 0;
    downloadAll.disabled = !items.some((i) => i.result);
  }

  function updateSummary() {
    if (!items.length) {
      summary.textContent = "No photos yet.";
      return;
    }
    const count = (s) => items.filter((i) => i.el.dataset.state === s).length;
    const done = count("done");
    const failed = count("error");
    const busy = items.length - done - failed;
    const parts = [`${done} of ${items.length} done`];
    if (busy) parts.push(`${busy} in progress`);
    if (failed) parts.push(`${failed} failed`);
    summary.textContent = parts.join(", ") + ".";
  }

  // --- a ZIP of the results ----------------------------------------------
  // Stored, not deflated: PNG, JPEG and WebP are compressed already. The
  // classic format (no ZIP64) holds up to 65535 files of 4 GB in all,
  // far beyond what a page holds in memory.

  const CRC_TABLE = (() => {
    const table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
    return table;
  })();

  function crc32(bytes) {
    let c = 0xffffffff;
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  function dosTime(d) {
    return {
      time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1),
      date: ((d.getFullYear() - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
    };
  }

  async function zip(entries) {
    const encoder = new TextEncoder();
    const { time, date } = dosTime(new Date());
    const parts = [];
    const central = [];
    let offset = 0;
    for (const entry of entries) {
      const data = new Uint8Array(await entry.blob.arrayBuffer());
      const name = encoder.encode(entry.name);
      const crc = crc32(data);
      const local = new DataView(new ArrayBuffer(30));
      local.setUint32(0, 0x04034b50, true); // local file header
      local.setUint16(4, 20, true); // version needed: 2.0
      local.setUint16(6, 0x0800, true); // names are UTF-8
      local.setUint16(8, 0, true); // stored
      local.setUint16(10, time, true);
      local.setUint16(12, date, true);
      local.setUint32(14, crc, true);
      local.setUint32(18, data.length, true);
      local.setUint32(22, data.length, true);
      local.setUint16(26, name.length, true);
      local.setUint16(28, 0, true);
      parts.push(local, name, data);

      const record = new DataView(new ArrayBuffer(46));
      record.setUint32(0, 0x02014b50, true); // central directory header
      record.setUint16(4, 20, true);
      record.setUint16(6, 20, true);
      record.setUint16(8, 0x0800, true);
      record.setUint16(10, 0, true);
      record.setUint16(12, time, true);
      record.setUint16(14, date, true);
      record.setUint32(16, crc, true);
      record.setUint32(20, data.length, true);
      record.setUint32(24, data.length, true);
      record.setUint16(28, name.length, true);
      // extra, comment, disk, internal attributes: 0
      record.setUint32(38, 0, true);
      record.setUint32(42, offset, true);
      central.push(record, name);
      offset += 30 + name.length + data.length;
    }
    const centralSize = central.reduce((n, p) => n + p.byteLength, 0);
    const end = new DataView(new ArrayBuffer(22));
    end.setUint32(0, 0x06054b50, true); // end of central directory
    end.setUint16(8, entries.length, true);
    end.setUint16(10, entries.length, true);
    end.setUint32(12, centralSize, true);
    end.setUint32(16, offset, true);
    return new Blob([...parts, ...central, end], { type: "application/zip" });
  }
})();
