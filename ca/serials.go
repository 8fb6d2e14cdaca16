package ca

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// Serial numbers are reserved durably in blocks before use, so that signing
// needs no disk flush of its own: the serial of each SVID is then bound to
// its SPIFFE ID by a queued write (Store.BindSerial). If the process dies
// before a binding reaches the disk, the next start revokes every reserved
// serial without a binding (Store.RevokeUnbound) until the reservation's
// NotAfter: a certificate that left the process is then on the revocation
// list if revocation by ID cannot find it.
//
// A block holds between minSerialBlock and serialBlock serials: the next
// block is twice as large when the current one was three-quarters used
// within a second, and half as large when that took over half a minute. A
// busy daemon then flushes once per 512 SVIDs, and a crash of a quiet one
// adds a few dozen entries to the revocation list rather than a thousand.
const (
	// serialBlock is the largest reservation: one disk flush per
	// serialBlock SVIDs under load, and at most about 2*serialBlock
	// entries added to the revocation list by a crash.
	serialBlock = 512
	// minSerialBlock is the smallest reservation, and the first.
	minSerialBlock = 16
	// serialBlockFast and serialBlockSlow bound the time three-quarters of
	// a block takes to use before the next block grows or shrinks.
	serialBlockFast = time.Second
	serialBlockSlow = 30 * time.Second
	// serialBlockLife is how long a block may be drawn from after it was
	// reserved. Its reservation covers certificates until
	// reservation time + serialBlockLife + MaxSVIDTTL.
	serialBlockLife = 10 * time.Minute
)

// UnboundReason is the revocation reason of the serials revoked at start-up
// because an earlier run reserved them and never recorded their binding.
const UnboundReason = "serial reserved before an unclean shutdown and never bound to a SPIFFE ID"

// errClosed is returned for SVIDs asked of a closed authority.
var errClosed = errors.New("ca: authority is closed")

// reservedSerial is one serial of a block, in both forms badge uses.
type reservedSerial struct {
	n   *big.Int
	hex string // n.Text(16): lower case, no leading zeros
}

// serialBlockOf is a reserved block, drawn from the end.
type serialBlockOf struct {
	serials []reservedSerial
	start   time.Time // when it was reserved
	until   time.Time // last time a serial of it may be used
}

// serialPool hands out reserved serials. The next block is reserved in the
// background once the current one runs low, so that a caller waits for a
// flush only when serials are used faster than a block is reserved.
type serialPool struct {
	mu      sync.Mutex
	cur     serialBlockOf
	next    *serialBlockOf
	size    int  // serials of the next reservation; 0 means minSerialBlock
	filling bool // a background reservation is running
	closed  bool
}

// nextSize adapts the size of the next block to how fast the current one,
// of size n, reserved at start, is being used: called once three-quarters
// of it are.
func (p *serialPool) nextSize(n int, start, now time.Time) int {
	size := max(p.size, minSerialBlock)
	switch took := now.Sub(start); {
	case took < serialBlockFast && n >= size:
		size = min(2*size, serialBlock)
	case took > serialBlockSlow:
		size = max(size/2, minSerialBlock)
	}
	p.size = size
	return size
}

// nextSerial returns a reserved serial usable at now.
func (a *Authority) nextSerial(ctx context.Context, now time.Time) (reservedSerial, error) {
	p := &a.serials
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.closed {
			return reservedSerial{}, errClosed
		}
		if n := len(p.cur.serials); n > 0 && !now.After(p.cur.until) {
			s := p.cur.serials[n-1]
			p.cur.serials = p.cur.serials[:n-1]
			if n <= cap(p.cur.serials)/4 && p.next == nil && !p.filling {
				p.filling = true
				a.wg.Add(1)
				go a.refillSerials(p.nextSize(cap(p.cur.serials), p.cur.start, now))
			}
			return s, nil
		}
		if len(p.cur.serials) > 0 {
			// Too old to use: NotAfter could pass its reservation's.
			a.releaseSerials(p.cur.serials)
		}
		p.cur = serialBlockOf{}
		if p.next != nil {
			p.cur, p.next = *p.next, nil
			continue
		}
		b, err := a.reserveSerials(ctx, now, max(p.size, minSerialBlock))
		if err != nil {
			return reservedSerial{}, err
		}
		p.cur = b
	}
}

