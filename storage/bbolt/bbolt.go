package bbolt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/badge-dev/badge/storage"
)

// DefaultTimeout is how long Open waits for the file lock when
// Options.Timeout is zero.
const DefaultTimeout = time.Second

// Options configures Open. A nil *Options and the zero value are the
// defaults.
type Options struct {
	// Timeout is how long Open waits for another process to release the
	// file lock before failing with storage.ErrLocked. Zero means
	// DefaultTimeout (1s); a negative value means a single attempt.
	Timeout time.Duration
	// Logger receives the store's log records (open, migrations, pruning,
	// failed commits). Nil means discard.
	Logger *slog.Logger
	// NoSync skips fdatasync after each commit, so a crash may lose or
	// corrupt recent writes. For tests and benchmarks only.
	NoSync bool
}

// Store implements the storage contract, and the optional online backup.
var (
	_ storage.Backend    = (*Store)(nil)
	_ storage.FileBackup = (*Store)(nil)
)

// Store is a bbolt-backed store. It is safe for concurrent use; create it
// with Open and release it with Close.
type Store struct {
	db     *bolt.DB
	path   string
	log    *slog.Logger
	closed atomic.Bool
	// writeTxs counts write transactions, for tests and later metrics.
	writeTxs atomic.Uint64

	// Group commit of RecordSerial: callers append to pending and wake the
	// committer, which writes all of pending in one transaction.
	mu            sync.Mutex
	pending       []*serialWrite
	closing       bool
	wake          chan struct{} // capacity 1
	committerDone chan struct{}

	// ownReservations is the first sequence number of the reservations
	// made through this Store, which RevokeUnbound leaves alone.
	ownReservations uint64
	// resMu guards unbound, and is held across the transactions that bind
	// or release reserved serials.
	resMu sync.Mutex
	// unbound maps each serial reserved through this Store, and neither
	// bound nor released yet, to its reservation. A reservation is deleted
	// in the transaction that binds or releases its last serial.
	unbound map[string]*reservation
}

// reservation is one record of serial_reservations made by this Store.
type reservation struct {
	key  []byte
	left int // serials neither bound nor released
}

// Open opens the database at path, creating the file with mode 0600 if it
// does not exist (its directory must exist). It waits up to
// Options.Timeout for the file lock, creates or upgrades the schema, and
// reads every page once so that a damaged file is reported now rather than
// on the first request.
//
// Errors name the path and wrap storage.ErrLocked (another process has the
// file open), storage.ErrCorrupt (not a database, truncated, unreadable) or
// storage.ErrSchema (written by a newer release, or not a badge database);
// operating-system errors such as fs.ErrNotExist and fs.ErrPermission are
// wrapped as they are.
func Open(path string, opts *Options) (*Store, error) {
	if opts == nil {
		opts = &Options{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With(slog.String(attrPath, path))
	timeout := opts.Timeout
	switch {
	case timeout == 0:
		timeout = DefaultTimeout
	case timeout < 0:
		timeout = time.Nanosecond // bbolt: give up after the first attempt
	}

	if err := preflight(path); err != nil {
		return nil, err
	}
	db, err := openDB(path, timeout, opts.NoSync)
	if err != nil {
		return nil, err
	}
	s := &Store{
		db:            db,
		path:          path,
		log:           log,
		wake:          make(chan struct{}, 1),
		committerDone: make(chan struct{}),
		unbound:       make(map[string]*reservation),
	}
	counts, err := s.setup()
	if err != nil {
		_ = protect(path, db.Close)
		return nil, err
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("database file is accessible to other users; expected mode 0600", slog.String("mode", fi.Mode().Perm().String()))
	}
	log.Info("opened database", slog.Int(attrSchema, schemaVersion),
		slog.Int("entries", counts[string(bucketEntries)]),
		slog.Int("serials", counts[string(bucketSerialRecords)]),
		slog.Int("keys", counts[string(bucketKeys)]))
	go s.commitLoop()
	return s, nil
}

// openDB opens the bbolt file and classifies its errors. bbolt may panic or
// fault on a damaged file; that becomes storage.ErrCorrupt, and the file it
// opened is closed so that its lock is released.
func openDB(path string, timeout time.Duration, noSync bool) (db *bolt.DB, err error) {
	var file *os.File
	bopts := *bolt.DefaultOptions
	bopts.Timeout = timeout
	bopts.NoSync = noSync
	// The hashmap freelist finds a run of free pages without scanning a
	// sorted array; with pruning freeing whole ranges of pages, allocation
	// stays cheap as the file ages. It is not written on every commit: an
	// aged file holds thousands of free pages, and writing and sorting
	// them on each of several hundred commits a second was the largest
	// cost that grew with the file's age. bbolt rebuilds it at open by
	// walking the tree, which preflight has checked; Close stores it.
	bopts.FreelistType = bolt.FreelistMapType
	bopts.NoFreelistSync = true
	bopts.OpenFile = func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag, perm)
		file = f
		return f, err
	}
	err = protect(path, func() (err error) {
		db, err = bolt.Open(path, 0o600, &bopts)
		return err
	})
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, storage.ErrCorrupt):
		// bbolt panicked after opening and locking the file, perhaps
		// after mapping it. Release the lock so that the file can be
		// inspected or replaced; the mapping, if any, is lost (bbolt
		// keeps it in the DB it did not return).
		if file != nil {
			unlock(file)
			_ = file.Close()
		}
		return nil, err
	case errors.Is(err, berrors.ErrTimeout):
		return nil, fmt.Errorf("storage/bbolt: open %s: %w (gave up after %s; is another badge server using this data directory?)",
			path, storage.ErrLocked, timeout)
	case isOSError(err):
		return nil, fmt.Errorf("storage/bbolt: open %s: %w", path, err)
	default:
		// ErrInvalid, ErrVersionMismatch, ErrChecksum, "file size too small".
		return nil, fmt.Errorf("storage/bbolt: open %s: %w: %w", path, storage.ErrCorrupt, err)
	}
}

