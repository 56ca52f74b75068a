package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"go.yaml.in/yaml/v3"
)

// printOutput writes v as JSON or YAML, or calls table for the default human format.
func printOutput(w io.Writer, format string, v any, table func(*tabwriter.Writer)) error {
	switch format {
	case "", "table", "wide":
		tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
		table(tw)
		return tw.Flush()
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		// Round-trip through JSON so YAML keys match the API's field names.
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var generic any
		if err := json.Unmarshal(b, &generic); err != nil {
			return err
		}
		out, err := yaml.Marshal(generic)
		if err != nil {
			return err
		}
		_, err = w.Write(out)
		return err
	default:
		return usageError{fmt.Errorf("-o/--output: %q is not one of table, json, yaml", format)}
	}
}

func labelString(m map[string]string) string {
	if len(m) == 0 {
		return "<none>"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}
