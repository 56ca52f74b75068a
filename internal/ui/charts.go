package ui

// Pictures drawn on the server as inline SVG (no script, no build step): errors over time and
// the fleet map. Every mark carries a word too (a legend with counts, a <title>, a list of the
// exceptions), so nothing relies on colour alone.

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"godwit.dev/godwit/internal/fault"
	"godwit.dev/godwit/internal/store"
	"godwit.dev/godwit/internal/wire"
)

// ---- errors over time ----

// chartSpan is a time window the errors chart can show.
type chartSpan struct {
	Key     string // the query value: hour or day
	Label   string
	Span    time.Duration
	Buckets int
	Tick    int // a time label every Tick buckets
	Layout  string
}

var chartSpans = []chartSpan{
	{"hour", "last hour", time.Hour, 12, 3, "15:04"},
	{"day", "last day", 24 * time.Hour, 24, 4, "15:04"},
}

// Geometry of the chart, in viewBox units.
const (
	chartW, chartH  = 600.0, 170.0
	chartLeft       = 34.0
	chartTop        = 8.0
	chartBottom     = 22.0
	chartSeriesMax  = 6 // series drawn apart; the rest is "other"
	chartOtherLabel = "other types"
)

type chartRect struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

type chartTick struct {
	X     float64
	Label string
}

type chartSeries struct {
	Severity, Type string
	Class          string
	Count          int
	Badge          badge
}

// errorChart is the errors-over-time picture: stacked bars per time bucket, one series per
// (severity, type).
type errorChart struct {
	Span       chartSpan
	Spans      []chartSpan
	Path       string // where the span links go
	Series     []chartSeries
	Rects      []chartRect
	Ticks      []chartTick
	YTicks     []chartTick
	Total, Max int
	W, H       float64
	Error      string
}

func chartSpanOf(key string) chartSpan {
	for _, s := range chartSpans {
		if s.Key == key {
			return s
		}
	}
	return chartSpans[1]
}

// errorsChart counts warnings and errors (of one migration when migration is set) over the span
// the request asks for (?chart=hour|day; a day by default) and lays the chart out.
func (s *Server) errorsChart(ctx context.Context, r *http.Request, path, migration string) (*errorChart, error) {
	span := chartSpanOf(r.URL.Query().Get("chart"))
	now := s.now().UTC()
	width := span.Span / time.Duration(span.Buckets)
	until := now.Truncate(width).Add(width) // the current bucket is the last
	since := until.Add(-span.Span)
	counts, err := s.cfg.Store.ProblemCounts(ctx, store.ProblemQuery{Since: since, Until: until, Buckets: span.Buckets, Migration: migration})
	if err != nil {
		return nil, err
	}
	return layoutChart(span, path, since, width, counts), nil
}

