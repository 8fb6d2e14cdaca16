package ca

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/badge-dev/badge/internal/backup"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// ErrNoBackupStore is returned when the store cannot take an online backup.
var ErrNoBackupStore = errors.New("ca: the store cannot take an online backup")

// BackupStore takes a consistent snapshot of the database while it
// serves: storage/bbolt implements it with one read transaction.
type BackupStore interface {
	Backup(ctx context.Context, fn func(size int64, keys []storage.Key, writeDB func(io.Writer) (int64, error)) error) error
}

// Backup writes a backup of the authority to w, in the format of package
// internal/backup: the database as of one read transaction (the server
// keeps serving and writing meanwhile), then the private key file of
// every key record in that snapshot, then the manifest. Keys held in a
// KMS (a reference that is not a file name) are not copied; their
// records are. The backup holds the CA private keys.
func (a *Authority) Backup(ctx context.Context, w io.Writer) (backup.Manifest, error) {
	bs, ok := a.store.(BackupStore)
	if !ok {
		return backup.Manifest{}, ErrNoBackupStore
	}
	now := a.cfg.Time()
	var m backup.Manifest
	err := bs.Backup(ctx, func(size int64, keys []storage.Key, writeDB func(io.Writer) (int64, error)) error {
		bw := backup.NewWriter(w, a.cfg.TrustDomain.Name(), now)
		if err := bw.Add(backup.DBName, size, now, writeDB); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if !isKeyFile(k.PrivateRef) || seen[k.PrivateRef] {
				continue // a KMS URI, or a file already copied
			}
			seen[k.PrivateRef] = true
			data, mtime, err := readPrivateFile(filepath.Join(a.cfg.KeyDir, k.PrivateRef))
			switch {
			case errors.Is(err, os.ErrNotExist) && k.State == storage.KeyRetired:
				a.log.Warn("backup: the key file of a retired key is missing; its record is kept", slog.String(logkey.KeyID, k.ID))
				continue
			case err != nil:
				return fmt.Errorf("ca: backup of key %s: %w", k.ID, err)
			}
			if err := bw.Add(backup.KeyDir+"/"+k.PrivateRef, int64(len(data)), mtime, func(w io.Writer) (int64, error) {
				n, err := w.Write(data)
				return int64(n), err
			}); err != nil {
				return err
			}
		}
		var err error
		m, err = bw.Close()
		return err
	})
	if err != nil {
		return backup.Manifest{}, err
	}
	return m, nil
}

// readPrivateFile reads a key file: a regular file, not through a
// symbolic link, of at most backup.MaxKeyFile bytes.
func readPrivateFile(path string) ([]byte, time.Time, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > backup.MaxKeyFile {
		return nil, time.Time{}, fmt.Errorf("%s is not a regular file of at most %d bytes", path, backup.MaxKeyFile)
	}
	data, err := io.ReadAll(io.LimitReader(f, backup.MaxKeyFile+1))
	if err != nil {
		return nil, time.Time{}, err
	}
	return data, fi.ModTime(), nil
}
