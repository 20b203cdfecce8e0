// curvprof dashboard: draws the server's Plotly figures and polls job progress.
"use strict";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

function drawCharts() {
  const charts = Array.from(document.querySelectorAll("[data-figure]"));
  if (!charts.length) { document.body.dataset.chartsReady = "0"; return; }
  const drawn = charts.map((el) => {
    const figure = JSON.parse(el.dataset.figure);
    return Plotly.newPlot(el, figure.data, figure.layout, {
      displaylogo: false,
      responsive: true,
    }).then(() => {
      // a click on a layer's point opens that layer
      el.on("plotly_click", (event) => {
        const id = event.points && event.points[0] && event.points[0].customdata;
        if (typeof id === "number") window.location.href = "/ui/layers/" + id;
      });
    });
  });
  Promise.all(drawn).then(() => {
    document.body.dataset.chartsReady = String(charts.length);
  });
}

function showProgress(el, job) {
  const bar = el.querySelector(".bar");
  const fill = el.querySelector(".bar span");
  const count = el.querySelector(".count");
  const percent = job.total ? (100 * job.done) / job.total : job.state === "succeeded" ? 100 : 0;
  fill.style.width = percent.toFixed(1) + "%";
  bar.className = "bar state-" + job.state;
  count.textContent = job.done + "/" + job.total + (job.failed ? " (" + job.failed + " failed)" : "");
  el.dataset.state = job.state;
  document.querySelectorAll('.state[data-job-id="' + el.dataset.jobId + '"], tr[data-job-id="' + el.dataset.jobId + '"] .state')
    .forEach((cell) => { cell.textContent = job.state; cell.dataset.state = job.state; });
}

function pollProgress() {
  const live = Array.from(document.querySelectorAll('.progress[data-terminal="false"]'));
  if (!live.length) return;
  const ids = live.map((el) => el.dataset.jobId).join(",");
  fetch("/ui/progress?ids=" + encodeURIComponent(ids), { credentials: "same-origin" })
    .then((response) => (response.ok ? response.json() : null))
    .then((jobs) => {
      if (!jobs) return;
      let finished = false;
      live.forEach((el) => {
        const job = jobs[el.dataset.jobId];
        if (!job) return;
        showProgress(el, job);
        if (TERMINAL.has(job.state)) { el.dataset.terminal = "true"; finished = true; }
      });
      // a finished job brings its results (or its error): render the page again
      if (finished) window.location.reload();
      else window.setTimeout(pollProgress, 1000);
    })
    .catch(() => window.setTimeout(pollProgress, 5000));
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts();
  window.setTimeout(pollProgress, 1000);
});
