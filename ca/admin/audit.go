package admin

// The audit trail and backups:
//
//	GET    /v1/audit          audit records, ?since=RFC3339&after=SEQ&limit=N; returns AuditPage
//	GET    /v1/audit/verify   verify the whole trail, returns ca.AuditReport (200 also when it fails)
//	GET    /v1/backup         a backup archive (application/x-tar, see internal/backup); recorded in the trail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/badge-dev/badge/ca"
	"github.com/badge-dev/badge/internal/backup"
	"github.com/badge-dev/badge/internal/jsonout"
	"github.com/badge-dev/badge/internal/logkey"
	"github.com/badge-dev/badge/storage"
)

// AuditAuthority keeps the audit trail: *ca.Authority. It is optional:
// without it, actions are only logged and the /v1/audit routes answer 501.
type AuditAuthority interface {
	Audit(ctx context.Context, ev ca.AuditEvent) error
	AuditList(ctx context.Context, after uint64, since time.Time, limit int) ([]storage.AuditRecord, bool, error)
	VerifyAudit(ctx context.Context) (ca.AuditReport, error)
}

// BackupAuthority takes online backups: *ca.Authority. Optional: without
// it /v1/backup answers 501.
type BackupAuthority interface {
	Backup(ctx context.Context, w io.Writer) (backup.Manifest, error)
}

// Limits of one page of audit records.
const (
	DefaultAuditPage = 1000
	MaxAuditPage     = 10000
)

// AuditPage is one page of the audit trail, in order. More says that
// records follow the last one: ask again with after set to its Seq.
type AuditPage struct {
	Records []storage.AuditRecord `json:"records"`
	More    bool                  `json:"more"`
}

var (
	errNoAudit  = errors.New("this server does not keep an audit trail")
	errNoBackup = errors.New("this server cannot take online backups")
)

// record writes the audit record of an action done for the request's
// admin. A failure is logged by the authority with the whole event.
func (s *Server) record(r *http.Request, action, target, detail string, err error) {
	aa, ok := s.auth.(AuditAuthority)
	if !ok {
		return
	}
	uid, _ := r.Context().Value(ctxKey{}).(uint32)
	// The action is done: record it even if the admin hung up.
	_ = aa.Audit(context.WithoutCancel(r.Context()), ca.AuditEvent{AdminUID: uid, Action: action, Target: target, Detail: detail, Err: err})
}

// ParseAuditQuery parses the query of GET /v1/audit: since (RFC 3339),
// after (a record number) and limit (1 to MaxAuditPage, default
// DefaultAuditPage). Errors name the parameter.
func ParseAuditQuery(q url.Values) (since time.Time, after uint64, limit int, err error) {
	limit = DefaultAuditPage
	if v := q.Get("since"); v != "" {
		if since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return since, 0, 0, &ca.InvalidError{Field: "since", Value: v, Err: errors.New("want an RFC 3339 time such as 2026-11-29T15:00:00Z")}
		}
	}
	if v := q.Get("after"); v != "" {
		if after, err = strconv.ParseUint(v, 10, 64); err != nil {
			return since, 0, 0, &ca.InvalidError{Field: "after", Value: v, Err: errors.New("want a record number")}
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxAuditPage {
			return since, 0, 0, &ca.InvalidError{Field: "limit", Value: v, Err: fmt.Errorf("want 1 to %d", MaxAuditPage)}
		}
		limit = n
	}
	return since, after, limit, nil
}

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	aa, ok := s.auth.(AuditAuthority)
	if !ok {
		writeError(w, http.StatusNotImplemented, errNoAudit)
		return
	}
	since, after, limit, err := ParseAuditQuery(r.URL.Query())
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	recs, more, err := aa.AuditList(r.Context(), after, since, limit)
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	jsonout.Respond(w, http.StatusOK, AuditPage{Records: recs, More: more})
}

func (s *Server) verifyAudit(w http.ResponseWriter, r *http.Request) {
	aa, ok := s.auth.(AuditAuthority)
	if !ok {
		writeError(w, http.StatusNotImplemented, errNoAudit)
		return
	}
	rep, err := aa.VerifyAudit(r.Context())
	if err != nil {
		s.writeAuthorityError(w, err)
		return
	}
	jsonout.Respond(w, http.StatusOK, rep)
}

// backup streams an archive. A failure after the first byte cannot change
// the status: the archive then lacks its manifest, and the client refuses it.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) {
	ba, ok := s.auth.(BackupAuthority)
	if !ok {
		writeError(w, http.StatusNotImplemented, errNoBackup)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.Header().Set("Cache-Control", "no-store")
	m, err := ba.Backup(r.Context(), &deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: s.backupWriteTimeout})
	detail := ""
	if err == nil {
		var size int64
		for _, f := range m.Files {
			size += f.Size
		}
		detail = fmt.Sprintf("%d files, %d bytes", len(m.Files), size)
	} else {
		s.log.Error("backup failed", slog.Any(logkey.Error, err))
	}
	s.record(r, ca.AuditBackup, "", detail, err)
}

// AuditList returns one page of audit records numbered above after and
// not older than since (zero: all); limit 0 means the server's default.
func (c *Client) AuditList(ctx context.Context, since time.Time, after uint64, limit int) (AuditPage, error) {
	q := url.Values{}
	if !since.IsZero() {
		q.Set("since", since.UTC().Format(time.RFC3339Nano))
	}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out AuditPage
	err := c.do(ctx, http.MethodGet, "/v1/audit?"+q.Encode(), nil, &out)
	return out, err
}

// VerifyAudit asks the server to verify its audit trail.
func (c *Client) VerifyAudit(ctx context.Context) (ca.AuditReport, error) {
	var out ca.AuditReport
	err := c.do(ctx, http.MethodGet, "/v1/audit/verify", nil, &out)
	return out, err
}

// Backup streams a backup archive from the server to w and returns the
// number of bytes written. The caller checks the archive (backup.Read):
// a backup that failed on the server after it started ends without its
// manifest.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	return c.stream(ctx, "/v1/backup", w)
}

// deadlineWriter gives every write to the client its own deadline.
type deadlineWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if err := d.rc.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, err
	}
	return d.w.Write(p)
}
