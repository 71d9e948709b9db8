// Before/after slider on ErasureCompare: the original and erased image of each prompt, split by a draggable line.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { NODE_IDS, chainCallback } from "./constants.js";

function imageUrl(image) {
  const query = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder || "", type: image.type });
  return api.apiURL(`/view?${query.toString()}`);
}

const FRAME_MIN_HEIGHT = 260; // the before/after frame; the node keeps room for it and its controls
const SLIDER_HEIGHT = FRAME_MIN_HEIGHT + 30;

function buildSlider() {
  const root = document.createElement("div");
  root.style.cssText = "display:flex;flex-direction:column;gap:4px;width:100%;height:100%;";
  const frame = document.createElement("div");
  frame.style.cssText = `position:relative;width:100%;flex:1;min-height:${FRAME_MIN_HEIGHT}px;background:#111;overflow:hidden;`;
  const before = document.createElement("img");
  const after = document.createElement("img");
  for (const image of [before, after]) {
    image.style.cssText = "position:absolute;inset:0;width:100%;height:100%;object-fit:contain;image-rendering:pixelated;";
    image.draggable = false;
  }
  const line = document.createElement("div");
  line.style.cssText = "position:absolute;top:0;bottom:0;width:2px;background:#fff;pointer-events:none;";
  frame.append(before, after, line);
  const controls = document.createElement("div");
  controls.style.cssText = "display:flex;gap:6px;align-items:center;font-size:11px;color:#ccc;";
  const row = document.createElement("select");
  const range = document.createElement("input");
  range.type = "range";
  range.min = "0";
  range.max = "100";
  range.value = "50";
  range.style.flex = "1";
  controls.append("original", range, "erased", row);
  root.append(frame, controls);

  const split = () => {
    after.style.clipPath = `inset(0 0 0 ${range.value}%)`;
    line.style.left = `calc(${range.value}% - 1px)`;
  };
  range.addEventListener("input", split);
  split();
  return { root, before, after, row, range };
}

app.registerExtension({
  name: "ZErase.CompareSlider",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_IDS.COMPARE) return;

    chainCallback(nodeType.prototype, "onExecuted", function (message) {
      const befores = message?.zerase_before || [];
      const afters = message?.zerase_after || [];
      if (!befores.length || befores.length !== afters.length) return;
      if (!this.zeraseSlider) {
        this.zeraseSlider = buildSlider();
        this.addDOMWidget("zerase_slider", "zerase_slider", this.zeraseSlider.root, {
          serialize: false,
          getMinHeight: () => SLIDER_HEIGHT,
        });
        this.setSize([this.size[0], Math.max(this.size[1], this.computeSize()[1])]);
        this.zeraseSlider.row.addEventListener("change", () => this.zeraseShowRow(Number(this.zeraseSlider.row.value)));
      }
      this.zeraseRows = befores.map((image, index) => [image, afters[index]]);
      const select = this.zeraseSlider.row;
      select.replaceChildren(
        ...this.zeraseRows.map((_, index) => new Option(`prompt ${index + 1}`, String(index))),
      );
      this.zeraseShowRow(0);
      this.setDirtyCanvas(true, true);
    });

    nodeType.prototype.zeraseShowRow = function (index) {
      const pair = this.zeraseRows?.[index];
      if (!pair) return;
      this.zeraseSlider.before.src = imageUrl(pair[0]);
      this.zeraseSlider.after.src = imageUrl(pair[1]);
    };
  },
});