func layoutChart(span chartSpan, path string, since time.Time, width time.Duration, counts []store.ProblemCount) *errorChart {
	c := &errorChart{Span: span, Spans: chartSpans, Path: path, W: chartW, H: chartH}
	// Series: by total, errors before warnings; the smallest beyond chartSeriesMax are merged.
	totals := map[[2]string]int{}
	for _, p := range counts {
		totals[[2]string{p.Severity, p.Type}] += p.Count
		c.Total += p.Count
	}
	keys := make([][2]string, 0, len(totals))
	for k := range totals {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int {
		if a[0] != b[0] {
			return cmp.Compare(wire.SeverityRank(b[0]), wire.SeverityRank(a[0]))
		}
		if totals[a] != totals[b] {
			return totals[b] - totals[a]
		}
		return strings.Compare(a[1], b[1])
	})
	index := map[[2]string]int{}
	for _, k := range keys {
		if len(c.Series) == chartSeriesMax {
			if c.Series[len(c.Series)-1].Type != chartOtherLabel {
				c.Series = append(c.Series, chartSeries{Severity: wire.SeverityWarning, Type: chartOtherLabel, Class: "ch-other", Badge: severity(wire.SeverityWarning)})
			}
			index[k] = len(c.Series) - 1
			c.Series[len(c.Series)-1].Count += totals[k]
			continue
		}
		n := 0
		for _, s := range c.Series {
			if s.Severity == k[0] {
				n++
			}
		}
		index[k] = len(c.Series)
		c.Series = append(c.Series, chartSeries{Severity: k[0], Type: k[1], Count: totals[k], Badge: severity(k[0]),
			Class: fmt.Sprintf("ch-%s-%d", k[0], min(n, 2))})
	}
	// Stacks per bucket, in series order from the bottom.
	stacks := make([][]int, span.Buckets)
	for i := range stacks {
		stacks[i] = make([]int, len(c.Series))
	}
	for _, p := range counts {
		if p.Bucket >= 0 && p.Bucket < span.Buckets {
			stacks[p.Bucket][index[[2]string{p.Severity, p.Type}]] += p.Count
		}
	}
	for _, st := range stacks {
		sum := 0
		for _, n := range st {
			sum += n
		}
		c.Max = max(c.Max, sum)
	}
	top := niceMax(c.Max)
	plotW, plotH := chartW-chartLeft-4, chartH-chartTop-chartBottom
	bw := plotW / float64(span.Buckets)
	for b, st := range stacks {
		y := chartTop + plotH
		from := since.Add(time.Duration(b) * width)
		for i, n := range st {
			if n == 0 {
				continue
			}
			h := float64(n) / float64(top) * plotH
			y -= h
			s := c.Series[i]
			c.Rects = append(c.Rects, chartRect{X: chartLeft + float64(b)*bw + 1, Y: y, W: bw - 2, H: h, Class: s.Class,
				Title: fmt.Sprintf("%s–%s UTC: %d %s (%s)", from.Format(span.Layout), from.Add(width).Format(span.Layout), n, s.Type, s.Severity)})
		}
		if b%span.Tick == 0 {
			c.Ticks = append(c.Ticks, chartTick{X: chartLeft + float64(b)*bw, Label: from.Format(span.Layout)})
		}
	}
	for _, v := range []int{0, top / 2, top} {
		c.YTicks = append(c.YTicks, chartTick{X: chartTop + plotH - float64(v)/float64(top)*plotH, Label: fmt.Sprint(v)})
	}
	return c
}

// niceMax rounds a maximum up to 2, 4, 10, 20, 40, 100, …
func niceMax(n int) int {
	top := 2
	for top < n {
		switch {
		case top%10 == 0 && (top/10)%2 == 1:
			top *= 2
		case top%4 == 0:
			top = top / 4 * 10
		default:
			top *= 2
		}
	}
	return top
}

// ---- fleet map ----

// mapColumns is how many agents a row of the fleet map holds.
const mapColumns = 100

// Cell geometry of the fleet map, in viewBox units (whole numbers: paths are written as integers).
const (
	mapCell = 6
	mapGap  = 1
)

// appendSquare appends the path of one cell at (x, y): "M<x> <y>h6v6h-6z". Ten thousand of them
// make a fleet map, so they are appended, not formatted.
func appendSquare(b []byte, x, y int) []byte {
	b = append(b, 'M')
	b = strconv.AppendInt(b, int64(x), 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(y), 10)
	b = append(b, 'h')
	b = strconv.AppendInt(b, mapCell, 10)
	b = append(b, 'v')
	b = strconv.AppendInt(b, mapCell, 10)
	b = append(b, "h-"...)
	b = strconv.AppendInt(b, mapCell, 10)
	return append(b, 'z')
}

// mapState is how an agent is drawn: the worst that applies.
func mapState(a store.AgentState, attention bool) string {
	switch {
	case attention:
		return "attention"
	case a.Revoked:
		return "revoked"
	case a.Status == wire.StatusOnline:
		return "online"
	case a.Status == wire.StatusOffline:
		return "offline"
	}
	return "unknown"
}

// mapStates lists the map's states, the ones worth a look first.
var mapStates = []string{"attention", "offline", "unknown", "online", "revoked"}

type mapPath struct {
	State string
	D     string
	Count int
}

type mapGroup struct {
	Value  string // the label's value ("" for agents without the label)
	Total  int
	Counts map[string]int
	Paths  []mapPath
	Cross  string // a cross over every agent that needs attention
	Rows   int
	H      float64
	// Exceptions names the first agents not online (and every one needing attention).
	Exceptions []mapException
	More       int
}

