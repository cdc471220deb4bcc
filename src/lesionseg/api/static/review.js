/* The review worklist: list cases (GET /cases), open one, correct its mask (a brush, an eraser, or a box that
   LiteMedSAM turns into a proposal: POST /cases/{id}/proposal), and record the verdict (PUT /cases/{id}/review).
   The mask being edited lives in an off-screen canvas at the image's own size: opaque where the lesion is,
   transparent elsewhere. The on-screen canvas has the image's own size too; zoom and pan are a CSS transform
   on it, so a pointer's position maps to image pixels through its bounding box whatever the view. */
const apiKey = document.getElementById("api-key");
const statusFilter = document.getElementById("status");
const canvas = document.getElementById("canvas");
const editor = document.getElementById("editor");
const context = canvas.getContext("2d");
const LESION = [239, 68, 68];
const UNCERTAINTY = [250, 204, 21]; // amber, its opacity rising with the pixel's std
const UNDO_STEPS = 30;
const state = {
  cases: [], cursor: null, current: null, image: null, imageBlob: null, mask: null, uncertainty: null,
  history: [], redo: [], drawing: null, boxDraft: null, panning: false, panFrom: null,
  view: { scale: 1, x: 0, y: 0 }, busy: false,
};
const byId = (id) => document.getElementById(id);

apiKey.value = sessionStorage.getItem("lesionseg-api-key") || "";
let keyInUse = apiKey.value;
apiKey.addEventListener("change", () => {
  // Only a new key reloads the list: a change event also comes on blur, as the next click begins.
  if (apiKey.value === keyInUse) return;
  keyInUse = apiKey.value;
  sessionStorage.setItem("lesionseg-api-key", apiKey.value);
  loadWorklist();
});

function showError(message) { byId("error").textContent = message || ""; }

function showProgress(text, value = null, maximum = null) {
  /* A bar and a line while uploads or a proposal run: determinate when the work has a count, moving otherwise. */
  const bar = byId("progress");
  if (value === null) { bar.removeAttribute("value"); } else { bar.max = maximum; bar.value = value; }
  byId("progress-text").textContent = text;
  byId("progress-line").classList.toggle("hidden", !text);
}

async function api(path, options = {}) {
  const headers = { ...(apiKey.value ? { "X-API-Key": apiKey.value } : {}), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let detail = `error ${response.status}`;
    try {
      const body = await response.json();
      detail = Array.isArray(body.detail) ? body.detail.map((item) => item.msg).join("; ") : body.detail;
    } catch (ignored) { /* not JSON: keep the status */ }
    const failure = new Error(accessProblem(response.status, Boolean(apiKey.value)) || detail);
    failure.status = response.status;
    throw failure;
  }
  return response;
}

async function bitmap(path) {
  const blob = await (await api(path)).blob();
  return createImageBitmap(blob, { imageOrientation: "from-image" });
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (character) => `&#${character.charCodeAt(0)};`);
}

function caseName(item) {
  /* What the researcher calls it: their own id, the file's name, or at least the start of ours. */
  return item.external_id || item.image.filename || `case ${item.id.slice(0, 8)}`;
}

function flags(item) {
  const parts = [`<span>score ${item.uncertainty_score.toFixed(3)}</span>`];
  if (item.out_of_distribution) parts.push('<span class="flag review">not dermoscopy?</span>');
  else if (item.review_recommended) parts.push('<span class="flag review">review</span>');
  parts.push(`<span>${item.review.status}</span>`);
  parts.push(`<span>${new Date(item.created_at).toLocaleString()}</span>`);
  return parts.join(" ");
}

/* ---- masks: PNG or RLE in, the editable canvas out (static/outline.js draws their outlines) ---- */

function maskCanvas(width, height, isLesion) {
  const mask = document.createElement("canvas");
  mask.width = width; mask.height = height;
  const maskContext = mask.getContext("2d");
  const pixels = maskContext.createImageData(width, height);
  const data = pixels.data;
  for (let index = 0; index < width * height; index += 1) {
    if (!isLesion(index)) continue;
    const offset = index * 4;
    data[offset] = LESION[0]; data[offset + 1] = LESION[1]; data[offset + 2] = LESION[2]; data[offset + 3] = 255;
  }
  maskContext.putImageData(pixels, 0, 0);
  return mask;
}

