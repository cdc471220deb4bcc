/* The review worklist: list cases (GET /cases), open one, correct its mask with a brush and an eraser,
   and record the verdict (PUT /cases/{id}/review). The mask being edited lives in an off-screen canvas
   at the image's own size: opaque where the lesion is, transparent elsewhere. */
const apiKey = document.getElementById("api-key");
const statusFilter = document.getElementById("status");
const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d");
const LESION = [239, 68, 68];
const UNDO_STEPS = 30;
const state = { cases: [], cursor: null, current: null, image: null, mask: null, history: [], drawing: null };

apiKey.value = sessionStorage.getItem("lesionseg-api-key") || "";
let keyInUse = apiKey.value;
apiKey.addEventListener("change", () => {
  // Only a new key reloads the list: a change event also comes on blur, as the next click begins.
  if (apiKey.value === keyInUse) return;
  keyInUse = apiKey.value;
  sessionStorage.setItem("lesionseg-api-key", apiKey.value);
  loadWorklist();
});

function showError(message) { document.getElementById("error").textContent = message || ""; }

async function api(path, options = {}) {
  const headers = { ...(apiKey.value ? { "X-API-Key": apiKey.value } : {}), ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let detail = `error ${response.status}`;
    try {
      const body = await response.json();
      detail = Array.isArray(body.detail) ? body.detail.map((item) => item.msg).join("; ") : body.detail;
    } catch (ignored) { /* not JSON: keep the status */ }
    const failure = new Error(detail);
    failure.status = response.status;
    throw failure;
  }
  return response;
}

async function bitmap(path) {
  const blob = await (await api(path)).blob();
  return createImageBitmap(blob, { imageOrientation: "from-image" });
}

function flags(item) {
  const parts = [`<span>score ${item.uncertainty_score.toFixed(3)}</span>`];
  if (item.out_of_distribution) parts.push('<span class="flag review">not dermoscopy?</span>');
  else if (item.review_recommended) parts.push('<span class="flag review">review</span>');
  parts.push(`<span>${item.review.status}</span>`);
  return parts.join(" ");
}

async function loadWorklist(more = false) {
  showError("");
  if (!more) { state.cases = []; state.cursor = null; document.getElementById("worklist").innerHTML = ""; }
  const query = new URLSearchParams({ order: "uncertainty", limit: "24" });
  if (statusFilter.value) query.set("status", statusFilter.value);
  if (state.cursor) query.set("cursor", state.cursor);
  try {
    const page = await (await api(`cases?${query}`)).json();
    state.cursor = page.next_cursor;
    const list = document.getElementById("worklist");
    for (const item of page.cases) {
      state.cases.push(item);
      const entry = document.createElement("li");
      entry.tabIndex = 0;
      entry.dataset.id = item.id;
      entry.innerHTML = `<img alt="case ${item.id}"><div class="meta">${flags(item)}</div>`;
      entry.addEventListener("click", () => openCase(item.id));
      entry.addEventListener("keydown", (event) => event.key === "Enter" && openCase(item.id));
      list.appendChild(entry);
      api(`cases/${item.id}/image`).then((response) => response.blob())
        .then((blob) => { entry.querySelector("img").src = URL.createObjectURL(blob); }).catch(() => {});
    }
    document.getElementById("worklist-empty").classList.toggle("hidden", state.cases.length > 0);
    document.getElementById("more").classList.toggle("hidden", !state.cursor);
  } catch (failure) {
    showError(failure.message);
  }
}

function showView(name) {
  document.getElementById("worklist-view").classList.toggle("hidden", name !== "worklist");
  document.getElementById("case-view").classList.toggle("hidden", name !== "case");
}

async function maskFrom(path, width, height) {
  /* The 0/255 PNG -> the editable mask canvas. */
  const picture = await bitmap(path);
  const scratch = new OffscreenCanvas(width, height).getContext("2d");
  scratch.drawImage(picture, 0, 0, width, height);
  const pixels = scratch.getImageData(0, 0, width, height);
  const data = pixels.data;
  for (let index = 0; index < data.length; index += 4) {
    const lesion = data[index] > 127;
    data[index] = LESION[0]; data[index + 1] = LESION[1]; data[index + 2] = LESION[2];
    data[index + 3] = lesion ? 255 : 0;
  }
  const mask = document.createElement("canvas");
  mask.width = width; mask.height = height;
  mask.getContext("2d").putImageData(pixels, 0, 0);
  return mask;
}

