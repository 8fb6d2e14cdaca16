package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/ca/admin"
	"github.com/badge-dev/badge/internal/jsonout"
)

// badge keys list [--json]: every signing key the server keeps, with its
// state and schedule.
func runKeysList(ctx context.Context, e *env, args []string) error {
	return runList(ctx, e, args, "keys list", (*admin.Client).ListKeys,
		"KIND\tID\tSTATE\tCREATED\tACTIVATES\tRETIRES\tNOT AFTER\tREMOVED\tFINGERPRINT\tPRIVATE KEY", func(w io.Writer, k ca.KeyStatus) {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Kind, k.ID, k.State, k.CreatedAt.Format(time.RFC3339),
				timeOrDash(k.ActivatesAt), timeOrDash(k.RetiresAt), timeOrDash(k.NotAfter), timeOrDash(k.RemoveAt),
				k.Fingerprint, k.PrivateKey)
		})
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

// badge keys rotate --kind root|intermediate|jwt: replace the active key
// of a kind now, as after a suspected compromise.
func runKeysRotate(ctx context.Context, e *env, args []string) error {
	fs := e.flagSet("keys rotate", "--kind root|intermediate|jwt [--json]")
	kind := fs.String("kind", "", "the key to replace now: root, intermediate or jwt")
	asJSON := fs.Bool("json", false, "print the new key and the one it replaced as JSON")
	sock := adminFlags(fs)
	if err := e.parseNoArgs(fs, args, "kind", "json"); err != nil {
		return err
	}
	switch *kind {
	case ca.RotateRoot, ca.RotateIntermediate, ca.RotateJWT:
	case "":
		return usagef("--kind is required: root, intermediate or jwt")
	default:
		return usagef("--kind %q: want root, intermediate or jwt", *kind)
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	res, err := c.RotateKey(ctx, *kind)
	if err != nil {
		return err
	}
	if *asJSON {
		return jsonout.Write(e.stdout, res)
	}
	fmt.Fprintf(e.stdout, "%s key %s is active\n", res.Kind, res.Active.ID)
	if r := res.Retired; r != nil {
		what := "stays in the trust bundle"
		switch res.Kind {
		case ca.RotateIntermediate:
			what = "is kept"
		case ca.RotateJWT:
			what = "stays in the JWKS"
		}
		until := timeOrDash(r.RemoveAt)
		fmt.Fprintf(e.stdout, "%s key %s is retired: it signs no more and %s until what it signed has expired (%s)\n",
			res.Kind, r.ID, what, until)
	}
	return nil
}