// refillSerials reserves the next block, of size serials, in the
// background.
func (a *Authority) refillSerials(size int) {
	defer a.wg.Done()
	b, err := a.reserveSerials(context.Background(), a.cfg.Time(), size)
	p := &a.serials
	p.mu.Lock()
	defer p.mu.Unlock()
	p.filling = false
	switch {
	case err != nil:
		a.log.Error("reserving serial numbers failed", slog.Any(logkey.Error, err))
	case p.next != nil || p.closed:
		a.releaseSerials(b.serials)
	default:
		p.next = &b
	}
}

// reserveSerials draws a block of size random serials and records it
// durably.
func (a *Authority) reserveSerials(ctx context.Context, now time.Time, size int) (serialBlockOf, error) {
	serials, hexes, err := newSerials(size)
	if err != nil {
		return serialBlockOf{}, err
	}
	b := serialBlockOf{serials: serials, start: now, until: now.Add(serialBlockLife)}
	r := storage.Reservation{Serials: hexes, NotAfter: b.until.Add(a.cfg.MaxSVIDTTL)}
	if err := a.store.ReserveSerials(ctx, r); err != nil {
		return serialBlockOf{}, fmt.Errorf("ca: reserving serials: %w", err)
	}
	return b, nil
}

// newSerials draws n random serials, in both forms.
func newSerials(n int) ([]reservedSerial, []string, error) {
	raw := make([]byte, 16*n)
	if _, err := rand.Read(raw); err != nil {
		return nil, nil, fmt.Errorf("ca: generating serials: %w", err)
	}
	serials, hexes := make([]reservedSerial, n), make([]string, n)
	for i := range serials {
		chunk := raw[16*i : 16*i+16]
		// 127 bits: positive, within the 20 octets RFC 5280 allows.
		chunk[0] &= 0x7f
		v := new(big.Int).SetBytes(chunk)
		if v.Sign() == 0 { // astronomically unlikely, but RFC 5280 wants > 0
			v.SetInt64(1)
		}
		serials[i] = reservedSerial{n: v, hex: v.Text(16)}
		hexes[i] = serials[i].hex
	}
	return serials, hexes, nil
}

// releaseSerials tells the store, in the background, that serials will not
// be used, so that the next start does not revoke them. A failure only
// costs revocation-list entries after a restart.
func (a *Authority) releaseSerials(serials []reservedSerial) {
	hexes := make([]string, len(serials))
	for i, s := range serials {
		hexes[i] = s.hex
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := a.store.ReleaseSerials(context.Background(), hexes); err != nil {
			a.log.Warn("releasing unused serial numbers failed; the next start revokes them", slog.Any(logkey.Error, err))
		}
	}()
}

// closeSerials stops handing out serials and releases the unused ones.
func (a *Authority) closeSerials() {
	p := &a.serials
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	left := p.cur.serials
	if p.next != nil {
		left = append(left, p.next.serials...)
	}
	p.cur, p.next = serialBlockOf{}, nil
	if len(left) > 0 {
		a.releaseSerials(left)
	}
}

// revokeUnbound revokes, at start-up, the serials an earlier run reserved
// and never bound (see the top of this file).
func (a *Authority) revokeUnbound(ctx context.Context) error {
	revoked, err := a.store.RevokeUnbound(ctx, a.cfg.Time().UTC(), UnboundReason)
	if err != nil {
		return fmt.Errorf("ca: revoking serials reserved before an unclean shutdown: %w", err)
	}
	if len(revoked) > 0 {
		a.log.Warn("revoked serial numbers reserved before an unclean shutdown and never bound to a SPIFFE ID",
			slog.Int(logkey.Count, len(revoked)), slog.Bool(logkey.Audit, true))
	}
	return nil
}
