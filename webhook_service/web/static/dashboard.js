/* Draws the overview charts from the report rows embedded in the page (no extra request). */
(function () {
  "use strict";
  var source = document.getElementById("report-data");
  if (!source || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var colors = { blue: "#2563eb", teal: "#0d9488", amber: "#d97706", red: "#dc2626", violet: "#7c3aed",
                 slate: "#94a3b8", green: "#16a34a" };
  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
  Chart.defaults.color = "#4b5563";
  Chart.defaults.animation = false;           // screenshots and slow machines get the final picture
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  function column(rows, key, scale) {
    return rows.map(function (row) {
      var value = row[key];
      return value === null || value === undefined ? null : value * (scale || 1);
    });
  }
  function days(rows) { return rows.map(function (row) { return row.day; }); }
  var drawn = 0;
  function chart(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) { return; }
    new Chart(canvas, config);
    drawn += 1;
  }
  var gridY = { beginAtZero: true, grid: { color: "#eef0f3" } };

  var usage = data.daily_usage || [];
  chart("chart-usage", {
    type: "bar",
    data: { labels: days(usage), datasets: [
      { label: "Audio (h)", data: column(usage, "audio_hours"), backgroundColor: colors.blue },
      { label: "Billed (h)", data: column(usage, "billed_hours"), backgroundColor: colors.teal },
      { label: "Speech (h)", data: column(usage, "speech_s", 1 / 3600), backgroundColor: colors.amber }
    ] },
    options: { scales: { x: { grid: { display: false } }, y: gridY } }
  });

  var latency = data.latency || [];
  function line(label, key, color, dashed) {
    return { label: label, data: column(latency, key), borderColor: color, backgroundColor: color,
             borderDash: dashed ? [5, 4] : [], tension: 0.25, spanGaps: true, pointRadius: 3, borderWidth: 2 };
  }
  chart("chart-latency", {
    type: "line",
    data: { labels: days(latency), datasets: [
      line("close→final p50", "close_to_final_p50_s", colors.blue),
      line("close→final p90", "close_to_final_p90_s", colors.violet),
      line("close→final p99", "close_to_final_p99_s", colors.red),
      line("callback delay p50", "callback_delay_p50_s", colors.teal, true),
      line("callback delay p99", "callback_delay_p99_s", colors.amber, true)
    ] },
    options: { scales: { x: { grid: { display: false } }, y: Object.assign({ title: { display: true, text: "seconds" } }, gridY) } }
  });

  var health = data.callback_health || [];
  function bar(label, key, color) {
    return { type: "bar", label: label, data: column(health, key), backgroundColor: color, yAxisID: "y" };
  }
  chart("chart-callbacks", {
    data: { labels: days(health), datasets: [
      { type: "line", label: "received", data: column(health, "callbacks_received"), borderColor: colors.teal,
        backgroundColor: colors.teal, yAxisID: "y1", tension: 0.25, pointRadius: 3, borderWidth: 2, order: 0 },
      bar("redelivered", "duplicates", colors.slate),
      bar("rejected", "rejected", colors.red),
      bar("failed", "failed", colors.amber),
      bar("missing (found by reconciliation)", "missing_found", colors.violet),
      bar("repaired", "repaired", colors.blue)
    ] },
    options: { scales: {
      x: { grid: { display: false } },
      y: Object.assign({ position: "left", title: { display: true, text: "problems" } }, gridY),
      y1: { position: "right", beginAtZero: true, grid: { display: false }, title: { display: true, text: "received" } }
    } }
  });
  document.body.setAttribute("data-charts", String(drawn));
})();