type mapException struct {
	ID, Name, State string
}

type fleetMapData struct {
	By     string   // the label grouped by
	Keys   []string // label keys present in the fleet
	Groups []mapGroup
	Total  int
	Counts map[string]int
	States []string
	W      float64
}

const exceptionsShown = 30

// fleetMap groups every agent by the value of one label and draws each group as a dense grid,
// agents in name order (a cell keeps its place as its agent's state changes), one path per
// state.
func fleetMap(agents []store.AgentState, broken map[string][]string, by string) *fleetMapData {
	d := &fleetMapData{By: by, Counts: map[string]int{}, States: mapStates, W: mapColumns * (mapCell + mapGap)}
	keys := map[string]int{}
	groups := map[string]*mapGroup{}
	var order []string
	for _, a := range agents {
		for k := range a.Labels {
			keys[k]++
		}
	}
	for k := range keys {
		d.Keys = append(d.Keys, k)
	}
	slices.Sort(d.Keys)
	if d.By == "" && len(d.Keys) > 0 {
		// The key most agents have (the first in order on a tie) groups best by default.
		d.By = slices.MaxFunc(d.Keys, func(a, b string) int {
			if keys[a] != keys[b] {
				return keys[a] - keys[b]
			}
			return strings.Compare(b, a)
		})
	}
	paths := map[string]map[string]*[]byte{}
	cross := map[string]string{}
	for _, a := range agents {
		v := a.Labels[d.By]
		g := groups[v]
		if g == nil {
			g = &mapGroup{Value: v, Counts: map[string]int{}}
			groups[v] = g
			order = append(order, v)
			paths[v] = map[string]*[]byte{}
		}
		st := mapState(a, len(broken[a.ID]) > 0)
		i := g.Total
		g.Total++
		g.Counts[st]++
		d.Counts[st]++
		d.Total++
		x, y := (i%mapColumns)*(mapCell+mapGap), (i/mapColumns)*(mapCell+mapGap)
		pb := paths[v][st]
		if pb == nil {
			pb = &[]byte{}
			paths[v][st] = pb
		}
		*pb = appendSquare(*pb, x, y)
		if st == "attention" {
			cross[v] += fmt.Sprintf("M%d %dl%d %dm0 -%dl-%d %d", x+1, y+1, mapCell-2, mapCell-2, mapCell-2, mapCell-2, mapCell-2)
		}
		if st != "online" && st != "revoked" {
			if len(g.Exceptions) < exceptionsShown || st == "attention" {
				g.Exceptions = append(g.Exceptions, mapException{a.ID, a.Name, st})
			} else {
				g.More++
			}
		}
	}
	slices.Sort(order)
	for _, v := range order {
		g := groups[v]
		for _, st := range mapStates {
			if pb := paths[v][st]; pb != nil {
				g.Paths = append(g.Paths, mapPath{State: st, D: string(*pb), Count: g.Counts[st]})
			}
		}
		g.Cross = cross[v]
		g.Rows = (g.Total + mapColumns - 1) / mapColumns
		g.H = float64(g.Rows)*(mapCell+mapGap) - mapGap
		d.Groups = append(d.Groups, *g)
	}
	return d
}

func (s *Server) fleetMapPage(w http.ResponseWriter, r *http.Request, c *current) (*view, error) {
	ctx := r.Context()
	mark, err := s.mark(ctx, topicAgents)
	if err != nil {
		return nil, err
	}
	agents, err := s.cfg.Store.AgentStates(ctx, nil)
	if err != nil {
		return nil, err
	}
	broken, err := s.cfg.Store.RollbackFailures(ctx, nil)
	if err != nil {
		return nil, err
	}
	by := strings.TrimSpace(r.URL.Query().Get("by"))
	d := fleetMap(agents, broken, by)
	v := &view{Template: "fleet", Title: "Fleet map", Nav: "fleet", Live: topicAgents, Mark: mark, Data: d}
	if by != "" && !slices.Contains(d.Keys, by) {
		v.Error = message(fault.Invalid("by", "no agent has the label %q", by))
	}
	return v, nil
}
