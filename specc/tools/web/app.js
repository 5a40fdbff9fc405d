// The page of `specc serve` (index.html): reads the run's metadata from the server and builds a form for its
// inputs, shows the answers of {base}/predict, and the graph, test metrics, versions and spec beside it.
//
// Everything the server sends (class names, layer names, the spec text, error messages) comes from user files, so it
// reaches the page only through textContent and DOM calls, never innerHTML: a class named "<img onerror=...>" shows
// as text. No framework and no build step: the file is served as it is written.
"use strict";

(function () {
  // ---------------------------------------------------------------------------------------------- where the run is

  /** The run's base path from <meta name="specc-base"> ("" at the root, "/runs/NAME" else), without a trailing
   *  slash; null when the server did not fill it (the file opened as it is): then URLs are relative to the page. */
  function readBase() {
    const meta = document.querySelector('meta[name="specc-base"]');
    const raw = meta ? meta.getAttribute("content") : null;
    if (raw === null || raw.includes("{{")) return null;
    return raw.replace(/\/+$/, "");
  }

  const BASE = readBase();

  function endpoint(path) {
    return BASE === null ? new URL(path, document.baseURI).href : BASE + "/" + path;
  }

  // ---------------------------------------------------------------------------------------------- small DOM helpers

  const $ = (id) => document.getElementById(id);

  /** An element with attributes (`text` sets textContent, `class` the class name) and children (nodes or strings,
   *  which become text nodes). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  /** A number for people: integers as they are, others with 4 significant digits (0.9812, 12.35, 1.235e-5). */
  function formatNumber(x) {
    if (typeof x !== "number") return String(x);
    if (!Number.isFinite(x)) return String(x);
    if (Number.isInteger(x)) return x.toLocaleString("en-US");
    const abs = Math.abs(x);
    if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return x.toExponential(3);
    return String(Number(x.toPrecision(4)));
  }

  function formatPercent(p) {
    return (100 * p).toFixed(1) + "%";
  }

  function formatShape(shape) {
    if (!Array.isArray(shape)) return "";
    return "(" + shape.map((d) => (d === null ? "None" : String(d))).join(", ") + (shape.length === 1 ? ",)" : ")");
  }

  /** A mistake the page catches before asking the server (no drawing, an empty field): its message is shown in
   *  #error and `focus`, when given, gets the keyboard focus. */
  class ClientError extends Error {
    constructor(message, focus) {
      super(message);
      this.focus = focus || null;
    }
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = false;
  }

  function clearError() {
    const box = $("error");
    box.textContent = "";
    box.hidden = true;
  }

  // ---------------------------------------------------------------------------------------------- inputs

  const counters = {};

  /** "file" for the first image input of the page, "file-2" for the second...: the first of each kind keeps the
   *  plain id the tests and bookmarks rely on. */
  function uniqueId(stem) {
    counters[stem] = (counters[stem] || 0) + 1;
    return counters[stem] === 1 ? stem : stem + "-" + counters[stem];
  }

  function inputFieldset(spec, what) {
    const fieldset = el("fieldset", { class: "input" });
    const shape = formatShape(spec.shape);
    fieldset.append(el("legend", {}, el("span", { class: "input-name", text: spec.name }),
      el("span", { class: "muted", text: " " + [what, shape].filter(Boolean).join(", ") })));
    return fieldset;
  }

  /** Reads a file as base64 (without the data URL's prefix), as the server's `{"base64": ...}` takes it. */
  function readBase64(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => {
        const url = String(reader.result);
        resolve({ dataUrl: url, base64: url.slice(url.indexOf(",") + 1) });
      };
      reader.onerror = () => reject(new ClientError(`Could not read the file “${file.name}”.`));
      reader.readAsDataURL(file);
    });
  }

  /** An image input: a file chooser that also takes a dropped file and, for 28 x 28 grayscale inputs
   *  (metadata `draw: true`), a canvas to draw a digit on. Whatever was touched last is sent: a file as
   *  `{"base64": ...}`, a drawing as the raw 28 x 28 pixels 0..255, MNIST's own form. */
  function imageInput(spec) {
    const image = spec.image || {};
    const mode = image.mode === "L" ? "grayscale" : image.mode === "RGB" ? "colour" : "";
    const fieldset = inputFieldset(spec, [mode, "image"].filter(Boolean).join(" "));
    const fileId = uniqueId("file");
    const fileInput = el("input", { type: "file", id: fileId, accept: "image/*", name: spec.name });
    const fileNote = el("span", { class: "muted file-note", "aria-live": "polite" });
    let source = null; // {kind: "file", promise, name} or {kind: "drawing"}
    let sketch = null;

    const fileImage = el("img", { class: "file-preview", alt: "", hidden: true });

    function useFile(file) {
      if (!file) return;
      if (sketch) sketch.seen.hidden = true; // the server reads the file itself: the small canvas would not be it
      const promise = readBase64(file);
      source = { kind: "file", promise, name: file.name };
      fileNote.textContent = `Sending the file “${file.name}”.`;
      promise.then(({ dataUrl }) => {
        if (source === null || source.promise !== promise) return;
        if (sketch) sketch.showImage(dataUrl);
        else {
          fileImage.src = dataUrl;
          fileImage.alt = `The chosen image ${file.name}`;
          fileImage.hidden = false;
        }
      }, () => {});
    }

    fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
    fileImage.addEventListener("error", () => {
      fileImage.hidden = true;
    });

    if (spec.draw) {
      sketch = drawingPad(image.width || 28, image.height || 28, () => {
        source = { kind: "drawing" };
        sketch.seen.hidden = false;
        fileInput.value = "";
        fileNote.textContent = "";
      });
      const clear = el("button", { type: "button", class: "secondary", text: "Clear" });
      clear.addEventListener("click", () => {
        sketch.clear();
        sketch.seen.hidden = false;
        source = null;
        fileInput.value = "";
        fileNote.textContent = "";
      });
      fieldset.append(el("p", { class: "hint muted", id: uniqueId("draw-hint"),
        text: "Draw a digit, large and in the middle, or choose an image file." }));
      fieldset.append(el("div", { class: "draw" }, sketch.canvas,
        el("div", { class: "draw-side" }, sketch.seen, clear)));
    }

    const fileLabel = el("label", { for: fileId, text: spec.draw ? "…or choose an image file" : "Choose an image file" });
    const drop = el("div", { class: "drop" }, fileLabel, fileInput, fileNote, fileImage,
      el("span", { class: "muted small", text: "You can also drop an image here." }));
    fieldset.append(drop);

    // A file dropped anywhere on the fieldset (the canvas included) is used like a chosen one.
    fieldset.addEventListener("dragover", (event) => {
      event.preventDefault();
      fieldset.classList.add("dragging");
    });
    fieldset.addEventListener("dragleave", () => fieldset.classList.remove("dragging"));
    fieldset.addEventListener("drop", (event) => {
      event.preventDefault();
      fieldset.classList.remove("dragging");
      const file = event.dataTransfer && event.dataTransfer.files[0];
      if (file) useFile(file);
    });

    return {
      element: fieldset,
      async collect() {
        if (source && source.kind === "file") {
          const { base64 } = await source.promise;
          return { [spec.name]: { base64 } };
        }
        if (source && source.kind === "drawing") {
          const pixels = sketch.pixels();
          if (pixels) return { [spec.name]: pixels };
        }
        throw new ClientError(spec.draw ? `Draw a digit or choose an image file for “${spec.name}” first.`
          : `Choose an image file for “${spec.name}” first.`, fileInput);
      },
    };
  }

  /** A canvas to draw on, white on black like MNIST, and the small canvas of what is sent: the drawing cut to the
   *  box of its strokes, scaled so its longer side is 20/28 of the input (20 pixels of 28, as MNIST's digits were
   *  normalised), averaged over each pixel's area (MNIST's anti-aliasing) and shifted so its centre of mass is the
   *  input's centre. A digit drawn large or small, high or low, reaches the model as MNIST's digits look. */
  function drawingPad(width, height, onDraw) {
    const SIZE = 280; // the drawing canvas, in its own pixels; 10 per input pixel for MNIST
    const STROKE = 20; // MNIST strokes are 2..3 of the 20 pixels a digit spans; a digit drawn 200 tall gets 2
    const canvas = el("canvas", { id: uniqueId("canvas"), width: SIZE, height: SIZE, class: "pad",
      role: "img", "aria-label": "Drawing area: draw a digit here with the mouse or a finger" });
    const preview = el("canvas", { id: uniqueId("preview"), width, height, class: "preview",
      role: "img", "aria-label": `The drawing as the model receives it, ${width} by ${height} pixels` });
    const seen = el("div", { class: "seen" }, preview, el("span", { class: "muted small", text: "What the model sees" }));
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    const small = preview.getContext("2d");
    let drawing = false;
    let last = null;
    let empty = true;

    function reset() {
      ctx.fillStyle = "#000";
      ctx.fillRect(0, 0, SIZE, SIZE);
      small.fillStyle = "#000";
      small.fillRect(0, 0, width, height);
      empty = true;
    }

    function at(event) {
      const box = canvas.getBoundingClientRect();
      return { x: (event.clientX - box.left) * SIZE / box.width, y: (event.clientY - box.top) * SIZE / box.height };
    }

    function line(from, to) {
      ctx.strokeStyle = "#fff";
      ctx.fillStyle = "#fff";
      ctx.lineWidth = STROKE;
      ctx.lineCap = "round";
      ctx.lineJoin = "round";
      ctx.beginPath();
      if (from.x === to.x && from.y === to.y) {
        ctx.arc(to.x, to.y, STROKE / 2, 0, 2 * Math.PI);
        ctx.fill();
      } else {
        ctx.moveTo(from.x, from.y);
        ctx.lineTo(to.x, to.y);
        ctx.stroke();
      }
    }

    canvas.addEventListener("pointerdown", (event) => {
      if (event.pointerType === "mouse" && event.button !== 0) return;
      event.preventDefault();
      canvas.setPointerCapture(event.pointerId);
      drawing = true;
      last = at(event);
      line(last, last);
      empty = false;
    });
    canvas.addEventListener("pointermove", (event) => {
      if (!drawing) return;
      const points = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
      for (const point of points.length ? points : [event]) {
        const here = at(point);
        line(last, here);
        last = here;
      }
    });
    const stop = () => {
      if (!drawing) return;
      drawing = false;
      update();
      onDraw();
    };
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("lostpointercapture", stop);

    /** The drawing as `height` rows of `width` numbers 0..255 (MNIST's raw form), or null when nothing is drawn. */
    function downscale() {
      const rgba = ctx.getImageData(0, 0, SIZE, SIZE).data;
      let x0 = SIZE, y0 = SIZE, x1 = -1, y1 = -1;
      for (let y = 0; y < SIZE; y++) {
        for (let x = 0; x < SIZE; x++) {
          if (rgba[4 * (y * SIZE + x)] > 0) {
            if (x < x0) x0 = x;
            if (x > x1) x1 = x;
            if (y < y0) y0 = y;
            if (y > y1) y1 = y;
          }
        }
      }
      if (x1 < 0) return null;
      const bw = x1 - x0 + 1, bh = y1 - y0 + 1;
      const box = Math.max(1, Math.round(Math.min(width, height) * 20 / 28));
      const scale = box / Math.max(bw, bh);
      const tw = Math.max(1, Math.round(bw * scale)), th = Math.max(1, Math.round(bh * scale));
      // Area average: every drawn pixel adds to the small pixel it falls in.
      const sum = new Float64Array(tw * th), count = new Float64Array(tw * th);
      for (let y = y0; y <= y1; y++) {
        const ty = Math.min(th - 1, Math.floor((y - y0) * th / bh));
        for (let x = x0; x <= x1; x++) {
          const tx = Math.min(tw - 1, Math.floor((x - x0) * tw / bw));
          sum[ty * tw + tx] += rgba[4 * (y * SIZE + x)];
          count[ty * tw + tx] += 1;
        }
      }
      let mass = 0, mx = 0, my = 0;
      const cell = new Float64Array(tw * th);
      for (let i = 0; i < tw * th; i++) {
        cell[i] = count[i] ? sum[i] / count[i] : 0;
        mass += cell[i];
        mx += cell[i] * ((i % tw) + 0.5);
        my += cell[i] * (Math.floor(i / tw) + 0.5);
      }
      const clamp = (v, hi) => Math.max(0, Math.min(hi, v));
      const ox = clamp(Math.round(width / 2 - mx / mass), width - tw);
      const oy = clamp(Math.round(height / 2 - my / mass), height - th);
      const rows = [];
      for (let y = 0; y < height; y++) rows.push(new Array(width).fill(0));
      for (let ty = 0; ty < th; ty++) {
        for (let tx = 0; tx < tw; tx++) rows[oy + ty][ox + tx] = Math.round(cell[ty * tw + tx]);
      }
      return rows;
    }

    let current = null;

    function update() {
      current = empty ? null : downscale();
      const pixels = small.createImageData(width, height);
      for (let y = 0; y < height; y++) {
        for (let x = 0; x < width; x++) {
          const v = current ? current[y][x] : 0;
          const i = 4 * (y * width + x);
          pixels.data[i] = pixels.data[i + 1] = pixels.data[i + 2] = v;
          pixels.data[i + 3] = 255;
        }
      }
      small.putImageData(pixels, 0, 0);
    }

    reset();
    return {
      canvas,
      seen,
      clear() {
        reset();
        current = null;
      },
      pixels: () => current,
      /** Shows a chosen file on the canvas (the server reads the file itself; the small canvas is blanked). */
      showImage(dataUrl) {
        const img = new Image();
        img.onload = () => {
          reset();
          ctx.imageSmoothingEnabled = img.width >= SIZE;
          ctx.drawImage(img, 0, 0, SIZE, SIZE);
          empty = false;
          current = null;
        };
        img.onerror = () => reset();
        img.src = dataUrl;
      },
    };
  }

  /** Submits the form on Ctrl+Enter (Cmd+Enter) in a multi-line field, where Enter starts a new line. */
  function submitOnCtrlEnter(area) {
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        $("form").requestSubmit();
      }
    });
  }

  function textInput(spec) {
    const fieldset = inputFieldset(spec, "text");
    const id = uniqueId("text");
    const hintId = id + "-hint";
    const area = el("textarea", { id, name: spec.name, rows: 5, "aria-describedby": hintId, spellcheck: "true" });
    const hint = ["Ctrl+Enter predicts."];
    if (spec.sequence_length) {
      hint.unshift(`The model reads ${spec.sequence_length} tokens` +
        (spec.long_text === "truncated" ? "; longer text is cut." : "."));
    }
    fieldset.append(el("label", { for: id, text: "Text" }), area, el("p", { id: hintId, class: "hint muted", text: hint.join(" ") }));
    submitOnCtrlEnter(area);
    return {
      element: fieldset,
      async collect() {
        if (!area.value.trim()) throw new ClientError(`Type some text for “${spec.name}” first.`, area);
        return { [spec.name]: area.value };
      },
    };
  }

  /** A table model: one number field per feature column; the request gives them by name. */
  function tableInput(spec) {
    const fieldset = inputFieldset(spec, "table row");
    const fields = [];
    const grid = el("div", { class: "features" });
    for (const feature of spec.features || []) {
      const id = uniqueId("feature");
      const input = el("input", { id, type: "number", step: "any", name: feature, inputmode: "decimal" });
      grid.append(el("div", { class: "feature" }, el("label", { for: id, text: feature }), input));
      fields.push([feature, input]);
    }
    fieldset.append(grid);
    return {
      element: fieldset,
      async collect() {
        const row = {};
        for (const [feature, input] of fields) {
          const text = input.value.trim();
          const value = Number(text);
          if (text === "" || !Number.isFinite(value)) {
            throw new ClientError(`Enter a number for “${feature}”.`, input);
          }
          row[feature] = value;
        }
        return row;
      },
    };
  }

  /** Any other input: its value as JSON (a nested list of the input's shape). */
  function arrayInput(spec) {
    const fieldset = inputFieldset(spec, [spec.dtype, "array"].filter(Boolean).join(" "));
    const id = uniqueId("array");
    const hintId = id + "-hint";
    const area = el("textarea", { id, name: spec.name, rows: 5, class: "mono", spellcheck: "false",
      "aria-describedby": hintId, placeholder: "[0.1, 0.2, ...]" });
    fieldset.append(el("label", { for: id, text: "Value (JSON)" }), area,
      el("p", { id: hintId, class: "hint muted",
        text: `A nested list of numbers of shape ${formatShape(spec.shape)}. Ctrl+Enter predicts.` }));
    submitOnCtrlEnter(area);
    return {
      element: fieldset,
      async collect() {
        if (!area.value.trim()) throw new ClientError(`Enter a JSON value for “${spec.name}” first.`, area);
        try {
          return { [spec.name]: JSON.parse(area.value) };
        } catch (err) {
          throw new ClientError(`“${spec.name}” is not valid JSON: ${err.message}`, area);
        }
      },
    };
  }

  function buildInputs(meta) {
    const holder = $("inputs");
    const controls = [];
    for (const spec of meta.inputs || []) {
      const make = { image: imageInput, text: textInput, table: tableInput }[spec.kind] || arrayInput;
      const control = make(spec);
      holder.append(control.element);
      controls.push(control);
    }
    return controls;
  }

  // ---------------------------------------------------------------------------------------------- results

  const MAX_ALL_BARS = 12; // up to this many classes, every class gets a bar, in class order; else the top ones

  function bars(container, answer, classes) {
    container.replaceChildren();
    const probabilities = Array.isArray(answer.probabilities) ? answer.probabilities : null;
    const names = Array.isArray(classes) ? classes : null;
    let rows;
    if (probabilities && probabilities.length <= MAX_ALL_BARS) {
      rows = probabilities.map((p, i) => ({ class: i, name: names && names[i] != null ? names[i] : String(i), probability: p }));
    } else {
      rows = Array.isArray(answer.top) ? answer.top : [];
    }
    for (const row of rows) {
      const p = Math.max(0, Math.min(1, Number(row.probability) || 0));
      const fill = el("span", { class: "bar-fill" });
      fill.style.width = (100 * p) + "%";
      const name = row.name != null ? String(row.name) : String(row.class);
      const bar = el("div", { class: row.class === answer.class ? "bar top" : "bar", "data-probability": String(row.probability) },
        el("span", { class: "bar-name", text: name, title: name }),
        el("span", { class: "bar-track", "aria-hidden": "true" }, fill),
        el("span", { class: "bar-value", text: formatPercent(p) }));
      container.append(bar);
    }
  }

  function valuesList(values) {
    const flat = Array.isArray(values) ? values.flat(Infinity) : [values];
    const LIMIT = 100;
    const list = el("ol", { class: "values mono", start: 0 });
    for (const v of flat.slice(0, LIMIT)) list.append(el("li", { text: formatNumber(v) }));
    const block = el("div", {}, list);
    if (flat.length > LIMIT) block.append(el("p", { class: "muted", text: `… and ${flat.length - LIMIT} more` }));
    return block;
  }

  function clearResult() {
    $("result-empty").hidden = false;
    for (const id of ["result-label", "result-class", "result-probability"]) $(id).textContent = "";
    $("bars").replaceChildren();
    $("outputs").replaceChildren();
    $("warnings").replaceChildren();
    $("warnings").hidden = true;
  }

  function showResult(meta, body) {
    clearResult();
    $("result-empty").hidden = true;
    const answers = (body && body.outputs) || {};
    const specs = (meta.outputs || []).filter((o) => o.name in answers);
    for (const name of Object.keys(answers)) {
      if (!specs.some((o) => o.name === name)) specs.push({ name, kind: answers[name].kind, classes: null });
    }
    const several = specs.length > 1;
    let mainUsed = false;
    for (const spec of specs) {
      const answer = answers[spec.name] || {};
      const isClasses = answer.kind === "classes" || answer.kind === "binary";
      const values = answer.values;
      const single = !isClasses && Array.isArray(values) && values.flat(Infinity).length === 1;
      if (!mainUsed && (isClasses || single)) {
        mainUsed = true;
        $("result-label").textContent = (several ? spec.name + ": " : "") + (isClasses ? "Predicted" : "Predicted value");
        if (isClasses) {
          $("result-class").textContent = answer.name != null ? String(answer.name) : String(answer.class);
          if (typeof answer.probability === "number") $("result-probability").textContent = formatPercent(answer.probability);
          bars($("bars"), answer, spec.classes);
        } else {
          $("result-class").textContent = formatNumber(values.flat(Infinity)[0]);
        }
        continue;
      }
      const block = el("section", { class: "output" }, el("h3", { text: spec.name }));
      if (isClasses) {
        block.append(el("p", { class: "result-line" }, el("span", { class: "result-class small-class",
          text: answer.name != null ? String(answer.name) : String(answer.class) }),
        el("span", { class: "muted", text: typeof answer.probability === "number" ? " " + formatPercent(answer.probability) : "" })));
        const holder = el("div", { class: "bars" });
        bars(holder, answer, spec.classes);
        block.append(holder);
      } else {
        block.append(valuesList(values));
      }
      $("outputs").append(block);
    }
    const warnings = Array.isArray(body.warnings) ? body.warnings : [];
    if (warnings.length) {
      for (const w of warnings) $("warnings").append(el("li", { text: String(w) }));
      $("warnings").hidden = false;
    }
    $("status").textContent = typeof body.ms === "number" ? `Answered in ${formatNumber(body.ms)} ms.` : "";
  }

  /** The body of a response as JSON, or null when it is not JSON (a proxy's HTML error page). */
  async function readJson(response) {
    const text = await response.text();
    try {
      return { json: JSON.parse(text), text };
    } catch (_) {
      return { json: null, text };
    }
  }

  function serverMessage(response, body) {
    if (body.json && typeof body.json.error === "string") return body.json.error;
    const snippet = body.text.replace(/\s+/g, " ").trim().slice(0, 200);
    return `The server answered ${response.status} ${response.statusText}` + (snippet ? `: ${snippet}` : ".");
  }

  function wireForm(meta, controls) {
    const form = $("form");
    const button = $("predict");
    let busy = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (busy) return;
      clearError();
      const inputs = {};
      try {
        for (const control of controls) Object.assign(inputs, await control.collect());
      } catch (err) {
        clearResult();
        if (err instanceof ClientError) {
          showError(err.message);
          if (err.focus) err.focus.focus();
          return;
        }
        showError(`Could not prepare the request: ${err.message}`);
        return;
      }
      busy = true;
      button.disabled = true;
      form.setAttribute("aria-busy", "true");
      $("status").textContent = "Predicting…";
      try {
        const response = await fetch(endpoint("predict"), {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify({ inputs }),
        });
        const body = await readJson(response);
        if (!response.ok || !body.json) {
          clearResult();
          $("status").textContent = "";
          showError(serverMessage(response, body));
        } else {
          showResult(meta, body.json);
        }
      } catch (err) {
        clearResult();
        $("status").textContent = "";
        showError(`Could not reach the server: ${err.message}`);
      } finally {
        busy = false;
        button.disabled = false;
        form.removeAttribute("aria-busy");
      }
    });
  }

  // ---------------------------------------------------------------------------------------------- about the model

  /** The graph as specc drew it (Graphviz SVG), or, without Graphviz on the server (or when the image fails),
   *  the layers as a column of boxes from the metadata's nodes and edges. */
  function showGraph(meta) {
    const holder = $("graph");
    holder.replaceChildren();
    const graph = meta.graph || {};
    const nodes = Array.isArray(graph.nodes) ? graph.nodes : [];
    const summary = nodes.map((n) => `${n.name} (${n.cls})`).join(", then ");
    if (graph.svg) {
      const src = endpoint("graph.svg");
      const img = el("img", { src, alt: `The graph of ${meta.name}: ${summary || "its layers"}.` });
      img.addEventListener("error", () => drawBoxes(holder, graph));
      holder.append(el("a", { href: src, target: "_blank", rel: "noopener", title: "Open the graph in full size" }, img));
    } else {
      drawBoxes(holder, graph);
    }
  }

  function drawBoxes(holder, graph) {
    holder.replaceChildren();
    const nodes = Array.isArray(graph.nodes) ? graph.nodes.slice() : [];
    const edges = Array.isArray(graph.edges) ? graph.edges : [];
    const known = new Set(nodes.map((n) => n.name));
    const inputs = [];
    for (const [from] of edges) {
      if (typeof from === "string" && !known.has(from)) {
        known.add(from);
        inputs.push({ name: from, cls: "Input" });
      }
    }
    const ordered = inputs.concat(nodes);
    if (!ordered.length) {
      holder.append(el("p", { class: "muted", text: "No graph in the metadata." }));
      return;
    }
    const list = el("ol", { class: "boxes", "aria-label": "The model's layers, from input to output" });
    let previous = null;
    for (const node of ordered) {
      const from = edges.filter(([f, to]) => to === node.name && f !== node.name).map(([f]) => f);
      const box = el("li", { class: node.output ? "box output" : "box" },
        el("span", { class: "box-name", text: node.name }),
        el("span", { class: "box-cls muted", text: " " + (node.cls || "") }));
      const facts = [];
      if (Array.isArray(node.shape)) facts.push(formatShape(node.shape));
      if (typeof node.params === "number" && node.params) facts.push(`${formatNumber(node.params)} params`);
      if (node.output) facts.push("output");
      if (facts.length) box.append(el("span", { class: "box-facts", text: facts.join(" · ") }));
      if (from.length > 1 || (from.length === 1 && from[0] !== previous)) {
        box.append(el("span", { class: "box-from muted", text: "from " + from.join(", ") }));
      }
      list.append(box);
      previous = node.name;
    }
    holder.append(list);
  }

  /** A metric: those between -1 and 1 (accuracy, AUC, most losses late in training) with 4 decimals, so that a
   *  column of them lines up; others with 4 significant digits (a mean absolute error of 43.21). */
  function formatMetric(x) {
    if (typeof x === "number" && !Number.isInteger(x) && Math.abs(x) < 1) return x.toFixed(4);
    return formatNumber(x);
  }

  function showMetrics(meta) {
    const body = $("metrics").tBodies[0];
    body.replaceChildren();
    const entries = Object.entries(meta.metrics || {});
    if (!entries.length) {
      body.append(el("tr", {}, el("td", { colspan: 2, class: "muted", text: "No test metrics recorded for this run." })));
      return;
    }
    for (const [name, value] of entries) {
      body.append(el("tr", {}, el("th", { scope: "row", text: name }),
        el("td", { class: "num", text: formatMetric(value) })));
    }
  }

  function showVersions(meta) {
    const list = $("versions");
    list.replaceChildren();
    for (const [name, value] of Object.entries(meta.versions || {})) {
      list.append(el("dt", { text: name }), el("dd", { class: "mono", text: String(value) }));
    }
    const b = meta.batching;
    if (b && typeof b === "object") {
      const parts = [];
      if (b.max_batch != null) parts.push(`up to ${b.max_batch} examples a batch`);
      if (b.max_wait_ms != null) parts.push(`waits ${b.max_wait_ms} ms for more`);
      if (Array.isArray(b.buckets)) parts.push(`sizes ${b.buckets.join(", ")}`);
      if (parts.length) list.append(el("dt", { text: "batching" }), el("dd", { text: parts.join("; ") }));
    }
  }

  function describe(meta) {
    const ins = (meta.inputs || []).map((i) => `${i.name} ${formatShape(i.shape)}`).join(", ");
    const outs = (meta.outputs || []).map((o) => {
      if (Array.isArray(o.classes)) return `${o.name}: ${o.classes.length} classes`;
      return `${o.name} ${formatShape(o.shape)}`;
    }).join(", ");
    return `${ins} → ${outs}`;
  }

  async function main() {
    let meta;
    try {
      const response = await fetch(endpoint("metadata"), { headers: { Accept: "application/json" } });
      const body = await readJson(response);
      if (!response.ok || !body.json) throw new Error(serverMessage(response, body));
      meta = body.json;
    } catch (err) {
      $("subtitle").textContent = "";
      showError(`Could not load the model's description from ${endpoint("metadata")}: ${err.message}`);
      return;
    }
    const name = String(meta.name || "model");
    $("title").textContent = name;
    if (document.title.includes("{{") || !document.title.trim()) document.title = `${name} · specc`;
    $("subtitle").textContent = describe(meta);
    $("spec-text").textContent = String(meta.spec || "");
    $("spec-file").textContent = meta.spec_file ? `(${meta.spec_file})` : "";
    showGraph(meta);
    showMetrics(meta);
    showVersions(meta);
    const controls = buildInputs(meta);
    wireForm(meta, controls);
    $("predict").disabled = false;
    document.body.dataset.ready = "true";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
  else main();
})();
