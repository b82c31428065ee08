/* flask_jobmetrics dashboard.
   Live refresh: while a page shows running work it polls the JSON API with If-None-Match, so an
   unchanged run costs a 304; only when something changed does it fetch the server-rendered
   summary (status, cards, charts) and swap it in. It stops once that summary says finished.
   The run page's client table is rendered here from the same JSON: sort, filter by status,
   search, pages; the details under it (errors, notes, progress logs) follow the table's page
   and order, each fetched from the client's own JSON when it is opened (the run's JSON leaves
   the long texts out). Every value is set with textContent; no HTML from data is parsed. */
(function () {
  "use strict";
  var root = document.documentElement;
  var EMPTY = "\u2013";
  var ERROR_FIELD = "Error Details";
  var STATUSES = ["Failed", "Running", "Completed with Errors", "Completed", "No Leads To Score"];
  var RANK = { "Failed": 0, "Running": 1, "Completed with Errors": 2 };
  var CSS = {
    "Running": "running", "Completed": "completed", "Failed": "failed",
    "No Leads To Score": "no-leads", "Completed with Errors": "with-errors"
  };

  // -- formatting: the rules of flask_jobmetrics.formatting ------------------------------------

  function number(value) {
    if (value === null || value === undefined) return "0";
    if (typeof value === "boolean") return value ? "True" : "False";
    if (typeof value !== "number") return String(value);
    if (!Number.isInteger(value)) {
      return value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    }
    return value.toLocaleString("en-US");
  }

  function when(iso) { return iso ? iso.slice(0, 19).replace("T", " ") : EMPTY; }

  function pad(n) { return n < 10 ? "0" + n : String(n); }

  function span(total) {
    if (total > 0 && total < 1) {  // tenths under a second, milliseconds under a tenth: formatting.span
      if (total < 0.095) {
        var ms = Math.round(total * 1000);
        return ms >= 1 ? ms + "ms" : "<1ms";
      }
      var tenths = Math.round(total * 10) / 10;
      return tenths < 1 ? tenths.toFixed(1) + "s" : "1s";
    }
    total = Math.max(Math.floor(total), 0);
    var parts = [[Math.floor(total / 86400), "d"], [Math.floor(total % 86400 / 3600), "h"],
                 [Math.floor(total % 3600 / 60), "m"], [total % 60, "s"]];
    while (parts.length > 1 && parts[0][0] === 0) parts.shift();
    parts = parts.slice(0, 2);
    return parts.map(function (p, i) { return (i ? pad(p[0]) : String(p[0])) + p[1]; }).join(" ");
  }

  function shorten(label, width) {  // the middle elided, both ends kept: charts.shorten
    var chars = Array.from(label);
    if (chars.length <= width) return label;
    var head = Math.floor((width - 1) / 2), tail = width - 1 - head;
    return chars.slice(0, head).join("") + "\u2026" + chars.slice(chars.length - tail).join("");
  }

  function epoch(iso) {  // milliseconds, keeping the microseconds Date.parse drops
    var fraction = /\.\d{3}(\d+)/.exec(iso);
    return Date.parse(iso) + (fraction ? Number("0." + fraction[1]) : 0);
  }

  function seconds(client, now) {
    if (!client.start_time) return -1;
    var start = epoch(client.start_time);
    if (client.end_time) return (epoch(client.end_time) - start) / 1000;
    return client.status === "Running" ? (now - start) / 1000 : -1;
  }

  function errorOf(client) {
    var error = client.error || (client.metrics && client.metrics[ERROR_FIELD]);
    return error ? String(error) : "";
  }

  function reasonOf(client) {  // under the status: the error, else a Failed run's latest note
    return client.reason || "";
  }

  function signature(client) {  // what the details of a client depend on, as far as the run's JSON tells
    return JSON.stringify([client.status, client.end_time, client.error, client.notes, client.metrics]);
  }

  function metric(client, field) {
    var value = client.metrics ? client.metrics[field] : undefined;
    return typeof value === "number" ? value : 0;
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function clockText() { return new Date().toISOString().slice(11, 19); }

  // -- the run page's client table ---------------------------------------------------------------

  function Table(section) {
    this.section = section;
    this.table = section.querySelector("table.clients");
    this.body = this.table.tBodies[0];
    this.tools = section.querySelector("#jm-tools");
    this.search = section.querySelector("#jm-search");
    this.chips = section.querySelector("#jm-status-filter");
    this.shown = section.querySelector("#jm-shown");
    this.pager = section.querySelector("#jm-pager");
    this.clientUrl = section.getAttribute("data-client-url") || "";
    this.detailsUrl = section.getAttribute("data-details-url") || "";
    this.detailsSection = document.getElementById("jm-details");
    this.detailsList = document.getElementById("jm-details-list");
    this.detailNodes = {};  // client ID -> its <details>, kept open or closed across redraws
    var nodes = this.detailsList ? this.detailsList.querySelectorAll("details.client-details") : [];
    Array.prototype.forEach.call(nodes, function (node) {  // the server's, already filled
      this.detailNodes[node.id.slice(8)] = node;
    }, this);
    this.pageSize = parseInt(section.getAttribute("data-page-size") || "100", 10) || 100;
    this.nameChars = parseInt(section.getAttribute("data-name-chars") || "26", 10) || 26;
    if (window.matchMedia("(max-width: 640px)").matches) this.pageSize = Math.min(this.pageSize, 25);  // cards
    this.clients = null;
    var params = new URLSearchParams(window.location.search);
    this.state = {
      sort: params.get("sort") || "", dir: params.get("dir") === "asc" ? 1 : params.get("dir") === "desc" ? -1 : 0,
      status: params.get("status") || "", q: params.get("q") || "",
      page: Math.max(parseInt(params.get("page") || "1", 10) || 1, 1)
    };
    this.target = /^#client-/.test(window.location.hash) ? decodeURIComponent(window.location.hash.slice(8)) : "";
    this.readColumns();
    this.bind();
  }

  Table.prototype.wrapHeadings = function () {  // each heading becomes a sort button
    this.columns.forEach(function (col) {
      if (col.th.querySelector("button")) return;
      var button = el("button", "sort", col.label);
      button.type = "button";
      col.th.textContent = "";
      col.th.appendChild(button);
    });
  };

  Table.prototype.readColumns = function () {
    this.columns = Array.prototype.map.call(this.table.tHead.rows[0].cells, function (th) {
      return {
        th: th, key: th.getAttribute("data-key"), field: th.getAttribute("data-field"),
        type: th.getAttribute("data-type"), label: th.textContent.trim(),
        id: th.getAttribute("data-field") ? "m:" + th.getAttribute("data-field") : th.getAttribute("data-key")
      };
    });
  };

  Table.prototype.bind = function () {
    var self = this;
    this.wrapHeadings();
    this.table.tHead.addEventListener("click", function (event) {
      var th = event.target.closest("th");
      if (!th || !event.target.closest("button")) return;
      var col = self.columns.filter(function (c) { return c.th === th; })[0];
      if (!col) return;
      if (self.state.sort === col.id) self.state.dir = -self.state.dir;
      else { self.state.sort = col.id; self.state.dir = col.type === "num" ? -1 : 1; }
      self.state.page = 1;
      self.render();
    });
    var typing = 0;
    this.search.value = this.state.q;
    this.search.addEventListener("input", function () {
      window.clearTimeout(typing);
      typing = window.setTimeout(function () {
        self.state.q = self.search.value.trim();
        self.state.page = 1;
        self.render();
      }, 120);
    });
    this.chips.addEventListener("click", function (event) {
      var chip = event.target.closest("button[data-status]");
      if (!chip) return;
      self.state.status = chip.getAttribute("data-status");
      self.state.page = 1;
      self.render();
    });
    this.pager.addEventListener("click", function (event) {
      var button = event.target.closest("button[data-page]");
      if (!button) return;
      self.state.page = parseInt(button.getAttribute("data-page"), 10);
      self.render();
      self.table.closest(".table-wrap").scrollTop = 0;
    });
    if (this.detailsList) {  // toggle does not bubble: listen on the way down
      this.detailsList.addEventListener("toggle", function (event) { self.openedDetails(event); }, true);
    }
    this.tools.hidden = false;
  };

  Table.prototype.key = function (col, client, now) {
    switch (col.key) {
      case "client": return client.client_id.toLowerCase();
      case "status": return RANK.hasOwnProperty(client.status) ? RANK[client.status] : 3;
      case "error": return errorOf(client).toLowerCase();
      case "start": return client.start_time ? when(client.start_time) : "";
      case "duration": return seconds(client, now);
      case "metric": return metric(client, col.field);
      case "notes": return (client.notes || "").toLowerCase();
    }
    return "";
  };

  function attention(a, b) {
    var ra = RANK.hasOwnProperty(a.status) ? RANK[a.status] : 3;
    var rb = RANK.hasOwnProperty(b.status) ? RANK[b.status] : 3;
    if (ra !== rb) return ra - rb;
    var ia = a.client_id.toLowerCase(), ib = b.client_id.toLowerCase();
    return ia < ib ? -1 : ia > ib ? 1 : (a.client_id < b.client_id ? -1 : a.client_id > b.client_id ? 1 : 0);
  }

  Table.prototype.visible = function (now) {
    var state = this.state, q = state.q.toLowerCase(), self = this;
    var rows = this.clients.filter(function (c) {
      return (!state.status || c.status === state.status) && (!q || c.client_id.toLowerCase().indexOf(q) !== -1);
    });
    var col = this.columns.filter(function (c) { return c.id === state.sort; })[0];
    rows.sort(function (a, b) {
      if (col) {
        var ka = self.key(col, a, now), kb = self.key(col, b, now);
        if (ka < kb) return -state.dir;
        if (ka > kb) return state.dir;
      }
      return attention(a, b);
    });
    return rows;
  };

  Table.prototype.row = function (client, now) {
    var tr = el("tr");
    tr.id = "client-" + client.client_id;
    tr.setAttribute("data-status", client.status);
    var self = this;
    this.columns.forEach(function (col) {
      var cell;
      if (col.key === "client") {
        cell = el("th", "client");
        cell.scope = "row";
        var link = el("a", "");
        var short = shorten(client.client_id, self.nameChars);
        if (short === client.client_id) link.textContent = client.client_id;
        else {  // the middle elided, as the charts' labels; the whole name in the title (and on a phone)
          link.appendChild(el("span", "name-short", short));
          link.appendChild(el("span", "name-full", client.client_id));
          link.setAttribute("aria-label", client.client_id);
        }
        link.href = self.clientUrl.replace("__CLIENT__", encodeURIComponent(client.client_id));
        link.title = client.client_id;
        cell.appendChild(link);
      } else if (col.key === "status") {
        cell = el("td", "status");
        cell.appendChild(el("span", "badge badge-" + (CSS[client.status] || "running"), client.status));
        var reason = errorOf(client) ? "" : reasonOf(client);  // an error has its own column
        if (reason) {
          var why = el("span", "reason", reason);
          why.title = reason;
          cell.appendChild(why);
        }
      } else if (col.key === "error") {
        cell = el("td", "error");
        cell.appendChild(el("div", "lines", errorOf(client)));
        if (errorOf(client)) cell.title = errorOf(client);
      } else if (col.key === "start") {  // the time alone on the job's start date; the full time in the title
        var start = when(client.start_time);
        cell = el("td", "mono", self.day && start.slice(0, 10) === self.day ? start.slice(11) : start);
        if (client.start_time) cell.title = start + " UTC";
      } else if (col.key === "duration") {
        var s = seconds(client, now);
        cell = el("td", "num", s < 0 ? EMPTY : span(s));
      } else if (col.key === "metric") {
        var text = number(client.metrics ? client.metrics[col.field] : undefined);
        cell = el("td", text === "0" ? "num zero" : "num", text);
      } else {
        cell = el("td", "notes");
        cell.appendChild(el("div", "clip", client.notes || ""));
        if (client.notes) cell.title = client.notes;
      }
      cell.setAttribute("data-label", col.label);
      tr.appendChild(cell);
    });
    return tr;
  };

  Table.prototype.ensureErrorColumn = function () {
    if (this.columns.some(function (c) { return c.key === "error"; })) return;
    if (!this.clients.some(errorOf)) return;
    var th = el("th");
    th.setAttribute("data-key", "error");
    th.setAttribute("data-type", "text");
    th.textContent = "Error";
    var status = this.columns.filter(function (c) { return c.key === "status"; })[0];
    status.th.parentNode.insertBefore(th, status.th.nextSibling);
    var foot = this.table.tFoot && this.table.tFoot.rows[0];
    if (foot && foot.cells[1]) foot.cells[1].colSpan += 1;
    this.readColumns();
    this.wrapHeadings();
  };

  Table.prototype.update = function (data) {
    this.clients = data.clients || [];
    this.day = data.job && data.job.start_time ? when(data.job.start_time).slice(0, 10) : "";
    this.ensureErrorColumn();
    if (this.target) {  // opened as /runs/<run>-<client>: show the page that holds its row
      var order = this.visible(Date.now());
      var at = order.map(function (c) { return c.client_id; }).indexOf(this.target);
      if (at >= 0) this.state.page = Math.floor(at / this.pageSize) + 1;
    }
    this.render();
    if (this.target) {
      var row = document.getElementById("client-" + this.target);
      if (row) { row.classList.add("is-target"); row.scrollIntoView({ block: "center" }); }
      this.target = "";
    }
  };

  Table.prototype.renderChips = function () {
    var counts = {}, self = this;
    this.clients.forEach(function (c) { counts[c.status] = (counts[c.status] || 0) + 1; });
    this.chips.textContent = "";
    [""].concat(STATUSES).forEach(function (status) {
      var n = status ? counts[status] || 0 : self.clients.length;
      if (status && !n && self.state.status !== status) return;
      var chip = el("button", "", status || "All");
      chip.type = "button";
      chip.setAttribute("data-status", status);
      chip.setAttribute("aria-pressed", String(self.state.status === status));
      chip.appendChild(document.createTextNode(" "));
      chip.appendChild(el("span", "count", number(n)));
      self.chips.appendChild(chip);
    });
  };

  Table.prototype.renderPager = function (total, pages) {
    var state = this.state;
    this.pager.textContent = "";
    this.pager.hidden = pages <= 1;
    if (pages <= 1) return;
    var self = this;
    function button(label, page, rel) {
      var b = el("button", "", label);
      b.type = "button";
      b.setAttribute("data-page", String(page));
      b.setAttribute("data-rel", rel);
      b.disabled = page < 1 || page > pages;
      self.pager.appendChild(b);
    }
    button("\u2039 Previous", state.page - 1, "prev");
    var first = (state.page - 1) * this.pageSize;
    this.pager.appendChild(el("span", "", (first + 1) + "\u2013" + Math.min(first + this.pageSize, total) +
      " of " + number(total) + " \u00b7 page " + state.page + " of " + pages));
    button("Next \u203a", state.page + 1, "next");
  };

  Table.prototype.renderTotals = function () {
    var foot = this.table.tFoot && this.table.tFoot.rows[0];
    if (!foot) return;
    var cells = Array.prototype.filter.call(foot.cells, function (c) { return c.classList.contains("num"); });
    var clients = this.clients;
    this.columns.filter(function (c) { return c.key === "metric"; }).forEach(function (col, i) {
      if (!cells[i]) return;
      cells[i].textContent = number(clients.reduce(function (sum, c) { return sum + metric(c, col.field); }, 0));
    });
  };

  Table.prototype.render = function () {
    if (!this.clients) return;
    var now = Date.now(), state = this.state, self = this;
    var rows = this.visible(now);
    var pages = Math.max(1, Math.ceil(rows.length / this.pageSize));
    state.page = Math.min(Math.max(state.page, 1), pages);
    var first = (state.page - 1) * this.pageSize;
    var body = el("tbody");
    var shown = rows.slice(first, first + this.pageSize);
    shown.forEach(function (c) { body.appendChild(self.row(c, now)); });
    if (!rows.length) {
      var empty = el("tr", "empty-row");
      var cell = el("td", "", this.clients.length ? "No client matches." : "No client has reported yet.");
      cell.colSpan = this.columns.length;
      empty.appendChild(cell);
      body.appendChild(empty);
    }
    this.table.replaceChild(body, this.body);
    this.body = body;
    this.columns.forEach(function (col) {
      if (col.id === state.sort) col.th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      else col.th.removeAttribute("aria-sort");
    });
    this.renderDetails(shown);
    this.renderChips();
    this.renderPager(rows.length, pages);
    this.renderTotals();
    this.shown.textContent = rows.length === this.clients.length
      ? number(rows.length) + " clients" : number(rows.length) + " of " + number(this.clients.length) + " clients";
    this.remember();
  };

  // -- the details under the table: the clients of its page with an error or notes, in its order

  Table.prototype.renderDetails = function (shown) {
    if (!this.detailsList) return;
    var self = this, opened = 0, nodes = [];
    shown.forEach(function (client) {
      if (!client.details) return;
      var node = self.detailNodes[client.client_id], sig = signature(client);
      if (!node) {  // the first three with an error open, as the server renders them
        node = el("details", "client-details");
        node.id = "details-" + client.client_id;
        node.appendChild(el("summary"));
        node.open = !!errorOf(client) && opened < 3;
        node.jmSig = sig;
        node.jmStale = true;
        self.detailNodes[client.client_id] = node;
      } else if (node.jmSig === undefined) {
        node.jmSig = sig;  // the server filled it with what this JSON says
      } else if (node.jmSig !== sig) {
        node.jmSig = sig;
        node.jmStale = true;
      }
      if (node.open) opened += 1;
      self.summarize(node, client);
      if (node.open && node.jmStale) self.loadDetails(node, client.client_id);
      nodes.push(node);
    });
    this.detailsList.replaceChildren.apply(this.detailsList, nodes);
    this.detailsSection.hidden = !nodes.length;
  };

  Table.prototype.summarize = function (node, client) {
    var summary = node.querySelector("summary");
    summary.textContent = "";
    summary.appendChild(el("span", "mono", client.client_id));
    summary.appendChild(document.createTextNode(" "));
    summary.appendChild(el("span", "badge badge-" + (CSS[client.status] || "running"), client.status));
  };

  function fillDetails(node, parts) {  // parts: [heading, class, text], below the summary
    Array.prototype.slice.call(node.children, 1).forEach(function (child) { child.remove(); });
    parts.forEach(function (part) {
      if (part[0]) node.appendChild(el("h3", "", part[0]));
      node.appendChild(el(part[0] ? "pre" : "p", part[1], part[2]));
    });
  }

  Table.prototype.loadDetails = function (node, clientId) {
    if (node.jmLoading) return;
    node.jmLoading = true;
    node.jmStale = false;
    if (node.children.length < 2) fillDetails(node, [["", "muted small", "Loading\u2026"]]);
    var url = this.detailsUrl.replace("__CLIENT__", encodeURIComponent(clientId));
    fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (data) {
        var client = data.client, parts = [];
        if (errorOf(client)) parts.push(["Error Details", "error", errorOf(client)]);
        if (client.notes) parts.push(["System Notes", "", client.notes]);
        if (client.progress_log) parts.push(["Progress Log", "log", client.progress_log]);
        fillDetails(node, parts);
      })
      .catch(function (exc) {
        node.jmStale = true;  // tried again when next opened
        fillDetails(node, [["", "muted small", "Could not load the details (" + exc.message + ")."]]);
      })
      .then(function () { node.jmLoading = false; });
  };

  Table.prototype.openedDetails = function (event) {  // a <details> the user opened: fill it
    var node = event.target;
    if (!node.open || !node.jmStale) return;
    this.loadDetails(node, node.id.slice(8));
  };

  Table.prototype.remember = function () {
    var params = new URLSearchParams(window.location.search), state = this.state;
    function put(name, value) { if (value) params.set(name, value); else params.delete(name); }
    put("sort", state.sort);
    put("dir", state.sort ? (state.dir > 0 ? "asc" : "desc") : "");
    put("status", state.status);
    put("q", state.q);
    put("page", state.page > 1 ? String(state.page) : "");
    var query = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (query ? "?" + query : "") + window.location.hash);
  };

  // -- live refresh ------------------------------------------------------------------------------

  var table = null;
  var etag = null;
  var failures = 0;

  function liveNode() { return document.querySelector("[data-live]"); }

  function interval(node) {
    var ms = node ? parseInt(node.getAttribute("data-refresh-ms") || "0", 10) : 0;
    return ms > 0 ? ms : 0;
  }

  function schedule(ms) {
    if (ms > 0) {
      root.setAttribute("data-refresh-state", failures ? "retrying" : "live");
      window.setTimeout(tick, ms);
    } else {
      root.setAttribute("data-refresh-state", "stopped");
    }
  }

  function getJSON(url) {
    var headers = { "Accept": "application/json" };
    if (etag) headers["If-None-Match"] = etag;
    return fetch(url, { headers: headers, cache: "no-store", credentials: "same-origin" }).then(function (response) {
      if (response.status === 304) return null;
      if (!response.ok) throw new Error("HTTP " + response.status);
      etag = response.headers.get("ETag");
      return response.json();
    });
  }

  function swap(node) {  // the server-rendered fragment replaces node; resolves to its refresh interval
    var url = node.getAttribute("data-fragment");
    return fetch(url, { headers: { "Accept": "text/html" }, cache: "no-store", credentials: "same-origin" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(node.id);
        var current = document.getElementById(node.id);
        if (!fresh || !current) return 0;
        fresh = document.importNode(fresh, true);
        current.replaceWith(fresh);
        var title = fresh.getAttribute("data-title");
        if (title) document.title = title;
        if (fresh.id === "jm-live" && table) table = null;  // a whole-page swap has no client table
        return interval(fresh);
      });
  }

  function touch(node) {
    Array.prototype.forEach.call(node.querySelectorAll(".jm-updated"), function (span) {
      span.textContent = clockText();
    });
  }

  // The JSON a poll showed said the run was still running but the summary fetched after it says
  // finished: poll once more, so the table shows the finished clients too.
  var catchUp = 0;

  function stillRunning(data) {
    return !!(data && ((data.job && data.job.status === "Running") ||
      (data.runs && data.runs.some(function (r) { return r.status === "Running"; }))));
  }

  function tick() {
    var node = liveNode();
    var ms = interval(node) || catchUp;
    catchUp = 0;
    if (!ms) { schedule(0); return; }
    if (document.hidden) { schedule(ms); return; }
    var poll = node.getAttribute("data-poll");
    var work = poll
      ? getJSON(poll).then(function (data) {
        if (data === null) { touch(node); return ms; }  // 304: nothing changed
        if (table && data.clients) table.update(data);
        return swap(node).then(function (next) {
          if (!next && stillRunning(data)) catchUp = ms;
          return next || catchUp;
        });
      })
      : swap(node);
    work.then(function (next) {
      failures = 0;
      schedule(next);
    }).catch(function () {
      etag = null;  // refetch in full next time: a change may have been seen but not shown
      failures += 1;
      schedule(Math.min(ms * Math.pow(2, failures), 30000));
    });
  }

  function start() {
    var section = document.getElementById("jm-clients");
    var node = liveNode();
    if (section && section.querySelector("table.clients")) {
      table = new Table(section);
      var api = node && node.getAttribute("data-poll");
      if (api) {
        getJSON(api).then(function (data) { if (data) table.update(data); }).catch(function () {
          root.setAttribute("data-table-state", "server");  // the server-rendered page stays
        }).then(function () { schedule(interval(liveNode())); });
        return;
      }
    }
    schedule(interval(node));
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
