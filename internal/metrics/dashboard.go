package metrics

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Dashboard is the Grafana dashboard of badge (dashboard.json beside this
// file): import it in Grafana, with a Prometheus data source that scrapes
// badge server's --metrics-listen or its public listener's /metrics.
//
//go:embed dashboard.json
var Dashboard []byte

// DashboardQueries returns every PromQL query of a Grafana dashboard: the
// expr of each panel target and the query of each templating variable.
func DashboardQueries(dashboard []byte) ([]string, error) {
	var doc any
	if err := json.Unmarshal(dashboard, &doc); err != nil {
		return nil, fmt.Errorf("metrics: dashboard is not JSON: %w", err)
	}
	var out []string
	var walk func(v any, key string)
	walk = func(v any, key string) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				walk(x, k)
			}
		case []any:
			for _, x := range v {
				walk(x, key)
			}
		case string:
			if key == "expr" || (key == "query" && strings.Contains(v, "(")) {
				out = append(out, v)
			}
		}
	}
	walk(doc, "")
	slices.Sort(out)
	return slices.Compact(out), nil
}

var (
	promStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promMatchers  = regexp.MustCompile(`\{[^}]*\}`)
	promRanges    = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promKeywords  = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true, "inf": true, "nan": true}
	promTemplated = regexp.MustCompile(`\$\{?[A-Za-z_]+\}?`)
)

// QueryMetrics returns the metric names a PromQL query reads: every
// identifier that is not a function, a keyword, a label name or a label
// value. It is a scanner for the queries of badge's dashboard, not a
// PromQL parser.
func QueryMetrics(query string) []string {
	q := promTemplated.ReplaceAllString(query, "")
	q = promStrings.ReplaceAllString(q, `""`)
	q = promMatchers.ReplaceAllString(q, " ")
	q = promRanges.ReplaceAllString(q, " ")
	q = promGrouping.ReplaceAllString(q, " ")
	// label_values(METRIC, LABEL): the second argument is a label.
	if i := strings.Index(q, "label_values("); i >= 0 {
		if j := strings.LastIndex(q, ","); j > i {
			q = q[:j] + ")"
		}
	}
	var out []string
	for _, m := range promIdent.FindAllStringSubmatchIndex(q, -1) {
		if m[2] >= 0 {
			continue // a function call
		}
		if m[0] > 0 && (q[m[0]-1] >= '0' && q[m[0]-1] <= '9' || q[m[0]-1] == '.') {
			continue // the exponent or suffix of a number: 1e9, 5m
		}
		id := q[m[0]:m[1]]
		if promKeywords[strings.ToLower(id)] {
			continue
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return slices.Compact(out)
}
