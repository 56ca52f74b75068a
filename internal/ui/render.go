package ui

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"godwit.dev/godwit/internal/api"
	"godwit.dev/godwit/internal/errline"
	"godwit.dev/godwit/internal/human"
	"godwit.dev/godwit/internal/manifest"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// view is what a page handler hands to the layout.
type view struct {
	Template string // page template name (templates/<name>.html)
	Title    string
	Nav      string // the navigation entry to highlight
	// Live is the page's live topic (see live.go); Mark what the topic's mark was when the
	// page's data was read. Empty: the page does not update itself.
	Live, Mark string
	// Flash is a success message, Notice something that did not happen but is no failure (a
	// lock-skipped run), Error a failure to show above the content.
	Flash, Notice, Error string
	Data                 any
}

// layout is the data every page template gets.
type layout struct {
	*view
	Session *current
	CSRF    string
	Version string
}

type page struct{ t *template.Template }

var funcs = template.FuncMap{
	"iconSVG":     iconSVG,
	"ts":          formatTime,
	"ago":         func(t time.Time) string { return human.Ago(t, time.Now()) },
	"sev":         severity,
	"state":       stateInfo,
	"status":      statusInfo,
	"query":       query,
	"bytes":       humanBytes,
	"pretty":      prettyJSON,
	"labels":      sortedLabels,
	"add":         func(a, b int) int { return a + b },
	"pct":         func(n, total int) float64 { return pct(n, total) },
	"firstLine":   firstLine,
	"headline":    errline.Headline,
	"sweepOf":     sweepOf,
	"dict":        dict,
	"list":        func(s ...string) []string { return s },
	"name":        nameOr,
	"agentStatus": func(a wire.Agent) badge { return statusInfo(a.Status, a.RevokedAt != nil) },
	// keys lists a set's members in severity order, then the rest sorted.
	"keys": func(m map[string]bool) []string {
		var out []string
		for _, k := range []string{wire.SeverityError, wire.SeverityWarning, wire.SeverityInfo} {
			if m[k] {
				out = append(out, k)
			}
		}
		return out
	},
	"agentParam": func(h *historyData) string {
		if h.FixedAgent {
			return ""
		}
		return h.Agent
	},
	"runStatus":      runBadge,
	"suspendedBadge": func() badge { return badge{"muted", "icon-paused", "suspended"} },
	"inFlight":       inFlight,
	"until":          until,
	"inZone":         inZone,
	"join":           strings.Join,
	"lower":          strings.ToLower,
	"millis":         func(v int64) string { return manifest.FormatDuration(ms(v)) },
	"duration":       manifest.FormatDuration,
	"derefInt": func(p *int) string {
		if p == nil {
			return ""
		}
		return fmt.Sprint(*p)
	},
}

// iconTemplate is templates/icons.html: the template "icon-svg" draws an icon by its name.
var iconTemplate = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("icons").ParseFS(templateFS, "templates/icons.html"))
})

// iconCache holds the SVG of every icon the pages name, rendered once: a page inserts an icon
// with one lookup instead of walking the template's chain of comparisons (a migration page draws
// about a thousand icons). The bytes are those the template writes.
var iconCache = sync.OnceValue(func() map[string]template.HTML {
	out := map[string]template.HTML{}
	for _, name := range []string{"icon-error", "icon-warning", "icon-info", "icon-ok", "icon-online", "icon-offline", "icon-unknown",
		"icon-revoked", "icon-running", "icon-rollback", "icon-paused", "icon-pending", "icon-logo"} {
		h, err := renderIcon(name)
		if err != nil {
			panic(err)
		}
		out[name] = h
	}
	return out
})

func renderIcon(name string) (template.HTML, error) {
	var b strings.Builder
	if err := iconTemplate().ExecuteTemplate(&b, "icon-svg", name); err != nil {
		return "", err
	}
	return template.HTML(b.String()), nil
}

// iconSVG is the SVG of the icon name (an empty one for a name no icon has, as the template).
func iconSVG(name string) (template.HTML, error) {
	if h, ok := iconCache()[name]; ok {
		return h, nil
	}
	return renderIcon(name)
}

// parsePages parses every page template with the layout and the shared partials.
func parsePages() map[string]*page {
	names, err := templateFS.ReadDir("templates")
	if err != nil {
		panic(err)
	}
	out := map[string]*page{}
	for _, e := range names {
		name := strings.TrimSuffix(e.Name(), ".html")
		if name == "layout" || name == "partials" || name == "icons" {
			continue
		}
		t := template.Must(template.New(name).Funcs(funcs).ParseFS(templateFS,
			"templates/layout.html", "templates/partials.html", "templates/"+e.Name()))
		out[name] = &page{t: t}
	}
	return out
}

