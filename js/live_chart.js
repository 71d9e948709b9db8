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

function drawChart(chart) {
  const canvas = chart.canvas;
  const scale = window.devicePixelRatio || 1;
  const width = Math.max(1, canvas.clientWidth);
  const height = Math.max(1, canvas.clientHeight);
  if (canvas.width !== Math.round(width * scale) || canvas.height !== Math.round(height * scale)) {
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const box = { x: 0, y: 0, w: width, h: height - 20 };
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

// The chart is a DOM widget of its own (not serialised): the node's layout reserves its height below the inputs.
function buildChart() {
  const canvas = document.createElement("canvas");
  canvas.style.cssText = `width:100%;height:${CHART_HEIGHT}px;display:block;`;
  return { canvas, points: [] };
}

app.registerExtension({
  name: "ZErase.LiveChart",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE_IDS.TRAIN) return;

    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      this.zeraseChart = buildChart();
      this.addDOMWidget("zerase_chart", "zerase_chart", this.zeraseChart.canvas, {
        serialize: false,
        getMinHeight: () => CHART_HEIGHT,
        getMaxHeight: () => CHART_HEIGHT,
      });
      this.zeraseChartListener = (event) => {
        const data = event.detail;
        if (!data || String(data.node) !== String(this.id)) return;
        const chart = this.zeraseChart;
        if (data.step <= 1 || (chart.points.length && data.step <= chart.points.at(-1).step)) chart.points = [];
        chart.points.push(data);
        if (chart.points.length > MAX_POINTS) chart.points.shift();
        drawChart(chart);
      };
      api.addEventListener(EVENTS.TRAIN, this.zeraseChartListener);
      const chart = this.zeraseChart;
      chart.observer = new ResizeObserver(() => drawChart(chart));   // node resized: redraw at the new size
      chart.observer.observe(chart.canvas);
    });

    chainCallback(nodeType.prototype, "onRemoved", function () {
      if (this.zeraseChartListener) api.removeEventListener(EVENTS.TRAIN, this.zeraseChartListener);
      this.zeraseChartListener = null;
      this.zeraseChart?.observer?.disconnect();
    });
  },
});
