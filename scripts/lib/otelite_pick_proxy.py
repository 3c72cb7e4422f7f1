"""A local proxy in front of otelite's UI that opens it on one trace.

otelite's UI has no address for one trace (its routes are #traces, #logs, ...), so this proxy
adds one script to its page that fills the Trace ID filter and selects the trace named by the
page's `?trace=<id>` query (or, failing that, the trace given on the command line), as a
user's click in the list would. Everything else is passed through unchanged.

    python3 otelite_pick_proxy.py <listen port> <otelite UI port> [<default trace id>]
"""

import http.server
import sys
import urllib.request

port, upstream = int(sys.argv[1]), f"http://127.0.0.1:{sys.argv[2]}"
default_trace = sys.argv[3] if len(sys.argv) > 3 else ""

# The time range, attribute and tips bars are hidden so that more of the span tree fits.
PICK = """<style>
.time-range-bar, .attr-filter-bar, .tips-panel, .pagination, footer { display: none !important; }
</style>
<script>
(function pick() {
  const app = window.app;
  if (!app || !app.views || !app.views.traces) return setTimeout(pick, 100);
  const trace = new URLSearchParams(window.location.search).get('trace') || '%s';
  app.navigateToTrace(trace);
  app.views.traces.selectTrace(trace);
  // With `?fold=1`, each command's publish span is folded (its worker's spans counted in
  // its badge), except those whose name has `?open=<word>`: the saga's shape fits one screen.
  const query = new URLSearchParams(window.location.search);
  if (!query.get('fold')) return;
  const open = query.get('open');
  (function fold(tries) {
    const rows = document.querySelectorAll('.span-row');
    if (rows.length === 0) return tries > 0 && setTimeout(() => fold(tries - 1), 100);
    rows.forEach(row => {
      const name = row.querySelector('.span-name')?.getAttribute('title') || '';
      const toggle = row.querySelector('.span-toggle[data-toggle-id]');
      if (toggle && name.startsWith('publish checkout.cmd.') && !(open && name.includes(open))) {
        toggle.click();
      }
    });
  })(100);
})();
</script></body>"""


class Proxy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = self.path if not self.path.startswith("/?") else "/"
        with urllib.request.urlopen(upstream + path) as r:
            body, kind = r.read(), r.headers.get("Content-Type", "")
        if kind.startswith("text/html"):
            body = body.replace(b"</body>", (PICK % default_trace).encode(), 1)
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Proxy).serve_forever()
