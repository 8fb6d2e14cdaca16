package ca

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// watchLoop follows the changes other servers sharing the store make
// (storage.Watcher) and publishes them: entries, revocations and node
// evictions are read again from the store and a new snapshot wakes every
// stream. Changes of this server come back too; reading them again is
// harmless. Key changes (another server rotating) are not followed yet.
func (a *Authority) watchLoop(w storage.Watcher) {
	defer a.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-a.stop
		cancel()
	}()
	var mu sync.Mutex
	var pending storage.Change
	wake := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-wake:
			}
			mu.Lock()
			c := pending
			pending = 0
			mu.Unlock()
			if err := a.reload(ctx, c); err != nil && ctx.Err() == nil {
				a.log.Error("publishing a change made by another server failed; it is retried with the next change",
					slog.Any(logkey.Error, err))
			}
		}
	}()
	err := w.Watch(ctx, func(c storage.Change) {
		mu.Lock()
		pending |= c
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, storage.ErrClosed) {
		a.log.Error("watching the store stopped", slog.Any(logkey.Error, err))
	}
	cancel()
	<-done
}

// reload reads again what c says changed and publishes a snapshot.
func (a *Authority) reload(ctx context.Context, c storage.Change) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	if c&storage.ChangeEntries != 0 {
		entries, err := a.store.ListEntries(ctx)
		if err != nil {
			errs = append(errs, err)
		} else {
			a.entries = slices.SortedStableFunc(slices.Values(entries), compareEntries)
		}
	}
	if c&storage.ChangeRevocations != 0 {
		if err := a.loadRevocations(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if c&storage.ChangeNodes != 0 {
		if err := a.loadNodes(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if c&(storage.ChangeEntries|storage.ChangeRevocations|storage.ChangeNodes) != 0 {
		a.publishLocked()
	}
	return errors.Join(errs...)
}
