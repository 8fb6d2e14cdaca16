package main

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/jsonout"
)

func runRevoke(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("revoke", "--id SPIFFE_ID [--block] [--reason TEXT] | --serial HEX [--reason TEXT]")
	id := fs.String("id", "", "revoke every unexpired certificate of this SPIFFE ID; its holders get fresh ones at once")
	serial := fs.String("serial", "", "revoke one certificate by serial number (hex)")
	block := fs.Bool("block", false, "with --id: also issue nothing more to the ID until `badge unblock`")
	reason := fs.String("reason", "", "why, for the audit trail and `badge revocations list`")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "id", "serial", "block", "reason"); err != nil {
		return err
	}
	switch {
	case *id == "" && *serial == "":
		return usagef("one of --id or --serial is required")
	case *id != "" && *serial != "":
		return usagef("--id and --serial exclude each other")
	case *serial != "" && *block:
		return usagef("--block goes with --id")
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	resp, err := c.Revoke(ctx, admin.RevokeRequest{SPIFFEID: *id, Serial: *serial, Reason: *reason, Block: *block})
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, revokedLine(resp))
	if *block {
		fmt.Fprintf(e.stdout, "%s is blocked until `badge unblock --id %s`\n", *id, *id)
	}
	return nil
}

func runUnblock(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("unblock", "--id SPIFFE_ID")
	id := fs.String("id", "", "the blocked SPIFFE ID")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "id"); err != nil {
		return err
	}
	if *id == "" {
		return usagef("--id is required")
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	if err := c.Unblock(ctx, *id); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s unblocked\n", *id)
	return nil
}

func runRevocationsList(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("revocations list", "[--json]")
	asJSON := fs.Bool("json", false, "print stable JSON")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "json"); err != nil {
		return err
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	revs, err := c.Revocations(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return jsonout.Write(e.stdout, revs)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SPIFFE ID\tREVOKED AT\tBLOCKED\tREASON")
	for _, r := range revs.IDs {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", r.SPIFFEID, r.RevokedAt.Format(time.RFC3339), r.Blocked, orDash(r.Reason))
	}
	fmt.Fprintln(tw, "\nSERIAL\tSPIFFE ID\tEXPIRES\tREASON")
	for _, r := range revs.Serials {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Serial, r.SPIFFEID, r.NotAfter.Format(time.RFC3339), orDash(r.Reason))
	}
	return tw.Flush()
}

// revokedLine says what a revocation changed: "2 certificates revoked",
// "0 certificates revoked (1 already revoked)".
func revokedLine(r admin.RevokeResponse) string {
	noun := "certificates"
	if r.Revoked == 1 {
		noun = "certificate"
	}
	line := fmt.Sprintf("%d %s revoked", r.Revoked, noun)
	if r.AlreadyRevoked > 0 {
		line += fmt.Sprintf(" (%d already revoked)", r.AlreadyRevoked)
	}
	return line
}
