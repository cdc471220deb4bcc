/* The page: send the chosen image to POST /predict/ (format=json, with images) and show what comes back.
   The JSON carries the mean probability as an 8-bit PNG, so moving the threshold redraws the mask, the outline
   and the lesion's area here, without sending the image again. */
const fileInput = document.getElementById("file");
const drop = document.getElementById("drop");
const runButton = document.getElementById("run");
const threshold = document.getElementById("threshold");
const byId = (id) => document.getElementById(id);
let chosen = null;
let shown = null; // the last result: its body, photo, probability levels and heatmap, for redrawing

function choose(file) {
  chosen = file;
  runButton.disabled = !file;
  if (file) segment();
}
fileInput.addEventListener("change", () => choose(fileInput.files[0]));
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  choose(event.dataTransfer.files[0]);
});
threshold.addEventListener("input", () => {
  byId("threshold-value").textContent = Number(threshold.value).toFixed(2);
  if (shown) redraw();
});
runButton.addEventListener("click", segment);
for (const figure of document.querySelectorAll(".panels figure")) {
  // A click enlarges a panel to the page's width, another shrinks it back.
  figure.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    figure.classList.toggle("enlarged");
  });
}

function showProgress(text) {
  byId("progress-text").textContent = text;
  byId("progress-line").classList.toggle("hidden", !text);
}

async function segment() {
  byId("error").textContent = "";
  runButton.disabled = true;
  const samples = byId("samples").value;
  showProgress(`Segmenting ${chosen.name}: uploading, then ${samples} Monte Carlo samples…`);
  const form = new FormData();
  form.append("file", chosen);
  const query = new URLSearchParams({
    format: "json", include_images: "true", threshold: threshold.value, samples, seed: byId("seed").value,
  });
  try {
    const apiKey = byId("api-key").value;
    const headers = apiKey ? { "X-API-Key": apiKey } : {};
    const response = await fetch(`predict/?${query}`, { method: "POST", body: form, headers });
    const body = await response.json();
    if (!response.ok) {
      const detail = Array.isArray(body.detail) ? body.detail.map((item) => item.msg).join("; ") : body.detail;
      throw new Error(accessProblem(response.status, Boolean(apiKey)) || detail || `error ${response.status}`);
    }
    await show(body);
  } catch (failure) {
    // The last image's result must not stand beside this one's error, as if it were this one's.
    shown = null;
    byId("result").classList.add("hidden");
    byId("error").textContent = `${chosen.name}: ${failure.message}`;
  } finally {
    showProgress("");
    runButton.disabled = !chosen;
  }
}

async function picture(dataUrl) {
  // Decoded by an image element: the page's Content-Security-Policy lets images, not fetch, read data URLs.
  const image = new Image();
  image.src = dataUrl;
  await image.decode();
  return image;
}

async function pixelsOf(dataUrl, width, height) {
  const image = await picture(dataUrl);
  const scratch = new OffscreenCanvas(width, height).getContext("2d");
  scratch.drawImage(image, 0, 0, width, height);
  return scratch.getImageData(0, 0, width, height);
}

async function show(body) {
  const { width, height } = body;
  const [photo, probability, heatmap] = await Promise.all([
    // A DICOM file's photo comes from the server: a browser decodes picture files only.
    body.images.photo ? picture(body.images.photo) : createImageBitmap(chosen, { imageOrientation: "from-image" }),
    pixelsOf(body.images.probability, width, height),
    picture(body.images.heatmap),
  ]);
  shown = { body, photo, probability, heatmap };
  byId("heatmap").src = body.images.heatmap;
  const warning = byId("ood-warning");
  if (body.out_of_distribution === true) {
    warning.textContent =
      `This image does not look like dermoscopy (out-of-distribution score ${body.ood_score.toFixed(2)}; ` +
      "1.00 and above is flagged). The mask is probably meaningless: check that you sent a dermoscopic image.";
  } else if (body.out_of_distribution === null) {
    warning.textContent = "This model has no out-of-distribution check: nothing says whether the image is dermoscopy.";
  }
  warning.classList.toggle("hidden", body.out_of_distribution === false);
  redraw();
  byId("result").classList.remove("hidden");
}

function redraw() {
  /* The mask at the slider's threshold (p >= threshold, from round(255 p): within half a step of 1/255 of the
     server's own cut), its outline on the photo with the uncertainty, and the lesion's share of the image. */
  const { body, photo, probability, heatmap } = shown;
  const { width, height } = body;
  const cut = Number(threshold.value) * 255;
  const mask = new ImageData(width, height); // the panel: white lesion on black
  const lesionOnly = new ImageData(width, height); // for the outline: opaque lesion, transparent skin
  let area = 0;
  for (let index = 0; index < width * height; index += 1) {
    const lesion = probability.data[index * 4] >= cut;
    area += lesion;
    const value = lesion ? 255 : 0;
    mask.data[index * 4] = value; mask.data[index * 4 + 1] = value; mask.data[index * 4 + 2] = value;
    mask.data[index * 4 + 3] = 255;
    lesionOnly.data[index * 4 + 3] = value;
  }
  const maskCanvas = new OffscreenCanvas(width, height);
  maskCanvas.getContext("2d").putImageData(mask, 0, 0);
  const lesionCanvas = new OffscreenCanvas(width, height);
  lesionCanvas.getContext("2d").putImageData(lesionOnly, 0, 0);
  const maskImage = document.createElement("canvas");
  maskImage.width = width; maskImage.height = height;
  maskImage.getContext("2d").drawImage(maskCanvas, 0, 0);
  const maskUrl = maskImage.toDataURL("image/png");
  byId("mask").src = maskUrl;
  const download = byId("download");
  download.href = maskUrl;
  download.download = (chosen.name.replace(/\.[^.]+$/, "") || "image") + "_segmentation.png";
  byId("overlay").src = overlay(photo, heatmap, lesionCanvas, width, height);
  const flag = body.review_recommended
    ? '<span class="flag review">review recommended</span>'
    : '<span class="flag ok">no review flagged</span>';
  byId("summary").innerHTML =
    `Lesion: ${(100 * area / (width * height)).toFixed(1)}% of the image at threshold ${Number(threshold.value).toFixed(2)} · ` +
    `uncertainty score <strong id="score">${body.uncertainty_score.toFixed(3)}</strong> ` +
    `(review at ≥ ${body.review_threshold.toFixed(3)}) · ${flag} · ` +
    `${body.samples} samples, seed ${body.seed}, ${body.width}×${body.height} px`;
}

function overlay(photo, heatmap, lesionCanvas, width, height) {
  /* The photo, the uncertainty over it, and the mask's outline (static/outline.js). */
  const composed = document.createElement("canvas");
  composed.width = width; composed.height = height;
  const drawing = composed.getContext("2d");
  drawing.drawImage(photo, 0, 0, width, height);
  drawing.globalAlpha = 0.35;
  drawing.drawImage(heatmap, 0, 0, width, height);
  drawing.globalAlpha = 1;
  drawing.drawImage(outlineOf(lesionCanvas, Math.max(1, Math.round(Math.max(width, height) / 400))), 0, 0);
  return composed.toDataURL("image/png");
}

/* "What the numbers mean" is a closed <details> at the page's foot: a link to it opens it as it scrolls there. */
for (const link of document.querySelectorAll("a[href='#what-it-means']")) {
  link.addEventListener("click", () => { document.getElementById("what-it-means").open = true; });
}
