package metrics

import (
	"context"
	"time"

	"github.com/badge-dev/badge/ca"
)

// Status is the document of `badge status`: what an operator reads first.
type Status struct {
	Version     string    `json:"version"`
	TrustDomain string    `json:"trust_domain"`
	StartedAt   time.Time `json:"started_at"`
	// UptimeSeconds is whole seconds since StartedAt.
	UptimeSeconds int64 `json:"uptime_seconds"`
	// Ready and Checks are the readiness checks (see /readyz).
	Ready  bool          `json:"ready"`
	Checks []CheckResult `json:"checks"`
	// Keys are the root, the signing intermediate and the published JWT keys.
	Keys    []ca.KeyInfo `json:"keys"`
	Entries int          `json:"entries"`
	// OpenStreams counts the open Workload API streams.
	OpenStreams int64 `json:"open_streams"`
	// IssuedLastMinute counts the SVIDs issued in the last 60 seconds.
	IssuedLastMinute IssueCounts      `json:"issued_last_minute"`
	Revocations      RevocationCounts `json:"revocations"`
	CRL              CRLStatus        `json:"crl"`
	Database         DatabaseStatus   `json:"database"`
	// AgentListener is the agent listener (--agent-listen), if on.
	AgentListener *AgentStatus  `json:"agent_listener,omitempty"`
	LastErrors    []LoggedError `json:"last_errors"`
}

// IssueCounts counts SVIDs by kind.
type IssueCounts struct {
	X509 int64 `json:"x509"`
	JWT  int64 `json:"jwt"`
}

// RevocationCounts counts the revocations in force.
type RevocationCounts struct {
	SPIFFEIDs int `json:"spiffe_ids"`
	Serials   int `json:"serials"`
}

// CRLStatus describes the current revocation list.
type CRLStatus struct {
	Number     uint64    `json:"number"`
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update"`
}

// DatabaseStatus describes the database; Error says why the rest is
// missing.
type DatabaseStatus struct {
	SizeBytes int64  `json:"size_bytes"`
	Serials   int    `json:"serial_records"`
	Error     string `json:"error,omitempty"`
}

// Status returns the current status of the server.
func (m *Metrics) Status(ctx context.Context) Status {
	now := m.cfg.Time()
	st := Status{
		Version:       m.cfg.Version,
		StartedAt:     m.start.UTC().Truncate(time.Second),
		UptimeSeconds: int64(now.Sub(m.start) / time.Second),
		OpenStreams:   m.open.Load(),
		AgentListener: m.agentStatus(),
		Ready:         true,
		Checks:        []CheckResult{},
		LastErrors:    []LoggedError{},
		IssuedLastMinute: IssueCounts{
			X509: m.lastMin[0].lastMinute(now.Unix()),
			JWT:  m.lastMin[1].lastMinute(now.Unix()),
		},
	}
	if a := m.cfg.Authority; a != nil {
		snap := a.Snapshot()
		st.TrustDomain = a.TrustDomain().Name()
		st.Keys = a.Keys()
		for i := range st.Keys {
			k := &st.Keys[i]
			k.NotBefore, k.NotAfter = k.NotBefore.UTC().Truncate(time.Second), k.NotAfter.UTC().Truncate(time.Second)
		}
		st.Entries = len(snap.Entries())
		st.Revocations.SPIFFEIDs, st.Revocations.Serials = snap.RevocationCounts()
		st.CRL.Number = snapNumber(snap)
		this, next := snap.CRLValidity()
		st.CRL.ThisUpdate, st.CRL.NextUpdate = this.UTC(), next.UTC()
	}
	if db, ok, err := m.dbStatistics(ctx); ok {
		if err != nil {
			st.Database.Error = err.Error()
		} else {
			st.Database.SizeBytes, st.Database.Serials = db.SizeBytes, db.Serials
		}
	}
	if r := m.cfg.Readiness; r != nil {
		rep := r.Check(ctx)
		st.Ready, st.Checks = rep.Ready, rep.Checks
	}
	if l := m.cfg.Errors; l != nil {
		st.LastErrors = l.Last()
		for i := range st.LastErrors {
			st.LastErrors[i].Time = st.LastErrors[i].Time.UTC()
		}
	}
	return st
}

func snapNumber(s *ca.Snapshot) uint64 {
	_, n := s.CRL()
	return n
}
