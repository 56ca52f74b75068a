// Package monitoring holds the Prometheus alert rules and the Grafana dashboard for Godwit hubs;
// this test holds them to what a real hub exports.
package monitoring

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"godwit.dev/godwit/internal/hub/hubtest"
	"godwit.dev/godwit/internal/wire"
)

const (
	rulesFile     = "godwit-alerts.yaml"
	dashboardFile = "godwit-dashboard.json"
)

// notWiredYet lists metrics the rules and the dashboard use that belong to a component not yet
// wired into the hub. The test fails when one of them IS exported, so the list is emptied as
// they arrive and cannot go stale; until then the rules using them load but stay silent.
var notWiredYet = map[string]bool{}

// madeByPrometheus are series Prometheus itself records for every scrape target.
var madeByPrometheus = map[string]bool{"up": true}

// targetLabels are attached by Prometheus to every scraped series; histogram buckets add le.
var targetLabels = map[string]bool{"job": true, "instance": true}

var promql = parser.NewParser(parser.Options{})

// use is one metric selector in the rules or the dashboard.
type use struct {
	metric string
	labels []string // label names matched on
	where  string   // alert or panel
}

// selectors returns every vector selector of a PromQL expression.
func selectors(expr, where string) ([]use, error) {
	ast, err := promql.ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("%s: %q: %w", where, expr, err)
	}
	var out []use
	parser.Inspect(ast, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		u := use{metric: vs.Name, where: where}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				u.metric = m.Value
				continue
			}
			u.labels = append(u.labels, m.Name)
		}
		out = append(out, u)
		return nil
	})
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %q selects no metric", where, expr)
	}
	return out, nil
}

// ruleUses parses the rules file with Prometheus's own rule parser and returns its selectors.
func ruleUses(t *testing.T) []use {
	t.Helper()
	groups, errs := rulefmt.ParseFile(rulesFile, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err) // names the file, line, group and rule
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	var uses []use
	alerts := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				t.Errorf("%s: group %s: a recording rule (%s); only alerts are expected", rulesFile, g.Name, r.Record)
				continue
			}
			if alerts[r.Alert] {
				t.Errorf("%s: alert %s defined twice", rulesFile, r.Alert)
			}
			alerts[r.Alert] = true
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: %s: severity %q, want critical or warning", rulesFile, r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: %s: needs a summary and a description", rulesFile, r.Alert)
			}
			u, err := selectors(r.Expr, "alert "+r.Alert)
			if err != nil {
				t.Error(err)
			}
			uses = append(uses, u...)
		}
	}
	for _, want := range []string{"GodwitIngestLag", "GodwitDeadLettersGrowing", "GodwitAgentsOffline", "GodwitMigrationPausedByFailureBudget",
		"GodwitLeaderChanges", "GodwitLeaseRenewFailures", "GodwitSweepLockSkippedRepeatedly"} {
		if !alerts[want] {
			t.Errorf("%s: no alert %s", rulesFile, want)
		}
	}
	return uses
}