// render executes a page into a buffer first, so a template error never leaves half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, c *current, code int, name string, data any) {
	v, ok := data.(*view)
	if !ok {
		v = &view{Template: name, Data: data}
	}
	if name == "" {
		name = v.Template
	}
	p := s.pages[name]
	if p == nil {
		s.log.Error("ui: no such template", "template", name)
		http.Error(w, "internal error; see the hub log", http.StatusInternalServerError)
		return
	}
	l := layout{view: v, Session: c, Version: s.cfg.Version}
	if c != nil {
		l.CSRF = c.CSRF
	}
	var buf bytes.Buffer
	if err := p.t.ExecuteTemplate(&buf, "layout", l); err != nil {
		s.log.Error("ui: render failed", "template", name, "path", r.URL.Path, "err", err)
		http.Error(w, "internal error; see the hub log", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// renderError shows a message in the layout (c may be nil when nobody is logged in).
func (s *Server) renderError(w http.ResponseWriter, r *http.Request, c *current, code int, msg string) {
	s.render(w, r, c, code, "error", &view{Template: "error", Title: http.StatusText(code), Error: msg})
}

// statusOf maps domain errors to HTTP status codes: the API's one mapping, shared.
func statusOf(err error) int { return api.StatusOf(err) }

// message is what an operator is shown for err: domain errors say what is wrong, anything else
// stays in the hub log.
func message(err error) string {
	code := statusOf(err)
	if code == http.StatusInternalServerError {
		return "Something went wrong on the hub; the details are in the hub log."
	}
	msg := err.Error()
	// Wrapped sentinels leave their code at the end ("…: conflict"); it says nothing to a person.
	msg = strings.TrimSuffix(msg, ": "+fault.Code(err))
	if msg == "" {
		return http.StatusText(code)
	}
	if code == http.StatusNotFound && !strings.Contains(msg, "not found") {
		msg += ": not found"
	}
	return strings.ToUpper(msg[:1]) + msg[1:]
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, c *current, err error) {
	code := statusOf(err)
	if code >= 500 {
		s.log.Error("ui: request failed", "path", r.URL.Path, "err", err)
	}
	s.renderError(w, r, c, code, message(err))
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// badge is how a severity, status or state is shown: an icon and a word, with a CSS class for
// colour. Colour is never the only signal.
type badge struct {
	Class string // CSS modifier
	Icon  string // name of an icon partial
	Label string
}

func severity(s string) badge {
	switch s {
	case wire.SeverityError:
		return badge{"error", "icon-error", "Error"}
	case wire.SeverityWarning:
		return badge{"warning", "icon-warning", "Warning"}
	default:
		return badge{"info", "icon-info", "Info"}
	}
}

func statusInfo(status string, revoked bool) badge {
	if revoked {
		return badge{"revoked", "icon-revoked", "revoked"}
	}
	switch status {
	case wire.StatusOnline:
		return badge{"ok", "icon-online", "online"}
	case wire.StatusOffline:
		return badge{"error", "icon-offline", "offline"}
	default:
		return badge{"muted", "icon-unknown", "unknown"}
	}
}

// stateInfo styles migration and assignment states alike.
func stateInfo(s string) badge {
	label := strings.ReplaceAll(s, "_", " ")
	switch s {
	case "succeeded", "not_needed":
		return badge{"ok", "icon-ok", label}
	case "rolled_back":
		return badge{"rolledback", "icon-rollback", label}
	case "partially_succeeded":
		return badge{"warning", "icon-warning", label}
	case "failed", "rollback_failed", "timed_out":
		return badge{"error", "icon-error", label}
	case "running", "detecting", "applying", "verifying", "rolling_back":
		return badge{"active", "icon-running", label}
	case "paused", "agent_unreachable":
		return badge{"warning", "icon-paused", label}
	case "cancelled", "superseded":
		return badge{"muted", "icon-revoked", label}
	default: // pending
		return badge{"muted", "icon-pending", label}
	}
}

// query builds path?k=v&… from key/value pairs, leaving out empty values.
func query(path string, kv ...any) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		k := fmt.Sprint(kv[i])
		switch val := kv[i+1].(type) {
		case []string:
			for _, x := range val {
				if x != "" {
					v.Add(k, x)
				}
			}
		default:
			if s := fmt.Sprint(val); s != "" && s != "0" {
				v.Add(k, s)
			}
		}
	}
	if len(v) == 0 {
		return path
	}
	return path + "?" + v.Encode()
}

func humanBytes(n uint64) string {
	if n == 0 {
		return "—"
	}
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	f := float64(n)
	i := 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %s", f, units[i])
}

// prettyJSON indents JSON for reading; anything else is returned as it is.
func prettyJSON(s string) string {
	var buf bytes.Buffer
	if json.Valid([]byte(s)) && json.Indent(&buf, []byte(s), "", "  ") == nil {
		return buf.String()
	}
	return s
}

type label struct{ Key, Value string }

func sortedLabels(m map[string]string) []label {
	out := make([]label, 0, len(m))
	for k, v := range m {
		out = append(out, label{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func pct(n, total int) float64 {
	if total <= 0 {
		return 0
	}
	return float64(n) * 100 / float64(total)
}

// firstLine is the first non-empty line of s, cut to 160 characters.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			if r := []rune(l); len(r) > 160 {
				return string(r[:157]) + "…"
			}
			return l
		}
	}
	return ""
}

// dict passes several values to a partial: dict "k1" v1 "k2" v2.
func dict(kv ...any) (map[string]any, error) {
	if len(kv)%2 != 0 {
		return nil, errors.New("dict: odd number of arguments")
	}
	m := make(map[string]any, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		k, ok := kv[i].(string)
		if !ok {
			return nil, errors.New("dict: keys must be strings")
		}
		m[k] = kv[i+1]
	}
	return m, nil
}

// sweepRef names the sweep and run a sweep event is about.
type sweepRef struct{ Sweep, Run string }

// sweepOf reads the sweep and run of a sweep.* event (its data's extra is the run record); nil
// for other events.
func sweepOf(e store.StoredEvent) *sweepRef {
	if !strings.HasPrefix(e.Type, "sweep.") || len(e.Data.Extra) == 0 {
		return nil
	}
	var x struct {
		ID    string `json:"id"`
		Sweep string `json:"sweep"`
	}
	if json.Unmarshal(e.Data.Extra, &x) != nil || !validName(x.Sweep) {
		return nil
	}
	if !lockHolderRE.MatchString("run " + x.ID + " of sweep ") {
		x.ID = ""
	}
	return &sweepRef{Sweep: x.Sweep, Run: x.ID}
}