async function maskFromPng(path, width, height) {
  /* The 0/255 PNG -> the editable mask canvas. */
  const picture = await bitmap(path);
  const scratch = new OffscreenCanvas(width, height).getContext("2d");
  scratch.drawImage(picture, 0, 0, width, height);
  const values = scratch.getImageData(0, 0, width, height).data;
  return maskCanvas(width, height, (index) => values[index * 4] > 127);
}

function maskFromRle(rle) {
  /* COCO's uncompressed RLE (column-major runs, background first) -> the editable mask canvas. */
  const [height, width] = rle.size;
  const lesion = new Uint8Array(width * height);
  let position = 0;
  rle.counts.forEach((run, order) => {
    if (order % 2 === 1) {
      for (let step = position; step < position + run; step += 1) {
        const column = Math.floor(step / height);
        lesion[(step - column * height) * width + column] = 1;
      }
    }
    position += run;
  });
  return maskCanvas(width, height, (index) => lesion[index] === 1);
}

/* ---- the worklist ---- */

async function thumbnail(item, target) {
  /* The picture with the model's (or the reviewer's) outline, small. */
  const [image, mask] = await Promise.all([
    bitmap(`cases/${item.id}/image`), maskFromPng(`cases/${item.id}/mask`, item.image.width, item.image.height),
  ]);
  const scale = Math.min(target.width / image.width, target.height / image.height);
  const [width, height] = [image.width * scale, image.height * scale];
  const [left, top] = [(target.width - width) / 2, (target.height - height) / 2];
  const drawing = target.getContext("2d");
  drawing.drawImage(image, left, top, width, height);
  drawing.drawImage(outlineOf(mask, Math.max(2, Math.round(2 / scale))), left, top, width, height);
  target.dataset.drawn = "true";
}

/* One list load at a time: a load started later (a new key, Refresh, the filter) makes an earlier one's answer
   stale, and a stale answer is dropped rather than appended, which once showed every card twice. */
let listLoad = 0;

async function loadWorklist(more = false) {
  showError("");
  const load = ++listLoad;
  if (!more) { state.cases = []; state.cursor = null; byId("worklist").innerHTML = ""; }
  const query = new URLSearchParams({ order: "uncertainty", limit: "24" });
  if (statusFilter.value) query.set("status", statusFilter.value);
  if (state.cursor) query.set("cursor", state.cursor);
  try {
    const page = await (await api(`cases?${query}`)).json();
    if (load !== listLoad) return;
    state.cursor = page.next_cursor;
    byId("counts").textContent = Object.entries(page.counts).map(([status, count]) => `${count} ${status}`).join(" · ");
    const list = byId("worklist");
    for (const item of page.cases) {
      state.cases.push(item);
      const entry = document.createElement("li");
      entry.tabIndex = 0;
      entry.dataset.id = item.id;
      entry.innerHTML = `<canvas width="400" height="280" aria-label="${escapeHtml(caseName(item))}"></canvas>` +
        `<div class="name">${escapeHtml(caseName(item))}</div><div class="meta">${flags(item)}</div>`;
      entry.addEventListener("click", () => openCase(item.id));
      entry.addEventListener("keydown", (event) => event.key === "Enter" && openCase(item.id));
      list.appendChild(entry);
      thumbnail(item, entry.querySelector("canvas")).catch(() => {});
    }
    byId("worklist-empty").classList.toggle("hidden", state.cases.length > 0);
    byId("more").classList.toggle("hidden", !state.cursor);
  } catch (failure) {
    if (load === listLoad) showError(failure.message);
  }
}

function showView(name) {
  byId("worklist-view").classList.toggle("hidden", name !== "worklist");
  byId("case-view").classList.toggle("hidden", name !== "case");
}

/* ---- one case ---- */

async function loadHistory(id) {
  const list = byId("history");
  list.innerHTML = "";
  const { events } = await (await api(`cases/${id}/history`)).json();
  for (const event of events) {
    const line = document.createElement("li");
    const who = event.reviewer ? ` by reviewer ${event.reviewer.slice(0, 8)}` : "";
    line.textContent = `version ${event.version}: ${event.status}${who}, ${new Date(event.at).toLocaleString()}`;
    list.appendChild(line);
  }
}

