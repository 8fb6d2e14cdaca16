package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/jsonout"
)

// badge client create --id SPIFFE_ID: register an OAuth client of the
// token endpoint. The secret goes to stdout, alone, so that a script can
// capture it; it is shown only this once.
func runClientCreate(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("client create", "--id SPIFFE_ID [--json]")
	id := fs.String("id", "", "SPIFFE ID of the tokens the client gets; also its client_id")
	asJSON := fs.Bool("json", false, "print the client and its secret as JSON")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "id", "json"); err != nil {
		return err
	}
	if *id == "" {
		return usagef("--id is required")
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	created, err := c.CreateOAuthClient(ctx, *id)
	if err != nil {
		return err
	}
	if *asJSON {
		return jsonout.Write(e.stdout, created)
	}
	fmt.Fprintln(e.stdout, created.Secret)
	fmt.Fprintf(e.stderr, "client_id %s: the secret above is shown only now; give it to the client "+
		"(POST /oauth2/token, grant_type=client_credentials)\n", created.ID)
	return nil
}

func runClientList(ctx context.Context, e *env, args []string) error {
	return runList(ctx, e, args, "client list", (*admin.Client).ListOAuthClients,
		"CLIENT ID\tSPIFFE ID\tCREATED", func(w io.Writer, cl admin.OAuthClient) {
			fmt.Fprintf(w, "%s\t%s\t%s\n", cl.ID, cl.SPIFFEID, cl.CreatedAt.Format(time.RFC3339))
		})
}

func runClientDelete(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("client delete", "ID")
	sock := adminFlags(fs)
	if len(args) == 0 {
		return usagef("a client ID (the client's SPIFFE ID) is required")
	}
	id, err := e.parseWithID(fs, args)
	if err != nil {
		return err
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	return c.DeleteOAuthClient(ctx, id)
}
