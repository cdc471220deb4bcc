/* The page: send the chosen image to POST /predict/ (format=json) and show what comes back. */
const fileInput = document.getElementById("file");
const drop = document.getElementById("drop");
const runButton = document.getElementById("run");
const threshold = document.getElementById("threshold");
let chosen = null;

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
  document.getElementById("threshold-value").textContent = Number(threshold.value).toFixed(2);
});
threshold.addEventListener("change", () => chosen && segment());
runButton.addEventListener("click", segment);

async function segment() {
  const error = document.getElementById("error");
  error.textContent = "";
  runButton.disabled = true;
  const form = new FormData();
  form.append("file", chosen);
  const query = new URLSearchParams({
    format: "json", include_images: "true", threshold: threshold.value,
    samples: document.getElementById("samples").value, seed: document.getElementById("seed").value,
  });
  try {
    const apiKey = document.getElementById("api-key").value;
    const headers = apiKey ? { "X-API-Key": apiKey } : {};
    const response = await fetch(`predict/?${query}`, { method: "POST", body: form, headers });
    const body = await response.json();
    if (!response.ok) {
      const detail = Array.isArray(body.detail) ? body.detail.map((item) => item.msg).join("; ") : body.detail;
      throw new Error(detail || `error ${response.status}`);
    }
    show(body);
  } catch (failure) {
    error.textContent = failure.message;
  } finally {
    runButton.disabled = !chosen;
  }
}

function show(body) {
  document.getElementById("overlay").src = body.images.overlay;
  document.getElementById("mask").src = body.images.mask;
  document.getElementById("heatmap").src = body.images.heatmap;
  const download = document.getElementById("download");
  download.href = body.images.mask;
  download.download = (chosen.name.replace(/\.[^.]+$/, "") || "image") + "_segmentation.png";
  const flag = body.review_recommended
    ? '<span class="flag review">review recommended</span>'
    : '<span class="flag ok">no review flagged</span>';
  document.getElementById("summary").innerHTML =
    `Lesion: ${(100 * body.lesion_area_fraction).toFixed(1)}% of the image · ` +
    `uncertainty score <strong id="score">${body.uncertainty_score.toFixed(3)}</strong> ` +
    `(review at ≥ ${body.review_threshold.toFixed(3)}) · ${flag} · ` +
    `${body.samples} samples, seed ${body.seed}, ${body.width}×${body.height} px`;
  const warning = document.getElementById("ood-warning");
  if (body.out_of_distribution === true) {
    warning.textContent =
      `This image does not look like dermoscopy (out-of-distribution score ${body.ood_score.toFixed(2)}; ` +
      "1.00 and above is flagged). The mask is probably meaningless: check that you sent a dermoscopic image.";
  } else if (body.out_of_distribution === null) {
    warning.textContent = "This model has no out-of-distribution check: nothing says whether the image is dermoscopy.";
  }
  warning.classList.toggle("hidden", body.out_of_distribution === false);
  document.getElementById("result").classList.remove("hidden");
}