async function openCase(id) {
  showError("");
  byId("saved").textContent = "";
  try {
    const item = await (await api(`cases/${id}`)).json();
    const { width, height } = item.image;
    const imageBlob = await (await api(`cases/${id}/image`)).blob();
    const [image, mask] = await Promise.all([
      createImageBitmap(imageBlob, { imageOrientation: "from-image" }), maskFromPng(`cases/${id}/mask`, width, height),
    ]);
    Object.assign(state, { current: item, image, imageBlob, mask, uncertainty: null, history: [], redo: [] });
    canvas.width = width; canvas.height = height;
    canvas.style.width = `${width}px`; canvas.style.height = `${height}px`;
    // A DICOM case also names its patient and accession, as the hospital's own systems do (readers only).
    const dicom = item.source.dicom || {};
    const source = [
      item.external_id, item.image.filename,
      dicom.patient_id && `patient ${dicom.patient_id}`, dicom.accession_number && `accession ${dicom.accession_number}`,
    ].filter(Boolean).join(" · ");
    byId("case-summary").textContent = `${source ? source + " · " : ""}${width}×${height} px · ` +
      `added ${new Date(item.created_at).toLocaleString()} · uncertainty score ${item.uncertainty_score.toFixed(3)} · ` +
      `${item.review.status} (version ${item.review.version}) · model ${item.model.name} ${item.model.version}`;
    const warning = byId("case-warning");
    warning.textContent = item.out_of_distribution
      ? `This image does not look like dermoscopy (out-of-distribution score ${item.ood_score.toFixed(2)}).` : "";
    warning.classList.toggle("hidden", !item.out_of_distribution);
    byId("show-uncertainty").checked = false;
    updateUndoButtons();
    showView("case");
    fitView();
    loadHistory(id).catch(() => {});
  } catch (failure) {
    showError(failure.message);
  }
}

/* ---- the view: fit, zoom at a point, pan ---- */

function applyView() {
  const { scale, x, y } = state.view;
  canvas.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
  byId("zoom-level").textContent = `${Math.round(scale * 100)} %`;
  draw();
}

function fitView() {
  const box = editor.getBoundingClientRect();
  const scale = Math.min(box.width / canvas.width, box.height / canvas.height);
  state.view = { scale, x: (box.width - canvas.width * scale) / 2, y: (box.height - canvas.height * scale) / 2 };
  applyView();
}

function zoomAt(factor, clientX, clientY) {
  /* The image point under (clientX, clientY) stays where it is. */
  const box = editor.getBoundingClientRect();
  const [pointX, pointY] = [clientX - box.left, clientY - box.top];
  const { scale, x, y } = state.view;
  const fit = Math.min(box.width / canvas.width, box.height / canvas.height);
  const next = Math.min(Math.max(scale * factor, fit / 2), 32);
  state.view = { scale: next, x: pointX - ((pointX - x) * next) / scale, y: pointY - ((pointY - y) * next) / scale };
  applyView();
}

function zoomAtCentre(factor) {
  const box = editor.getBoundingClientRect();
  zoomAt(factor, box.left + box.width / 2, box.top + box.height / 2);
}

editor.addEventListener("wheel", (event) => {
  if (!state.mask) return;
  event.preventDefault();
  zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX, event.clientY);
}, { passive: false });

/* ---- drawing ---- */

function screenToImageScale() { return canvas.width / canvas.getBoundingClientRect().width; }

function draw() {
  if (!state.image) return;
  context.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  if (byId("show-uncertainty").checked && state.uncertainty) {
    context.drawImage(state.uncertainty, 0, 0, canvas.width, canvas.height);
  }
  if (byId("show-mask").checked) {
    if (byId("outline").checked) {
      context.drawImage(outlineOf(state.mask, Math.max(1, Math.round(2 * screenToImageScale()))), 0, 0);
    } else {
      context.globalAlpha = Number(byId("opacity").value) / 100;
      context.drawImage(state.mask, 0, 0);
      context.globalAlpha = 1;
    }
  }
  if (state.boxDraft) {
    const [x0, y0, x1, y1] = boxCorners(state.boxDraft);
    context.lineWidth = 2 * screenToImageScale();
    context.setLineDash([8 * screenToImageScale(), 5 * screenToImageScale()]);
    context.strokeStyle = OUTLINE_COLOUR;
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
    context.setLineDash([]);
  }
}

function updateUndoButtons() {
  byId("undo").disabled = state.history.length === 0;
  byId("redo").disabled = state.redo.length === 0;
}

function snapshot() {
  return state.mask.getContext("2d").getImageData(0, 0, state.mask.width, state.mask.height);
}

function remember() {
  state.history.push(snapshot());
  if (state.history.length > UNDO_STEPS) state.history.shift();
  state.redo = [];
  updateUndoButtons();
}

