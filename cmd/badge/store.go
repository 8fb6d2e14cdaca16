package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/internal/metrics"
	"github.com/badge-dev/badge/storage"
	"github.com/badge-dev/badge/storage/bbolt"
	"github.com/badge-dev/badge/storage/etcd"
)

// storageDefault is the value of --storage that keeps the state in
// DATA_DIR/badge.db.
const storageDefault = "bbolt"

// storeOps is what the metrics and readiness checks ask of the store.
type storeOps struct {
	// ping checks that the store takes writes.
	ping func(ctx context.Context) error
	// freeSpace reports the bytes free for the store; nil when the store
	// is not on this host's disk.
	freeSpace func() (uint64, error)
	stats     func(ctx context.Context) (metrics.DBStats, error)
	// replica is this server's replica id on a store several servers
	// share; empty for bbolt.
	replica string
	// compactions reports the etcd store's compactions of its history
	// (see etcd.Store.Compactions); nil for bbolt.
	compactions func() (uint64, int64)
}

// openStore opens the store --storage names: the bbolt file in the data
// directory, or an etcd cluster. With etcd the data directory still holds
// what is per server: the private key files and the server's replica id
// (replica-id), locked while the server runs so that two servers never
// share one.
func openStore(ctx context.Context, c serverConfig, trustDomain string, log *slog.Logger) (ca.Store, storeOps, error) {
	if c.storage == "" || c.storage == storageDefault {
		dbPath := filepath.Join(c.dataDir, "badge.db")
		if err := checkDatabase(dbPath, filepath.Join(c.dataDir, "keys")); err != nil {
			return nil, storeOps{}, fmt.Errorf("opening database: %w", err)
		}
		store, err := bbolt.Open(dbPath, &bbolt.Options{Logger: log})
		if err != nil {
			return nil, storeOps{}, fmt.Errorf("opening database: %w", err)
		}
		return store, storeOps{
			ping:      store.Ping,
			freeSpace: store.FreeSpace,
			stats: func(ctx context.Context) (metrics.DBStats, error) {
				st, err := store.Stats(ctx)
				return metrics.DBStats{SizeBytes: st.FileBytes, Serials: st.Serials}, err
			},
		}, nil
	}
	endpoints, err := etcd.ParseURL(c.storage)
	if err != nil {
		return nil, storeOps{}, err
	}
	var tlsCfg *tls.Config
	if c.etcdCA != "" || c.etcdCert != "" {
		if tlsCfg, err = etcd.TLSConfig(c.etcdCA, c.etcdCert, c.etcdKey); err != nil {
			return nil, storeOps{}, err
		}
	}
	replica, err := replicaID(c.dataDir)
	if err != nil {
		return nil, storeOps{}, err
	}
	compact := c.etcdCompact
	if compact == 0 {
		compact = -1 // never
	}
	store, err := etcd.Open(ctx, etcd.Options{Endpoints: endpoints, TLS: tlsCfg, TrustDomain: trustDomain, ReplicaID: replica,
		CompactInterval: compact, Logger: log})
	if err != nil {
		return nil, storeOps{}, fmt.Errorf("opening the etcd store: %w", err)
	}
	return store, storeOps{
		ping: store.Ping,
		stats: func(ctx context.Context) (metrics.DBStats, error) {
			st, err := store.Stats(ctx)
			return metrics.DBStats{SizeBytes: st.DBBytes, Serials: st.Serials}, err
		},
		replica:     replica,
		compactions: store.Compactions,
	}, nil
}

// replicaID returns the id of this server among those sharing an etcd
// store, kept in DATA_DIR/replica-id (made at the first start), and locks
// the file for the life of the process: a second server on the same data
// directory is refused with storage.ErrLocked.
func replicaID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "replica-id")
	if err := localtrust.CheckPrivatePath(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("replica id %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("replica id: %w", err)
	}
	// The descriptor stays open, and locked, until the process exits.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return "", fmt.Errorf("replica id %s: %w (is another badge server using this data directory?)", path, storage.ErrLocked)
	}
	buf := make([]byte, 64)
	n, err := f.Read(buf)
	if err != nil && n == 0 && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("replica id %s: %w", path, err)
	}
	id := strings.TrimSpace(string(buf[:n]))
	if id == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
		if _, err := f.WriteAt([]byte(id+"\n"), 0); err != nil {
			return "", fmt.Errorf("replica id %s: %w", path, err)
		}
		if err := f.Sync(); err != nil {
			return "", fmt.Errorf("replica id %s: %w", path, err)
		}
	}
	for _, ch := range id {
		if !('a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' || ch == '-' || ch == '.') {
			return "", fmt.Errorf("replica id %s: %q: want lower-case letters, digits, '-' and '.'", path, id)
		}
	}
	return id, nil
}