async function openCase(id) {
  showError("");
  document.getElementById("saved").textContent = "";
  try {
    const item = await (await api(`cases/${id}`)).json();
    const { width, height } = item.image;
    const [image, mask] = await Promise.all([bitmap(`cases/${id}/image`), maskFrom(`cases/${id}/mask`, width, height)]);
    Object.assign(state, { current: item, image, mask, history: [] });
    canvas.width = width; canvas.height = height;
    document.getElementById("case-summary").textContent =
      `${width}×${height} px · uncertainty score ${item.uncertainty_score.toFixed(3)} · ` +
      `${item.review.status} (version ${item.review.version}) · model ${item.model.name} ${item.model.version}`;
    const warning = document.getElementById("case-warning");
    warning.textContent = item.out_of_distribution
      ? `This image does not look like dermoscopy (out-of-distribution score ${item.ood_score.toFixed(2)}).` : "";
    warning.classList.toggle("hidden", !item.out_of_distribution);
    document.getElementById("undo").disabled = true;
    showView("case");
    draw();
  } catch (failure) {
    showError(failure.message);
  }
}

function draw() {
  context.drawImage(state.image, 0, 0, canvas.width, canvas.height);
  if (document.getElementById("show-mask").checked) {
    context.globalAlpha = 0.45;
    context.drawImage(state.mask, 0, 0);
    context.globalAlpha = 1;
  }
}

function remember() {
  const maskContext = state.mask.getContext("2d");
  state.history.push(maskContext.getImageData(0, 0, state.mask.width, state.mask.height));
  if (state.history.length > UNDO_STEPS) state.history.shift();
  document.getElementById("undo").disabled = false;
}

function imagePoint(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
}

function paint(from, to) {
  const maskContext = state.mask.getContext("2d");
  const erasing = document.getElementById("tool-eraser").checked;
  // The brush keeps its size on screen whatever the image's size.
  const scale = canvas.width / canvas.getBoundingClientRect().width;
  maskContext.globalCompositeOperation = erasing ? "destination-out" : "source-over";
  maskContext.strokeStyle = `rgb(${LESION.join(",")})`;
  maskContext.lineWidth = Number(document.getElementById("brush-size").value) * scale;
  maskContext.lineCap = "round";
  maskContext.beginPath();
  maskContext.moveTo(...from);
  maskContext.lineTo(...to);
  maskContext.stroke();
  maskContext.globalCompositeOperation = "source-over";
  draw();
}

canvas.addEventListener("pointerdown", (event) => {
  if (!state.mask) return;
  canvas.setPointerCapture(event.pointerId);
  remember();
  state.drawing = imagePoint(event);
  paint(state.drawing, state.drawing);
});
canvas.addEventListener("pointermove", (event) => {
  if (!state.drawing) return;
  const point = imagePoint(event);
  paint(state.drawing, point);
  state.drawing = point;
});
for (const name of ["pointerup", "pointercancel"]) canvas.addEventListener(name, () => { state.drawing = null; });

document.getElementById("undo").addEventListener("click", () => {
  const previous = state.history.pop();
  if (previous) state.mask.getContext("2d").putImageData(previous, 0, 0);
  document.getElementById("undo").disabled = state.history.length === 0;
  draw();
});
/* Ctrl+Z (or ⌘Z) undoes the editor's last stroke wherever the focus is, except in a field, where the browser's
   own undo belongs to the field. Left to the browser, an undo from the page body reached back into the API key
   field and emptied it, and every later decision failed. */
document.addEventListener("keydown", (event) => {
  const inField = event.target instanceof Element && event.target.closest("input, textarea, select, [contenteditable]");
  if (inField || !(event.ctrlKey || event.metaKey) || event.key.toLowerCase() !== "z") return;
  event.preventDefault();
  const editing = !document.getElementById("case-view").classList.contains("hidden");
  if (editing && !event.shiftKey) document.getElementById("undo").click();
});
document.getElementById("reset").addEventListener("click", async () => {
  remember();
  const { width, height } = state.current.image;
  state.mask = await maskFrom(`cases/${state.current.id}/mask?source=model`, width, height);
  draw();
});
document.getElementById("show-mask").addEventListener("change", draw);

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
    const position = state.cases.findIndex((item) => item.id === saved.id);
    const next = state.cases[position + 1];
    if (next) await openCase(next.id);
    else { showView("worklist"); await loadWorklist(); }
    document.getElementById("saved").textContent = `Saved: ${status} (version ${saved.review.version}).`;
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
document.getElementById("accept").addEventListener("click", () => decide("accepted"));
document.getElementById("save").addEventListener("click", () => decide("corrected"));
document.getElementById("reject").addEventListener("click", () => decide("rejected"));
document.getElementById("back").addEventListener("click", () => { showView("worklist"); loadWorklist(); });
document.getElementById("refresh").addEventListener("click", () => loadWorklist());
document.getElementById("upload").addEventListener("change", async (event) => {
  /* Each chosen image is segmented and kept as a case (POST /cases), then the worklist is shown again. */
  showError("");
  for (const file of event.target.files) {
    const form = new FormData();
    form.append("file", file);
    try {
      await api("cases", { method: "POST", body: form });
    } catch (failure) {
      showError(`${file.name}: ${failure.message}`);
    }
  }
  event.target.value = "";
  showView("worklist");
  await loadWorklist();
});
document.getElementById("more").addEventListener("click", () => loadWorklist(true));
statusFilter.addEventListener("change", () => loadWorklist());
loadWorklist();
