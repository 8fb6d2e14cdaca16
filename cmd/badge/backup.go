package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/badge-dev/badge/internal/backup"
	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/bbolt"
)

func runBackup(ctx context.Context, e *env, args []string) error {
	flags := e.flagSet("backup", "--out FILE")
	out := flags.String("out", "", "`file` to write the backup to (mode 0600; must not exist)")
	sock := adminFlags(flags)
	if err := e.parseNoArgs(flags, args, "out"); err != nil {
		return err
	}
	if *out == "" {
		return usagef("--out is required")
	}
	if _, err := os.Lstat(*out); err == nil {
		return fmt.Errorf("%s exists: a backup never replaces a file; choose a new name", *out)
	}
	c, err := e.adminClient(*sock)
	if err != nil {
		return err
	}
	// Write to a new file beside the target, check it, then link it into
	// place: an interrupted or refused backup never leaves a file named
	// like a good one.
	tmp, err := os.CreateTemp(filepath.Dir(*out), "."+filepath.Base(*out)+".part-*")
	if err != nil {
		return fmt.Errorf("creating the backup file: %w", err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if err := tmp.Chmod(0o600); err != nil {
		return err
	}
	n, err := c.Backup(ctx, tmp)
	if err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	m, err := backup.Read(tmp, func(backup.File, io.Reader) error { return nil })
	if err != nil {
		return fmt.Errorf("the server's backup is incomplete (see its log): %w", err)
	}
	if err := os.Link(tmp.Name(), *out); err != nil {
		return fmt.Errorf("naming the backup %s: %w", *out, err)
	}
	syncDir(filepath.Dir(*out))
	keys := len(m.Files) - 1
	fmt.Fprintf(e.stdout, "wrote %s: %d bytes, the database of trust domain %s and %d key files, as of %s\n",
		*out, n, m.TrustDomain, keys, m.Created.Format("2006-01-02T15:04:05Z"))
	fmt.Fprintln(e.stdout, "it holds the CA private keys: keep it as secret as the data directory")
	return nil
}

func runRestore(ctx context.Context, e *env, args []string) error {
	flags := e.flagSet("restore", "--from FILE --data-dir DIR")
	from := flags.String("from", "", "backup `file` written by badge backup")
	dataDir := flags.String("data-dir", "", "empty or missing data `directory` to restore into; run as the user the server runs as")
	if err := e.parseNoArgs(flags, args, "from", "data-dir"); err != nil {
		return err
	}
	if *from == "" || *dataDir == "" {
		return usagef("--from and --data-dir are required")
	}
	if !filepath.IsAbs(*dataDir) {
		return usagef("--data-dir %q must be absolute", *dataDir)
	}
	f, err := os.Open(*from)
	if err != nil {
		return err
	}
	defer f.Close()
	created, err := prepareRestoreDir(*dataDir)
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			cleanRestore(*dataDir, created)
		}
	}()
	m, err := backup.Read(f, func(file backup.File, r io.Reader) error {
		path := filepath.Join(*dataDir, filepath.FromSlash(file.Name))
		if filepath.Dir(file.Name) == backup.KeyDir {
			if err := localtrust.MkdirPrivate(filepath.Dir(path)); err != nil {
				return err
			}
		}
		return writeNew(path, r)
	})
	if err != nil {
		return fmt.Errorf("%s: %w", *from, err)
	}
	sum, err := checkRestored(ctx, *dataDir)
	if err != nil {
		return fmt.Errorf("restored files do not make a working data directory: %w", err)
	}
	done = true
	fmt.Fprintf(e.stdout, "restored %s into %s: trust domain %s, backed up %s\n%s\n",
		*from, *dataDir, m.TrustDomain, m.Created.Format("2006-01-02T15:04:05Z"), sum)
	fmt.Fprintf(e.stdout, "start it with: badge server --data-dir %s --trust-domain %s\n", *dataDir, m.TrustDomain)
	return nil
}

// prepareRestoreDir creates dir (0700) or accepts it if it exists, is
// trusted and is empty. It reports whether it created it.
func prepareRestoreDir(dir string) (bool, error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := localtrust.MkdirPrivate(dir); err != nil {
			return false, fmt.Errorf("data directory %w", err)
		}
		return true, nil
	case err != nil:
		return false, err
	case len(entries) > 0:
		return false, fmt.Errorf("data directory %s is not empty (it holds %s): restore only into an empty or new directory, never over a server's state",
			dir, entries[0].Name())
	}
	if err := localtrust.CheckPrivatePath(dir); err != nil {
		return false, fmt.Errorf("data directory %w", err)
	}
	return false, nil
}

// cleanRestore removes what a failed restore wrote into dir.
func cleanRestore(dir string, created bool) {
	if created {
		os.RemoveAll(dir)
		return
	}
	os.Remove(filepath.Join(dir, backup.DBName))
	os.RemoveAll(filepath.Join(dir, backup.KeyDir))
}

// writeNew writes r to a new file at path, mode 0600, synced.
func writeNew(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// checkRestored opens the restored database (which checks every page and
// upgrades an older schema), checks that every key it uses has its file,
// and says what it holds.
func checkRestored(ctx context.Context, dir string) (string, error) {
	st, err := bbolt.Open(filepath.Join(dir, backup.DBName), nil)
	if err != nil {
		return "", err
	}
	defer st.Close()
	keys, err := st.ListKeys(ctx)
	if err != nil {
		return "", err
	}
	for _, k := range keys {
		if k.State == storage.KeyRetired || filepath.Base(k.PrivateRef) != k.PrivateRef {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, backup.KeyDir, k.PrivateRef)); err != nil {
			return "", fmt.Errorf("key %s (%s): %w", k.ID, k.State, err)
		}
	}
	entries, err := st.ListEntries(ctx)
	if err != nil {
		return "", err
	}
	ids, serials, err := st.ListRevocations(ctx)
	if err != nil {
		return "", err
	}
	clients, err := st.ListClients(ctx)
	if err != nil {
		return "", err
	}
	head, _, err := st.AuditHead(ctx)
	if err != nil {
		return "", err
	}
	syncDir(dir)
	return fmt.Sprintf("entries: %d, keys: %d, revoked IDs: %d, revoked certificates: %d, OAuth clients: %d, audit trail up to record %d",
		len(entries), len(keys), len(ids), len(serials), len(clients), head.Seq), nil
}

// syncDir makes the names created in dir durable.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	if d, err := os.Open(filepath.Join(dir, backup.KeyDir)); err == nil {
		d.Sync()
		d.Close()
	}
}