// panel is what the test reads of a Grafana panel.
type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource json.RawMessage `json:"datasource"`
	GridPos    *struct{ H, W, X, Y int }
	Targets    []struct {
		RefID      string          `json:"refId"`
		Expr       string          `json:"expr"`
		Datasource json.RawMessage `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

var labelValues = regexp.MustCompile(`^label_values\((.+),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)

// grafanaVars replaces Grafana's interval variables, which are not PromQL, by durations.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

// dashboardUses reads the dashboard and returns the selectors of its panels and variables.
func dashboardUses(t *testing.T) []use {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID           string  `json:"uid"`
		Title         string  `json:"title"`
		SchemaVersion int     `json:"schemaVersion"`
		Panels        []panel `json:"panels"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("%s: uid %q, title %q, schemaVersion %d", dashboardFile, d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]bool{}
	var uses []use
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		q := v.Query
		if m, ok := q.(map[string]any); ok {
			q = m["query"]
		}
		s, _ := q.(string)
		m := labelValues.FindStringSubmatch(s)
		if m == nil {
			t.Errorf("%s: variable %s: query %q is not label_values(selector, label)", dashboardFile, v.Name, s)
			continue
		}
		u, err := selectors(m[1], "variable "+v.Name)
		if err != nil {
			t.Error(err)
		}
		uses = append(uses, u...)
	}
	if !vars["datasource"] {
		t.Errorf("%s: no datasource variable: the dashboard must not name a data source of one installation", dashboardFile)
	}
	ids := map[int]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %q", p.Title)
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("%s: %s: id %d is missing or also used by %s", dashboardFile, where, p.ID, prev)
			}
			ids[p.ID] = where
			if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
				t.Errorf("%s: %s: no gridPos", dashboardFile, where)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if !strings.Contains(string(p.Datasource), "${datasource}") || len(p.Targets) == 0 {
				t.Errorf("%s: %s: needs the ${datasource} variable and at least one target", dashboardFile, where)
			}
			for _, tg := range p.Targets {
				if tg.RefID == "" || !strings.Contains(string(tg.Datasource), "${datasource}") {
					t.Errorf("%s: %s: target %q needs a refId and the ${datasource} variable", dashboardFile, where, tg.Expr)
				}
				u, err := selectors(grafanaVars.Replace(tg.Expr), where)
				if err != nil {
					t.Error(err)
				}
				uses = append(uses, u...)
			}
		}
	}
	walk(d.Panels)
	return uses
}

// exported returns the series names a scrape offers (histograms as _bucket, _sum and _count)
// with the label names seen on each.
func exported(mfs map[string]*dto.MetricFamily) map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for name, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		names := []string{name}
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			names = []string{name + "_bucket", name + "_sum", name + "_count"}
		case dto.MetricType_SUMMARY:
			names = append(names, name+"_sum", name+"_count")
		}
		for _, n := range names {
			l := map[string]bool{}
			for k := range labels {
				l[k] = true
			}
			if strings.HasSuffix(n, "_bucket") {
				l["le"] = true
			}
			out[n] = l
		}
	}
	return out
}

const lockSweep = `apiVersion: godwit.dev/v1
kind: Sweep
metadata: {name: slow}
spec:
  schedule: "0 3 * * *"
  maxSeconds: 60
  selector: {matchLabels: {role: web}}
  check: {command: "sleep 3"}
`

// Every metric the alert rules and the dashboard use is one a real hub exports (with the labels
// they match on), after the hub has done what makes each series appear: a sweep run on an agent,
// a firing skipped on its lock, controller passes, API requests.
func TestRulesAndDashboardUseExportedMetrics(t *testing.T) {
	uses := append(ruleUses(t), dashboardUses(t)...)

	f := hubtest.Start(t, hubtest.Options{Agents: []hubtest.Agent{{Name: "web-1", Labels: []string{"role=web"}}}})
	f.Must(200, "POST", "/api/v1/sweeps", "application/yaml", lockSweep, nil)
	var first, second wire.SweepRun
	f.Must(200, "POST", "/api/v1/sweeps/slow/runs", "application/json", `{}`, &first)
	f.Must(200, "POST", "/api/v1/sweeps/slow/runs", "application/json", `{}`, &second)
	if first.LockSkipped || !second.LockSkipped {
		t.Fatalf("two triggers 3s apart at most: lock_skipped %v then %v, want false then true", first.LockSkipped, second.LockSkipped)
	}
	f.Eventually("the sweep run finished", func() error {
		var r wire.SweepRunDetail
		f.Must(200, "GET", "/api/v1/sweeps/slow/runs/"+first.ID, "", "", &r)
		if !r.Final() {
			return fmt.Errorf("run %s", r.Status)
		}
		return nil
	})

	// Every name used must be exported (or be Prometheus's own, or wait for its component);
	// the controller's first pass may still be on its way, so missing names get a little time.
	var missing, early []string
	var have map[string]map[string]bool
	f.EventuallyWithin(15*time.Second, "every metric used to be exported", func() error {
		have = exported(f.Metrics())
		missing, early = nil, nil
		seen := map[string]bool{}
		for _, u := range uses {
			key := u.metric + " (" + u.where + ")"
			switch {
			case madeByPrometheus[u.metric] || seen[key]:
			case notWiredYet[u.metric]:
				if have[u.metric] != nil {
					early = append(early, u.metric)
				}
			case have[u.metric] == nil:
				missing = append(missing, key)
			}
			seen[key] = true
		}
		if len(missing) > 0 {
			sort.Strings(missing)
			return fmt.Errorf("not exported by the hub:\n  %s", strings.Join(missing, "\n  "))
		}
		return nil
	})
	for _, m := range early {
		t.Errorf("%s is exported now: remove it from notWiredYet", m)
	}
	usedNotWired := map[string]bool{}
	for _, u := range uses {
		if notWiredYet[u.metric] {
			usedNotWired[u.metric] = true
		}
		if exp := have[u.metric]; exp != nil {
			for _, l := range u.labels {
				if !exp[l] && !targetLabels[l] {
					t.Errorf("%s: %s{%s=...}: the hub exports no series of %s with a %s label", u.where, u.metric, l, u.metric, l)
				}
			}
		}
	}
	for m := range notWiredYet {
		if !usedNotWired[m] {
			t.Errorf("notWiredYet lists %s, which neither the rules nor the dashboard use", m)
		}
	}
}
