package admin

import (
	"cmp"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/jsonout"
	"github.com/badge-dev/badge/internal/localtrust"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// Authority is what the admin API manages.
type Authority interface {
	CreateEntry(ctx context.Context, req ca.EntryRequest) (storage.Entry, error)
	GetEntry(ctx context.Context, id string) (storage.Entry, error)
	ListEntries(ctx context.Context) ([]storage.Entry, error)
	DeleteEntry(ctx context.Context, id string) error
	RevokeID(ctx context.Context, req ca.RevokeRequest) (ca.RevokeResult, error)
	RevokeSerial(ctx context.Context, serial, reason string, adminUID uint32) (ca.RevokeResult, error)
	Unblock(ctx context.Context, spiffeID string, adminUID uint32) error
	Revocations() ([]storage.Revocation, []storage.RevokedSerial)
	Snapshot() *ca.Snapshot
}

// Config configures a Server.
type Config struct {
	// Authority is the authority to manage. Required.
	Authority Authority
	// AllowedUIDs may use the API besides root. Default: the server's own uid.
	AllowedUIDs []uint32
	// Logger receives the audit trail and errors. Nil discards them.
	Logger *slog.Logger
	// BackupWriteTimeout bounds how long one write of a backup to the
	// client may block: a client that stops reading loses its backup and
	// releases the database's read transaction, which would otherwise
	// hold back the growth of the database file. Default 30s.
	BackupWriteTimeout time.Duration
	// OnNoSpace is called when a revocation fails for lack of disk space;
	// if it frees some (a ballast file) and returns true, the revocation is
	// tried again. Nil: no retry.
	OnNoSpace func() bool
	// Ready reports whether the server is ready to serve (database
	// writable, signing key usable, revocation list fresh): GET
	// /v1/health answers 503 with its error. Nil: always ready.
	Ready func(ctx context.Context) error
	// Status returns the document of GET /v1/status (badge status). Nil:
	// the route answers 404.
	Status func(ctx context.Context) any
	// NodeConnections returns the number of open agent listener
	// connections of a node, for GET /v1/nodes. Nil: none.
	NodeConnections func(name string) int
}

// Server is the admin API server.
type Server struct {
	auth    Authority
	log     *slog.Logger
	allowed map[uint32]bool
	http    *http.Server

	onNoSpace          func() bool
	backupWriteTimeout time.Duration
	ready              func(ctx context.Context) error
	status             func(ctx context.Context) any
	nodeConns          func(name string) int
}

type ctxKey struct{}

// New returns an admin API server. It fails if cfg.Authority is missing.
func New(cfg Config) (*Server, error) {
	if cfg.Authority == nil {
		return nil, errors.New("admin: Config.Authority is required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{auth: cfg.Authority, log: log, allowed: map[uint32]bool{0: true}, onNoSpace: cfg.OnNoSpace,
		backupWriteTimeout: cmp.Or(cfg.BackupWriteTimeout, 30*time.Second), ready: cfg.Ready, status: cfg.Status, nodeConns: cfg.NodeConnections}
	if cfg.AllowedUIDs == nil {
		cfg.AllowedUIDs = []uint32{uint32(os.Geteuid())}
	}
	for _, u := range cfg.AllowedUIDs {
		s.allowed[u] = true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/entries", s.createEntry)
	mux.HandleFunc("GET /v1/entries", s.listEntries)
	mux.HandleFunc("GET /v1/entries/{id}", s.getEntry)
	mux.HandleFunc("DELETE /v1/entries/{id}", s.deleteEntry)
	mux.HandleFunc("POST /v1/revocations", s.revoke)
	mux.HandleFunc("GET /v1/revocations", s.listRevocations)
	mux.HandleFunc("POST /v1/unblock", s.unblock)
	mux.HandleFunc("POST /v1/clients", s.createClient)
	mux.HandleFunc("GET /v1/clients", s.listClients)
	mux.HandleFunc("DELETE /v1/clients/{id}", s.deleteClient)
	mux.HandleFunc("POST /v1/tokens", s.createJoinToken)
	mux.HandleFunc("GET /v1/nodes", s.listNodes)
	mux.HandleFunc("POST /v1/nodes/{name}/evict", s.evictNode)
	mux.HandleFunc("GET /v1/bundle", s.bundle)
	mux.HandleFunc("GET /v1/health", s.health)
	mux.HandleFunc("GET /v1/audit", s.listAudit)
	mux.HandleFunc("GET /v1/audit/verify", s.verifyAudit)
	mux.HandleFunc("GET /v1/backup", s.backup)
	mux.HandleFunc("GET /v1/status", s.serveStatus)
	s.http = &http.Server{
		Handler:           s.authorize(mux),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			uid, err := peerUID(c)
			if err != nil {
				return context.WithValue(ctx, ctxKey{}, err)
			}
			return context.WithValue(ctx, ctxKey{}, uid)
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Serve answers requests on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for requests in flight, until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// peerUID is the uid of the process that connected (SO_PEERCRED).
func peerUID(c net.Conn) (uint32, error) {
	uid, err := localtrust.PeerUID(c)
	if err != nil {
		return 0, fmt.Errorf("admin API: reading peer credentials: %w", err)
	}
	return uid, nil
}

// authorize serves only root and the allowed uids, and writes the audit
// record of every request.
func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		uid, ok := r.Context().Value(ctxKey{}).(uint32)
		if !ok {
			err, _ := r.Context().Value(ctxKey{}).(error)
			s.log.Warn("admin request without peer credentials refused", slog.Any(logkey.Error, err))
			writeError(w, http.StatusForbidden, fmt.Errorf("peer credentials unavailable: %v", err))
			return
		}
		if !s.allowed[uid] {
			s.log.Warn("admin request refused", slog.Int(logkey.AdminUID, int(uid)), slog.String(logkey.Method, r.Method+" "+r.URL.Path), slog.Bool(logkey.Audit, true))
			writeError(w, http.StatusForbidden, fmt.Errorf("uid %d may not use the admin API (only root and the server's uid)", uid))
			return
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		if r.Method != http.MethodGet {
			s.log.Info("admin request", slog.Int(logkey.AdminUID, int(uid)), slog.String(logkey.Method, r.Method+" "+r.URL.Path),
				slog.Int("status", rec.status), slog.Bool(logkey.Audit, true))
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

// Unwrap lets http.ResponseController reach the connection (write
// deadlines of backups).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *Server) createEntry(w http.ResponseWriter, r *http.Request) {
	req, ttl, err := DecodeEntryRequest(r.Body)
	if err != nil {
		s.record(r, ca.AuditEntryCreate, req.SPIFFEID, "", err)
		s.writeRequestError(w, err)
		return
	}
	e, err := s.auth.CreateEntry(r.Context(), ca.EntryRequest{SPIFFEID: req.SPIFFEID, Selectors: req.Selectors, TTL: ttl, DNSNames: req.DNSNames, Nodes: req.Nodes})
	s.record(r, ca.AuditEntryCreate, cmp.Or(e.ID, req.SPIFFEID), entryDetail(req), err)
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	jsonout.Respond(w, http.StatusCreated, entryFromStorage(e))
}

func (s *Server) listEntries(w http.ResponseWriter, r *http.Request) {
	es, err := s.auth.ListEntries(r.Context())
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = entryFromStorage(e)
	}
	jsonout.Respond(w, http.StatusOK, out)
}

func (s *Server) getEntry(w http.ResponseWriter, r *http.Request) {
	e, err := s.auth.GetEntry(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	jsonout.Respond(w, http.StatusOK, entryFromStorage(e))
}

func (s *Server) deleteEntry(w http.ResponseWriter, r *http.Request) {
	err := s.auth.DeleteEntry(r.Context(), r.PathValue("id"))
	s.record(r, ca.AuditEntryDelete, r.PathValue("id"), "", err)
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	req, err := DecodeRevokeRequest(r.Body)
	if err != nil {
		action := ca.AuditRevokeID
		if req.Serial != "" {
			action = ca.AuditRevokeSerial
		}
		s.record(r, action, cmp.Or(req.SPIFFEID, req.Serial), revokeDetail(req, ca.RevokeResult{}), err)
		s.writeRequestError(w, err)
		return
	}
	uid, _ := r.Context().Value(ctxKey{}).(uint32)
	if req.Serial != "" {
		var res ca.RevokeResult
		err := s.retryNoSpace(func() (err error) {
			res, err = s.auth.RevokeSerial(r.Context(), req.Serial, req.Reason, uid)
			return err
		})
		s.record(r, ca.AuditRevokeSerial, req.Serial, revokeDetail(req, res), err)
		if err != nil {
			s.writeAuthorityError(w, err)
			return
		}
		jsonout.Respond(w, http.StatusOK, RevokeResponse{Revoked: res.Revoked, AlreadyRevoked: res.AlreadyRevoked})
		return
	}
	var res ca.RevokeResult
	err = s.retryNoSpace(func() (err error) {
		res, err = s.auth.RevokeID(r.Context(), ca.RevokeRequest{SPIFFEID: req.SPIFFEID, Reason: req.Reason, Block: req.Block, AdminUID: uid})
		return err
	})
	s.record(r, ca.AuditRevokeID, req.SPIFFEID, revokeDetail(req, res), err)
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	jsonout.Respond(w, http.StatusOK, RevokeResponse{Revoked: res.Revoked, AlreadyRevoked: res.AlreadyRevoked, SPIFFEID: req.SPIFFEID, Blocked: req.Block})
}

func (s *Server) unblock(w http.ResponseWriter, r *http.Request) {
	var req UnblockRequest
	if err := decodeStrict(r.Body, &req, "unblock request"); err != nil {
		s.record(r, ca.AuditUnblock, "", "", err)
		writeError(w, http.StatusBadRequest, err)
		return
	}
	uid, _ := r.Context().Value(ctxKey{}).(uint32)
	err := s.auth.Unblock(r.Context(), req.SPIFFEID, uid)
	s.record(r, ca.AuditUnblock, req.SPIFFEID, "", err)
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) listRevocations(w http.ResponseWriter, _ *http.Request) {
	ids, serials := s.auth.Revocations()
	out := Revocations{IDs: make([]RevokedID, len(ids)), Serials: make([]RevokedSerial, len(serials))}
	for i, r := range ids {
		out.IDs[i] = RevokedID{SPIFFEID: r.SPIFFEID, RevokedAt: r.RevokedAt.UTC(), Reason: r.Reason, Blocked: r.Blocked}
	}
	for i, r := range serials {
		out.Serials[i] = RevokedSerial{Serial: r.Serial, SPIFFEID: r.SPIFFEID, NotAfter: r.NotAfter.UTC(), RevokedAt: r.RevokedAt.UTC(), Reason: r.Reason}
	}
	jsonout.Respond(w, http.StatusOK, out)
}

func (s *Server) bundle(w http.ResponseWriter, r *http.Request) {
	b := s.auth.Snapshot().Bundle()
	switch f := r.URL.Query().Get("format"); f {
	case "", "pem":
		w.Header().Set("Content-Type", "application/x-pem-file")
		for _, c := range b.X509Authorities() {
			pem.Encode(w, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	case "jwks":
		data, err := spiffebundle.FromX509Bundle(b).Marshal()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(data)
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("unknown bundle format %q (want pem or jwks)", f))
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	if s.ready != nil {
		if err := s.ready(r.Context()); err != nil {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
	}
	jsonout.Respond(w, http.StatusOK, map[string]string{"status": "ok", "trust_domain": s.auth.Snapshot().TrustDomain().Name()})
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	if s.status == nil {
		writeError(w, http.StatusNotFound, errors.New("this server does not report its status"))
		return
	}
	jsonout.Respond(w, http.StatusOK, s.status(r.Context()))
}

// writeRequestError answers a request that could not be decoded: 400, with
// the field named when the decoder knows it.
func (s *Server) writeRequestError(w http.ResponseWriter, err error) {
	if errors.Is(err, ca.ErrInvalid) {
		s.writeAuthorityError(w, err)
		return
	}
	writeError(w, http.StatusBadRequest, err)
}

func (s *Server) writeAuthorityError(w http.ResponseWriter, err error) {
	var inv *ca.InvalidError
	switch {
	case errors.As(err, &inv):
		jsonout.Respond(w, http.StatusBadRequest, errorResponse{Error: err.Error(), Field: inv.Field})
	case errors.Is(err, storage.ErrNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, storage.ErrExists):
		writeError(w, http.StatusConflict, err)
	default:
		s.log.Error("admin request failed", slog.Any(logkey.Error, err))
		writeError(w, http.StatusInternalServerError, err)
	}
}

func writeError(w http.ResponseWriter, code int, err error) {
	jsonout.Respond(w, code, errorResponse{Error: err.Error()})
}

// entryDetail is what an entry was created with, for the audit record.
func entryDetail(req EntryRequest) string {
	d := "spiffe_id=" + req.SPIFFEID + " selectors=" + strings.Join(req.Selectors, ",")
	if req.TTL != "" {
		d += " ttl=" + req.TTL
	}
	if len(req.DNSNames) > 0 {
		d += " dns=" + strings.Join(req.DNSNames, ",")
	}
	return d
}

// revokeDetail is what a revocation was given and did, for the audit record.
func revokeDetail(req RevokeRequest, res ca.RevokeResult) string {
	d := fmt.Sprintf("revoked=%d already_revoked=%d", res.Revoked, res.AlreadyRevoked)
	if req.Block {
		d += " block=true"
	}
	if req.Reason != "" {
		d += " reason=" + strconv.Quote(req.Reason)
	}
	return d
}