function undo() {
  const previous = state.history.pop();
  if (!previous) return;
  state.redo.push(snapshot());
  state.mask.getContext("2d").putImageData(previous, 0, 0);
  updateUndoButtons();
  draw();
}

function redo() {
  const next = state.redo.pop();
  if (!next) return;
  state.history.push(snapshot());
  state.mask.getContext("2d").putImageData(next, 0, 0);
  updateUndoButtons();
  draw();
}

function imagePoint(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
}

function tool() { return document.querySelector("input[name=tool]:checked").value; }

function paint(from, to) {
  const maskContext = state.mask.getContext("2d");
  // The brush keeps its size on screen whatever the image's size and the zoom.
  maskContext.globalCompositeOperation = tool() === "eraser" ? "destination-out" : "source-over";
  maskContext.strokeStyle = `rgb(${LESION.join(",")})`;
  maskContext.lineWidth = Number(byId("brush-size").value) * screenToImageScale();
  maskContext.lineCap = "round";
  maskContext.beginPath();
  maskContext.moveTo(...from);
  maskContext.lineTo(...to);
  maskContext.stroke();
  maskContext.globalCompositeOperation = "source-over";
  draw();
}

function boxCorners({ from, to }) {
  return [Math.min(from[0], to[0]), Math.min(from[1], to[1]), Math.max(from[0], to[0]), Math.max(from[1], to[1])];
}

canvas.addEventListener("pointerdown", (event) => {
  if (!state.mask) return;
  canvas.setPointerCapture(event.pointerId);
  if (state.panning || event.button === 1) {
    state.panFrom = [event.clientX, event.clientY];
    return;
  }
  const point = imagePoint(event);
  if (tool() === "box") {
    state.boxDraft = { from: point, to: point };
    return;
  }
  remember();
  state.drawing = point;
  paint(point, point);
});
canvas.addEventListener("pointermove", (event) => {
  if (state.panFrom) {
    state.view.x += event.clientX - state.panFrom[0];
    state.view.y += event.clientY - state.panFrom[1];
    state.panFrom = [event.clientX, event.clientY];
    applyView();
  } else if (state.boxDraft) {
    state.boxDraft.to = imagePoint(event);
    draw();
  } else if (state.drawing) {
    const point = imagePoint(event);
    paint(state.drawing, point);
    state.drawing = point;
  }
});
for (const name of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(name, () => {
    const draft = state.boxDraft;
    Object.assign(state, { drawing: null, panFrom: null, boxDraft: null });
    if (!draft) return;
    draw();
    const box = boxCorners(draft).map((value) => Math.round(value));
    // A click is not a box: at least a few screen pixels each way.
    const least = 4 * screenToImageScale();
    if (name === "pointerup" && box[2] - box[0] >= least && box[3] - box[1] >= least) propose(box);
  });
}

/* ---- proposals (LiteMedSAM) ---- */

async function propose(box) {
  /* The proposal replaces the mask being edited (one Undo brings the previous one back); nothing is saved. */
  if (state.busy) return;
  showError("");
  state.busy = true;
  showProgress("Asking LiteMedSAM (a case's first box takes a second or two, each further box a tenth)…");
  const caseId = state.current.id;
  try {
    const response = await api(`cases/${caseId}/proposal`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(box ? { box } : {}),
    });
    const proposal = await response.json();
    if (!state.current || state.current.id !== caseId) return;
    remember();
    state.mask = maskFromRle(proposal.mask_rle);
    draw();
    byId("saved").textContent = `Proposal by ${proposal.model} (its own estimate of overlap: ` +
      `${proposal.predicted_iou.toFixed(2)}). Save it, adjust it with the brush, or undo.`;
  } catch (failure) {
    showError(`No proposal: ${failure.message}`);
  } finally {
    state.busy = false;
    showProgress("");
  }
}

