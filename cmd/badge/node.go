package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/jsonout"
)

// badge token create --node NAME: make a one-time join token for the agent
// of a node. The token goes to stdout, alone, so that a script can capture
// it; it is shown only this once and never logged.
func runTokenCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("token create", "--node NAME [--ttl DUR] [--json]")
	node := fs.String("node", "", "`NAME` of the node whose agent will present the token (a lower-case DNS name)")
	ttl := durationVar(fs, "ttl", 0, "how long the token can be used (default 1h, at most 24h)")
	asJSON := fs.Bool("json", false, "print the token, node and expiry as JSON")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "node", "ttl", "json"); err != nil {
		return err
	}
	if *node == "" {
		return usagef("--node is required")
	}
	if *ttl < 0 {
		return usagef("--ttl must be positive")
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	req := admin.JoinTokenRequest{Node: *node}
	if *ttl != 0 {
		req.TTL = ttl.String()
	}
	tok, err := c.CreateJoinToken(ctx, req)
	if err != nil {
		return err
	}
	if *asJSON {
		return jsonout.Write(e.stdout, tok)
	}
	fmt.Fprintln(e.stdout, tok.Token)
	fmt.Fprintf(e.stderr, "join token for node %s, usable once until %s: it is shown only now\n",
		tok.Node, tok.ExpiresAt.Format(time.RFC3339))
	return nil
}

func runNodeList(ctx context.Context, e *env, args []string) error {
	return runList(ctx, e, args, "node list", (*admin.Client).ListNodes,
		"NAME\tATTESTATION\tFIRST ATTESTED\tLAST ATTESTED\tSVID SERIAL\tCONNECTIONS\tEVICTED", func(w io.Writer, n admin.Node) {
			evicted := "-"
			if n.Evicted && n.EvictedAt != nil && n.EvictedBy != nil {
				evicted = fmt.Sprintf("%s by uid %d", n.EvictedAt.Format(time.RFC3339), *n.EvictedBy)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", n.Name, n.Attestation, n.FirstAttestedAt.Format(time.RFC3339),
				n.LastAttestedAt.Format(time.RFC3339), orDash(n.SVIDSerial), n.Connections, evicted)
		})
}

func runNodeEvict(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("node evict", "NAME")
	sock := adminFlags(fs)
	name, err := e.parseWithArg(fs, args, "a node name")
	if err != nil {
		return err
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	res, err := c.EvictNode(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "evicted node %s: %d node SVID(s) of %s revoked and the ID blocked, %d unused join token(s) cancelled; "+
		"it comes back only with a join token made from now on, or a host certificate issued from now on\n", res.Node.Name, res.Revoked, res.SPIFFEID, res.CancelledTokens)
	return nil
}
