/* A mask's outline, shared by the two pages. The mask is a canvas, opaque where the lesion is and transparent
   elsewhere; its outline is the mask minus its erosion, which keeps a pixel only where the mask, shifted each
   way by `thickness`, covers it too. */
const OUTLINE_COLOUR = "#22d3ee"; // cyan: it stands out against skin, lesions and a red fill alike

function outlineOf(mask, thickness) {
  const { width, height } = mask;
  const eroded = new OffscreenCanvas(width, height).getContext("2d");
  eroded.drawImage(mask, 0, 0);
  eroded.globalCompositeOperation = "destination-in";
  for (const [x, y] of [[thickness, 0], [-thickness, 0], [0, thickness], [0, -thickness]]) eroded.drawImage(mask, x, y);
  const outline = new OffscreenCanvas(width, height).getContext("2d");
  outline.fillStyle = OUTLINE_COLOUR;
  outline.fillRect(0, 0, width, height);
  outline.globalCompositeOperation = "destination-in";
  outline.drawImage(mask, 0, 0);
  outline.globalCompositeOperation = "destination-out";
  outline.drawImage(eroded.canvas, 0, 0);
  return outline.canvas;
}
