// Live chart of L_er, L_pr and λ on ZEraseTrain, fed by the server's `zerase.train` events (one per step).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { EVENTS, NODE_IDS, chainCallback } from "./constants.js";

const CHART_HEIGHT = 130;
const MAX_POINTS = 5000;
const SERIES = [
  { key: "L_er", color: "#e8684a" },
  { key: "L_pr", color: "#5ad8a6" },
  { key: "lambda", label: "λ", color: "#5b8ff9" },
];

function drawSeries(ctx, points, key, color, box) {
  const values = points.map((point) => point[key]).filter((value) => Number.isFinite(value));
  if (values.length < 1) return null;
  const low = Math.min(...values);
  const high = Math.max(...values);
  const span = high - low || 1;
  const last = points[points.length - 1].step || 1;
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  let started = false;
  for (const point of points) {
    if (!Number.isFinite(point[key])) continue;
    const x = box.x + (box.w * (point.step - 1)) / Math.max(1, last - 1);
    const y = box.y + box.h - (box.h * (point[key] - low)) / span;
    if (started) ctx.lineTo(x, y);
    else ctx.moveTo(x, y);
    started = true;
  }
  ctx.stroke();
  return values[values.length - 1];
}

function drawChart(node, ctx) {
  const chart = node.zeraseChart;
  const box = { x: 10, y: node.size[1] - CHART_HEIGHT + 4, w: node.size[0] - 20, h: CHART_HEIGHT - 26 };
  ctx.save();
  ctx.fillStyle = "#1b1b1b";
  ctx.fillRect(box.x, box.y, box.w, box.h);
  ctx.font = "11px sans-serif";
  if (!chart.points.length) {
    ctx.fillStyle = "#888";
    ctx.fillText("ZErase: L_er, L_pr and λ appear here while training", box.x + 6, box.y + 16);
    ctx.restore();
    return;
  }
  let labelX = box.x;
  for (const series of SERIES) {
    const current = drawSeries(ctx, chart.points, series.key, series.color, box);
    if (current === null) continue;
    ctx.fillStyle = series.color;
    const text = `${series.label || series.key} ${current.toPrecision(3)}`;
    ctx.fillText(text, labelX, box.y + box.h + 14);
    labelX += ctx.measureText(text).width + 14;
  }
  const last = chart.points[chart.points.length - 1];
  ctx.fillStyle = "#aaa";
  ctx.fillText(`step ${last.step}/${last.total}`, box.x + box.w - 80, box.y + box.h + 14);
  ctx.restore();
}

app.registerExtension({
  name: "ZErase.LiveChart",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_IDS.TRAIN) return;

    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      this.zeraseChart = { points: [] };
      this.zeraseChartListener = (event) => {
        const data = event.detail;
        if (!data || String(data.node) !== String(this.id)) return;
        if (data.step <= 1 || (this.zeraseChart.points.length && data.step <= this.zeraseChart.points.at(-1).step)) {
          this.zeraseChart.points = [];
        }
        this.zeraseChart.points.push(data);
        if (this.zeraseChart.points.length > MAX_POINTS) this.zeraseChart.points.shift();
        this.setDirtyCanvas(true, false);
      };
      api.addEventListener(EVENTS.TRAIN, this.zeraseChartListener);
      this.setSize([Math.max(this.size[0], 360), this.size[1] + CHART_HEIGHT]);
    });

    chainCallback(nodeType.prototype, "onRemoved", function () {
      if (this.zeraseChartListener) api.removeEventListener(EVENTS.TRAIN, this.zeraseChartListener);
      this.zeraseChartListener = null;
    });

    chainCallback(nodeType.prototype, "onDrawForeground", function (ctx) {
      if (this.flags?.collapsed || !this.zeraseChart) return;
      drawChart(this, ctx);
    });
  },
});
