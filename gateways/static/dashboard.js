// Agent Fabric dashboard: one WebSocket (/v1/dashboard), one snapshot per second, rates from
// successive snapshots, the last five minutes kept in memory. No external assets.
"use strict";
(function () {
  const HISTORY = 300;
  const series = { t: [], in: [], out: [], p50: [], p99: [], pool: [], leases: [], ops: [], errs: [] };
  let last = null;
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);

  function push(key, value) {
    series[key].push(value);
    if (series[key].length > HISTORY) series[key].shift();
  }

  function fmt(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "–";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return n >= 10 ? n.toFixed(0) : n.toFixed(1);
  }

  function chart(canvas, lines, colors) {
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    canvas.width = w * ratio; canvas.height = h * ratio;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, w, h);
    let max = 1;
    for (const line of lines) for (const v of line) if (v !== null && v > max) max = v;
    max *= 1.15;
    g.strokeStyle = "#2a333d"; g.fillStyle = "#8a96a3"; g.font = "11px system-ui";
    for (let i = 0; i <= 3; i++) {
      const y = 4 + (h - 8) * i / 3;
      g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
      g.fillText(fmt(max * (1 - i / 3)), 4, y + 12);
    }
    lines.forEach((line, k) => {
      g.strokeStyle = colors[k]; g.lineWidth = 1.5; g.beginPath();
      let started = false;
      line.forEach((v, i) => {
        if (v === null) { started = false; return; }
        const x = w - (line.length - 1 - i) * (w / (HISTORY - 1));
        const y = h - 4 - (h - 8) * v / max;
        if (!started) { g.moveTo(x, y); started = true; } else g.lineTo(x, y);
      });
      g.stroke();
    });
  }

  const SVG = "http://www.w3.org/2000/svg";
  const SITE_COLORS = ["#4fb3ff", "#7ee787", "#ffa657", "#d2a8ff", "#ff7b72", "#79c0ff"];
  const siteColor = {};
  function colorOf(site) {
    if (!(site in siteColor)) siteColor[site] = SITE_COLORS[Object.keys(siteColor).length % SITE_COLORS.length];
    return siteColor[site];
  }
  function el(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function layout(graph) {
    // Cloud nodes on an inner ring; edge nodes evenly on an outer ring, in the order of
    // their hubs' angles, so each leaf sits near its hub and no two overlap.
    const cx = 200, cy = 195, spots = {};
    const clouds = graph.nodes.filter((n) => n.role !== "edge");
    const edges = graph.nodes.filter((n) => n.role === "edge");
    const angle = {};
    clouds.forEach((n, i) => {
      const a = -Math.PI / 2 + 2 * Math.PI * i / Math.max(clouds.length, 1);
      angle[n.name] = a;
      const r = clouds.length === 1 ? 0 : 80;
      spots[n.name] = [cx + r * Math.cos(a), cy + r * Math.sin(a)];
    });
    const hubAngle = (n) => {
      const link = graph.links.find((l) => (l.a === n.name || l.b === n.name) && l.kind === "leaf");
      const hub = link ? (link.a === n.name ? link.b : link.a) : null;
      const a = hub in angle ? angle[hub] : 0;
      return (a + 2.5 * Math.PI) % (2 * Math.PI);
    };
    edges.sort((x, y) => hubAngle(x) - hubAngle(y));
    edges.forEach((n, i) => {
      const a = -Math.PI / 2 + 2 * Math.PI * (i + 0.5) / edges.length;
      spots[n.name] = [cx + 135 * Math.cos(a), cy + 150 * Math.sin(a)];
    });
    return spots;
  }

  function drawGraph(view) {
    const svg = $("graph");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const graph = view.graph || { nodes: [{ name: view.node, site: view.site, role: "cloud" }], links: [] };
    const spots = layout(graph);
    for (const l of graph.links) {
      const [x1, y1] = spots[l.a], [x2, y2] = spots[l.b];
      const up = l.state === "up";
      svg.appendChild(el("line", { x1: x1, y1: y1, x2: x2, y2: y2, stroke: up ? "#3d4b59" : "#ff7b72",
        "stroke-width": 2, "stroke-dasharray": l.kind === "leaf" ? "6 4" : "", class: "link",
        "data-link": l.a + "-" + l.b }));
      svg.appendChild(el("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 5, "text-anchor": "middle", class: "rtt" },
        l.rtt_ms === null || l.rtt_ms === undefined ? "– ms" : l.rtt_ms.toFixed(2) + " ms"));
    }
    for (const n of graph.nodes) {
      const [x, y] = spots[n.name];
      const self = n.name === view.node;
      svg.appendChild(el("circle", { cx: x, cy: y, r: self ? 22 : 16, fill: n.unreachable ? "#555" : colorOf(n.site),
        stroke: self ? "#fff" : "none", "stroke-width": 2, class: self ? "node self" : "node peer",
        "data-name": n.name }));
      svg.appendChild(el("text", { x: x, y: y + (self ? 38 : 31), "text-anchor": "middle" }, n.name + " · " + n.site));
    }
    const peers = view.mesh ? view.mesh.peers : [];
    const body = $("peers").tBodies[0];
    body.innerHTML = "";
    for (const p of peers) {
      const row = body.insertRow();
      for (const v of [p.name, p.kind, p.site, p.state, p.rtt_ms === null ? "–" : p.rtt_ms.toFixed(2)]) {
        row.insertCell().textContent = v;
      }
    }
  }

  function update(view) {
    $("node-name").textContent = view.node;
    $("node-site").textContent = view.site;
    $("node-role").textContent = view.mesh ? "role " + view.mesh.role : "standalone";
    const c = view.counters;
    let rates = { in: 0, out: 0, req: 0, noresp: 0, ops: 0, errs: 0 };
    if (last && view.t > last.t) {
      const dt = view.t - last.t, p = last.counters;
      const d = (k) => Math.max(0, (c[k] - p[k]) / dt);
      rates = { in: d("messages_in"), out: d("messages_out"), req: d("requests"),
                noresp: d("no_responders"), ops: d("state_operations"), errs: d("state_errors") };
    }
    last = view;
    const hop = view.latency ? view.latency.hop_seconds : null;
    const p50 = hop && hop.count ? hop.p50 * 1e6 : null, p99 = hop && hop.count ? hop.p99 * 1e6 : null;
    const pool = view.pool;
    const poolUse = pool && pool.pool_bytes ? 100 * pool.bytes_in_use / pool.pool_bytes : null;
    push("t", view.t); push("in", rates.in); push("out", rates.out); push("p50", p50); push("p99", p99);
    push("pool", poolUse); push("leases", pool ? pool.leases : null); push("ops", rates.ops); push("errs", rates.errs);
    $("rate-in").textContent = fmt(rates.in);
    $("rate-in").dataset.value = String(rates.in);
    $("rate-out").textContent = fmt(rates.out);
    $("rate-req").textContent = fmt(rates.req);
    $("rate-noresp").textContent = fmt(rates.noresp);
    $("slow").textContent = String(c.dropped_slow);
    $("hop-p50").textContent = fmt(p50);
    $("hop-p99").textContent = fmt(p99);
    $("pool-use").textContent = poolUse === null ? "off" : poolUse.toFixed(1) + "%";
    $("state-ops").textContent = fmt(rates.ops);
    $("sessions").textContent = String(view.sessions);
    $("subs").textContent = String(view.subscriptions);
    $("note").textContent = view.latency ? "" :
      "hop latency needs the node's metrics: fabric node --metrics 127.0.0.1:9464";
    drawGraph(view);
    chart($("chart-rates"), [series.in, series.out], ["#4fb3ff", "#7ee787"]);
    chart($("chart-latency"), [series.p50, series.p99], ["#4fb3ff", "#ffa657"]);
    chart($("chart-pool"), [series.pool, series.leases], ["#7ee787", "#4fb3ff"]);
    chart($("chart-state"), [series.ops, series.errs], ["#4fb3ff", "#ff7b72"]);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams();
    if (params.get("token")) query.set("token", params.get("token"));
    if (params.get("interval")) query.set("interval", params.get("interval"));
    const ws = new WebSocket(scheme + "//" + location.host + "/v1/dashboard?" + query);
    const status = $("conn-status");
    ws.onopen = () => { status.textContent = "live"; status.className = "live"; };
    ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      if (data.error) {
        status.textContent = data.error.code + ": " + data.error.message;
        status.className = "down";
        return;
      }
      status.textContent = "live"; status.className = "live";
      update(data);
    };
    ws.onclose = () => {
      status.textContent = "reconnecting"; status.className = "down";
      setTimeout(connect, 1000);
    };
  }
  connect();
})();