// isOSError reports whether err came from the operating system (open,
// flock, stat, mmap) rather than from bbolt reading the file.
func isOSError(err error) bool {
	var pe *fs.PathError
	var errno syscall.Errno
	return errors.As(err, &pe) || errors.As(err, &errno)
}

// protect runs fn, turning a panic or a memory fault (bbolt reads the file
// through mmap) into an error wrapping storage.ErrCorrupt.
func protect(path string, fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("storage/bbolt: %s: %w (bbolt panicked: %v)", path, storage.ErrCorrupt, p)
		}
	}()
	return fn()
}

// Path returns the path of the database file.
func (s *Store) Path() string { return s.path }

// Close waits for queued RecordSerial calls to be committed, then closes
// the file. Calls made after Close, including a second Close, return
// storage.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return fmt.Errorf("storage/bbolt: %s: %w", s.path, storage.ErrClosed)
	}
	s.closing = true
	s.mu.Unlock()
	s.closed.Store(true)
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.committerDone
	// Store the freelist on a clean close, so that a release that
	// expects one can open the file. bbolt reads NoFreelistSync only
	// when a write transaction commits, and writers are serialised, so
	// it is set inside one.
	err := protect(s.path, func() error {
		return s.db.Update(func(*bolt.Tx) error {
			s.db.NoFreelistSync = false
			return nil
		})
	})
	if err != nil {
		s.log.Warn("could not store the freelist on close; the next open rebuilds it", slog.Any("err", err))
	}
	if err := protect(s.path, s.db.Close); err != nil {
		return fmt.Errorf("storage/bbolt: closing %s: %w", s.path, err)
	}
	s.log.Info("closed database")
	return nil
}

// view runs fn in a read-only transaction.
func (s *Store) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	return s.run(ctx, s.db.View, fn)
}

// update runs fn in a read-write transaction, committed (and synced) before
// update returns.
func (s *Store) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	return s.run(ctx, func(fn func(*bolt.Tx) error) error {
		s.writeTxs.Add(1)
		return s.db.Update(fn)
	}, fn)
}

func (s *Store) run(ctx context.Context, txn func(func(*bolt.Tx) error) error, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return fmt.Errorf("storage/bbolt: %s: %w", s.path, storage.ErrClosed)
	}
	err := protect(s.path, func() error { return txn(fn) })
	return s.txError(err)
}

// txError maps bbolt's errors to the storage sentinels.
func (s *Store) txError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("storage/bbolt: %s: %w", s.path, storage.ErrClosed)
	case errors.Is(err, storage.ErrCorrupt):
		s.log.Error("database damaged", slog.Any(attrError, err))
	}
	return err
}

// Log attribute keys.
const (
	attrPath   = "path"
	attrError  = "error"
	attrSchema = "schema_version"
	attrCount  = "count"
)