async function toggleUncertainty() {
  /* The case's uncertainty, made again as it was made: the same image and settings, the same seed. */
  if (byId("show-uncertainty").checked && !state.uncertainty) {
    const { settings, id } = state.current;
    const query = new URLSearchParams({ format: "uncertainty", samples: settings.samples, seed: settings.seed, tta: settings.tta });
    const form = new FormData();
    form.append("file", state.imageBlob, "case");
    try {
      showProgress("Computing the uncertainty map…");
      const levels = await createImageBitmap(await (await api(`predict/?${query}`, { method: "POST", body: form })).blob());
      const { width, height } = state.current.image;
      const scratch = new OffscreenCanvas(width, height).getContext("2d");
      scratch.drawImage(levels, 0, 0, width, height);
      const pixels = scratch.getImageData(0, 0, width, height);
      const data = pixels.data;
      for (let index = 0; index < data.length; index += 4) {
        // The 16-bit levels read as 8 bits: 255 is the largest std possible, 0.5; boundaries sit near 0.1-0.3.
        data[index + 3] = Math.min(200, data[index] * 2);
        data[index] = UNCERTAINTY[0]; data[index + 1] = UNCERTAINTY[1]; data[index + 2] = UNCERTAINTY[2];
      }
      scratch.putImageData(pixels, 0, 0);
      if (state.current && state.current.id === id) state.uncertainty = scratch.canvas;
    } catch (failure) {
      showError(`No uncertainty map: ${failure.message}`);
      byId("show-uncertainty").checked = false;
    } finally {
      showProgress("");
    }
  }
  draw();
}

/* ---- decisions ---- */

function maskRle() {
  /* COCO's uncompressed RLE: column-major runs, starting with background. */
  const { width, height } = state.mask;
  const alpha = state.mask.getContext("2d").getImageData(0, 0, width, height).data;
  const counts = [];
  let current = 0;
  let run = 0;
  for (let x = 0; x < width; x += 1) {
    for (let y = 0; y < height; y += 1) {
      const value = alpha[(y * width + x) * 4 + 3] > 127 ? 1 : 0;
      if (value === current) { run += 1; } else { counts.push(run); run = 1; current = value; }
    }
  }
  counts.push(run);
  return { size: [height, width], counts };
}

async function openNext() {
  const position = state.cases.findIndex((item) => item.id === state.current.id);
  const next = state.cases[position + 1];
  if (next) await openCase(next.id);
  else { showView("worklist"); await loadWorklist(); }
}

