package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/jsonout"
	"github.com/badge-dev/badge/storage"
)

func runAuditList(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("audit list", "[--since TIME|DURATION] [--json]")
	sinceFlag := fs.String("since", "", "only records from this RFC 3339 `time` on (2026-11-29T15:00:00Z), or from this long ago (24h)")
	asJSON := fs.Bool("json", false, "print a stable JSON array of the records")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "since", "json"); err != nil {
		return err
	}
	since, err := parseSince(*sinceFlag, time.Now())
	if err != nil {
		return err
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	recs := []storage.AuditRecord{}
	var after uint64
	for {
		page, err := c.AuditList(ctx, since, after, admin.MaxAuditPage)
		if err != nil {
			return err
		}
		recs = append(recs, page.Records...)
		if !page.More || len(page.Records) == 0 {
			break
		}
		after = page.Records[len(page.Records)-1].Seq
	}
	if *asJSON {
		return jsonout.Write(e.stdout, recs)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tUID\tACTION\tTARGET\tDETAIL\tRESULT")
	for _, r := range recs {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Seq, r.Time.UTC().Format(time.RFC3339), r.AdminUID, r.Action,
			orDash(oneLine(r.Target)), orDash(oneLine(r.Detail)), oneLine(r.Result))
	}
	return tw.Flush()
}

// parseSince reads --since: an RFC 3339 time, or a duration meaning that
// long before now. Empty means no bound.
func parseSince(v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usagef("invalid --since %q: want an RFC 3339 time (2026-11-29T15:00:00Z) or a duration (24h)", v)
}

func runAuditVerify(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("audit verify", "[--json]")
	asJSON := fs.Bool("json", false, "print the report as JSON (the exit code still says whether it verified)")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "json"); err != nil {
		return err
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	rep, err := c.VerifyAudit(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := jsonout.Write(e.stdout, rep); err != nil {
			return err
		}
	}
	if !rep.OK {
		return errors.New("the audit trail does not verify: " + rep.Problem)
	}
	if !*asJSON {
		if rep.Records == 0 {
			fmt.Fprintln(e.stdout, "audit trail verified: no records yet")
			return nil
		}
		fmt.Fprintf(e.stdout, "audit trail verified: records %d to %d (%d), head %s signed at %s by %s\n",
			rep.FirstSeq, rep.LastSeq, rep.Records, shortHash(rep.Head), rep.SignedAt.UTC().Format(time.RFC3339), rep.SignedBy)
	}
	return nil
}

func shortHash(h string) string {
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}
