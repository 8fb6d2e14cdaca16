package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/jsonout"
)

// runList is an admin command that lists records: `badge NAME [--json]`.
// list fetches them; with --json they print as a stable JSON array (empty,
// never null), else as a table whose columns header names and row fills,
// one record a line.
func runList[T any](ctx context.Context, e *env, args []string, name string,
	list func(*admin.Client, context.Context) ([]T, error), header string, row func(io.Writer, T)) error {
	fs := e.flagSet(name, "[--json]")
	asJSON := fs.Bool("json", false, "print a stable JSON array")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "json"); err != nil {
		return err
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	recs, err := list(c, ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if recs == nil {
			recs = []T{}
		}
		return jsonout.Write(e.stdout, recs)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, r := range recs {
		row(tw, r)
	}
	return tw.Flush()
}