async function decide(status) {
  showError("");
  const body = { status, version: state.current.review.version };
  if (status === "corrected") body.mask_rle = maskRle();
  if (state.current.out_of_distribution && (status === "accepted" || status === "corrected")) {
    /* Accepted and corrected cases are exported for training: a picture the gate doubted needs a person's word. */
    const question = "This picture was flagged as probably not dermoscopy. Marking it " + status +
      " lets it into an export for training. Is it a dermoscopic image of a skin lesion?";
    if (!window.confirm(question)) return;
    body.confirm_out_of_distribution = true;
  }
  try {
    const response = await api(`cases/${state.current.id}/review`, {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const saved = await response.json();
    await openNext();
    /* Named, since the next case is on screen now: the verdict is the previous case's. */
    byId("saved").textContent = `Saved the previous case (${caseName(saved)}): ${status}, version ${saved.review.version}.`;
  } catch (failure) {
    if (failure.status === 409) {
      /* The case is reloaded, with the reviewer's strokes laid back on it (the reloaded mask one Undo away),
         and the reason stays on screen: opening a case clears the message, so it is shown after. */
      const mine = state.mask;
      const caseId = state.current.id;
      await openCase(caseId);
      const same = state.current && state.current.id === caseId && mine.width === state.mask.width &&
        mine.height === state.mask.height;
      if (same && status === "corrected") {
        remember();
        state.mask = mine;
        draw();
      }
      showError(`Not saved: ${failure.message}. The case has been reloaded` +
        (same && status === "corrected" ? " with your strokes kept (Undo shows the saved mask)" : "") +
        "; decide again.");
    } else {
      showError(failure.message);
    }
  }
}

/* Strokes not yet saved: every way out of the case asks first (Next, the worklist, Refresh, the filter, a new
   upload, closing or reloading the page). Undo back to the start still counts as edited: the page cannot tell
   whether the person meant it. */
function hasUnsavedEdits() {
  return !byId("case-view").classList.contains("hidden") && (state.history.length > 0 || state.redo.length > 0);
}

function mayLeaveCase() {
  return !hasUnsavedEdits() || window.confirm("Leave this case without saving your changes?");
}

function leaveForNext() {
  if (mayLeaveCase()) openNext();
}

window.addEventListener("beforeunload", (event) => {
  if (!hasUnsavedEdits()) return;
  event.preventDefault();
  event.returnValue = ""; // older browsers ask only when this is set
});

byId("accept").addEventListener("click", () => decide("accepted"));
byId("save").addEventListener("click", () => decide("corrected"));
byId("reject").addEventListener("click", () => decide("rejected"));
byId("next").addEventListener("click", leaveForNext);
byId("undo").addEventListener("click", undo);
byId("redo").addEventListener("click", redo);
byId("propose").addEventListener("click", () => propose(null));
byId("zoom-fit").addEventListener("click", fitView);
for (const id of ["show-mask", "outline", "opacity"]) byId(id).addEventListener("input", draw);
byId("show-uncertainty").addEventListener("change", toggleUncertainty);
byId("reset").addEventListener("click", async () => {
  remember();
  const { width, height } = state.current.image;
  state.mask = await maskFromPng(`cases/${state.current.id}/mask?source=model`, width, height);
  draw();
});
function backToWorklist() {
  if (!mayLeaveCase()) return false;
  showView("worklist");
  loadWorklist();
  return true;
}
byId("back").addEventListener("click", backToWorklist);
byId("refresh").addEventListener("click", backToWorklist);
byId("more").addEventListener("click", () => loadWorklist(true));
let filterShown = statusFilter.value;
statusFilter.addEventListener("change", () => {
  if (backToWorklist()) filterShown = statusFilter.value;
  else statusFilter.value = filterShown; // stayed on the case: the filter shows what the list still holds
});
byId("upload").addEventListener("change", async (event) => {
  /* Each chosen image is segmented and kept as a case (POST /cases), then the worklist is shown again. */
  showError("");
  const files = [...event.target.files];
  const failures = [];
  for (const [position, file] of files.entries()) {
    showProgress(`Adding ${position + 1} of ${files.length}: ${file.name} (uploading and segmenting)…`, position, files.length);
    const form = new FormData();
    form.append("file", file);
    try {
      await api("cases", { method: "POST", body: form });
    } catch (failure) {
      failures.push(`${file.name}: ${failure.message}`);
    }
  }
  showProgress("");
  event.target.value = "";
  /* New cases join the list; a case with unsaved strokes stays open (they are added all the same). */
  if (mayLeaveCase()) showView("worklist");
  await loadWorklist();
  showError(failures.join(" · "));
});

/* ---- the keyboard ---- */

/* Shortcuts act on the case being edited, never in a text field: there the keys (and the browser's own undo)
   belong to the field. Left to the browser, an undo from the page body once reached back into the API key field
   and emptied it, and every later decision failed. */
const TEXT_FIELDS = "input[type=text], input[type=password], input[type=search], input[type=number], textarea, select, [contenteditable]";
const KEYS = {
  b: () => { byId("tool-brush").checked = true; },
  e: () => { byId("tool-eraser").checked = true; },
  x: () => { byId("tool-box").checked = true; },
  p: () => propose(null),
  "[": () => { const size = byId("brush-size"); size.value = Math.max(2, Number(size.value) - 4); },
  "]": () => { const size = byId("brush-size"); size.value = Math.min(120, Number(size.value) + 4); },
  a: () => decide("accepted"),
  s: () => decide("corrected"),
  r: () => decide("rejected"),
  n: leaveForNext,
  m: () => { byId("show-mask").checked = !byId("show-mask").checked; draw(); },
  l: () => { byId("outline").checked = !byId("outline").checked; draw(); },
  u: () => { byId("show-uncertainty").checked = !byId("show-uncertainty").checked; toggleUncertainty(); },
  "0": fitView,
  "+": () => zoomAtCentre(1.25),
  "=": () => zoomAtCentre(1.25),
  "-": () => zoomAtCentre(0.8),
};

document.addEventListener("keydown", (event) => {
  const inField = event.target instanceof Element && event.target.closest(TEXT_FIELDS);
  if (inField || byId("shortcuts").open) return;
  const editing = !byId("case-view").classList.contains("hidden") && state.mask;
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && (key === "z" || key === "y")) {
    event.preventDefault();
    if (!editing) return;
    if (key === "y" || event.shiftKey) redo(); else undo();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "?") { event.preventDefault(); byId("shortcuts").showModal(); return; }
  if (!editing) return;
  if (event.key === " ") {
    event.preventDefault(); // no page scroll: space held pans the image
    state.panning = true;
    canvas.classList.add("panning");
    return;
  }
  const action = KEYS[key];
  if (!action || event.repeat) return;
  event.preventDefault();
  action();
});
document.addEventListener("keyup", (event) => {
  if (event.key !== " ") return;
  state.panning = false;
  canvas.classList.remove("panning");
});
window.addEventListener("resize", () => { if (state.mask) fitView(); });

loadWorklist();
