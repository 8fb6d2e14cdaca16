package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/jsonout"
	"github.com/badge-dev/badge/internal/socketpath"
)

// adminFlags adds --admin-socket to fs.
func adminFlags(fs *flag.FlagSet) *string {
	return fs.String("admin-socket", "", "admin API socket `path` (env BADGE_ADMIN_SOCKET; default "+
		socketpath.ClientDefaultHelp(socketpath.AdminName)+"); the server on it must run as root, as this user or as $BADGE_SERVER_UID")
}

// adminClient returns a client of the admin socket at path (the default
// when empty) that refuses a server run by an untrusted uid.
func (e *env) adminClient(path string) (*admin.Client, error) {
	p, err := socketpath.Admin(path, e.getenv)
	if err != nil {
		return nil, usageError{err}
	}
	uids, err := e.serverUIDs()
	if err != nil {
		return nil, err
	}
	return admin.NewClient(p, uids...), nil
}

func runEntryCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("entry create", "--id SPIFFE_ID --selector TYPE:KEY:VALUE [--selector ...] [--ttl DUR] [--dns NAME] [--node NAME ... | --node '*']")
	id := fs.String("id", "", "SPIFFE ID to issue, e.g. spiffe://example.org/payments")
	var sels, dns, nodes stringsFlag
	fs.Var(&sels, "selector", "TYPE:KEY:VALUE the caller must have; repeat for several (all must match)")
	ttl := durationVar(fs, "ttl", 0, "SVID lifetime for this entry (default: the server's --svid-ttl)")
	fs.Var(&dns, "dns", "DNS name to include in the SVID; repeatable")
	fs.Var(&nodes, "node", "serve the entry on the agent of this node `NAME`; repeatable, or '*' for every node (default: the server's own socket only)")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "id", "ttl", "node"); err != nil {
		return err
	}
	if *id == "" {
		return usagef("--id is required")
	}
	if len(sels) == 0 {
		return usagef("at least one --selector is required")
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	req := admin.EntryRequest{SPIFFEID: *id, Selectors: sels, DNSNames: dns, Nodes: nodes}
	if *ttl != 0 {
		req.TTL = ttl.String()
	}
	ent, err := c.CreateEntry(ctx, req)
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, ent.ID)
	return nil
}

func runEntryList(ctx context.Context, e *env, args []string) error {
	return runList(ctx, e, args, "entry list", (*admin.Client).ListEntries,
		"ID\tSPIFFE ID\tSELECTORS\tTTL\tDNS\tNODES", func(w io.Writer, en admin.Entry) {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", en.ID, en.SPIFFEID, strings.Join(en.Selectors, ","), orDash(en.TTL),
				orDash(strings.Join(en.DNSNames, ",")), orDash(strings.Join(en.Nodes, ",")))
		})
}

func runEntryShow(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("entry show", "ID")
	asJSON := fs.Bool("json", false, "print JSON")
	sock := adminFlags(fs)
	id, err := e.parseWithID(fs, args)
	if err != nil {
		return err
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	en, err := c.GetEntry(ctx, id)
	if err != nil {
		return err
	}
	if *asJSON {
		return jsonout.Write(e.stdout, en)
	}
	nodes := "- (the server's own socket)"
	if len(en.Nodes) > 0 {
		nodes = strings.Join(en.Nodes, ", ")
	}
	fmt.Fprintf(e.stdout, "ID:         %s\nSPIFFE ID:  %s\nSelectors:  %s\nTTL:        %s\nDNS names:  %s\nNodes:      %s\nCreated:    %s\nRevision:   %d\n",
		en.ID, en.SPIFFEID, strings.Join(en.Selectors, ", "), orDash(en.TTL), orDash(strings.Join(en.DNSNames, ", ")), nodes,
		en.CreatedAt.Format(time.RFC3339), en.Revision)
	return nil
}

func runEntryDelete(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("entry delete", "ID")
	sock := adminFlags(fs)
	id, err := e.parseWithID(fs, args)
	if err != nil {
		return err
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	if err := c.DeleteEntry(ctx, id); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "deleted %s\n", id)
	return nil
}

// parseWithID parses a command that takes one positional ID, before or after its flags.
func (e *env) parseWithID(fs *flag.FlagSet, args []string) (string, error) {
	return e.parseWithArg(fs, args, "an entry ID")
}

// parseWithArg parses a command that takes one positional argument (what
// names it in the error when missing), before or after its flags.
func (e *env) parseWithArg(fs *flag.FlagSet, args []string, what string) (string, error) {
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if _, err := e.parse(fs, args, nil, "json"); err != nil {
		return "", err
	}
	rest := fs.Args()
	if id == "" && len(rest) > 0 {
		id, rest = rest[0], rest[1:]
	}
	if id == "" {
		return "", usagef("%s is required", what)
	}
	if len(rest) > 0 {
		return "", usagef("unexpected argument %q", rest[0])
	}
	return id, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
