package ca

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// watchLoop follows the changes other servers sharing the store make
// (storage.Watcher) and publishes them: entries, revocations and node
// evictions are read again from the store and a new snapshot wakes every
// stream. Changes of this server come back too; reading them again is
// harmless. Key changes (the leader preparing or activating a root,
// another server publishing or retiring its JWT keys) load the key
// records again (reloadKeysLocked).
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
	var events []keyEvent
	defer func() { a.auditKeyEvents(ctx, events, uint32(os.Geteuid())) }() // after the unlock
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
	published := false
	if c&storage.ChangeKeys != 0 {
		changed, err := a.reloadKeysLocked(ctx, &events)
		if err != nil {
			errs = append(errs, err)
		}
		published = changed
	}
	if c&(storage.ChangeEntries|storage.ChangeRevocations|storage.ChangeNodes) != 0 && !published {
		a.publishLocked()
	}
	return errors.Join(errs...)
}

// reloadKeysLocked loads the key records again, as another server
// changed them: the roots the leader manages and the JWT keys of every
// server. It then runs this server's own schedule (an intermediate under
// a root that just activated), and publishes a snapshot if the bundle,
// the JWKS or the signing intermediate changed. It reports whether it
// published. On an error the keys in use stay as they were.
// The steps of its own schedule it took are appended to audit.
func (a *Authority) reloadKeysLocked(ctx context.Context, audit *[]keyEvent) (bool, error) {
	ks, fixes, err := loadKeys(ctx, &a.cfg)
	if err != nil {
		return false, err
	}
	for _, rec := range a.writableFixes(fixes) {
		if err := a.store.PutKey(ctx, rec); err != nil {
			return false, err
		}
	}
	old := a.keys
	a.keys = ks
	// Keep the signers this process made, which loadKeys reads lazily.
	if n := ks.jwt.next; n != nil && old.jwt.next != nil && n.id == old.jwt.next.id && old.jwt.next.signer != nil {
		k := n.with(n.rec)
		k.signer = old.jwt.next.signer
		if set, err := newJWTKeySet(a.cfg.TrustDomain, ks.jwt.active, k, replaceKey(ks.jwt.list(), k)); err == nil {
			ks.jwt = set
		}
	}
	events, err := a.advanceKeysLocked(ctx, "")
	*audit = append(*audit, events...)
	if keySignature(a.keys) == keySignature(old) {
		return false, err
	}
	a.publishLocked()
	return true, err
}

// replaceKey returns keys with the key of k's id replaced by k.
func replaceKey(keys []*jwtKey, k *jwtKey) []*jwtKey {
	for i, x := range keys {
		if x.id == k.id {
			keys[i] = k
		}
	}
	return keys
}

// keySignature sums up what a snapshot publishes of ks: the bundle's
// roots, the signing intermediate, and the JWT keys, with their states.
func keySignature(ks *keySet) string {
	var b strings.Builder
	for _, r := range ks.roots {
		b.WriteString(r.id + ":" + string(r.rec.State) + ",")
	}
	b.WriteString("|" + ks.inter.id + "|")
	for _, k := range ks.jwt.list() {
		b.WriteString(k.id + ":" + string(k.rec.State) + ",")
	}
	if ks.jwt.active != nil {
		b.WriteString("|" + ks.jwt.active.id)
	}
	return b.String()
}
